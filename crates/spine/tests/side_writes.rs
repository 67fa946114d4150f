//! Side writes in the spine's group commit (`keel_spine::side`), on both backends (SQLite, and a
//! real PostgreSQL started per test): ledger rows and rate takes ride in an append's
//! transaction, answer in its ack, and follow its fate; a refused rate take refuses nothing else;
//! requests of side writes only; two handles on one store (two processes) share the rows.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use async_trait::async_trait;
use keel_memory::pgserver::PgServer;
use keel_spine::side::{LedgerRow, SideAnswer, SideWrite};
use keel_spine::{EventLog, PgEventLog, PgOptions, SpineError, SqliteLog, SqliteOptions};
use keel_testkit::ExecBuilder;
use keel_testkit::builder::exec_id;

/// What the suite needs of a backend beyond `EventLog`: its side-write-only requests, the
/// ledger's rows, and its writer's group count.
#[async_trait]
trait Side: EventLog + Clone + 'static {
    async fn write_side(
        &self,
        side: Vec<SideWrite>,
        durable: bool,
    ) -> Result<Vec<SideAnswer>, SpineError>;
    async fn ledger_entry(&self, tenant: &str, key: &str) -> Result<Option<LedgerRow>, SpineError>;
    fn groups(&self) -> u64;
}

#[async_trait]
impl Side for SqliteLog {
    async fn write_side(
        &self,
        side: Vec<SideWrite>,
        durable: bool,
    ) -> Result<Vec<SideAnswer>, SpineError> {
        SqliteLog::write_side(self, side, durable).await
    }
    async fn ledger_entry(&self, tenant: &str, key: &str) -> Result<Option<LedgerRow>, SpineError> {
        SqliteLog::ledger_entry(self, tenant, key).await
    }
    fn groups(&self) -> u64 {
        self.stats()
            .groups
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait]
impl Side for PgEventLog {
    async fn write_side(
        &self,
        side: Vec<SideWrite>,
        durable: bool,
    ) -> Result<Vec<SideAnswer>, SpineError> {
        PgEventLog::write_side(self, side, durable).await
    }
    async fn ledger_entry(&self, tenant: &str, key: &str) -> Result<Option<LedgerRow>, SpineError> {
        PgEventLog::ledger_entry(self, tenant, key).await
    }
    fn groups(&self) -> u64 {
        self.stats()
            .groups
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Two handles on one fresh SQLite file, and the guard that keeps it.
fn sqlite_pair() -> (SqliteLog, SqliteLog, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spine.db");
    let a = SqliteLog::open(&path, SqliteOptions::default()).unwrap();
    let b = SqliteLog::open(&path, SqliteOptions::default()).unwrap();
    (a, b, dir)
}

/// Two handles (each its own writer and connections, as two processes) on one fresh database.
async fn pg_pair() -> (PgEventLog, PgEventLog, PgServer) {
    let server = PgServer::start().unwrap();
    let url = server.create_database("keel").await.unwrap();
    let a = PgEventLog::connect(&url, PgOptions::default())
        .await
        .unwrap();
    let b = PgEventLog::connect(&url, PgOptions::default())
        .await
        .unwrap();
    (a, b, server)
}

macro_rules! on_both {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (a, b, _guard) = super::sqlite_pair();
                    super::$check(a, b).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (a, b, _guard) = super::pg_pair().await;
                    super::$check(a, b).await;
                }
            )*
        }
    };
}

on_both!(
    a_ledger_begin_rides_an_append_and_follows_its_fate,
    a_refused_rate_take_skips_what_follows_it_but_not_the_events,
    two_handles_on_one_store_share_the_rows,
    a_refused_append_in_a_group_applies_none_of_its_side_writes,
);

fn begin(key: &str, call: &str) -> SideWrite {
    SideWrite::LedgerBegin {
        tenant: "acme".into(),
        key: key.into(),
        tool: "refund".into(),
        exec_id: exec_id(1).to_string(),
        call_id: call.into(),
        now: "2026-11-27T12:00:00Z".into(),
    }
}

fn take(tenant: &str, now_us: i64) -> SideWrite {
    // A burst of two, then one per second.
    SideWrite::RateTake {
        tenant: tenant.into(),
        tool: "refund".into(),
        interval_us: 1_000_000,
        tolerance_us: 1_000_000,
        now_us,
    }
}

async fn a_ledger_begin_rides_an_append_and_follows_its_fate<L: Side>(log: L, _other: L) {
    let started = ExecBuilder::new(exec_id(1), "acme").started("g").build();
    let groups = || log.groups();
    let before = groups();
    let done = log
        .append_with(exec_id(1), 0, &started, vec![begin("k1", "c1")], false)
        .await
        .unwrap();
    assert_eq!(done.answers, vec![SideAnswer::Begun]);
    assert_eq!(done.ack.unwrap().last_seq, 1);
    assert_eq!(
        groups() - before,
        1,
        "the events and the ledger row are one commit"
    );
    let row = log.ledger_entry("acme", "k1").await.unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.call_id.as_str()),
        ("started", "c1")
    );

    // A stale append is refused, and its side writes with it.
    let again = ExecBuilder::new(exec_id(1), "acme").started("g").build();
    let refused = log
        .append_with(exec_id(1), 0, &again, vec![begin("k2", "c2")], true)
        .await;
    assert!(
        matches!(refused, Err(SpineError::Conflict { .. })),
        "{refused:?}"
    );
    assert_eq!(log.ledger_entry("acme", "k2").await.unwrap(), None);

    // A second begin of the same key finds the first and writes nothing.
    let answers = log.write_side(vec![begin("k1", "c3")], true).await.unwrap();
    match &answers[..] {
        [SideAnswer::Existing(row)] => assert_eq!(row.call_id, "c1"),
        other => panic!("{other:?}"),
    }
    let finish = SideWrite::LedgerFinish {
        tenant: "acme".into(),
        key: "k1".into(),
        now: "2026-11-27T12:00:01Z".into(),
        status: "ok".into(),
        output_ref: Some("sha256:ab".into()),
        actual_cost: Some(7),
    };
    assert_eq!(
        log.write_side(vec![finish], true).await.unwrap(),
        vec![SideAnswer::Written]
    );
    let row = log.ledger_entry("acme", "k1").await.unwrap().unwrap();
    assert_eq!((row.state.as_str(), row.actual_cost), ("finished", Some(7)));
}

async fn a_refused_rate_take_skips_what_follows_it_but_not_the_events<L: Side>(log: L, _other: L) {
    let now = 1_780_000_000_000_000;
    let answers = log
        .write_side(vec![take("acme", now), take("acme", now)], false)
        .await
        .unwrap();
    assert_eq!(answers, vec![SideAnswer::Admitted, SideAnswer::Admitted]);
    let started = ExecBuilder::new(exec_id(1), "acme").started("g").build();
    let done = log
        .append_with(
            exec_id(1),
            0,
            &started,
            vec![take("acme", now), begin("k1", "c1"), take("globex", now)],
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        done.answers,
        vec![
            SideAnswer::Refused,
            SideAnswer::Skipped,
            SideAnswer::Skipped
        ]
    );
    assert_eq!(done.ack.unwrap().last_seq, 1, "the events are committed");
    assert_eq!(log.read(exec_id(1), 1).await.unwrap(), started);
    assert_eq!(log.ledger_entry("acme", "k1").await.unwrap(), None);
    // One interval later, one more.
    let later = log
        .write_side(vec![take("acme", now + 1_000_000)], false)
        .await
        .unwrap();
    assert_eq!(later, vec![SideAnswer::Admitted]);
}

/// Two handles on one store, as two processes: twenty concurrent takes of a burst of two admit
/// exactly two, and sixteen concurrent begins of one key give it to exactly one.
async fn two_handles_on_one_store_share_the_rows<L: Side>(a: L, b: L) {
    let now = 1_780_000_000_000_000;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let log = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            log.write_side(vec![take("acme", now)], false)
                .await
                .unwrap()
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        if t.await.unwrap() == vec![SideAnswer::Admitted] {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 2);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let log = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let call = format!("c{i}");
            log.write_side(vec![begin("k", &call)], true).await.unwrap()
        }));
    }
    let mut begun = 0;
    for t in tasks {
        if t.await.unwrap() == vec![SideAnswer::Begun] {
            begun += 1;
        }
    }
    assert_eq!(begun, 1);
}

/// Many appenders share groups: one with a stale seq is refused and its ledger begin is not
/// applied, while the others' events and side writes commit beside it.
async fn a_refused_append_in_a_group_applies_none_of_its_side_writes<L: Side>(log: L, _other: L) {
    let started = ExecBuilder::new(exec_id(7), "acme").started("g").build();
    log.append(exec_id(7), 0, &started).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            // Task 0 repeats execution 7's first append: refused.
            let (exec, expected) = if i == 0 { (7, 0) } else { (100 + i, 0) };
            let events = ExecBuilder::new(exec_id(exec), "acme").started("g").build();
            let mut write = begin(&format!("k{i}"), &format!("c{i}"));
            if let SideWrite::LedgerBegin { exec_id: e, .. } = &mut write {
                *e = exec_id(exec).to_string();
            }
            log.append_with(exec_id(exec), expected, &events, vec![write], true)
                .await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        let entry = log.ledger_entry("acme", &format!("k{i}")).await.unwrap();
        if i == 0 {
            assert!(matches!(r, Err(SpineError::Conflict { .. })), "{r:?}");
            assert_eq!(entry, None);
        } else {
            assert_eq!(r.unwrap().answers, vec![SideAnswer::Begun]);
            assert_eq!(entry.unwrap().state, "started");
        }
    }
}

/// A ledger opened by path in a process that already has the spine open shares its writer.
#[tokio::test]
async fn opening_by_path_shares_the_open_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spine.db");
    let log = SqliteLog::open(&path, SqliteOptions::default()).unwrap();
    let shared = SqliteLog::open_shared(&path, SqliteOptions::default()).unwrap();
    shared
        .write_side(vec![begin("k", "c")], true)
        .await
        .unwrap();
    assert_eq!(
        log.stats()
            .groups
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the shared handle's commit is the open handle's"
    );
    assert!(std::ptr::eq(log.stats(), shared.stats()), "one writer");
    // A handle that does not fsync is not shared with a caller that needs durability.
    let other = dir.path().join("other.db");
    let off = SqliteLog::open(
        &other,
        SqliteOptions {
            durability: keel_spine::Durability::Off,
        },
    )
    .unwrap();
    let full = SqliteLog::open_shared(&other, SqliteOptions::default()).unwrap();
    assert!(!std::ptr::eq(off.stats(), full.stats()));
}
