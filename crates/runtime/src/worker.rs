//! Workers: run every unfinished execution on the spine to its end. On start this is resume:
//! executions a crashed worker left behind are driven on from their last event (in-flight tool
//! calls resolved through the ledger). Executions waiting at a gate are left waiting.
//!
//! A step that panics ends its execution: [`end_after_panic`] records the failed step and an
//! `exec.finished` with outcome `error`, durably, which also makes visible whatever the step had
//! appended without an fsync. Retrying would only panic again, one step at a time, until
//! `max_steps`, with the execution looking alive meanwhile.

use crate::agent::Agent;
use crate::error::RuntimeError;
use crate::strategy::StrategySet;
use futures::{FutureExt, StreamExt};
use keel_core::control::CONTROL_STREAM;
use keel_core::payload::{
    ExecFinished, ModelResponded, Outcome, Payload, StepCompleted, ToolResult, ToolStatus,
};
use keel_core::{CURRENT_SCHEMA_VERSION, Cost, Event, ExecId, ExecutionState, TenantId, Tokens};
use keel_models::ModelProvider;
use keel_spine::SpineError;
use keel_spine::clock;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The message a panic carried (`panic!("…")` payloads are a `&str` or a `String`).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Appends `payload` after `state`'s last event, durably, and folds it in.
async fn append_durably(
    agent: &Agent,
    exec_id: ExecId,
    state: &mut ExecutionState,
    payload: Payload,
) -> Result<(), RuntimeError> {
    let event = Event {
        event_id: clock::new_event_id(),
        exec_id,
        tenant: state
            .tenant
            .clone()
            .unwrap_or_else(|| TenantId(String::new())),
        seq: state.last_seq + 1,
        ts: agent.clock.now(),
        trace_id: state.trace_id.unwrap_or(keel_core::TraceId([1; 16])),
        step_n: state.totals.steps,
        schema_version: CURRENT_SCHEMA_VERSION,
        payload,
    };
    let next = state.apply(&event)?;
    match agent.log.append(exec_id, state.last_seq, &[event]).await {
        Ok(_) => {}
        Err(SpineError::Conflict { .. }) => {
            return Err(RuntimeError::Contended(exec_id.to_string()));
        }
        Err(e) => return Err(e.into()),
    }
    *state = next;
    Ok(())
}

/// [`end_after_panic`], itself guarded: a panic while recording the first is an error, never a
/// second unwinding through the worker.
pub async fn end_after_panic_guarded(
    agent: &Agent,
    exec_id: ExecId,
    why: &str,
) -> Result<ExecutionState, RuntimeError> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(end_after_panic(agent, exec_id, why))
        .catch_unwind()
        .await
        .unwrap_or_else(|p| {
            Err(RuntimeError::Worker(format!(
                "execution {exec_id}: a step panicked ({why}), and recording it panicked too: {}",
                panic_message(&*p)
            )))
        })
}

/// Ends an execution whose step panicked with `why`: a `step.completed` saying the step failed,
/// an error reply for a model call and an `error` result (outcome unknown) for a tool call the
/// step left open, then `exec.finished` with outcome `error`, all durable. The first durable append
/// also flushes the step's buffered events (committed without an fsync, hidden from this
/// handle's reads until then), so everything the step did becomes visible, nothing is dropped.
pub async fn end_after_panic(
    agent: &Agent,
    exec_id: ExecId,
    why: &str,
) -> Result<ExecutionState, RuntimeError> {
    let shown = agent.log.read(exec_id, 1).await?;
    if shown.is_empty() {
        return Err(RuntimeError::UnknownExecution(exec_id.to_string()));
    }
    let mut state = ExecutionState::fold(&shown)?;
    if state.status.is_terminal() {
        return Ok(state);
    }
    // The step's buffered events are committed but not shown: find the stored last seq.
    let mut last = state.last_seq;
    while agent.log.appended_after(exec_id, last).await? {
        last += 1;
    }
    let failed = Payload::StepCompleted(StepCompleted {
        summary: Some(format!("step failed: the worker panicked: {why}")),
    });
    let mut marker = state.clone();
    marker.last_seq = last;
    append_durably(agent, exec_id, &mut marker, failed).await?;
    // Everything is durable, hence shown, now: fold it all.
    state = ExecutionState::fold(&agent.log.read(exec_id, 1).await?)?;
    if let Some(call_id) = state.pending_model_call.clone() {
        let reply = Payload::ModelResponded(ModelResponded {
            call_id,
            model: String::new(),
            tokens: Tokens::default(),
            cost: Cost::Unknown,
            latency_ms: 0,
            response_ref: None,
            error: Some(format!("no reply: the worker panicked: {why}")),
        });
        append_durably(agent, exec_id, &mut state, reply).await?;
    }
    if let Some(p) = state.pending_tool_call.clone() {
        // Not resolved through the ledger: that may run the call again, and with it the panic.
        // The execution ends here, so nothing retries the call; its ledger entry stays for audit.
        let result = Payload::ToolResult(ToolResult {
            call_id: p.call_id,
            tool: p.tool,
            status: ToolStatus::Error,
            output_ref: None,
            actual_cost: Cost::Unknown,
            latency_ms: 0,
            error_class: None,
            errors: vec![format!(
                "outcome unknown: the worker panicked during the call: {why}"
            )],
        });
        append_durably(agent, exec_id, &mut state, result).await?;
    }
    if state.status.is_terminal() {
        return Ok(state);
    }
    let totals = state.totals.clone();
    let finished = Payload::ExecFinished(ExecFinished {
        outcome: Outcome::Error,
        steps_n: totals.steps,
        tokens: totals.tokens,
        cost: totals.cost,
        trace_id: state.trace_id.unwrap_or(keel_core::TraceId([1; 16])),
        detail: Some(format!("the worker panicked: {why}")),
    });
    append_durably(agent, exec_id, &mut state, finished).await?;
    Ok(state)
}

/// What happened to one execution in a drain.
#[derive(Debug)]
pub struct Drained {
    /// The execution.
    pub exec_id: ExecId,
    /// Its state after driving, or why it could not be driven.
    pub result: Result<ExecutionState, RuntimeError>,
}

/// Executions whose logs one read fetches while a drain resumes them: a round trip per batch,
/// and the first of them starts driving while the next batch is read.
const READ_BATCH: usize = 32;

/// Per strategy version: the strategy and its model provider, made once per drain.
type Chosen = (Arc<crate::strategy::Strategy>, Arc<dyn ModelProvider>);

/// How soon a busy drain lists (claims) again after a listing that brought no new work, when
/// a slot is free: what it notices late at worst (work another worker left, a gate decided)
/// while its own executions keep it busy. A listing that brought work is followed at once.
const RELIST_IDLE: std::time::Duration = std::time::Duration::from_millis(250);

/// How soon a drain that keeps running drives again an execution whose drive failed (a
/// dropped session, a transaction PostgreSQL ended), if it still holds it: the same cadence as
/// a worker draining again after a drain that ended with failures.
const RETRY_FAILED: std::time::Duration = std::time::Duration::from_secs(1);

/// Drives every unfinished execution (and any that appear meanwhile) until none is left that
/// can make progress, `concurrency` at a time. Each execution's log is read once, in batches
/// of 32 (no store round trip per execution before it is driven), and the next
/// execution starts as soon as any ends (a slow one never holds the others back).
///
/// Work is taken up as slots free: once everything listed has started and a slot is free, the
/// drain lists again (through a leased view, that claims more; each claim spreads over the
/// tenants with work), so executions a claim left out never wait for the others to end.
pub async fn drain(
    agent: &Arc<Agent>,
    strategies: &StrategySet,
    concurrency: usize,
) -> Result<Vec<Drained>, RuntimeError> {
    let mut chosen: BTreeMap<String, Chosen> = BTreeMap::new();
    let mut providers: BTreeMap<String, Arc<dyn ModelProvider>> = BTreeMap::new();
    // Where each execution this drain has driven stopped (its last seq): one parked at a gate
    // is driven again once its log moves (a decision), even while new work keeps the drain
    // from ending; one whose log has not moved is not driven twice.
    let mut parked: BTreeMap<ExecId, u64> = BTreeMap::new();
    let mut out: Vec<Drained> = Vec::new();
    let limit = concurrency.max(1);
    // Listed, not read yet; being read (at most two batches: the next is read while the last
    // one's executions start); read, waiting for a slot; being driven.
    let mut listed: std::collections::VecDeque<ExecId> = std::collections::VecDeque::new();
    let mut reading = futures::stream::FuturesOrdered::new();
    let mut ready: std::collections::VecDeque<(ExecId, Vec<Event>)> =
        std::collections::VecDeque::new();
    let mut running = futures::stream::FuturesUnordered::new();
    // Everything listed and not yet back: never admitted again meanwhile (its log moves as it
    // is driven, which would otherwise look like a decision).
    let mut active: std::collections::BTreeSet<ExecId> = std::collections::BTreeSet::new();
    // Executions whose drive failed, and from when they may be admitted again (their log may
    // not have moved, which is what brings a parked one back).
    let mut failed: Vec<(tokio::time::Instant, ExecId)> = Vec::new();
    // Breadth first: what a listing brings takes one step, then waits until the drain has
    // started all of it it can (all of it, or `limit` running), so no execution's resume waits
    // behind others running ahead (the total work is the same).
    let (mut go, mut hold) = tokio::sync::watch::channel(true);
    // Whether the last listing brought work, and when it was made.
    let mut brought = true;
    let mut listed_at = tokio::time::Instant::now();
    loop {
        let idle = listed.is_empty() && reading.is_empty() && ready.is_empty();
        if idle && running.len() < limit {
            if !*go.borrow() {
                go.send_replace(true);
            }
            let due = brought || running.is_empty() || listed_at.elapsed() >= RELIST_IDLE;
            if due {
                let now = tokio::time::Instant::now();
                failed.retain(|(at, exec_id)| {
                    let due = *at <= now;
                    if due {
                        parked.remove(exec_id);
                    }
                    !due
                });
                let mut unfinished = agent.log.list_unfinished().await?;
                unfinished.retain(|s| !active.contains(&s.exec_id));
                let ids = admit(&mut parked, unfinished);
                active.extend(ids.iter().copied());
                listed_at = tokio::time::Instant::now();
                brought = !ids.is_empty();
                if ids.is_empty() && running.is_empty() {
                    // An execution driven again after its gate was decided is reported once,
                    // as it ended.
                    let mut seen = std::collections::BTreeSet::new();
                    out.reverse();
                    out.retain(|d| seen.insert(d.exec_id));
                    out.reverse();
                    return Ok(out);
                }
                if brought {
                    (go, hold) = tokio::sync::watch::channel(false);
                    listed.extend(ids);
                }
            }
        }
        while reading.len() < 2 && !listed.is_empty() {
            let n = listed.len().min(READ_BATCH);
            let chunk: Vec<ExecId> = listed.drain(..n).collect();
            reading.push_back(async move {
                let logs = agent.log.read_many(&chunk).await;
                (chunk, logs)
            });
        }
        while running.len() < limit {
            let Some((exec_id, events)) = ready.pop_front() else {
                break;
            };
            match choose(strategies, &mut chosen, &mut providers, exec_id, &events) {
                Ok((strategy, provider)) => {
                    let hold = Some(hold.clone()).filter(|_| !*go.borrow());
                    running.push(run_one(
                        agent.clone(),
                        strategy,
                        provider,
                        exec_id,
                        events,
                        hold,
                    ));
                }
                Err(e) => {
                    active.remove(&exec_id);
                    out.push(Drained {
                        exec_id,
                        result: Err(e),
                    });
                }
            }
        }
        if running.len() >= limit {
            go.send_replace(true);
        }
        let idle = listed.is_empty() && reading.is_empty() && ready.is_empty();
        // A slot is free and nothing is queued: the listing is due once the timer runs out
        // (or at once, if the last listing brought work: the loop goes round).
        let relist_wait = idle && running.len() < limit && !running.is_empty() && !brought;
        if idle && running.len() < limit && (brought || running.is_empty()) {
            continue;
        }
        tokio::select! {
            Some(d) = running.next(), if !running.is_empty() => {
                active.remove(&d.exec_id);
                match &d.result {
                    Ok(state) => {
                        parked.insert(d.exec_id, state.last_seq);
                    }
                    Err(_) => failed.push((tokio::time::Instant::now() + RETRY_FAILED, d.exec_id)),
                }
                out.push(d);
            }
            Some((chunk, logs)) = reading.next(), if !reading.is_empty() && ready.len() < limit => {
                ready.extend(chunk.into_iter().zip(logs?));
            }
            () = tokio::time::sleep_until(listed_at + RELIST_IDLE), if relist_wait => {}
            else => {}
        }
    }
}

/// Of the unfinished executions listed, those a drain drives in its next pass: every one it has
/// not driven yet, and every one whose log has moved past where it stopped (a gate decided, a
/// kill-switch or an escalation recorded). `parked` learns where each admitted one stands.
/// They come in turns across tenants (in the order listed within a tenant), so one tenant's
/// backlog in a listing does not go before another's one execution.
fn admit(parked: &mut BTreeMap<ExecId, u64>, listed: Vec<keel_spine::ExecSummary>) -> Vec<ExecId> {
    let mut by_tenant: Vec<(TenantId, std::collections::VecDeque<ExecId>)> = Vec::new();
    let mut slot: std::collections::HashMap<TenantId, usize> = std::collections::HashMap::new();
    for summary in listed {
        // The control stream is not an execution.
        if summary.exec_id == CONTROL_STREAM {
            continue;
        }
        let moved = parked
            .get(&summary.exec_id)
            .is_none_or(|&seq| summary.last_seq > seq);
        if moved {
            parked.insert(summary.exec_id, summary.last_seq);
            match slot.get(&summary.tenant) {
                Some(&i) => by_tenant[i].1.push_back(summary.exec_id),
                None => {
                    slot.insert(summary.tenant.clone(), by_tenant.len());
                    by_tenant.push((summary.tenant, [summary.exec_id].into()));
                }
            }
        }
    }
    let mut ids = Vec::new();
    while !by_tenant.is_empty() {
        by_tenant.retain_mut(|(_, queue)| {
            ids.extend(queue.pop_front());
            !queue.is_empty()
        });
    }
    ids
}

/// The strategy an execution started with (its first event names the version) and the model
/// provider for it, made once per strategy and shared.
fn choose(
    strategies: &StrategySet,
    chosen: &mut BTreeMap<String, Chosen>,
    providers: &mut BTreeMap<String, Arc<dyn ModelProvider>>,
    exec_id: ExecId,
    events: &[Event],
) -> Result<Chosen, RuntimeError> {
    let version = match events.first().map(|e| &e.payload) {
        Some(Payload::ExecStarted(s)) => s.strategy_version.clone(),
        _ => return Err(RuntimeError::UnknownExecution(exec_id.to_string())),
    };
    if let Some(c) = chosen.get(&version) {
        return Ok(c.clone());
    }
    let Some(strategy) = strategies.get(&version) else {
        return Err(RuntimeError::UnknownStrategy(version));
    };
    let provider = match providers.get(&strategy.name) {
        Some(p) => p.clone(),
        None => {
            let p = strategy.provider()?;
            providers.insert(strategy.name.clone(), p.clone());
            p
        }
    };
    let c = (Arc::new(strategy.clone()), provider);
    chosen.insert(version, c.clone());
    Ok(c)
}

/// Drives one execution from the events already read, on a task of its own, started at once.
fn run_one(
    agent: Arc<Agent>,
    strategy: Arc<crate::strategy::Strategy>,
    provider: Arc<dyn ModelProvider>,
    exec: ExecId,
    events: Vec<Event>,
    hold: Option<tokio::sync::watch::Receiver<bool>>,
) -> futures::future::BoxFuture<'static, Drained> {
    // Spawned now, not when the returned future is first polled: it runs while the drain
    // reads the next batch.
    let handle = tokio::spawn({
        let agent = agent.clone();
        async move {
            agent
                .drive_events(&strategy, &*provider, exec, events, hold)
                .await
        }
    });
    async move {
        match handle.await {
            Ok(result) => Drained {
                exec_id: exec,
                result,
            },
            // `drive` catches a step's panic itself; this is a panic outside it.
            Err(e) if e.is_panic() => {
                let why = panic_message(&*e.into_panic());
                Drained {
                    exec_id: exec,
                    result: end_after_panic_guarded(&agent, exec, &why).await,
                }
            }
            Err(e) => Drained {
                exec_id: exec,
                result: Err(RuntimeError::Worker(e.to_string())),
            },
        }
    }
    .boxed()
}

/// A worker's id for its leases: `<hostname>:<pid>:<uuid>`, unique per process (the uuid keeps
/// two processes apart even when a pid is reused, say in a restarted container).
pub fn lease_owner(hostname: &str) -> String {
    format!(
        "{hostname}:{}:{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    )
}

/// Renews every lease `view` holds every third of its length, for as long as the task runs, and
/// reports each lease it finds lost through `report` (a line for the operator's log). A lost
/// lease needs nothing more here: the epoch fence refuses that execution's next append, which
/// stops its driver before any further side effect.
pub fn spawn_heartbeat(
    view: Arc<keel_spine::lease::LeasedLog>,
    report: impl Fn(String) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let every = (view.ttl() / 3).max(std::time::Duration::from_millis(50));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match view.heartbeat().await {
                Ok(lost) => {
                    for l in lost {
                        report(format!(
                            "lost the lease of execution {} (epoch {}): another worker holds it now or it ended; this worker stops driving it",
                            l.exec_id, l.epoch
                        ));
                    }
                }
                Err(e) => report(format!("renewing leases failed (will retry): {e}")),
            }
        }
    })
}

/// The highest committed offset of `log` (0 if empty), found with `O(log n)` one-event reads:
/// where a worker's subscription starts, so it wakes on what commits from now on.
pub async fn head_offset(log: &dyn keel_spine::EventLog) -> Result<u64, RuntimeError> {
    let exists = |offset: u64| async move {
        Ok::<bool, RuntimeError>(!log.read_all(offset, 1).await?.is_empty())
    };
    if !exists(1).await? {
        return Ok(0);
    }
    // Offsets may have gaps (a rolled-back group), so probe for "anything at or after".
    let (mut lo, mut hi) = (1u64, 2u64);
    while exists(hi).await? {
        lo = hi;
        hi = hi.saturating_mul(2);
        if hi == u64::MAX {
            break;
        }
    }
    // Invariant: something at or after `lo`, nothing at or after `hi`.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if exists(mid).await? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(log.read_all(lo, 1).await?.first().map_or(lo, |c| c.offset))
}

/// What a waiting worker wakes on: the spine's own subscription (LISTEN/NOTIFY on PostgreSQL,
/// the commit head or a short poll on SQLite), filtered to the events that can give it work — a
/// new execution, a gate decided, an execution resumed, a kill-switch cleared — with a fallback
/// timer for what no event announces (a dead worker's leases expiring).
pub struct Wakes {
    events: futures::stream::BoxStream<'static, Result<keel_spine::Committed, SpineError>>,
}

impl Wakes {
    /// Follows `log` from its current head on.
    pub async fn open(log: &dyn keel_spine::EventLog) -> Result<Self, RuntimeError> {
        let head = head_offset(log).await?;
        Ok(Self {
            events: log.subscribe(head + 1),
        })
    }

    /// Waits until an event that may give work commits (`true`; one already committed since
    /// the last wait counts) or `fallback` passes (`false`).
    pub async fn wait(&mut self, fallback: std::time::Duration) -> Result<bool, RuntimeError> {
        let deadline = tokio::time::Instant::now() + fallback;
        loop {
            tokio::select! {
                next = self.events.next() => match next {
                    Some(Ok(c)) if gives_work(&c.event) => return Ok(true),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(SpineError::Closed.into()),
                },
                () = tokio::time::sleep_until(deadline) => return Ok(false),
            }
        }
    }
}

fn gives_work(event: &Event) -> bool {
    matches!(
        event.payload,
        Payload::ExecStarted(_)
            | Payload::GateDecided(_)
            | Payload::ExecResumed(_)
            | Payload::KillCleared(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::TenantId;
    use keel_spine::ExecSummary;

    fn listed(execs: &[(ExecId, u64)]) -> Vec<ExecSummary> {
        execs
            .iter()
            .map(|&(exec_id, last_seq)| ExecSummary {
                exec_id,
                tenant: TenantId::from("acme"),
                last_seq,
            })
            .collect()
    }

    #[test]
    fn a_parked_execution_is_driven_again_once_its_log_moves_and_not_before() {
        let (a, b) = (
            keel_spine::clock::new_exec_id(),
            keel_spine::clock::new_exec_id(),
        );
        let mut parked = BTreeMap::new();
        let first = admit(&mut parked, listed(&[(a, 7), (CONTROL_STREAM, 40)]));
        assert_eq!(
            first,
            vec![a],
            "new work is admitted; the control stream never"
        );
        // `a` was driven and stopped at a gate, at seq 9.
        parked.insert(a, 9);
        assert_eq!(
            admit(&mut parked, listed(&[(a, 9), (b, 1)])),
            vec![b],
            "an execution whose log has not moved is not driven twice"
        );
        assert_eq!(
            admit(&mut parked, listed(&[(a, 10), (b, 1)])),
            vec![a],
            "a decision on its gate brings it back, even while other work keeps the drain going"
        );
    }

    #[test]
    fn a_listing_is_taken_up_in_turns_across_tenants() {
        let ids: Vec<ExecId> = (0..5).map(|_| keel_spine::clock::new_exec_id()).collect();
        let of = |i: usize, tenant: &str| ExecSummary {
            exec_id: ids[i],
            tenant: TenantId::from(tenant),
            last_seq: 3,
        };
        let listed = vec![
            of(0, "flood"),
            of(1, "flood"),
            of(2, "flood"),
            of(3, "late"),
            of(4, "flood"),
        ];
        assert_eq!(
            admit(&mut BTreeMap::new(), listed),
            vec![ids[0], ids[3], ids[1], ids[2], ids[4]],
            "the other tenant's one execution goes second, not after the whole backlog"
        );
    }
}
