//! `keel config check`: prints the resolved configuration (each key, its value with passwords
//! shown as `***`, and where it came from), then reaches every configured backend — PostgreSQL
//! databases are connected to, the S3 bucket is listed, MiniLM's files are looked for, named
//! credential variables must be set — and exits 1 naming the key and its file on the first
//! that fails.

use super::{BlobsChoice, Config, EmbedderChoice, MemoryChoice, Origin, redact, scrub};
use anyhow::anyhow;
use clap::Subcommand;
use serde_json::{Value, json};
use std::time::Duration;

/// `keel config` subcommands.
#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Print the resolved configuration (secrets redacted) and reach every configured backend.
    Check {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Only resolve and print; reach no backend.
        #[arg(long)]
        offline: bool,
    },
}

fn origin_text(o: &Origin) -> String {
    match o {
        Origin::Default => "default".into(),
        Origin::File(p) => p.display().to_string(),
        Origin::Env(v) => format!("${v}"),
        Origin::Flag(f) => f.to_string(),
    }
}

/// The resolved configuration as `(key, value, origin)`, secrets redacted.
fn rows(c: &Config) -> Vec<(&'static str, Value)> {
    let spine = match &c.spine_postgres {
        Some(u) => redact(u),
        None => format!("sqlite:{}", c.data.display()),
    };
    let mut out: Vec<(&'static str, Value)> = vec![("spine.url", json!(spine))];
    out.push((
        "projections.url",
        match &c.projections {
            Some(u) => json!(redact(u)),
            None => json!(format!("sqlite:{}", c.data.join("observe.db").display())),
        },
    ));
    match &c.memory {
        MemoryChoice::Embedded => out.push(("memory.backend", json!("embedded"))),
        MemoryChoice::Pgvector { url } => {
            out.push(("memory.backend", json!("pgvector")));
            out.push(("memory.url", json!(redact(url))));
        }
    }
    match &c.embedder {
        EmbedderChoice::MiniLm { dir } => {
            out.push(("embedder.kind", json!("minilm")));
            out.push((
                "embedder.dir",
                dir.as_ref()
                    .map_or(Value::Null, |d| json!(d.display().to_string())),
            ));
        }
        EmbedderChoice::OpenAi {
            url,
            model,
            api_key_env,
        } => {
            out.push(("embedder.kind", json!("openai")));
            out.push(("embedder.url", json!(redact(url))));
            out.push(("embedder.model", json!(model.name)));
            out.push(("embedder.version", json!(model.version)));
            out.push(("embedder.dim", json!(model.dim)));
            out.push(("embedder.api_key_env", json!(api_key_env)));
        }
    }
    match &c.blobs {
        BlobsChoice::File(dir) => out.push((
            "blobs.url",
            json!(format!(
                "file:{}",
                dir.clone()
                    .unwrap_or_else(|| c.data.join("blobs"))
                    .display()
            )),
        )),
        BlobsChoice::S3 {
            bucket,
            prefix,
            endpoint,
            region,
            access_key_id_env,
            secret_access_key_env,
            session_token_env,
        } => {
            let url = if prefix.is_empty() {
                format!("s3://{bucket}")
            } else {
                format!("s3://{bucket}/{prefix}")
            };
            out.push(("blobs.url", json!(url)));
            out.push(("blobs.endpoint", json!(endpoint.as_deref().map(redact))));
            out.push(("blobs.region", json!(region)));
            out.push(("blobs.access_key_id_env", json!(access_key_id_env)));
            out.push(("blobs.secret_access_key_env", json!(secret_access_key_env)));
            out.push(("blobs.session_token_env", json!(session_token_env)));
        }
    }
    out.push(("workers.concurrency", json!(c.workers_concurrency)));
    out.push(("workers.lease_secs", json!(c.workers_lease_secs)));
    out.push(("experiments.check_secs", json!(c.experiments_check_secs)));
    out
}

/// Connects to a PostgreSQL URL as the commands will (TLS from the URL: sslmode, sslrootcert)
/// and runs `SELECT 1`.
async fn reach_postgres(c: &Config, key: &str, url: &str) -> anyhow::Result<()> {
    let attempt = async {
        let (client, _) = keel_spine::postgres::connect_session(url).await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| anyhow!("{e}"))?;
        anyhow::Ok(())
    };
    let detail = match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => format!("{e:#}"),
        Err(_) => "no answer within 10 s".into(),
    };
    Err(anyhow!(
        "{}: cannot connect to {}: {}",
        c.at(key),
        redact(url),
        scrub(&detail)
    ))
}

/// Reaches every configured backend; the first failure is the error.
async fn reach(c: &Config) -> anyhow::Result<Vec<String>> {
    let mut ok = Vec::new();
    if let Some(u) = &c.spine_postgres {
        reach_postgres(c, "spine.url", u).await?;
        ok.push(format!("spine.url: connected to {}", redact(u)));
    }
    if let Some(u) = &c.projections
        && !u.starts_with("sqlite:")
    {
        reach_postgres(c, "projections.url", u).await?;
        ok.push(format!("projections.url: connected to {}", redact(u)));
    }
    if let MemoryChoice::Pgvector { url } = &c.memory {
        reach_postgres(c, "memory.url", url).await?;
        ok.push(format!("memory.url: connected to {}", redact(url)));
    }
    match &c.embedder {
        EmbedderChoice::MiniLm { dir: Some(dir) } => {
            for f in ["model.safetensors", "tokenizer.json", "config.json"] {
                anyhow::ensure!(
                    dir.join(f).is_file(),
                    "{}: {} has no {f} (not an all-MiniLM-L6-v2 directory)",
                    c.at("embedder.dir"),
                    dir.display()
                );
            }
            ok.push(format!(
                "embedder.dir: all-MiniLM-L6-v2 in {}",
                dir.display()
            ));
        }
        EmbedderChoice::MiniLm { dir: None } => {
            ok.push("embedder.dir: not set (only needed when a strategy uses memory)".into())
        }
        EmbedderChoice::OpenAi { url, .. } => {
            c.embedder()?;
            ok.push(format!(
                "embedder.url: {} (its key variable is set)",
                redact(url)
            ));
        }
    }
    if let Some(options) = c.s3_options()? {
        let store = keel_spine::S3BlobStore::new(&options)?;
        store
            .check()
            .await
            .map_err(|e| anyhow!("{}: {}", c.at("blobs.url"), scrub(&e.to_string())))?;
        ok.push(format!("blobs.url: reached {}", store.url()));
    }
    Ok(ok)
}

/// Runs `keel config check`.
pub async fn run(cmd: ConfigCmd) -> anyhow::Result<()> {
    let ConfigCmd::Check { json, offline } = cmd;
    let c = super::current();
    let rows = rows(c);
    let file = c
        .file
        .as_ref()
        .map_or("none (the embedded default)".to_owned(), |p| {
            p.display().to_string()
        });
    if json {
        let mut keys = serde_json::Map::new();
        for (k, v) in &rows {
            keys.insert(
                (*k).to_owned(),
                json!({"value": v, "from": origin_text(&c.origin(k))}),
            );
        }
        println!(
            "{}",
            json!({"file": c.file.as_ref().map(|p| p.display().to_string()), "keys": keys})
        );
    } else {
        println!("# file: {file}");
        for (k, v) in &rows {
            let shown = match v {
                Value::Null => "(not set)".to_owned(),
                other => other.to_string(),
            };
            println!("{k} = {shown}    # {}", origin_text(&c.origin(k)));
        }
    }
    if offline {
        return Ok(());
    }
    for line in reach(c).await? {
        eprintln!("ok  {line}");
    }
    eprintln!("configuration ok");
    Ok(())
}
