//! `keel gates list`: the gates of the store, oldest first.

use anyhow::bail;
use keel_runtime::embedded::Embedded;
use keel_runtime::gates::GateView;

/// The columns of `keel gates list`.
const HEADER: &[&str] = &[
    "gate",
    "tenant",
    "queue",
    "tier",
    "tool",
    "args",
    "state",
    "execution",
];

fn gate_row(g: &GateView) -> Vec<String> {
    let state = match &g.decision {
        Some(d) => format!("{} by {}", d.verdict.as_str(), d.approver),
        None if g.closed => "closed".into(),
        None if g.escalated => "pending (SLA breached)".into(),
        None => "pending".into(),
    };
    vec![
        g.gate_id.clone(),
        g.tenant.clone(),
        g.queue.clone(),
        g.consequence_tier.to_string(),
        g.action["tool"].as_str().unwrap_or("?").to_owned(),
        g.action["args"].to_string(),
        state,
        g.exec_id.to_string(),
    ]
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
    if json {
        for g in gates {
            println!("{}", serde_json::to_string(g)?);
        }
        return Ok(());
    }
    let first = gates.first().map(|g| g.gate_id.clone());
    crate::out::table(HEADER, gates.into_iter().map(gate_row));
    match first {
        None => crate::out::hint(&format!("no {status} gates")),
        Some(id) if status == "pending" => crate::out::next(&[
            format!(
                "keel gates approve {id} --reason \"…\"   # or: keel gates reject {id} --reason \"…\""
            ),
            "keel gates list --json                          # with each gate's evidence pack"
                .into(),
        ]),
        Some(_) => {}
    }
    Ok(())
}
