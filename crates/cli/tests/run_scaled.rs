//! `scripts/run-scaled`, as a user runs it: a local PostgreSQL 18 and moto (S3), 2 API-only
//! `keel serve` and 3 `keel worker` processes of this build, the demo's requests through both
//! servers, one worker SIGKILLed mid-run. Checked from what it prints: every execution ended, the
//! killed worker's went on and ended on the others, the refund gates were decided through the
//! API, and the demo's tables (executions; cost per success per strategy) are printed.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

#[test]
fn run_scaled_finishes_every_execution_after_a_worker_is_killed_and_prints_the_tables() {
    let out = Command::new(common::repo().join("scripts/run-scaled"))
        .env("KEEL_BIN", env!("CARGO_BIN_EXE_keel"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/run-scaled failed:\n{stderr}\n{stdout}"
    );
    let all = "every execution ended: 14 of 14";
    for (what, text, needle) in [
        ("the count", &stderr, all),
        ("the kill", &stderr, "killed (SIGKILL) mid-run, holding"),
        ("the takeover", &stderr, "finished on the others"),
        ("an approved gate", &stderr, ": approve — "),
        ("a rejected gate", &stderr, ": reject — "),
        ("the executions table", &stdout, "EXECUTIONS"),
        ("every row", &stdout, "(14 rows)"),
        ("the strategies", &stdout, "support-long/v2/"),
        ("the cost table", &stdout, "COST PER SUCCESS"),
        ("the cost per success", &stdout, "$/success"),
        ("the shop", &stdout, "shop side effects: "),
    ] {
        assert!(
            text.contains(needle),
            "{what}: no {needle:?} in\n{stderr}\n{stdout}"
        );
    }
    // Each execution the killed worker held ended later than where the kill left it.
    let taken: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("at the kill, ended at event"))
        .collect();
    assert!(!taken.is_empty(), "no takeover line in\n{stderr}");
    for line in taken {
        let nums: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.trim_end_matches(',').parse().ok())
            .collect();
        assert!(
            matches!(nums.as_slice(), [at, end] if end > at),
            "no progress after the kill: {line}"
        );
    }
    // Nothing is left running or on disk: the script stopped its servers on exit.
    assert!(!stderr.contains("never ended"), "{stderr}");
}
