//! Anthropic Messages (`POST {base_url}/v1/messages`, streaming off): `system` at the top level,
//! tool calls as `tool_use` blocks whose `input` is already an object, tool results as
//! `tool_result` blocks inside a user turn. Consecutive turns of one role are merged, as the API
//! requires alternating roles.

use crate::error::ModelError;
use crate::http::{self, RetryPolicy, Secret};
use crate::provider::{
    ChatRequest, ChatResponse, FinishReason, Message, ModelProvider, ToolCall, Usage,
    check_tool_names,
};
use async_trait::async_trait;
use keel_core::secrets::SecretSource;
use serde_json::{Value, json};

/// The API version header we speak.
pub const API_VERSION: &str = "2023-06-01";

/// Where and how to reach the Anthropic API.
#[derive(Clone, Debug)]
pub struct AnthropicConfig {
    /// Base URL, e.g. `https://api.anthropic.com`.
    pub base_url: String,
    /// The secret (environment variable, to the `keel` binary) holding the API key.
    pub api_key_env: String,
    /// Timeouts and retries.
    pub retry: RetryPolicy,
}

/// The Anthropic provider.
pub struct Anthropic {
    config: AnthropicConfig,
    key: Secret,
    client: reqwest::Client,
}

const NAME: &str = "anthropic";

impl Anthropic {
    /// Builds the provider, taking the API key from `secrets` now.
    pub fn new(config: AnthropicConfig, secrets: &dyn SecretSource) -> Result<Self, ModelError> {
        let key = Secret::from_source(NAME, &config.api_key_env, secrets)?;
        Ok(Self {
            config,
            key,
            client: http::client()?,
        })
    }
}

/// The request body in Anthropic's wire format.
pub fn request_body(req: &ChatRequest) -> Value {
    let mut system = Vec::new();
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    let mut push = |role: &'static str, block: Value| match turns.last_mut() {
        Some((r, blocks)) if *r == role => blocks.push(block),
        _ => turns.push((role, vec![block])),
    };
    for m in &req.messages {
        match m {
            Message::System { content } => system.push(content.as_str()),
            Message::User { content } => push("user", json!({"type": "text", "text": content})),
            Message::Assistant {
                content,
                tool_calls,
            } => {
                if let Some(text) = content {
                    push("assistant", json!({"type": "text", "text": text}));
                }
                for c in tool_calls {
                    push(
                        "assistant",
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}),
                    );
                }
            }
            Message::Tool {
                call_id,
                content,
                is_error,
            } => push(
                "user",
                json!({"type": "tool_result", "tool_use_id": call_id, "content": content, "is_error": is_error}),
            ),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let mut body = json!({
        "model": req.model,
        "max_tokens": req.max_tokens,
        "messages": messages,
    });
    if !system.is_empty() {
        body["system"] = Value::String(system.join("\n\n"));
    }
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.input_schema}))
            .collect();
    }
    body
}

/// Parses a Messages reply.
pub fn parse_reply(req: &ChatRequest, raw: &str) -> Result<ChatResponse, ModelError> {
    let bad = |detail: String| ModelError::Malformed {
        provider: NAME.into(),
        detail,
        raw: raw.to_owned(),
        usage: Usage::default(),
    };
    let v: Value = serde_json::from_str(raw).map_err(|e| bad(format!("reply is not JSON: {e}")))?;
    let blocks = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("reply has no content array".into()))?;
    let mut texts = Vec::new();
    let mut tool_calls = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    texts.push(t.to_owned());
                }
            }
            Some("tool_use") => {
                let name = b
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("content[{i}] tool_use has no name")))?;
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                if !input.is_object() {
                    return Err(bad(format!(
                        "content[{i}] ({name}): input must be a JSON object, found {input}"
                    )));
                }
                let id = b
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("toolu_{i}"), str::to_owned);
                tool_calls.push(ToolCall {
                    id,
                    name: name.to_owned(),
                    arguments: input,
                });
            }
            // Thinking and other block types carry nothing the loop acts on.
            _ => {}
        }
    }
    check_tool_names(NAME, req, &tool_calls, raw)?;
    let finish = match v.get("stop_reason").and_then(Value::as_str) {
        Some("end_turn" | "stop_sequence") => FinishReason::Stop,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("max_tokens") => FinishReason::Length,
        _ => FinishReason::Other,
    };
    let n = |p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    // Anthropic's input_tokens excludes cache reads and writes; ours includes them.
    let cache_read = n("/usage/cache_read_input_tokens");
    let input = n("/usage/input_tokens") + cache_read + n("/usage/cache_creation_input_tokens");
    Ok(ChatResponse {
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(&req.model)
            .to_owned(),
        text: (!texts.is_empty()).then(|| texts.join("\n")),
        tool_calls,
        usage: Usage {
            input,
            output: n("/usage/output_tokens"),
            cached_input: cache_read,
        },
        finish,
        latency: Default::default(),
        raw: raw.to_owned(),
    })
}

#[async_trait]
impl ModelProvider for Anthropic {
    fn name(&self) -> &str {
        NAME
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let url = format!("{}/v1/messages", self.config.base_url.trim_end_matches('/'));
        let headers = [
            ("x-api-key", self.key.expose()),
            ("anthropic-version", API_VERSION),
        ];
        let body = request_body(req).to_string();
        let reply = http::post_json(
            NAME,
            &self.client,
            &url,
            &headers,
            &body,
            &self.config.retry,
        )
        .await?;
        let mut response = parse_reply(req, &reply.body)?;
        response.latency = reply.latency;
        Ok(response)
    }
}
