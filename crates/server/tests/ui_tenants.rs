//! The economics and experiments pages of a real server on 127.0.0.1 (logged in through the
//! form, as a browser does) with two tenants: each page shows its own tenant's numbers only, an
//! experiment limited to another tenant is neither listed nor readable (404), and the pages need
//! the operator role (issue 15; decision 050: no credential reads across tenants).

#![allow(clippy::unwrap_used)]

mod common;
use common::repo;

use keel_runtime::embedded::Config;
use keel_server::auth::{Role, Tokens};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

struct Http {
    base: String,
    http: reqwest::Client,
}

impl Http {
    /// Logs in with `token` through the form; the session cookie's `name=value`.
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
        let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        set.split(';').next().unwrap().to_owned()
    }

    async fn page(&self, cookie: &str, path: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// Runs one execution of `token`'s tenant with `strategy` to its end.
    async fn run(&self, token: &str, strategy: &str) {
        let v: Value = self
            .http
            .post(format!("{}/v1/executions", self.base))
            .bearer_auth(token)
            .json(&json!({"goal": "Where is my order A-1017?", "strategy": strategy}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = v["exec_id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let x: Value = self
                .http
                .get(format!("{}/v1/executions/{id}", self.base))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if x["status"] != "running" {
                return;
            }
            assert!(Instant::now() < deadline, "{id} did not end");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_sees_only_its_own_economics_and_experiments_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let repo = repo();
    let config = Config {
        tools: repo.join("tools"),
        strategies: repo.join("strategies"),
        prices: repo.join("prices.toml"),
    };
    let env = common::open(&data, &config);
    // An experiment for acme only.
    let text = std::fs::read_to_string(repo.join("experiments/support-prompts.yaml"))
        .unwrap()
        .replace("name: support-prompts", "name: acme-only\ntenants: [acme]");
    let x = keel_runtime::experiment::parse(&text, "acme-only.yaml").unwrap();
    let now = env.agent.clock.now();
    env.agent
        .control
        .register_experiment(&x, &env.strategies, now, "test")
        .await
        .unwrap();

    let store = Tokens::open(&data).unwrap();
    let at = "2026-11-25T00:00:00Z";
    let roles = [Role::Operator, Role::Agent];
    let acme = store.create("acme", &roles, "acme", at).unwrap();
    let globex = store
        .create("globex", &[Role::Admin], "globex", at)
        .unwrap();
    let approver = store
        .create("acme", &[Role::Approver], "approver", at)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(keel_server::serve(
        listener,
        keel_server::App::new(&env, store),
    ));
    let h = Http {
        base,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    };
    // acme runs the long strategy, globex (an admin) the short one.
    h.run(&acme, "support-long").await;
    h.run(&globex, "support-short").await;

    let (a, g) = (h.login(&acme).await, h.login(&globex).await);
    let (s, page) = h.page(&a, "/ui/economics").await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.contains("<svg id=\"cps-chart\""), "{page}");
    assert!(page.contains("data-strategy=\"support-long/"), "{page}");
    assert!(
        !page.contains("support-short/") && !page.contains("globex"),
        "{page}"
    );
    let (_, page) = h.page(&g, "/ui/economics").await;
    assert!(page.contains("data-strategy=\"support-short/"), "{page}");
    assert!(
        !page.contains("support-long/") && !page.contains(">acme<"),
        "{page}"
    );

    let (s, list) = h.page(&a, "/ui/experiments").await;
    assert_eq!(s, StatusCode::OK);
    assert!(list.contains("/ui/experiments/acme-only"), "{list}");
    let (s, readout) = h.page(&a, "/ui/experiments/acme-only").await;
    assert_eq!(s, StatusCode::OK, "{readout}");
    assert!(
        readout.contains("Experiment acme-only") && readout.contains("data-arm=\"thorough\""),
        "{readout}"
    );
    // globex, even as an admin, neither sees it listed nor reads it.
    let (_, list) = h.page(&g, "/ui/experiments").await;
    assert!(!list.contains("acme-only"), "{list}");
    let (s, _) = h.page(&g, "/ui/experiments/acme-only").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The pages need the operator role.
    let p = h.login(&approver).await;
    for path in [
        "/ui/economics",
        "/ui/experiments",
        "/ui/experiments/acme-only",
    ] {
        assert_eq!(h.page(&p, path).await.0, StatusCode::FORBIDDEN, "{path}");
    }
    // Without a session: to the login page.
    let r = h
        .http
        .get(format!("{}/ui/economics", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}
