//! Every path of the one entry point, `ToolRunner::call`, against real components: the spine and
//! ledger in a SQLite file, the blob store on disk, the shop's SQLite database behind the builtin
//! tools, and a real HTTP tool server on 127.0.0.1. Each test also checks that what was appended
//! folds legally (the core's referee agrees) and matches what the call returned.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use keel_core::payload::ToolStatus;
use keel_core::{Cost, Payload};
use keel_spine::{BlobStore, LocalBlobStore};
use keel_tools::{CallContext, CallOutcome, ErrorClass};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

fn results(events: &[keel_core::Event]) -> Vec<keel_core::payload::ToolResult> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::ToolResult(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_call_records_called_then_ok_and_stores_the_output() {
    let env = env(&[]);
    let state = start(&env.log, "acme", None).await;
    let ctx = CallContext::from_state(&state).unwrap();
    let report = env
        .runner
        .call(&ctx, "lookup_order", json!({"order_id": "A-1001"}))
        .await
        .unwrap();
    let CallOutcome::Ok {
        output,
        output_ref,
        from_ledger,
    } = &report.outcome
    else {
        panic!("{:?}", report.outcome)
    };
    assert!(!from_ledger);
    assert_eq!(output["customer"], "ada@example.com");
    assert_eq!(output["amount_cents"], 4999);
    let state = apply(&state, &report);
    let events = check_log(&env.log, &state).await;
    assert_eq!(
        shape(&events),
        ["called:lookup_order#1", "result:lookup_order:Ok"]
    );
    let Payload::ToolCalled(c) = &events[1].payload else {
        panic!()
    };
    assert_eq!(c.est_cost, Cost::Known(100));
    assert_eq!(c.idempotency_key, None, "read-only tools carry no key");
    let r = &results(&events)[0];
    assert_eq!(r.output_ref.as_deref(), Some(output_ref.as_str()));
    assert_eq!(r.actual_cost, Cost::Known(100));
    // The output is in the blob store under the ref the event carries.
    let blobs = LocalBlobStore::new(env.dir.join("blobs"));
    let bytes = blobs.get(&output_ref.parse().unwrap()).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
        *output
    );
    assert_eq!(state.totals.tool_calls, 1);
    assert_eq!(state.totals.cost, Cost::Known(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_args_are_rejected_with_every_reason_before_any_adapter_runs() {
    let env = env(&[]);
    let state = start(&env.log, "acme", None).await;
    let ctx = CallContext::from_state(&state).unwrap();
    let args = json!({"order_id": "1001", "amount_cents": "lots", "extra": true});
    let report = env
        .runner
        .call(&ctx, "issue_customer_refund", args.clone())
        .await
        .unwrap();
    let CallOutcome::Rejected { errors } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    let all = errors.join("\n");
    assert!(all.contains("$.order_id"), "{all}");
    assert!(all.contains("$.amount_cents"), "{all}");
    assert!(all.contains("reason"), "{all}");
    assert!(all.contains("extra"), "{all}");
    assert_eq!(
        env.shop.count("refunds").unwrap(),
        0,
        "the tool must not have run"
    );
    let state = apply(&state, &report);
    let events = check_log(&env.log, &state).await;
    assert_eq!(
        shape(&events),
        [
            "called:issue_customer_refund#1",
            "result:issue_customer_refund:Rejected"
        ]
    );
    let r = &results(&events)[0];
    assert_eq!(
        &r.errors, errors,
        "the next prompt reads the reasons from the event"
    );
    assert_eq!(r.output_ref, None);
    assert_eq!(r.actual_cost, Cost::ZERO);
    let Payload::ToolCalled(c) = &events[1].payload else {
        panic!()
    };
    assert_eq!(
        c.args, args,
        "the proposal is recorded as the model made it"
    );

    // A tool that does not exist is a rejection the model can read, too.
    let ctx = CallContext::from_state(&state).unwrap();
    let report = env
        .runner
        .call(&ctx, "launch_rocket", json!({}))
        .await
        .unwrap();
    let CallOutcome::Rejected { errors } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert!(errors[0].contains("launch_rocket"));
    let state = apply(&state, &report);
    check_log(&env.log, &state).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_output_is_recorded_and_not_passed_on() {
    let server = http_tools().await;
    let c = http_contract(
        "bad_output",
        &format!("{}/bad-output", server.base),
        "read_only",
        0,
        "{}",
        "",
    );
    let env = env(&[("bad_output.yaml", c)]);
    let state = start(&env.log, "acme", None).await;
    let ctx = CallContext::from_state(&state).unwrap();
    let report = env
        .runner
        .call(&ctx, "bad_output", json!({"item": "x"}))
        .await
        .unwrap();
    let CallOutcome::InvalidOutput { errors, output_ref } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert!(errors.iter().any(|e| e.contains("$.ok")), "{errors:?}");
    let state = apply(&state, &report);
    let events = check_log(&env.log, &state).await;
    assert_eq!(
        shape(&events),
        ["called:bad_output#1", "result:bad_output:InvalidOutput"]
    );
    let r = &results(&events)[0];
    assert_eq!(
        r.output_ref.as_deref(),
        Some(output_ref.as_str()),
        "kept for audit"
    );
    assert_eq!(&r.errors, errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_then_success_sends_the_same_idempotency_key_every_attempt() {
    let server = http_tools().await;
    let policy = "{retryable: [5xx], max_attempts: 3, backoff: {initial: 10ms, max: 50ms}}";
    let c = http_contract(
        "flaky",
        &format!("{}/flaky", server.base),
        "reversible",
        1,
        policy,
        "",
    );
    let env = env(&[("flaky.yaml", c)]);
    let state = start(&env.log, "acme", None).await;
    let ctx = CallContext::from_state(&state).unwrap();
    let report = env
        .runner
        .call(&ctx, "flaky", json!({"item": "widget"}))
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, CallOutcome::Ok { .. }),
        "{:?}",
        report.outcome
    );
    assert_eq!(report.attempts, 3);
    let key = report.idempotency_key.clone().unwrap();
    let seen = server.seen.lock().unwrap().keys.clone();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter().all(|(_, k)| k.as_deref() == Some(key.as_str())),
        "{seen:?} vs {key}"
    );
    let state = apply(&state, &report);
    let events = check_log(&env.log, &state).await;
    assert_eq!(
        shape(&events),
        [
            "called:flaky#1",
            "result:flaky:Error",
            "called:flaky#2",
            "result:flaky:Error",
            "called:flaky#3",
            "result:flaky:Ok"
        ]
    );
    for e in &events {
        if let Payload::ToolCalled(c) = &e.payload {
            assert_eq!(c.idempotency_key.as_deref(), Some(key.as_str()));
            assert_eq!(c.call_id, report.call_id);
        }
    }
    assert_eq!(results(&events)[0].error_class.as_deref(), Some("5xx"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_exhausted_escalates_to_a_gate_when_the_policy_says_so() {
    let server = http_tools().await;
    let policy = "{retryable: [5xx], max_attempts: 2, backoff: {initial: 10ms, max: 20ms}, on_exhaust: escalate_to_gate}";
    let c = http_contract(
        "pay",
        &format!("{}/down", server.base),
        "irreversible",
        3,
        policy,
        "",
    );
    let env = env(&[("pay.yaml", c)]);
    let state = start(&env.log, "acme", None).await;
    let ctx = CallContext::from_state(&state).unwrap();
    let report = env
        .runner
        .call(&ctx, "pay", json!({"item": "invoice-7"}))
        .await
        .unwrap();
    let CallOutcome::Escalate {
        consequence_tier,
        action,
        reason,
        ..
    } = &report.outcome
    else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(*consequence_tier, 3);
    assert_eq!(action["tool"], "pay");
    assert_eq!(action["args"]["item"], "invoice-7");
    assert_eq!(
        action["idempotency_key"].as_str(),
        report.idempotency_key.as_deref()
    );
    assert!(reason.contains("2 attempt"), "{reason}");
    assert_eq!(server.seen.lock().unwrap().hits["down"], 2);
    let state = apply(&state, &report);
    let events = check_log(&env.log, &state).await;
    assert_eq!(
        shape(&events),
        [
            "called:pay#1",
            "result:pay:Error",
            "called:pay#2",
            "result:pay:Error"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_exhausted_fails_when_the_policy_says_fail() {
    let server = http_tools().await;
    let policy = "{retryable: [5xx], max_attempts: 3, backoff: {initial: 10ms, max: 20ms}, on_exhaust: fail}";
    let c = http_contract(
        "sync",
        &format!("{}/down", server.base),
        "reversible",
        1,
        policy,
        "",
    );
    let env = env(&[("sync.yaml", c)]);
    let state = start(&env.log, "acme", None).await;
    let ctx = CallContext::from_state(&state).unwrap();
    let report = env
        .runner
        .call(&ctx, "sync", json!({"item": "a"}))
        .await
        .unwrap();
    let CallOutcome::Failed {
        error_class,
        errors,
        compensated,
    } = &report.outcome
    else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(*error_class, ErrorClass::ServerError);
    assert_eq!(errors.len(), 3);
    assert!(!compensated);
    assert_eq!(report.attempts, 3);
    let state = apply(&state, &report);
    check_log(&env.log, &state).await;

    // A definite failure releases the key: the same call may be tried again later (and is).
    let ctx = CallContext::from_state(&state).unwrap();
    let again = env
        .runner
        .call(&ctx, "sync", json!({"item": "a"}))
        .await
        .unwrap();
    assert!(matches!(again.outcome, CallOutcome::Failed { .. }));
    assert_eq!(server.seen.lock().unwrap().hits["down"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_the_policy_does_not_list_is_not_retried() {
    let server = http_tools().await;
    let policy =
        "{retryable: [5xx, timeout], max_attempts: 5, backoff: {initial: 10ms, max: 20ms}}";
    let c = http_contract(
        "charge",
        &format!("{}/bad-request", server.base),
        "reversible",
        1,
        policy,
        "",
    );
    let env = env(&[("charge.yaml", c)]);
    let state = start(&env.log, "acme", None).await;
    let ctx = CallContext::from_state(&state).unwrap();
    let report = env
        .runner
        .call(&ctx, "charge", json!({"item": "a"}))
        .await
        .unwrap();
    let CallOutcome::Failed { error_class, .. } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(*error_class, ErrorClass::ClientError);
    assert_eq!(report.attempts, 1);
    assert_eq!(server.seen.lock().unwrap().hits["bad-request"], 1);
    apply(&state, &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compensation_undoes_a_reversible_call_whose_outcome_is_unknown() {
    let server = http_tools().await;
    let reserve = http_contract(
        "reserve_stock",
        &format!("{}/slow-reserve", server.base),
        "reversible",
        1,
        "{retryable: [], compensation: release_stock, on_exhaust: fail}",
        "",
    );
    let release = http_contract(
        "release_stock",
        &format!("{}/release", server.base),
        "reversible",
        1,
        "{}",
        "",
    );
    let env = env(&[
        ("reserve_stock.yaml", reserve),
        ("release_stock.yaml", release),
    ]);
    let state = start(&env.log, "acme", None).await;
    let ctx = CallContext::from_state(&state).unwrap();
    let report = env
        .runner
        .call(&ctx, "reserve_stock", json!({"item": "sku-9"}))
        .await
        .unwrap();
    let CallOutcome::Failed {
        error_class,
        compensated,
        ..
    } = &report.outcome
    else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(*error_class, ErrorClass::Timeout);
    assert!(compensated);
    {
        let seen = server.seen.lock().unwrap();
        assert_eq!(
            seen.reservations, 0,
            "the reservation the timed-out call made was released"
        );
        assert_eq!(seen.hits["release"], 1);
    }
    let state = apply(&state, &report);
    let events = check_log(&env.log, &state).await;
    assert_eq!(
        shape(&events),
        [
            "called:reserve_stock#1",
            "result:reserve_stock:Error",
            "called:release_stock#1",
            "result:release_stock:Ok"
        ]
    );
    let Payload::ToolCalled(undo) = &events[3].payload else {
        panic!()
    };
    assert_eq!(
        undo.args,
        json!({"item": "sku-9"}),
        "the compensation gets the original arguments"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_budget_refuses_the_call_over_the_rate_and_records_it() {
    let env = env(&[]);
    let mut state = start(&env.log, "acme", None).await;
    // notify_team: 10/min per tenant.
    for i in 0..10 {
        let ctx = CallContext::from_state(&state).unwrap();
        let args = json!({"channel": "support", "message": format!("update {i}")});
        let report = env.runner.call(&ctx, "notify_team", args).await.unwrap();
        assert!(
            matches!(report.outcome, CallOutcome::Ok { .. }),
            "{i}: {:?}",
            report.outcome
        );
        state = apply(&state, &report);
    }
    let ctx = CallContext::from_state(&state).unwrap();
    let args = json!({"channel": "support", "message": "one too many"});
    let report = env
        .runner
        .call(&ctx, "notify_team", args.clone())
        .await
        .unwrap();
    let CallOutcome::Refused { reason } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert!(reason.contains("rate"), "{reason}");
    assert_eq!(env.shop.count("notifications").unwrap(), 10);
    state = apply(&state, &report);
    let events = check_log(&env.log, &state).await;
    let last = results(&events).pop().unwrap();
    assert_eq!(last.status, ToolStatus::Refused);
    assert_eq!(last.errors, vec![reason.clone()]);

    // The rate is per tenant: another tenant is not refused.
    let other = start(&env.log, "globex", None).await;
    let ctx = CallContext::from_state(&other).unwrap();
    let report = env.runner.call(&ctx, "notify_team", args).await.unwrap();
    assert!(
        matches!(report.outcome, CallOutcome::Ok { .. }),
        "{:?}",
        report.outcome
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_budget_refuses_a_call_that_would_overspend() {
    let env = env(&[]);
    // Refunds are estimated at $0.002 (2000 µUSD); the budget allows one.
    let state = start(&env.log, "acme", Some(3_000)).await;
    let ctx = CallContext::from_state(&state).unwrap();
    let args = json!({"order_id": "A-1002", "amount_cents": 500, "reason": "late"});
    let report = env
        .runner
        .call(&ctx, "issue_customer_refund", args)
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, CallOutcome::Ok { .. }),
        "{:?}",
        report.outcome
    );
    let state = apply(&state, &report);
    assert_eq!(state.totals.cost, Cost::Known(2_000));
    let ctx = CallContext::from_state(&state).unwrap();
    let args = json!({"order_id": "A-1001", "amount_cents": 100, "reason": "damaged"});
    let report = env
        .runner
        .call(&ctx, "issue_customer_refund", args)
        .await
        .unwrap();
    let CallOutcome::Refused { reason } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert!(reason.contains("cost budget"), "{reason}");
    assert_eq!(env.shop.count("refunds").unwrap(), 1);
    let state = apply(&state, &report);
    let events = check_log(&env.log, &state).await;
    assert_eq!(results(&events).pop().unwrap().status, ToolStatus::Refused);
}

/// A keyed call's ledger marks ride in its own appends: `started` with its intent, the outcome
/// with its result. Two commits in all (it was four: the ledger had its own), and the ledger
/// holds the outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_calls_ledger_marks_ride_in_its_two_commits() {
    let env = env(&[]);
    let state = start(&env.log, "acme", None).await;
    let groups = || {
        env.log
            .stats()
            .groups
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = groups();
    let ctx = CallContext::from_state(&state).unwrap();
    let args = json!({"order_id": "A-1003", "body": "Sorry for the delay!"});
    let report = env.runner.call(&ctx, "draft_reply", args).await.unwrap();
    assert!(
        matches!(report.outcome, CallOutcome::Ok { .. }),
        "{:?}",
        report.outcome
    );
    assert_eq!(groups() - before, 2, "intent + started, result + outcome");
    let key = report.idempotency_key.clone().unwrap();
    let ledger = keel_tools::SqliteLedger::on(&env.log);
    let entry = keel_tools::ledger::Ledger::get(&ledger, "acme", &key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.state, keel_tools::ledger::LedgerState::Finished);
    assert_eq!(entry.call_id, report.call_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_call_is_answered_from_the_ledger_without_calling_the_tool() {
    let env = env(&[]);
    let state = start(&env.log, "acme", None).await;
    let args = json!({"order_id": "A-1003", "body": "Sorry for the delay!"});
    let ctx = CallContext::from_state(&state).unwrap();
    let first = env
        .runner
        .call(&ctx, "draft_reply", args.clone())
        .await
        .unwrap();
    let CallOutcome::Ok {
        output: first_out,
        from_ledger: false,
        ..
    } = &first.outcome
    else {
        panic!("{:?}", first.outcome)
    };
    let state = apply(&state, &first);
    // The model, having forgotten, proposes the same call again.
    let ctx = CallContext::from_state(&state).unwrap();
    let second = env.runner.call(&ctx, "draft_reply", args).await.unwrap();
    let CallOutcome::Ok {
        output,
        from_ledger,
        ..
    } = &second.outcome
    else {
        panic!("{:?}", second.outcome)
    };
    assert!(from_ledger);
    assert_eq!(output, first_out, "the first result, not a new one");
    assert_eq!(second.idempotency_key, first.idempotency_key);
    // draft_reply itself does not deduplicate: one row proves the tool ran once.
    assert_eq!(env.shop.count("drafts").unwrap(), 1);
    let state = apply(&state, &second);
    let events = check_log(&env.log, &state).await;
    let r = results(&events).pop().unwrap();
    assert_eq!(r.status, ToolStatus::Ok);
    assert_eq!(r.actual_cost, Cost::ZERO, "nothing ran, nothing paid");
    assert!(r.errors[0].contains("idempotency ledger"));
    // A different execution has a different key (exec_id is a key field): it drafts again.
    let other = start(&env.log, "acme", None).await;
    let ctx = CallContext::from_state(&other).unwrap();
    let third = env
        .runner
        .call(
            &ctx,
            "draft_reply",
            json!({"order_id": "A-1003", "body": "Sorry for the delay!"}),
        )
        .await
        .unwrap();
    assert!(matches!(
        third.outcome,
        CallOutcome::Ok {
            from_ledger: false,
            ..
        }
    ));
    assert_eq!(env.shop.count("drafts").unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_refused_while_another_is_pending_and_appends_are_conditional() {
    let env = env(&[]);
    let state = start(&env.log, "acme", None).await;
    let ctx = CallContext::from_state(&state).unwrap();
    let report = env
        .runner
        .call(&ctx, "lookup_order", json!({"order_id": "A-1001"}))
        .await
        .unwrap();
    // A stale context (another writer moved the execution on) cannot record anything.
    let err = env
        .runner
        .call(&ctx, "lookup_order", json!({"order_id": "A-1002"}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("onflict"), "{err}");
    let mut pending = apply(&state, &report);
    pending.pending_tool_call = Some(keel_core::state::PendingToolCall {
        call_id: "x".into(),
        tool: "lookup_order".into(),
        idempotency_key: None,
        attempt: 1,
        seq: pending.last_seq,
    });
    assert!(
        CallContext::from_state(&pending)
            .unwrap_err()
            .to_string()
            .contains("pending")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_tool_is_a_connection_failure_retried_per_policy() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let policy = "{retryable: [connection], max_attempts: 2, backoff: {initial: 10ms, max: 20ms}}";
    let url = format!("http://127.0.0.1:{port}/nothing");
    let c = http_contract("gone", &url, "read_only", 0, policy, "");
    let env = env(&[("gone.yaml", c)]);
    let state = start(&env.log, "acme", None).await;
    let ctx = CallContext::from_state(&state).unwrap();
    let report = env
        .runner
        .call(&ctx, "gone", json!({"item": "a"}))
        .await
        .unwrap();
    let CallOutcome::Failed {
        error_class,
        errors,
        ..
    } = &report.outcome
    else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(*error_class, ErrorClass::Connection);
    assert_eq!(errors.len(), 2, "{errors:?}");
    let state = apply(&state, &report);
    let events = check_log(&env.log, &state).await;
    assert_eq!(
        shape(&events),
        [
            "called:gone#1",
            "result:gone:Error",
            "called:gone#2",
            "result:gone:Error"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_headers_come_from_the_secret_named_and_never_reach_events() {
    let server = http_tools().await;
    let url = format!("{}/auth", server.base);
    let with = |name: &str, var: &str| {
        http_contract(
            name,
            &url,
            "read_only",
            0,
            "{}",
            &format!(", headers_from_env: {{Authorization: {var}}}"),
        )
    };
    // The runner's secret source (the `keel` binary's answers from the environment; the binary's
    // own test is crates/cli/tests/env_edge.rs).
    let secrets = BTreeMap::from([(
        "KEEL_TEST_TOOL_TOKEN".to_owned(),
        "Bearer s3cret-token".to_owned(),
    )]);
    let env = env_with_secrets(
        &[
            ("authed.yaml", with("authed", "KEEL_TEST_TOOL_TOKEN")),
            ("unset.yaml", with("unset", "KEEL_TEST_TOOL_TOKEN_UNSET")),
        ],
        Arc::new(secrets),
    );
    let state = start(&env.log, "acme", None).await;
    let ctx = CallContext::from_state(&state).unwrap();
    let report = env
        .runner
        .call(&ctx, "authed", json!({"item": "a"}))
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, CallOutcome::Ok { .. }),
        "{:?}",
        report.outcome
    );
    assert_eq!(server.seen.lock().unwrap().auth, ["Bearer s3cret-token"]);
    let state = apply(&state, &report);
    let ctx = CallContext::from_state(&state).unwrap();
    let report = env
        .runner
        .call(&ctx, "unset", json!({"item": "a"}))
        .await
        .unwrap();
    let CallOutcome::Failed { errors, .. } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert!(
        errors[0].contains("KEEL_TEST_TOOL_TOKEN_UNSET is not set"),
        "{errors:?}"
    );
    let state = apply(&state, &report);
    for e in check_log(&env.log, &state).await {
        assert!(
            !e.encode().contains("s3cret"),
            "a secret reached the spine: {}",
            e.encode()
        );
    }
}
