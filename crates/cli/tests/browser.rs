//! The web UI in a real browser: `keel serve` on 127.0.0.1 over a fresh store, driven by
//! Playwright (`playwright-core` from npm) with Debian's Chromium, both installed by
//! `scripts/test-browser` (which `scripts/test` runs and whose output it exports as
//! `KEEL_PLAYWRIGHT_NODE_PATH`). The scripts are `tests/browser/approval.cjs` (the approval queue),
//! `tests/browser/evidence.cjs` (deciding from the evidence with the keyboard) and
//! `tests/browser/ratings.cjs` (rating sampled retrievals); screenshots are kept in
//! `target/test-artifacts/`.
//!
//! `tests/browser/waterfall.cjs` reads an execution's waterfall: one bar per span, a tool's output
//! opened from its bar, a replay's badge, no sideways scrolling at 1280 and 800 px.

#![allow(clippy::unwrap_used)]

mod common;
use common::repo;
#[path = "common/ledger.rs"]
mod ledger;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh store with an approver/operator token, and `keel serve` on it from `dir`.
struct Served {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    token: String,
    addr: String,
    _serve: Serve,
}

fn serve_from(dir: &Path) -> Served {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let keel = env!("CARGO_BIN_EXE_keel");
    let out = Command::new(keel)
        .arg("--data")
        .arg(&data)
        .args([
            "tokens", "create", "--tenant", "acme", "--role", "agent", "--role", "approver",
        ])
        .args(["--role", "operator", "--name", "Ada (approver)"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        token.starts_with("keel_") && !token.contains('\n'),
        "only the token: {token:?}"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let serve = Serve(
        Command::new(keel)
            .current_dir(dir)
            .arg("--data")
            .arg(&data)
            .args(["serve", "--addr", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "keel serve did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Served {
        _tmp: tmp,
        data,
        token,
        addr,
        _serve: serve,
    }
}

fn node_path() -> String {
    std::env::var("KEEL_PLAYWRIGHT_NODE_PATH").expect(
        "KEEL_PLAYWRIGHT_NODE_PATH is not set: run the suite with scripts/test (it installs Chromium and playwright-core)",
    )
}

/// Runs a browser script against `s`; returns its stdout.
fn browse(s: &Served, script: &str, artifacts: &Path) -> String {
    browse_with(s, script, artifacts, &[])
}

/// [`browse`], with more variables for the script.
fn browse_with(s: &Served, script: &str, artifacts: &Path, vars: &[(&str, &Path)]) -> String {
    let run = Command::new("node")
        .arg(repo().join("crates/cli/tests/browser").join(script))
        .env("NODE_PATH", node_path())
        .env("KEEL_BASE", format!("http://{}", s.addr))
        .env("KEEL_TOKEN", &s.token)
        .env("KEEL_ARTIFACTS", artifacts)
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "browser script {script} failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8_lossy(&run.stdout).into_owned()
}

#[test]
fn approve_and_reject_refunds_in_a_real_browser() {
    node_path();
    let served = serve_from(&repo());
    let data = served.data.clone();
    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("approval-queue.png");
    let _ = std::fs::remove_file(&screenshot);
    browse(&served, "approval.cjs", &artifacts);
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "a real screenshot"
    );

    // What the browser did reached the shop: exactly one refund (the approved one).
    let shop = rusqlite::Connection::open(data.join("shop.db")).unwrap();
    let refunds: Vec<String> = shop
        .prepare("SELECT order_id FROM refunds")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(refunds, ["A-1001"]);
}

/// Issue 17 item 1: a repeated refund of an order is decided from the queue with the keyboard,
/// from what its card shows (the order as looked up, the earlier refund of the same order); the
/// execution resumes; another gate is rejected with a recent reason picked by its number.
#[test]
fn decide_gates_from_their_evidence_with_the_keyboard_in_a_real_browser() {
    node_path();
    let served = serve_from(&repo());
    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("evidence-queue.png");
    let _ = std::fs::remove_file(&screenshot);
    browse(&served, "evidence.cjs", &artifacts);
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "a real screenshot"
    );
    // Order A-1006 refunded twice (both approved), A-1007 and A-1008 never (both rejected).
    let shop = rusqlite::Connection::open(served.data.join("shop.db")).unwrap();
    let refunds: Vec<String> = shop
        .prepare("SELECT order_id FROM refunds ORDER BY refund_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(refunds, ["A-1006", "A-1006"]);
}

#[test]
fn rate_a_sampled_retrieval_in_a_real_browser() {
    node_path();
    // An empty directory: `keel serve` writes and serves the demo's configuration, whose
    // `support-memory` strategy retrieves (and distils) governed memory.
    let dir = tempfile::tempdir().unwrap();
    let served = serve_from(dir.path());
    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let out = browse(&served, "ratings.cjs", &artifacts);
    let rated: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let keel = env!("CARGO_BIN_EXE_keel");

    // The rating is an event: a projection rebuild from the first event keeps it.
    let sql = |args: &[&str]| {
        let out = Command::new(keel)
            .arg("--data")
            .arg(&served.data)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    sql(&["project", "--rebuild"]);
    let rows: serde_json::Value = serde_json::from_str(&sql(&[
        "sql",
        "--format",
        "json",
        "SELECT exec_id, seq, rating, rated_by, rating_note FROM traces.retrieval_samples \
         WHERE rating IS NOT NULL",
    ]))
    .unwrap();
    assert_eq!(
        rows,
        serde_json::json!([{
            "exec_id": rated["exec_id"],
            "seq": rated["seq"],
            "rating": 2,
            "rated_by": "Ada (approver)",
            "rating_note": "right customer, right preference"
        }])
    );
    let control = keel_core::control::CONTROL_STREAM.to_string();
    let events = sql(&["events", &control]);
    assert!(events.contains("retrieval.rated"), "{events}");
}

/// Issue 15 item 6: the economics page over a fixed two-tenant ledger, logged in as acme: the
/// chart is inline SVG with one series per strategy version (none of globex's), and the page
/// never scrolls sideways (`tests/browser/economics.cjs`).
#[test]
fn the_economics_chart_in_a_real_browser() {
    node_path();
    let dir = tempfile::tempdir().unwrap();
    let served = serve_from(dir.path());
    // Appended by this process while `keel serve` runs: the server reads it like any commit.
    ledger::write(&served.data);
    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let out = browse(&served, "economics.cjs", &artifacts);
    let seen: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(seen["series"].as_array().unwrap().len(), 2, "{seen}");
    for w in ["1280", "800"] {
        assert!(
            std::fs::metadata(artifacts.join(format!("economics-{w}.png")))
                .unwrap()
                .len()
                > 10_000,
            "a real screenshot at {w} px"
        );
    }
}

/// Issue 15 item 4's readout as a web page: the repository's support-prompts experiment,
/// registered with `keel experiments register` while `keel serve` runs, read out on
/// `/ui/experiments/support-prompts` with the API's figures (`tests/browser/experiments.cjs`).
#[test]
fn an_experiments_readout_page_in_a_real_browser() {
    node_path();
    let served = serve_from(&repo());
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(repo())
        .arg("--data")
        .arg(&served.data)
        .args(["experiments", "register"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let seen: serde_json::Value =
        serde_json::from_str(browse(&served, "experiments.cjs", &artifacts).trim()).unwrap();
    assert_eq!(seen["arms"], serde_json::json!(["control", "thorough"]));
    assert!(
        std::fs::metadata(artifacts.join("experiment-readout.png"))
            .unwrap()
            .len()
            > 10_000
    );
}

#[test]
fn an_executions_waterfall_opens_its_tool_output_in_a_real_browser() {
    node_path();
    // The demo's configuration (written by `keel serve` into an empty directory): its memory
    // strategy retrieves, calls the model and tools, and stops a refund at a gate.
    let dir = tempfile::tempdir().unwrap();
    let served = serve_from(dir.path());
    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("execution-waterfall.png");
    let _ = std::fs::remove_file(&screenshot);
    let keel = Path::new(env!("CARGO_BIN_EXE_keel"));
    // Where `keel serve` wrote the demo's configuration, for `keel replay` to read.
    let config = served.data.join("config");
    let out = browse_with(
        &served,
        "waterfall.cjs",
        &artifacts,
        &[
            ("KEEL_BIN", keel),
            ("KEEL_DATA", &served.data),
            ("KEEL_DIR", &config),
        ],
    );
    let seen: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_ne!(seen["exec"], seen["replay"]);
    for name in [
        "execution-waterfall.png",
        "execution-waterfall-1280.png",
        "execution-waterfall-800.png",
    ] {
        assert!(
            std::fs::metadata(artifacts.join(name)).unwrap().len() > 10_000,
            "a real screenshot: {name}"
        );
    }
}
