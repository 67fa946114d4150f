//! Agent economics from the projections: the seed's per-strategy table (executions, success
//! rate, p50/p95 cost, p95 steps, gates per execution, cost per success per strategy version),
//! cost by tenant, by tool and by model, and cost per success per strategy version per day (what
//! the economics page charts).
//!
//! Every figure is one SQL query over `gold.executions` (and `traces.steps` joined to it for
//! tools and models) that both projection backends speak, so `keel economics` agrees with
//! `keel sql` running the seed's query. Rows follow the seed's query: every execution started in
//! the window counts, finished or not; an execution whose cost is unknown adds nothing to the
//! cost sums (`SUM(total_cost)` skips it) and is counted in `cost_unknown`. Replays have no
//! `gold.executions` row, so they never count.

use crate::error::{ObserveError, Result};
use crate::readout::{count, num, ratio_of, text};
use crate::sql::Scope;
use crate::store::ProjectionStore;
use serde::Serialize;
use serde_json::Value;

/// One strategy version's economics: the seed's query, plus the sums it divides.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StrategyEconomics {
    /// The strategy version.
    pub strategy_version: String,
    /// Executions started in the window.
    pub executions: u64,
    /// Successes among them.
    pub successes: u64,
    /// Successes over finished executions.
    pub success_rate: Option<f64>,
    /// Median cost, USD.
    pub p50_cost: Option<f64>,
    /// 95th percentile cost, USD.
    pub p95_cost: Option<f64>,
    /// 95th percentile steps.
    pub p95_steps: Option<f64>,
    /// Gates requested per execution.
    pub gates_per_exec: Option<f64>,
    /// Σ cost, USD.
    pub total_cost: f64,
    /// Σ cost / Σ successes, USD (`None` without a success).
    pub cost_per_success: Option<f64>,
}

/// One tenant's spend.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TenantEconomics {
    /// The tenant.
    pub tenant: String,
    /// Executions started in the window.
    pub executions: u64,
    /// Successes among them.
    pub successes: u64,
    /// Executions whose cost is unknown (not in `total_cost`).
    pub cost_unknown: u64,
    /// Σ cost, USD.
    pub total_cost: f64,
    /// Σ cost / Σ successes, USD.
    pub cost_per_success: Option<f64>,
}

/// One tool's (contract's) or one model's share of the cost.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CostLine {
    /// The tool or model.
    pub name: String,
    /// Results (tools) or replies (models) recorded.
    pub calls: u64,
    /// Tool results other than `ok` (always 0 for models).
    pub failures: u64,
    /// Σ cost, USD.
    pub cost: f64,
}

/// Cost per success of one strategy version over one day's started executions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DayPoint {
    /// The strategy version.
    pub strategy_version: String,
    /// The UTC day (`YYYY-MM-DD`) the executions started.
    pub day: String,
    /// Executions started that day.
    pub executions: u64,
    /// Successes among them.
    pub successes: u64,
    /// Σ cost, USD.
    pub cost: f64,
    /// Σ cost / Σ successes, USD (`None`: no success that day, a gap in the chart).
    pub cost_per_success: Option<f64>,
}

/// Everything `keel economics`, `GET /v1/economics` and the economics page show.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Economics {
    /// Executions started on or after this day (`YYYY-MM-DD`, UTC).
    pub since: String,
    /// The tenant the figures cover (`None`: every tenant).
    pub tenant: Option<String>,
    /// Per strategy version, cheapest per success first (none last).
    pub strategies: Vec<StrategyEconomics>,
    /// Per tenant, costliest first.
    pub tenants: Vec<TenantEconomics>,
    /// Per tool, costliest first.
    pub tools: Vec<CostLine>,
    /// Per model, costliest first.
    pub models: Vec<CostLine>,
    /// Per strategy version and day, by day then strategy version.
    pub series: Vec<DayPoint>,
}

/// Costliest first, then by name.
fn by_cost<T>(rows: &mut [T], cost: impl Fn(&T) -> f64, name: impl Fn(&T) -> &str) {
    rows.sort_by(|a, b| {
        cost(b)
            .total_cmp(&cost(a))
            .then_with(|| name(a).cmp(name(b)))
    });
}

/// The longest window, in days: a thousand years ("everything").
pub const MAX_DAYS: u32 = 365_000;

/// The first day of a window of `days` days ending on `now`'s UTC day, as the seed writes it
/// (`CURRENT_DATE - 14`): `YYYY-MM-DD`.
pub fn since(now: chrono::DateTime<chrono::Utc>, days: u32) -> Result<String> {
    if days > MAX_DAYS {
        return Err(ObserveError::Config {
            what: "economics window".into(),
            detail: format!("{days} days is more than {MAX_DAYS}"),
        });
    }
    now.date_naive()
        .checked_sub_days(chrono::Days::new(u64::from(days)))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .ok_or_else(|| ObserveError::Config {
            what: "economics window".into(),
            detail: format!("{days} days before {} is not a date", now.date_naive()),
        })
}

/// Computes the economics of the executions started on or after `since` (`YYYY-MM-DD`), of
/// `tenant` only when given (every tenant's otherwise).
pub async fn compute(
    store: &dyn ProjectionStore,
    since: &str,
    tenant: Option<&str>,
) -> Result<Economics> {
    if chrono::NaiveDate::parse_from_str(since, "%Y-%m-%d").is_err() {
        return Err(ObserveError::Config {
            what: "economics window start".into(),
            detail: format!("{since:?} is not a date (YYYY-MM-DD)"),
        });
    }
    // Our own SQL filters by tenant on the indexed column (as the SLOs do), rather than having
    // the store copy a tenant's rows for each query.
    let only = |alias: &str| {
        tenant.map_or(String::new(), |t| {
            format!(" AND {alias}tenant = '{}'", t.replace('\'', "''"))
        })
    };
    let window = format!("started_at >= '{since}'{}", only(""));
    let rows = |sql: String| async move { store.query(&Scope::Admin, &sql).await };

    let mut strategies: Vec<StrategyEconomics> = rows(format!(
        "SELECT strategy_version, COUNT(*), SUM(outcome_success), AVG(outcome_success),
            approx_percentile(total_cost, 0.5), approx_percentile(total_cost, 0.95),
            approx_percentile(steps_n, 0.95), AVG(gate_escalations), SUM(total_cost)
         FROM gold.executions WHERE {window} GROUP BY 1"
    ))
    .await?
    .rows
    .iter()
    .map(|r| {
        let g = |i: usize| r.get(i).unwrap_or(&Value::Null);
        let (successes, total_cost) = (num(g(2)).unwrap_or(0.0), num(g(8)).unwrap_or(0.0));
        StrategyEconomics {
            strategy_version: text(g(0)),
            executions: count(g(1)),
            successes: count(g(2)),
            success_rate: num(g(3)),
            p50_cost: num(g(4)),
            p95_cost: num(g(5)),
            p95_steps: num(g(6)),
            gates_per_exec: num(g(7)),
            total_cost,
            cost_per_success: ratio_of(total_cost, successes),
        }
    })
    .collect();
    // The seed orders by cost per success; the backends disagree on where NULL sorts, so the
    // order is ours: cheapest first, strategies without a success last.
    strategies.sort_by(|a, b| match (a.cost_per_success, b.cost_per_success) {
        (Some(x), Some(y)) => x
            .total_cmp(&y)
            .then_with(|| a.strategy_version.cmp(&b.strategy_version)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.strategy_version.cmp(&b.strategy_version),
    });

    let mut tenants: Vec<TenantEconomics> = rows(format!(
        "SELECT tenant, COUNT(*), SUM(outcome_success), SUM(total_cost),
            SUM(CASE WHEN cost_known = 1 THEN 0 ELSE 1 END)
         FROM gold.executions WHERE {window} GROUP BY 1"
    ))
    .await?
    .rows
    .iter()
    .map(|r| {
        let g = |i: usize| r.get(i).unwrap_or(&Value::Null);
        let (successes, total_cost) = (num(g(2)).unwrap_or(0.0), num(g(3)).unwrap_or(0.0));
        TenantEconomics {
            tenant: text(g(0)),
            executions: count(g(1)),
            successes: count(g(2)),
            cost_unknown: count(g(4)),
            total_cost,
            cost_per_success: ratio_of(total_cost, successes),
        }
    })
    .collect();
    by_cost(&mut tenants, |t| t.total_cost, |t| &t.tenant);

    // A step's tenant is its execution's; the join also leaves out replays (no gold row).
    let e_window = format!("e.started_at >= '{since}'{}", only("e."));
    let lines = |rows: &crate::sql::Rows| -> Vec<CostLine> {
        let mut out: Vec<CostLine> = rows
            .rows
            .iter()
            .map(|r| {
                let g = |i: usize| r.get(i).unwrap_or(&Value::Null);
                CostLine {
                    name: text(g(0)),
                    calls: count(g(1)),
                    failures: count(g(2)),
                    cost: num(g(3)).unwrap_or(0.0),
                }
            })
            .collect();
        by_cost(&mut out, |l| l.cost, |l| &l.name);
        out
    };
    let tools = lines(
        &rows(format!(
            "SELECT s.tool, COUNT(*), SUM(CASE WHEN s.status <> 'ok' THEN 1 ELSE 0 END),
                SUM(s.cost)
             FROM traces.steps AS s JOIN gold.executions AS e USING (exec_id)
             WHERE s.event_type = 'tool.result' AND {e_window} GROUP BY 1"
        ))
        .await?,
    );
    let models = lines(
        &rows(format!(
            "SELECT s.model, COUNT(*), 0, SUM(s.cost)
             FROM traces.steps AS s JOIN gold.executions AS e USING (exec_id)
             WHERE s.event_type = 'model.responded' AND {e_window} GROUP BY 1"
        ))
        .await?,
    );

    let day = store.day("started_at");
    let series = rows(format!(
        "SELECT strategy_version, {day}, COUNT(*), SUM(outcome_success), SUM(total_cost)
         FROM gold.executions WHERE {window} GROUP BY 1, 2 ORDER BY 2, 1"
    ))
    .await?
    .rows
    .iter()
    .map(|r| {
        let g = |i: usize| r.get(i).unwrap_or(&Value::Null);
        let (successes, cost) = (num(g(3)).unwrap_or(0.0), num(g(4)).unwrap_or(0.0));
        DayPoint {
            strategy_version: text(g(0)),
            day: text(g(1)),
            executions: count(g(2)),
            successes: count(g(3)),
            cost,
            cost_per_success: ratio_of(cost, successes),
        }
    })
    .collect();

    Ok(Economics {
        since: since.to_owned(),
        tenant: tenant.map(str::to_owned),
        strategies,
        tenants,
        tools,
        models,
        series,
    })
}

/// The tables for people (what `keel economics` prints).
pub fn render(e: &Economics) -> String {
    let f = |v: Option<f64>, d: usize| v.map_or("—".into(), |x| format!("{x:.d$}"));
    let mut out = format!(
        "economics of executions started since {}{}\n\nper strategy version (cheapest per \
         success first)\n",
        e.since,
        e.tenant
            .as_ref()
            .map_or(String::new(), |t| format!(", tenant {t}"))
    );
    let width = e
        .strategies
        .iter()
        .map(|s| s.strategy_version.chars().count())
        .chain([16])
        .max()
        .unwrap_or(16);
    out.push_str(&format!(
        "{:<width$} {:>6} {:>8} {:>9} {:>9} {:>6} {:>7} {:>10} {:>10}\n",
        "strategy_version",
        "execs",
        "success",
        "p50 cost",
        "p95 cost",
        "p95 st",
        "gates/x",
        "cost",
        "$/success"
    ));
    for s in &e.strategies {
        out.push_str(&format!(
            "{:<width$} {:>6} {:>8} {:>9} {:>9} {:>6} {:>7} {:>10.6} {:>10}\n",
            s.strategy_version,
            s.executions,
            f(s.success_rate, 3),
            f(s.p50_cost, 5),
            f(s.p95_cost, 5),
            f(s.p95_steps, 1),
            f(s.gates_per_exec, 2),
            s.total_cost,
            f(s.cost_per_success, 6),
        ));
    }
    out.push_str("\ncost by tenant\n");
    out.push_str(&format!(
        "{:<20} {:>6} {:>9} {:>12} {:>10} {:>12}\n",
        "tenant", "execs", "successes", "cost", "$/success", "cost unknown"
    ));
    for t in &e.tenants {
        out.push_str(&format!(
            "{:<20} {:>6} {:>9} {:>12.6} {:>10} {:>12}\n",
            t.tenant,
            t.executions,
            t.successes,
            t.total_cost,
            f(t.cost_per_success, 6),
            t.cost_unknown
        ));
    }
    for (title, what, lines) in [
        ("cost by tool", "tool", &e.tools),
        ("cost by model", "model", &e.models),
    ] {
        out.push_str(&format!("\n{title}\n"));
        out.push_str(&format!(
            "{:<24} {:>7} {:>8} {:>12}\n",
            what, "calls", "failures", "cost"
        ));
        for l in lines {
            out.push_str(&format!(
                "{:<24} {:>7} {:>8} {:>12.6}\n",
                l.name, l.calls, l.failures, l.cost
            ));
        }
    }
    out
}
