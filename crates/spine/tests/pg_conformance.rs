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

async fn fresh() -> (PgEventLog, PgServer) {
    let (server, url) = server().await;
    let log = PgEventLog::connect(&url, PgOptions::default())
        .await
        .unwrap();
    (log, server)
}

keel_spine::conformance_tests!(fresh());
keel_spine::lease_conformance_tests!(fresh());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_race_and_exactly_one_wins_each_seq() {
    let (_server, url) = server().await;
    let a = PgEventLog::connect(&url, PgOptions::default())
        .await
        .unwrap();
    let b = PgEventLog::connect(&url, PgOptions::default())
        .await
        .unwrap();
    keel_spine::conformance::race_two_writers(&a, &b).await;
}

/// Many appenders on two handles commit concurrently (group commit in each, transactions
/// interleaving between them) while a subscriber on a third handle follows: it receives every
/// offset exactly once, 1, 2, 3, … with no gap, so no slower transaction's events were skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_never_skips_a_slower_concurrent_transaction() {
    const EXECS: u64 = 24;
    const ROUNDS: u64 = 15;
    let (_server, url) = server().await;
    let handles = [
        PgEventLog::connect(&url, PgOptions::default())
            .await
            .unwrap(),
        PgEventLog::connect(&url, PgOptions::default())
            .await
            .unwrap(),
    ];
    let follower = PgEventLog::connect(&url, PgOptions::default())
        .await
        .unwrap();
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
    let mut next = 1;
    while next <= total {
        let c = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(c.offset, next, "offsets arrive in order, without a gap");
        next += 1;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stored = follower.read_all(1, 10_000).await.unwrap();
    assert_eq!(stored.len() as u64, total);
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
    let writer = PgEventLog::connect(&url, PgOptions::default())
        .await
        .unwrap();
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
    let log = PgEventLog::connect(&url, PgOptions::default())
        .await
        .unwrap();
    let events = keel_testkit::builder::execution_with_steps(exec_id(9), 3);
    log.append(exec_id(9), 0, &events).await.unwrap();
    drop(log);
    let again = PgEventLog::connect(&url, PgOptions::default())
        .await
        .unwrap();
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
