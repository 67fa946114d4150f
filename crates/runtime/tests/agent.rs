//! The agent loop against the scripted model, the real tool contract layer (the demo shop's
//! builtin tools on a real SQLite file) and the real spine: outcomes, recovery, limits,
//! kill-switches, resume.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use keel_core::payload::{Outcome, Payload, ToolStatus};
use keel_core::{Cost, ExecStatus};
use keel_runtime::control::Scope;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_status_question_succeeds_with_every_step_on_the_log() {
    let (_tmp, env) = setup(&[]);
    let (_, state, events) = run(&env, "support-short", "Where is my order 1003?").await;
    assert_eq!(outcome(&state), Some(Outcome::Success));
    assert_eq!(
        types(&events),
        [
            "exec.started",
            "model.called",
            "model.responded",
            "plan.proposed",
            "tool.called",
            "tool.result",
            "step.completed",
            "model.called",
            "model.responded",
            "step.completed",
            "exec.finished",
        ]
    );
    assert_eq!(finished_detail(&events), "Order A-1003 is shipped.");
    assert_eq!(state.totals.steps, 2);
    assert!(
        matches!(state.totals.cost, Cost::Known(c) if c > 0),
        "{:?}",
        state.totals.cost
    );
    match &events.last().unwrap().payload {
        Payload::ExecFinished(f) => {
            assert_eq!(
                (f.steps_n, f.tokens, f.cost),
                (2, state.totals.tokens, state.totals.cost)
            );
            assert_eq!(Some(f.trace_id), state.trace_id);
        }
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complaint_costs_more_on_the_long_strategy() {
    let (_tmp, env) = setup(&[]);
    let goal = "This is terrible, order 1002 arrived broken";
    let (_, short, short_events) = run(&env, "support-short", goal).await;
    let (_, long, long_events) = run(&env, "support-long", goal).await;
    assert_eq!(outcome(&short), Some(Outcome::Success));
    assert_eq!(outcome(&long), Some(Outcome::Success));
    assert_eq!(
        tool_statuses(&short_events),
        [("notify_team".into(), ToolStatus::Ok)]
    );
    assert_eq!(
        tool_statuses(&long_events),
        [
            ("draft_reply".into(), ToolStatus::Ok),
            ("notify_team".into(), ToolStatus::Ok)
        ]
    );
    let (Cost::Known(a), Cost::Known(b)) = (short.totals.cost, long.totals.cost) else {
        panic!()
    };
    assert!(b > 5 * a, "long {b} µUSD vs short {a} µUSD");
    assert_eq!(env.shop.count("notifications").unwrap(), 2);
    assert_eq!(env.shop.count("drafts").unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_3_refund_waits_at_a_gate_without_moving_money() {
    let (_tmp, env) = setup(&[]);
    let (_, state, events) = run(&env, "support-short", "Please refund order 1001").await;
    assert!(matches!(state.status, ExecStatus::SuspendedAtGate { .. }));
    assert_eq!(
        tool_statuses(&events),
        [("lookup_order".into(), ToolStatus::Ok)]
    );
    assert_eq!(types(&events).last(), Some(&"gate.requested"));
    assert_eq!(env.shop.count("refunds").unwrap(), 0, "no money moved");
}

const RECOVERING: &str = r#"
name: recovering
prompt: { file: {repo}/prompts/support-v1.md, version: v1 }
model: { provider: scripted, name: scripted-small, script: {repo}/crates/runtime/tests/fixtures/recovering.yaml }
tools: [lookup_order]
max_steps: 5
success: [ { answer_matches: '^Order A-\d{4} is' } ]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_call_is_shown_to_the_model_which_recovers() {
    let (_tmp, env) = setup(&[("recovering", RECOVERING)]);
    let (_, state, events) = run(&env, "recovering", "status of order 1002 please").await;
    assert_eq!(
        tool_statuses(&events),
        [
            ("lookup_order".into(), ToolStatus::Rejected),
            ("lookup_order".into(), ToolStatus::Ok)
        ]
    );
    assert_eq!(outcome(&state), Some(Outcome::Success));
    // What the model read about the rejection came from the log: the schema's reason.
    let rejected = events.iter().find_map(|e| match &e.payload {
        Payload::ToolResult(r) if r.status == ToolStatus::Rejected => Some(r.errors.join(" ")),
        _ => None,
    });
    assert!(
        rejected.unwrap().contains("order_id"),
        "the rejection names the field"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_replies_are_recorded_and_end_in_error_after_three() {
    let (_tmp, env) = setup(&[("recovering", RECOVERING)]);
    let (_, state, events) = run(&env, "recovering", "garble everything").await;
    assert_eq!(outcome(&state), Some(Outcome::Error));
    let errors: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::ModelResponded(r) => r.error.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 3);
    assert!(errors[0].contains("not valid JSON"), "{errors:?}");
    assert!(finished_detail(&events).contains("malformed replies in a row"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_steps_and_budget_end_with_their_own_outcomes() {
    let tight_steps = RECOVERING
        .replace("name: recovering", "name: one-step")
        .replace("max_steps: 5", "max_steps: 1");
    let tight_budget = RECOVERING
        .replace("name: recovering", "name: poor")
        .replace(
            "max_steps: 5",
            "max_steps: 5\nbudget: { max_cost_usd: 0.00001 }",
        );
    let (_tmp, env) = setup(&[("one-step", &tight_steps), ("poor", &tight_budget)]);
    let (_, state, events) = run(&env, "one-step", "where is order 1002").await;
    assert_eq!(outcome(&state), Some(Outcome::MaxSteps));
    assert_eq!(state.totals.steps, 1);
    assert!(finished_detail(&events).contains("max_steps 1"));
    let (_, state, events) = run(&env, "poor", "where is order 1002").await;
    assert_eq!(outcome(&state), Some(Outcome::BudgetExhausted));
    assert!(
        finished_detail(&events).contains("budget"),
        "{}",
        finished_detail(&events)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_switches_stop_executions_and_refuse_tools() {
    let (_tmp, env) = setup(&[]);
    env.agent
        .control
        .kill(Scope::Tenant, "acme", None, "incident 42", "test")
        .await
        .unwrap();
    let (_, state, events) = run(&env, "support-short", "where is order 1002").await;
    assert_eq!(outcome(&state), Some(Outcome::Killed));
    assert!(finished_detail(&events).contains("incident 42"));
    assert_eq!(
        types(&events),
        ["exec.started", "exec.finished"],
        "it stopped before any step"
    );
    assert!(
        env.agent
            .control
            .clear(Scope::Tenant, "acme", None, "test")
            .await
            .unwrap()
    );

    env.agent
        .control
        .kill(Scope::Tool, "notify_team", None, "channel flooded", "test")
        .await
        .unwrap();
    let (_, state, events) = run(&env, "support-short", "terrible service on order 1001").await;
    assert_eq!(
        tool_statuses(&events),
        [("notify_team".into(), ToolStatus::Refused)]
    );
    assert_eq!(outcome(&state), Some(Outcome::Failure));
    assert_eq!(env.shop.count("notifications").unwrap(), 0);

    env.agent
        .control
        .kill(Scope::Strategy, "support-short", None, "bad prompt", "test")
        .await
        .unwrap();
    let (_, state, _) = run(&env, "support-short", "where is order 1002").await;
    assert_eq!(outcome(&state), Some(Outcome::Killed));
    let (_, state, _) = run(&env, "support-long", "where is order 1002").await;
    assert_eq!(
        outcome(&state),
        Some(Outcome::Success),
        "other strategies still run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_died_mid_execution_is_resumed_from_the_log() {
    let (_tmp, env) = setup(&[]);
    let s = env.strategies.get("support-long").unwrap();
    let model = s.provider().unwrap();
    let exec = env
        .agent
        .start(s, "acme", "This is awful, order 1001 was rude")
        .await
        .unwrap();
    // A first worker runs the whole execution; we then cut its log back to a crash point by
    // replaying only a prefix into a fresh store, and let a second worker finish from there.
    env.agent.drive(s, &*model, exec).await.unwrap();
    let full = env.log.read(exec, 1).await.unwrap();
    let crash_at = full
        .iter()
        .position(|e| e.event_type().as_str() == "tool.called")
        .unwrap()
        + 1;

    let (_tmp2, fresh) = setup(&[]);
    fresh.log.append(exec, 0, &full[..crash_at]).await.unwrap();
    let state = fresh.agent.drive(s, &*model, exec).await.unwrap();
    assert_eq!(outcome(&state), Some(Outcome::Success));
    let events = fresh.log.read(exec, 1).await.unwrap();
    assert!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    // The in-flight draft_reply was resolved and the run went on to the notification.
    assert_eq!(fresh.shop.count("notifications").unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cut_after_a_tool_returned_is_closed_and_not_redone() {
    let (_tmp, env) = setup(&[]);
    let s = env.strategies.get("support-short").unwrap();
    let model = s.provider().unwrap();
    let exec = env
        .agent
        .start(s, "acme", "This is terrible, order 1021 arrived broken")
        .await
        .unwrap();
    env.agent.drive(s, &*model, exec).await.unwrap();
    let full = env.log.read(exec, 1).await.unwrap();
    let cut = full
        .iter()
        .position(|e| e.event_type().as_str() == "tool.result")
        .unwrap()
        + 1;

    let (_tmp2, fresh) = setup(&[]);
    copy_blobs(&full[..cut], &env, &fresh).await;
    fresh.log.append(exec, 0, &full[..cut]).await.unwrap();
    let state = fresh.agent.drive(s, &*model, exec).await.unwrap();
    assert_eq!(outcome(&state), Some(Outcome::Success));
    let events = fresh.log.read(exec, 1).await.unwrap();
    assert_eq!(
        events[cut].event_type().as_str(),
        "step.completed",
        "the cut step is closed first"
    );
    assert_eq!(
        tool_statuses(&events),
        [("notify_team".into(), ToolStatus::Ok)],
        "not redone"
    );
    assert_eq!(state.totals.steps, 2);
}

/// Issue 13, item 3: a worker killed while the distillation's model call was out leaves that
/// call open. The resumed run closes it as failed; it never answers it with the agent's own
/// request (which would record the agent's reply as the distiller's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distillation_cut_by_a_crash_is_closed_as_failed_not_answered_by_the_agent() {
    let (_tmp, env) = setup(&[]);
    let s = env.strategies.get("support-short").unwrap();
    let model = s.provider().unwrap();
    let exec = env
        .agent
        .start(s, "acme", "Where is my order 1003?")
        .await
        .unwrap();
    env.agent.drive(s, &*model, exec).await.unwrap();
    let mut log = env.log.read(exec, 1).await.unwrap();
    let finished = log.pop().unwrap();
    assert_eq!(finished.event_type().as_str(), "exec.finished");
    let answered = log.last().unwrap().clone();
    let mut cut = finished.clone();
    cut.event_id = keel_spine::clock::new_event_id();
    cut.payload = Payload::ModelCalled(keel_core::payload::ModelCalled {
        call_id: format!("{}crashed", keel_runtime::recall::DISTILL_CALL_PREFIX),
        model: s.model.clone(),
        prompt_version: Some(keel_runtime::recall::DISTILL_PROMPT_VERSION.into()),
        request_ref: None,
    });
    cut.seq = answered.seq + 1;
    log.push(cut);

    let (_tmp2, fresh) = setup(&[]);
    copy_blobs(&log, &env, &fresh).await;
    fresh.log.append(exec, 0, &log).await.unwrap();
    let state = fresh.agent.drive(s, &*model, exec).await.unwrap();
    assert_eq!(outcome(&state), Some(Outcome::Success));
    let events = fresh.log.read(exec, 1).await.unwrap();
    let after: Vec<&str> = types(&events)[log.len()..].to_vec();
    assert_eq!(
        &after[..2],
        ["model.responded", "memory.distill_failed"],
        "{after:?}"
    );
    let replies: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::ModelResponded(r) if r.call_id.ends_with("crashed") => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(replies.len(), 1);
    assert!(replies[0].error.is_some(), "{:?}", replies[0]);
    assert_eq!(after.last(), Some(&"exec.finished"));
    assert_eq!(finished_detail(&events), "Order A-1003 is shipped.");
}

/// Blobs referenced by copied events must come along (the blob store is part of the log; small
/// ones live in the spine's file).
async fn copy_blobs(events: &[keel_core::Event], from: &Env, to: &Env) {
    for r in keel_spine::shred::referenced_blobs(events) {
        let bytes = from.agent.blobs.get(&r.parse().unwrap()).await.unwrap();
        to.agent.blobs.put(bytes).await.unwrap();
    }
}
