//! Experiments over HTTP against a real server on 127.0.0.1 (embedded default, the demo's
//! scripted model): `POST /v1/executions` without a strategy is assigned an arm, the same one
//! for the same subject (also through an `Idempotency-Key` repeat), recorded on `exec.started`;
//! `GET /v1/experiments/{name}/readout` reads the caller's tenant only, and an experiment of
//! other tenants is a 404 (issue 15, decision 050).

#![allow(clippy::unwrap_used)]

mod common;
use common::repo;

use keel_runtime::embedded::Config;
use keel_server::auth::{Role, Tokens};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn config() -> Config {
    let repo = repo();
    Config {
        tools: repo.join("tools"),
        strategies: repo.join("strategies"),
        prices: repo.join("prices.toml"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_assigns_arms_and_reads_out_per_tenant() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let env = common::open(&data, &config());
    let now = env.agent.clock.now();
    let text = std::fs::read_to_string(repo().join("experiments/support-prompts.yaml")).unwrap();
    let shared = keel_runtime::experiment::parse(&text, "support-prompts.yaml").unwrap();
    assert!(
        env.agent
            .control
            .register_experiment(&shared, &env.strategies, now, "test")
            .await
            .unwrap()
    );
    // A second experiment for globex only, in its own layer (disjoint tenants).
    let text = text
        .replace(
            "name: support-prompts",
            "name: globex-only\nlayer: globex\ntenants: [globex]",
        )
        .replace("unit: subject", "unit: execution");
    let globex_only = keel_runtime::experiment::parse(&text, "globex-only.yaml").unwrap();
    let err = env
        .agent
        .control
        .register_experiment(&globex_only, &env.strategies, now, "test")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("same tenants' traffic"), "{err}");

    let store = Tokens::open(&data).unwrap();
    let at = "2026-11-25T00:00:00Z";
    let acme = store
        .create("acme", &[Role::Operator, Role::Agent], "acme", at)
        .unwrap();
    let globex = store
        .create("globex", &[Role::Operator, Role::Agent], "globex", at)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = keel_server::App::new(&env, store);
    tokio::spawn(async move {
        axum::serve(listener, keel_server::router(state))
            .await
            .unwrap()
    });
    let http = reqwest::Client::new();
    let start = |token: String, body: Value, key: Option<String>| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let mut req = http
                .post(format!("{base}/v1/executions"))
                .bearer_auth(token)
                .json(&body);
            if let Some(k) = key {
                req = req.header("idempotency-key", k);
            }
            let r = req.send().await.unwrap();
            let status = r.status();
            let v: Value = r.json().await.unwrap();
            assert!(status.is_success(), "{status}: {v}");
            v
        }
    };
    let mut acme_execs = 0;
    for round in 0..2 {
        for i in 0..6 {
            let body = json!({"goal": "Where is my order A-1017?", "subject": format!("cust-{i}")});
            let a = started(&*env.log, &start(acme.clone(), body.clone(), None).await).await;
            let x = a.experiment.clone().unwrap();
            assert_eq!(x.experiment, "support-prompts");
            assert_eq!(a.experiment_arm.as_deref(), Some(x.arm.as_str()));
            let name = if x.arm == "control" {
                "support-short/"
            } else {
                "support-long/"
            };
            assert!(a.strategy_version.starts_with(name));
            // The same subject in another tenant is another unit (same hash: the unit is the
            // subject name; tenants are isolated by the readout, not by the bucket).
            let g = started(&*env.log, &start(globex.clone(), body, None).await).await;
            assert_eq!(g.experiment.unwrap().bucket, x.bucket);
            acme_execs += 1;
            if round == 1 {
                // Sticky: the same subject, a later request, the same arm and bucket.
                let key = format!("k-{i}");
                let body =
                    json!({"goal": "Where is my order A-1017?", "subject": format!("cust-{i}")});
                let first = start(acme.clone(), body.clone(), Some(key.clone())).await;
                let repeat = start(acme.clone(), body, Some(key)).await;
                assert_eq!(first["exec_id"], repeat["exec_id"]);
                let s = started(&*env.log, &first).await;
                assert_eq!(s.experiment.unwrap(), x);
                acme_execs += 1;
            }
        }
    }
    keel_runtime::worker::drain(&env.agent, &env.strategies, 4)
        .await
        .unwrap();

    let get = |token: String, path: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http
                .get(format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, r) = get(
        acme.clone(),
        "/v1/experiments/support-prompts/readout".into(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["tenant"], "acme");
    let n: u64 = r["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["executions"].as_u64().unwrap())
        .sum();
    assert_eq!(n, acme_execs, "acme's own executions only: {r}");
    assert_eq!(r["verdict"]["kind"], "not_enough_data");
    let (s, g) = get(
        globex.clone(),
        "/v1/experiments/support-prompts/readout".into(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let n: u64 = g["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["executions"].as_u64().unwrap())
        .sum();
    assert_eq!(n, 12, "globex's own: {g}");

    // An experiment for acme only is not globex's to read.
    ok_stop(&env).await;
    let text = std::fs::read_to_string(repo().join("experiments/support-prompts.yaml"))
        .unwrap()
        .replace("name: support-prompts", "name: acme-only\ntenants: [acme]");
    let acme_only = keel_runtime::experiment::parse(&text, "acme-only.yaml").unwrap();
    env.agent
        .control
        .register_experiment(&acme_only, &env.strategies, now, "test")
        .await
        .unwrap();
    let (s, _) = get(globex.clone(), "/v1/experiments/acme-only/readout".into()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get(acme.clone(), "/v1/experiments/acme-only/readout".into()).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = get(acme.clone(), "/v1/experiments/nope/readout".into()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn ok_stop(env: &keel_runtime::embedded::Embedded) {
    env.agent
        .control
        .stop_experiment("support-prompts", None, "make room", "test")
        .await
        .unwrap();
}

async fn started(log: &dyn keel_spine::EventLog, v: &Value) -> keel_core::payload::ExecStarted {
    let exec: keel_core::ExecId = v["exec_id"].as_str().unwrap().parse().unwrap();
    match &log.read(exec, 1).await.unwrap()[0].payload {
        keel_core::Payload::ExecStarted(s) => s.clone(),
        other => panic!("{other:?}"),
    }
}
