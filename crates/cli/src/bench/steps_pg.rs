//! `keel bench step-overhead --backend postgres`: the 40-step workload of `keel bench
//! step-overhead` (instant scripted model, no-op read-only tool, every step durable) driven by
//! worker processes on one PostgreSQL spine, as a scaled-out deployment runs it, beside
//! PostgreSQL's own single-row commit latency measured in the same run.
//!
//! Each scenario starts `W` worker processes (this binary, `keel bench step-worker`, hidden),
//! wired by a `keel.toml` naming the spine exactly as `keel worker` is (leased view, the spine's
//! ledger and rate budgets, local blobs), that share `C` concurrent executions between them.
//! Each worker keeps its share in flight (a new execution starts as one ends) from a common
//! start signal for `--seconds`, then reports what completed in that window: steps, per-step
//! latencies (from the events' timestamps) and its own CPU time. The bench adds the CPU time of
//! the server's processes over the same window, so the figures say where a step's CPU goes, and
//! how far a machine with few cores is from scaling with workers.
//!
//! Without `--url` a throwaway PostgreSQL from `$KEEL_TEST_PG_BIN` runs with `fsync` on.
//!
//! `--compare-rates-apart` also runs every scenario with the rate budgets decided the way they
//! were before they rode in the spine's group commit (docs/decisions/125): one autocommit
//! statement per call on a connection of their own ([`RatesApart`]), for the comparison.

use super::spine::Scratch;
use super::spine_pg::{CommitProbe, check_fsync};
use super::steps::{FILES, STEPS, strategy};
use anyhow::{Context, bail};
use keel_core::ExecId;
use keel_core::payload::Payload;
use keel_memory::pgserver::PgServer;
use keel_runtime::embedded::{Config, Embedded};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The strategy every execution runs.
const MODE: &str = "every_step";

/// Parses `--workers`: a comma list of worker counts (1 to 64).
fn worker_counts(list: &str) -> anyhow::Result<Vec<usize>> {
    list.split(',')
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .with_context(|| format!("--workers: {s:?} is not a count between 1 and 64"))
        })
        .collect()
}

/// What one worker process reported.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Report {
    steps: u64,
    /// Events committed in the window (every kind).
    events: u64,
    latencies_us: Vec<f64>,
    cpu_us: f64,
    driving_s: f64,
}

/// What one scenario (W workers, C executions) measured, over its turns.
#[derive(Default)]
struct Scenario {
    workers: usize,
    concurrency: usize,
    /// Rate budgets decided apart from the spine's commits (the design before decision 125).
    apart: bool,
    steps: u64,
    wall_s: f64,
    latencies: Vec<f64>,
    worker_cpu_us: f64,
    /// `None` when the server is not this machine's (`--url`).
    pg_cpu_us: Option<f64>,
    events: u64,
    /// WAL the server wrote over the windows, bytes.
    wal_bytes: f64,
}

impl Scenario {
    fn steps_per_s(&self) -> f64 {
        self.steps as f64 / self.wall_s.max(1e-9)
    }

    fn per_step(&self, cpu_us: f64) -> f64 {
        cpu_us / (self.steps.max(1) as f64)
    }

    fn figures(&mut self, commit_us: f64) -> serde_json::Value {
        let (p50, p99) = (
            quantile(&mut self.latencies, 0.5),
            quantile(&mut self.latencies, 0.99),
        );
        let cpu_total = self.worker_cpu_us + self.pg_cpu_us.unwrap_or(0.0);
        json!({
            "rates": if self.apart { "apart" } else { "in_group_commit" },
            "workers": self.workers,
            "concurrent_executions": self.concurrency,
            "steps": self.steps,
            "steps_per_s": self.steps_per_s().round(),
            "step_p50_us": p50.round(),
            "step_p99_us": p99.round(),
            "step_p50_per_commit": round2(p50 / commit_us),
            "worker_cpu_us_per_step": round1(self.per_step(self.worker_cpu_us)),
            "pg_cpu_us_per_step": self.pg_cpu_us.map(|c| round1(self.per_step(c))),
            "cpu_cores_busy": round2(cpu_total / 1e6 / self.wall_s.max(1e-9)),
            "steps_per_cpu_s": (self.steps as f64 / (cpu_total / 1e6).max(1e-9)).round(),
            "events_per_step": round2(self.events as f64 / (self.steps.max(1) as f64)),
            "wal_bytes_per_step": self.per_step(self.wal_bytes).round(),
        })
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn quantile(samples: &mut [f64], q: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let last = samples.len().saturating_sub(1);
    let i = ((last as f64) * q).round() as usize;
    samples.get(i.min(last)).copied().unwrap_or(f64::NAN)
}

/// A worker process; killed when dropped, so an error never leaves one running.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn spawn(setup: &Setup, concurrency: usize, apart: bool) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the keel binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("--data")
            .arg(&setup.data)
            .arg("--config")
            .arg(&setup.toml)
            .args(["bench", "step-worker", "--files"])
            .arg(&setup.files)
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--seconds", &setup.seconds.to_string()]);
        if apart {
            cmd.arg("--rates-apart");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a worker process")?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("a worker's stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    /// The worker's next line (`ready`, or its report).
    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line)?;
        if n == 0 {
            bail!("a worker process ended without reporting (see its messages above)");
        }
        Ok(line.trim().to_owned())
    }

    fn go(&mut self) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("a worker's stdin")?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system, µs) of the processes `pids` (Linux `/proc`); a process that is
/// gone counts nothing.
fn cpu_of(pids: &[i32]) -> f64 {
    pids.iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks * 1e6 / 100.0) // USER_HZ is 100 on Linux
        })
        .sum()
}

/// The server's processes now (backends and its background writers), from `pg_stat_activity`.
async fn server_pids(client: &tokio_postgres::Client) -> anyhow::Result<Vec<i32>> {
    Ok(client
        .query("SELECT pid FROM pg_stat_activity", &[])
        .await?
        .iter()
        .map(|r| r.get::<_, i32>(0))
        .collect())
}

struct Setup {
    data: PathBuf,
    toml: PathBuf,
    files: PathBuf,
    seconds: f64,
    local_server: bool,
}

/// One turn of a scenario: spawns the workers, lets them connect, starts them together, and adds
/// what they report (and the server's CPU over the same time) to `out`.
async fn turn(setup: &Setup, probe: &CommitProbe, out: &mut Scenario) -> anyhow::Result<()> {
    let mut workers = Vec::with_capacity(out.workers);
    for w in 0..out.workers {
        // The executions shared as evenly as they go (64 over 3: 22, 21, 21).
        let share = out.concurrency / out.workers + usize::from(w < out.concurrency % out.workers);
        workers.push(Worker::spawn(setup, share.max(1), out.apart)?);
    }
    for w in &mut workers {
        let line = w.line()?;
        anyhow::ensure!(line == "ready", "a worker said {line:?} instead of ready");
    }
    let pids = if setup.local_server {
        Some(server_pids(&probe.client).await?)
    } else {
        None
    };
    let pg0 = pids.as_deref().map(cpu_of);
    let lsn: String = probe
        .client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    for w in &mut workers {
        w.go()?;
    }
    let mut reports = Vec::with_capacity(workers.len());
    for w in &mut workers {
        let line = tokio::task::block_in_place(|| w.line())?;
        reports.push(
            serde_json::from_str::<Report>(&line)
                .with_context(|| format!("a worker's report: {line:?}"))?,
        );
    }
    // The window is the workers' own; the server's CPU is sampled around it.
    let pg1 = pids.as_deref().map(cpu_of);
    let wal: f64 = probe
        .client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::float8",
            &[&lsn],
        )
        .await?
        .get(0);
    out.wal_bytes += wal;
    let wall = reports
        .iter()
        .map(|r| r.driving_s)
        .fold(0.0, f64::max)
        .max(1e-9);
    for r in reports {
        out.steps += r.steps;
        out.events += r.events;
        out.worker_cpu_us += r.cpu_us;
        out.latencies.extend(r.latencies_us);
    }
    out.wall_s += wall;
    if let (Some(a), Some(b)) = (pg0, pg1) {
        *out.pg_cpu_us.get_or_insert(0.0) += b - a;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub async fn run(
    data: &Path,
    json_out: bool,
    seconds: f64,
    url: Option<&str>,
    workers: &str,
    concurrency: usize,
    turns: usize,
    compare_apart: bool,
) -> anyhow::Result<()> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        bail!("--seconds must be more than 0 and at most 3600, not {seconds}");
    }
    if !(1..=4096).contains(&concurrency) {
        bail!("--concurrency must be between 1 and 4096, not {concurrency}");
    }
    let counts = worker_counts(workers)?;
    let progress = |what: &str| {
        if !json_out {
            eprintln!("{what}");
        }
    };
    let scratch = Scratch(data.join(format!("bench-{}", uuid::Uuid::new_v4().simple())));
    let files = scratch.0.join("config");
    for (file, text) in FILES {
        let p = files.join(file);
        std::fs::create_dir_all(p.parent().unwrap_or(&files))?;
        std::fs::write(&p, text)?;
    }
    std::fs::create_dir_all(files.join("strategies"))?;
    std::fs::write(
        files.join(format!("strategies/{MODE}.yaml")),
        strategy(MODE),
    )?;
    let (_server, url) = match url {
        Some(u) => (None, u.to_owned()),
        None => {
            progress("starting a throwaway PostgreSQL (fsync on)…");
            let server = PgServer::start_durable()?;
            let url = server.create_database("keel_bench").await?;
            check_fsync(&url).await?;
            (Some(server), url)
        }
    };
    // The spine's schema first (the workers' ledger and rates find their tables).
    keel_spine::PgEventLog::connect(&url, keel_spine::PgOptions::default()).await?;
    let toml = scratch.0.join("keel.toml");
    let quoted = serde_json::to_string(&url)?;
    std::fs::write(&toml, format!("[spine]\nurl = {quoted}\n"))?;
    let setup = Setup {
        data: scratch.0.join("store"),
        toml,
        files,
        seconds,
        local_server: _server.is_some(),
    };
    std::fs::create_dir_all(&setup.data)?;
    let mut probe = CommitProbe::open(&url).await?;

    // One execution alone (its step latency against one commit), then each worker count at
    // `concurrency`, taking turns so a load that comes and goes falls on all alike.
    let designs: &[bool] = if compare_apart {
        &[false, true]
    } else {
        &[false]
    };
    let mut scenarios: Vec<Scenario> = designs
        .iter()
        .flat_map(|&apart| {
            std::iter::once((1, 1))
                .chain(counts.iter().map(|&w| (w, concurrency.max(w))))
                .map(move |(workers, concurrency)| Scenario {
                    workers,
                    concurrency,
                    apart,
                    ..Scenario::default()
                })
        })
        .collect();
    probe.sample(100).await?;
    for t in 1..=turns.max(1) {
        for s in scenarios.iter_mut() {
            progress(&format!(
                "  turn {t}/{turns}: {} worker(s), {} concurrent execution(s), {seconds} s{}…",
                s.workers,
                s.concurrency,
                if s.apart { ", rates apart" } else { "" }
            ));
            turn(&setup, &probe, s).await?;
            probe.sample(50).await?;
        }
    }
    let commit_us = probe.median_us();
    let commit_p99 = quantile(&mut probe.samples, 0.99);
    // What the log keeps per event: the table with its indexes and TOAST, and the raw batches.
    let stored = probe
        .client
        .query_one(
            "SELECT pg_total_relation_size('keel_spine.batches')::float8,
                    coalesce(sum(octet_length(body)), 0)::float8,
                    coalesce(sum(last_seq - first_seq + 1), 0)::float8
             FROM keel_spine.batches",
            &[],
        )
        .await?;
    let (table_bytes, body_bytes, events): (f64, f64, f64) =
        (stored.get(0), stored.get(1), stored.get(2));
    let storage = json!({
        "events": events,
        "table_bytes_per_event": (table_bytes / events.max(1.0)).round(),
        "json_bytes_per_event": (body_bytes / events.max(1.0)).round(),
    });
    let figures: Vec<serde_json::Value> =
        scenarios.iter_mut().map(|s| s.figures(commit_us)).collect();
    // Per design: each worker count's steps/s over the first count's (`workers_3_over_1`).
    let per_design = counts.len() + 1;
    let mut ratios = serde_json::Map::new();
    for design in scenarios.chunks(per_design) {
        let base = design.get(1).map_or(f64::NAN, Scenario::steps_per_s);
        for s in design.iter().skip(2) {
            let first = counts.first().copied().unwrap_or(1);
            let suffix = if s.apart { "_rates_apart" } else { "" };
            ratios.insert(
                format!("workers_{}_over_{first}{suffix}", s.workers),
                json!(round2(s.steps_per_s() / base)),
            );
        }
    }
    if json_out {
        println!(
            "{}",
            json!({
                "steps_per_execution": STEPS,
                "seconds_per_turn": seconds,
                "turns": turns,
                "storage": storage,
                "pg_commit_us": {"p50": round1(commit_us), "p99": round1(commit_p99), "samples": probe.samples.len()},
                "scenarios": figures,
                "ratios": ratios,
            })
        );
        return Ok(());
    }
    println!(
        "step overhead on a PostgreSQL spine ({STEPS}-step executions, every step durable, workers \
         as processes, {turns} × {seconds} s per scenario)"
    );
    println!(
        "  PostgreSQL single-row commit: p50 {commit_us:.1} µs, p99 {commit_p99:.1} µs ({} samples, fsync on)",
        probe.samples.len()
    );
    println!(
        "  {:<44}{:>9} {:>9} {:>9} {:>9} {:>12} {:>10} {:>6} {:>12}",
        "",
        "p50 µs",
        "p99 µs",
        "× commit",
        "steps/s",
        "worker CPU",
        "PG CPU",
        "cores",
        "steps/CPU·s"
    );
    for (s, f) in scenarios.iter().zip(&figures) {
        let what = format!(
            "{} worker(s), {} concurrent{}",
            s.workers,
            s.concurrency,
            if s.apart { ", rates apart" } else { "" }
        );
        let num = |k: &str| f[k].as_f64().unwrap_or(f64::NAN);
        let pg = f["pg_cpu_us_per_step"]
            .as_f64()
            .map_or("-".into(), |v| format!("{v:.1} µs"));
        println!(
            "  {what:<44}{:>9.0} {:>9.0} {:>9.2} {:>9.0} {:>9.1} µs {pg:>10} {:>6.2} {:>12.0}",
            num("step_p50_us"),
            num("step_p99_us"),
            num("step_p50_per_commit"),
            num("steps_per_s"),
            num("worker_cpu_us_per_step"),
            num("cpu_cores_busy"),
            num("steps_per_cpu_s"),
        );
    }
    println!(
        "  stored: {events} events, {} bytes per event in keel_spine.batches (table, indexes, TOAST), {} bytes of JSON",
        storage["table_bytes_per_event"], storage["json_bytes_per_event"]
    );
    println!("  per step (in-group-commit rows): events and WAL bytes");
    for (s, f) in scenarios.iter().zip(&figures) {
        if !s.apart {
            println!(
                "    {} worker(s), {} concurrent: {} events/step, {} WAL bytes/step",
                s.workers, s.concurrency, f["events_per_step"], f["wal_bytes_per_step"]
            );
        }
    }
    for (k, v) in &ratios {
        println!("  steps/s ratio {k}: {v}");
    }
    Ok(())
}

/// `keel bench step-worker`: one worker process of the bench. Wires the runtime from the
/// configuration as `keel worker` does (leased view of the spine), says `ready`, waits for `go`
/// on stdin, keeps `concurrency` executions in flight for `seconds`, then prints its report (one
/// JSON line) and exits.
pub async fn worker(
    data: &Path,
    files: &Path,
    concurrency: usize,
    seconds: f64,
    rates_apart: bool,
) -> anyhow::Result<()> {
    let window = Duration::try_from_secs_f64(seconds)
        .map_err(|_| anyhow::anyhow!("--seconds {seconds}: not a number of seconds"))?;
    let config = Config {
        tools: files.join("tools"),
        strategies: files.join("strategies"),
        prices: files.join("prices.toml"),
    };
    let mut backends = crate::config::current()
        .backends(data, &config.strategies)
        .await?;
    if rates_apart {
        let url = crate::config::current()
            .spine_postgres
            .as_deref()
            .context("--rates-apart needs a PostgreSQL spine")?;
        backends.spine.rates = Arc::new(RatesApart::connect(url).await?);
    }
    let view = crate::agents::worker::lease(&mut backends, concurrency);
    let beat = crate::agents::worker::heartbeat(&view, "keel bench step-worker");
    let env = Embedded::open_wired(data, &config, backends, |b| {
        b.register(
            "noop",
            false,
            Arc::new(|_args, _key| Box::pin(async { Ok(json!({})) })),
        );
    })?;
    let s = env.strategies.get(MODE).context("bench strategy")?.clone();
    let model = s.provider()?;
    println!("ready");
    let mut go = String::new();
    tokio::task::block_in_place(|| std::io::stdin().read_line(&mut go))?;
    anyhow::ensure!(go.trim() == "go", "expected go on stdin, got {go:?}");

    let from = keel_spine::clock::Clock::now(&keel_spine::clock::SystemClock);
    let cpu0 = super::steps::cpu_us();
    let started = Instant::now();
    let deadline = started + window;
    let execs: Arc<Mutex<Vec<ExecId>>> = Arc::default();
    let pid = std::process::id();
    let mut tasks = Vec::with_capacity(concurrency);
    for t in 0..concurrency {
        let (agent, s, model, execs) = (env.agent.clone(), s.clone(), model.clone(), execs.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let tenant = format!("bench-{pid}-{t}-{n}");
                n += 1;
                let exec = agent.start(&s, &tenant, "noop").await?;
                if let Ok(mut e) = execs.lock() {
                    e.push(exec);
                }
                agent.drive(&s, &*model, exec).await?;
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep_until(deadline.into()).await;
    let cpu1 = super::steps::cpu_us();
    let driving = started.elapsed().as_secs_f64();
    let to = keel_spine::clock::Clock::now(&keel_spine::clock::SystemClock);
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        match t.await {
            Ok(r) => r?,
            Err(e) if e.is_cancelled() => {}
            Err(e) => return Err(e.into()),
        }
    }
    beat.abort();
    // Off the clock: every step completed in the window, from the events' timestamps.
    let mut report = Report {
        driving_s: driving,
        cpu_us: match (cpu0, cpu1) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        },
        ..Report::default()
    };
    let execs = execs.lock().map(|e| e.clone()).unwrap_or_default();
    for exec in execs {
        let mut last: Option<chrono::DateTime<chrono::Utc>> = None;
        for e in env.log.read(exec, 1).await? {
            if e.ts < from || e.ts > to {
                continue;
            }
            report.events += 1;
            if !matches!(e.payload, Payload::StepCompleted(_)) {
                continue;
            }
            report.steps += 1;
            // The first step of an execution is left out of the latencies, as in the embedded
            // bench: it starts at `exec.started`.
            if let Some(before) = last {
                report
                    .latencies_us
                    .push((e.ts - before).num_microseconds().unwrap_or(0) as f64);
            }
            last = Some(e.ts);
        }
    }
    crate::agents::worker::release(&view, "keel bench step-worker").await;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The rate budgets as they were decided before they rode in the spine's group commit: one
/// autocommit statement per call (`synchronous_commit = on`) on a connection of their own, and no
/// `side_store`, so the tool runner calls it for every rated call.
struct RatesApart {
    client: tokio_postgres::Client,
}

impl RatesApart {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let (client, _) = keel_spine::postgres::connect_session(url).await?;
        Ok(Self { client })
    }
}

#[async_trait::async_trait]
impl keel_tools::RateStore for RatesApart {
    async fn take(
        &self,
        tool: &str,
        tenant: &str,
        rate: keel_tools::contract::Rate,
        now_us: i64,
    ) -> Result<Result<(), String>, keel_tools::ToolError> {
        let calls = i64::from(rate.calls.max(1));
        let per = i64::try_from(rate.per.as_micros()).unwrap_or(i64::MAX);
        let interval = (per / calls).max(1);
        let tolerance = interval.saturating_mul(calls - 1);
        let admitted = self
            .client
            .query_opt(
                "INSERT INTO keel_spine.tool_rates AS r (tenant, tool, tat_us)
                 VALUES ($1, $2, $3::int8 + $4::int8)
                 ON CONFLICT (tenant, tool) DO UPDATE SET tat_us = greatest(r.tat_us, $3::int8) + $4::int8
                 WHERE greatest(r.tat_us, $3::int8) - $3::int8 <= $5::int8
                 RETURNING tat_us",
                &[&tenant, &tool, &now_us, &interval, &tolerance],
            )
            .await
            .map_err(|e| keel_tools::ToolError::Rates {
                path: PathBuf::from("postgres"),
                context: "deciding a rate budget",
                detail: e.to_string(),
            })?
            .is_some();
        Ok(if admitted {
            Ok(())
        } else {
            Err(format!("rate budget exhausted: {tool}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::worker_counts;

    #[test]
    fn worker_counts_parse_and_refuse_nonsense() {
        assert_eq!(worker_counts("1,3").unwrap(), [1, 3]);
        assert_eq!(worker_counts("3").unwrap(), [3]);
        assert!(worker_counts("0").is_err());
        assert!(worker_counts("x").is_err());
        assert!(worker_counts("65").is_err());
    }
}
