//! `keel gates export`: decided gates as a labelled dataset (features: the evidence pack; label:
//! the verdict).

use anyhow::{Context, bail};
use keel_runtime::embedded::Embedded;
use keel_runtime::gates::GateView;
use serde_json::json;
use std::io::Write;
use std::path::Path;

/// Writes the decided gates as JSON lines to `out` (stdout when `None`).
pub async fn export(
    env: &Embedded,
    format: &str,
    out: Option<&Path>,
    include_replays: bool,
) -> anyhow::Result<()> {
    if format != "jsonl" {
        bail!("--format {format:?}: only jsonl is supported");
    }
    let book = env.approvals.book().await?;
    let mut w: Box<dyn Write> = match &out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut n = 0;
    let mut decided: Vec<&GateView> = book
        .gates
        .values()
        .filter(|g| g.decision.is_some() && (include_replays || !g.replay))
        .collect();
    decided.sort_by_key(|g| g.requested_at);
    for g in decided {
        let Some(d) = &g.decision else { continue };
        let replay_of = book
            .execs
            .get(&g.exec_id)
            .and_then(|x| x.replay_of)
            .map(|o| o.to_string());
        let row = json!({
            "gate_id": g.gate_id,
            "exec_id": g.exec_id.to_string(),
            "tenant": g.tenant,
            "trace_id": g.trace_id.to_string(),
            "strategy_version": g.strategy_version,
            "queue": g.queue,
            "consequence_tier": g.consequence_tier,
            "action": g.action,
            "why_gated": g.reason,
            "evidence_pack": g.evidence_pack,
            "label": d.verdict.as_str(),
            "approver": d.approver,
            "reason": d.reason,
            "latency_ms": d.latency_ms,
            "escalated": g.escalated,
            "requested_at": g.requested_at.to_rfc3339(),
            "decided_at": d.at.to_rfc3339(),
            "is_replay": g.replay,
            "replay_of": replay_of,
        });
        writeln!(w, "{row}")?;
        n += 1;
    }
    w.flush()?;
    eprintln!("exported {n} decided gates");
    Ok(())
}
