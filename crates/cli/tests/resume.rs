//! Resume after crash, for real: `keel worker` processes are killed with SIGKILL at random
//! moments while they run a queue of executions (≥ 30 kills), each restart resumes what the
//! last one left, and at the end every execution has finished with a gapless, legal log and
//! exactly the side effects of one run (rows in the demo shop). Refunds (tier 3) wait at gates
//! that an approver, another handle on the store, decides between kills: a gate survives a
//! killed worker and an approved refund still runs exactly once.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
use common::repo;

use keel_core::payload::{Payload, ToolStatus, Verdict};
use keel_core::{ExecId, ExecutionState};
use keel_runtime::embedded::Config;
use keel_spine::EventLog;
use rand::Rng;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const KILLS: usize = 32;

/// The demo's long strategy with the highest ceiling (tier 3 still always passes a gate).
fn config(dir: &Path, durability: &str) -> Config {
    let strategies = dir.join("strategies");
    std::fs::create_dir_all(&strategies).unwrap();
    let text = std::fs::read_to_string(repo().join("strategies/support-long.yaml")).unwrap();
    let text = text
        .replace("../", &format!("{}/", repo().display()))
        .replace("name: support-long", "name: crash-drill")
        .replace(
            "max_autonomous_tier: 2",
            &format!("max_autonomous_tier: 3\ndurability: {durability}"),
        );
    std::fs::write(strategies.join("crash-drill.yaml"), text).unwrap();
    Config {
        tools: repo().join("tools"),
        strategies,
        prices: repo().join("prices.toml"),
    }
}

fn worker(data: &Path, config: &Config) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
    c.arg("--data")
        .arg(data)
        .args([
            "worker",
            "--once",
            "--concurrency",
            "2",
            "--pace-ms",
            "40",
            "--tools",
        ])
        .arg(&config.tools)
        .arg("--strategies")
        .arg(&config.strategies)
        .arg("--prices")
        .arg(&config.prices)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_resume_with_one_run_of_side_effects_before_effects() {
    drill("before_effects").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_resume_with_one_run_of_side_effects_every_step() {
    drill("every_step").await;
}

/// The approver: approves every pending refund gate; rejects escalations of calls whose outcome
/// a crash made unknown (the person decides not to risk a repeat). Returns how many it decided.
async fn decide_pending(data: &Path, config: &Config) -> usize {
    let env = common::open(data, config);
    let pending: Vec<(String, bool)> = env
        .approvals
        .book()
        .await
        .unwrap()
        .pending(None)
        .iter()
        .map(|g| {
            (
                g.gate_id.clone(),
                g.action["tool"] == "issue_customer_refund",
            )
        })
        .collect();
    for (gate, refund) in &pending {
        let (verdict, why) = if *refund {
            (Verdict::Approve, "refund checked")
        } else {
            (
                Verdict::Reject,
                "do not repeat a call that may have happened",
            )
        };
        env.approvals
            .decide(gate, None, "drill-approver", verdict, why)
            .await
            .unwrap();
    }
    pending.len()
}

async fn drill(durability: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = config(tmp.path(), durability);
    let mut refunds: BTreeMap<ExecId, String> = BTreeMap::new();
    let mut all = Vec::new();
    {
        let env = common::open(&data, &config);
        let s = env.strategies.get("crash-drill").unwrap();
        for i in 0..20u32 {
            let order = format!("{}", 1004 + i);
            let exec = env
                .agent
                .start(
                    s,
                    &format!("tenant-{i}"),
                    &format!("Please refund order {order}"),
                )
                .await
                .unwrap();
            refunds.insert(exec, format!("A-{order}"));
            all.push(exec);
        }
        for i in 0..10u32 {
            let goal = format!("This is terrible, order {} arrived broken", 1030 + i);
            all.push(
                env.agent
                    .start(s, &format!("tenant-c{i}"), &goal)
                    .await
                    .unwrap(),
            );
            all.push(
                env.agent
                    .start(s, "acme", &format!("Where is my order {}?", 1040 + i))
                    .await
                    .unwrap(),
            );
        }
    }

    let mut rng = rand::rng();
    let mut interrupted = 0;
    let mut last_len = 0;
    for _ in 0..KILLS {
        let mut child = worker(&data, &config).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(30..200)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        decide_pending(&data, &config).await;
        let log = keel_spine::SqliteLog::open(data.join("spine.db"), Default::default()).unwrap();
        let len = log.read_all(1, usize::MAX >> 1).await.unwrap().len();
        if len > last_len && !log.list_unfinished().await.unwrap().is_empty() {
            interrupted += 1; // it made progress and was killed with work left
        }
        last_len = len;
    }
    eprintln!(
        "{KILLS} kills, {interrupted} of them mid-run, {last_len} events before the last worker"
    );
    assert!(
        interrupted >= KILLS / 4,
        "only {interrupted} kills landed mid-run"
    );
    // Run to the end: a worker, then the approver, until nothing waits.
    for _ in 0..10 {
        let out = worker(&data, &config).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if decide_pending(&data, &config).await == 0 {
            break;
        }
    }

    let env = common::open(&data, &config);
    assert!(
        env.log.list_unfinished().await.unwrap().is_empty(),
        "every execution finished"
    );
    for exec in &all {
        let events = env.log.read(*exec, 1).await.unwrap();
        let state = ExecutionState::fold(&events).unwrap_or_else(|e| panic!("{exec}: {e}"));
        assert!(state.status.is_terminal(), "{exec}: {}", state.status);
        let refund_ok = events.iter().any(|e| {
            matches!(&e.payload, Payload::ToolResult(r) if r.tool == "issue_customer_refund" && r.status == ToolStatus::Ok)
        });
        assert_eq!(
            refund_ok,
            refunds.contains_key(exec),
            "{exec}: refund recorded iff requested"
        );
    }
    // Exactly one refund row per refunded order: no crash repeated a refund, none was lost.
    let shop = rusqlite::Connection::open(data.join("shop.db")).unwrap();
    let mut stmt = shop
        .prepare("SELECT order_id, count(*) FROM refunds GROUP BY order_id")
        .unwrap();
    let rows: BTreeMap<String, i64> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let want: BTreeMap<String, i64> = refunds.values().map(|o| (o.clone(), 1)).collect();
    assert_eq!(rows, want);
    // Complaints notify at most once each (a call cut mid-flight without a key is escalated,
    // never repeated).
    assert!(common::shop(&data).count("notifications").unwrap() <= 10);
}
