//! `keel serve` as a process: a start retried with the same `Idempotency-Key` across a SIGKILL
//! of the server answers with the first execution and never creates a second.

#![allow(clippy::unwrap_used)]

mod common;
use common::serve::{free_addr, send, serve};

use keel_core::payload::Payload;
use keel_spine::EventLog;
use std::io::Write;
use std::process::Command;

fn start_request(token: &str, key: &str, goal: &str) -> String {
    let body = serde_json::json!({ "goal": goal }).to_string();
    format!(
        "POST /v1/executions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nIdempotency-Key: {key}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Sends a request and returns the status code and body.
fn http(addr: &str, request: &str) -> (u16, serde_json::Value) {
    let r = send(addr, request);
    (r.code, r.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_retried_with_its_idempotency_key_after_a_sigkill_is_not_duplicated() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--data")
        .arg(&data)
        .args(["tokens", "create", "--tenant", "acme", "--role", "agent"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let addr = free_addr();

    // The server commits the start and is SIGKILLed right after answering it.
    let mut s = serve(&data, &addr);
    let (code, first) = http(
        &addr,
        &start_request(&token, "order-1007-a", "Where is my order 1007?"),
    );
    s.0.kill().unwrap();
    s.0.wait().unwrap();
    assert_eq!(code, 201, "{first}");
    let exec = first["exec_id"].as_str().unwrap().to_owned();

    // Killed while the second request may still be in flight: its reply never arrives.
    let mut s = serve(&data, &addr);
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.write_all(start_request(&token, "order-1007-b", "Where is my order 1007?").as_bytes())
        .unwrap();
    s.0.kill().unwrap();
    s.0.wait().unwrap();
    drop(conn);

    // The client retries both after the restart: the first execution, not a new one.
    let _s = serve(&data, &addr);
    let (code, again) = http(
        &addr,
        &start_request(&token, "order-1007-a", "Where is my order 1007?"),
    );
    assert_eq!(code, 200, "a repeat is 200: {again}");
    assert_eq!(again["exec_id"], first["exec_id"]);
    assert_eq!(again["strategy_version"], first["strategy_version"]);
    let (code, b1) = http(
        &addr,
        &start_request(&token, "order-1007-b", "Where is my order 1007?"),
    );
    assert!(code == 200 || code == 201, "{code} {b1}");
    let (code, b2) = http(
        &addr,
        &start_request(&token, "order-1007-b", "Where is my order 1007?"),
    );
    assert_eq!(code, 200, "{b2}");
    assert_eq!(b1["exec_id"], b2["exec_id"]);
    // The same key with another body is refused, naming the key.
    let (code, other) = http(
        &addr,
        &start_request(&token, "order-1007-a", "Cancel order 1008"),
    );
    assert_eq!(code, 422, "{other}");
    assert!(
        other["error"].as_str().unwrap().contains("order-1007-a"),
        "{other}"
    );
    // Another tenant's token with the same key starts its own execution.
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--data")
        .arg(&data)
        .args(["tokens", "create", "--tenant", "globex", "--role", "agent"])
        .output()
        .unwrap();
    let globex = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let (code, g) = http(
        &addr,
        &start_request(&globex, "order-1007-a", "Where is my order 1007?"),
    );
    assert_eq!(code, 201, "{g}");
    assert_ne!(g["exec_id"], first["exec_id"]);
    drop(_s);

    // Exactly one execution per (tenant, key) is on the spine.
    let log = keel_spine::SqliteLog::open(data.join("spine.db"), Default::default()).unwrap();
    let mut starts = Vec::new();
    let mut offset = 1;
    loop {
        let batch = log.read_all(offset, 1000).await.unwrap();
        let Some(last) = batch.last() else { break };
        offset = last.offset + 1;
        for c in batch {
            if matches!(c.event.payload, Payload::ExecStarted(_)) {
                starts.push((c.event.tenant.0.clone(), c.event.exec_id.to_string()));
            }
        }
    }
    assert_eq!(starts.len(), 3, "{starts:?}");
    assert_eq!(starts.iter().filter(|(_, e)| *e == exec).count(), 1);
}
