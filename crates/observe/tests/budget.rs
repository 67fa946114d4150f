//! Per-tenant monthly budgets on every backend: the month's spend is summed from
//! `gold.executions` for the tenant only, the alarm is appended once per tenant and month, the
//! hard stop refuses a spent budget, and a new month starts from zero.

#![allow(clippy::unwrap_used)]

mod common;

use chrono::{DateTime, Utc};
use keel_core::TenantId;
use keel_core::control::CONTROL_STREAM;
use keel_core::cost::Cost;
use keel_core::payload::{BudgetSet, Outcome, Payload};
use keel_observe::ProjectionStore;
use keel_observe::budget;
use keel_spine::EventLog;
use keel_spine::clock::{Clock, SystemClock};
use keel_testkit::builder::{ExecBuilder, exec_id};

on_every_backend!(budgets_sum_the_tenants_month_alarm_once_and_stop_when_spent);

struct At(DateTime<Utc>);
impl Clock for At {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

async fn budgets_sum_the_tenants_month_alarm_once_and_stop_when_spent(stores: &common::Stores) {
    let dir = tempfile::tempdir().unwrap();
    let log = common::seed(&dir.path().join("spine.db")).await;
    let mut p: Box<dyn ProjectionStore> = stores.open("observe").await;
    // The builder's executions start in November 2026: initech spends 3 × 0.30 $, globex 5 $.
    for (n, tenant, micros) in [
        (400, "initech", 300_000),
        (401, "initech", 300_000),
        (402, "initech", 300_000),
        (403, "globex", 5_000_000),
    ] {
        let events = ExecBuilder::new(exec_id(n), tenant)
            .started("g")
            .model_call(10, 10, Cost::Known(micros))
            .finished(Outcome::Success)
            .build();
        log.append(exec_id(n), 0, &events).await.unwrap();
    }
    p.catch_up(&log).await.unwrap();
    let acme = TenantId("initech".into());
    let started = log.read(exec_id(400), 1).await.unwrap()[0].ts;
    let november = At(started);
    assert_eq!(budget::spent(&*p, &acme, started).await.unwrap(), 900_000);

    let set = |monthly_micros, hard_stop| BudgetSet {
        tenant: "initech".into(),
        monthly_micros,
        alarm_percent: 80,
        hard_stop,
        by: "ops".into(),
    };
    let alarms = || async {
        log.read(CONTROL_STREAM, 1)
            .await
            .unwrap()
            .iter()
            .filter(|e| matches!(e.payload, Payload::BudgetAlarmed(_)))
            .count()
    };
    // 0.90 of 2.00: under the alarm, nothing happens.
    budget::set(&log, &SystemClock, set(2_000_000, true))
        .await
        .unwrap();
    assert!(
        budget::check(&log, &november, &*p, &acme)
            .await
            .unwrap()
            .is_ok()
    );
    assert_eq!(alarms().await, 0);
    // 0.90 of 1.00 without a hard stop: the alarm, once; starts go on.
    budget::set(&log, &SystemClock, set(1_000_000, false))
        .await
        .unwrap();
    for _ in 0..2 {
        assert!(
            budget::check(&log, &november, &*p, &acme)
                .await
                .unwrap()
                .is_ok()
        );
    }
    assert_eq!(alarms().await, 1);
    // 0.90 of 0.85 with a hard stop: refused, no second alarm.
    budget::set(&log, &SystemClock, set(850_000, true))
        .await
        .unwrap();
    let over = budget::check(&log, &november, &*p, &acme)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!((over.spent_micros, over.monthly_micros), (900_000, 850_000));
    assert!(
        over.to_string()
            .contains("tenant initech has spent $0.9000"),
        "{over}"
    );
    assert_eq!(alarms().await, 1);
    // December starts from zero.
    let december = At(started + chrono::Duration::days(31));
    assert!(
        budget::check(&log, &december, &*p, &acme)
            .await
            .unwrap()
            .is_ok()
    );
    // globex has no budget.
    let globex = TenantId("globex".into());
    assert!(
        budget::check(&log, &november, &*p, &globex)
            .await
            .unwrap()
            .is_ok()
    );
}
