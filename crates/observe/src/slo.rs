//! SLOs per strategy version, computed from the projections, and alarms that emit an event.
//!
//! Per strategy version, over the executions started in the window: outcome rate (finished
//! executions whose typed success criteria held), gate-escalation rate (finished executions that
//! asked for at least one gate), step-count and token p50/p95, cost per success; per contract
//! (tool): calls, failures and failure rate; and retrieval-relevance sampling (retrievals queued
//! for a human rating, how many were rated, the mean rating).
//!
//! An [`Alarm`] is a bound on one metric (`support-short:p95_steps>8`, `*:outcome_rate<0.9`); it
//! names a strategy (every version of it) or one full strategy version, and
//! [`check_strategies`] refuses a name no execution in the store has used.
//! [`check`] compares the report against the alarms; [`emit`] appends one `slo.alarmed` event
//! per breach to the control stream, unless the same breach was already recorded over the same
//! number of executions (so re-running the check without new data does not repeat it).

use crate::error::{ObserveError, Result};
use crate::sql::Scope;
use crate::store::ProjectionStore;
use keel_core::Event;
use keel_core::payload::{Payload, SloAlarmed};
use keel_spine::EventLog;
use keel_spine::clock::Clock;
use serde::Serialize;
use serde_json::Value;

/// One strategy version's SLOs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StrategySlo {
    /// The strategy version.
    pub strategy_version: String,
    /// Executions started in the window.
    pub executions: u64,
    /// Of which ended.
    pub finished: u64,
    /// Share of ended executions that succeeded.
    pub outcome_rate: Option<f64>,
    /// Share of ended executions that asked for at least one gate.
    pub gate_escalation_rate: Option<f64>,
    /// Gates per ended execution.
    pub gates_per_exec: Option<f64>,
    /// Median steps of ended executions.
    pub p50_steps: Option<f64>,
    /// 95th percentile steps.
    pub p95_steps: Option<f64>,
    /// Median tokens (in + out).
    pub p50_tokens: Option<f64>,
    /// 95th percentile tokens.
    pub p95_tokens: Option<f64>,
    /// Total cost over successes, dollars.
    pub cost_per_success: Option<f64>,
}

/// One contract's failure rate (per strategy version).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ToolSlo {
    /// The strategy version.
    pub strategy_version: String,
    /// The tool (contract) name.
    pub tool: String,
    /// Results recorded.
    pub calls: u64,
    /// Results other than `ok`.
    pub failures: u64,
    /// failures / calls.
    pub failure_rate: f64,
}

/// Retrieval-relevance sampling of one strategy version.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetrievalSlo {
    /// The strategy version.
    pub strategy_version: String,
    /// Retrievals in the window.
    pub retrievals: u64,
    /// Retrievals queued for a human rating.
    pub sampled: u64,
    /// Of which rated.
    pub rated: u64,
    /// Mean rating of the rated ones.
    pub mean_rating: Option<f64>,
}

/// Every SLO of the window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SloReport {
    /// Executions started on or after this date (`YYYY-MM-DD`).
    pub since: String,
    /// Per strategy version.
    pub strategies: Vec<StrategySlo>,
    /// Per strategy version and contract.
    pub tools: Vec<ToolSlo>,
    /// Per strategy version.
    pub retrieval: Vec<RetrievalSlo>,
}

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn u(v: &Value) -> u64 {
    // PostgreSQL's SUM of integers is numeric; an integral one arrives as an integer, but be
    // lenient with `3.0`.
    v.as_u64()
        .or_else(|| v.as_f64().map(|f| f.max(0.0) as u64))
        .unwrap_or(0)
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// Computes the SLOs over executions started on or after `since` (`YYYY-MM-DD`), every tenant.
pub async fn compute(projections: &dyn ProjectionStore, since: &str) -> Result<SloReport> {
    compute_scoped(projections, since, &Scope::Admin).await
}

/// Like [`compute`], over the executions `scope` may see (one tenant's, for a tenant's token).
/// The queries are written in the SQL both backends speak.
pub async fn compute_scoped(
    projections: &dyn ProjectionStore,
    since: &str,
    scope: &Scope,
) -> Result<SloReport> {
    if chrono::NaiveDate::parse_from_str(since, "%Y-%m-%d").is_err() {
        return Err(ObserveError::Config {
            what: "SLO window start".into(),
            detail: format!("{since:?} is not a date (YYYY-MM-DD)"),
        });
    }
    let lit = since.replace('\'', "");
    // A tenant's SLOs are our own SQL: it filters by tenant itself (on indexed columns) over the
    // whole store, instead of having the store copy the tenant's rows for every query, which
    // made each scrape cost as much as the tenant's whole history.
    let (scope, tenant) = match scope {
        Scope::Admin => (&Scope::Admin, None),
        Scope::Tenant(t) => (&Scope::Admin, Some(t.replace('\'', "''"))),
    };
    let only = |alias: &str| {
        tenant
            .as_deref()
            .map_or(String::new(), |t| format!(" AND {alias}tenant = '{t}'"))
    };
    // (A step's tenant is its execution's: filtering the execution keeps the step index covering.)
    let (e_only, x_only) = (only("e."), only("x."));
    let rows = projections
        .query(
            scope,
            &format!(
            "SELECT strategy_version, COUNT(*), COUNT(finished_at),
                AVG(CASE WHEN finished_at IS NOT NULL THEN outcome_success END),
                AVG(CASE WHEN finished_at IS NOT NULL THEN
                    CASE WHEN gate_escalations > 0 THEN 1.0 ELSE 0.0 END END),
                AVG(CASE WHEN finished_at IS NOT NULL THEN gate_escalations END),
                approx_percentile(CASE WHEN finished_at IS NOT NULL THEN steps_n END, 0.5),
                approx_percentile(CASE WHEN finished_at IS NOT NULL THEN steps_n END, 0.95),
                approx_percentile(CASE WHEN finished_at IS NOT NULL THEN tokens_in + tokens_out END, 0.5),
                approx_percentile(CASE WHEN finished_at IS NOT NULL THEN tokens_in + tokens_out END, 0.95),
                SUM(total_cost) / NULLIF(SUM(outcome_success), 0)
             FROM gold.executions AS e WHERE e.started_at >= '{lit}'{e_only}
             GROUP BY 1 ORDER BY 1"
            ),
        )
        .await?;
    let strategies = rows
        .rows
        .iter()
        .map(|r| StrategySlo {
            strategy_version: s(&r[0]),
            executions: u(&r[1]),
            finished: u(&r[2]),
            outcome_rate: f(&r[3]),
            gate_escalation_rate: f(&r[4]),
            gates_per_exec: f(&r[5]),
            p50_steps: f(&r[6]),
            p95_steps: f(&r[7]),
            p50_tokens: f(&r[8]),
            p95_tokens: f(&r[9]),
            cost_per_success: f(&r[10]),
        })
        .collect();
    let rows = projections
        .query(
            scope,
            &format!(
                "SELECT e.strategy_version, s.tool, COUNT(*),
                SUM(CASE WHEN s.status <> 'ok' THEN 1 ELSE 0 END)
             FROM traces.steps AS s JOIN gold.executions AS e USING (exec_id)
             WHERE s.event_type = 'tool.result' AND e.started_at >= '{lit}'{e_only}
             GROUP BY 1, 2 ORDER BY 1, 2"
            ),
        )
        .await?;
    let tools = rows
        .rows
        .iter()
        .map(|r| {
            let (calls, failures) = (u(&r[2]), u(&r[3]));
            ToolSlo {
                strategy_version: s(&r[0]),
                tool: s(&r[1]),
                calls,
                failures,
                failure_rate: if calls == 0 {
                    0.0
                } else {
                    failures as f64 / calls as f64
                },
            }
        })
        .collect();
    let rows = projections
        .query(
            scope,
            &format!(
            "SELECT e.strategy_version, SUM(e.retrievals),
                (SELECT COUNT(*) FROM traces.retrieval_samples AS r JOIN gold.executions AS x USING (exec_id)
                  WHERE x.strategy_version = e.strategy_version AND x.started_at >= '{lit}'{x_only}),
                (SELECT COUNT(r.rating) FROM traces.retrieval_samples AS r JOIN gold.executions AS x USING (exec_id)
                  WHERE x.strategy_version = e.strategy_version AND x.started_at >= '{lit}'{x_only}),
                (SELECT AVG(r.rating) FROM traces.retrieval_samples AS r JOIN gold.executions AS x USING (exec_id)
                  WHERE x.strategy_version = e.strategy_version AND x.started_at >= '{lit}'{x_only})
             FROM gold.executions AS e WHERE e.started_at >= '{lit}'{e_only}
             GROUP BY 1 HAVING SUM(e.retrievals) > 0 ORDER BY 1"
            ),
        )
        .await?;
    let retrieval = rows
        .rows
        .iter()
        .map(|r| RetrievalSlo {
            strategy_version: s(&r[0]),
            retrievals: u(&r[1]),
            sampled: u(&r[2]),
            rated: u(&r[3]),
            mean_rating: f(&r[4]),
        })
        .collect();
    Ok(SloReport {
        since: since.to_owned(),
        strategies,
        tools,
        retrieval,
    })
}

/// The metrics an alarm can bound.
pub const METRICS: &[&str] = &[
    "outcome_rate",
    "gate_escalation_rate",
    "gates_per_exec",
    "p50_steps",
    "p95_steps",
    "p50_tokens",
    "p95_tokens",
    "cost_per_success",
];

impl StrategySlo {
    /// The value of metric `name` (one of [`METRICS`]).
    pub fn metric(&self, name: &str) -> Option<f64> {
        match name {
            "outcome_rate" => self.outcome_rate,
            "gate_escalation_rate" => self.gate_escalation_rate,
            "gates_per_exec" => self.gates_per_exec,
            "p50_steps" => self.p50_steps,
            "p95_steps" => self.p95_steps,
            "p50_tokens" => self.p50_tokens,
            "p95_tokens" => self.p95_tokens,
            "cost_per_success" => self.cost_per_success,
            _ => None,
        }
    }
}

/// A configured bound: `[strategy:]metric>bound` or `<bound`; strategy `*` or omitted for all.
#[derive(Clone, Debug, PartialEq)]
pub struct Alarm {
    /// The strategy it watches: a name (`support-short`, every version of it) or one full
    /// version (`support-short/v1/gpt-4o-mini/3f9a…`); `None` for every one.
    pub strategy: Option<String>,
    /// The metric (one of [`METRICS`]).
    pub metric: String,
    /// True for `>` (fires above the bound), false for `<`.
    pub above: bool,
    /// The bound.
    pub bound: f64,
}

impl std::str::FromStr for Alarm {
    type Err = ObserveError;
    fn from_str(text: &str) -> Result<Self> {
        let bad = |detail: String| ObserveError::Config {
            what: format!("alarm {text:?}"),
            detail,
        };
        let (strategy, rest) = match text.rsplit_once(':') {
            Some((s, rest)) => ((s != "*").then(|| s.to_owned()), rest),
            None => (None, text),
        };
        let (metric, above, bound) = if let Some((m, b)) = rest.split_once('>') {
            (m, true, b)
        } else if let Some((m, b)) = rest.split_once('<') {
            (m, false, b)
        } else {
            return Err(bad(
                "expected [strategy:]metric>bound or metric<bound".into()
            ));
        };
        let metric = metric.trim();
        if !METRICS.contains(&metric) {
            return Err(bad(format!(
                "unknown metric {metric:?} (one of {})",
                METRICS.join(", ")
            )));
        }
        let bound: f64 = bound
            .trim()
            .parse()
            .map_err(|_| bad(format!("bound {:?} is not a number", bound.trim())))?;
        Ok(Alarm {
            strategy,
            metric: metric.to_owned(),
            above,
            bound,
        })
    }
}

impl Alarm {
    /// True when this alarm watches strategy version `version` (`name/prompt/model/hash`):
    /// every version when it names none, else the version itself or any version of that name.
    pub fn watches(&self, version: &str) -> bool {
        match &self.strategy {
            None => true,
            Some(s) => s == version || version.split('/').next() == Some(s.as_str()),
        }
    }
}

/// Refuses an alarm whose strategy matches none of `known` (every strategy version recorded in
/// the store): such an alarm could never fire, and a typo must not pass for a quiet SLO. The
/// error names the known strategies.
pub fn check_strategies(alarms: &[Alarm], known: &[String]) -> Result<()> {
    for a in alarms {
        let Some(name) = &a.strategy else { continue };
        if known.iter().any(|v| a.watches(v)) {
            continue;
        }
        let mut names: Vec<&str> = known.iter().filter_map(|v| v.split('/').next()).collect();
        names.dedup();
        let detail = if names.is_empty() {
            format!("unknown strategy {name:?}: no execution in this store has run a strategy yet")
        } else {
            format!(
                "unknown strategy {name:?}; known strategies: {} (or one of their full versions: {})",
                names.join(", "),
                known.join(", ")
            )
        };
        return Err(ObserveError::Config {
            what: format!("alarm on {name:?}"),
            detail,
        });
    }
    Ok(())
}

/// Every strategy version recorded in the store (any window), in order.
pub async fn strategy_versions(
    projections: &dyn ProjectionStore,
    scope: &Scope,
) -> Result<Vec<String>> {
    let rows = projections
        .query(
            scope,
            "SELECT DISTINCT strategy_version FROM gold.executions ORDER BY 1",
        )
        .await?;
    Ok(rows
        .rows
        .iter()
        .filter_map(|r| r.first().map(s))
        .filter(|v| !v.is_empty())
        .collect())
}

/// The breaches of `alarms` in `report`, one per (alarm, strategy version).
pub fn check(report: &SloReport, alarms: &[Alarm]) -> Vec<SloAlarmed> {
    let mut out = Vec::new();
    for a in alarms {
        for st in &report.strategies {
            if !a.watches(&st.strategy_version) {
                continue;
            }
            let Some(value) = st.metric(&a.metric) else {
                continue;
            };
            let fired = if a.above {
                value > a.bound
            } else {
                value < a.bound
            };
            if fired {
                out.push(SloAlarmed {
                    strategy_version: st.strategy_version.clone(),
                    metric: a.metric.clone(),
                    value,
                    op: if a.above { ">" } else { "<" }.into(),
                    bound: a.bound,
                    sample: st.finished,
                });
            }
        }
    }
    out
}

/// Appends one `slo.alarmed` event per breach to the control stream, skipping a breach already
/// recorded with the same strategy, metric, bound and sample. Returns the events appended.
pub async fn emit(
    log: &dyn EventLog,
    clock: &dyn Clock,
    breaches: Vec<SloAlarmed>,
) -> Result<Vec<Event>> {
    let mut appended = Vec::new();
    for breach in breaches {
        let same = |stream: &[Event]| {
            stream.iter().any(|e| match &e.payload {
                Payload::SloAlarmed(a) => {
                    a.strategy_version == breach.strategy_version
                        && a.metric == breach.metric
                        && a.op == breach.op
                        && a.bound == breach.bound
                        && a.sample == breach.sample
                }
                _ => false,
            })
        };
        let payload = Payload::SloAlarmed(breach.clone());
        if let Some(e) = crate::rating::append_control(log, clock, payload, same).await? {
            appended.push(e);
        }
    }
    Ok(appended)
}

/// Prometheus text exposition of the report (for `/metrics`); names and help in
/// [`crate::metrics`].
pub fn prometheus(report: &SloReport) -> String {
    prometheus_for(report, None)
}

/// [`prometheus`] with a `tenant` label on every series, for a report scoped to that tenant
/// (what a tenant's token scrapes from `/metrics`).
pub fn prometheus_for(report: &SloReport, tenant: Option<&str>) -> String {
    use crate::metrics as m;
    let mut out = String::new();
    let esc = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let tenant = tenant.map_or(String::new(), |t| format!("tenant=\"{}\",", esc(t)));
    for (name, help, pick) in m::STRATEGY_GAUGES {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for st in &report.strategies {
            if let Some(v) = pick(st) {
                out.push_str(&format!(
                    "{name}{{{tenant}strategy_version=\"{}\"}} {v}\n",
                    esc(&st.strategy_version)
                ));
            }
        }
    }
    let name = m::TOOL_FAILURE_RATE;
    out.push_str(&format!(
        "# HELP {name} {}\n# TYPE {name} gauge\n",
        m::TOOL_FAILURE_RATE_HELP
    ));
    for t in &report.tools {
        out.push_str(&format!(
            "{name}{{{tenant}strategy_version=\"{}\",tool=\"{}\"}} {}\n",
            esc(&t.strategy_version),
            esc(&t.tool),
            t.failure_rate
        ));
    }
    out
}
