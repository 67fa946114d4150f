//! `keel export parquet|otlp`: the projections as Parquet, the executions as OTLP traces.

use super::refresh;
use anyhow::{Context, bail};
use clap::Subcommand;
use keel_observe::lakehouse;
use keel_observe::otlp::{self, Conventions, OtlpSink};
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

/// Where `keel export otlp` sends spans, from `--endpoint` and the standard exporter variables
/// of the OpenTelemetry specification (an empty variable counts as unset).
struct OtlpTarget {
    endpoint: String,
    headers: Vec<(String, String)>,
    timeout: Duration,
}

impl OtlpTarget {
    fn resolve(flag: Option<String>, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let endpoint = match (flag, env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
            (Some(e), _) | (None, Some(e)) => e,
            // The generic endpoint is a base: the signal's path is appended to it.
            (None, None) => match env("OTEL_EXPORTER_OTLP_ENDPOINT") {
                Some(base) => format!("{}/v1/traces", base.trim_end_matches('/')),
                None => bail!(
                    "no OTLP endpoint: pass --endpoint URL or set OTEL_EXPORTER_OTLP_ENDPOINT \
                     (e.g. http://127.0.0.1:4318) or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
                ),
            },
        };
        // Credentials in the URL would be printed with it (progress lines, errors): refused, and
        // the message does not repeat the URL.
        let authority = endpoint.split_once("://").map_or("", |(_, rest)| rest);
        if authority
            .split('/')
            .next()
            .unwrap_or_default()
            .contains('@')
        {
            bail!(
                "the OTLP endpoint carries credentials (user:password@): put them in \
                 OTEL_EXPORTER_OTLP_HEADERS (e.g. Authorization=Basic%20…) instead"
            );
        }
        // The signal's own variable replaces the generic one, as the exporter library does.
        let headers = match [
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ]
        .into_iter()
        .find_map(|name| env(name).map(|v| (name, v)))
        {
            // The error names the variable and the entry, never the text: values are secrets.
            Some((name, list)) => otlp::parse_headers(&list).with_context(|| {
                format!("{name} is not a list of key=value pairs separated by commas")
            })?,
            None => Vec::new(),
        };
        let timeout = match [
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ]
        .into_iter()
        .find_map(|name| env(name).map(|v| (name, v)))
        {
            Some((name, ms)) => match ms.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => bail!("{name} is {ms:?}: expected a whole number of milliseconds above 0"),
            },
            None => otlp::DEFAULT_TIMEOUT,
        };
        Ok(Self {
            endpoint,
            headers,
            timeout,
        })
    }
}

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
        /// The traces endpoint, e.g. http://127.0.0.1:4318/v1/traces. Default: the standard
        /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (as is), else OTEL_EXPORTER_OTLP_ENDPOINT with
        /// /v1/traces appended. Headers and timeout: OTEL_EXPORTER_OTLP_(TRACES_)HEADERS and
        /// OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT.
        #[arg(long)]
        endpoint: Option<String>,
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
                if p.catch_up(&*log).await? == 0 {
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
            let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
            let target = OtlpTarget::resolve(endpoint, env)?;
            let endpoint = target.endpoint;
            let (log, p) = refresh(data).await?;
            let sink = OtlpSink::new(&endpoint, target.headers, target.timeout)?;
            let var = |name: &str| std::env::var(name).ok();
            let conv = Conventions::from_switches(
                var(keel_observe::semconv::OPT_IN_ENV).as_deref(),
                var(keel_observe::semconv::CAPTURE_CONTENT_ENV).as_deref(),
            );
            let mut from = if from_start {
                1
            } else {
                p.cursor("otlp").await?
            };
            loop {
                let (next, sent) = otlp::export_ended(&*log, &sink, &conv, from).await?;
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
