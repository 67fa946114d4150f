//! The long-running consumers of the spine as users run them: `keel project --follow` and
//! `keel export otlp --follow` are real child processes on a real store while `keel run`
//! processes append executions. They pick up new executions as they commit, are killed with
//! SIGKILL, and on restart resume from their durable checkpoints: every event is projected
//! exactly once and every ended execution is exported exactly once (to a real OTLP receiver that
//! decodes the protobuf with the official OpenTelemetry definitions).
//!
//! The projections are read straight from `DATA/observe.db` while a follower runs, never through
//! `keel sql`: `keel sql` brings the projections up to date itself, so it would hide a follower
//! that does nothing (and it races the follower: see the regression test below).

mod common;
use common::{ok, repo};

use keel_core::control::CONTROL_STREAM;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a poll waits for something that takes well under a second on an idle machine.
const DEADLINE: Duration = Duration::from_secs(120);

/// `keel --data DATA ARGS…` from the repo root (its tools/, strategies/, prices.toml).
fn keel_cmd(data: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
    c.current_dir(repo()).arg("--data").arg(data).args(args);
    c
}

fn keel(data: &Path, args: &[&str]) -> Output {
    keel_cmd(data, args).output().expect("running keel")
}

/// One execution that ends without a gate, as `keel run --json` reports it.
#[derive(Clone, Debug)]
struct Exec {
    id: String,
    trace: String,
    outcome: String,
    steps: u64,
}

fn parse_run(stdout: &str) -> Exec {
    let v: Value = serde_json::from_str(stdout).expect("keel run --json prints one object");
    let s = |k: &str| v[k].as_str().expect(k).to_owned();
    Exec {
        id: s("exec_id"),
        trace: s("trace_id"),
        outcome: s("outcome"),
        steps: v["steps"].as_u64().expect("steps"),
    }
}

/// Requests the demo shop answers without a gate (lookups, a complaint, a vague request).
const GOALS: &[(&str, &str)] = &[
    ("support-short", "Where is my order A-1017?"),
    ("support-long", "Has order 1012 shipped yet?"),
    ("support-short", "Can you help me with something?"),
    (
        "support-long",
        "This is terrible, order 1021 arrived broken",
    ),
];

fn run_cmd(data: &Path, i: usize) -> Command {
    let (strategy, goal) = GOALS[i % GOALS.len()];
    let tenant = ["acme", "globex"][i % 2];
    keel_cmd(
        data,
        &[
            "run",
            "--strategy",
            strategy,
            "--tenant",
            tenant,
            "--json",
            goal,
        ],
    )
}

fn run(data: &Path, i: usize) -> Exec {
    parse_run(&ok(run_cmd(data, i).output().expect("running keel run")))
}

/// A long-running `keel` child whose stderr lines are collected by a thread; killed (SIGKILL)
/// when dropped, so a failed assertion leaves no process behind.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Follower {
    fn start(data: &Path, args: &[&str]) -> Follower {
        let mut child = keel_cmd(data, args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting a keel follower");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next stderr line matching `pred` (lines before it are kept in `seen`).
    fn next_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no stderr line {what} ({e}); the follower said: {:#?}; exited: {:?}",
                    self.seen,
                    self.child.try_wait()
                ),
            }
        }
    }

    fn assert_running(&mut self) {
        let status = self.child.try_wait().expect("polling the follower");
        if let Some(status) = status {
            // Drain what it said before it died.
            while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
                self.seen.push(line);
            }
            panic!("the follower exited ({status}); it said: {:#?}", self.seen);
        }
    }

    /// SIGKILL, then reap.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL the follower");
        self.child.wait().expect("reaping the follower");
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns `Some`, or panics naming `what` after [`DEADLINE`].
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_only(path: &Path) -> Connection {
    let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    c.busy_timeout(Duration::from_secs(10))
        .expect("setting a busy timeout");
    c
}

fn count(c: &Connection, sql: &str, params: impl rusqlite::Params) -> u64 {
    c.query_row(sql, params, |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// What the spine holds: the last offset, and how many events are not on the control stream.
struct Spine {
    last_offset: u64,
    execution_events: u64,
}

fn spine(data: &Path) -> Spine {
    let c = read_only(&data.join("spine.db"));
    Spine {
        last_offset: count(&c, "SELECT coalesce(max(last_offset), 0) FROM batches", []),
        execution_events: count(
            &c,
            "SELECT count(*) FROM events WHERE exec_id != ?1",
            [CONTROL_STREAM.to_string()],
        ),
    }
}

/// Spine events (not on the control stream) before offset `before`.
fn execution_events_before(data: &Path, before: u64) -> u64 {
    count(
        &read_only(&data.join("spine.db")),
        "SELECT count(*) FROM events WHERE exec_id != ?1 AND log_offset < ?2",
        rusqlite::params![CONTROL_STREAM.to_string(), before],
    )
}

/// The projections' checkpoint (first offset not applied) and row counts, read from the file.
struct Projected {
    checkpoint: u64,
    steps: u64,
    finished: BTreeMap<String, bool>,
}

fn projected(data: &Path) -> Projected {
    let c = read_only(&data.join("observe.db"));
    let checkpoint = c
        .query_row(
            "SELECT next_offset FROM projection_state WHERE name = 'main'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(1);
    let mut st = c
        .prepare("SELECT exec_id, finished_at IS NOT NULL FROM executions")
        .expect("reading gold.executions");
    let finished = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect())
        .expect("reading gold.executions");
    Projected {
        checkpoint,
        steps: count(&c, "SELECT count(*) FROM steps", []),
        finished,
    }
}

/// Waits until the follower has applied the whole spine and every one of `execs` has a finished
/// row in gold.executions.
fn wait_projected(data: &Path, execs: &[Exec]) -> Projected {
    poll("the follower to project every execution", || {
        let s = spine(data);
        let p = projected(data);
        let all = execs
            .iter()
            .all(|e| p.finished.get(&e.id).copied().unwrap_or(false));
        (all && p.checkpoint == s.last_offset + 1 && p.steps == s.execution_events).then_some(p)
    })
}

/// An execution's events, as `keel events` prints them.
fn events(data: &Path, exec: &str) -> Vec<Value> {
    ok(keel(data, &["events", exec]))
        .lines()
        .map(|l| serde_json::from_str(l).expect("keel events prints JSON lines"))
        .collect()
}

/// Every event of every execution projected exactly once: the step rows of each execution are
/// its events (`keel events`) one for one, no (execution, seq) twice, and the per-execution
/// counters of gold.executions match the events (a batch applied twice would double them).
fn assert_exactly_once(data: &Path, execs: &[Exec]) {
    let s = spine(data);
    let c = read_only(&data.join("observe.db"));
    assert_eq!(
        count(&c, "SELECT count(*) FROM steps", []),
        s.execution_events,
        "one step row per spine event outside the control stream"
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM (SELECT DISTINCT exec_id, seq FROM steps)",
            []
        ),
        s.execution_events,
        "no (exec_id, seq) twice"
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM executions", []),
        execs.len() as u64
    );
    for e in execs {
        let events = events(data, &e.id);
        let of_type = |t: &str| events.iter().filter(|v| v["type"] == t).count() as u64;
        let seqs: Vec<u64> = {
            let mut st = c
                .prepare("SELECT seq FROM steps WHERE exec_id = ?1 ORDER BY log_offset")
                .expect("reading steps");
            st.query_map([&e.id], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .expect("reading steps")
        };
        let want: Vec<u64> = (1..=events.len() as u64).collect();
        assert_eq!(seqs, want, "step rows of {} are its events, in order", e.id);
        let (trace, outcome, steps_n, model_calls, tool_calls): (String, String, u64, u64, u64) = c
            .query_row(
                "SELECT trace_id, outcome, steps_n, model_calls, tool_calls FROM executions
                 WHERE exec_id = ?1",
                [&e.id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap_or_else(|err| panic!("gold row of {}: {err}", e.id));
        assert_eq!(trace, e.trace);
        assert_eq!(outcome, e.outcome, "{}", e.id);
        assert_eq!(steps_n, e.steps, "{}", e.id);
        assert_eq!(model_calls, of_type("model.responded"), "{}", e.id);
        assert_eq!(tool_calls, of_type("tool.result"), "{}", e.id);
    }
}

/// Every row of a projection table, in primary-key order, as text.
fn dump(data: &Path, sql: &str) -> Vec<String> {
    let c = read_only(&data.join("observe.db"));
    let mut st = c.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = st.column_count();
    st.query_map([], |r| {
        (0..n)
            .map(|i| {
                r.get::<_, rusqlite::types::Value>(i)
                    .map(|v| format!("{v:?}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|cols| cols.join("|"))
    })
    .and_then(|rows| rows.collect())
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// "applied N events into WHERE; checkpoint at offset M" → (N, M). WHERE (the projection file's
/// path) may hold digits of its own, so only the two numbers' own places are read.
fn applied_line(line: &str) -> (u64, u64) {
    let number = |s: Option<&str>| -> Option<u64> {
        s?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let n = number(line.strip_prefix("applied "));
    let m = number(line.rsplit_once("checkpoint at offset ").map(|(_, m)| m));
    match (n, m) {
        (Some(n), Some(m)) => (n, m),
        _ => panic!("unexpected catch-up line {line:?}"),
    }
}

#[test]
fn project_follow_applies_new_executions_and_resumes_from_its_checkpoint_after_sigkill() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let data = tmp.path().join("store");
    let mut execs = vec![run(&data, 0)];

    // Start: catch up with what is there, then follow.
    let mut follower = Follower::start(&data, &["project", "--follow"]);
    let line = follower.next_line("reporting the catch-up", |l| l.starts_with("applied "));
    let s = spine(&data);
    assert_eq!(
        applied_line(&line),
        (s.last_offset, s.last_offset + 1),
        "{line}"
    );
    follower.next_line("saying it follows", |l| l.contains("following the spine"));

    // New executions appear while it follows.
    for i in 1..4 {
        execs.push(run(&data, i));
    }
    wait_projected(&data, &execs);
    follower.assert_running();
    assert_exactly_once(&data, &execs);

    // SIGKILL while executions are being appended, then more appends while it is down.
    let before = projected(&data).checkpoint;
    let in_flight: Vec<Child> = (4..6)
        .map(|i| {
            run_cmd(&data, i)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting keel run")
        })
        .collect();
    poll("the follower to apply some of the in-flight events", || {
        (projected(&data).checkpoint > before).then_some(())
    });
    follower.kill();
    for child in in_flight {
        execs.push(parse_run(&ok(child
            .wait_with_output()
            .expect("waiting for keel run"))));
    }
    for i in 6..8 {
        execs.push(run(&data, i));
    }

    // What the killed follower left is a consistent prefix: exactly the events before its
    // checkpoint, and the appends after the kill are not in it.
    let at_kill = projected(&data);
    let s = spine(&data);
    assert!(
        at_kill.checkpoint <= s.last_offset,
        "the later appends are not projected"
    );
    assert_eq!(
        at_kill.steps,
        execution_events_before(&data, at_kill.checkpoint),
        "the projections hold exactly the events before the checkpoint"
    );

    // Restart: it applies exactly the events after its checkpoint, then follows again.
    let mut follower = Follower::start(&data, &["project", "--follow"]);
    let line = follower.next_line("reporting the catch-up", |l| l.starts_with("applied "));
    assert_eq!(
        applied_line(&line),
        (s.last_offset + 1 - at_kill.checkpoint, s.last_offset + 1),
        "resumes from the checkpoint: {line}"
    );
    follower.next_line("saying it follows", |l| l.contains("following the spine"));
    execs.push(run(&data, 8));
    wait_projected(&data, &execs);
    follower.assert_running();
    assert_exactly_once(&data, &execs);
    follower.kill();

    // The followed projections equal a rebuild from the first event.
    let tables = [
        "SELECT * FROM steps ORDER BY log_offset",
        "SELECT * FROM executions ORDER BY exec_id",
    ];
    let followed: Vec<Vec<String>> = tables.iter().map(|q| dump(&data, q)).collect();
    ok(keel(&data, &["project", "--rebuild"]));
    let rebuilt: Vec<Vec<String>> = tables.iter().map(|q| dump(&data, q)).collect();
    assert_eq!(followed, rebuilt);
}

/// Regression test for a race between two projection consumers of one store. `keel sql` (like
/// `keel trace`, `keel slo`, …) catches the projections up itself before it reads, so it applies
/// the same events as a running `keel project --follow`. The projector used to filter a batch by
/// the checkpoint it held in memory, not the one in the file, and the follower's next batch then
/// failed with "UNIQUE constraint failed: steps.log_offset" and exited (seen on the first try
/// with 15 `keel run` + `keel sql` pairs). The SQLite projection store now takes the write lock
/// first and re-reads the checkpoint inside the transaction.
#[test]
fn project_follow_survives_keel_sql_catching_up_concurrently() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let data = tmp.path().join("store");
    let mut execs = vec![run(&data, 0)];
    let mut follower = Follower::start(&data, &["project", "--follow"]);
    follower.next_line("saying it follows", |l| l.contains("following the spine"));
    for i in 1..25 {
        let child = run_cmd(&data, i)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting keel run");
        ok(keel(
            &data,
            &[
                "sql",
                "SELECT count(*) FROM traces.steps",
                "--format",
                "csv",
            ],
        ));
        execs.push(parse_run(&ok(child
            .wait_with_output()
            .expect("waiting for keel run"))));
        follower.assert_running();
    }
    wait_projected(&data, &execs);
    follower.assert_running();
    assert_exactly_once(&data, &execs);
}

/// A real OTLP/HTTP receiver: keel-observe's `otlp_receiver.py` (official OpenTelemetry proto
/// definitions) under the Python that `scripts/test-observe-peers` installs; one JSON line per
/// received span in `out`. Stopped when dropped.
struct Receiver {
    child: Child,
    endpoint: String,
    out: PathBuf,
}

impl Receiver {
    fn start(dir: &Path) -> Receiver {
        let python = std::env::var_os("KEEL_OBSERVE_PY")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/keel-observe-peers/venv/bin/python")
            });
        assert!(
            python.exists(),
            "the OTLP proto decoder is missing at {}: run scripts/test-observe-peers (scripts/test \
             does) and export KEEL_OBSERVE_PY",
            python.display()
        );
        let out = dir.join("spans.jsonl");
        let script = repo().join("crates/observe/tests/otlp_receiver.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(&out)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the OTLP receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("reading the receiver's port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the receiver printed {line:?}, not its port"));
        Receiver {
            child,
            endpoint: format!("http://127.0.0.1:{port}/v1/traces"),
            out,
        }
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("the receiver writes JSON lines"))
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

fn is_root(span: &Value) -> bool {
    span["parent_span_id"] == ""
}

/// Each of `execs` arrived as exactly one trace: one root span `invoke_agent …` whose trace id
/// is Keel's, one `chat` child per model call and one `execute_tool` child per tool call, all
/// parented on the root; and nothing else arrived.
fn assert_exported_once(data: &Path, spans: &[Value], execs: &[Exec]) {
    let roots: Vec<&Value> = spans.iter().filter(|s| is_root(s)).collect();
    assert_eq!(
        roots.len(),
        execs.len(),
        "one root span per execution, none twice: {roots:#?}"
    );
    let mut expected_spans = 0;
    for e in execs {
        let trace: Vec<&Value> = spans.iter().filter(|s| s["trace_id"] == e.trace).collect();
        let root: Vec<&&Value> = trace.iter().filter(|s| is_root(s)).collect();
        assert_eq!(root.len(), 1, "one root span in trace {}", e.trace);
        let root = root[0];
        assert!(
            root["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("invoke_agent ")),
            "{root}"
        );
        assert_eq!(root["attributes"]["keel.outcome"], e.outcome.as_str());
        let children: Vec<&&Value> = trace.iter().filter(|s| !is_root(s)).collect();
        assert!(!children.is_empty(), "trace {} has child spans", e.trace);
        assert!(
            children
                .iter()
                .all(|c| c["parent_span_id"] == root["span_id"]),
            "children of {} hang off its root",
            e.trace
        );
        let events = events(data, &e.id);
        let of_type = |t: &str| events.iter().filter(|v| v["type"] == t).count();
        let named = |prefix: &str| {
            children
                .iter()
                .filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
                .count()
        };
        assert_eq!(named("chat "), of_type("model.called"), "{}", e.id);
        assert_eq!(named("execute_tool "), of_type("tool.called"), "{}", e.id);
        expected_spans += trace.len();
    }
    assert_eq!(spans.len(), expected_spans, "no span outside these traces");
}

/// "exported N executions to …" → N.
fn exported(line: &str) -> usize {
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected export line {line:?}"))
}

#[test]
fn export_otlp_follow_sends_each_ended_execution_once_across_restarts() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let receiver = Receiver::start(tmp.path());
    let data = tmp.path().join("store");
    let mut execs = vec![run(&data, 0)];
    let args = [
        "export",
        "otlp",
        "--follow",
        "--interval-ms",
        "100",
        "--endpoint",
        &receiver.endpoint,
    ];

    let mut exporter = Follower::start(&data, &args);
    for i in 1..3 {
        execs.push(run(&data, i));
    }
    // The line comes after the cursor is saved, so a kill after it loses nothing.
    let mut sent = 0;
    while sent < execs.len() {
        sent +=
            exported(&exporter.next_line("reporting an export", |l| l.starts_with("exported ")));
    }
    assert_eq!(sent, execs.len());
    let spans = poll("the receiver to get every execution", || {
        let spans = receiver.spans();
        (spans.iter().filter(|s| is_root(s)).count() >= execs.len()).then_some(spans)
    });
    assert_exported_once(&data, &spans, &execs);
    exporter.assert_running();
    exporter.kill();

    // One more execution while it is down; a restart sends that one only.
    execs.push(run(&data, 3));
    let mut exporter = Follower::start(&data, &args);
    let line = exporter.next_line("reporting an export", |l| l.starts_with("exported "));
    assert_eq!(exported(&line), 1, "only the new execution: {line}");
    let spans = poll("the receiver to get the new execution", || {
        let spans = receiver.spans();
        spans
            .iter()
            .any(|s| is_root(s) && s["trace_id"] == execs[3].trace)
            .then_some(spans)
    });
    assert_exported_once(&data, &spans, &execs);
    exporter.assert_running();
}

/// The requests the receiver got: (path, headers), in order.
fn requests(receiver: &Receiver) -> Vec<(String, Value)> {
    let file = PathBuf::from(format!("{}.requests.jsonl", receiver.out.display()));
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("the receiver writes JSON lines");
            (
                v["path"].as_str().unwrap_or_default().to_owned(),
                v["headers"].clone(),
            )
        })
        .collect()
}

/// `keel export otlp` with the OpenTelemetry exporter variables set on it and no others.
fn export_with_env(data: &Path, vars: &[(&str, &str)]) -> Output {
    let mut c = keel_cmd(data, &["export", "otlp", "--from-start"]);
    for name in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    ] {
        c.env_remove(name);
    }
    c.envs(vars.iter().copied());
    c.output().expect("running keel export otlp")
}

#[test]
fn export_otlp_honours_the_standard_exporter_variables() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let receiver = Receiver::start(tmp.path());
    let data = tmp.path().join("store");
    let exec = run(&data, 0);
    let base = receiver
        .endpoint
        .strip_suffix("/v1/traces")
        .expect("the receiver's endpoint")
        .to_owned();
    let secret = "s3cret-token";
    let printed = |out: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    // The generic endpoint is a base (`/v1/traces` appended); headers are percent-decoded.
    let generic_headers = format!("Authorization=Bearer%20{secret}, x-keel-test=generic");
    let out = export_with_env(
        &data,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("{base}/")),
            ("OTEL_EXPORTER_OTLP_HEADERS", &generic_headers),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "5000"),
        ],
    );
    let text = ok(out.clone());
    assert!(
        !printed(&out).contains(secret),
        "a header value was printed: {text}"
    );
    let got = requests(&receiver);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "/v1/traces");
    assert_eq!(got[0].1["authorization"], format!("Bearer {secret}"));
    assert_eq!(got[0].1["x-keel-test"], "generic");
    let roots: Vec<Value> = receiver.spans().into_iter().filter(is_root).collect();
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0]["trace_id"], exec.trace);

    // The traces endpoint is used as is, and the traces headers replace the generic ones.
    let out = export_with_env(
        &data,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                &format!("{base}/custom/traces"),
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", &generic_headers),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-keel-test=traces"),
        ],
    );
    ok(out);
    let got = requests(&receiver);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].0, "/custom/traces");
    assert_eq!(got[1].1["x-keel-test"], "traces");
    assert!(got[1].1.get("authorization").is_none(), "{:?}", got[1].1);

    // A malformed list fails before anything is sent, naming the variable and the entry but
    // not its text; so do a bad timeout and no endpoint at all.
    let bad = format!("authorization=Bearer%20{secret},{secret}-without-equals");
    for (vars, needles) in [
        (
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", base.as_str()),
                ("OTEL_EXPORTER_OTLP_HEADERS", bad.as_str()),
            ],
            vec!["OTEL_EXPORTER_OTLP_HEADERS", "entry 2"],
        ),
        (
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", base.as_str()),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
            ],
            vec!["OTEL_EXPORTER_OTLP_TIMEOUT", "milliseconds"],
        ),
        (vec![], vec!["--endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT"]),
        (
            vec![(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                &*format!(
                    "http://user:{secret}@{}",
                    base.trim_start_matches("http://")
                ),
            )],
            vec!["credentials", "OTEL_EXPORTER_OTLP_HEADERS"],
        ),
    ] {
        let out = export_with_env(&data, &vars);
        let text = printed(&out);
        assert!(!out.status.success(), "{vars:?}: {text}");
        for n in needles {
            assert!(text.contains(n), "{vars:?}: {n:?} not in {text}");
        }
        assert!(!text.contains(secret), "a header value was printed: {text}");
    }
    assert_eq!(requests(&receiver).len(), 2, "nothing sent by the failures");
}
