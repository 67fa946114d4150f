//! The embedded default, wired in one place: the spine, ledger and kill-switches in
//! `DIR/spine.db`, blobs in `DIR/blobs`, the demo shop in `DIR/shop.db`, contracts from a tools
//! folder, strategies from a strategies folder, prices from `prices.toml`.

use crate::agent::Agent;
use crate::error::RuntimeError;
use crate::kill::KillSwitches;
use crate::strategy::StrategySet;
use keel_models::PriceTable;
use keel_spine::clock::SystemClock;
use keel_spine::{LocalBlobStore, SqliteLog, SqliteOptions};
use keel_tools::shop::Shop;
use keel_tools::{Registry, ToolRunner};
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

/// A wired embedded runtime.
pub struct Embedded {
    /// The agent loop (set `pace` before sharing it).
    pub agent: Arc<Agent>,
    /// The spine (also inside the agent).
    pub log: SqliteLog,
    /// The demo shop the builtin tools act on.
    pub shop: Shop,
    /// The strategies.
    pub strategies: StrategySet,
}

impl Embedded {
    /// Opens everything under `data` with `config`.
    pub fn open(data: &Path, config: &Config) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(data).map_err(|e| RuntimeError::Strategy {
            file: data.display().to_string(),
            detail: format!("creating the data directory: {e}"),
        })?;
        let strategies = StrategySet::load_dir(&config.strategies)?;
        let prices = PriceTable::load(&config.prices)?;
        let shop = Shop::open(data.join("shop.db"))?;
        let builtins = shop.builtins();
        let registry = Registry::load_dir(&config.tools, Some(&builtins.names()))?;
        let (runner, log) =
            ToolRunner::embedded(data, registry, builtins, SqliteOptions::default())?;
        let kill = KillSwitches::open(&data.join("spine.db"))?;
        let agent = Agent {
            log: Arc::new(log.clone()),
            blobs: Arc::new(LocalBlobStore::new(data.join("blobs"))),
            tools: Arc::new(runner),
            prices,
            kill: Arc::new(kill),
            clock: Arc::new(SystemClock),
            pace: std::time::Duration::ZERO,
        };
        Ok(Self {
            agent: Arc::new(agent),
            log,
            shop,
            strategies,
        })
    }
}
