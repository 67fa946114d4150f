//! `notifications.yaml` in the project folder: which webhooks hear about which queues' gates.
//! Parsed once into validated types; a webhook's secret (and, for endpoints whose URL is itself
//! a credential, like Slack's, its URL) is named by an environment variable that the caller
//! resolves at the edge ([`Webhooks::resolve`]), so no secret is ever written in the file.
//!
//! ```yaml
//! public_url: https://keel.example.com      # optional: links in the body become absolute
//! webhooks:
//!   - name: refunds-oncall
//!     url: https://hooks.example.com/keel   # or url_env: KEEL_REFUNDS_HOOK_URL
//!     secret_env: KEEL_REFUNDS_HOOK_SECRET
//!     previous_secret_env: KEEL_REFUNDS_HOOK_SECRET_OLD   # optional: also sign with it (rotation)
//!     queues: [refunds]                     # default: every queue ("*")
//!     events: [gate.requested, gate.escalated]   # the default: both
//!     tenants: [acme]                       # default: every tenant
//!     include_action: false                 # the action's arguments in the body (default no)
//!     retry: { max_attempts: 10, initial_backoff_ms: 1000, max_backoff_ms: 600000 }
//!     timeout_ms: 10000
//! ```

use super::NotifyError;
use serde::Deserialize;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// The two gate events a webhook may hear about.
pub const EVENTS: [&str; 2] = ["gate.requested", "gate.escalated"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    public_url: Option<String>,
    #[serde(default)]
    webhooks: Vec<RawHook>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    name: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    url_env: Option<String>,
    secret_env: String,
    #[serde(default)]
    previous_secret_env: Option<String>,
    #[serde(default)]
    queues: Option<Vec<String>>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    tenants: Vec<String>,
    #[serde(default)]
    include_action: bool,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<u32>,
    initial_backoff_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
}

/// When a failed delivery is tried again: `initial × 2^(n-1)` after the n-th failure, capped at
/// `max`, until `max_attempts` attempts have failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included (1 to 100).
    pub max_attempts: u32,
    /// The wait after the first failure.
    pub initial_backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(600),
        }
    }
}

impl Retry {
    /// The wait after the `failed`-th failed attempt (1-based).
    pub fn backoff(&self, failed: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failed.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Where a webhook's URL comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlSource {
    /// Written in the file.
    Literal(String),
    /// Read from this environment variable (the URL is a credential).
    Env(String),
}

/// One webhook as configured (its secret not yet resolved).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSpec {
    /// Its name: in delivery ids, the deliveries table and messages (never the URL).
    pub name: String,
    /// Its URL.
    pub url: UrlSource,
    /// The environment variable holding its signing secret.
    pub secret_env: String,
    /// The variable holding the secret being rotated out, if any: requests carry a signature
    /// under each until it is removed.
    pub previous_secret_env: Option<String>,
    /// The queues it hears about; empty: every queue.
    pub queues: Vec<String>,
    /// Whether it hears about new gates.
    pub on_requested: bool,
    /// Whether it hears about SLA escalations.
    pub on_escalated: bool,
    /// The tenants it hears about; empty: every tenant.
    pub tenants: Vec<String>,
    /// Whether the body carries the action's arguments (otherwise only the tool and its tier).
    pub include_action: bool,
    /// Retries.
    pub retry: Retry,
    /// One attempt's time limit.
    pub timeout: Duration,
}

impl WebhookSpec {
    /// Whether a gate event of `kind` in `queue` of `tenant` goes to this webhook.
    pub fn wants(&self, kind: &str, queue: &str, tenant: &str) -> bool {
        let event = match kind {
            "gate.requested" => self.on_requested,
            "gate.escalated" => self.on_escalated,
            _ => false,
        };
        event
            && (self.queues.is_empty() || self.queues.iter().any(|q| q == queue))
            && (self.tenants.is_empty() || self.tenants.iter().any(|t| t == tenant))
    }
}

/// The notifications file, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Webhooks {
    /// The server's public base URL, for absolute links in bodies.
    pub public_url: Option<String>,
    /// The webhooks.
    pub hooks: Vec<WebhookSpec>,
}

/// A signing secret: never printed.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The secret's bytes (for signing only).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A webhook ready to send: its spec, URL and secret.
#[derive(Clone)]
pub struct Webhook {
    /// As configured.
    pub spec: WebhookSpec,
    /// The resolved URL (it may be a credential: never printed or recorded).
    pub(crate) url: reqwest::Url,
    /// The resolved secret.
    pub(crate) secret: Secret,
    /// The secret being rotated out.
    pub(crate) previous: Option<Secret>,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither the URL (Slack's is a credential) nor the secret.
        f.debug_struct("Webhook")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, NotifyError> {
        let text = std::fs::read_to_string(path).map_err(|e| NotifyError::Config {
            file: path.display().to_string(),
            detail: format!("cannot read: {e}"),
        })?;
        Self::parse(&text).map_err(|detail| NotifyError::Config {
            file: path.display().to_string(),
            detail,
        })
    }

    /// Validates the text of a notifications file; the error names the field.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        if let Some(u) = &raw.public_url {
            http_url(u).map_err(|e| format!("public_url: {e}"))?;
        }
        let mut hooks: Vec<WebhookSpec> = Vec::new();
        for (i, h) in raw.webhooks.into_iter().enumerate() {
            let at = format!("webhooks[{i}]");
            let hook = spec(h).map_err(|e| format!("{at}.{e}"))?;
            if hooks.iter().any(|o| o.name == hook.name) {
                return Err(format!("{at}.name: {:?} is used twice", hook.name));
            }
            hooks.push(hook);
        }
        Ok(Self {
            public_url: raw.public_url.map(|u| u.trim_end_matches('/').to_owned()),
            hooks,
        })
    }

    /// Resolves every webhook's secret (and URL from the environment, where so configured)
    /// through `lookup` (the caller's environment). A missing or empty variable is an error
    /// naming the variable, never showing a value.
    pub fn resolve(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<Webhook>, NotifyError> {
        let mut out = Vec::new();
        for spec in &self.hooks {
            let var = |name: &str| -> Result<String, NotifyError> {
                lookup(name)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| NotifyError::Unresolved {
                        webhook: spec.name.clone(),
                        variable: name.to_owned(),
                    })
            };
            let secret = Secret(var(&spec.secret_env)?.into_bytes());
            let previous = match &spec.previous_secret_env {
                Some(v) => Some(Secret(var(v)?.into_bytes())),
                None => None,
            };
            let url = match &spec.url {
                UrlSource::Literal(u) => http_url(u),
                UrlSource::Env(v) => http_url(&var(v)?),
            }
            .map_err(|detail| NotifyError::Config {
                file: format!("webhook {}", spec.name),
                // The reason only: the URL may be a credential.
                detail: format!("url: {}", detail.split(':').next().unwrap_or("invalid")),
            })?;
            out.push(Webhook {
                spec: spec.clone(),
                url,
                secret,
                previous,
            });
        }
        Ok(out)
    }
}

fn spec(h: RawHook) -> Result<WebhookSpec, String> {
    let name = h.name.trim().to_owned();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "name: {:?} must be letters, digits, '-', '_' or '.'",
            h.name
        ));
    }
    let url = match (h.url, h.url_env) {
        (Some(u), None) => {
            http_url(&u).map_err(|e| format!("url: {e}"))?;
            UrlSource::Literal(u)
        }
        (None, Some(v)) => UrlSource::Env(env_name(&v).map_err(|e| format!("url_env: {e}"))?),
        _ => return Err("url: give exactly one of url and url_env".into()),
    };
    let secret_env = env_name(&h.secret_env).map_err(|e| format!("secret_env: {e}"))?;
    let previous_secret_env = match h.previous_secret_env {
        Some(v) => Some(env_name(&v).map_err(|e| format!("previous_secret_env: {e}"))?),
        None => None,
    };
    let queues = match h.queues {
        None => Vec::new(),
        Some(q) if q.iter().any(|q| q == "*") => Vec::new(),
        Some(q) if q.is_empty() => {
            return Err("queues: empty (omit it, or \"*\", for every queue)".into());
        }
        Some(q) => q,
    };
    let events = h
        .events
        .unwrap_or_else(|| EVENTS.map(String::from).to_vec());
    if events.is_empty() {
        return Err(format!("events: empty (known: {})", EVENTS.join(", ")));
    }
    if let Some(e) = events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        return Err(format!("events: {e:?} is not one of {}", EVENTS.join(", ")));
    }
    let d = Retry::default();
    let retry = Retry {
        max_attempts: h.retry.max_attempts.unwrap_or(d.max_attempts),
        initial_backoff: h
            .retry
            .initial_backoff_ms
            .map_or(d.initial_backoff, Duration::from_millis),
        max_backoff: h
            .retry
            .max_backoff_ms
            .map_or(d.max_backoff, Duration::from_millis),
    };
    if !(1..=100).contains(&retry.max_attempts) {
        return Err(format!(
            "retry.max_attempts: {} is out of range (1 to 100)",
            retry.max_attempts
        ));
    }
    if retry.initial_backoff.is_zero() || retry.max_backoff < retry.initial_backoff {
        return Err("retry: initial_backoff_ms must be > 0 and <= max_backoff_ms".into());
    }
    let timeout_ms = h.timeout_ms.unwrap_or(10_000);
    if !(1..=300_000).contains(&timeout_ms) {
        return Err(format!(
            "timeout_ms: {timeout_ms} is out of range (1 to 300000)"
        ));
    }
    Ok(WebhookSpec {
        name,
        url,
        secret_env,
        previous_secret_env,
        queues,
        on_requested: events.iter().any(|e| e == "gate.requested"),
        on_escalated: events.iter().any(|e| e == "gate.escalated"),
        tenants: h.tenants,
        include_action: h.include_action,
        retry,
        timeout: Duration::from_millis(timeout_ms),
    })
}

fn env_name(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !v.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "{v:?} is not an environment variable name (letters, digits, '_')"
        ))
    }
}

fn http_url(u: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(u).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?}: expected http or https", url.scheme()));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses_and_defaults_fill_the_rest() {
        let w = Webhooks::parse(
            "public_url: https://keel.example.com/\nwebhooks:\n  - name: a\n    url: http://127.0.0.1:9/h\n    secret_env: S_A\n    queues: [refunds]\n    events: [gate.escalated]\n    retry: { max_attempts: 3, initial_backoff_ms: 10 }\n  - name: b\n    url_env: B_URL\n    secret_env: S_B\n",
        )
        .unwrap();
        assert_eq!(w.public_url.as_deref(), Some("https://keel.example.com"));
        let (a, b) = (&w.hooks[0], &w.hooks[1]);
        assert!(a.wants("gate.escalated", "refunds", "acme"));
        assert!(!a.wants("gate.requested", "refunds", "acme"));
        assert!(!a.wants("gate.escalated", "default", "acme"));
        assert_eq!(a.retry.backoff(1), Duration::from_millis(10));
        assert_eq!(a.retry.backoff(3), Duration::from_millis(40));
        assert!(b.wants("gate.requested", "any", "any"));
        assert_eq!(b.url, UrlSource::Env("B_URL".into()));
        assert_eq!(Retry::default().backoff(60), Duration::from_secs(600));
    }

    #[test]
    fn bad_files_name_the_field() {
        let cases = [
            (
                "webhooks:\n  - name: a\n    secret_env: S\n",
                "webhooks[0].url",
            ),
            (
                "webhooks:\n  - name: a\n    url: ftp://x\n    secret_env: S\n",
                "webhooks[0].url: scheme",
            ),
            (
                "webhooks:\n  - name: a\n    url: http://x\n    secret_env: 'no way'\n",
                "webhooks[0].secret_env",
            ),
            (
                "webhooks:\n  - name: a\n    url: http://x\n    secret_env: S\n    events: [gate.decided]\n",
                "webhooks[0].events",
            ),
            (
                "webhooks:\n  - name: a\n    url: http://x\n    secret_env: S\n    retry: { max_attempts: 0 }\n",
                "retry.max_attempts",
            ),
            (
                "webhooks:\n  - name: a\n    url: http://x\n    secret_env: S\n  - name: a\n    url: http://y\n    secret_env: S\n",
                "webhooks[1].name",
            ),
            (
                "webhooks:\n  - name: a\n    url: http://x\n    secret_env: S\n    colour: red\n",
                "colour",
            ),
        ];
        for (text, want) in cases {
            let e = Webhooks::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn resolving_names_the_missing_variable_and_never_shows_a_value() {
        let w = Webhooks::parse(
            "webhooks:\n  - name: a\n    url_env: A_URL\n    secret_env: A_SECRET\n",
        )
        .unwrap();
        let e = w.resolve(|_| None).unwrap_err().to_string();
        assert!(e.contains("A_SECRET"), "{e}");
        let e = w
            .resolve(|v| (v == "A_SECRET").then(|| "hunter2".to_owned()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("A_URL") && !e.contains("hunter2"), "{e}");
        let e = w
            .resolve(|v| {
                Some(if v == "A_URL" {
                    "nope://t0ken".into()
                } else {
                    "hunter2".into()
                })
            })
            .unwrap_err()
            .to_string();
        assert!(!e.contains("t0ken") && !e.contains("hunter2"), "{e}");
        let ok = w
            .resolve(|v| {
                Some(if v == "A_URL" {
                    "https://h.example/T/B/X".into()
                } else {
                    "hunter2".into()
                })
            })
            .unwrap();
        assert!(!format!("{:?}", ok[0].secret).contains("hunter2"));
        assert!(
            !format!("{:?}", ok[0]).contains("h.example"),
            "no URL in Debug"
        );
        let w = Webhooks::parse(
            "webhooks:\n  - name: a\n    url: http://x\n    secret_env: NEW\n    previous_secret_env: OLD\n",
        )
        .unwrap();
        let e = w
            .resolve(|v| (v == "NEW").then(|| "n".to_owned()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("OLD"), "{e}");
        let r = w.resolve(|v| Some(v.to_lowercase())).unwrap();
        assert_eq!(r[0].previous.as_ref().unwrap().expose(), b"old");
    }
}
