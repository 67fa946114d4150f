//! Replays are not production (issue 12, item 6), through the `keel` binary: a backtest
//! (`keel replay --since`) whose replayed gate decisions are rejections does not demote the
//! strategy when a person next decides one of its gates, and replays are left out of
//! `keel gates export` (unless `--include-replays`, which marks them), `gold.executions` (so the
//! seed's economics query does not count them), `keel slo` and `/metrics`, while the API's
//! execution list marks them with `replay_of`.

#![allow(clippy::unwrap_used)]

mod common;
use common::{ok, repo};

use keel_core::payload::Payload;
use keel_runtime::embedded::{Config, Embedded};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `keel` run in `cfg` (which holds tools/, strategies/, prices.toml) on the store `cfg/data`.
fn keel(cfg: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
    c.current_dir(cfg).arg("--data").arg(cfg.join("data"));
    c
}

/// The demo's configuration, with support-short demoted once 3 recent decisions are more than
/// half rejections.
fn config(cfg: &Path) {
    let r = repo();
    for dir in ["tools", "prompts", "models"] {
        std::os::unix::fs::symlink(r.join(dir), cfg.join(dir)).unwrap();
    }
    std::fs::copy(r.join("prices.toml"), cfg.join("prices.toml")).unwrap();
    std::fs::create_dir_all(cfg.join("strategies")).unwrap();
    let mut s = std::fs::read_to_string(r.join("strategies/support-short.yaml")).unwrap();
    s.push_str("approval:\n  demotion: { window: 20, min_sample: 3, max_rejection_rate: 0.5 }\n");
    std::fs::write(cfg.join("strategies/support-short.yaml"), s).unwrap();
}

/// Starts a refund, runs it to its gate with `keel worker --once`, and returns the gate.
async fn to_gate(env: &Embedded, cfg: &Path, goal: &str) -> (keel_core::ExecId, String) {
    let s = env.strategies.get("support-short").unwrap();
    let exec = env.agent.start(s, "acme", goal).await.unwrap();
    ok(keel(cfg).args(["worker", "--once"]).output().unwrap());
    let events = env.log.read(exec, 1).await.unwrap();
    match &events.last().unwrap().payload {
        Payload::GateRequested(g) => (exec, g.gate_id.clone()),
        p => panic!("last event {p:?}"),
    }
}

fn http(addr: &str, path: &str, token: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backtest_neither_demotes_nor_counts_as_production() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path();
    config(cfg);
    let env = common::open(
        &cfg.join("data"),
        &Config {
            tools: cfg.join("tools"),
            strategies: cfg.join("strategies"),
            prices: cfg.join("prices.toml"),
        },
    );

    // A person rejects one refund (1 decision of 3 needed: no demotion yet).
    let (first, gate) = to_gate(&env, cfg, "Please refund order 1005").await;
    ok(keel(cfg)
        .args([
            "gates",
            "reject",
            &gate,
            "--reason",
            "not eligible",
            "--as",
            "bob",
        ])
        .output()
        .unwrap());
    ok(keel(cfg).args(["worker", "--once"]).output().unwrap());

    // A backtest, twice: each replay's gate is decided `replay:bob` reject from the recording.
    for _ in 0..2 {
        ok(keel(cfg)
            .args([
                "replay",
                "--since",
                "2020-01-01",
                "--strategy",
                "support-short",
            ])
            .output()
            .unwrap());
    }
    let all = env.log.read_all(1, 1_000_000).await.unwrap();
    let replayed_rejections = all
        .iter()
        .filter(|c| {
            matches!(&c.event.payload, Payload::GateDecided(d) if d.approver.starts_with("replay:"))
        })
        .count();
    assert_eq!(
        replayed_rejections, 2,
        "the backtest replayed bob's rejection twice"
    );

    // A person approves the next refund. Counting the replays, 3 of 4 recent decisions would be
    // rejections and the strategy would lose a tier; they are not people's decisions.
    let (_second, gate) = to_gate(&env, cfg, "Please refund order 1006").await;
    ok(keel(cfg)
        .args([
            "gates", "approve", &gate, "--reason", "fine", "--as", "alice",
        ])
        .output()
        .unwrap());
    ok(keel(cfg).args(["worker", "--once"]).output().unwrap());
    let list = ok(keel(cfg).args(["strategies", "list"]).output().unwrap());
    assert!(
        list.lines()
            .skip(1)
            .any(|l| l.split('\t').nth(3) == Some("2")),
        "not demoted: {list}"
    );
    assert!(!list.contains("demoted"), "{list}");

    // The training export: people's decisions only, unless asked; then marked.
    let export = ok(keel(cfg)
        .args(["gates", "export", "--format", "jsonl"])
        .output()
        .unwrap());
    let rows: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{export}");
    assert!(rows.iter().all(|r| r["is_replay"] == false), "{export}");
    let export = ok(keel(cfg)
        .args(["gates", "export", "--format", "jsonl", "--include-replays"])
        .output()
        .unwrap());
    let rows: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "{export}");
    let replays: Vec<_> = rows.iter().filter(|r| r["is_replay"] == true).collect();
    assert_eq!(replays.len(), 2, "{export}");
    assert!(
        replays
            .iter()
            .all(|r| r["replay_of"] == first.to_string().as_str()),
        "{export}"
    );

    // gold.executions, and so the seed's economics query as written: the two originals only.
    let n = ok(keel(cfg)
        .args([
            "sql",
            "--format",
            "json",
            "SELECT COUNT(*) AS n FROM gold.executions",
        ])
        .output()
        .unwrap());
    assert!(n.contains("\"n\":2") || n.contains("\"n\": 2"), "{n}");
    let seed = "SELECT strategy_version, COUNT(*) AS executions, AVG(outcome_success::int) AS success_rate, \
        SUM(total_cost) / NULLIF(SUM(outcome_success::int),0) AS cost_per_success \
        FROM gold.executions WHERE started_at >= CURRENT_DATE - 14 GROUP BY 1 ORDER BY cost_per_success";
    let economics = ok(keel(cfg)
        .args(["sql", "--format", "json", seed])
        .output()
        .unwrap());
    assert!(
        economics.contains("\"executions\":2") || economics.contains("\"executions\": 2"),
        "{economics}"
    );
    // The replays are still in the traces, marked.
    let steps = ok(keel(cfg)
        .args([
            "sql",
            "--format",
            "json",
            "SELECT COUNT(*) AS n FROM traces.steps WHERE event_type = 'exec.started' AND summary LIKE 'replay of %'",
        ])
        .output()
        .unwrap());
    assert!(
        steps.contains("\"n\":2") || steps.contains("\"n\": 2"),
        "{steps}"
    );

    // SLOs.
    let slo: serde_json::Value =
        serde_json::from_str(&ok(keel(cfg).args(["slo", "--json"]).output().unwrap())).unwrap();
    let executions: u64 = slo["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["executions"].as_u64().unwrap())
        .sum();
    assert_eq!(executions, 2, "{slo}");

    // /metrics (and the API list, which marks replays).
    let token = ok(keel(cfg)
        .args(["tokens", "create", "--tenant", "acme", "--role", "operator"])
        .output()
        .unwrap());
    let token = token.trim();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut serve = keel(cfg)
        .args(["serve", "--addr", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "keel serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = http(&addr, "/metrics", token);
    let listed = http(&addr, "/v1/executions", token);
    serve.kill().unwrap();
    serve.wait().unwrap();
    let counted: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("keel_executions{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, 2, "{metrics}");
    assert_eq!(
        listed
            .matches(&format!("\"replay_of\":\"{first}\""))
            .count(),
        2,
        "{listed}"
    );
}
