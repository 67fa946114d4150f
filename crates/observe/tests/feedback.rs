//! User feedback on every backend: each rating is a `feedback.given` event on the control
//! stream keyed by the execution, `gold.executions` counts and averages them per execution and
//! tenant, a rebuild keeps them, and feedback on an execution the caller cannot see, or out of
//! range, is refused with nothing appended.

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

on_every_backend!(feedback_is_an_event_gold_executions_averages);

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
