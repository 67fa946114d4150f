//! API errors: each becomes a status and a JSON body `{"error": …, "field": …}` that says what
//! and where. An internal failure's detail (a store's file path, an engine's message) goes to
//! the server's log under a reference; its body shows only that reference, so no response ever
//! names a server path or a storage engine's words.

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
    /// The request is well-formed but asks for more than a request may have (a query's rows,
    /// bytes or time).
    #[error("{field}: {detail}")]
    TooLarge {
        /// What exceeded its limit.
        field: String,
        /// Which limit, and how to stay within it.
        detail: String,
    },
    /// The caller has too much running already (its tenant's concurrent queries).
    #[error("too many requests: {0}")]
    TooMany(String),
    /// The tenant's monthly cost budget is spent and stops new executions.
    #[error("{0}")]
    BudgetSpent(String),
    /// Something failed inside. The detail is logged when the response is made, and never
    /// displayed: wherever this error is shown (a body, a page's message) it reads the same.
    #[error("internal error (the server's log has the detail)")]
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
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BudgetSpent(_) => StatusCode::PAYMENT_REQUIRED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = match &self {
            ApiError::Internal(detail) => {
                let reference = format!("{:016x}", rand::random::<u64>());
                eprintln!("keel serve: internal error {reference}: {detail}");
                json!({
                    "error": format!(
                        "internal error (reference {reference}; the server's log has the detail)"
                    )
                })
            }
            other => json!({ "error": other.to_string() }),
        };
        if let ApiError::BadRequest { field, .. } | ApiError::TooLarge { field, .. } = &self {
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
            keel_runtime::RuntimeError::Gate(
                g @ (GateError::InvalidInput { .. } | GateError::TakesNoInput { .. }),
            ) => ApiError::Unprocessable(g.to_string()),
            keel_runtime::RuntimeError::Gate(g) => ApiError::Conflict(g.to_string()),
            // A configuration the operator must fix, named; it holds no path.
            e @ keel_runtime::RuntimeError::Unpriced { .. } => {
                ApiError::Unprocessable(e.to_string())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::ApiError;
    use axum::response::IntoResponse;

    #[tokio::test]
    async fn an_internal_error_body_shows_a_reference_not_the_detail() {
        let e = ApiError::Internal("projection store /srv/keel/observe.db: disk I/O error".into());
        assert!(!e.to_string().contains("/srv"));
        let r = e.into_response();
        assert_eq!(r.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .unwrap_or_default();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("reference"), "{body}");
        assert!(
            !body.contains("/srv") && !body.contains("disk I/O"),
            "{body}"
        );
    }
}
