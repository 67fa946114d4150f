//! `keel bench mcp --url URL`: what a tool call on a real MCP server over Streamable HTTP costs
//! through Keel's contract layer, against the bare MCP call on the same session kind, measured
//! in the same run.
//!
//! Baseline: `tools/call` through the MCP client alone (rmcp, Keel's client handler, one
//! session). Then the same tool through `ToolRunner::call` (input and output validation,
//! `tool.called` + `tool.result` appended to the spine, output stored in the blob store), with
//! durability on (every write fsynced, as in production) and off (the CPU path). The contract is
//! drafted from the server's tool list, as `keel tools call <url>` does. Overhead = contract
//! call − bare call (medians).

use super::workload::Workload;
use anyhow::{Context, bail};
use keel_core::payload::{Budget, ExecStarted};
use keel_core::{ExecutionState, Payload};
use keel_spine::{Durability, EventLog, SqliteOptions, clock};
use keel_tools::adapter::builtin::Builtins;
use keel_tools::adapter::mcp::McpClient;
use keel_tools::contract::{ElicitationPolicy, McpServer};
use keel_tools::{CallContext, CallOutcome, Registry, ToolRunner};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Median and p99 of a sample, µs.
fn quantiles(mut us: Vec<f64>) -> (f64, f64) {
    us.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((us.len().saturating_sub(1)) as f64 * q).round() as usize;
        us.get(i).copied().unwrap_or(0.0)
    };
    (at(0.5), at(0.99))
}

/// Runs the bench against `url`, calling `tool` with `args` `calls` times per scenario.
pub async fn run(
    data: &Path,
    json_out: bool,
    calls: u32,
    url: &str,
    tool: &str,
    args: &str,
) -> anyhow::Result<()> {
    let args: Value = serde_json::from_str(args).context("--args is not valid JSON")?;
    let calls = calls.max(10);
    let server = McpServer::http(url);
    let scratch = data.join(format!("bench-mcp-{}", uuid::Uuid::new_v4().simple()));
    let result = measure_all(&scratch, &server, tool, &args, calls, json_out).await;
    let _ = std::fs::remove_dir_all(&scratch);
    let f = result?;
    let r1 = |v: f64| (v * 10.0).round() / 10.0;
    if json_out {
        println!(
            "{}",
            json!({
                "calls": calls, "url": url, "tool": tool,
                "protocol_version": f.protocol,
                "bare_call_p50_us": r1(f.bare.0), "bare_call_p99_us": r1(f.bare.1),
                "contract_call_p50_us": r1(f.full.0), "contract_call_p99_us": r1(f.full.1),
                "contract_overhead_p50_us": r1(f.full.0 - f.bare.0),
                "contract_call_nosync_p50_us": r1(f.off.0),
                "contract_call_nosync_p99_us": r1(f.off.1),
                "contract_overhead_nosync_p50_us": r1(f.off.0 - f.bare.0),
            })
        );
        return Ok(());
    }
    println!(
        "MCP over Streamable HTTP: {tool} on {url} (protocol {}), {calls} calls per scenario, µs per call",
        f.protocol
    );
    println!("  {:<44}{:>10} {:>10}", "", "p50", "p99");
    println!(
        "  {:<44}{:>10.1} {:>10.1}",
        "bare MCP call (no contract)", f.bare.0, f.bare.1
    );
    println!(
        "  {:<44}{:>10.1} {:>10.1}   overhead p50 {:.1}",
        "via contract, durability on",
        f.full.0,
        f.full.1,
        f.full.0 - f.bare.0
    );
    println!(
        "  {:<44}{:>10.1} {:>10.1}   overhead p50 {:.1}",
        "via contract, durability off",
        f.off.0,
        f.off.1,
        f.off.0 - f.bare.0
    );
    Ok(())
}

struct Figures {
    protocol: String,
    bare: (f64, f64),
    full: (f64, f64),
    off: (f64, f64),
}

async fn measure_all(
    dir: &Path,
    server: &McpServer,
    tool: &str,
    args: &Value,
    calls: u32,
    json_out: bool,
) -> anyhow::Result<Figures> {
    let progress = |what: &str| {
        if !json_out {
            eprintln!("measuring {what}…");
        }
    };
    let client = McpClient::connect(
        server,
        ElicitationPolicy::Decline,
        &crate::config::secrets::ProcessEnv,
    )
    .await?;
    let protocol = client.protocol_version().unwrap_or_default();
    let listed = client
        .tools()
        .iter()
        .find(|t| t.name == tool)
        .with_context(|| format!("MCP server {server} has no tool {tool:?}"))?;
    let draft = keel_tools::import::draft_with(server, ElicitationPolicy::Decline, listed);
    // The bench calls many times a second: no rate budget.
    let source = (
        PathBuf::from(format!("{server} {tool}")),
        draft.yaml.replace("rate: ", "# rate: "),
    );
    progress("the bare MCP calls (baseline)");
    // Warm both ends (connection pool, the server's own code paths) before sampling.
    for _ in 0..calls / 10 {
        client
            .call(tool, args)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    let mut bare = Vec::new();
    for _ in 0..calls {
        let t = Instant::now();
        client
            .call(tool, args)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        bare.push(t.elapsed().as_secs_f64() * 1e6);
    }
    client.close().await;
    progress("calls through the contract layer, durability on");
    let full = scenario(
        &dir.join("full"),
        &source,
        Durability::Full,
        tool,
        args,
        calls,
    )
    .await?;
    progress("calls through the contract layer, durability off");
    let off = scenario(
        &dir.join("off"),
        &source,
        Durability::Off,
        tool,
        args,
        calls,
    )
    .await?;
    Ok(Figures {
        protocol,
        bare: quantiles(bare),
        full,
        off,
    })
}

async fn scenario(
    dir: &Path,
    source: &(PathBuf, String),
    durability: Durability,
    tool: &str,
    args: &Value,
    calls: u32,
) -> anyhow::Result<(f64, f64)> {
    std::fs::create_dir_all(dir)?;
    let registry = Registry::from_sources(std::slice::from_ref(source), None)?;
    let name = registry
        .iter()
        .next()
        .map(|c| c.name.clone())
        .context("the drafted contract did not load")?;
    let (runner, log) = ToolRunner::embedded(
        dir,
        registry,
        Builtins::default(),
        SqliteOptions { durability },
        crate::config::secrets::process_env(),
    )?;
    let mut w = Workload::new(clock::new_exec_id(), "bench");
    w.push(Payload::ExecStarted(ExecStarted {
        goal: format!("bench mcp {tool}"),
        strategy_version: "bench".into(),
        budget: Budget::default(),
        experiment_arm: None,
        replay_of: None,
        experiment: None,
    }));
    let events = w.take();
    log.append(events[0].exec_id, 0, &events).await?;
    let mut state = ExecutionState::fold(&events)?;
    // The first call opens the session; it is not part of the figures.
    let mut sample = Vec::new();
    for i in 0..=calls {
        let ctx = CallContext::from_state(&state)?;
        let t = Instant::now();
        let report = runner.call(&ctx, &name, args.clone()).await?;
        let us = t.elapsed().as_secs_f64() * 1e6;
        if !matches!(report.outcome, CallOutcome::Ok { .. }) {
            runner.shutdown().await;
            bail!("{tool} did not succeed: {:?}", report.outcome);
        }
        for e in &report.events {
            state.apply_mut(e)?;
        }
        if i > 0 {
            sample.push(us);
        }
    }
    runner.shutdown().await;
    Ok(quantiles(sample))
}
