//! Query-string parameters: parsed into a typed struct or refused with a 400 that names the
//! parameter (axum's own rejection is plain text), and the page-size and cursor rules every
//! list endpoint shares.

use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// The largest page any list endpoint returns; a larger `limit` is capped to it, and the
/// response's cursor pages through the rest.
pub const MAX_PAGE: usize = 1000;

/// A query string parsed into `T`.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Params(q.0))
            .map_err(|e| {
                let detail = e.body_text();
                let detail = detail
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&detail);
                ApiError::bad("query string", detail.to_owned())
            })
    }
}

/// A page size: `default` when absent, at most [`MAX_PAGE`], and at least 1.
pub fn page_size(limit: Option<u64>, default: usize) -> Result<usize, ApiError> {
    match limit {
        None => Ok(default.min(MAX_PAGE)),
        Some(0) => Err(ApiError::bad("limit", "must be at least 1")),
        Some(n) => Ok(usize::try_from(n).unwrap_or(MAX_PAGE).min(MAX_PAGE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_are_capped_and_never_zero() {
        assert_eq!(page_size(None, 100).ok(), Some(100));
        assert_eq!(page_size(Some(1_000_000), 100).ok(), Some(MAX_PAGE));
        assert_eq!(page_size(Some(u64::MAX), 100).ok(), Some(MAX_PAGE));
        assert!(page_size(Some(0), 100).is_err());
    }
}
