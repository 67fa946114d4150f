//! The HTTP API against a real server on 127.0.0.1 over the embedded default (a real spine
//! file, the demo shop, the scripted model): tenant isolation on every endpoint, roles, malformed
//! requests, the approve and reject paths, racing approvers, OpenAPI and metrics.

#![allow(clippy::unwrap_used)]

mod common;
use common::repo;

use keel_runtime::embedded::{Config, Embedded};
use keel_server::auth::{Role, Tokens};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

struct Server {
    _tmp: tempfile::TempDir,
    base: String,
    http: reqwest::Client,
    env: Embedded,
    tokens: Vec<(String, String)>,
}

impl Server {
    fn token(&self, name: &str) -> &str {
        &self.tokens.iter().find(|(n, _)| n == name).unwrap().1
    }

    async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Starts an execution as `who` and waits until it is at a gate or ended.
    async fn start_and_settle(&self, who: &str, goal: &str) -> String {
        let (s, v) = self
            .call(
                Some(self.token(who)),
                Method::POST,
                "/v1/executions",
                Some(&json!({"goal": goal}).to_string()),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let exec = v["exec_id"].as_str().unwrap().to_owned();
        self.wait_status(who, &exec, |s| s != "running").await;
        exec
    }

    async fn wait_status(&self, who: &str, exec: &str, done: impl Fn(&str) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (s, v) = self
                .call(
                    Some(self.token(who)),
                    Method::GET,
                    &format!("/v1/executions/{exec}"),
                    None,
                )
                .await;
            if s == StatusCode::OK && done(v["status"].as_str().unwrap_or("")) {
                return v;
            }
            assert!(Instant::now() < deadline, "execution {exec} stuck: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn pending_gate(&self, who: &str, exec: &str) -> String {
        let (s, v) = self
            .call(
                Some(self.token(who)),
                Method::GET,
                "/v1/gates?status=pending",
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["gates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["exec_id"] == exec)
            .unwrap_or_else(|| panic!("no pending gate for {exec}: {v}"))["gate_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

async fn server() -> Server {
    server_with(&repo().join("strategies")).await
}

/// A server whose strategies are read from `strategies`.
async fn server_with(strategies: &Path) -> Server {
    server_with_tools(strategies, &repo().join("tools"), |_| {}).await
}

/// A server with its own strategies, tool contracts and extra builtin tools.
async fn server_with_tools(
    strategies: &Path,
    tools: &Path,
    builtins: impl FnOnce(&mut keel_tools::adapter::builtin::Builtins),
) -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo();
    let config = Config {
        tools: tools.to_path_buf(),
        strategies: strategies.to_path_buf(),
        prices: repo.join("prices.toml"),
    };
    let data = tmp.path().join("data");
    let env = common::open_with(&data, &config, builtins);
    let store = Tokens::open(&data).unwrap();
    let mut tokens = Vec::new();
    for (name, tenant, roles) in [
        (
            "acme-all",
            "acme",
            vec![Role::Agent, Role::Approver, Role::Operator],
        ),
        ("acme-agent", "acme", vec![Role::Agent]),
        ("acme-approver", "acme", vec![Role::Approver]),
        ("acme-approver2", "acme", vec![Role::Approver]),
        ("globex-admin", "globex", vec![Role::Admin]),
    ] {
        tokens.push((
            name.to_owned(),
            store
                .create(tenant, &roles, name, "2026-11-25T00:00:00Z")
                .unwrap(),
        ));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = keel_server::App::new(&env, store);
    tokio::spawn(keel_server::serve(listener, state));
    let _ = rustls::crypto::ring::default_provider().install_default();
    Server {
        _tmp: tmp,
        base,
        http: reqwest::Client::new(),
        env,
        tokens,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_gets_404_on_every_endpoint() {
    let srv = server().await;
    let exec = srv
        .start_and_settle("acme-all", "Please refund order 1001")
        .await;
    let gate = srv.pending_gate("acme-all", &exec).await;
    let other = Some(srv.token("globex-admin"));
    for (method, path, body) in [
        (Method::GET, format!("/v1/executions/{exec}"), None),
        (Method::GET, format!("/v1/executions/{exec}/events"), None),
        (Method::GET, format!("/v1/gates/{gate}"), None),
        (
            Method::POST,
            format!("/v1/gates/{gate}/decision"),
            Some(r#"{"verdict":"approve","reason":"mine now"}"#),
        ),
        (
            Method::PUT,
            "/v1/kill-switches/tenant/acme".to_string(),
            Some(r#"{"reason":"sabotage"}"#),
        ),
        (
            Method::DELETE,
            "/v1/kill-switches/tenant/acme".to_string(),
            None,
        ),
    ] {
        let (s, v) = srv.call(other, method.clone(), &path, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {path}: {v}");
    }
    // Lists and figures never show the other tenant's work.
    for path in [
        "/v1/executions",
        "/v1/gates?status=all",
        "/v1/kill-switches",
        "/v1/reviews",
        "/v1/metrics",
    ] {
        let (s, v) = srv.call(other, Method::GET, path, None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
        let text = v.to_string();
        assert!(
            !text.contains(&exec) && !text.contains("acme"),
            "{path} leaks: {text}"
        );
    }
    let (s, v) = srv.call(other, Method::GET, "/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!v.as_str().unwrap().contains("acme"), "{v}");
    // The gate is still acme's to decide, and still pending.
    assert_eq!(srv.pending_gate("acme-all", &exec).await, gate);
    // A globex tool switch does not stop acme.
    let (s, _) = srv
        .call(
            other,
            Method::PUT,
            "/v1/kill-switches/tool/lookup_order",
            Some("{}"),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let exec2 = srv
        .start_and_settle("acme-all", "Where is my order 1007?")
        .await;
    let v = srv
        .wait_status("acme-all", &exec2, |s| s == "success")
        .await;
    assert_eq!(v["status"], "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_roles_and_malformed_requests() {
    let srv = server().await;
    let (s, _) = srv.call(None, Method::GET, "/v1/executions", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = srv
        .call(Some("keel_forged"), Method::GET, "/v1/executions", None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = srv
        .call(
            Some(srv.token("acme-approver")),
            Method::POST,
            "/v1/executions",
            Some(r#"{"goal":"x"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, _) = srv
        .call(
            Some(srv.token("acme-agent")),
            Method::GET,
            "/v1/gates",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = srv
        .call(
            Some(srv.token("acme-agent")),
            Method::PUT,
            "/v1/kill-switches/tool/notify_team",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let agent = Some(srv.token("acme-all"));
    for (body, field) in [
        ("{not json", "body"),
        ("[1,2]", "body"),
        ("{}", "goal"),
        (r#"{"goal": ""}"#, "goal"),
        (r#"{"goal": 42}"#, "goal"),
        (r#"{"goal": "hi", "strategy": ["a"]}"#, "strategy"),
        (r#"{"goal": "hi", "strategy": "nope"}"#, "strategy"),
        (r#"{"goal": "hi", "priority": 1}"#, "priority"),
    ] {
        let (s, v) = srv
            .call(agent, Method::POST, "/v1/executions", Some(body))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["field"], field, "{body}: {v}");
    }
    let exec = srv
        .start_and_settle("acme-all", "Please refund order 1002")
        .await;
    let gate = srv.pending_gate("acme-all", &exec).await;
    for (body, field) in [
        (r#"{"verdict":"maybe"}"#, "verdict"),
        (r#"{}"#, "verdict"),
        (r#"{"verdict":"reject"}"#, "reason"),
        (r#"{"verdict":"approve","reason":7}"#, "reason"),
        (r#"{"verdict":"approve","by":"x"}"#, "by"),
    ] {
        let (s, v) = srv
            .call(
                agent,
                Method::POST,
                &format!("/v1/gates/{gate}/decision"),
                Some(body),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["field"], field, "{body}: {v}");
    }
    for (method, path, field) in [
        (Method::GET, "/v1/executions/not-a-uuid".to_string(), "id"),
        (Method::GET, "/v1/gates?status=weird".to_string(), "status"),
        (
            Method::PUT,
            "/v1/kill-switches/planet/mars".to_string(),
            "scope",
        ),
    ] {
        let (s, v) = srv.call(agent, method, &path, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_eq!(v["field"], field, "{path}: {v}");
    }
    let (s, _) = srv
        .call(agent, Method::GET, "/v1/gates/no-such-gate", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Nothing stored was touched by the bad requests: the gate still waits.
    assert_eq!(srv.pending_gate("acme-all", &exec).await, gate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_and_reject_over_http_and_racing_approvers() {
    let srv = server().await;
    let a = srv
        .start_and_settle("acme-agent", "Please refund order 1003")
        .await;
    let b = srv
        .start_and_settle("acme-agent", "Please refund order 1004")
        .await;
    let ga = srv.pending_gate("acme-approver", &a).await;
    let gb = srv.pending_gate("acme-approver", &b).await;
    let (s, g) = srv
        .call(
            Some(srv.token("acme-approver")),
            Method::GET,
            &format!("/v1/gates/{ga}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        g["evidence_pack"]["action"]["tool"],
        "issue_customer_refund"
    );

    // Two approvers at once: exactly one 200, the other 409.
    let decide = |who: &'static str, gate: String, verdict: &'static str| {
        let srv = &srv;
        async move {
            let body =
                json!({"verdict": verdict, "reason": format!("{who} says {verdict}")}).to_string();
            srv.call(
                Some(srv.token(who)),
                Method::POST,
                &format!("/v1/gates/{gate}/decision"),
                Some(&body),
            )
            .await
        }
    };
    let (r1, r2) = tokio::join!(
        decide("acme-approver", ga.clone(), "approve"),
        decide("acme-approver2", ga.clone(), "reject")
    );
    let statuses = [r1.0, r2.0];
    assert!(
        statuses.contains(&StatusCode::OK) && statuses.contains(&StatusCode::CONFLICT),
        "{r1:?} {r2:?}"
    );
    let approved = r1.0 == StatusCode::OK && r1.1["verdict"] == "approve"
        || r2.0 == StatusCode::OK && r2.1["verdict"] == "approve";
    let v = srv
        .wait_status("acme-agent", &a, |s| s != "running" && s != "at_gate")
        .await;
    assert_eq!(
        v["status"],
        if approved { "success" } else { "failure" },
        "{v}"
    );

    let (s, _) = decide("acme-approver", gb.clone(), "reject").await;
    assert_eq!(s, StatusCode::OK);
    let v = srv
        .wait_status("acme-agent", &b, |s| s != "running" && s != "at_gate")
        .await;
    assert_eq!(v["status"], "failure");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("acme-approver says reject"),
        "{v}"
    );
    let (s, ev) = srv
        .call(
            Some(srv.token("acme-agent")),
            Method::GET,
            &format!("/v1/executions/{b}/events"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let types: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"gate.decided") && types.last() == Some(&"exec.finished"),
        "{types:?}"
    );
    assert_eq!(
        common::shop(&srv._tmp.path().join("data"))
            .count("refunds")
            .unwrap(),
        u64::from(approved)
    );

    let (s, m) = srv
        .call(Some(srv.token("acme-all")), Method::GET, "/metrics", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let m = m.as_str().unwrap();
    assert!(
        m.contains("keel_gate_decision_latency_seconds_count{tenant=\"acme\",queue=\"default\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("keel_gates_pending{tenant=\"acme\",queue=\"default\"} 0"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_openapi_are_public_and_describe_the_paths() {
    let srv = server().await;
    let (s, v) = srv.call(None, Method::GET, "/healthz", None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, v) = srv.call(None, Method::GET, "/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/v1/executions",
        "/v1/executions/{id}",
        "/v1/executions/{id}/events",
        "/v1/gates",
        "/v1/gates/{id}/decision",
        "/v1/kill-switches/{scope}/{name}",
        "/v1/retrieval-samples",
        "/v1/retrieval-samples/{exec_id}/{seq}/rating",
        "/healthz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(
            v["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
}

/// Appends executions of acme with 20 retrievals each straight to the server's spine until the
/// projections sample at least one (one retrieval in ten, by a hash of the event id).
async fn sampled_retrievals(srv: &Server) -> Vec<Value> {
    use keel_core::payload::{MemoryRetrieved, Outcome, Payload};
    use keel_testkit::builder::{ExecBuilder, exec_id};
    for n in 900..950 {
        let mut b = ExecBuilder::new(exec_id(n), "acme").started("where is my parcel?");
        for i in 0..20 {
            b.push(Payload::MemoryRetrieved(MemoryRetrieved {
                query: format!("parcel policy {i}"),
                chunks: Vec::new(),
                memory_version: "v1".into(),
            }));
        }
        let events = b.finished(Outcome::Success).build();
        srv.env
            .log
            .append(events[0].exec_id, 0, &events)
            .await
            .unwrap();
        let (s, v) = srv
            .call(
                Some(srv.token("acme-approver")),
                Method::GET,
                "/v1/retrieval-samples?unrated=true",
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let samples = v["samples"].as_array().unwrap().clone();
        if !samples.is_empty() {
            return samples;
        }
    }
    panic!("no retrieval sampled in 1000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrieval_ratings_over_http_are_tenant_scoped_and_validated() {
    let srv = server().await;
    let samples = sampled_retrievals(&srv).await;
    assert!(samples.iter().all(|s| s["tenant"] == "acme"), "{samples:?}");
    let s0 = &samples[0];
    let path = format!(
        "/v1/retrieval-samples/{}/{}/rating",
        s0["exec_id"].as_str().unwrap(),
        s0["seq"]
    );

    // Another tenant sees none of them and cannot rate them (404, not 403); agents may not rate.
    let (s, v) = srv
        .call(
            Some(srv.token("globex-admin")),
            Method::GET,
            "/v1/retrieval-samples",
            None,
        )
        .await;
    assert_eq!(
        (s, v["samples"].as_array().unwrap().len()),
        (StatusCode::OK, 0),
        "{v}"
    );
    let body = json!({"rating": 2}).to_string();
    let (s, _) = srv
        .call(
            Some(srv.token("globex-admin")),
            Method::POST,
            &path,
            Some(&body),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = srv
        .call(
            Some(srv.token("acme-agent")),
            Method::POST,
            &path,
            Some(&body),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Malformed ratings name the field.
    for (bad, field) in [
        (json!({"rating": 4}), "rating"),
        (json!({"rating": -1}), "rating"),
        (json!({"rating": "two"}), "rating"),
        (json!({}), "rating"),
        (json!({"rating": 2, "stars": 5}), "stars"),
        (json!({"rating": 2, "note": 7}), "note"),
    ] {
        let (s, v) = srv
            .call(
                Some(srv.token("acme-approver")),
                Method::POST,
                &path,
                Some(&bad.to_string()),
            )
            .await;
        assert_eq!(
            (s, v["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{bad}: {v}"
        );
    }
    let (s, v) = srv
        .call(
            Some(srv.token("acme-approver")),
            Method::POST,
            "/v1/retrieval-samples/not-a-uuid/3/rating",
            Some(&body),
        )
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("exec_id"))
    );

    // The owner's approver rates it: recorded, shown, out of the queue, counted by the SLOs.
    let body = json!({"rating": 2, "note": "the right policy"}).to_string();
    let (s, v) = srv
        .call(
            Some(srv.token("acme-approver")),
            Method::POST,
            &path,
            Some(&body),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["rater"], "acme-approver");
    let (_, v) = srv
        .call(
            Some(srv.token("acme-approver")),
            Method::GET,
            "/v1/retrieval-samples",
            None,
        )
        .await;
    let rated = v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["exec_id"] == s0["exec_id"] && s["seq"] == s0["seq"])
        .unwrap();
    assert_eq!(
        (&rated["rating"], &rated["rated_by"], &rated["rating_note"]),
        (
            &json!(2),
            &json!("acme-approver"),
            &json!("the right policy")
        )
    );
    let (_, v) = srv
        .call(
            Some(srv.token("acme-approver")),
            Method::GET,
            "/v1/retrieval-samples?unrated=true",
            None,
        )
        .await;
    assert!(
        v["samples"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| !(s["exec_id"] == s0["exec_id"] && s["seq"] == s0["seq"]))
    );
    let (s, v) = srv
        .call(
            Some(srv.token("acme-all")),
            Method::GET,
            "/v1/slo?days=100000",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = &v["retrieval"][0];
    assert_eq!(
        (&r["rated"], &r["mean_rating"]),
        (&json!(1), &json!(2.0)),
        "{v}"
    );
}

/// Item 4 (issue 12): `POST /v1/executions` names its data subject, so the execution is sealed
/// under the subject's key and erasure reaches it; a strategy with `subject: required` refuses
/// a request without one with a 400 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_started_over_http_names_its_subject() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["support-short", "support-long"] {
        let text = std::fs::read_to_string(repo().join(format!("strategies/{name}.yaml")))
            .unwrap()
            .replace("../", &format!("{}/", repo().display()));
        std::fs::write(dir.path().join(format!("{name}.yaml")), text).unwrap();
    }
    let kyc = std::fs::read_to_string(dir.path().join("support-short.yaml"))
        .unwrap()
        .replace("name: support-short", "name: support-kyc")
        .replace("default: true", "default: false")
        + "subject: required\n";
    std::fs::write(dir.path().join("support-kyc.yaml"), kyc).unwrap();
    let srv = server_with(dir.path()).await;
    let post = |body: Value| {
        let srv = &srv;
        async move {
            srv.call(
                Some(srv.token("acme-agent")),
                Method::POST,
                "/v1/executions",
                Some(&body.to_string()),
            )
            .await
        }
    };
    let goal = "Where is my order A-1007? Write to me at jane.doe@example.com";
    let (s, v) = post(json!({"goal": goal, "strategy": "support-kyc"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["field"], "subject", "{v}");
    assert!(
        v.to_string().contains("requires a subject"),
        "the error says what is missing: {v}"
    );
    for bad in [json!(""), json!(7), json!("a\u{0}b")] {
        let (s, v) = post(json!({"goal": goal, "subject": bad})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["field"], "subject", "{v}");
    }

    let (s, v) = post(json!({"goal": goal, "strategy": "support-kyc", "subject": "cust-j"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let exec = v["exec_id"].as_str().unwrap().to_owned();
    srv.wait_status("acme-agent", &exec, |s| s != "running")
        .await;
    let read_goal = || async {
        let (s, v) = srv
            .call(
                Some(srv.token("acme-agent")),
                Method::GET,
                &format!("/v1/executions/{exec}/events"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let first = match &v {
            Value::Array(a) => a[0].clone(),
            other => other["events"][0].clone(),
        };
        first["data"]["goal"].clone()
    };
    assert_eq!(read_goal().await, goal);
    let spine = srv._tmp.path().join("data/spine.db");
    let sealed = |needle: &str| {
        !std::fs::read(&spine)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    };
    assert!(
        sealed("jane.doe@example.com"),
        "the goal is sealed at append"
    );
    let execs = srv
        .env
        .log
        .subject_executions("acme", "cust-j")
        .await
        .unwrap();
    assert_eq!(
        execs.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        vec![exec.clone()],
        "subject access reaches the execution"
    );
    // With an Idempotency-Key, the subject is part of the body a repeat must match.
    let keyed = |subject: &'static str| {
        let srv = &srv;
        async move {
            let r = srv
                .http
                .post(format!("{}/v1/executions", srv.base))
                .bearer_auth(srv.token("acme-agent"))
                .header("content-type", "application/json")
                .header("idempotency-key", "order-1007-question")
                .body(json!({"goal": "Where is my order A-1007?", "subject": subject}).to_string())
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (s1, first) = keyed("cust-k").await;
    assert_eq!(s1, StatusCode::CREATED, "{first}");
    let (s2, again) = keyed("cust-k").await;
    assert_eq!(s2, StatusCode::OK, "{again}");
    assert_eq!(again["exec_id"], first["exec_id"]);
    let (s3, other) = keyed("cust-x").await;
    assert_eq!(s3, StatusCode::UNPROCESSABLE_ENTITY, "{other}");
    let keyed_exec: keel_core::ExecId = first["exec_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        keel_spine::EventLog::subject_of(&*srv.env.log, keyed_exec)
            .await
            .unwrap()
            .as_deref(),
        Some("cust-k"),
        "the first request's subject stays"
    );

    srv.env
        .log
        .erase_subject("acme", "cust-j", &*srv.env.agent.blobs)
        .await
        .unwrap();
    assert_eq!(read_goal().await, "[erased]");
    assert!(sealed("jane.doe@example.com"));
    assert!(sealed("Write to me at"));
}

/// Item 19 (issue 12): a panic in a step (here a builtin tool registered by the test that panics)
/// left the execution `running` with only `exec.started` visible, its buffered events unseen,
/// and each retry panicked again. The failed step is an event, the execution ends `error`
/// naming the panic, and every event the step appended is visible through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_step_ends_the_execution_with_its_events_visible() {
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("tools");
    let strategies = dir.path().join("strategies");
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::create_dir_all(&strategies).unwrap();
    std::fs::write(
        tools.join("explode.yaml"),
        "name: explode
description: A read-only tool that panics (test hook).
schema:
  input: { type: object, additionalProperties: false }
  output: { type: object }
side_effect: read_only
consequence_tier: 0
idempotency: none
budgets: { cost_est: '$0.0001' }
failure_policy: { retryable: [], max_attempts: 1, on_exhaust: fail }
timeout: 2s
adapter: { kind: builtin, function: explode }
",
    )
    .unwrap();
    let script = dir.path().join("explode-model.yaml");
    std::fs::write(
        &script,
        "rules:
  - when: { last_tool: none }
    then: { text: Check it., call: { tool: explode, args: {} } }
  - then: { text: Done. }
",
    )
    .unwrap();
    std::fs::write(
        strategies.join("support-explode.yaml"),
        format!(
            "name: support-explode
prompt: {{ file: {repo}/prompts/support-v1.md, version: v1 }}
model: {{ provider: scripted, name: scripted-small, script: {script}, max_tokens: 512 }}
tools: [explode]
max_steps: 6
budget: {{ max_cost_usd: 0.05, max_tokens: 60000 }}
default: true
success: [ {{ answer_matches: Done }} ]
",
            repo = repo().display(),
            script = script.display()
        ),
    )
    .unwrap();
    let srv = server_with_tools(&strategies, &tools, |b| {
        let explode: keel_tools::adapter::builtin::BuiltinFn = std::sync::Arc::new(|_, _| {
            Box::pin(async {
                if std::hint::black_box(true) {
                    panic!("injected: the explode tool panicked");
                }
                Ok::<_, keel_tools::adapter::AdapterError>(json!({}))
            })
        });
        b.register("explode", false, explode);
    })
    .await;
    let (s, v) = srv
        .call(
            Some(srv.token("acme-agent")),
            Method::POST,
            "/v1/executions",
            Some(&json!({"goal": "Check order A-1007"}).to_string()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let exec = v["exec_id"].as_str().unwrap().to_owned();
    let view = srv
        .wait_status("acme-agent", &exec, |s| s != "running")
        .await;
    let (s, v) = srv
        .call(
            Some(srv.token("acme-agent")),
            Method::GET,
            &format!("/v1/executions/{exec}/events"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let events = v["events"].as_array().unwrap();
    assert_eq!(view["status"], "error", "{view} {v:#}");
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "exec.started",
            "model.called",
            "model.responded",
            "plan.proposed",
            "step.completed",
            "exec.finished"
        ],
        "the step's buffered events are visible, the failed step is recorded once: {v:#}"
    );
    let failed = &events[4]["data"]["summary"];
    assert!(
        failed
            .as_str()
            .unwrap()
            .contains("injected: the explode tool panicked"),
        "{failed}"
    );
    let end = &events[5]["data"];
    assert_eq!(end["outcome"], "error", "{end}");
    assert!(
        end["detail"].as_str().unwrap().contains("panicked"),
        "{end}"
    );
}

/// Issue 17 item 1: a gate's evidence as `GET /v1/gates/{id}` shows it, with the demo shop: the
/// lookup's output (the order's amount and status) read from the blob store, the earlier refund
/// of the same order by another execution of the tenant (and an earlier refused one), never
/// another tenant's refund of that order, the subject's history and the strategy's record at
/// the tier; after the subject's erasure the pack still answers, its outputs shown as erased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gates_evidence_shows_outputs_earlier_refunds_of_the_order_and_no_other_tenants() {
    let srv = server().await;
    let start = |who: &'static str, subject: Option<&'static str>| {
        let srv = &srv;
        async move {
            let mut body = json!({"goal": "Please refund order 1005, it arrived damaged"});
            if let Some(s) = subject {
                body["subject"] = json!(s);
            }
            let (s, v) = srv
                .call(
                    Some(srv.token(who)),
                    Method::POST,
                    "/v1/executions",
                    Some(&body.to_string()),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
            let exec = v["exec_id"].as_str().unwrap().to_owned();
            srv.wait_status(who, &exec, |s| s == "at_gate").await;
            let approver = if who == "acme-agent" {
                "acme-approver"
            } else {
                who
            };
            let gate = srv.pending_gate(approver, &exec).await;
            (exec, gate)
        }
    };
    let decide = |who: &'static str, gate: String, verdict: &'static str, reason: &'static str| {
        let srv = &srv;
        async move {
            let body = json!({"verdict": verdict, "reason": reason}).to_string();
            let (s, v) = srv
                .call(
                    Some(srv.token(who)),
                    Method::POST,
                    &format!("/v1/gates/{gate}/decision"),
                    Some(&body),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
        }
    };

    // Another tenant refunds the same order first: it must never show in acme's packs.
    let (globex, gg) = start("globex-admin", None).await;
    decide("globex-admin", gg, "approve", "globex checked").await;
    srv.wait_status("globex-admin", &globex, |s| s == "success")
        .await;
    // acme: one refund approved and run, one refused, then a third waits.
    let (refunded, g1) = start("acme-agent", Some("cust-5")).await;
    decide(
        "acme-approver",
        g1,
        "approve",
        "photo of the damage checked",
    )
    .await;
    srv.wait_status("acme-agent", &refunded, |s| s == "success")
        .await;
    let (refused, g2) = start("acme-agent", Some("cust-5")).await;
    decide("acme-approver2", g2, "reject", "already refunded").await;
    srv.wait_status("acme-agent", &refused, |s| s == "failure")
        .await;
    let (waiting, g3) = start("acme-agent", Some("cust-5")).await;

    let pack = |who: &'static str| {
        let srv = &srv;
        let g3 = g3.clone();
        async move {
            let (s, v) = srv
                .call(
                    Some(srv.token(who)),
                    Method::GET,
                    &format!("/v1/gates/{g3}"),
                    None,
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v
        }
    };
    let v = pack("acme-approver").await;
    let ev = &v["evidence"];
    assert_eq!(ev["objects"], json!(["order_id=A-1005"]), "{ev}");

    // The lookup's output itself, pretty-printed: the amount paid and the order's status.
    let lookup = &ev["tool_results"][0];
    assert_eq!(lookup["tool"], "lookup_order", "{ev}");
    assert_eq!(lookup["input"], json!({"order_id": "A-1005"}));
    let text = lookup["output"]["text"].as_str().unwrap();
    assert!(
        text.contains("\n  \"amount_cents\": "),
        "pretty JSON: {text}"
    );
    let order: Value = serde_json::from_str(text).unwrap();
    assert_eq!(order["order_id"], "A-1005");
    assert_eq!(
        order["amount_cents"], v["action"]["args"]["amount_cents"],
        "the amount paid is what the action refunds"
    );
    assert!(order["status"].is_string(), "{order}");
    assert_eq!(lookup["output"]["more_chars"], 0);

    // Earlier actions on A-1005: acme's issued refund (with who approved it) and the refused
    // gate; globex's refund of the same order is not there.
    let earlier = ev["earlier_actions"].as_array().unwrap();
    let execs: Vec<&str> = earlier
        .iter()
        .map(|x| x["exec_id"].as_str().unwrap())
        .collect();
    assert_eq!(execs, [refused.as_str(), refunded.as_str()], "{ev}");
    assert_eq!(
        ev["earlier_executions"],
        json!({"named_the_object": 2, "read": 2})
    );
    assert!(!execs.contains(&globex.as_str()) && !execs.contains(&waiting.as_str()));
    let (gate, call) = (&earlier[0], &earlier[1]);
    assert_eq!(gate["kind"], "gate");
    assert_eq!(gate["decision"], "reject");
    assert_eq!(gate["reason"], "already refunded");
    assert_eq!(call["kind"], "call");
    assert_eq!(call["tool"], "issue_customer_refund");
    assert_eq!(call["args"]["order_id"], "A-1005");
    assert_eq!(call["status"], "ok");
    assert_eq!(call["approved_by"], "acme-approver");
    assert!(
        call["output"]["text"]
            .as_str()
            .unwrap()
            .contains("\"status\": \"issued\""),
        "{call}"
    );

    // The subject's history and the strategy's record at tier 3 (acme's decisions only).
    let h = &ev["subject_history"];
    assert_eq!(h["subject"], "cust-5");
    assert_eq!(h["executions"], 2, "{h}");
    assert_eq!(h["outcomes"], json!({"failure": 1, "success": 1}), "{h}");
    let r = &ev["strategy_record"];
    assert_eq!(r["tier"], 3);
    assert_eq!(
        (r["approved"].clone(), r["rejected"].clone()),
        (json!(1), json!(1)),
        "{r}"
    );
    assert_eq!(r["approval_rate"], 0.5);
    assert!(ev["cost_so_far"]["usd"].as_f64().unwrap() > 0.0, "{ev}");
    assert!(ev["memory"].is_array(), "{ev}");

    // The other tenant cannot read it.
    let (s, _) = srv
        .call(
            Some(srv.token("globex-admin")),
            Method::GET,
            &format!("/v1/gates/{g3}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The subject is erased: the pack still answers, the outputs show as erased, and the
    // erased executions' refunds no longer match the order.
    srv.env
        .log
        .erase_subject("acme", "cust-5", &*srv.env.agent.blobs)
        .await
        .unwrap();
    let v = pack("acme-approver").await;
    let ev = &v["evidence"];
    assert_eq!(
        ev["tool_results"][0]["output"],
        json!({"erased": true}),
        "{ev}"
    );
    assert_eq!(ev["earlier_actions"], json!([]), "{ev}");
    assert!(!v.to_string().contains("/blobs/"), "no paths: {v}");
}
