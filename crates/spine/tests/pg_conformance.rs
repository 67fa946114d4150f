//! The `EventLog` conformance suite against the PostgreSQL backend, on a real PostgreSQL started
//! for each test, plus what only a shared store can show: two handles (two processes' worth of
//! connections and writers) racing, and a subscriber that never skips a slower transaction.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use keel_memory::pgserver::PgServer;
use keel_spine::{EventLog, PgEventLog, PgOptions, SpineError};
use keel_testkit::ExecBuilder;
use keel_testkit::builder::exec_id;
use std::time::Duration;

async fn server() -> (PgServer, String) {
    let server = PgServer::start().unwrap();
    let url = server.create_database("keel").await.unwrap();
    (server, url)
}

/// A handle (a process's worth of connections and writer) on the database at `url`.
async fn handle(url: &str) -> PgEventLog {
    PgEventLog::connect(url, PgOptions::default())
        .await
        .unwrap()
}

async fn fresh() -> (PgEventLog, PgServer) {
    let (server, url) = server().await;
    let log = handle(&url).await;
    (log, server)
}

keel_spine::conformance_tests!(fresh());
keel_spine::lease_conformance_tests!(fresh());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_race_and_exactly_one_wins_each_seq() {
    let (_server, url) = server().await;
    let a = handle(&url).await;
    let b = handle(&url).await;
    keel_spine::conformance::race_two_writers(&a, &b).await;
}

/// Many appenders on two handles commit concurrently (group commit in each, transactions
/// interleaving between them) while a subscriber on a third handle follows: it receives every
/// event exactly once, offsets increasing, in the order a later full read gives, so no slower
/// transaction's events were skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_never_skips_a_slower_concurrent_transaction() {
    const EXECS: u64 = 24;
    const ROUNDS: u64 = 15;
    let (_server, url) = server().await;
    let handles = [handle(&url).await, handle(&url).await];
    let follower = handle(&url).await;
    let mut stream = follower.subscribe(1);
    let mut tasks = Vec::new();
    for n in 0..EXECS {
        let log = handles[(n % 2) as usize].clone();
        tasks.push(tokio::spawn(async move {
            let mut b = ExecBuilder::new(exec_id(100 + n), "acme").started("g");
            for _ in 0..ROUNDS {
                let batch = b.take();
                let expected = batch[0].seq - 1;
                log.append(exec_id(100 + n), expected, &batch)
                    .await
                    .unwrap();
                b = b.plan();
            }
        }));
    }
    let total = EXECS * ROUNDS;
    let mut followed = Vec::new();
    while (followed.len() as u64) < total {
        let c = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(last) = followed.last() {
            let last: &keel_spine::Committed = last;
            assert!(c.offset > last.offset, "offsets arrive increasing");
        }
        followed.push(c);
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stored = follower.read_all(1, 10_000).await.unwrap();
    assert_eq!(stored.len() as u64, total);
    assert_eq!(
        followed, stored,
        "the subscriber got every event, once, in order"
    );
    let groups = handles[0]
        .stats()
        .groups
        .load(std::sync::atomic::Ordering::Relaxed)
        + handles[1]
            .stats()
            .groups
            .load(std::sync::atomic::Ordering::Relaxed);
    assert!(groups <= total, "{groups} transactions for {total} appends");
}

/// A subscriber on one handle wakes on another handle's commit through LISTEN/NOTIFY; with the
/// polling fallback set to an hour, only the notification can deliver the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_wakes_a_subscriber_on_another_handle() {
    let (_server, url) = server().await;
    let writer = handle(&url).await;
    let options = PgOptions {
        poll: Duration::from_secs(3600),
        ..PgOptions::default()
    };
    let reader = PgEventLog::connect(&url, options).await.unwrap();
    let mut stream = reader.subscribe(1);
    // The subscriber is waiting (empty log) before the append.
    let waiting = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(waiting.is_err(), "nothing to deliver yet");
    let events = ExecBuilder::new(exec_id(7), "acme").started("g").build();
    writer.append(exec_id(7), 0, &events).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("woken by NOTIFY, not by the hourly poll")
        .unwrap()
        .unwrap();
    assert_eq!(got.event, events[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_reconnect_and_a_bad_url_hides_the_password() {
    let (server, url) = server().await;
    let log = handle(&url).await;
    let events = keel_testkit::builder::execution_with_steps(exec_id(9), 3);
    log.append(exec_id(9), 0, &events).await.unwrap();
    drop(log);
    let again = handle(&url).await;
    assert_eq!(again.read(exec_id(9), 1).await.unwrap(), events);
    assert_eq!(again.read_all(1, 100).await.unwrap().len(), events.len());
    let bad = format!(
        "postgresql://postgres:hunter2-secret@127.0.0.1:{}/no_such_db",
        server.port()
    );
    let err = PgEventLog::connect(&bad, PgOptions::default())
        .await
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("no_such_db"), "{text}");
    assert!(matches!(err, SpineError::Storage { .. }), "{err:?}");
}

/// The slower transaction, made slow on purpose: handle A's append takes its transaction id and
/// then waits on an execution's row that a plain session holds; handle B's append to another
/// execution commits meanwhile. A reader must not be given B's events while A's, numbered
/// before them, may still commit; once A commits it gets A's then B's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_waits_for_a_slower_transaction_numbered_before_a_committed_one() {
    let (_server, url) = server().await;
    let (a, b, reader) = (handle(&url).await, handle(&url).await, handle(&url).await);
    let mut slow = ExecBuilder::new(exec_id(40), "acme").started("g");
    let first = slow.take();
    a.append(exec_id(40), 0, &first).await.unwrap();
    let from = reader.read_all(1, 10).await.unwrap().last().unwrap().offset + 1;

    let (mut holder, _) = keel_spine::postgres::connect_session(&url).await.unwrap();
    let hold = holder.transaction().await.unwrap();
    hold.execute(
        "SELECT 1 FROM keel_spine.executions WHERE exec_id = $1 FOR UPDATE",
        &[&exec_id(40).to_string()],
    )
    .await
    .unwrap();
    let second = slow.plan().take();
    let waiting = tokio::spawn({
        let a = a.clone();
        async move { a.append(exec_id(40), 1, &second).await }
    });
    // A's group has its transaction id once it waits on the row.
    let watcher = keel_spine::postgres::connect_session(&url).await.unwrap().0;
    for _ in 0..3000 {
        let n: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fast = ExecBuilder::new(exec_id(41), "acme").started("g").build();
    let fast_ack = b.append(exec_id(41), 0, &fast).await.unwrap();
    assert!(
        reader.read_all(from, 10).await.unwrap().is_empty(),
        "B's events are held back while A's transaction, numbered first, is open"
    );
    hold.commit().await.unwrap();
    let slow_ack = waiting.await.unwrap().unwrap();
    assert!(slow_ack.last_offset < fast_ack.first_offset);
    let got = reader.read_all(from, 10).await.unwrap();
    let events: Vec<_> = got.iter().map(|c| c.event.exec_id).collect();
    assert_eq!(events, [exec_id(40), exec_id(41)]);
}

/// A database whose stored offsets run ahead of the cluster's transaction ids (restored into
/// another cluster) is refused with the setting to change, not appended to behind its readers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_ahead_of_the_clusters_transaction_ids_are_refused() {
    let (_server, url) = server().await;
    let log = handle(&url).await;
    let events = ExecBuilder::new(exec_id(50), "acme").started("g").build();
    log.append(exec_id(50), 0, &events).await.unwrap();
    drop(log);
    let (client, _) = keel_spine::postgres::connect_session(&url).await.unwrap();
    client
        .execute(
            "UPDATE keel_spine.meta SET value = '-1000000000' WHERE key = 'offset_shift'",
            &[],
        )
        .await
        .unwrap();
    let err = PgEventLog::connect(&url, PgOptions::default())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SpineError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("offset_shift"), "{err}");
}

/// Groups of two processes take from the same two rate budgets in opposite orders (each of one
/// handle's appends takes `a` then `b`, the other's `b` then `a`), all at once: each group locks
/// the budgets it takes from in one order first, so none deadlocks (which would fail a whole
/// group after PostgreSQL's `deadlock_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_of_two_processes_taking_the_same_budgets_never_deadlock() {
    const TASKS: u64 = 8;
    const ROUNDS: u64 = 10;
    let (_server, url) = server().await;
    let handles = [handle(&url).await, handle(&url).await];
    let take = |tool: &str| keel_spine::side::SideWrite::RateTake {
        tenant: "acme".into(),
        tool: tool.into(),
        interval_us: 1,
        tolerance_us: i64::MAX / 4,
        now_us: 1,
    };
    let mut tasks = Vec::new();
    for n in 0..TASKS * 2 {
        let handle = (n % 2) as usize;
        let log = handles[handle].clone();
        let side = match handle {
            0 => vec![take("a"), take("b")],
            _ => vec![take("b"), take("a")],
        };
        tasks.push(tokio::spawn(async move {
            let exec = exec_id(300 + n);
            let mut b = ExecBuilder::new(exec, "acme").started("g");
            for _ in 0..ROUNDS {
                let batch = b.take();
                let expected = batch[0].seq - 1;
                log.append_with(exec, expected, &batch, side.clone(), true)
                    .await
                    .map_err(|e| e.to_string())?;
                b = b.plan();
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

/// A database written by the previous schema (a `head` row, dense offsets) migrates: its events
/// keep their offsets, and new appends are numbered after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_migrates_and_new_offsets_follow_the_old_ones() {
    let (_server, url) = server().await;
    let log = handle(&url).await;
    let old = ExecBuilder::new(exec_id(60), "acme").started("g").build();
    log.append(exec_id(60), 0, &old).await.unwrap();
    drop(log);
    // Back to version 1's shape: dense offsets from 1, the head row, no offset_shift, no check.
    let (client, _) = keel_spine::postgres::connect_session(&url).await.unwrap();
    client
        .batch_execute(
            "UPDATE keel_spine.batches SET first_offset = 1, last_offset = 1;
             CREATE TABLE keel_spine.head (id INTEGER PRIMARY KEY, last_offset BIGINT NOT NULL);
             INSERT INTO keel_spine.head VALUES (1, 1);
             DROP FUNCTION keel_spine.expect(boolean);
             DELETE FROM keel_spine.meta WHERE key = 'offset_shift';
             UPDATE keel_spine.meta SET value = '1' WHERE key = 'schema_version';",
        )
        .await
        .unwrap();
    let log = handle(&url).await;
    let new = ExecBuilder::new(exec_id(61), "acme").started("g").build();
    log.append(exec_id(61), 0, &new).await.unwrap();
    let all = log.read_all(1, 10).await.unwrap();
    assert_eq!(all.first().map(|c| c.offset), Some(1));
    let execs: Vec<_> = all.iter().map(|c| c.event.exec_id).collect();
    assert_eq!(execs, [exec_id(60), exec_id(61)]);
    let head: Option<String> = client
        .query_one("SELECT to_regclass('keel_spine.head')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(head, None, "the head row is gone");
}
