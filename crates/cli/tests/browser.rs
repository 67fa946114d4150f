//! The web UI in a real browser: `keel serve` on 127.0.0.1 over a fresh store, driven by
//! Playwright (`playwright-core` from npm) with Debian's Chromium, both installed by
//! `scripts/test-browser` (which `scripts/test` runs and whose output it exports as
//! `KEEL_PLAYWRIGHT_NODE_PATH`). The script is `tests/browser/approval.cjs`; screenshots are kept
//! in `target/test-artifacts/`.

#![allow(clippy::unwrap_used)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn approve_and_reject_refunds_in_a_real_browser() {
    let node_path = std::env::var("KEEL_PLAYWRIGHT_NODE_PATH").expect(
        "KEEL_PLAYWRIGHT_NODE_PATH is not set: run the suite with scripts/test (it installs Chromium and playwright-core)",
    );
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
    let _serve = Serve(
        Command::new(keel)
            .current_dir(repo())
            .arg("--data")
            .arg(&data)
            .args(["serve", "--addr", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "keel serve did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("approval-queue.png");
    let _ = std::fs::remove_file(&screenshot);
    let run = Command::new("node")
        .arg(repo().join("crates/cli/tests/browser/approval.cjs"))
        .env("NODE_PATH", &node_path)
        .env("KEEL_BASE", format!("http://{addr}"))
        .env("KEEL_TOKEN", &token)
        .env("KEEL_ARTIFACTS", &artifacts)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "browser script failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
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
