//! Builds the backends the configuration names — the spine with its ledger and rate budgets,
//! blobs, governed memory (store and embedder) — for the runtime, which receives them built.
//! Credentials are read here, from the variables the configuration names, and handed over as
//! values.

use super::{BlobsChoice, Config, EmbedderChoice, MemoryChoice, env, redact};
use anyhow::{Context, anyhow};
use keel_memory::{Embedder, Memory, MemoryPolicy, SqliteMemory};
use keel_runtime::embedded::{Backends, Spine};
use keel_spine::{BlobStore, LocalBlobStore, S3BlobStore, S3Options, SpineStore};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// `what`, or an error once [`REMOTE_TIMEOUT`] has passed.
async fn within<T>(what: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(REMOTE_TIMEOUT, what)
        .await
        .map_err(|_| anyhow!("timed out after {}s", REMOTE_TIMEOUT.as_secs()))
}

/// The process's PostgreSQL spine, opened once: every command of a process shares one handle
/// (one writer, so its appenders share commits; one listening connection).
static SHARED_SPINE: tokio::sync::OnceCell<Spine> = tokio::sync::OnceCell::const_new();

/// The process's gate-notification deliveries in a PostgreSQL spine's database, connected once.
static SHARED_DELIVERIES: tokio::sync::OnceCell<keel_runtime::notify::Deliveries> =
    tokio::sync::OnceCell::const_new();

/// How long a request to a remote store may take before it is an error.
const REMOTE_TIMEOUT: Duration = Duration::from_secs(10);

impl Config {
    /// The S3 options of an `s3://` blobs setting, with the credentials read from their
    /// variables; `None` for a directory.
    pub fn s3_options(&self) -> anyhow::Result<Option<S3Options>> {
        let BlobsChoice::S3 {
            bucket,
            prefix,
            endpoint,
            region,
            access_key_id_env,
            secret_access_key_env,
            session_token_env,
        } = &self.blobs
        else {
            return Ok(None);
        };
        let need = |key: &str, var: &str| {
            env(var).ok_or_else(|| {
                anyhow!(
                    "{}: the variable {var} is not set (it must hold the credential)",
                    self.at(key)
                )
            })
        };
        Ok(Some(S3Options {
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            endpoint: endpoint.clone(),
            region: region.clone(),
            access_key_id: need("blobs.access_key_id_env", access_key_id_env)?,
            secret_access_key: need("blobs.secret_access_key_env", secret_access_key_env)?,
            session_token: match session_token_env {
                Some(v) => Some(need("blobs.session_token_env", v)?),
                None => None,
            },
            timeout: REMOTE_TIMEOUT,
        }))
    }

    /// The blob store of the store under `data`.
    pub fn blob_store(&self, data: &Path) -> anyhow::Result<Arc<dyn BlobStore>> {
        if let Some(options) = self.s3_options()? {
            let store = S3BlobStore::new(&options).with_context(|| self.at("blobs.url"))?;
            return Ok(Arc::new(store));
        }
        Ok(match &self.blobs {
            BlobsChoice::File(Some(dir)) => Arc::new(LocalBlobStore::new(dir)),
            _ => Arc::new(LocalBlobStore::new(data.join("blobs"))),
        })
    }

    /// The embedder.
    pub fn embedder(&self) -> anyhow::Result<Arc<dyn Embedder>> {
        match &self.embedder {
            EmbedderChoice::MiniLm { dir: None } => Err(anyhow!(
                "{}: not set, and all-MiniLM-L6-v2 is not installed where scripts/test-services puts it ({}); a strategy uses memory, which needs it: run scripts/test-services, or set embedder.dir in keel.toml or KEEL_MINILM_DIR",
                self.at("embedder.dir"),
                crate::minilm::looked_in()
            )),
            EmbedderChoice::MiniLm { dir: Some(dir) } => {
                let m = keel_memory::MiniLm::load(dir).with_context(|| {
                    format!("{}: loading {}", self.at("embedder.dir"), dir.display())
                })?;
                Ok(Arc::new(m))
            }
            EmbedderChoice::OpenAi {
                url,
                model,
                api_key_env,
            } => {
                let key = match api_key_env {
                    Some(var) => Some(keel_models::http::Secret::new(env(var).ok_or_else(
                        || {
                            anyhow!(
                                "{}: the variable {var} is not set (it must hold the API key)",
                                self.at("embedder.api_key_env")
                            )
                        },
                    )?)),
                    None => None,
                };
                let e = keel_memory::OpenAiEmbedder::with_key(
                    url,
                    model.clone(),
                    key,
                    keel_models::http::RetryPolicy::default(),
                )
                .with_context(|| format!("{}: {}", self.at("embedder.url"), redact(url)))?;
                Ok(Arc::new(e))
            }
        }
    }

    /// Governed memory for the store under `data`: its store and embedder.
    pub async fn memory(&self, data: &Path) -> anyhow::Result<Memory> {
        let embedder = self.embedder()?;
        let model = embedder.model().clone();
        let store: Arc<dyn keel_memory::MemoryStore> = match &self.memory {
            MemoryChoice::Embedded => Arc::new(
                SqliteMemory::open(data.join("memory.db"), &model)
                    .with_context(|| format!("opening memory in {}", data.display()))?,
            ),
            MemoryChoice::Pgvector { url } => {
                let connect = keel_memory::PgMemory::connect(url, &model);
                let pg = tokio::time::timeout(REMOTE_TIMEOUT, connect)
                    .await
                    .map_err(|_| anyhow!("timed out after {}s", REMOTE_TIMEOUT.as_secs()))
                    .and_then(|r| r.map_err(anyhow::Error::from))
                    .map_err(|e| {
                        anyhow!(
                            "{}: cannot open pgvector memory at {}: {}",
                            self.at("memory.url"),
                            redact(url),
                            super::scrub(&format!("{e:#}"))
                        )
                    })?;
                Arc::new(pg)
            }
        };
        Ok(Memory::new(store, embedder, MemoryPolicy::default())?)
    }

    /// The spine the configuration names, with its idempotency ledger and rate budgets in the
    /// same store: `DIR/spine.db` under `data`, or the PostgreSQL database of `spine.url`
    /// (connected once per process).
    pub async fn spine(&self, data: &Path) -> anyhow::Result<Spine> {
        let Some(url) = &self.spine_postgres else {
            return Ok(Spine::embedded(data)?);
        };
        let spine = SHARED_SPINE
            .get_or_try_init(|| async {
                let fail = |e: anyhow::Error| {
                    anyhow!(
                        "{}: cannot open the PostgreSQL spine at {}: {}",
                        self.at("spine.url"),
                        redact(url),
                        super::scrub(&format!("{e:#}"))
                    )
                };
                // The spine first: its migration creates the ledger's and the rates' tables.
                let log = within(keel_spine::PgEventLog::connect(
                    url,
                    keel_spine::PgOptions::default(),
                ))
                .await
                .and_then(|r| r.map_err(anyhow::Error::from))
                .map_err(fail)?;
                // The ledger and the rates are written by the spine's own writer (and ride in
                // the appends of a runner on it: docs/decisions/125).
                let ledger = keel_tools::pg::PgLedger::on(&log);
                let rates = keel_tools::pg::PgRates::on(&log);
                anyhow::Ok(Spine {
                    store: Arc::new(log),
                    ledger: Arc::new(ledger),
                    rates: Arc::new(rates),
                })
            })
            .await?;
        Ok(spine.clone())
    }

    /// The API tokens and web sessions: in the PostgreSQL spine's database when the spine is
    /// PostgreSQL (shared by every server on it), else `DIR/auth.db`.
    pub fn tokens(&self, data: &Path) -> anyhow::Result<keel_server::auth::Tokens> {
        use keel_server::auth::Tokens;
        match &self.spine_postgres {
            None => Ok(Tokens::open(data)?),
            Some(url) => {
                let store = keel_server::auth_pg::PgTokens::connect(url).map_err(|e| {
                    anyhow!(
                        "{}: cannot open the API tokens at {}: {}",
                        self.at("spine.url"),
                        redact(url),
                        super::scrub(&e.to_string())
                    )
                })?;
                Ok(Tokens::on(Box::new(store)))
            }
        }
    }

    /// Gate notifications' deliveries: in the PostgreSQL spine's database when the spine is
    /// PostgreSQL (shared by every process on it, on any machine, so a gate is notified once),
    /// else `DIR/notify.db`.
    pub async fn deliveries(
        &self,
        data: &Path,
    ) -> anyhow::Result<keel_runtime::notify::Deliveries> {
        use keel_runtime::notify::{Deliveries, PgDeliveries};
        let Some(url) = &self.spine_postgres else {
            return Ok(Deliveries::open(&data.join("notify.db"))?);
        };
        let d = SHARED_DELIVERIES
            .get_or_try_init(|| async {
                let pg = within(PgDeliveries::connect(url))
                    .await
                    .and_then(|r| r.map_err(anyhow::Error::from))
                    .map_err(|e| {
                        anyhow!(
                            "{}: cannot open the gate notifications' deliveries at {}: {}",
                            self.at("spine.url"),
                            redact(url),
                            super::scrub(&format!("{e:#}"))
                        )
                    })?;
                anyhow::Ok(Deliveries::on(Arc::new(pg)))
            })
            .await?;
        Ok(d.clone())
    }

    /// [`Config::spine`]'s event log alone (reading commands), from synchronous code on the
    /// multi-threaded runtime.
    pub fn spine_log(&self, data: &Path) -> anyhow::Result<Arc<dyn SpineStore>> {
        if self.spine_postgres.is_none() {
            let path = data.join(crate::store::SPINE_FILE);
            let log = keel_spine::SqliteLog::open(&path, keel_spine::SqliteOptions::default())?;
            return Ok(Arc::new(log));
        }
        let handle = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| handle.block_on(self.spine(data))).map(|s| s.store)
    }

    /// The backends of the store under `data` for a runtime whose strategies are in
    /// `strategies`: memory is built only if one of them retrieves or distils (so a deployment
    /// without memory never loads a model or reaches a memory database).
    pub async fn backends(&self, data: &Path, strategies: &Path) -> anyhow::Result<Backends> {
        let wanted = keel_runtime::StrategySet::load_dir(strategies)
            .map(|s| keel_runtime::recall::wanted(&s))
            // Strategies that do not load are reported by the runtime, with file and line.
            .unwrap_or(false);
        let memory = if wanted {
            Some(Arc::new(self.memory(data).await?))
        } else {
            None
        };
        Ok(Backends {
            spine: self.spine(data).await?,
            drive: None,
            blobs: self.blob_store(data)?,
            memory,
            secrets: super::secrets::process_env(),
        })
    }

    /// [`Config::backends`] from synchronous wiring code running on the multi-threaded runtime
    /// (`crate::demo::open`, called by every command that runs agents).
    pub fn backends_blocking(&self, data: &Path, strategies: &Path) -> anyhow::Result<Backends> {
        let handle = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| handle.block_on(self.backends(data, strategies)))
    }
}
