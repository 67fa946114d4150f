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

use anyhow::{Context, anyhow, bail};
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
    /// A PostgreSQL spine's URL (`spine.url = "postgres://…"`), which this build's commands do
    /// not run on yet ([`Config::require_embedded_spine`]).
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
    origins: BTreeMap<&'static str, Origin>,
}

/// What the command line says about the configuration.
pub struct Args<'a> {
    /// `--config PATH` (or `$KEEL_CONFIG`).
    pub config: Option<&'a Path>,
    /// `--data DIR` (or `$KEEL_DATA`).
    pub data: Option<&'a Path>,
}

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
            origins: BTreeMap::new(),
        }
    }

    /// An error naming `spine.url` and its file when the spine is PostgreSQL: the commands that
    /// run agents, read the store or manage it work on the embedded spine only in this build.
    pub fn require_embedded_spine(&self) -> anyhow::Result<()> {
        match &self.spine_postgres {
            None => Ok(()),
            Some(u) => bail!(
                "{}: a PostgreSQL spine ({}) is not available in this build yet (only `keel config check` reaches it); use sqlite:DIR",
                self.at("spine.url"),
                redact(u)
            ),
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
        Resolver {
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

struct Resolver {
    file: Option<PathBuf>,
    base: PathBuf,
    origins: BTreeMap<&'static str, Origin>,
}

impl Resolver {
    /// The value of `key`: the variable `var` over the file's value. Records the origin.
    fn pick(
        &mut self,
        key: &'static str,
        var: &'static str,
        from_file: Option<String>,
    ) -> Option<String> {
        if let Some(v) = env(var) {
            self.origins.insert(key, Origin::Env(var));
            return Some(v);
        }
        let v = from_file?;
        if let Some(f) = &self.file {
            self.origins.insert(key, Origin::File(f.clone()));
        }
        Some(v)
    }

    /// A path: relative ones in the file are relative to the file's directory.
    fn path(
        &mut self,
        key: &'static str,
        var: &'static str,
        from_file: Option<PathBuf>,
    ) -> Option<PathBuf> {
        let from_file = from_file.map(|p| self.base.join(p).to_string_lossy().into_owned());
        self.pick(key, var, from_file).map(PathBuf::from)
    }

    fn at(&self, key: &str) -> String {
        match self.origins.get(key) {
            Some(Origin::File(p)) => format!("{}: {key}", p.display()),
            Some(Origin::Env(v)) => format!("{v} ({key})"),
            Some(Origin::Flag(f)) => format!("{f} ({key})"),
            Some(Origin::Default) | None => format!("{key} (default)"),
        }
    }

    /// A number from the file or a variable.
    fn number<T: std::str::FromStr + ToString>(
        &mut self,
        key: &'static str,
        var: &'static str,
        from_file: Option<T>,
    ) -> anyhow::Result<Option<T>> {
        let Some(v) = self.pick(key, var, from_file.map(|n| n.to_string())) else {
            return Ok(None);
        };
        v.trim()
            .parse()
            .map(Some)
            .map_err(|_| anyhow!("{}: {v:?} is not a whole number", self.at(key)))
    }

    fn resolve(mut self, f: file::File, args: &Args<'_>) -> anyhow::Result<Config> {
        // The spine: the embedded store's directory, or (not yet wired) PostgreSQL.
        let spine = self.pick("spine.url", "KEEL_SPINE_URL", f.spine.url);
        let mut data = PathBuf::from(".keel");
        let mut spine_postgres = None;
        if let Some(u) = &spine
            && (u.starts_with("postgres://") || u.starts_with("postgresql://"))
        {
            spine_postgres = Some(u.clone());
        } else if let Some(u) = &spine {
            let Some(dir) = u
                .strip_prefix("sqlite:")
                .map(|d| d.trim_start_matches("//"))
            else {
                bail!(
                    "{}: {:?} is neither sqlite:DIR nor postgres://…",
                    self.at("spine.url"),
                    redact(u)
                );
            };
            anyhow::ensure!(
                !dir.is_empty(),
                "{}: sqlite: names no directory",
                self.at("spine.url")
            );
            data = match self.origins.get("spine.url") {
                Some(Origin::File(_)) => self.base.join(dir),
                _ => PathBuf::from(dir),
            };
        }
        if let Some(d) = args.data {
            data = d.to_owned();
            self.origins.insert("spine.url", Origin::Flag("--data"));
        }

        let projections = self.pick("projections.url", "KEEL_PROJECTIONS_URL", f.projections.url);
        if let Some(u) = &projections {
            let ok = u.starts_with("postgres://")
                || u.starts_with("postgresql://")
                || u.starts_with("sqlite:");
            anyhow::ensure!(
                ok,
                "{}: {:?} is neither postgres://… nor sqlite:PATH",
                self.at("projections.url"),
                redact(u)
            );
        }

        let backend = self.pick(
            "memory.backend",
            "KEEL_MEMORY_BACKEND",
            f.memory.backend.map(|b| format!("{b:?}").to_lowercase()),
        );
        let url = self.pick("memory.url", "KEEL_MEMORY_URL", f.memory.url);
        let memory = match backend.as_deref().map(str::trim) {
            None | Some("embedded") => {
                if url.is_some() {
                    bail!(
                        "{}: set only with memory.backend = \"pgvector\" (the embedded memory lives in DIR/memory.db)",
                        self.at("memory.url")
                    );
                }
                MemoryChoice::Embedded
            }
            Some("pgvector") => match url {
                Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                    MemoryChoice::Pgvector { url: u }
                }
                Some(u) => bail!(
                    "{}: {:?} is not a postgres:// URL",
                    self.at("memory.url"),
                    redact(&u)
                ),
                None => bail!(
                    "{}: pgvector needs memory.url (postgres://…)",
                    self.at("memory.backend")
                ),
            },
            Some(other) => bail!(
                "{}: {other:?} is not a memory backend (embedded or pgvector)",
                self.at("memory.backend")
            ),
        };

        let embedder = self.embedder(f.embedder)?;
        let blobs = self.blobs(f.blobs)?;

        let concurrency = self
            .number(
                "workers.concurrency",
                "KEEL_WORKERS_CONCURRENCY",
                f.workers.concurrency,
            )?
            .unwrap_or(8);
        anyhow::ensure!(
            (1..=4096).contains(&concurrency),
            "{}: {concurrency} is out of range (1..=4096)",
            self.at("workers.concurrency")
        );
        let lease = self
            .number(
                "workers.lease_secs",
                "KEEL_WORKERS_LEASE_SECS",
                f.workers.lease_secs,
            )?
            .unwrap_or(30);
        anyhow::ensure!(
            (1..=86_400).contains(&lease),
            "{}: {lease} is out of range (1..=86400 seconds)",
            self.at("workers.lease_secs")
        );

        Ok(Config {
            file: self.file.clone(),
            data,
            spine_postgres,
            projections,
            memory,
            embedder,
            blobs,
            workers_concurrency: concurrency,
            workers_lease_secs: lease,
            origins: self.origins,
        })
    }

    fn embedder(&mut self, e: file::Embedder) -> anyhow::Result<EmbedderChoice> {
        let kind = self.pick(
            "embedder.kind",
            "KEEL_EMBEDDER_KIND",
            e.kind.map(|k| format!("{k:?}").to_lowercase()),
        );
        let dir = self.path("embedder.dir", "KEEL_MINILM_DIR", e.dir);
        let url = self.pick("embedder.url", "KEEL_EMBEDDER_URL", e.url);
        let model = self.pick("embedder.model", "KEEL_EMBEDDER_MODEL", e.model);
        let version = self.pick("embedder.version", "KEEL_EMBEDDER_VERSION", e.version);
        let dim = self.number("embedder.dim", "KEEL_EMBEDDER_DIM", e.dim)?;
        let key_env = self.pick(
            "embedder.api_key_env",
            "KEEL_EMBEDDER_API_KEY_ENV",
            e.api_key_env,
        );
        match kind.as_deref().map(str::trim) {
            None | Some("minilm") => {
                for (key, set) in [
                    ("embedder.url", url.is_some()),
                    ("embedder.model", model.is_some()),
                    ("embedder.api_key_env", key_env.is_some()),
                ] {
                    anyhow::ensure!(
                        !set,
                        "{}: set only with embedder.kind = \"openai\"",
                        self.at(key)
                    );
                }
                Ok(EmbedderChoice::MiniLm { dir })
            }
            Some("openai") => {
                let Some(url) = url else {
                    bail!(
                        "{}: openai needs embedder.url (https://…/v1)",
                        self.at("embedder.kind")
                    );
                };
                anyhow::ensure!(
                    url.starts_with("https://") || url.starts_with("http://"),
                    "{}: {:?} is not an http(s) URL",
                    self.at("embedder.url"),
                    redact(&url)
                );
                let Some(name) = model else {
                    bail!("{}: openai needs embedder.model", self.at("embedder.kind"));
                };
                let Some(dim) = dim else {
                    bail!(
                        "{}: openai needs embedder.dim, the vectors' dimensions",
                        self.at("embedder.kind")
                    );
                };
                anyhow::ensure!(
                    (1..=65_536).contains(&dim),
                    "{}: {dim} is out of range (1..=65536)",
                    self.at("embedder.dim")
                );
                if let Some(v) = &key_env {
                    anyhow::ensure!(
                        v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{}: not an environment variable's name (the value is not shown: if it is the key itself, it never goes in the file)",
                        self.at("embedder.api_key_env")
                    );
                }
                Ok(EmbedderChoice::OpenAi {
                    url,
                    model: EmbeddingModel {
                        name,
                        version: version.unwrap_or_else(|| "1".into()),
                        dim,
                    },
                    api_key_env: key_env,
                })
            }
            Some(other) => bail!(
                "{}: {other:?} is not an embedder (minilm or openai)",
                self.at("embedder.kind")
            ),
        }
    }

    fn blobs(&mut self, b: file::Blobs) -> anyhow::Result<BlobsChoice> {
        let url = self.pick("blobs.url", "KEEL_BLOBS_URL", b.url);
        let endpoint = self.pick("blobs.endpoint", "KEEL_BLOBS_ENDPOINT", b.endpoint);
        let region = self.pick("blobs.region", "KEEL_BLOBS_REGION", b.region);
        let id_env = self.pick(
            "blobs.access_key_id_env",
            "KEEL_BLOBS_ACCESS_KEY_ID_ENV",
            b.access_key_id_env,
        );
        let secret_env = self.pick(
            "blobs.secret_access_key_env",
            "KEEL_BLOBS_SECRET_ACCESS_KEY_ENV",
            b.secret_access_key_env,
        );
        let token_env = self.pick(
            "blobs.session_token_env",
            "KEEL_BLOBS_SESSION_TOKEN_ENV",
            b.session_token_env,
        );
        let Some(url) = url else {
            return Ok(BlobsChoice::File(None));
        };
        if let Some(dir) = url.strip_prefix("file:") {
            let dir = dir.trim_start_matches("//");
            anyhow::ensure!(
                !dir.is_empty(),
                "{}: file: names no directory",
                self.at("blobs.url")
            );
            let dir = match self.origins.get("blobs.url") {
                Some(Origin::File(_)) => self.base.join(dir),
                _ => PathBuf::from(dir),
            };
            return Ok(BlobsChoice::File(Some(dir)));
        }
        let Some(rest) = url.strip_prefix("s3://") else {
            bail!(
                "{}: {:?} is neither file:DIR nor s3://bucket/prefix",
                self.at("blobs.url"),
                redact(&url)
            );
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        anyhow::ensure!(
            !bucket.is_empty()
                && bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'),
            "{}: {bucket:?} is not a bucket name (lowercase letters, digits, '-', '.')",
            self.at("blobs.url")
        );
        if let Some(e) = &endpoint {
            anyhow::ensure!(
                e.starts_with("http://") || e.starts_with("https://"),
                "{}: {:?} is not an http(s) URL",
                self.at("blobs.endpoint"),
                redact(e)
            );
        }
        for (key, v) in [
            ("blobs.access_key_id_env", &id_env),
            ("blobs.secret_access_key_env", &secret_env),
            ("blobs.session_token_env", &token_env),
        ] {
            if let Some(v) = v {
                anyhow::ensure!(
                    v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{}: not an environment variable's name (the value is not shown: if it is a credential, it never goes in the file)",
                    self.at(key)
                );
            }
        }
        Ok(BlobsChoice::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            endpoint,
            region: region.unwrap_or_else(|| "us-east-1".into()),
            access_key_id_env: id_env.unwrap_or_else(|| "AWS_ACCESS_KEY_ID".into()),
            secret_access_key_env: secret_env.unwrap_or_else(|| "AWS_SECRET_ACCESS_KEY".into()),
            session_token_env: token_env,
        })
    }
}
