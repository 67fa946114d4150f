//! `keel serve`: the HTTP API (JSON, described by `/openapi.json`), the web UI for approvers and
//! operators, Prometheus metrics, and the workers that drive executions and sweep gate SLAs.
//!
//! - [`auth`]: bearer tokens scoped to a tenant and roles, with expiry, last use and revocation.
//! - [`admin`]: the admin pages of the web UI (the tenant's API tokens: list, revoke).
//! - [`api`]: the JSON endpoints.
//! - [`blobs`]: an execution's stored inputs and outputs, read through the execution.
//! - [`ui`]: server-rendered pages (log in with a token; the approval queue; executions and their
//!   traces; the kill-switch panel).
//! - [`metrics`]: the Prometheus exposition, computed from the spine.
//! - [`notifications`]: a gate's webhook deliveries and their attempts.
//!
//! Every lookup is scoped by the caller's tenant: anything of another tenant is a 404, never a
//! 403, so a token cannot even learn what exists elsewhere.

pub mod admin;
pub mod api;
pub mod auth;
#[cfg(feature = "postgres")]
pub mod auth_pg;
pub mod blobs;
pub mod error;
pub mod experiments;
pub mod feedback;
pub mod idempotency;
pub mod metrics;
pub mod notifications;
pub mod observe;
pub mod params;
pub mod ratings;
pub mod ui;
pub mod web;

use auth::{Principal, Tokens};
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use error::ApiError;
use keel_core::ExecId;
use keel_runtime::embedded::Embedded;
use keel_runtime::gates::Approvals;
use keel_runtime::{Agent, Control, StrategySet};
use keel_spine::EventLog;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Everything a request handler reaches.
pub struct App {
    /// The agent loop.
    pub agent: Arc<Agent>,
    /// The spine.
    pub log: Arc<dyn EventLog>,
    /// Strategies.
    pub strategies: StrategySet,
    /// Gates.
    pub approvals: Arc<Approvals>,
    /// Control state.
    pub control: Arc<Control>,
    /// Tokens.
    pub tokens: Tokens,
    /// Wakes the worker (an execution started, a gate was decided).
    pub wake: Notify,
    /// The data directory (the embedded projections live in `observe.db` there).
    pub data: std::path::PathBuf,
    /// How browsers reach the server (the UI's cookie and origin checks).
    pub web: web::WebConfig,
    /// The projections (`projections_url`, else `DATA/observe.db`), opened on first use;
    /// held only while they catch up with the spine.
    pub projections: tokio::sync::Mutex<Option<Box<dyn keel_observe::ProjectionStore>>>,
    /// The projections' URL the wiring's configuration names (`projections.url`: a
    /// `postgres://` URL or `sqlite:PATH`, the CLI's `keel.toml` or `KEEL_PROJECTIONS_URL`);
    /// `None`: `DATA/observe.db`.
    pub projections_url: Option<String>,
    /// The same projections opened again for queries, which run concurrently and never wait
    /// for one another (nor hold up a catch-up).
    pub queries: tokio::sync::OnceCell<Arc<dyn keel_observe::ProjectionStore>>,
    /// What one `POST /v1/sql` query may take: time, rows, bytes.
    pub sql_limits: keel_observe::sql::Limits,
    /// How many executions that the book let go one `GET /v1/executions` reads at most
    /// (each from the spine) before it ends its page there.
    pub list_scan: usize,
    /// Executions the background workers drive at a time (keel.toml `workers.concurrency`);
    /// 0: none, an API-only server (`keel serve --no-workers`) that `keel worker`s drive for.
    pub workers: usize,
    /// Gate notifications' deliveries when they are kept beside a shared spine (the wiring's
    /// choice); `None`: `DATA/notify.db`, if any process on the store made it.
    pub deliveries: Option<keel_runtime::notify::Deliveries>,
    /// `POST /v1/sql` queries running per tenant (at most [`observe::SQL_PER_TENANT`]).
    pub sql_running: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// Shared application state.
pub type State = Arc<App>;

impl App {
    /// Wires the server over an embedded runtime.
    pub fn new(env: &Embedded, tokens: Tokens) -> State {
        // A server runs for months over a growing store: its book keeps what is in flight and
        // the recent past, not every execution ever run.
        env.approvals.bound_memory();
        // ... and saves it beside the spine, so a restart folds only what came after.
        env.approvals
            .snapshot_to(env.data.join("book.snapshot.json"));
        Arc::new(Self {
            agent: env.agent.clone(),
            log: env.agent.log.clone(),
            strategies: env.strategies.clone(),
            approvals: env.approvals.clone(),
            control: env.agent.control.clone(),
            tokens,
            web: web::WebConfig::default(),
            wake: Notify::new(),
            data: env.data.clone(),
            projections: tokio::sync::Mutex::new(None),
            projections_url: None,
            queries: tokio::sync::OnceCell::new(),
            sql_limits: observe::default_sql_limits(),
            sql_running: Default::default(),
            list_scan: api::LIST_SCAN,
            workers: 8,
            deliveries: None,
        })
    }

    /// The tenant of an execution, if it exists.
    pub async fn tenant_of(&self, exec: ExecId) -> Result<Option<String>, ApiError> {
        let first = self.log.read(exec, 1).await?;
        Ok(first.first().map(|e| e.tenant.0.clone()))
    }
}

/// The whole router: API, UI, metrics, health, OpenAPI.
pub fn router(state: State) -> Router {
    Router::new()
        .merge(api::routes())
        .merge(ui::routes())
        .merge(admin::routes())
        .merge(observe::routes())
        .merge(blobs::routes())
        .merge(ratings::routes())
        .merge(feedback::routes())
        .merge(notifications::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            web::csrf,
        ))
        .layer(axum::middleware::from_fn(web::json_only))
        .layer(axum::middleware::from_fn(web::security_headers))
        .with_state(state)
}

/// Background work of a server: drive executions that can make progress (on start, when woken
/// by this server or by what any process commits to the spine — a gate decided through another
/// server, say — and every second), and sweep gate SLAs. A subscription that failed is opened
/// again a second later, so the server goes back from polling to following.
pub fn spawn_background(state: State) {
    let s = state.clone();
    let drives = s.workers > 0;
    tokio::spawn(async move {
        if !drives {
            return;
        }
        let mut wakes = match keel_runtime::worker::Wakes::open(&*s.log).await {
            Ok(w) => Some(w),
            Err(e) => {
                eprintln!("keel serve: worker: not following the spine (polling instead): {e}");
                None
            }
        };
        loop {
            match keel_runtime::worker::drain(&s.agent, &s.strategies, s.workers.max(1)).await {
                Ok(drained) => {
                    for d in drained {
                        if let Err(e) = d.result {
                            eprintln!("keel serve: execution {}: {e}", d.exec_id);
                        }
                    }
                }
                Err(e) => eprintln!("keel serve: worker: {e}"),
            }
            let spine = async {
                match wakes.as_mut() {
                    Some(w) => {
                        if let Err(e) = w.wait(Duration::from_secs(1)).await {
                            eprintln!("keel serve: worker: following the spine: {e}");
                            wakes = None;
                        }
                    }
                    None => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        // Follows the spine again once it answers (a restarted database).
                        wakes = keel_runtime::worker::Wakes::open(&*s.log).await.ok();
                    }
                }
            };
            tokio::select! {
                () = s.wake.notified() => {}
                () = spine => {}
            }
        }
    });
    tokio::spawn(async move {
        loop {
            match state.approvals.sweep().await {
                Ok(r) if !r.expired.is_empty() => state.wake.notify_one(),
                Ok(_) => {}
                Err(e) => eprintln!("keel serve: SLA sweep: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// Serves on `listener` until the process stops.
pub async fn serve(listener: tokio::net::TcpListener, state: State) -> std::io::Result<()> {
    spawn_background(state.clone());
    axum::serve(listener, router(state)).await
}

/// The caller: on the API, from `Authorization: Bearer …` only (an ambient cookie never
/// authenticates an API call); on the web UI's pages (`/ui/…`), from the session cookie.
pub struct Caller(pub Principal);

impl FromRequestParts<State> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        if parts.uri.path().starts_with("/ui/") {
            return match web::session_principal(state, &parts.headers)? {
                Some(p) => Ok(Caller(p)),
                None => Err(ApiError::Unauthorized("no live session".into())),
            };
        }
        let Some(token) = bearer(parts) else {
            return Err(ApiError::Unauthorized("no bearer token".into()));
        };
        match state.tokens.resolve(&token, web::now_unix())? {
            Some(p) => Ok(Caller(p)),
            None => Err(ApiError::Unauthorized("unknown token".into())),
        }
    }
}

fn bearer(parts: &Parts) -> Option<String> {
    let v = parts.headers.get(axum::http::header::AUTHORIZATION)?;
    let v = v.to_str().ok()?;
    v.strip_prefix("Bearer ").map(|t| t.trim().to_owned())
}

/// A cookie's value.
pub fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}
