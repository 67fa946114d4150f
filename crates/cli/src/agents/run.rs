//! `keel run`: one execution, start to end, on the embedded default.

use super::{ConfigArgs, dollars, outcome_word};
use clap::Args;
use keel_core::payload::Payload;
use std::path::Path;

/// `keel run` arguments.
#[derive(Args)]
pub struct RunArgs {
    /// Strategy name (see strategies/*.yaml). Without one, a registered experiment assigns the
    /// execution an arm (recorded on its `exec.started`), else the default strategy runs.
    #[arg(long)]
    pub strategy: Option<String>,
    /// Tenant the execution belongs to.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// The data subject (customer) the execution is about: its personal data is sealed under
    /// the subject's key (`keel memory erase` / `subject-access` reach it) and it retrieves
    /// only that subject's episodic memory.
    #[arg(long)]
    pub subject: Option<String>,
    /// What the agent is asked to do.
    pub goal: String,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `keel run`: one execution, start to end.
pub async fn run(data: &Path, args: &RunArgs) -> anyhow::Result<()> {
    let cfg = &args.config;
    // The run drives under a lease taken before its first append, so no worker on the same
    // store claims it meanwhile; it is given up when the run returns (at a gate, say).
    let config = cfg.config();
    let mut backends = crate::config::current()
        .backends(data, &config.strategies)
        .await?;
    let lease = super::worker::lease(&mut backends, 1);
    let env = crate::demo::open_wired(data, &config, backends)?;
    let beat = super::worker::heartbeat(&lease, "keel run");
    let result = run_leased(data, args, &env).await;
    beat.abort();
    super::worker::release(&lease, "keel run").await;
    result
}

async fn run_leased(
    data: &Path,
    args: &RunArgs,
    env: &keel_runtime::embedded::Embedded,
) -> anyhow::Result<()> {
    let RunArgs {
        strategy,
        tenant,
        subject,
        goal,
        json,
        config: cfg,
    } = args;
    let subject = subject.as_deref();
    if let Some(name) = strategy {
        super::strategy(&env.strategies, name, &cfg.strategies)?;
    }
    // The id first: it is the unit of per-execution experiments.
    let exec = keel_spine::clock::new_exec_id();
    let id = exec.to_string();
    let units = keel_core::experiment::registry::Units {
        exec_id: &id,
        subject,
        tenant,
    };
    let chosen = keel_runtime::experiment::choose(
        &env.agent.control,
        &env.strategies,
        strategy.as_deref(),
        &units,
        env.agent.clock.now(),
    )
    .await?;
    let s = &chosen;
    // Refused before the model is built or any event is appended.
    keel_runtime::subject::check(s, subject).map_err(|e| anyhow::anyhow!("--subject: {e}"))?;
    let model = s.provider()?;
    // The tenant's monthly budget (its alarm, its hard stop), only if it has one.
    if env
        .agent
        .control
        .state()
        .await?
        .budgets
        .contains_key(tenant)
    {
        crate::budgets::guard(data, &*env.log, tenant).await?;
    }
    let exec = env
        .agent
        .start_about_as(exec, s, tenant, subject, goal)
        .await?;
    match &s.assignment {
        Some(a) => eprintln!(
            "started execution {exec} ({}; experiment {} arm {}, bucket {})",
            s.version, a.experiment, a.arm, a.bucket
        ),
        None => eprintln!("started execution {exec} ({})", s.version),
    }
    let state = env.agent.drive(s, &*model, exec).await?;
    let events = env.log.read(exec, 1).await?;
    let answer = events.iter().rev().find_map(|e| match &e.payload {
        Payload::ExecFinished(f) => f.detail.clone(),
        _ => None,
    });
    let trace = state.trace_id.map(|t| t.to_string()).unwrap_or_default();
    if *json {
        let v = serde_json::json!({
            "exec_id": exec.to_string(),
            "trace_id": trace,
            "outcome": outcome_word(&state),
            "steps": state.totals.steps,
            "tokens": state.totals.tokens.input + state.totals.tokens.output,
            "cost_usd_micros": state.totals.cost.micros(),
            "answer": answer,
            "strategy_version": s.version,
            "experiment": s.assignment,
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
        crate::out::next(&super::next_steps(exec, &state));
    }
    Ok(())
}
