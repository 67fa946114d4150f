//! `keel bench resume`: how fast executions come back after their worker dies. N executions of
//! the 40-step workload of `keel bench step-overhead` (instant scripted model, no-op read-only
//! tool, every step durable) are driven by a `keel` worker process until they are half-way,
//! then the process is SIGKILLed; fresh worker processes are started and the figures are the
//! time from their spawn to the first new `step.completed` on the spine, and to the moment every
//! execution that was in flight has completed a new step (all resumed). Event timestamps are
//! written by the workers, so the figures include their start-up (opening the store, loading
//! the configuration), as a restart in production would.
//!
//! The workers are this binary (`keel bench resume-worker`, hidden): the runtime's
//! [`keel_runtime::worker::drain`] under leases, as `keel worker` runs it, with the bench's no-op
//! builtin wired, every execution it claims driven at once. On the embedded spine one worker
//! restarts; with `--backend postgres` (a throwaway server, fsync on) three workers take the
//! dead one's executions over, each claiming a third. The fsync (or PostgreSQL's single-row
//! commit) is measured in the same run.

use super::spine::{FsyncProbe, Scratch};
use super::spine_pg::{CommitProbe, check_fsync};
use super::steps::{FILES, STEPS, strategy};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use keel_core::ExecId;
use keel_core::payload::Payload;
use keel_memory::pgserver::PgServer;
use keel_runtime::embedded::{Config, Embedded};
use keel_spine::EventLog;
use keel_spine::lease::LeasedLog;
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

/// The runtime with the bench's no-op builtin, on the backends the process's configuration
/// names (the embedded spine under `store`, or `spine.url`), driving through `drive` if given.
async fn open(
    store: &Path,
    config: &Config,
    settings: &crate::config::Config,
    drive: Option<(usize, &str)>,
) -> anyhow::Result<(Embedded, Option<Arc<LeasedLog>>)> {
    let mut backends = settings.backends(store, &config.strategies).await?;
    let view = drive.map(|(claim, host)| {
        let spine = backends.spine.store.clone();
        let host = host.to_owned();
        let view = Arc::new(
            LeasedLog::over(
                spine.clone(),
                spine.leases(),
                &keel_runtime::worker::lease_owner(&host),
                Duration::from_secs(settings.workers_lease_secs),
                claim,
            )
            .take_over_dead(Box::new(move |owner| {
                crate::agents::worker::dead_here(&host, owner)
            })),
        );
        backends.drive = Some(view.clone());
        view
    });
    let env = Embedded::open_wired(store, config, backends, |b| {
        b.register(
            "noop",
            false,
            Arc::new(|_args, _key| Box::pin(async { Ok(json!({})) })),
        );
    })?;
    Ok((env, view))
}

/// `keel bench resume-worker`: a worker process the bench kills and restarts. Claims at most
/// `concurrency` executions (leases, as `keel worker` does) and drives them all at once, and
/// looks again for new ones until killed.
pub async fn worker(store: &Path, config_dir: &Path, concurrency: usize) -> anyhow::Result<()> {
    let settings = crate::config::current();
    let host = crate::agents::worker::hostname();
    let (env, view) = open(
        store,
        &config_in(config_dir),
        settings,
        Some((concurrency, &host)),
    )
    .await?;
    let _beat = view.map(|v| crate::agents::worker::heartbeat(&v, "keel bench resume-worker"));
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
    /// When half the executions in flight had made a new step.
    median_resumed_ms: f64,
    all_resumed_ms: f64,
}

/// The spine the bench runs on.
enum Backend {
    /// SQLite under the scratch directory; one worker restarts.
    Embedded,
    /// A PostgreSQL database; `workers` workers take the dead one's executions over.
    Postgres { url: String, workers: usize },
}

pub async fn run(data: &Path, json_out: bool, list: &str, backend: &str) -> anyhow::Result<()> {
    let sizes = sizes(list)?;
    let progress = |what: &str| {
        if !json_out {
            eprintln!("{what}");
        }
    };
    let (_server, backend) = match backend {
        "embedded" => (None, Backend::Embedded),
        "postgres" => {
            progress("starting a throwaway PostgreSQL (fsync on)…");
            let server = PgServer::start_durable()?;
            let url = server.create_database("keel_bench_resume").await?;
            check_fsync(&url).await?;
            (Some(server), Backend::Postgres { url, workers: 3 })
        }
        other => bail!("--backend {other:?}: expected embedded or postgres"),
    };
    let mut all = Vec::new();
    for n in sizes {
        progress(&format!("measuring resume of {n} execution(s)…"));
        all.push(measure(data, n, &backend, json_out).await?);
    }
    // The durability floor, measured after the runs on the same disk (or server).
    let (floor_name, floor_us) = match &backend {
        Backend::Embedded => {
            let scratch = Scratch(data.join(format!("bench-{}", uuid::Uuid::new_v4().simple())));
            std::fs::create_dir_all(&scratch.0)?;
            let mut probe = FsyncProbe::open(&scratch.0.join("fsync.probe"))?;
            probe.sample(200)?;
            ("fsync", probe.median_us())
        }
        Backend::Postgres { url, .. } => {
            let mut probe = CommitProbe::open(url).await?;
            probe.sample(200).await?;
            ("pg_commit", probe.median_us())
        }
    };
    // Transactions PostgreSQL ended as deadlocks during the runs: each failed a group of
    // appends (retried by its drains a second later) or a heartbeat.
    let deadlocks = match &backend {
        Backend::Embedded => None,
        Backend::Postgres { url, .. } => Some(deadlocks(url).await?),
    };
    let (backend_name, workers) = match &backend {
        Backend::Embedded => ("embedded", 1),
        Backend::Postgres { workers, .. } => ("postgres", *workers),
    };
    if json_out {
        let rows: Vec<_> = all
            .iter()
            .map(|f| {
                json!({
                    "executions": f.executions,
                    "in_flight": f.in_flight,
                    "steps_at_kill_mean": round1(f.steps_at_kill),
                    "first_step_ms": round1(f.first_step_ms),
                    "median_resumed_ms": round1(f.median_resumed_ms),
                    "all_resumed_ms": round1(f.all_resumed_ms),
                })
            })
            .collect();
        let mut out = json!({
            "backend": backend_name,
            "workers": workers,
            "steps_per_execution": STEPS,
            format!("{floor_name}_us"): round1(floor_us),
            "sizes": rows,
        });
        if let (Some(n), Some(o)) = (deadlocks, out.as_object_mut()) {
            o.insert("pg_deadlocks".into(), json!(n));
        }
        println!("{out}");
        return Ok(());
    }
    println!(
        "resume after SIGKILL on the {backend_name} spine ({STEPS}-step executions killed half-way; time from the spawn of {workers} new worker(s))"
    );
    println!(
        "  {:>10} {:>10} {:>14} {:>16} {:>16} {:>16}",
        "executions", "in flight", "steps at kill", "first new step", "half resumed", "all resumed"
    );
    for f in &all {
        println!(
            "  {:>10} {:>10} {:>14.1} {:>13.1} ms {:>13.1} ms {:>13.1} ms",
            f.executions,
            f.in_flight,
            f.steps_at_kill,
            f.first_step_ms,
            f.median_resumed_ms,
            f.all_resumed_ms
        );
    }
    println!("  {floor_name} (median, same run): {floor_us:.1} µs");
    if let Some(n) = deadlocks {
        println!("  deadlocks PostgreSQL detected (same run): {n}");
    }
    Ok(())
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Kills the child when dropped, so an error never leaves a worker running.
struct Worker(Child);

impl Worker {
    fn spawn(
        store: &Path,
        config_dir: &Path,
        concurrency: usize,
        backend: &Backend,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the keel binary")?;
        let mut command = Command::new(exe);
        command
            .arg("--data")
            .arg(store)
            .args(["bench", "resume-worker", "--files"])
            .arg(config_dir)
            .args(["--concurrency", &concurrency.to_string()])
            // The bench's own settings, whatever keel.toml is where it runs.
            .arg("--config")
            .arg(config_dir.join("keel.toml"))
            .env_remove("KEEL_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        match backend {
            Backend::Embedded => command.env_remove("KEEL_SPINE_URL"),
            Backend::Postgres { url, .. } => command.env("KEEL_SPINE_URL", url),
        };
        let child = command.spawn().context("starting a worker process")?;
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
    async fn poll(&mut self, log: &dyn EventLog) -> anyhow::Result<bool> {
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

async fn measure(data: &Path, n: usize, backend: &Backend, quiet: bool) -> anyhow::Result<Figures> {
    let scratch = Scratch(data.join(format!("bench-{}", uuid::Uuid::new_v4().simple())));
    let cfg = scratch.0.join("config");
    let config = write_config(&cfg)?;
    // An empty keel.toml: the workers' settings are the defaults plus KEEL_SPINE_URL.
    std::fs::write(cfg.join("keel.toml"), "")?;
    let store: PathBuf = scratch.0.join("store");
    let mut settings = crate::config::Config::embedded_default(store.clone());
    if let Backend::Postgres { url, .. } = backend {
        settings.spine_postgres = Some(url.clone());
    }
    let (env, _) = open(&store, &config, &settings, None).await?;
    let log: Arc<dyn EventLog> = env.log.clone();
    // Where this size's events start (a PostgreSQL database is shared by every size).
    let mut seen = Follow::new(keel_runtime::worker::head_offset(&*log).await? + 1);
    {
        let s = env.strategies.get(MODE).context("bench strategy")?.clone();
        let (agent, s) = (&env.agent, &s);
        // Concurrent starts share group commits: 10 000 starts take a fraction of a second.
        // Started without a lease: claimable by the first worker at once.
        let _: Vec<ExecId> = futures::stream::iter(0..n)
            .map(|i| async move { agent.start(s, &format!("bench-{}", i % 8), "noop").await })
            .buffer_unordered(256)
            .try_collect()
            .await?;
    }

    // Half-way: the worker runs until the executions have done half their steps on average.
    let half = (n as u64) * u64::from(STEPS / 2);
    let mut worker = Worker::spawn(&store, &cfg, n, backend)?;
    let started = Instant::now();
    loop {
        seen.poll(&*log).await?;
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
    seen.poll(&*log).await?;
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

    // The restart: each new worker drives an equal share at once (a worker whose claim comes
    // back short, one tenant having less than its part, claims again as soon as it has started
    // what it holds).
    let (workers, share) = match backend {
        Backend::Embedded => (1, in_flight.len()),
        Backend::Postgres { workers, .. } => {
            (*workers, in_flight.len().div_ceil((*workers).max(1)))
        }
    };
    let mut after = Follow::new(seen.next);
    // The workers stamp their events with the same system clock.
    let spawned = keel_spine::clock::Clock::now(&keel_spine::clock::SystemClock);
    let mut restarted = (0..workers)
        .map(|_| Worker::spawn(&store, &cfg, share, backend))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let started = Instant::now();
    loop {
        if after.poll(&*log).await? && in_flight.iter().all(|e| after.first.contains_key(e)) {
            break;
        }
        if restarted.iter_mut().any(Worker::exited) {
            bail!("a restarted worker exited before every execution resumed");
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
    for w in &mut restarted {
        w.kill();
    }
    // The executions stay unfinished in a shared database: the next size's workers must not
    // claim them.
    if let Backend::Postgres { url, .. } = backend {
        end_all(url).await?;
    }
    let since = |t: &DateTime<Utc>| {
        (*t - spawned)
            .num_microseconds()
            .map_or(f64::NAN, |us| us as f64 / 1000.0)
    };
    let mut times: Vec<f64> = in_flight
        .iter()
        .filter_map(|e| after.first.get(e))
        .map(since)
        .collect();
    times.sort_by(f64::total_cmp);
    Ok(Figures {
        executions: n,
        in_flight: in_flight.len(),
        steps_at_kill,
        first_step_ms: times.first().copied().unwrap_or(f64::NAN),
        median_resumed_ms: times.get(times.len() / 2).copied().unwrap_or(f64::NAN),
        all_resumed_ms: times.last().copied().unwrap_or(f64::NAN),
    })
}

/// The deadlocks PostgreSQL has detected in the bench database.
async fn deadlocks(url: &str) -> anyhow::Result<i64> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to the bench server")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let row = client
        .query_one(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .context("reading the bench database's statistics")?;
    Ok(row.get(0))
}

/// Takes every execution of the bench database out of the claimable set (they are left half
/// done by the killed workers), so a later size measures only its own.
async fn end_all(url: &str) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to the bench server")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
        .execute("UPDATE keel_spine.executions SET ended = true", &[])
        .await
        .context("setting the last size's executions aside")?;
    Ok(())
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
