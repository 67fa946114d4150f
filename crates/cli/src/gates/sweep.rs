//! `keel gates sweep`: escalate gates past their SLA deadline and expire those past their expiry.

use keel_runtime::embedded::Embedded;

/// One sweep; prints what it escalated and expired.
pub async fn sweep(env: &Embedded) -> anyhow::Result<()> {
    let r = env.approvals.sweep().await?;
    let row =
        |what: &str, (queue, id): &(String, String)| vec![what.into(), queue.clone(), id.clone()];
    crate::out::table(
        &["action", "queue", "gate"],
        r.escalated
            .iter()
            .map(|g| row("escalated", g))
            .chain(r.expired.iter().map(|g| row("expired", g))),
    );
    Ok(())
}
