//! Gates reach people, across processes: a real `keel serve` (then `keel worker`) sends signed
//! webhooks to a receiver on 127.0.0.1 that checks every signature with its own HMAC-SHA256:
//! one for a new gate (after the receiver failed it twice) and one for its SLA escalation; a
//! notification pending when a worker is SIGKILLed is sent by the next worker; the secret
//! appears in no log and no file.

#![allow(clippy::unwrap_used)]

mod common;
use common::files_contain;
use common::serve::free_addr;
use common::webhooks::{Proc, Received, Receiver, SECRET, config, hook, project};

use keel_runtime::notify::{Deliveries, DeliveryView};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The deliveries recorded (of one gate, or all), once `done` holds of them: the receiver
/// answers before the sender records the answer.
async fn recorded(
    data: &Path,
    gate: Option<&str>,
    done: impl Fn(&[DeliveryView]) -> bool,
) -> Vec<DeliveryView> {
    let store = Deliveries::open(&data.join("notify.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = store.list(gate.map(str::to_owned)).await.unwrap();
        if done(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "recorded: {got:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET path` with a bearer token: the status and the JSON body.
fn get(addr: &str, token: &str, path: &str) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, serde_json::from_str(body).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_serve_signs_a_new_gate_and_its_escalation_and_retries_a_failing_receiver() {
    let tmp = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(HashMap::from([("gate.requested", 2)]));
    let project = project(
        tmp.path(),
        "{ queue: refunds, deadline_s: 1 }",
        &hook(&receiver, "[gate.requested, gate.escalated]"),
    );
    let data = tmp.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--data")
        .arg(&data)
        .args(["tokens", "create", "--tenant", "acme", "--role", "operator"])
        .output()
        .unwrap();
    let token = common::ok(out).trim().to_owned();
    let addr = free_addr();
    let serve = Proc::spawn(
        &project,
        &data,
        &["serve", "--addr", &addr],
        &tmp.path().join("serve.log"),
    );

    // An agent asks for a refund (tier 3): the server's worker opens a gate in queue `refunds`.
    let env = common::open(&data, &config(&project));
    let s = env.strategies.get("support-short").unwrap();
    let exec = env
        .agent
        .start(s, "acme", "Please refund order 1005")
        .await
        .unwrap();

    let got = receiver.wait("a delivered gate.requested and gate.escalated", |g| {
        ["gate.requested", "gate.escalated"]
            .iter()
            .all(|k| g.iter().any(|r| r.event == *k && r.answered == 200))
    });
    assert!(
        got.iter().all(|r| r.answered != 401),
        "every request is signed with the secret: {got:#?}"
    );

    // The new gate: two 500s, then delivered, one delivery id, attempts 1, 2, 3.
    let requested: Vec<&Received> = got.iter().filter(|r| r.event == "gate.requested").collect();
    assert_eq!(
        requested
            .iter()
            .map(|r| (r.attempt, r.answered))
            .collect::<Vec<_>>(),
        vec![(1, 500), (2, 500), (3, 200)]
    );
    assert!(
        requested
            .iter()
            .all(|r| r.delivery == requested[0].delivery)
    );
    let body = &requested[2].body;
    assert_eq!(body["type"], "gate.requested");
    assert_eq!(body["id"], requested[0].delivery.as_str());
    assert_eq!(body["gate"]["queue"], "refunds");
    assert_eq!(body["gate"]["tenant"], "acme");
    assert_eq!(body["gate"]["exec_id"], exec.to_string());
    assert_eq!(body["gate"]["tool"], "issue_customer_refund");
    assert_eq!(body["gate"]["consequence_tier"], 3);
    assert!(
        body["gate"].get("action").is_none(),
        "no arguments unless asked"
    );
    assert!(body["text"].as_str().unwrap().contains("refunds"));
    let gate_id = body["gate"]["gate_id"].as_str().unwrap().to_owned();
    assert_eq!(body["links"]["api"], format!("/v1/gates/{gate_id}"));

    // Its escalation, past the 1 s SLA.
    let escalated = got
        .iter()
        .find(|r| r.event == "gate.escalated" && r.answered == 200)
        .unwrap();
    assert_eq!(escalated.body["gate"]["gate_id"], gate_id.as_str());
    assert_eq!(escalated.body["escalation"]["deadline_ms"], 1000);
    assert!(escalated.body["escalation"]["waited_ms"].as_u64().unwrap() >= 1000);
    assert_ne!(escalated.delivery, requested[0].delivery);

    // Every attempt is recorded.
    let deliveries = recorded(&data, Some(&gate_id), |d| {
        d.len() == 2 && d.iter().all(|d| d.status == "delivered")
    })
    .await;
    let d = deliveries
        .iter()
        .find(|d| d.kind == "gate.requested")
        .unwrap();
    assert_eq!(
        d.attempts.iter().map(|a| a.http_status).collect::<Vec<_>>(),
        vec![Some(500), Some(500), Some(200)]
    );
    assert!(d.attempts[0].error.as_deref().unwrap().contains("500"));
    assert!(deliveries.iter().any(|d| d.kind == "gate.escalated"));

    // Operators see the same over the API (their own tenant's gates only).
    let (code, api) = get(&addr, &token, &format!("/v1/gates/{gate_id}/notifications"));
    assert_eq!(code, 200, "{api}");
    let d = &api["deliveries"];
    assert_eq!(d.as_array().unwrap().len(), 2, "{api}");
    assert_eq!(d[0]["kind"], "gate.requested");
    assert_eq!(d[0]["status"], "delivered");
    assert_eq!(d[0]["attempts"][2]["http_status"], 200);
    let (code, _) = get(&addr, &token, "/v1/gates/no-such-gate/notifications");
    assert_eq!(code, 404);

    // The secret is in no log and no file of the store.
    drop(env);
    let log = serve.log();
    assert!(
        log.contains("gate notifications to refunds-oncall"),
        "{log}"
    );
    assert!(!log.contains(SECRET), "{log}");
    assert_eq!(files_contain(&data, SECRET), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_pending_when_the_worker_is_killed_is_sent_by_the_next_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(HashMap::new());
    receiver.down.store(true, Ordering::SeqCst);
    let project = project(
        tmp.path(),
        "{ queue: refunds }",
        &hook(&receiver, "[gate.requested]"),
    );
    let data = tmp.path().join("data");
    let env = common::open(&data, &config(&project));
    let s = env.strategies.get("support-short").unwrap();
    let exec = env
        .agent
        .start(s, "acme", "Please refund order 1006")
        .await
        .unwrap();

    // The worker opens the gate and tries to notify; the receiver is down; SIGKILL.
    let mut w = Proc::spawn(&project, &data, &["worker"], &tmp.path().join("w1.log"));
    receiver.wait("a failed attempt", |g| !g.is_empty());
    w.child.kill().unwrap();
    w.child.wait().unwrap();
    let before = receiver.got();
    assert!(before.iter().all(|r| r.answered == 500));

    // The receiver is back; a new worker finds the pending notification in the store and sends it.
    receiver.down.store(false, Ordering::SeqCst);
    let w2 = Proc::spawn(&project, &data, &["worker"], &tmp.path().join("w2.log"));
    let got = receiver.wait("the notification delivered", |g| {
        g.iter().any(|r| r.answered == 200)
    });
    let delivered: Vec<&Received> = got.iter().filter(|r| r.answered == 200).collect();
    assert_eq!(delivered.len(), 1, "{got:#?}");
    assert!(
        got.iter().all(|r| r.delivery == got[0].delivery),
        "one delivery"
    );
    assert!(
        delivered[0].attempt > before[0].attempt,
        "attempts continue across workers"
    );
    assert_eq!(delivered[0].body["gate"]["exec_id"], exec.to_string());

    let deliveries = recorded(&data, None, |d| d.iter().any(|d| d.status == "delivered")).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        deliveries[0].attempts.last().unwrap().http_status,
        Some(200)
    );

    drop(env);
    for log in [w.log(), w2.log()] {
        assert!(!log.contains(SECRET), "{log}");
    }
    assert_eq!(files_contain(&data, SECRET), Vec::<String>::new());
}
