//! `keel gates approve` and `keel gates reject`: a person's verdict on a gate.

use crate::agents::operator;
use anyhow::bail;
use keel_core::payload::Verdict;
use keel_runtime::embedded::Embedded;

/// Records `verdict` on `gate_id`; a rejection needs a reason (the agent is told it).
pub async fn decide(
    env: &Embedded,
    gate_id: &str,
    verdict: Verdict,
    reason: &str,
    approver: Option<String>,
) -> anyhow::Result<()> {
    if verdict == Verdict::Reject && reason.trim().is_empty() {
        bail!("--reason: give the reason; the agent is told it");
    }
    let approver = approver.unwrap_or_else(operator);
    let (gate, d) = env
        .approvals
        .decide(gate_id, None, &approver, verdict, reason)
        .await?;
    eprintln!(
        "gate {} {} by {} after {} ms; execution {} runs on when a worker picks it up (keel worker, keel serve)",
        d.gate_id,
        d.verdict.as_str(),
        d.approver,
        d.latency_ms,
        gate.exec_id
    );
    Ok(())
}
