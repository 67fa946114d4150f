//! SLOs per strategy version from the projections (hand-computed on the fixture), the Prometheus
//! exposition, and an alarm that appends a `slo.alarmed` event to the control stream.

#![allow(clippy::unwrap_used, clippy::needless_update)]

mod common;

use keel_core::control::CONTROL_STREAM;
use keel_core::payload::Payload;
use keel_observe::slo::{self, Alarm};
use keel_spine::EventLog;

fn close(a: Option<f64>, b: f64) {
    let a = a.unwrap();
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

on_every_backend!(slos_match_hand_computed_numbers_and_an_alarm_fires_an_event);

async fn slos_match_hand_computed_numbers_and_an_alarm_fires_an_event(stores: &common::Stores) {
    let dir = tempfile::tempdir().unwrap();
    let log = common::seed(&dir.path().join("spine.db")).await;
    let mut p = stores.open("observe").await;
    p.catch_up(&log).await.unwrap();
    let since = (keel_spine::clock::Clock::now(&keel_spine::clock::SystemClock)
        - chrono::Duration::days(14))
    .format("%Y-%m-%d")
    .to_string();
    let report = slo::compute(&*p, &since).await.unwrap();

    let names: Vec<&str> = report
        .strategies
        .iter()
        .map(|s| s.strategy_version.as_str())
        .collect();
    assert_eq!(names, ["s-long", "s-short"]);
    let long = &report.strategies[0];
    assert_eq!((long.executions, long.finished), (2, 2));
    close(long.outcome_rate, 0.5);
    close(long.gate_escalation_rate, 1.0);
    close(long.p50_steps, 2.5);
    close(long.p95_steps, 2.95);
    // Tokens: (100+200+300) in + 30 out = 630, (100+200) + 20 = 320.
    close(long.p95_tokens, 320.0 + 0.95 * 310.0);
    let short = &report.strategies[1];
    assert_eq!(
        (short.executions, short.finished),
        (3, 3),
        "the 30-day-old execution is outside"
    );
    close(short.outcome_rate, 2.0 / 3.0);
    close(short.gate_escalation_rate, 0.0);
    close(short.p95_steps, 1.0);
    close(short.p50_tokens, 110.0);
    let t = report
        .tools
        .iter()
        .find(|t| t.strategy_version == "s-short")
        .unwrap();
    assert_eq!(
        (t.tool.as_str(), t.calls, t.failures),
        ("lookup_order", 3, 1)
    );
    assert!((t.failure_rate - 1.0 / 3.0).abs() < 1e-12);

    let text = slo::prometheus(&report);
    assert!(text.contains("# TYPE keel_slo_steps_p95 gauge\n"));
    assert!(
        text.contains("keel_slo_steps_p95{strategy_version=\"s-long\"} 2.95\n"),
        "{text}"
    );
    assert!(text.contains("keel_slo_tool_failure_rate{strategy_version=\"s-short\",tool=\"lookup_order\"} 0.3333333333333333\n"));

    // A p95 step-count bound: s-long drifts above 2.5, s-short does not.
    let alarms: Vec<Alarm> = ["*:p95_steps>2.5", "s-short:outcome_rate<0.5"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let breaches = slo::check(&report, &alarms);
    assert_eq!(breaches.len(), 1);
    let appended = slo::emit(&log, &keel_spine::clock::SystemClock, breaches.clone())
        .await
        .unwrap();
    assert_eq!(appended.len(), 1);
    let stream = log.read(CONTROL_STREAM, 1).await.unwrap();
    let Payload::SloAlarmed(a) = &stream.last().unwrap().payload else {
        panic!("expected slo.alarmed, got {:?}", stream.last());
    };
    assert_eq!(
        (
            a.strategy_version.as_str(),
            a.metric.as_str(),
            a.op.as_str()
        ),
        ("s-long", "p95_steps", ">")
    );
    assert!((a.value - 2.95).abs() < 1e-9 && a.bound == 2.5 && a.sample == 2);
    // The same breach over the same executions is not recorded twice.
    assert!(
        slo::emit(&log, &keel_spine::clock::SystemClock, breaches)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        log.read(CONTROL_STREAM, 1).await.unwrap().len(),
        stream.len()
    );
    // The projections skip the control stream.
    p.catch_up(&log).await.unwrap();
    let n = p
        .query(
            &keel_observe::sql::Scope::Admin,
            "SELECT count(*) FROM traces.steps WHERE event_type = 'slo.alarmed'",
        )
        .await
        .unwrap();
    assert_eq!(n.rows[0][0], serde_json::json!(0));
}

#[test]
fn alarms_parse_or_say_what_is_wrong() {
    let a: Alarm = "support-short:p95_steps>8".parse().unwrap();
    assert_eq!(a.strategy.as_deref(), Some("support-short"));
    assert!(a.above && a.bound == 8.0);
    let err = "p99_steps>8".parse::<Alarm>().unwrap_err().to_string();
    assert!(err.contains("unknown metric \"p99_steps\""), "{err}");
    let err = "p95_steps>eight".parse::<Alarm>().unwrap_err().to_string();
    assert!(err.contains("not a number"), "{err}");
    let err = "p95_steps=8".parse::<Alarm>().unwrap_err().to_string();
    assert!(err.contains("expected"), "{err}");
}
