//! The one error type of `keel-observe`, with context that names what failed and where.

use std::path::PathBuf;

/// Everything that can go wrong in projections, queries and exports.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The projection store (a SQLite file) failed.
    #[error("projection store {path}: {context}: {source}")]
    Store {
        /// The store file.
        path: PathBuf,
        /// What was being done.
        context: &'static str,
        /// The engine's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL projection store failed.
    #[error("projection store {url}: {context}: {detail}")]
    Postgres {
        /// The server (password redacted).
        url: String,
        /// What was being done.
        context: &'static str,
        /// The server's message.
        detail: String,
    },
    /// What was asked for does not exist (or is another tenant's).
    #[error("not found: {what}")]
    NotFound {
        /// What.
        what: String,
    },
    /// Reading the spine failed.
    #[error("reading the spine: {0}")]
    Spine(#[from] keel_spine::SpineError),
    /// A query was refused before it ran (writes, several statements, bad syntax).
    #[error("query refused: {reason}")]
    QueryRefused {
        /// Why.
        reason: String,
    },
    /// A query failed while it ran.
    #[error("query failed: {detail}")]
    Query {
        /// The engine's message.
        detail: String,
    },
    /// A query went past one of its [`crate::sql::Limits`] and was stopped.
    #[error("query stopped: {detail}")]
    Limit {
        /// Which limit: `time`, `rows` or `bytes`.
        limit: &'static str,
        /// The limit and how to stay within it.
        detail: String,
    },
    /// A query was cancelled because its caller went away.
    #[error("query cancelled: its caller went away")]
    Cancelled,
    /// Writing an export failed.
    #[error("export to {path}: {detail}")]
    Export {
        /// The file or directory written.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The OTLP endpoint refused or could not be reached.
    #[error("OTLP export to {endpoint}: {detail}")]
    Otlp {
        /// The endpoint.
        endpoint: String,
        /// What went wrong.
        detail: String,
    },
    /// A configuration value (SLO file, alarm, flag) is malformed.
    #[error("config {what}: {detail}")]
    Config {
        /// Which value or file.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// Shorthand used across the crate.
pub type Result<T> = std::result::Result<T, ObserveError>;

/// Maps an engine error on `path` while doing `context`.
pub(crate) fn store<'a>(
    path: &'a std::path::Path,
    context: &'static str,
) -> impl FnOnce(rusqlite::Error) -> ObserveError + 'a {
    move |source| ObserveError::Store {
        path: path.to_owned(),
        context,
        source,
    }
}
