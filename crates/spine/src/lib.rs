//! The execution spine: an append-only, per-execution-sequenced event log with optimistic
//! concurrency and a global commit order, plus the blob store that holds what events reference.
//!
//! - [`EventLog`] is the contract every backend keeps; `conformance` (behind the `conformance`
//!   feature, for backends' tests) checks it.
//! - [`sqlite::SqliteLog`] is the embedded default: one SQLite file in WAL mode, durable on
//!   return, with group commit so concurrent appenders share one fsync.
//! - `postgres::PgEventLog` (feature `postgres`) is the shared spine of a scaled-out deployment:
//!   PostgreSQL, group commit per process, LISTEN/NOTIFY, and worker leases ([`Leases`]).
//! - [`blob::BlobStore`] stores payloads by content hash (`sha256:...`), verified on read: in a
//!   local directory, or (feature `s3`) in an S3-compatible bucket.
//!
//! What it is not: the spine does not judge whether an event is legal for the execution's state
//! (that is the fold in `keel-core`); it guarantees order, atomicity, durability and that two
//! writers cannot both win the same seq.

pub mod blob;
pub mod clock;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod error;
pub mod lease;
pub mod log;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "s3")]
pub mod s3;
pub mod shred;
pub mod side;
pub mod sqlite;
pub mod store;

pub use blob::{BlobRef, BlobStore, LocalBlobStore};
pub use error::SpineError;
pub use lease::{Lease, Leases};
pub use log::{AppendAck, Committed, EventLog, ExecSummary};
#[cfg(feature = "postgres")]
pub use postgres::{PgEventLog, PgOptions};
#[cfg(feature = "s3")]
pub use s3::{S3BlobStore, S3Options};
pub use sqlite::{Durability, SqliteLog, SqliteOptions};
pub use store::SpineStore;
