//! `keel bench serve-metrics`: a real `keel serve` process over a store of N executions (seven
//! events each, eight tenants, as `keel bench observe` writes them). Figures: the time of the
//! first `/metrics` scrape after a cold start (the server folds the spine and projects it), of
//! the first after a restart (projections already on disk), of steady scrapes (p50 of ten), and
//! the server's resident memory (current and peak) after each phase.
//!
//! It measures; it never asserts anything about time.

use super::observe::{Rng, execution};
use super::spine::Scratch;
use anyhow::Context;
use keel_server::auth::{Role, Tokens};
use keel_spine::{Durability, EventLog, SqliteLog, SqliteOptions};
use serde_json::json;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, addr: &str) -> anyhow::Result<Server> {
    let exe = std::env::current_exe().context("finding the keel binary")?;
    let child = Command::new(exe)
        .current_dir(dir)
        .arg("--data")
        .arg(dir.join("data"))
        .args(["serve", "--addr", addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting keel serve")?;
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "keel serve did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

/// (VmRSS, VmHWM) of a process, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Seconds one `/metrics` scrape took, and whether it answered 200.
fn scrape(addr: &str, token: &str) -> anyhow::Result<(f64, bool)> {
    get(addr, token, "/metrics")
}

/// Seconds one GET took, and whether it answered 200.
fn get(addr: &str, token: &str, path: &str) -> anyhow::Result<(f64, bool)> {
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    let ok = reply.starts_with(b"HTTP/1.1 200");
    Ok((t.elapsed().as_secs_f64(), ok))
}

pub async fn run(data: &Path, json_out: bool, executions: u64) -> anyhow::Result<()> {
    let scratch = Scratch(data.join(format!("bench-{}", uuid::Uuid::new_v4().simple())));
    let store = scratch.0.join("data");
    std::fs::create_dir_all(&store).with_context(|| format!("creating {}", store.display()))?;
    let say = |m: String| {
        if !json_out {
            eprintln!("{m}");
        }
    };
    say(format!("loading {executions} executions…"));
    let t = Instant::now();
    {
        let log = SqliteLog::open(
            store.join("spine.db"),
            SqliteOptions {
                durability: Durability::Off,
            },
        )?;
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for n in 0..executions {
            let (batch, _) = execution(&mut rng, n);
            if let Some(first) = batch.first() {
                log.append(first.exec_id, 0, &batch).await?;
            }
        }
    }
    let load_s = t.elapsed().as_secs_f64();
    let token = Tokens::open(&store)?.create(
        "tenant-0",
        &[Role::Operator],
        "bench",
        "2026-01-01T00:00:00Z",
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");

    say("cold start: first scrape…".into());
    let server = start(&scratch.0, &addr)?;
    let (cold_s, cold_ok) = scrape(&addr, &token)?;
    let (cold_rss, cold_peak) = rss_mib(server.0.id());
    drop(server);

    say("restart: first scrape…".into());
    let server = start(&scratch.0, &addr)?;
    let (restart_s, restart_ok) = scrape(&addr, &token)?;
    let mut steady = Vec::new();
    for _ in 0..10 {
        steady.push(scrape(&addr, &token)?.0);
    }
    steady.sort_by(f64::total_cmp);
    let steady_p50 = steady.get(steady.len() / 2).copied().unwrap_or(f64::NAN);
    let steady_max = steady.last().copied().unwrap_or(f64::NAN);
    // Its two halves: the book's figures, and the SLOs over the projections.
    let (book_s, _) = get(&addr, &token, "/v1/metrics")?;
    let (slo_s, _) = get(&addr, &token, "/v1/slo")?;
    let (rss, peak) = rss_mib(server.0.id());
    drop(server);
    anyhow::ensure!(
        cold_ok && restart_ok,
        "a /metrics scrape did not answer 200"
    );

    if json_out {
        println!(
            "{}",
            json!({
                "executions": executions,
                "events": executions * 7,
                "load_s": load_s,
                "cold_first_scrape_s": cold_s,
                "cold_rss_mib": cold_rss,
                "cold_peak_rss_mib": cold_peak,
                "restart_first_scrape_s": restart_s,
                "steady_scrape_p50_s": steady_p50,
                "steady_scrape_max_s": steady_max,
                "steady_book_figures_s": book_s,
                "steady_slo_s": slo_s,
                "rss_mib": rss,
                "peak_rss_mib": peak,
            })
        );
    } else {
        println!(
            "keel serve over {executions} executions ({} events)",
            executions * 7
        );
        println!("  load                        {load_s:>9.1} s");
        println!(
            "  cold start, first /metrics  {cold_s:>9.3} s   RSS {cold_rss:.0} MiB (peak {cold_peak:.0})"
        );
        println!("  restart, first /metrics     {restart_s:>9.3} s");
        println!("  steady /metrics p50 / max   {steady_p50:>9.3} s / {steady_max:.3} s");
        println!("  of which: book {book_s:.3} s, SLOs over the projections {slo_s:.3} s");
        println!("  after the scrapes           RSS {rss:.0} MiB (peak {peak:.0})");
    }
    Ok(())
}
