//! An execution's stored inputs and outputs through `GET /v1/executions/{id}/blobs/{ref}` and its
//! `/ui/` twin, against a real server on 127.0.0.1 over the embedded default: another tenant
//! gets 404 for a blob (by token and by UI session, even knowing its hash), a blob the execution
//! does not reference is 404, a malformed reference is a 400 naming the field, an erased
//! subject's blob answers 410 `erased`, and the execution page draws its waterfall.

#![allow(clippy::unwrap_used)]

mod common;
use common::repo;

use keel_core::payload::Payload;
use keel_runtime::embedded::{Config, Embedded};
use keel_server::auth::{Role, Tokens};
use reqwest::StatusCode;
use serde_json::Value;

struct Fixture {
    _tmp: tempfile::TempDir,
    env: Embedded,
    base: String,
    http: reqwest::Client,
    acme: String,
    globex: String,
    /// acme's execution that looked up an order, and its tool output's blob.
    acme_exec: String,
    acme_output: String,
    /// globex's own execution (another order).
    globex_exec: String,
}

/// acme and globex each look an order up (different orders, so different outputs); acme also
/// runs one about the data subject `cust-7`. Served without background workers.
async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = repo();
    let config = Config {
        tools: repo.join("tools"),
        strategies: repo.join("strategies"),
        prices: repo.join("prices.toml"),
    };
    let env = common::open(&data, &config);
    let s = env.strategies.get("support-short").unwrap();
    let model = s.provider().unwrap();
    let run = async |tenant: &str, subject: Option<&str>, goal: &str| {
        let exec = env
            .agent
            .start_about(s, tenant, subject, goal)
            .await
            .unwrap();
        env.agent.drive(s, &*model, exec).await.unwrap();
        exec
    };
    let acme_exec = run("acme", None, "Where is my order A-1017?").await;
    let globex_exec = run("globex", None, "Where is my order A-1003?").await;
    let store = Tokens::open(&data).unwrap();
    let at = "2026-11-25T00:00:00Z";
    let acme = store
        .create("acme", &[Role::Operator], "acme-op", at)
        .unwrap();
    let globex = store
        .create("globex", &[Role::Admin, Role::Operator], "globex-root", at)
        .unwrap();
    let acme_output = output_ref(&env, acme_exec).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = keel_server::App::new(&env, store);
    tokio::spawn(async move {
        axum::serve(listener, keel_server::router(state))
            .await
            .unwrap()
    });
    let _ = rustls::crypto::ring::default_provider().install_default();
    Fixture {
        _tmp: tmp,
        env,
        base,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        acme,
        globex,
        acme_exec: acme_exec.to_string(),
        acme_output,
        globex_exec: globex_exec.to_string(),
    }
}

/// The first tool output an execution's events reference.
async fn output_ref(env: &Embedded, exec: keel_core::ExecId) -> String {
    env.agent
        .log
        .read(exec, 1)
        .await
        .unwrap()
        .iter()
        .find_map(|e| match &e.payload {
            Payload::ToolResult(r) => r.output_ref.clone(),
            _ => None,
        })
        .expect("a tool output")
}

impl Fixture {
    async fn get(&self, path: &str, token: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn login(&self, token: &str) -> String {
        let r = self
            .http
            .post(format!("{}/ui/login", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", &self.base)
            .body(format!("token={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let set = r.headers()["set-cookie"].to_str().unwrap();
        set.split(';').next().unwrap().to_owned()
    }

    async fn page(&self, path: &str, cookie: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_gets_404_for_a_blob_even_knowing_its_hash() {
    let f = fixture().await;
    let path = format!("/v1/executions/{}/blobs/{}", f.acme_exec, f.acme_output);

    let (s, body) = f.get(&path, &f.acme).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ref"], f.acme_output.as_str());
    assert!(
        v["json"].to_string().contains("A-1017"),
        "the order acme looked up: {v}"
    );

    // globex, admin included: the same path, and acme's hash under its own execution.
    for path in [
        path.clone(),
        format!("/v1/executions/{}/blobs/{}", f.globex_exec, f.acme_output),
    ] {
        let (s, body) = f.get(&path, &f.globex).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(!body.contains("A-1017"), "{path}: {body}");
    }
    // The same through the web UI's sessions.
    let ui = path.replacen("/v1/", "/ui/", 1);
    let (s, body) = f.page(&ui, &f.login(&f.globex).await).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    assert!(!body.contains("A-1017"), "{body}");
    let (s, body) = f.page(&ui, &f.login(&f.acme).await).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains("A-1017"), "{body}");
    // No session, no blob.
    let (s, _) = f.page(&ui, "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // acme's own execution does not lend out a blob it does not reference.
    let globex_output = output_ref(&f.env, f.globex_exec.parse().unwrap()).await;
    let (s, body) = f
        .get(
            &format!("/v1/executions/{}/blobs/{globex_output}", f.acme_exec),
            &f.acme,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    assert!(!body.contains("A-1003"), "{body}");

    // The API describes it.
    let (s, doc) = f.get("/openapi.json", &f.acme).await;
    assert_eq!(s, StatusCode::OK);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert!(doc["paths"]["/v1/executions/{id}/blobs/{ref}"]["get"].is_object());

    // A malformed reference is a 400 naming the field, without echoing a path.
    let (s, body) = f
        .get(
            &format!("/v1/executions/{}/blobs/..%2F..%2Fetc", f.acme_exec),
            &f.acme,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["field"],
        "blob"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_subjects_blob_answers_erased() {
    let f = fixture().await;
    let s = f.env.strategies.get("support-short").unwrap();
    let model = s.provider().unwrap();
    let exec = f
        .env
        .agent
        .start_about(s, "acme", Some("cust-7"), "Where is my order A-1010?")
        .await
        .unwrap();
    f.env.agent.drive(s, &*model, exec).await.unwrap();
    let blob = output_ref(&f.env, exec).await;
    let path = format!("/v1/executions/{exec}/blobs/{blob}");
    let (st, body) = f.get(&path, &f.acme).await;
    assert_eq!(st, StatusCode::OK, "{body}");

    f.env
        .log
        .erase_subject("acme", "cust-7", &*f.env.agent.blobs)
        .await
        .unwrap();
    let (st, body) = f.get(&path, &f.acme).await;
    assert_eq!(st, StatusCode::GONE, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["erased"], true, "{v}");
    assert!(!body.contains("A-1010"), "{body}");
    // Still 404 to another tenant: erasure does not reveal that it existed.
    let (st, _) = f.get(&path, &f.globex).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_execution_page_draws_a_waterfall_whose_outputs_open_from_the_blob_endpoint() {
    let f = fixture().await;
    let cookie = f.login(&f.acme).await;
    let (s, html) = f
        .page(&format!("/ui/executions/{}", f.acme_exec), &cookie)
        .await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("<svg id=\"waterfall\""), "{html}");
    for kind in ["model", "tool"] {
        assert!(
            html.contains(&format!("class=\"bar\" data-kind=\"{kind}\"")),
            "a {kind} bar: {html}"
        );
    }
    assert!(
        html.contains(&format!(
            "data-blob=\"/ui/executions/{}/blobs/{}\"",
            f.acme_exec, f.acme_output
        )),
        "the tool output opens from the blob endpoint: {html}"
    );
    assert!(html.contains("<script src=\"/ui/execution.js\">"));

    // A refund waiting at its gate: the gate's bar runs to now, drawn as waiting.
    let st = f.env.strategies.get("support-short").unwrap();
    let model = st.provider().unwrap();
    let gated = f
        .env
        .agent
        .start(st, "acme", "Please refund order 1001")
        .await
        .unwrap();
    f.env.agent.drive(st, &*model, gated).await.unwrap();
    let (s, html) = f.page(&format!("/ui/executions/{gated}"), &cookie).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(
        html.contains("class=\"bar waiting\" data-kind=\"gate\""),
        "{html}"
    );
    let (s, js) = f.page("/ui/execution.js", &cookie).await;
    assert_eq!(s, StatusCode::OK);
    assert!(js.contains("textContent") && !js.contains("innerHTML"));
}
