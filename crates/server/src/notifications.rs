//! `GET /v1/gates/{id}/notifications`: the webhook deliveries of one gate and every attempt to
//! make them (status, HTTP answer, error, latency), from the deliveries' store the wiring chose
//! (`DIR/notify.db`, or a shared spine's database) — what an operator asks
//! when an approver says they never heard of a gate. Never a URL or a secret: the table holds
//! neither.

use crate::auth::Role;
use crate::error::ApiError;
use crate::{Caller, State};
use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use keel_runtime::notify::Deliveries;
use serde_json::{Value, json};

pub(crate) fn routes() -> Router<State> {
    Router::new().route("/v1/gates/{id}/notifications", get(list))
}

async fn list(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    crate::api::need(&caller, &[Role::Approver, Role::Operator])?;
    let visible = state
        .approvals
        .book()
        .await?
        .gates
        .get(&id)
        .is_some_and(|g| g.tenant == caller.0.tenant);
    if !visible {
        return Err(ApiError::NotFound(format!("gate {id}")));
    }
    let path = state.data.join("notify.db");
    let store = match &state.deliveries {
        Some(d) => Some(d.clone()),
        // No file: no process on this store has a notifications configuration; nothing was owed.
        None if path.exists() => {
            Some(Deliveries::open(&path).map_err(|e| ApiError::Internal(e.to_string()))?)
        }
        None => None,
    };
    let deliveries = if let Some(store) = store {
        store
            .list(Some(id.clone()))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .into_iter()
            .filter(|d| d.tenant == caller.0.tenant)
            .collect()
    } else {
        Vec::new()
    };
    Ok(Json(json!({ "gate_id": id, "deliveries": deliveries })))
}
