//! The provider-neutral conversation: what the agent loop sends (`ChatRequest`) and gets back
//! (`ChatResponse`), whatever vendor sits behind [`ModelProvider`].

use crate::error::ModelError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// A tool the model may call: its registry name, description and input JSON Schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Tool name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of the arguments.
    pub input_schema: Value,
}

/// A tool call proposed by the model. Arguments are parsed JSON (never a string).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's call id (synthesised deterministically when a server omits it).
    pub id: String,
    /// The tool.
    pub name: String,
    /// Arguments, as JSON.
    pub arguments: Value,
}

/// One turn of the conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    /// Instructions (the versioned prompt).
    System {
        /// Text.
        content: String,
    },
    /// The user's request.
    User {
        /// Text.
        content: String,
    },
    /// What the model said before.
    Assistant {
        /// Text, if any.
        content: Option<String>,
        /// Tool calls it made.
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call, as the model will read it.
    Tool {
        /// The call it answers.
        call_id: String,
        /// The result text (JSON for structured results).
        content: String,
        /// True when the call failed or was refused.
        is_error: bool,
    },
}

/// A request for one model reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model name as the provider knows it.
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Tools offered.
    pub tools: Vec<ToolSpec>,
    /// Upper bound on output tokens.
    pub max_tokens: u32,
}

/// Why the model stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A complete answer.
    Stop,
    /// It wants tools called.
    ToolCalls,
    /// It hit `max_tokens`.
    Length,
    /// Anything else the vendor reported (content filter, refusal, …).
    Other,
}

/// Token usage of one reply. `input` includes cached tokens; `cached_input` is the subset read
/// from the provider's cache (priced differently).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
    /// Of `input`, tokens read from cache.
    pub cached_input: u64,
}

/// One model reply.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatResponse {
    /// The model that answered (as the provider reports it).
    pub model: String,
    /// Text, if any.
    pub text: Option<String>,
    /// Tool calls, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Token usage.
    pub usage: Usage,
    /// Why it stopped.
    pub finish: FinishReason,
    /// Wall time of the call, retries included.
    pub latency: Duration,
    /// The raw response bytes, for the blob store and replay.
    pub raw: String,
}

/// A model provider. Contract: `chat` returns one reply whose tool calls name only tools in the
/// request and carry JSON arguments; anything else is [`ModelError::Malformed`] (recoverable).
/// Transient failures (429, 5xx, timeouts) are retried inside `chat`.
#[async_trait]
pub trait ModelProvider: Send + Sync {
    /// A short name for errors and telemetry (`openai`, `anthropic`, `scripted`).
    fn name(&self) -> &str;

    /// Asks for one reply.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError>;
}

/// Checks that every tool call names a tool the request offered.
pub(crate) fn check_tool_names(
    provider: &str,
    request: &ChatRequest,
    calls: &[ToolCall],
    raw: &str,
) -> Result<(), ModelError> {
    for call in calls {
        if !request.tools.iter().any(|t| t.name == call.name) {
            return Err(ModelError::Malformed {
                provider: provider.to_owned(),
                detail: format!("the model called unknown tool {:?}", call.name),
                raw: raw.to_owned(),
                usage: Usage::default(),
            });
        }
    }
    Ok(())
}
