//! `keel-observe`: everything that reads the spine to explain what agents did.
//!
//! - [`projection`]: what `traces.steps` (one row per event), `gold.executions` (one row per
//!   execution) and `traces.retrieval_samples` hold, as a pure function of the events.
//! - [`store`]: the [`ProjectionStore`] trait — a consumer of the spine with a durable,
//!   checkpointed offset — and its backends: [`sqlite`] (the embedded default, a file of its
//!   own) and [`pg`] (PostgreSQL, the scaled path), chosen by configuration ([`Backend`]).
//! - [`sql`]: read-only SQL over those tables (`keel sql`, `POST /v1/sql`), tenant-scoped on
//!   request, with percentile aggregates registered.
//! - [`otlp`]: OpenTelemetry traces over OTLP/HTTP (protobuf), GenAI semantic conventions.
//! - [`lakehouse`]: the projections as Parquet, partitioned by date and tenant.
//! - [`readout`]: an experiment's readout per arm, with delta-method intervals and a verdict.
//! - [`rating`]: relevance ratings of sampled retrievals, recorded as control events.
//! - [`slo`]: per-strategy SLOs computed from the projections, and alarms that emit events.
//! - [`diff`]: a step-by-step diff of two executions (what replay prints).
//!
//! What it is not: it never writes the spine except the alarm events of [`slo`], and it never
//! decides anything an agent does; it only reads and explains.

pub mod budget;
pub mod diff;
pub mod economics;
pub mod error;
pub mod feedback;
#[cfg(feature = "parquet")]
pub mod lakehouse;
pub mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
#[cfg(feature = "postgres")]
pub mod pg;
#[cfg(feature = "postgres")]
mod pg_bulk;
pub mod projection;
pub mod rating;
pub mod readout;
pub mod semconv;
pub mod slo;
pub mod sql;
pub mod sqlite;
pub mod store;

pub use error::{ObserveError, Result};
pub use sqlite::Projector;
pub use store::{Backend, ProjectionStore};
