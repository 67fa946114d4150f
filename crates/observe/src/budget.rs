//! Per-tenant monthly cost budgets. A budget is a `budget.set` event on the control stream
//! (`keel budgets set`); the month's spend is the sum of `gold.executions.cost_micros` of the
//! tenant's executions started this calendar month (UTC), which the projections fold from every
//! step's cost (running executions count what they spent so far). [`check`] runs before a new
//! execution starts: it appends `budget.alarmed` once per tenant and month when spend reaches
//! the alarm threshold, and refuses the start when the budget has a hard stop and is spent.

use crate::error::{ObserveError, Result};
use crate::rating::append_control;
use crate::sql::Scope;
use crate::store::ProjectionStore;
use chrono::{DateTime, Datelike, Utc};
use keel_core::control::{CONTROL_STREAM, ControlState};
use keel_core::payload::{BudgetAlarmed, BudgetSet, Payload};
use keel_core::{Event, TenantId};
use keel_spine::EventLog;
use keel_spine::clock::Clock;

/// A start refused by a spent budget with a hard stop.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "tenant {tenant} has spent ${spent:.4} of its monthly cost budget of ${budget:.2} for {month}; \
     new executions are refused until the month ends or the budget is raised \
     (keel budgets set {tenant} --monthly-usd N)",
    spent = *spent_micros as f64 / 1e6,
    budget = *monthly_micros as f64 / 1e6
)]
pub struct OverBudget {
    /// The tenant.
    pub tenant: String,
    /// `YYYY-MM`.
    pub month: String,
    /// Spent this month, micro-USD.
    pub spent_micros: u64,
    /// The budget, micro-USD.
    pub monthly_micros: u64,
}

/// The control stream's fold.
async fn control(log: &dyn EventLog) -> Result<ControlState> {
    let mut state = ControlState::default();
    for e in log.read(CONTROL_STREAM, 1).await? {
        state.apply(&e).map_err(|e| ObserveError::Config {
            what: "control stream".into(),
            detail: e.to_string(),
        })?;
    }
    Ok(state)
}

/// Records `budget` as a `budget.set` event, after checking it.
pub async fn set(log: &dyn EventLog, clock: &dyn Clock, budget: BudgetSet) -> Result<Event> {
    let bad = |what: &str, detail: &str| ObserveError::Config {
        what: what.into(),
        detail: detail.into(),
    };
    if budget.tenant.trim().is_empty() {
        return Err(bad("tenant", "name the tenant"));
    }
    if !(1..=100).contains(&budget.alarm_percent) {
        return Err(bad("alarm_percent", "must be 1 to 100"));
    }
    append_control(log, clock, Payload::BudgetSet(budget), |_| false)
        .await?
        .ok_or_else(|| bad("budget", "not recorded"))
}

/// Every tenant's budget.
pub async fn list(log: &dyn EventLog) -> Result<Vec<BudgetSet>> {
    Ok(control(log).await?.budgets.into_values().collect())
}

/// `YYYY-MM` and the first instant of `now`'s month (UTC), as RFC 3339.
fn month(now: DateTime<Utc>) -> (String, String) {
    let m = format!("{:04}-{:02}", now.year(), now.month());
    let start = format!("{m}-01T00:00:00Z");
    (m, start)
}

/// What `tenant` spent in `now`'s month so far, micro-USD.
pub async fn spent(
    store: &dyn ProjectionStore,
    tenant: &TenantId,
    now: DateTime<Utc>,
) -> Result<u64> {
    let (_, start) = month(now);
    let rows = store
        .query(
            &Scope::Tenant(tenant.0.clone()),
            &format!(
                "SELECT COALESCE(SUM(cost_micros), 0) FROM gold.executions \
                 WHERE started_at >= '{start}'"
            ),
        )
        .await?;
    Ok(rows
        .rows
        .first()
        .and_then(|r| r.first())
        .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f.max(0.0) as u64)))
        .unwrap_or(0))
}

/// Before a new execution of `tenant` starts (with `store` caught up with `log`): fires the
/// month's alarm once if spend reached its threshold, and refuses the start with
/// [`OverBudget`] when the budget has a hard stop and is spent. `Ok(Ok(()))` without a budget.
pub async fn check(
    log: &dyn EventLog,
    clock: &dyn Clock,
    store: &dyn ProjectionStore,
    tenant: &TenantId,
) -> Result<std::result::Result<(), OverBudget>> {
    let state = control(log).await?;
    let Some(budget) = state.budgets.get(tenant.as_str()) else {
        return Ok(Ok(()));
    };
    if budget.monthly_micros == 0 && !budget.hard_stop {
        return Ok(Ok(()));
    }
    let now = clock.now();
    let (m, _) = month(now);
    let spent_micros = spent(store, tenant, now).await?;
    let threshold = u128::from(budget.monthly_micros) * u128::from(budget.alarm_percent);
    if u128::from(spent_micros) * 100 >= threshold
        && !state.budget_alarms.contains(&(tenant.0.clone(), m.clone()))
    {
        let alarm = Payload::BudgetAlarmed(BudgetAlarmed {
            tenant: tenant.0.clone(),
            month: m.clone(),
            spent_micros,
            monthly_micros: budget.monthly_micros,
            alarm_percent: budget.alarm_percent,
        });
        let (t, month_) = (tenant.0.clone(), m.clone());
        append_control(log, clock, alarm, move |stream| {
            stream.iter().any(|e| {
                matches!(&e.payload, Payload::BudgetAlarmed(a) if a.tenant == t && a.month == month_)
            })
        })
        .await?;
    }
    if budget.hard_stop && spent_micros >= budget.monthly_micros {
        return Ok(Err(OverBudget {
            tenant: tenant.0.clone(),
            month: m,
            spent_micros,
            monthly_micros: budget.monthly_micros,
        }));
    }
    Ok(Ok(()))
}
