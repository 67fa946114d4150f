//! A kill-switch set by another process stops a running execution at its next step: `keel run`
//! drives a runaway loop (a scripted model that looks the same order up forever), and
//! `keel kill set strategy …` from a second process ends it with outcome `killed` after at most
//! the step that was in flight. The runaway's read-only steps are appended without an fsync, and
//! a handle used to hide everything committed after its first unflushed append — the other
//! process's kill-switch included — so the switch was never seen (this test caught it). The
//! per-step control check (`Control::state`, skipped when the stream has not moved) must never
//! miss it either.

#![allow(clippy::unwrap_used)]

mod common;
use common::repo;

use keel_core::payload::{Outcome, Payload};
use keel_spine::{EventLog, SqliteLog, SqliteOptions};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_switch_from_another_process_stops_a_running_execution_at_its_next_step() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    common::write_runaway(dir);
    let keel = env!("CARGO_BIN_EXE_keel");
    let config = |c: &mut Command| {
        c.arg("--tools")
            .arg(repo().join("tools"))
            .arg("--strategies")
            .arg(dir.join("strategies"))
            .arg("--prices")
            .arg(repo().join("prices.toml"));
    };
    // Bounded so that a switch that is never seen fails in seconds, not at the token budget.
    let mut run = Command::new(keel);
    run.arg("--data").arg(&data).arg("run");
    config(&mut run);
    let child = run
        .args([
            "--strategy",
            "runaway",
            "--tenant",
            "acme",
            "--json",
            "loop forever",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Wait until it is well into its loop.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (log, exec) = loop {
        assert!(Instant::now() < deadline, "the execution never got going");
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !data.join("spine.db").exists() {
            continue;
        }
        let log = SqliteLog::open(data.join("spine.db"), SqliteOptions::default()).unwrap();
        let Some(exec) = log
            .list_unfinished()
            .await
            .unwrap()
            .first()
            .map(|s| s.exec_id)
        else {
            continue;
        };
        let steps = log
            .read(exec, 1)
            .await
            .unwrap()
            .iter()
            .filter(|e| matches!(e.payload, Payload::StepCompleted(_)))
            .count();
        if steps >= 20 {
            break (log, exec);
        }
    };

    let kill = Command::new(keel)
        .arg("--data")
        .arg(&data)
        .args([
            "kill",
            "set",
            "strategy",
            "runaway",
            "--reason",
            "runaway loop",
        ])
        .output()
        .unwrap();
    assert!(
        kill.status.success(),
        "{}",
        String::from_utf8_lossy(&kill.stderr)
    );

    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("killed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // It ended killed, with the reason, long before its step limit; after the switch's commit
    // at most the step in flight completed.
    let all = log.read_all(1, 10_000_000).await.unwrap();
    let kill_at = all
        .iter()
        .find(|c| matches!(&c.event.payload, Payload::KillSet(k) if k.name == "runaway"))
        .unwrap()
        .offset;
    let after: Vec<_> = all
        .iter()
        .filter(|c| c.event.exec_id == exec && c.offset > kill_at)
        .collect();
    let steps_after = after
        .iter()
        .filter(|c| matches!(c.event.payload, Payload::StepCompleted(_)))
        .count();
    assert!(
        steps_after <= 1,
        "{steps_after} steps completed after the kill"
    );
    let Payload::ExecFinished(f) = &all
        .iter()
        .rfind(|c| c.event.exec_id == exec)
        .unwrap()
        .event
        .payload
    else {
        panic!("the execution did not finish");
    };
    assert_eq!(f.outcome, Outcome::Killed);
    assert!(f.steps_n < 3000, "it ran to its step limit");
    assert!(
        f.detail
            .as_deref()
            .unwrap_or_default()
            .contains("runaway loop"),
        "{:?}",
        f.detail
    );
}
