//! Approval gates end to end on the embedded default (real spine file, real shop tools, the
//! scripted model): suspension with an evidence pack, approve and reject paths, racing approvers,
//! SLA escalation and expiry, demotion on a rejection spike and re-certification.

#![allow(clippy::unwrap_used)]

mod common;

use chrono::{DateTime, Duration, Utc};
use common::*;
use keel_core::payload::{Outcome, Payload, ToolStatus, Verdict};
use keel_core::{ExecId, ExecStatus};
use keel_runtime::RuntimeError;
use keel_runtime::embedded::Embedded;
use keel_runtime::gates::{Approvals, GateError};
use keel_spine::clock::Clock;
use std::sync::Arc;

/// Starts and drives an execution until it waits at a gate; returns it and the gate id.
async fn to_gate(env: &Embedded, strategy: &str, goal: &str) -> (ExecId, String) {
    let (exec, state, _) = run(env, strategy, goal).await;
    match state.status {
        ExecStatus::SuspendedAtGate { gate_id } => (exec, gate_id),
        other => panic!("expected a gate, got {other}"),
    }
}

/// Drives an execution on after its gate was decided.
async fn resume(env: &Embedded, strategy: &str, exec: ExecId) -> keel_core::ExecutionState {
    let s = env.strategies.get(strategy).unwrap();
    env.agent
        .drive(s, &*s.provider().unwrap(), exec)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_carries_an_evidence_pack_and_approval_runs_the_refund_once() {
    let (_tmp, env) = setup(&[]);
    let (exec, gate_id) = to_gate(&env, "support-short", "Please refund order 1001").await;
    let book = env.approvals.book().await.unwrap();
    let pending = book.pending(Some("acme"));
    assert_eq!(pending.len(), 1);
    let g = pending[0];
    assert_eq!(g.gate_id, gate_id);
    assert_eq!(g.consequence_tier, 3);
    let pack = &g.evidence_pack;
    assert_eq!(pack["goal"], "Please refund order 1001");
    assert_eq!(pack["action"]["tool"], "issue_customer_refund");
    assert_eq!(pack["action"]["args"]["order_id"], "A-1001");
    assert!(pack["action"]["idempotency_key"].is_string());
    assert_eq!(pack["contract"]["consequence_tier"], 3);
    assert_eq!(pack["contract"]["side_effect"], "irreversible");
    assert!(!pack["reasoning"].as_array().unwrap().is_empty());
    assert!(pack["cost_so_far"]["usd"].as_f64().unwrap() > 0.0);
    assert!(
        book.pending(Some("globex")).is_empty(),
        "another tenant sees nothing"
    );
    drop(book);

    let (_, d) = env
        .approvals
        .decide(
            &gate_id,
            Some("acme"),
            "alice",
            Verdict::Approve,
            "order checked",
        )
        .await
        .unwrap();
    assert_eq!(d.verdict, Verdict::Approve);
    let state = resume(&env, "support-short", exec).await;
    assert_eq!(outcome(&state), Some(Outcome::Success));
    assert_eq!(env.shop.count("refunds").unwrap(), 1);
    let events = env.log.read(exec, 1).await.unwrap();
    assert_eq!(
        tool_statuses(&events),
        [
            ("lookup_order".into(), ToolStatus::Ok),
            ("issue_customer_refund".into(), ToolStatus::Ok)
        ]
    );
    // Driving it again does nothing more: the execution is over, the money moved once.
    resume(&env, "support-short", exec).await;
    assert_eq!(env.shop.count("refunds").unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_and_its_reason_reach_the_model() {
    let (_tmp, env) = setup(&[]);
    let (exec, gate_id) = to_gate(&env, "support-short", "Please refund order 1002").await;
    env.approvals
        .decide(
            &gate_id,
            None,
            "bob",
            Verdict::Reject,
            "refund window closed",
        )
        .await
        .unwrap();
    let state = resume(&env, "support-short", exec).await;
    assert_eq!(outcome(&state), Some(Outcome::Failure));
    let events = env.log.read(exec, 1).await.unwrap();
    let answer = finished_detail(&events);
    assert!(answer.contains("refund window closed"), "{answer}");
    assert!(answer.contains("bob"), "{answer}");
    assert_eq!(env.shop.count("refunds").unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_racing_approvers_exactly_one_wins() {
    let (_tmp, env) = setup(&[]);
    for round in 0..5 {
        let goal = format!("Please refund order {}", 1010 + round);
        let (_, gate_id) = to_gate(&env, "support-short", &goal).await;
        let a = env.approvals.clone();
        let b = env.approvals.clone();
        let (g1, g2) = (gate_id.clone(), gate_id.clone());
        let ra =
            tokio::spawn(async move { a.decide(&g1, None, "alice", Verdict::Approve, "ok").await });
        let rb =
            tokio::spawn(async move { b.decide(&g2, None, "bob", Verdict::Reject, "no").await });
        let results = [ra.await.unwrap(), rb.await.unwrap()];
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {results:?}");
        let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert!(
            matches!(loser, RuntimeError::Gate(GateError::AlreadyDecided { .. })),
            "{loser}"
        );
        // A late decision is refused too, with who decided.
        let late = env
            .approvals
            .decide(&gate_id, None, "carol", Verdict::Approve, "late")
            .await
            .unwrap_err();
        assert!(late.to_string().contains("already decided"), "{late}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_foreign_gates_are_refused() {
    let (_tmp, env) = setup(&[]);
    let (_, gate_id) = to_gate(&env, "support-short", "Please refund order 1003").await;
    let e = env
        .approvals
        .decide(&gate_id, Some("globex"), "mallory", Verdict::Approve, "")
        .await
        .unwrap_err();
    assert!(
        matches!(e, RuntimeError::Gate(GateError::Unknown(_))),
        "{e}"
    );
    let e = env
        .approvals
        .decide("no-such-gate", None, "alice", Verdict::Approve, "")
        .await
        .unwrap_err();
    assert!(
        matches!(e, RuntimeError::Gate(GateError::Unknown(_))),
        "{e}"
    );
}

/// The wall clock moved on by a fixed offset: SLA tests without sleeping.
struct Later(Duration);

impl Clock for Later {
    fn now(&self) -> DateTime<Utc> {
        keel_spine::clock::SystemClock.now() + self.0
    }
}

const SLA: &str = r#"
name: sla
prompt: { file: {repo}/prompts/support-v1.md, version: v1 }
model: { provider: scripted, name: scripted-small, script: {repo}/models/support.yaml }
tools: [lookup_order, issue_customer_refund]
max_steps: 6
approval: { queue: refunds, deadline_s: 60, expire_after_s: 3600 }
success: [ { tool: issue_customer_refund, status: ok } ]
"#;

fn approvals_at(env: &Embedded, offset: Duration) -> Approvals {
    Approvals::new(
        env.log.clone(),
        Arc::new(Later(offset)),
        env.agent.control.clone(),
        env.strategies.clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_past_its_deadline_escalates_once_and_past_its_expiry_expires() {
    let (_tmp, env) = setup(&[("sla", SLA)]);
    let (exec, gate_id) = to_gate(&env, "sla", "Please refund order 1004").await;
    // Within the deadline nothing happens.
    let r = approvals_at(&env, Duration::seconds(30))
        .sweep()
        .await
        .unwrap();
    assert!(r.escalated.is_empty() && r.expired.is_empty());
    // Past it: one escalation, recorded on the execution; a second sweep does not repeat it.
    let later = approvals_at(&env, Duration::seconds(61));
    let r = later.sweep().await.unwrap();
    assert_eq!(r.escalated, [("refunds".to_string(), gate_id.clone())]);
    assert!(later.sweep().await.unwrap().escalated.is_empty());
    let events = env.log.read(exec, 1).await.unwrap();
    let escalated = events
        .iter()
        .filter(|e| matches!(&e.payload, Payload::GateEscalated(g) if g.gate_id == gate_id))
        .count();
    assert_eq!(escalated, 1);
    let book = later.book().await.unwrap();
    assert!(book.gates[&gate_id].escalated && book.gates[&gate_id].is_pending());
    drop(book);
    // Past the expiry: a distinct verdict, by the SLA, and the model is told.
    let r = approvals_at(&env, Duration::seconds(3601))
        .sweep()
        .await
        .unwrap();
    assert_eq!(r.expired, [("refunds".to_string(), gate_id.clone())]);
    let state = resume(&env, "sla", exec).await;
    assert_eq!(outcome(&state), Some(Outcome::Failure));
    let events = env.log.read(exec, 1).await.unwrap();
    let verdict = events.iter().find_map(|e| match &e.payload {
        Payload::GateDecided(d) => Some((d.verdict, d.approver.clone())),
        _ => None,
    });
    assert_eq!(verdict, Some((Verdict::Expired, "keel:sla".to_string())));
    assert!(finished_detail(&events).contains("expired"));
    assert_eq!(env.shop.count("refunds").unwrap(), 0);
}

const TOUCHY: &str = r#"
name: touchy
prompt: { file: {repo}/prompts/support-v1.md, version: v1 }
model: { provider: scripted, name: scripted-small, script: {repo}/models/support.yaml }
tools: [lookup_order, notify_team, issue_customer_refund]
max_steps: 6
max_autonomous_tier: 2
approval: { review_rate: 1.0, demotion: { window: 4, min_sample: 3, max_rejection_rate: 0.5 } }
success: [ { tool: notify_team, status: ok }, { tool: issue_customer_refund, status: ok } ]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_spike_demotes_the_strategy_until_it_is_recertified() {
    let (_tmp, env) = setup(&[("touchy", TOUCHY)]);
    let version = env.strategies.get("touchy").unwrap().version.clone();
    // Tier 2 runs alone (and, at rate 1.0, is sampled for post-hoc review).
    let (_, state, events) = run(&env, "touchy", "terrible service on order 1001").await;
    assert_eq!(outcome(&state), Some(Outcome::Success));
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.payload, Payload::ReviewSampled(r) if r.tool == "notify_team"))
    );
    // Three refunds rejected in a row: over 50 % of at least 3 decisions.
    for (i, verdict) in [
        Verdict::Reject,
        Verdict::Approve,
        Verdict::Reject,
        Verdict::Reject,
    ]
    .into_iter()
    .enumerate()
    {
        let (_, gate_id) =
            to_gate(&env, "touchy", &format!("Please refund order {}", 1020 + i)).await;
        env.approvals
            .decide(&gate_id, None, "alice", verdict, "spike")
            .await
            .unwrap();
    }
    let control = env.agent.control.state().await.unwrap();
    let demotion = control.demotions.get(&version).expect("demoted");
    assert_eq!(demotion.max_autonomous_tier, 1);
    assert!(demotion.rejection_rate > 0.5);
    // Now tier 2 gates too.
    let (_, gate_id) = to_gate(&env, "touchy", "terrible service on order 1002").await;
    let book = env.approvals.book().await.unwrap();
    assert_eq!(book.gates[&gate_id].action["tool"], "notify_team");
    assert!(
        book.gates[&gate_id]
            .reason
            .contains("maximum autonomous tier 1")
    );
    drop(book);
    // A person re-certifies: tier 2 runs alone again, and the old rejections no longer count.
    env.agent
        .control
        .certify(&version, "lead", "prompt fixed")
        .await
        .unwrap();
    let (_, state, _) = run(&env, "touchy", "terrible service on order 1003").await;
    assert_eq!(outcome(&state), Some(Outcome::Success));
    let (_, gate_id) = to_gate(&env, "touchy", "Please refund order 1030").await;
    env.approvals
        .decide(&gate_id, None, "alice", Verdict::Reject, "one more")
        .await
        .unwrap();
    let control = env.agent.control.state().await.unwrap();
    assert!(
        !control.demotions.contains_key(&version),
        "one decision is below the sample"
    );
}
