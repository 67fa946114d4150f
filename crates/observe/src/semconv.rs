//! The OpenTelemetry attribute names Keel emits, in one place.
//!
//! GenAI names follow the OpenTelemetry GenAI semantic conventions (repository
//! `open-telemetry/semantic-conventions-genai`, status "development"), pinned at
//! [`GENAI_SEMCONV_VERSION`]. Like every instrumentation of these experimental conventions, Keel
//! emits the latest names only when `OTEL_SEMCONV_STABILITY_OPT_IN` contains
//! `gen_ai_latest_experimental`; otherwise it emits the v1.36 names (the provider as
//! `gen_ai.system`). Names under `keel.` are Keel's own. The `opentelemetry-semantic-conventions`
//! crate is not used: its `GEN_AI_*` constants are deprecated pointers to the new repository.

/// The semantic-conventions schema followed with the opt-in (`gen_ai_latest_experimental`): the
/// version at which the GenAI names moved to the semantic-conventions-genai repository.
pub const GENAI_SEMCONV_VERSION: &str = "1.42.0";
/// The version followed without the opt-in.
pub const GENAI_SEMCONV_LEGACY_VERSION: &str = "1.36.0";
/// The opt-in switch and the value that selects the latest experimental names.
pub const OPT_IN_ENV: &str = "OTEL_SEMCONV_STABILITY_OPT_IN";
/// Value of [`OPT_IN_ENV`] that selects the latest GenAI names.
pub const OPT_IN_LATEST: &str = "gen_ai_latest_experimental";
/// Opt-in to message/query/argument content on spans.
pub const CAPTURE_CONTENT_ENV: &str = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT";

/// `gen_ai.operation.name`
pub const OPERATION_NAME: &str = "gen_ai.operation.name";
/// `gen_ai.provider.name` (latest; replaces `gen_ai.system`)
pub const PROVIDER_NAME: &str = "gen_ai.provider.name";
/// `gen_ai.system` (v1.36 and earlier)
pub const SYSTEM: &str = "gen_ai.system";
/// `gen_ai.request.model`
pub const REQUEST_MODEL: &str = "gen_ai.request.model";
/// `gen_ai.response.model`
pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
/// `gen_ai.usage.input_tokens`
pub const USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
/// `gen_ai.usage.output_tokens`
pub const USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
/// `gen_ai.tool.name`
pub const TOOL_NAME: &str = "gen_ai.tool.name";
/// `gen_ai.tool.call.id`
pub const TOOL_CALL_ID: &str = "gen_ai.tool.call.id";
/// `gen_ai.tool.type`
pub const TOOL_TYPE: &str = "gen_ai.tool.type";
/// `gen_ai.tool.call.arguments` (opt-in content)
pub const TOOL_CALL_ARGUMENTS: &str = "gen_ai.tool.call.arguments";
/// `gen_ai.agent.name`
pub const AGENT_NAME: &str = "gen_ai.agent.name";
/// `gen_ai.agent.id`
pub const AGENT_ID: &str = "gen_ai.agent.id";
/// `gen_ai.conversation.id`
pub const CONVERSATION_ID: &str = "gen_ai.conversation.id";
/// `gen_ai.data_source.id`
pub const DATA_SOURCE_ID: &str = "gen_ai.data_source.id";
/// `gen_ai.retrieval.query.text` (opt-in content)
pub const RETRIEVAL_QUERY_TEXT: &str = "gen_ai.retrieval.query.text";
/// `gen_ai.retrieval.documents` (opt-in content: `[{id, score}]`, as a JSON string)
pub const RETRIEVAL_DOCUMENTS: &str = "gen_ai.retrieval.documents";
/// `error.type`
pub const ERROR_TYPE: &str = "error.type";

/// `gen_ai.operation.name` values.
pub mod op {
    /// A chat model call.
    pub const CHAT: &str = "chat";
    /// A tool call.
    pub const EXECUTE_TOOL: &str = "execute_tool";
    /// The agent's run (the execution).
    pub const INVOKE_AGENT: &str = "invoke_agent";
    /// A retrieval of context from a vector store or search system: Keel's memory retrieval.
    /// (`search_memory` is for agent memory stores; receivers classify `retrieval` as retrieval.)
    pub const RETRIEVAL: &str = "retrieval";
}

/// `llm.cost.total`: the OpenInference name for a model call's cost in dollars, which
/// OpenInference receivers (Arize Phoenix) read; the GenAI conventions define no cost attribute.
pub const LLM_COST_TOTAL: &str = "llm.cost.total";

/// `keel.tenant`
pub const KEEL_TENANT: &str = "keel.tenant";
/// `keel.exec_id`
pub const KEEL_EXEC_ID: &str = "keel.exec_id";
/// `keel.cost_usd`: the span's cost in dollars (absent when unknown)
pub const KEEL_COST_USD: &str = "keel.cost_usd";
/// `keel.consequence_tier` (0–3)
pub const KEEL_CONSEQUENCE_TIER: &str = "keel.consequence_tier";
/// `keel.outcome`
pub const KEEL_OUTCOME: &str = "keel.outcome";
/// `keel.steps_n`
pub const KEEL_STEPS_N: &str = "keel.steps_n";
/// `keel.strategy_version`
pub const KEEL_STRATEGY_VERSION: &str = "keel.strategy_version";
/// `keel.tool.status`
pub const KEEL_TOOL_STATUS: &str = "keel.tool.status";
/// `keel.gate.id`
pub const KEEL_GATE_ID: &str = "keel.gate.id";
/// `keel.gate.verdict`
pub const KEEL_GATE_VERDICT: &str = "keel.gate.verdict";
/// `keel.gate.tool`: the tool the gated action calls (not `gen_ai.tool.name`: a gate is not a
/// tool call, and receivers classify spans carrying that name as one)
pub const KEEL_GATE_TOOL: &str = "keel.gate.tool";
/// `keel.gate.approver`
pub const KEEL_GATE_APPROVER: &str = "keel.gate.approver";
/// `keel.retrieval.record_count`: how many records a retrieval returned
pub const KEEL_RETRIEVAL_RECORD_COUNT: &str = "keel.retrieval.record_count";
/// `keel.memory_version`
pub const KEEL_MEMORY_VERSION: &str = "keel.memory_version";
/// `keel.replay_of`
pub const KEEL_REPLAY_OF: &str = "keel.replay_of";

/// Every name above, for the snapshot test that makes renames deliberate.
pub const ALL: &[&str] = &[
    OPERATION_NAME,
    PROVIDER_NAME,
    SYSTEM,
    REQUEST_MODEL,
    RESPONSE_MODEL,
    USAGE_INPUT_TOKENS,
    USAGE_OUTPUT_TOKENS,
    TOOL_NAME,
    TOOL_CALL_ID,
    TOOL_TYPE,
    TOOL_CALL_ARGUMENTS,
    AGENT_NAME,
    AGENT_ID,
    CONVERSATION_ID,
    DATA_SOURCE_ID,
    RETRIEVAL_QUERY_TEXT,
    RETRIEVAL_DOCUMENTS,
    LLM_COST_TOTAL,
    ERROR_TYPE,
    KEEL_TENANT,
    KEEL_EXEC_ID,
    KEEL_COST_USD,
    KEEL_CONSEQUENCE_TIER,
    KEEL_OUTCOME,
    KEEL_STEPS_N,
    KEEL_STRATEGY_VERSION,
    KEEL_TOOL_STATUS,
    KEEL_GATE_ID,
    KEEL_GATE_VERDICT,
    KEEL_GATE_TOOL,
    KEEL_GATE_APPROVER,
    KEEL_RETRIEVAL_RECORD_COUNT,
    KEEL_MEMORY_VERSION,
    KEEL_REPLAY_OF,
];
