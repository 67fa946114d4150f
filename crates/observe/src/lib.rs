//! `keel-observe`: everything that reads the spine to explain what agents did.
//!
//! - [`projection`]: a consumer of the spine with a durable, checkpointed offset that keeps
//!   `traces.steps` (one row per event) and `gold.executions` (one row per execution) in a SQLite
//!   file of their own.
//! - [`sql`]: read-only SQL over those tables (`keel sql`, `POST /v1/sql`), tenant-scoped on
//!   request, with percentile aggregates registered.
//! - [`otlp`]: OpenTelemetry traces over OTLP/HTTP (protobuf), GenAI semantic conventions.
//! - [`lakehouse`]: the projections as Parquet, partitioned by date and tenant.
//! - [`slo`]: per-strategy SLOs computed from the projections, and alarms that emit events.
//! - [`diff`]: a step-by-step diff of two executions (what replay prints).
//!
//! What it is not: it never writes the spine except the alarm events of [`slo`], and it never
//! decides anything an agent does; it only reads and explains.

pub mod diff;
pub mod error;
pub mod lakehouse;
pub mod metrics;
pub mod otlp;
pub mod projection;
pub mod semconv;
pub mod slo;
pub mod sql;

pub use error::{ObserveError, Result};
pub use projection::Projector;
