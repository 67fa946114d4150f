//! How the CLI prints what is not a command's own data: list headers, hints and next steps.
//!
//! Lists print a header row first. On a terminal their columns are padded to line up; when
//! stdout is piped they are tab-separated, one row a line (what `cut -f` and scripts want), with
//! no colours or progress anywhere. Hints and next steps go to stderr, so they never mix with the
//! data a script reads.

use std::io::{IsTerminal, Write};

/// True when stdout is a terminal (a person reads it), false when piped or redirected.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Prints a table: `header`, then `rows` (each as many cells as the header).
pub fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.into_iter().collect();
    let mut out = std::io::stdout().lock();
    let head: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut all = std::iter::once(&head).chain(rows.iter());
    // A closed pipe (`keel … | head`) is not an error worth reporting.
    let _ = if stdout_is_terminal() {
        let mut widths = vec![0; header.len()];
        for r in std::iter::once(&head).chain(rows.iter()) {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        all.try_for_each(|r| {
            let last = r.len().saturating_sub(1);
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let w = widths.get(i).copied().unwrap_or(0);
                    if i == last {
                        c.clone()
                    } else {
                        format!("{c:<w$}")
                    }
                })
                .collect();
            writeln!(out, "{}", line.join("  "))
        })
    } else {
        all.try_for_each(|r| writeln!(out, "{}", r.join("\t")))
    };
    let _ = out.flush();
}

/// A hint for the person at the keyboard (stderr).
pub fn hint(text: &str) {
    eprintln!("hint: {text}");
}
