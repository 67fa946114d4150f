//! A process killed (SIGKILL) between the ledger's `started` mark and the tool's result, then
//! the execution resumed in a fresh process: the side effect must not happen twice.
//!
//! The child is this same test binary, re-run with the ignored `crash_child` test selected. Its
//! builtin performs the real side effect on the shop database, tells the parent, and hangs; the
//! parent kills it right there, reopens the store and settles the pending call.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use keel_core::ExecutionState;
use keel_core::payload::ToolStatus;
use keel_spine::EventLog;
use keel_tools::adapter::Adapter;
use keel_tools::adapter::AdapterCall;
use keel_tools::{CallContext, CallOutcome};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

const DIR: &str = "KEEL_TOOLS_CRASH_DIR";
const EXEC: &str = "KEEL_TOOLS_CRASH_EXEC";
const TOOL: &str = "KEEL_TOOLS_CRASH_TOOL";
const ARGS: &str = "KEEL_TOOLS_CRASH_ARGS";

#[test]
#[ignore = "the child side of the crash tests"]
fn crash_child() {
    let (Ok(dir), Ok(exec), Ok(tool), Ok(args)) = (
        std::env::var(DIR),
        std::env::var(EXEC),
        std::env::var(TOOL),
        std::env::var(ARGS),
    ) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let hang_after = tool.clone();
        let env = env_at(Path::new(&dir), &[], |b| {
            // Wrap the real builtin: act, tell the parent, then hang until killed.
            let real = b.adapter(&hang_after).unwrap();
            let honours = real.honours_idempotency_key();
            let name = hang_after.clone();
            b.register(
                &hang_after,
                honours,
                Arc::new(move |args: Value, key: Option<String>| {
                    let real = real.clone();
                    let name = name.clone();
                    Box::pin(async move {
                        let call = AdapterCall {
                            tool: &name,
                            args: &args,
                            idempotency_key: key.as_deref(),
                            attempt: 1,
                            elicit: None,
                        };
                        let out = real.call(call).await;
                        println!(
                            "EFFECT DONE {}",
                            serde_json::to_string(&out.is_ok()).unwrap()
                        );
                        std::io::stdout().flush().unwrap();
                        tokio::time::sleep(std::time::Duration::from_secs(120)).await;
                        out
                    })
                }),
            );
        });
        let events = env.log.read(exec.parse().unwrap(), 1).await.unwrap();
        let state = ExecutionState::fold(&events).unwrap();
        let ctx = CallContext::from_state(&state).unwrap();
        let args: Value = serde_json::from_str(&args).unwrap();
        let _ = env.runner.call(&ctx, &tool, args).await;
        println!("NOT KILLED");
    });
}

/// Starts an execution, runs `tool(args)` in a child killed right after the side effect, and
/// returns the reopened store with the execution's state (a tool call pending).
async fn crash_mid_call(dir: &Path, tool: &str, args: &Value) -> (Env, ExecutionState) {
    let exec_id = {
        let env = env_at(dir, &[], |_| {});
        let state = start(&env.log, "acme", None).await;
        state.exec_id.unwrap()
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR, dir)
        .env(EXEC, exec_id.to_string())
        .env(TOOL, tool)
        .env(ARGS, args.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acted = false;
    for line in stdout.lines() {
        let line = line.unwrap();
        assert!(!line.contains("NOT KILLED"));
        // The test harness may print "test crash_child ... " on the same line first.
        if line.contains("EFFECT DONE") {
            assert!(
                line.ends_with("EFFECT DONE true"),
                "the side effect itself failed: {line}"
            );
            acted = true;
            break;
        }
    }
    assert!(acted, "the child exited before acting");
    child.kill().unwrap(); // SIGKILL: no destructor, no flush, no goodbye
    child.wait().unwrap();
    let env = env_at(dir, &[], |_| {});
    let events = env.log.read(exec_id, 1).await.unwrap();
    let state = ExecutionState::fold(&events).unwrap();
    let pending = state
        .pending_tool_call
        .clone()
        .expect("the call was recorded as pending");
    assert_eq!(pending.tool, tool);
    (env, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_refund_then_resume_leaves_exactly_one_refund() {
    let tmp = tempfile::tempdir().unwrap();
    let args = json!({"order_id": "A-1002", "amount_cents": 1200, "reason": "damaged"});
    let (env, state) = crash_mid_call(tmp.path(), "issue_customer_refund", &args).await;
    assert_eq!(
        env.shop.count("refunds").unwrap(),
        1,
        "the refund happened before the kill"
    );

    // The refund API deduplicates on the key, so the call is repeated with the same key.
    let report = env.runner.resolve_pending(&state).await.unwrap().unwrap();
    let CallOutcome::Ok {
        output,
        from_ledger,
        ..
    } = &report.outcome
    else {
        panic!("{:?}", report.outcome)
    };
    assert!(!from_ledger);
    assert_eq!(output["status"], "issued");
    assert_eq!(env.shop.count("refunds").unwrap(), 1, "exactly one refund");
    let state = apply(&state, &report);
    assert!(state.pending_tool_call.is_none());
    check_log(&env.log, &state).await;

    // The model asks again: answered from the ledger, still one refund.
    let ctx = CallContext::from_state(&state).unwrap();
    let again = env
        .runner
        .call(&ctx, "issue_customer_refund", args)
        .await
        .unwrap();
    assert!(
        matches!(
            again.outcome,
            CallOutcome::Ok {
                from_ledger: true,
                ..
            }
        ),
        "{:?}",
        again.outcome
    );
    assert_eq!(env.shop.count("refunds").unwrap(), 1);
    let state = apply(&state, &again);
    check_log(&env.log, &state).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_call_to_a_tool_that_cannot_deduplicate_escalates_instead_of_repeating() {
    let tmp = tempfile::tempdir().unwrap();
    let args = json!({"channel": "billing", "message": "refund issued for A-1002"});
    let (env, state) = crash_mid_call(tmp.path(), "notify_team", &args).await;
    assert_eq!(env.shop.count("notifications").unwrap(), 1);
    let report = env.runner.resolve_pending(&state).await.unwrap().unwrap();
    let CallOutcome::Escalate {
        reason,
        action,
        consequence_tier,
        ..
    } = &report.outcome
    else {
        panic!("{:?}", report.outcome)
    };
    assert!(reason.contains("unknown"), "{reason}");
    assert_eq!(action["args"], args);
    assert_eq!(*consequence_tier, 2);
    assert_eq!(
        env.shop.count("notifications").unwrap(),
        1,
        "not posted twice"
    );
    let state = apply(&state, &report);
    let events = check_log(&env.log, &state).await;
    let last = events.last().unwrap();
    let keel_core::Payload::ToolResult(r) = &last.payload else {
        panic!()
    };
    assert_eq!(r.status, ToolStatus::Error);
    assert_eq!(r.error_class.as_deref(), Some("interrupted"));

    // Asked again later, the same call still escalates: the key stays `started` (unknown).
    let ctx = CallContext::from_state(&state).unwrap();
    let again = env
        .runner
        .call(&ctx, "notify_team", args.clone())
        .await
        .unwrap();
    assert!(
        matches!(again.outcome, CallOutcome::Escalate { .. }),
        "{:?}",
        again.outcome
    );
    assert_eq!(env.shop.count("notifications").unwrap(), 1);

    // A person looked and decided it should be sent again: after the gate, it runs once more.
    let state = apply(&state, &again);
    let ctx = CallContext::from_state(&state).unwrap();
    let approved = env
        .runner
        .call_after_gate(&ctx, "notify_team", args)
        .await
        .unwrap();
    assert!(
        matches!(
            approved.outcome,
            CallOutcome::Ok {
                from_ledger: false,
                ..
            }
        ),
        "{:?}",
        approved.outcome
    );
    assert_eq!(env.shop.count("notifications").unwrap(), 2);
    let state = apply(&state, &approved);
    check_log(&env.log, &state).await;
}
