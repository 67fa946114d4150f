//! The gate-notification deliveries' store contract (`DeliveryStore`), checked on every backend:
//! `notify.db` (SQLite) and a real PostgreSQL (started per test). Each check uses two handles
//! on one store, as two processes (or two machines on one spine) would: a delivery found by
//! both is owed once, two claims at once never return the same delivery, a lease keeps it from
//! every other claim until it runs out, and progress outlives the handle that made it.

#![allow(clippy::unwrap_used)]

use keel_memory::pgserver::PgServer;
use keel_runtime::notify::store::{Attempt, NewDelivery, Next};
use keel_runtime::notify::{Deliveries, PgDeliveries};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

/// What keeps a store alive for the test: a temporary directory or a PostgreSQL server.
#[allow(dead_code)] // held, never read: dropping it removes the store
enum Guard {
    Dir(tempfile::TempDir),
    Pg(PgServer),
}

/// Opens handles on one store.
enum Store {
    Sqlite(PathBuf),
    Pg(String),
}

impl Store {
    async fn handle(&self) -> Deliveries {
        match self {
            Store::Sqlite(path) => Deliveries::open(path).unwrap(),
            Store::Pg(url) => Deliveries::on(Arc::new(PgDeliveries::connect(url).await.unwrap())),
        }
    }
}

fn sqlite() -> (Store, Guard) {
    let dir = tempfile::tempdir().unwrap();
    (Store::Sqlite(dir.path().join("notify.db")), Guard::Dir(dir))
}

async fn pg() -> (Store, Guard) {
    let server = PgServer::start().unwrap();
    let url = server.create_database("keel").await.unwrap();
    (Store::Pg(url), Guard::Pg(server))
}

fn owed(webhook: &str, n: u64) -> NewDelivery {
    let event_id = format!("01900000-0000-7000-8000-{n:012}");
    NewDelivery {
        id: format!("{webhook}:{event_id}"),
        webhook: webhook.into(),
        event_id,
        exec_id: "01900000-0000-7000-8000-0000000000aa".into(),
        seq: n,
        kind: "gate.requested".into(),
        tenant: "acme".into(),
        gate_id: format!("gate-{n}"),
        queue: "refunds".into(),
    }
}

fn attempt(n: u32, status: u16) -> Attempt {
    Attempt {
        n,
        at: format!("2026-11-27T20:00:0{n}Z"),
        http_status: Some(status),
        error: (status >= 300).then(|| format!("the receiver answered {status}")),
        latency_ms: 7,
    }
}

fn hooks() -> Vec<String> {
    vec!["oncall".into()]
}

/// Found by two scanners (two processes reading the same spine), a delivery is owed once; the
/// cursor only moves forward; a new handle sees both.
async fn owed_once_and_the_cursor_never_goes_back(store: Store) {
    let (a, b) = (store.handle().await, store.handle().await);
    assert_eq!(a.cursor().await.unwrap(), 0);
    let batch = vec![owed("oncall", 1), owed("oncall", 2), owed("audit", 2)];
    a.enqueue(batch.clone(), 40, 1_000).await.unwrap();
    b.enqueue(batch, 40, 1_000).await.unwrap();
    b.enqueue(vec![owed("oncall", 3)], 50, 1_000).await.unwrap();
    // A slower scanner that read less moves nothing back.
    a.enqueue(vec![owed("oncall", 1)], 45, 1_000).await.unwrap();
    let c = store.handle().await;
    assert_eq!(c.cursor().await.unwrap(), 50);
    let all = c.list(None).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(all.len(), 4, "{ids:?}");
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        4,
        "no delivery twice: {ids:?}"
    );
    assert_eq!(all[0].id, owed("oncall", 1).id, "oldest first");
    assert!(
        all.iter()
            .all(|d| d.status == "pending" && d.attempts.is_empty())
    );
    let one = c.list(Some("gate-2".into())).await.unwrap();
    assert_eq!(one.len(), 2);
    assert!(one.iter().all(|d| d.gate_id == "gate-2"));
}

/// Two claims at once never return the same delivery; a leased delivery is claimed by nobody
/// until its lease runs out, then by anyone, under the same id and with its attempts counted.
async fn a_lease_keeps_a_delivery_from_every_other_claim(store: Store) {
    let (a, b) = (store.handle().await, store.handle().await);
    let batch: Vec<NewDelivery> = (1..=20).map(|n| owed("oncall", n)).collect();
    a.enqueue(batch, 20, 1_000).await.unwrap();
    a.enqueue(vec![owed("elsewhere", 99)], 20, 1_000)
        .await
        .unwrap();

    let (x, y) = tokio::join!(
        a.claim(hooks(), 1_000, 5_000, 8),
        b.claim(hooks(), 1_000, 5_000, 8)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    let ids = |c: &[keel_runtime::notify::store::Claimed]| -> BTreeSet<String> {
        c.iter().map(|c| c.id.clone()).collect()
    };
    assert_eq!(x.len() + y.len(), 16);
    assert!(ids(&x).is_disjoint(&ids(&y)), "{x:?}\n{y:?}");
    // The four left, and nothing of a webhook this process does not send to.
    let rest = b.claim(hooks(), 1_000, 5_000, 16).await.unwrap();
    assert_eq!(rest.len(), 4, "{rest:?}");
    assert!(rest.iter().all(|c| c.webhook == "oncall"));
    // Everything is leased until 6 000.
    assert!(a.claim(hooks(), 5_999, 5_000, 16).await.unwrap().is_empty());

    // One of them fails; its retry is due at 2 000, but its holder's record released it.
    let first = x.first().unwrap().clone();
    a.record(
        first.id.clone(),
        Some(attempt(1, 500)),
        Next::RetryAt(2_000),
    )
    .await
    .unwrap();
    assert!(b.claim(hooks(), 1_999, 5_000, 16).await.unwrap().is_empty());
    let retried = b.claim(hooks(), 2_000, 5_000, 16).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].id, first.id, "the same Keel-Delivery id");
    assert_eq!(retried[0].attempts, 1, "attempts made so far");

    // A holder that died: its leases run out and the others claim them (6 000 and after).
    let again = a.claim(hooks(), 6_000, 5_000, 32).await.unwrap();
    assert_eq!(again.len(), 19, "{again:?}");
    assert!(!ids(&again).contains(&first.id), "still leased by b");
}

/// Every outcome is recorded with its attempts, in order, and survives the handle; a delivered,
/// failed or skipped delivery is never claimed again.
async fn outcomes_and_attempts_are_recorded(store: Store) {
    let a = store.handle().await;
    a.enqueue((1..=3).map(|n| owed("oncall", n)).collect(), 3, 0)
        .await
        .unwrap();
    let [d1, d2, d3] =
        <[NewDelivery; 3]>::try_from((1..=3).map(|n| owed("oncall", n)).collect::<Vec<_>>())
            .unwrap();
    a.claim(hooks(), 0, 1_000, 16).await.unwrap();
    a.record(d1.id.clone(), Some(attempt(1, 500)), Next::RetryAt(0))
        .await
        .unwrap();
    a.claim(hooks(), 0, 1_000, 16).await.unwrap();
    a.record(d1.id.clone(), Some(attempt(2, 200)), Next::Delivered)
        .await
        .unwrap();
    a.record(d2.id.clone(), Some(attempt(1, 503)), Next::Failed)
        .await
        .unwrap();
    a.record(
        d3.id.clone(),
        None,
        Next::Skipped("the gate was decided first".into()),
    )
    .await
    .unwrap();
    drop(a);

    let b = store.handle().await;
    assert!(
        b.claim(hooks(), 10_000, 1_000, 16)
            .await
            .unwrap()
            .is_empty()
    );
    let all = b.list(None).await.unwrap();
    let get = |id: &str| all.iter().find(|d| d.id == id).unwrap();
    let one = get(&d1.id);
    assert_eq!(one.status, "delivered");
    assert_eq!(
        one.attempts
            .iter()
            .map(|a| (a.n, a.http_status))
            .collect::<Vec<_>>(),
        vec![(1, Some(500)), (2, Some(200))]
    );
    assert!(one.attempts[0].error.as_deref().unwrap().contains("500"));
    assert_eq!(one.attempts[1].error, None);
    assert_eq!(one.attempts[1].latency_ms, 7);
    assert_eq!(one.attempts[1].at, "2026-11-27T20:00:02Z");
    assert_eq!(get(&d2.id).status, "failed");
    let three = get(&d3.id);
    assert_eq!(three.status, "skipped");
    assert_eq!(three.detail.as_deref(), Some("the gate was decided first"));
    assert!(three.attempts.is_empty());
}

macro_rules! on_every_backend {
    ($($check:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (store, _guard) = super::sqlite();
                    super::$check(store).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (store, _guard) = super::pg().await;
                    super::$check(store).await;
                }
            )*
        }
    };
}

on_every_backend!(
    owed_once_and_the_cursor_never_goes_back,
    a_lease_keeps_a_delivery_from_every_other_claim,
    outcomes_and_attempts_are_recorded,
);

/// A server that drops the store's session (a restart, a failover, an idle timeout) costs at
/// most the operation under way: the next one opens a new session and finds everything there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_deliveries_reconnect_when_the_server_drops_their_session() {
    let (store, _guard) = pg().await;
    let Store::Pg(url) = &store else {
        unreachable!("a PostgreSQL store")
    };
    let d = store.handle().await;
    d.enqueue(vec![owed("oncall", 1)], 7, 0).await.unwrap();
    let (admin, _) = keel_spine::postgres::connect_session(url).await.unwrap();
    let others = "SELECT pid FROM pg_stat_activity
                  WHERE datname = current_database() AND pid <> pg_backend_pid()";
    admin
        .execute(
            &format!("SELECT pg_terminate_backend(pid) FROM ({others}) AS s"),
            &[],
        )
        .await
        .unwrap();
    // Until the server has ended them (a bounded wait for the server, not a timing check).
    for _ in 0..500 {
        if admin.query(others, &[]).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut failed = 0;
    let cursor = loop {
        match d.cursor().await {
            Ok(c) => break c,
            Err(e) => {
                failed += 1;
                assert!(failed < 2, "the session was not re-opened: {e}");
            }
        }
    };
    eprintln!("operations refused after the session was dropped: {failed}");
    assert_eq!(cursor, 7);
    assert_eq!(d.list(None).await.unwrap().len(), 1);
}
