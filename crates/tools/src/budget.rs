//! Budgets: a rate per tenant per tool and a per-execution cost budget. Both answer at once: a
//! call over budget is refused (and recorded), never queued to wait for an unbounded time.
//!
//! A rate is a promise to the tool's owner, so it is decided where every process sees it: a
//! [`RateStore`] shared by every process on a store. [`SqliteRates`] keeps one row per (tenant,
//! tool) in the spine's own file and decides each call in an `IMMEDIATE` transaction, so twelve
//! `keel run` processes admit exactly the budget between them; a PostgreSQL store can follow
//! behind the same trait (one `SELECT … FOR UPDATE` row). [`RateBudgets`] is the in-process
//! limiter, for runs no other process shares (replays, benchmarks of a private store).
//!
//! The algorithm is GCRA (the one `governor` implements): each (tenant, tool) keeps a theoretical
//! arrival time; a call is admitted while that time is less than one period minus one emission
//! interval ahead of now, and moves it one interval on. `calls` per `per` is the burst too.

use crate::contract::Rate;
use crate::error::ToolError;
use async_trait::async_trait;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use keel_core::Cost;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where rate budgets are decided. Contract: `take` is atomic across every process (and
/// machine) that shares the store: over any stretch of time, the calls it admits for one
/// (tenant, tool) never exceed what the rate allows (burst `rate.calls`, refilled at `rate.calls`
/// per `rate.per`). `Ok(Err(reason))` is a refusal; `Err` means the store failed.
#[async_trait]
pub trait RateStore: Send + Sync {
    /// Takes one permit for `tenant` on `tool` at `now_us` (microseconds since the Unix epoch).
    async fn take(
        &self,
        tool: &str,
        tenant: &str,
        rate: Rate,
        now_us: i64,
    ) -> Result<Result<(), String>, ToolError>;
}

pub(crate) fn refusal(tool: &str, rate: Rate) -> String {
    format!(
        "rate budget exhausted: {tool} allows {} call(s) per {}s per tenant",
        rate.calls,
        rate.per.as_secs()
    )
}

/// GCRA's emission interval and tolerance for a rate, in microseconds.
pub(crate) fn gcra_params(rate: Rate) -> (i64, i64) {
    let calls = i64::from(rate.calls.max(1));
    let per = i64::try_from(rate.per.as_micros()).unwrap_or(i64::MAX);
    let interval = (per / calls).max(1);
    (interval, interval.saturating_mul(calls - 1))
}

/// One GCRA step: the new theoretical arrival time if a call at `now` is admitted.
fn gcra(tat: Option<i64>, now: i64, rate: Rate) -> Option<i64> {
    let (interval, tolerance) = gcra_params(rate);
    let tat = tat.unwrap_or(now).max(now);
    (tat.saturating_sub(now) <= tolerance).then(|| tat.saturating_add(interval))
}

/// Rate budgets in the spine's SQLite file (table `tool_rates`), shared by every process that
/// opens it.
#[derive(Clone)]
pub struct SqliteRates {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl SqliteRates {
    /// Opens (creating its table if needed) the rate store in the SQLite file at `path`
    /// (`DIR/spine.db`).
    ///
    /// Commits are not fsynced (`synchronous = NORMAL` in WAL mode): every process sees each
    /// commit at once, which is what the budget needs; a power loss may forget the last few
    /// admissions, which can only admit a few more calls in the window after a machine restart.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ToolError> {
        let path = path.as_ref().to_owned();
        let err = |context| {
            let path = path.clone();
            move |e: rusqlite::Error| ToolError::Rates {
                path,
                context,
                detail: e.to_string(),
            }
        };
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err("opening the rate store"))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000;
             CREATE TABLE IF NOT EXISTS tool_rates (
                 tenant TEXT NOT NULL,
                 tool TEXT NOT NULL,
                 tat_us INTEGER NOT NULL,
                 PRIMARY KEY (tenant, tool)
             ) WITHOUT ROWID;",
        )
        .map_err(err("creating table tool_rates"))?;
        Ok(Self {
            path,
            conn: Arc::new(Mutex::new(conn)),
        })
    }
}

#[async_trait]
impl RateStore for SqliteRates {
    async fn take(
        &self,
        tool: &str,
        tenant: &str,
        rate: Rate,
        now_us: i64,
    ) -> Result<Result<(), String>, ToolError> {
        let conn = self.conn.clone();
        let (tool, tenant) = (tool.to_owned(), tenant.to_owned());
        let path = self.path.clone();
        let fail = move |detail: String| ToolError::Rates {
            path,
            context: "deciding a rate budget",
            detail,
        };
        let fail2 = fail.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = match conn.lock() {
                Ok(g) => g,
                Err(_) => return Err(fail("connection lock poisoned".into())),
            };
            let decide = |c: &mut Connection| -> rusqlite::Result<Result<(), String>> {
                // IMMEDIATE takes the write lock before the read, so no other process can read
                // the same arrival time and admit the same permit.
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let tat: Option<i64> = tx
                    .prepare_cached(
                        "SELECT tat_us FROM tool_rates WHERE tenant = ?1 AND tool = ?2",
                    )?
                    .query_row(params![tenant, tool], |r| r.get(0))
                    .optional()?;
                let Some(next) = gcra(tat, now_us, rate) else {
                    return Ok(Err(refusal(&tool, rate)));
                };
                tx.prepare_cached(
                    "INSERT INTO tool_rates (tenant, tool, tat_us) VALUES (?1, ?2, ?3)
                     ON CONFLICT (tenant, tool) DO UPDATE SET tat_us = excluded.tat_us",
                )?
                .execute(params![tenant, tool, next])?;
                tx.commit()?;
                Ok(Ok(()))
            };
            decide(&mut guard).map_err(|e| fail(e.to_string()))
        })
        .await
        .map_err(|e| fail2(e.to_string()))?
    }
}

/// In-process limiters, keyed by tool then tenant. Holds only inside this process: use it only
/// where no other process draws on the same budget.
#[derive(Clone, Default)]
pub struct RateBudgets {
    limiters: Arc<Mutex<HashMap<String, Arc<DefaultKeyedRateLimiter<String>>>>>,
}

impl RateBudgets {
    /// Takes one permit for `tenant` on `tool`; `Err(reason)` when the rate is exhausted.
    pub fn check(&self, tool: &str, tenant: &str, rate: Rate) -> Result<(), String> {
        let limiter = {
            let mut map = self
                .limiters
                .lock()
                .map_err(|_| "rate limiter lock poisoned".to_owned())?;
            map.entry(tool.to_owned())
                .or_insert_with(|| {
                    let burst = NonZeroU32::new(rate.calls).unwrap_or(NonZeroU32::MIN);
                    let period = rate.per / rate.calls.max(1);
                    let quota = Quota::with_period(period)
                        .unwrap_or_else(|| Quota::per_second(burst))
                        .allow_burst(burst);
                    Arc::new(RateLimiter::keyed(quota))
                })
                .clone()
        };
        limiter
            .check_key(&tenant.to_owned())
            .map_err(|_| refusal(tool, rate))
    }
}

#[async_trait]
impl RateStore for RateBudgets {
    async fn take(
        &self,
        tool: &str,
        tenant: &str,
        rate: Rate,
        _now_us: i64,
    ) -> Result<Result<(), String>, ToolError> {
        Ok(self.check(tool, tenant, rate))
    }
}

/// Checks a call's estimated cost against the execution's budget. `spent` is the execution's
/// cost so far (model + tools), `max` its declared budget in micro-USD.
pub fn check_cost(spent: Cost, est: Cost, max: Option<u64>) -> Result<(), String> {
    let Some(max) = max else { return Ok(()) };
    // An unknown cost may already be over budget; refusing is the only answer that cannot
    // overspend (a sum with an unknown part is unknown, never zero).
    match spent + est {
        Cost::Known(total) if total <= max => Ok(()),
        Cost::Known(total) => Err(format!(
            "cost budget exhausted: spent {} + estimated {} = {total} µUSD exceeds the execution's budget of {max} µUSD",
            spent.micros().unwrap_or(0),
            est.micros().unwrap_or(0),
        )),
        Cost::Unknown => Err(format!(
            "cost budget cannot be checked: the execution's cost so far or this tool's estimate is unknown (budget {max} µUSD)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn gcra_admits_the_burst_then_one_per_interval() {
        let rate = Rate {
            calls: 10,
            per: Duration::from_secs(60),
        };
        let mut tat = None;
        for i in 0..10 {
            tat = Some(gcra(tat, 0, rate).unwrap_or_else(|| panic!("call {i} refused")));
        }
        assert_eq!(
            gcra(tat, 0, rate),
            None,
            "the 11th call in the same instant"
        );
        assert!(gcra(tat, 6_000_000, rate).is_some(), "one interval later");
    }
}
