//! The model's view of an execution, rebuilt from its events (and the blobs they reference):
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

/// Rebuilds the conversation from `events`, reading tool outputs from `blobs` (through `cache`).
pub async fn rebuild(
    prompt: &str,
    events: &[Event],
    blobs: &dyn BlobStore,
    cache: &mut OutputCache,
) -> Result<Vec<Message>, SpineError> {
    let mut messages = vec![Message::System {
        content: prompt.to_owned(),
    }];
    let mut turn = Turn::default();
    let mut results: HashMap<String, (String, bool)> = HashMap::new();
    let flush =
        |turn: &mut Turn, results: &mut HashMap<String, (String, bool)>, out: &mut Vec<Message>| {
            let turn = std::mem::take(turn);
            if turn.text.is_none() && turn.calls.is_empty() {
                return;
            }
            let ids: Vec<String> = turn.calls.iter().map(|c| c.id.clone()).collect();
            out.push(Message::Assistant {
                content: turn.text,
                tool_calls: turn.calls,
            });
            for id in ids {
                let (content, is_error) = results
                    .remove(&id)
                    .unwrap_or_else(|| (json!({"status": "unknown"}).to_string(), true));
                out.push(Message::Tool {
                    call_id: id,
                    content,
                    is_error,
                });
            }
        };
    for e in events {
        match &e.payload {
            Payload::ExecStarted(s) => messages.push(Message::User {
                content: s.goal.clone(),
            }),
            Payload::PlanProposed(p) => turn.text = Some(p.steps.join("\n")),
            // A failed distillation call is not the agent's reply.
            Payload::ModelResponded(r)
                if r.error.is_some() && !crate::recall::is_distill_call(&r.call_id) =>
            {
                flush(&mut turn, &mut results, &mut messages);
                messages.push(Message::User {
                    content: format!(
                        "Your previous reply could not be used: {}. Reply again, calling only the tools offered, with JSON object arguments.",
                        r.error.as_deref().unwrap_or_default()
                    ),
                });
            }
            Payload::ToolCalled(c) if !turn.calls.iter().any(|t| t.id == c.call_id) => {
                turn.calls.push(ToolCall {
                    id: c.call_id.clone(),
                    name: c.tool.clone(),
                    arguments: c.args.clone(),
                });
            }
            Payload::ToolResult(r) => {
                let output = match (&r.status, &r.output_ref) {
                    (ToolStatus::Ok, Some(reference)) => match cache.get(reference) {
                        Some(v) => Some(v.clone()),
                        None => {
                            let parsed: BlobRef = reference.parse()?;
                            let bytes = blobs.get(&parsed).await?;
                            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                            cache.insert(reference.clone(), v.clone());
                            Some(v)
                        }
                    },
                    _ => None,
                };
                results.insert(
                    r.call_id.clone(),
                    tool_message(r.status, output, &r.errors, r.error_class.as_deref()),
                );
            }
            Payload::MemoryRetrieved(m) => {
                if let Some(content) = crate::recall::memory_message(m) {
                    messages.push(Message::System { content });
                }
            }
            Payload::StepCompleted(_) => flush(&mut turn, &mut results, &mut messages),
            _ => {}
        }
    }
    flush(&mut turn, &mut results, &mut messages);
    Ok(messages)
}
