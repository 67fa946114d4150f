//! A server's memory does not grow with the store: its book lets finished executions and closed
//! gates go (beyond the most recent per tenant) and keeps their totals, so `/metrics` still
//! counts every execution and an old execution is still found by id. The bounded book is saved
//! beside the spine: a restarted server folds only the events committed after its snapshot.

#![allow(clippy::unwrap_used)]

mod common;
use common::repo;

use keel_core::payload::*;
use keel_core::{Cost, ExecId};
use keel_runtime::embedded::{Config, Embedded};
use keel_server::auth::{Role, Tokens};
use keel_testkit::builder::{ExecBuilder, exec_id};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// A finished execution of `tenant` costing `micros`, with a decided gate `gate-{n}` (latency
/// `n` seconds) when `gated`.
fn finished(n: u64, tenant: &str, micros: u64, gated: bool) -> (ExecId, Vec<keel_core::Event>) {
    let exec = exec_id(n);
    let mut b = ExecBuilder::new(exec, tenant).started(&format!("order {n}"));
    b = b.model_call(100, 10, Cost::Known(micros));
    if gated {
        b.push(Payload::GateRequested(GateRequested {
            gate_id: format!("gate-{n}"),
            action: json!({"tool": "issue_customer_refund"}),
            consequence_tier: 3,
            evidence_pack: json!({"goal": "refund"}),
            reason: "tier 3".into(),
            queue: "refunds".into(),
            deadline_ms: None,
            expire_after_ms: None,
            during_call: None,
            elicitation: None,
        }));
        b.push(Payload::GateDecided(GateDecided {
            gate_id: format!("gate-{n}"),
            approver: "ada".into(),
            verdict: Verdict::Approve,
            reason: "ok".into(),
            latency_ms: n * 1000,
            input: None,
        }));
    }
    (exec, b.finished(Outcome::Success).build())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_executions_leave_the_servers_memory_and_still_count() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo();
    let config = Config {
        tools: repo.join("tools"),
        strategies: repo.join("strategies"),
        prices: repo.join("prices.toml"),
    };
    let data = tmp.path().join("data");
    let env = common::open(&data, &config);
    let store = Tokens::open(&data).unwrap();
    let token = store
        .create("acme", &[Role::Operator], "ops", "2026-11-25T00:00:00Z")
        .unwrap();
    let state = keel_server::App::new(&env, store);
    // As the server does at 1000 per tenant, at 3 so the test stays small.
    env.approvals.bound_memory_to(3);

    // Ten finished executions (four with a decided gate) and one still running.
    let mut ids = Vec::new();
    for n in 1..=10 {
        let (exec, events) = finished(n, "acme", 1_000 * n, n <= 4);
        env.log.append(exec, 0, &events).await.unwrap();
        ids.push(exec);
    }
    let live = exec_id(99);
    let events = ExecBuilder::new(live, "acme")
        .started("still going")
        .build();
    env.log.append(live, 0, &events).await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = keel_server::router(state);
    tokio::spawn(async move { axum_serve(listener, router).await });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).bearer_auth(&token).send();

    // Every execution counts, with its cost and its gate's latency.
    let r = get("/v1/metrics").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let count = |outcome: &str| -> u64 {
        v["executions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["outcome"] == outcome)
            .map(|e| e["count"].as_u64().unwrap())
            .sum()
    };
    assert_eq!((count("success"), count("running")), (10, 1), "{v}");
    let usd: f64 = v["cost"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["usd"].as_f64().unwrap())
        .sum();
    assert!((usd - 0.055).abs() < 1e-9, "{v}");
    let q = &v["queues"]["refunds"];
    assert_eq!(q["decided"], 4, "{v}");
    assert_eq!(q["decision_latency_ms_p50"], 2000, "{v}");
    assert_eq!(q["decision_latency_ms_p95"], 4000, "{v}");

    // Only the running one and the three most recent finished are held in memory.
    {
        let book = env.approvals.book().await.unwrap();
        let mut held: Vec<ExecId> = book.execs.keys().copied().collect();
        held.sort();
        let mut want = vec![ids[7], ids[8], ids[9], live];
        want.sort();
        assert_eq!(held, want);
        assert!(book.gates.len() <= 3, "{:?}", book.gates.keys());
    }

    // An execution the book let go is still found by id (folded from its events), and only by
    // its own tenant.
    let r = get(&format!("/v1/executions/{}", ids[0])).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let x: Value = r.json().await.unwrap();
    assert_eq!(x["status"], "success");
    assert_eq!(x["cost_micros"], 1_000);
    assert_eq!(x["gates"], 1);
    let text = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        text.contains(
            "keel_gate_decision_latency_seconds_count{tenant=\"acme\",queue=\"refunds\"} 4"
        ),
        "{text}"
    );
}

async fn axum_serve(listener: tokio::net::TcpListener, router: axum::Router) {
    let _ = axum::serve(listener, router).await;
}

fn snapshot_config() -> Config {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    Config {
        tools: repo.join("tools"),
        strategies: repo.join("strategies"),
        prices: repo.join("prices.toml"),
    }
}

async fn store_with(data: &Path, from: u64, to: u64) -> Embedded {
    let env = common::open(data, &snapshot_config());
    for n in from..to {
        let events = ExecBuilder::new(exec_id(n), "acme")
            .started("order")
            .model_call(10, 1, Cost::Known(100))
            .finished(Outcome::Success)
            .build();
        env.log.append(exec_id(n), 0, &events).await.unwrap();
    }
    env
}

fn bounded(env: &Embedded, snapshot: PathBuf) {
    env.approvals.bound_memory_to(3);
    env.approvals.snapshot_to(snapshot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_book_folds_only_what_came_after_its_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let snapshot = tmp.path().join("book.snapshot.json");

    let first = store_with(&data, 1, 11).await;
    bounded(&first, snapshot.clone());
    let (held, dropped) = {
        let book = first.approvals.book().await.unwrap();
        assert_eq!(book.folded, 40, "ten executions of four events");
        first.approvals.save_snapshot(&book, true).await;
        let held: Vec<_> = book.execs.keys().copied().collect();
        (held, book.dropped["acme"].executions.clone())
    };
    drop(first);
    assert!(snapshot.exists());

    // The restart starts from the snapshot: nothing to fold, the same figures.
    let second = store_with(&data, 11, 12).await;
    bounded(&second, snapshot.clone());
    let book = second.approvals.book().await.unwrap();
    assert_eq!(
        book.folded, 4,
        "only the execution appended after the snapshot"
    );
    assert_eq!(book.dropped["acme"].executions.values().sum::<u64>(), 8);
    let mut want = held.clone();
    want.retain(|x| *x != exec_id(8));
    want.push(exec_id(11));
    let mut got: Vec<_> = book.execs.keys().copied().collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(dropped.values().sum::<u64>(), 7);
    drop(book);

    // The same snapshot beside another store (its offset names another event) is ignored.
    let other = store_with(&tmp.path().join("other"), 100, 104).await;
    bounded(&other, snapshot);
    let book = other.approvals.book().await.unwrap();
    assert_eq!(book.folded, 16, "folded from the spine");
    assert!(
        book.dropped
            .get("acme")
            .is_some_and(|d| d.executions.values().sum::<u64>() == 1)
    );
}
