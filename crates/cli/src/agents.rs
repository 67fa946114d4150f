//! `keel run`, `keel worker`, `keel trace` and `keel kill`: running agent executions on the
//! embedded default and looking at them.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use keel_core::describe::describe;
use keel_core::payload::{Outcome, Payload};
use keel_core::{Event, ExecId, ExecStatus, ExecutionState, TraceId};
use keel_runtime::control::{Control, Scope};
use keel_runtime::embedded::Config;
use keel_spine::clock::SystemClock;
use keel_spine::{EventLog, SqliteLog, SqliteOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where the configuration is read from.
#[derive(Args, Clone, Debug)]
pub struct ConfigArgs {
    /// Tool contracts folder.
    #[arg(long, default_value = "tools")]
    pub tools: PathBuf,
    /// Strategies folder.
    #[arg(long, default_value = "strategies")]
    pub strategies: PathBuf,
    /// Price table.
    #[arg(long, default_value = "prices.toml")]
    pub prices: PathBuf,
}

impl ConfigArgs {
    /// As the runtime's config.
    pub fn config(&self) -> Config {
        Config {
            tools: self.tools.clone(),
            strategies: self.strategies.clone(),
            prices: self.prices.clone(),
        }
    }
}

/// The outcome of a final state, as a word (`success`, `max_steps`, …), or its status.
pub fn outcome_word(state: &ExecutionState) -> String {
    let outcome = match &state.status {
        ExecStatus::Finished { outcome } => *outcome,
        ExecStatus::Failed => Outcome::Error,
        other => return other.to_string(),
    };
    serde_json::to_value(outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub use keel_core::describe::dollars;

/// What `keel run` is asked to run.
pub struct Request<'a> {
    /// Strategy name or version.
    pub strategy: &'a str,
    /// Tenant.
    pub tenant: &'a str,
    /// Data subject the execution is about, if any.
    pub subject: Option<&'a str>,
    /// The goal.
    pub goal: &'a str,
}

/// `keel run`: one execution, start to end.
pub async fn run(
    data: &Path,
    cfg: &ConfigArgs,
    request: &Request<'_>,
    json: bool,
) -> anyhow::Result<()> {
    let Request {
        strategy,
        tenant,
        subject,
        goal,
    } = *request;
    let env = crate::demo::open(data, &cfg.config())?;
    let s = env
        .strategies
        .get(strategy)
        .with_context(|| format!("no strategy {strategy:?} in {}", cfg.strategies.display()))?;
    // Refused before the model is built or any event is appended.
    keel_runtime::subject::check(s, subject).map_err(|e| anyhow::anyhow!("--subject: {e}"))?;
    let model = s.provider()?;
    let exec = env.agent.start_about(s, tenant, subject, goal).await?;
    eprintln!("started execution {exec} ({})", s.version);
    let state = env.agent.drive(s, &*model, exec).await?;
    let events = env.log.read(exec, 1).await?;
    let answer = events.iter().rev().find_map(|e| match &e.payload {
        Payload::ExecFinished(f) => f.detail.clone(),
        _ => None,
    });
    let trace = state.trace_id.map(|t| t.to_string()).unwrap_or_default();
    if json {
        let v = serde_json::json!({
            "exec_id": exec.to_string(),
            "trace_id": trace,
            "outcome": outcome_word(&state),
            "steps": state.totals.steps,
            "tokens": state.totals.tokens.input + state.totals.tokens.output,
            "cost_usd_micros": state.totals.cost.micros(),
            "answer": answer,
        });
        println!("{v}");
    } else {
        println!("exec_id   {exec}");
        println!("trace_id  {trace}");
        println!("outcome   {}", outcome_word(&state));
        println!(
            "steps {}  tokens {}  cost {}",
            state.totals.steps,
            state.totals.tokens.input + state.totals.tokens.output,
            dollars(state.totals.cost)
        );
        if let Some(a) = answer {
            println!("answer    {a}");
        }
    }
    Ok(())
}

/// `keel worker`: resume and run every unfinished execution.
pub async fn worker(
    data: &Path,
    cfg: &ConfigArgs,
    once: bool,
    concurrency: usize,
    pace_ms: u64,
) -> anyhow::Result<()> {
    let mut env = crate::demo::open(data, &cfg.config())?;
    if let Some(agent) = Arc::get_mut(&mut env.agent) {
        agent.pace = Duration::from_millis(pace_ms);
    }
    loop {
        let drained = keel_runtime::worker::drain(&env.agent, &env.strategies, concurrency).await?;
        for d in &drained {
            match &d.result {
                Ok(state) => eprintln!("{}: {}", d.exec_id, outcome_word(state)),
                Err(e) => eprintln!("{}: not run: {e}", d.exec_id),
            }
        }
        if once {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn summary(e: &Event) -> (String, String, String, String) {
    let (mut tokens, mut cost, mut ms) = (String::new(), String::new(), String::new());
    match &e.payload {
        Payload::ModelResponded(r) => {
            tokens = format!("{}/{}", r.tokens.input, r.tokens.output);
            cost = dollars(r.cost);
            ms = r.latency_ms.to_string();
        }
        Payload::ToolResult(r) => {
            cost = dollars(r.actual_cost);
            ms = r.latency_ms.to_string();
        }
        Payload::ExecFinished(f) => {
            tokens = format!("{}/{}", f.tokens.input, f.tokens.output);
            cost = dollars(f.cost);
        }
        _ => {}
    }
    (describe(&e.payload), tokens, cost, ms)
}

async fn find_by_trace(log: &SqliteLog, trace: TraceId) -> anyhow::Result<Option<ExecId>> {
    // The projection (indexed by trace_id, brought up to date first), not a scan of the log.
    crate::observe::exec_by_trace(log, trace).await
}

/// `keel trace`: an execution's steps as a table.
pub async fn trace(data: &Path, id: &str) -> anyhow::Result<()> {
    let path = data.join("spine.db");
    if !path.exists() {
        bail!("no Keel store at {} (is --data right?)", path.display());
    }
    let log = SqliteLog::open(&path, SqliteOptions::default())?;
    // 32 hex digits without hyphens is a trace id (it would also parse as a UUID).
    let exec = if let Ok(exec) = id
        .parse::<ExecId>()
        .map_err(drop)
        .and_then(|e| if id.contains('-') { Ok(e) } else { Err(()) })
    {
        exec
    } else if let Ok(trace) = id.parse::<TraceId>() {
        find_by_trace(&log, trace)
            .await?
            .with_context(|| format!("no execution with trace id {trace}"))?
    } else {
        bail!("{id:?} is neither an execution id (UUID) nor a trace id (32 hex digits)");
    };
    let events = log.read(exec, 1).await?;
    if events.is_empty() {
        bail!("no execution {exec} in {}", path.display());
    }
    println!(
        "execution {exec}  trace {}  tenant {}",
        events[0].trace_id, events[0].tenant
    );
    println!(
        "{:>4} {:>4}  {:<16} {:>10} {:>10} {:>6}  detail",
        "seq", "step", "event", "tokens", "cost", "ms"
    );
    for e in &events {
        let (text, tokens, cost, ms) = summary(e);
        let text: String = text.chars().take(110).collect();
        println!(
            "{:>4} {:>4}  {:<16} {:>10} {:>10} {:>6}  {text}",
            e.seq,
            e.step_n,
            e.event_type().as_str(),
            tokens,
            cost,
            ms
        );
    }
    Ok(())
}

/// `keel kill …`.
#[derive(Subcommand)]
pub enum KillCmd {
    /// Turn a kill-switch on: running executions stop at their next step; a killed tool refuses.
    Set {
        /// tenant, strategy (or agent), or tool.
        scope: String,
        /// The tenant, strategy name or tool name.
        name: String,
        /// Why (recorded on the executions it stops).
        #[arg(long, default_value = "killed by an operator")]
        reason: String,
        /// Only in this tenant (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Turn a kill-switch off.
    Clear {
        /// tenant, strategy (or agent), or tool.
        scope: String,
        /// The tenant, strategy name or tool name.
        name: String,
        /// The tenant the switch was set in (default: the every-tenant switch).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List the switches that are on.
    List,
}

fn scope(s: &str) -> anyhow::Result<Scope> {
    Scope::parse(s).with_context(|| format!("scope {s:?} is not one of tenant, strategy, tool"))
}

/// Opens the control stream of the store at `data`.
pub fn control(data: &Path) -> anyhow::Result<Control> {
    let log = SqliteLog::open(data.join("spine.db"), SqliteOptions::default())?;
    Ok(Control::new(Arc::new(log), Arc::new(SystemClock)))
}

/// Who a command-line change is recorded as.
pub fn operator() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "operator".into())
    )
}

/// Runs a kill-switch command.
pub async fn kill(data: &Path, cmd: KillCmd) -> anyhow::Result<()> {
    let control = control(data)?;
    match cmd {
        KillCmd::Set {
            scope: s,
            name,
            reason,
            tenant,
        } => {
            control
                .kill(scope(&s)?, &name, tenant.as_deref(), &reason, &operator())
                .await?;
            eprintln!("kill-switch on: {s} {name}");
        }
        KillCmd::Clear {
            scope: s,
            name,
            tenant,
        } => {
            if !control
                .clear(scope(&s)?, &name, tenant.as_deref(), &operator())
                .await?
            {
                bail!("no kill-switch {s} {name} is on");
            }
            eprintln!("kill-switch off: {s} {name}");
        }
        KillCmd::List => {
            for sw in control.switches().await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    sw.key.scope,
                    sw.key.name,
                    sw.key.tenant.as_deref().unwrap_or("*"),
                    sw.info.at,
                    sw.info.by,
                    sw.info.reason
                );
            }
        }
    }
    Ok(())
}
