//! `keel bench step-overhead`: what the platform adds to an agent step. A 40-step execution
//! whose scripted model answers instantly and whose one tool is a no-op read-only builtin, so
//! what is measured is the loop, the contract layer and the spine. Compared with one plain
//! fsync on the same disk, measured in the same run: the physical limit of a durable step.

use super::spine::{FsyncProbe, Scratch, median};
use anyhow::Context;
use keel_core::payload::Payload;
use keel_runtime::embedded::{Config, Embedded};
use keel_spine::EventLog;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const STEPS: u32 = 40;

const FILES: &[(&str, &str)] = &[
    (
        "tools/noop.yaml",
        "name: noop
description: Does nothing, instantly.
schema:
  input: {type: object}
  output: {type: object}
side_effect: read_only
consequence_tier: 0
idempotency: none
budgets: {rate: 100000000/min, cost_est: \"$0\"}
failure_policy: {retryable: [], max_attempts: 1, on_exhaust: fail}
timeout: 5s
adapter: {kind: builtin, function: noop}
",
    ),
    ("prompt.md", "Call noop."),
    (
        "model.yaml",
        "rules:\n  - then: { call: { tool: noop, args: {} }, output_tokens: 5 }\n",
    ),
    (
        "prices.toml",
        "[models.noop-model]\ninput = 0.1\noutput = 0.1\n",
    ),
];

fn strategy(mode: &str) -> String {
    format!(
        "name: {mode}
prompt: {{ file: ../prompt.md, version: v1 }}
model: {{ provider: scripted, name: noop-model, script: ../model.yaml }}
tools: [noop]
max_steps: {STEPS}
durability: {mode}
success: [ {{ tool: noop }} ]
"
    )
}

/// Per-step latencies (µs) of one execution, from its events' timestamps.
fn step_latencies(events: &[keel_core::Event]) -> Vec<f64> {
    let mut marks = vec![events[0].ts];
    marks.extend(
        events
            .iter()
            .filter(|e| matches!(e.payload, Payload::StepCompleted(_)))
            .map(|e| e.ts),
    );
    marks
        .windows(2)
        .map(|w| (w[1] - w[0]).num_microseconds().unwrap_or(0) as f64)
        .collect()
}

/// Process CPU time (user + system) in µs, from /proc (Linux).
fn cpu_us() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 1e6 / 100.0) // USER_HZ is 100 on Linux
}

async fn run_many(env: &Embedded, mode: &str, n: usize) -> anyhow::Result<(f64, Vec<f64>)> {
    let s = env.strategies.get(mode).context("bench strategy")?.clone();
    let model = s.provider()?;
    let mut execs = Vec::new();
    for i in 0..n {
        execs.push(env.agent.start(&s, &format!("bench-{i}"), "noop").await?);
    }
    let started = Instant::now();
    let runs = execs.iter().map(|exec| {
        let (agent, s, model, exec) = (env.agent.clone(), s.clone(), model.clone(), *exec);
        tokio::spawn(async move { agent.drive(&s, &*model, exec).await })
    });
    let mut steps = 0u64;
    for r in futures::future::join_all(runs).await {
        steps += u64::from(r??.totals.steps);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let events = env.log.read(execs[0], 1).await?;
    Ok((steps as f64 / elapsed, step_latencies(&events)))
}

pub async fn run(data: &Path, json_out: bool) -> anyhow::Result<()> {
    let scratch = Scratch(data.join(format!("bench-{}", uuid::Uuid::new_v4().simple())));
    let cfg = scratch.0.join("config");
    for (file, text) in FILES {
        let p = cfg.join(file);
        std::fs::create_dir_all(p.parent().unwrap_or(&cfg))?;
        std::fs::write(&p, text)?;
    }
    std::fs::create_dir_all(cfg.join("strategies"))?;
    for mode in ["every_step", "before_effects"] {
        std::fs::write(cfg.join(format!("strategies/{mode}.yaml")), strategy(mode))?;
    }
    let config = Config {
        tools: cfg.join("tools"),
        strategies: cfg.join("strategies"),
        prices: cfg.join("prices.toml"),
    };
    let env = Embedded::open_with(&scratch.0.join("store"), &config, |b| {
        b.register(
            "noop",
            false,
            Arc::new(|_args, _key| Box::pin(async { Ok(json!({})) })),
        );
    })?;
    let mut probe = FsyncProbe::open(&scratch.0.join("fsync.probe"))?;
    let say = |what: &str| {
        if !json_out {
            eprintln!("measuring {what}…");
        }
    };
    probe.sample(60)?;
    say("every_step, one execution");
    let (_, mut lat_every) = run_many(&env, "every_step", 1).await?;
    probe.sample(60)?;
    say("every_step, 8 concurrent executions");
    let (every8, _) = run_many(&env, "every_step", 8).await?;
    probe.sample(60)?;
    say("every_step, 64 concurrent executions");
    let (every64, _) = run_many(&env, "every_step", 64).await?;
    probe.sample(60)?;
    say("before_effects, one execution");
    let (_, mut lat_before) = run_many(&env, "before_effects", 1).await?;
    say("CPU per step (before_effects, 16 executions)");
    let cpu0 = cpu_us();
    let (_, _) = run_many(&env, "before_effects", 16).await?;
    let cpu_per_step = match (cpu0, cpu_us()) {
        (Some(a), Some(b)) => (b - a) / f64::from(16 * STEPS),
        _ => f64::NAN,
    };
    let fsync_us = probe.median_us();
    let (p50_every, p50_before) = (median(&mut lat_every), median(&mut lat_before));
    if json_out {
        println!(
            "{}",
            json!({
                "fsync_us": (fsync_us * 10.0).round() / 10.0,
                "every_step_p50_us_1": p50_every.round(),
                "every_step_steps_per_s_8": every8.round(),
                "every_step_steps_per_s_64": every64.round(),
                "before_effects_p50_us_1": p50_before.round(),
                "cpu_us_per_step": (cpu_per_step * 10.0).round() / 10.0,
            })
        );
        return Ok(());
    }
    println!(
        "step overhead ({STEPS}-step executions, instant scripted model, no-op read-only tool)"
    );
    println!("  fsync latency on this disk                {fsync_us:>10.1} µs");
    println!(
        "  every_step, per step, one execution       {p50_every:>10.0} µs   ({:.2} × fsync)",
        p50_every / fsync_us
    );
    println!("  every_step, 8 concurrent executions       {every8:>10.0} steps/s");
    println!("  every_step, 64 concurrent executions      {every64:>10.0} steps/s");
    println!("  before_effects, per step, one execution   {p50_before:>10.0} µs");
    println!("  platform CPU per step                     {cpu_per_step:>10.1} µs");
    Ok(())
}
