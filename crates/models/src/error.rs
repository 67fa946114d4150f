//! The models crate's errors. None carries an API key, a request body or a prompt: messages name
//! the provider, the status and what was wrong, so they are safe to log and to put in events.

use crate::provider::Usage;
use std::time::Duration;

/// What can go wrong asking a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The environment variable that should hold the API key is unset or empty.
    #[error("{provider}: API key variable {var} is not set")]
    MissingApiKey {
        /// Provider name.
        provider: String,
        /// The variable's name (never its value).
        var: String,
    },
    /// No reply within the timeout, after every retry.
    #[error("{provider}: no reply within {timeout:?} ({attempts} attempts)")]
    Timeout {
        /// Provider name.
        provider: String,
        /// Per-attempt timeout.
        timeout: Duration,
        /// Attempts made.
        attempts: u32,
    },
    /// The server kept answering 429 or 5xx until retries ran out.
    #[error("{provider}: HTTP {status} after {attempts} attempts: {detail}")]
    Exhausted {
        /// Provider name.
        provider: String,
        /// Last status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// The server's error message, if it sent one.
        detail: String,
    },
    /// A non-retryable HTTP error (400, 401, 404, …).
    #[error("{provider}: HTTP {status}: {detail}")]
    Rejected {
        /// Provider name.
        provider: String,
        /// Status code.
        status: u16,
        /// The server's error message.
        detail: String,
    },
    /// Connection refused, reset, DNS, TLS.
    #[error("{provider}: connection failed: {detail}")]
    Connection {
        /// Provider name.
        provider: String,
        /// What failed.
        detail: String,
    },
    /// The reply arrived but does not make sense: not the vendor's shape, tool arguments that are
    /// not JSON, a tool the request did not offer. The loop can show this to the model and retry.
    #[error("{provider}: malformed reply: {detail}")]
    Malformed {
        /// Provider name.
        provider: String,
        /// What was wrong.
        detail: String,
        /// The raw reply, for the trace and replay.
        raw: String,
        /// The tokens the reply reports it used (zero when it reports none): the server billed
        /// them even though the reply is unusable.
        usage: Usage,
    },
    /// A configuration file (script, price table) is wrong.
    #[error("{file}: {detail}")]
    Config {
        /// The file.
        file: String,
        /// What is wrong, with the field.
        detail: String,
    },
}

impl ModelError {
    /// True for errors the agent loop can recover from by telling the model and asking again.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, ModelError::Malformed { .. })
    }

    /// The tokens a malformed reply reports it used; zero for every other error.
    pub fn usage(&self) -> Usage {
        match self {
            ModelError::Malformed { usage, .. } => *usage,
            _ => Usage::default(),
        }
    }

    /// This error carrying `used` if it is a malformed reply.
    pub fn with_usage(mut self, used: Usage) -> Self {
        if let ModelError::Malformed { usage, .. } = &mut self {
            *usage = used;
        }
        self
    }
}
