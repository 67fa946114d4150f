//! Experiments on the spine: reading `experiments/*.yaml`, registering, stopping and concluding
//! (events on the control stream, see [`keel_core::experiment`]), and choosing the strategy of a
//! new execution that names none: the arm an experiment assigns its unit to, recorded on its
//! `exec.started`, or the default strategy when no experiment takes it.

use crate::control::Control;
use crate::error::RuntimeError;
use crate::strategy::{Strategy, StrategySet};
use chrono::{DateTime, Utc};
use keel_core::experiment::registry::{Registered, Registration, Units};
use keel_core::experiment::{
    Experiment, ExperimentConcluded, ExperimentFile, ExperimentRegistered, ExperimentStopped,
    Guardrail, GuardrailBreached, OnBreach,
};
use keel_core::payload::{Payload, StrategyDemoted};
use std::path::{Path, PathBuf};

fn problem(file: &str, detail: impl Into<String>) -> RuntimeError {
    RuntimeError::Experiment(format!("{file}: {}", detail.into()))
}

/// Parses one experiment file's text; every problem is reported, one a line, as
/// `<file>: <field>: <what is wrong>`.
pub fn parse(text: &str, file: &str) -> Result<Experiment, RuntimeError> {
    let f: ExperimentFile =
        serde_saphyr::from_str(text).map_err(|e| problem(file, e.to_string()))?;
    Experiment::parse(f).map_err(|ps| {
        RuntimeError::Experiment(
            ps.iter()
                .map(|p| format!("{file}: {p}"))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })
}

/// Reads one experiment file, or every `*.yaml` of a folder (sorted by name).
pub fn load(path: &Path) -> Result<Vec<Experiment>, RuntimeError> {
    let read = |p: &Path| {
        let file = p.display().to_string();
        let text = std::fs::read_to_string(p).map_err(|e| problem(&file, e.to_string()))?;
        parse(&text, &file)
    };
    if !path.is_dir() {
        return Ok(vec![read(path)?]);
    }
    let entries =
        std::fs::read_dir(path).map_err(|e| problem(&path.display().to_string(), e.to_string()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for p in paths {
        match read(&p) {
            Ok(e) => out.push(e),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        return Err(RuntimeError::Experiment(problems.join("\n")));
    }
    Ok(out)
}

/// Checks that every arm runs a strategy that is loaded.
pub fn check_strategies(e: &Experiment, strategies: &StrategySet) -> Result<(), RuntimeError> {
    let missing: Vec<String> = e
        .arms
        .iter()
        .filter(|a| strategies.get(&a.strategy).is_none())
        .map(|a| {
            format!(
                "arm {} runs strategy {:?}, which is not loaded",
                a.name, a.strategy
            )
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(RuntimeError::Experiment(format!(
        "experiment {}: {}",
        e.name,
        missing.join("; ")
    )))
}

impl Control {
    /// Registers `e` (its arms' strategies must be loaded): appends `experiment.registered`,
    /// freezing it. Registering the same experiment again is a no-op (`Ok(false)`); a change to
    /// a registered experiment is refused, naming the frozen fields that differ.
    pub async fn register_experiment(
        &self,
        e: &Experiment,
        strategies: &StrategySet,
        now: DateTime<Utc>,
        by: &str,
    ) -> Result<bool, RuntimeError> {
        check_strategies(e, strategies)?;
        self.record_if(|state| match state.experiments.register(e, now) {
            Ok(Registration::Unchanged) => Ok(None),
            Ok(Registration::New { from, to }) => {
                Ok(Some(Payload::ExperimentRegistered(ExperimentRegistered {
                    experiment: e.clone(),
                    layer_from: from,
                    layer_to: to,
                    by: by.to_owned(),
                })))
            }
            Err(refused) => Err(RuntimeError::Experiment(refused.to_string())),
        })
        .await
    }

    /// A registered experiment, by name.
    pub async fn experiment(&self, name: &str) -> Result<Option<Registered>, RuntimeError> {
        Ok(self.state().await?.experiments.by_name.get(name).cloned())
    }

    /// Every registered experiment, by name.
    pub async fn experiments(&self) -> Result<Vec<Registered>, RuntimeError> {
        Ok(self
            .state()
            .await?
            .experiments
            .by_name
            .into_values()
            .collect())
    }

    /// Stops an experiment (or, with `arm`, one arm: its units return to the holdback).
    pub async fn stop_experiment(
        &self,
        name: &str,
        arm: Option<&str>,
        reason: &str,
        by: &str,
    ) -> Result<(), RuntimeError> {
        self.record_if(|state| {
            let x = state
                .experiments
                .by_name
                .get(name)
                .ok_or_else(|| RuntimeError::Experiment(format!("no experiment {name:?}")))?;
            if let Some(arm) = arm {
                match x.experiment.arm(arm) {
                    None => {
                        return Err(RuntimeError::Experiment(format!(
                            "experiment {name} has no arm {arm:?}"
                        )));
                    }
                    Some(a) if a.holdback => {
                        return Err(RuntimeError::Experiment(format!(
                            "arm {arm} is experiment {name}'s holdback; stop the experiment instead"
                        )));
                    }
                    Some(_) => {}
                }
            }
            Ok(Some(Payload::ExperimentStopped(ExperimentStopped {
                name: name.to_owned(),
                arm: arm.map(str::to_owned),
                reason: reason.to_owned(),
                by: by.to_owned(),
            })))
        })
        .await
        .map(|_| ())
    }

    /// Records the decision an experiment ended with.
    pub async fn conclude_experiment(
        &self,
        name: &str,
        decision: &str,
        by: &str,
    ) -> Result<(), RuntimeError> {
        self.record_if(|state| {
            if !state.experiments.by_name.contains_key(name) {
                return Err(RuntimeError::Experiment(format!("no experiment {name:?}")));
            }
            Ok(Some(Payload::ExperimentConcluded(ExperimentConcluded {
                name: name.to_owned(),
                decision: decision.to_owned(),
                by: by.to_owned(),
            })))
        })
        .await
        .map(|_| ())
    }
}

/// A breached guardrail to act on: the arm, the guardrail, the arm's value and sample, and the
/// arm's strategy version and effective tier (for a demotion).
pub struct Breach<'a> {
    /// The experiment.
    pub experiment: &'a str,
    /// The arm.
    pub arm: &'a str,
    /// The guardrail.
    pub guardrail: &'a Guardrail,
    /// The arm's value.
    pub value: f64,
    /// Finished executions it was computed over.
    pub sample: u64,
    /// The arm's strategy version.
    pub strategy_version: &'a str,
    /// Its configured maximum autonomous tier.
    pub configured_tier: u8,
    /// Its gate-rejection rate (recorded on a demotion).
    pub rejection_rate: f64,
}

impl Control {
    /// Acts on a breached guardrail, once per (experiment, arm, metric): appends
    /// `experiment.guardrail_breached`, then, as the guardrail says, stops the arm (its units
    /// return to the holdback) or demotes its strategy version one tier. No person is asked.
    /// Returns false when this breach was already recorded.
    pub async fn act_on_breach(&self, b: &Breach<'_>) -> Result<bool, RuntimeError> {
        let key = (b.arm.to_owned(), b.guardrail.metric.as_str());
        let recorded = self
            .record_if(|state| {
                let x = state.experiments.by_name.get(b.experiment).ok_or_else(|| {
                    RuntimeError::Experiment(format!("no experiment {:?}", b.experiment))
                })?;
                if x.breached.contains(&key) {
                    return Ok(None);
                }
                Ok(Some(Payload::GuardrailBreached(GuardrailBreached {
                    name: b.experiment.to_owned(),
                    arm: b.arm.to_owned(),
                    guardrail: b.guardrail.clone(),
                    value: b.value,
                    sample: b.sample,
                })))
            })
            .await?;
        if !recorded {
            return Ok(false);
        }
        let g = b.guardrail;
        let why = format!(
            "guardrail {} {} {} breached: {} over {} executions",
            g.metric.as_str(),
            g.direction.symbol(),
            g.bound,
            b.value,
            b.sample
        );
        match g.on_breach {
            OnBreach::Record => {}
            OnBreach::StopArm => {
                self.stop_experiment(b.experiment, Some(b.arm), &why, "guardrail")
                    .await?;
            }
            OnBreach::Demote => {
                let now = self
                    .state()
                    .await?
                    .max_autonomous_tier(b.strategy_version, b.configured_tier);
                self.demote(StrategyDemoted {
                    strategy_version: b.strategy_version.to_owned(),
                    max_autonomous_tier: now.saturating_sub(1),
                    rejection_rate: b.rejection_rate,
                    sample: u32::try_from(b.sample).unwrap_or(u32::MAX),
                })
                .await?;
            }
        }
        Ok(true)
    }
}

/// The strategy a new execution runs: the one requested by name, else the arm an experiment
/// assigns its unit to (carrying the assignment for `exec.started`), else the default strategy.
/// The execution's id must be chosen first: it is the unit of per-execution experiments.
pub async fn choose(
    control: &Control,
    strategies: &StrategySet,
    requested: Option<&str>,
    units: &Units<'_>,
    now: DateTime<Utc>,
) -> Result<Strategy, RuntimeError> {
    if let Some(name) = requested {
        return strategies
            .get(name)
            .cloned()
            .ok_or_else(|| RuntimeError::UnknownStrategy(name.to_owned()));
    }
    let state = control.state().await?;
    if let Some(picked) = state.experiments.assign(units, now) {
        let mut s = strategies.get(&picked.strategy).cloned().ok_or_else(|| {
            RuntimeError::Experiment(format!(
                "experiment {} assigns arm {}, whose strategy {:?} is not loaded",
                picked.assignment.experiment, picked.assignment.arm, picked.strategy
            ))
        })?;
        s.experiment_arm = Some(picked.assignment.arm.clone());
        s.assignment = Some(picked.assignment);
        return Ok(s);
    }
    strategies
        .default_strategy()
        .cloned()
        .ok_or_else(|| RuntimeError::UnknownStrategy("(no strategies are loaded)".into()))
}
