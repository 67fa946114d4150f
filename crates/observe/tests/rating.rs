//! Relevance ratings of sampled retrievals, on every backend: a rating is a `retrieval.rated`
//! event on the control stream, the projections show the latest one, the SLOs count it, a
//! rebuild keeps it, and a rating of a sample the caller cannot see (or out of range) is refused.

#![allow(clippy::unwrap_used)]

mod common;

use keel_core::control::CONTROL_STREAM;
use keel_core::payload::{MemoryRetrieved, Outcome, Payload};
use keel_observe::rating::{self, Rate};
use keel_observe::sql::Scope;
use keel_observe::{ObserveError, ProjectionStore, slo};
use keel_spine::EventLog;
use keel_spine::clock::SystemClock;
use keel_testkit::builder::{ExecBuilder, exec_id};
use serde_json::json;

on_every_backend!(
    ratings_are_events_the_projections_and_slos_keep,
    samples_page_through_with_a_cursor,
);

/// Appends executions of 20 retrievals each until the projections sampled at least one
/// (one retrieval in ten is sampled, by a hash of the event id).
async fn with_a_sample(log: &keel_spine::SqliteLog, p: &mut dyn ProjectionStore) -> (String, u64) {
    for n in 100..150 {
        let mut b = ExecBuilder::new(exec_id(n), "acme").started("where is my parcel?");
        for i in 0..20 {
            b.push(Payload::MemoryRetrieved(MemoryRetrieved {
                query: format!("parcel {i}"),
                chunks: Vec::new(),
                memory_version: "v1".into(),
            }));
        }
        let events = b.finished(Outcome::Success).build();
        log.append(events[0].exec_id, 0, &events).await.unwrap();
        p.catch_up(log).await.unwrap();
        let rows = rating::samples(p, &Scope::Admin, true, 1).await.unwrap();
        if let Some(r) = rows.rows.first() {
            return (r[0].as_str().unwrap().to_owned(), r[1].as_u64().unwrap());
        }
    }
    panic!("no retrieval sampled in 1000");
}

async fn ratings_are_events_the_projections_and_slos_keep(stores: &common::Stores) {
    let dir = tempfile::tempdir().unwrap();
    let log = common::seed(&dir.path().join("spine.db")).await;
    let mut p = stores.open("observe").await;
    let (exec, seq) = with_a_sample(&log, &mut *p).await;
    let rate = |rating: u8, rater: &str| Rate {
        exec_id: exec.parse().unwrap(),
        seq,
        rating,
        rater: rater.into(),
        note: Some("the parcel policy, as asked".into()),
    };

    // Another tenant cannot see the sample, so cannot rate it; out-of-range grades are refused.
    let err = rating::rate(
        &log,
        &SystemClock,
        &*p,
        &Scope::Tenant("globex".into()),
        rate(2, "eve"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ObserveError::NotFound { .. }), "{err}");
    let err = rating::rate(&log, &SystemClock, &*p, &Scope::Admin, rate(4, "ann"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("4 is not a relevance grade"),
        "{err}"
    );
    let mut missing = rate(1, "ann");
    missing.seq = 10_000;
    assert!(matches!(
        rating::rate(&log, &SystemClock, &*p, &Scope::Admin, missing).await,
        Err(ObserveError::NotFound { .. })
    ));
    assert!(log.read(CONTROL_STREAM, 1).await.unwrap().is_empty());

    // The owner's tenant rates it; the event is on the control stream.
    let e = rating::rate(
        &log,
        &SystemClock,
        &*p,
        &Scope::Tenant("acme".into()),
        rate(1, "ann"),
    )
    .await
    .unwrap();
    assert_eq!(e.exec_id, CONTROL_STREAM);
    assert!(
        matches!(&e.payload, Payload::RetrievalRated(r) if r.tenant == "acme" && r.rating == 1)
    );
    p.catch_up(&log).await.unwrap();
    // Re-rating: the latest wins.
    rating::rate(&log, &SystemClock, &*p, &Scope::Admin, rate(3, "bob"))
        .await
        .unwrap();
    p.catch_up(&log).await.unwrap();
    let q = format!(
        "SELECT rating, rated_by, rating_note FROM traces.retrieval_samples \
         WHERE exec_id = '{exec}' AND seq = {seq}"
    );
    let rows = p.query(&Scope::Admin, &q).await.unwrap();
    assert_eq!(
        rows.rows,
        vec![vec![
            json!(3),
            json!("bob"),
            json!("the parcel policy, as asked")
        ]]
    );
    assert!(
        rating::samples(&*p, &Scope::Admin, true, 1000)
            .await
            .unwrap()
            .rows
            .iter()
            .all(|r| r[0] != json!(exec) || r[1] != json!(seq)),
        "a rated sample is no longer in the unrated queue"
    );

    // The SLOs count it.
    let report = slo::compute(&*p, "2000-01-01").await.unwrap();
    let r = report
        .retrieval
        .iter()
        .find(|r| r.strategy_version == "support-v1")
        .unwrap();
    assert!(r.sampled >= 1 && r.rated == 1, "{r:?}");
    assert_eq!(r.mean_rating, Some(3.0));

    // A rebuild from offset 1 keeps the rating (it is an event, not a row edit).
    p.reset().await.unwrap();
    p.catch_up(&log).await.unwrap();
    assert_eq!(
        p.query(&Scope::Admin, &q).await.unwrap().rows[0][0],
        json!(3)
    );
}

/// Pages of three, each continuing after the last sample of the one before, hold every sample
/// once, newest first; a cursor that is not one of the scope's samples is refused.
async fn samples_page_through_with_a_cursor(stores: &common::Stores) {
    let dir = tempfile::tempdir().unwrap();
    let log = common::seed(&dir.path().join("spine.db")).await;
    let mut p = stores.open("observe").await;
    for n in 200..215 {
        let mut b = ExecBuilder::new(exec_id(n), "acme").started("where is my parcel?");
        for i in 0..20 {
            b.push(Payload::MemoryRetrieved(MemoryRetrieved {
                query: format!("parcel {i}"),
                chunks: Vec::new(),
                memory_version: "v1".into(),
            }));
        }
        let events = b.finished(Outcome::Success).build();
        log.append(events[0].exec_id, 0, &events).await.unwrap();
    }
    p.catch_up(&log).await.unwrap();
    let acme = Scope::Tenant("acme".into());
    let key =
        |r: &Vec<serde_json::Value>| (r[0].as_str().unwrap().to_owned(), r[1].as_u64().unwrap());
    let all: Vec<_> = rating::samples(&*p, &acme, false, 1000)
        .await
        .unwrap()
        .rows
        .iter()
        .map(key)
        .collect();
    assert!(all.len() > 6, "{} samples", all.len());
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = rating::samples_after(&*p, &acme, false, 3, after)
            .await
            .unwrap();
        let keys: Vec<_> = page.rows.iter().map(key).collect();
        paged.extend(keys.iter().cloned());
        match keys.last() {
            Some((e, s)) if keys.len() == 3 => after = Some((e.parse().unwrap(), *s)),
            _ => break,
        }
    }
    assert_eq!(paged, all);
    let (e, s) = all[0].clone();
    for (scope, cursor) in [
        (Scope::Tenant("globex".into()), (e.parse().unwrap(), s)),
        (acme.clone(), (exec_id(999), 1)),
    ] {
        let err = rating::samples_after(&*p, &scope, false, 3, Some(cursor)).await;
        assert!(matches!(err, Err(ObserveError::NotFound { .. })), "{err:?}");
    }
}
