//! Budgets: a rate per tenant per tool (GCRA token bucket, `governor`) and a per-execution cost
//! budget. Both answer at once: a call over budget is refused (and recorded), never queued to
//! wait for an unbounded time.
//!
//! Rates are in-process; a scaled-out deployment needs a shared counter (a Postgres row) on top.

use crate::contract::Rate;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use keel_core::Cost;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

/// Per-tool keyed limiters, keyed by tenant.
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
        limiter.check_key(&tenant.to_owned()).map_err(|_| {
            format!(
                "rate budget exhausted: {tool} allows {} call(s) per {}s per tenant",
                rate.calls,
                rate.per.as_secs()
            )
        })
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
