//! The `keel` binary as users run it: real process, real store directory.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
use common::keel;

use keel_spine::{EventLog, SqliteLog, SqliteOptions};
use keel_testkit::builder::{exec_id, execution_with_steps};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_prints_an_execution_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let events = execution_with_steps(exec_id(5), 2);
    let log = SqliteLog::open(dir.path().join("spine.db"), SqliteOptions::default()).unwrap();
    log.append(exec_id(5), 0, &events).await.unwrap();
    drop(log);
    let out = keel(dir.path(), &["events", &exec_id(5).to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let printed: Vec<keel_core::Event> = stdout
        .lines()
        .map(|l| keel_core::Event::decode(l).unwrap())
        .collect();
    assert_eq!(printed, events);
}

#[test]
fn events_errors_name_what_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let out = keel(dir.path(), &["events", &exec_id(1).to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no Keel store") && stderr.contains("spine.db"),
        "{stderr}"
    );
    // With a store: a bad id, then no such execution.
    drop(SqliteLog::open(dir.path().join("spine.db"), SqliteOptions::default()).unwrap());
    let out = keel(dir.path(), &["events", "not-a-uuid"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an execution id"));
    let out = keel(dir.path(), &["events", &exec_id(1).to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no execution"));
    assert!(out.stdout.is_empty(), "errors never go to stdout");
}

/// Regression: a mistyped `--data` on a reading command silently created an empty store there
/// and printed nothing. Every reading command refuses a directory without a store, says so, and
/// creates nothing: neither the directory nor a file in it.
#[test]
fn reading_commands_refuse_a_directory_without_a_store_and_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let id = exec_id(1).to_string();
    let out_dir = tmp.path().join("lake");
    let reading: &[&[&str]] = &[
        &["events", &id],
        &["trace", &id],
        &["kill", "list"],
        &["kill", "clear", "tool", "notify_team"],
        &["gates", "list"],
        &["gates", "approve", &id, "--reason", "r"],
        &["gates", "reject", &id, "--reason", "r"],
        &["gates", "sweep"],
        &["gates", "export"],
        &["strategies", "list"],
        &["strategies", "certify", "support-short"],
        &["sql", "SELECT 1"],
        &["project"],
        &["export", "parquet", "--out", out_dir.to_str().unwrap()],
        &["export", "otlp", "--endpoint", "http://127.0.0.1:9"],
        &["slo"],
        &["retrievals", "list"],
        &["retrievals", "rate", &id, "3", "2"],
        &["replay", &id, "--prompt-version", "v2"],
        &["memory", "list", "--tenant", "acme"],
        &["memory", "search", "--tenant", "acme", "order"],
        &["memory", "review", "--tenant", "acme", &id],
        &["memory", "promote", "--tenant", "acme", "--by", "lead", &id],
        &["memory", "subject-access", "--tenant", "acme", "cust-42"],
        &["memory", "erase", "--tenant", "acme", "cust-42"],
        &["memory", "sweep"],
        &["memory", "rebuild"],
        &["memory", "migrate-embeddings"],
    ];
    // A directory that does not exist (a typo) and one that exists but holds no store.
    let missing = tmp.path().join("typo");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for data in [&missing, &empty] {
        for args in reading {
            let out = keel(data, args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "keel {args:?}: {stderr}");
            assert!(
                stderr.contains(&format!(
                    "no Keel store at {} (spine.db not found)",
                    data.display()
                )),
                "keel {args:?}: {stderr}"
            );
            assert!(out.stdout.is_empty(), "keel {args:?}");
        }
    }
    assert!(!missing.exists(), "a reading command created {missing:?}");
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "a reading command wrote into {empty:?}"
    );
    assert!(!out_dir.exists());
    // A writing command may create it.
    let out = keel(&missing, &["kill", "set", "tool", "notify_team"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(missing.join("spine.db").is_file());
}

#[test]
fn a_corrupt_store_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spine.db"), vec![0x42u8; 4096]).unwrap();
    let out = keel(dir.path(), &["events", &exec_id(1).to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("corrupt") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn bench_spine_json_prints_exactly_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = keel(
        dir.path(),
        &["bench", "spine", "--json", "--seconds", "0.1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "append_batch100_nosync_per_s",
            "append_batch100_per_s",
            "append_concurrent64_per_s",
            "append_concurrent8_per_s",
            "append_single_per_s",
            "fold_40_steps_us",
            "fsync_us",
        ]
    );
    assert!(
        v.as_object()
            .unwrap()
            .values()
            .all(|x| x.as_f64().is_some_and(|f| f > 0.0))
    );
    // The bench cleans up after itself.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_bad_command_line_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(keel(dir.path(), &["frobnicate"]).status.code(), Some(2));
}

#[test]
fn bench_step_overhead_json_prints_exactly_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    // A tiny time per scenario keeps CI fast: every scenario still runs one round.
    let out = keel(
        dir.path(),
        &["bench", "step-overhead", "--json", "--seconds", "0.01"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "before_effects_1",
            "cpu_us_per_step",
            "every_step_1",
            "every_step_64",
            "every_step_8",
            "fsync_us",
            "seconds_per_scenario",
        ]
    );
    for scenario in [
        "every_step_1",
        "before_effects_1",
        "every_step_8",
        "every_step_64",
    ] {
        let s = &v[scenario];
        for key in ["p50_us", "p99_us", "steps", "steps_per_s"] {
            assert!(s[key].as_f64().is_some(), "{scenario}.{key}: {v}");
        }
        assert!(s["p50_us"].as_f64() <= s["p99_us"].as_f64(), "{v}");
    }
    for key in ["mean", "p50", "p99", "steps"] {
        assert!(v["cpu_us_per_step"][key].as_f64().is_some(), "{v}");
    }
    assert!(v["fsync_us"]["p50"].as_f64().is_some(), "{v}");
    let out = keel(dir.path(), &["bench", "step-overhead", "--seconds", "0"]);
    assert!(!out.status.success(), "--seconds 0 is refused");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the bench cleans up"
    );
}

/// `keel bench step-overhead --backend postgres` starts its own durable PostgreSQL, drives the
/// workload from worker processes (1, then 2, sharing the executions), and reports every
/// scenario beside PostgreSQL's own commit latency measured in the same run.
#[test]
fn bench_step_overhead_postgres_json_prints_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = keel(
        dir.path(),
        &[
            "bench",
            "step-overhead",
            "--backend",
            "postgres",
            "--json",
            "--seconds",
            "0.3",
            "--turns",
            "1",
            "--workers",
            "1,2",
            "--concurrency",
            "4",
            "--compare-rates-apart",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "pg_commit_us",
            "ratios",
            "scenarios",
            "seconds_per_turn",
            "steps_per_execution",
            "storage",
            "turns"
        ]
    );
    assert!(
        v["pg_commit_us"]["p50"].as_f64().is_some_and(|c| c > 0.0),
        "{v}"
    );
    let scenarios = v["scenarios"].as_array().unwrap();
    // One execution alone, then each worker count; for each design of the rate budgets.
    let shape: Vec<_> = scenarios
        .iter()
        .map(|s| {
            (
                s["rates"].as_str().unwrap().to_owned(),
                s["workers"].as_u64().unwrap(),
                s["concurrent_executions"].as_u64().unwrap(),
            )
        })
        .collect();
    let ride = "in_group_commit".to_owned();
    let apart = "apart".to_owned();
    assert_eq!(
        shape,
        [
            (ride.clone(), 1, 1),
            (ride.clone(), 1, 4),
            (ride, 2, 4),
            (apart.clone(), 1, 1),
            (apart.clone(), 1, 4),
            (apart, 2, 4),
        ]
    );
    for s in scenarios {
        assert!(s["steps"].as_u64().is_some_and(|n| n > 0), "{s}");
        for key in [
            "steps_per_s",
            "step_p50_us",
            "step_p99_us",
            "step_p50_per_commit",
            "worker_cpu_us_per_step",
            "pg_cpu_us_per_step",
            "cpu_cores_busy",
            "steps_per_cpu_s",
            "events_per_step",
            "wal_bytes_per_step",
        ] {
            assert!(s[key].as_f64().is_some(), "{key}: {s}");
        }
    }
    assert!(v["ratios"]["workers_2_over_1"].as_f64().is_some(), "{v}");
    for key in ["events", "table_bytes_per_event", "json_bytes_per_event"] {
        assert!(
            v["storage"][key].as_f64().is_some_and(|b| b > 0.0),
            "{key}: {v}"
        );
    }
    assert!(
        v["ratios"]["workers_2_over_1_rates_apart"]
            .as_f64()
            .is_some(),
        "{v}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the bench cleans up"
    );
    let bad = keel(
        dir.path(),
        &[
            "bench",
            "step-overhead",
            "--backend",
            "postgres",
            "--workers",
            "0",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--workers"));
}

/// `keel bench spine --backend postgres` starts its own durable PostgreSQL (from
/// `$KEEL_TEST_PG_BIN`), measures the spine beside PostgreSQL's own commit, and stops it.
#[test]
fn bench_spine_postgres_json_prints_exactly_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = keel(
        dir.path(),
        &[
            "bench",
            "spine",
            "--backend",
            "postgres",
            "--json",
            "--seconds",
            "0.1",
            "--resume",
            "300",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    let mut want = vec![
        "pg_commit_us".to_owned(),
        "paired_commit_us".to_owned(),
        "paired_append_us".to_owned(),
        "resume_executions".to_owned(),
        "resume_claim_ms".to_owned(),
    ];
    for s in [
        "single",
        "batch100",
        "concurrent8",
        "concurrent64",
        "concurrent64_2handles",
        "batch100_nosync",
    ] {
        want.push(format!("append_{s}_per_s"));
        want.push(format!("append_{s}_appends_per_commit"));
    }
    want.sort();
    assert_eq!(keys, want);
    assert!(
        v.as_object()
            .unwrap()
            .values()
            .all(|x| x.as_f64().is_some_and(|f| f > 0.0))
    );
    let bad = keel(dir.path(), &["bench", "spine", "--backend", "kafka"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("embedded or postgres"));
}

/// Issue 13: a step is one append. A question answered after one read-only lookup is stored in
/// three batches: the start; the lookup step (model call and reply, plan, tool call and result,
/// step completion); the answer with `exec.finished`.
#[test]
fn a_step_is_one_append_to_the_spine() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "run",
        "--json",
        "--strategy",
        "support-short",
        "--tenant",
        "acme",
        "Where is order A-1001?",
    ];
    let exec: serde_json::Value =
        serde_json::from_str(&common::ok(common::keel_in_repo(dir.path(), &args))).unwrap();
    let events = common::events(dir.path(), &exec);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(types.contains(&"tool.result"), "a tool step ran: {types:?}");
    let steps = types.iter().filter(|t| **t == "step.completed").count();
    let spine = rusqlite::Connection::open(dir.path().join("spine.db")).unwrap();
    let mut batches: Vec<(i64, i64)> = spine
        .prepare("SELECT first_seq, last_seq FROM batches WHERE exec_id = ?1 ORDER BY first_seq")
        .unwrap()
        .query_map([exec["exec_id"].as_str().unwrap()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(batches.len(), steps + 1, "{batches:?} for {types:?}");
    // Each batch but the start ends with its step's completion or the execution's end.
    let last = batches.pop().unwrap();
    assert_eq!(types[usize::try_from(last.1).unwrap() - 1], "exec.finished");
    for (_, end) in batches.into_iter().skip(1) {
        assert_eq!(types[usize::try_from(end).unwrap() - 1], "step.completed");
    }
}

#[test]
fn bench_resume_json_reports_every_killed_execution_resumed() {
    let dir = tempfile::tempdir().unwrap();
    // Small sizes keep CI fast; the worker process is really SIGKILLed and restarted for each.
    let out = keel(
        dir.path(),
        &["bench", "resume", "--json", "--executions", "1,3"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["steps_per_execution"], 40);
    assert_eq!(v["backend"], "embedded");
    assert!(v["fsync_us"].as_f64().unwrap() > 0.0, "{v}");
    let sizes = v["sizes"].as_array().unwrap();
    assert_eq!(sizes.len(), 2);
    for (row, n) in sizes.iter().zip([1, 3]) {
        let mut keys: Vec<_> = row.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "all_resumed_ms",
                "executions",
                "first_step_ms",
                "in_flight",
                "median_resumed_ms",
                "steps_at_kill_mean"
            ]
        );
        assert_eq!(row["executions"], n);
        // Killed half-way: every execution was in flight, and the figures exist only once
        // every one of them completed a new step after the restart.
        assert_eq!(row["in_flight"], n);
        let at_kill = row["steps_at_kill_mean"].as_f64().unwrap();
        assert!(at_kill > 0.0 && at_kill < 40.0, "{row}");
        assert!(
            row["all_resumed_ms"].as_f64().unwrap() >= row["median_resumed_ms"].as_f64().unwrap()
        );
        assert!(
            row["median_resumed_ms"].as_f64().unwrap() >= row["first_step_ms"].as_f64().unwrap()
        );
    }
    // The bench cleans up after itself and leaves no worker behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bench_resume_on_postgres_has_three_workers_take_every_killed_execution_over() {
    let dir = tempfile::tempdir().unwrap();
    // A throwaway PostgreSQL (fsync on) from $KEEL_TEST_PG_BIN, set by scripts/test-services.
    let out = keel(
        dir.path(),
        &[
            "bench",
            "resume",
            "--json",
            "--backend",
            "postgres",
            "--executions",
            "6",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["backend"], "postgres");
    assert_eq!(v["workers"], 3);
    assert!(v["pg_commit_us"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["pg_deadlocks"].as_i64().is_some(), "{v}");
    let row = &v["sizes"][0];
    assert_eq!(row["executions"], 6);
    // The figures exist only once every execution in flight at the kill made a new step on the
    // others (the bench fails otherwise).
    let in_flight = row["in_flight"].as_u64().unwrap();
    assert!((1..=6).contains(&in_flight), "{row}");
    assert!(row["all_resumed_ms"].as_f64().unwrap() >= row["first_step_ms"].as_f64().unwrap());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
