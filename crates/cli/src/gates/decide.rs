//! `keel gates approve` and `keel gates reject`: a person's verdict on a gate, with the answer
//! to an MCP server's question for a gate opened during a call.

use crate::agents::operator;
use anyhow::{Context, bail};
use keel_core::payload::Verdict;
use keel_runtime::embedded::Embedded;

/// The approver's input from `--input JSON` or `--input-file F`, parsed.
pub fn input(
    text: Option<&str>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<serde_json::Value>> {
    let (text, from) = match (text, file) {
        (Some(t), _) => (t.to_owned(), "--input".to_owned()),
        (None, Some(f)) => (
            std::fs::read_to_string(f).with_context(|| format!("--input-file {}", f.display()))?,
            format!("--input-file {}", f.display()),
        ),
        (None, None) => return Ok(None),
    };
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("{from}: not JSON"))
}

/// Records `verdict` on `gate_id`; a rejection needs a reason (the agent is told it).
pub async fn decide(
    env: &Embedded,
    gate_id: &str,
    (verdict, reason): (Verdict, &str),
    approver: Option<String>,
    input: Option<serde_json::Value>,
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
        .decide_with_input(gate_id, None, &approver, verdict, reason, input)
        .await?;
    if gate.during_call.is_some() {
        eprintln!(
            "gate {} {} by {}: the tool's server is answered ({}), and the call goes on",
            d.gate_id,
            d.verdict.as_str(),
            d.approver,
            match d.verdict {
                Verdict::Approve => "accept",
                _ => "decline",
            }
        );
        return Ok(());
    }
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
