//! `keel bench step-overhead`: what the platform adds to an agent step. A 40-step execution
//! whose scripted model answers instantly and whose one tool is a no-op read-only builtin, so
//! what is measured is the loop, the contract layer and the spine. Compared with one plain
//! fsync on the same disk, measured in the same run: the physical limit of a durable step.
//!
//! Each scenario drives rounds of executions until `--seconds` of driving time is spent (the
//! scenarios take turns, half a second at a time), and reports the p50 and p99 of every step's
//! latency (from its events' timestamps) and the steps per second over all rounds; a run of
//! half a second per scenario differed by 60 % from the next, five seconds is the default.

use super::spine::{FsyncProbe, Scratch};
use anyhow::Context;
use keel_core::payload::Payload;
use keel_runtime::embedded::{Config, Embedded};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

pub(super) const STEPS: u32 = 40;

pub(super) const FILES: &[(&str, &str)] = &[
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

pub(super) fn strategy(mode: &str) -> String {
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

/// Per-step latencies (µs) of one execution, from its events' timestamps: from one
/// `step.completed` to the next. The first step is left out: it starts at `exec.started`, which
/// a round of many executions appends one after the other before any is driven.
fn step_latencies(events: &[keel_core::Event], out: &mut Vec<f64>) {
    let mut last: Option<chrono::DateTime<chrono::Utc>> = None;
    for e in events {
        if matches!(e.payload, Payload::StepCompleted(_)) {
            if let Some(before) = last {
                out.push((e.ts - before).num_microseconds().unwrap_or(0) as f64);
            }
            last = Some(e.ts);
        }
    }
}

/// Process CPU time (user + system) in µs, from /proc (Linux).
pub(super) fn cpu_us() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 1e6 / 100.0) // USER_HZ is 100 on Linux
}

/// The `q` quantile (0..=1) of `samples` (sorted in place); NaN when there are none.
fn quantile(samples: &mut [f64], q: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let last = samples.len().saturating_sub(1);
    let i = ((last as f64) * q).round() as usize;
    samples.get(i.min(last)).copied().unwrap_or(f64::NAN)
}

/// What one scenario measured: rounds of `concurrency` executions driven together, repeated
/// until the scenario's time is spent.
#[derive(Default)]
struct Scenario {
    /// Every step's latency, µs.
    latencies: Vec<f64>,
    /// Steps completed.
    steps: u64,
    /// Wall time spent driving (starting executions and reading logs back is off the clock).
    driving: f64,
    /// Process CPU per step of each round, µs.
    cpu_per_step: Vec<f64>,
    /// Process CPU over all rounds, µs.
    cpu_total: f64,
    /// Rounds driven.
    rounds: usize,
}

impl Scenario {
    fn steps_per_s(&self) -> f64 {
        self.steps as f64 / self.driving
    }

    fn figures(&mut self) -> serde_json::Value {
        json!({
            "p50_us": quantile(&mut self.latencies, 0.50).round(),
            "p99_us": quantile(&mut self.latencies, 0.99).round(),
            "steps": self.steps,
            "steps_per_s": self.steps_per_s().round(),
        })
    }
}

/// Drives rounds of `concurrency` executions of `mode` until `out` holds `until` seconds of
/// driving (at least one round per call, however short the time asked for).
async fn drive(
    env: &Embedded,
    mode: &str,
    concurrency: usize,
    until: f64,
    out: &mut Scenario,
) -> anyhow::Result<()> {
    let s = env.strategies.get(mode).context("bench strategy")?.clone();
    let model = s.provider()?;
    let first = out.rounds;
    while out.rounds == first || out.driving < until {
        let mut execs = Vec::with_capacity(concurrency);
        for i in 0..concurrency {
            let tenant = format!("bench-{mode}-{concurrency}-{}-{i}", out.rounds);
            execs.push(env.agent.start(&s, &tenant, "noop").await?);
        }
        let cpu0 = cpu_us();
        let started = Instant::now();
        let runs = execs.iter().map(|exec| {
            let (agent, s, model, exec) = (env.agent.clone(), s.clone(), model.clone(), *exec);
            tokio::spawn(async move { agent.drive(&s, &*model, exec).await })
        });
        let mut steps = 0u64;
        for r in futures::future::join_all(runs).await {
            steps += u64::from(r??.totals.steps);
        }
        out.driving += started.elapsed().as_secs_f64();
        if let (Some(a), Some(b)) = (cpu0, cpu_us())
            && steps > 0
        {
            out.cpu_total += b - a;
            out.cpu_per_step.push((b - a) / steps as f64);
        }
        out.steps += steps;
        for exec in &execs {
            step_latencies(&env.log.read(*exec, 1).await?, &mut out.latencies);
        }
        out.rounds += 1;
    }
    Ok(())
}

/// Seconds of one slice: scenarios take turns in slices this long, so a load that comes and
/// goes on the machine falls on every scenario alike instead of on whichever ran at the time.
const SLICE_S: f64 = 0.5;

pub async fn run(data: &Path, json_out: bool, seconds: f64) -> anyhow::Result<()> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        anyhow::bail!("--seconds must be more than 0 and at most 3600, not {seconds}");
    }
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
    // The fsync is sampled between slices, so it sees the disk as the scenarios did.
    // One at a time (every_step, before_effects), 8 and 64 concurrent, and the CPU scenario.
    let scenarios: [(&str, usize); 5] = [
        ("every_step", 1),
        ("before_effects", 1),
        ("every_step", 8),
        ("every_step", 64),
        ("before_effects", 16),
    ];
    let mut measured: [Scenario; 5] = Default::default();
    let slices = (seconds / SLICE_S).ceil().max(1.0) as u32;
    if !json_out {
        eprintln!(
            "measuring {} scenarios for {seconds} s each, in {slices} turns…",
            scenarios.len()
        );
    }
    probe.sample(20)?;
    for slice in 1..=slices {
        let until = seconds * f64::from(slice) / f64::from(slices);
        if !json_out {
            eprintln!("  turn {slice}/{slices}");
        }
        for ((mode, concurrency), out) in scenarios.iter().zip(measured.iter_mut()) {
            drive(&env, mode, *concurrency, until, out).await?;
        }
        probe.sample(20)?;
    }
    let [mut every1, mut before1, mut every8, mut every64, mut cpu] = measured;
    let fsync = &mut probe.samples;
    let (fsync50, fsync99) = (quantile(fsync, 0.50), quantile(fsync, 0.99));
    let cpu_mean = cpu.cpu_total / cpu.steps as f64;
    let (cpu50, cpu99) = (
        quantile(&mut cpu.cpu_per_step, 0.50),
        quantile(&mut cpu.cpu_per_step, 0.99),
    );
    let round1 = |v: f64| (v * 10.0).round() / 10.0;
    if json_out {
        println!(
            "{}",
            json!({
                "seconds_per_scenario": seconds,
                "fsync_us": {"p50": round1(fsync50), "p99": round1(fsync99), "samples": fsync.len()},
                "every_step_1": every1.figures(),
                "before_effects_1": before1.figures(),
                "every_step_8": every8.figures(),
                "every_step_64": every64.figures(),
                "cpu_us_per_step": {
                    "mean": round1(cpu_mean),
                    "p50": round1(cpu50),
                    "p99": round1(cpu99),
                    "steps": cpu.steps,
                },
            })
        );
        return Ok(());
    }
    println!(
        "step overhead ({STEPS}-step executions, instant scripted model, no-op read-only tool, \
         {seconds} s per scenario)"
    );
    println!("  {:<46}{:>10} {:>10} {:>12}", "", "p50", "p99", "steps/s");
    println!(
        "  {:<46}{fsync50:>7.1} µs {fsync99:>7.1} µs",
        "fsync latency on this disk"
    );
    let row = |what: &str, s: &mut Scenario| {
        let (p50, p99) = (
            quantile(&mut s.latencies, 0.50),
            quantile(&mut s.latencies, 0.99),
        );
        println!(
            "  {what:<46}{p50:>7.0} µs {p99:>7.0} µs {:>12.0}   (p50 {:.1} × fsync)",
            s.steps_per_s(),
            p50 / fsync50
        );
    };
    row("every_step, per step, one execution", &mut every1);
    row("before_effects, per step, one execution", &mut before1);
    row("every_step, per step, 8 concurrent", &mut every8);
    row("every_step, per step, 64 concurrent", &mut every64);
    println!(
        "  {:<46}{cpu50:>7.1} µs {cpu99:>7.1} µs   (mean {cpu_mean:.1} µs over {} steps)",
        "platform CPU per step (16 concurrent)", cpu.steps
    );
    Ok(())
}
