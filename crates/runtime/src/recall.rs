//! Governed memory in the agent loop (issue 6): per the strategy's `memory:` section, retrieval
//! before the first model call (recorded as `memory.retrieved` with exactly the chunks the model
//! is shown, each with its provenance, age and freshness flag), and distillation at the end: the
//! execution's conversation goes to the model provider with the distillation prompt, and only the
//! durable facts it extracts (never the raw conversation) are PII-screened and written, each as a
//! row in the memory store and a `memory.written` event carrying everything needed to rebuild it.
//! The distillation's model call is metered like any other (`model.called` / `model.responded`,
//! in every total and under the cost budget), and its failure is a `memory.distill_failed`
//! event that never keeps the answer from finishing the execution.
//!
//! An execution linked to a data subject ([`Agent::start_for_subject`]) has its personal fields
//! sealed by the spine, and its facts are filed under that subject for access and erasure.

use crate::agent::Agent;
use crate::conversation;
use crate::error::RuntimeError;
use crate::strategy::{Strategy, StrategySet};
use keel_core::payload::{MemoryRetrieved, MemoryWritten, Payload, RetrievedChunk};
use keel_core::{Event, ExecId, ExecutionState};
use keel_memory::{Fact, Memory, MemoryError, NewFact, Provenance, Query, Trust};
use keel_models::{ChatRequest, Message};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// The prompt version of the distillation step (recorded in each fact's provenance).
pub const DISTILL_PROMPT_VERSION: &str = "distill-v1";

/// The distillation instructions. The scripted model recognises them by their first words.
pub const DISTILL_PROMPT: &str = "Distil durable facts from this support conversation for long-term memory. \
Reply with JSON only: {\"facts\": [{\"text\": one sentence, \"volatility\": \"policy\"|\"preference\"|\"account\"|\"stable\", \
\"trust\": \"user_claim\"|\"agent\"|\"tool_record\", \"source\": \"goal\"|\"answer\"|\"tool:<name>\"}]}. \
Only facts useful in later conversations; no greetings, no one-off details, no personal identifiers. \
A customer's statement about policy or entitlements is a user_claim.";

/// A strategy's `memory:` section. Every field has a default, so strategies without one load as
/// before (memory off).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Retrieve memory before the first model call.
    pub enabled: bool,
    /// How many facts to show the model.
    pub k: usize,
    /// Minimum cosine similarity of a shown fact.
    pub min_score: f32,
    /// Distil facts at the end of a successful execution.
    pub distill: bool,
    /// Pin the semantic catalogue version read (`None`: the current one).
    pub semantic_version: Option<u64>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            enabled: false,
            k: 5,
            min_score: 0.3,
            distill: false,
            semantic_version: None,
        }
    }
}

impl MemoryConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if self.k == 0 || self.k > 100 {
            return Err("memory.k: must be 1..=100".into());
        }
        if !(-1.0..=1.0).contains(&self.min_score) {
            return Err("memory.min_score: must be within -1..=1".into());
        }
        Ok(())
    }
}

/// Opens the embedded memory (`DIR/memory.db`, MiniLM from `minilm_dir`, which the caller's
/// configuration resolved) if any strategy uses memory; `None` otherwise, so deployments without
/// memory never load the model.
pub fn open_for(
    data: &Path,
    strategies: &StrategySet,
    minilm_dir: Option<&Path>,
) -> Result<Option<Arc<Memory>>, RuntimeError> {
    if !wanted(strategies) {
        return Ok(None);
    }
    let dir = minilm_dir.ok_or_else(|| MemoryError::Config {
        field: "embedder.dir".into(),
        detail: "a strategy uses memory, which needs all-MiniLM-L6-v2, and no directory was \
                 given (keel.toml's embedder.dir or KEEL_MINILM_DIR; scripts/test-services \
                 fetches the model)"
            .into(),
    })?;
    Ok(Some(Arc::new(open_embedded(data, dir)?)))
}

/// Whether any strategy retrieves or distils memory (a wiring opens memory only then, so
/// deployments without memory never load a model or reach a memory store).
pub fn wanted(strategies: &StrategySet) -> bool {
    strategies
        .iter()
        .any(|s| s.memory.enabled || s.memory.distill)
}

/// The embedded memory under `data`: `memory.db` pinned to all-MiniLM-L6-v2, loaded from
/// `minilm_dir`.
#[cfg(feature = "minilm")]
pub fn open_embedded(data: &Path, minilm_dir: &Path) -> Result<Memory, RuntimeError> {
    use keel_memory::{MemoryPolicy, SqliteMemory};
    let embedder = keel_memory::MiniLm::load(minilm_dir)?;
    let store = SqliteMemory::open(
        data.join("memory.db"),
        keel_memory::Embedder::model(&embedder),
    )?;
    Ok(Memory::new(
        Arc::new(store),
        Arc::new(embedder),
        MemoryPolicy::default(),
    )?)
}

/// Without the local embedder, a strategy with memory cannot run: a clear error, not a panic.
#[cfg(not(feature = "minilm"))]
pub fn open_embedded(data: &Path, minilm_dir: &Path) -> Result<Memory, RuntimeError> {
    let _ = (data, minilm_dir);
    Err(MemoryError::Config {
        field: "memory".into(),
        detail: "this build has no local embedder (keel-runtime's `minilm` feature)".into(),
    }
    .into())
}

fn goal_of(events: &[Event]) -> Option<&str> {
    events.iter().find_map(|e| match &e.payload {
        Payload::ExecStarted(s) => Some(s.goal.as_str()),
        _ => None,
    })
}

/// The provenance object shown with a chunk or recorded with a write.
fn provenance_json(fact: &Fact) -> Value {
    let p = &fact.provenance;
    json!({
        "fact": fact.text,
        "tier": fact.tier,
        "status": fact.status,
        "volatility": fact.volatility,
        "subject": fact.subject,
        "trace_id": p.trace_id,
        "exec_id": p.exec_id,
        "event_seqs": p.event_seqs,
        "strategy_version": p.strategy_version,
        "written_at": p.written_at,
        "source": p.source,
        "trust": p.trust,
        "pii": fact.pii,
        "expires_at": fact.expires_at,
        "fresh_until": fact.fresh_until,
        "scope": fact.scope,
    })
}

/// `memory.retrieved` for the first step of an execution, if its strategy uses memory and it has
/// not retrieved yet (a resumed execution does not retrieve twice).
pub async fn before_first_call(
    agent: &Agent,
    strategy: &Strategy,
    state: &ExecutionState,
    events: &[Event],
) -> Result<Option<Payload>, RuntimeError> {
    let Some(memory) = &agent.memory else {
        return Ok(None);
    };
    let retrieved = events
        .iter()
        .any(|e| matches!(e.payload, Payload::MemoryRetrieved(_)));
    if !strategy.memory.enabled
        || retrieved
        || state.totals.steps > 0
        || state.pending_model_call.is_some()
    {
        return Ok(None);
    }
    let Some(goal) = goal_of(events) else {
        return Ok(None);
    };
    let tenant = state.tenant.clone().map(|t| t.0).unwrap_or_default();
    // Episodic memory is per subject: only the facts about the customer this execution is about
    // (none if it names no one), beside the tenant-wide and promoted ones.
    let subject = match state.exec_id {
        Some(exec_id) => agent.log.subject_of(exec_id).await?,
        None => None,
    };
    let q = Query {
        tenant,
        subject,
        text: goal.to_owned(),
        k: strategy.memory.k,
        min_score: strategy.memory.min_score,
        semantic_version: strategy.memory.semantic_version,
    };
    let r = memory.retrieve(&q, agent.clock.now()).await?;
    let chunks = r
        .hits
        .iter()
        .map(|h| {
            let mut p = provenance_json(&h.fact);
            p["age_secs"] = json!(h.age_secs);
            p["stale"] = json!(h.stale);
            RetrievedChunk {
                id: h.fact.id.clone(),
                score: f64::from(h.score),
                provenance: p,
            }
        })
        .collect();
    Ok(Some(Payload::MemoryRetrieved(MemoryRetrieved {
        query: q.text,
        chunks,
        memory_version: r.memory_version,
    })))
}

/// How a `memory.retrieved` event reads to the model (`None` if it retrieved nothing).
pub fn memory_message(m: &MemoryRetrieved) -> Option<String> {
    if m.chunks.is_empty() {
        return None;
    }
    let mut out = String::from(
        "Memory: facts from earlier conversations with this customer and the tenant's curated knowledge, best match first. \
Each shows its age; a fact marked STALE is past its freshness window, so check it before relying on it.\n",
    );
    for c in &m.chunks {
        let p = &c.provenance;
        let age = p["age_secs"].as_i64().unwrap_or(0);
        let age = if age >= 86_400 {
            format!("{}d", age / 86_400)
        } else if age >= 3600 {
            format!("{}h", age / 3600)
        } else {
            format!("{}m", age / 60)
        };
        out.push_str(&format!(
            "- {} (memory {}, {}, age {age}{})\n",
            p["fact"].as_str().unwrap_or("[erased]"),
            c.id,
            p["volatility"].as_str().unwrap_or("?"),
            if p["stale"].as_bool().unwrap_or(false) {
                ", STALE"
            } else {
                ""
            }
        ));
    }
    Some(out)
}

/// One candidate fact as the distiller returns it.
#[derive(Deserialize)]
struct Candidate {
    text: String,
    #[serde(default = "default_volatility")]
    volatility: String,
    #[serde(default = "default_trust")]
    trust: Trust,
    #[serde(default)]
    source: String,
}

fn default_volatility() -> String {
    "preference".into()
}

fn default_trust() -> Trust {
    Trust::UserClaim
}

#[derive(Deserialize)]
struct Candidates {
    facts: Vec<Candidate>,
}

/// The facts JSON of a distiller's reply: the object from its first `{` to its last `}` (models
/// wrap JSON in prose or code fences). Any reply, however malformed, is an error, never a panic.
fn parse_candidates(reply: &str) -> Result<Candidates, String> {
    let object = reply
        .find('{')
        .and_then(|a| reply.rfind('}').and_then(|b| reply.get(a..=b)))
        .ok_or_else(|| "no JSON object in the reply".to_owned())?;
    serde_json::from_str(object).map_err(|e| e.to_string())
}

fn render(messages: &[Message]) -> String {
    let mut out = String::new();
    for m in messages.iter().skip(1) {
        match m {
            Message::System { content } => out.push_str(&format!("memory: {content}\n")),
            Message::User { content } => out.push_str(&format!("customer: {content}\n")),
            Message::Assistant {
                content,
                tool_calls,
            } => {
                if let Some(c) = content {
                    out.push_str(&format!("agent: {c}\n"));
                }
                for c in tool_calls {
                    out.push_str(&format!("agent calls {}({})\n", c.name, c.arguments));
                }
            }
            Message::Tool { content, .. } => out.push_str(&format!("tool result: {content}\n")),
        }
    }
    out
}

/// Which events a candidate came from.
fn evidence(events: &[Event], source: &str) -> Vec<u64> {
    let seqs: Vec<u64> = match source.strip_prefix("tool:") {
        Some(tool) => events
            .iter()
            .filter(|e| matches!(&e.payload, Payload::ToolResult(r) if r.tool == tool))
            .map(|e| e.seq)
            .collect(),
        None if source == "answer" => events
            .iter()
            .rev()
            .find(|e| matches!(&e.payload, Payload::ModelResponded(r) if !is_distill_call(&r.call_id)))
            .map(|e| vec![e.seq])
            .unwrap_or_default(),
        None => vec![1],
    };
    if seqs.is_empty() { vec![1] } else { seqs }
}

/// A deterministic fact id for the `i`th candidate of an execution, so a distillation repeated
/// after a crash stores nothing twice.
fn fact_id(exec: ExecId, i: usize, text: &str) -> String {
    let h = Sha256::digest(format!("{exec}/{i}/{text}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    uuid::Builder::from_custom_bytes(b).into_uuid().to_string()
}

/// Ids of the distillation's model calls start with this: they are not part of the agent's
/// conversation (a resumed execution and the conversation it shows the model skip them).
pub const DISTILL_CALL_PREFIX: &str = "distill-";

/// True for the `call_id` of a distillation's model call.
pub fn is_distill_call(call_id: &str) -> bool {
    call_id.starts_with(DISTILL_CALL_PREFIX)
}

/// The distillation request for the finished conversation in `events`: `None` if the strategy
/// does not distil, there is no memory, or this execution already wrote its facts. The runtime
/// makes the call itself, metered and budgeted like any model call (see `Agent::distil`).
pub async fn distill_request(
    agent: &Agent,
    strategy: &Strategy,
    events: &[Event],
) -> Result<Option<ChatRequest>, RuntimeError> {
    if agent.memory.is_none() || !strategy.memory.distill {
        return Ok(None);
    }
    let written = events
        .iter()
        .any(|e| matches!(e.payload, Payload::MemoryWritten(_)));
    if written {
        return Ok(None);
    }
    let mut cache = conversation::OutputCache::new();
    let messages =
        conversation::rebuild(&strategy.prompt, events, &*agent.blobs, &mut cache).await?;
    Ok(Some(ChatRequest {
        model: strategy.model.clone(),
        messages: vec![
            Message::System {
                content: DISTILL_PROMPT.into(),
            },
            Message::User {
                content: render(&messages),
            },
        ],
        tools: Vec::new(),
        max_tokens: strategy.max_tokens,
    }))
}

/// Stores the facts of the distiller's reply `text` (from model `replied_by`) and returns the
/// `memory.written` payloads to append, with why the rest were not written if something failed
/// (a reply that is not the facts JSON, the store): the facts stored before the failure keep
/// their events. A candidate the PII policy rejects is recorded as a `memory.written` with status
/// `rejected_pii` and no text.
pub async fn store_facts(
    agent: &Agent,
    strategy: &Strategy,
    state: &ExecutionState,
    events: &[Event],
    replied_by: &str,
    text: &str,
) -> (Vec<Payload>, Option<String>) {
    let mut out = Vec::new();
    let (Some(memory), Some(exec_id)) = (&agent.memory, state.exec_id) else {
        return (out, Some("no memory is configured".into()));
    };
    let candidates = match parse_candidates(text) {
        Ok(c) => c,
        Err(e) => {
            let why = format!("the distillation reply of {replied_by} is not the facts JSON: {e}");
            return (out, Some(why));
        }
    };
    let tenant = state.tenant.clone().map(|t| t.0).unwrap_or_default();
    let subject = match agent.log.subject_of(exec_id).await {
        Ok(s) => s,
        Err(e) => return (out, Some(format!("the execution's subject: {e}"))),
    };
    let now = agent.clock.now();
    for (i, c) in candidates.facts.into_iter().enumerate() {
        // What the customer said can never be trusted above the agent's own judgement.
        let trust = if c.source == "goal" {
            c.trust.min(Trust::Agent)
        } else {
            c.trust
        };
        let new = NewFact {
            text: c.text.clone(),
            volatility: c.volatility.clone(),
            provenance: Provenance {
                tenant: tenant.clone(),
                subject: subject.clone(),
                trace_id: state.trace_id.map(|t| t.to_string()),
                exec_id: Some(exec_id.to_string()),
                event_seqs: evidence(events, &c.source),
                strategy_version: Some(strategy.version.clone()),
                written_at: now,
                source: format!("distilled by {replied_by} ({DISTILL_PROMPT_VERSION})"),
                trust,
            },
        };
        let id = fact_id(exec_id, i, &c.text);
        match memory.prepare(new.clone(), id.clone(), now) {
            Ok(fact) => {
                if let Err(e) = memory.store(&fact).await {
                    return (out, Some(format!("storing fact {}: {e}", fact.id)));
                }
                out.push(Payload::MemoryWritten(MemoryWritten {
                    memory_id: fact.id.clone(),
                    subject: fact.subject.clone(),
                    volatility: fact.volatility.clone(),
                    provenance: provenance_json(&fact),
                }));
            }
            Err(MemoryError::PiiRejected { kinds }) => {
                out.push(Payload::MemoryWritten(MemoryWritten {
                    memory_id: id,
                    subject: subject.clone(),
                    volatility: c.volatility,
                    provenance: json!({
                        "status": "rejected_pii",
                        "pii": kinds,
                        "trace_id": new.provenance.trace_id,
                        "event_seqs": new.provenance.event_seqs,
                        "strategy_version": new.provenance.strategy_version,
                        "written_at": now,
                    }),
                }));
            }
            // An unknown volatility class from the distiller: skip the candidate, keep the rest.
            Err(MemoryError::Config { .. }) => {}
            Err(e) => return (out, Some(format!("preparing fact {id}: {e}"))),
        }
    }
    (out, None)
}

impl Agent {
    /// Like [`Agent::start`], for a request about data subject `subject`: the execution is linked
    /// to the subject on the spine before its first event, so its personal fields are sealed
    /// under the subject's key (erasable) and its distilled facts are filed under the subject.
    pub async fn start_for_subject(
        &self,
        strategy: &Strategy,
        tenant: &str,
        subject: &str,
        goal: &str,
    ) -> Result<ExecId, RuntimeError> {
        self.start_about(strategy, tenant, Some(subject), goal)
            .await
    }
}

fn parsed<T: serde::de::DeserializeOwned>(v: &Value) -> Option<T> {
    serde_json::from_value(v.clone()).ok()
}

/// Rebuilds the memory store from the log: every `memory.written` whose fact is readable (not
/// erased, not refused by the PII screen) is stored again under its id, with its provenance,
/// class, TTL and freshness as written; facts already stored are left alone. Returns how many
/// facts were (re)stored. Review decisions and promotions made after the write are not events
/// yet, so rebuilt facts come back in the status they were written with.
pub async fn rebuild_from_log(
    log: &dyn keel_spine::EventLog,
    memory: &Memory,
) -> Result<usize, RuntimeError> {
    let mut next = 1;
    let mut stored = 0;
    loop {
        let page = log.read_all(next, 1000).await?;
        let Some(last) = page.last() else {
            return Ok(stored);
        };
        next = last.offset + 1;
        for c in &page {
            let Payload::MemoryWritten(w) = &c.event.payload else {
                continue;
            };
            let p = &w.provenance;
            let (Some(text), Some(written_at)) = (
                p["fact"].as_str(),
                p["written_at"].as_str().and_then(|t| t.parse().ok()),
            ) else {
                continue;
            };
            let fact = Fact {
                id: w.memory_id.clone(),
                tenant: c.event.tenant.0.clone(),
                subject: w.subject.clone(),
                text: text.to_owned(),
                volatility: w.volatility.clone(),
                tier: parsed(&p["tier"]).unwrap_or(keel_memory::Tier::Episodic),
                status: parsed(&p["status"]).unwrap_or(keel_memory::Status::Review),
                semantic_from: None,
                semantic_to: None,
                created_at: written_at,
                expires_at: parsed(&p["expires_at"]),
                fresh_until: parsed(&p["fresh_until"]),
                provenance: Provenance {
                    tenant: c.event.tenant.0.clone(),
                    subject: w.subject.clone(),
                    trace_id: p["trace_id"].as_str().map(str::to_owned),
                    exec_id: p["exec_id"].as_str().map(str::to_owned),
                    event_seqs: parsed(&p["event_seqs"]).unwrap_or_default(),
                    strategy_version: p["strategy_version"].as_str().map(str::to_owned),
                    written_at,
                    source: p["source"].as_str().unwrap_or("rebuilt").to_owned(),
                    trust: parsed(&p["trust"]).unwrap_or(Trust::UserClaim),
                },
                pii: parsed(&p["pii"]).unwrap_or_default(),
                promoted_from: None,
                scope: parsed(&p["scope"]).unwrap_or_default(),
            };
            memory.store(&fact).await?;
            stored += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_candidates;
    use proptest::prelude::*;

    /// Regression (issue 12, item 13): a `}` before the first `{` sliced a reversed range.
    #[test]
    fn a_closing_brace_before_the_first_opening_one_is_an_error_not_a_panic() {
        let e = parse_candidates("} oops {").err();
        assert_eq!(e.as_deref(), Some("no JSON object in the reply"));
        assert!(parse_candidates("}{").is_err());
        assert!(parse_candidates("").is_err());
        let ok = parse_candidates("} prose {\"facts\": [{\"text\": \"a\"}]} more")
            .map(|c| c.facts.len());
        assert_eq!(
            ok,
            Ok(1),
            "a stray closing brace before the object is prose"
        );
        let ok = parse_candidates("Here: {\"facts\": [{\"text\": \"Prefers e-mail\"}]} done")
            .map(|c| c.facts.len());
        assert_eq!(ok, Ok(1));
    }

    proptest! {
        #[test]
        fn any_reply_parses_or_errors(reply in any::<String>()) {
            let _ = parse_candidates(&reply);
        }

        #[test]
        fn any_brace_soup_parses_or_errors(reply in "[{}\\[\\]\":, a-z0-9é€]{0,60}") {
            let _ = parse_candidates(&reply);
        }
    }
}
