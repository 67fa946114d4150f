//! Failure drills of a scaled-out deployment on one real PostgreSQL 18: two API-only servers
//! (`keel serve --no-workers`) take the demo's requests and the gate decisions, `keel worker`
//! processes drive, all as real processes on one spine and one demo shop.
//!
//! - A worker is SIGKILLed mid-execution: every execution ends on the others, no event stored
//!   before the kill is lost, logs are gapless, no step asked the model twice and every call
//!   was answered once (a call cut by the kill was never recorded: its reply is what records
//!   it), and the shop holds exactly one effect per approved action: one draft and one
//!   notification per complaint, one refund per approved refund.
//! - A worker is SIGSTOPped past its lease: the others take its executions over; SIGCONT, it
//!   says it lost the leases, its late append is refused by the epoch, and the shop's counts
//!   are still exactly one effect per action.
//! - A gate started through server A and approved through server B wakes the worker driving it,
//!   and a kill-switch set through B stops a runaway on that worker within one step (delays
//!   printed, not asserted); then PostgreSQL goes away under the running processes.
//!
//! Each drill stops its worker at a moment it has no side effect in flight (no `tool.called`
//! of an acting tool without its result, no open transaction): the outcome of an effect cut
//! mid-call is unknown and goes to a person, which `leases.rs` drills with bounds instead of
//! exact counts. The spine's URL carries a password, which no process's log may show (bad
//! configuration: `pg_config.rs`).

#![allow(clippy::unwrap_used)]

mod common;
use common::repo;
use common::serve::{Reply, Serve, free_addr, send, serve_logged};
use common::workers::{DEADLINE, Worker, until};

use keel_core::payload::{Outcome, Payload};
use keel_core::{Event, ExecId};
use keel_memory::pgserver::PgServer;
use keel_runtime::embedded::Config;
use keel_spine::{EventLog, PgEventLog, PgOptions};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The password in the spine's URL (trust authentication ignores it); never printed.
const SECRET: &str = "pw-Tq71-drills-never-printed";

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];

/// The tools that act on the shop.
const ACTING: [&str; 4] = [
    "draft_reply",
    "notify_team",
    "issue_customer_refund",
    "discard_draft",
];

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// Drafts a reply (support-long), then notifies the team.
    Complaint,
    /// Looks the order up, then asks a gate to refund it; approved or rejected.
    Refund { approve: bool },
    /// Looks the order up; no effect.
    Status,
}

/// One request of the workload, and the execution it started.
struct Job {
    kind: Kind,
    order: u32,
    goal: String,
    /// The server it was started through; its gate is decided through the other one.
    via: usize,
    exec: ExecId,
}

/// PostgreSQL, two API-only servers on it, one shared data directory (the shop).
struct Cluster {
    pg: Option<PgServer>,
    tmp: tempfile::TempDir,
    url: String,
    data: PathBuf,
    config: Config,
    servers: Vec<(Serve, String)>,
    tokens: BTreeMap<&'static str, String>,
    log: PgEventLog,
    db: tokio_postgres::Client,
}

impl Cluster {
    async fn start() -> Self {
        let pg = PgServer::start().unwrap();
        let url = pg
            .url("postgres")
            .replacen("postgres@", &format!("postgres:{SECRET}@"), 1);
        let tmp = tempfile::tempdir().unwrap();
        let cfg = tmp.path().join("keel.toml");
        std::fs::write(&cfg, format!("[spine]\nurl = \"{url}\"\n")).unwrap();
        let data = tmp.path().join("data");
        common::shop(&data);
        let config = Config {
            tools: repo().join("tools"),
            strategies: strategies(tmp.path()),
            prices: repo().join("prices.toml"),
        };
        let mut tokens = BTreeMap::new();
        for t in TENANTS {
            let out = Command::new(env!("CARGO_BIN_EXE_keel"))
                .current_dir(repo())
                .arg("--config")
                .arg(&cfg)
                .arg("--data")
                .arg(&data)
                .args(["tokens", "create", "--tenant", t])
                .args([
                    "--role", "agent", "--role", "approver", "--role", "operator",
                ])
                .output()
                .unwrap();
            tokens.insert(t, common::ok(out).trim().to_owned());
        }
        let global = [OsStr::new("--config"), cfg.as_os_str()];
        let servers = ["a", "b"]
            .iter()
            .map(|name| {
                let addr = free_addr();
                let log = tmp.path().join(format!("serve-{name}.log"));
                let extra = [
                    "--no-workers",
                    "--tools",
                    config.tools.to_str().unwrap(),
                    "--strategies",
                    config.strategies.to_str().unwrap(),
                    "--prices",
                    config.prices.to_str().unwrap(),
                ];
                let s = serve_logged(&global, &data, &addr, &extra, &log);
                (s, addr)
            })
            .collect();
        let log = PgEventLog::connect(&url, PgOptions::default())
            .await
            .unwrap();
        let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        Cluster {
            pg: Some(pg),
            tmp,
            url,
            data,
            config,
            servers,
            tokens,
            log,
            db,
        }
    }

    fn worker(&self, name: &str, lease_secs: u64, pace_ms: u64) -> Worker {
        Worker::spawn(&self.data, &self.config, name, lease_secs, pace_ms)
    }

    /// A request through server `via` with `tenant`'s token (blocking: the tests' bare client).
    async fn call(&self, via: usize, tenant: &str, method: &str, path: &str, body: Value) -> Reply {
        let addr = self.servers[via].1.clone();
        let token = self.tokens[tenant].clone();
        let path = path.to_owned();
        let method = method.to_owned();
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        tokio::task::spawn_blocking(move || {
            send(
                &addr,
                &format!(
                    "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                ),
            )
        })
        .await
        .unwrap()
    }

    /// Starts `n` requests through the two servers in turn: complaints, refunds (every third
    /// one rejected) and status questions, each on an order of its own.
    async fn start_jobs(&self, n: u32) -> Vec<Job> {
        let mut jobs = Vec::new();
        for i in 0..n {
            let order = 1001 + i;
            let (kind, goal) = match i % 3 {
                0 => (
                    Kind::Complaint,
                    format!("This is terrible, order {order} arrived broken"),
                ),
                1 => (
                    Kind::Refund {
                        approve: i % 9 != 4,
                    },
                    format!("Please refund order {order}, it arrived damaged"),
                ),
                _ => (Kind::Status, format!("Where is my order {order}?")),
            };
            let via = (i % 2) as usize;
            let tenant = TENANTS[(i / 3) as usize % 3];
            let r = self
                .call(
                    via,
                    tenant,
                    "POST",
                    "/v1/executions",
                    json!({"goal": goal, "strategy": "support-long"}),
                )
                .await;
            assert_eq!(r.code, 201, "{}", r.body);
            let exec = r.json()["exec_id"].as_str().unwrap().parse().unwrap();
            jobs.push(Job {
                kind,
                order,
                goal,
                via,
                exec,
            });
        }
        jobs
    }

    /// Decides every pending gate of the jobs through the server that did not start them: a
    /// refund as planned, anything else approved. Returns how many were decided.
    async fn decide(&self, jobs: &[Job]) -> usize {
        let mut decided = 0;
        for t in TENANTS {
            let listed = self
                .call(0, t, "GET", "/v1/gates?status=pending", Value::Null)
                .await;
            let Some(gates) = listed.json()["gates"].as_array().cloned() else {
                continue;
            };
            for g in gates {
                let Some(job) = jobs.iter().find(|j| g["exec_id"] == j.exec.to_string()) else {
                    continue;
                };
                let refund = g["action"]["tool"] == "issue_customer_refund";
                let verdict = match job.kind {
                    Kind::Refund { approve: false } if refund => "reject",
                    _ => "approve",
                };
                let id = g["gate_id"].as_str().unwrap();
                let r = self
                    .call(
                        1 - job.via,
                        t,
                        "POST",
                        &format!("/v1/gates/{id}/decision"),
                        json!({"verdict": verdict, "reason": "drill"}),
                    )
                    .await;
                decided += usize::from(r.code == 200);
            }
        }
        decided
    }

    /// Waits until every job's execution has ended, deciding gates meanwhile.
    async fn finish(&self, jobs: &[Job]) {
        let ids: Vec<String> = jobs.iter().map(|j| j.exec.to_string()).collect();
        let started = Instant::now();
        loop {
            let open: i64 = self
                .db
                .query_one(
                    "SELECT count(*) FROM keel_spine.executions
                     WHERE exec_id = ANY($1) AND NOT ended",
                    &[&ids],
                )
                .await
                .unwrap()
                .get(0);
            if open == 0 {
                return;
            }
            assert!(started.elapsed() < DEADLINE, "{open} executions unfinished");
            self.decide(jobs).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Unfinished executions `w` holds a lease on, with their last seq.
    async fn held_by(&self, w: &Worker) -> BTreeMap<ExecId, u64> {
        self.db
            .query(
                "SELECT exec_id, last_seq FROM keel_spine.executions
                 WHERE NOT ended AND lease_owner LIKE '%:' || $1 || ':%'",
                &[&w.pid().to_string()],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let seq = u64::try_from(r.get::<_, i64>(1)).unwrap_or(0);
                (r.get::<_, String>(0).parse().unwrap(), seq)
            })
            .collect()
    }

    /// Makes PostgreSQL end every session of `w` (as a restart or a failover does to it): finds
    /// the worker's TCP sockets through /proc and terminates the backends on their ports.
    /// Returns how many it ended.
    async fn drop_sessions_of(&self, w: &Worker) -> usize {
        let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{}/fd", w.pid()))
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter_map(|target| {
                let t = target.to_string_lossy().into_owned();
                Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
            })
            .collect();
        let mut ports: Vec<i32> = Vec::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = std::fs::read_to_string(table).unwrap_or_default();
            for line in text.lines().skip(1) {
                let cols: Vec<&str> = line.split_whitespace().collect();
                let (Some(local), Some(inode)) = (cols.get(1), cols.get(9)) else {
                    continue;
                };
                if inodes.contains(*inode)
                    && let Some((_, port)) = local.rsplit_once(':')
                    && let Ok(port) = i32::from_str_radix(port, 16)
                {
                    ports.push(port);
                }
            }
        }
        self.db
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE client_port = ANY($1)",
                &[&ports],
            )
            .await
            .unwrap()
            .len()
    }

    async fn events(&self, exec: ExecId) -> Vec<Event> {
        self.log.read(exec, 1).await.unwrap()
    }

    /// Stops `w` (SIGSTOP) once it drives an execution past its first events with no side
    /// effect in flight and no transaction open; returns what it holds then.
    async fn stop_between_effects(&self, w: &Worker) -> BTreeMap<ExecId, u64> {
        let started = Instant::now();
        loop {
            assert!(started.elapsed() < DEADLINE, "{} never paused", w.stderr());
            w.signal("-STOP");
            // A stop is asynchronous, and a commit in flight still lands: let both settle.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let held = self.held_by(w).await;
            let mut quiet = held.values().any(|&seq| seq >= 3) && self.no_open_transaction().await;
            for exec in held.keys() {
                quiet &= open_effect(&self.events(*exec).await).is_none();
            }
            if quiet {
                return held;
            }
            w.signal("-CONT");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    async fn no_open_transaction(&self) -> bool {
        let n: i64 = self
            .db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n == 0
    }

    async fn ended(&self, exec: &ExecId) -> bool {
        self.db
            .query_opt(
                "SELECT 1 FROM keel_spine.executions WHERE exec_id = $1 AND ended",
                &[&exec.to_string()],
            )
            .await
            .unwrap()
            .is_some()
    }

    /// The shop holds exactly one effect per approved action, and nothing else.
    fn check_shop(&self, jobs: &[Job]) {
        let shop = rusqlite::Connection::open(self.data.join("shop.db")).unwrap();
        let count =
            |sql: &str, arg: &str| -> i64 { shop.query_row(sql, [arg], |r| r.get(0)).unwrap() };
        let (mut drafts, mut notes, mut refunds) = (0, 0, 0);
        for j in jobs {
            let order = format!("A-{}", j.order);
            let complaint = i64::from(j.kind == Kind::Complaint);
            let refunded = i64::from(j.kind == Kind::Refund { approve: true });
            let got = count(
                "SELECT count(*) FROM drafts WHERE discarded = 0 AND order_id = ?1",
                &order,
            );
            assert_eq!(got, complaint, "{:?} {}: {got} drafts", j.kind, j.exec);
            let got = count(
                "SELECT count(*) FROM notifications WHERE message = ?1",
                &format!("Customer complaint: {}", j.goal),
            );
            assert_eq!(
                got, complaint,
                "{:?} {}: {got} notifications",
                j.kind, j.exec
            );
            let got = count("SELECT count(*) FROM refunds WHERE order_id = ?1", &order);
            assert_eq!(got, refunded, "{:?} {}: {got} refunds", j.kind, j.exec);
            drafts += complaint;
            notes += complaint;
            refunds += refunded;
        }
        for (table, want) in [
            ("drafts", drafts),
            ("notifications", notes),
            ("refunds", refunds),
        ] {
            let got: i64 = shop
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap();
            assert_eq!(got, want, "{table}: {got} rows, {want} actions");
        }
        assert!(drafts > 0 && refunds > 0, "the workload acted on nothing");
    }

    /// Every job ended as planned with a gapless log, every model call was answered once and
    /// no step asked the model twice. Returns the number of model calls.
    async fn check_logs(&self, jobs: &[Job]) -> usize {
        let mut calls = 0;
        for j in jobs {
            let events = self.events(j.exec).await;
            for (i, e) in events.iter().enumerate() {
                assert_eq!(e.seq, i as u64 + 1, "{}: gapless", j.exec);
            }
            let Some(Payload::ExecFinished(f)) = events.last().map(|e| &e.payload) else {
                panic!("{}: not finished", j.exec);
            };
            if !matches!(j.kind, Kind::Refund { approve: false }) {
                assert_eq!(f.outcome, Outcome::Success, "{:?} {}", j.kind, j.exec);
            }
            let mut per_step: BTreeMap<u32, usize> = BTreeMap::new();
            let mut answers: BTreeMap<&str, usize> = BTreeMap::new();
            for e in &events {
                match &e.payload {
                    Payload::ModelCalled(c) => {
                        *per_step.entry(e.step_n).or_default() += 1;
                        answers.entry(&c.call_id).or_default();
                        calls += 1;
                    }
                    Payload::ModelResponded(r) => {
                        *answers.entry(&r.call_id).or_default() += 1;
                    }
                    _ => {}
                }
            }
            for (step, n) in per_step {
                assert!(n <= 1, "{}: step {step} called the model {n} times", j.exec);
            }
            for (call, n) in answers {
                assert_eq!(n, 1, "{}: model call {call} answered {n} times", j.exec);
            }
        }
        calls
    }

    /// For each decided gate: ms from its `gate.decided` (appended by a server) to the next
    /// event of its execution (appended by the worker that woke on it).
    async fn gate_resumes(&self, jobs: &[Job]) -> Vec<i64> {
        let mut ms = Vec::new();
        for j in jobs {
            let events = self.events(j.exec).await;
            for pair in events.windows(2) {
                if matches!(pair[0].payload, Payload::GateDecided(_)) {
                    ms.push((pair[1].ts - pair[0].ts).num_milliseconds());
                }
            }
        }
        ms.sort_unstable();
        ms
    }

    /// Stops PostgreSQL under the running processes.
    fn stop_postgres(&mut self) {
        drop(self.pg.take());
    }

    /// No log of any process shows the spine's password.
    fn check_no_secret(&self) {
        for e in std::fs::read_dir(self.tmp.path()).unwrap() {
            let p = e.unwrap().path();
            if p.extension() == Some(OsStr::new("log")) {
                let text = std::fs::read_to_string(&p).unwrap();
                assert!(!text.contains(SECRET), "{} shows the password", p.display());
            }
        }
        assert!(!self.url.is_empty());
    }
}

/// The repository's strategies, copied under `dir` (their relative paths made absolute), and
/// `runaway` (a model that looks an order up forever, for the kill-switch).
fn strategies(dir: &Path) -> PathBuf {
    common::write_runaway(dir);
    let to = dir.join("strategies");
    for e in std::fs::read_dir(repo().join("strategies")).unwrap() {
        let p = e.unwrap().path();
        if p.extension() == Some(OsStr::new("yaml")) {
            let text = std::fs::read_to_string(&p).unwrap();
            let text = text.replace("../", &format!("{}/", repo().display()));
            std::fs::write(to.join(p.file_name().unwrap()), text).unwrap();
        }
    }
    to
}

/// True once an execution has asked a gate.
fn has_gate(events: &[Event]) -> bool {
    events
        .iter()
        .any(|e| matches!(e.payload, Payload::GateRequested(_)))
}

/// The call id of an acting tool's `tool.called` that has no result yet, if any.
fn open_effect(events: &[Event]) -> Option<String> {
    let mut open = BTreeSet::new();
    for e in events {
        match &e.payload {
            Payload::ToolCalled(c) if ACTING.contains(&c.tool.as_str()) => {
                open.insert(c.call_id.clone());
            }
            Payload::ToolResult(r) => {
                open.remove(&r.call_id);
            }
            _ => {}
        }
    }
    open.into_iter().next()
}

/// Model calls recorded without an answer (in flight; asked again by whoever goes on).
fn unanswered(events: &[Event]) -> usize {
    let mut open = BTreeSet::new();
    for e in events {
        match &e.payload {
            Payload::ModelCalled(c) => {
                open.insert(c.call_id.clone());
            }
            Payload::ModelResponded(r) => {
                open.remove(&r.call_id);
            }
            _ => {}
        }
    }
    open.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_two_servers_a_sigkill_mid_execution_loses_nothing_and_acts_once() {
    let c = Cluster::start().await;
    let jobs = c.start_jobs(18).await;
    let victim = c.worker("victim", 30, 150);
    let others = [c.worker("w1", 30, 150), c.worker("w2", 30, 150)];
    let held = c.stop_between_effects(&victim).await;
    let mut before = BTreeMap::new();
    let mut in_flight = 0;
    for exec in held.keys() {
        let events = c.events(*exec).await;
        in_flight += unanswered(&events);
        before.insert(*exec, events);
    }
    victim.kill();
    let killed = Instant::now();
    // A figure, not an assertion: how soon another worker went on with the victim's work.
    'moved: loop {
        for (exec, seq) in &held {
            if !c.log.read(*exec, seq + 1).await.unwrap().is_empty() || c.ended(exec).await {
                break 'moved;
            }
        }
        assert!(killed.elapsed() < DEADLINE, "nobody went on with {held:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let moved = killed.elapsed();
    c.finish(&jobs).await;
    eprintln!(
        "postgres, 3 workers + 2 API servers: the victim's work went on {} ms after its SIGKILL \
         (it held {} unfinished executions, {} of them past their start; {in_flight} model calls \
         recorded without a reply); all {} ended {} ms after the kill",
        moved.as_millis(),
        held.len(),
        held.values().filter(|&&seq| seq >= 3).count(),
        jobs.len(),
        killed.elapsed().as_millis()
    );
    // Nothing stored before the kill was lost or changed.
    for (exec, events) in &before {
        let now = c.events(*exec).await;
        assert!(now.len() >= events.len(), "{exec}: events lost");
        for (a, b) in events.iter().zip(&now) {
            assert_eq!(a.event_id, b.event_id, "{exec}: seq {} changed", a.seq);
        }
    }
    assert!(
        in_flight <= 4,
        "{in_flight} calls in flight in a worker of 4"
    );
    let calls = c.check_logs(&jobs).await;
    c.check_shop(&jobs);
    eprintln!("{calls} model calls, each answered once, none repeated for a step");
    let resumes = c.gate_resumes(&jobs).await;
    eprintln!(
        "gates decided through the other server, the worker's next event after (ms): {resumes:?}"
    );
    assert!(!resumes.is_empty(), "no gate was decided");
    for w in others {
        w.stop();
    }
    c.check_no_secret();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_stalled_worker_is_fenced_acts_on_nothing_and_says_it_lost_its_leases() {
    let c = Cluster::start().await;
    let jobs = c.start_jobs(9).await;
    // A short lease for the worker that will stall; slow steps, so it is caught mid-way.
    let stalled = c.worker("stalled", 2, 400);
    let held = c.stop_between_effects(&stalled).await;
    // Its pid lives on: the others wait for its leases to expire, then take them over.
    let others = [c.worker("w1", 30, 150), c.worker("w2", 30, 150)];
    let stalled_at = Instant::now();
    until(
        "the others hold or ended the stalled worker's executions",
        &[&stalled, &others[0], &others[1]],
        || {
            let handle = tokio::runtime::Handle::current();
            tokio::task::block_in_place(|| {
                handle.block_on(async {
                    let mut theirs = c.held_by(&others[0]).await;
                    theirs.extend(c.held_by(&others[1]).await);
                    let mut all = true;
                    for e in held.keys() {
                        all &= theirs.contains_key(e) || c.ended(e).await;
                    }
                    all
                })
            })
        },
    )
    .await;
    eprintln!(
        "postgres: the others took the stalled worker's {} executions over {} ms after its \
         SIGSTOP (lease 2 s)",
        held.len(),
        stalled_at.elapsed().as_millis()
    );
    stalled.signal("-CONT");
    until(
        "the stalled worker says it lost its leases",
        &[&stalled],
        || stalled.stderr().contains("lost the lease of execution"),
    )
    .await;
    c.finish(&jobs).await;
    c.check_logs(&jobs).await;
    c.check_shop(&jobs);
    let log = stalled.stop();
    assert!(
        log.contains("is held by a newer lease"),
        "a late append refused by the epoch: {log}"
    );
    for w in others {
        w.stop();
    }
    c.check_no_secret();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_and_a_kill_switch_decided_through_server_b_reach_the_worker_driving_for_a() {
    let c = Cluster::start().await;
    let w = c.worker("w1", 30, 0);
    // A refund started through A parks at its gate on the worker; approved through B, the worker
    // wakes on the spine's notification and carries it out. A figure, not an assertion.
    let jobs = c.start_jobs(2).await;
    let refund = &jobs[1];
    assert_eq!(refund.via, 1);
    let parked = Instant::now();
    while !has_gate(&c.events(refund.exec).await) || !c.ended(&jobs[0].exec).await {
        assert!(parked.elapsed() < DEADLINE, "{}", w.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the worker finish its pass and wait on the spine.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.finish(&jobs).await;
    let resumes = c.gate_resumes(&jobs).await;
    eprintln!(
        "postgres: a refund's gate approved through the other server; the idle worker's next \
         event after the decision (ms): {resumes:?}"
    );
    assert_eq!(resumes.len(), 1, "one gate");
    c.check_shop(&jobs);

    // A runaway started through A, driven by the worker, switched off through B.
    let r = c
        .call(
            0,
            "acme",
            "POST",
            "/v1/executions",
            json!({"goal": "loop forever", "strategy": "runaway"}),
        )
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    let exec: ExecId = r.json()["exec_id"].as_str().unwrap().parse().unwrap();
    let steps = |events: &[Event]| {
        events
            .iter()
            .filter(|e| matches!(e.payload, Payload::StepCompleted(_)))
            .count()
    };
    let started = Instant::now();
    while steps(&c.events(exec).await) < 20 {
        assert!(started.elapsed() < DEADLINE, "{}", w.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let set = c
        .call(
            1,
            "acme",
            "PUT",
            "/v1/kill-switches/strategy/runaway",
            json!({"reason": "runaway loop"}),
        )
        .await;
    assert_eq!(set.code, 200, "{}", set.body);
    let switched = Instant::now();
    // The switch is committed by now (same machine, same clock as the events' stamps).
    let set_at = keel_spine::clock::Clock::now(&keel_spine::clock::SystemClock);
    while !c.ended(&exec).await {
        assert!(switched.elapsed() < DEADLINE, "{}", w.stderr());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // By time: offsets follow the appending transactions' ids, not the order their commits
    // became visible in.
    let after = c
        .events(exec)
        .await
        .iter()
        .filter(|e| e.ts > set_at)
        .filter(|e| matches!(e.payload, Payload::StepCompleted(_)))
        .count();
    eprintln!(
        "postgres: a runaway on a keel worker, switched off through server B, ended {} ms \
         after the PUT returned; {after} steps completed after the switch's commit",
        switched.elapsed().as_millis()
    );
    assert!(after <= 1, "{after} steps completed after the kill-switch");
    let Some(Payload::ExecFinished(f)) = c.events(exec).await.last().map(|e| e.payload.clone())
    else {
        panic!("not finished");
    };
    assert_eq!(f.outcome, Outcome::Killed);

    // PostgreSQL goes away under the worker and both servers: what they say about it still
    // hides the password. The worker's wait on the spine ends in an error it names.
    let mut c = c;
    c.stop_postgres();
    let mut w = w;
    let gone = Instant::now();
    let status = loop {
        if let Some(status) = w.child.try_wait().unwrap() {
            break Some(status);
        }
        if gone.elapsed() > Duration::from_secs(10) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "postgres stopped under a waiting worker: {status:?}; it said:\n{}",
        w.stderr().lines().last().unwrap_or_default()
    );
    if status.is_none() {
        w.kill();
    }
    c.check_no_secret();
}

/// PostgreSQL ends every session of a running worker (a restart or a failover does): the worker
/// says so, waits, connects again and drives what is started afterwards, with every effect once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_sessions_the_database_ends_connects_again_and_goes_on() {
    let c = Cluster::start().await;
    let mut w = c.worker("w1", 30, 0);
    let dropped = c.drop_sessions_of(&w).await;
    assert!(
        dropped >= 2,
        "the worker had {dropped} sessions: {}",
        w.stderr()
    );
    let jobs = c.start_jobs(3).await;
    c.finish(&jobs).await;
    c.check_shop(&jobs);
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "the worker exited: {}",
        w.stderr()
    );
    eprintln!(
        "the worker, after the database ended its {dropped} sessions, said:\n{}",
        w.stderr()
    );
    assert!(
        !w.stderr().contains(SECRET),
        "the password in the worker's log"
    );
    w.stop();
}

/// Starts a request of `tenant` on `order` through server `via` that asks no gate: a status
/// question, or a complaint (a draft and a notification: a few steps more).
async fn start_ungated(c: &Cluster, via: usize, tenant: &str, order: u32, kind: Kind) -> Job {
    let goal = match kind {
        Kind::Complaint => format!("This is terrible, order {order} arrived broken"),
        _ => format!("Where is my order {order}?"),
    };
    let r = c
        .call(
            via,
            tenant,
            "POST",
            "/v1/executions",
            json!({"goal": goal, "strategy": "support-long"}),
        )
        .await;
    assert_eq!(r.code, 201, "{}", r.body);
    Job {
        kind,
        order,
        goal,
        via,
        exec: r.json()["exec_id"].as_str().unwrap().parse().unwrap(),
    }
}

/// When `exec` finished (its `exec.finished` event's time).
async fn finished_at(c: &Cluster, exec: ExecId) -> chrono::DateTime<chrono::Utc> {
    let events = c.events(exec).await;
    events
        .iter()
        .find(|e| matches!(e.payload, Payload::ExecFinished(_)))
        .unwrap_or_else(|| panic!("{exec} did not finish"))
        .ts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_claim_as_slots_free_and_a_late_tenant_does_not_wait_for_a_flood() {
    let c = Cluster::start().await;
    // One tenant's flood, waiting before any worker runs: more than the two workers' first
    // claims take (4 driven at a time each, up to 16 claimed per listing). Short and longer
    // requests mixed, so executions started together do not end together.
    let mut flood = Vec::new();
    for i in 0..120 {
        let kind = [Kind::Status, Kind::Complaint][i % 2];
        let order = 1001 + (i % 48) as u32;
        flood.push(start_ungated(&c, i % 2, "acme", order, kind).await);
    }
    let workers = [c.worker("w1", 30, 80), c.worker("w2", 30, 80)];
    // A worker takes more up while it still drives what it took before: it holds an execution
    // it did not hold at an earlier look beside one it held then, still unfinished.
    let mut seen: Vec<BTreeSet<ExecId>> = vec![BTreeSet::new(); workers.len()];
    let mut overlapped = false;
    let started = Instant::now();
    while !overlapped {
        assert!(
            started.elapsed() < DEADLINE,
            "no worker claimed while driving; they said:\n{}\n---\n{}",
            workers[0].stderr(),
            workers[1].stderr()
        );
        for (w, seen) in workers.iter().zip(seen.iter_mut()) {
            let held: BTreeSet<ExecId> = c.held_by(w).await.into_keys().collect();
            let new = held.difference(seen).count();
            let still = held.intersection(seen).count();
            overlapped |= new > 0 && still > 0;
            seen.extend(held);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "a worker claimed while driving {} ms after the workers started",
        started.elapsed().as_millis()
    );
    // A late tenant's two executions, while most of the flood still waits.
    let late = [
        start_ungated(&c, 0, "globex", 1049, Kind::Status).await,
        start_ungated(&c, 1, "globex", 1050, Kind::Status).await,
    ];
    let mut jobs = flood;
    jobs.extend(late);
    c.finish(&jobs).await;
    let (flood, late) = jobs.split_at(jobs.len() - 2);
    let mut late_done = finished_at(&c, late[0].exec).await;
    late_done = late_done.max(finished_at(&c, late[1].exec).await);
    let mut after = 0;
    for j in flood {
        after += usize::from(finished_at(&c, j.exec).await > late_done);
    }
    eprintln!(
        "{after} of the flood's {} executions finished after the late tenant's last",
        flood.len()
    );
    assert!(
        after > 0,
        "the late tenant's executions waited for the whole flood"
    );
    // Every execution ended once: gapless logs, no step asked the model twice, every call
    // answered once (two drivers of one execution would break these).
    c.check_logs(&jobs).await;
    for w in workers {
        let log = w.stop();
        assert!(
            !log.contains("not run") && !log.contains("lost the lease"),
            "{log}"
        );
    }
    c.check_no_secret();
}
