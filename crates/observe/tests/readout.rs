//! An experiment's readout on every projection backend (a SQLite file; a real PostgreSQL), fed
//! by a real SQLite spine: the figures per arm against values computed by hand for a fixed data
//! set, the delta-method standard errors, the tenant filter, and each kind of verdict (issue 15).

#![allow(clippy::unwrap_used)]

mod common;

use chrono::{DateTime, Duration, Utc};
use common::Stores;
use keel_core::Cost;
use keel_core::experiment::registry::{Registered, Status};
use keel_core::experiment::{
    Arm, Assignment, Direction, Experiment, GuardMetric, Guardrail, Metric, Unit,
};
use keel_core::payload::{Outcome, Payload, ToolStatus, Verdict};
use keel_observe::readout::{Readout, readout};
use keel_testkit::builder::{ExecBuilder, exec_id};

on_every_backend!(readout_matches_hand_computed_numbers);

fn close(a: Option<f64>, b: f64) {
    let a = a.unwrap();
    assert!((a - b).abs() < 1e-12, "{a} != {b}");
}

/// One finished execution: one step whose model call costs `model_micros` (the tool call adds
/// 90 µUSD), in `experiment`/`arm` for `unit`.
#[allow(clippy::too_many_arguments)]
fn execution(
    n: u64,
    tenant: &str,
    experiment: &str,
    arm: &str,
    unit: &str,
    model_micros: u64,
    gate: Option<Verdict>,
    outcome: Option<Outcome>,
) -> Vec<keel_core::Event> {
    let mut b = ExecBuilder::new(exec_id(n), tenant);
    b.push(Payload::ExecStarted(keel_core::payload::ExecStarted {
        goal: format!("goal {n}"),
        strategy_version: format!("{arm}/v1/m/0000"),
        budget: Default::default(),
        experiment_arm: Some(arm.into()),
        replay_of: None,
        experiment: Some(Assignment {
            experiment: experiment.into(),
            arm: arm.into(),
            bucket: 7,
            unit_key: unit.into(),
        }),
    }));
    let mut b = b.plan().model_call(100, 10, Cost::Known(model_micros));
    if let Some(v) = gate {
        b = b.gate(v);
    }
    b = b.tool_call("lookup_order", ToolStatus::Ok).step_completed();
    match outcome {
        Some(o) => b.finished(o).build(),
        None => b.build(),
    }
}

fn registered(min_sample: u64, end: DateTime<Utc>, guard_rejections: bool) -> Registered {
    let arm = |name: &str, holdback| Arm {
        name: name.into(),
        strategy: format!("s-{name}"),
        weight: 1,
        holdback,
    };
    let mut guardrails = vec![Guardrail {
        metric: GuardMetric::SuccessRate,
        direction: Direction::AtLeast,
        bound: 0.5,
        on_breach: Default::default(),
    }];
    if guard_rejections {
        guardrails.push(Guardrail {
            metric: GuardMetric::GateRejectionRate,
            direction: Direction::AtMost,
            bound: 0.5,
            on_breach: Default::default(),
        });
    }
    Registered {
        experiment: Experiment {
            name: "exp".into(),
            salt: "exp".into(),
            unit: Unit::Subject,
            arms: vec![arm("control", true), arm("new", false)],
            primary_metric: Metric::CostPerSuccess,
            guardrails,
            min_sample,
            start: end - Duration::days(30),
            end,
            layer: "default".into(),
            traffic_buckets: 10_000,
            tenants: None,
            tier_cap: 1,
        },
        layer_range: (0, 10_000),
        registered_at: end - Duration::days(30),
        by: "test".into(),
        status: Status::Running,
        stopped_arms: Default::default(),
        breached: Default::default(),
    }
}

async fn readout_matches_hand_computed_numbers(stores: &Stores) {
    use Outcome::{Failure, Success};
    let dir = tempfile::tempdir().unwrap();
    let log = keel_spine::SqliteLog::open(dir.path().join("spine.db"), Default::default()).unwrap();
    let rows = [
        // control: u1 twice (one success), u2 once (a success).
        execution(
            1,
            "acme",
            "exp",
            "control",
            "u1",
            10_000,
            None,
            Some(Success),
        ),
        execution(
            2,
            "acme",
            "exp",
            "control",
            "u1",
            20_000,
            None,
            Some(Failure),
        ),
        execution(
            3,
            "acme",
            "exp",
            "control",
            "u2",
            30_000,
            None,
            Some(Success),
        ),
        // new: u3 once (a success), u4 twice (a success whose gate was rejected, a failure).
        execution(4, "acme", "exp", "new", "u3", 5_000, None, Some(Success)),
        execution(
            5,
            "acme",
            "exp",
            "new",
            "u4",
            7_000,
            Some(Verdict::Reject),
            Some(Success),
        ),
        execution(6, "acme", "exp", "new", "u4", 9_000, None, Some(Failure)),
        // Not counted for acme: another tenant's, an unfinished one, another experiment's.
        execution(7, "globex", "exp", "new", "u5", 1_000, None, Some(Success)),
        execution(8, "acme", "exp", "new", "u3", 1_000, None, None),
        execution(9, "acme", "other", "new", "u3", 1_000, None, Some(Success)),
    ];
    for events in &rows {
        common::append(&log, events).await;
    }
    let mut p = stores.open("observe").await;
    p.catch_up(&log).await.unwrap();
    let now = keel_spine::clock::Clock::now(&keel_spine::clock::SystemClock);
    let past = now - Duration::days(1);
    let r: Readout = readout(&*p, &registered(3, past, true), Some("acme"), now)
        .await
        .unwrap();
    let (c, n) = (&r.arms[0], &r.arms[1]);
    assert_eq!((c.arm.as_str(), c.holdback), ("control", true));
    assert_eq!((c.executions, c.units, n.executions, n.units), (3, 2, 3, 2));
    // control: costs 0.010090, 0.020090, 0.030090 (each + 90 µUSD for the tool); 2 successes.
    close(c.success_rate, 2.0 / 3.0);
    close(c.cost_per_success, 0.060_270 / 2.0);
    close(c.p50_cost, 0.020_090);
    close(c.p95_cost, 0.020_090 + 0.9 * 0.010_000);
    close(c.p95_steps, 1.0);
    close(c.gates_per_execution, 0.0);
    assert_eq!(c.gate_rejection_rate, None);
    // Units (cost, successes): u1 (0.030180, 1), u2 (0.030090, 1): the successes do not vary,
    // so Var(R) = s²ₓ / (n ȳ²) = 2·0.000045² / 2 and the s.e. is 0.000045.
    let (lo, hi) = c.primary_ci.unwrap();
    close(Some((hi - lo) / 2.0), 1.959_963_984_540_054 * 0.000_045);
    // new: 0.005090, 0.007090, 0.009090; 2 successes; one gate, rejected.
    close(n.cost_per_success, 0.021_270 / 2.0);
    close(n.gates_per_execution, 1.0 / 3.0);
    close(n.gate_rejection_rate, 1.0);
    // u3 (0.005090, 1), u4 (0.016180, 1): s.e. 0.005545.
    close(n.vs_holdback, 0.010_635 - 0.030_135);
    let (lo, hi) = n.vs_holdback_ci.unwrap();
    let se = (0.005_545f64.powi(2) + 0.000_045f64.powi(2)).sqrt();
    close(Some((hi - lo) / 2.0), 1.959_963_984_540_054 * se);
    assert!(hi < 0.0, "new is cheaper per success");
    // Its gate-rejection guardrail is breached, so it does not win.
    assert_eq!(n.guardrails[1].status, "breach");
    assert_eq!(n.guardrails[0].status, "pass");
    assert_eq!(r.verdict.kind, "no_winner", "{:?}", r.verdict);
    assert!(r.verdict.text.contains("breached a guardrail"));
    // Without that guardrail it wins.
    let r = readout(&*p, &registered(3, past, false), Some("acme"), now)
        .await
        .unwrap();
    assert_eq!(
        (r.verdict.kind, r.verdict.arm.as_deref()),
        ("winner", Some("new"))
    );
    // Before the horizon: no verdict, whatever the data.
    let r = readout(
        &*p,
        &registered(3, now + Duration::days(1), false),
        Some("acme"),
        now,
    )
    .await
    .unwrap();
    assert_eq!(r.verdict.kind, "before_horizon");
    // Below the minimum sample: not enough data.
    let r = readout(&*p, &registered(4, past, false), Some("acme"), now)
        .await
        .unwrap();
    assert_eq!(r.verdict.kind, "not_enough_data");
    // Every tenant: globex's execution counts too.
    let r = readout(&*p, &registered(3, past, false), None, now)
        .await
        .unwrap();
    assert_eq!((r.arms[1].executions, r.arms[1].units), (4, 3));
}
