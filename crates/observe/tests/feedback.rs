//! User feedback on every backend: each rating is a `feedback.given` event on the control
//! stream keyed by the execution, `gold.executions` counts and averages them per execution and
//! tenant, a rebuild keeps them, and feedback on an execution the caller cannot see, or out of
//! range, is refused with nothing appended. An experiment's readout shows each arm's mean
//! feedback, and a `mean_feedback` guardrail judges it.

#![allow(clippy::unwrap_used)]

mod common;

use keel_core::control::CONTROL_STREAM;
use keel_core::payload::{Outcome, Payload};
use keel_observe::feedback::{self, Give};
use keel_observe::sql::Scope;
use keel_observe::{ObserveError, ProjectionStore};
use keel_spine::EventLog;
use keel_spine::clock::SystemClock;
use keel_testkit::builder::{ExecBuilder, exec_id};
use serde_json::json;

on_every_backend!(
    feedback_is_an_event_gold_executions_averages,
    mean_feedback_is_a_readout_figure_and_a_guardrail,
);

async fn feedback_is_an_event_gold_executions_averages(stores: &common::Stores) {
    let dir = tempfile::tempdir().unwrap();
    let log = common::seed(&dir.path().join("spine.db")).await;
    let mut p: Box<dyn ProjectionStore> = stores.open("observe").await;
    let exec = exec_id(300);
    let events = ExecBuilder::new(exec, "acme")
        .started("where is my parcel?")
        .finished(Outcome::Success)
        .build();
    log.append(exec, 0, &events).await.unwrap();
    p.catch_up(&log).await.unwrap();
    let give = |rating: u8| Give {
        exec_id: exec,
        rating,
        rater: "app".into(),
        comment: Some("fast".into()),
    };
    let globex = Scope::Tenant("globex".into());
    let err = feedback::give(&log, &SystemClock, &*p, &globex, give(5))
        .await
        .unwrap_err();
    assert!(matches!(err, ObserveError::NotFound { .. }), "{err}");
    for bad in [0, 6] {
        let err = feedback::give(&log, &SystemClock, &*p, &Scope::Admin, give(bad))
            .await
            .unwrap_err();
        assert!(matches!(&err, ObserveError::Config { what, .. } if what == "rating"));
    }
    let before = log.read(CONTROL_STREAM, 1).await.unwrap().len();

    let acme = Scope::Tenant("acme".into());
    for r in [5, 2, 2] {
        let e = feedback::give(&log, &SystemClock, &*p, &acme, give(r))
            .await
            .unwrap();
        assert_eq!(e.exec_id, CONTROL_STREAM);
        assert!(matches!(&e.payload, Payload::FeedbackGiven(f) if f.exec_id == exec));
    }
    assert_eq!(log.read(CONTROL_STREAM, 1).await.unwrap().len(), before + 3);
    p.catch_up(&log).await.unwrap();
    let q = format!(
        "SELECT feedback_count, feedback_rating FROM gold.executions WHERE exec_id = '{exec}'"
    );
    assert_eq!(
        p.query(&acme, &q).await.unwrap().rows,
        vec![vec![json!(3), json!(3.0)]]
    );
    assert!(p.query(&globex, &q).await.unwrap().rows.is_empty());

    // A rebuild from offset 1 keeps them (they are events, not row edits).
    p.reset().await.unwrap();
    p.catch_up(&log).await.unwrap();
    assert_eq!(
        p.query(&Scope::Admin, &q).await.unwrap().rows,
        vec![vec![json!(3), json!(3.0)]]
    );
}

/// An arm's mean feedback is Σratings / Σcount over its executions; a guardrail on it breaches
/// below its bound and passes above.
async fn mean_feedback_is_a_readout_figure_and_a_guardrail(stores: &common::Stores) {
    use chrono::Duration;
    use keel_core::experiment::registry::{Registered, Status};
    use keel_core::experiment::{
        Arm, Assignment, Direction, Experiment, GuardMetric, Guardrail, Metric, Unit,
    };
    let dir = tempfile::tempdir().unwrap();
    let log = keel_spine::SqliteLog::open(dir.path().join("spine.db"), Default::default()).unwrap();
    let mut p: Box<dyn ProjectionStore> = stores.open("observe").await;
    // control: ratings 5 and 4 on two executions; new: 2, 1 and 3 on one, none on the other.
    let plan = [
        (1, "control", vec![5]),
        (2, "control", vec![4]),
        (3, "new", vec![2, 1, 3]),
        (4, "new", vec![]),
    ];
    for (n, arm, _) in &plan {
        let mut b = ExecBuilder::new(exec_id(*n), "acme");
        b.push(Payload::ExecStarted(keel_core::payload::ExecStarted {
            goal: "g".into(),
            strategy_version: format!("{arm}/v1/m/0000"),
            budget: Default::default(),
            experiment_arm: Some((*arm).into()),
            replay_of: None,
            experiment: Some(Assignment {
                experiment: "exp".into(),
                arm: (*arm).into(),
                bucket: 7,
                unit_key: format!("u{n}"),
            }),
        }));
        let events = b.finished(Outcome::Success).build();
        log.append(exec_id(*n), 0, &events).await.unwrap();
    }
    p.catch_up(&log).await.unwrap();
    for (n, _, ratings) in &plan {
        for r in ratings {
            let give = Give {
                exec_id: exec_id(*n),
                rating: *r,
                rater: "app".into(),
                comment: None,
            };
            feedback::give(&log, &SystemClock, &*p, &Scope::Admin, give)
                .await
                .unwrap();
        }
    }
    p.catch_up(&log).await.unwrap();
    let end = log.read(exec_id(1), 1).await.unwrap()[0].ts + Duration::days(1);
    let arm = |name: &str, holdback| Arm {
        name: name.into(),
        strategy: format!("s-{name}"),
        weight: 1,
        holdback,
    };
    let x = Registered {
        experiment: Experiment {
            name: "exp".into(),
            salt: "exp".into(),
            unit: Unit::Execution,
            arms: vec![arm("control", true), arm("new", false)],
            primary_metric: Metric::CostPerSuccess,
            guardrails: vec![Guardrail {
                metric: GuardMetric::MeanFeedback,
                direction: Direction::AtLeast,
                bound: 3.0,
                on_breach: Default::default(),
            }],
            min_sample: 1,
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
    };
    let r = keel_observe::readout::readout(&*p, &x, None, end)
        .await
        .unwrap();
    let by = |name: &str| r.arms.iter().find(|a| a.arm == name).unwrap();
    assert_eq!(by("control").mean_feedback, Some(4.5));
    assert_eq!(by("new").mean_feedback, Some(2.0));
    assert_eq!(by("control").guardrails[0].status, "pass");
    assert_eq!(by("new").guardrails[0].status, "breach");
    assert_eq!(by("new").guardrails[0].metric, "mean_feedback");
}
