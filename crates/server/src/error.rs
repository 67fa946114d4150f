//! API errors: each becomes a status and a JSON body `{"error": …, "field": …}` that says what
//! and where. Internal failures are reported without internals beyond the message (no secrets
//! ever reach an error: the runtime's errors do not carry them).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or unknown token.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The token lacks the role.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Not found (or another tenant's).
    #[error("not found: {0}")]
    NotFound(String),
    /// A malformed request.
    #[error("{field}: {detail}")]
    BadRequest {
        /// The field (a JSON pointer-ish path, or `body`).
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// The request conflicts with the state (a gate already decided).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Well-formed but not processable: an `Idempotency-Key` reused with another body.
    #[error("unprocessable: {0}")]
    Unprocessable(String),
    /// A body in a media type the endpoint does not take (the API takes JSON only).
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// Something failed inside.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 naming the field.
    pub fn bad(field: &str, detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.to_string() });
        if let ApiError::BadRequest { field, .. } = &self {
            body["field"] = json!(field);
        }
        let mut r = (self.status(), Json(body)).into_response();
        if matches!(self, ApiError::Unauthorized(_)) {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<keel_spine::SpineError> for ApiError {
    fn from(e: keel_spine::SpineError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<keel_runtime::RuntimeError> for ApiError {
    fn from(e: keel_runtime::RuntimeError) -> Self {
        use keel_runtime::gates::GateError;
        match e {
            keel_runtime::RuntimeError::Gate(GateError::Unknown(id)) => {
                ApiError::NotFound(format!("gate {id}"))
            }
            keel_runtime::RuntimeError::Gate(g) => ApiError::Conflict(g.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        ApiError::Internal(e.to_string())
    }
}
