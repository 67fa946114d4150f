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
    /// Check every running experiment's guardrails (or one's) over every tenant and act on each
    /// new breach as the experiment says: record it, stop the arm, or demote its strategy. Run it
    /// from a scheduler; no person is in the loop.
    Check {
        /// One experiment only.
        name: Option<String>,
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
    // Only registering and acting on guardrails need the strategies; the rest read the store.
    let env = match cmd {
        ExperimentsCmd::Register { .. } | ExperimentsCmd::Check { .. } => {
            Some(crate::demo::open(data, &cfg.config())?)
        }
        _ => None,
    };
    let own;
    let control = match &env {
        Some(env) => &env.agent.control,
        None => {
            own = crate::agents::control(data)?;
            &own
        }
    };
    let now = keel_spine::clock::Clock::now(&keel_spine::clock::SystemClock);
    match cmd {
        ExperimentsCmd::Register { path, by } => {
            let Some(env) = &env else {
                anyhow::bail!("the strategies were not loaded");
            };
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
        ExperimentsCmd::Check { name } => {
            let Some(env) = &env else {
                anyhow::bail!("the strategies were not loaded");
            };
            let acted =
                check_guardrails(data, control, &env.strategies, name.as_deref(), now).await?;
            for line in &acted {
                println!("{line}");
            }
            eprintln!("{} new guardrail breaches acted on", acted.len());
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

/// Checks every running experiment's guardrails (or `name`'s) over every tenant at `now` and
/// acts on each new breach as the experiment says (record, stop the arm, demote). Returns one
/// line per breach acted on (experiment, arm, check, value, action); a breach already recorded
/// is not acted on again, so running this on a timer (`keel serve`) repeats nothing.
pub async fn check_guardrails(
    data: &Path,
    control: &keel_runtime::control::Control,
    strategies: &keel_runtime::strategy::StrategySet,
    name: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Vec<String>> {
    let (_log, projections) = crate::observe::refresh(data).await?;
    let mut acted = Vec::new();
    for x in control.experiments().await? {
        if name.is_some_and(|n| n != x.experiment.name)
            || x.status != keel_core::experiment::registry::Status::Running
        {
            continue;
        }
        let r = keel_observe::readout::readout(&*projections, &x, None, now).await?;
        for a in r.arms.iter().filter(|a| !a.holdback) {
            let Some(s) = strategies.get(&a.strategy) else {
                continue;
            };
            for (g, check) in x.experiment.guardrails.iter().zip(&a.guardrails) {
                let (Some(value), "breach") = (check.value, check.status) else {
                    continue;
                };
                let breach = keel_runtime::experiment::Breach {
                    experiment: &x.experiment.name,
                    arm: &a.arm,
                    guardrail: g,
                    value,
                    sample: a.executions,
                    strategy_version: &s.version,
                    configured_tier: s.max_autonomous_tier,
                    rejection_rate: a.gate_rejection_rate.unwrap_or(0.0),
                };
                if control.act_on_breach(&breach).await? {
                    acted.push(format!(
                        "{}\t{}\t{} {} {}\tvalue {value}\t{}",
                        x.experiment.name,
                        a.arm,
                        check.metric,
                        check.direction,
                        check.bound,
                        g.on_breach.as_str()
                    ));
                }
            }
        }
    }
    Ok(acted)
}

/// Prints `strategy_version`'s gated production record (from `gold.executions` and
/// `traces.steps`: replays and offline runs are not there) before a certification, and refuses
/// to certify a version capped as a new experiment arm that has no production record: offline
/// results never lift the cap.
pub async fn certification_record(
    data: &Path,
    control: &keel_core::control::ControlState,
    strategy_version: &str,
) -> anyhow::Result<()> {
    let (_log, p) = crate::observe::refresh(data).await?;
    let v = strategy_version.replace('\'', "''");
    let scope = keel_observe::sql::Scope::Admin;
    let totals = p
        .query(
            &scope,
            &format!(
                "SELECT COUNT(*), SUM(outcome_success), SUM(gate_escalations), SUM(gate_rejections)
                 FROM gold.executions WHERE strategy_version = '{v}' AND finished_at IS NOT NULL"
            ),
        )
        .await?;
    let verdicts = p
        .query(
            &scope,
            &format!(
                "SELECT s.gate_verdict, COUNT(*) FROM traces.steps AS s
                 JOIN gold.executions AS e USING (exec_id)
                 WHERE e.strategy_version = '{v}' AND s.event_type = 'gate.decided'
                 GROUP BY 1 ORDER BY 1"
            ),
        )
        .await?;
    let n = |i: usize| {
        totals
            .rows
            .first()
            .and_then(|r| r.get(i))
            .and_then(|x| {
                x.as_f64()
                    .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(0.0)
    };
    let (executions, successes, gates, rejections) = (n(0), n(1), n(2), n(3));
    let decided: Vec<String> = verdicts
        .rows
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r.get(1).map(|x| x.to_string()).unwrap_or_default(),
                r.first().and_then(|x| x.as_str()).unwrap_or("undecided")
            )
        })
        .collect();
    eprintln!(
        "production record of {strategy_version}: {executions} finished executions, outcome rate \
         {}, {gates} gates ({}), {rejections} rejected",
        if executions > 0.0 {
            format!("{:.3}", successes / executions)
        } else {
            "—".into()
        },
        if decided.is_empty() {
            "none decided".into()
        } else {
            decided.join(", ")
        }
    );
    if let Some(cap) = control.tier_capped(strategy_version)
        && executions == 0.0
    {
        anyhow::bail!(
            "{strategy_version} is a new experiment arm capped at tier {cap} and has no production \
             record yet (replays and offline evaluations do not count); run it in production first"
        );
    }
    Ok(())
}
