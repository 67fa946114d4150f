//! Tenant isolation, query limits and input ranges against a real server on 127.0.0.1 over the
//! embedded default: an admin token reads nothing of another tenant on any path, `/metrics`
//! series carry their tenant, `POST /v1/sql` is bounded in time, rows and bytes and never holds
//! up another tenant, lists page with a cursor, and out-of-range parameters are 400s whose
//! bodies show no server path.

#![allow(clippy::unwrap_used)]

mod common;
use common::repo;

use keel_observe::sql::Limits;
use keel_runtime::embedded::{Config, Embedded};
use keel_runtime::replay::ReadOnlyTools;
use keel_server::auth::{Role, Tokens};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

fn config() -> Config {
    let repo = repo();
    Config {
        tools: repo.join("tools"),
        strategies: repo.join("strategies"),
        prices: repo.join("prices.toml"),
    }
}

struct Fixture {
    tmp: tempfile::TempDir,
    base: String,
    http: reqwest::Client,
    env: Embedded,
    /// acme's finished execution, its trace, its replay and its gated execution.
    acme_exec: String,
    acme_trace: String,
    acme_replay: String,
    acme_gated: String,
    acme_op: String,
    globex_op: String,
    globex_admin: String,
}

/// Logs in to the web UI with `token` as a browser does and returns the cookies it was given,
/// as a `Cookie` header value.
async fn ui_login(base: &str, token: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .post(format!("{base}/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "login: {}", r.status());
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next())
        .collect::<Vec<_>>()
        .join("; ")
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

    async fn sql(&self, query: &str, token: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}/v1/sql", self.base))
            .bearer_auth(token)
            .json(&json!({ "query": query }))
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap())
    }
}

/// Two tenants with finished executions, an acme replay and an acme execution at a gate, served
/// without background workers (nothing moves unless a test moves it), with `limits` on SQL.
async fn fixture(limits: Option<Limits>) -> Fixture {
    fixture_with(limits, None).await
}

/// [`fixture`], with `list_scan` executions read at most per list request.
async fn fixture_with(limits: Option<Limits>, list_scan: Option<usize>) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = config();
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
    let gated = env
        .agent
        .start(s, "acme", "Please refund order 1001")
        .await
        .unwrap();
    env.agent.drive(s, &*model, gated).await.unwrap();
    let acme_trace = env.log.read(execs[0], 1).await.unwrap()[0]
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
    let at = "2026-11-25T00:00:00Z";
    let acme_op = store.create("acme", &[Role::Operator, Role::Approver], "acme-op", at);
    let globex_op = store.create("globex", &[Role::Operator], "globex-op", at);
    let globex_admin = store.create("globex", &[Role::Admin], "globex-root", at);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut state = keel_server::App::new(&env, store);
    if let Some(l) = limits {
        std::sync::Arc::get_mut(&mut state).unwrap().sql_limits = l;
    }
    if let Some(n) = list_scan {
        std::sync::Arc::get_mut(&mut state).unwrap().list_scan = n;
    }
    tokio::spawn(async move {
        axum::serve(listener, keel_server::router(state))
            .await
            .unwrap()
    });
    let _ = rustls::crypto::ring::default_provider().install_default();
    Fixture {
        base,
        http: reqwest::Client::new(),
        acme_exec: execs[0].to_string(),
        acme_trace,
        acme_replay: replay.to_string(),
        acme_gated: gated.to_string(),
        acme_op: acme_op.unwrap(),
        globex_op: globex_op.unwrap(),
        globex_admin: globex_admin.unwrap(),
        env,
        tmp,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_reads_nothing_of_another_tenant_on_any_path() {
    let f = fixture(None).await;
    let admin = f.globex_admin.clone();

    // SQL: every table holds only globex's rows for a globex admin.
    for table in [
        "gold.executions",
        "traces.steps",
        "traces.retrieval_samples",
    ] {
        let (s, v) = f
            .sql(
                &format!("SELECT count(*) AS n, count(DISTINCT tenant) AS t, max(tenant) AS m FROM {table}"),
                &admin,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{table}: {v}");
        let row = &v["rows"][0];
        assert!(row[1].as_i64().unwrap() <= 1, "{table}: {v}");
        assert_ne!(row[2], "acme", "{table}: {v}");
    }
    let (_, v) = f.sql("SELECT goal FROM gold.executions", &admin).await;
    assert!(!v.to_string().contains("acme"), "{v}");
    let (_, v) = f
        .sql(
            &format!(
                "SELECT count(*) FROM traces.steps WHERE exec_id = '{}'",
                f.acme_exec
            ),
            &admin,
        )
        .await;
    assert_eq!(v["rows"], json!([[0]]), "{v}");

    // Every path that takes an id of acme's answers 404 to a globex admin.
    for path in [
        format!("/v1/traces/{}", f.acme_trace),
        format!("/v1/replays/{}/diff", f.acme_replay),
        format!("/v1/executions/{}", f.acme_exec),
        format!("/v1/executions/{}/events", f.acme_exec),
        format!("/v1/executions/{}", f.acme_gated),
    ] {
        let (s, body) = f.get(&path, &admin).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(!body.contains("Where is my order"), "{path}: {body}");
    }
    // And the pages show nothing of it either.
    let cookie = ui_login(&f.base, &admin).await;
    for path in [
        format!("/ui/traces/{}", f.acme_trace),
        format!("/ui/replays/{}", f.acme_replay),
    ] {
        let r = f
            .http
            .get(format!("{}{path}", f.base))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        let body = r.text().await.unwrap();
        assert!(!body.contains("<title>Log in"), "{path}: not logged in");
        assert!(
            !body.contains("lookup_order") && !body.contains(&f.acme_exec),
            "{path}: {body}"
        );
    }
    // Lists and figures: SLOs, retrieval samples, gates hold globex's only.
    for path in [
        "/v1/slo",
        "/v1/retrieval-samples",
        "/v1/gates?status=all",
        "/v1/executions",
        "/metrics",
    ] {
        let (s, body) = f.get(path, &admin).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
        assert!(
            !body.contains("acme") && !body.contains(&f.acme_gated),
            "{path}: {body}"
        );
    }
    let (_, v) = f.get("/v1/slo", &admin).await;
    let v: Value = serde_json::from_str(&v).unwrap();
    let started: u64 = v["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["executions"].as_u64().unwrap())
        .sum();
    assert_eq!(started, 1, "globex started one execution: {v}");

    // acme still sees its own.
    let (s, _) = f
        .get(&format!("/v1/replays/{}/diff", f.acme_replay), &f.acme_op)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = f
        .get(&format!("/v1/traces/{}", f.acme_trace), &f.acme_op)
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evidence_pack_names_the_contract_file_not_a_server_path() {
    let f = fixture(None).await;
    let (s, body) = f.get("/v1/gates?status=pending", &f.acme_op).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let gate = v["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["exec_id"] == f.acme_gated.as_str())
        .unwrap_or_else(|| panic!("no gate for {}: {v}", f.acme_gated));
    let source = gate["evidence_pack"]["contract"]["source"]
        .as_str()
        .unwrap();
    assert!(
        source.ends_with(".yaml") && !source.contains('/'),
        "{source}"
    );
    let root = repo().display().to_string();
    assert!(!body.contains(&root), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_series_carry_their_tenant_and_a_token_sees_only_its_own() {
    let f = fixture(None).await;
    for (token, mine, other) in [
        (&f.acme_op, "acme", "globex"),
        (&f.globex_op, "globex", "acme"),
    ] {
        let (s, text) = f.get("/metrics", token).await;
        assert_eq!(s, StatusCode::OK, "{text}");
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("keel_") && l.contains('{'))
            .collect();
        assert!(series.iter().any(|l| l.starts_with("keel_slo_")), "{text}");
        for line in &series {
            if line.starts_with("keel_strategy_demoted_max_tier") {
                continue;
            }
            assert!(
                line.contains(&format!("tenant=\"{mine}\"")),
                "{mine}'s series without its tenant: {line}"
            );
        }
        assert!(!text.contains(other), "{mine} sees {other}: {text}");
    }
    // globex's figures are globex's: its one execution, none of acme's three.
    let (_, text) = f.get("/metrics", &f.globex_op).await;
    let started: f64 = text
        .lines()
        .filter(|l| l.starts_with("keel_slo_executions{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(started, 1.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_is_bounded_in_time_rows_and_bytes() {
    let f = fixture(Some(Limits {
        timeout: Some(Duration::from_secs(1)),
        max_rows: Some(1000),
        max_bytes: Some(1 << 20),
    }))
    .await;
    let op = &f.acme_op;
    let (s, v) = f
        .sql(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
             SELECT count(*) FROM c",
            op,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["field"], "query");
    assert!(
        v["error"].as_str().unwrap().contains("longer than 1 s"),
        "{v}"
    );

    let (s, v) = f.sql("SELECT randomblob(1e8)", op).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("bytes"), "{v}");
    // Many values that are each small but add up past the bytes.
    let (s, v) = f
        .sql(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 900) \
             SELECT hex(randomblob(1000)) FROM c",
            op,
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("bytes"), "{v}");

    let (s, v) = f
        .sql(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000) \
             SELECT x FROM c",
            op,
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("1000 rows"), "{v}");

    // Within the limits, a query answers as before.
    let (s, v) = f
        .sql(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) \
             SELECT count(*) FROM c",
            op,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["rows"], json!([[1000]]));
}

/// An endless query of acme's, sent in the background (its task ends only when the server
/// answers, or when it is aborted: its client goes away).
fn endless_query(f: &Fixture) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let (http, base, token) = (f.http.clone(), f.base.clone(), f.acme_op.clone());
    tokio::spawn(async move {
        http.post(format!("{base}/v1/sql"))
            .bearer_auth(token)
            .json(
                &json!({"query": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL \
                SELECT x + 1 FROM c) SELECT count(*) FROM c"}),
            )
            .send()
            .await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_query_does_not_hold_up_another_tenants_requests() {
    let f = fixture(Some(Limits {
        timeout: Some(Duration::from_secs(120)),
        max_rows: None,
        max_bytes: None,
    }))
    .await;
    // Warm the projections first, so the slow query is the only thing in flight.
    let (s, _) = f.get("/metrics", &f.globex_op).await;
    assert_eq!(s, StatusCode::OK);
    let slow = endless_query(&f);
    // Give the slow query time to reach the server (the assertions below do not depend on it).
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let (s, _) = f.get("/healthz", &f.globex_op).await;
        assert_eq!(s, StatusCode::OK);
        let (s, text) = f.get("/metrics", &f.globex_op).await;
        assert_eq!(s, StatusCode::OK, "{text}");
        assert!(
            text.contains("keel_slo_executions{tenant=\"globex\""),
            "{text}"
        );
        let (s, v) = f
            .sql("SELECT count(*) FROM gold.executions", &f.globex_op)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    assert!(
        !slow.is_finished(),
        "the slow query ran alongside the other tenant's requests"
    );
    // A second endless query fills acme's two slots: a third query of acme waits its turn
    // (429), another tenant's does not. (A probe can take the second slot just before the
    // second endless query arrives, which then gets the 429: it is sent again.)
    let mut slow2 = endless_query(&f);
    let mut refused = None;
    for _ in 0..400 {
        let (s, v) = f.sql("SELECT 1", &f.acme_op).await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(v);
            break;
        }
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(!slow.is_finished(), "the first endless query ended");
        if slow2.is_finished() {
            slow2 = endless_query(&f);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let v = refused.expect("acme's third query was never refused");
    assert!(v["error"].as_str().unwrap().contains("2 queries"), "{v}");
    let (s, v) = f.sql("SELECT 1", &f.globex_op).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Their clients go away: the server drops both requests (their slots free up) and stops
    // the queries (crates/observe/tests/limits.rs shows that a dropped query stops).
    slow.abort();
    slow2.abort();
    let mut freed = false;
    for _ in 0..400 {
        let (s, _) = f.sql("SELECT 1", &f.acme_op).await;
        if s == StatusCode::OK {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(freed, "acme's slots were never freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_capped_and_a_cursor_pages_through_everything() {
    let f = fixture(None).await;
    let s = f.env.strategies.get("support-short").unwrap();
    for i in 0..1000 {
        f.env
            .agent
            .start(s, "acme", &format!("Where is my order {i}?"))
            .await
            .unwrap();
    }
    // 1000 started here, 3 from the fixture.
    let (st, body) = f.get("/v1/executions?limit=1000000", &f.acme_op).await;
    assert_eq!(st, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    let page = v["executions"].as_array().unwrap();
    assert_eq!(page.len(), 1000);
    let mut seen: BTreeSet<String> = page
        .iter()
        .map(|x| x["exec_id"].as_str().unwrap().to_owned())
        .collect();
    let mut cursor = v["next_cursor"].as_str().unwrap().to_owned();
    let mut pages = 1;
    loop {
        let (st, body) = f
            .get(
                &format!("/v1/executions?limit=400&cursor={cursor}"),
                &f.acme_op,
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let page = v["executions"].as_array().unwrap();
        assert!(page.len() <= 400);
        for x in page {
            assert!(seen.insert(x["exec_id"].as_str().unwrap().to_owned()));
        }
        pages += 1;
        match v["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 1003);
    assert_eq!(pages, 2);
    // A small page size pages through everything too, newest first, without repeats.
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/executions?limit=250".to_owned(),
            Some(c) => format!("/v1/executions?limit=250&cursor={c}"),
        };
        let (_, body) = f.get(&path, &f.acme_op).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        ids.extend(
            v["executions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["exec_id"].as_str().unwrap().to_owned()),
        );
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(ids.len(), 1003);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 1003);
    // Events page the same way.
    let (_, body) = f
        .get(
            &format!("/v1/executions/{}/events?limit=2", f.acme_exec),
            &f.acme_op,
        )
        .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    assert_eq!(v["next_from_seq"], 3);
    // Bad page parameters are 400s naming them; another tenant's id is no cursor.
    for (path, field) in [
        ("/v1/executions?limit=0", "limit"),
        ("/v1/executions?limit=-1", "query string"),
        ("/v1/executions?cursor=nope", "cursor"),
        ("/v1/gates?cursor=nope", "cursor"),
        ("/v1/reviews?cursor=nope", "cursor"),
        ("/v1/retrieval-samples?cursor=nope", "cursor"),
        (
            "/v1/retrieval-samples?cursor=01a21d19-93b2-77ba-b291-be81e5bdf919/4",
            "cursor",
        ),
    ] {
        let (st, body) = f.get(path, &f.acme_op).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["field"], field, "{path}: {v}");
    }
    let globex_list: Value =
        serde_json::from_str(&f.get("/v1/executions", &f.globex_op).await.1).unwrap();
    let globex_exec = globex_list["executions"][0]["exec_id"].as_str().unwrap();
    let (st, _) = f
        .get(&format!("/v1/executions?cursor={globex_exec}"), &f.acme_op)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

/// A server's book lets go of older finished executions; the list still pages through every
/// one of them (from the projections), newest first, without repeats, with and without a
/// status filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cursor_reaches_executions_the_servers_book_let_go() {
    // Each request reads at most 5 of the executions the book let go.
    let f = fixture_with(None, Some(5)).await;
    f.env.approvals.bound_memory_to(4);
    let s = f.env.strategies.get("support-short").unwrap();
    let model = s.provider().unwrap();
    for i in 0..25 {
        let exec = f
            .env
            .agent
            .start(s, "acme", &format!("Where is my order A-10{i:02}?"))
            .await
            .unwrap();
        f.env.agent.drive(s, &*model, exec).await.unwrap();
    }
    let page_through = |status: Option<&'static str>| {
        let f = &f;
        async move {
            let mut ids: Vec<(String, String)> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut path = "/v1/executions?limit=3".to_owned();
                if let Some(s) = status {
                    path.push_str(&format!("&status={s}"));
                }
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={c}"));
                }
                let (st, body) = f.get(&path, &f.acme_op).await;
                assert_eq!(st, StatusCode::OK, "{path}: {body}");
                let v: Value = serde_json::from_str(&body).unwrap();
                for x in v["executions"].as_array().unwrap() {
                    assert_eq!(x["tenant"], "acme");
                    ids.push((
                        x["started_at"].as_str().unwrap().to_owned(),
                        x["exec_id"].as_str().unwrap().to_owned(),
                    ));
                }
                match v["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => return ids,
                }
            }
        }
    };
    let all = page_through(None).await;
    // 25 here; the fixture's finished one, its replay and the gated one.
    assert_eq!(all.len(), 28, "{all:?}");
    assert_eq!(all.iter().map(|x| &x.1).collect::<BTreeSet<_>>().len(), 28);
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(all, sorted, "newest first");
    let succeeded = page_through(Some("success")).await;
    assert!(succeeded.len() >= 25, "{succeeded:?}");
    // A status that matches few of them: pages end where a request stopped reading, and the
    // cursor still reaches every one.
    let failed = page_through(Some("max_steps")).await;
    assert!(failed.is_empty(), "{failed:?}");
    // A live status is the book's alone (nothing in flight is ever let go).
    let gated = page_through(Some("at_gate")).await;
    assert_eq!(gated.len(), 1, "{gated:?}");
    assert_eq!(gated[0].1, f.acme_gated);
    // The book holds only a few of them: the rest came from the projections.
    let book = f.env.approvals.book().await.unwrap();
    let held = book.execs.values().filter(|x| x.tenant == "acme").count();
    assert!(held < 28, "the book still holds {held}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_parameters_are_400s_that_show_no_server_path() {
    let f = fixture(None).await;
    let tmp = f.tmp.path().display().to_string();
    let root = repo().display().to_string();
    let exec = &f.acme_exec;
    for (path, field) in [
        ("/v1/slo?days=4294967295".to_owned(), "days"),
        ("/v1/slo?days=0".to_owned(), "days"),
        (
            "/v1/slo?days=18446744073709551616".to_owned(),
            "query string",
        ),
        ("/v1/slo?days=soon".to_owned(), "query string"),
        (
            format!("/v1/executions/{exec}/events?from_seq=18446744073709551615"),
            "from_seq",
        ),
        (
            format!("/v1/executions/{exec}/events?from_seq=9223372036854775808"),
            "from_seq",
        ),
        (
            format!("/v1/executions/{exec}/events?from_seq=-1"),
            "query string",
        ),
        ("/v1/executions/not-a-uuid/events".to_owned(), "id"),
        (
            "/v1/executions?limit=99999999999999999999".to_owned(),
            "query string",
        ),
        ("/v1/gates?status=later".to_owned(), "status"),
        ("/v1/gates?limit=0".to_owned(), "limit"),
        ("/v1/reviews?limit=x".to_owned(), "query string"),
        ("/v1/retrieval-samples?limit=0".to_owned(), "limit"),
        (
            "/v1/retrieval-samples?unrated=maybe".to_owned(),
            "query string",
        ),
        ("/v1/traces/xyz".to_owned(), "trace_id"),
        ("/v1/replays/xyz/diff".to_owned(), "id"),
        (format!("/v1/replays/{exec}/diff"), "id"),
    ] {
        let (s, body) = f.get(&path, &f.acme_op).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {body}");
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: not JSON: {body}"));
        assert_eq!(v["field"], field, "{path}: {v}");
        assert!(
            !body.contains(&tmp) && !body.contains(&root),
            "{path}: {body}"
        );
    }
    // The trace search puts only a well-formed id into its redirect.
    let cookie = ui_login(&f.base, &f.acme_op).await;
    let r = f
        .http
        .get(format!(
            "{}/ui/traces?trace_id=a%0D%0ASet-Cookie:%20x=1",
            f.base
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("set-cookie").is_none());
    let body = r.text().await.unwrap();
    assert!(body.contains("is not a trace id"), "{body}");
    // The largest sequence number that fits is simply past the end.
    let (s, body) = f
        .get(
            &format!("/v1/executions/{exec}/events?from_seq=9223372036854775807"),
            &f.acme_op,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains("\"events\":[]"), "{body}");
    // SQL errors name the query, never a file or the engine's internals.
    for (query, status) in [
        ("SELECT * FROM no_such_table", StatusCode::BAD_REQUEST),
        ("DELETE FROM gold.executions", StatusCode::BAD_REQUEST),
        (
            "ATTACH DATABASE '/etc/passwd' AS x",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (s, v) = f.sql(query, &f.acme_op).await;
        assert_eq!(s, status, "{query}: {v}");
        let text = v.to_string();
        assert!(
            !text.contains(&tmp) && !text.contains("observe.db"),
            "{query}: {text}"
        );
    }
    for body in [
        r#"{"query": 1}"#,
        r#"{"query": "SELECT 1", "format": "xml"}"#,
        "nope",
    ] {
        let r = f
            .http
            .post(format!("{}/v1/sql", f.base))
            .bearer_auth(&f.acme_op)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(v["field"].is_string(), "{body}: {v}");
    }
}
