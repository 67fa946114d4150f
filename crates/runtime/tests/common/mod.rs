//! Set-up shared by the runtime's integration tests: a store in a temp dir wired like the
//! embedded default, with the demo's tools, shop and strategies.

#![allow(clippy::unwrap_used, dead_code)]

use keel_core::payload::{Outcome, Payload, ToolStatus};
use keel_core::{Event, ExecId, ExecStatus, ExecutionState};
use keel_runtime::embedded::{Config, Embedded};
use keel_spine::EventLog;
use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A store in a temp dir, with the demo strategies plus `extra` (name, YAML with `{repo}`).
pub fn setup(extra: &[(&str, &str)]) -> (tempfile::TempDir, Embedded) {
    let tmp = tempfile::tempdir().unwrap();
    let strategies = tmp.path().join("strategies");
    std::fs::create_dir_all(&strategies).unwrap();
    let repo = repo();
    for name in ["support-short", "support-long"] {
        let text = std::fs::read_to_string(repo.join(format!("strategies/{name}.yaml"))).unwrap();
        let text = text.replace("../", &format!("{}/", repo.display()));
        std::fs::write(strategies.join(format!("{name}.yaml")), text).unwrap();
    }
    for (name, text) in extra {
        let text = text.replace("{repo}", &repo.display().to_string());
        std::fs::write(strategies.join(format!("{name}.yaml")), text).unwrap();
    }
    let config = Config {
        tools: repo.join("tools"),
        strategies,
        prices: repo.join("prices.toml"),
    };
    let env = Embedded::open(&tmp.path().join("data"), &config).unwrap();
    (tmp, env)
}

pub async fn run(
    env: &Embedded,
    strategy: &str,
    goal: &str,
) -> (ExecId, ExecutionState, Vec<Event>) {
    let s = env.strategies.get(strategy).unwrap();
    let model = s.provider().unwrap();
    let exec = env.agent.start(s, "acme", goal).await.unwrap();
    let state = env.agent.drive(s, &*model, exec).await.unwrap();
    let events = env.log.read(exec, 1).await.unwrap();
    assert_eq!(
        ExecutionState::fold(&events).unwrap(),
        state,
        "the state is the fold of the log"
    );
    (exec, state, events)
}

pub fn types(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.event_type().as_str()).collect()
}

pub fn outcome(state: &ExecutionState) -> Option<Outcome> {
    match state.status {
        ExecStatus::Finished { outcome } => Some(outcome),
        ExecStatus::Failed => Some(Outcome::Error),
        _ => None,
    }
}

pub fn tool_statuses(events: &[Event]) -> Vec<(String, ToolStatus)> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::ToolResult(r) => Some((r.tool.clone(), r.status)),
            _ => None,
        })
        .collect()
}

pub fn finished_detail(events: &[Event]) -> String {
    match &events.last().unwrap().payload {
        Payload::ExecFinished(f) => f.detail.clone().unwrap_or_default(),
        p => panic!("last event is {p:?}"),
    }
}
