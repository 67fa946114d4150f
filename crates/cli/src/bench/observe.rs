//! `keel bench observe`: the projections and SQL at scale.
//!
//! 1. Loads N events (default 10 M) into a scratch spine, as short executions of seven events
//!    (started, model call and reply, tool call and result, step, finish), so 10 M events are
//!    about 1.4 M executions; then projects them (projection throughput).
//! 2. Projection lag under load: a writer appends executions at a fixed rate while the consumer
//!    follows; lag = when the consumer committed an event's rows − the event's timestamp (taken
//!    just before its append), p50 and p99.
//! 3. Trace lookup: the seed's query `SELECT step_n, event_type, summary FROM traces.steps
//!    WHERE trace_id = …` for random trace ids, p50 and p99.
//! 4. The seed's economics query over every execution, and everything `keel economics` shows.
//!
//! `--backend postgres` runs the same against the scaled path: the projections in a throwaway
//! PostgreSQL (from `$KEEL_TEST_PG_BIN`, as `keel bench memory` does) instead of the SQLite file.
//!
//! It measures; it never asserts anything about time.

use super::spine::Scratch;
use anyhow::Context;
use keel_core::payload::*;
use keel_core::{CURRENT_SCHEMA_VERSION, Cost, Event, ExecId, TenantId, Tokens, TraceId};
use keel_observe::sql::{self, Rows, Scope};
use keel_observe::{Backend, ProjectionStore};
use keel_spine::clock::Clock;
use keel_spine::{Durability, EventLog, SqliteLog, SqliteOptions, clock};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const ECONOMICS: &str = "SELECT strategy_version, COUNT(*) AS executions, AVG(outcome_success::int) AS success_rate, APPROX_PERCENTILE(total_cost, 0.5) AS p50_cost, APPROX_PERCENTILE(total_cost, 0.95) AS p95_cost, APPROX_PERCENTILE(steps_n, 0.95) AS p95_steps, AVG(gate_escalations) AS gates_per_exec, SUM(total_cost) / NULLIF(SUM(outcome_success::int),0) AS cost_per_success FROM gold.executions WHERE started_at >= CURRENT_DATE - 14 GROUP BY 1 ORDER BY cost_per_success";

/// A small deterministic generator (xorshift64*): figures vary with the data, not the seed.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// One short execution (7 events) with fresh ids, timestamped now.
pub(super) fn execution(rng: &mut Rng, n: u64) -> (Vec<Event>, TraceId) {
    let exec_id: ExecId = clock::new_exec_id();
    let trace_id = clock::new_trace_id();
    let tenant = TenantId(format!("tenant-{}", n % 8));
    let strategy = if n.is_multiple_of(2) {
        "support-short"
    } else {
        "support-long"
    };
    let success = rng.chance(0.8);
    let cost = rng.range(500, 50_000);
    let tokens = Tokens {
        input: rng.range(200, 4000),
        output: rng.range(20, 400),
    };
    let payloads = vec![
        Payload::ExecStarted(ExecStarted {
            goal: format!("where is order A-{}", 1000 + n % 50),
            strategy_version: strategy.into(),
            budget: Budget::default(),
            experiment_arm: None,
            replay_of: None,
            experiment: None,
        }),
        Payload::ModelCalled(ModelCalled {
            call_id: "m1".into(),
            model: "scripted-small".into(),
            prompt_version: Some("v1".into()),
            request_ref: None,
        }),
        Payload::ModelResponded(ModelResponded {
            call_id: "m1".into(),
            model: "scripted-small".into(),
            tokens,
            cost: Cost::Known(cost),
            latency_ms: 120,
            response_ref: None,
            error: None,
        }),
        Payload::ToolCalled(ToolCalled {
            call_id: "t1".into(),
            tool: "lookup_order".into(),
            args: json!({"order_id": format!("A-{}", 1000 + n % 50)}),
            idempotency_key: None,
            est_cost: Cost::Known(100),
            attempt: 1,
        }),
        Payload::ToolResult(ToolResult {
            call_id: "t1".into(),
            tool: "lookup_order".into(),
            status: if success {
                ToolStatus::Ok
            } else {
                ToolStatus::Error
            },
            output_ref: None,
            actual_cost: Cost::Known(90),
            latency_ms: 15,
            error_class: None,
            errors: vec![],
        }),
        Payload::StepCompleted(StepCompleted {
            summary: Some("looked up the order".into()),
        }),
        Payload::ExecFinished(ExecFinished {
            outcome: if success {
                Outcome::Success
            } else {
                Outcome::Failure
            },
            steps_n: 1,
            tokens,
            cost: Cost::Known(cost + 90),
            trace_id,
            detail: None,
        }),
    ];
    let now = clock::SystemClock.now();
    let events = payloads
        .into_iter()
        .enumerate()
        .map(|(i, payload)| Event {
            event_id: clock::new_event_id(),
            exec_id,
            tenant: tenant.clone(),
            seq: i as u64 + 1,
            ts: now,
            trace_id,
            step_n: u32::from(i >= 6),
            schema_version: CURRENT_SCHEMA_VERSION,
            payload,
        })
        .collect();
    (events, trace_id)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A query on the embedded file's reused read connection (as a server holds one), or through
/// the store (PostgreSQL: its one connection).
async fn query(
    conn: Option<&rusqlite::Connection>,
    store: &dyn ProjectionStore,
    q: &str,
) -> anyhow::Result<Rows> {
    Ok(match conn {
        Some(c) => sql::query(c, q)?,
        None => store.query(&Scope::Admin, q).await?,
    })
}

/// Runs the benchmark on `backend` (`embedded` or `postgres`).
pub async fn run(
    data: &Path,
    json_out: bool,
    events: u64,
    lag_rate: u64,
    backend: &str,
) -> anyhow::Result<()> {
    let scratch = Scratch(data.join(format!("bench-{}", uuid::Uuid::new_v4().simple())));
    std::fs::create_dir_all(&scratch.0)
        .with_context(|| format!("creating {}", scratch.0.display()))?;
    let say = |m: String| {
        if !json_out {
            eprintln!("{m}");
        }
    };
    let log = SqliteLog::open(
        scratch.0.join("spine.db"),
        SqliteOptions {
            durability: Durability::Off,
        },
    )?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let execs = events.div_ceil(7);
    say(format!(
        "loading {} events ({execs} executions)…",
        execs * 7
    ));
    let t = Instant::now();
    let mut traces: Vec<TraceId> = Vec::with_capacity(4096);
    for n in 0..execs {
        let (batch, trace) = execution(&mut rng, n);
        log.append(batch[0].exec_id, 0, &batch).await?;
        if traces.len() < 4096 || rng.chance(0.001) {
            traces.push(trace);
        }
    }
    let load_s = t.elapsed().as_secs_f64();
    say(format!("projecting {} events…", execs * 7));
    let proj_path = scratch.0.join("observe.db");
    let server = match backend {
        "embedded" => None,
        "postgres" => Some(keel_memory::pgserver::PgServer::start()?),
        other => anyhow::bail!("--backend {other:?}: expected embedded or postgres"),
    };
    let store_backend = match &server {
        Some(s) => Backend::Postgres(s.create_database("bench").await?),
        None => Backend::Sqlite(proj_path.clone()),
    };
    let mut projector = store_backend.open().await?;
    let t = Instant::now();
    let projected = projector.catch_up(&log).await?;
    let project_s = t.elapsed().as_secs_f64();

    // Lag under a steady offered load.
    say(format!(
        "projection lag: appending {lag_rate} events/s for 5 s while the consumer follows…"
    ));
    let writer_log = log.clone();
    let lag_execs = lag_rate.saturating_mul(5).div_ceil(7);
    let writer = tokio::spawn(async move {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let start = Instant::now();
        // Execution n (7 events) is due at 7n / lag_rate seconds, in whole nanoseconds.
        for n in 0..lag_execs {
            let due =
                start + Duration::from_nanos(n.saturating_mul(7_000_000_000) / lag_rate.max(1));
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
            let (batch, _) = execution(&mut rng, n);
            writer_log.append(batch[0].exec_id, 0, &batch).await?;
        }
        anyhow::Ok(())
    });
    let mut lags: Vec<f64> = Vec::new();
    let target = projector.next_offset() + lag_execs * 7;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut stop_tx = Some(stop_tx);
    keel_observe::store::follow(
        &mut *projector,
        &log,
        Duration::from_millis(2),
        |batch| {
            let now = clock::SystemClock.now();
            for c in batch {
                let lag = (now - c.event.ts).num_microseconds().unwrap_or(0) as f64 / 1000.0;
                lags.push(lag);
                if c.offset + 1 >= target
                    && let Some(tx) = stop_tx.take()
                {
                    let _ = tx.send(());
                }
            }
        },
        async {
            let _ = stop_rx.await;
        },
    )
    .await?;
    writer.await??;
    lags.sort_by(f64::total_cmp);

    // Trace lookups by trace id (the seed's query), on a fresh read-only connection.
    let conn = match server {
        None => Some(sql::connect(&proj_path, &Scope::Admin)?),
        Some(_) => None,
    };
    let mut lookups = Vec::new();
    for i in 0..1000 {
        let trace = traces[rng.range(0, traces.len() as u64) as usize];
        let q = format!(
            "SELECT step_n, event_type, summary FROM traces.steps WHERE trace_id = '{trace}'"
        );
        let t = Instant::now();
        let rows = query(conn.as_ref(), &*projector, &q).await?;
        lookups.push(t.elapsed().as_secs_f64() * 1000.0);
        if i == 0 && rows.rows.len() != 7 {
            anyhow::bail!(
                "trace {trace} returned {} rows, expected 7",
                rows.rows.len()
            );
        }
    }
    lookups.sort_by(f64::total_cmp);

    // The economics query over every execution; median of three runs.
    let executions = query(
        conn.as_ref(),
        &*projector,
        "SELECT count(*) FROM gold.executions",
    )
    .await?
    .rows[0][0]
        .as_u64()
        .unwrap_or(0);
    let mut econ = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let rows = query(conn.as_ref(), &*projector, ECONOMICS).await?;
        econ.push(t.elapsed().as_secs_f64() * 1000.0);
        if rows.rows.len() != 2 {
            anyhow::bail!("economics query returned {} rows", rows.rows.len());
        }
    }
    econ.sort_by(f64::total_cmp);
    // `keel economics` (per strategy, tenant, tool, model and day) over every execution.
    let since = keel_observe::economics::since(clock::SystemClock.now(), 14)?;
    let mut report = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let e = keel_observe::economics::compute(&*projector, &since, None).await?;
        report.push(t.elapsed().as_secs_f64() * 1000.0);
        if e.strategies.len() != 2 {
            anyhow::bail!("economics has {} strategy rows", e.strategies.len());
        }
    }
    report.sort_by(f64::total_cmp);
    let stored = log.read_all(1, 1).await?;
    drop(stored);

    let store_mb = match &server {
        None => std::fs::metadata(&proj_path)
            .map(|m| m.len() as f64 / 1e6)
            .unwrap_or(0.0),
        Some(_) => {
            query(
                None,
                &*projector,
                "SELECT pg_database_size(current_database())",
            )
            .await?
            .rows[0][0]
                .as_f64()
                .unwrap_or(0.0)
                / 1e6
        }
    };
    let out = json!({
        "backend": backend,
        "events": execs * 7 + lag_execs * 7,
        "executions": executions,
        "load_events_per_s": (execs * 7) as f64 / load_s,
        "projection_events_per_s": projected as f64 / project_s,
        "projection_lag_rate_events_per_s": lag_rate,
        "projection_lag_ms_p50": pct(&lags, 0.5),
        "projection_lag_ms_p99": pct(&lags, 0.99),
        "trace_lookup_ms_p50": pct(&lookups, 0.5),
        "trace_lookup_ms_p99": pct(&lookups, 0.99),
        "economics_query_ms": pct(&econ, 0.5),
        "economics_report_ms": pct(&report, 0.5),
        "projection_file_mb": store_mb,
    });
    if json_out {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let f = |k: &str| out[k].as_f64().unwrap_or(0.0);
        println!("projections                    {:>12}", backend);
        println!("events stored                  {:>12}", out["events"]);
        println!("executions                     {:>12}", out["executions"]);
        println!(
            "spine load (durability off)    {:>12.0} events/s",
            f("load_events_per_s")
        );
        println!(
            "projection catch-up            {:>12.0} events/s",
            f("projection_events_per_s")
        );
        println!(
            "projection lag at {lag_rate} ev/s    p50 {:>8.2} ms   p99 {:>8.2} ms",
            f("projection_lag_ms_p50"),
            f("projection_lag_ms_p99")
        );
        println!(
            "trace lookup by trace_id       p50 {:>8.3} ms   p99 {:>8.3} ms  (target < 10 ms)",
            f("trace_lookup_ms_p50"),
            f("trace_lookup_ms_p99")
        );
        println!(
            "economics query ({} executions) {:>10.1} ms",
            out["executions"],
            f("economics_query_ms")
        );
        println!(
            "keel economics (every table)   {:>12.1} ms",
            f("economics_report_ms")
        );
        println!(
            "projection store size          {:>12.1} MB",
            f("projection_file_mb")
        );
    }
    Ok(())
}
