//! `keel.toml`: the one configuration of a deployment, read once, here, at the edge. It picks
//! every backend — the spine, the projections, governed memory and its embedder, blobs — and the
//! workers' settings; the libraries receive built backends ([`build`]) and never read the
//! environment or a file for them.
//!
//! Where each value comes from, strongest first: a command-line flag (`--data`), a `KEEL_*`
//! environment variable (`KEEL_<SECTION>_<KEY>`, plus the older `KEEL_PROJECTIONS_URL` and
//! `KEEL_MINILM_DIR`), the file (`--config PATH` or `$KEEL_CONFIG`, else `./keel.toml` if there
//! is one), the embedded default. No file and no variable is exactly the embedded default.
//!
//! Every error names the key and where its value came from (the file, with line and column for
//! a malformed one, or the variable), and no message carries a password or key: URLs are shown
//! with their password replaced by `***`, credentials are named by their variable, never shown.

pub mod build;
pub mod check;
mod file;
mod resolve;
pub mod secrets;

use anyhow::{Context, anyhow};
use keel_memory::EmbeddingModel;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The file looked for in the working directory when no `--config` names one.
pub const DEFAULT_FILE: &str = "keel.toml";

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Nothing set it.
    Default,
    /// The configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// A command-line flag (or the variable clap reads for it).
    Flag(&'static str),
}

/// Governed memory's store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryChoice {
    /// `DIR/memory.db`.
    Embedded,
    /// PostgreSQL + pgvector.
    Pgvector {
        /// The database URL.
        url: String,
    },
}

/// The embedder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmbedderChoice {
    /// all-MiniLM-L6-v2 from a directory (none configured: memory cannot open).
    MiniLm {
        /// The model's directory.
        dir: Option<PathBuf>,
    },
    /// An OpenAI-compatible `/v1/embeddings`.
    OpenAi {
        /// The base URL.
        url: String,
        /// Model name, version and dimensions (pinned by the store).
        model: EmbeddingModel,
        /// The variable holding the key, if the server needs one.
        api_key_env: Option<String>,
    },
}

/// Where blobs live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobsChoice {
    /// A directory (`None`: `DIR/blobs` of the store).
    File(Option<PathBuf>),
    /// An S3-compatible bucket.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix.
        prefix: String,
        /// The endpoint (none: AWS's for the region).
        endpoint: Option<String>,
        /// The region.
        region: String,
        /// The variable holding the access key id.
        access_key_id_env: String,
        /// The variable holding the secret access key.
        secret_access_key_env: String,
        /// The variable holding a session token, if any.
        session_token_env: Option<String>,
    },
}

/// The resolved configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// The embedded store's directory (`spine.url = "sqlite:DIR"`, `--data`).
    pub data: PathBuf,
    /// A PostgreSQL spine's URL (`spine.url = "postgres://…"`): the spine, ledger, rate budgets
    /// and API tokens live in its database.
    pub spine_postgres: Option<String>,
    /// The projections' URL (`None`: `DIR/observe.db`).
    pub projections: Option<String>,
    /// Memory's store.
    pub memory: MemoryChoice,
    /// The embedder.
    pub embedder: EmbedderChoice,
    /// Blobs.
    pub blobs: BlobsChoice,
    /// Executions one worker drives at a time.
    pub workers_concurrency: usize,
    /// A worker's lease length without a heartbeat, in seconds.
    pub workers_lease_secs: u64,
    /// Seconds between two guardrail checks of the running experiments in `keel serve` (0: none).
    pub experiments_check_secs: u64,
    origins: BTreeMap<&'static str, Origin>,
}

/// What the command line says about the configuration.
pub struct Args<'a> {
    /// `--config PATH` (or `$KEEL_CONFIG`).
    pub config: Option<&'a Path>,
    /// `--data DIR` (or `$KEEL_DATA`).
    pub data: Option<&'a Path>,
}

/// How often `keel serve` checks the running experiments' guardrails by default, in seconds.
pub const DEFAULT_CHECK_SECS: u64 = 60;

static CURRENT: OnceLock<Config> = OnceLock::new();

/// Makes `config` the process's configuration (once, in `main`).
pub fn install(config: Config) {
    let _ = CURRENT.set(config);
}

/// The process's configuration ([`install`]ed by `main` before any command runs; the embedded
/// default if nothing was).
pub fn current() -> &'static Config {
    CURRENT.get_or_init(|| Config::embedded_default(PathBuf::from(".keel")))
}

/// A non-empty environment variable.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The 1-based line and column of a byte offset.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit_once('\n')
        .map_or(before, |(_, l)| l)
        .chars()
        .count()
        + 1;
    (line, col)
}

/// Parses the file's text: a malformed file, an unknown key or a value of the wrong type is an
/// error naming the file, line, column and key.
fn parse(path: &Path, text: &str) -> anyhow::Result<file::File> {
    let shown = path.display();
    let de = toml::Deserializer::parse(text).map_err(|e| {
        let (l, c) = line_col(text, e.span().map_or(0, |s| s.start));
        anyhow!("{shown}:{l}:{c}: not valid TOML: {}", e.message().trim())
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path_of = e.path().to_string();
        let inner = e.into_inner();
        let (l, c) = line_col(text, inner.span().map_or(0, |s| s.start));
        let message = inner.message().trim().to_owned();
        anyhow!("{shown}:{l}:{c}: {path_of}: {message}")
    })
}

impl Config {
    /// The embedded default on `data`: what Keel does with no file and no variable.
    pub fn embedded_default(data: PathBuf) -> Self {
        Config {
            file: None,
            data,
            spine_postgres: None,
            projections: None,
            memory: MemoryChoice::Embedded,
            embedder: EmbedderChoice::MiniLm { dir: None },
            blobs: BlobsChoice::File(None),
            workers_concurrency: 8,
            workers_lease_secs: 30,
            experiments_check_secs: DEFAULT_CHECK_SECS,
            origins: BTreeMap::new(),
        }
    }

    /// Where `key`'s value came from.
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// `key` and where it was set, for messages: `keel.toml: memory.url`,
    /// `KEEL_MEMORY_URL (memory.url)`, `memory.url (default)`.
    pub fn at(&self, key: &str) -> String {
        match self.origin(key) {
            Origin::File(p) => format!("{}: {key}", p.display()),
            Origin::Env(v) => format!("{v} ({key})"),
            Origin::Flag(f) => format!("{f} ({key})"),
            Origin::Default => format!("{key} (default)"),
        }
    }

    /// Reads and resolves the configuration.
    pub fn load(args: &Args<'_>) -> anyhow::Result<Self> {
        let path = match args.config {
            Some(p) => {
                anyhow::ensure!(
                    p.is_file(),
                    "--config {}: no such file (or $KEEL_CONFIG)",
                    p.display()
                );
                Some(p.to_owned())
            }
            None => Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.is_file()),
        };
        let parsed = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                parse(p, &text)?
            }
            None => file::File::default(),
        };
        let base = path
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        resolve::Resolver {
            file: path.clone(),
            base,
            origins: BTreeMap::new(),
        }
        .resolve(parsed, args)
    }

    /// Every secret the configuration can reach (URL passwords, the values of the variables
    /// it names), so messages can be scrubbed of them.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut url = |u: &str| out.extend(password_of(u));
        if let Some(p) = &self.spine_postgres {
            url(p);
        }
        if let Some(p) = &self.projections {
            url(p);
        }
        if let MemoryChoice::Pgvector { url: u } = &self.memory {
            url(u);
        }
        let mut vars = Vec::new();
        if let EmbedderChoice::OpenAi {
            api_key_env: Some(v),
            ..
        } = &self.embedder
        {
            vars.push(v.clone());
        }
        if let BlobsChoice::S3 {
            access_key_id_env,
            secret_access_key_env,
            session_token_env,
            ..
        } = &self.blobs
        {
            vars.push(secret_access_key_env.clone());
            vars.push(access_key_id_env.clone());
            vars.extend(session_token_env.clone());
        }
        out.extend(vars.iter().filter_map(|v| env(v)));
        out.retain(|s| s.len() >= 3);
        out
    }
}

/// The password in a URL's user info (`scheme://user:PASSWORD@host`) or query
/// (`?password=…`), if any.
fn password_of(url: &str) -> Option<String> {
    if let Some((_, rest)) = url.split_once("://")
        && let Some((userinfo, _)) = rest.rsplit_once('@')
        && let Some((_, pw)) = userinfo.split_once(':')
        && !pw.is_empty()
    {
        return Some(pw.to_owned());
    }
    let lower = url.to_ascii_lowercase();
    let at = lower.find("password=")?;
    let value = url.get(at + "password=".len()..)?;
    let end = value.find(['&', ' ']).unwrap_or(value.len());
    value
        .get(..end)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The URL with its password replaced by `***` (user info and `password=` alike).
pub fn redact(url: &str) -> String {
    match password_of(url) {
        Some(pw) => url.replace(&pw, "***"),
        None => url.to_owned(),
    }
}

/// `text` with every secret of the process's configuration replaced by `***`.
pub fn scrub(text: &str) -> String {
    let mut out = text.to_owned();
    for s in current().secrets() {
        out = out.replace(&s, "***");
    }
    out
}
