//! Shared set-up for keel-tools' integration tests: a real store directory (spine, ledger,
//! blobs, shop), the demo contracts from the repo's `tools/` folder plus per-test ones, and a
//! real HTTP tool server on 127.0.0.1.

// Test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, dead_code)]

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use keel_core::payload::{Budget, ExecStarted};
use keel_core::secrets::Secrets;
use keel_core::{ExecutionState, Payload};
use keel_spine::{EventLog, SqliteLog, SqliteOptions, clock};
use keel_testkit::ExecBuilder;
use keel_tools::adapter::builtin::Builtins;
use keel_tools::shop::Shop;
use keel_tools::{CallReport, Registry, ToolRunner};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The repo's demo contract folder.
pub fn demo_tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools")
}

/// The demo contracts as `(file, text)` pairs.
pub fn demo_sources() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(demo_tools_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            out.push((p.clone(), std::fs::read_to_string(&p).unwrap()));
        }
    }
    out
}

/// A test store: runner, spine, shop, in a directory (a temp dir unless reopened).
pub struct Env {
    pub dir: PathBuf,
    pub runner: Arc<ToolRunner>,
    pub log: SqliteLog,
    pub shop: Shop,
    _tmp: Option<tempfile::TempDir>,
}

/// The demo contracts plus `extra` (file name, YAML), with the shop's builtins.
pub fn env(extra: &[(&str, String)]) -> Env {
    env_with(extra, |_| {})
}

/// Like [`env`], letting the test add builtins.
pub fn env_with(extra: &[(&str, String)], more: impl FnOnce(&mut Builtins)) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let mut env = env_at(tmp.path(), extra, more);
    env._tmp = Some(tmp);
    env
}

/// Like [`env`], the contracts' secrets (header values, by the names they give) from `secrets`.
pub fn env_with_secrets(extra: &[(&str, String)], secrets: Secrets) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let mut env = open(tmp.path(), extra, |_| {}, secrets);
    env._tmp = Some(tmp);
    env
}

/// Opens (or reopens, after a crash) the store in `dir`.
pub fn env_at(dir: &Path, extra: &[(&str, String)], more: impl FnOnce(&mut Builtins)) -> Env {
    open(dir, extra, more, keel_core::secrets::none())
}

fn open(
    dir: &Path,
    extra: &[(&str, String)],
    more: impl FnOnce(&mut Builtins),
    secrets: Secrets,
) -> Env {
    let shop = Shop::open(dir.join("shop.db")).unwrap();
    let mut builtins = shop.builtins();
    more(&mut builtins);
    let mut sources = demo_sources();
    sources.extend(extra.iter().map(|(n, t)| (PathBuf::from(n), t.clone())));
    let registry = Registry::from_sources(&sources, Some(&builtins.names())).unwrap();
    let (runner, log) =
        ToolRunner::embedded(dir, registry, builtins, SqliteOptions::default(), secrets).unwrap();
    Env {
        dir: dir.to_owned(),
        runner: Arc::new(runner),
        log,
        shop,
        _tmp: None,
    }
}

/// Starts a fresh execution with a cost budget (micro-USD) and returns its state.
pub async fn start(log: &SqliteLog, tenant: &str, max_cost_micros: Option<u64>) -> ExecutionState {
    let mut b = ExecBuilder::new(clock::new_exec_id(), tenant);
    b.push(Payload::ExecStarted(ExecStarted {
        goal: "help the customer".into(),
        strategy_version: "test".into(),
        budget: Budget {
            max_cost_micros,
            ..Budget::default()
        },
        experiment_arm: None,
        replay_of: None,
        experiment: None,
    }));
    let events = b.build();
    log.append(events[0].exec_id, 0, &events).await.unwrap();
    ExecutionState::fold(&events).unwrap()
}

/// Folds a call's events into `state` (panics if any is illegal: the referee agrees).
pub fn apply(state: &ExecutionState, report: &CallReport) -> ExecutionState {
    let mut s = state.clone();
    for e in &report.events {
        s.apply_mut(e).unwrap();
    }
    assert_eq!(s.last_seq, report.last_seq);
    s
}

/// The stored events of an execution fold legally and equal what the calls returned.
pub async fn check_log(log: &SqliteLog, state: &ExecutionState) -> Vec<keel_core::Event> {
    let events = log.read(state.exec_id.unwrap(), 1).await.unwrap();
    let folded = ExecutionState::fold(&events).unwrap();
    assert_eq!(&folded, state);
    events
}

/// `(type, status or attempt)` of each tool event, for compact assertions.
pub fn shape(events: &[keel_core::Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::ToolCalled(c) => Some(format!("called:{}#{}", c.tool, c.attempt)),
            Payload::ToolResult(r) => Some(format!("result:{}:{:?}", r.tool, r.status)),
            _ => None,
        })
        .collect()
}

/// What the HTTP tool server saw.
#[derive(Default)]
pub struct Seen {
    /// `Idempotency-Key` header of every request, per route.
    pub keys: Vec<(String, Option<String>)>,
    /// Requests per route.
    pub hits: std::collections::HashMap<String, u32>,
    /// Open reservations (reserve adds, release removes).
    pub reservations: i64,
    /// Authorization headers received.
    pub auth: Vec<String>,
}

/// A real HTTP tool server on 127.0.0.1 (axum), with routes that misbehave on purpose.
pub struct HttpTools {
    pub base: String,
    pub seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpTools {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type S = Arc<Mutex<Seen>>;

fn note(seen: &S, route: &str, headers: &HeaderMap) -> u32 {
    let mut s = seen.lock().unwrap();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    s.keys.push((route.to_owned(), key));
    let n = s.hits.entry(route.to_owned()).or_default();
    *n += 1;
    *n
}

/// Starts the server.
pub async fn http_tools() -> HttpTools {
    let seen: S = Arc::default();
    let app = axum::Router::new()
        // 503 twice, then success.
        .route(
            "/flaky",
            post(
                |State(s): State<S>, h: HeaderMap, Json(body): Json<Value>| async move {
                    let n = note(&s, "flaky", &h);
                    if n <= 2 {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            Json(json!({"error": "try later"})),
                        )
                    } else {
                        (
                            StatusCode::OK,
                            Json(json!({"ok": true, "attempt": n, "echo": body})),
                        )
                    }
                },
            ),
        )
        .route(
            "/down",
            post(|State(s): State<S>, h: HeaderMap| async move {
                note(&s, "down", &h);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"error": "down"})),
                )
            }),
        )
        .route(
            "/bad-request",
            post(|State(s): State<S>, h: HeaderMap| async move {
                note(&s, "bad-request", &h);
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(json!({"error": "no such account"})),
                )
            }),
        )
        .route(
            "/bad-output",
            post(|State(s): State<S>, h: HeaderMap| async move {
                note(&s, "bad-output", &h);
                Json(json!({"ok": "yes", "unexpected": 1}))
            }),
        )
        // Acts, then answers too late (the contract's timeout is shorter).
        .route(
            "/slow-reserve",
            post(|State(s): State<S>, h: HeaderMap| async move {
                note(&s, "slow-reserve", &h);
                s.lock().unwrap().reservations += 1;
                tokio::time::sleep(Duration::from_secs(3)).await;
                Json(json!({"ok": true}))
            }),
        )
        .route(
            "/release",
            post(|State(s): State<S>, h: HeaderMap| async move {
                note(&s, "release", &h);
                s.lock().unwrap().reservations -= 1;
                Json(json!({"ok": true}))
            }),
        )
        .route(
            "/auth",
            post(|State(s): State<S>, h: HeaderMap| async move {
                note(&s, "auth", &h);
                let auth = h
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                s.lock().unwrap().auth.push(auth.clone());
                if auth == "Bearer s3cret-token" {
                    (StatusCode::OK, Json(json!({"ok": true})))
                } else {
                    (
                        StatusCode::UNAUTHORIZED,
                        Json(json!({"error": "bad token"})),
                    )
                }
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    HttpTools { base, seen, task }
}

/// A contract for an HTTP tool at `url`.
pub fn http_contract(
    name: &str,
    url: &str,
    side_effect: &str,
    tier: u8,
    policy: &str,
    extra: &str,
) -> String {
    let idem = if side_effect == "read_only" {
        "idempotency: none".to_owned()
    } else {
        "idempotency: {mode: required, key: [item, exec_id]}".to_owned()
    };
    format!(
        "name: {name}
description: test tool {name}
schema:
  input: {{type: object, properties: {{item: {{type: string}}}}, required: [item]}}
  output: {{type: object, properties: {{ok: {{type: boolean}}}}, required: [ok]}}
side_effect: {side_effect}
consequence_tier: {tier}
{idem}
budgets: {{cost_est: \"$0.001\"}}
failure_policy: {policy}
timeout: 500ms
adapter: {{kind: http, url: \"{url}\"{extra}}}
"
    )
}
