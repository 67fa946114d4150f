//! The runtime, wired in one place: contracts from a tools folder, strategies from a strategies
//! folder, prices from `prices.toml`, the builtin functions the caller registers (none by
//! default: the demo's wiring registers its shop's, `keel_tools::shop`), and the [`Backends`] the
//! caller built from its configuration — the spine with its idempotency ledger and rate budgets
//! (by default `DIR/spine.db`; or a PostgreSQL database), blobs and governed memory (by default
//! `DIR/blobs` and `DIR/memory.db`). The control stream, gates, subject keys and cost budgets
//! come with the spine's events.

use crate::agent::Agent;
use crate::control::Control;
use crate::error::RuntimeError;
use crate::gates::Approvals;
use crate::strategy::StrategySet;
use async_trait::async_trait;
use futures::stream::BoxStream;
use keel_core::payload::Payload;
use keel_core::secrets::Secrets;
use keel_core::{Event, ExecId};
use keel_models::PriceTable;
use keel_spine::clock::SystemClock;
use keel_spine::side::{Appended, SideWrite};
use keel_spine::{AppendAck, BlobStore, Committed, EventLog, ExecSummary, SpineError};
use keel_spine::{LocalBlobStore, SpineStore, SqliteLog, SqliteOptions};
use keel_tools::adapter::builtin::Builtins;
use keel_tools::contract::SideEffect;
use keel_tools::{Ledger, RateStore, Registry, SqliteLedger, SqliteRates, ToolRunner, Wiring};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the configuration lives.
#[derive(Clone, Debug)]
pub struct Config {
    /// Tool contracts (`tools/*.yaml`).
    pub tools: PathBuf,
    /// Strategies (`strategies/*.yaml`).
    pub strategies: PathBuf,
    /// The price table.
    pub prices: PathBuf,
}

/// The spine and the stores that must live beside it (in the same database, so every promise
/// holds across the processes sharing it).
#[derive(Clone)]
pub struct Spine {
    /// The event log.
    pub store: Arc<dyn SpineStore>,
    /// The tools' idempotency ledger.
    pub ledger: Arc<dyn Ledger>,
    /// The tools' shared rate budgets.
    pub rates: Arc<dyn RateStore>,
}

impl Spine {
    /// The embedded spine: `DIR/spine.db`, with its ledger and rates in the same file.
    pub fn embedded(data: &Path) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(data).map_err(|e| RuntimeError::Strategy {
            file: data.display().to_string(),
            detail: format!("creating the data directory: {e}"),
        })?;
        let path = data.join("spine.db");
        Ok(Self {
            store: Arc::new(SqliteLog::open(&path, SqliteOptions::default())?),
            ledger: Arc::new(SqliteLedger::open(&path)?),
            rates: Arc::new(SqliteRates::open(&path)?),
        })
    }
}

/// The backends a runtime is wired with, built by the caller from its configuration (the CLI's
/// `keel.toml`, read once at the edge): the runtime never chooses, opens or configures one.
#[derive(Clone)]
pub struct Backends {
    /// The spine, ledger and rate budgets.
    pub spine: Spine,
    /// The view of the spine the agent loop and the tools append through, when it is not the
    /// spine itself (a worker's leased view, which fences its appends); `None`: the spine.
    pub drive: Option<Arc<dyn EventLog>>,
    /// Where tool outputs and recorded replies live (a directory, an S3 bucket).
    pub blobs: Arc<dyn BlobStore>,
    /// Governed memory (store and embedder), if any strategy retrieves or distils; `None`
    /// otherwise, and then a strategy with memory runs without it.
    pub memory: Option<Arc<keel_memory::Memory>>,
    /// Where the secrets that strategies and contracts name come from (model API keys, tool
    /// headers, OAuth clients): the `keel` binary answers from the environment.
    pub secrets: Secrets,
}

impl Backends {
    /// The embedded default under `data`: blobs in `DIR/blobs`, and `DIR/memory.db` with the
    /// local MiniLM from `minilm_dir` if a strategy of `strategies` uses memory (an error if
    /// one does and no directory is given); no secrets.
    pub fn embedded(
        data: &Path,
        strategies: &StrategySet,
        minilm_dir: Option<&Path>,
    ) -> Result<Self, RuntimeError> {
        Ok(Self {
            spine: Spine::embedded(data)?,
            drive: None,
            blobs: Arc::new(LocalBlobStore::new(data.join("blobs"))),
            memory: crate::recall::open_for(data, strategies, minilm_dir)?,
            secrets: keel_core::secrets::none(),
        })
    }
}

/// A wired embedded runtime.
pub struct Embedded {
    /// The agent loop (set `pace` before sharing it).
    pub agent: Arc<Agent>,
    /// The spine (the agent appends through it, or through the view `Backends::drive` gave).
    pub log: Arc<dyn SpineStore>,
    /// The local data directory (snapshots, local state beside a shared spine).
    pub data: PathBuf,
    /// The strategies.
    pub strategies: StrategySet,
    /// Gates: the queue, decisions, SLAs, demotion.
    pub approvals: Arc<Approvals>,
}

impl Embedded {
    /// Opens everything under `data` with `config`, with no builtin functions.
    pub fn open(data: &Path, config: &Config) -> Result<Self, RuntimeError> {
        Self::open_with(data, config, |_| {})
    }

    /// Like [`Embedded::open`], with the builtin functions `register` adds (the contracts'
    /// `adapter: {kind: builtin}` entries must name one of them). No secrets and no embedder: a
    /// strategy with memory needs [`Embedded::open_wired`] on [`Backends::embedded`] with the
    /// MiniLM directory.
    pub fn open_with(
        data: &Path,
        config: &Config,
        register: impl FnOnce(&mut Builtins),
    ) -> Result<Self, RuntimeError> {
        let strategies = StrategySet::load_dir(&config.strategies)?;
        let backends = Backends::embedded(data, &strategies, None)?;
        Self::open_wired(data, config, backends, register)
    }

    /// Like [`Embedded::open_with`], on the `backends` the caller built.
    pub fn open_wired(
        data: &Path,
        config: &Config,
        backends: Backends,
        register: impl FnOnce(&mut Builtins),
    ) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(data).map_err(|e| RuntimeError::Strategy {
            file: data.display().to_string(),
            detail: format!("creating the data directory: {e}"),
        })?;
        let strategies = StrategySet::load_dir(&config.strategies)?.with_secrets(&backends.secrets);
        let prices = PriceTable::load(&config.prices)?;
        let mut builtins = Builtins::default();
        register(&mut builtins);
        let registry = Registry::load_dir(&config.tools, Some(&builtins.names()))?;
        let log = backends.spine.store.clone();
        let drive: Arc<dyn EventLog> = match backends.drive {
            Some(view) => view,
            None => log.clone(),
        };
        // Small blobs ride in the step's commit on a SQLite spine (S3 and PostgreSQL: as given).
        let blobs = keel_spine::sqlite::inline_small_blobs(drive.side_store(), backends.blobs);
        let read_only = registry
            .iter()
            .filter(|c| c.side_effect == SideEffect::ReadOnly)
            .map(|c| c.name.clone())
            .collect();
        let runner = ToolRunner::new(
            registry,
            Wiring {
                log: Arc::new(EffectBarrier {
                    log: drive.clone(),
                    read_only,
                }),
                blobs: blobs.clone(),
                ledger: backends.spine.ledger,
                rates: backends.spine.rates,
                clock: Arc::new(SystemClock),
                builtins,
                secrets: backends.secrets.clone(),
            },
        )?;
        let shared = drive;
        let control = Arc::new(Control::new(shared.clone(), Arc::new(SystemClock)));
        let approvals = Arc::new(Approvals::new(
            shared.clone(),
            Arc::new(SystemClock),
            control.clone(),
            strategies.clone(),
        ));
        let agent = Agent {
            log: shared,
            blobs,
            tools: Arc::new(runner),
            prices,
            control,
            clock: Arc::new(SystemClock),
            pace: std::time::Duration::ZERO,
            memory: backends.memory,
        };
        Ok(Self {
            agent: Arc::new(agent),
            log,
            data: data.to_owned(),
            strategies,
            approvals,
        })
    }
}

/// The spine as the tool layer sees it: the events of read-only tools ride on the next durable
/// commit (losing them in a machine crash costs a re-run, nothing else), while every other
/// tool's events, its `tool.called` intent first, are durable before the adapter runs.
struct EffectBarrier {
    log: Arc<dyn EventLog>,
    read_only: HashSet<String>,
}

impl EffectBarrier {
    fn harmless(&self, events: &[Event]) -> bool {
        events.iter().all(|e| match &e.payload {
            Payload::ToolCalled(c) => self.read_only.contains(&c.tool),
            Payload::ToolResult(r) => self.read_only.contains(&r.tool),
            _ => false,
        })
    }
}

#[async_trait]
impl EventLog for EffectBarrier {
    async fn append(
        &self,
        exec: ExecId,
        expected: u64,
        events: &[Event],
    ) -> Result<AppendAck, SpineError> {
        if self.harmless(events) {
            self.log.append_buffered(exec, expected, events).await
        } else {
            self.log.append(exec, expected, events).await
        }
    }

    async fn append_buffered(
        &self,
        exec: ExecId,
        expected: u64,
        events: &[Event],
    ) -> Result<AppendAck, SpineError> {
        self.log.append_buffered(exec, expected, events).await
    }

    async fn read(&self, exec: ExecId, from_seq: u64) -> Result<Vec<Event>, SpineError> {
        self.log.read(exec, from_seq).await
    }

    async fn read_many(&self, execs: &[ExecId]) -> Result<Vec<Vec<Event>>, SpineError> {
        self.log.read_many(execs).await
    }

    async fn read_all(&self, from: u64, limit: usize) -> Result<Vec<Committed>, SpineError> {
        self.log.read_all(from, limit).await
    }

    fn subscribe(&self, from: u64) -> BoxStream<'static, Result<Committed, SpineError>> {
        self.log.subscribe(from)
    }

    async fn list_unfinished(&self) -> Result<Vec<ExecSummary>, SpineError> {
        self.log.list_unfinished().await
    }

    fn side_store(&self) -> Option<&Path> {
        self.log.side_store()
    }

    /// Side writes are the ledger's and the rates' (durable per their own rules), so this
    /// passes through.
    async fn append_with(
        &self,
        exec: ExecId,
        expected: u64,
        events: &[Event],
        side: Vec<SideWrite>,
        durable: bool,
    ) -> Result<Appended, SpineError> {
        let durable = durable && !self.harmless(events);
        self.log
            .append_with(exec, expected, events, side, durable)
            .await
    }
}
