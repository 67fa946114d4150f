//! `keel bench <name>`: benchmarks that print figures (a table, or one JSON object with
//! `--json`). They measure; they never assert anything about time.

mod gates;
mod mcp;
mod memory;
mod observe;
mod resume;
mod serve;
mod spine;
mod spine_pg;
mod steps;
mod steps_pg;
mod tools;
mod workload;

use clap::Subcommand;
use std::path::Path;

/// What to measure.
#[derive(Subcommand)]
pub enum Target {
    /// Spine append throughput (single, batched, concurrent, durability off), fold time, and
    /// the fsync latency of the store's disk measured in the same run.
    Spine {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Seconds to run each append scenario.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Run only this scenario (single, batch, conc8, conc64, nosync), for profiling.
        #[arg(long, hide = true)]
        only: Option<String>,
        /// `embedded` (SQLite, beside one fsync) or `postgres` (beside PostgreSQL's own
        /// single-row commit latency; a throwaway server from `$KEEL_TEST_PG_BIN` unless `--url`).
        #[arg(long, default_value = "embedded")]
        backend: String,
        /// With `--backend postgres`: the server to measure instead of a throwaway one.
        #[arg(long)]
        url: Option<String>,
        /// With `--backend postgres`: in-flight executions of a dead worker that three workers
        /// then claim (the storage side of resume).
        #[arg(long, default_value_t = 10_000)]
        resume: usize,
    },
    /// What the platform adds per agent step: a 40-step execution (instant scripted model,
    /// no-op read-only tool) under every_step and before_effects durability, against one fsync.
    StepOverhead {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Seconds of driving per scenario (executions are repeated until it is spent).
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// `embedded` (SQLite, beside one fsync) or `postgres` (worker processes on one
        /// PostgreSQL spine, beside its single-row commit latency; a throwaway server from
        /// `$KEEL_TEST_PG_BIN` unless `--url`).
        #[arg(long, default_value = "embedded")]
        backend: String,
        /// With `--backend postgres`: the server to measure instead of a throwaway one.
        #[arg(long)]
        url: Option<String>,
        /// With `--backend postgres`: comma list of worker process counts to compare.
        #[arg(long, default_value = "1,3")]
        workers: String,
        /// With `--backend postgres`: executions in flight, shared by the workers.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// With `--backend postgres`: turns per scenario (the scenarios alternate).
        #[arg(long, default_value_t = 2)]
        turns: usize,
        /// With `--backend postgres`: also run every scenario with the rate budgets decided
        /// apart from the spine's commits (the design before decision 125), for comparison.
        #[arg(long)]
        compare_rates_apart: bool,
    },
    /// A worker process of `keel bench step-overhead --backend postgres`.
    #[command(hide = true)]
    StepWorker {
        /// The bench's tools, strategies and prices.
        #[arg(long)]
        files: std::path::PathBuf,
        /// Executions kept in flight.
        #[arg(long)]
        concurrency: usize,
        /// Seconds to drive after the start signal.
        #[arg(long)]
        seconds: f64,
        /// Decide rate budgets apart from the spine's commits (the design before decision 125).
        #[arg(long)]
        rates_apart: bool,
    },
    /// Projections at scale: load and project N events, projection lag under a steady load,
    /// trace lookup by trace_id, and the seed's economics query over every execution.
    Observe {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Events to store (7 per execution).
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Events per second offered while measuring projection lag.
        #[arg(long, default_value_t = 20_000)]
        lag_rate: u64,
        /// Where the projections live: `embedded` (SQLite file) or `postgres` (a throwaway
        /// PostgreSQL from `$KEEL_TEST_PG_BIN`).
        #[arg(long, default_value = "embedded")]
        backend: String,
    },
    /// Per-call overhead of the tool contract layer (validation, ledger, events, blob) against
    /// the bare builtin call measured in the same run, durability on and off.
    Tools {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Calls per scenario.
        #[arg(long, default_value_t = 300)]
        calls: u32,
    },
    /// A tool call on a real MCP server over Streamable HTTP: the bare MCP call against the
    /// same call through the contract layer, durability on and off, p50/p99, in one run.
    Mcp {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Calls per scenario.
        #[arg(long, default_value_t = 300)]
        calls: u32,
        /// The server's Streamable HTTP URL (`http://host:port/mcp`).
        #[arg(long)]
        url: String,
        /// The tool to call.
        #[arg(long, default_value = "echo")]
        tool: String,
        /// Its arguments, a JSON object.
        #[arg(long, default_value = r#"{"message": "bench"}"#)]
        args: String,
    },
    /// An approval gate's round trip: step to `gate.requested`, the decision, resume to the
    /// end, p50/p99 each, beside one fsync measured in the same run.
    Gates {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Gates to measure.
        #[arg(long, default_value_t = 300)]
        gates: usize,
    },
    /// Resume after a crash: N executions of the 40-step workload in flight when their worker
    /// process is SIGKILLed half-way; time from the new worker's spawn to the first new step and
    /// to every execution resumed.
    Resume {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Comma list of execution counts to measure (like `1,10000` or `10k`).
        #[arg(long, default_value = "1,10000")]
        executions: String,
        /// `embedded` (SQLite; one worker restarts) or `postgres` (a throwaway server from
        /// `$KEEL_TEST_PG_BIN`, fsync on; three workers take the dead one's executions over).
        #[arg(long, default_value = "embedded")]
        backend: String,
    },
    /// The worker process `keel bench resume` kills and restarts.
    #[command(hide = true)]
    ResumeWorker {
        /// The bench's tools, strategies and prices.
        #[arg(long)]
        files: std::path::PathBuf,
        /// Executions driven at a time.
        #[arg(long)]
        concurrency: usize,
    },
    /// Governed memory: write and top-10 query latency (p50/p99) and recall@10 against exact
    /// search, per backend and size, plus the real MiniLM write/retrieval path.
    Memory {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Comma list of `embedded:N` / `pgvector:N` (N like 10k, 1m; a bare N is embedded).
        #[arg(long, default_value = "embedded:10k,embedded:1m,pgvector:100k")]
        sizes: String,
        /// Inverted lists a query scans in the embedded index's IVF layer.
        #[arg(long, default_value_t = 48)]
        nprobe: usize,
    },
    /// `keel serve` over a large store: its resident memory and the time of `/metrics` scrapes
    /// (the first after a cold start, the first after a restart, steady ones).
    ServeMetrics {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Executions to store (7 events each).
        #[arg(long, default_value_t = 1_000_000)]
        executions: u64,
    },
}

/// Runs the chosen benchmark.
pub async fn run(data: &Path, target: Target) -> anyhow::Result<()> {
    match target {
        Target::Spine {
            json,
            seconds,
            only,
            backend,
            url,
            resume,
        } => match backend.as_str() {
            "embedded" => spine::run(data, json, seconds, only.as_deref()).await,
            "postgres" => spine_pg::run(json, seconds, url.as_deref(), resume).await,
            other => anyhow::bail!("--backend {other:?}: expected embedded or postgres"),
        },
        Target::Tools { json, calls } => tools::run(data, json, calls).await,
        Target::Mcp {
            json,
            calls,
            url,
            tool,
            args,
        } => mcp::run(data, json, calls, &url, &tool, &args).await,
        Target::StepOverhead {
            json,
            seconds,
            backend,
            url,
            workers,
            concurrency,
            turns,
            compare_rates_apart,
        } => match backend.as_str() {
            "embedded" => steps::run(data, json, seconds).await,
            "postgres" => {
                steps_pg::run(
                    data,
                    json,
                    seconds,
                    url.as_deref(),
                    &workers,
                    concurrency,
                    turns,
                    compare_rates_apart,
                )
                .await
            }
            other => anyhow::bail!("--backend {other:?}: expected embedded or postgres"),
        },
        Target::StepWorker {
            files,
            concurrency,
            seconds,
            rates_apart,
        } => steps_pg::worker(data, &files, concurrency, seconds, rates_apart).await,
        Target::Gates { json, gates } => gates::run(data, json, gates).await,
        Target::Resume {
            json,
            executions,
            backend,
        } => resume::run(data, json, &executions, &backend).await,
        Target::ResumeWorker { files, concurrency } => {
            resume::worker(data, &files, concurrency).await
        }
        Target::Memory {
            json,
            sizes,
            nprobe,
        } => memory::run(data, json, &sizes, nprobe).await,
        Target::Observe {
            json,
            events,
            lag_rate,
            backend,
        } => observe::run(data, json, events, lag_rate, &backend).await,
        Target::ServeMetrics { json, executions } => serve::run(data, json, executions).await,
    }
}
