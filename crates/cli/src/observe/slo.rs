//! `keel slo`: SLOs per strategy version, and the alarms that append `slo.alarmed` when crossed.

use super::refresh;
use keel_core::payload::Payload;
use keel_observe::slo;
use keel_observe::sql::Scope;
use keel_spine::clock::Clock;
use std::path::Path;

/// Computes the SLOs of the last `days` days, records crossed alarms, prints the report.
pub async fn slo(
    data: &Path,
    days: u32,
    alarms: &[String],
    json: bool,
    prometheus: bool,
) -> anyhow::Result<()> {
    let alarms: Vec<slo::Alarm> = alarms.iter().map(|a| a.parse()).collect::<Result<_, _>>()?;
    let (log, p) = refresh(data).await?;
    slo::check_strategies(&alarms, &slo::strategy_versions(&*p, &Scope::Admin).await?)?;
    let since = (keel_spine::clock::SystemClock.now() - chrono::Duration::days(i64::from(days)))
        .format("%Y-%m-%d")
        .to_string();
    let report = slo::compute(&*p, &since).await?;
    let breaches = slo::check(&report, &alarms);
    let fired = slo::emit(&*log, &keel_spine::clock::SystemClock, breaches.clone()).await?;
    for b in &breaches {
        eprintln!(
            "ALARM {}: {} = {:.4} {} {}{}",
            b.strategy_version,
            b.metric,
            b.value,
            b.op,
            b.bound,
            if fired
                .iter()
                .any(|e| matches!(&e.payload, Payload::SloAlarmed(a) if a == b))
            {
                " (slo.alarmed recorded)"
            } else {
                " (already recorded)"
            }
        );
    }
    if prometheus {
        print!("{}", slo::prometheus(&report));
    } else if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_slo(&report));
    }
    Ok(())
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn render_slo(r: &slo::SloReport) -> String {
    let mut out = format!("SLOs of executions started since {}\n", r.since);
    out.push_str(&format!(
        "{:<44} {:>6} {:>6} {:>8} {:>8} {:>6} {:>6} {:>8} {:>8} {:>10}\n",
        "strategy_version",
        "execs",
        "ended",
        "outcome",
        "gates",
        "p50st",
        "p95st",
        "p50tok",
        "p95tok",
        "$/success"
    ));
    for s in &r.strategies {
        out.push_str(&format!(
            "{:<44} {:>6} {:>6} {:>8} {:>8} {:>6} {:>6} {:>8} {:>8} {:>10}\n",
            s.strategy_version,
            s.executions,
            s.finished,
            opt(s.outcome_rate, 3),
            opt(s.gate_escalation_rate, 3),
            opt(s.p50_steps, 1),
            opt(s.p95_steps, 1),
            opt(s.p50_tokens, 0),
            opt(s.p95_tokens, 0),
            opt(s.cost_per_success, 6)
        ));
    }
    out.push_str("\ntool failure rate per contract\n");
    for t in &r.tools {
        out.push_str(&format!(
            "{:<44} {:<24} {:>6} calls {:>5} failed  {:.3}\n",
            t.strategy_version, t.tool, t.calls, t.failures, t.failure_rate
        ));
    }
    if !r.retrieval.is_empty() {
        out.push_str("\nretrieval relevance sampling\n");
        for s in &r.retrieval {
            out.push_str(&format!(
                "{:<44} {:>6} retrievals {:>5} queued for rating {:>5} rated  mean {}\n",
                s.strategy_version,
                s.retrievals,
                s.sampled,
                s.rated,
                opt(s.mean_rating, 2)
            ));
        }
    }
    out
}
