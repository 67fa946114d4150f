//! The shape of `keel.toml`: every section and key, each optional, unknown ones refused
//! (`deny_unknown_fields`), so a misspelt key is an error naming it rather than a silent default.

use serde::Deserialize;
use std::path::PathBuf;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// `[spine]`.
    #[serde(default)]
    pub spine: Spine,
    /// `[projections]`.
    #[serde(default)]
    pub projections: Projections,
    /// `[memory]`.
    #[serde(default)]
    pub memory: Memory,
    /// `[embedder]`.
    #[serde(default)]
    pub embedder: Embedder,
    /// `[blobs]`.
    #[serde(default)]
    pub blobs: Blobs,
    /// `[workers]`.
    #[serde(default)]
    pub workers: Workers,
    /// `[experiments]`.
    #[serde(default)]
    pub experiments: Experiments,
}

/// `[spine]`: where the event log lives.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spine {
    /// `sqlite:DIR` (the embedded store's directory, what `--data` names) or `postgres://…`.
    pub url: Option<String>,
}

/// `[projections]`: where `traces.steps` and `gold.executions` live.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Projections {
    /// `postgres://…` or `sqlite:PATH` (default `DIR/observe.db`).
    pub url: Option<String>,
}

/// Which memory store.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MemoryBackend {
    /// `DIR/memory.db` with the in-process vector index.
    #[default]
    Embedded,
    /// PostgreSQL + pgvector at `memory.url`.
    Pgvector,
}

/// `[memory]`: governed memory's store.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    /// `embedded` or `pgvector`.
    pub backend: Option<MemoryBackend>,
    /// The pgvector database (`postgres://…`).
    pub url: Option<String>,
}

/// Which embedder.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EmbedderKind {
    /// all-MiniLM-L6-v2 run locally from `embedder.dir`.
    #[default]
    Minilm,
    /// An OpenAI-compatible `/v1/embeddings` at `embedder.url`.
    Openai,
}

/// `[embedder]`: what turns text into vectors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Embedder {
    /// `minilm` or `openai`.
    pub kind: Option<EmbedderKind>,
    /// MiniLM's directory (safetensors, tokenizer.json, config.json).
    pub dir: Option<PathBuf>,
    /// The OpenAI-compatible base URL, up to the version (`https://api.openai.com/v1`).
    pub url: Option<String>,
    /// The model as the server names it.
    pub model: Option<String>,
    /// The model's version, pinned by the store.
    pub version: Option<String>,
    /// Vector dimensions.
    pub dim: Option<usize>,
    /// The NAME of the environment variable holding the API key (never the key itself).
    pub api_key_env: Option<String>,
}

/// `[blobs]`: tool outputs and recorded replies.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blobs {
    /// `file:DIR` or `s3://bucket/prefix`.
    pub url: Option<String>,
    /// The S3 endpoint (`http://127.0.0.1:9000`); none for AWS itself.
    pub endpoint: Option<String>,
    /// The S3 region.
    pub region: Option<String>,
    /// The NAME of the variable holding the access key id.
    pub access_key_id_env: Option<String>,
    /// The NAME of the variable holding the secret access key.
    pub secret_access_key_env: Option<String>,
    /// The NAME of the variable holding a session token (temporary credentials).
    pub session_token_env: Option<String>,
}

/// `[experiments]`: how `keel serve` watches running experiments.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiments {
    /// Seconds between two guardrail checks in `keel serve` (0: never).
    pub check_secs: Option<u64>,
}

/// `[workers]`: how workers drive executions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workers {
    /// Executions one worker drives at a time.
    pub concurrency: Option<usize>,
    /// How long a worker's lease on an execution lasts without a heartbeat, in seconds.
    pub lease_secs: Option<u64>,
}
