//! Resolving `keel.toml` and the `KEEL_*` variables into a [`Config`]: for each key, the
//! variable over the file over the default, with where each value came from recorded, and every
//! value checked with an error naming its key and origin.

use super::{Args, env};
use super::{BlobsChoice, Config, EmbedderChoice, MemoryChoice, Origin, file, redact};
use anyhow::{anyhow, bail};
use keel_memory::EmbeddingModel;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub(super) struct Resolver {
    pub(super) file: Option<PathBuf>,
    pub(super) base: PathBuf,
    pub(super) origins: BTreeMap<&'static str, Origin>,
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

    pub(super) fn resolve(mut self, f: file::File, args: &Args<'_>) -> anyhow::Result<Config> {
        // The spine: the embedded store's directory, or PostgreSQL.
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
            // Beside a PostgreSQL spine, --data is only the local directory (tokens, snapshots).
            if spine_postgres.is_none() {
                self.origins.insert("spine.url", Origin::Flag("--data"));
            }
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
        let check = self
            .number(
                "experiments.check_secs",
                "KEEL_EXPERIMENTS_CHECK_SECS",
                f.experiments.check_secs,
            )?
            .unwrap_or(super::DEFAULT_CHECK_SECS);
        anyhow::ensure!(
            check <= 86_400,
            "{}: {check} is out of range (0 to turn the checks off, or up to 86400 seconds)",
            self.at("experiments.check_secs")
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
            experiments_check_secs: check,
            origins: self.origins,
        })
    }

    fn embedder(&mut self, e: file::Embedder) -> anyhow::Result<EmbedderChoice> {
        let kind = self.pick(
            "embedder.kind",
            "KEEL_EMBEDDER_KIND",
            e.kind.map(|k| format!("{k:?}").to_lowercase()),
        );
        // Unset: where the project's install step (scripts/test-services) puts the model.
        let dir = self
            .path("embedder.dir", "KEEL_MINILM_DIR", e.dir)
            .or_else(crate::minilm::installed);
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
