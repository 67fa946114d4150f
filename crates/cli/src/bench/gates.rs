//! `keel bench gates`: the round trip of an approval gate, without the human: the loop reaching
//! a tier-3 action and suspending durably (`gate.requested`), the decision appended
//! (`gate.decided`, through the approval queue), and the execution resumed and finished (the
//! approved call run with its idempotency key). Reported as p50/p99 per phase, beside one plain
//! fsync measured in the same run (each phase needs at least one durable commit).

use super::spine::{FsyncProbe, Scratch, median};
use anyhow::{Context, bail};
use keel_core::ExecStatus;
use keel_core::payload::Verdict;
use keel_runtime::embedded::{Config, Embedded};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const FILES: &[(&str, &str)] = &[
    (
        "tools/pay.yaml",
        "name: pay
description: Moves money, instantly (a no-op here).
schema:
  input: {type: object, properties: {payment: {type: integer}}, required: [payment]}
  output: {type: object}
side_effect: irreversible
consequence_tier: 3
idempotency: {mode: required, key: [exec_id, payment]}
budgets: {rate: 100000000/min, cost_est: \"$0\"}
failure_policy: {retryable: [], max_attempts: 1, on_exhaust: fail}
timeout: 5s
adapter: {kind: builtin, function: pay}
",
    ),
    ("prompt.md", "Pay."),
    (
        "model.yaml",
        "rules:
  - when: { not_called: [pay] }
    then: { call: { tool: pay, args: { payment: 1 } }, output_tokens: 5 }
  - then: { text: paid, output_tokens: 2 }
",
    ),
    (
        "prices.toml",
        "[models.noop-model]\ninput = 0.1\noutput = 0.1\n",
    ),
    (
        "strategies/pay.yaml",
        "name: pay
prompt: { file: ../prompt.md, version: v1 }
model: { provider: scripted, name: noop-model, script: ../model.yaml }
tools: [pay]
max_steps: 4
success: [ { tool: pay } ]
",
    ),
];

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

pub async fn run(data: &Path, json_out: bool, n: usize) -> anyhow::Result<()> {
    if n == 0 {
        bail!("--gates: at least 1");
    }
    let scratch = Scratch(data.join(format!("bench-{}", uuid::Uuid::new_v4().simple())));
    let cfg = scratch.0.join("config");
    for (file, text) in FILES {
        let p = cfg.join(file);
        std::fs::create_dir_all(p.parent().unwrap_or(&cfg))?;
        std::fs::write(&p, text)?;
    }
    let config = Config {
        tools: cfg.join("tools"),
        strategies: cfg.join("strategies"),
        prices: cfg.join("prices.toml"),
    };
    let env = Embedded::open_with(&scratch.0.join("store"), &config, |b| {
        b.register(
            "pay",
            true,
            Arc::new(|_args, _key| Box::pin(async { Ok(json!({})) })),
        );
    })?;
    let mut probe = FsyncProbe::open(&scratch.0.join("fsync.probe"))?;
    probe.sample(60)?;
    let s = env.strategies.get("pay").context("bench strategy")?.clone();
    let model = s.provider()?;
    let (mut request, mut decide, mut resume, mut round) = (vec![], vec![], vec![], vec![]);
    if !json_out {
        eprintln!("measuring {n} gate round trips…");
    }
    for i in 0..n {
        let exec = env
            .agent
            .start(&s, &format!("bench-{}", i % 8), "pay")
            .await?;
        let t0 = Instant::now();
        let state = env.agent.drive(&s, &*model, exec).await?;
        let t1 = Instant::now();
        let ExecStatus::SuspendedAtGate { gate_id } = state.status else {
            bail!("execution {exec} did not stop at a gate: {}", state.status);
        };
        env.approvals
            .decide(&gate_id, None, "bench", Verdict::Approve, "bench")
            .await?;
        let t2 = Instant::now();
        let state = env.agent.drive(&s, &*model, exec).await?;
        let t3 = Instant::now();
        if !state.status.is_terminal() {
            bail!(
                "execution {exec} did not finish after approval: {}",
                state.status
            );
        }
        request.push((t1 - t0).as_secs_f64() * 1e6);
        decide.push((t2 - t1).as_secs_f64() * 1e6);
        resume.push((t3 - t2).as_secs_f64() * 1e6);
        round.push((t3 - t1).as_secs_f64() * 1e6);
        if i % 50 == 49 {
            probe.sample(20)?;
        }
    }
    let fsync_us = probe.median_us();
    let fig = |v: &mut Vec<f64>| (median(v), pct(v, 0.99));
    let (req, dec, res, rt) = (
        fig(&mut request),
        fig(&mut decide),
        fig(&mut resume),
        fig(&mut round),
    );
    if json_out {
        println!(
            "{}",
            json!({
                "fsync_us": (fsync_us * 10.0).round() / 10.0,
                "gates": n,
                "gate_request_p50_us": req.0.round(), "gate_request_p99_us": req.1.round(),
                "gate_decide_p50_us": dec.0.round(), "gate_decide_p99_us": dec.1.round(),
                "gate_resume_p50_us": res.0.round(), "gate_resume_p99_us": res.1.round(),
                "gate_round_trip_p50_us": rt.0.round(), "gate_round_trip_p99_us": rt.1.round(),
            })
        );
        return Ok(());
    }
    println!("gate round trip ({n} tier-3 calls, instant scripted model, no-op builtin tool)");
    println!("  fsync latency on this disk                      {fsync_us:>9.1} µs");
    for (what, (p50, p99)) in [
        ("step to gate.requested (durable, suspended)", req),
        ("decision (queue lookup + durable gate.decided)", dec),
        ("resumed to finished (approved call + end)", res),
        ("round trip: decided → resumed → finished", rt),
    ] {
        println!(
            "  {what:<47} p50 {p50:>8.0} µs ({:>4.1}× fsync)  p99 {p99:>8.0} µs",
            p50 / fsync_us
        );
    }
    Ok(())
}
