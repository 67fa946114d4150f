//! `keel export parquet|otlp`: the projections as Parquet, the executions as OTLP traces.

use super::refresh;
use clap::Subcommand;
use keel_observe::lakehouse;
use keel_observe::otlp::{self, Conventions, OtlpSink};
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

/// Export targets.
#[derive(Subcommand)]
pub enum ExportCmd {
    /// The projections as Parquet under DIR/{table}/date=…/tenant=…/part-0.parquet.
    Parquet {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Keep exporting: rewrite the partitions that changed, every interval.
        #[arg(long)]
        follow: bool,
        /// Interval of --follow, milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Every ended execution as an OpenTelemetry trace over OTLP/HTTP (protobuf), from where the
    /// last export stopped.
    Otlp {
        /// The traces endpoint, e.g. http://127.0.0.1:4318/v1/traces.
        #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")]
        endpoint: String,
        /// Keep exporting executions as they end.
        #[arg(long)]
        follow: bool,
        /// Poll interval of --follow, milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Start again from the first event (ignore the saved position).
        #[arg(long)]
        from_start: bool,
    },
}

/// Runs an export.
pub async fn export(data: &Path, target: ExportCmd) -> anyhow::Result<()> {
    match target {
        ExportCmd::Parquet {
            out,
            follow,
            interval_ms,
        } => {
            let (log, mut p) = refresh(data).await?;
            let report = lakehouse::export(&*p, &out, None).await?;
            eprintln!(
                "wrote {} rows in {} files under {}",
                report.rows,
                report.files,
                out.display()
            );
            if !follow {
                return Ok(());
            }
            loop {
                tokio::time::sleep(Duration::from_millis(interval_ms)).await;
                let from = p.next_offset();
                if p.catch_up(&log).await? == 0 {
                    continue;
                }
                if let Some(since) = p.changed_since(from).await? {
                    let r = lakehouse::export(&*p, &out, Some(&since)).await?;
                    eprintln!("rewrote {} files from {since} ({} rows)", r.files, r.rows);
                }
            }
        }
        ExportCmd::Otlp {
            endpoint,
            follow,
            interval_ms,
            from_start,
        } => {
            let (log, p) = refresh(data).await?;
            let sink = OtlpSink::new(&endpoint)?;
            let conv = Conventions::from_env();
            let mut from = if from_start {
                1
            } else {
                p.cursor("otlp").await?
            };
            loop {
                let (next, sent) = otlp::export_ended(&log, &sink, &conv, from).await?;
                p.set_cursor("otlp", next).await?;
                if sent > 0 || !follow {
                    eprintln!("exported {sent} executions to {endpoint}");
                }
                from = next;
                if !follow {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(interval_ms)).await;
            }
        }
    }
}
