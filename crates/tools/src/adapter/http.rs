//! The HTTP adapter: POST the arguments as JSON to the contract's URL, with the call's
//! idempotency key in an `Idempotency-Key` header (the same key on every attempt), and map the
//! reply to an output or an error class.
//!
//! Secrets: header values come from the secrets (environment variables, to the `keel` binary)
//! the contract names, are looked up at call time, and never appear in an error, event or log
//! line (only the variable's name does).

use super::{Adapter, AdapterCall, AdapterError};
use crate::contract::ErrorClass;
use crate::error::ToolError;
use async_trait::async_trait;
use keel_core::secrets::Secrets;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Once;
use std::time::Duration;

static CRYPTO: Once = Once::new();

/// Builds the shared HTTP client. TLS uses rustls with the `ring` provider (no C build of
/// aws-lc; see docs/decisions/011-http-and-tls.md).
pub fn client(timeout: Duration) -> Result<reqwest::Client, ToolError> {
    CRYPTO.call_once(|| {
        // Fails only if a provider was installed already, which is what we want anyway.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| ToolError::Http(e.to_string()))
}

/// A tool behind an HTTP endpoint.
#[derive(Clone)]
pub struct HttpAdapter {
    client: reqwest::Client,
    url: String,
    headers_from_env: BTreeMap<String, String>,
    secrets: Secrets,
}

impl HttpAdapter {
    /// An adapter posting to `url`; `headers_from_env` maps header names to the names of the
    /// secrets in `secrets` holding their values.
    pub fn new(
        client: reqwest::Client,
        url: String,
        headers_from_env: BTreeMap<String, String>,
        secrets: Secrets,
    ) -> Self {
        Self {
            client,
            url,
            headers_from_env,
            secrets,
        }
    }
}

fn snippet(body: &str) -> String {
    let s: String = body.chars().take(200).collect();
    if body.len() > s.len() {
        format!("{s}…")
    } else {
        s
    }
}

/// Maps an HTTP status to an error class (`None` for success).
pub fn classify_status(status: u16) -> Option<ErrorClass> {
    match status {
        200..=299 => None,
        408 => Some(ErrorClass::Timeout),
        429 => Some(ErrorClass::RateLimited),
        500..=599 => Some(ErrorClass::ServerError),
        _ => Some(ErrorClass::ClientError),
    }
}

#[async_trait]
impl Adapter for HttpAdapter {
    async fn call(&self, call: AdapterCall<'_>) -> Result<Value, AdapterError> {
        let mut req = self.client.post(&self.url).json(call.args);
        if let Some(key) = call.idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        for (header, var) in &self.headers_from_env {
            let value = self.secrets.get(var).ok_or_else(|| {
                AdapterError::new(
                    ErrorClass::ClientError,
                    format!("header {header}: environment variable {var} is not set"),
                )
            })?;
            req = req.header(header.as_str(), value);
        }
        let resp = req.send().await.map_err(|e| {
            // reqwest's message names the URL only; never headers.
            let class = if e.is_timeout() {
                ErrorClass::Timeout
            } else {
                ErrorClass::Connection
            };
            AdapterError::new(class, format!("POST {}: {}", self.url, e.without_url()))
        })?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| {
            let class = if e.is_timeout() {
                ErrorClass::Timeout
            } else {
                ErrorClass::Connection
            };
            AdapterError::new(
                class,
                format!("POST {}: reading the reply: {}", self.url, e.without_url()),
            )
        })?;
        if let Some(class) = classify_status(status) {
            return Err(AdapterError::new(
                class,
                format!("POST {} answered {status}: {}", self.url, snippet(&body)),
            ));
        }
        serde_json::from_str(&body).map_err(|e| {
            AdapterError::new(
                ErrorClass::Protocol,
                format!(
                    "POST {} answered {status} with a body that is not JSON ({e}): {}",
                    self.url,
                    snippet(&body)
                ),
            )
        })
    }

    fn honours_idempotency_key(&self) -> bool {
        // The Idempotency-Key header is the HTTP convention for "deduplicate on this key"; a
        // contract points at an endpoint that honours it (that is what makes it `http` here).
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_classes_policies_name() {
        assert_eq!(classify_status(200), None);
        assert_eq!(classify_status(204), None);
        assert_eq!(classify_status(408), Some(ErrorClass::Timeout));
        assert_eq!(classify_status(429), Some(ErrorClass::RateLimited));
        assert_eq!(classify_status(500), Some(ErrorClass::ServerError));
        assert_eq!(classify_status(503), Some(ErrorClass::ServerError));
        assert_eq!(classify_status(401), Some(ErrorClass::ClientError));
        assert_eq!(classify_status(422), Some(ErrorClass::ClientError));
        assert_eq!(classify_status(302), Some(ErrorClass::ClientError));
    }
}
