//! Guardrails that act with only `keel serve` running (issue 15 item 5): with
//! `[experiments] check_secs = 1` in keel.toml, a registered experiment whose new arm breaches a
//! `stop_arm` guardrail is stopped by the server itself — no `keel experiments check`, no person —
//! and the executions started through the API afterwards all run the holdback.

#![allow(clippy::unwrap_used)]

mod common;
use common::serve::{Serve, free_addr, send};
use common::{keel_in_repo as keel, ok, repo};

use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn call(addr: &str, token: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    let body = body.map(Value::to_string).unwrap_or_default();
    let reply = send(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n\
             {body}",
            body.len()
        ),
    );
    assert!(
        reply.code < 300,
        "{method} {path}: {} {}",
        reply.code,
        reply.body
    );
    reply.json()
}

/// Starts an execution through the API without a strategy and waits for its end; its arm, from
/// the strategy it was assigned.
fn run(addr: &str, token: &str) -> &'static str {
    let body = json!({"goal": "Where is my order A-1017?"});
    let started = call(addr, token, "POST", "/v1/executions", Some(&body));
    let id = started["exec_id"].as_str().unwrap().to_owned();
    let version = started["strategy_version"].as_str().unwrap();
    let arm = if version.starts_with("support-long/") {
        "thorough"
    } else {
        assert!(version.starts_with("support-short/"), "{started}");
        "control"
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let x = call(addr, token, "GET", &format!("/v1/executions/{id}"), None);
        if x["status"] != "running" {
            return arm;
        }
        assert!(Instant::now() < deadline, "execution {id} did not end: {x}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stopped_arms(data: &Path) -> Vec<String> {
    let list = ok(keel(data, &["experiments", "list", "--json"]));
    let x: Value = serde_json::from_str(list.lines().next().unwrap()).unwrap();
    x["arms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["stopped"] == true)
        .map(|a| a["arm"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn keel_serve_stops_an_arm_whose_guardrail_is_breached() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Every finished execution takes at least one step, so `p95_steps <= 0` is breached.
    let text = std::fs::read_to_string(repo().join("experiments/support-prompts.yaml")).unwrap();
    let file = tmp.path().join("guarded.yaml");
    std::fs::write(
        &file,
        text.replace("name: support-prompts", "name: guarded")
            .replace("unit: subject", "unit: execution")
            .replace("min_sample: 100", "min_sample: 2")
            .replace(
                "{ metric: p95_steps, direction: at_most, bound: 8 }",
                "{ metric: p95_steps, direction: at_most, bound: 0, on_breach: stop_arm }",
            ),
    )
    .unwrap();
    let token = ok(keel(
        &data,
        &[
            "tokens", "create", "--tenant", "acme", "--role", "agent", "--role", "operator",
            "--name", "ops",
        ],
    ))
    .trim()
    .to_owned();
    let config = tmp.path().join("keel.toml");
    std::fs::write(&config, "[experiments]\ncheck_secs = 1\n").unwrap();

    let addr = free_addr();
    let _serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_keel"))
            .current_dir(repo())
            .arg("--config")
            .arg(&config)
            .arg("--data")
            .arg(&data)
            .args(["serve", "--addr", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "keel serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Registered while the server runs (it created the store).
    ok(keel(
        &data,
        &["experiments", "register", file.to_str().unwrap()],
    ));

    // Executions until the new arm has its minimum sample; the server's own check then stops it.
    let mut thorough = 0;
    let mut n = 0;
    while thorough < 2 {
        n += 1;
        assert!(n < 200, "the thorough arm was never drawn");
        if run(&addr, &token) == "thorough" {
            thorough += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while stopped_arms(&data).is_empty() {
        assert!(
            Instant::now() < deadline,
            "keel serve did not stop the breached arm"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Only the new arm: the holdback breaches it too, but is never stopped.
    assert_eq!(stopped_arms(&data), ["thorough"]);
    let control = keel_core::control::CONTROL_STREAM.to_string();
    let events = ok(keel(&data, &["events", &control]));
    let breaches: Vec<Value> = events
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "experiment.guardrail_breached")
        .collect();
    assert_eq!(
        breaches.len(),
        1,
        "recorded once, however often it checks: {breaches:?}"
    );
    assert_eq!(breaches[0]["data"]["arm"], "thorough", "{breaches:?}");
    // The stopped arm's traffic returns to the holdback.
    for _ in 0..6 {
        assert_eq!(run(&addr, &token), "control");
    }
}
