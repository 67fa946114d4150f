//! Metrics, computed at scrape time from the spine (via the gate book) and the control state, so
//! they survive restarts and agree with the log: gates pending per queue, decision latency
//! p50/p95 per queue, SLA escalations and expiries, executions by outcome, cost, demotions.
//! Scoped like everything else: a token sees its own tenant's series.

use crate::api::need;
use crate::auth::Role;
use crate::error::ApiError;
use crate::{Caller, State};
use axum::Json;
use axum::response::IntoResponse;
use keel_core::payload::Verdict;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Per-queue gate figures.
#[derive(Default)]
struct Queue {
    pending: u64,
    escalated: u64,
    expired: u64,
    latencies_ms: Latencies,
}

/// A distribution of decision latencies as value → count: exact for the gates the book holds,
/// bucketed ([`keel_runtime::gates::latency_bucket`]) for those it let go; its size does not
/// grow with the number of decisions.
#[derive(Default)]
struct Latencies {
    counts: BTreeMap<u64, u64>,
    n: u64,
    sum: u64,
}

impl Latencies {
    fn push(&mut self, ms: u64) {
        *self.counts.entry(ms).or_default() += 1;
        self.n += 1;
        self.sum = self.sum.saturating_add(ms);
    }

    fn merge(&mut self, d: &keel_runtime::gates::DroppedQueue) {
        for (v, c) in &d.latencies_ms {
            *self.counts.entry(*v).or_default() += c;
            self.n += c;
        }
        self.sum = self.sum.saturating_add(d.latency_sum_ms);
    }

    fn len(&self) -> u64 {
        self.n
    }

    fn sum(&self) -> u64 {
        self.sum
    }
}

/// Nearest-rank percentile.
fn percentile(l: &Latencies, p: f64) -> Option<u64> {
    if l.n == 0 {
        return None;
    }
    let rank = ((p * l.n as f64).ceil() as u64).clamp(1, l.n);
    let mut seen = 0;
    for (v, c) in &l.counts {
        seen += c;
        if seen >= rank {
            return Some(*v);
        }
    }
    None
}

struct Figures {
    queues: BTreeMap<String, Queue>,
    /// (strategy_version, outcome-or-status) → count.
    executions: BTreeMap<(String, String), u64>,
    /// strategy_version → (µUSD, executions with an unknown cost part).
    cost: BTreeMap<String, (u64, u64)>,
    reviews: u64,
    demoted: Vec<(String, u8)>,
}

async fn figures(state: &State, tenant: &str) -> Result<Figures, ApiError> {
    let book = state.approvals.book().await?;
    let mut queues: BTreeMap<String, Queue> = BTreeMap::new();
    // Replays are not production: none of their gates, executions or samples is counted.
    for g in book
        .gates
        .values()
        .filter(|g| g.tenant == tenant && !g.replay)
    {
        let q = queues.entry(g.queue.clone()).or_default();
        if g.is_pending() {
            q.pending += 1;
        }
        if g.escalated {
            q.escalated += 1;
        }
        if let Some(d) = &g.decision {
            if d.verdict == Verdict::Expired {
                q.expired += 1;
            } else {
                q.latencies_ms.push(d.latency_ms);
            }
        }
    }
    let mut executions = BTreeMap::new();
    let mut cost: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for x in book
        .execs
        .values()
        .filter(|x| x.tenant == tenant && x.replay_of.is_none())
    {
        *executions
            .entry((x.strategy_version.clone(), x.status.clone()))
            .or_default() += 1;
        let c = cost.entry(x.strategy_version.clone()).or_default();
        c.0 += x.cost_micros;
        if !x.cost_known {
            c.1 += 1;
        }
    }
    let reviews = book
        .reviews
        .iter()
        .filter(|r| r.tenant == tenant && !r.replay)
        .count() as u64;
    let mut reviews = reviews;
    // What the server's bounded book let go, as totals (replays were never added).
    if let Some(d) = book.dropped.get(tenant) {
        for (k, n) in &d.executions {
            *executions.entry(k.clone()).or_default() += n;
        }
        for (v, (m, unknown)) in &d.cost {
            let c = cost.entry(v.clone()).or_default();
            c.0 += m;
            c.1 += unknown;
        }
        for (name, dq) in &d.queues {
            let q = queues.entry(name.clone()).or_default();
            q.escalated += dq.escalated;
            q.expired += dq.expired;
            q.latencies_ms.merge(dq);
        }
        reviews += d.reviews;
    }
    drop(book);
    let demoted = state
        .control
        .state()
        .await?
        .demotions
        .into_iter()
        .map(|(v, d)| (v, d.max_autonomous_tier))
        .collect();
    Ok(Figures {
        queues,
        executions,
        cost,
        reviews,
        demoted,
    })
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`: the Prometheus text exposition.
pub async fn prometheus(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    need(&caller, &[Role::Operator])?;
    let t = esc(&caller.0.tenant);
    let f = figures(&state, &caller.0.tenant).await?;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "# HELP keel_gates_pending Gates waiting for a decision.");
    let _ = writeln!(w, "# TYPE keel_gates_pending gauge");
    for (name, q) in &f.queues {
        let _ = writeln!(
            w,
            "keel_gates_pending{{tenant=\"{t}\",queue=\"{}\"}} {}",
            esc(name),
            q.pending
        );
    }
    let _ = writeln!(
        w,
        "# HELP keel_gate_decision_latency_seconds Time from gate request to a person's decision."
    );
    let _ = writeln!(w, "# TYPE keel_gate_decision_latency_seconds summary");
    for (name, q) in &f.queues {
        let labels = format!("tenant=\"{t}\",queue=\"{}\"", esc(name));
        for (p, label) in [(0.5, "0.5"), (0.95, "0.95")] {
            if let Some(v) = percentile(&q.latencies_ms, p) {
                let _ = writeln!(
                    w,
                    "keel_gate_decision_latency_seconds{{{labels},quantile=\"{label}\"}} {}",
                    v as f64 / 1e3
                );
            }
        }
        let sum = q.latencies_ms.sum();
        let _ = writeln!(
            w,
            "keel_gate_decision_latency_seconds_sum{{{labels}}} {}",
            sum as f64 / 1e3
        );
        let _ = writeln!(
            w,
            "keel_gate_decision_latency_seconds_count{{{labels}}} {}",
            q.latencies_ms.len()
        );
    }
    let _ = writeln!(
        w,
        "# HELP keel_gate_escalations_total Gates that breached their SLA deadline."
    );
    let _ = writeln!(w, "# TYPE keel_gate_escalations_total counter");
    for (name, q) in &f.queues {
        let _ = writeln!(
            w,
            "keel_gate_escalations_total{{tenant=\"{t}\",queue=\"{}\"}} {}",
            esc(name),
            q.escalated
        );
    }
    let _ = writeln!(
        w,
        "# HELP keel_gates_expired_total Gates that expired undecided."
    );
    let _ = writeln!(w, "# TYPE keel_gates_expired_total counter");
    for (name, q) in &f.queues {
        let _ = writeln!(
            w,
            "keel_gates_expired_total{{tenant=\"{t}\",queue=\"{}\"}} {}",
            esc(name),
            q.expired
        );
    }
    let _ = writeln!(
        w,
        "# HELP keel_executions Executions by strategy version and outcome (or current status)."
    );
    let _ = writeln!(w, "# TYPE keel_executions gauge");
    for ((version, outcome), n) in &f.executions {
        let _ = writeln!(
            w,
            "keel_executions{{tenant=\"{t}\",strategy_version=\"{}\",outcome=\"{}\"}} {n}",
            esc(version),
            esc(outcome)
        );
    }
    let _ = writeln!(
        w,
        "# HELP keel_cost_usd_total Known cost of executions, by strategy version."
    );
    let _ = writeln!(w, "# TYPE keel_cost_usd_total counter");
    for (version, (micros, _)) in &f.cost {
        let _ = writeln!(
            w,
            "keel_cost_usd_total{{tenant=\"{t}\",strategy_version=\"{}\"}} {}",
            esc(version),
            *micros as f64 / 1e6
        );
    }
    let _ = writeln!(
        w,
        "# HELP keel_reviews_sampled_total Tier-2 actions sampled for post-hoc review."
    );
    let _ = writeln!(w, "# TYPE keel_reviews_sampled_total counter");
    let _ = writeln!(
        w,
        "keel_reviews_sampled_total{{tenant=\"{t}\"}} {}",
        f.reviews
    );
    let _ = writeln!(
        w,
        "# HELP keel_strategy_demoted_max_tier Maximum autonomous tier of demoted strategy versions."
    );
    let _ = writeln!(w, "# TYPE keel_strategy_demoted_max_tier gauge");
    for (version, tier) in &f.demoted {
        let _ = writeln!(
            w,
            "keel_strategy_demoted_max_tier{{strategy_version=\"{}\"}} {tier}",
            esc(version)
        );
    }
    out.push_str(&crate::observe::slo_metrics(&state, &caller.0).await?);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    ))
}

/// `GET /v1/metrics`: the same figures as JSON.
pub async fn json(
    axum::extract::State(state): axum::extract::State<State>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    need(&caller, &[Role::Operator, Role::Approver])?;
    let f = figures(&state, &caller.0.tenant).await?;
    let queues: BTreeMap<&String, Value> = f
        .queues
        .iter()
        .map(|(name, q)| {
            (
                name,
                json!({
                    "pending": q.pending,
                    "decided": q.latencies_ms.len(),
                    "escalated": q.escalated,
                    "expired": q.expired,
                    "decision_latency_ms_p50": percentile(&q.latencies_ms, 0.5),
                    "decision_latency_ms_p95": percentile(&q.latencies_ms, 0.95),
                }),
            )
        })
        .collect();
    let executions: Vec<Value> = f
        .executions
        .iter()
        .map(|((v, o), n)| json!({"strategy_version": v, "outcome": o, "count": n}))
        .collect();
    let cost: BTreeMap<&String, Value> = f
        .cost
        .iter()
        .map(|(v, (m, unknown))| {
            (
                v,
                json!({"usd": *m as f64 / 1e6, "executions_with_unknown_cost": unknown}),
            )
        })
        .collect();
    Ok(Json(json!({
        "tenant": caller.0.tenant,
        "queues": queues,
        "executions": executions,
        "cost": cost,
        "reviews_sampled": f.reviews,
        "demoted": f.demoted.iter().map(|(v, t)| json!({"strategy_version": v, "max_autonomous_tier": t})).collect::<Vec<_>>(),
    })))
}

#[cfg(test)]
mod tests {
    use super::{Latencies, percentile};

    fn of(v: &[u64]) -> Latencies {
        let mut l = Latencies::default();
        for x in v {
            l.push(*x);
        }
        l
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v = of(&[100, 20, 30, 40, 50, 60, 70, 80, 90, 10]);
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.95), Some(100));
        assert_eq!(percentile(&of(&[7]), 0.95), Some(7));
        assert_eq!(percentile(&of(&[]), 0.5), None);
        assert_eq!((v.len(), v.sum()), (10, 550));
    }
}
