//! `keel gates sweep`: escalate gates past their SLA deadline and expire those past their expiry.

use keel_runtime::embedded::Embedded;

/// One sweep; prints what it escalated and expired.
pub async fn sweep(env: &Embedded) -> anyhow::Result<()> {
    let r = env.approvals.sweep().await?;
    for (queue, id) in &r.escalated {
        println!("escalated\t{queue}\t{id}");
    }
    for (queue, id) in &r.expired {
        println!("expired\t{queue}\t{id}");
    }
    Ok(())
}
