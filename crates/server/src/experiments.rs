//! `GET /v1/experiments/{name}/readout`: an experiment's readout over the caller's own tenant's
//! executions only (decision 050: no token reads across tenants), from `gold.executions`. An
//! experiment registered for other tenants only is a 404, like any other tenant's object.

use crate::auth::Role;
use crate::error::ApiError;
use crate::observe::with_projections;
use crate::{Caller, State};
use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use keel_observe::readout::{Readout, readout};

pub(crate) fn routes() -> Router<State> {
    Router::new().route("/v1/experiments/{name}/readout", get(readout_api))
}

/// `GET /v1/experiments/{name}/readout` (operators).
async fn readout_api(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Readout>, ApiError> {
    crate::api::need(&caller, &[Role::Operator])?;
    let tenant = caller.0.tenant.clone();
    let x = state
        .agent
        .control
        .experiment(&name)
        .await?
        .filter(|x| x.experiment.covers(&tenant))
        .ok_or_else(|| ApiError::NotFound(format!("experiment {name:?}")))?;
    let now = state.agent.clock.now();
    let r = with_projections(&state, move |store| {
        Box::pin(async move { readout(store, &x, Some(&tenant), now).await })
    })
    .await?;
    Ok(Json(r))
}
