//! `keel sql`: one read-only query over the projections.

use anyhow::Context;
use keel_observe::sql::{Format, Scope};
use std::path::Path;

/// Runs `query` (as `tenant` when given, else over every tenant) and prints the rows.
pub async fn sql(
    data: &Path,
    query: &str,
    format: &str,
    tenant: Option<String>,
) -> anyhow::Result<()> {
    let format: Format = format.parse()?;
    let (_, p) = super::refresh(data).await?;
    let scope = tenant.map_or(Scope::Admin, Scope::Tenant);
    let rows = p
        .query(&scope, query)
        .await
        .with_context(|| format!("dialect: {}", p.dialect()))?;
    print!("{}", rows.render(format));
    Ok(())
}
