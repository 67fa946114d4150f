//! Budgets: a rate per tenant per tool and a per-execution cost budget. Both answer at once: a
//! call over budget is refused (and recorded), never queued to wait for an unbounded time.
//!
//! A rate is a promise to the tool's owner, so it is decided where every process sees it: a
//! [`RateStore`] shared by every process on a store. [`SqliteRates`] keeps one row per (tenant,
//! tool) in the spine's own file and decides each call in the spine's write transaction, so twelve
//! `keel run` processes admit exactly the budget between them; a fast rate is taken there in
//! blocks of ~50 ms of permits per commit, not one commit per call. `PgRates` (feature
//! `postgres`) does the same in the PostgreSQL spine's database; both share the blocks'
//! bookkeeping (`crate::blocks`). [`RateBudgets`] is the in-process limiter, for runs no other
//! process shares (replays, benchmarks of a private store).
//!
//! The algorithm is GCRA (the one `governor` implements): each (tenant, tool) keeps a theoretical
//! arrival time; a call is admitted while that time is less than one period minus one emission
//! interval ahead of now, and moves it one interval on. `calls` per `per` is the burst too.

pub use crate::blocks::{BLOCK_WINDOW_US, block_size};
use crate::blocks::{Blocks, TakeCommit};
use crate::contract::Rate;
use crate::error::ToolError;
use async_trait::async_trait;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use keel_core::Cost;
use keel_spine::side::{SideAnswer, SideWrite};
use keel_spine::{EventLog, SqliteLog, SqliteOptions};
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

    /// The spine store this budget's rows live in, if they are spine side writes
    /// ([`keel_spine::EventLog::side_store`]): a runner whose spine has the same store carries
    /// a take in the append of the call's intent. `None` (the default): always call `take`.
    fn side_store(&self) -> Option<&Path> {
        None
    }

    /// For a call whose take rides in the append of its intent (the runner's spine is
    /// [`RateStore::side_store`]): the take to carry, or [`Ride::Held`] when this handle already
    /// holds a permit for it. The default carries one permit.
    fn ride(&self, tool: &str, tenant: &str, rate: Rate, now_us: i64) -> Ride {
        Ride::Carry(take_write(tool, tenant, rate, now_us))
    }

    /// Decides the call from the answer to its carried take (`admitted`), as [`RateStore::take`]
    /// answers. The default: admitted or refused, nothing more to do.
    async fn ridden(
        &self,
        tool: &str,
        _tenant: &str,
        rate: Rate,
        _now_us: i64,
        admitted: bool,
    ) -> Result<Result<(), String>, ToolError> {
        Ok(admitted.then_some(()).ok_or_else(|| refusal(tool, rate)))
    }
}

/// How a call that rides its take in its intent's append takes its permit ([`RateStore::ride`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ride {
    /// The store's handle had a permit for the call (of a block it took before): nothing rides.
    Held,
    /// Carry this take in the intent's append, then pass its answer to [`RateStore::ridden`].
    Carry(SideWrite),
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

/// The side write that takes one permit of `rate` for `tenant` on `tool` at `now_us` (GCRA, in
/// the spine's transaction).
pub(crate) fn take_write(tool: &str, tenant: &str, rate: Rate, now_us: i64) -> SideWrite {
    let (interval_us, tolerance_us) = gcra_params(rate);
    SideWrite::RateTake {
        tenant: tenant.to_owned(),
        tool: tool.to_owned(),
        interval_us,
        tolerance_us,
        now_us,
    }
}

/// Rate budgets in the spine's SQLite file (table `tool_rates`), shared by every process that
/// opens it, decided by the spine's group commit: each take is a request of side writes only,
/// not fsynced (every process sees each commit at once, which is what the budget needs; a power
/// loss may forget the last few admissions, which can only admit a few more calls in the window
/// after a machine restart). A [`crate::ToolRunner`] on the same spine carries the take of a
/// call that may act in the append of its intent instead.
///
/// A fast rate is taken in blocks ([`block_size`]): one commit takes a block of consecutive
/// permits, and this handle hands them out until they run out or the block's window
/// (`n` intervals, at most [`BLOCK_WINDOW_US`]) has passed; what is left then is lost, never
/// used twice, so a crash loses at most the blocks it held (one, unless tasks refilled at
/// once). To keep the promise in any window, a block is admitted with its window taken off the
/// burst.
pub type SqliteRates = Blocks<SqliteLog>;

#[async_trait]
impl TakeCommit for SqliteLog {
    async fn commit(&self, take: SideWrite) -> Result<SideAnswer, ToolError> {
        let answers = self.write_side(vec![take], false).await?;
        answers.into_iter().next().ok_or_else(|| ToolError::Rates {
            path: PathBuf::new(),
            context: "deciding a rate budget",
            detail: "the spine answered nothing".into(),
        })
    }

    fn side_store(&self) -> Option<&Path> {
        EventLog::side_store(self)
    }

    fn shown(&self) -> PathBuf {
        PathBuf::new()
    }
}

impl Blocks<SqliteLog> {
    /// The rate store in the spine this handle writes (share the spine's handle: one writer).
    pub fn on(log: &SqliteLog) -> Self {
        Blocks::new(log.clone())
    }

    /// The rate store in the spine file at `path` (`DIR/spine.db`): through the handle this
    /// process already has open on it (one writer), else a new one (creating the file if needed).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ToolError> {
        let log = SqliteLog::open_shared(path, SqliteOptions::default())?;
        Ok(Self::on(&log))
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

    /// One GCRA step as the spine applies it (`sqlite/side.rs`): the new theoretical arrival
    /// time if a call at `now` is admitted.
    fn gcra(tat: Option<i64>, now: i64, rate: Rate) -> Option<i64> {
        let (interval, tolerance) = gcra_params(rate);
        let tat = tat.unwrap_or(now).max(now);
        (tat.saturating_sub(now) <= tolerance).then(|| tat.saturating_add(interval))
    }

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
