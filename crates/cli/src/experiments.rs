//! `keel experiments …`: register experiments from `experiments/*.yaml` (an event that freezes
//! them), list them, stop or conclude one, and read one out from `gold.executions`.

use crate::agents::{ConfigArgs, operator};
use anyhow::Context;
use clap::Subcommand;
use std::path::{Path, PathBuf};

/// `keel experiments …`.
#[derive(Subcommand)]
pub enum ExperimentsCmd {
    /// Register the experiments of a file or folder (default `experiments/`): each becomes an
    /// `experiment.registered` event, frozen; registering an unchanged one again is a no-op and a
    /// changed one is refused.
    Register {
        /// An experiment file, or a folder of them.
        #[arg(default_value = "experiments")]
        path: PathBuf,
        /// Who (recorded on the event).
        #[arg(long = "as")]
        by: Option<String>,
    },
    /// Registered experiments: status, unit, arms and their strategies and weights.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Stop an experiment (or one arm: its units return to the holdback).
    Stop {
        /// The experiment.
        name: String,
        /// Stop only this arm.
        #[arg(long)]
        arm: Option<String>,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Who.
        #[arg(long = "as")]
        by: Option<String>,
    },
    /// Record the decision an experiment ended with.
    Conclude {
        /// The experiment.
        name: String,
        /// The decision (`ship thorough`, `keep control`).
        #[arg(long)]
        decision: String,
        /// Who.
        #[arg(long = "as")]
        by: Option<String>,
    },
    /// Per arm: executions, success rate, p50/p95 cost, p95 steps, gates per execution, cost per
    /// success with delta-method intervals, guardrails, and a verdict.
    Readout {
        /// The experiment.
        name: String,
        /// One tenant's executions only.
        #[arg(long)]
        tenant: Option<String>,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an experiments command.
pub async fn run(data: &Path, cfg: &ConfigArgs, cmd: ExperimentsCmd) -> anyhow::Result<()> {
    let env = crate::demo::open(data, &cfg.config())?;
    let control = &env.agent.control;
    let now = env.agent.clock.now();
    match cmd {
        ExperimentsCmd::Register { path, by } => {
            let by = by.unwrap_or_else(operator);
            let experiments = keel_runtime::experiment::load(&path)?;
            if experiments.is_empty() {
                anyhow::bail!("{}: no experiment files (*.yaml)", path.display());
            }
            for e in &experiments {
                let new = control
                    .register_experiment(e, &env.strategies, now, &by)
                    .await?;
                eprintln!(
                    "experiment {} {}",
                    e.name,
                    if new {
                        "registered (frozen)"
                    } else {
                        "already registered, unchanged"
                    }
                );
            }
        }
        ExperimentsCmd::List { json } => {
            for x in control.experiments().await? {
                let e = &x.experiment;
                let arms: Vec<serde_json::Value> = e
                    .arms
                    .iter()
                    .map(|a| {
                        serde_json::json!({
                            "arm": a.name, "strategy": a.strategy, "weight": a.weight,
                            "holdback": a.holdback,
                            "stopped": x.stopped_arms.contains(&a.name),
                        })
                    })
                    .collect();
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "name": e.name, "status": x.status_word(now), "unit": e.unit.as_str(),
                            "layer": e.layer, "layer_range": [x.layer_range.0, x.layer_range.1],
                            "primary_metric": e.primary_metric.as_str(),
                            "start": e.start.to_rfc3339(), "end": e.end.to_rfc3339(),
                            "min_sample": e.min_sample, "arms": arms,
                        })
                    );
                } else {
                    let arms: Vec<String> = e
                        .arms
                        .iter()
                        .map(|a| {
                            format!(
                                "{}{}={}:{}",
                                a.name,
                                if a.holdback { "*" } else { "" },
                                a.strategy,
                                a.weight
                            )
                        })
                        .collect();
                    println!(
                        "{}\t{}\tunit {}\t{}\tuntil {}\t{}",
                        e.name,
                        x.status_word(now),
                        e.unit.as_str(),
                        e.primary_metric.as_str(),
                        e.end.to_rfc3339(),
                        arms.join(" ")
                    );
                }
            }
        }
        ExperimentsCmd::Stop {
            name,
            arm,
            reason,
            by,
        } => {
            control
                .stop_experiment(&name, arm.as_deref(), &reason, &by.unwrap_or_else(operator))
                .await?;
            match arm {
                Some(arm) => {
                    eprintln!("experiment {name}: arm {arm} stopped (its units run the holdback)")
                }
                None => eprintln!("experiment {name} stopped"),
            }
        }
        ExperimentsCmd::Conclude { name, decision, by } => {
            control
                .conclude_experiment(&name, &decision, &by.unwrap_or_else(operator))
                .await?;
            eprintln!("experiment {name} concluded: {decision}");
        }
        ExperimentsCmd::Readout { name, tenant, json } => {
            let x = control
                .experiment(&name)
                .await?
                .with_context(|| format!("no experiment {name:?} is registered"))?;
            let (_log, projections) = crate::observe::refresh(data).await?;
            let r =
                keel_observe::readout::readout(&*projections, &x, tenant.as_deref(), now).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", keel_observe::readout::render(&r));
            }
        }
    }
    Ok(())
}
