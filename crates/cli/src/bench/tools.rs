//! `keel bench tools`: what the contract layer costs per call, against the bare tool call
//! measured in the same run.
//!
//! Baselines: each builtin called directly (no contract). Then the same tool through
//! `ToolRunner::call` (input and output validation, `tool.called` + `tool.result` appended to the
//! spine, output stored in the blob store), and a side-effecting keyed tool (plus the idempotency
//! ledger's `started` and `finished` writes). Each with durability on (every write fsynced, as in
//! production) and off (the CPU path). Overhead = contract call − baseline.

use super::workload::Workload;
use anyhow::Context;
use keel_core::payload::{Budget, ExecStarted};
use keel_core::{ExecutionState, Payload};
use keel_spine::{Durability, EventLog, SqliteOptions, clock};
use keel_tools::adapter::{Adapter, AdapterCall};
use keel_tools::shop::Shop;
use keel_tools::{CallContext, CallOutcome, Registry, ToolRunner};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Instant;

const LOOKUP: &str = include_str!("../../../../tools/lookup_order.yaml");
const DRAFT: &str = include_str!("../../../../tools/draft_reply.yaml");
const DISCARD: &str = include_str!("../../../../tools/discard_draft.yaml");

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Per-call figures of one scenario, in µs.
struct Figures {
    read_only_us: f64,
    keyed_us: f64,
}

pub async fn run(data: &Path, json_out: bool, calls: u32) -> anyhow::Result<()> {
    let scratch = Scratch(data.join(format!("bench-tools-{}", uuid::Uuid::new_v4().simple())));
    std::fs::create_dir_all(&scratch.0)
        .with_context(|| format!("creating {}", scratch.0.display()))?;
    let calls = calls.max(10);
    let progress = |what: &str| {
        if !json_out {
            eprintln!("measuring {what}…");
        }
    };
    progress("the bare builtin calls (baselines)");
    let base_read = baseline(
        &scratch.0.join("baseline"),
        calls,
        "lookup_order",
        |_| json!({"order_id": "A-1001"}),
    )
    .await?;
    let base_write = baseline(
        &scratch.0.join("baseline"),
        calls,
        "draft_reply",
        |i| json!({"order_id": "A-1001", "body": format!("b {i}")}),
    )
    .await?;
    progress("calls through the contract layer, durability on");
    let full = scenario(&scratch.0.join("full"), Durability::Full, calls).await?;
    progress("calls through the contract layer, durability off");
    let off = scenario(&scratch.0.join("off"), Durability::Off, calls).await?;
    let r1 = |v: f64| (v * 10.0).round() / 10.0;
    if json_out {
        let figures = json!({
            "calls": calls,
            "baseline_read_builtin_us": r1(base_read),
            "baseline_write_builtin_us": r1(base_write),
            "read_only_call_us": r1(full.read_only_us),
            "keyed_call_us": r1(full.keyed_us),
            "read_only_overhead_us": r1(full.read_only_us - base_read),
            "keyed_overhead_us": r1(full.keyed_us - base_write),
            "read_only_call_nosync_us": r1(off.read_only_us),
            "keyed_call_nosync_us": r1(off.keyed_us),
            "read_only_overhead_nosync_us": r1(off.read_only_us - base_read),
            "keyed_overhead_nosync_us": r1(off.keyed_us - base_write),
        });
        println!("{figures}");
        return Ok(());
    }
    println!("tool contract layer bench, {calls} calls per scenario (µs per call)");
    println!("  bare lookup_order (read, no contract)            {base_read:>10.1}");
    println!("  bare draft_reply (write, no contract)            {base_write:>10.1}");
    let row = |name: &str, v: f64, base: f64| {
        println!("  {name:<47}{v:>10.1}   overhead {:>10.1}", v - base)
    };
    row(
        "lookup_order via contract, durability on",
        full.read_only_us,
        base_read,
    );
    row(
        "draft_reply (keyed) via contract, durability on",
        full.keyed_us,
        base_write,
    );
    row(
        "lookup_order via contract, durability off",
        off.read_only_us,
        base_read,
    );
    row(
        "draft_reply (keyed) via contract, durability off",
        off.keyed_us,
        base_write,
    );
    println!(
        "  (on: every event append, ledger write and blob is fsynced; a blob put fsyncs file and directory)"
    );
    Ok(())
}

/// A builtin called directly (no contract), µs per call.
async fn baseline(
    dir: &Path,
    calls: u32,
    tool: &str,
    args: impl Fn(u32) -> Value,
) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir)?;
    let shop = Shop::open(dir.join("shop.db"))?;
    let adapter = shop
        .builtins()
        .adapter(tool)
        .with_context(|| format!("{tool} is not a builtin"))?;
    let t = Instant::now();
    for i in 0..calls {
        let a = args(i);
        let call = AdapterCall {
            tool,
            args: &a,
            idempotency_key: None,
            attempt: 1,
            elicit: None,
        };
        adapter
            .call(call)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(calls))
}

async fn scenario(dir: &Path, durability: Durability, calls: u32) -> anyhow::Result<Figures> {
    std::fs::create_dir_all(dir)?;
    let shop = Shop::open(dir.join("shop.db"))?;
    let sources: Vec<(PathBuf, String)> = [
        ("lookup_order.yaml", LOOKUP),
        ("draft_reply.yaml", DRAFT),
        ("discard_draft.yaml", DISCARD),
    ]
    .iter()
    .map(|(n, t)| (PathBuf::from(n), t.replace("rate: ", "# rate: ")))
    .collect();
    let registry = Registry::from_sources(&sources, None)?;
    let (runner, log) = ToolRunner::embedded(
        dir,
        registry,
        shop.builtins(),
        SqliteOptions { durability },
        crate::config::secrets::process_env(),
    )?;
    let mut w = Workload::new(clock::new_exec_id(), "bench");
    w.push(Payload::ExecStarted(ExecStarted {
        goal: "bench".into(),
        strategy_version: "bench".into(),
        budget: Budget::default(),
        experiment_arm: None,
        replay_of: None,
        experiment: None,
    }));
    let events = w.take();
    log.append(events[0].exec_id, 0, &events).await?;
    let mut state = ExecutionState::fold(&events)?;
    let read_only_us = measure(
        &runner,
        &mut state,
        calls,
        "lookup_order",
        |_| json!({"order_id": "A-1001"}),
    )
    .await?;
    let keyed_us = measure(
        &runner,
        &mut state,
        calls,
        "draft_reply",
        |i| json!({"order_id": "A-1001", "body": format!("reply {i}")}),
    )
    .await?;
    Ok(Figures {
        read_only_us,
        keyed_us,
    })
}

async fn measure(
    runner: &ToolRunner,
    state: &mut ExecutionState,
    calls: u32,
    tool: &str,
    args: impl Fn(u32) -> Value,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    for i in 0..calls {
        let ctx = CallContext::from_state(state)?;
        let report = runner.call(&ctx, tool, args(i)).await?;
        if !matches!(report.outcome, CallOutcome::Ok { .. }) {
            anyhow::bail!("{tool} did not succeed: {:?}", report.outcome);
        }
        for e in &report.events {
            state.apply_mut(e)?;
        }
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(calls))
}
