//! The idempotency ledger and the shared rate budgets on PostgreSQL, in the spine's own database
//! (tables `keel_spine.tool_ledger` and `keel_spine.tool_rates`, created by the PostgreSQL spine's
//! migrations), so every worker on every machine shares one ledger and one budget per
//! (tenant, tool). Each decision is one statement, atomic in the server: a `begin` is an
//! `INSERT … ON CONFLICT DO NOTHING`; a rate permit is a conditional upsert of the GCRA arrival
//! time that admits only while it is within the burst.

use crate::budget::{RateStore, gcra_params, refusal};
use crate::contract::Rate;
use crate::error::ToolError;
use crate::ledger::{Begin, Ledger, LedgerEntry, LedgerOutcome, LedgerStart, LedgerState};
use async_trait::async_trait;
use keel_core::Cost;
use keel_core::payload::ToolStatus;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_postgres::Client;

fn detail(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_owned())
}

/// The ledger in the PostgreSQL spine's database.
#[derive(Clone)]
pub struct PgLedger {
    client: Arc<Client>,
    shown: PathBuf,
}

impl PgLedger {
    /// Connects to the spine's database at `url` (the spine must have been connected once, so
    /// its migrations created the table).
    pub async fn connect(url: &str) -> Result<Self, ToolError> {
        let (client, shown) = keel_spine::postgres::connect_session(url)
            .await
            .map_err(|e| ToolError::Ledger {
                path: PathBuf::from("postgres"),
                context: "connecting",
                detail: e.to_string(),
            })?;
        let ledger = Self {
            client: Arc::new(client),
            shown,
        };
        ledger
            .client
            .query("SELECT 1 FROM keel_spine.tool_ledger WHERE false", &[])
            .await
            .map_err(ledger.err(
                "finding table keel_spine.tool_ledger (connect the spine first: its migrations create it)",
            ))?;
        Ok(ledger)
    }

    fn err(&self, context: &'static str) -> impl Fn(tokio_postgres::Error) -> ToolError + '_ {
        move |e| ToolError::Ledger {
            path: self.shown.clone(),
            context,
            detail: detail(&e),
        }
    }

    async fn read_entry(&self, tenant: &str, key: &str) -> Result<Option<LedgerEntry>, ToolError> {
        let row = self
            .client
            .query_opt(
                "SELECT tool, exec_id, call_id, state, status, output_ref, actual_cost
                 FROM keel_spine.tool_ledger WHERE tenant = $1 AND key = $2",
                &[&tenant, &key],
            )
            .await
            .map_err(self.err("reading an entry"))?;
        Ok(row.map(|r| {
            let state = if r.get::<_, String>(3) == "finished" {
                LedgerState::Finished
            } else {
                LedgerState::Started
            };
            let status: Option<String> = r.get(4);
            let cost: Option<i64> = r.get(6);
            let outcome = status
                .and_then(|s| {
                    serde_json::from_value::<ToolStatus>(serde_json::Value::String(s)).ok()
                })
                .map(|status| LedgerOutcome {
                    status,
                    output_ref: r.get(5),
                    actual_cost: cost.map_or(Cost::Unknown, |c| Cost::Known(c.max(0) as u64)),
                });
            LedgerEntry {
                tool: r.get(0),
                exec_id: r.get(1),
                call_id: r.get(2),
                state,
                outcome: outcome.filter(|_| state == LedgerState::Finished),
            }
        }))
    }
}

fn status_str(s: ToolStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[async_trait]
impl Ledger for PgLedger {
    async fn begin(&self, s: &LedgerStart<'_>) -> Result<Begin, ToolError> {
        let inserted = self
            .client
            .execute(
                "INSERT INTO keel_spine.tool_ledger (tenant, key, tool, exec_id, call_id, state, started_at)
                 VALUES ($1, $2, $3, $4, $5, 'started', $6) ON CONFLICT DO NOTHING",
                &[&s.tenant, &s.key, &s.tool, &s.exec_id, &s.call_id, &s.now],
            )
            .await
            .map_err(self.err("recording started"))?;
        if inserted == 1 {
            return Ok(Begin::Started);
        }
        match self.read_entry(s.tenant, s.key).await? {
            Some(e) => Ok(Begin::Existing(e)),
            None => Err(ToolError::Ledger {
                path: self.shown.clone(),
                context: "recording started",
                detail: "the entry was released while this call began; retry".into(),
            }),
        }
    }

    async fn finish(
        &self,
        tenant: &str,
        key: &str,
        outcome: &LedgerOutcome,
        now: &str,
    ) -> Result<(), ToolError> {
        let cost = outcome
            .actual_cost
            .micros()
            .map(|c| i64::try_from(c).unwrap_or(i64::MAX));
        self.client
            .execute(
                "UPDATE keel_spine.tool_ledger SET state = 'finished', finished_at = $3, status = $4,
                     output_ref = $5, actual_cost = $6
                 WHERE tenant = $1 AND key = $2",
                &[
                    &tenant,
                    &key,
                    &now,
                    &status_str(outcome.status),
                    &outcome.output_ref,
                    &cost,
                ],
            )
            .await
            .map_err(self.err("recording the outcome"))?;
        Ok(())
    }

    async fn release(&self, tenant: &str, key: &str) -> Result<(), ToolError> {
        self.client
            .execute(
                "DELETE FROM keel_spine.tool_ledger WHERE tenant = $1 AND key = $2",
                &[&tenant, &key],
            )
            .await
            .map_err(self.err("releasing a key"))?;
        Ok(())
    }

    async fn get(&self, tenant: &str, key: &str) -> Result<Option<LedgerEntry>, ToolError> {
        self.read_entry(tenant, key).await
    }
}

/// Rate budgets in the PostgreSQL spine's database, shared by every worker on every machine.
#[derive(Clone)]
pub struct PgRates {
    client: Arc<Client>,
    shown: PathBuf,
}

impl PgRates {
    /// Connects to the spine's database at `url` (the spine's migrations create the table).
    pub async fn connect(url: &str) -> Result<Self, ToolError> {
        let (client, shown) = keel_spine::postgres::connect_session(url)
            .await
            .map_err(|e| ToolError::Rates {
                path: PathBuf::from("postgres"),
                context: "connecting",
                detail: e.to_string(),
            })?;
        Ok(Self {
            client: Arc::new(client),
            shown,
        })
    }
}

#[async_trait]
impl RateStore for PgRates {
    async fn take(
        &self,
        tool: &str,
        tenant: &str,
        rate: Rate,
        now_us: i64,
    ) -> Result<Result<(), String>, ToolError> {
        let (interval, tolerance) = gcra_params(rate);
        // One statement: admitted iff the stored arrival time (or now, if earlier or absent) is
        // within the tolerance; the row lock of the upsert serialises concurrent callers.
        let admitted = self
            .client
            .query_opt(
                "INSERT INTO keel_spine.tool_rates AS r (tenant, tool, tat_us)
                 VALUES ($1, $2, $3::int8 + $4::int8)
                 ON CONFLICT (tenant, tool) DO UPDATE SET tat_us = greatest(r.tat_us, $3::int8) + $4::int8
                 WHERE greatest(r.tat_us, $3::int8) - $3::int8 <= $5::int8
                 RETURNING tat_us",
                &[&tenant, &tool, &now_us, &interval, &tolerance],
            )
            .await
            .map_err(|e| ToolError::Rates {
                path: self.shown.clone(),
                context: "deciding a rate budget",
                detail: detail(&e),
            })?
            .is_some();
        Ok(if admitted {
            Ok(())
        } else {
            Err(refusal(tool, rate))
        })
    }
}
