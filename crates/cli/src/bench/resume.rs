//! `keel bench resume`: how fast executions come back after their worker dies. N executions of
//! the 40-step workload of `keel bench step-overhead` (instant scripted model, no-op read-only
//! tool, every step durable) are driven by a `keel` worker process until they are half-way,
//! then the process is SIGKILLed; a fresh worker process is started and the figures are the
//! time from its spawn to the first new `step.completed` on the spine, and to the moment every
//! execution that was in flight has completed a new step (all resumed). Event timestamps are
//! written by the worker, so the figures include its start-up (opening the store, loading the
//! configuration), as a restart in production would.
//!
//! The worker is this binary (`keel bench resume-worker`, hidden): the runtime's
//! [`keel_runtime::worker::drain`] with the bench's no-op builtin wired, every in-flight
//! execution driven at once.

use super::spine::Scratch;
use super::steps::{FILES, STEPS, strategy};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use keel_core::ExecId;
use keel_core::payload::Payload;
use keel_runtime::embedded::{Config, Embedded};
use keel_spine::{EventLog, SqliteLog, SqliteOptions};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The strategy every execution runs (every step durable).
const MODE: &str = "every_step";
/// How long the bench waits for a worker to reach a point before it gives up.
const PATIENCE: Duration = Duration::from_secs(600);
/// Events read per poll of the spine.
const POLL_BATCH: usize = 65_536;

/// Writes the bench's configuration under `dir` and returns it.
fn write_config(dir: &Path) -> anyhow::Result<Config> {
    for (file, text) in FILES {
        let p = dir.join(file);
        std::fs::create_dir_all(p.parent().unwrap_or(dir))?;
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    std::fs::create_dir_all(dir.join("strategies"))?;
    std::fs::write(dir.join(format!("strategies/{MODE}.yaml")), strategy(MODE))?;
    Ok(config_in(dir))
}

fn config_in(dir: &Path) -> Config {
    Config {
        tools: dir.join("tools"),
        strategies: dir.join("strategies"),
        prices: dir.join("prices.toml"),
    }
}

/// The embedded runtime with the bench's no-op builtin.
fn open(store: &Path, config: &Config) -> anyhow::Result<Embedded> {
    Ok(Embedded::open_with(store, config, |b| {
        b.register(
            "noop",
            false,
            Arc::new(|_args, _key| Box::pin(async { Ok(json!({})) })),
        );
    })?)
}

/// `keel bench resume-worker`: the worker process the bench kills and restarts. Drives every
/// unfinished execution, `concurrency` at a time, and looks again for new ones until killed.
pub async fn worker(store: &Path, config_dir: &Path, concurrency: usize) -> anyhow::Result<()> {
    let env = open(store, &config_in(config_dir))?;
    loop {
        keel_runtime::worker::drain(&env.agent, &env.strategies, concurrency).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Parses `--executions`: a comma list of counts (`1,10000`, `10k`).
fn sizes(list: &str) -> anyhow::Result<Vec<usize>> {
    list.split(',')
        .map(|s| {
            let s = s.trim();
            let (digits, scale) = match s.strip_suffix(['k', 'K']) {
                Some(d) => (d, 1_000),
                None => (s, 1),
            };
            digits
                .parse::<usize>()
                .ok()
                .and_then(|n| n.checked_mul(scale))
                .filter(|n| (1..=1_000_000).contains(n))
                .with_context(|| {
                    format!("--executions: {s:?} is not a count between 1 and 1000000")
                })
        })
        .collect()
}

/// What one size measured.
struct Figures {
    executions: usize,
    in_flight: usize,
    steps_at_kill: f64,
    first_step_ms: f64,
    all_resumed_ms: f64,
}

pub async fn run(data: &Path, json_out: bool, list: &str) -> anyhow::Result<()> {
    let sizes = sizes(list)?;
    let mut all = Vec::new();
    for n in sizes {
        if !json_out {
            eprintln!("measuring resume of {n} execution(s)…");
        }
        all.push(measure(data, n, json_out).await?);
    }
    if json_out {
        let rows: Vec<_> = all
            .iter()
            .map(|f| {
                json!({
                    "executions": f.executions,
                    "in_flight": f.in_flight,
                    "steps_at_kill_mean": (f.steps_at_kill * 10.0).round() / 10.0,
                    "first_step_ms": (f.first_step_ms * 10.0).round() / 10.0,
                    "all_resumed_ms": (f.all_resumed_ms * 10.0).round() / 10.0,
                })
            })
            .collect();
        println!("{}", json!({ "steps_per_execution": STEPS, "sizes": rows }));
        return Ok(());
    }
    println!(
        "resume after SIGKILL ({STEPS}-step executions killed half-way; time from the new worker's spawn)"
    );
    println!(
        "  {:>10} {:>10} {:>14} {:>16} {:>16}",
        "executions", "in flight", "steps at kill", "first new step", "all resumed"
    );
    for f in &all {
        println!(
            "  {:>10} {:>10} {:>14.1} {:>13.1} ms {:>13.1} ms",
            f.executions, f.in_flight, f.steps_at_kill, f.first_step_ms, f.all_resumed_ms
        );
    }
    Ok(())
}

/// Kills the child when dropped, so an error never leaves a worker running.
struct Worker(Child);

impl Worker {
    fn spawn(store: &Path, config_dir: &Path, concurrency: usize) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the keel binary")?;
        let child = Command::new(exe)
            .arg("--data")
            .arg(store)
            .args(["bench", "resume-worker", "--files"])
            .arg(config_dir)
            .args(["--concurrency", &concurrency.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a worker process")?;
        Ok(Self(child))
    }

    fn exited(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(Some(_)))
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Follows the spine from an offset: steps completed per execution, with the time of the
/// first one seen.
struct Follow {
    next: u64,
    steps: HashMap<ExecId, u32>,
    first: HashMap<ExecId, DateTime<Utc>>,
    ended: std::collections::HashSet<ExecId>,
}

impl Follow {
    fn new(next: u64) -> Self {
        Self {
            next,
            steps: HashMap::new(),
            first: HashMap::new(),
            ended: std::collections::HashSet::new(),
        }
    }

    /// Reads what is new; returns whether anything was.
    async fn poll(&mut self, log: &SqliteLog) -> anyhow::Result<bool> {
        let mut any = false;
        loop {
            let batch = log.read_all(self.next, POLL_BATCH).await?;
            let Some(last) = batch.last() else {
                return Ok(any);
            };
            self.next = last.offset + 1;
            any = true;
            for c in batch {
                match c.event.payload {
                    Payload::StepCompleted(_) => {
                        *self.steps.entry(c.event.exec_id).or_default() += 1;
                        self.first.entry(c.event.exec_id).or_insert(c.event.ts);
                    }
                    Payload::ExecFinished(_) => {
                        self.ended.insert(c.event.exec_id);
                    }
                    _ => {}
                }
            }
        }
    }
}

async fn measure(data: &Path, n: usize, quiet: bool) -> anyhow::Result<Figures> {
    let scratch = Scratch(data.join(format!("bench-{}", uuid::Uuid::new_v4().simple())));
    let cfg = scratch.0.join("config");
    let config = write_config(&cfg)?;
    let store: PathBuf = scratch.0.join("store");
    {
        let env = open(&store, &config)?;
        let s = env.strategies.get(MODE).context("bench strategy")?.clone();
        let (agent, s) = (&env.agent, &s);
        // Concurrent starts share group commits: 10 000 starts take a fraction of a second.
        let _: Vec<ExecId> = futures::stream::iter(0..n)
            .map(|i| async move { agent.start(s, &format!("bench-{}", i % 8), "noop").await })
            .buffer_unordered(256)
            .try_collect()
            .await?;
    }
    let log = SqliteLog::open(store.join("spine.db"), SqliteOptions::default())?;
    let mut seen = Follow::new(1);

    // Half-way: the worker runs until the executions have done half their steps on average.
    let half = (n as u64) * u64::from(STEPS / 2);
    let mut worker = Worker::spawn(&store, &cfg, n)?;
    let started = Instant::now();
    loop {
        seen.poll(&log).await?;
        let done: u64 = seen.steps.values().map(|&s| u64::from(s)).sum();
        if done >= half {
            break;
        }
        if worker.exited() {
            bail!("the first worker exited before the executions were half-way");
        }
        if started.elapsed() > PATIENCE {
            bail!("the executions were not half-way after {PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    worker.kill();
    seen.poll(&log).await?;
    let in_flight: Vec<ExecId> = seen
        .steps
        .keys()
        .filter(|e| !seen.ended.contains(e))
        .copied()
        .collect();
    if in_flight.is_empty() {
        bail!("every execution finished before the worker was killed");
    }
    let steps_at_kill = in_flight
        .iter()
        .map(|e| f64::from(seen.steps.get(e).copied().unwrap_or(0)))
        .sum::<f64>()
        / in_flight.len() as f64;
    if !quiet {
        eprintln!(
            "  killed the worker with {} execution(s) in flight at step {steps_at_kill:.1} on average; restarting…",
            in_flight.len()
        );
    }

    // The restart.
    let mut after = Follow::new(seen.next);
    // The worker stamps its events with the same system clock.
    let spawned = keel_spine::clock::Clock::now(&keel_spine::clock::SystemClock);
    let mut worker = Worker::spawn(&store, &cfg, n)?;
    let started = Instant::now();
    loop {
        if after.poll(&log).await? && in_flight.iter().all(|e| after.first.contains_key(e)) {
            break;
        }
        if worker.exited() {
            bail!("the restarted worker exited before every execution resumed");
        }
        if started.elapsed() > PATIENCE {
            bail!(
                "{} of {} executions resumed after {PATIENCE:?}",
                after.first.len(),
                in_flight.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    worker.kill();
    let since = |t: &DateTime<Utc>| {
        (*t - spawned)
            .num_microseconds()
            .map_or(f64::NAN, |us| us as f64 / 1000.0)
    };
    let times: Vec<f64> = in_flight
        .iter()
        .filter_map(|e| after.first.get(e))
        .map(since)
        .collect();
    Ok(Figures {
        executions: n,
        in_flight: in_flight.len(),
        steps_at_kill,
        first_step_ms: times.iter().copied().fold(f64::INFINITY, f64::min),
        all_resumed_ms: times.iter().copied().fold(0.0, f64::max),
    })
}

#[cfg(test)]
mod tests {
    use super::sizes;

    #[test]
    fn sizes_parse_counts_and_refuse_nonsense() {
        assert_eq!(sizes("1,10000").unwrap(), [1, 10_000]);
        assert_eq!(sizes("10k").unwrap(), [10_000]);
        assert!(sizes("0").is_err());
        assert!(sizes("x").is_err());
        assert!(sizes("99999999999999999999k").is_err());
    }
}
