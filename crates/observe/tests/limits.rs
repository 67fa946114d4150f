//! Query limits on every backend (a SQLite file; a real PostgreSQL): a query stops at its time
//! limit with an error that says so, a result past its rows or bytes is refused, a query whose
//! caller drops it is stopped on the database's side, and a query never blocks the async
//! runtime's threads.

#![allow(clippy::unwrap_used)]

mod common;

use common::Stores;
use keel_observe::ObserveError;
use keel_observe::sql::{Limits, Scope};
use std::time::Duration;

/// Never ends on its own, in both dialects.
const ENDLESS: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";

fn acme() -> Scope {
    Scope::Tenant("acme".into())
}

on_every_backend!(
    a_query_stops_at_its_time_limit,
    a_result_past_its_rows_or_bytes_is_refused,
);

async fn a_query_stops_at_its_time_limit(stores: &Stores) {
    let p = stores.open("observe").await;
    let limits = Limits {
        timeout: Some(Duration::from_millis(500)),
        ..Limits::none()
    };
    for scope in [acme(), Scope::Admin] {
        match p.query_limited(&scope, ENDLESS, &limits).await {
            Err(ObserveError::Limit {
                limit: "time",
                detail,
            }) => {
                assert!(detail.contains("ran longer than"), "{detail}")
            }
            other => panic!("expected the time limit, got {other:?}"),
        }
    }
    // The store still answers afterwards.
    let rows = p.query(&acme(), "SELECT 1 AS one").await.unwrap();
    assert_eq!(rows.rows, vec![vec![serde_json::json!(1)]]);
}

async fn a_result_past_its_rows_or_bytes_is_refused(stores: &Stores) {
    let p = stores.open("observe").await;
    let rows = |n: u32| {
        format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) \
             SELECT x, '{}' AS pad FROM c",
            "x".repeat(1000)
        )
    };
    let limits = Limits {
        max_rows: Some(100),
        max_bytes: Some(50_000),
        ..Limits::none()
    };
    let ok = p.query_limited(&acme(), &rows(40), &limits).await.unwrap();
    assert_eq!(ok.rows.len(), 40);
    match p.query_limited(&acme(), &rows(60), &limits).await {
        Err(ObserveError::Limit { limit: "bytes", .. }) => {}
        other => panic!("expected the bytes limit, got {other:?}"),
    }
    let few_bytes = Limits {
        max_bytes: None,
        ..limits.clone()
    };
    match p.query_limited(&acme(), &rows(101), &few_bytes).await {
        Err(ObserveError::Limit {
            limit: "rows",
            detail,
        }) => {
            assert!(detail.contains("more than 100 rows"), "{detail}")
        }
        other => panic!("expected the rows limit, got {other:?}"),
    }
}

/// With a single blocking thread, a second query can only run once the first one's thread is
/// free: the second one answering proves the dropped first one was stopped.
fn dropping_a_query_stops_it(stores: Stores) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let p = stores.open("observe").await;
        // Dropped by the timeout while it runs (its caller went away).
        let dropped = tokio::time::timeout(
            Duration::from_millis(300),
            p.query_limited(&acme(), ENDLESS, &Limits::none()),
        )
        .await;
        assert!(dropped.is_err(), "the endless query cannot have ended");
        let rows = p.query(&acme(), "SELECT 2 AS two").await.unwrap();
        assert_eq!(rows.rows, vec![vec![serde_json::json!(2)]]);
    });
}

#[test]
fn dropping_a_query_stops_it_on_sqlite() {
    dropping_a_query_stops_it(Stores::sqlite());
}

#[test]
fn dropping_a_query_stops_it_on_postgres() {
    dropping_a_query_stops_it(Stores::postgres());
}

/// A query never occupies a runtime worker: on a runtime with one worker, a timer fires while
/// a query runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_sqlite_query_runs_off_the_runtime_threads() {
    let stores = Stores::sqlite();
    let p = stores.open("observe").await;
    let limits = Limits {
        timeout: Some(Duration::from_secs(60)),
        ..Limits::none()
    };
    let scope = acme();
    let query = p.query_limited(&scope, ENDLESS, &limits);
    tokio::pin!(query);
    let ticked = tokio::select! {
        _ = &mut query => false,
        _ = tokio::time::sleep(Duration::from_millis(200)) => true,
    };
    assert!(ticked, "the endless query ended");
}
