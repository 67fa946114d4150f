//! An experiment's readout, computed from `gold.executions` (so it agrees with `keel sql`, on
//! either projection backend): per arm the finished executions, success rate, p50/p95 cost, p95
//! steps, gates per execution, gate-rejection rate and cost per success with a delta-method
//! interval ([`stats`]), the difference of each arm from the holdback on the primary metric, the
//! guardrail checks, and a plain verdict.
//!
//! The intervals are fixed-horizon: valid when looked at once, at the pre-registered end. A
//! readout may be looked at any time, but it gives no verdict before the horizon (nor below the
//! minimum sample), so peeking cannot turn noise into a winner.

pub mod stats;

use crate::error::Result;
use crate::sql::Scope;
use crate::store::ProjectionStore;
use chrono::{DateTime, Utc};
use keel_core::experiment::registry::Registered;
use keel_core::experiment::{GuardMetric, Metric};
use serde::Serialize;
use serde_json::Value;
use stats::{Ratio, UnitTotals};
use std::collections::BTreeMap;

/// What the intervals are.
pub const METHOD: &str = "delta method for a ratio of sums, clustered by unit of assignment; \
                          95% normal intervals, fixed-horizon (no verdict before the end)";

/// One guardrail's check on one arm.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GuardCheck {
    /// The metric.
    pub metric: &'static str,
    /// `>=` or `<=`.
    pub direction: &'static str,
    /// The bound.
    pub bound: f64,
    /// The arm's value, if it has one.
    pub value: Option<f64>,
    /// `pass`, `breach`, or `not_enough_data`.
    pub status: &'static str,
}

/// One arm's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArmReadout {
    /// The arm.
    pub arm: String,
    /// Its strategy.
    pub strategy: String,
    /// Whether it is the holdback.
    pub holdback: bool,
    /// Finished executions.
    pub executions: u64,
    /// Distinct units among them.
    pub units: u64,
    /// Successes over executions.
    pub success_rate: Option<f64>,
    /// Median cost, USD.
    pub p50_cost: Option<f64>,
    /// 95th percentile cost, USD.
    pub p95_cost: Option<f64>,
    /// 95th percentile steps.
    pub p95_steps: Option<f64>,
    /// Gates requested per execution.
    pub gates_per_execution: Option<f64>,
    /// Rejected over requested gates.
    pub gate_rejection_rate: Option<f64>,
    /// Mean user feedback rating over the ratings its executions got (`None` without any).
    pub mean_feedback: Option<f64>,
    /// Σcost / Σsuccess, USD.
    pub cost_per_success: Option<f64>,
    /// The primary metric's value.
    pub primary: Option<f64>,
    /// Its 95 % interval.
    pub primary_ci: Option<(f64, f64)>,
    /// This arm minus the holdback on the primary metric (not for the holdback itself).
    pub vs_holdback: Option<f64>,
    /// Its 95 % interval.
    pub vs_holdback_ci: Option<(f64, f64)>,
    /// The guardrails.
    pub guardrails: Vec<GuardCheck>,
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// `not_enough_data`, `before_horizon`, `winner` or `no_winner`.
    pub kind: &'static str,
    /// The winning arm, if any.
    pub arm: Option<String>,
    /// In words.
    pub text: String,
}

/// A readout.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Readout {
    /// The experiment.
    pub experiment: String,
    /// `running`, `stopped`, …
    pub status: &'static str,
    /// Its unit of assignment.
    pub unit: &'static str,
    /// The primary metric.
    pub primary_metric: &'static str,
    /// The interval method.
    pub method: &'static str,
    /// Minimum finished executions per arm.
    pub min_sample: u64,
    /// Start (RFC 3339).
    pub start: String,
    /// The pre-registered horizon (RFC 3339).
    pub end: String,
    /// The tenant it was computed for (`None`: every tenant).
    pub tenant: Option<String>,
    /// Per arm, in the order registered.
    pub arms: Vec<ArmReadout>,
    /// The verdict.
    pub verdict: Verdict,
}

/// A number from either backend (PostgreSQL's `AVG` of integers is a numeric, sent as text).
pub(crate) fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub(crate) fn count(v: &Value) -> u64 {
    num(v).map_or(0, |x| if x > 0.0 { x.round() as u64 } else { 0 })
}

pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(crate) fn ratio_of(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// Per arm: the aggregate row and the per-unit totals.
#[derive(Default)]
struct ArmData {
    n: f64,
    successes: f64,
    cost: f64,
    p50_cost: Option<f64>,
    p95_cost: Option<f64>,
    p95_steps: Option<f64>,
    gates: f64,
    rejections: f64,
    feedback_sum: f64,
    feedback_count: f64,
    units: Vec<(f64, f64, f64)>,
}

/// Computes the readout of `x` at `now`, over `tenant`'s executions (every tenant's when `None`).
pub async fn readout(
    store: &dyn ProjectionStore,
    x: &Registered,
    tenant: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Readout> {
    let e = &x.experiment;
    // The name is validated at registration (letters, digits, `-_.`); quotes are doubled anyway.
    let name = e.name.replace('\'', "''");
    let only = tenant.map_or(String::new(), |t| {
        format!(" AND tenant = '{}'", t.replace('\'', "''"))
    });
    let filter = format!(
        "FROM gold.executions WHERE experiment = '{name}' AND finished_at IS NOT NULL{only}"
    );
    let arms = store
        .query(
            &Scope::Admin,
            &format!(
                "SELECT experiment_arm, COUNT(*), SUM(outcome_success), SUM(total_cost),
                    approx_percentile(total_cost, 0.5), approx_percentile(total_cost, 0.95),
                    approx_percentile(steps_n, 0.95), SUM(gate_escalations), SUM(gate_rejections),
                    SUM(feedback_sum), SUM(feedback_count)
                 {filter} GROUP BY 1 ORDER BY 1"
            ),
        )
        .await?;
    let mut data: BTreeMap<String, ArmData> = BTreeMap::new();
    for r in &arms.rows {
        let g = |i: usize| r.get(i).unwrap_or(&Value::Null);
        data.insert(
            text(g(0)),
            ArmData {
                n: num(g(1)).unwrap_or(0.0),
                successes: num(g(2)).unwrap_or(0.0),
                cost: num(g(3)).unwrap_or(0.0),
                p50_cost: num(g(4)),
                p95_cost: num(g(5)),
                p95_steps: num(g(6)),
                gates: num(g(7)).unwrap_or(0.0),
                rejections: num(g(8)).unwrap_or(0.0),
                feedback_sum: num(g(9)).unwrap_or(0.0),
                feedback_count: num(g(10)).unwrap_or(0.0),
                units: Vec::new(),
            },
        );
    }
    let units = store
        .query(
            &Scope::Admin,
            &format!(
                "SELECT experiment_arm, experiment_unit, COUNT(*), SUM(outcome_success),
                    SUM(COALESCE(total_cost, 0)) {filter} GROUP BY 1, 2"
            ),
        )
        .await?;
    for r in &units.rows {
        let g = |i: usize| r.get(i).unwrap_or(&Value::Null);
        if let Some(d) = data.get_mut(&text(g(0))) {
            d.units.push((
                num(g(2)).unwrap_or(0.0),
                num(g(3)).unwrap_or(0.0),
                num(g(4)).unwrap_or(0.0),
            ));
        }
    }
    let primary = |d: &ArmData| -> Option<Ratio> {
        let totals: Vec<UnitTotals> = d
            .units
            .iter()
            .map(|(n, s, c)| match e.primary_metric {
                Metric::CostPerSuccess => UnitTotals { num: *c, den: *s },
                Metric::SuccessRate => UnitTotals { num: *s, den: *n },
            })
            .collect();
        stats::ratio(&totals)
    };
    let empty = ArmData::default();
    let holdback = e.holdback().map(|a| a.name.clone()).unwrap_or_default();
    let base = primary(data.get(&holdback).unwrap_or(&empty));
    let mut out = Vec::new();
    for a in &e.arms {
        let d = data.get(&a.name).unwrap_or(&empty);
        let executions = count(&Value::from(d.n));
        let enough = executions >= e.min_sample;
        let success_rate = ratio_of(d.successes, d.n);
        let gate_rejection_rate = ratio_of(d.rejections, d.gates);
        let mean_feedback = ratio_of(d.feedback_sum, d.feedback_count);
        let guardrails = e
            .guardrails
            .iter()
            .map(|g| {
                let value = match g.metric {
                    GuardMetric::SuccessRate => success_rate,
                    GuardMetric::P95Cost => d.p95_cost,
                    GuardMetric::P95Steps => d.p95_steps,
                    GuardMetric::GateRejectionRate => gate_rejection_rate.or(Some(0.0)),
                    GuardMetric::MeanFeedback => mean_feedback,
                };
                let status = match value {
                    _ if !enough => "not_enough_data",
                    Some(v) if g.direction.holds(v, g.bound) => "pass",
                    Some(_) => "breach",
                    None => "not_enough_data",
                };
                GuardCheck {
                    metric: g.metric.as_str(),
                    direction: g.direction.symbol(),
                    bound: g.bound,
                    value,
                    status,
                }
            })
            .collect();
        let p = primary(d);
        let (vs, vs_ci) = match (&p, &base) {
            (Some(p), Some(b)) if !a.holdback => {
                let (diff, ci) = stats::difference(p, b);
                (Some(diff), ci)
            }
            _ => (None, None),
        };
        out.push(ArmReadout {
            arm: a.name.clone(),
            strategy: a.strategy.clone(),
            holdback: a.holdback,
            executions,
            units: d.units.len() as u64,
            success_rate,
            p50_cost: d.p50_cost,
            p95_cost: d.p95_cost,
            p95_steps: d.p95_steps,
            gates_per_execution: ratio_of(d.gates, d.n),
            gate_rejection_rate,
            mean_feedback,
            cost_per_success: ratio_of(d.cost, d.successes),
            primary: p.map(|r| r.value),
            primary_ci: p.and_then(|r| r.interval()),
            vs_holdback: vs,
            vs_holdback_ci: vs_ci,
            guardrails,
        });
    }
    let verdict = verdict(x, &out, now);
    Ok(Readout {
        experiment: e.name.clone(),
        status: x.status_word(now),
        unit: e.unit.as_str(),
        primary_metric: e.primary_metric.as_str(),
        method: METHOD,
        min_sample: e.min_sample,
        start: e.start.to_rfc3339(),
        end: e.end.to_rfc3339(),
        tenant: tenant.map(str::to_owned),
        arms: out,
        verdict,
    })
}

/// The plain verdict: not enough data below the minimum sample, none before the horizon, else
/// the arm whose interval of the difference from the holdback lies wholly on the better side of
/// zero and that breached no guardrail (the best such one), or no winner.
pub fn verdict(x: &Registered, arms: &[ArmReadout], now: DateTime<Utc>) -> Verdict {
    let e = &x.experiment;
    let short: Vec<String> = arms
        .iter()
        .filter(|a| a.executions < e.min_sample)
        .map(|a| format!("{} has {} of {}", a.arm, a.executions, e.min_sample))
        .collect();
    if !short.is_empty() {
        return Verdict {
            kind: "not_enough_data",
            arm: None,
            text: format!(
                "not enough data: {} finished executions needed per arm ({})",
                e.min_sample,
                short.join(", ")
            ),
        };
    }
    if now < e.end {
        return Verdict {
            kind: "before_horizon",
            arm: None,
            text: format!(
                "no verdict before the pre-registered horizon {}: the intervals are fixed-horizon \
                 and looking early would inflate false wins",
                e.end.to_rfc3339()
            ),
        };
    }
    let lower = e.primary_metric.lower_is_better();
    let better = |a: &ArmReadout| match a.vs_holdback_ci {
        Some((lo, hi)) => {
            if lower {
                hi < 0.0
            } else {
                lo > 0.0
            }
        }
        None => false,
    };
    let breached = |a: &ArmReadout| a.guardrails.iter().any(|g| g.status == "breach");
    let mut winners: Vec<&ArmReadout> = arms
        .iter()
        .filter(|a| !a.holdback && better(a) && !breached(a))
        .collect();
    winners.sort_by(|a, b| {
        let (x, y) = (a.vs_holdback.unwrap_or(0.0), b.vs_holdback.unwrap_or(0.0));
        if lower {
            x.total_cmp(&y)
        } else {
            y.total_cmp(&x)
        }
    });
    match winners.first() {
        Some(w) => Verdict {
            kind: "winner",
            arm: Some(w.arm.clone()),
            text: format!(
                "{} wins on {}: {} vs the holdback (95% interval {})",
                w.arm,
                e.primary_metric.as_str(),
                w.vs_holdback.map_or("?".into(), |d| format!("{d:+.6}")),
                w.vs_holdback_ci
                    .map_or("?".into(), |(lo, hi)| format!("{lo:+.6} to {hi:+.6}"))
            ),
        },
        None => {
            let held: Vec<&str> = arms
                .iter()
                .filter(|a| !a.holdback && better(a) && breached(a))
                .map(|a| a.arm.as_str())
                .collect();
            Verdict {
                kind: "no_winner",
                arm: None,
                text: if held.is_empty() {
                    format!(
                        "no arm beats the holdback on {} (every interval includes no \
                         difference, or is worse); keep the holdback",
                        e.primary_metric.as_str()
                    )
                } else {
                    format!(
                        "{} would win on {} but breached a guardrail; keep the holdback",
                        held.join(", "),
                        e.primary_metric.as_str()
                    )
                },
            }
        }
    }
}

/// The readout as a table for people.
pub fn render(r: &Readout) -> String {
    let f = |v: Option<f64>, d: usize| v.map_or("—".into(), |x| format!("{x:.d$}"));
    let mut out = format!(
        "experiment {} ({}; unit {}; primary {}; {} to {}{})\n",
        r.experiment,
        r.status,
        r.unit,
        r.primary_metric,
        r.start,
        r.end,
        r.tenant
            .as_ref()
            .map_or(String::new(), |t| format!("; tenant {t}"))
    );
    out.push_str(&format!(
        "{:<14} {:>6} {:>6} {:>8} {:>9} {:>9} {:>6} {:>7} {:>9} {:>30} {:>32}\n",
        "arm",
        "execs",
        "units",
        "success",
        "p50 cost",
        "p95 cost",
        "p95 st",
        "gates/x",
        "$/success",
        "primary (95% CI)",
        "vs holdback (95% CI)"
    ));
    for a in &r.arms {
        let ci = |v: Option<f64>, c: Option<(f64, f64)>| match (v, c) {
            (Some(v), Some((lo, hi))) => format!("{v:.6} [{lo:.6}, {hi:.6}]"),
            (Some(v), None) => format!("{v:.6}"),
            _ => "—".into(),
        };
        out.push_str(&format!(
            "{:<14} {:>6} {:>6} {:>8} {:>9} {:>9} {:>6} {:>7} {:>9} {:>30} {:>32}\n",
            if a.holdback {
                format!("{}*", a.arm)
            } else {
                a.arm.clone()
            },
            a.executions,
            a.units,
            f(a.success_rate, 3),
            f(a.p50_cost, 5),
            f(a.p95_cost, 5),
            f(a.p95_steps, 1),
            f(a.gates_per_execution, 2),
            f(a.cost_per_success, 5),
            ci(a.primary, a.primary_ci),
            if a.holdback {
                "(holdback)".into()
            } else {
                ci(a.vs_holdback, a.vs_holdback_ci)
            }
        ));
    }
    for a in &r.arms {
        for g in &a.guardrails {
            out.push_str(&format!(
                "guardrail {} {} {} {}: {} ({})\n",
                a.arm,
                g.metric,
                g.direction,
                g.bound,
                g.status,
                f(g.value, 5)
            ));
        }
    }
    out.push_str(&format!(
        "method: {}\nverdict: {}\n",
        r.method, r.verdict.text
    ));
    out
}
