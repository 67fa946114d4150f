//! Fold tests: given these events, when applied, then this state (or this error). Property tests
//! show that folding is split-invariant, which is what makes snapshots plus tails safe.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use keel_core::payload::*;
use keel_core::{Cost, Event, ExecStatus, ExecutionState, IllegalEvent};
use keel_testkit::ExecBuilder;
use keel_testkit::builder::{exec_id, execution_with_steps};
use keel_testkit::generators::arb_legal_execution;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_legal_sequence_folds(events in arb_legal_execution()) {
        let state = ExecutionState::fold(&events).unwrap();
        prop_assert_eq!(state.last_seq, events.len() as u64);
    }

    #[test]
    fn folding_in_one_pass_equals_snapshot_plus_rest(
        events in arb_legal_execution(),
        split in any::<prop::sample::Index>(),
    ) {
        let whole = ExecutionState::fold(&events).unwrap();
        let at = split.index(events.len() + 1);
        let snapshot = ExecutionState::fold(&events[..at]).unwrap();
        // A snapshot is stored as JSON; restoring it must lose nothing.
        let restored: ExecutionState =
            serde_json::from_str(&serde_json::to_string(&snapshot).unwrap()).unwrap();
        prop_assert_eq!(&restored, &snapshot);
        let mut resumed = restored;
        for e in &events[at..] {
            resumed = resumed.apply(e).unwrap();
        }
        prop_assert_eq!(resumed, whole);
    }

    #[test]
    fn a_rejected_event_leaves_the_state_unchanged(
        events in arb_legal_execution(),
        split in any::<prop::sample::Index>(),
    ) {
        let at = split.index(events.len());
        let before = ExecutionState::fold(&events[..at]).unwrap();
        // Replaying an already-applied event is always a seq error.
        let mut state = before.clone();
        if at > 0 {
            prop_assert!(state.apply_mut(&events[at - 1]).is_err());
            prop_assert_eq!(state, before);
        }
    }
}

fn reason(state: &ExecutionState, e: &Event) -> IllegalEvent {
    *state.apply(e).unwrap_err().reason
}

#[test]
fn totals_and_status_of_a_finished_execution() {
    let events = execution_with_steps(exec_id(7), 40);
    let state = ExecutionState::fold(&events).unwrap();
    assert_eq!(
        state.status,
        ExecStatus::Finished {
            outcome: Outcome::Success
        }
    );
    assert_eq!(state.totals.steps, 40);
    assert_eq!(state.totals.model_calls, 40);
    assert_eq!(state.totals.tool_calls, 40);
    assert_eq!(state.totals.tokens.input, 40 * 800);
    assert_eq!(state.totals.cost, Cost::Known(40 * (1_500 + 90)));
    assert_eq!(state.pending_tool_call, None);
}

#[test]
fn tool_result_without_tool_called_is_illegal() {
    let b = ExecBuilder::new(exec_id(1), "acme").started("g");
    let state = ExecutionState::fold(b.events()).unwrap();
    let result = b.tool_called("t").tool_result(ToolStatus::Ok).build();
    // Skip the tool.called: renumber the result to follow directly.
    let mut orphan = result[2].clone();
    orphan.seq = 2;
    let err = state.apply(&orphan).unwrap_err();
    assert!(matches!(
        *err.reason,
        IllegalEvent::NoPendingCall { kind: "tool", .. }
    ));
    let msg = err.to_string();
    assert!(
        msg.contains("tool.result") && msg.contains("running") && msg.contains("seq 2"),
        "{msg}"
    );
}

#[test]
fn second_exec_finished_is_illegal() {
    let events = ExecBuilder::new(exec_id(2), "acme")
        .started("g")
        .finished(Outcome::Success)
        .finished(Outcome::Success)
        .build();
    let state = ExecutionState::fold(&events[..2]).unwrap();
    assert_eq!(reason(&state, &events[2]), IllegalEvent::AfterTerminal);
    assert!(ExecutionState::fold(&events).is_err());
}

#[test]
fn seq_gap_is_illegal() {
    let events = ExecBuilder::new(exec_id(3), "acme")
        .started("g")
        .plan()
        .plan()
        .build();
    let state = ExecutionState::fold(&events[..1]).unwrap();
    assert_eq!(
        reason(&state, &events[2]),
        IllegalEvent::SeqGap {
            expected: 2,
            found: 3
        }
    );
}

#[test]
fn first_event_must_be_exec_started_and_only_once() {
    let events = ExecBuilder::new(exec_id(4), "acme")
        .started("g")
        .plan()
        .build();
    let mut plan_first = events[1].clone();
    plan_first.seq = 1;
    assert_eq!(
        reason(&ExecutionState::default(), &plan_first),
        IllegalEvent::NotStarted
    );
    let state = ExecutionState::fold(&events).unwrap();
    let mut again = events[0].clone();
    again.seq = 3;
    assert_eq!(reason(&state, &again), IllegalEvent::AlreadyStarted);
}

#[test]
fn events_of_another_execution_are_illegal() {
    let a = ExecBuilder::new(exec_id(5), "acme")
        .started("g")
        .plan()
        .build();
    let b = ExecBuilder::new(exec_id(6), "acme")
        .started("g")
        .plan()
        .build();
    let state = ExecutionState::fold(&a[..1]).unwrap();
    assert!(matches!(
        reason(&state, &b[1]),
        IllegalEvent::WrongExecution { .. }
    ));
}

#[test]
fn a_gate_suspends_until_decided() {
    let events = ExecBuilder::new(exec_id(8), "acme")
        .started("g")
        .gate(Verdict::Reject)
        .build();
    let at_gate = ExecutionState::fold(&events[..2]).unwrap();
    assert_eq!(
        at_gate.status,
        ExecStatus::SuspendedAtGate {
            gate_id: "gate-1".into()
        }
    );
    assert_eq!(
        at_gate.pending_gate.as_ref().map(|g| g.consequence_tier),
        Some(3)
    );
    // No tool call may slip past a pending gate.
    let sneaky = ExecBuilder::new(exec_id(8), "acme")
        .resume_at(2, 0)
        .tool_called("refund")
        .build();
    assert!(matches!(
        reason(&at_gate, &sneaky[0]),
        IllegalEvent::AtGate { .. }
    ));
    let decided = at_gate.apply(&events[2]).unwrap();
    assert_eq!(decided.status, ExecStatus::Running);
    assert_eq!(decided.pending_gate, None);
    // Deciding again is refused.
    let mut twice = events[2].clone();
    twice.seq = 4;
    assert!(matches!(
        reason(&decided, &twice),
        IllegalEvent::NoPendingGate { .. }
    ));
}

#[test]
fn a_crash_mid_tool_call_leaves_the_call_pending() {
    let events = ExecBuilder::new(exec_id(9), "acme")
        .started("g")
        .tool_called("refund")
        .build();
    let state = ExecutionState::fold(&events).unwrap();
    let pending = state.pending_tool_call.clone().unwrap();
    assert_eq!(pending.tool, "refund");
    assert_eq!(pending.seq, 2);
    assert!(pending.idempotency_key.is_some());
    // It cannot finish, or start another call, with the call unresolved.
    let finish = ExecBuilder::new(exec_id(9), "acme")
        .resume_at(2, 0)
        .finished(Outcome::Success)
        .build();
    assert!(matches!(
        reason(&state, &finish[0]),
        IllegalEvent::CallPending { kind: "tool", .. }
    ));
}

#[test]
fn unknown_cost_makes_the_total_unknown() {
    let events = ExecBuilder::new(exec_id(10), "acme")
        .started("g")
        .model_call(1, 1, Cost::Known(5))
        .model_call(1, 1, Cost::Unknown)
        .build();
    assert_eq!(
        ExecutionState::fold(&events).unwrap().totals.cost,
        Cost::Unknown
    );
}

#[test]
fn error_outcome_is_failed_and_cancel_is_cancelled() {
    let failed = ExecBuilder::new(exec_id(11), "acme")
        .started("g")
        .finished(Outcome::Error)
        .build();
    assert_eq!(
        ExecutionState::fold(&failed).unwrap().status,
        ExecStatus::Failed
    );
    let mut b = ExecBuilder::new(exec_id(12), "acme").started("g");
    b.push(Payload::ExecCancelled(Transition {
        reason: "ops".into(),
        by: None,
    }));
    assert_eq!(
        ExecutionState::fold(b.events()).unwrap().status,
        ExecStatus::Cancelled
    );
}

/// Issue 13, item 3: a distilling execution's log as Keel writes it since distillation is a
/// metered call (committed fixture, so the shape keeps decoding): the distillation's
/// `model.called` / `model.responded` count in the totals, `memory.distill_failed` changes no
/// state, and `exec.finished` after it is legal and carries those totals.
#[test]
fn a_failed_distillation_is_metered_and_the_execution_still_finishes() {
    let events: Vec<Event> = include_str!("fixtures/events-v2-distill.jsonl")
        .lines()
        .map(|l| Event::decode(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(events.len(), 8);
    match &events[6].payload {
        Payload::DistillFailed(f) => {
            assert_eq!(f.call_id.as_deref(), Some("distill-1"));
            assert_eq!(f.written, 0);
            assert!(f.reason.contains("not the facts JSON"), "{}", f.reason);
        }
        p => panic!("unexpected {p:?}"),
    }
    let before = ExecutionState::fold(&events[..6]).unwrap();
    let after_failure = ExecutionState::fold(&events[..7]).unwrap();
    assert_eq!(after_failure.totals, before.totals);
    assert_eq!(after_failure.status, before.status);
    let state = ExecutionState::fold(&events).unwrap();
    assert_eq!(state.totals.model_calls, 2);
    assert_eq!(state.totals.tokens.input, 510);
    assert_eq!(state.totals.tokens.output, 90);
    assert_eq!(state.totals.cost, Cost::Known(210));
    let Payload::ExecFinished(f) = &events[7].payload else {
        panic!("the last event is exec.finished");
    };
    assert_eq!((f.tokens, f.cost), (state.totals.tokens, state.totals.cost));
    assert_eq!(
        state.status,
        ExecStatus::Finished {
            outcome: Outcome::Success
        }
    );
}

#[test]
fn a_gate_during_a_call_keeps_the_call_pending_and_its_decision_does_not_end_it() {
    let events = ExecBuilder::new(exec_id(9), "acme")
        .started("g")
        .tool_called("refund")
        .gate_during_call()
        .decided_with_input(serde_json::json!({"approved_amount": 40}))
        .tool_result(ToolStatus::Ok)
        .build();
    let at_gate = ExecutionState::fold(&events[..3]).unwrap();
    assert!(matches!(at_gate.status, ExecStatus::SuspendedAtGate { .. }));
    let call = at_gate.pending_tool_call.clone().map(|p| p.call_id);
    assert!(call.is_some());
    assert_eq!(
        at_gate
            .pending_gate
            .as_ref()
            .and_then(|g| g.during_call.clone()),
        call
    );
    // The call's result cannot slip past its own gate.
    let mut early = events[4].clone();
    early.seq = 4;
    assert!(matches!(
        reason(&at_gate, &early),
        IllegalEvent::AtGate { .. }
    ));
    // Deciding it resumes the execution with the call still pending.
    let decided = ExecutionState::fold(&events[..4]).unwrap();
    assert_eq!(decided.status, ExecStatus::Running);
    assert_eq!(decided.pending_gate, None);
    assert_eq!(decided.pending_tool_call.map(|p| p.call_id), call);
    let done = ExecutionState::fold(&events).unwrap();
    assert_eq!(done.pending_tool_call, None);
}

#[test]
fn a_gate_during_a_call_needs_that_call_pending() {
    // No call pending.
    let events = ExecBuilder::new(exec_id(10), "acme")
        .started("g")
        .tool_call("refund", ToolStatus::Ok)
        .gate_during_call()
        .build();
    let state = ExecutionState::fold(&events[..3]).unwrap();
    assert!(matches!(
        reason(&state, &events[3]),
        IllegalEvent::NoPendingCall { .. }
    ));
    // Another call pending.
    let mut other = ExecBuilder::new(exec_id(10), "acme")
        .started("g")
        .tool_called("refund")
        .gate_during_call()
        .build();
    let state = ExecutionState::fold(&other[..2]).unwrap();
    if let Payload::GateRequested(g) = &mut other[2].payload {
        g.during_call = Some("another-call".into());
    }
    assert!(matches!(
        reason(&state, &other[2]),
        IllegalEvent::CallMismatch { .. }
    ));
    // An ordinary gate still needs no call pending.
    let plain = ExecBuilder::new(exec_id(11), "acme")
        .started("g")
        .tool_called("refund")
        .gate(Verdict::Approve)
        .build();
    let state = ExecutionState::fold(&plain[..2]).unwrap();
    assert!(matches!(
        reason(&state, &plain[2]),
        IllegalEvent::CallPending { .. }
    ));
}

#[test]
fn old_gate_events_still_decode_and_new_fields_round_trip() {
    let old = serde_json::json!({"gate_id": "g", "approver": "a", "verdict": "approve"});
    let d: GateDecided = serde_json::from_value(old).unwrap();
    assert_eq!(d.input, None);
    assert!(!serde_json::to_string(&d).unwrap().contains("input"));
}
