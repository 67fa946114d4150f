//! `keel replay`: re-run a recorded execution (or every one since a date, a backtest) as a new,
//! linked execution with another strategy, prompt, model or memory version, and diff it against
//! the original. Side-effecting tools are never executed.

use super::refresh;
use crate::agents::ConfigArgs;
use anyhow::{Context, bail};
use clap::Args;
use keel_core::payload::Payload;
use keel_core::{ExecId, ExecStatus, ExecutionState};
use keel_observe::diff;
use keel_observe::sql::Scope;
use keel_runtime::replay::ReadOnlyTools;
use keel_runtime::strategy::Strategy;
use std::path::{Path, PathBuf};

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

/// The strategy a replay runs with: the chosen one (or the original's), with the prompt and
/// model overrides applied; its version says what was overridden.
fn replay_strategy(
    set: &keel_runtime::StrategySet,
    args: &ReplayArgs,
    original_version: &str,
) -> anyhow::Result<Strategy> {
    let name = args.strategy.as_deref().unwrap_or(original_version);
    let mut s = crate::agents::strategy(set, name, &args.config.strategies)
        .map_err(|e| anyhow::anyhow!("{e} (pass --strategy)"))?
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

/// Runs a replay or a backtest.
pub async fn replay(data: &Path, args: ReplayArgs) -> anyhow::Result<()> {
    let read_only = if args.recorded_reads {
        ReadOnlyTools::Recorded
    } else {
        ReadOnlyTools::Live
    };
    let config = args.config.config();
    let set = keel_runtime::StrategySet::load_dir(&config.strategies)?
        .with_secrets(&crate::config::secrets::process_env());
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
