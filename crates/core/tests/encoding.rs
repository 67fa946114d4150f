//! Encoding tests: every event type round-trips, old schema versions still decode, and bad bytes
//! give a clear error rather than a panic.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use keel_core::payload::{Outcome, Payload};
use keel_core::{Cost, DecodeError, Event, EventType, ExecStatus, ExecutionState, Tokens};
use keel_testkit::generators::{arb_event, arb_event_of, arb_timestamp};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_encode_round_trips_any_event(e in arb_event()) {
        let json = e.encode();
        prop_assert_eq!(Event::decode(&json).unwrap(), e);
    }

    #[test]
    fn the_fast_envelope_writes_what_serde_would(e in arb_event(), ts in arb_timestamp()) {
        let mut e = e;
        e.ts = ts;
        let fast: serde_json::Value = serde_json::from_str(&e.encode()).unwrap();
        prop_assert_eq!(&fast["ts"], &serde_json::to_value(ts).unwrap());
        prop_assert_eq!(&fast["event_id"], &serde_json::to_value(e.event_id).unwrap());
        prop_assert_eq!(&fast["tenant"], &serde_json::to_value(&e.tenant).unwrap());
        prop_assert_eq!(&fast["trace_id"], &serde_json::Value::String(e.trace_id.to_string()));
        prop_assert_eq!(fast["seq"].as_u64(), Some(e.seq));
        prop_assert_eq!(fast["type"].as_str(), Some(e.event_type().as_str()));
        prop_assert_eq!(Event::decode(&e.encode()).unwrap(), e);
    }
}

#[test]
fn every_event_type_round_trips() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    for &ty in EventType::ALL {
        for _ in 0..64 {
            let e = arb_event_of(ty).new_tree(&mut runner).unwrap().current();
            let json = e.encode();
            assert!(json.contains(&format!("\"type\":\"{}\"", ty.as_str())));
            assert_eq!(Event::decode(&json).unwrap(), e, "round trip of {ty}");
        }
    }
}

#[test]
fn schema_v1_fixture_still_decodes_and_folds() {
    let text = include_str!("fixtures/events-v1.jsonl");
    let events: Vec<Event> = text
        .lines()
        .map(|l| Event::decode(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(events.len(), 7);
    assert!(
        events
            .iter()
            .all(|e| e.schema_version == keel_core::CURRENT_SCHEMA_VERSION)
    );
    assert_eq!(events[0].ts.to_rfc3339(), "2026-05-28T20:26:40+00:00");
    match &events[0].payload {
        Payload::ExecStarted(s) => assert_eq!(s.experiment_arm.as_deref(), Some("B")),
        p => panic!("unexpected {p:?}"),
    }
    match &events[2].payload {
        Payload::ModelResponded(r) => {
            assert_eq!(
                r.tokens,
                Tokens {
                    input: 812,
                    output: 96
                }
            );
            assert_eq!(r.cost, Cost::Known(180));
        }
        p => panic!("unexpected {p:?}"),
    }
    match &events[3].payload {
        Payload::ToolCalled(c) => assert_eq!(c.idempotency_key.as_deref(), Some("acme:A-1001")),
        p => panic!("unexpected {p:?}"),
    }
    let state = ExecutionState::fold(&events).unwrap();
    assert_eq!(
        state.status,
        ExecStatus::Finished {
            outcome: Outcome::Success
        }
    );
    assert_eq!(state.totals.cost, Cost::Known(280));
    assert_eq!(state.totals.steps, 1);
    // Re-encoding writes the current shape, which decodes to the same event.
    for e in &events {
        assert_eq!(&Event::decode(&e.encode()).unwrap(), e);
    }
}

fn sample_json() -> String {
    keel_testkit::builder::execution_with_steps(keel_testkit::builder::exec_id(1), 1)[0].encode()
}

#[test]
fn malformed_json_is_a_clear_error() {
    let json = sample_json();
    let half = json.get(..json.len() / 2).unwrap();
    for bad in ["", "{", "not json", half] {
        let err = Event::decode(bad).unwrap_err();
        assert!(matches!(err, DecodeError::Json(_)), "{bad:?} gave {err:?}");
        assert!(err.to_string().contains("malformed event JSON"));
    }
}

#[test]
fn unknown_event_type_names_the_type() {
    let json = sample_json().replace("\"exec.started\"", "\"exec.teleported\"");
    let err = Event::decode(&json).unwrap_err();
    assert!(matches!(&err, DecodeError::UnknownType { ty, .. } if ty == "exec.teleported"));
    assert!(err.to_string().contains("exec.teleported"), "{err}");
}

#[test]
fn newer_schema_version_is_refused() {
    let json = sample_json().replace("\"schema_version\":2", "\"schema_version\":99");
    assert_eq!(
        Event::decode(&json).unwrap_err(),
        DecodeError::NewerSchema {
            found: 99,
            supported: 2
        }
    );
}

#[test]
fn missing_version_and_bad_payload_are_errors() {
    let json = sample_json();
    let no_version = json.replace("\"schema_version\":2,", "");
    assert_eq!(
        Event::decode(&no_version).unwrap_err(),
        DecodeError::MissingSchemaVersion
    );
    let bad_payload = json.replace("\"goal\":", "\"gaol\":");
    let err = Event::decode(&bad_payload).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::Payload {
                ty: EventType::ExecStarted,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("goal"), "{err}");
    let bad_envelope = json.replace("\"seq\":1", "\"seq\":\"one\"");
    assert!(matches!(
        Event::decode(&bad_envelope).unwrap_err(),
        DecodeError::Envelope(_)
    ));
}

#[test]
fn v1_event_with_bad_cost_is_an_upgrade_error() {
    let line = include_str!("fixtures/events-v1.jsonl")
        .lines()
        .nth(2)
        .unwrap();
    let bad = line.replace("\"cost\":0.00018", "\"cost\":\"cheap\"");
    let err = Event::decode(&bad).unwrap_err();
    assert!(
        matches!(err, DecodeError::Upgrade { from: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("data.cost"), "{err}");
}
