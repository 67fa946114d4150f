//! OpenAI-compatible Chat Completions (`POST {base_url}/chat/completions`, streaming off), the
//! wire format OpenAI, vLLM, Ollama, LiteLLM and llama.cpp servers share. Quirks of "compatible"
//! servers are normalised on ingest: `arguments` sent as an object instead of a JSON string, and
//! missing tool-call ids (synthesised deterministically). A reply with neither text nor a tool
//! call (what small local models often send) is malformed, so the loop records it and asks again
//! instead of finishing with an empty answer.

use crate::error::ModelError;
use crate::http::{self, RetryPolicy, Secret};
use crate::provider::{
    ChatRequest, ChatResponse, FinishReason, Message, ModelProvider, ToolCall, Usage,
    check_tool_names,
};
use async_trait::async_trait;
use keel_core::secrets::SecretSource;
use serde_json::{Value, json};

/// Where and how to reach an OpenAI-compatible server.
#[derive(Clone, Debug)]
pub struct OpenAiConfig {
    /// Base URL up to and including the version, e.g. `https://api.openai.com/v1` or
    /// `http://127.0.0.1:11434/v1` for Ollama.
    pub base_url: String,
    /// Environment variable holding the API key; `None` for local servers without auth.
    pub api_key_env: Option<String>,
    /// Timeouts and retries.
    pub retry: RetryPolicy,
    /// `tool_choice` sent until the model has called a tool; `None` sends none (the server's
    /// default, `auto`).
    pub tool_choice: Option<ToolChoice>,
}

/// Which tools the model must call: OpenAI's `tool_choice`.
///
/// A choice other than [`ToolChoice::Auto`] is sent only while the conversation holds no tool
/// result: forced on every turn, the model could never answer and the execution would run to
/// its step limit (the OpenAI Agents SDK resets it the same way).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides (`"auto"`).
    Auto,
    /// The model must call some tool (`"required"`).
    Required,
    /// The model must not call a tool (`"none"`).
    None,
    /// The model must call this tool (`{"type": "function", "function": {"name": …}}`).
    Tool(String),
}

impl ToolChoice {
    /// Reads a strategy's `tool_choice`: `auto`, `required`, `none` or a tool's name.
    pub fn parse(text: &str) -> Self {
        match text {
            "auto" => Self::Auto,
            "required" => Self::Required,
            "none" => Self::None,
            tool => Self::Tool(tool.to_owned()),
        }
    }

    /// As the wire's `tool_choice` value.
    fn to_json(&self) -> Value {
        match self {
            Self::Auto => json!("auto"),
            Self::Required => json!("required"),
            Self::None => json!("none"),
            Self::Tool(name) => json!({"type": "function", "function": {"name": name}}),
        }
    }
}

/// The request body with `choice` applied: sent only when tools are offered and, unless it is
/// `auto`, only before the first tool result (see [`ToolChoice`]).
pub fn request_body_with_choice(req: &ChatRequest, choice: Option<&ToolChoice>) -> Value {
    let mut body = request_body(req);
    let answered = req
        .messages
        .iter()
        .any(|m| matches!(m, Message::Tool { .. }));
    if let Some(choice) = choice
        && !req.tools.is_empty()
        && (*choice == ToolChoice::Auto || !answered)
    {
        body["tool_choice"] = choice.to_json();
    }
    body
}

/// An OpenAI-compatible provider.
pub struct OpenAi {
    config: OpenAiConfig,
    key: Option<Secret>,
    client: reqwest::Client,
}

const NAME: &str = "openai";

impl OpenAi {
    /// Builds the provider, taking the API key from `secrets` now so a missing key fails at
    /// start-up, not at the first call.
    pub fn new(config: OpenAiConfig, secrets: &dyn SecretSource) -> Result<Self, ModelError> {
        let key = match &config.api_key_env {
            Some(var) => Some(Secret::from_source(NAME, var, secrets)?),
            None => None,
        };
        Ok(Self {
            config,
            key,
            client: http::client()?,
        })
    }
}

/// The request body in OpenAI's wire format.
pub fn request_body(req: &ChatRequest) -> Value {
    let messages: Vec<Value> = req
        .messages
        .iter()
        .map(|m| match m {
            Message::System { content } => json!({"role": "system", "content": content}),
            Message::User { content } => json!({"role": "user", "content": content}),
            Message::Assistant {
                content,
                tool_calls,
            } => {
                // An empty string, not null, when the model only called tools: OpenAI takes
                // either, but llama.cpp's Python server refuses null (HTTP 500) and a missing
                // field.
                let text = content.as_deref().unwrap_or_default();
                let mut msg = json!({"role": "assistant", "content": text});
                if !tool_calls.is_empty() {
                    msg["tool_calls"] = tool_calls
                        .iter()
                        .map(|c| {
                            json!({
                                "id": c.id,
                                "type": "function",
                                "function": {"name": c.name, "arguments": c.arguments.to_string()},
                            })
                        })
                        .collect();
                }
                msg
            }
            Message::Tool {
                call_id, content, ..
            } => json!({"role": "tool", "tool_call_id": call_id, "content": content}),
        })
        .collect();
    let mut body = json!({
        "model": req.model,
        "messages": messages,
        "max_tokens": req.max_tokens,
        "stream": false,
    });
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.input_schema},
                })
            })
            .collect();
    }
    body
}

/// Parses a Chat Completions reply. A malformed one carries the usage the reply reports.
pub fn parse_reply(req: &ChatRequest, raw: &str) -> Result<ChatResponse, ModelError> {
    let v: Value = serde_json::from_str(raw).map_err(|e| ModelError::Malformed {
        provider: NAME.into(),
        detail: format!("reply is not JSON: {e}"),
        raw: raw.to_owned(),
        usage: Usage::default(),
    })?;
    let n = |p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let usage = Usage {
        input: n("/usage/prompt_tokens"),
        output: n("/usage/completion_tokens"),
        cached_input: n("/usage/prompt_tokens_details/cached_tokens"),
    };
    parse_value(req, raw, &v, usage).map_err(|e| e.with_usage(usage))
}

fn parse_value(
    req: &ChatRequest,
    raw: &str,
    v: &Value,
    usage: Usage,
) -> Result<ChatResponse, ModelError> {
    let bad = |detail: String| ModelError::Malformed {
        provider: NAME.into(),
        detail,
        raw: raw.to_owned(),
        usage,
    };
    let choice = v
        .pointer("/choices/0")
        .ok_or_else(|| bad("reply has no choices[0]".into()))?;
    let message = choice
        .get("message")
        .ok_or_else(|| bad("choices[0] has no message".into()))?;
    let text = message
        .get("content")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let mut tool_calls = Vec::new();
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for (i, c) in calls.iter().enumerate() {
            let name = c
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("tool_calls[{i}] has no function.name")))?;
            let arguments = match c.pointer("/function/arguments") {
                Some(Value::String(s)) if s.trim().is_empty() => json!({}),
                Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| {
                    bad(format!(
                        "tool_calls[{i}] ({name}): arguments are not valid JSON: {e}"
                    ))
                })?,
                Some(obj @ Value::Object(_)) => obj.clone(),
                None => json!({}),
                Some(other) => {
                    return Err(bad(format!(
                        "tool_calls[{i}] ({name}): arguments must be a JSON object or string, found {other}"
                    )));
                }
            };
            let id = c
                .get("id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map_or_else(|| format!("call_{i}"), str::to_owned);
            tool_calls.push(ToolCall {
                id,
                name: name.to_owned(),
                arguments,
            });
        }
    }
    check_tool_names(NAME, req, &tool_calls, raw)?;
    if text.is_none() && tool_calls.is_empty() {
        return Err(bad(format!(
            "the reply has neither text nor a tool call (finish_reason {})",
            choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .unwrap_or("absent")
        )));
    }
    let finish = match choice.get("finish_reason").and_then(Value::as_str) {
        Some("stop") => FinishReason::Stop,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some("length") => FinishReason::Length,
        _ if !tool_calls.is_empty() => FinishReason::ToolCalls,
        _ => FinishReason::Other,
    };
    Ok(ChatResponse {
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(&req.model)
            .to_owned(),
        text,
        tool_calls,
        usage,
        finish,
        latency: Default::default(),
        raw: raw.to_owned(),
    })
}

#[async_trait]
impl ModelProvider for OpenAi {
    fn name(&self) -> &str {
        NAME
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let url = format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        );
        let auth = self.key.as_ref().map(|k| format!("Bearer {}", k.expose()));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let body = request_body_with_choice(req, self.config.tool_choice.as_ref()).to_string();
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
