//! Model providers behind one trait, [`ModelProvider`]: the OpenAI-compatible Chat Completions
//! wire format (OpenAI, vLLM, Ollama, LiteLLM, llama.cpp servers), Anthropic Messages, and a
//! deterministic offline [`scripted::ScriptedModel`] for the demo and tests. Plus the price table
//! that turns token usage into cost.
//!
//! What it is not: the agent loop. A provider turns a conversation into one reply (text and/or
//! tool calls, token usage, raw bytes for replay); recording events and deciding what to do next
//! belong to the runtime.

pub mod anthropic;
pub mod error;
pub mod http;
pub mod openai;
pub mod prices;
pub mod provider;
pub mod scripted;

pub use error::ModelError;
pub use prices::PriceTable;
pub use provider::{
    ChatRequest, ChatResponse, FinishReason, Message, ModelProvider, ToolCall, ToolSpec, Usage,
};
