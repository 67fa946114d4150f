//! Replay never re-executes a side effect: the demo shop's tables are unchanged by replays; a
//! recorded side effect is answered from the recording, an unrecorded one is a would-be call;
//! the recorded gate decision is reused.

#![allow(clippy::unwrap_used)]

mod common;

use keel_core::payload::{Outcome, Payload, ToolStatus, Verdict};
use keel_core::{ExecStatus, ExecutionState};
use keel_runtime::embedded::Config;
use keel_runtime::gates;
use keel_runtime::replay::ReadOnlyTools;
use keel_spine::clock::SystemClock;

fn shop_counts(env: &common::Env) -> Vec<u64> {
    ["orders", "refunds", "drafts", "notifications"]
        .iter()
        .map(|t| env.shop.count(t).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_answers_side_effects_from_the_recording_and_never_runs_them() {
    let (tmp, env) = common::setup(&[]);
    let data = tmp.path().join("data");
    // The original: a refund, stopped at its gate, approved by a person, executed once.
    let (refund, state, _) = common::run(
        &env,
        "support-short",
        "Please refund order A-1001, it arrived broken",
    )
    .await;
    let ExecStatus::SuspendedAtGate { gate_id } = &state.status else {
        panic!("expected a gate, got {:?}", state.status);
    };
    gates::decide(
        &*env.log,
        &SystemClock,
        refund,
        gate_id,
        "alice",
        Verdict::Approve,
        "checked",
    )
    .await
    .unwrap();
    let s = env.strategies.get("support-short").unwrap();
    let state = env
        .agent
        .drive(s, &*s.provider().unwrap(), refund)
        .await
        .unwrap();
    assert_eq!(common::outcome(&state), Some(Outcome::Success));
    // A complaint under v1: forwarded to the team (a side effect), no draft.
    let (complaint, state, _) = common::run(
        &env,
        "support-short",
        "This is terrible, order A-1002 arrived broken",
    )
    .await;
    assert_eq!(common::outcome(&state), Some(Outcome::Success));
    let before = shop_counts(&env);
    assert_eq!(before[1], 1, "one refund");

    let config = Config {
        tools: common::repo().join("tools"),
        strategies: tmp.path().join("strategies"),
        prices: common::repo().join("prices.toml"),
    };
    let replayer = common::replayer(&data, &config);

    // The refund replayed under the other strategy: the gate decision is replayed, the refund is
    // answered from the recording, the shop is untouched.
    let long = env.strategies.get("support-long").unwrap();
    let model = long.provider().unwrap();
    let r = replayer
        .replay(refund, long, &*model, ReadOnlyTools::Live)
        .await
        .unwrap();
    assert_eq!(
        common::outcome(&r.state),
        Some(Outcome::Success),
        "{:?}",
        r.state.status
    );
    assert!(r.would_be.is_empty(), "{:?}", r.would_be);
    assert_eq!(r.answered_from_recording, 1, "the refund");
    let events = replayer.log().read(r.replay, 1).await.unwrap();
    let Payload::ExecStarted(started) = &events[0].payload else {
        panic!()
    };
    assert_eq!(started.replay_of, Some(refund));
    assert_eq!(started.strategy_version, long.version);
    let decided = events
        .iter()
        .find_map(|e| match &e.payload {
            Payload::GateDecided(d) => Some(d.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (decided.verdict, decided.approver.as_str()),
        (Verdict::Approve, "replay:alice")
    );
    assert!(
        common::tool_statuses(&events).contains(&("issue_customer_refund".into(), ToolStatus::Ok))
    );
    assert_eq!(shop_counts(&env), before, "no side effect re-executed");

    // The complaint under v2 drafts a reply first: the original never drafted, so the draft is
    // a would-be call, not executed (and so is the compensation its failure policy then asks
    // for); the team notification comes from the recording.
    let r = replayer
        .replay(complaint, long, &*model, ReadOnlyTools::Recorded)
        .await
        .unwrap();
    assert_eq!(r.would_be[0].tool, "draft_reply", "{:?}", r.would_be);
    assert!(
        r.would_be
            .iter()
            .all(|w| w.tool == "draft_reply" || w.tool == "discard_draft"),
        "{:?}",
        r.would_be
    );
    assert!(r.would_be[0].reason.contains("would-be call"));
    let events = replayer.log().read(r.replay, 1).await.unwrap();
    let statuses = common::tool_statuses(&events);
    assert!(
        statuses.contains(&("draft_reply".into(), ToolStatus::Error)),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&("notify_team".into(), ToolStatus::Ok)),
        "{statuses:?}"
    );
    assert_eq!(shop_counts(&env), before, "no side effect re-executed");
    assert_eq!(ExecutionState::fold(&events).unwrap(), r.state);

    // Replaying an unknown execution says so.
    let err = replayer
        .replay(
            "0190a000-0000-7000-8000-000000000999".parse().unwrap(),
            long,
            &*model,
            ReadOnlyTools::Live,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no execution"), "{err}");
}
