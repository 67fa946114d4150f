//! `keel gates list`: the gates of the store, oldest first.

use anyhow::bail;
use keel_runtime::embedded::Embedded;
use keel_runtime::gates::GateView;

fn gate_line(g: &GateView) -> String {
    let state = match &g.decision {
        Some(d) => format!("{} by {}", d.verdict.as_str(), d.approver),
        None if g.closed => "closed".into(),
        None if g.escalated => "pending (SLA breached)".into(),
        None => "pending".into(),
    };
    format!(
        "{}\t{}\t{}\ttier {}\t{}\t{}\t{}\t{}",
        g.gate_id,
        g.tenant,
        g.queue,
        g.consequence_tier,
        g.action["tool"].as_str().unwrap_or("?"),
        g.action["args"],
        state,
        g.exec_id
    )
}

/// Prints the gates of `tenant` (every tenant's when `None`) with status `status`.
pub async fn list(
    env: &Embedded,
    tenant: Option<&str>,
    status: &str,
    json: bool,
) -> anyhow::Result<()> {
    if !["pending", "decided", "all"].contains(&status) {
        bail!("--status {status:?} is not one of pending, decided, all");
    }
    let book = env.approvals.book().await?;
    let mut gates: Vec<&GateView> = book
        .gates
        .values()
        .filter(|g| tenant.is_none_or(|t| g.tenant == t))
        .filter(|g| match status {
            "pending" => g.is_pending(),
            "decided" => g.decision.is_some(),
            _ => true,
        })
        .collect();
    gates.sort_by_key(|g| g.requested_at);
    for g in gates {
        if json {
            println!("{}", serde_json::to_string(g)?);
        } else {
            println!("{}", gate_line(g));
        }
    }
    Ok(())
}
