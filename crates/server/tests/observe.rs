//! Observability over HTTP against a real server on 127.0.0.1: `POST /v1/sql` read-only and
//! tenant-scoped (an admin too sees its own tenant only), trace lookup, SLOs (JSON and on `/metrics`), a
//! replay's diff (JSON and page), and the trace and SLO pages.

#![allow(clippy::unwrap_used)]

mod common;
use common::repo;

use keel_runtime::embedded::Config;
use keel_runtime::replay::ReadOnlyTools;
use keel_server::auth::{Role, Tokens};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_traces_slo_and_replay_diff_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo();
    let config = Config {
        tools: repo.join("tools"),
        strategies: repo.join("strategies"),
        prices: repo.join("prices.toml"),
    };
    let data = tmp.path().join("data");
    let env = common::open(&data, &config);
    let s = env.strategies.get("support-short").unwrap();
    let model = s.provider().unwrap();
    let mut execs = Vec::new();
    for tenant in ["acme", "globex"] {
        let exec = env
            .agent
            .start(s, tenant, "Where is my order A-1017?")
            .await
            .unwrap();
        env.agent.drive(s, &*model, exec).await.unwrap();
        execs.push(exec);
    }
    let trace = env.log.read(execs[0], 1).await.unwrap()[0]
        .trace_id
        .to_string();
    let replay = common::replayer(&data, &config)
        .replay(
            execs[0],
            env.strategies.get("support-long").unwrap(),
            &*model,
            ReadOnlyTools::Live,
        )
        .await
        .unwrap()
        .replay;

    let store = Tokens::open(&data).unwrap();
    let acme = store
        .create("acme", &[Role::Operator], "acme-op", "2026-11-25T00:00:00Z")
        .unwrap();
    let globex = store
        .create(
            "globex",
            &[Role::Operator],
            "globex-op",
            "2026-11-25T00:00:00Z",
        )
        .unwrap();
    let admin = store
        .create("globex", &[Role::Admin], "root", "2026-11-25T00:00:00Z")
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(keel_server::serve(
        listener,
        keel_server::App::new(&env, store),
    ));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let get = |path: &str, token: &str| http.get(format!("{base}{path}")).bearer_auth(token).send();
    let sql = |query: &str, token: &str| {
        http.post(format!("{base}/v1/sql"))
            .bearer_auth(token)
            .json(&json!({"query": query}))
            .send()
    };

    // SQL: tenant-scoped for an operator and for an admin alike; writes refused.
    let q = "SELECT count(*) AS n, count(DISTINCT tenant) AS tenants FROM gold.executions";
    let r = sql(q, &acme).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["columns"], json!(["n", "tenants"]));
    assert_eq!(
        v["rows"],
        json!([[1, 1]]),
        "acme sees its execution; its replay is no production execution (decision 059)"
    );
    let v: Value = sql(q, &admin).await.unwrap().json().await.unwrap();
    assert_eq!(
        v["rows"],
        json!([[1, 1]]),
        "a globex admin sees globex's only"
    );
    let r = sql("DELETE FROM gold.executions", &admin).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("read-only"));
    let r = http
        .post(format!("{base}/v1/sql"))
        .json(&json!({"query": q}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The trace: visible to its tenant, a 404 to another.
    let r = get(&format!("/v1/traces/{trace}"), &acme).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps[0]["event_type"], "exec.started");
    assert!(steps.iter().any(|s| s["tool"] == "lookup_order"));
    let r = get(&format!("/v1/traces/{trace}"), &globex).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // SLOs, as JSON and on /metrics.
    let v: Value = get("/v1/slo", &acme).await.unwrap().json().await.unwrap();
    let versions: Vec<&str> = v["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["strategy_version"].as_str().unwrap())
        .collect();
    assert!(versions.contains(&s.version.as_str()), "{v}");
    let text = get("/metrics", &acme).await.unwrap().text().await.unwrap();
    assert!(
        text.contains(&format!(
            "keel_slo_outcome_rate{{tenant=\"acme\",strategy_version=\"{}\"}} 1",
            s.version
        )),
        "{text}"
    );

    // The replay's diff, as JSON and as a page; the trace and SLO pages.
    let r = get(&format!("/v1/replays/{replay}/diff"), &acme)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["original"], execs[0].to_string());
    assert_eq!(v["diff"]["before"]["outcome"], "success");
    let r = get(&format!("/v1/replays/{replay}/diff"), &globex)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Log in to the UI as a browser does, with the cookies the login answer sets.
    let login = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{base}/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={acme}"))
        .send()
        .await
        .unwrap();
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next())
        .collect::<Vec<_>>()
        .join("; ");
    let page = |path: String| {
        http.get(format!("{base}{path}"))
            .header("cookie", &cookie)
            .send()
    };
    let html = page(format!("/ui/replays/{replay}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("Replay diff") && html.contains(&execs[0].to_string()),
        "{html}"
    );
    let html = page(format!("/ui/traces/{trace}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("lookup_order") && html.contains("exec.started"),
        "{html}"
    );
    let r = page(format!("/ui/traces?trace_id={trace}")).await.unwrap();
    assert!(
        r.url().path().ends_with(&trace),
        "search redirects to the trace"
    );
    let html = page("/ui/slo".into()).await.unwrap().text().await.unwrap();
    assert!(html.contains(&s.version), "{html}");
}
