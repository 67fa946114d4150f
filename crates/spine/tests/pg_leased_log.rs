//! `LeasedLog`, a worker's view of the shared PostgreSQL spine through its leases, as two workers
//! (two handles, two owners) on one real PostgreSQL use it: they split the unfinished executions
//! between them, never drive each other's, and a stalled worker's late append after a takeover
//! is refused and stores nothing.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use keel_memory::pgserver::PgServer;
use keel_spine::lease::LeasedLog;
use keel_spine::{EventLog, PgEventLog, PgOptions, SpineError};
use keel_testkit::ExecBuilder;
use keel_testkit::builder::exec_id;
use std::sync::Arc;
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_split_the_work_and_a_stalled_one_is_fenced() {
    let server = PgServer::start().unwrap();
    let url = server.create_database("keel").await.unwrap();
    let a_log = Arc::new(
        PgEventLog::connect(&url, PgOptions::default())
            .await
            .unwrap(),
    );
    let b_log = Arc::new(
        PgEventLog::connect(&url, PgOptions::default())
            .await
            .unwrap(),
    );
    // Six executions started by a process that has gone (no lease held).
    for n in 0..6 {
        let started = ExecBuilder::new(exec_id(n), if n % 2 == 0 { "acme" } else { "globex" })
            .started("g")
            .build();
        a_log.append(exec_id(n), 0, &started).await.unwrap();
    }
    // Worker A's leases last no time at all: it "stalls" at once.
    let a = LeasedLog::new(a_log.clone(), "worker-a", Duration::ZERO, 3);
    let b = LeasedLog::new(b_log.clone(), "worker-b", HOUR, 100);
    let mine_a = a.list_unfinished().await.unwrap();
    assert_eq!(mine_a.len(), 3, "{mine_a:?}");
    let tenants: Vec<_> = mine_a.iter().map(|s| s.tenant.as_str()).collect();
    assert!(
        tenants.contains(&"acme") && tenants.contains(&"globex"),
        "a claim is shared between tenants: {tenants:?}"
    );
    // B claims the other three, and A's (expired) three: a dead worker's work moves on.
    let mine_b = b.list_unfinished().await.unwrap();
    assert_eq!(mine_b.len(), 6, "{mine_b:?}");
    let victim = mine_a[0].exec_id;
    let tenant = mine_a[0].tenant.as_str();
    let late = ExecBuilder::new(victim, tenant)
        .resume_at(1, 0)
        .plan()
        .build();
    let err = a.append(victim, 1, &late).await.unwrap_err();
    assert!(matches!(err, SpineError::LeaseLost { .. }), "{err:?}");
    assert_eq!(
        a_log.read(victim, 1).await.unwrap().len(),
        1,
        "nothing stored"
    );
    assert!(
        a.heartbeat().await.unwrap().len() >= 2,
        "A learns it lost the rest"
    );
    assert!(a.held().is_empty());
    // B drives it on from the same seq; A cannot take it back while B's lease lives.
    b.append(victim, 1, &late).await.unwrap();
    let again = ExecBuilder::new(victim, tenant)
        .resume_at(2, 0)
        .plan()
        .build();
    assert!(matches!(
        a.append(victim, 2, &again).await.unwrap_err(),
        SpineError::LeaseLost { .. }
    ));
    // A new execution started through a view is held by it from its first event.
    let fresh = ExecBuilder::new(exec_id(50), "acme").started("g").build();
    b.append(exec_id(50), 0, &fresh).await.unwrap();
    assert!(b.held().iter().any(|l| l.exec_id == exec_id(50)));
    assert!(
        a.list_unfinished().await.unwrap().is_empty(),
        "nothing free"
    );
    assert!(b.heartbeat().await.unwrap().is_empty());
    b.release_all().await.unwrap();
    let after = LeasedLog::new(a_log.clone(), "worker-c", HOUR, 100);
    assert_eq!(after.list_unfinished().await.unwrap().len(), 7);
}

/// Side writes ride a fenced append (a worker's `LeasedLog` passes them on): a keyed call's
/// ledger `begin` commits with its intent under the lease, and a stalled worker's late append,
/// refused by the epoch, applies none of its side writes; the new owner's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_append_carries_its_side_writes_and_a_refused_one_applies_none() {
    use keel_spine::Leases;
    use keel_spine::side::{SideAnswer, SideWrite};
    let server = PgServer::start().unwrap();
    let url = server.create_database("keel").await.unwrap();
    let log = PgEventLog::connect(&url, PgOptions::default())
        .await
        .unwrap();
    let begin = |key: &str| SideWrite::LedgerBegin {
        tenant: "acme".into(),
        key: key.into(),
        tool: "refund".into(),
        exec_id: exec_id(300).to_string(),
        call_id: format!("call-{key}"),
        now: "2026-11-27T12:00:00Z".into(),
    };
    let exec = exec_id(300);
    let a = log
        .acquire(exec, "acme", "a", Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    let mut b = ExecBuilder::new(exec, "acme").started("g");
    let done = log
        .append_leased_with(&a, 0, &b.take(), vec![begin("k1")], true)
        .await
        .unwrap();
    assert_eq!(done.answers, vec![SideAnswer::Begun]);
    // `a` expired at once (ttl 0): another worker claims the execution.
    let taken = log.claim("b", HOUR, 10).await.unwrap();
    assert_eq!(taken.len(), 1, "{taken:?}");
    let late = b.plan().build();
    let refused = log
        .append_leased_with(&a, 1, &late, vec![begin("k2")], true)
        .await;
    assert!(
        matches!(refused, Err(SpineError::LeaseLost { .. })),
        "{refused:?}"
    );
    assert_eq!(log.ledger_entry("acme", "k2").await.unwrap(), None);
    let done = log
        .append_leased_with(&taken[0], 1, &late, vec![begin("k2")], true)
        .await
        .unwrap();
    assert_eq!(done.answers, vec![SideAnswer::Begun]);
    assert_eq!(
        log.ledger_entry("acme", "k1").await.unwrap().unwrap().state,
        "started"
    );
}
