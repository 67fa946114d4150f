//! Keel's governed memory (DESIGN.md §1, issue 6). Not "embed everything, retrieve top-k,
//! forever": a store governed like a feature store.
//!
//! - **Tiers.** Working memory is the execution's own events (nothing stored here). Episodic
//!   memory holds distilled facts per tenant. Semantic memory holds facts a human promoted,
//!   versioned like documentation: every change is a new catalogue version, and retrieval pins one.
//! - **Distilled writes only**, each with [`Provenance`] (tenant, subject, trace, event seqs,
//!   strategy version, time, trust) and a volatility class; PII-screened at write ([`pii`]);
//!   facts from low-trust sources wait for review.
//! - **TTL and freshness**: expired facts are never returned and are purged by a sweep; every hit
//!   carries its age and a `stale` flag.
//! - **Isolation, subject access, erasure** per tenant and subject, in every store and index.
//! - **Pinned embeddings**: a store records its model; another model is refused; migration builds
//!   a side index and switches atomically.
//!
//! What it is not: the distillation step itself (the runtime runs it through a model provider) and
//! the spine's crypto-shredding (keel-spine).

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod embed;
pub mod error;
pub mod fact;
pub mod index;
mod memory;
#[cfg(feature = "pgvector")]
pub mod pg;
#[cfg(feature = "pgserver")]
pub mod pgserver;
pub mod pii;
pub mod policy;
pub mod sqlite;
pub mod store;

#[cfg(feature = "minilm")]
pub use embed::MiniLm;
pub use embed::{Embedder, OpenAiEmbedder};
pub use error::MemoryError;
pub use fact::{
    EmbeddingModel, Fact, Hit, NewFact, PiiAction, Provenance, Query, Scope, Status, Swept, Tier,
    Trust,
};
pub use memory::{Memory, Retrieval};
#[cfg(feature = "pgvector")]
pub use pg::PgMemory;
pub use policy::{MemoryPolicy, PiiRule, VolatilityClass};
pub use sqlite::SqliteMemory;
pub use store::MemoryStore;
