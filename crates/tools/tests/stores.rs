//! The idempotency ledger's and the shared rate budgets' contracts (fast rates taken in blocks
//! included), checked on every backend: the spine's SQLite file and a real PostgreSQL (started
//! per test). Each check uses two handles on one store, as two processes (or machines) would.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use keel_core::Cost;
use keel_core::payload::ToolStatus;
use keel_memory::pgserver::PgServer;
use keel_spine::{PgEventLog, PgOptions, SqliteLog, SqliteOptions};
use keel_tools::budget::RateStore;
use keel_tools::contract::Rate;
use keel_tools::ledger::{Begin, Ledger, LedgerOutcome, LedgerStart, LedgerState};
use keel_tools::pg::{PgLedger, PgRates};
use keel_tools::{SqliteLedger, SqliteRates};
use std::sync::Arc;
use std::time::Duration;

/// What keeps a store alive for the test: a temporary directory or a PostgreSQL server.
#[allow(dead_code)] // held, never read: dropping it removes the store
enum Guard {
    _Dir(tempfile::TempDir),
    _Pg(PgServer),
}

type Ledgers = (Arc<dyn Ledger>, Arc<dyn Ledger>, Guard);
type Rates = (Arc<dyn RateStore>, Arc<dyn RateStore>, Guard);

async fn sqlite_ledgers() -> Ledgers {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spine.db");
    drop(SqliteLog::open(&path, SqliteOptions::default()).unwrap());
    let a = Arc::new(SqliteLedger::open(&path).unwrap());
    let b = Arc::new(SqliteLedger::open(&path).unwrap());
    (a, b, Guard::_Dir(dir))
}

async fn pg_url() -> (String, PgServer) {
    let server = PgServer::start().unwrap();
    let url = server.create_database("keel").await.unwrap();
    // The spine's migrations create the ledger's and the rates' tables.
    drop(
        PgEventLog::connect(&url, PgOptions::default())
            .await
            .unwrap(),
    );
    (url, server)
}

async fn pg_ledgers() -> Ledgers {
    let (url, server) = pg_url().await;
    let a = Arc::new(PgLedger::connect(&url).await.unwrap());
    let b = Arc::new(PgLedger::connect(&url).await.unwrap());
    (a, b, Guard::_Pg(server))
}

async fn sqlite_rates() -> Rates {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spine.db");
    drop(SqliteLog::open(&path, SqliteOptions::default()).unwrap());
    let a = Arc::new(SqliteRates::open(&path).unwrap());
    let b = Arc::new(SqliteRates::open(&path).unwrap());
    (a, b, Guard::_Dir(dir))
}

async fn pg_rates() -> Rates {
    let (url, server) = pg_url().await;
    let a = Arc::new(PgRates::connect(&url).await.unwrap());
    let b = Arc::new(PgRates::connect(&url).await.unwrap());
    (a, b, Guard::_Pg(server))
}

fn start<'a>(tenant: &'a str, key: &'a str, call_id: &'a str) -> LedgerStart<'a> {
    LedgerStart {
        tenant,
        key,
        tool: "refund",
        exec_id: "01900000-0000-7000-8000-0000000000aa",
        call_id,
        now: "2026-11-27T12:00:00Z",
    }
}

/// Sixteen concurrent begins on one key over two handles: exactly one owns the call; a finished
/// key is answered from the ledger with its outcome; a released key begins again; tenants never
/// share keys.
async fn ledger_contract((a, b, _guard): Ledgers) {
    let mut tasks = Vec::new();
    for i in 0..16 {
        let l = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let call = format!("c{i}");
            l.begin(&start("acme", "k1", &call)).await.unwrap()
        }));
    }
    let mut started = 0;
    for t in tasks {
        match t.await.unwrap() {
            Begin::Started => started += 1,
            Begin::Existing(e) => assert_eq!(e.state, LedgerState::Started),
        }
    }
    assert_eq!(started, 1, "exactly one begin owns the key");
    let outcome = LedgerOutcome {
        status: ToolStatus::Ok,
        output_ref: Some(format!("sha256:{}", "ab".repeat(32))),
        actual_cost: Cost::Known(1_250),
    };
    a.finish("acme", "k1", &outcome, "2026-11-27T12:00:01Z")
        .await
        .unwrap();
    match b.begin(&start("acme", "k1", "again")).await.unwrap() {
        Begin::Existing(e) => {
            assert_eq!(e.state, LedgerState::Finished);
            assert_eq!(e.outcome, Some(outcome.clone()));
            assert_eq!(e.tool, "refund");
        }
        Begin::Started => panic!("a finished key must not begin again"),
    }
    assert_eq!(
        b.begin(&start("globex", "k1", "theirs")).await.unwrap(),
        Begin::Started,
        "another tenant's key of the same name is its own"
    );
    a.begin(&start("acme", "k2", "x")).await.unwrap();
    b.release("acme", "k2").await.unwrap();
    assert_eq!(a.get("acme", "k2").await.unwrap(), None);
    assert_eq!(
        a.begin(&start("acme", "k2", "y")).await.unwrap(),
        Begin::Started
    );
}

/// A burst of five per minute, twenty concurrent takes at one instant over two handles: exactly
/// five are admitted; one interval later exactly one more; another tenant has its own budget.
async fn rates_contract((a, b, _guard): Rates) {
    let rate = Rate {
        calls: 5,
        per: Duration::from_secs(60),
    };
    let now: i64 = 1_780_000_000_000_000;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let r = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            r.take("refund", "acme", rate, now).await.unwrap()
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);
    let refused = a.take("refund", "acme", rate, now).await.unwrap();
    assert!(refused.unwrap_err().contains("rate budget exhausted"));
    let later = now + 12_000_000;
    assert!(b.take("refund", "acme", rate, later).await.unwrap().is_ok());
    assert!(
        a.take("refund", "acme", rate, later)
            .await
            .unwrap()
            .is_err()
    );
    assert!(a.take("refund", "globex", rate, now).await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_on_sqlite() {
    ledger_contract(sqlite_ledgers().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_on_postgres() {
    ledger_contract(pg_ledgers().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_on_sqlite() {
    rates_contract(sqlite_rates().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_on_postgres() {
    rates_contract(pg_rates().await).await;
}

/// Where a test reads a rate's row back: the spine's SQLite file or the PostgreSQL database.
enum Rows {
    Sqlite(std::path::PathBuf),
    Pg(String),
}

impl Rows {
    /// The stored theoretical arrival time of (tenant, tool), µs.
    async fn tat(&self, tenant: &str, tool: &str) -> i64 {
        match self {
            Rows::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(
                    "SELECT tat_us FROM tool_rates WHERE tenant = ?1 AND tool = ?2",
                    [tenant, tool],
                    |r| r.get(0),
                )
                .unwrap(),
            Rows::Pg(url) => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                let task = tokio::spawn(conn);
                let row = client
                    .query_one(
                        "SELECT tat_us FROM keel_spine.tool_rates WHERE tenant = $1 AND tool = $2",
                        &[&tenant, &tool],
                    )
                    .await
                    .unwrap();
                drop(client);
                task.await.unwrap().unwrap();
                row.get(0)
            }
        }
    }
}

/// Two handles (as two processes) on one spine take a fast rate (1 000 per second, so blocks
/// of 50 permits) on a simulated clock, each asking at its own pace: every window of the
/// permits they used together holds what the rate allows with no blocks (burst 1 000, one more
/// per millisecond).
async fn rate_blocks_contract((a, b, _guard): Rates, rows: Rows) {
    let rate = Rate {
        calls: 1_000,
        per: Duration::from_secs(1),
    };
    assert_eq!(keel_tools::budget::block_size(rate), 50);
    let start: i64 = 1_780_000_000_000_000;
    let mut used = Vec::new();
    // 3 s: a asks every 300 µs, b every 700 µs (together ~4.8 per ms, far over the rate).
    let (mut ta, mut tb) = (start, start);
    while ta.min(tb) < start + 3_000_000 {
        let (r, t) = if ta <= tb {
            ta += 300;
            (&a, ta - 300)
        } else {
            tb += 700;
            (&b, tb - 700)
        };
        if r.take("lookup", "acme", rate, t).await.unwrap().is_ok() {
            used.push(t);
        }
    }
    // Both pace far over the rate: well over the sustained 1 per ms is used, never more than
    // GCRA allows in any window.
    assert!(used.len() > 3_000, "used {}", used.len());
    holds_the_rate(&mut used, rate);
    let interval = 1_000;
    // The row's arrival time accounts for every permit handed out (and the lost ones).
    let tat = rows.tat("acme", "lookup").await;
    assert!(
        (tat - start) / interval >= i64::try_from(used.len()).unwrap(),
        "the spine's row counts fewer permits than were used"
    );

    // The edge a block could cross: on a full budget, a takes a block with one call and uses the
    // rest of it 49 ms later, at the instant b asks for far more than the whole burst.
    let mut used = Vec::new();
    let late = start + 49_000;
    let asks = std::iter::once((&a, start))
        .chain(std::iter::repeat_n((&a, late), 49))
        .chain(std::iter::repeat_n((&b, late), 1_100));
    for (r, t) in asks {
        if r.take("lookup", "globex", rate, t).await.unwrap().is_ok() {
            used.push(t);
        }
    }
    assert!(used.len() > 900, "used {}", used.len());
    holds_the_rate(&mut used, rate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_blocks_on_sqlite_never_exceed_the_rate_in_any_window() {
    let rates = sqlite_rates().await;
    let Guard::_Dir(dir) = &rates.2 else {
        unreachable!("a SQLite store lives in a directory")
    };
    let rows = Rows::Sqlite(dir.path().join("spine.db"));
    rate_blocks_contract(rates, rows).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_blocks_on_postgres_never_exceed_the_rate_in_any_window() {
    let (url, server) = pg_url().await;
    let a = Arc::new(PgRates::connect(&url).await.unwrap());
    let b = Arc::new(PgRates::connect(&url).await.unwrap());
    rate_blocks_contract((a, b, Guard::_Pg(server)), Rows::Pg(url)).await;
}

/// Every window [used[i], used[j]] holds at most what GCRA admits in it: the burst, plus one per
/// interval of its length.
fn holds_the_rate(used: &mut [i64], rate: Rate) {
    used.sort_unstable();
    let interval = i64::try_from(rate.per.as_micros()).unwrap() / i64::from(rate.calls);
    for i in 0..used.len() {
        for j in i..used.len() {
            let allowed = (used[j] - used[i]) / interval + i64::from(rate.calls);
            let count = i64::try_from(j - i + 1).unwrap();
            assert!(
                count <= allowed,
                "{count} permits used in {} µs, the rate allows {allowed}",
                used[j] - used[i]
            );
        }
    }
}

/// A clock the test moves by hand, µs since the Unix epoch.
struct Manual(std::sync::atomic::AtomicI64);

impl keel_spine::clock::Clock for Manual {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        let us = self.0.load(std::sync::atomic::Ordering::SeqCst);
        chrono::DateTime::from_timestamp_micros(us).unwrap()
    }
}

/// What a runner on one backend's spine is wired with: the spine, its ledger and rate store on
/// the same handle (so their writes ride in the call's appends), and the count of the writer's
/// commits so far.
struct OnSpine {
    log: Arc<dyn keel_spine::EventLog>,
    ledger: Arc<dyn Ledger>,
    rates: Arc<dyn RateStore>,
    groups: Box<dyn Fn() -> u64 + Send + Sync>,
}

/// A runner whose spine carries the rate take of a side effect in the append of its intent
/// takes a fast rate (100 per second: blocks of 5) in blocks there too: the first call's intent
/// carries a block, the next four carry nothing and cost no more commits; at the end of the
/// burst a refused block still leaves the single permits left, taken on their own (the key then
/// begins on its own, and the call runs once); the rate holds.
async fn runner_rides_blocks(on: OnSpine, rows: Rows, dir: &std::path::Path) {
    use keel_core::payload::{Budget, ExecStarted};
    use keel_core::{ExecutionState, Payload};
    use keel_tools::{CallContext, CallOutcome, Registry, ToolRunner, Wiring};
    use std::sync::atomic::Ordering;

    let shop = keel_tools::shop::Shop::open(dir.join("shop.db")).unwrap();
    let builtins = shop.builtins();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools");
    let notify = std::fs::read_to_string(repo.join("notify_team.yaml")).unwrap();
    assert!(notify.contains("rate: 10/min"));
    let fast = notify
        .replace("name: notify_team", "name: notify_fast")
        .replace("rate: 10/min", "rate: 100/s");
    let registry = Registry::from_sources(
        &[(dir.join("notify_fast.yaml"), fast)],
        Some(&builtins.names()),
    )
    .unwrap();
    let start: i64 = 1_780_000_000_000_000;
    let clock = Arc::new(Manual(start.into()));
    let runner = ToolRunner::new(
        registry,
        Wiring {
            log: on.log.clone(),
            blobs: Arc::new(keel_spine::LocalBlobStore::new(dir.join("blobs"))),
            ledger: on.ledger.clone(),
            rates: on.rates.clone(),
            clock: clock.clone(),
            builtins,
            secrets: keel_core::secrets::none(),
        },
    )
    .unwrap();
    let mut b = keel_testkit::ExecBuilder::new(keel_spine::clock::new_exec_id(), "acme");
    b.push(Payload::ExecStarted(ExecStarted {
        goal: "tell the team".into(),
        strategy_version: "test".into(),
        budget: Budget::default(),
        experiment_arm: None,
        replay_of: None,
        experiment: None,
    }));
    let events = b.build();
    on.log.append(events[0].exec_id, 0, &events).await.unwrap();
    let mut state = ExecutionState::fold(&events).unwrap();
    let mut n = 0;
    let mut call = async |state: &mut ExecutionState| {
        n += 1;
        let ctx = CallContext::from_state(state).unwrap();
        let args = serde_json::json!({"channel": "support", "message": format!("update {n}")});
        let report = runner.call(&ctx, "notify_fast", args).await.unwrap();
        for e in &report.events {
            state.apply_mut(e).unwrap();
        }
        (report.outcome, report.idempotency_key)
    };

    // The first call's intent carries a block of 5 (50 ms of the rate).
    let before = (on.groups)();
    let (outcome, _) = call(&mut state).await;
    assert!(matches!(outcome, CallOutcome::Ok { .. }), "{outcome:?}");
    let first = (on.groups)() - before;
    assert_eq!(rows.tat("acme", "notify_fast").await, start + 50_000);
    // The next four use the block: nothing rides, no commit is added, the row does not move.
    for _ in 0..4 {
        let before = (on.groups)();
        let (outcome, _) = call(&mut state).await;
        assert!(matches!(outcome, CallOutcome::Ok { .. }), "{outcome:?}");
        assert_eq!((on.groups)() - before, first);
    }
    assert_eq!(rows.tat("acme", "notify_fast").await, start + 50_000);
    // The burst, in the same instant: blocks while one fits inside the cut tolerance (19 blocks
    // of 5, where the rate's burst is 100), then refused.
    let mut used = vec![start; 5];
    loop {
        match call(&mut state).await.0 {
            CallOutcome::Ok { .. } => used.push(start),
            CallOutcome::Refused { reason } => {
                assert!(reason.contains("rate budget exhausted"), "{reason}");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(used.len(), 95);
    // 30 ms on, a block does not fit but single permits do: each is taken on its own after the
    // intent's block was refused, and its key begins on its own.
    let later = start + 30_000;
    clock.0.store(later, Ordering::SeqCst);
    loop {
        match call(&mut state).await {
            (CallOutcome::Ok { .. }, key) => {
                used.push(later);
                let entry = on.ledger.get("acme", &key.unwrap()).await.unwrap().unwrap();
                assert_eq!(entry.state, keel_tools::ledger::LedgerState::Finished);
            }
            (CallOutcome::Refused { .. }, _) => break,
            (other, _) => panic!("{other:?}"),
        }
    }
    assert_eq!(used.len(), 98);
    assert_eq!(shop.count("notifications").unwrap(), 98);
    holds_the_rate(
        &mut used,
        Rate {
            calls: 100,
            per: Duration::from_secs(1),
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_on_the_sqlite_spine_rides_its_rate_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spine.db");
    let log = SqliteLog::open(&path, SqliteOptions::default()).unwrap();
    let groups = log.clone();
    let on = OnSpine {
        log: Arc::new(log.clone()),
        ledger: Arc::new(SqliteLedger::on(&log)),
        rates: Arc::new(SqliteRates::on(&log)),
        groups: Box::new(move || {
            groups
                .stats()
                .groups
                .load(std::sync::atomic::Ordering::SeqCst)
        }),
    };
    runner_rides_blocks(on, Rows::Sqlite(path), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_on_the_postgres_spine_rides_its_rate_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _server) = pg_url().await;
    let log = PgEventLog::connect(&url, PgOptions::default())
        .await
        .unwrap();
    let groups = log.clone();
    let on = OnSpine {
        log: Arc::new(log.clone()),
        ledger: Arc::new(PgLedger::on(&log)),
        rates: Arc::new(PgRates::on(&log)),
        groups: Box::new(move || {
            groups
                .stats()
                .groups
                .load(std::sync::atomic::Ordering::SeqCst)
        }),
    };
    runner_rides_blocks(on, Rows::Pg(url), dir.path()).await;
}

/// A spine handle, to commit a take the way a runner's append would carry it.
enum Spine {
    Sqlite(SqliteLog),
    Pg(PgEventLog),
}

impl Spine {
    async fn carry(&self, take: keel_spine::side::SideWrite) -> keel_spine::side::SideAnswer {
        let answers = match self {
            Spine::Sqlite(log) => log.write_side(vec![take], false).await.unwrap(),
            Spine::Pg(log) => log.write_side(vec![take], false).await.unwrap(),
        };
        answers.into_iter().next().unwrap()
    }
}

/// Two tasks of one process that find the handle's blocks empty at once each carry a block
/// (1 000 per second: 50 permits); the handle keeps both, so all 98 permits left are handed out
/// before the row moves again, none thrown away.
async fn racing_refills_keep_both_blocks(rates: Arc<dyn RateStore>, spine: Spine, rows: Rows) {
    use keel_spine::side::SideAnswer;
    use keel_tools::budget::Ride;
    let rate = Rate {
        calls: 1_000,
        per: Duration::from_secs(1),
    };
    let start: i64 = 1_780_000_000_000_000;
    let (Ride::Carry(first), Ride::Carry(second)) = (
        rates.ride("lookup", "acme", rate, start),
        rates.ride("lookup", "acme", rate, start),
    ) else {
        panic!("a handle with no block carries a take")
    };
    for take in [first, second] {
        assert_eq!(spine.carry(take).await, SideAnswer::Admitted);
        let decided = rates.ridden("lookup", "acme", rate, start, true).await;
        assert!(decided.unwrap().is_ok());
    }
    assert_eq!(rows.tat("acme", "lookup").await, start + 100_000);
    let now = start + 1_000;
    for i in 0..98 {
        let taken = rates.take("lookup", "acme", rate, now).await.unwrap();
        assert!(taken.is_ok(), "permit {i}: {taken:?}");
    }
    assert_eq!(rows.tat("acme", "lookup").await, start + 100_000);
    assert!(
        rates
            .take("lookup", "acme", rate, now)
            .await
            .unwrap()
            .is_ok()
    );
    assert_eq!(rows.tat("acme", "lookup").await, start + 150_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_refills_on_sqlite_keep_both_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spine.db");
    let log = SqliteLog::open(&path, SqliteOptions::default()).unwrap();
    let rates = Arc::new(SqliteRates::on(&log));
    racing_refills_keep_both_blocks(rates, Spine::Sqlite(log), Rows::Sqlite(path)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_refills_on_postgres_keep_both_blocks() {
    let (url, _server) = pg_url().await;
    let log = PgEventLog::connect(&url, PgOptions::default())
        .await
        .unwrap();
    let rates = Arc::new(PgRates::on(&log));
    racing_refills_keep_both_blocks(rates, Spine::Pg(log), Rows::Pg(url)).await;
}
