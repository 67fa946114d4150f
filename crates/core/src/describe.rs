//! One line of text per event, for people: the trace table of `keel trace`, the web UI's
//! timeline. Pure, so every surface words an event the same way.

use crate::cost::Cost;
use crate::payload::Payload;

/// Micro-USD as dollars, or `unknown`.
pub fn dollars(cost: Cost) -> String {
    match cost {
        Cost::Known(m) => format!("${:.6}", m as f64 / 1e6),
        Cost::Unknown => "unknown".into(),
    }
}

fn word<T: serde::Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// What happened, in one line.
pub fn describe(payload: &Payload) -> String {
    match payload {
        Payload::ExecStarted(s) => match &s.experiment {
            Some(x) => format!(
                "{} — {:?} (experiment {} arm {}, bucket {})",
                s.strategy_version, s.goal, x.experiment, x.arm, x.bucket
            ),
            None => format!("{} — {:?}", s.strategy_version, s.goal),
        },
        Payload::PlanProposed(p) => p.steps.join(" / "),
        Payload::ModelCalled(c) => c.model.clone(),
        Payload::ModelResponded(r) => match &r.error {
            Some(err) => format!("{} ERROR {err}", r.model),
            None => r.model.clone(),
        },
        Payload::ToolCalled(c) => format!("{}({}) attempt {}", c.tool, c.args, c.attempt),
        Payload::ToolResult(r) => {
            let status = word(r.status);
            if r.errors.is_empty() {
                format!("{} {status}", r.tool)
            } else {
                format!("{} {status}: {}", r.tool, r.errors.join("; "))
            }
        }
        Payload::GateRequested(g) => format!(
            "gate {} tier {} ({}): {}",
            g.gate_id,
            g.consequence_tier,
            g.action["tool"].as_str().unwrap_or("?"),
            g.reason
        ),
        Payload::GateDecided(g) => format!(
            "gate {} {} by {}: {}",
            g.gate_id,
            g.verdict.as_str(),
            g.approver,
            g.reason
        ),
        Payload::GateEscalated(g) => format!(
            "gate {} breached its {} ms SLA in queue {}",
            g.gate_id, g.deadline_ms, g.queue
        ),
        Payload::ReviewSampled(r) => format!("{} sampled for post-hoc review", r.tool),
        Payload::StepCompleted(s) => s.summary.clone().unwrap_or_default(),
        Payload::ExecFinished(f) => format!(
            "{} — {}",
            f.outcome.as_str(),
            f.detail.clone().unwrap_or_default()
        ),
        Payload::MemoryRetrieved(m) => format!("{} chunks for {:?}", m.chunks.len(), m.query),
        Payload::MemoryWritten(m) => m.memory_id.clone(),
        Payload::DistillFailed(d) => format!(
            "distillation failed after {} facts: {}",
            d.written, d.reason
        ),
        Payload::ExecSuspended(t) | Payload::ExecResumed(t) | Payload::ExecCancelled(t) => {
            t.reason.clone()
        }
        Payload::KillSet(k) => format!("kill {} {}: {}", k.scope, k.name, k.reason),
        Payload::KillCleared(k) => format!("clear {} {}", k.scope, k.name),
        Payload::StrategyDemoted(d) => format!(
            "{} demoted to tier {}",
            d.strategy_version, d.max_autonomous_tier
        ),
        Payload::StrategyCertified(c) => format!("{} certified by {}", c.strategy_version, c.by),
        Payload::SubjectErased(x) => format!(
            "subject {}… of tenant {} erased: {} executions shredded, {} blobs, {} facts",
            x.digest.chars().take(12).collect::<String>(),
            x.tenant,
            x.executions,
            x.blobs_deleted,
            x.facts_erased
        ),
        Payload::RetrievalRated(r) => format!(
            "retrieval at seq {} of {} rated {}/{} by {}",
            r.seq,
            r.exec_id,
            r.rating,
            crate::payload::MAX_RELEVANCE,
            r.rater
        ),
        Payload::FeedbackGiven(f) => format!(
            "{} rated {}/{} by {}",
            f.exec_id,
            f.rating,
            crate::payload::MAX_FEEDBACK,
            f.rater
        ),
        Payload::BudgetSet(b) => format!(
            "tenant {} budget ${:.2} a month, alarm at {}%{}, set by {}",
            b.tenant,
            b.monthly_micros as f64 / 1e6,
            b.alarm_percent,
            if b.hard_stop { ", hard stop" } else { "" },
            b.by
        ),
        Payload::BudgetAlarmed(a) => format!(
            "tenant {} spent ${:.4} of its ${:.2} budget for {} (alarm at {}%)",
            a.tenant,
            a.spent_micros as f64 / 1e6,
            a.monthly_micros as f64 / 1e6,
            a.month,
            a.alarm_percent
        ),
        Payload::ExperimentRegistered(r) => format!(
            "experiment {} registered by {}: {} arms by {}, primary {}, until {}",
            r.experiment.name,
            r.by,
            r.experiment.arms.len(),
            r.experiment.unit.as_str(),
            r.experiment.primary_metric.as_str(),
            r.experiment.end.to_rfc3339()
        ),
        Payload::ExperimentStopped(s) => match &s.arm {
            Some(arm) => format!(
                "experiment {} arm {arm} stopped by {}: {}",
                s.name, s.by, s.reason
            ),
            None => format!("experiment {} stopped by {}: {}", s.name, s.by, s.reason),
        },
        Payload::ExperimentConcluded(c) => {
            format!(
                "experiment {} concluded by {}: {}",
                c.name, c.by, c.decision
            )
        }
        Payload::GuardrailBreached(g) => format!(
            "experiment {} arm {} breached {} {} {} ({} over {} executions; {})",
            g.name,
            g.arm,
            g.guardrail.metric.as_str(),
            g.guardrail.direction.symbol(),
            g.guardrail.bound,
            g.value,
            g.sample,
            g.guardrail.on_breach.as_str()
        ),
        #[allow(unreachable_patterns)]
        other => other.event_type().to_string(),
    }
}
