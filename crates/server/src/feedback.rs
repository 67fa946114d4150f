//! User feedback over HTTP: `POST /v1/executions/{id}/feedback {"rating": 1..5, "comment": "…"}`
//! records a `feedback.given` event on the control stream ([`keel_observe::feedback`]); the
//! rater is the token's principal. Every role may send it (an application relays its users'
//! ratings with its agent token); another tenant's execution is a 404.

use crate::api::{need, object, text, unknown_fields};
use crate::auth::Role;
use crate::error::ApiError;
use crate::observe::with_projections;
use crate::{Caller, State};
use axum::body::Bytes;
use axum::extract::Path;
use axum::routing::post;
use axum::{Json, Router};
use keel_core::ExecId;
use keel_core::payload::{MAX_FEEDBACK, MIN_FEEDBACK};
use keel_observe::feedback::{self, Give};
use keel_observe::sql::Scope;
use keel_spine::clock::SystemClock;
use serde_json::{Value, json};

pub(crate) fn routes() -> Router<State> {
    Router::new().route("/v1/executions/{id}/feedback", post(give_api))
}

const ROLES: &[Role] = &[Role::Agent, Role::Approver, Role::Operator, Role::Admin];

fn rating(v: Option<&Value>) -> Result<u8, ApiError> {
    let range = format!("an integer {MIN_FEEDBACK} (bad) to {MAX_FEEDBACK} (excellent)");
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|r| u8::try_from(r).ok())
            .filter(|r| (MIN_FEEDBACK..=MAX_FEEDBACK).contains(r))
            .ok_or_else(|| ApiError::bad("rating", format!("{n} is not {range}"))),
        None | Some(Value::Null) => Err(ApiError::bad("rating", format!("required ({range})"))),
        Some(_) => Err(ApiError::bad("rating", format!("expected {range}"))),
    }
}

/// `POST /v1/executions/{id}/feedback`.
async fn give_api(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    need(&caller, ROLES)?;
    let exec_id: ExecId = id
        .parse()
        .map_err(|_| ApiError::bad("id", format!("{id:?} is not an execution id (a UUID)")))?;
    let m = object(&body)?;
    unknown_fields(&m, &["rating", "comment"])?;
    let r = rating(m.get("rating"))?;
    let comment = text(&m, "comment", false)?;
    let p = &caller.0;
    let give = Give {
        exec_id,
        rating: r,
        rater: p.name.clone(),
        comment,
    };
    let scope = Scope::Tenant(p.tenant.clone());
    let log = state.log.clone();
    let event = with_projections(&state, move |store| {
        Box::pin(async move { feedback::give(&*log, &SystemClock, store, &scope, give).await })
    })
    .await?;
    Ok(Json(json!({
        "exec_id": exec_id.to_string(),
        "rating": r,
        "rater": p.name,
        "event_id": event.event_id.to_string(),
    })))
}
