//! The `EventLog` conformance suite: every backend's tests run every check here against a fresh,
//! empty log, through [`crate::conformance_tests!`]. A check panics (fails its test) on a
//! violated guarantee; each names the guarantee it defends.

// These are test assertions compiled into the library so every backend can run them: a failed
// unwrap here is a failed check, exactly like a failed `assert!`.
#![allow(clippy::unwrap_used)]

use crate::error::SpineError;
use crate::log::EventLog;
use futures::StreamExt;
use keel_core::payload::{Outcome, Payload, Transition};
use keel_core::{Event, ExecId};
use keel_testkit::ExecBuilder;
use keel_testkit::builder::exec_id;
use std::sync::Arc;
use std::time::Duration;

/// Expands to one `#[tokio::test]` per conformance check, each on a log made by `$make`
/// (an async expression returning `(impl EventLog, guard)`; the guard lives as long as the test).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            append_then_read_round_trips,
            stale_expected_seq_conflicts,
            malformed_batches_are_refused_and_store_nothing,
            read_all_is_commit_order_and_pages,
            subscribe_replays_then_follows,
            list_unfinished_excludes_ended_executions,
            racing_writers_exactly_one_wins_each_seq,
            nothing_follows_a_terminal_event,
            another_tenant_cannot_append_to_an_execution,
            buffered_appends_keep_order_and_conditions,
            appended_after_sees_every_readable_event,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let (log, _guard) = $make.await;
            $crate::conformance::$check(&log).await;
        }
    )*};
}

async fn append_all(log: &dyn EventLog, events: &[Event]) {
    let mut last = events.first().map_or(0, |e| e.seq - 1);
    for chunk in events.chunks(3) {
        let ack = log.append(chunk[0].exec_id, last, chunk).await.unwrap();
        last = ack.last_seq;
        assert_eq!(ack.last_offset - ack.first_offset + 1, chunk.len() as u64);
    }
}

/// Appended events read back identical, from any seq.
pub async fn append_then_read_round_trips(log: &dyn EventLog) {
    let events = keel_testkit::builder::execution_with_steps(exec_id(1), 5);
    append_all(log, &events).await;
    assert_eq!(log.read(exec_id(1), 1).await.unwrap(), events);
    assert_eq!(log.read(exec_id(1), 7).await.unwrap(), events[6..].to_vec());
    assert!(log.read(exec_id(999), 1).await.unwrap().is_empty());
}

/// A stale or future `expected_seq` is a typed conflict naming the real last seq.
pub async fn stale_expected_seq_conflicts(log: &dyn EventLog) {
    let events = ExecBuilder::new(exec_id(2), "acme")
        .started("g")
        .plan()
        .plan()
        .build();
    log.append(exec_id(2), 0, &events[..2]).await.unwrap();
    for expected in [0, 1, 5] {
        let mut batch = events[2..].to_vec();
        batch[0].seq = expected + 1;
        match log.append(exec_id(2), expected, &batch).await {
            Err(SpineError::Conflict {
                actual_seq,
                expected_seq,
                ..
            }) => {
                assert_eq!((expected_seq, actual_seq), (expected, 2));
            }
            other => panic!("expected a conflict for expected_seq {expected}, got {other:?}"),
        }
    }
    assert_eq!(log.read(exec_id(2), 1).await.unwrap(), events[..2].to_vec());
}

/// Empty batches, other executions' events, seq gaps and mixed tenants are refused whole.
pub async fn malformed_batches_are_refused_and_store_nothing(log: &dyn EventLog) {
    let events = ExecBuilder::new(exec_id(3), "acme")
        .started("g")
        .plan()
        .plan()
        .build();
    let other = ExecBuilder::new(exec_id(4), "acme").started("g").build();
    let mut gap = events.clone();
    gap.remove(1);
    let mut mixed = events.clone();
    mixed[2].tenant = "globex".into();
    let bad: [&[Event]; 4] = [&[], &[events[0].clone(), other[0].clone()], &gap, &mixed];
    for batch in bad {
        let err = log.append(exec_id(3), 0, batch).await.unwrap_err();
        assert!(matches!(err, SpineError::InvalidAppend { .. }), "{err:?}");
    }
    assert!(log.read(exec_id(3), 1).await.unwrap().is_empty());
    assert!(log.read_all(1, 100).await.unwrap().is_empty());
}

/// `read_all` returns every event once, offsets increasing, in commit order, across pages.
pub async fn read_all_is_commit_order_and_pages(log: &dyn EventLog) {
    let mut builders: Vec<_> = (10..13)
        .map(|n| ExecBuilder::new(exec_id(n), "acme").started("g"))
        .collect();
    let mut committed = Vec::new();
    for round in 0..4 {
        for b in &mut builders {
            let batch = b.take();
            let expected = batch[0].seq - 1;
            log.append(batch[0].exec_id, expected, &batch)
                .await
                .unwrap();
            committed.extend(batch);
            b.push(Payload::PlanProposed(keel_core::payload::PlanProposed {
                steps: vec![format!("round {round}")],
                model: "m".into(),
                prompt_version: "v1".into(),
            }));
        }
    }
    let all = log.read_all(1, 1000).await.unwrap();
    assert_eq!(
        all.iter().map(|c| c.event.clone()).collect::<Vec<_>>(),
        committed
    );
    assert!(all.windows(2).all(|w| w[0].offset < w[1].offset));
    let mut paged = Vec::new();
    let mut from = 1;
    loop {
        let page = log.read_all(from, 5).await.unwrap();
        let Some(last) = page.last() else { break };
        from = last.offset + 1;
        paged.extend(page);
    }
    assert_eq!(paged, all);
}

/// `subscribe` delivers what is stored, then what commits later, in order, exactly once.
pub async fn subscribe_replays_then_follows(log: &dyn EventLog) {
    let mut b = ExecBuilder::new(exec_id(20), "acme").started("g").plan();
    let first = b.take();
    log.append(exec_id(20), 0, &first).await.unwrap();
    let mut stream = log.subscribe(1);
    for e in &first {
        let got = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
        assert_eq!(&got.unwrap().unwrap().unwrap().event, e);
    }
    let later = b.plan().step_completed().build();
    log.append(exec_id(20), 2, &later).await.unwrap();
    let mut offsets = Vec::new();
    for e in &later {
        let got = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
        let c = got.unwrap().unwrap().unwrap();
        assert_eq!(&c.event, e);
        offsets.push(c.offset);
    }
    // A subscription from a later offset starts there.
    let mut tail = log.subscribe(offsets[1]);
    let got = tokio::time::timeout(Duration::from_secs(10), tail.next()).await;
    assert_eq!(got.unwrap().unwrap().unwrap().event, later[1]);
}

/// Finished and cancelled executions are not listed for resume; the others are, with last seq.
pub async fn list_unfinished_excludes_ended_executions(log: &dyn EventLog) {
    let finished = ExecBuilder::new(exec_id(30), "acme")
        .started("g")
        .finished(Outcome::Success)
        .build();
    let mut cancelled = ExecBuilder::new(exec_id(31), "acme").started("g");
    cancelled.push(Payload::ExecCancelled(Transition::default()));
    let running = ExecBuilder::new(exec_id(32), "globex")
        .started("g")
        .tool_called("refund")
        .build();
    log.append(exec_id(30), 0, &finished).await.unwrap();
    log.append(exec_id(31), 0, cancelled.events())
        .await
        .unwrap();
    log.append(exec_id(32), 0, &running).await.unwrap();
    let unfinished = log.list_unfinished().await.unwrap();
    assert_eq!(unfinished.len(), 1, "{unfinished:?}");
    assert_eq!(unfinished[0].exec_id, exec_id(32));
    assert_eq!(unfinished[0].tenant.as_str(), "globex");
    assert_eq!(unfinished[0].last_seq, 2);
}

/// Two writers racing for the same seq, round after round: exactly one wins each.
pub async fn racing_writers_exactly_one_wins_each_seq(log: &dyn EventLog) {
    race_two_writers(log, log).await;
}

/// Writers `a` and `b` (the same log, or two handles on one store) race for each seq of one
/// execution, in lockstep: exactly one wins every round, and the stored event is the winner's.
pub async fn race_two_writers(a: &dyn EventLog, b: &dyn EventLog) {
    const ROUNDS: u64 = 100;
    let exec: ExecId = exec_id(40);
    let start = ExecBuilder::new(exec, "acme").started("race").build();
    a.append(exec, 0, &start).await.unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let (a_wins, b_wins) = tokio::join!(
        race_writer("a", a, exec, ROUNDS, barrier.clone()),
        race_writer("b", b, exec, ROUNDS, barrier)
    );
    assert_eq!(
        a_wins.len() + b_wins.len(),
        ROUNDS as usize,
        "every round has exactly one winner"
    );
    let events = b.read(exec, 1).await.unwrap();
    assert_eq!(events.len() as u64, ROUNDS + 1);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "gapless");
        if let Payload::StepCompleted(s) = &e.payload {
            let winner = if a_wins.contains(&e.seq.saturating_sub(1)) {
                "a"
            } else {
                "b"
            };
            assert_eq!(
                s.summary.as_deref(),
                Some(winner),
                "seq {} holds its winner's event",
                e.seq
            );
        }
    }
}

/// Once an execution has ended, the log refuses anything after it.
pub async fn nothing_follows_a_terminal_event(log: &dyn EventLog) {
    let events = ExecBuilder::new(exec_id(50), "acme")
        .started("g")
        .finished(Outcome::Failure)
        .plan()
        .build();
    log.append(exec_id(50), 0, &events[..2]).await.unwrap();
    let err = log.append(exec_id(50), 2, &events[2..]).await.unwrap_err();
    assert!(matches!(err, SpineError::InvalidAppend { .. }), "{err:?}");
}

/// An execution's tenant is fixed by its first append.
pub async fn another_tenant_cannot_append_to_an_execution(log: &dyn EventLog) {
    let ours = ExecBuilder::new(exec_id(60), "acme").started("g").build();
    log.append(exec_id(60), 0, &ours).await.unwrap();
    let theirs = ExecBuilder::new(exec_id(60), "globex")
        .resume_at(1, 0)
        .plan()
        .build();
    let err = log.append(exec_id(60), 1, &theirs).await.unwrap_err();
    assert!(matches!(err, SpineError::InvalidAppend { .. }), "{err:?}");
    assert_eq!(log.read(exec_id(60), 1).await.unwrap(), ours);
}

async fn race_writer(
    name: &str,
    log: &dyn EventLog,
    exec: ExecId,
    rounds: u64,
    barrier: Arc<tokio::sync::Barrier>,
) -> Vec<u64> {
    let mut wins = Vec::new();
    for round in 1..=rounds {
        let mut b = ExecBuilder::new(exec, "acme").resume_at(round, 0);
        b.push(Payload::StepCompleted(keel_core::payload::StepCompleted {
            summary: Some(name.into()),
        }));
        barrier.wait().await;
        match log.append(exec, round, b.events()).await {
            Ok(_) => wins.push(round),
            Err(SpineError::Conflict { actual_seq, .. }) => assert_eq!(actual_seq, round + 1),
            Err(e) => panic!("{name}: unexpected {e}"),
        }
    }
    wins
}

/// Buffered appends obey the same conditions and order, and a durable append after them makes
/// all of them readable.
pub async fn buffered_appends_keep_order_and_conditions(log: &dyn EventLog) {
    let events = keel_testkit::builder::execution_with_steps(exec_id(70), 2);
    let (head, tail) = events.split_at(events.len() - 1);
    let mut last = 0;
    for chunk in head.chunks(2) {
        last = log
            .append_buffered(exec_id(70), last, chunk)
            .await
            .unwrap()
            .last_seq;
    }
    let stale = log
        .append_buffered(exec_id(70), 1, &head[1..2])
        .await
        .unwrap_err();
    assert!(matches!(stale, SpineError::Conflict { .. }), "{stale:?}");
    log.append(exec_id(70), last, tail).await.unwrap();
    assert_eq!(log.read(exec_id(70), 1).await.unwrap(), events);
    assert!(
        log.list_unfinished()
            .await
            .unwrap()
            .iter()
            .all(|s| s.exec_id != exec_id(70))
    );
}

/// `appended_after` never says "nothing new" while `read` has something after that seq.
pub async fn appended_after_sees_every_readable_event(log: &dyn EventLog) {
    let events = keel_testkit::builder::execution_with_steps(exec_id(80), 2);
    assert!(!log.appended_after(exec_id(80), 0).await.unwrap());
    let (head, tail) = events.split_at(3);
    log.append(exec_id(80), 0, head).await.unwrap();
    assert!(log.appended_after(exec_id(80), 0).await.unwrap());
    assert!(log.appended_after(exec_id(80), 2).await.unwrap());
    assert!(!log.appended_after(exec_id(80), 3).await.unwrap());
    log.append(exec_id(80), 3, tail).await.unwrap();
    let last = events.len() as u64;
    assert!(log.appended_after(exec_id(80), 3).await.unwrap());
    assert!(!log.appended_after(exec_id(80), last).await.unwrap());
    assert!(!log.appended_after(exec_id(81), 0).await.unwrap());
}
