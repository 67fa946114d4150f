//! `keel sql`, `keel project`, `keel export parquet|otlp`, `keel slo` and `keel replay`: reading
//! the spine to explain what agents did (keel-observe), and re-running what they did (replay).
//!
//! The projections live in `DATA/observe.db`, or in the PostgreSQL database `KEEL_PROJECTIONS_URL`
//! names; every reading command first brings them up to date from the spine (the consumer's
//! checkpoint makes that incremental).

use crate::agents::ConfigArgs;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use keel_core::payload::Payload;
use keel_core::{ExecId, ExecStatus, ExecutionState};
use keel_observe::otlp::{self, Conventions, OtlpSink};
use keel_observe::rating::{self, Rate};
use keel_observe::sql::{Format, Scope};
use keel_observe::{Backend, ProjectionStore, diff, lakehouse, slo};
use keel_runtime::replay::ReadOnlyTools;
use keel_runtime::strategy::Strategy;
use keel_spine::clock::Clock;
use keel_spine::{EventLog, SqliteLog, SqliteOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
        target: ExportCmd,
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
        cmd: RetrievalsCmd,
    },
    /// Re-run a recorded execution (or every one since a date) as a new, linked execution with
    /// another strategy, prompt or model, and diff it against the original. Side-effecting tools
    /// are never executed: they are answered from the recording, or recorded as would-be calls.
    Replay(ReplayArgs),
}

/// `keel retrievals` commands.
#[derive(Subcommand)]
pub enum RetrievalsCmd {
    /// The sampled retrievals, newest first.
    List {
        /// Only those not rated yet (the rating queue).
        #[arg(long)]
        unrated: bool,
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Output format: table, json or csv.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Rate one sample: 0 irrelevant, 1 partly relevant, 2 relevant, 3 exactly what was needed.
    Rate {
        /// The execution that retrieved.
        exec_id: String,
        /// The seq of its `memory.retrieved` event (the `seq` column of `list`).
        seq: u64,
        /// The grade, 0–3.
        rating: u8,
        /// Who rates (default: `cli:$USER`).
        #[arg(long)]
        by: Option<String>,
        /// Why.
        #[arg(long)]
        note: Option<String>,
        /// Rate as this tenant (refused if the sample is another tenant's).
        #[arg(long)]
        tenant: Option<String>,
    },
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

/// `keel replay` arguments.
#[derive(Args)]
pub struct ReplayArgs {
    /// The execution to replay (UUID). Omit with --since for a backtest.
    exec_id: Option<String>,
    /// Backtest: replay every original (non-replay) execution that ended and started on or
    /// after this date (YYYY-MM-DD).
    #[arg(long, conflicts_with = "exec_id")]
    since: Option<String>,
    /// At most this many executions in a backtest.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Strategy to replay with (name or version); default: the original's.
    #[arg(long)]
    strategy: Option<String>,
    /// Prompt version to replay with: the file `*-<V>.md` in --prompts.
    #[arg(long)]
    prompt_version: Option<String>,
    /// Model name to replay with (same provider as the strategy's).
    #[arg(long)]
    model: Option<String>,
    /// Semantic memory catalogue version to retrieve from (`2` or `v2`); the strategy must
    /// retrieve memory.
    #[arg(long)]
    memory_version: Option<String>,
    /// Answer read-only tools from the recording too, instead of running them live.
    #[arg(long)]
    recorded_reads: bool,
    /// Prompts folder (for --prompt-version).
    #[arg(long, default_value = "prompts")]
    prompts: PathBuf,
    /// Print JSON instead of the diff.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    config: ConfigArgs,
}

/// The projection file of a data directory.
pub fn projections_path(data: &Path) -> PathBuf {
    data.join("observe.db")
}

fn open_log(data: &Path) -> anyhow::Result<SqliteLog> {
    let path = data.join("spine.db");
    if !path.exists() {
        bail!("no Keel store at {} (is --data right?)", path.display());
    }
    Ok(SqliteLog::open(&path, SqliteOptions::default())?)
}

/// The projections of `data`: the backend `KEEL_PROJECTIONS_URL` names (a `postgres://` URL),
/// else the embedded file `DATA/observe.db`. The one place the CLI chooses it.
pub async fn open_projections(data: &Path) -> anyhow::Result<Box<dyn ProjectionStore>> {
    Ok(Backend::from_env(&projections_path(data))?.open().await?)
}

/// Opens the projections of `data` and applies everything the spine has committed since.
pub async fn refresh(data: &Path) -> anyhow::Result<(SqliteLog, Box<dyn ProjectionStore>)> {
    let log = open_log(data)?;
    let mut p = open_projections(data).await?;
    p.catch_up(&log).await?;
    Ok((log, p))
}

/// The execution whose trace id is `trace`, from the projections of the store `log` lives in.
pub async fn exec_by_trace(
    log: &SqliteLog,
    trace: keel_core::TraceId,
) -> anyhow::Result<Option<ExecId>> {
    let data = log.path().parent().unwrap_or(Path::new("."));
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
        } => {
            let format: Format = format.parse()?;
            let (_, p) = refresh(data).await?;
            let scope = tenant.map_or(Scope::Admin, Scope::Tenant);
            let rows = p
                .query(&scope, &query)
                .await
                .with_context(|| format!("dialect: {}", p.dialect()))?;
            print!("{}", rows.render(format));
            Ok(())
        }
        ObserveCmd::Project { follow, rebuild } => project(data, follow, rebuild).await,
        ObserveCmd::Export { target } => export(data, target).await,
        ObserveCmd::Slo {
            days,
            alarms,
            json,
            prometheus,
        } => slo_cmd(data, days, &alarms, json, prometheus).await,
        ObserveCmd::Retrievals { cmd } => retrievals(data, cmd).await,
        ObserveCmd::Replay(args) => replay(data, args).await,
    }
}

async fn retrievals(data: &Path, cmd: RetrievalsCmd) -> anyhow::Result<()> {
    let (log, mut p) = refresh(data).await?;
    match cmd {
        RetrievalsCmd::List {
            unrated,
            tenant,
            limit,
            format,
        } => {
            let format: Format = format.parse()?;
            let scope = tenant.map_or(Scope::Admin, Scope::Tenant);
            let rows = rating::samples(&*p, &scope, unrated, limit).await?;
            print!("{}", rows.render(format));
        }
        RetrievalsCmd::Rate {
            exec_id,
            seq,
            rating: grade,
            by,
            note,
            tenant,
        } => {
            let exec_id: ExecId = exec_id
                .parse()
                .with_context(|| format!("{exec_id:?} is not an execution id (expected a UUID)"))?;
            let scope = tenant.map_or(Scope::Admin, Scope::Tenant);
            let rate = Rate {
                exec_id,
                seq,
                rating: grade,
                rater: by.unwrap_or_else(crate::agents::operator),
                note,
            };
            let clock = keel_spine::clock::SystemClock;
            let event = rating::rate(&log, &clock, &*p, &scope, rate).await?;
            p.catch_up(&log).await?;
            eprintln!(
                "recorded: {} (control stream seq {})",
                keel_core::describe::describe(&event.payload),
                event.seq
            );
        }
    }
    Ok(())
}

async fn project(data: &Path, follow: bool, rebuild: bool) -> anyhow::Result<()> {
    let log = open_log(data)?;
    let mut p = open_projections(data).await?;
    if rebuild {
        p.reset().await?;
        eprintln!("projections emptied; rebuilding from offset 1");
    }
    let applied = p.catch_up(&log).await?;
    eprintln!(
        "applied {applied} events into {}; checkpoint at offset {}",
        p.describe(),
        p.next_offset()
    );
    if follow {
        eprintln!("following the spine (Ctrl-C to stop)");
        keel_observe::store::follow(
            &mut *p,
            &log,
            Duration::from_millis(100),
            |batch| eprintln!("applied {} events", batch.len()),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await?;
    }
    Ok(())
}

async fn export(data: &Path, target: ExportCmd) -> anyhow::Result<()> {
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

async fn slo_cmd(
    data: &Path,
    days: u32,
    alarms: &[String],
    json: bool,
    prometheus: bool,
) -> anyhow::Result<()> {
    let alarms: Vec<slo::Alarm> = alarms.iter().map(|a| a.parse()).collect::<Result<_, _>>()?;
    let (log, p) = refresh(data).await?;
    slo::check_strategies(&alarms, &slo::strategy_versions(&*p, &Scope::Admin).await?)?;
    let since = (keel_spine::clock::SystemClock.now() - chrono::Duration::days(i64::from(days)))
        .format("%Y-%m-%d")
        .to_string();
    let report = slo::compute(&*p, &since).await?;
    let breaches = slo::check(&report, &alarms);
    let fired = slo::emit(&log, &keel_spine::clock::SystemClock, breaches.clone()).await?;
    for b in &breaches {
        eprintln!(
            "ALARM {}: {} = {:.4} {} {}{}",
            b.strategy_version,
            b.metric,
            b.value,
            b.op,
            b.bound,
            if fired
                .iter()
                .any(|e| matches!(&e.payload, Payload::SloAlarmed(a) if a == b))
            {
                " (slo.alarmed recorded)"
            } else {
                " (already recorded)"
            }
        );
    }
    if prometheus {
        print!("{}", slo::prometheus(&report));
    } else if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_slo(&report));
    }
    Ok(())
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn render_slo(r: &slo::SloReport) -> String {
    let mut out = format!("SLOs of executions started since {}\n", r.since);
    out.push_str(&format!(
        "{:<44} {:>6} {:>6} {:>8} {:>8} {:>6} {:>6} {:>8} {:>8} {:>10}\n",
        "strategy_version",
        "execs",
        "ended",
        "outcome",
        "gates",
        "p50st",
        "p95st",
        "p50tok",
        "p95tok",
        "$/success"
    ));
    for s in &r.strategies {
        out.push_str(&format!(
            "{:<44} {:>6} {:>6} {:>8} {:>8} {:>6} {:>6} {:>8} {:>8} {:>10}\n",
            s.strategy_version,
            s.executions,
            s.finished,
            opt(s.outcome_rate, 3),
            opt(s.gate_escalation_rate, 3),
            opt(s.p50_steps, 1),
            opt(s.p95_steps, 1),
            opt(s.p50_tokens, 0),
            opt(s.p95_tokens, 0),
            opt(s.cost_per_success, 6)
        ));
    }
    out.push_str("\ntool failure rate per contract\n");
    for t in &r.tools {
        out.push_str(&format!(
            "{:<44} {:<24} {:>6} calls {:>5} failed  {:.3}\n",
            t.strategy_version, t.tool, t.calls, t.failures, t.failure_rate
        ));
    }
    if !r.retrieval.is_empty() {
        out.push_str("\nretrieval relevance sampling\n");
        for s in &r.retrieval {
            out.push_str(&format!(
                "{:<44} {:>6} retrievals {:>5} queued for rating {:>5} rated  mean {}\n",
                s.strategy_version,
                s.retrievals,
                s.sampled,
                s.rated,
                opt(s.mean_rating, 2)
            ));
        }
    }
    out
}

/// The strategy a replay runs with: the chosen one (or the original's), with the prompt and
/// model overrides applied; its version says what was overridden.
fn replay_strategy(
    set: &keel_runtime::StrategySet,
    args: &ReplayArgs,
    original_version: &str,
) -> anyhow::Result<Strategy> {
    let name = args.strategy.as_deref().unwrap_or(original_version);
    let mut s = set
        .get(name)
        .with_context(|| {
            format!(
                "no strategy {name:?} in {} (pass --strategy)",
                args.config.strategies.display()
            )
        })?
        .clone();
    if let Some(v) = &args.prompt_version {
        let suffix = format!("-{v}.md");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&args.prompts)
            .with_context(|| format!("reading prompts folder {}", args.prompts.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(&suffix))
            .collect();
        found.sort();
        let [file] = found.as_slice() else {
            bail!(
                "--prompt-version {v}: expected one file *{suffix} in {}, found {}",
                args.prompts.display(),
                found.len()
            );
        };
        s.prompt =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        s.prompt_version = v.clone();
        s.version = format!("{}+prompt-{v}", s.version);
    }
    if let Some(v) = &args.memory_version {
        let v: u64 = v
            .trim_start_matches('v')
            .parse()
            .with_context(|| format!("--memory-version {v:?} is not a catalogue version number"))?;
        if !s.memory.enabled {
            bail!(
                "--memory-version {v}: strategy {} does not retrieve memory (no memory: section)",
                s.name
            );
        }
        s.memory.semantic_version = Some(v);
        s.version = format!("{}+memory-v{v}", s.version);
    }
    if let Some(m) = &args.model {
        s.model = m.clone();
        s.version = format!("{}+model-{m}", s.version);
    }
    Ok(s)
}

async fn replay(data: &Path, args: ReplayArgs) -> anyhow::Result<()> {
    let read_only = if args.recorded_reads {
        ReadOnlyTools::Recorded
    } else {
        ReadOnlyTools::Live
    };
    let config = args.config.config();
    let set = keel_runtime::StrategySet::load_dir(&config.strategies)?;
    let originals: Vec<ExecId> = match (&args.exec_id, &args.since) {
        (Some(id), _) => vec![
            id.parse()
                .with_context(|| format!("{id:?} is not an execution id (expected a UUID)"))?,
        ],
        (None, Some(since)) => {
            if chrono::NaiveDate::parse_from_str(since, "%Y-%m-%d").is_err() {
                bail!("--since {since:?} is not a date (YYYY-MM-DD)");
            }
            let (_, p) = refresh(data).await?;
            let rows = p
                .query(
                    &Scope::Admin,
                    &format!(
                        "SELECT exec_id FROM gold.executions WHERE replay_of IS NULL \
                         AND finished_at IS NOT NULL AND started_at >= '{since}' \
                         ORDER BY started_at LIMIT {}",
                        args.limit
                    ),
                )
                .await?;
            rows.rows
                .iter()
                .filter_map(|r| r[0].as_str().and_then(|s| s.parse().ok()))
                .collect()
        }
        (None, None) => bail!("name an execution to replay, or --since DATE for a backtest"),
    };
    let replayer = crate::demo::replayer(data, &config)?;
    let log = replayer.log().clone();
    let mut pairs = Vec::new();
    for original in originals {
        let events = log.read(original, 1).await?;
        let Some(Payload::ExecStarted(started)) = events.first().map(|e| &e.payload) else {
            bail!("no execution {original} in {}", data.display());
        };
        let strategy = replay_strategy(&set, &args, &started.strategy_version)?;
        let model = strategy.provider()?;
        eprintln!("replaying {original} with {}", strategy.version);
        let r = replayer
            .replay(original, &strategy, &*model, read_only)
            .await?;
        let after = log.read(r.replay, 1).await?;
        pairs.push((events, after, r));
    }
    if args.exec_id.is_some() {
        let Some((before, after, r)) = pairs.first() else {
            return Ok(());
        };
        let d = diff::diff(before, after);
        if args.json {
            let would_be: Vec<serde_json::Value> = r
                .would_be
                .iter()
                .map(|w| serde_json::json!({"tool": w.tool, "args": w.args, "reason": w.reason}))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "original": r.original.to_string(),
                    "replay": r.replay.to_string(),
                    "answered_from_recording": r.answered_from_recording,
                    "would_be_calls": would_be,
                    "diff": d,
                }))?
            );
        } else {
            println!("replay {} of {}", r.replay, r.original);
            print!("{}", d.render());
            println!(
                "side effects: {} answered from the recording, {} would-be call(s) not executed",
                r.answered_from_recording,
                r.would_be.len()
            );
            for w in &r.would_be {
                println!("  would-be: {}({})", w.tool, w.args);
            }
        }
        return Ok(());
    }
    // Backtest summary: outcome rate and cost per success, old vs new.
    let summarize = |states: Vec<ExecutionState>| {
        let n = states.len();
        let ok = states
            .iter()
            .filter(|s| {
                matches!(
                    s.status,
                    ExecStatus::Finished {
                        outcome: keel_core::payload::Outcome::Success
                    }
                )
            })
            .count();
        let cost: Option<u64> = states
            .iter()
            .map(|s| s.totals.cost.micros())
            .sum::<Option<u64>>();
        let rate = if n == 0 { 0.0 } else { ok as f64 / n as f64 };
        let cps = match (cost, ok) {
            (Some(c), ok) if ok > 0 => Some(c as f64 / 1e6 / ok as f64),
            _ => None,
        };
        (n, rate, cps)
    };
    let old = summarize(
        pairs
            .iter()
            .map(|(b, _, _)| ExecutionState::fold(b).unwrap_or_default())
            .collect(),
    );
    let new = summarize(pairs.iter().map(|(_, _, r)| r.state.clone()).collect());
    let would_be: usize = pairs.iter().map(|(_, _, r)| r.would_be.len()).sum();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "executions": old.0,
                "old": {"outcome_rate": old.1, "cost_per_success": old.2},
                "new": {"outcome_rate": new.1, "cost_per_success": new.2},
                "would_be_calls": would_be,
                "replays": pairs.iter().map(|(_, _, r)| serde_json::json!({"original": r.original.to_string(), "replay": r.replay.to_string()})).collect::<Vec<_>>(),
            }))?
        );
    } else {
        let cps = |v: Option<f64>| v.map_or("-".into(), |v| format!("${v:.6}"));
        println!("backtest over {} executions", old.0);
        println!(
            "{:<6} {:>12} {:>16}",
            "", "outcome_rate", "cost_per_success"
        );
        println!("{:<6} {:>12.3} {:>16}", "old", old.1, cps(old.2));
        println!("{:<6} {:>12.3} {:>16}", "new", new.1, cps(new.2));
        println!("would-be calls not executed: {would_be}");
    }
    Ok(())
}

/// The scripted model of the stale-memory demo step: it answers delivery questions from memory
/// alone (the seed's "tools were never consulted").
const CARRIER_SCRIPT: &str = r#"model: scripted-carrier
input_tokens_per_char: 0.25
output_tokens: 30
rules:
  - name: answer-from-memory
    when: { goal: '(?i)when will order (?:A-)?(?P<n>\d{4}) arrive', memory: '(?i)delivery takes (?P<days>\d+) days' }
    then: { text: "Order A-{n} arrives within {days} days." }
  - name: fallback
    then: { text: "I do not know." }
"#;

const CARRIER_STRATEGY: &str = "name: support-carrier
prompt: { file: prompts/support-v1.md, version: v1 }
model: { provider: scripted, name: scripted-small, script: carrier.yaml, max_tokens: 512 }
tools: [lookup_order]
max_steps: 4
budget: { max_cost_usd: 0.05, max_tokens: 60000 }
memory: { enabled: true, k: 3, min_score: 0.0, semantic_version: 1 }
success:
  - { answer_matches: '(?i)within 2 days' }
";

/// The demo's last step, the seed's stale-memory story: an answer given from a semantic fact
/// that catalogue version 2 corrected, then the same execution replayed against version 2, with
/// the diff. Uses tenant `initech`; the expiry sweep it runs as of 30 days later (so the drafts
/// the facts were promoted from are gone) is scoped to `initech`, leaving the other demo steps'
/// memory alone.
pub async fn demo_stale_memory(
    env: &keel_runtime::embedded::Embedded,
    config_dir: &Path,
    store: &Path,
) -> anyhow::Result<()> {
    use keel_memory::{NewFact, Provenance, Trust};
    let memory = env.agent.memory.as_ref().context("memory is not wired")?;
    std::fs::write(config_dir.join("carrier.yaml"), CARRIER_SCRIPT)?;
    let mut s = Strategy::parse(CARRIER_STRATEGY, "support-carrier (demo)", config_dir)?;
    let now = keel_spine::clock::SystemClock.now();
    let fact = |text: &str| NewFact {
        text: text.into(),
        volatility: "policy".into(),
        provenance: Provenance {
            tenant: "initech".into(),
            subject: None,
            trace_id: None,
            exec_id: None,
            event_seqs: vec![],
            strategy_version: None,
            written_at: now,
            source: "carrier policy page".into(),
            trust: Trust::Operator,
        },
    };
    let old = memory
        .write(fact("Carrier policy: delivery takes 5 days."), now)
        .await?;
    let (stale, v1) = memory.promote("initech", &old.id, "ops", &[], now).await?;
    let new = memory
        .write(fact("Carrier policy: delivery takes 2 days."), now)
        .await?;
    let (_, v2) = memory
        .promote(
            "initech",
            &new.id,
            "ops",
            std::slice::from_ref(&stale.id),
            now,
        )
        .await?;
    memory
        .sweep_tenant("initech", now + chrono::Duration::days(30))
        .await?;
    let model = s.provider()?;
    let goal = "When will order A-1003 arrive?";
    let exec = env.agent.start(&s, "initech", goal).await?;
    let state = env.agent.drive(&s, &*model, exec).await?;
    println!();
    println!(
        "STALE MEMORY (tenant initech): semantic catalogue v{v1} says 5 days; v{v2} corrected it to 2 days"
    );
    println!(
        "1. {exec} {goal:?} pinned to memory v{v1} → {}",
        crate::agents::outcome_word(&state)
    );
    let config = keel_runtime::embedded::Config {
        tools: config_dir.join("tools"),
        strategies: config_dir.join("strategies"),
        prices: config_dir.join("prices.toml"),
    };
    s.memory.semantic_version = Some(v2);
    s.version = format!("{}+memory-v{v2}", s.version);
    let replayer = crate::demo::replayer(store, &config)?;
    let r = replayer
        .replay(exec, &s, &*model, ReadOnlyTools::Live)
        .await?;
    println!(
        "2. keel replay {exec} --memory-version {v2} → replay {} → {}",
        r.replay,
        crate::agents::outcome_word(&r.state)
    );
    let before = env.log.read(exec, 1).await?;
    let after = replayer.log().read(r.replay, 1).await?;
    for line in diff::diff(&before, &after).render().lines() {
        println!("   {line}");
    }
    Ok(())
}
