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
    let book = env.approvals.book().await?;
    if !book.gates.contains_key(gate_id) {
        let mut pending: Vec<_> = book.gates.values().filter(|g| g.is_pending()).collect();
        pending.sort_by_key(|g| g.requested_at);
        let known: Vec<String> = pending.iter().map(|g| g.gate_id.clone()).collect();
        bail!(
            "no gate {gate_id:?}; pending gates: {} (keel gates list)",
            crate::out::known(&known)
        );
    }
    drop(book);
    let (gate, d) = env
        .approvals
        .decide(gate_id, None, &approver, verdict, reason)
        .await?;
    eprintln!(
        "gate {} {} by {} after {} ms; execution {} runs on when a worker picks it up",
        d.gate_id,
        d.verdict.as_str(),
        d.approver,
        d.latency_ms,
        gate.exec_id
    );
    crate::out::next(&[
        "keel worker --once      # runs it on now (a running keel serve does it by itself)".into(),
        format!("keel trace {}", gate.exec_id),
    ]);
    Ok(())
}
