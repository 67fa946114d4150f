//! Evidence that decides: what an approver reads next to a gate, assembled when the gate is
//! shown (the pack stored on `gate.requested` says *what* will happen; this says whether it is
//! right). It holds the tool results that led to the action, read from the blob store and
//! rendered readably; earlier actions of the same tenant on the same object (the same
//! `order_id`, …) in other executions; the subject's history; and the strategy's record at the
//! gate's tier.
//!
//! "The same object" is an argument named `id` or `*_id` with the same value: the
//! [`ObjectIndex`] (kept by the gates' [`Book`]) maps each such `name=value` of a tenant to the
//! executions whose tool calls or gates named it, and the executions themselves are read from
//! the spine when a pack is shown, so what an erasure removed is never shown again.

use crate::agent::Agent;
use crate::error::RuntimeError;
use crate::gates::{Book, ExecView, GateView};
use keel_core::payload::{Payload, ToolStatus, Verdict};
use keel_core::{Event, ExecId};
use keel_spine::BlobRef;
use keel_spine::shred::ERASED;
use keel_tools::contract::SideEffect;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// Characters of one tool output shown in a pack; the rest is counted, not shown.
pub const MAX_OUTPUT_CHARS: usize = 4000;
/// Characters of an earlier action's output shown in a pack.
pub const MAX_EARLIER_OUTPUT_CHARS: usize = 600;
/// Tool results of the gated execution shown (the most recent ones).
pub const MAX_TOOL_RESULTS: usize = 20;
/// Other executions read for earlier actions on the same object (the most recent ones).
pub const MAX_EARLIER_EXECUTIONS: usize = 20;
/// A tenant's recent executions searched for the subject's other executions.
pub const SUBJECT_SCAN: usize = 500;
/// (object, execution) references an index keeps per tenant; the oldest go first.
pub const OBJECT_REFS_PER_TENANT: usize = 20_000;
/// Longest object value indexed, in characters (longer ones are not identifiers).
const MAX_OBJECT_VALUE_CHARS: usize = 200;

/// Which executions of a tenant named which object (`order_id=A-1042`), oldest first, bounded
/// per tenant by [`OBJECT_REFS_PER_TENANT`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ObjectIndex {
    by_object: BTreeMap<String, BTreeMap<String, VecDeque<ExecId>>>,
    order: BTreeMap<String, VecDeque<(String, ExecId)>>,
}

/// The objects an action's arguments name: `name=value` for each top-level argument named `id`
/// or ending in `_id` whose value is a short string or an integer.
pub fn objects_of(args: &Value) -> Vec<String> {
    let Some(m) = args.as_object() else {
        return Vec::new();
    };
    m.iter()
        .filter(|(k, _)| *k == "id" || k.ends_with("_id"))
        .filter_map(|(k, v)| match v {
            Value::String(s)
                if !s.is_empty() && s != ERASED && s.chars().count() <= MAX_OBJECT_VALUE_CHARS =>
            {
                Some(format!("{k}={s}"))
            }
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(format!("{k}={n}")),
            _ => None,
        })
        .collect()
}

impl ObjectIndex {
    /// Notes that `exec` of `tenant` named the objects of `args`.
    pub fn record(&mut self, tenant: &str, exec: ExecId, args: &Value) {
        for key in objects_of(args) {
            let list = self
                .by_object
                .entry(tenant.to_owned())
                .or_default()
                .entry(key.clone())
                .or_default();
            if list.back() == Some(&exec) {
                continue;
            }
            list.push_back(exec);
            let order = self.order.entry(tenant.to_owned()).or_default();
            order.push_back((key, exec));
            if order.len() > OBJECT_REFS_PER_TENANT
                && let Some((old_key, old_exec)) = order.pop_front()
            {
                self.forget(tenant, &old_key, old_exec);
            }
        }
    }

    fn forget(&mut self, tenant: &str, key: &str, exec: ExecId) {
        let Some(objects) = self.by_object.get_mut(tenant) else {
            return;
        };
        if let Some(list) = objects.get_mut(key) {
            if let Some(i) = list.iter().position(|e| *e == exec) {
                list.remove(i);
            }
            if list.is_empty() {
                objects.remove(key);
            }
        }
    }

    /// Every execution of `tenant` the index names.
    pub fn executions_of(&self, tenant: &str) -> std::collections::BTreeSet<ExecId> {
        self.order
            .get(tenant)
            .map(|o| o.iter().map(|(_, e)| *e).collect())
            .unwrap_or_default()
    }

    /// Drops every object `exec` of `tenant` named (its subject was erased: what it named is
    /// personal data the spine no longer shows).
    pub fn forget_execution(&mut self, tenant: &str, exec: ExecId) {
        let Some(order) = self.order.get_mut(tenant) else {
            return;
        };
        let mut keys = Vec::new();
        order.retain(|(k, e)| {
            if *e == exec {
                keys.push(k.clone());
            }
            *e != exec
        });
        for k in keys {
            self.forget(tenant, &k, exec);
        }
    }

    /// The executions of `tenant` that named `key`, most recent first.
    pub fn executions(&self, tenant: &str, key: &str) -> Vec<ExecId> {
        self.by_object
            .get(tenant)
            .and_then(|o| o.get(key))
            .map(|l| l.iter().rev().copied().collect())
            .unwrap_or_default()
    }
}

/// `s` cut to at most `max` characters (on a character boundary), and how many were left out.
pub fn bounded(s: &str, max: usize) -> (String, usize) {
    let total = s.chars().count();
    if total <= max {
        return (s.to_owned(), 0);
    }
    (s.chars().take(max).collect(), total - max)
}

/// Bytes of a tool output as an approver reads them: JSON pretty-printed, other text as is,
/// cut to `max` characters.
pub fn readable(bytes: &[u8], max: usize) -> Value {
    let text = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    };
    let (shown, more) = bounded(&text, max);
    json!({ "text": shown, "more_chars": more })
}

/// A tool output read from the blob store: `{"text", "more_chars"}`, or `{"erased": true}`
/// when the execution's subject was erased (its blobs are gone with it), or
/// `{"unavailable": …}` when it cannot be read for another reason.
async fn output(agent: &Agent, reference: Option<&str>, erased: bool, max: usize) -> Value {
    let Some(reference) = reference else {
        return json!({ "none": true });
    };
    let Ok(parsed) = reference.parse::<BlobRef>() else {
        return json!({ "unavailable": "the recorded reference is malformed" });
    };
    match agent.blobs.get(&parsed).await {
        Ok(bytes) => readable(&bytes, max),
        Err(_) if erased => json!({ "erased": true }),
        // The store's message may name paths or buckets: approvers get a plain sentence.
        Err(_) => json!({ "unavailable": "the output could not be read from the blob store" }),
    }
}

/// True if the execution's personal fields read as erased (its subject was erased).
fn is_erased(events: &[Event]) -> bool {
    events
        .iter()
        .any(|e| matches!(&e.payload, Payload::ExecStarted(s) if s.goal == ERASED))
}

/// Whether `tool` changes something (no contract known: assume it does).
fn acts(agent: &Agent, tool: &str) -> bool {
    agent
        .tools
        .contract(tool)
        .is_none_or(|c| c.side_effect != SideEffect::ReadOnly)
}

/// The tool results of the gated execution before its gate, with their inputs and outputs.
async fn tool_results(agent: &Agent, events: &[Event], gate_seq: u64) -> Vec<Value> {
    let erased = is_erased(events);
    let mut args: BTreeMap<&str, &Value> = BTreeMap::new();
    let mut found = Vec::new();
    for e in events.iter().filter(|e| e.seq < gate_seq) {
        match &e.payload {
            Payload::ToolCalled(c) => {
                args.insert(&c.call_id, &c.args);
            }
            Payload::ToolResult(r) => found.push((e, r)),
            _ => {}
        }
    }
    let skip = found.len().saturating_sub(MAX_TOOL_RESULTS);
    let mut out = Vec::new();
    for (e, r) in found.into_iter().skip(skip) {
        let shown = if r.status == ToolStatus::Ok {
            output(agent, r.output_ref.as_deref(), erased, MAX_OUTPUT_CHARS).await
        } else {
            json!({ "none": true })
        };
        out.push(json!({
            "step": e.step_n,
            "at": e.ts,
            "tool": r.tool,
            "status": r.status,
            "input": args.get(r.call_id.as_str()).copied().cloned().unwrap_or(Value::Null),
            "output": shown,
            "errors": r.errors,
            "latency_ms": r.latency_ms,
        }));
    }
    out
}

/// What one other execution did to `objects`: its side-effecting calls naming one of them (with
/// their results and the approval that let them run) and its gates on them that did not lead to
/// a call (rejected, expired, pending).
async fn actions_on(agent: &Agent, events: &[Event], objects: &[String]) -> Vec<Value> {
    let erased = is_erased(events);
    let names = |args: &Value| objects_of(args).iter().any(|k| objects.contains(k));
    let mut out = Vec::new();
    // Gates on the object, by id: (index in `out`, tool).
    let mut gates: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut approved: BTreeMap<String, Value> = BTreeMap::new();
    let mut refused: std::collections::BTreeSet<String> = Default::default();
    let mut calls: BTreeMap<String, usize> = BTreeMap::new();
    for e in events {
        match &e.payload {
            Payload::GateRequested(g) if names(&g.action["args"]) => {
                let tool = g.action["tool"].as_str().unwrap_or_default().to_owned();
                gates.insert(g.gate_id.clone(), (out.len(), tool.clone()));
                out.push(json!({
                    "kind": "gate", "exec_id": e.exec_id, "at": e.ts, "tool": tool,
                    "args": g.action["args"], "decision": "pending",
                }));
            }
            Payload::GateDecided(d) => {
                let Some((i, tool)) = gates.get(&d.gate_id) else {
                    continue;
                };
                if let Some(entry) = out.get_mut(*i) {
                    entry["decision"] = json!(d.verdict.as_str());
                    entry["approver"] = json!(d.approver);
                    entry["reason"] = json!(d.reason);
                }
                if d.verdict == Verdict::Approve {
                    approved.insert(tool.clone(), json!(d.approver));
                } else {
                    refused.insert(tool.clone());
                }
            }
            // A refused gate's call is recorded as rejected: the gate's entry already says so.
            Payload::ToolCalled(c) if refused.remove(&c.tool) => {}
            Payload::ToolCalled(c) if names(&c.args) && acts(agent, &c.tool) => {
                calls.insert(c.call_id.clone(), out.len());
                out.push(json!({
                    "kind": "call", "exec_id": e.exec_id, "at": e.ts, "tool": c.tool,
                    "args": c.args, "status": "called",
                    "approved_by": approved.remove(&c.tool).unwrap_or(Value::Null),
                }));
            }
            Payload::ToolResult(r) => {
                let Some(i) = calls.get(&r.call_id) else {
                    continue;
                };
                let shown = if r.status == ToolStatus::Ok {
                    output(
                        agent,
                        r.output_ref.as_deref(),
                        erased,
                        MAX_EARLIER_OUTPUT_CHARS,
                    )
                    .await
                } else {
                    json!({ "none": true })
                };
                if let Some(entry) = out.get_mut(*i) {
                    entry["status"] = json!(r.status);
                    entry["output"] = shown;
                    entry["errors"] = json!(r.errors);
                }
            }
            _ => {}
        }
    }
    // A gate that was approved shows as the call it let run.
    let led_to_call: Vec<usize> = gates
        .values()
        .filter(|(i, _)| out.get(*i).is_some_and(|g| g["decision"] == "approve"))
        .map(|(i, _)| *i)
        .collect();
    out.into_iter()
        .enumerate()
        .filter(|(i, _)| !led_to_call.contains(i))
        .map(|(_, v)| v)
        .collect()
}

/// The subject's other executions among the tenant's [`SUBJECT_SCAN`] most recent: how many,
/// how they ended, what they cost, and the last few.
async fn subject_history(
    agent: &Agent,
    gate: &GateView,
    recent: &[ExecView],
    reads: &mut Reads,
) -> Value {
    let Some(subject) = reads.subject(agent, gate.exec_id).await else {
        return json!({ "subject": null });
    };
    let mut theirs = Vec::new();
    for x in recent {
        if x.exec_id != gate.exec_id
            && reads.subject(agent, x.exec_id).await.as_ref() == Some(&subject)
        {
            theirs.push(x);
        }
    }
    let mut outcomes: BTreeMap<&str, u64> = BTreeMap::new();
    for x in &theirs {
        *outcomes.entry(x.status.as_str()).or_default() += 1;
    }
    let cost: u64 = theirs.iter().map(|x| x.cost_micros).sum();
    let last: Vec<Value> = theirs
        .iter()
        .take(5)
        .map(|x| {
            json!({
                "exec_id": x.exec_id, "started_at": x.started_at, "goal": x.goal,
                "status": x.status, "gates": x.gates,
            })
        })
        .collect();
    json!({
        "subject": subject,
        "executions": theirs.len(),
        "outcomes": outcomes,
        "cost_usd": cost as f64 / 1e6,
        "gates": theirs.iter().map(|x| u64::from(x.gates)).sum::<u64>(),
        "recent": last,
        "searched": recent.len(),
    })
}

/// People's decisions on the tenant's other gates of this strategy version at this tier, in the
/// book (replays and expiries are not people's verdicts on production actions).
fn record_at_tier(book: &Book, gate: &GateView) -> Value {
    let (mut approved, mut rejected, mut expired, mut pending) = (0u64, 0u64, 0u64, 0u64);
    for g in book.gates.values().filter(|g| {
        g.tenant == gate.tenant
            && g.gate_id != gate.gate_id
            && g.strategy_version == gate.strategy_version
            && g.consequence_tier == gate.consequence_tier
            && !g.replay
    }) {
        match g.decision.as_ref().map(|d| d.verdict) {
            Some(Verdict::Approve) => approved += 1,
            Some(Verdict::Reject) => rejected += 1,
            Some(Verdict::Expired) => expired += 1,
            None if !g.closed => pending += 1,
            None => {}
        }
    }
    let decided = approved + rejected;
    json!({
        "strategy_version": gate.strategy_version,
        "tier": gate.consequence_tier,
        "approved": approved,
        "rejected": rejected,
        "expired": expired,
        "pending": pending,
        "approval_rate": (decided > 0).then(|| approved as f64 / decided as f64),
    })
}

/// The evidence for `gate`, read now: `tool_results`, `earlier_actions`, `subject_history`,
/// `strategy_record`, plus the stored pack's `memory` and `cost_so_far` (sealed with the pack:
/// after an erasure they read as erased like the rest of it).
pub async fn assemble(
    agent: &Agent,
    approvals: &crate::gates::Approvals,
    gate: &GateView,
) -> Result<Value, RuntimeError> {
    assemble_with(agent, approvals, gate, &mut Reads::default()).await
}

/// What the packs of one page share, read once: subject links and other executions' events
/// (a queue's gates are often about the same objects and subjects).
#[derive(Default)]
pub struct Reads {
    subjects: HashMap<ExecId, Option<String>>,
    events: HashMap<ExecId, Arc<Vec<Event>>>,
}

impl Reads {
    /// The subject `exec` is linked to (`None`: none, erased, or unreadable).
    async fn subject(&mut self, agent: &Agent, exec: ExecId) -> Option<String> {
        if let Some(s) = self.subjects.get(&exec) {
            return s.clone();
        }
        let s = agent.log.subject_of(exec).await.ok().flatten();
        self.subjects.insert(exec, s.clone());
        s
    }

    /// The events of `exec`.
    async fn events(
        &mut self,
        agent: &Agent,
        exec: ExecId,
    ) -> Result<Arc<Vec<Event>>, RuntimeError> {
        if let Some(e) = self.events.get(&exec) {
            return Ok(e.clone());
        }
        let e = Arc::new(agent.log.read(exec, 1).await?);
        self.events.insert(exec, e.clone());
        Ok(e)
    }
}

/// [`assemble`], sharing `reads` with the other packs of the same page.
pub async fn assemble_with(
    agent: &Agent,
    approvals: &crate::gates::Approvals,
    gate: &GateView,
    reads: &mut Reads,
) -> Result<Value, RuntimeError> {
    let objects = objects_of(&gate.action["args"]);
    // What the book knows, copied out so the book is not held while the spine is read.
    let (others, total, recent, record) = {
        let book = approvals.book().await?;
        let mut others: Vec<ExecId> = Vec::new();
        for key in &objects {
            for x in book.objects.executions(&gate.tenant, key) {
                if x != gate.exec_id && !others.contains(&x) {
                    others.push(x);
                }
            }
        }
        // UUIDv7: the most recent first.
        others.sort_by(|a, b| b.cmp(a));
        let total = others.len();
        others.truncate(MAX_EARLIER_EXECUTIONS);
        let mut recent: Vec<ExecView> = book
            .execs
            .values()
            .filter(|x| x.tenant == gate.tenant && x.replay_of.is_none())
            .cloned()
            .collect();
        recent.sort_by_key(|x| std::cmp::Reverse(x.started_at));
        recent.truncate(SUBJECT_SCAN);
        (others, total, recent, record_at_tier(&book, gate))
    };

    let events = agent.log.read(gate.exec_id, 1).await?;
    let gate_seq = events
        .iter()
        .find(|e| matches!(&e.payload, Payload::GateRequested(g) if g.gate_id == gate.gate_id))
        .map_or(u64::MAX, |e| e.seq);
    let tools = tool_results(agent, &events, gate_seq).await;

    let mut earlier = Vec::new();
    let read = others.len();
    for x in others {
        let theirs = reads.events(agent, x).await?;
        // The index is per tenant; the check is kept here too, where the events are.
        let Some(first) = theirs.first() else {
            continue;
        };
        let replay = matches!(&first.payload, Payload::ExecStarted(s) if s.replay_of.is_some());
        if first.tenant.0 != gate.tenant || replay {
            continue;
        }
        earlier.extend(actions_on(agent, &theirs, &objects).await);
    }
    // By time, not by text: RFC 3339 with a varying number of fractional digits does not sort
    // as text.
    let at = |v: &Value| {
        v["at"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    };
    earlier.sort_by_key(|v| std::cmp::Reverse(at(v)));

    let pack = &gate.evidence_pack;
    Ok(json!({
        "objects": objects,
        "tool_results": tools,
        "earlier_actions": earlier,
        // Executions that named the object (in the book's index), and how many of the most
        // recent were read for `earlier_actions`.
        "earlier_executions": { "named_the_object": total, "read": read },
        "subject_history": subject_history(agent, gate, &recent, reads).await,
        "strategy_record": record,
        "memory": pack.get("memory").cloned().unwrap_or(json!(ERASED)),
        "cost_so_far": pack.get("cost_so_far").cloned().unwrap_or(Value::Null),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_id_arguments_with_short_values() {
        let args = json!({"order_id": "A-1042", "amount_cents": 1999, "id": 7,
            "customer_id": "", "note_id": [1], "reason": "damaged", "ref_id": "[erased]"});
        assert_eq!(objects_of(&args), ["id=7", "order_id=A-1042"]);
        assert!(objects_of(&json!("[erased]")).is_empty());
    }

    #[test]
    fn the_index_is_per_tenant_most_recent_first_and_bounded() {
        let (a, b) = (
            ExecId(uuid::Uuid::from_u128(1)),
            ExecId(uuid::Uuid::from_u128(2)),
        );
        let mut ix = ObjectIndex::default();
        let args = json!({"order_id": "A-1"});
        ix.record("acme", a, &args);
        ix.record("acme", a, &args);
        ix.record("acme", b, &args);
        ix.record("globex", b, &json!({"order_id": "A-2"}));
        assert_eq!(ix.executions("acme", "order_id=A-1"), [b, a]);
        assert!(ix.executions("globex", "order_id=A-1").is_empty());
        for n in 0..OBJECT_REFS_PER_TENANT as u128 {
            ix.record(
                "acme",
                ExecId(uuid::Uuid::from_u128(10 + n)),
                &json!({"order_id": "A-9"}),
            );
        }
        assert!(ix.executions("acme", "order_id=A-1").is_empty());
        assert_eq!(
            ix.executions("acme", "order_id=A-9").len(),
            OBJECT_REFS_PER_TENANT
        );
    }

    #[test]
    fn an_erased_execution_leaves_the_index_and_no_other_does() {
        let (a, b) = (
            ExecId(uuid::Uuid::from_u128(1)),
            ExecId(uuid::Uuid::from_u128(2)),
        );
        let mut ix = ObjectIndex::default();
        ix.record("acme", a, &json!({"order_id": "A-1", "customer_id": "c-1"}));
        ix.record("acme", b, &json!({"order_id": "A-1"}));
        ix.record("globex", a, &json!({"order_id": "A-1"}));
        assert_eq!(
            ix.executions_of("acme").into_iter().collect::<Vec<_>>(),
            [a, b]
        );
        ix.forget_execution("acme", a);
        assert_eq!(ix.executions("acme", "order_id=A-1"), [b]);
        assert!(ix.executions("acme", "customer_id=c-1").is_empty());
        assert_eq!(
            ix.executions_of("acme").into_iter().collect::<Vec<_>>(),
            [b]
        );
        assert_eq!(ix.executions("globex", "order_id=A-1"), [a]);
    }

    #[test]
    fn outputs_are_pretty_and_bounded_on_a_character_boundary() {
        let v = readable(br#"{"a":1}"#, 100);
        assert_eq!(v["text"], "{\n  \"a\": 1\n}");
        assert_eq!(v["more_chars"], 0);
        let v = readable("ééééé".as_bytes(), 2);
        assert_eq!(v["text"], "éé");
        assert_eq!(v["more_chars"], 3);
    }
}
