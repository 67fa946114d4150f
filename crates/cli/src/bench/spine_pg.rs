//! `keel bench spine --backend postgres`: the PostgreSQL spine's appends beside PostgreSQL's own
//! single-row commit latency, measured in the same run on the same server.
//!
//! Without `--url` it starts a throwaway PostgreSQL from `$KEEL_TEST_PG_BIN` on this machine's
//! disk with `fsync` on (the test servers run without it), so commits are durable
//! and the comparison is honest. One durable commit per append cannot beat one commit's latency;
//! group commit is how concurrent appenders get past it.

use super::spine::{Rate, appender, median};
use super::workload::Workload;
use anyhow::Context;
use keel_memory::pgserver::PgServer;
use keel_spine::{Durability, EventLog, Leases, PgEventLog, PgOptions};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

pub async fn run(
    json_out: bool,
    seconds: f64,
    url: Option<&str>,
    resume: usize,
) -> anyhow::Result<()> {
    let budget = Duration::try_from_secs_f64(seconds.max(0.1))
        .map_err(|_| anyhow::anyhow!("--seconds {seconds}: not a number of seconds"))?;
    let progress = |what: &str| {
        if !json_out {
            eprintln!("measuring {what}…");
        }
    };
    let (_server, url) = match url {
        Some(u) => (None, u.to_owned()),
        None => {
            progress("(starting a throwaway PostgreSQL, fsync on)");
            let server = PgServer::start_durable()?;
            let url = server.create_database("keel_bench").await?;
            check_fsync(&url).await?;
            (Some(server), url)
        }
    };
    // First, while the database holds no other unfinished execution (the scenarios below
    // leave theirs unfinished).
    progress(&format!(
        "{resume} in-flight executions claimed by 3 workers"
    ));
    let resume_ms = claim_all(&url, resume).await?;
    let mut probe = CommitProbe::open(&url).await?;
    progress("single appends interleaved with PostgreSQL's own commits");
    let (paired_commit_us, paired_append_us) = paired(&url, &mut probe, budget).await?;
    let mut scenarios = Vec::new();
    for (name, durability, handles, appenders, batch) in [
        ("single", Durability::Full, 1, 1, 1),
        ("batch100", Durability::Full, 1, 1, 100),
        ("concurrent8", Durability::Full, 1, 8, 1),
        ("concurrent64", Durability::Full, 1, 64, 1),
        ("concurrent64_2handles", Durability::Full, 2, 32, 1),
        ("batch100_nosync", Durability::Off, 1, 1, 100),
    ] {
        progress(name);
        probe.sample(100).await?;
        let r = append_rate(&url, durability, handles, appenders, batch, budget).await?;
        scenarios.push((name, handles * appenders, batch, r));
    }
    probe.sample(100).await?;
    let commit_us = probe.median_us();

    if json_out {
        let mut figures = serde_json::Map::new();
        figures.insert("pg_commit_us".into(), json!(round1(commit_us)));
        figures.insert("resume_executions".into(), json!(resume));
        figures.insert("resume_claim_ms".into(), json!(round1(resume_ms)));
        figures.insert("paired_commit_us".into(), json!(round1(paired_commit_us)));
        figures.insert("paired_append_us".into(), json!(round1(paired_append_us)));
        for (name, _, _, r) in &scenarios {
            figures.insert(format!("append_{name}_per_s"), json!(r.per_s.round()));
            figures.insert(
                format!("append_{name}_appends_per_commit"),
                json!(round1(r.appends_per_commit)),
            );
        }
        println!("{}", serde_json::Value::Object(figures));
        return Ok(());
    }
    let limit = 1e6 / commit_us;
    println!("spine bench (PostgreSQL, durable unless noted), {seconds}s per scenario");
    println!(
        "  PostgreSQL single-row commit          {commit_us:>12.1} µs   → limit {limit:.0} commits/s"
    );
    println!(
        "  interleaved, one after the other:     commit {paired_commit_us:>8.1} µs, spine append {paired_append_us:>8.1} µs = {:.2} × commit",
        paired_append_us / paired_commit_us
    );
    for (name, appenders, batch, r) in &scenarios {
        let events_per_commit = r.appends_per_commit * *batch as f64;
        let appends_per_s = r.per_s / *batch as f64;
        // Latency of one append as one appender sees it.
        let latency_us = 1e6 * *appenders as f64 / appends_per_s;
        println!(
            "  {name:<24} {appenders:>3} × {batch:<3} {:>10.0} events/s  {events_per_commit:>6.1} events/commit  append {latency_us:>8.1} µs = {:>4.2} × commit",
            r.per_s,
            latency_us / commit_us
        );
    }
    println!(
        "  {resume} executions of a dead worker claimed by 3 workers (leases, SKIP LOCKED): {resume_ms:.1} ms"
    );
    Ok(())
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Refuses to measure a server whose commits are not flushed: the figures would flatter.
pub(super) async fn check_fsync(url: &str) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to the bench server")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let row = client.query_one("SHOW fsync", &[]).await?;
    anyhow::ensure!(
        row.get::<_, String>(0) == "on",
        "the bench server runs with fsync off"
    );
    Ok(())
}

/// PostgreSQL's own commit latency: one single-row `INSERT` per transaction, autocommit,
/// `synchronous_commit = on`, timed at the client.
pub(super) struct CommitProbe {
    pub(super) client: tokio_postgres::Client,
    insert: tokio_postgres::Statement,
    pub(super) samples: Vec<f64>,
}

impl CommitProbe {
    pub(super) async fn open(url: &str) -> anyhow::Result<Self> {
        let (client, conn) = tokio_postgres::connect(url, NoTls)
            .await
            .context("connecting the commit probe")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
            .batch_execute(
                "SET synchronous_commit = on;
                 CREATE TABLE IF NOT EXISTS keel_bench_commit (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL);",
            )
            .await
            .context("creating the commit probe's table")?;
        let insert = client
            .prepare("INSERT INTO keel_bench_commit (v) VALUES ($1)")
            .await?;
        Ok(Self {
            client,
            insert,
            samples: Vec::new(),
        })
    }

    pub(super) async fn sample(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            let start = Instant::now();
            self.client.execute(&self.insert, &[&"probe"]).await?;
            self.samples.push(start.elapsed().as_secs_f64() * 1e6);
        }
        Ok(())
    }

    pub(super) fn median_us(&mut self) -> f64 {
        median(&mut self.samples)
    }
}

/// Medians of PostgreSQL's own single-row commit and of one single-event spine append, taken
/// alternately (one of each, over and over) so both see the same disk: its latency drifts by an
/// order of magnitude under load, and scenarios measured minutes apart do not compare.
async fn paired(
    url: &str,
    probe: &mut CommitProbe,
    budget: Duration,
) -> anyhow::Result<(f64, f64)> {
    let log = PgEventLog::connect(url, PgOptions::default()).await?;
    let exec = keel_spine::clock::new_exec_id();
    let mut w = Workload::new(exec, "bench");
    w.started("bench");
    let mut pending: std::collections::VecDeque<keel_core::Event> = w.take().into();
    let (mut commits, mut appends) = (Vec::new(), Vec::new());
    let mut last_seq = 0;
    let started = Instant::now();
    while started.elapsed() < budget || appends.len() < 10 {
        let before = probe.samples.len();
        probe.sample(1).await?;
        commits.extend(probe.samples.drain(before..));
        while pending.is_empty() {
            w.typical_step();
            pending.extend(w.take());
        }
        let events: Vec<_> = pending.drain(..1).collect();
        let start = Instant::now();
        last_seq = log.append(exec, last_seq, &events).await?.last_seq;
        appends.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok((median(&mut commits), median(&mut appends)))
}

/// Milliseconds for three workers, claiming 256 at a time, to take over `n` executions whose
/// worker died (started, never leased: what an expired lease looks like to a claim).
async fn claim_all(url: &str, n: usize) -> anyhow::Result<f64> {
    let log = PgEventLog::connect(url, PgOptions::default()).await?;
    let mut tasks = Vec::new();
    for t in 0..64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for _ in (t..n).step_by(64) {
                let exec = keel_spine::clock::new_exec_id();
                let mut w = Workload::new(exec, if t % 4 == 0 { "globex" } else { "acme" });
                w.started("resume");
                log.append(exec, 0, &w.take()).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..3 {
        let log = log.clone();
        workers.push(tokio::spawn(async move {
            let mut mine = 0usize;
            loop {
                let got = log
                    .claim(&format!("bench-worker-{w}"), Duration::from_secs(60), 256)
                    .await?;
                if got.is_empty() {
                    break anyhow::Ok(mine);
                }
                mine += got.len();
            }
        }));
    }
    let mut claimed = 0;
    for w in workers {
        claimed += w.await??;
    }
    let ms = started.elapsed().as_secs_f64() * 1e3;
    // More than `n` only on a `--url` database that earlier runs left executions in.
    anyhow::ensure!(claimed >= n, "claimed {claimed} of {n} executions");
    Ok(ms)
}

/// Events/s appended by `appenders` tasks on each of `handles` handles (each handle its own
/// writer and connections, like separate processes), each task on its own execution.
async fn append_rate(
    url: &str,
    durability: Durability,
    handles: usize,
    appenders: usize,
    batch: usize,
    budget: Duration,
) -> anyhow::Result<Rate> {
    let options = PgOptions {
        durability,
        ..PgOptions::default()
    };
    let mut logs = Vec::new();
    for _ in 0..handles {
        logs.push(PgEventLog::connect(url, options.clone()).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for log in &logs {
        for _ in 0..appenders {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                appender(&log as &dyn EventLog, batch, budget).await
            }));
        }
    }
    let mut events = 0u64;
    let mut busy = Duration::ZERO;
    for t in tasks {
        let (n, spent) = t.await??;
        events += n;
        busy = busy.max(spent);
    }
    let elapsed = if handles * appenders == 1 {
        busy
    } else {
        started.elapsed()
    };
    let (mut groups, mut requests) = (0, 0);
    for log in &logs {
        groups += log.stats().groups.load(Ordering::Relaxed);
        requests += log.stats().requests.load(Ordering::Relaxed);
    }
    Ok(Rate {
        per_s: events as f64 / elapsed.as_secs_f64(),
        appends_per_commit: requests as f64 / groups.max(1) as f64,
    })
}
