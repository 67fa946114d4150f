//! The HTTP plumbing both vendor clients share: API keys from the secret source the edge hands
//! down (redacted everywhere), per-attempt timeouts, and retries on 429 / 5xx / timeouts that honour
//! `Retry-After`.

use crate::error::ModelError;
use keel_core::secrets::SecretSource;
use std::fmt;
use std::time::{Duration, Instant};

/// A secret that never prints: `Debug` and `Display` show `[redacted]`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret named `var` in `secrets` (the `keel` binary answers from the environment
    /// variable of that name); missing or empty is an error naming the variable.
    pub fn from_source(
        provider: &str,
        var: &str,
        secrets: &dyn SecretSource,
    ) -> Result<Self, ModelError> {
        match secrets.get(var) {
            Some(v) if !v.is_empty() => Ok(Self(v)),
            _ => Err(ModelError::MissingApiKey {
                provider: provider.to_owned(),
                var: var.to_owned(),
            }),
        }
    }

    /// A secret the caller read (the configuration's edge reads the environment variable it names).
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value, for the one header that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Timeouts and retries of one provider.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Attempts in all (1 = no retry).
    pub max_attempts: u32,
    /// First backoff when the server gives no `Retry-After`; doubles each attempt.
    pub base_backoff: Duration,
    /// Longest wait we accept, from `Retry-After` or backoff.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            max_attempts: 4,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Builds an HTTP client (rustls with the ring provider, so no C crypto build).
pub fn client() -> Result<reqwest::Client, ModelError> {
    // Installing the process-wide provider twice is harmless: the first one wins.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .build()
        .map_err(|e| ModelError::Config {
            file: "http client".into(),
            detail: e.to_string(),
        })
}

/// The body of a successful reply, or the error after retries.
pub struct Reply {
    /// Response body.
    pub body: String,
    /// Wall time including retries.
    pub latency: Duration,
}

/// POSTs `body` (JSON) to `url` with `headers`, retrying 429 / 5xx / timeouts per `policy`.
pub async fn post_json(
    provider: &str,
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
    policy: &RetryPolicy,
) -> Result<Reply, ModelError> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut req = client
            .post(url)
            .timeout(policy.timeout)
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let last = attempt >= policy.max_attempts;
        let wait = match req.send().await {
            Err(e) if e.is_timeout() => {
                if last {
                    return Err(ModelError::Timeout {
                        provider: provider.to_owned(),
                        timeout: policy.timeout,
                        attempts: attempt,
                    });
                }
                backoff(policy, attempt)
            }
            Err(e) => {
                // A refused connection is retried like a 5xx: the server may be restarting.
                if last || !e.is_connect() {
                    return Err(ModelError::Connection {
                        provider: provider.to_owned(),
                        detail: without_url(&e),
                    });
                }
                backoff(policy, attempt)
            }
            Ok(resp) => {
                let status = resp.status();
                let retry_after = retry_after(resp.headers(), policy.max_backoff);
                let text = resp.text().await.unwrap_or_default();
                if status.is_success() {
                    return Ok(Reply {
                        body: text,
                        latency: started.elapsed(),
                    });
                }
                let detail = error_detail(&text);
                let retryable = status.as_u16() == 429 || status.is_server_error();
                if !retryable {
                    return Err(ModelError::Rejected {
                        provider: provider.to_owned(),
                        status: status.as_u16(),
                        detail,
                    });
                }
                if last {
                    return Err(ModelError::Exhausted {
                        provider: provider.to_owned(),
                        status: status.as_u16(),
                        attempts: attempt,
                        detail,
                    });
                }
                retry_after.unwrap_or_else(|| backoff(policy, attempt))
            }
        };
        tokio::time::sleep(wait).await;
    }
}

fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .base_backoff
        .saturating_mul(1 << (attempt - 1).min(16));
    exp.min(policy.max_backoff)
}

/// `Retry-After` in seconds, capped at `max`. The header is untrusted: a value too large for a
/// `Duration` (`1e20`, a 30-digit integer, `inf`) means "wait long" and gets `max`; a negative,
/// NaN or unparsable value, or the HTTP-date form (rare from model APIs, and reading it would
/// need the wall clock here), is treated as absent so our own backoff applies.
fn retry_after(headers: &reqwest::header::HeaderMap, max: Duration) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?;
    let secs = v.trim().parse::<f64>().ok().filter(|s| *s >= 0.0)?;
    Some(Duration::try_from_secs_f64(secs).map_or(max, |d| d.min(max)))
}

/// The vendor's error message (`{"error": {"message": …}}` in both formats), or a short excerpt;
/// an empty one is said so (llama.cpp's server answers some failures with `"message": ""`).
fn error_detail(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let detail = match parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(|m| m.as_str())
    {
        Some(msg) => msg.to_owned(),
        None => body.chars().take(200).collect(),
    };
    if detail.trim().is_empty() {
        "the server sent no error message".to_owned()
    } else {
        detail
    }
}

/// reqwest errors print the URL; ours may carry a key in a query string for some gateways.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "<url>");
    }
    s
}
