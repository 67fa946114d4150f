//! `keel bench spine`: how fast the embedded spine appends with durability on, against the
//! physical limit measured in the same run (one fsync on the same disk).
//!
//! One durable commit per append cannot beat 1/fsync appends/s; batching and group commit are
//! the only honest ways past it, and the figures show how close each path gets.

use super::workload::{Workload, execution_with_steps};
use anyhow::Context;
use keel_core::{Event, ExecutionState};
use keel_spine::{Durability, EventLog, SqliteLog, SqliteOptions, clock};
use serde_json::json;
use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub(super) struct Scratch(pub(super) PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn run(
    data: &Path,
    json_out: bool,
    seconds: f64,
    only: Option<&str>,
) -> anyhow::Result<()> {
    let scratch = Scratch(data.join(format!("bench-{}", uuid::Uuid::new_v4().simple())));
    std::fs::create_dir_all(&scratch.0)
        .with_context(|| format!("creating {}", scratch.0.display()))?;
    let budget = Duration::try_from_secs_f64(seconds.max(0.1))
        .map_err(|_| anyhow::anyhow!("--seconds {seconds}: not a number of seconds"))?;
    let progress = |what: &str| {
        if !json_out {
            eprintln!("measuring {what}…");
        }
    };

    if let Some(name) = only {
        let (durability, appenders, batch) = match name {
            "single" => (Durability::Full, 1, 1),
            "batch" => (Durability::Full, 1, 100),
            "conc8" => (Durability::Full, 8, 1),
            "conc64" => (Durability::Full, 64, 1),
            "nosync" => (Durability::Off, 1, 100),
            other => anyhow::bail!("unknown scenario {other:?}"),
        };
        let r = append_rate(&scratch.0, name, durability, appenders, batch, budget).await?;
        println!(
            "{name}: {:.0} events/s, {:.1} appends/commit",
            r.per_s, r.appends_per_commit
        );
        return Ok(());
    }
    // The disk's fsync latency drifts with load, so it is sampled before every durable
    // scenario and the median of all samples is the limit the figures are compared with.
    let mut probe = FsyncProbe::open(&scratch.0.join("fsync.probe"))?;
    progress("single-event appends");
    probe.sample(60)?;
    let single = append_rate(&scratch.0, "single", Durability::Full, 1, 1, budget).await?;
    progress("batched appends (100)");
    probe.sample(60)?;
    let batch100 = append_rate(&scratch.0, "batch", Durability::Full, 1, 100, budget).await?;
    progress("8 concurrent appenders");
    probe.sample(60)?;
    let conc8 = append_rate(&scratch.0, "conc8", Durability::Full, 8, 1, budget).await?;
    progress("64 concurrent appenders");
    probe.sample(60)?;
    let conc64 = append_rate(&scratch.0, "conc64", Durability::Full, 64, 1, budget).await?;
    probe.sample(60)?;
    progress("batched appends (100), durability off");
    let nosync = append_rate(&scratch.0, "nosync", Durability::Off, 1, 100, budget).await?;
    progress("fold of a 40-step execution");
    let fold_us = fold_40_steps_us();
    let fsync_us = probe.median_us();

    if json_out {
        let figures = json!({
            "fsync_us": round1(fsync_us),
            "append_single_per_s": single.per_s.round(),
            "append_batch100_per_s": batch100.per_s.round(),
            "append_concurrent8_per_s": conc8.per_s.round(),
            "append_concurrent64_per_s": conc64.per_s.round(),
            "append_batch100_nosync_per_s": nosync.per_s.round(),
            "fold_40_steps_us": round1(fold_us),
        });
        println!("{figures}");
        return Ok(());
    }
    let limit = 1e6 / fsync_us; // commits/s one fsync each allows
    println!("spine bench (embedded SQLite, durability on unless noted), {seconds}s per scenario");
    println!(
        "  fsync latency on this disk            {fsync_us:>12.1} µs   → limit {limit:.0} commits/s"
    );
    let row = |name: &str, r: &Rate, events_per_append: f64| {
        let per_commit = r.appends_per_commit * events_per_append;
        println!(
            "  {name:<38}{:>12.0} /s   {:>5.1} events/commit, {:>4.0}% of {per_commit:.1} × 1/fsync",
            r.per_s,
            per_commit,
            100.0 * r.per_s / (limit * per_commit)
        );
    };
    row("append, single event", &single, 1.0);
    row("append, batch of 100", &batch100, 100.0);
    row("append, 8 concurrent appenders", &conc8, 1.0);
    row("append, 64 concurrent appenders", &conc64, 1.0);
    println!(
        "  {:<38}{:>12.1} ×  single",
        "  group-commit gain at 64",
        conc64.per_s / single.per_s
    );
    println!(
        "  {:<38}{:>12.0} /s   (CPU path, no fsync)",
        "append, batch of 100, durability off", nosync.per_s
    );
    println!("  {:<38}{fold_us:>12.1} µs", "fold of a 40-step execution");
    Ok(())
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Latency of one plain fsync on the store's disk: write 4 KiB in place, fsync, time the fsync.
pub(super) struct FsyncProbe {
    file: std::fs::File,
    pub(super) samples: Vec<f64>,
}

impl FsyncProbe {
    pub(super) fn open(path: &Path) -> anyhow::Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.write_all(&[0x5Au8; 4096])?;
        file.sync_all()?;
        Ok(Self {
            file,
            samples: Vec::new(),
        })
    }

    pub(super) fn sample(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            self.file.seek(SeekFrom::Start(0))?;
            self.file.write_all(&[0x5Au8; 4096])?;
            let start = Instant::now();
            self.file.sync_all()?;
            self.samples.push(start.elapsed().as_secs_f64() * 1e6);
        }
        Ok(())
    }

    pub(super) fn median_us(&mut self) -> f64 {
        median(&mut self.samples)
    }
}

pub(super) fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Events/s appended by `appenders` concurrent tasks, each on its own execution, each append
/// carrying `batch` events, for `budget` of wall time. Only append calls are on the clock for a
/// single appender; concurrent runs are timed end to end.
async fn append_rate(
    dir: &Path,
    name: &str,
    durability: Durability,
    appenders: usize,
    batch: usize,
    budget: Duration,
) -> anyhow::Result<Rate> {
    let log = SqliteLog::open(dir.join(format!("{name}.db")), SqliteOptions { durability })?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|_| {
            let log = log.clone();
            tokio::spawn(async move { appender(&log, batch, budget).await })
        })
        .collect();
    let mut events = 0u64;
    let mut busy = Duration::ZERO;
    for t in tasks {
        let (n, spent) = t.await??;
        events += n;
        busy = busy.max(spent);
    }
    let elapsed = if appenders == 1 {
        busy
    } else {
        started.elapsed()
    };
    let stats = log.stats();
    let groups = stats.groups.load(Ordering::Relaxed).max(1);
    Ok(Rate {
        per_s: events as f64 / elapsed.as_secs_f64(),
        appends_per_commit: stats.requests.load(Ordering::Relaxed) as f64 / groups as f64,
    })
}

/// One scenario's result.
pub(super) struct Rate {
    /// Events appended per second.
    pub(super) per_s: f64,
    /// Append calls per committed transaction (the group-commit factor).
    pub(super) appends_per_commit: f64,
}

pub(super) async fn appender(
    log: &dyn EventLog,
    batch: usize,
    budget: Duration,
) -> anyhow::Result<(u64, Duration)> {
    let exec = clock::new_exec_id();
    let mut w = Workload::new(exec, "bench");
    w.started("bench");
    let mut pending: VecDeque<Event> = w.take().into();
    let mut last_seq = 0;
    let mut appended = 0u64;
    let mut spent = Duration::ZERO;
    while spent < budget {
        while pending.len() < batch {
            w.typical_step();
            pending.extend(w.take());
        }
        let events: Vec<Event> = pending.drain(..batch).collect();
        let start = Instant::now();
        let ack = log.append(exec, last_seq, &events).await?;
        spent += start.elapsed();
        last_seq = ack.last_seq;
        appended += events.len() as u64;
    }
    Ok((appended, spent))
}

/// Median µs to fold a finished 40-step execution (202 events) from scratch.
fn fold_40_steps_us() -> f64 {
    let events = execution_with_steps(clock::new_exec_id(), 40);
    let mut samples = Vec::with_capacity(500);
    for _ in 0..500 {
        let start = Instant::now();
        let state = ExecutionState::fold(&events);
        samples.push(start.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(state.is_ok());
    }
    median(&mut samples)
}
