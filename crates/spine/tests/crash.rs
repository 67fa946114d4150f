//! Crash safety: a child process appends in a loop (several concurrent appenders, batches of 1–4
//! events, some executions ending, others resumed from the previous run) and is killed with
//! SIGKILL at random moments. After every kill the store re-opens and must hold every append the
//! child saw acknowledged, with gapless seqs, whole batches only, and every event decoding and
//! folding legally.
//!
//! The child is this same test binary, re-run with the ignored `crash_child` test selected.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use keel_core::ExecutionState;
use keel_core::payload::{Outcome, Payload, StepCompleted};
use keel_spine::{EventLog, SqliteLog, SqliteOptions, clock};
use keel_testkit::ExecBuilder;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const CHILD_ENV: &str = "KEEL_CRASH_CHILD_STORE";
const KILLS: usize = 60;
const APPENDERS: usize = 4;

#[test]
#[ignore = "the child side of sigkill_at_random_moments_loses_nothing_acknowledged"]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let log = SqliteLog::open(&path, SqliteOptions::default()).unwrap();
        let mut resumable = Vec::new();
        for summary in log.list_unfinished().await.unwrap() {
            let events = log.read(summary.exec_id, 1).await.unwrap();
            let step = events.last().map_or(0, |e| e.step_n);
            resumable
                .push(ExecBuilder::new(summary.exec_id, "acme").resume_at(summary.last_seq, step));
        }
        let tasks: Vec<_> = (0..APPENDERS)
            .map(|i| {
                let log = log.clone();
                let mine: Vec<_> = resumable
                    .iter()
                    .skip(i)
                    .step_by(APPENDERS)
                    .cloned()
                    .collect();
                tokio::spawn(appender(log, mine))
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

async fn appender(log: SqliteLog, mut queue: Vec<ExecBuilder>) {
    let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
    loop {
        let mut b = match queue.pop() {
            Some(b) => b,
            None => ExecBuilder::new(clock::new_exec_id(), "acme").started("crash loop"),
        };
        let batch_id = uuid::Uuid::new_v4().simple().to_string();
        let k = if b.events().is_empty() {
            rng.random_range(1..=4)
        } else {
            0
        };
        for i in 0..k {
            b.push(Payload::StepCompleted(StepCompleted {
                summary: Some(format!("{batch_id}/{k}/{i}")),
            }));
        }
        if rng.random_ratio(1, 12) {
            b = b.finished(Outcome::Success);
        }
        let batch = b.take();
        let ends = batch.iter().any(|e| e.event_type().is_terminal());
        let exec = batch[0].exec_id;
        let ack = log.append(exec, batch[0].seq - 1, &batch).await.unwrap();
        let mut out = std::io::stdout().lock();
        writeln!(out, "ack {exec} {}", ack.last_seq).unwrap();
        out.flush().unwrap();
        drop(out);
        if !ends {
            queue.push(b);
        }
    }
}

fn run_child_and_kill(exe: &Path, store: &Path, rng: &mut impl Rng) -> Vec<String> {
    let mut child = Command::new(exe)
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, store)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("ack ") {
                let _ = tx.send(());
                lines.push(line);
            }
        }
        lines
    });
    if rng.random_ratio(1, 8) {
        // Sometimes kill early, while the child may still be opening or migrating the store.
        std::thread::sleep(Duration::from_millis(rng.random_range(0..15)));
    } else {
        // Otherwise let it acknowledge something first, then kill at a random moment.
        let _ = rx.recv_timeout(Duration::from_secs(30));
        std::thread::sleep(Duration::from_micros(rng.random_range(0..40_000)));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap()
}

async fn verify(store: &Path, acked: &HashMap<String, u64>) -> usize {
    let log = SqliteLog::open(store, SqliteOptions::default()).unwrap();
    let all = log.read_all(1, usize::MAX >> 1).await.unwrap();
    assert!(
        all.windows(2).all(|w| w[0].offset < w[1].offset),
        "offsets increase"
    );
    let mut per_exec: BTreeMap<String, Vec<keel_core::Event>> = BTreeMap::new();
    for c in &all {
        per_exec
            .entry(c.event.exec_id.to_string())
            .or_default()
            .push(c.event.clone());
    }
    for (exec, &seq) in acked {
        let stored = per_exec.get(exec).map_or(0, Vec::len) as u64;
        assert!(
            stored >= seq,
            "execution {exec}: seq {seq} was acknowledged but only {stored} events survived"
        );
    }
    let mut batches: HashMap<String, (usize, usize)> = HashMap::new();
    for (exec, events) in &per_exec {
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1, "execution {exec} is gapless");
            if let Payload::StepCompleted(StepCompleted { summary: Some(s) }) = &e.payload {
                let mut parts = s.split('/');
                let id = parts.next().unwrap().to_owned();
                let k: usize = parts.next().unwrap().parse().unwrap();
                batches.entry(id).or_insert((k, 0)).1 += 1;
            }
        }
        ExecutionState::fold(events).unwrap_or_else(|e| panic!("execution {exec} folds: {e}"));
        assert_eq!(log.read(events[0].exec_id, 1).await.unwrap(), *events);
    }
    for (id, (k, found)) in batches {
        assert_eq!(k, found, "batch {id} is whole: {found} of {k} events");
    }
    all.len()
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("spine.db");
    let exe = std::env::current_exe().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rng = rand::rng();
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut total_acks = 0;
    let mut stored = 0;
    for _ in 0..KILLS {
        for line in run_child_and_kill(&exe, &store, &mut rng) {
            let mut parts = line.split_whitespace().skip(1);
            let (Some(exec), Some(seq)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(seq) = seq.parse::<u64>() else {
                continue;
            }; // a line cut by the kill
            total_acks += 1;
            let e = acked.entry(exec.to_owned()).or_default();
            *e = (*e).max(seq);
        }
        stored = rt.block_on(verify(&store, &acked));
    }
    eprintln!("{KILLS} kills, {total_acks} acknowledged appends, {stored} events stored");
    assert!(
        total_acks >= KILLS,
        "the child made progress between kills ({total_acks} acks)"
    );
}
