//! A fixed ledger of finished executions for the economics tests: two tenants, three strategy
//! versions, over three days, with costs chosen so every figure can be computed by hand. It is
//! appended straight to the store's spine (`DATA/spine.db`) with chosen timestamps; the binary
//! then projects it like any other events. Included with `#[path]` by the tests that use it.

#![allow(clippy::unwrap_used, dead_code)]

use chrono::Duration;
use keel_core::payload::{Budget, ExecStarted, Outcome, Payload, ToolStatus};
use keel_core::{Cost, Event};
use keel_spine::clock::{Clock, SystemClock};
use keel_spine::{EventLog, SqliteLog, SqliteOptions};
use keel_testkit::builder::{ExecBuilder, exec_id};
use std::path::Path;

/// The cheap strategy version of tenant acme.
pub const SHORT: &str = "support-short/v1";
/// The thorough one (both tenants).
pub const LONG: &str = "support-long/v1";
/// A version only globex runs: acme must never see its name.
pub const SECRET: &str = "globex-secret/v9";

/// (n, tenant, strategy version, days ago, model cost per step in micro-USD, success). Every
/// step also calls `lookup_order`, which costs 90 micro-USD.
pub type Entry = (u64, &'static str, &'static str, i64, &'static [u64], bool);

/// The ledger.
pub const LEDGER: &[Entry] = &[
    (1, "acme", SHORT, 2, &[10_000], true),
    (2, "acme", SHORT, 2, &[20_000], false),
    (3, "acme", SHORT, 1, &[10_000], true),
    (4, "acme", LONG, 2, &[50_000, 50_000], true),
    (5, "acme", LONG, 1, &[50_000, 50_000, 50_000], true),
    (6, "globex", LONG, 1, &[900_000], true),
    (7, "globex", SECRET, 0, &[70_000], true),
];

/// The UTC day `days_ago` days before today.
pub fn day(days_ago: i64) -> String {
    (SystemClock.now() - Duration::days(days_ago))
        .format("%Y-%m-%d")
        .to_string()
}

fn events(
    n: u64,
    tenant: &str,
    strategy: &str,
    days_ago: i64,
    steps: &[u64],
    ok: bool,
) -> Vec<Event> {
    let mut b = ExecBuilder::new(exec_id(n), tenant);
    b.push(Payload::ExecStarted(ExecStarted {
        goal: format!("goal {n}"),
        strategy_version: strategy.into(),
        budget: Budget::default(),
        experiment_arm: None,
        replay_of: None,
        experiment: None,
    }));
    let mut b = b.plan();
    for micros in steps {
        b = b
            .model_call(100, 10, Cost::Known(*micros))
            .tool_call("lookup_order", ToolStatus::Ok)
            .step_completed();
    }
    let outcome = if ok {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    let mut events = b.finished(outcome).build();
    // Shifted to the first second of the UTC day `days_ago` days before today.
    let base = (SystemClock.now() - Duration::days(days_ago))
        .date_naive()
        .and_hms_opt(0, 0, 1)
        .unwrap()
        .and_utc();
    let first = events[0].ts;
    for e in &mut events {
        e.ts = base + (e.ts - first);
    }
    events
}

/// Appends the ledger to the spine of the store `data` (created if need be).
pub fn write(data: &Path) {
    std::fs::create_dir_all(data).unwrap();
    let log = SqliteLog::open(data.join("spine.db"), SqliteOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (n, tenant, strategy, days_ago, steps, ok) in LEDGER {
        let events = events(*n, tenant, strategy, *days_ago, steps, *ok);
        rt.block_on(log.append(events[0].exec_id, 0, &events))
            .unwrap();
    }
}
