//! [`SpineStore`]: the spine a deployment runs on, as the wiring hands it to the runtime and the
//! server — the [`EventLog`] plus what only the store itself can do (list and erase a subject's
//! executions, say where it is) — so they run on SQLite or PostgreSQL alike behind one
//! `Arc<dyn SpineStore>`.

use crate::blob::BlobStore;
use crate::error::SpineError;
use crate::log::EventLog;
use crate::sqlite::{Erasure, SqliteLog};
use async_trait::async_trait;
use keel_core::ExecId;

/// A spine backend with its store-level operations. See the module documentation.
#[async_trait]
pub trait SpineStore: EventLog {
    /// The executions linked to `subject` of `tenant`.
    async fn subject_executions(
        &self,
        tenant: &str,
        subject: &str,
    ) -> Result<Vec<ExecId>, SpineError>;

    /// Crypto-shreds `subject` of `tenant` and deletes its executions' blobs from `blobs`.
    async fn erase_subject(
        &self,
        tenant: &str,
        subject: &str,
        blobs: &dyn BlobStore,
    ) -> Result<Erasure, SpineError>;

    /// Where the store is, for messages (a file, or a server without its password).
    fn shown(&self) -> String;

    /// The store's worker leases (see [`crate::lease`]), for a worker's leased view of it.
    fn leases(self: std::sync::Arc<Self>) -> std::sync::Arc<dyn crate::lease::Leases>;
}

#[async_trait]
impl SpineStore for SqliteLog {
    async fn subject_executions(
        &self,
        tenant: &str,
        subject: &str,
    ) -> Result<Vec<ExecId>, SpineError> {
        SqliteLog::subject_executions(self, tenant, subject).await
    }

    async fn erase_subject(
        &self,
        tenant: &str,
        subject: &str,
        blobs: &dyn BlobStore,
    ) -> Result<Erasure, SpineError> {
        SqliteLog::erase_subject(self, tenant, subject, blobs).await
    }

    fn shown(&self) -> String {
        self.path().display().to_string()
    }
    fn leases(self: std::sync::Arc<Self>) -> std::sync::Arc<dyn crate::lease::Leases> {
        self
    }
}

#[cfg(feature = "postgres")]
#[async_trait]
impl SpineStore for crate::postgres::PgEventLog {
    async fn subject_executions(
        &self,
        tenant: &str,
        subject: &str,
    ) -> Result<Vec<ExecId>, SpineError> {
        crate::postgres::PgEventLog::subject_executions(self, tenant, subject).await
    }

    async fn erase_subject(
        &self,
        tenant: &str,
        subject: &str,
        blobs: &dyn BlobStore,
    ) -> Result<Erasure, SpineError> {
        crate::postgres::PgEventLog::erase_subject(self, tenant, subject, blobs).await
    }

    fn shown(&self) -> String {
        crate::postgres::PgEventLog::shown(self)
            .display()
            .to_string()
    }
    fn leases(self: std::sync::Arc<Self>) -> std::sync::Arc<dyn crate::lease::Leases> {
        self
    }
}
