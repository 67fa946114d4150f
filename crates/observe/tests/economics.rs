//! Economics on every projection backend (a SQLite file; a real PostgreSQL), fed by a real
//! SQLite spine with the fixed data set of `common/mod.rs`: the per-strategy table, cost by
//! tenant, tool and model, and the per-day series against values computed by hand, for every
//! tenant and for one tenant (which sees nothing of the other's).

#![allow(clippy::unwrap_used)]

mod common;

use chrono::Duration;
use common::Stores;
use keel_observe::economics::{Economics, compute};
use keel_spine::clock::{Clock, SystemClock};

on_every_backend!(economics_match_hand_computed_numbers);

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

fn some(a: Option<f64>, b: f64) {
    close(a.unwrap(), b);
}

fn day(days_ago: i64) -> String {
    (SystemClock.now() - Duration::days(days_ago))
        .format("%Y-%m-%d")
        .to_string()
}

async fn economics_match_hand_computed_numbers(stores: &Stores) {
    let dir = tempfile::tempdir().unwrap();
    let log = common::seed(&dir.path().join("spine.db")).await;
    let mut p = stores.open("observe").await;
    p.catch_up(&log).await.unwrap();
    let since = day(14);

    // Every tenant. Execution 6 (30 days old) is outside the window. Each tool call costs
    // 90 µ$; s-short: 0.01009, 0.02009 (successes), 0.03009 (failure); s-long: 0.15027
    // (acme, success), 0.10018 (globex, failure).
    let e: Economics = compute(&*p, &since, None).await.unwrap();
    assert_eq!(e.since, since);
    let names: Vec<&str> = e
        .strategies
        .iter()
        .map(|s| s.strategy_version.as_str())
        .collect();
    assert_eq!(names, ["s-short", "s-long"], "cheapest per success first");
    let s = &e.strategies[0];
    assert_eq!((s.executions, s.successes), (3, 2));
    some(s.success_rate, 2.0 / 3.0);
    some(s.p50_cost, 0.02009);
    some(s.p95_cost, 0.02009 + 0.9 * 0.01);
    some(s.p95_steps, 1.0);
    some(s.gates_per_exec, 0.0);
    close(s.total_cost, 0.06027);
    some(s.cost_per_success, 0.06027 / 2.0);
    let l = &e.strategies[1];
    assert_eq!((l.executions, l.successes), (2, 1));
    some(l.success_rate, 0.5);
    some(l.p95_cost, 0.10018 + 0.95 * 0.05009);
    some(l.gates_per_exec, 1.0);
    some(l.cost_per_success, 0.15027 + 0.10018);

    let tenants: Vec<(&str, u64, u64)> = e
        .tenants
        .iter()
        .map(|t| (t.tenant.as_str(), t.executions, t.successes))
        .collect();
    assert_eq!(tenants, [("acme", 4, 3), ("globex", 1, 0)]);
    close(e.tenants[0].total_cost, 0.21054);
    some(e.tenants[0].cost_per_success, 0.21054 / 3.0);
    close(e.tenants[1].total_cost, 0.10018);
    assert_eq!(e.tenants[1].cost_per_success, None);

    assert_eq!(e.tools.len(), 1);
    let t = &e.tools[0];
    assert_eq!(
        (t.name.as_str(), t.calls, t.failures),
        ("lookup_order", 8, 1)
    );
    close(t.cost, 8.0 * 0.00009);
    assert_eq!(e.models.len(), 1);
    assert_eq!(
        (e.models[0].name.as_str(), e.models[0].calls),
        ("scripted", 8)
    );
    close(e.models[0].cost, 0.31);

    // One point per strategy version and day; a day without a success is a gap (None).
    let series: Vec<(String, &str, Option<f64>)> = e
        .series
        .iter()
        .map(|p| {
            (
                p.day.clone(),
                p.strategy_version.as_str(),
                p.cost_per_success,
            )
        })
        .collect();
    assert_eq!(
        series,
        [
            (day(3), "s-short", None),
            (day(2), "s-long", None),
            (day(2), "s-short", Some(0.02009)),
            (day(1), "s-long", Some(0.15027)),
            (day(1), "s-short", Some(0.01009)),
        ]
    );

    // One tenant sees only its own figures: globex has none of acme's.
    let g = compute(&*p, &since, Some("globex")).await.unwrap();
    assert_eq!(g.tenant.as_deref(), Some("globex"));
    assert_eq!(g.strategies.len(), 1);
    assert_eq!(g.strategies[0].strategy_version, "s-long");
    assert_eq!(g.strategies[0].executions, 1);
    assert_eq!(g.strategies[0].cost_per_success, None);
    assert_eq!(g.tenants.len(), 1);
    assert_eq!(g.tenants[0].tenant, "globex");
    assert_eq!((g.tools[0].calls, g.tools[0].failures), (2, 0));
    close(g.tools[0].cost, 2.0 * 0.00009);
    assert_eq!(g.series.len(), 1);
    let text = serde_json::to_string(&g).unwrap();
    assert!(
        !text.contains("acme") && !text.contains("s-short"),
        "{text}"
    );

    // A malformed window start is refused, naming it.
    let err = compute(&*p, "last week", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("economics window start"), "{err}");
}
