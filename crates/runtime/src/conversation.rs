//! The model's view of an execution, derived from its events (and the blobs they reference):
//! the prompt, the goal, and per step what the model said, the tools it called and what they
//! returned. Because it is derived, a resumed execution shows the model exactly what the crashed
//! one would have.

use keel_core::Event;
use keel_core::payload::{Payload, ToolStatus};
use keel_models::{Message, ToolCall};
use keel_spine::{BlobRef, BlobStore, SpineError};
use serde_json::{Value, json};
use std::collections::HashMap;

/// What a tool result looks like to the model.
fn tool_message(
    status: ToolStatus,
    output: Option<Value>,
    errors: &[String],
    class: Option<&str>,
) -> (String, bool) {
    if status == ToolStatus::Ok {
        return (output.unwrap_or(Value::Null).to_string(), false);
    }
    let status = serde_json::to_value(status).unwrap_or(Value::Null);
    let mut v = json!({"status": status, "errors": errors});
    if let Some(c) = class {
        v["error_class"] = Value::String(c.to_owned());
    }
    if let Some(first) = errors.first() {
        v["error"] = Value::String(first.clone());
    }
    (v.to_string(), true)
}

#[derive(Default)]
struct Turn {
    text: Option<String>,
    calls: Vec<ToolCall>,
}

/// Tool outputs already read, by blob reference, so each step does not re-read every earlier
/// output from disk.
pub type OutputCache = HashMap<String, Value>;

/// The conversation so far, kept as events arrive ([`Conversation::absorb`]) instead of rebuilt
/// from the whole log at every step.
pub struct Conversation {
    messages: Vec<Message>,
    turn: Turn,
    results: HashMap<String, (String, bool)>,
    /// Events absorbed so far (the next one to absorb is `events[seen]`).
    seen: usize,
    cache: OutputCache,
    /// How many of `messages` the caller's copy starts with (see [`Conversation::update`]).
    shown: usize,
}

impl Conversation {
    /// A conversation that starts with `prompt`.
    pub fn new(prompt: &str) -> Self {
        Self {
            messages: vec![Message::System {
                content: prompt.to_owned(),
            }],
            turn: Turn::default(),
            results: HashMap::new(),
            seen: 0,
            cache: OutputCache::new(),
            shown: 0,
        }
    }

    /// Remembers a tool output the caller already has, so absorbing its result reads no blob.
    pub fn known_output(&mut self, output_ref: &str, output: &Value) {
        self.cache.insert(output_ref.to_owned(), output.clone());
    }

    fn flush(&mut self) {
        let turn = std::mem::take(&mut self.turn);
        if turn.text.is_none() && turn.calls.is_empty() {
            return;
        }
        let ids: Vec<String> = turn.calls.iter().map(|c| c.id.clone()).collect();
        self.messages.push(Message::Assistant {
            content: turn.text,
            tool_calls: turn.calls,
        });
        for id in ids {
            let (content, is_error) = self
                .results
                .remove(&id)
                .unwrap_or_else(|| (json!({"status": "unknown"}).to_string(), true));
            self.messages.push(Message::Tool {
                call_id: id,
                content,
                is_error,
            });
        }
    }

    /// Takes in `events[n..]` for the `n` events already absorbed (`events` grows; it is always
    /// the same execution's log), reading tool outputs from `blobs` when not already known.
    pub async fn absorb(
        &mut self,
        events: &[Event],
        blobs: &dyn BlobStore,
    ) -> Result<(), SpineError> {
        let new = events.get(self.seen..).unwrap_or_default();
        self.seen = events.len();
        for e in new {
            match &e.payload {
                Payload::ExecStarted(s) => self.messages.push(Message::User {
                    content: s.goal.clone(),
                }),
                Payload::PlanProposed(p) => self.turn.text = Some(p.steps.join("\n")),
                // A failed distillation call is not the agent's reply.
                Payload::ModelResponded(r)
                    if r.error.is_some() && !crate::recall::is_distill_call(&r.call_id) =>
                {
                    self.flush();
                    self.messages.push(Message::User {
                        content: format!(
                            "Your previous reply could not be used: {}. Reply again, calling only the tools offered, with JSON object arguments.",
                            r.error.as_deref().unwrap_or_default()
                        ),
                    });
                }
                Payload::ToolCalled(c) if !self.turn.calls.iter().any(|t| t.id == c.call_id) => {
                    self.turn.calls.push(ToolCall {
                        id: c.call_id.clone(),
                        name: c.tool.clone(),
                        arguments: c.args.clone(),
                    });
                }
                Payload::ToolResult(r) => {
                    let output = match (&r.status, &r.output_ref) {
                        (ToolStatus::Ok, Some(reference)) => match self.cache.get(reference) {
                            Some(v) => Some(v.clone()),
                            None => {
                                let parsed: BlobRef = reference.parse()?;
                                let bytes = blobs.get(&parsed).await?;
                                let v: Value =
                                    serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                                self.cache.insert(reference.clone(), v.clone());
                                Some(v)
                            }
                        },
                        _ => None,
                    };
                    self.results.insert(
                        r.call_id.clone(),
                        tool_message(r.status, output, &r.errors, r.error_class.as_deref()),
                    );
                }
                Payload::MemoryRetrieved(m) => {
                    if let Some(content) = crate::recall::memory_message(m) {
                        self.messages.push(Message::System { content });
                    }
                }
                Payload::StepCompleted(_) => self.flush(),
                _ => {}
            }
        }
        Ok(())
    }

    /// The messages so far, an unfinished step's turn included.
    pub fn messages(&self) -> Vec<Message> {
        let mut out = self.messages.clone();
        self.push_turn(&mut out);
        out
    }

    /// Brings `out`, the copy this conversation last updated (or an empty one), to
    /// [`Conversation::messages`], cloning only the messages added since: a step's request is
    /// kept and extended instead of copying the whole conversation at every step.
    pub fn update(&mut self, out: &mut Vec<Message>) {
        // Finished messages only grow; what follows them in `out` is the last unfinished turn.
        if out.len() < self.shown {
            out.clear();
            self.shown = 0;
        }
        out.truncate(self.shown);
        out.extend_from_slice(self.messages.get(self.shown..).unwrap_or_default());
        self.shown = self.messages.len();
        self.push_turn(out);
    }

    /// Appends the unfinished step's turn (what the model said and the results so far) to `out`.
    fn push_turn(&self, out: &mut Vec<Message>) {
        if self.turn.text.is_some() || !self.turn.calls.is_empty() {
            let mut tail = Conversation {
                messages: Vec::new(),
                turn: Turn {
                    text: self.turn.text.clone(),
                    calls: self.turn.calls.clone(),
                },
                results: self.results.clone(),
                seen: 0,
                cache: OutputCache::new(),
                shown: 0,
            };
            tail.flush();
            out.extend(tail.messages);
        }
    }
}

/// Rebuilds the conversation from `events`, reading tool outputs from `blobs` (through `cache`).
pub async fn rebuild(
    prompt: &str,
    events: &[Event],
    blobs: &dyn BlobStore,
    cache: &mut OutputCache,
) -> Result<Vec<Message>, SpineError> {
    let mut c = Conversation::new(prompt);
    c.cache = std::mem::take(cache);
    let absorbed = c.absorb(events, blobs).await;
    *cache = std::mem::take(&mut c.cache);
    absorbed?;
    Ok(c.messages())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::payload::{PlanProposed, StepCompleted, ToolCalled, ToolResult};
    use keel_core::{CURRENT_SCHEMA_VERSION, Cost, ExecId, TenantId, TraceId};
    use keel_spine::clock::{self, Clock, SystemClock};

    fn event(seq: u64, payload: Payload) -> Event {
        Event {
            event_id: clock::new_event_id(),
            exec_id: ExecId(uuid::Uuid::nil()),
            tenant: TenantId("acme".into()),
            seq,
            ts: SystemClock.now(),
            trace_id: TraceId([1; 16]),
            step_n: 0,
            schema_version: CURRENT_SCHEMA_VERSION,
            payload,
        }
    }

    /// A step's events up to its end: the plan, a call and its result.
    fn step(events: &mut Vec<Event>, n: usize) {
        let id = format!("c{n}");
        for p in [
            Payload::PlanProposed(PlanProposed {
                steps: vec![format!("look {n}")],
                model: "m".into(),
                prompt_version: "v1".into(),
            }),
            Payload::ToolCalled(ToolCalled {
                call_id: id.clone(),
                tool: "lookup".into(),
                args: json!({"n": n}),
                idempotency_key: None,
                est_cost: Cost::ZERO,
                attempt: 1,
            }),
            Payload::ToolResult(ToolResult {
                call_id: id.clone(),
                tool: "lookup".into(),
                status: ToolStatus::Ok,
                output_ref: Some(format!("sha256:{}", "ab".repeat(32))),
                actual_cost: Cost::ZERO,
                latency_ms: 0,
                error_class: None,
                errors: vec![],
            }),
        ] {
            events.push(event(events.len() as u64 + 1, p));
        }
    }

    #[tokio::test]
    async fn an_updated_request_equals_the_messages_at_every_step() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = keel_spine::LocalBlobStore::new(dir.path());
        let mut c = Conversation::new("Help.");
        c.known_output(&format!("sha256:{}", "ab".repeat(32)), &json!({"ok": true}));
        let mut events = vec![event(
            1,
            Payload::ExecStarted(keel_core::payload::ExecStarted {
                goal: "Where is A-1?".into(),
                strategy_version: "v1".into(),
                budget: Default::default(),
                experiment_arm: None,
                replay_of: None,
                experiment: None,
            }),
        )];
        let mut kept = Vec::new();
        for n in 0..4 {
            // Mid-step (an unfinished turn at the tail), then the step's end.
            step(&mut events, n);
            c.absorb(&events, &blobs).await.unwrap();
            c.update(&mut kept);
            assert_eq!(kept, c.messages(), "step {n}, unfinished");
            events.push(event(
                events.len() as u64 + 1,
                Payload::StepCompleted(StepCompleted::default()),
            ));
            c.absorb(&events, &blobs).await.unwrap();
            c.update(&mut kept);
            assert_eq!(kept, c.messages(), "step {n}");
        }
        // Handed a fresh vector, it starts over.
        let mut fresh = Vec::new();
        c.update(&mut fresh);
        assert_eq!(fresh, c.messages());
    }
}
