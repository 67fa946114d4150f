//! Retrieval-relevance rating over HTTP and in the web UI: the queue of sampled retrievals
//! (`GET /v1/retrieval-samples`, `/ui/retrievals`) and the rating of one
//! (`POST /v1/retrieval-samples/{exec_id}/{seq}/rating`, or the page's form). A rating is a
//! `retrieval.rated` event on the control stream ([`keel_observe::rating`]); the rater is the
//! token's principal. Approvers and operators rate their own tenant's samples (admins too:
//! rating is review work, never cross-tenant); another tenant's sample is a 404.

use crate::api::{need, object, text, unknown_fields};
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::observe::with_projections;
use crate::params::Params;
use crate::{Caller, State};
use askama::Template;
use axum::body::Bytes;
use axum::extract::Path;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use keel_core::ExecId;
use keel_core::payload::MAX_RELEVANCE;
use keel_observe::rating::{self, Rate};
use keel_observe::sql::{Rows, Scope};
use keel_spine::clock::SystemClock;
use serde::Deserialize;
use serde_json::{Map, Value, json};

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/v1/retrieval-samples", get(list_api))
        .route(
            "/v1/retrieval-samples/{exec_id}/{seq}/rating",
            post(rate_api),
        )
        .route("/ui/retrievals", get(page))
        .route("/ui/retrievals/{exec_id}/{seq}/rating", post(rate_form))
}

const ROLES: &[Role] = &[Role::Approver, Role::Operator];

fn scope(p: &Principal) -> Scope {
    Scope::Tenant(p.tenant.clone())
}

#[derive(Deserialize)]
struct ListParams {
    #[serde(default)]
    unrated: Option<bool>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    cursor: Option<String>,
}

async fn samples(
    state: &State,
    p: &Principal,
    unrated: bool,
    limit: usize,
) -> Result<Rows, ApiError> {
    let scope = scope(p);
    with_projections(state, move |store| {
        Box::pin(async move { rating::samples(store, &scope, unrated, limit).await })
    })
    .await
}

fn objects(rows: &Rows) -> Vec<Value> {
    rows.rows
        .iter()
        .map(|r| {
            let mut o: Map<String, Value> = rows
                .columns
                .iter()
                .cloned()
                .zip(r.iter().cloned())
                .collect();
            // The chunks are stored as JSON text; hand them back as JSON.
            if let Some(Value::String(c)) = o.get("chunks")
                && let Ok(v) = serde_json::from_str::<Value>(c)
            {
                o.insert("chunks".into(), v);
            }
            Value::Object(o)
        })
        .collect()
}

/// `GET /v1/retrieval-samples?unrated=true&limit=N&cursor=C`: sampled retrievals, newest
/// first, at most 1000 a page; `next_cursor` (`exec_id/seq` of the last one) continues.
async fn list_api(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Params(q): Params<ListParams>,
) -> Result<Json<Value>, ApiError> {
    need(&caller, ROLES)?;
    let limit = crate::params::page_size(q.limit, 50)?;
    let bad_cursor = |c: &str| {
        ApiError::bad(
            "cursor",
            format!("{c:?} is not a cursor this list returned"),
        )
    };
    let after = match q.cursor.as_deref() {
        None => None,
        Some(c) => {
            let (exec, seq) = c.split_once('/').ok_or_else(|| bad_cursor(c))?;
            let exec: ExecId = exec.parse().map_err(|_| bad_cursor(c))?;
            let seq: u64 = seq.parse().map_err(|_| bad_cursor(c))?;
            Some((exec, seq))
        }
    };
    let (scope, unrated) = (scope(&caller.0), q.unrated.unwrap_or(false));
    let rows = with_projections(&state, move |store| {
        Box::pin(
            async move { rating::samples_after(store, &scope, unrated, limit + 1, after).await },
        )
    })
    .await
    .map_err(|e| match (e, q.cursor.as_deref()) {
        (ApiError::NotFound(_), Some(c)) => bad_cursor(c),
        (e, _) => e,
    })?;
    let mut samples = objects(&rows);
    let next = (samples.len() > limit)
        .then(|| samples.get(limit - 1))
        .flatten()
        .map(|s| format!("{}/{}", cell_text(&s["exec_id"]), s["seq"]));
    samples.truncate(limit);
    Ok(Json(json!({"samples": samples, "next_cursor": next})))
}

fn cell_text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

async fn record(
    state: &State,
    p: &Principal,
    exec_id: &str,
    seq: &str,
    grade: u8,
    note: Option<String>,
) -> Result<Value, ApiError> {
    let exec_id: ExecId = exec_id.parse().map_err(|_| {
        ApiError::bad(
            "exec_id",
            format!("{exec_id:?} is not an execution id (a UUID)"),
        )
    })?;
    let seq: u64 = seq
        .parse()
        .map_err(|_| ApiError::bad("seq", format!("{seq:?} is not a sequence number")))?;
    let rate = Rate {
        exec_id,
        seq,
        rating: grade,
        rater: p.name.clone(),
        note,
    };
    let scope = scope(p);
    let log = state.log.clone();
    let event = with_projections(state, move |store| {
        Box::pin(async move { rating::rate(&*log, &SystemClock, store, &scope, rate).await })
    })
    .await?;
    Ok(json!({
        "exec_id": exec_id.to_string(),
        "seq": seq,
        "rating": grade,
        "rater": p.name,
        "event_id": event.event_id.to_string(),
    }))
}

fn grade(v: Option<&Value>) -> Result<u8, ApiError> {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|g| *g <= u64::from(MAX_RELEVANCE))
            .map(|g| g as u8)
            .ok_or_else(|| {
                ApiError::bad(
                    "rating",
                    format!("{n} is not a relevance grade 0..={MAX_RELEVANCE}"),
                )
            }),
        None | Some(Value::Null) => Err(ApiError::bad(
            "rating",
            format!("required (0 irrelevant … {MAX_RELEVANCE} exactly what was needed)"),
        )),
        Some(_) => Err(ApiError::bad("rating", "expected a number")),
    }
}

/// `POST /v1/retrieval-samples/{exec_id}/{seq}/rating {"rating": 0..3, "note": "…"}`.
async fn rate_api(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Path((exec_id, seq)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    need(&caller, ROLES)?;
    let m = object(&body)?;
    unknown_fields(&m, &["rating", "note"])?;
    let g = grade(m.get("rating"))?;
    let note = text(&m, "note", false)?;
    Ok(Json(
        record(&state, &caller.0, &exec_id, &seq, g, note).await?,
    ))
}

// ---- page ----

struct SampleRow {
    exec_id: String,
    seq: String,
    tenant: String,
    trace_id: String,
    ts: String,
    query: String,
    memory_version: String,
    chunks: Vec<String>,
    rating: String,
    rated_by: String,
}

#[derive(Template)]
#[template(path = "retrievals.html")]
struct RetrievalsPage {
    title: &'static str,
    refresh: bool,
    who: String,
    flash: String,
    unrated: Vec<SampleRow>,
    rated: Vec<SampleRow>,
    csrf: String,
}

fn text_of(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The text of a retrieved fact, for the rater (the event records ids, scores and provenance;
/// the text lives in governed memory — and may since have expired or been erased).
async fn fact_text(state: &State, tenant: &str, id: &str) -> String {
    let Some(memory) = &state.agent.memory else {
        return "(memory not configured on this server)".into();
    };
    match memory.store.get(tenant, id).await {
        Ok(Some(f)) => f.text,
        Ok(None) => "(no longer in memory: expired or erased)".into(),
        Err(e) => format!("(memory unavailable: {e})"),
    }
}

async fn sample_rows(state: &State, rows: &Rows) -> Vec<SampleRow> {
    let mut out = Vec::new();
    for o in objects(rows) {
        let tenant = text_of(&o["tenant"]);
        let mut chunks = Vec::new();
        for c in o["chunks"].as_array().cloned().unwrap_or_default() {
            let id = text_of(&c["id"]);
            let text = fact_text(state, &tenant, &id).await;
            let score = c["score"]
                .as_f64()
                .map_or("?".into(), |f| format!("{f:.3}"));
            chunks.push(format!("{id} (score {score}): {text}"));
        }
        out.push(SampleRow {
            chunks,
            exec_id: text_of(&o["exec_id"]),
            seq: text_of(&o["seq"]),
            trace_id: text_of(&o["trace_id"]),
            ts: text_of(&o["ts"]),
            query: text_of(&o["query"]),
            memory_version: text_of(&o["memory_version"]),
            rating: text_of(&o["rating"]),
            rated_by: text_of(&o["rated_by"]),
            tenant,
        });
    }
    out
}

async fn view(state: &State, p: &Principal, csrf: String, flash: String) -> Response {
    if !p.may(ROLES) {
        return ApiError::Forbidden("rating retrievals needs the approver or operator role".into())
            .into_response();
    }
    let (unrated, all) = match (
        samples(state, p, true, 50).await,
        samples(state, p, false, 100).await,
    ) {
        (Ok(u), Ok(a)) => (u, a),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    let rated = sample_rows(state, &all)
        .await
        .into_iter()
        .filter(|r| !r.rating.is_empty())
        .collect();
    let page = RetrievalsPage {
        title: "Retrieval ratings",
        refresh: false,
        who: crate::observe::who(p),
        flash,
        unrated: sample_rows(state, &unrated).await,
        rated,
        csrf,
    };
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => ApiError::Internal(format!("rendering a page: {e}")).into_response(),
    }
}

async fn page(
    axum::extract::State(state): axum::extract::State<State>,
    headers: axum::http::HeaderMap,
    caller: Result<Caller, ApiError>,
) -> Response {
    let csrf = crate::web::csrf_of(&headers);
    match caller {
        Ok(c) => view(&state, &c.0, csrf, String::new()).await,
        Err(_) => Redirect::to("/ui/login").into_response(),
    }
}

#[derive(Deserialize)]
struct RateForm {
    #[serde(default)]
    rating: String,
    #[serde(default)]
    note: String,
}

async fn rate_form(
    axum::extract::State(state): axum::extract::State<State>,
    headers: axum::http::HeaderMap,
    caller: Result<Caller, ApiError>,
    Path((exec_id, seq)): Path<(String, String)>,
    Form(f): Form<RateForm>,
) -> Response {
    let csrf = crate::web::csrf_of(&headers);
    let p = match caller {
        Ok(c) => c.0,
        Err(_) => return Redirect::to("/ui/login").into_response(),
    };
    if !p.may(ROLES) {
        return view(
            &state,
            &p,
            csrf,
            "rating needs the approver or operator role".into(),
        )
        .await;
    }
    let g = match f.rating.trim().parse::<u8>() {
        Ok(g) if g <= MAX_RELEVANCE => g,
        _ => {
            return view(
                &state,
                &p,
                csrf,
                format!("choose a grade from 0 to {MAX_RELEVANCE}"),
            )
            .await;
        }
    };
    let note = Some(f.note.trim().to_owned()).filter(|n| !n.is_empty());
    match record(&state, &p, &exec_id, &seq, g, note).await {
        Ok(_) => Redirect::to("/ui/retrievals").into_response(),
        Err(e) => view(&state, &p, csrf, e.to_string()).await,
    }
}
