//! `keel worker`: resume and run every unfinished execution of the store, under leases.
//!
//! Every worker (and `keel run`, and `keel serve`'s background workers) drives executions only
//! through a leased view of the spine (`keel_spine::lease::LeasedLog`): it claims what nobody
//! holds, renews its leases every third of `workers.lease_secs`, and an append after another
//! worker took an execution over is refused by the epoch fence, so two processes on one store
//! never both drive an execution. Between drains it waits on the spine's subscription (new
//! executions, gate decisions, resumptions, kill-switches cleared), with a timer only for what
//! no event announces: a dead worker's leases expiring.

use super::{ConfigArgs, outcome_word};
use clap::Args;
use keel_runtime::embedded::Backends;
use keel_runtime::worker::{Wakes, lease_owner, spawn_heartbeat};
use keel_spine::lease::LeasedLog;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// `keel worker` arguments.
#[derive(Args)]
pub struct WorkerArgs {
    /// Exit once nothing is left to run (otherwise keep waiting for new executions).
    #[arg(long)]
    pub once: bool,
    /// Executions driven at a time (default: `workers.concurrency` of keel.toml, else 8).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Pause before every model call, in milliseconds (paces demos and crash drills).
    #[arg(long, default_value_t = 0)]
    pub pace_ms: u64,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// A worker's first wait after its store failed; each failure in a row doubles it, up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(200);
/// The longest a worker waits before trying a failed store again.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// The longest a waiting worker sleeps without an event: how late it notices leases that
/// expired (a dead worker's executions) at worst, beyond their expiry.
const WAKE_FALLBACK: Duration = Duration::from_secs(1);

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// True if `owner` names a process of this machine that is gone (no such pid, or a zombie):
/// its leases can be taken over at once. Anything else (another machine, a live pid, even one
/// reused by another process) waits for the lease to expire, which is always safe: the epoch
/// fence, not this check, is what keeps two drivers apart.
pub(crate) fn dead_here(host: &str, owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (Some(_uuid), Some(pid), Some(owner_host)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    if owner_host != host || pid.parse::<u32>().is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Makes `backends` drive through a leased view of their spine, for a process driving up to
/// `concurrency` executions at a time, with leases of `workers.lease_secs`; returns the view.
pub fn lease(backends: &mut Backends, concurrency: usize) -> Arc<LeasedLog> {
    let ttl = Duration::from_secs(crate::config::current().workers_lease_secs);
    let store = backends.spine.store.clone();
    let host = hostname();
    let view = Arc::new(
        LeasedLog::over(
            store.clone(),
            store.leases(),
            &lease_owner(&host),
            ttl,
            concurrency.max(1) * 4,
        )
        .take_over_dead(Box::new(move |owner| dead_here(&host, owner))),
    );
    backends.drive = Some(view.clone());
    view
}

/// Renews `view`'s leases in the background, logging each lost one under `who`.
pub fn heartbeat(view: &Arc<LeasedLog>, who: &'static str) -> tokio::task::JoinHandle<()> {
    let owner = view.owner().to_owned();
    spawn_heartbeat(view.clone(), move |line| eprintln!("{who} {owner}: {line}"))
}

/// Gives every lease `view` holds up, so other workers take its executions over at once.
pub async fn release(view: &LeasedLog, who: &str) {
    if let Err(e) = view.release_all().await {
        eprintln!(
            "{who} {}: releasing leases failed (they expire instead): {e}",
            view.owner()
        );
    }
}

/// `keel worker`: resume and run every unfinished execution.
pub async fn worker(data: &Path, args: &WorkerArgs) -> anyhow::Result<()> {
    let config = args.config.config();
    let concurrency = args
        .concurrency
        .unwrap_or(crate::config::current().workers_concurrency);
    let mut backends = crate::config::current()
        .backends(data, &config.strategies)
        .await?;
    let view = lease(&mut backends, concurrency);
    let mut env = crate::demo::open_wired(data, &config, backends)?;
    if let Some(agent) = Arc::get_mut(&mut env.agent) {
        agent.pace = Duration::from_millis(args.pace_ms);
    }
    eprintln!("keel worker {}: started", view.owner());
    let beat = heartbeat(&view, "keel worker");
    // A worker that keeps running also sends the project's gate notifications (on a task of its
    // own: a slow receiver never holds a step).
    if !args.once {
        crate::serve::notify::spawn(data, &args.config, &env, None, "keel worker").await?;
    }
    // Opened before the first drain, so nothing committed during it is missed; not needed by a
    // worker that stops once idle.
    let mut wakes = match args.once {
        true => None,
        false => Some(Wakes::open(&*env.log).await?),
    };
    let stop = shutdown();
    tokio::pin!(stop);
    let mut retry = RETRY_FIRST;
    let result = loop {
        let drained = tokio::select! {
            d = keel_runtime::worker::drain(&env.agent, &env.strategies, concurrency) => d,
            () = &mut stop => break Ok(()),
        };
        let drained = match drained {
            Ok(d) => {
                retry = RETRY_FIRST;
                d
            }
            Err(e) if args.once => break Err(e.into()),
            // The store went away (a database restart, a dropped session): a worker that keeps
            // running waits and tries again instead of exiting; its leases' epochs keep anyone
            // who took its executions over meanwhile safe from its late appends.
            Err(e) => {
                eprintln!(
                    "keel worker {}: the store failed ({e}); trying again in {} ms",
                    view.owner(),
                    retry.as_millis()
                );
                if !back_off(&mut retry, &mut stop).await {
                    break Ok(());
                }
                continue;
            }
        };
        for d in &drained {
            match &d.result {
                Ok(state) => eprintln!("{}: {}", d.exec_id, outcome_word(state)),
                Err(e) => eprintln!("{}: not run: {e}", d.exec_id),
            }
        }
        let Some(wakes) = wakes.as_mut() else {
            break Ok(());
        };
        tokio::select! {
            woke = wakes.wait(WAKE_FALLBACK) => if let Err(e) = woke {
                eprintln!(
                    "keel worker {}: its subscription failed ({e}); opening it again",
                    view.owner()
                );
                if !back_off(&mut retry, &mut stop).await {
                    break Ok(());
                }
                // Not reopened yet (the store still down): the next drain fails and waits.
                if let Ok(w) = Wakes::open(&*env.log).await {
                    *wakes = w;
                }
            },
            () = &mut stop => break Ok(()),
        }
    };
    beat.abort();
    release(&view, "keel worker").await;
    result
}

/// Waits `retry` after a failure of the store, doubling it for the next (up to [`RETRY_MAX`]);
/// `false` if `stop` resolved first.
async fn back_off(
    retry: &mut Duration,
    stop: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> bool {
    let waited = tokio::select! {
        () = tokio::time::sleep(*retry) => true,
        () = stop => false,
    };
    *retry = (*retry * 2).min(RETRY_MAX);
    waited
}

/// Resolves on SIGINT or SIGTERM: a clean shutdown, which gives the leases up.
pub async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
