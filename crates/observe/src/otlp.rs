//! OTLP export: each finished execution becomes an OpenTelemetry trace, sent over OTLP/HTTP
//! (protobuf) by the `opentelemetry-otlp` exporter on the workspace's reqwest.
//!
//! Shape: one root span per execution (`invoke_agent {strategy}`) whose trace id *is* Keel's
//! `trace_id`, and child spans for each model call (`chat {model}`, from `model.called` to
//! `model.responded`), tool call (`execute_tool {tool}`, `tool.called` → `tool.result`), memory
//! retrieval (`retrieval {memory_version}`, at `memory.retrieved`, with the latest-names opt-in
//! only) and gate (`gate {gate_id}`, `gate.requested` → `gate.decided`: an internal span with
//! `keel.*` attributes only, so that no receiver takes it for a tool call). Span ids derive from the opening event's id, so exporting
//! the same execution twice sends identical spans (a receiver can deduplicate). Times are the
//! events' own: the spans describe what happened, built from the log after the fact, which is
//! why spans are made as [`SpanData`] rather than through a live tracer.
//!
//! An execution is exported once it has ended (spans are immutable in OTLP); the consumer keeps
//! its own checkpoint like the projections do.

use crate::error::{ObserveError, Result};
use crate::semconv as sc;
use keel_core::control::CONTROL_STREAM;
use keel_core::payload::{Payload, ToolStatus};
use keel_core::{Cost, Event, EventId, ExecId};
use keel_spine::EventLog;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// How spans are named and what they carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conventions {
    /// Emit the latest experimental GenAI names (`OTEL_SEMCONV_STABILITY_OPT_IN` contains
    /// `gen_ai_latest_experimental`); otherwise the v1.36 names.
    pub latest_experimental: bool,
    /// Put queries, tool arguments and retrieved record ids on spans
    /// (`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`).
    pub capture_content: bool,
}

impl Conventions {
    /// From the values of the two standard switches ([`sc::OPT_IN_ENV`] and
    /// [`sc::CAPTURE_CONTENT_ENV`], read by the caller's edge; `None`: unset).
    pub fn from_switches(opt_in: Option<&str>, capture: Option<&str>) -> Self {
        let (opt_in, capture) = (opt_in.unwrap_or_default(), capture.unwrap_or_default());
        Self {
            latest_experimental: opt_in.split(',').any(|v| v.trim() == sc::OPT_IN_LATEST),
            capture_content: capture.eq_ignore_ascii_case("true"),
        }
    }

    fn schema_version(&self) -> &'static str {
        if self.latest_experimental {
            sc::GENAI_SEMCONV_VERSION
        } else {
            sc::GENAI_SEMCONV_LEGACY_VERSION
        }
    }
}

/// The provider of a model, from its name, as a `gen_ai.provider.name` value.
pub fn provider_for(model: &str) -> &'static str {
    let m = model.to_ascii_lowercase();
    if m.starts_with("gpt") || m.starts_with("o1") || m.starts_with("o3") || m.starts_with("o4") {
        "openai"
    } else if m.starts_with("claude") {
        "anthropic"
    } else if m.starts_with("mistral") {
        "mistral_ai"
    } else if m.starts_with("deepseek") {
        "deepseek"
    } else {
        // Keel's scripted model and unknown OpenAI-compatible servers.
        "keel"
    }
}

fn span_id(id: EventId) -> SpanId {
    let (_, lo) = id.0.as_u64_pair();
    SpanId::from(if lo == 0 { 1 } else { lo })
}

fn root_span_id(exec: ExecId) -> SpanId {
    let (hi, lo) = exec.0.as_u64_pair();
    let v = hi ^ lo.rotate_left(17);
    SpanId::from(if v == 0 { 1 } else { v })
}

fn time(e: &Event) -> SystemTime {
    SystemTime::from(e.ts)
}

fn cost_attr(attrs: &mut Vec<KeyValue>, cost: Cost) {
    if let Some(m) = cost.micros() {
        attrs.push(KeyValue::new(sc::KEEL_COST_USD, m as f64 / 1e6));
    }
}

struct Open {
    id: SpanId,
    name: String,
    kind: SpanKind,
    start: SystemTime,
    attrs: Vec<KeyValue>,
}

/// Builds the spans of one execution from its events (in seq order). Returns nothing for an
/// execution without `exec.started`. Spans still open at the end (a call cut by a crash) end at
/// the last event with an error status.
pub fn spans(events: &[Event], conv: &Conventions) -> Vec<SpanData> {
    let Some(first) = events.first() else {
        return Vec::new();
    };
    let Payload::ExecStarted(started) = &first.payload else {
        return Vec::new();
    };
    let trace_id = TraceId::from_bytes(first.trace_id.0);
    let root = root_span_id(first.exec_id);
    let scope = InstrumentationScope::builder("keel")
        .with_version(env!("CARGO_PKG_VERSION"))
        .with_schema_url(format!(
            "https://opentelemetry.io/schemas/{}",
            conv.schema_version()
        ))
        .build();
    let provider_key = if conv.latest_experimental {
        sc::PROVIDER_NAME
    } else {
        sc::SYSTEM
    };
    let make = |id: SpanId, parent: SpanId, o: Open, end: SystemTime, status: Status| SpanData {
        span_context: SpanContext::new(trace_id, id, TraceFlags::SAMPLED, false, TraceState::NONE),
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: o.kind,
        name: o.name.into(),
        start_time: o.start,
        end_time: end,
        attributes: o.attrs,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    };
    let mut out = Vec::new();
    let mut open: HashMap<String, Open> = HashMap::new();
    let mut root_attrs = vec![
        KeyValue::new(sc::OPERATION_NAME, sc::op::INVOKE_AGENT),
        KeyValue::new(sc::AGENT_NAME, started.strategy_version.clone()),
        KeyValue::new(sc::AGENT_ID, started.strategy_version.clone()),
        KeyValue::new(sc::CONVERSATION_ID, first.exec_id.to_string()),
        KeyValue::new(sc::KEEL_EXEC_ID, first.exec_id.to_string()),
        KeyValue::new(sc::KEEL_TENANT, first.tenant.as_str().to_owned()),
        KeyValue::new(sc::KEEL_STRATEGY_VERSION, started.strategy_version.clone()),
    ];
    if let Some(of) = started.replay_of {
        root_attrs.push(KeyValue::new(sc::KEEL_REPLAY_OF, of.to_string()));
    }
    let mut root_status = Status::Unset;
    let mut root_end = time(events.last().unwrap_or(first));
    for e in events {
        match &e.payload {
            Payload::ModelCalled(p) => {
                open.insert(
                    format!("model:{}", p.call_id),
                    Open {
                        id: span_id(e.event_id),
                        name: format!("{} {}", sc::op::CHAT, p.model),
                        kind: SpanKind::Client,
                        start: time(e),
                        attrs: vec![
                            KeyValue::new(sc::OPERATION_NAME, sc::op::CHAT),
                            KeyValue::new(provider_key, provider_for(&p.model)),
                            KeyValue::new(sc::REQUEST_MODEL, p.model.clone()),
                            KeyValue::new(sc::KEEL_TENANT, e.tenant.as_str().to_owned()),
                        ],
                    },
                );
            }
            Payload::ModelResponded(p) => {
                if let Some(mut o) = open.remove(&format!("model:{}", p.call_id)) {
                    o.attrs
                        .push(KeyValue::new(sc::RESPONSE_MODEL, p.model.clone()));
                    o.attrs
                        .push(KeyValue::new(sc::USAGE_INPUT_TOKENS, p.tokens.input as i64));
                    o.attrs.push(KeyValue::new(
                        sc::USAGE_OUTPUT_TOKENS,
                        p.tokens.output as i64,
                    ));
                    cost_attr(&mut o.attrs, p.cost);
                    if let Some(m) = p.cost.micros() {
                        o.attrs
                            .push(KeyValue::new(sc::LLM_COST_TOTAL, m as f64 / 1e6));
                    }
                    let status = match &p.error {
                        Some(err) => {
                            o.attrs.push(KeyValue::new(sc::ERROR_TYPE, "invalid_reply"));
                            Status::error(err.clone())
                        }
                        None => Status::Unset,
                    };
                    out.push(make(o.id, root, o, time(e), status));
                }
            }
            Payload::ToolCalled(p) => {
                let mut attrs = vec![
                    KeyValue::new(sc::OPERATION_NAME, sc::op::EXECUTE_TOOL),
                    KeyValue::new(sc::TOOL_NAME, p.tool.clone()),
                    KeyValue::new(sc::TOOL_CALL_ID, p.call_id.clone()),
                    KeyValue::new(sc::TOOL_TYPE, "function"),
                    KeyValue::new(sc::KEEL_TENANT, e.tenant.as_str().to_owned()),
                ];
                if conv.capture_content {
                    attrs.push(KeyValue::new(sc::TOOL_CALL_ARGUMENTS, p.args.to_string()));
                }
                open.insert(
                    format!("tool:{}", p.call_id),
                    Open {
                        id: span_id(e.event_id),
                        name: format!("{} {}", sc::op::EXECUTE_TOOL, p.tool),
                        kind: SpanKind::Internal,
                        start: time(e),
                        attrs,
                    },
                );
            }
            Payload::ToolResult(p) => {
                if let Some(mut o) = open.remove(&format!("tool:{}", p.call_id)) {
                    let word = serde_json::to_value(p.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    o.attrs
                        .push(KeyValue::new(sc::KEEL_TOOL_STATUS, word.clone()));
                    cost_attr(&mut o.attrs, p.actual_cost);
                    let status = if p.status == ToolStatus::Ok {
                        Status::Unset
                    } else {
                        o.attrs.push(KeyValue::new(
                            sc::ERROR_TYPE,
                            p.error_class.clone().unwrap_or(word.clone()),
                        ));
                        Status::error(p.errors.join("; "))
                    };
                    out.push(make(o.id, root, o, time(e), status));
                }
            }
            // The GenAI conventions define retrieval spans only in their latest names; the
            // v1.36 names have none, so without the opt-in no span is made (decision 042).
            Payload::MemoryRetrieved(p) if conv.latest_experimental => {
                let mut attrs = vec![
                    KeyValue::new(sc::OPERATION_NAME, sc::op::RETRIEVAL),
                    KeyValue::new(sc::DATA_SOURCE_ID, p.memory_version.clone()),
                    KeyValue::new(sc::KEEL_RETRIEVAL_RECORD_COUNT, p.chunks.len() as i64),
                    KeyValue::new(sc::KEEL_MEMORY_VERSION, p.memory_version.clone()),
                    KeyValue::new(sc::KEEL_TENANT, e.tenant.as_str().to_owned()),
                ];
                if conv.capture_content {
                    attrs.push(KeyValue::new(sc::RETRIEVAL_QUERY_TEXT, p.query.clone()));
                    let documents: Vec<serde_json::Value> = p
                        .chunks
                        .iter()
                        .map(|c| serde_json::json!({"id": c.id, "score": c.score}))
                        .collect();
                    attrs.push(KeyValue::new(
                        sc::RETRIEVAL_DOCUMENTS,
                        serde_json::Value::Array(documents).to_string(),
                    ));
                }
                let o = Open {
                    id: span_id(e.event_id),
                    name: format!("{} {}", sc::op::RETRIEVAL, p.memory_version),
                    kind: SpanKind::Client,
                    start: time(e),
                    attrs,
                };
                out.push(make(o.id, root, o, time(e), Status::Unset));
            }
            Payload::GateRequested(p) => {
                let tool = p
                    .action
                    .get("tool")
                    .and_then(|t| t.as_str())
                    .unwrap_or_default()
                    .to_owned();
                open.insert(
                    format!("gate:{}", p.gate_id),
                    Open {
                        id: span_id(e.event_id),
                        name: format!("gate {}", p.gate_id),
                        kind: SpanKind::Internal,
                        start: time(e),
                        attrs: vec![
                            KeyValue::new(sc::KEEL_GATE_ID, p.gate_id.clone()),
                            KeyValue::new(sc::KEEL_CONSEQUENCE_TIER, i64::from(p.consequence_tier)),
                            KeyValue::new(sc::KEEL_GATE_TOOL, tool),
                            KeyValue::new(sc::KEEL_TENANT, e.tenant.as_str().to_owned()),
                        ],
                    },
                );
            }
            Payload::GateDecided(p) => {
                if let Some(mut o) = open.remove(&format!("gate:{}", p.gate_id)) {
                    let verdict = serde_json::to_value(p.verdict)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    o.attrs.push(KeyValue::new(sc::KEEL_GATE_VERDICT, verdict));
                    o.attrs
                        .push(KeyValue::new(sc::KEEL_GATE_APPROVER, p.approver.clone()));
                    out.push(make(o.id, root, o, time(e), Status::Unset));
                }
            }
            Payload::ExecFinished(p) => {
                let outcome = serde_json::to_value(p.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                root_attrs.push(KeyValue::new(sc::KEEL_OUTCOME, outcome.clone()));
                root_attrs.push(KeyValue::new(sc::KEEL_STEPS_N, i64::from(p.steps_n)));
                root_attrs.push(KeyValue::new(sc::USAGE_INPUT_TOKENS, p.tokens.input as i64));
                root_attrs.push(KeyValue::new(
                    sc::USAGE_OUTPUT_TOKENS,
                    p.tokens.output as i64,
                ));
                cost_attr(&mut root_attrs, p.cost);
                if outcome != "success" {
                    root_attrs.push(KeyValue::new(sc::ERROR_TYPE, outcome.clone()));
                    root_status = Status::error(format!("outcome {outcome}"));
                }
                root_end = time(e);
            }
            Payload::ExecCancelled(t) => {
                root_attrs.push(KeyValue::new(sc::KEEL_OUTCOME, "cancelled"));
                root_status = Status::error(t.reason.clone());
                root_end = time(e);
            }
            _ => {}
        }
    }
    // Calls cut by a crash or a cancel: end them where the execution ended.
    let mut cut: Vec<Open> = open.into_values().collect();
    cut.sort_by_key(|o| (o.start, u64::from_be_bytes(o.id.to_bytes())));
    for o in cut {
        out.push(make(
            o.id,
            root,
            o,
            root_end,
            Status::error("no result recorded"),
        ));
    }
    let root_open = Open {
        id: root,
        name: format!("{} {}", sc::op::INVOKE_AGENT, started.strategy_version),
        kind: SpanKind::Internal,
        start: time(first),
        attrs: root_attrs,
    };
    out.push(make(
        root,
        SpanId::INVALID,
        root_open,
        root_end,
        root_status,
    ));
    out
}

/// How long one export request may take when nothing says otherwise: the OpenTelemetry
/// exporter default (`OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A malformed OTLP header list (`key=value,key=value`): which entry (1-based) and why. It never
/// holds the entry's text, since header values are credentials.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("entry {entry}: {reason}")]
pub struct HeaderListError {
    /// The entry's position in the list, from 1.
    pub entry: usize,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses an OTLP header list as the OpenTelemetry exporter specification writes it
/// (`OTEL_EXPORTER_OTLP_HEADERS`): comma-separated `key=value` pairs, surrounding spaces
/// trimmed, values percent-decoded. Empty entries are skipped; an entry without `=`, with an
/// empty key or value, a bad percent escape, or a name or value HTTP does not allow is an error.
pub fn parse_headers(list: &str) -> std::result::Result<Vec<(String, String)>, HeaderListError> {
    let mut out = Vec::new();
    for (i, entry) in list.split(',').enumerate() {
        let fail = |reason| HeaderListError {
            entry: i + 1,
            reason,
        };
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let (key, value) = entry.split_once('=').ok_or(fail("no `=`"))?;
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || value.is_empty() {
            return Err(fail("empty name or value"));
        }
        let value = percent_decode(value).ok_or(fail("bad percent-encoding"))?;
        if reqwest::header::HeaderName::from_bytes(key.as_bytes()).is_err() {
            return Err(fail("not a valid header name"));
        }
        if reqwest::header::HeaderValue::from_str(&value).is_err() {
            return Err(fail("not a valid header value"));
        }
        out.push((key.to_ascii_lowercase(), value));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Sends spans to an OTLP/HTTP endpoint (full URL, e.g. `http://127.0.0.1:4318/v1/traces`).
pub struct OtlpSink {
    exporter: opentelemetry_otlp::SpanExporter,
    endpoint: String,
}

impl OtlpSink {
    /// An exporter for `endpoint` (protobuf over HTTP), with resource `service.name=keel`,
    /// sending `headers` (from [`parse_headers`]) with every request, each request bounded by
    /// `timeout`. The caller resolves all three (the CLI reads the standard variables).
    pub fn new(endpoint: &str, headers: Vec<(String, String)>, timeout: Duration) -> Result<Self> {
        let err = |detail: String| ObserveError::Otlp {
            endpoint: endpoint.to_owned(),
            detail,
        };
        // The workspace's reqwest leaves the TLS provider to the program: rustls with `ring`
        // (no C build), as the other HTTP clients do. Fails only if one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            // opentelemetry-otlp adds the standard header variables' pairs on its own as well
            // (and drops malformed ones silently), which is why callers parse them first.
            .with_headers(headers.into_iter().collect::<HashMap<_, _>>())
            .build()
            .map_err(|e| err(e.to_string()))?;
        exporter.set_resource(
            &opentelemetry_sdk::Resource::builder_empty()
                .with_service_name("keel")
                .build(),
        );
        Ok(Self {
            exporter,
            endpoint: endpoint.to_owned(),
        })
    }

    /// Sends one batch of spans; an error names the endpoint.
    pub async fn send(&self, spans: Vec<SpanData>) -> Result<()> {
        if spans.is_empty() {
            return Ok(());
        }
        self.exporter
            .export(spans)
            .await
            .map_err(|e| ObserveError::Otlp {
                endpoint: self.endpoint.clone(),
                detail: e.to_string(),
            })
    }
}

/// Exports every execution that ended at an offset in `from_offset..`; returns the next offset
/// to resume from and how many executions were sent. Ended executions are read whole from the
/// spine (`read`), so events before `from_offset` are included.
pub async fn export_ended(
    log: &dyn EventLog,
    sink: &OtlpSink,
    conv: &Conventions,
    from_offset: u64,
) -> Result<(u64, usize)> {
    let mut next = from_offset.max(1);
    let mut sent = 0usize;
    loop {
        let batch = log.read_all(next, crate::store::BATCH).await?;
        let Some(last) = batch.last().map(|c| c.offset) else {
            return Ok((next, sent));
        };
        let mut spans_out = Vec::new();
        for c in &batch {
            if c.event.event_type().is_terminal() && c.event.exec_id != CONTROL_STREAM {
                let events = log.read(c.event.exec_id, 1).await?;
                spans_out.extend(spans(&events, conv));
                sent += 1;
            }
        }
        sink.send(spans_out).await?;
        next = last + 1;
    }
}
