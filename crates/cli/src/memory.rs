//! `keel memory …`: governed memory as the configuration names it (`crate::config`: by default
//! `DIR/memory.db` with all-MiniLM-L6-v2 from `embedder.dir` / `$KEEL_MINILM_DIR`; or pgvector,
//! or an OpenAI-compatible embedder), with the spine, the configured blob store and projections
//! for subject access and erasure.
//!
//! - `list`, `search`: what memory holds for a tenant (any status), what a query would retrieve.
//! - `review`: approve or reject a fact held for review (low-trust source).
//! - `promote`: a human promotes an episodic fact to the semantic tier (new catalogue version).
//! - `subject-access`: every fact about a subject with provenance, plus the executions and traces
//!   that touched the subject, as one JSON document.
//! - `erase`: the subject's facts and vectors, the spine's sealed fields (key deleted), the
//!   executions' blobs, and the trace projections (rebuilt from the now-erased log, then vacuumed).
//! - `sweep`: purges expired facts (every tenant's, or one's with `--tenant`) and prints what it
//!   removed (JSON lines).
//! - `rebuild`: re-stores every fact the log's `memory.written` events carry.
//! - `migrate-embeddings`: re-embeds into a side-by-side index and switches atomically.

use anyhow::Context;
use clap::Subcommand;
use keel_core::payload::Payload;
use keel_memory::{Embedder, Memory, MiniLm, Query};
use keel_runtime::recall;
use keel_spine::SpineStore;
use keel_spine::clock::{Clock, SystemClock};
use serde_json::json;
use std::path::{Path, PathBuf};

/// `keel memory` subcommands.
#[derive(Subcommand)]
pub enum MemoryCmd {
    /// List a tenant's facts (every status), optionally about one subject.
    List {
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// Only facts about this subject.
        #[arg(long)]
        subject: Option<String>,
    },
    /// What a query would retrieve for a tenant (the same path the runtime uses).
    Search {
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// The query text.
        query: String,
        /// Search as an execution about this data subject does (its episodic facts are seen;
        /// without it, only tenant-wide and promoted facts are).
        #[arg(long)]
        subject: Option<String>,
        /// How many facts.
        #[arg(long, default_value_t = 5)]
        k: usize,
        /// Pin a semantic catalogue version.
        #[arg(long)]
        semantic_version: Option<u64>,
    },
    /// Approve or reject a fact held for review.
    Review {
        /// Fact id.
        id: String,
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// Approve (otherwise reject).
        #[arg(long)]
        approve: bool,
    },
    /// Promote an active episodic fact to the semantic tier (a new catalogue version).
    Promote {
        /// Fact id.
        id: String,
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// Who promotes it (recorded in provenance).
        #[arg(long)]
        by: String,
        /// Semantic facts this one replaces.
        #[arg(long)]
        supersedes: Vec<String>,
    },
    /// Every fact about a subject, with provenance, and the executions that touched it (JSON).
    SubjectAccess {
        /// The data subject.
        subject: String,
        /// Tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Erase a subject everywhere: memory, vector index, spine (crypto-shredding), blobs, traces.
    Erase {
        /// The data subject.
        subject: String,
        /// Tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Purge expired facts (of every tenant, or of one); prints each removed fact as a JSON line.
    Sweep {
        /// Only this tenant's facts.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Rebuild the memory store from the spine's `memory.written` events (idempotent).
    Rebuild,
    /// Re-embed every fact with another model version, side by side, then switch atomically.
    MigrateEmbeddings {
        /// Directory of the new model (default: `$KEEL_MINILM_DIR`).
        #[arg(long)]
        model_dir: Option<PathBuf>,
        /// Truncation length of the new model version.
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        /// Facts per batch.
        #[arg(long, default_value_t = 64)]
        batch: usize,
    },
}

async fn open_memory(data: &Path) -> anyhow::Result<Memory> {
    crate::config::current().memory(data).await
}

fn open_log(data: &Path) -> anyhow::Result<std::sync::Arc<dyn SpineStore>> {
    crate::observe::open_log(data)
}

fn print(v: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Runs one `keel memory` command against the store in `data`.
pub async fn run(data: &Path, cmd: MemoryCmd) -> anyhow::Result<()> {
    let now = SystemClock.now();
    match cmd {
        MemoryCmd::List { tenant, subject } => {
            let m = open_memory(data).await?;
            let facts = m.store.list(&tenant, subject.as_deref()).await?;
            for f in facts {
                println!("{}", serde_json::to_string(&f)?);
            }
            Ok(())
        }
        MemoryCmd::Search {
            tenant,
            query,
            subject,
            k,
            semantic_version,
        } => {
            let m = open_memory(data).await?;
            let q = Query {
                tenant,
                subject,
                text: query,
                k,
                min_score: -1.0,
                semantic_version,
            };
            let r = m.retrieve(&q, now).await?;
            print(&json!({"memory_version": r.memory_version, "hits": r.hits}))
        }
        MemoryCmd::Review {
            id,
            tenant,
            approve,
        } => {
            let f = open_memory(data)
                .await?
                .review(&tenant, &id, approve)
                .await?;
            eprintln!("memory {id}: {}", f.status.as_str());
            Ok(())
        }
        MemoryCmd::Promote {
            id,
            tenant,
            by,
            supersedes,
        } => {
            let (f, v) = open_memory(data)
                .await?
                .promote(&tenant, &id, &by, &supersedes, now)
                .await?;
            eprintln!(
                "promoted {id} as semantic fact {} (catalogue version {v})",
                f.id
            );
            print(&json!({"id": f.id, "catalogue_version": v}))
        }
        MemoryCmd::SubjectAccess { subject, tenant } => {
            let m = open_memory(data).await?;
            let facts = m.subject_access(&tenant, &subject).await?;
            let log = open_log(data)?;
            let mut executions = Vec::new();
            for exec in log.subject_executions(&tenant, &subject).await? {
                let events = log.read(exec, 1).await?;
                let Some(first) = events.first() else {
                    continue;
                };
                let goal = events.iter().find_map(|e| match &e.payload {
                    Payload::ExecStarted(s) => Some(s.goal.clone()),
                    _ => None,
                });
                executions.push(json!({
                    "exec_id": exec.to_string(),
                    "trace_id": first.trace_id.to_string(),
                    "tenant": first.tenant.0,
                    "started_at": first.ts,
                    "goal": goal,
                    "events": events.len(),
                }));
            }
            print(&json!({
                "tenant": tenant,
                "subject": subject,
                "facts": facts,
                "executions": executions,
            }))
        }
        MemoryCmd::Erase { subject, tenant } => {
            let m = open_memory(data).await?;
            let facts = m.erase_subject(&tenant, &subject).await?;
            let mut report = json!({"tenant": tenant, "facts_erased": facts.len()});
            if data.join("spine.db").exists() || crate::config::current().spine_postgres.is_some() {
                let log = open_log(data)?;
                let blobs = crate::config::current().blob_store(data)?;
                let e = log.erase_subject(&tenant, &subject, &*blobs).await?;
                report["tombstone"] = json!(e.digest);
                report["executions_shredded"] = json!(e.executions.len());
                report["blobs_deleted"] = json!(e.blobs_deleted.len());
                // The tombstone event, on the control stream: auditable, names no one.
                let control = keel_runtime::Control::new(
                    log.clone(),
                    std::sync::Arc::new(keel_spine::clock::SystemClock),
                );
                control
                    .erased(keel_core::payload::SubjectErased {
                        digest: e.digest.clone(),
                        tenant: tenant.clone(),
                        executions: e.executions.len() as u32,
                        blobs_deleted: e.blobs_deleted.len() as u32,
                        facts_erased: facts.len() as u32,
                        by: crate::agents::operator(),
                    })
                    .await?;
                // Derived stores: the trace projections are rebuilt from the (now erased) log,
                // and the file is vacuumed so no page keeps the old rows.
                let proj = crate::observe::projections_path(data);
                let backend = crate::observe::projections_backend(data)?;
                let external = backend != keel_observe::Backend::Sqlite(proj.clone());
                if proj.exists() || external {
                    let mut p = backend.open().await?;
                    p.reset().await?;
                    p.catch_up(&*log).await?;
                    drop(p);
                    if proj.exists() {
                        rusqlite::Connection::open(&proj)?.execute_batch("VACUUM")?;
                    }
                    report["projections"] = json!("rebuilt");
                }
            }
            eprintln!(
                "erased; Parquet or OTLP exports made before now are outside this store: re-export them"
            );
            print(&report)
        }
        MemoryCmd::Sweep { tenant } => {
            let m = open_memory(data).await?;
            let swept = match &tenant {
                Some(t) => m.sweep_tenant(t, now).await?,
                None => m.sweep(now).await?,
            };
            match &tenant {
                Some(t) => eprintln!("sweep: removed {} expired facts of {t}", swept.len()),
                None => eprintln!("sweep: removed {} expired facts", swept.len()),
            }
            for s in swept {
                println!("{}", serde_json::to_string(&s)?);
            }
            Ok(())
        }
        MemoryCmd::Rebuild => {
            let m = open_memory(data).await?;
            let n = recall::rebuild_from_log(&*open_log(data)?, &m).await?;
            eprintln!("rebuilt: {n} facts from the log");
            Ok(())
        }
        MemoryCmd::MigrateEmbeddings {
            model_dir,
            max_tokens,
            batch,
        } => {
            let m = open_memory(data).await?;
            let dir = match model_dir {
                Some(d) => d,
                None => match &crate::config::current().embedder {
                    crate::config::EmbedderChoice::MiniLm { dir: Some(d) } => d.clone(),
                    _ => anyhow::bail!(
                        "--model-dir: not given, and the configuration names no MiniLM directory (embedder.dir or KEEL_MINILM_DIR)"
                    ),
                },
            };
            let to = MiniLm::load_with_max_tokens(&dir, max_tokens)?;
            let from = m.store.pinned().await?;
            let n = m.migrate(&to, batch).await?;
            eprintln!("migrated {n} facts from {from} to {}", to.model());
            Ok(())
        }
    }
}

/// The demo's memory strategy (the repository's `strategies/memory/support-memory.yaml`, whose
/// paths are one folder deeper than the demo's config layout).
const DEMO_STRATEGY: &str = include_str!("../../../strategies/memory/support-memory.yaml");

/// Writes the demo's memory strategy into its config folder (before the runtime opens it).
pub fn write_demo_assets(config_dir: &Path) -> anyhow::Result<()> {
    let path = config_dir.join("strategies/support-memory.yaml");
    std::fs::write(&path, DEMO_STRATEGY.replace("../../", "../"))
        .with_context(|| format!("writing {}", path.display()))
}

/// The demo's memory story: one execution about customer `cust-42` states a preference (and a
/// policy claim); distillation writes both as facts with provenance (the claim held for review);
/// a later execution about the same customer retrieves the preference and uses it.
pub async fn demo_story(env: &keel_runtime::embedded::Embedded) -> anyhow::Result<()> {
    let s = env
        .strategies
        .get("support-memory")
        .context("strategy support-memory")?;
    let model = s.provider()?;
    let first_goal = "Where is my order A-1007? Please always send me updates by e-mail. Also, your policy says shipping is free on every order.";
    let later_goal = "Has order A-1007 shipped yet?";
    let first = env
        .agent
        .start_for_subject(s, "acme", "cust-42", first_goal)
        .await?;
    let state = env.agent.drive(s, &*model, first).await?;
    println!();
    println!(
        "MEMORY (tenant acme, subject cust-42; strategy {})",
        s.version
    );
    println!(
        "1. {first} {:?} → {}",
        first_goal,
        crate::agents::outcome_word(&state)
    );
    let memory = env.agent.memory.as_ref().context("memory is not wired")?;
    for e in env.log.read(first, 1).await? {
        if let Payload::MemoryWritten(w) = &e.payload {
            let id = &w.memory_id;
            let status = match memory.store.get("acme", id).await? {
                Some(f) => f.status.as_str().to_owned(),
                None => "not stored".into(),
            };
            println!(
                "   memory.written seq {}: {:?} [{}, {status}] provenance: trace {} seqs {} strategy {}",
                e.seq,
                w.provenance["fact"].as_str().unwrap_or_default(),
                w.volatility,
                w.provenance["trace_id"].as_str().unwrap_or_default(),
                w.provenance["event_seqs"],
                w.provenance["strategy_version"]
                    .as_str()
                    .unwrap_or_default(),
            );
        }
    }
    let later = env
        .agent
        .start_for_subject(s, "acme", "cust-42", later_goal)
        .await?;
    let state = env.agent.drive(s, &*model, later).await?;
    println!(
        "2. {later} {:?} → {}",
        later_goal,
        crate::agents::outcome_word(&state)
    );
    for e in env.log.read(later, 1).await? {
        match &e.payload {
            Payload::MemoryRetrieved(m) => {
                println!(
                    "   memory.retrieved seq {} ({} chunk(s), memory version {}):",
                    e.seq,
                    m.chunks.len(),
                    m.memory_version
                );
                for c in &m.chunks {
                    println!(
                        "     {:.3} {:?} age {}s stale {} ← written by trace {} (exec {}) seqs {}",
                        c.score,
                        c.provenance["fact"].as_str().unwrap_or_default(),
                        c.provenance["age_secs"],
                        c.provenance["stale"],
                        c.provenance["trace_id"].as_str().unwrap_or_default(),
                        c.provenance["exec_id"].as_str().unwrap_or_default(),
                        c.provenance["event_seqs"],
                    );
                }
            }
            Payload::ExecFinished(f) => {
                println!("   answer: {}", f.detail.as_deref().unwrap_or_default());
            }
            _ => {}
        }
    }
    println!(
        "   (the policy claim waits in review: keel memory list --tenant acme; erase the customer: keel memory erase cust-42 --tenant acme)"
    );
    Ok(())
}
