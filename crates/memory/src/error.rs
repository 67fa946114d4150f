//! The one error type of `keel-memory`. Messages name what and where; they never carry secrets
//! (an API key is never part of a message) nor the text of a refused fact.

use thiserror::Error;

/// Everything that can go wrong in governed memory.
#[derive(Debug, Error)]
pub enum MemoryError {
    /// The SQLite store failed.
    #[error("memory store {path}: {context}: {source}")]
    Sqlite {
        /// Database file.
        path: String,
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        source: rusqlite::Error,
    },
    /// The PostgreSQL store failed.
    #[cfg(feature = "pgvector")]
    #[error("memory store (postgres): {context}: {source}")]
    Postgres {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        source: tokio_postgres::Error,
    },
    /// A query or write used an embedding model other than the one the store is pinned to.
    #[error(
        "embedding model mismatch: the store is pinned to {pinned}, the request used {requested}; migrate the store (keel memory migrate-embeddings) or use the pinned model"
    )]
    EmbeddingMismatch {
        /// The store's model.
        pinned: String,
        /// The caller's model.
        requested: String,
    },
    /// A vector has the wrong number of dimensions.
    #[error("embedding has {got} dimensions, {model} has {want}")]
    Dimensions {
        /// Model name and version.
        model: String,
        /// Expected.
        want: usize,
        /// Got.
        got: usize,
    },
    /// The embedder failed (model files, tokenizer, inference, HTTP).
    #[error("embedder {embedder}: {detail}")]
    Embedder {
        /// Which embedder.
        embedder: String,
        /// What failed.
        detail: String,
    },
    /// The PII screen refused the fact under the policy.
    #[error("fact refused by the PII screen: contains {kinds} (policy: reject)")]
    PiiRejected {
        /// The kinds found, comma separated (never the values).
        kinds: String,
    },
    /// No such fact for this tenant.
    #[error("no memory {id} for tenant {tenant:?}")]
    NotFound {
        /// Tenant asked.
        tenant: String,
        /// Fact id.
        id: String,
    },
    /// A request that breaks a rule (promoting an unapproved fact, an empty tenant...).
    #[error("{0}")]
    Invalid(String),
    /// A configuration value is wrong.
    #[error("memory config {field}: {detail}")]
    Config {
        /// Field path.
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// A stored value could not be decoded.
    #[error("memory store: corrupt {what}: {detail}")]
    Corrupt {
        /// Which value.
        what: String,
        /// Why.
        detail: String,
    },
}

impl MemoryError {
    #[cfg(feature = "pgvector")]
    pub(crate) fn pg(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> MemoryError {
        move |source| MemoryError::Postgres { context, source }
    }
}
