//! Gate notifications on a shared PostgreSQL spine: two `keel serve` processes on two machines
//! (two local directories, one keel.toml whose `spine.url` names a throwaway PostgreSQL 18) send
//! to a real webhook receiver that checks every signature. A gate is notified once, not once per
//! server; a delivery failing while both run is retried by whichever server is left after the
//! other is SIGKILLed, then by the killed one restarted (the attempt count goes on across them,
//! under one `Keel-Delivery` id); the attempts are read back through either server's API. No
//! `notify.db` is written: progress lives in the spine's database. Neither the webhook's secret
//! nor the database password appears in any log.

#![allow(clippy::unwrap_used)]

mod common;
use common::serve::{free_addr, send};
use common::webhooks::{Proc, Receiver, SECRET, hook, project};

use keel_memory::pgserver::PgServer;
use serde_json::Value;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The password in the spine's URL; it must never be printed.
const PASSWORD: &str = "pw-Nq61-notify-never-printed";

/// `keel --config CFG --data DATA ARGS…` in `project`: its stdout, failing the test on an error.
fn keel(project: &Path, cfg: &Path, data: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(project)
        .arg("--config")
        .arg(cfg)
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("KEEL_SPINE_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "keel {args:?} failed:\n{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// A `keel serve` on `data`, once it listens.
fn serve(project: &Path, cfg: &Path, data: &Path, addr: &str, log: &Path) -> Proc {
    let p = Proc::spawn_with(
        project,
        &[OsStr::new("--config"), cfg.as_os_str()],
        data,
        &["serve", "--addr", addr],
        log,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "keel serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

/// SIGKILLs `p` and reaps it: nothing it sent can arrive after this returns.
fn kill(mut p: Proc) -> String {
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    p.log()
}

/// A refund run to its gate on machine `data`; its exec id.
fn gate(project: &Path, cfg: &Path, data: &Path, order: u32) -> String {
    let out = keel(
        project,
        cfg,
        data,
        &[
            "run",
            "--tenant",
            "acme",
            &format!("Please refund order {order}"),
        ],
    );
    assert!(out.contains("suspended_at_gate"), "{out}");
    out.lines()
        .find_map(|l| l.strip_prefix("exec_id"))
        .map(|v| v.trim().to_owned())
        .unwrap()
}

fn get(addr: &str, token: &str, path: &str) -> (u16, Value) {
    let r = send(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    );
    (r.code, r.json())
}

#[test]
fn two_servers_on_one_postgres_spine_notify_a_gate_once_and_either_retries_it() {
    let pg = PgServer::start().unwrap();
    let url = pg
        .url("postgres")
        .replacen("postgres@", &format!("postgres:{PASSWORD}@"), 1);
    let tmp = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(HashMap::new());
    // A short timeout, so a delivery leased by a killed server is free again within 7 s; retries
    // every 400 ms for as long as the servers take to die and restart.
    let hooks = hook(&receiver, "[gate.requested]")
        .replace("    retry:", "    timeout_ms: 1000\n    retry:")
        .replace("max_attempts: 20", "max_attempts: 100");
    let project = project(tmp.path(), "{ queue: refunds }", &hooks);
    let cfg = tmp.path().join("keel.toml");
    std::fs::write(&cfg, format!("[spine]\nurl = \"{url}\"\n")).unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let log = |name: &str| tmp.path().join(format!("{name}.log"));
    let token = keel(
        &project,
        &cfg,
        &a,
        &["tokens", "create", "--tenant", "acme", "--role", "operator"],
    )
    .trim()
    .to_owned();
    let (addr_a, addr_b) = (free_addr(), free_addr());
    let sa = serve(&project, &cfg, &a, &addr_a, &log("a1"));
    let sb = serve(&project, &cfg, &b, &addr_b, &log("b1"));

    // A gate opened on a third machine, both servers up: one delivery, sent once.
    let first = gate(&project, &cfg, &c, 1005);
    let opened = Instant::now();
    let got = receiver.wait("the first gate delivered", |g| {
        g.iter()
            .any(|r| r.body["gate"]["exec_id"] == first.as_str())
    });
    // Figures, not assertions: the notifiers tick every 250 ms.
    eprintln!(
        "the first gate reached the receiver {} ms after keel run returned",
        opened.elapsed().as_millis()
    );
    let once = got
        .iter()
        .find(|r| r.body["gate"]["exec_id"] == first.as_str())
        .unwrap()
        .delivery
        .clone();
    assert!(got.iter().all(|r| r.answered == 200), "{got:#?}");

    // The receiver goes down; a second gate fails while both servers try it.
    receiver.down.store(true, Ordering::SeqCst);
    let second = gate(&project, &cfg, &c, 1006);
    let of_second = |g: &[common::webhooks::Received]| {
        g.iter()
            .filter(|r| r.body["gate"]["exec_id"] == second.as_str())
            .count()
    };
    receiver.wait("two failed attempts", |g| of_second(g) >= 2);

    // Server A dies: B goes on retrying.
    let log_a1 = kill(sa);
    let before = of_second(&receiver.got());
    receiver.wait("B retries", |g| of_second(g) >= before + 2);

    // A restarts on its directory, B dies: the restarted A goes on retrying.
    let sa = serve(&project, &cfg, &a, &addr_a, &log("a2"));
    let log_b1 = kill(sb);
    let before = of_second(&receiver.got());
    receiver.wait("the restarted A retries", |g| of_second(g) >= before + 2);

    // The receiver is back, B too: delivered, once.
    let sb = serve(&project, &cfg, &b, &addr_b, &log("b2"));
    receiver.down.store(false, Ordering::SeqCst);
    let back = Instant::now();
    let got = receiver.wait("the second gate delivered", |g| {
        g.iter()
            .any(|r| r.body["gate"]["exec_id"] == second.as_str() && r.answered == 200)
    });
    eprintln!(
        "the failing delivery went through {} ms after the receiver came back",
        back.elapsed().as_millis()
    );
    let tries: Vec<_> = got
        .iter()
        .filter(|r| r.body["gate"]["exec_id"] == second.as_str())
        .collect();
    assert!(
        tries.iter().all(|r| r.delivery == tries[0].delivery),
        "one Keel-Delivery id across servers: {tries:#?}"
    );
    assert_ne!(tries[0].delivery, once);
    assert_eq!(tries.iter().filter(|r| r.answered == 200).count(), 1);
    let attempts: Vec<u32> = tries.iter().map(|r| r.attempt).collect();
    // At least once: a server killed between an answer and its record may repeat a number.
    assert!(
        attempts.windows(2).all(|w| w[0] <= w[1]) && attempts[0] == 1,
        "the attempt count goes on across servers: {attempts:?}"
    );
    // No number skipped (a repeat is the only slack), over at least the 7 tries waited for.
    let mut distinct = attempts.clone();
    distinct.dedup();
    let last = *attempts.last().unwrap();
    assert_eq!(distinct, (1..=last).collect::<Vec<u32>>(), "{attempts:?}");
    assert!(attempts.len() >= 7, "{attempts:?}");

    // Either server's API shows the attempts, recorded in the shared database.
    let gate_id = tries[0].body["gate"]["gate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for addr in [&addr_a, &addr_b] {
        let deadline = Instant::now() + Duration::from_secs(60);
        let d = loop {
            let (code, v) = get(addr, &token, &format!("/v1/gates/{gate_id}/notifications"));
            assert_eq!(code, 200, "{v}");
            if v["deliveries"][0]["status"] == "delivered" {
                break v["deliveries"].clone();
            }
            assert!(Instant::now() < deadline, "{v}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(d.as_array().unwrap().len(), 1, "{d}");
        assert_eq!(d[0]["id"], tries[0].delivery.as_str());
        let recorded = d[0]["attempts"].as_array().unwrap();
        assert!(recorded.len() >= 7, "{d}");
        assert_eq!(recorded.last().unwrap()["http_status"], 200);
        assert!(
            recorded[..recorded.len() - 1]
                .iter()
                .all(|a| a["http_status"] == 500),
            "{d}"
        );
    }

    // Seconds and many ticks of both servers later, the first gate was still sent once.
    let got = receiver.got();
    let first_sent: Vec<_> = got.iter().filter(|r| r.delivery == once).collect();
    assert_eq!(first_sent.len(), 1, "{first_sent:#?}");

    let logs = [log_a1, log_b1, kill(sa), kill(sb)];
    for l in &logs {
        assert!(!l.contains(SECRET), "{l}");
        assert!(!l.contains(PASSWORD), "{l}");
    }
    assert!(
        logs[0].contains("deliveries recorded in postgres://postgres@127.0.0.1"),
        "{}",
        logs[0]
    );
    for dir in [&a, &b, &c] {
        assert!(!dir.join("notify.db").exists(), "{}", dir.display());
    }
}
