//! Writing a tool call's events to the spine: one [`Recorder`] per call, holding the execution's
//! position (last seq, step) so every append is conditional on it (`expected_seq`), and the
//! events written so far, which the caller gets back to fold into its state.
//!
//! A recorder may hold a step's events instead of appending them ([`Recorder::holding`]): the
//! caller's events of the step so far, and the call's own events while nothing about it needs
//! the disk (a read-only call). They reach the spine as one batch, with the first barrier (the
//! intent of a call that may act, [`Recorder::append_barrier`]) or with the caller's own commit
//! at the end of the step.

use crate::error::ToolError;
use keel_core::payload::{ToolCalled, ToolResult, ToolStatus};
use keel_core::{CURRENT_SCHEMA_VERSION, Cost, Event, ExecId, Payload, TenantId, TraceId};
use keel_spine::EventLog;
use keel_spine::clock::{self, Clock};
use keel_spine::side::{SideAnswer, SideWrite};

/// Where a call is recorded.
pub struct Recorder<'a> {
    log: &'a dyn EventLog,
    clock: &'a dyn Clock,
    exec_id: ExecId,
    tenant: TenantId,
    trace_id: TraceId,
    step_n: u32,
    /// The execution's last seq (advanced by every append).
    pub last_seq: u64,
    /// Events appended by this recorder, in order.
    pub events: Vec<Event>,
    /// Payloads to write with the next append (see [`Recorder::defer`]).
    deferred: Vec<Payload>,
    /// The step's events not yet on the spine (the tail of the execution, up to `last_seq`),
    /// when the caller commits the step itself.
    held: Option<&'a mut Vec<Event>>,
    /// A barrier was appended: everything after it in this call goes to the spine at once.
    barrier: bool,
    /// Where a server's question during the call goes to a person.
    gates: Option<crate::elicit::Gates>,
}

/// A `tool.result` being written; unset fields default to "nothing happened".
pub struct ResultFields {
    /// Status.
    pub status: ToolStatus,
    /// Output blob.
    pub output_ref: Option<String>,
    /// Actual cost.
    pub actual_cost: Cost,
    /// Latency, ms.
    pub latency_ms: u64,
    /// Error class spelling.
    pub error_class: Option<String>,
    /// Errors.
    pub errors: Vec<String>,
}

impl ResultFields {
    /// A result of `status` that cost nothing and took no time (rejections, refusals).
    pub fn nothing_ran(status: ToolStatus, errors: Vec<String>) -> Self {
        Self {
            status,
            output_ref: None,
            actual_cost: Cost::ZERO,
            latency_ms: 0,
            error_class: None,
            errors,
        }
    }
}

impl<'a> Recorder<'a> {
    /// A recorder continuing the execution after `last_seq`, at step `step_n`.
    pub fn new(
        log: &'a dyn EventLog,
        clock: &'a dyn Clock,
        (exec_id, tenant, trace_id): (ExecId, TenantId, TraceId),
        last_seq: u64,
        step_n: u32,
    ) -> Self {
        Self {
            log,
            clock,
            exec_id,
            tenant,
            trace_id,
            step_n,
            last_seq,
            events: Vec::new(),
            deferred: Vec::new(),
            held: None,
            barrier: false,
            gates: None,
        }
    }

    /// This recorder's calls hand a server's questions to `gates`.
    pub fn asking(mut self, gates: Option<crate::elicit::Gates>) -> Self {
        self.gates = gates;
        self
    }

    /// Where a server's question during the call goes, if anywhere.
    pub fn gates(&self) -> Option<&crate::elicit::Gates> {
        self.gates.as_ref()
    }

    /// The execution's trace id and the current step.
    pub fn position(&self) -> (TraceId, u32) {
        (self.trace_id, self.step_n)
    }

    /// Takes in events another writer appended after this recorder's last seq (a gate's request
    /// and decision during the call), so the call's next append follows them and the caller
    /// folds them with the call's own.
    pub fn absorb(&mut self, events: Vec<Event>) {
        if let Some(last) = events.last() {
            self.last_seq = last.seq;
        }
        self.events.extend(events);
    }

    /// This recorder holds its appends in `held` (the step's events not yet on the spine, which
    /// end at the recorder's `last_seq`) until a barrier, instead of appending them.
    pub fn holding(mut self, held: &'a mut Vec<Event>) -> Self {
        self.held = Some(held);
        self
    }

    /// Holds `payload` back to be written in the same batch as the next append. Used for the
    /// `tool.called` of calls without side effects: nothing needs to be durable before they run
    /// (a crash just means the call is made again), so intent and result share one commit.
    pub fn defer(&mut self, payload: Payload) {
        self.deferred.push(payload);
    }

    /// The execution's tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The execution's id.
    pub fn exec_id(&self) -> ExecId {
        self.exec_id
    }

    /// The clock.
    pub fn clock(&self) -> &dyn Clock {
        self.clock
    }

    fn event(&self, seq: u64, payload: Payload) -> Event {
        Event {
            event_id: clock::new_event_id(),
            exec_id: self.exec_id,
            tenant: self.tenant.clone(),
            seq,
            ts: self.clock.now(),
            trace_id: self.trace_id,
            step_n: self.step_n,
            schema_version: CURRENT_SCHEMA_VERSION,
            payload,
        }
    }

    /// Appends `payloads` as one batch (durable on return), after any held events; a holding
    /// recorder before its first barrier holds them instead.
    pub async fn append(&mut self, payloads: Vec<Payload>) -> Result<(), ToolError> {
        self.append_with(payloads, Vec::new()).await.map(|_| ())
    }

    /// True if the next append goes to the spine (not held), so side writes can ride in it.
    pub fn carries_side(&self) -> bool {
        self.held.is_none() || self.barrier
    }

    /// [`Recorder::append`] with `side` written in the same transaction (see
    /// [`keel_spine::side`]): one answer per side write. Only for a recorder that
    /// [`Recorder::carries_side`].
    pub async fn append_with(
        &mut self,
        payloads: Vec<Payload>,
        side: Vec<SideWrite>,
    ) -> Result<Vec<SideAnswer>, ToolError> {
        let mut all = std::mem::take(&mut self.deferred);
        all.extend(payloads);
        let batch: Vec<Event> = all
            .into_iter()
            .enumerate()
            .map(|(i, p)| self.event(self.last_seq + 1 + i as u64, p))
            .collect();
        let Some(last) = batch.last().map(|e| e.seq) else {
            return Ok(Vec::new());
        };
        let (log, exec_id) = (self.log, self.exec_id);
        let answers = match &mut self.held {
            Some(_) if !self.barrier && !side.is_empty() => {
                return Err(ToolError::NotCallable {
                    exec_id: exec_id.to_string(),
                    detail: "side writes need an append, but the step's events are held".into(),
                });
            }
            Some(held) if !self.barrier => {
                held.extend(batch.iter().cloned());
                Vec::new()
            }
            Some(held) if !held.is_empty() => {
                let expected = held.first().map_or(self.last_seq, |e| e.seq - 1);
                let mut all = Vec::with_capacity(held.len() + batch.len());
                all.extend(held.iter().cloned());
                all.extend(batch.iter().cloned());
                let answers = write(log, exec_id, expected, &all, side).await?;
                held.clear();
                answers
            }
            _ => write(log, exec_id, self.last_seq, &batch, side).await?,
        };
        self.last_seq = last;
        self.events.extend(batch);
        Ok(answers)
    }

    /// Appends `payloads`, with every held event before them, as one durable batch: the intent
    /// of a call that may act is on the disk, with the step that led to it, before it acts.
    pub async fn append_barrier(&mut self, payloads: Vec<Payload>) -> Result<(), ToolError> {
        self.append_barrier_with(payloads, Vec::new())
            .await
            .map(|_| ())
    }

    /// [`Recorder::append_barrier`] with `side` in the same transaction.
    pub async fn append_barrier_with(
        &mut self,
        payloads: Vec<Payload>,
        side: Vec<SideWrite>,
    ) -> Result<Vec<SideAnswer>, ToolError> {
        self.barrier = true;
        self.append_with(payloads, side).await
    }

    /// The `tool.result` payload for `call`.
    pub fn result(call: &ToolCalled, r: ResultFields) -> Payload {
        Payload::ToolResult(ToolResult {
            call_id: call.call_id.clone(),
            tool: call.tool.clone(),
            status: r.status,
            output_ref: r.output_ref,
            actual_cost: r.actual_cost,
            latency_ms: r.latency_ms,
            error_class: r.error_class,
            errors: r.errors,
        })
    }
}

/// One append: plain (the log decides durability per its mode) without side writes, durable
/// with them.
async fn write(
    log: &dyn EventLog,
    exec_id: ExecId,
    expected: u64,
    events: &[Event],
    side: Vec<SideWrite>,
) -> Result<Vec<SideAnswer>, ToolError> {
    if side.is_empty() {
        log.append(exec_id, expected, events).await?;
        return Ok(Vec::new());
    }
    Ok(log
        .append_with(exec_id, expected, events, side, true)
        .await?
        .answers)
}
