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

/// What to do next, after a command did something (stderr), one step a line.
pub fn next(steps: &[String]) {
    if steps.is_empty() {
        return;
    }
    eprintln!("next:");
    for s in steps {
        eprintln!("  {s}");
    }
}

/// `known` as the end of an error sentence: `a, b, c`, or `none`.
pub fn known(known: &[String]) -> String {
    if known.is_empty() {
        "none".into()
    } else {
        known.join(", ")
    }
}

/// A hint for a command that read no project: when neither its strategies folder nor its tools
/// folder exists, it most likely ran outside a project folder.
pub fn project_hint(cfg: &crate::agents::ConfigArgs) -> Option<String> {
    if cfg.strategies.exists() || cfg.tools.exists() {
        return None;
    }
    Some(format!(
        "no {} or {} here: run keel from a project folder (the repository's root has both), \
         pass --strategies DIR --tools DIR, or try `keel demo`",
        cfg.strategies.display(),
        cfg.tools.display()
    ))
}

/// The command line with a `--json` written before the subcommand (`keel --json gates list`)
/// moved to the end, where the subcommand that has the flag takes it: `--json` is accepted
/// anywhere, like `--data`, while each command keeps its own (`keel --json demo` is still an
/// error, since the demo has no JSON output).
pub fn hoist_json(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let mut i = 1;
    let mut hoisted = false;
    while let Some(a) = args.get(i) {
        let a = a.to_string_lossy();
        if a == "--json" {
            args.remove(i);
            hoisted = true;
            continue;
        }
        if a == "--data" || a == "--config" {
            i += 2;
        } else if a.starts_with('-') {
            i += 1;
        } else {
            break;
        }
    }
    if hoisted {
        let at = args.iter().position(|a| a == "--").unwrap_or(args.len());
        args.insert(at, "--json".into());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::hoist_json;

    fn hoist(line: &str) -> String {
        let v: Vec<String> = hoist_json(line.split(' ').map(Into::into))
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        v.join(" ")
    }

    #[test]
    fn a_json_flag_before_the_subcommand_moves_to_its_end() {
        assert_eq!(hoist("keel --json gates list"), "keel gates list --json");
        assert_eq!(
            hoist("keel --data d --json tokens list --tenant a"),
            "keel --data d tokens list --tenant a --json"
        );
        assert_eq!(hoist("keel --data --json run"), "keel --data --json run");
        assert_eq!(hoist("keel gates list --json"), "keel gates list --json");
        assert_eq!(hoist("keel --json x -- y"), "keel x --json -- y");
        assert_eq!(hoist("keel run --json"), "keel run --json");
    }
}
