//! Set-up shared by the runtime's integration tests: a store in a temp dir wired like the
//! embedded default, with the demo's tools, shop and strategies.

#![allow(clippy::unwrap_used, dead_code)]

use keel_core::payload::{Outcome, Payload, ToolStatus};
use keel_core::{Event, ExecId, ExecStatus, ExecutionState};
use keel_runtime::StrategySet;
use keel_runtime::embedded::{Backends, Config, Embedded};
use keel_runtime::replay::Replayer;
use keel_tools::shop::Shop;
use std::path::{Path, PathBuf};

/// The embedded runtime wired as the demo wires it: with the shop (`data/shop.db`) and its
/// builtins, which the demo's tools call.
pub struct Env {
    pub embedded: Embedded,
    /// The shop the tools act on, to count side effects.
    pub shop: Shop,
}

impl std::ops::Deref for Env {
    type Target = Embedded;
    fn deref(&self) -> &Embedded {
        &self.embedded
    }
}

impl std::ops::DerefMut for Env {
    fn deref_mut(&mut self) -> &mut Embedded {
        &mut self.embedded
    }
}

/// Opens the store under `data` with `config` and the demo shop's builtins (and the embedded
/// memory, if a strategy uses it).
pub fn open(data: &Path, config: &Config) -> Env {
    std::fs::create_dir_all(data).unwrap();
    let shop = Shop::open(data.join("shop.db")).unwrap();
    let strategies = StrategySet::load_dir(&config.strategies).unwrap();
    let backends = Backends::embedded(data, &strategies, minilm_dir().as_deref()).unwrap();
    let embedded = Embedded::open_wired(data, config, backends, |b| *b = shop.builtins()).unwrap();
    Env { embedded, shop }
}

/// A replayer of the store under `data`, whose live read-only tools call the demo shop.
pub fn replayer(data: &Path, config: &Config) -> Replayer {
    let shop = Shop::open(data.join("shop.db")).unwrap();
    let replayer = Replayer::open_with(data, config, |b| *b = shop.builtins()).unwrap();
    match minilm_dir() {
        Some(dir) => replayer.with_embedded_memory(dir),
        None => replayer,
    }
}

/// all-MiniLM-L6-v2's directory: the test process is its own edge (scripts/test-services
/// prints `KEEL_MINILM_DIR`).
pub fn minilm_dir() -> Option<PathBuf> {
    std::env::var_os("KEEL_MINILM_DIR").map(PathBuf::from)
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A store in a temp dir, with the demo strategies plus `extra` (name, YAML with `{repo}`).
pub fn setup(extra: &[(&str, &str)]) -> (tempfile::TempDir, Env) {
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
    let env = open(&tmp.path().join("data"), &config);
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

/// The answer `exec.finished` carries (empty if none).
pub fn answer(events: &[Event]) -> String {
    events
        .iter()
        .find_map(|e| match &e.payload {
            Payload::ExecFinished(f) => f.detail.clone(),
            _ => None,
        })
        .unwrap_or_default()
}
