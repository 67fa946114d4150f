//! Gates from the command line, across processes: a gate survives the SIGKILL of the worker that
//! opened it, `keel gates list|approve|export`, a worker killed after the approval still refunds
//! exactly once, `keel tokens create` prints only the token, `keel strategies list|certify`.

#![allow(clippy::unwrap_used)]

mod common;
use common::{ok, repo};

use keel_core::payload::Payload;
use keel_runtime::embedded::{Config, Embedded};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn keel(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
    c.current_dir(repo()).arg("--data").arg(data);
    c
}

fn worker(data: &Path, once: bool, pace_ms: u32) -> Child {
    let mut c = keel(data);
    c.args(["worker", "--pace-ms", &pace_ms.to_string()]);
    if once {
        c.arg("--once");
    }
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_for(env: &Embedded, exec: keel_core::ExecId, what: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = env.log.read(exec, 1).await.unwrap();
        if events.iter().any(|e| e.event_type().as_str() == what) {
            return events.len();
        }
        assert!(Instant::now() < deadline, "no {what} in {exec}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_survives_a_killed_worker_and_the_approved_refund_runs_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = Config {
        tools: repo().join("tools"),
        strategies: repo().join("strategies"),
        prices: repo().join("prices.toml"),
    };
    let env = common::open(&data, &config);
    let s = env.strategies.get("support-short").unwrap();
    let exec = env
        .agent
        .start(s, "acme", "Please refund order 1005")
        .await
        .unwrap();

    // A worker opens the gate and is killed (SIGKILL) while the execution waits.
    let mut w = worker(&data, false, 20);
    let at_gate = wait_for(&env, exec, "gate.requested").await;
    w.kill().unwrap();
    w.wait().unwrap();
    // A new worker finds nothing to do: the gate is durable and still pending.
    assert!(worker(&data, true, 0).wait().unwrap().success());
    let events = env.log.read(exec, 1).await.unwrap();
    assert_eq!(events.len(), at_gate, "nothing ran past the gate");
    let gate_id = match &events.last().unwrap().payload {
        Payload::GateRequested(g) => g.gate_id.clone(),
        p => panic!("last event {p:?}"),
    };
    let listed = ok(keel(&data)
        .args(["gates", "list", "--tenant", "acme"])
        .output()
        .unwrap());
    assert!(
        listed.contains(&gate_id) && listed.contains("issue_customer_refund"),
        "{listed}"
    );
    assert_eq!(
        ok(keel(&data)
            .args(["gates", "list", "--tenant", "globex"])
            .output()
            .unwrap()),
        "gate\ttenant\tqueue\ttier\ttool\targs\tstate\texecution\n",
        "only the header"
    );

    // Approved from another process; the worker that runs it is killed too, and a third finishes.
    ok(keel(&data)
        .args([
            "gates", "approve", &gate_id, "--reason", "checked", "--as", "alice",
        ])
        .output()
        .unwrap());
    let again = keel(&data)
        .args(["gates", "reject", &gate_id, "--reason", "too late"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already decided"));
    let mut w = worker(&data, false, 200);
    wait_for(&env, exec, "gate.decided").await;
    std::thread::sleep(Duration::from_millis(30));
    w.kill().unwrap();
    w.wait().unwrap();
    assert!(worker(&data, true, 0).wait().unwrap().success());
    let events = env.log.read(exec, 1).await.unwrap();
    assert_eq!(
        events.last().unwrap().event_type().as_str(),
        "exec.finished"
    );
    assert_eq!(
        common::shop(&data).count("refunds").unwrap(),
        1,
        "one refund, however many workers"
    );

    // The verdict as a labelled example.
    let export = ok(keel(&data)
        .args(["gates", "export", "--format", "jsonl"])
        .output()
        .unwrap());
    let rows: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["label"], "approve");
    assert_eq!(rows[0]["approver"], "alice");
    assert_eq!(rows[0]["evidence_pack"]["goal"], "Please refund order 1005");
    assert_eq!(rows[0]["action"]["args"]["order_id"], "A-1005");
    let bad = keel(&data)
        .args(["gates", "export", "--format", "csv"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn tokens_strategies_and_their_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = ok(keel(&data)
        .args(["tokens", "create", "--tenant", "acme", "--role", "approver"])
        .output()
        .unwrap());
    assert!(
        out.starts_with("keel_") && out.trim().len() == 53 && out.lines().count() == 1,
        "{out:?}"
    );
    let bad = keel(&data)
        .args(["tokens", "create", "--tenant", "acme", "--role", "root"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--role \"root\""));
    // `strategies list` reads an existing store, and tokens live apart from the spine.
    drop(keel_spine::SqliteLog::open(data.join("spine.db"), Default::default()).unwrap());
    let list = ok(keel(&data).args(["strategies", "list"]).output().unwrap());
    assert!(
        list.lines()
            .any(|l| l.starts_with("support-short\t") && l.split('\t').nth(3) == Some("2")),
        "{list}"
    );
    let out = keel(&data)
        .args(["strategies", "certify", "support-short", "--as", "lead"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("certified"));
    let out = keel(&data)
        .args(["strategies", "certify", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// One HTTP/1.1 request over a plain socket; returns the status line and the body.
fn http(addr: &str, request: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

#[test]
fn serve_with_no_configuration_runs_the_demo_setup() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let token = ok(keel(&data)
        .args(["tokens", "create", "--tenant", "acme", "--role", "agent"])
        .output()
        .unwrap());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    // Started from an empty directory: no tools/, no strategies/.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(tmp.path())
        .arg("--data")
        .arg(&data)
        .args(["serve", "--addr", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "keel serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = r#"{"goal":"Where is my order 1007?"}"#;
    let (status, reply) = http(
        &addr,
        &format!(
            "POST /v1/executions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            token.trim(),
            body.len()
        ),
    );
    serve.kill().unwrap();
    serve.wait().unwrap();
    assert!(status.contains("201"), "{status} {reply}");
    assert!(
        reply.contains("support-short/"),
        "the default strategy: {reply}"
    );
}

#[test]
fn kill_switches_are_control_events_listed_and_cleared() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ok(keel(&data)
        .args([
            "kill",
            "set",
            "tool",
            "notify_team",
            "--reason",
            "channel flooded",
        ])
        .args(["--tenant", "acme"])
        .output()
        .unwrap());
    ok(keel(&data)
        .args([
            "kill",
            "set",
            "strategy",
            "support-long",
            "--reason",
            "bad prompt",
        ])
        .output()
        .unwrap());
    let list = ok(keel(&data).args(["kill", "list"]).output().unwrap());
    assert!(
        list.contains("tool\tnotify_team\tacme\t") && list.contains("channel flooded"),
        "{list}"
    );
    assert!(list.contains("strategy\tsupport-long\t*\t"), "{list}");
    // They are events on the spine's control stream, with who set them.
    let log = ok(keel(&data)
        .args(["events", &keel_core::control::CONTROL_STREAM.to_string()])
        .output()
        .unwrap());
    assert_eq!(log.matches("control.kill_set").count(), 2, "{log}");
    ok(keel(&data)
        .args(["kill", "clear", "tool", "notify_team", "--tenant", "acme"])
        .output()
        .unwrap());
    let again = keel(&data)
        .args(["kill", "clear", "tool", "notify_team", "--tenant", "acme"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    let bad = keel(&data)
        .args(["kill", "set", "planet", "mars"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("scope \"planet\""));
    let list = ok(keel(&data).args(["kill", "list"]).output().unwrap());
    assert!(
        !list.contains("notify_team") && list.contains("support-long"),
        "{list}"
    );
}

/// Runs a refund to its gate with `keel worker --once`, turns `switch` on from another process
/// (`keel kill set …`), approves the gate from a third, and lets a worker resume it. Returns the
/// environment and the execution.
async fn approve_under_a_switch(
    data: &Path,
    switch: &[&str],
) -> (Embedded, keel_core::ExecId, Vec<keel_core::Event>) {
    let config = Config {
        tools: repo().join("tools"),
        strategies: repo().join("strategies"),
        prices: repo().join("prices.toml"),
    };
    let env = common::open(data, &config);
    let s = env.strategies.get("support-short").unwrap();
    let exec = env
        .agent
        .start(s, "acme", "Please refund order 1005")
        .await
        .unwrap();
    assert!(worker(data, true, 0).wait().unwrap().success());
    let events = env.log.read(exec, 1).await.unwrap();
    let gate_id = match &events.last().unwrap().payload {
        Payload::GateRequested(g) => g.gate_id.clone(),
        p => panic!("last event {p:?}"),
    };
    let mut set = vec!["kill", "set"];
    set.extend_from_slice(switch);
    set.extend_from_slice(&["--reason", "refund fraud wave"]);
    ok(keel(data).args(&set).output().unwrap());
    ok(keel(data)
        .args(["gates", "approve", &gate_id, "--reason", "looks fine"])
        .output()
        .unwrap());
    assert!(worker(data, true, 0).wait().unwrap().success());
    let events = env.log.read(exec, 1).await.unwrap();
    (env, exec, events)
}

/// The refusal the approved refund got, after the decision.
fn refused_after_decision(events: &[keel_core::Event]) -> Vec<String> {
    let decided = events
        .iter()
        .position(|e| matches!(e.payload, Payload::GateDecided(_)))
        .unwrap();
    events[decided..]
        .iter()
        .find_map(|e| match &e.payload {
            Payload::ToolResult(r) if r.tool == "issue_customer_refund" => {
                assert_eq!(r.status, keel_core::payload::ToolStatus::Refused, "{r:?}");
                Some(r.errors.clone())
            }
            _ => None,
        })
        .unwrap()
}

/// Regression: the approved action ran before the control state was read, so a refund approved
/// while `issue_customer_refund` was switched off was still issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_kill_switch_stops_an_approved_refund() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (_env, _, events) = approve_under_a_switch(&data, &["tool", "issue_customer_refund"]).await;
    assert_eq!(
        common::shop(&data).count("refunds").unwrap(),
        0,
        "no refund was issued"
    );
    let errors = refused_after_decision(&events);
    assert!(
        errors.iter().any(|e| e.contains("refund fraud wave")),
        "{errors:?}"
    );
}

/// Same for a strategy switch: the approved refund is refused with the switch's reason and the
/// execution ends `killed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strategy_kill_switch_stops_an_approved_refund_and_ends_the_execution_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (_env, _, events) = approve_under_a_switch(&data, &["strategy", "support-short"]).await;
    assert_eq!(
        common::shop(&data).count("refunds").unwrap(),
        0,
        "no refund was issued"
    );
    let errors = refused_after_decision(&events);
    assert!(
        errors.iter().any(|e| e.contains("refund fraud wave")),
        "{errors:?}"
    );
    match &events.last().unwrap().payload {
        Payload::ExecFinished(f) => {
            assert_eq!(f.outcome, keel_core::payload::Outcome::Killed, "{f:?}")
        }
        p => panic!("last event {p:?}"),
    }
}
