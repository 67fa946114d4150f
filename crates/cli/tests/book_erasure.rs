//! The server's book after a subject erasure made by another process: `keel memory erase` beside
//! a running `keel serve` turns the erased subject's goal and answer into `[erased]` in
//! `GET /v1/executions/{id}` and `GET /v1/executions`, and neither the book's snapshot nor a
//! restart (also after an erasure made while the server was down) brings them back; another
//! subject's and another tenant's executions keep theirs.

#![allow(clippy::unwrap_used)]

mod common;
use common::keel_in_repo as keel;
use common::ok;
use common::serve::{free_addr, send, serve};

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

fn token(data: &Path, tenant: &str, role: &str) -> String {
    ok(keel(
        data,
        &["tokens", "create", "--tenant", tenant, "--role", role],
    ))
    .trim()
    .to_owned()
}

fn get(addr: &str, token: &str, path: &str) -> Value {
    let r = send(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(r.code, 200, "GET {path}: {}", r.body);
    r.json()
}

/// Starts an execution about `subject` and returns its id once it has ended.
fn start(addr: &str, token: &str, subject: &str, goal: &str) -> String {
    let body = json!({ "goal": goal, "subject": subject }).to_string();
    let r = send(
        addr,
        &format!(
            "POST /v1/executions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(r.code, 201, "{}", r.body);
    let exec = r.json()["exec_id"].as_str().unwrap().to_owned();
    until(&format!("execution {exec} to end"), || {
        get(addr, token, &format!("/v1/executions/{exec}"))["status"] != "running"
    });
    exec
}

/// Polls `cond` until it holds (the server folds the spine on its own time).
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The execution as `GET /v1/executions/{id}` and as the list show it.
fn both(addr: &str, token: &str, exec: &str) -> (Value, Value) {
    let one = get(addr, token, &format!("/v1/executions/{exec}"));
    let list = get(addr, token, "/v1/executions?limit=100");
    let listed = list["executions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["exec_id"] == exec)
        .cloned()
        .unwrap_or_else(|| panic!("{exec} is listed: {list:#}"));
    (one, listed)
}

fn is_erased(addr: &str, token: &str, exec: &str) -> bool {
    let (one, listed) = both(addr, token, exec);
    [one, listed]
        .iter()
        .all(|x| x["goal"] == "[erased]" && x["detail"] == "[erased]")
}

fn is_intact(addr: &str, token: &str, exec: &str, goal: &str) {
    let (one, listed) = both(addr, token, exec);
    for x in [one, listed] {
        assert_eq!(x["goal"], goal, "{x:#}");
        let detail = x["detail"].as_str().unwrap_or_default();
        assert!(!detail.is_empty() && detail != "[erased]", "{x:#}");
    }
}

#[test]
fn an_erasure_by_another_process_reaches_the_servers_book_and_its_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (acme, globex) = (
        token(&data, "acme", "agent"),
        token(&data, "globex", "agent"),
    );
    let addr = free_addr();
    let mut s = serve(&data, &addr);

    let goal_a = "Where is my order A-1007? I am Ada Quill";
    let goal_b = "Where is my order A-1003? I am Bo Renner";
    let goal_c = "Where is my order A-1007? I am Cy Globe";
    let a = start(&addr, &acme, "cust-a", goal_a);
    let b = start(&addr, &acme, "cust-b", goal_b);
    let c = start(&addr, &globex, "cust-a", goal_c);
    // A gate opened about the same subject: its action and evidence pack are sealed too.
    let goal_g = "Please refund order 1005, I am Gil Gated";
    let g = start(&addr, &acme, "cust-a", goal_g);
    let approver = token(&data, "acme", "approver");
    let gate = || {
        get(&addr, &approver, "/v1/gates?status=all")["gates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["exec_id"] == g)
            .cloned()
            .unwrap()
    };
    assert_eq!(gate()["action"]["args"]["order_id"], "A-1005");
    assert_eq!(gate()["evidence_pack"]["goal"], goal_g);
    is_intact(&addr, &acme, &a, goal_a);
    is_intact(&addr, &acme, &b, goal_b);
    is_intact(&addr, &globex, &c, goal_c);

    // Erased by another process while the server runs: the book catches up with it.
    ok(keel(
        &data,
        &["memory", "erase", "cust-a", "--tenant", "acme"],
    ));
    until("cust-a's execution to read [erased]", || {
        is_erased(&addr, &acme, &a)
    });
    assert_eq!(gate()["action"], "[erased]");
    assert_eq!(gate()["evidence_pack"], "[erased]");
    is_intact(&addr, &acme, &b, goal_b);
    is_intact(&addr, &globex, &c, goal_c);
    let snapshot = data.join("book.snapshot.json");
    let saved = std::fs::read_to_string(&snapshot).unwrap();
    for gone in ["Ada Quill", "Gil Gated", "A-1005"] {
        assert!(!saved.contains(gone), "the snapshot was rewritten: {gone}");
    }
    assert!(saved.contains("Bo Renner"), "it still holds the others");

    // Erased while the server is down: its snapshot (which holds cust-b) must not bring the
    // goal back after the restart.
    s.0.kill().unwrap();
    s.0.wait().unwrap();
    ok(keel(
        &data,
        &["memory", "erase", "cust-b", "--tenant", "acme"],
    ));
    let _s = serve(&data, &addr);
    assert!(is_erased(&addr, &acme, &a));
    assert!(is_erased(&addr, &acme, &b));
    is_intact(&addr, &globex, &c, goal_c);
    let saved = std::fs::read_to_string(&snapshot).unwrap();
    for name in ["Ada Quill", "Bo Renner"] {
        assert!(!saved.contains(name), "{name} left the snapshot");
    }
    assert!(saved.contains("Cy Globe"), "another tenant's stays");
}
