//! `keel sql`, `keel project`, `keel export parquet|otlp`, `keel slo` and `keel replay`: reading
//! the spine to explain what agents did (keel-observe), and re-running what they did (replay).
//!
//! The projections live in `DATA/observe.db`, or in the PostgreSQL database `KEEL_PROJECTIONS_URL`
//! names; every reading command first brings them up to date from the spine (the consumer's
//! checkpoint makes that incremental).

//!
//! Each command has its own module; this one holds the command line and what they share: where
//! the projections are and how they are brought up to date.

mod export;
mod project;
mod replay;
mod retrievals;
mod slo;
mod sql;

use anyhow::{Context, bail};
use clap::Subcommand;
use keel_core::ExecId;
use keel_observe::sql::Scope;
use keel_observe::{Backend, ProjectionStore};
use keel_spine::{EventLog, SpineStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The observability and replay commands.
#[derive(Subcommand)]
pub enum ObserveCmd {
    /// Run one read-only SQL query over the projections (`traces.steps`, `gold.executions`,
    /// `traces.retrieval_samples`): SQLite dialect plus APPROX_PERCENTILE, `x::int` and
    /// `CURRENT_DATE - N` on the embedded default; PostgreSQL's own when `KEEL_PROJECTIONS_URL`
    /// names a database.
    Sql {
        /// The query.
        query: String,
        /// Output format: table, json or csv.
        #[arg(long, default_value = "table")]
        format: String,
        /// Only this tenant's rows.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Bring the projections up to date with the spine (or follow it, or rebuild from offset 0).
    Project {
        /// Keep following the spine until interrupted.
        #[arg(long)]
        follow: bool,
        /// Empty the projections and rebuild them from the first event.
        #[arg(long)]
        rebuild: bool,
    },
    /// Export the projections (Parquet) or the executions (OTLP traces).
    Export {
        #[command(subcommand)]
        target: export::ExportCmd,
    },
    /// SLOs per strategy version; `--alarm` bounds append `slo.alarmed` events when crossed.
    Slo {
        /// Window: executions started in the last N days.
        #[arg(long, default_value_t = 14)]
        days: u32,
        /// An alarm, `[strategy:]metric>bound` or `<bound` (repeatable), e.g.
        /// `support-short:p95_steps>4`. The strategy is a name (every version of it), one full
        /// version, or `*`; one that no execution in the store has run is an error.
        #[arg(long = "alarm")]
        alarms: Vec<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Print the Prometheus text exposition instead.
        #[arg(long, conflicts_with = "json")]
        prometheus: bool,
    },
    /// Sampled memory retrievals: list them, and rate their relevance (each rating is a
    /// `retrieval.rated` event, so projection rebuilds keep it).
    Retrievals {
        #[command(subcommand)]
        cmd: retrievals::RetrievalsCmd,
    },
    /// Re-run a recorded execution (or every one since a date) as a new, linked execution with
    /// another strategy, prompt or model, and diff it against the original. Side-effecting tools
    /// are never executed: they are answered from the recording, or recorded as would-be calls.
    Replay(replay::ReplayArgs),
}

/// The projection file of a data directory.
pub fn projections_path(data: &Path) -> PathBuf {
    data.join("observe.db")
}

/// The spine of `data` (or the configured PostgreSQL spine); an error naming the directory
/// when there is none.
pub fn open_log(data: &Path) -> anyhow::Result<Arc<dyn SpineStore>> {
    let c = crate::config::current();
    let path = data.join("spine.db");
    if c.spine_postgres.is_none() && !path.exists() {
        bail!("no Keel store at {} (is --data right?)", path.display());
    }
    c.spine_log(data)
}

/// The projections of `data`: the backend `projections.url` names (keel.toml, or
/// `KEEL_PROJECTIONS_URL`: a `postgres://` URL), else the embedded file `DATA/observe.db`. The
/// one place the CLI chooses it.
pub fn projections_backend(data: &Path) -> anyhow::Result<Backend> {
    let c = crate::config::current();
    Backend::from_config(c.projections.as_deref(), &projections_path(data))
        .with_context(|| c.at("projections.url"))
}

/// The projections of `data` ([`projections_backend`]), opened.
pub async fn open_projections(data: &Path) -> anyhow::Result<Box<dyn ProjectionStore>> {
    let backend = projections_backend(data)?;
    let c = crate::config::current();
    backend
        .open()
        .await
        .with_context(|| c.at("projections.url"))
}

/// Opens the projections of `data` and applies everything the spine has committed since.
pub async fn refresh(
    data: &Path,
) -> anyhow::Result<(Arc<dyn SpineStore>, Box<dyn ProjectionStore>)> {
    let log = open_log(data)?;
    let mut p = open_projections(data).await?;
    p.catch_up(&*log).await?;
    Ok((log, p))
}

/// The execution whose trace id is `trace`, from the projections of the store under `data`
/// (brought up to date from `log`, its spine).
pub async fn exec_by_trace(
    data: &Path,
    log: &dyn EventLog,
    trace: keel_core::TraceId,
) -> anyhow::Result<Option<ExecId>> {
    let mut p = open_projections(data).await?;
    p.catch_up(log).await?;
    let rows = p
        .query(
            &Scope::Admin,
            // traces.steps, not gold.executions: a replay has steps but no gold row.
            &format!("SELECT exec_id FROM traces.steps WHERE trace_id = '{trace}' LIMIT 1"),
        )
        .await?;
    Ok(rows
        .rows
        .first()
        .and_then(|r| r[0].as_str())
        .and_then(|s| s.parse().ok()))
}

/// Runs an observe command.
pub async fn run(data: &Path, cmd: ObserveCmd) -> anyhow::Result<()> {
    match cmd {
        ObserveCmd::Sql {
            query,
            format,
            tenant,
        } => sql::sql(data, &query, &format, tenant).await,
        ObserveCmd::Project { follow, rebuild } => project::project(data, follow, rebuild).await,
        ObserveCmd::Export { target } => export::export(data, target).await,
        ObserveCmd::Slo {
            days,
            alarms,
            json,
            prometheus,
        } => slo::slo(data, days, &alarms, json, prometheus).await,
        ObserveCmd::Retrievals { cmd } => retrievals::retrievals(data, cmd).await,
        ObserveCmd::Replay(args) => replay::replay(data, args).await,
    }
}
