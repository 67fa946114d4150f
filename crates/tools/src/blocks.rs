//! Rate permits taken from a spine in blocks (docs/decisions/129): the bookkeeping every rate
//! store whose takes are spine side writes shares ([`crate::SqliteRates`] and, with the
//! `postgres` feature, `PgRates`). A fast rate takes ~50 ms of permits in one commit and this
//! handle hands them out one per call; what is left when the block's window ends is lost, never
//! reused; a block is admitted only with its window taken off the burst, so the rate holds in
//! every window. How a take is committed is the store's own ([`TakeCommit`]).

use crate::budget::{RateStore, Ride, gcra_params, refusal, take_write};
use crate::contract::Rate;
use crate::error::ToolError;
use async_trait::async_trait;
use keel_spine::side::{SideAnswer, SideWrite};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How long a block of permits lasts: ~50 ms of the rate.
pub const BLOCK_WINDOW_US: i64 = 50_000;

/// How many permits of `rate` one commit takes: what the rate allows in [`BLOCK_WINDOW_US`],
/// at most half the burst (the block's window comes off the burst); below 2 a permit is taken
/// per call, as for a slow rate.
pub fn block_size(rate: Rate) -> i64 {
    let (interval, _) = gcra_params(rate);
    (BLOCK_WINDOW_US / interval).min(i64::from(rate.calls) / 2)
}

/// The take of a block of `n` consecutive permits at `now_us`, as one GCRA step of `n`
/// intervals. Why the tolerance is cut: a permit of a block is used up to one block's window
/// after it was taken, so the block is admitted only if its last permit stays one window inside
/// the tolerance; then every window of uses holds what GCRA admits in it with no blocks
/// (burst `calls`, one more per interval). With `n = 1` (a refill that found no room for a
/// block) it is a single permit used at once, held to the same cut tolerance.
pub(crate) fn block_take(tool: &str, tenant: &str, rate: Rate, n: i64, now_us: i64) -> SideWrite {
    let (interval_us, tolerance_us) = gcra_params(rate);
    let window = block_size(rate).saturating_mul(interval_us);
    let last = n.saturating_sub(1).saturating_mul(interval_us);
    SideWrite::RateTake {
        tenant: tenant.to_owned(),
        tool: tool.to_owned(),
        interval_us: n.saturating_mul(interval_us),
        tolerance_us: tolerance_us.saturating_sub(window).saturating_sub(last),
        now_us,
    }
}

/// How a store commits one take on its own: a request of side writes only on its spine handle.
/// Public only so [`Blocks`] can name it; the module keeps it out of reach (sealed).
#[async_trait]
pub trait TakeCommit: Send + Sync {
    /// Commits `take` alone (not flushed: a rate take needs every process to see it, not a
    /// flush) and answers it.
    async fn commit(&self, take: SideWrite) -> Result<SideAnswer, ToolError>;

    /// The spine store the takes live in ([`keel_spine::EventLog::side_store`]).
    fn side_store(&self) -> Option<&Path>;

    /// The store as errors name it.
    fn shown(&self) -> PathBuf;
}

/// Permits of one (tool, tenant) this handle took in one commit and has not handed out yet.
#[derive(Clone, Copy, Debug)]
struct Block {
    /// When the block was taken, µs.
    taken_us: i64,
    /// The last instant a permit of it may be used, µs.
    until_us: i64,
    /// Permits left.
    left: i64,
}

/// A spine-backed rate store: the blocks this handle holds, and how it commits a take. Clones
/// share the blocks (one process's handle). Used as [`crate::SqliteRates`] and, with the
/// PostgreSQL feature, `pg::PgRates`.
#[derive(Clone)]
pub struct Blocks<C> {
    via: C,
    held: Arc<Mutex<Held>>,
}

/// Per (tool, tenant): usually one block; more when tasks refilled at once.
type Held = HashMap<(String, String), Vec<Block>>;

impl<C: TakeCommit> Blocks<C> {
    pub(crate) fn new(via: C) -> Self {
        Self {
            via,
            held: Arc::default(),
        }
    }

    /// One permit from this handle's blocks, if one is usable at `now_us` (the oldest first).
    fn take_held(&self, tool: &str, tenant: &str, now_us: i64) -> bool {
        let Ok(mut held) = self.held.lock() else {
            return false;
        };
        let Some(blocks) = held.get_mut(&(tool.to_owned(), tenant.to_owned())) else {
            return false;
        };
        let usable = |b: &&mut Block| b.left > 0 && b.taken_us <= now_us && now_us <= b.until_us;
        match blocks.iter_mut().find(usable) {
            Some(b) => {
                b.left -= 1;
                true
            }
            None => false,
        }
    }

    /// Keeps the rest of a block of `n` admitted at `now_us` (its first permit is the caller's),
    /// and forgets the blocks whose window has passed or that are used up. Tasks that refilled
    /// at once each keep theirs: every permit is still used inside its own block's window, which
    /// is all the cut tolerance needs, so none is thrown away early.
    fn keep(&self, tool: &str, tenant: &str, rate: Rate, n: i64, now_us: i64) {
        let (interval, _) = gcra_params(rate);
        let block = Block {
            taken_us: now_us,
            until_us: now_us.saturating_add(n.saturating_mul(interval)),
            left: n - 1,
        };
        if let Ok(mut held) = self.held.lock() {
            let blocks = held
                .entry((tool.to_owned(), tenant.to_owned()))
                .or_default();
            blocks.retain(|b| b.left > 0 && now_us <= b.until_us);
            blocks.push(block);
        }
    }

    /// Commits one take; `Ok(true)` when admitted.
    async fn commit(&self, take: SideWrite) -> Result<bool, ToolError> {
        match self.via.commit(take).await? {
            SideAnswer::Admitted => Ok(true),
            SideAnswer::Refused => Ok(false),
            other => Err(ToolError::Rates {
                path: self.via.shown(),
                context: "deciding a rate budget",
                detail: format!("the spine answered {other:?}"),
            }),
        }
    }

    /// The last permits of a burst, when no whole block fits: one at a time, at the cut
    /// tolerance.
    async fn single(
        &self,
        tool: &str,
        tenant: &str,
        rate: Rate,
        now_us: i64,
    ) -> Result<Result<(), String>, ToolError> {
        let admitted = self
            .commit(block_take(tool, tenant, rate, 1, now_us))
            .await?;
        Ok(admitted.then_some(()).ok_or_else(|| refusal(tool, rate)))
    }
}

#[async_trait]
impl<C: TakeCommit> RateStore for Blocks<C> {
    async fn take(
        &self,
        tool: &str,
        tenant: &str,
        rate: Rate,
        now_us: i64,
    ) -> Result<Result<(), String>, ToolError> {
        let n = block_size(rate);
        if n < 2 {
            let admitted = self.commit(take_write(tool, tenant, rate, now_us)).await?;
            return Ok(admitted.then_some(()).ok_or_else(|| refusal(tool, rate)));
        }
        if self.take_held(tool, tenant, now_us) {
            return Ok(Ok(()));
        }
        if self
            .commit(block_take(tool, tenant, rate, n, now_us))
            .await?
        {
            self.keep(tool, tenant, rate, n, now_us);
            return Ok(Ok(()));
        }
        self.single(tool, tenant, rate, now_us).await
    }

    fn ride(&self, tool: &str, tenant: &str, rate: Rate, now_us: i64) -> Ride {
        let n = block_size(rate);
        if n < 2 {
            Ride::Carry(take_write(tool, tenant, rate, now_us))
        } else if self.take_held(tool, tenant, now_us) {
            Ride::Held
        } else {
            Ride::Carry(block_take(tool, tenant, rate, n, now_us))
        }
    }

    async fn ridden(
        &self,
        tool: &str,
        tenant: &str,
        rate: Rate,
        now_us: i64,
        admitted: bool,
    ) -> Result<Result<(), String>, ToolError> {
        let n = block_size(rate);
        match (admitted, n < 2) {
            (true, true) => Ok(Ok(())),
            (true, false) => {
                self.keep(tool, tenant, rate, n, now_us);
                Ok(Ok(()))
            }
            (false, true) => Ok(Err(refusal(tool, rate))),
            (false, false) => self.single(tool, tenant, rate, now_us).await,
        }
    }

    fn side_store(&self) -> Option<&Path> {
        self.via.side_store()
    }
}
