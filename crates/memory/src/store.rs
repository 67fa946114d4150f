//! The `MemoryStore` contract, which both backends (embedded SQLite + vector index, PostgreSQL +
//! pgvector) meet and the `conformance` suite (behind that feature) checks:
//!
//! 1. **Tenant isolation.** Every read and write names a tenant; no call returns or changes
//!    another tenant's facts (pgvector: enforced by row-level security, not only by the query).
//! 2. **Only retrievable facts are searched**: episodic facts that are `active` and not expired at
//!    `now`, and semantic facts visible in the requested catalogue version. An episodic fact is
//!    searched only for its own subject, unless its scope is [`Scope::Tenant`]; a search for no
//!    subject sees no subject's episodic facts.
//! 3. **Pinned embeddings.** The store records its embedding model; a write or search with another
//!    model is refused with [`MemoryError::EmbeddingMismatch`].
//! 4. **Migration is side by side.** `migration_*` fill a second index for a new model; only
//!    `migration_switch` (one transaction) changes the pinned model, so a crash at any point before
//!    it leaves the old index serving.
//! 5. **Erasure is complete.** `erase_subject` removes the subject's facts and their vectors.
//! 6. **Expiry is purged by a sweep** that reports each fact it removed: `sweep` across tenants
//!    (an operator job), `sweep_tenant` for one tenant only.

use crate::error::MemoryError;
use crate::fact::{EmbeddingModel, Fact, Scope, Status, Swept};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// Which semantic catalogue version a search reads.
pub type CatalogueVersion = u64;

/// A governed memory backend. See the module docs for the guarantees.
#[async_trait]
pub trait MemoryStore: Send + Sync {
    /// `sqlite` or `pgvector`.
    fn backend(&self) -> &'static str;

    /// The embedding model the store is pinned to.
    async fn pinned(&self) -> Result<EmbeddingModel, MemoryError>;

    /// Stores a fact and its vector (embedded by `model`).
    async fn insert(
        &self,
        fact: &Fact,
        vector: &[f32],
        model: &EmbeddingModel,
    ) -> Result<(), MemoryError>;

    /// The `k` most similar retrievable facts of `tenant` for an execution about `subject`, best
    /// first, with cosine scores.
    #[allow(clippy::too_many_arguments)] // each is one axis of the query; a struct would only rename them
    async fn search(
        &self,
        tenant: &str,
        subject: Option<&str>,
        vector: &[f32],
        model: &EmbeddingModel,
        k: usize,
        now: DateTime<Utc>,
        semantic_version: CatalogueVersion,
    ) -> Result<Vec<(Fact, f32)>, MemoryError>;

    /// One fact of `tenant`, any status.
    async fn get(&self, tenant: &str, id: &str) -> Result<Option<Fact>, MemoryError>;

    /// Facts of `tenant` (about `subject` if given), any status, oldest first.
    async fn list(&self, tenant: &str, subject: Option<&str>) -> Result<Vec<Fact>, MemoryError>;

    /// Sets a fact's review status; returns the updated fact.
    async fn set_status(&self, tenant: &str, id: &str, status: Status)
    -> Result<Fact, MemoryError>;

    /// Current semantic catalogue version of `tenant` (0 before any promotion).
    async fn catalogue_version(&self, tenant: &str) -> Result<CatalogueVersion, MemoryError>;

    /// Adds `fact` (tier semantic) as catalogue version current+1, ending the versions of the
    /// facts in `supersedes` there; one transaction. Returns the new version.
    async fn publish(
        &self,
        fact: &Fact,
        vector: &[f32],
        model: &EmbeddingModel,
        supersedes: &[String],
    ) -> Result<CatalogueVersion, MemoryError>;

    /// Deletes every fact about `subject` in `tenant` (all tiers, all statuses) and their vectors
    /// in every index; returns the ids removed.
    async fn erase_subject(&self, tenant: &str, subject: &str) -> Result<Vec<String>, MemoryError>;

    /// Deletes every fact (all tenants) expired at `now`, with its vectors; returns what it
    /// removed.
    async fn sweep(&self, now: DateTime<Utc>) -> Result<Vec<Swept>, MemoryError>;

    /// Deletes the facts of `tenant` expired at `now`, with their vectors; returns what it
    /// removed. Other tenants' facts, expired or not, stay (rule 1).
    async fn sweep_tenant(
        &self,
        tenant: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Swept>, MemoryError>;

    /// Starts (or restarts) building an index for `model` beside the serving one.
    async fn migration_start(&self, model: &EmbeddingModel) -> Result<(), MemoryError>;

    /// Up to `limit` (id, text) of facts that have no vector yet in `model`'s index.
    async fn migration_pending(
        &self,
        model: &EmbeddingModel,
        limit: usize,
    ) -> Result<Vec<(String, String)>, MemoryError>;

    /// Stores vectors in `model`'s side index.
    async fn migration_put(
        &self,
        model: &EmbeddingModel,
        rows: &[(String, Vec<f32>)],
    ) -> Result<(), MemoryError>;

    /// Atomically makes `model` the pinned one (every fact must have a vector) and drops the old
    /// index.
    async fn migration_switch(&self, model: &EmbeddingModel) -> Result<(), MemoryError>;
}

/// Refuses `requested` unless it is `pinned`.
pub fn check_model(pinned: &EmbeddingModel, requested: &EmbeddingModel) -> Result<(), MemoryError> {
    if pinned != requested {
        return Err(MemoryError::EmbeddingMismatch {
            pinned: pinned.key(),
            requested: requested.key(),
        });
    }
    Ok(())
}

/// Refuses a vector of the wrong length.
pub fn check_dim(model: &EmbeddingModel, v: &[f32]) -> Result<(), MemoryError> {
    if v.len() != model.dim {
        return Err(MemoryError::Dimensions {
            model: model.key(),
            want: model.dim,
            got: v.len(),
        });
    }
    Ok(())
}

/// True if `fact` may be returned by a search for an execution about `subject` at `now` reading
/// catalogue version `v`.
pub fn retrievable(
    fact: &Fact,
    subject: Option<&str>,
    now: DateTime<Utc>,
    v: CatalogueVersion,
) -> bool {
    use crate::fact::Tier;
    if fact.expires_at.is_some_and(|e| e <= now) {
        return false;
    }
    match fact.tier {
        Tier::Episodic => {
            let visible = match fact.scope {
                Scope::Tenant => true,
                Scope::Subject => fact.subject.is_some() && fact.subject.as_deref() == subject,
            };
            visible && fact.status == Status::Active
        }
        Tier::Semantic => {
            fact.semantic_from.is_some_and(|f| f <= v) && fact.semantic_to.is_none_or(|t| t > v)
        }
    }
}
