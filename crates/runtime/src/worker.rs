//! Workers: run every unfinished execution on the spine to its end. On start this is resume:
//! executions a crashed worker left behind are driven on from their last event (in-flight tool
//! calls resolved through the ledger). Executions waiting at a gate are left waiting.

use crate::agent::Agent;
use crate::error::RuntimeError;
use crate::strategy::StrategySet;
use keel_core::control::CONTROL_STREAM;
use keel_core::payload::Payload;
use keel_core::{ExecId, ExecutionState};
use keel_models::ModelProvider;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What happened to one execution in a drain.
#[derive(Debug)]
pub struct Drained {
    /// The execution.
    pub exec_id: ExecId,
    /// Its state after driving, or why it could not be driven.
    pub result: Result<ExecutionState, RuntimeError>,
}

/// Drives every unfinished execution (and any that appear meanwhile) until none is left that
/// can make progress, `concurrency` at a time.
pub async fn drain(
    agent: &Arc<Agent>,
    strategies: &StrategySet,
    concurrency: usize,
) -> Result<Vec<Drained>, RuntimeError> {
    let mut providers: BTreeMap<String, Arc<dyn ModelProvider>> = BTreeMap::new();
    let mut done: BTreeSet<ExecId> = BTreeSet::new();
    let mut out = Vec::new();
    loop {
        let mut batch = Vec::new();
        for summary in agent.log.list_unfinished().await? {
            // The control stream is not an execution.
            if done.contains(&summary.exec_id) || summary.exec_id == CONTROL_STREAM {
                continue;
            }
            done.insert(summary.exec_id);
            let first = agent.log.read(summary.exec_id, 1).await?;
            let version = match first.first().map(|e| &e.payload) {
                Some(Payload::ExecStarted(s)) => s.strategy_version.clone(),
                _ => {
                    out.push(Drained {
                        exec_id: summary.exec_id,
                        result: Err(RuntimeError::UnknownExecution(summary.exec_id.to_string())),
                    });
                    continue;
                }
            };
            let Some(strategy) = strategies.get(&version) else {
                out.push(Drained {
                    exec_id: summary.exec_id,
                    result: Err(RuntimeError::UnknownStrategy(version)),
                });
                continue;
            };
            let provider = match providers.get(&strategy.name) {
                Some(p) => p.clone(),
                None => {
                    let p = strategy.provider()?;
                    providers.insert(strategy.name.clone(), p.clone());
                    p
                }
            };
            batch.push((summary.exec_id, strategy.clone(), provider));
        }
        if batch.is_empty() {
            return Ok(out);
        }
        for chunk in batch.chunks(concurrency.max(1)) {
            let runs = chunk.iter().map(|(exec, strategy, provider)| {
                let agent = agent.clone();
                let (exec, strategy, provider) = (*exec, strategy.clone(), provider.clone());
                tokio::spawn(async move {
                    let result = agent.drive(&strategy, &*provider, exec).await;
                    Drained {
                        exec_id: exec,
                        result,
                    }
                })
            });
            for handle in futures::future::join_all(runs).await {
                match handle {
                    Ok(d) => out.push(d),
                    Err(e) => return Err(RuntimeError::Worker(e.to_string())),
                }
            }
        }
    }
}
