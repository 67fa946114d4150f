//! `resolve_pending` for every state the ledger can be in when a process died with a tool call
//! recorded as `tool.called` and no result (the SIGKILL tests in `crash.rs` cover "started"):
//! - no ledger row: the process died before the ledger's `started`, so the tool never ran and
//!   the call runs now;
//! - `finished`: the process died after the tool's outcome was recorded but before
//!   `tool.result`, so the recorded outcome is appended and the tool is not called again;
//! - a read-only call: runs again (nothing to duplicate).
//!
//! The crash is staged by writing exactly what the runner writes up to that point.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use keel_core::payload::{ToolCalled, ToolStatus};
use keel_core::{Cost, ExecutionState, Payload};
use keel_spine::clock::SystemClock;
use keel_spine::{BlobStore, LocalBlobStore};
use keel_tools::invoke::idempotency_key;
use keel_tools::ledger::{Ledger, LedgerOutcome, LedgerStart, SqliteLedger};
use keel_tools::record::Recorder;
use keel_tools::{CallOutcome, Registry};
use serde_json::{Value, json};

/// Appends the `tool.called` the runner would have written for `tool(args)`; returns the state.
async fn stage_called(
    env: &Env,
    state: &ExecutionState,
    tool: &str,
    args: &Value,
) -> (ExecutionState, ToolCalled) {
    let registry = Registry::from_sources(&demo_sources(), None).unwrap();
    let contract = registry.get(tool).unwrap();
    let exec = state.exec_id.unwrap();
    let tenant = state.tenant.clone().unwrap();
    let key = idempotency_key(contract, args, &exec.to_string(), tenant.as_str()).unwrap();
    let called = ToolCalled {
        call_id: "staged-1".into(),
        tool: tool.into(),
        args: args.clone(),
        idempotency_key: key,
        est_cost: contract.budgets.cost_est,
        attempt: 1,
    };
    let clock = SystemClock;
    let mut rec = Recorder::new(
        &env.log,
        &clock,
        (exec, tenant, state.trace_id.unwrap()),
        state.last_seq,
        state.step_n,
    );
    rec.append(vec![Payload::ToolCalled(called.clone())])
        .await
        .unwrap();
    let mut next = state.clone();
    for e in &rec.events {
        next.apply_mut(e).unwrap();
    }
    (next, called)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn died_before_the_ledger_saw_the_call_so_it_runs_now() {
    let env = env(&[]);
    let state = start(&env.log, "acme", None).await;
    let args = json!({"order_id": "A-1001", "amount_cents": 700, "reason": "late"});
    let (state, called) = stage_called(&env, &state, "issue_customer_refund", &args).await;
    assert_eq!(env.shop.count("refunds").unwrap(), 0);
    let report = env.runner.resolve_pending(&state).await.unwrap().unwrap();
    assert!(
        matches!(
            report.outcome,
            CallOutcome::Ok {
                from_ledger: false,
                ..
            }
        ),
        "{:?}",
        report.outcome
    );
    assert_eq!(
        report.call_id, called.call_id,
        "the pending call gets its result"
    );
    assert_eq!(env.shop.count("refunds").unwrap(), 1);
    let state = apply(&state, &report);
    check_log(&env.log, &state).await;
    assert!(
        env.runner.resolve_pending(&state).await.unwrap().is_none(),
        "nothing left pending"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn died_after_the_outcome_was_recorded_so_it_is_not_called_again() {
    let env = env(&[]);
    let state = start(&env.log, "acme", None).await;
    let args = json!({"order_id": "A-1003", "body": "On its way!"});
    let (state, called) = stage_called(&env, &state, "draft_reply", &args).await;
    // What the runner had written before dying: started, the output blob, finished.
    let output = json!({"draft_id": 41});
    let blob = LocalBlobStore::new(env.dir.join("blobs"))
        .put(serde_json::to_vec(&output).unwrap())
        .await
        .unwrap();
    let ledger = SqliteLedger::open(env.dir.join("spine.db")).unwrap();
    let key = called.idempotency_key.clone().unwrap();
    let exec = state.exec_id.unwrap().to_string();
    let start = LedgerStart {
        tenant: "acme",
        key: &key,
        tool: "draft_reply",
        exec_id: &exec,
        call_id: &called.call_id,
        now: "2026-11-25T00:00:00Z",
    };
    ledger.begin(&start).await.unwrap();
    let outcome = LedgerOutcome {
        status: ToolStatus::Ok,
        output_ref: Some(blob.to_string()),
        actual_cost: Cost::Known(200),
    };
    ledger
        .finish("acme", &key, &outcome, "2026-11-25T00:00:01Z")
        .await
        .unwrap();

    let report = env.runner.resolve_pending(&state).await.unwrap().unwrap();
    let CallOutcome::Ok {
        output: got,
        from_ledger,
        ..
    } = &report.outcome
    else {
        panic!("{:?}", report.outcome)
    };
    assert!(from_ledger);
    assert_eq!(*got, output);
    assert_eq!(
        env.shop.count("drafts").unwrap(),
        0,
        "draft_reply was not called again"
    );
    let state = apply(&state, &report);
    check_log(&env.log, &state).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_read_only_call_simply_runs_again() {
    let env = env(&[]);
    let state = start(&env.log, "acme", None).await;
    let (state, _) =
        stage_called(&env, &state, "lookup_order", &json!({"order_id": "A-1002"})).await;
    let report = env.runner.resolve_pending(&state).await.unwrap().unwrap();
    let CallOutcome::Ok { output, .. } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(output["amount_cents"], 12900);
    let state = apply(&state, &report);
    check_log(&env.log, &state).await;
}
