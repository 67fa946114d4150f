//! `keel worker`: resume and run every unfinished execution of the store.

use super::{ConfigArgs, outcome_word};
use clap::Args;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// `keel worker` arguments.
#[derive(Args)]
pub struct WorkerArgs {
    /// Exit once nothing is left to run (otherwise keep polling for new executions).
    #[arg(long)]
    pub once: bool,
    /// Executions driven at a time (default: `workers.concurrency` of keel.toml, else 8).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Pause before every model call, in milliseconds (paces demos and crash drills).
    #[arg(long, default_value_t = 0)]
    pub pace_ms: u64,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `keel worker`: resume and run every unfinished execution.
pub async fn worker(data: &Path, args: &WorkerArgs) -> anyhow::Result<()> {
    let mut env = crate::demo::open(data, &args.config.config())?;
    if let Some(agent) = Arc::get_mut(&mut env.agent) {
        agent.pace = Duration::from_millis(args.pace_ms);
    }
    // A worker that keeps running also sends the project's gate notifications (on a task of its
    // own: a slow receiver never holds a step).
    if !args.once {
        crate::serve::notify::spawn(data, &args.config, &env, None, "keel worker")?;
    }
    let concurrency = args
        .concurrency
        .unwrap_or(crate::config::current().workers_concurrency);
    loop {
        let drained = keel_runtime::worker::drain(&env.agent, &env.strategies, concurrency).await?;
        for d in &drained {
            match &d.result {
                Ok(state) => eprintln!("{}: {}", d.exec_id, outcome_word(state)),
                Err(e) => eprintln!("{}: not run: {e}", d.exec_id),
            }
        }
        if args.once {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
