//! An execution's blobs (model requests and replies, tool outputs), read through the execution
//! that references them: `GET /v1/executions/{id}/blobs/{ref}` with a bearer token, and the same
//! path under `/ui/` with the web UI's session (the execution page fetches it when an input or
//! output is opened).
//!
//! A blob is content-addressed and may be shared, so knowing a hash proves nothing: the blob is
//! served only if the execution is the caller's tenant's (else 404, as everywhere) and one of its
//! events references it (else 404). An execution whose data subject was erased answers 410 with
//! `"erased": true`: erasure deleted its blobs, and a copy kept elsewhere is not shown either.

use crate::error::ApiError;
use crate::{Caller, State};
use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keel_core::ExecId;
use keel_core::payload::Payload;
use keel_spine::{BlobRef, SpineError, shred};
use serde_json::{Value, json};

/// Largest blob sent whole; a longer one comes as its first this many bytes of text.
pub const MAX_BLOB_BYTES: usize = 1 << 20;

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/v1/executions/{id}/blobs/{ref}", get(blob))
        .route("/ui/executions/{id}/blobs/{ref}", get(blob))
}

/// Input echoed in an error, shortened (a path segment can be long).
fn shown(s: &str) -> String {
    s.chars().take(80).collect()
}

async fn blob(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
    Path((id, blob)): Path<(String, String)>,
) -> Response {
    match read(&state, &caller, &id, &blob).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn read(state: &State, caller: &Caller, id: &str, blob: &str) -> Result<Response, ApiError> {
    let exec: ExecId = id
        .parse()
        .map_err(|_| ApiError::bad("id", format!("{:?} is not an execution id", shown(id))))?;
    let reference: BlobRef = blob.parse().map_err(|_| {
        ApiError::bad(
            "blob",
            format!(
                "{:?} is not a blob reference (sha256: and 64 hex digits)",
                shown(blob)
            ),
        )
    })?;
    let events = state.log.read(exec, 1).await?;
    let not_found = || ApiError::NotFound(format!("blob {reference} of execution {exec}"));
    let Some(first) = events.first() else {
        return Err(not_found());
    };
    if first.tenant.0 != caller.0.tenant {
        return Err(not_found());
    }
    if !shred::referenced_blobs(&events)
        .iter()
        .any(|r| r == reference.as_str())
    {
        return Err(not_found());
    }
    // Erasure turns the sealed goal into the marker on every read path.
    if matches!(&first.payload, Payload::ExecStarted(s) if s.goal == shred::ERASED) {
        return Ok((
            StatusCode::GONE,
            Json(json!({
                "error": format!("blob {reference} of execution {exec} was erased with its data subject"),
                "erased": true,
            })),
        )
            .into_response());
    }
    let bytes = match state.agent.blobs.get(&reference).await {
        Ok(b) => b,
        Err(SpineError::BlobNotFound(_)) => {
            return Err(ApiError::NotFound(format!(
                "blob {reference} of execution {exec} is not in the blob store"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let size = bytes.len();
    let parsed = (size <= MAX_BLOB_BYTES)
        .then(|| serde_json::from_slice::<Value>(&bytes).ok())
        .flatten();
    let body = match parsed {
        Some(v) => json!({
            "ref": reference.as_str(), "exec_id": exec, "bytes": size,
            "json": v, "text": null, "truncated": false,
        }),
        None => {
            let head = bytes.get(..MAX_BLOB_BYTES).unwrap_or(&bytes);
            json!({
                "ref": reference.as_str(), "exec_id": exec, "bytes": size,
                "json": null, "text": String::from_utf8_lossy(head),
                "truncated": size > MAX_BLOB_BYTES,
            })
        }
    };
    Ok(Json(body).into_response())
}
