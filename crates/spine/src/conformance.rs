//! The `EventLog` conformance suite: every backend's tests run every check here against a fresh,
//! empty log, through [`crate::conformance_tests!`]. A check panics (fails its test) on a
//! violated guarantee; each names the guarantee it defends.

// These are test assertions compiled into the library so every backend can run them: a failed
// unwrap here is a failed check, exactly like a failed `assert!`.
#![allow(clippy::unwrap_used)]

use crate::error::SpineError;
use crate::lease::Leases;
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
            read_first_is_the_first_event_only,
            read_many_is_each_whole_log_in_the_order_asked,
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

/// `read_first` is the execution's first event, whatever came after it; unknown is `None`.
pub async fn read_first_is_the_first_event_only(log: &dyn EventLog) {
    let events = keel_testkit::builder::execution_with_steps(exec_id(90), 2);
    assert!(log.read_first(exec_id(90)).await.unwrap().is_none());
    log.append(exec_id(90), 0, &events[..1]).await.unwrap();
    assert_eq!(
        log.read_first(exec_id(90)).await.unwrap().as_ref(),
        Some(&events[0])
    );
    log.append(exec_id(90), 1, &events[1..]).await.unwrap();
    assert_eq!(
        log.read_first(exec_id(90)).await.unwrap().as_ref(),
        Some(&events[0])
    );
    assert!(log.read_first(exec_id(91)).await.unwrap().is_none());
}

/// `read_many` gives each execution's whole log, as `read` from seq 1 does, in the order asked
/// (twice if asked twice), and an empty log for an unknown execution.
pub async fn read_many_is_each_whole_log_in_the_order_asked(log: &dyn EventLog) {
    let a = keel_testkit::builder::execution_with_steps(exec_id(100), 3);
    let b = keel_testkit::builder::execution_with_steps(exec_id(101), 1);
    append_all(log, &a).await;
    append_all(log, &b).await;
    assert!(log.read_many(&[]).await.unwrap().is_empty());
    let got = log
        .read_many(&[exec_id(101), exec_id(102), exec_id(100), exec_id(101)])
        .await
        .unwrap();
    assert_eq!(got, vec![b.clone(), Vec::new(), a.clone(), b]);
    assert_eq!(got[2], log.read(exec_id(100), 1).await.unwrap());
}

/// Expands to one `#[tokio::test]` per lease check, each on a fresh, empty store made by `$make`
/// (an async expression returning `(impl EventLog + Leases, guard)`).
#[macro_export]
macro_rules! lease_conformance_tests {
    ($make:expr) => {
        $crate::lease_conformance_tests!(@each $make;
            a_live_lease_excludes_other_owners,
            a_stale_epoch_is_refused_and_stores_nothing,
            claim_takes_expired_and_released_leases_fairly_across_tenants,
            concurrent_claimers_never_share_an_execution,
            renew_reports_leases_lost_to_a_takeover_or_an_end,
            expire_frees_an_owner_s_leases_at_once_and_keeps_the_fence,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let (log, _guard) = $make.await;
            $crate::conformance::$check(&log, &log).await;
        }
    )*};
}

const HOUR: Duration = Duration::from_secs(3600);

/// Starts `exec` of `tenant` with a plain (unleased) append: a claimable execution.
async fn start_unleased(log: &dyn EventLog, exec: ExecId, tenant: &str) {
    let events = ExecBuilder::new(exec, tenant).started("g").build();
    log.append(exec, 0, &events).await.unwrap();
}

/// One owner at a time: a live lease is refused to others, re-acquiring keeps the epoch, a
/// release frees it, and the next owner gets a higher epoch.
pub async fn a_live_lease_excludes_other_owners(_log: &dyn EventLog, leases: &dyn Leases) {
    let exec = exec_id(200);
    let a = leases
        .acquire(exec, "acme", "a", HOUR)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a.last_seq, a.owner.as_str()), (0, "a"));
    assert!(
        leases
            .acquire(exec, "acme", "b", HOUR)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        leases
            .acquire(exec, "globex", "a", HOUR)
            .await
            .unwrap()
            .is_none(),
        "an execution's tenant is fixed"
    );
    let again = leases
        .acquire(exec, "acme", "a", HOUR)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.epoch, a.epoch, "its own owner keeps the epoch");
    leases.release(&a).await.unwrap();
    let b = leases
        .acquire(exec, "acme", "b", HOUR)
        .await
        .unwrap()
        .unwrap();
    assert!(b.epoch > a.epoch, "{} > {}", b.epoch, a.epoch);
    // A stale release (of the old epoch) does not free the new owner's lease.
    leases.release(&a).await.unwrap();
    assert!(
        leases
            .acquire(exec, "acme", "c", HOUR)
            .await
            .unwrap()
            .is_none()
    );
}

/// A worker that stalled past its expiry is fenced: once another took over, its append carrying
/// the old epoch stores nothing; the new owner's goes on from the same seq.
pub async fn a_stale_epoch_is_refused_and_stores_nothing(log: &dyn EventLog, leases: &dyn Leases) {
    let exec = exec_id(210);
    let a = leases
        .acquire(exec, "acme", "a", Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    let mut b = ExecBuilder::new(exec, "acme").started("g");
    leases.append_leased(&a, 0, &b.take()).await.unwrap();
    // `a` expired at once (ttl 0): another worker claims it.
    let taken = leases.claim("b", HOUR, 10).await.unwrap();
    assert_eq!(taken.len(), 1, "{taken:?}");
    let lease_b = &taken[0];
    assert_eq!((lease_b.exec_id, lease_b.last_seq), (exec, 1));
    assert!(lease_b.epoch > a.epoch);
    let late = b.plan().build();
    match leases.append_leased(&a, 1, &late).await {
        Err(SpineError::LeaseLost {
            epoch,
            current_epoch,
            ..
        }) => assert_eq!((epoch, current_epoch), (a.epoch, lease_b.epoch)),
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    assert_eq!(log.read(exec, 1).await.unwrap().len(), 1, "nothing stored");
    leases.append_leased(lease_b, 1, &late).await.unwrap();
    assert_eq!(log.read(exec, 1).await.unwrap().len(), 2);
}

/// Claims take unfinished executions that nobody holds (never started under a lease, released,
/// or expired), never live leases or ended executions, and share a claim between tenants: a
/// tenant with a backlog of twenty does not crowd out one with two.
pub async fn claim_takes_expired_and_released_leases_fairly_across_tenants(
    log: &dyn EventLog,
    leases: &dyn Leases,
) {
    for n in 0..20 {
        start_unleased(log, exec_id(300 + n), "flood").await;
    }
    for n in 0..2 {
        start_unleased(log, exec_id(400 + n), "quiet").await;
    }
    let held = exec_id(500);
    let h = leases
        .acquire(held, "quiet", "x", HOUR)
        .await
        .unwrap()
        .unwrap();
    let started = ExecBuilder::new(held, "quiet").started("g").build();
    leases.append_leased(&h, 0, &started).await.unwrap();
    let ended = ExecBuilder::new(exec_id(501), "quiet")
        .started("g")
        .finished(Outcome::Success)
        .build();
    log.append(exec_id(501), 0, &ended).await.unwrap();
    let first = leases.claim("w1", HOUR, 4).await.unwrap();
    assert_eq!(first.len(), 4, "{first:?}");
    let quiet: Vec<_> = first
        .iter()
        .filter(|l| l.tenant.as_str() == "quiet")
        .map(|l| l.exec_id)
        .collect();
    assert_eq!(quiet, vec![exec_id(400), exec_id(401)], "{first:?}");
    let rest = leases.claim("w2", HOUR, 100).await.unwrap();
    assert_eq!(rest.len(), 18, "the flood's remaining executions");
    assert!(rest.iter().all(|l| l.tenant.as_str() == "flood"));
    assert!(leases.claim("w3", HOUR, 100).await.unwrap().is_empty());
    // A released lease is claimable at once.
    leases.release(&h).await.unwrap();
    let again = leases.claim("w3", HOUR, 100).await.unwrap();
    assert_eq!(
        again.iter().map(|l| l.exec_id).collect::<Vec<_>>(),
        vec![held]
    );
}

/// Two claimers racing over the same backlog split it: every execution is claimed exactly once.
pub async fn concurrent_claimers_never_share_an_execution(log: &dyn EventLog, leases: &dyn Leases) {
    const N: u64 = 40;
    for n in 0..N {
        let tenant = if n % 3 == 0 { "globex" } else { "acme" };
        start_unleased(log, exec_id(600 + n), tenant).await;
    }
    let claimer = |owner: &'static str| async move {
        let mut mine = Vec::new();
        loop {
            let got = leases.claim(owner, HOUR, 3).await.unwrap();
            if got.is_empty() {
                break mine;
            }
            mine.extend(got.into_iter().map(|l| l.exec_id));
        }
    };
    let (a, b) = tokio::join!(claimer("a"), claimer("b"));
    let mut all: Vec<_> = a.iter().chain(&b).copied().collect();
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "an execution was claimed twice");
    assert_eq!(all.len() as u64, N);
}

/// A heartbeat extends the leases still held and names the ones lost: taken over by another
/// worker after expiring, or ended.
pub async fn renew_reports_leases_lost_to_a_takeover_or_an_end(
    log: &dyn EventLog,
    leases: &dyn Leases,
) {
    let (kept, taken, ended) = (exec_id(700), exec_id(701), exec_id(702));
    let mut held = Vec::new();
    for (exec, ttl) in [(kept, HOUR), (taken, Duration::ZERO), (ended, HOUR)] {
        let l = leases
            .acquire(exec, "acme", "a", ttl)
            .await
            .unwrap()
            .unwrap();
        let events = ExecBuilder::new(exec, "acme").started("g").build();
        leases.append_leased(&l, 0, &events).await.unwrap();
        held.push(l);
    }
    let finish = ExecBuilder::new(ended, "acme")
        .resume_at(1, 0)
        .finished(Outcome::Success)
        .build();
    leases.append_leased(&held[2], 1, &finish).await.unwrap();
    let b = leases.claim("b", HOUR, 10).await.unwrap();
    assert_eq!(b.iter().map(|l| l.exec_id).collect::<Vec<_>>(), vec![taken]);
    let lost = leases.renew(&held, HOUR).await.unwrap();
    let mut lost: Vec<_> = lost.iter().map(|l| l.exec_id).collect();
    lost.sort();
    assert_eq!(lost, vec![taken, ended]);
    assert!(
        log.list_unfinished()
            .await
            .unwrap()
            .iter()
            .all(|s| s.exec_id != ended)
    );
    assert!(
        leases
            .acquire(ended, "acme", "c", HOUR)
            .await
            .unwrap()
            .is_none()
    );
}

/// `holders` names the owners of live leases; `expire` (for an owner known dead) frees its
/// leases at once without waiting for their expiry, the next owner gets a higher epoch, and the
/// expired owner's late append is still refused.
pub async fn expire_frees_an_owner_s_leases_at_once_and_keeps_the_fence(
    log: &dyn EventLog,
    leases: &dyn Leases,
) {
    let (x, y) = (exec_id(800), exec_id(801));
    let mut held = Vec::new();
    for exec in [x, y] {
        let l = leases
            .acquire(exec, "acme", "dead", HOUR)
            .await
            .unwrap()
            .unwrap();
        let events = ExecBuilder::new(exec, "acme").started("g").build();
        leases.append_leased(&l, 0, &events).await.unwrap();
        held.push(l);
    }
    let other = leases
        .acquire(exec_id(802), "acme", "alive", HOUR)
        .await
        .unwrap()
        .unwrap();
    let events = ExecBuilder::new(exec_id(802), "acme").started("g").build();
    leases.append_leased(&other, 0, &events).await.unwrap();
    let mut holders = leases.holders().await.unwrap();
    holders.sort();
    assert_eq!(holders, vec!["alive".to_owned(), "dead".to_owned()]);
    assert!(
        leases.claim("b", HOUR, 10).await.unwrap().is_empty(),
        "all live"
    );
    assert_eq!(leases.expire("dead").await.unwrap(), 2);
    assert_eq!(leases.holders().await.unwrap(), vec!["alive".to_owned()]);
    let taken = leases.claim("b", HOUR, 10).await.unwrap();
    assert_eq!(
        taken.iter().map(|l| l.exec_id).collect::<Vec<_>>(),
        vec![x, y]
    );
    assert!(taken.iter().zip(&held).all(|(b, a)| b.epoch > a.epoch));
    let late = ExecBuilder::new(x, "acme").resume_at(1, 0).plan().build();
    assert!(matches!(
        leases.append_leased(&held[0], 1, &late).await,
        Err(SpineError::LeaseLost { .. })
    ));
    assert_eq!(log.read(x, 1).await.unwrap().len(), 1, "nothing stored");
}
