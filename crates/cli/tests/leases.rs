//! Leased workers, for real: several `keel worker` processes on one store (SQLite, and PostgreSQL
//! for the kill). One is killed with SIGKILL mid-execution and the others finish everything,
//! with every side effect done once (the test prints how soon they went on with its work);
//! one is stopped (SIGSTOP) past its lease, the others take its executions over, and when it is
//! continued its late appends are refused by the epoch, it acts on nothing and says it lost
//! the lease.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
use common::repo;
use common::workers::{DEADLINE, Worker, keel_toml, until};

use keel_core::payload::{Payload, ToolStatus, Verdict};
use keel_core::{ExecId, ExecutionState};
use keel_memory::pgserver::PgServer;
use keel_runtime::embedded::{Backends, Config, Embedded, Spine};
use keel_spine::EventLog;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The demo's long strategy (drafts, then notifies the team about a complaint: two side
/// effects per execution), paced by the worker so executions are caught mid-way.
fn config(dir: &Path) -> Config {
    let strategies = dir.join("strategies");
    std::fs::create_dir_all(&strategies).unwrap();
    let text = std::fs::read_to_string(repo().join("strategies/support-long.yaml")).unwrap();
    let text = text
        .replace("../", &format!("{}/", repo().display()))
        .replace("name: support-long", "name: lease-drill");
    std::fs::write(strategies.join("lease-drill.yaml"), text).unwrap();
    Config {
        tools: repo().join("tools"),
        strategies,
        prices: repo().join("prices.toml"),
    }
}

fn pg_url(data: &Path) -> Option<String> {
    let text = std::fs::read_to_string(keel_toml(data)?).unwrap();
    let url = text.split('"').nth(1)?;
    Some(url.to_owned())
}

/// The store's spine, as a reader outside the workers sees it.
async fn spine(data: &Path) -> Arc<dyn EventLog> {
    match pg_url(data) {
        Some(url) => Arc::new(
            keel_spine::PgEventLog::connect(&url, Default::default())
                .await
                .unwrap(),
        ),
        None => Arc::new(
            keel_spine::SqliteLog::open(data.join("spine.db"), Default::default()).unwrap(),
        ),
    }
}

/// The runtime on the store (unleased: starts and gate decisions, as another tool makes them).
async fn open(data: &Path, config: &Config) -> Embedded {
    let Some(url) = pg_url(data) else {
        return common::open(data, config);
    };
    let shop = common::shop(data);
    let backends = Backends {
        spine: Spine {
            store: Arc::new(
                keel_spine::PgEventLog::connect(&url, Default::default())
                    .await
                    .unwrap(),
            ),
            ledger: Arc::new(keel_tools::pg::PgLedger::connect(&url).await.unwrap()),
            rates: Arc::new(keel_tools::pg::PgRates::connect(&url).await.unwrap()),
        },
        drive: None,
        blobs: Arc::new(keel_spine::LocalBlobStore::new(data.join("blobs"))),
        memory: None,
        secrets: keel_core::secrets::none(),
    };
    Embedded::open_wired(data, config, backends, |b| *b = shop.builtins()).unwrap()
}

/// Unfinished executions `pid` holds a live lease on, with their last seq.
fn held_by(data: &Path, pid: u32) -> BTreeMap<String, u64> {
    if let Some(url) = pg_url(data) {
        let handle = tokio::runtime::Handle::current();
        return tokio::task::block_in_place(|| {
            handle.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                client
                    .query(
                        "SELECT exec_id, last_seq FROM keel_spine.executions
                         WHERE NOT ended AND lease_owner LIKE '%:' || $1 || ':%'",
                        &[&pid.to_string()],
                    )
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as u64))
                    .collect()
            })
        });
    }
    let db = rusqlite::Connection::open(data.join("spine.db")).unwrap();
    let Ok(mut stmt) = db.prepare(
        "SELECT l.exec_id, (SELECT max(last_seq) FROM batches AS b WHERE b.exec_id = l.exec_id)
         FROM leases AS l JOIN executions AS e USING (exec_id)
         WHERE e.ended = 0 AND l.owner LIKE '%:' || ?1 || ':%'",
    ) else {
        return BTreeMap::new(); // no lease taken yet
    };
    stmt.query_map([pid], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Starts `n` complaints (each drafts a reply, then notifies the team), unleased: claimable.
async fn start(data: &Path, config: &Config, n: u32) -> Vec<ExecId> {
    let env = open(data, config).await;
    let s = env.strategies.get("lease-drill").unwrap();
    let mut all = Vec::new();
    for i in 0..n {
        let goal = format!("This is terrible, order {} arrived broken", 1030 + i % 10);
        let tenant = ["acme", "globex", "initech"][i as usize % 3];
        all.push(env.agent.start(s, tenant, &goal).await.unwrap());
    }
    all
}

/// Rejects every pending gate (an escalated call whose outcome a kill made unknown: the person
/// decides not to risk a repeat), through a handle of its own, unleased.
async fn decide_pending(data: &Path, config: &Config) {
    let env = open(data, config).await;
    let pending: Vec<String> = env
        .approvals
        .book()
        .await
        .unwrap()
        .pending(None)
        .iter()
        .map(|g| g.gate_id.clone())
        .collect();
    for gate in pending {
        let _ = env
            .approvals
            .decide(&gate, None, "drill", Verdict::Reject, "do not repeat it")
            .await;
    }
}

/// Waits until every execution has ended, deciding gates meanwhile.
async fn finish_all(data: &Path, config: &Config, all: &[ExecId]) {
    let started = Instant::now();
    loop {
        let log = spine(data).await;
        let mut open = 0;
        for exec in all {
            let state = ExecutionState::fold(&log.read(*exec, 1).await.unwrap()).unwrap();
            open += usize::from(!state.status.is_terminal());
        }
        if open == 0 {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{open} executions still unfinished"
        );
        decide_pending(data, config).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every execution ended with a legal, gapless log; no side-effecting call was made twice
/// (each execution records at most one intent per tool, and a call in flight when its worker
/// died is escalated, never repeated), and the shop holds every effect the logs record as done
/// and none they do not record an intent for. Returns the model calls that have no reply (paid,
/// but their answer lost with a worker).
async fn check_once(data: &Path, all: &[ExecId]) -> usize {
    let log = spine(data).await;
    let mut done: BTreeMap<&str, u64> = BTreeMap::new();
    let mut called: BTreeMap<&str, u64> = BTreeMap::new();
    let mut unanswered = 0;
    for exec in all {
        let events = log.read(*exec, 1).await.unwrap();
        let state = ExecutionState::fold(&events).unwrap_or_else(|e| panic!("{exec}: {e}"));
        assert!(state.status.is_terminal(), "{exec}: {}", state.status);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1, "{exec}: gapless");
        }
        // A call a person refused at a gate (an interrupted call's outcome is unknown, so its
        // repeat waits for a person) is recorded as a call that never acted.
        let refused: BTreeSet<&str> = events
            .iter()
            .filter_map(|e| match &e.payload {
                Payload::ToolResult(r) if r.status == ToolStatus::Rejected => {
                    Some(r.call_id.as_str())
                }
                _ => None,
            })
            .collect();
        for tool in ["draft_reply", "notify_team"] {
            let intents = events
                .iter()
                .filter(|e| matches!(&e.payload, Payload::ToolCalled(c) if c.tool == tool && !refused.contains(c.call_id.as_str())))
                .count() as u64;
            assert!(intents <= 1, "{exec}: {tool} called {intents} times");
            let ok = events
                .iter()
                .filter(|e| matches!(&e.payload, Payload::ToolResult(r) if r.tool == tool && r.status == ToolStatus::Ok))
                .count() as u64;
            *called.entry(tool).or_default() += intents;
            *done.entry(tool).or_default() += ok;
        }
        let mut calls = BTreeSet::new();
        for e in &events {
            match &e.payload {
                Payload::ModelCalled(c) => {
                    calls.insert(c.call_id.clone());
                }
                Payload::ModelResponded(r) if r.error.is_none() => {
                    calls.remove(&r.call_id);
                }
                _ => {}
            }
        }
        unanswered += calls.len();
    }
    let shop = common::shop(data);
    for (tool, table) in [("draft_reply", "drafts"), ("notify_team", "notifications")] {
        let rows = shop.count(table).unwrap();
        assert!(
            done[tool] <= rows && rows <= called[tool],
            "{table}: {rows} rows; {} recorded done, {} intents",
            done[tool],
            called[tool]
        );
    }
    assert!(done["notify_team"] > 0, "the drill notified nobody");
    unanswered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_executions_finish_on_the_others_with_every_effect_once() {
    let tmp = tempfile::tempdir().unwrap();
    kill_drill(tmp.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_killed_worker_s_executions_finish_on_the_others_with_every_effect_once() {
    let pg = PgServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("keel.toml"),
        format!("[spine]\nurl = \"{}\"\n", pg.url("postgres")),
    )
    .unwrap();
    kill_drill(tmp.path()).await;
}

/// Three workers on the store under `dir`; one is SIGKILLed while it drives an execution.
async fn kill_drill(dir: &Path) {
    let data = dir.join("data");
    let config = config(dir);
    let all = start(&data, &config, 24).await;
    // Long leases: the survivors see the killed worker's pid gone and take over at once.
    let victim = Worker::spawn(&data, &config, "victim", 30, 150);
    let others = [
        Worker::spawn(&data, &config, "w1", 30, 150),
        Worker::spawn(&data, &config, "w2", 30, 150),
    ];
    until("the victim drives an execution mid-way", &[&victim], || {
        held_by(&data, victim.pid()).values().any(|&seq| seq >= 3)
    })
    .await;
    let left = held_by(&data, victim.pid());
    victim.kill();
    let killed = Instant::now();
    // A figure, not an assertion: how soon another worker went on with the victim's work.
    let log = spine(&data).await;
    'moved: loop {
        for (exec, seq) in &left {
            let exec: ExecId = exec.parse().unwrap();
            if !log.read(exec, seq + 1).await.unwrap().is_empty() {
                break 'moved;
            }
        }
        assert!(killed.elapsed() < DEADLINE, "nobody went on with {left:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "{}: the victim's work went on {} ms after its SIGKILL ({} executions left mid-way)",
        if pg_url(&data).is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        killed.elapsed().as_millis(),
        left.len()
    );
    finish_all(&data, &config, &all).await;
    // At most the calls in flight in the victim (its concurrency) lost their reply.
    let unanswered = check_once(&data, &all).await;
    assert!(unanswered <= 4, "{unanswered} model calls without a reply");
    for w in others {
        let log = w.stop();
        assert!(log.contains("started"), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_is_fenced_acts_on_nothing_and_says_it_lost_its_leases() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = config(tmp.path());
    let all = start(&data, &config, 4).await;
    // A short lease for the worker that will stall; slow steps, so it is caught mid-way.
    let stalled = Worker::spawn(&data, &config, "stalled", 2, 400);
    let mut taken = BTreeMap::new();
    until("the worker drives executions mid-way", &[&stalled], || {
        taken = held_by(&data, stalled.pid());
        taken.values().any(|&seq| seq >= 2)
    })
    .await;
    stall_outside_a_transaction(&data, &stalled).await;
    // Its pid lives on, so the others wait for its leases to expire, then take them over.
    let other = Worker::spawn(&data, &config, "other", 30, 400);
    let mine = taken.keys().cloned().collect::<BTreeSet<_>>();
    until(
        "the other worker holds the stalled one's executions",
        &[&stalled, &other],
        || {
            let now = held_by(&data, other.pid());
            mine.iter().all(|e| now.contains_key(e) || ended(&data, e))
        },
    )
    .await;
    stalled.signal("-CONT");
    until(
        "the stalled worker says it lost its leases",
        &[&stalled],
        || stalled.stderr().contains("lost the lease of execution"),
    )
    .await;
    finish_all(&data, &config, &all).await;
    let unanswered = check_once(&data, &all).await;
    assert!(unanswered <= 4, "{unanswered} model calls without a reply");
    let log = stalled.stop();
    assert!(
        log.contains("is held by a newer lease"),
        "a late append refused by the epoch: {log}"
    );
    other.stop();
}

/// Stops `w` (SIGSTOP) at a moment it holds no write transaction on the store or the shop: a process
/// stopped inside one holds SQLite's file lock, and every other writer of that file waits for
/// it (a limit of one SQLite file, not of leases; a PostgreSQL spine locks rows, and claims skip
/// locked ones).
async fn stall_outside_a_transaction(data: &Path, w: &Worker) {
    let dbs: Vec<_> = ["spine.db", "shop.db"]
        .iter()
        .map(|f| {
            let db = rusqlite::Connection::open(data.join(f)).unwrap();
            db.busy_timeout(Duration::from_millis(200)).unwrap();
            db
        })
        .collect();
    loop {
        w.signal("-STOP");
        // Let a commit in flight reach the disk or the stop (a stop is asynchronous).
        tokio::time::sleep(Duration::from_millis(50)).await;
        if dbs
            .iter()
            .all(|db| db.execute_batch("BEGIN IMMEDIATE; ROLLBACK").is_ok())
        {
            return;
        }
        w.signal("-CONT");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

fn ended(data: &Path, exec: &str) -> bool {
    let db = rusqlite::Connection::open(data.join("spine.db")).unwrap();
    db.query_row(
        "SELECT ended FROM executions WHERE exec_id = ?1",
        [exec],
        |r| r.get(0),
    )
    .unwrap_or(false)
}
