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
            };
            tail.flush();
            out.extend(tail.messages);
        }
        out
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
