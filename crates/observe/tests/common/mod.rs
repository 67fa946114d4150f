//! The fixed data set of the observe tests: six executions whose economics are computed by hand
//! in `projection_sql.rs`, appended to a real SQLite spine.

#![allow(dead_code)] // each test binary uses a different part

use chrono::Duration;
use keel_core::payload::{Budget, ExecStarted, Outcome, Payload, ToolStatus, Verdict};
use keel_core::{Cost, Event};
use keel_spine::clock::{Clock, SystemClock};
use keel_spine::{EventLog, SqliteLog, SqliteOptions};
use keel_testkit::builder::{ExecBuilder, exec_id};
use std::path::Path;

/// One execution of the fixture.
pub struct Spec {
    pub n: u64,
    pub tenant: &'static str,
    pub strategy: &'static str,
    /// Days before now it started.
    pub days_ago: i64,
    /// (model cost in micro-USD, tool status) per step; every tool call costs 90 micro-USD.
    pub steps: Vec<(u64, ToolStatus)>,
    pub gate: Option<Verdict>,
    pub outcome: Outcome,
}

pub fn specs() -> Vec<Spec> {
    use ToolStatus::*;
    vec![
        Spec {
            n: 1,
            tenant: "acme",
            strategy: "s-short",
            days_ago: 1,
            steps: vec![(10_000, Ok)],
            gate: None,
            outcome: Outcome::Success,
        },
        Spec {
            n: 2,
            tenant: "acme",
            strategy: "s-short",
            days_ago: 2,
            steps: vec![(20_000, Ok)],
            gate: None,
            outcome: Outcome::Success,
        },
        Spec {
            n: 3,
            tenant: "acme",
            strategy: "s-short",
            days_ago: 3,
            steps: vec![(30_000, Error)],
            gate: None,
            outcome: Outcome::Failure,
        },
        Spec {
            n: 4,
            tenant: "acme",
            strategy: "s-long",
            days_ago: 1,
            steps: vec![(50_000, Ok); 3],
            gate: Some(Verdict::Approve),
            outcome: Outcome::Success,
        },
        Spec {
            n: 5,
            tenant: "globex",
            strategy: "s-long",
            days_ago: 2,
            steps: vec![(50_000, Ok); 2],
            gate: Some(Verdict::Reject),
            outcome: Outcome::Failure,
        },
        // Older than the economics query's 14-day window: must not count.
        Spec {
            n: 6,
            tenant: "acme",
            strategy: "s-short",
            days_ago: 30,
            steps: vec![(1_000_000, Ok)],
            gate: None,
            outcome: Outcome::Success,
        },
    ]
}

/// The events of one spec, timestamps shifted to `days_ago` before now.
pub fn events(spec: &Spec) -> Vec<Event> {
    let mut b = ExecBuilder::new(exec_id(spec.n), spec.tenant);
    b.push(Payload::ExecStarted(ExecStarted {
        goal: format!("goal {}", spec.n),
        strategy_version: spec.strategy.into(),
        budget: Budget::default(),
        experiment_arm: Some(spec.strategy.into()),
        ..fixture_started()
    }));
    let mut b = b.plan();
    for (i, (cost, status)) in spec.steps.iter().enumerate() {
        b = b.model_call(100 * (i as u64 + 1), 10, Cost::Known(*cost));
        if i == 0
            && let Some(v) = spec.gate
        {
            b = b.gate(v);
        }
        b = b.tool_call("lookup_order", *status).step_completed();
    }
    let mut events = b.finished(spec.outcome).build();
    let base = SystemClock.now() - Duration::days(spec.days_ago);
    let first = events[0].ts;
    for e in &mut events {
        e.ts = base + (e.ts - first);
    }
    events
}

/// Defaults for fields of `exec.started` added by later versions.
pub fn fixture_started() -> ExecStarted {
    ExecStarted {
        goal: String::new(),
        strategy_version: String::new(),
        budget: Budget::default(),
        experiment_arm: None,
        replay_of: None,
        experiment: None,
    }
}

/// Opens a spine at `path` and appends the whole fixture, one execution at a time, in two
/// appends each (so batches and offsets interleave as in a real log).
pub async fn seed(path: &Path) -> SqliteLog {
    let log = SqliteLog::open(path, SqliteOptions::default()).expect("open spine");
    for spec in specs() {
        append(&log, &events(&spec)).await;
    }
    log
}

/// Appends one execution's events in two batches.
pub async fn append(log: &SqliteLog, events: &[Event]) {
    let mid = events.len() / 2;
    log.append(events[0].exec_id, 0, &events[..mid])
        .await
        .expect("append");
    log.append(events[0].exec_id, mid as u64, &events[mid..])
        .await
        .expect("append");
}

/// The Python with `duckdb` and `opentelemetry-proto` installed by `scripts/test-observe-peers`
/// (which `scripts/test` runs). Missing is a failure, not a skip.
pub fn peer_python() -> std::path::PathBuf {
    let py = std::env::var_os("KEEL_OBSERVE_PY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/keel-observe-peers/venv/bin/python")
        });
    assert!(
        py.exists(),
        "the observe test peers (DuckDB, OTLP proto decoder) are missing at {}: run \
         scripts/test-observe-peers (scripts/test does)",
        py.display()
    );
    py
}

/// A real OTLP/HTTP receiver (`otlp_receiver.py`, decoding with the official proto definitions)
/// on 127.0.0.1; stopped when dropped.
pub struct Receiver {
    child: std::process::Child,
    pub endpoint: String,
    pub out: std::path::PathBuf,
}

impl Receiver {
    pub fn start(dir: &Path) -> Receiver {
        use std::io::BufRead;
        let out = dir.join("spans.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otlp_receiver.py");
        let mut child = std::process::Command::new(peer_python())
            .arg(script)
            .arg(&out)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the OTLP receiver");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("receiver port");
        let port: u16 = line.trim().parse().expect("receiver printed its port");
        Receiver {
            child,
            endpoint: format!("http://127.0.0.1:{port}/v1/traces"),
            out,
        }
    }

    /// Every span received so far, decoded.
    pub fn spans(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("receiver wrote JSON"))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a test's projection stores live: a temporary directory of SQLite files, or a
/// throwaway PostgreSQL server (one database per store). Every projection test runs on both
/// (see [`on_every_backend!`]).
pub enum Stores {
    Sqlite(tempfile::TempDir),
    Postgres(keel_memory::pgserver::PgServer),
}

impl Stores {
    pub fn sqlite() -> Self {
        Stores::Sqlite(tempfile::tempdir().expect("temp dir"))
    }

    /// Starts PostgreSQL from `$KEEL_TEST_PG_BIN` (a failure, never a skip, when missing).
    pub fn postgres() -> Self {
        Stores::Postgres(keel_memory::pgserver::PgServer::start().expect("start PostgreSQL"))
    }

    /// How to reach store `name` (`KEEL_PROJECTIONS_URL`'s value for it).
    pub async fn url(&self, name: &str) -> String {
        match self {
            Stores::Sqlite(dir) => {
                format!("sqlite:{}", dir.path().join(format!("{name}.db")).display())
            }
            Stores::Postgres(server) => {
                let (client, conn) =
                    tokio_postgres::connect(&server.url("postgres"), tokio_postgres::NoTls)
                        .await
                        .expect("connect to PostgreSQL");
                tokio::spawn(conn);
                let exists = client
                    .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                    .await
                    .expect("list databases");
                if exists.is_none() {
                    client
                        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                        .await
                        .expect("create database");
                }
                server.url(name)
            }
        }
    }

    /// Opens (creating) store `name`.
    pub async fn open(&self, name: &str) -> Box<dyn keel_observe::ProjectionStore> {
        let url = self.url(name).await;
        keel_observe::Backend::from_config(Some(&url), Path::new("unused"))
            .expect("backend")
            .open()
            .await
            .expect("open projections")
    }
}

/// Runs each named `async fn(&Stores)` of the test file once per backend, as
/// `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(&super::common::Stores::sqlite()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(&super::common::Stores::postgres()).await
                }
            )*
        }
    };
}
