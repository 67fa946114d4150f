//! `keel bench memory`: governed memory's write and top-10 query latency (p50/p99) and recall@10
//! against exact search, per backend and size.
//!
//! - `embedded:N` — the embedded backend's vector index (the in-process IVF/exact index the SQLite
//!   store searches) with N vectors: insert latency, query latency, recall@10 vs a full scan.
//! - `pgvector:N` — PostgreSQL 18 + pgvector (HNSW, row-level security on) started on
//!   127.0.0.1 for the run: `PgMemory` insert and search latency, recall@10 vs exact.
//! - always: the real write and retrieval path of the embedded store (PII screen, all-MiniLM-L6-v2
//!   embedding, SQLite) on a few hundred real sentences (`embedded_real_*`).
//!
//! The N-vector runs use synthetic 384-dimensional unit vectors, clustered like sentence
//! embeddings (2 000 random centres, Gaussian spread, normalised), because embedding a million
//! sentences with MiniLM on this machine takes over an hour: they measure the index, not the
//! model. Figures only; nothing is asserted about time.

use anyhow::Context;
use keel_memory::index::VectorIndex;
use keel_memory::pgserver::PgServer;
use keel_memory::{
    Embedder, EmbeddingModel, Fact, Memory, MemoryPolicy, MemoryStore, MiniLm, NewFact, PgMemory,
    Provenance, Query, SqliteMemory, Status, Tier, Trust,
};
use keel_spine::clock::{Clock, SystemClock};
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const DIM: usize = 384;
const QUERIES: usize = 200;

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn parse_size(s: &str) -> anyhow::Result<usize> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = s.strip_suffix('m') {
        (n, 1_000_000.0)
    } else if let Some(n) = s.strip_suffix('k') {
        (n, 1_000.0)
    } else {
        (s.as_str(), 1.0)
    };
    let n: f64 = num.parse().with_context(|| format!("size {s:?}"))?;
    Ok((n * mult) as usize)
}

fn label(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}m", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// Clustered synthetic unit vectors: `n` data points and `q` queries from the same mixture.
struct Synthetic {
    centres: Vec<Vec<f32>>,
    rng: rand::rngs::StdRng,
}

impl Synthetic {
    fn new(seed: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let centres = (0..2000).map(|_| unit(&mut rng, 1.0)).collect();
        Synthetic { centres, rng }
    }

    fn next(&mut self) -> Vec<f32> {
        let c = self.rng.random_range(0..self.centres.len());
        let mut v: Vec<f32> = self.centres[c]
            .iter()
            .map(|x| x + gauss(&mut self.rng) * 0.045)
            .collect();
        keel_memory::embed::normalize(&mut v);
        v
    }
}

fn gauss(rng: &mut impl Rng) -> f32 {
    // Box–Muller.
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

fn unit(rng: &mut impl Rng, scale: f32) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM).map(|_| gauss(rng) * scale).collect();
    keel_memory::embed::normalize(&mut v);
    v
}

fn recall(found: &[&str], exact: &[&str]) -> f64 {
    let hit = found.iter().filter(|f| exact.contains(f)).count();
    hit as f64 / exact.len().max(1) as f64
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The embedded index at `n` vectors.
fn embedded(n: usize, nprobe: usize, out: &mut Map<String, Value>, quiet: bool) {
    let key = format!("embedded_{}", label(n));
    if !quiet {
        eprintln!("{key}: generating {n} vectors…");
    }
    let mut synth = Synthetic::new(42);
    let mut idx = VectorIndex::new(DIM);
    let mut writes = Vec::new();
    let build = Instant::now();
    for i in 0..n {
        let v = synth.next();
        let id = format!("f{i}");
        // Time the last 5 000 inserts (or all, if fewer): the steady state, index layer on.
        if i + 5000 >= n {
            let t = Instant::now();
            idx.insert(&id, &v);
            writes.push(ms(t.elapsed()));
        } else {
            idx.insert(&id, &v);
        }
    }
    let build_s = build.elapsed().as_secs_f64();
    idx.nprobe = nprobe;
    if !quiet {
        eprintln!(
            "{key}: built in {build_s:.1}s ({}); querying…",
            if idx.is_ivf() { "IVF" } else { "exact" }
        );
    }
    let queries: Vec<Vec<f32>> = (0..QUERIES).map(|_| synth.next()).collect();
    let mut times = Vec::new();
    let mut recalls = Vec::new();
    for q in &queries {
        let t = Instant::now();
        let found = idx.search(q, 10);
        times.push(ms(t.elapsed()));
        let exact = idx.search_exact(q, 10);
        let f: Vec<&str> = found.iter().map(|(id, _)| *id).collect();
        let e: Vec<&str> = exact.iter().map(|(id, _)| *id).collect();
        recalls.push(recall(&f, &e));
    }
    let (w, t) = (sorted(writes), sorted(times));
    out.insert(
        format!("{key}_index"),
        json!(if idx.is_ivf() { "ivf" } else { "exact" }),
    );
    out.insert(format!("{key}_build_s"), json!(build_s));
    out.insert(format!("{key}_write_p50_ms"), json!(pct(&w, 0.5)));
    out.insert(format!("{key}_write_p99_ms"), json!(pct(&w, 0.99)));
    out.insert(format!("{key}_query_p50_ms"), json!(pct(&t, 0.5)));
    out.insert(format!("{key}_query_p99_ms"), json!(pct(&t, 0.99)));
    out.insert(
        format!("{key}_recall10"),
        json!(recalls.iter().sum::<f64>() / recalls.len() as f64),
    );
}

/// A distilled fact as the runtime would write it: provenance pointing at a trace and two events.
fn fact(
    tenant: &str,
    subject: Option<&str>,
    text: &str,
    volatility: &str,
    trust: Trust,
) -> NewFact {
    NewFact {
        text: text.into(),
        volatility: volatility.into(),
        provenance: Provenance {
            tenant: tenant.into(),
            subject: subject.map(str::to_owned),
            trace_id: Some("0123456789abcdef0123456789abcdef".into()),
            exec_id: Some("exec-1".into()),
            event_seqs: vec![1, 7],
            strategy_version: Some("support-short@1".into()),
            written_at: SystemClock.now(),
            source: "distilled".into(),
            trust,
        },
    }
}

fn synthetic_fact(i: usize, tenant: &str) -> Fact {
    let now = SystemClock.now();
    let nf = fact(
        tenant,
        None,
        &format!("synthetic fact {i}"),
        "stable",
        Trust::ToolRecord,
    );
    Fact {
        id: format!("{i:012}"),
        tenant: tenant.into(),
        subject: None,
        text: nf.text,
        volatility: nf.volatility,
        tier: Tier::Episodic,
        status: Status::Active,
        semantic_from: None,
        semantic_to: None,
        created_at: now,
        expires_at: None,
        fresh_until: None,
        provenance: nf.provenance,
        pii: vec![],
        promoted_from: None,
        // Every query of the bench may see every synthetic fact.
        scope: keel_memory::Scope::Tenant,
    }
}

/// pgvector at `n` vectors.
async fn pgvector(n: usize, out: &mut Map<String, Value>, quiet: bool) -> anyhow::Result<()> {
    let key = format!("pgvector_{}", label(n));
    let server = PgServer::start()?;
    let url = server.create_database("bench").await?;
    let model = EmbeddingModel {
        name: "synthetic-clustered".into(),
        version: "bench".into(),
        dim: DIM,
    };
    let store = PgMemory::connect(&url, &model).await?;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let table = keel_memory::pg::vector_table(&model);
    let mut synth = Synthetic::new(42);
    let mut vectors: Vec<Vec<f32>> = Vec::with_capacity(n);
    // Bulk load all but the last 1 000 without the HNSW index (how one loads in bulk), build
    // the index, then time 1 000 inserts through the store (index maintained, RLS on).
    client
        .batch_execute(&format!("DROP INDEX IF EXISTS {table}_hnsw"))
        .await?;
    let timed = 1000.min(n);
    if !quiet {
        eprintln!("{key}: bulk loading {} vectors…", n - timed);
    }
    let started = Instant::now();
    let mut i = 0;
    while i < n - timed {
        let end = (i + 500).min(n - timed);
        let mut facts_sql = String::from(
            "INSERT INTO keel_facts (id, tenant, subject, tier, status, expires_ms, doc) VALUES ",
        );
        let mut vec_sql = format!("INSERT INTO {table} (fact_id, tenant, embedding) VALUES ");
        for j in i..end {
            let v = synth.next();
            let f = synthetic_fact(j, "bench");
            let doc = serde_json::to_string(&f)?.replace('\'', "''");
            let sep = if j > i { "," } else { "" };
            facts_sql.push_str(&format!(
                "{sep}('{}', 'bench', NULL, 'episodic', 'active', NULL, '{doc}')",
                f.id
            ));
            let lit: Vec<String> = v.iter().map(|x| x.to_string()).collect();
            vec_sql.push_str(&format!(
                "{sep}('{}', 'bench', '[{}]')",
                f.id,
                lit.join(",")
            ));
            vectors.push(v);
        }
        client.batch_execute(&facts_sql).await?;
        client.batch_execute(&vec_sql).await?;
        i = end;
    }
    client
        .batch_execute(&format!(
            "SET maintenance_work_mem = '1GB'; CREATE INDEX {table}_hnsw ON {table} USING hnsw (embedding vector_cosine_ops)"
        ))
        .await?;
    let load_s = started.elapsed().as_secs_f64();
    let mut writes = Vec::new();
    for j in n - timed..n {
        let v = synth.next();
        let f = synthetic_fact(j, "bench");
        let t = Instant::now();
        store.insert(&f, &v, &model).await?;
        writes.push(ms(t.elapsed()));
        vectors.push(v);
    }
    if !quiet {
        eprintln!("{key}: loaded and indexed in {load_s:.1}s; querying…");
    }
    let mut exact_index = VectorIndex::new(DIM);
    for (j, v) in vectors.iter().enumerate() {
        exact_index.insert(&format!("{j:012}"), v);
    }
    let mut times = Vec::new();
    let mut recalls = Vec::new();
    let now = SystemClock.now();
    for _ in 0..QUERIES {
        let q = synth.next();
        let t = Instant::now();
        let found = store.search("bench", None, &q, &model, 10, now, 0).await?;
        times.push(ms(t.elapsed()));
        let exact = exact_index.search_exact(&q, 10);
        let f: Vec<&str> = found.iter().map(|(f, _)| f.id.as_str()).collect();
        let e: Vec<&str> = exact.iter().map(|(id, _)| *id).collect();
        recalls.push(recall(&f, &e));
    }
    let (w, t) = (sorted(writes), sorted(times));
    out.insert(format!("{key}_load_s"), json!(load_s));
    out.insert(format!("{key}_write_p50_ms"), json!(pct(&w, 0.5)));
    out.insert(format!("{key}_write_p99_ms"), json!(pct(&w, 0.99)));
    out.insert(format!("{key}_query_p50_ms"), json!(pct(&t, 0.5)));
    out.insert(format!("{key}_query_p99_ms"), json!(pct(&t, 0.99)));
    out.insert(
        format!("{key}_recall10"),
        json!(recalls.iter().sum::<f64>() / recalls.len() as f64),
    );
    drop(store);
    drop(client);
    drop(server);
    Ok(())
}

/// The real path: PII screen + MiniLM + SQLite, on real sentences.
async fn real(data: &Path, out: &mut Map<String, Value>, quiet: bool) -> anyhow::Result<()> {
    let dir = data.join(format!("bench-memory-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    let result = async {
        let embedder = match &crate::config::current().embedder {
            crate::config::EmbedderChoice::MiniLm { dir: Some(d) } => MiniLm::load(d)?,
            _ => anyhow::bail!(
                "embedded_real: the configuration names no MiniLM directory (embedder.dir or KEEL_MINILM_DIR)"
            ),
        };
        let store = SqliteMemory::open(dir.join("memory.db"), embedder.model())?;
        let m = Memory::new(Arc::new(store), Arc::new(embedder), MemoryPolicy::default())?;
        if !quiet {
            eprintln!(
                "embedded_real: writing 300 facts through the PII screen, MiniLM and SQLite…"
            );
        }
        let subjects = [
            "invoices",
            "deliveries",
            "refunds",
            "returns",
            "exports",
            "support hours",
        ];
        let mut writes = Vec::new();
        let now = SystemClock.now();
        for i in 0..300 {
            let text = format!(
                "Customer {i} prefers {} handled by {} on {}",
                subjects[i % subjects.len()],
                ["e-mail", "phone", "the portal", "post"][i % 4],
                ["Mondays", "Fridays", "weekends", "mornings", "evenings"][i % 5]
            );
            let t = Instant::now();
            m.write_tenant_wide(fact("bench", None, &text, "preference", Trust::Agent), now)
                .await?;
            writes.push(ms(t.elapsed()));
        }
        let mut times = Vec::new();
        for i in 0..100 {
            let q = Query {
                tenant: "bench".into(),
                subject: None,
                text: format!(
                    "how does customer {i} want {} handled",
                    subjects[i % subjects.len()]
                ),
                k: 10,
                min_score: 0.0,
                semantic_version: None,
            };
            let t = Instant::now();
            m.retrieve(&q, now).await?;
            times.push(ms(t.elapsed()));
        }
        let (w, t) = (sorted(writes), sorted(times));
        out.insert("embedded_real_write_p50_ms".into(), json!(pct(&w, 0.5)));
        out.insert("embedded_real_write_p99_ms".into(), json!(pct(&w, 0.99)));
        out.insert("embedded_real_query_p50_ms".into(), json!(pct(&t, 0.5)));
        out.insert("embedded_real_query_p99_ms".into(), json!(pct(&t, 0.99)));
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Runs the benchmark; `sizes` is a comma list of `embedded:N` / `pgvector:N` (a bare `N` is
/// embedded), N like `10k` or `1m`.
pub async fn run(data: &Path, json_out: bool, sizes: &str, nprobe: usize) -> anyhow::Result<()> {
    let mut out = Map::new();
    real(data, &mut out, json_out).await?;
    for item in sizes.split(',').filter(|s| !s.trim().is_empty()) {
        let (backend, size) = item.trim().split_once(':').unwrap_or(("embedded", item));
        let n = parse_size(size)?;
        anyhow::ensure!(n >= 10, "size {item:?}: at least 10 vectors");
        match backend {
            "embedded" => embedded(n, nprobe, &mut out, json_out),
            "pgvector" => pgvector(n, &mut out, json_out).await?,
            other => anyhow::bail!("unknown backend {other:?} in --sizes (embedded, pgvector)"),
        }
    }
    out.insert(
        "vectors".into(),
        json!("synthetic clustered 384-d unit vectors (index runs); real MiniLM (embedded_real_*)"),
    );
    if json_out {
        println!("{}", Value::Object(out));
    } else {
        println!("{:<36} {:>14}", "figure", "value");
        for (k, v) in &out {
            match v.as_f64() {
                Some(f) => println!("{k:<36} {f:>14.3}"),
                None => println!("{k:<36} {:>14}", v.as_str().unwrap_or_default()),
            }
        }
    }
    Ok(())
}
