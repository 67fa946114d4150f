//! `keel sql`, `trace`, `export parquet`, `slo`, and `replay` as users run them: a real process on
//! a real store, run from the repo root (its tools/, strategies/, prices.toml).

#![allow(clippy::unwrap_used)]

mod common;
use common::keel_in_repo as keel;

use serde_json::Value;
use std::process::Output;

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn sql_trace_export_slo_and_replay_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let run: Value = serde_json::from_str(&ok(keel(
        &data,
        &[
            "run",
            "--strategy",
            "support-short",
            "--json",
            "Where is my order A-1017?",
        ],
    )))
    .unwrap();
    let exec = run["exec_id"].as_str().unwrap().to_owned();
    let trace = run["trace_id"].as_str().unwrap().to_owned();

    // The seed's trace lookup, as JSON and CSV.
    let q =
        format!("SELECT step_n, event_type, summary FROM traces.steps WHERE trace_id = '{trace}'");
    let rows: Value =
        serde_json::from_str(&ok(keel(&data, &["sql", &q, "--format", "json"]))).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows[0]["event_type"], "exec.started");
    assert_eq!(rows.last().unwrap()["event_type"], "exec.finished");
    let csv = ok(keel(&data, &["sql", &q, "--format", "csv"]));
    assert!(
        csv.starts_with("step_n,event_type,summary\n0,exec.started,"),
        "{csv}"
    );
    // Read-only, and errors say what is wrong.
    let out = keel(&data, &["sql", "DELETE FROM gold.executions"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("read-only"));
    let out = keel(&data, &["sql", "SELECT 1", "--format", "xml"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("\"xml\" is not one of table, json, csv")
    );

    // keel trace by trace id goes through the projection.
    let shown = ok(keel(&data, &["trace", &trace]));
    assert!(
        shown.starts_with(&format!("execution {exec}  trace {trace}")),
        "{shown}"
    );

    // Parquet export.
    let lake = dir.path().join("lake");
    ok(keel(
        &data,
        &["export", "parquet", "--out", lake.to_str().unwrap()],
    ));
    let parts: Vec<_> = std::fs::read_dir(lake.join("executions"))
        .unwrap()
        .collect();
    assert_eq!(parts.len(), 1, "one date partition");

    // SLOs with an alarm that fires.
    let out = keel(&data, &["slo", "--json", "--alarm", "*:p95_steps>0"]);
    let report: Value = serde_json::from_str(&ok_ref(&out)).unwrap();
    assert_eq!(report["strategies"][0]["executions"], 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("ALARM support-short"));
    let out = keel(&data, &["slo", "--alarm", "p99_steps>1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown metric \"p99_steps\""));

    // Replay with another strategy, then a backtest.
    let r: Value = serde_json::from_str(&ok(keel(
        &data,
        &["replay", &exec, "--strategy", "support-long", "--json"],
    )))
    .unwrap();
    assert_eq!(r["original"], exec.as_str());
    assert_eq!(r["diff"]["before"]["outcome"], "success");
    assert!(r["would_be_calls"].as_array().unwrap().is_empty());
    let text = ok(keel(&data, &["replay", &exec, "--prompt-version", "v2"]));
    assert!(
        text.contains("totals") && text.contains("side effects: 0 answered"),
        "{text}"
    );
    let b: Value = serde_json::from_str(&ok(keel(
        &data,
        &[
            "replay",
            "--since",
            "2020-01-01",
            "--strategy",
            "support-long",
            "--json",
        ],
    )))
    .unwrap();
    assert_eq!(b["executions"], 1, "replays are not replayed again: {b}");
    assert_eq!(b["old"]["outcome_rate"], 1.0);
    let out = keel(&data, &["replay", &exec, "--memory-version", "2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not retrieve memory"));
}

fn ok_ref(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Regression: `--alarm "support-short:…"`, the form `--help` shows, compared the name with full
/// versions (`support-short/v1/…`), so it never fired, and an unknown strategy passed silently.
#[test]
fn slo_alarms_name_a_strategy_or_a_full_version_and_an_unknown_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    ok(keel(
        &data,
        &[
            "run",
            "--strategy",
            "support-short",
            "--json",
            "Where is my order A-1017?",
        ],
    ));
    let report: Value = serde_json::from_str(&ok(keel(&data, &["slo", "--json"]))).unwrap();
    let version = report["strategies"][0]["strategy_version"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(version.starts_with("support-short/"), "{version}");

    // By name: fires and is recorded.
    let out = keel(&data, &["slo", "--alarm", "support-short:p95_steps>0"]);
    ok_ref(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("ALARM {version}: p95_steps")) && stderr.contains("recorded"),
        "{stderr}"
    );
    // By full version: fires too (the same breach, already recorded).
    let out = keel(
        &data,
        &["slo", "--alarm", &format!("{version}:p95_steps>0")],
    );
    ok_ref(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("ALARM {version}: p95_steps")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A bound that holds does not fire.
    let out = keel(&data, &["slo", "--alarm", "support-short:p95_steps>1000"]);
    ok_ref(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("ALARM"));
    // An unknown strategy is an error naming the known ones.
    let out = keel(&data, &["slo", "--alarm", "support-shrot:outcome_rate<0.9"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown strategy \"support-shrot\"")
            && stderr.contains("known strategies: support-short"),
        "{stderr}"
    );
}
