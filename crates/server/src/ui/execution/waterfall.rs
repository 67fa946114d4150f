//! The execution page's waterfall: an execution's events paired into spans (a model call from
//! `model.called` to `model.responded`, a tool call from `tool.called` to `tool.result`, a
//! retrieval, a gate from `gate.requested` to `gate.decided`), each placed on one time axis by
//! the events' timestamps, and laid out as rows of an inline SVG (geometry here, markup in
//! `templates/execution.html`). Pure: the events and "now" (for spans still open) go in, the
//! rows come out.

use chrono::{DateTime, Utc};
use keel_core::describe::dollars;
use keel_core::payload::{Payload, ToolStatus};
use keel_core::{Cost, Event};
use serde_json::Value;

/// What a span is; each kind has a colour and a legend entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Model,
    Tool,
    Retrieval,
    Gate,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [Kind::Model, Kind::Tool, Kind::Retrieval, Kind::Gate];

    /// The name the page, its CSS and its tests use.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Model => "model",
            Kind::Tool => "tool",
            Kind::Retrieval => "retrieval",
            Kind::Gate => "gate",
        }
    }

    pub(crate) fn legend(self) -> &'static str {
        match self {
            Kind::Model => "model call",
            Kind::Tool => "tool call",
            Kind::Retrieval => "memory retrieval",
            Kind::Gate => "approval gate",
        }
    }

    /// Fill colour (an SVG presentation attribute: the page's policy allows no inline style).
    pub(crate) fn colour(self) -> &'static str {
        match self {
            Kind::Model => "#4263eb",
            Kind::Tool => "#2b8a3e",
            Kind::Retrieval => "#ae3ec9",
            Kind::Gate => "#e8590c",
        }
    }
}

/// One input or output of a span: a blob fetched when opened, or JSON the event carries.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Io {
    /// A blob reference (`sha256:…`) an event of this execution carries.
    Blob(String),
    /// Pretty-printed JSON from the event itself.
    Inline(String),
}

/// One labelled input or output.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Part {
    pub(crate) name: &'static str,
    pub(crate) io: Io,
}

impl Part {
    /// The blob reference, if this part is stored as a blob.
    pub(crate) fn blob(&self) -> Option<&str> {
        match &self.io {
            Io::Blob(r) => Some(r),
            Io::Inline(_) => None,
        }
    }

    /// The JSON, if the event carries this part itself.
    pub(crate) fn inline(&self) -> Option<&str> {
        match &self.io {
            Io::Inline(j) => Some(j),
            Io::Blob(_) => None,
        }
    }
}

/// One span of the waterfall.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Span {
    pub(crate) kind: Kind,
    /// The seq of the event that opened it (the anchor `#span-SEQ`).
    pub(crate) seq: u64,
    pub(crate) step_n: u32,
    /// The model, the tool, the gated action's tool, or "memory".
    pub(crate) name: String,
    /// Milliseconds from the execution's first event.
    pub(crate) start_ms: i64,
    pub(crate) end_ms: i64,
    /// The latency the events report (a model's or tool's own figure, a gate's wait); for a
    /// retrieval, the time between the event before it and it.
    pub(crate) latency_ms: u64,
    pub(crate) tokens: Option<(u64, u64)>,
    pub(crate) cost: Option<Cost>,
    /// ok, error, rejected, …, approve / reject / expired, or "waiting" while open.
    pub(crate) status: String,
    pub(crate) parts: Vec<Part>,
}

impl Span {
    pub(crate) fn open(&self) -> bool {
        self.status == "waiting"
    }

    /// Ended badly: a failed call, a refused or rejected action.
    pub(crate) fn failed(&self) -> bool {
        matches!(
            self.status.as_str(),
            "error" | "rejected" | "invalid output" | "refused" | "reject" | "expired"
        )
    }

    /// "12 ms · 120/30 tokens · $0.000120", what the row shows beside its bar.
    pub(crate) fn figures(&self) -> String {
        let mut f = vec![duration(self.latency_ms)];
        if let Some((i, o)) = self.tokens {
            f.push(format!("{i}/{o} tokens"));
        }
        if let Some(c) = self.cost {
            f.push(dollars(c));
        }
        f.join(" · ")
    }
}

/// A latency as people read it: ms, s, min, h.
pub(crate) fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1e3),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1_000),
        _ => format!("{} h {} min", ms / 3_600_000, (ms % 3_600_000) / 60_000),
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn tool_status(s: ToolStatus) -> &'static str {
    match s {
        ToolStatus::Ok => "ok",
        ToolStatus::Error => "error",
        ToolStatus::Rejected => "rejected",
        ToolStatus::InvalidOutput => "invalid output",
        ToolStatus::Refused => "refused",
    }
}

/// Milliseconds from `t0` to `t`, never negative (a clock stepping back draws at zero).
fn since(t0: DateTime<Utc>, t: DateTime<Utc>) -> i64 {
    (t - t0).num_milliseconds().max(0)
}

/// The spans of one execution's events, in the order they opened. Spans still open at the last
/// event run to `now` (a gate waiting, a call in flight) and say "waiting".
pub(crate) fn spans(events: &[Event], now: DateTime<Utc>) -> Vec<Span> {
    let Some(t0) = events.first().map(|e| e.ts) else {
        return Vec::new();
    };
    let mut out: Vec<Span> = Vec::new();
    // The open span of a call or gate id: its index in `out`.
    let mut open: Vec<(Kind, String, usize)> = Vec::new();
    fn close(open: &mut Vec<(Kind, String, usize)>, kind: Kind, id: &str) -> Option<usize> {
        let at = open.iter().rposition(|(k, i, _)| *k == kind && i == id)?;
        Some(open.remove(at).2)
    }
    let mut previous_ts = t0;
    for e in events {
        let at = since(t0, e.ts);
        let span = |kind, name: &str, parts| Span {
            kind,
            seq: e.seq,
            step_n: e.step_n,
            name: name.to_owned(),
            start_ms: at,
            end_ms: at,
            latency_ms: 0,
            tokens: None,
            cost: None,
            status: "waiting".into(),
            parts,
        };
        match &e.payload {
            Payload::ModelCalled(c) => {
                let parts = c
                    .request_ref
                    .iter()
                    .map(|r| Part {
                        name: "request",
                        io: Io::Blob(r.clone()),
                    })
                    .collect();
                open.push((Kind::Model, c.call_id.clone(), out.len()));
                out.push(span(Kind::Model, &c.model, parts));
            }
            Payload::ModelResponded(r) => {
                let i = match close(&mut open, Kind::Model, &r.call_id) {
                    Some(i) => i,
                    // No `model.called` before it (older logs): it started `latency` earlier.
                    None => {
                        let mut s = span(Kind::Model, &r.model, Vec::new());
                        let latency = i64::try_from(r.latency_ms).unwrap_or(i64::MAX);
                        s.start_ms = at.saturating_sub(latency).max(0);
                        out.push(s);
                        out.len() - 1
                    }
                };
                if let Some(s) = out.get_mut(i) {
                    s.end_ms = at;
                    s.latency_ms = r.latency_ms;
                    s.tokens = Some((r.tokens.input, r.tokens.output));
                    s.cost = Some(r.cost);
                    s.status = if r.error.is_some() { "error" } else { "ok" }.into();
                    if let Some(reply) = &r.response_ref {
                        s.parts.push(Part {
                            name: "reply",
                            io: Io::Blob(reply.clone()),
                        });
                    }
                }
            }
            Payload::ToolCalled(c) => {
                let name = if c.attempt > 1 {
                    format!("{} (attempt {})", c.tool, c.attempt)
                } else {
                    c.tool.clone()
                };
                open.push((Kind::Tool, c.call_id.clone(), out.len()));
                let mut s = span(
                    Kind::Tool,
                    &name,
                    vec![Part {
                        name: "input",
                        io: Io::Inline(pretty(&c.args)),
                    }],
                );
                s.cost = Some(c.est_cost);
                out.push(s);
            }
            Payload::ToolResult(r) => {
                let i = match close(&mut open, Kind::Tool, &r.call_id) {
                    Some(i) => i,
                    None => {
                        out.push(span(Kind::Tool, &r.tool, Vec::new()));
                        out.len() - 1
                    }
                };
                if let Some(s) = out.get_mut(i) {
                    s.end_ms = at;
                    s.latency_ms = r.latency_ms;
                    s.cost = Some(r.actual_cost);
                    s.status = tool_status(r.status).into();
                    if let Some(o) = &r.output_ref {
                        s.parts.push(Part {
                            name: "output",
                            io: Io::Blob(o.clone()),
                        });
                    }
                    if !r.errors.is_empty() {
                        s.parts.push(Part {
                            name: "errors",
                            io: Io::Inline(pretty(&serde_json::json!(r.errors))),
                        });
                    }
                }
            }
            Payload::MemoryRetrieved(m) => {
                // The event is recorded once the retrieval returns; it began after the event
                // before it.
                let mut s = span(
                    Kind::Retrieval,
                    "memory",
                    vec![
                        Part {
                            name: "query",
                            io: Io::Inline(pretty(&Value::String(m.query.clone()))),
                        },
                        Part {
                            name: "memories",
                            io: Io::Inline(pretty(
                                &serde_json::to_value(&m.chunks).unwrap_or_default(),
                            )),
                        },
                    ],
                );
                s.start_ms = since(t0, previous_ts);
                s.latency_ms = u64::try_from(at - s.start_ms).unwrap_or(0);
                s.status = format!("{} memories", m.chunks.len());
                out.push(s);
            }
            Payload::GateRequested(g) => {
                let tool = g.action["tool"].as_str().unwrap_or("action");
                open.push((Kind::Gate, g.gate_id.clone(), out.len()));
                out.push(span(
                    Kind::Gate,
                    &format!("{tool} (tier {})", g.consequence_tier),
                    vec![Part {
                        name: "action",
                        io: Io::Inline(pretty(&g.action)),
                    }],
                ));
            }
            Payload::GateDecided(d) => {
                if let Some(s) =
                    close(&mut open, Kind::Gate, &d.gate_id).and_then(|i| out.get_mut(i))
                {
                    s.end_ms = at;
                    s.latency_ms = d.latency_ms;
                    s.status = d.verdict.as_str().into();
                    s.parts.push(Part {
                        name: "decision",
                        io: Io::Inline(pretty(&serde_json::json!({
                            "verdict": d.verdict.as_str(),
                            "approver": d.approver,
                            "reason": d.reason,
                        }))),
                    });
                }
            }
            _ => {}
        }
        previous_ts = e.ts;
    }
    // Still open: running up to now.
    let now_ms = since(t0, now).max(since(t0, previous_ts));
    for (_, _, i) in open {
        if let Some(s) = out.get_mut(i) {
            s.end_ms = now_ms;
            s.latency_ms = u64::try_from(now_ms - s.start_ms).unwrap_or(0);
        }
    }
    out
}

/// Width of the SVG's coordinate space; it scales to the page.
pub(crate) const WIDTH: f64 = 1000.0;
const LABEL_W: f64 = 250.0;
const TRACK_W: f64 = 480.0;
const ROW_H: f64 = 22.0;
const TOP: f64 = 26.0;
/// Narrowest bar drawn, so an instant call still shows.
const MIN_BAR: f64 = 3.0;

/// One row of the SVG.
pub(crate) struct Row {
    pub(crate) span: Span,
    pub(crate) y: f64,
    pub(crate) text_y: f64,
    pub(crate) x: f64,
    pub(crate) w: f64,
    /// Where the figures start (right of the track).
    pub(crate) figures_x: f64,
    pub(crate) label: String,
}

/// A tick of the time axis.
pub(crate) struct Tick {
    pub(crate) x: f64,
    pub(crate) label: String,
}

/// The whole drawing.
pub(crate) struct Drawing {
    pub(crate) rows: Vec<Row>,
    pub(crate) ticks: Vec<Tick>,
    pub(crate) height: f64,
    pub(crate) axis_y: f64,
    pub(crate) track_x: f64,
    pub(crate) track_end: f64,
    pub(crate) legend_y: f64,
    /// The legend: every kind, with its colour and how many spans of it there are.
    pub(crate) legend: Vec<(Kind, f64, usize)>,
}

/// Rounds a coordinate to a tenth, so the markup stays short.
fn tenth(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Shortens a label to `max` characters, with an ellipsis (by characters, never bytes).
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Lays `spans` out: one row each, bars scaled so the latest end meets the track's end.
pub(crate) fn draw(spans: Vec<Span>) -> Drawing {
    let total = spans.iter().map(|s| s.end_ms).max().unwrap_or(0).max(1) as f64;
    let scale = TRACK_W / total;
    let legend = Kind::ALL
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let n = spans.iter().filter(|s| s.kind == *k).count();
            (*k, 10.0 + 200.0 * i as f64, n)
        })
        .collect();
    let rows: Vec<Row> = spans
        .into_iter()
        .enumerate()
        .map(|(i, span)| {
            let y = TOP + ROW_H * i as f64;
            let x = LABEL_W + span.start_ms as f64 * scale;
            let w = ((span.end_ms - span.start_ms) as f64 * scale).max(MIN_BAR);
            let label = clip(
                &format!(
                    "{} · step {} · {}",
                    span.kind.as_str(),
                    span.step_n,
                    span.name
                ),
                36,
            );
            Row {
                y: y + 4.0,
                text_y: y + 15.0,
                x: tenth(x.min(LABEL_W + TRACK_W - MIN_BAR)),
                w: tenth(w),
                figures_x: LABEL_W + TRACK_W + 8.0,
                label,
                span,
            }
        })
        .collect();
    let ticks = (0..=4)
        .map(|i| {
            let frac = f64::from(i) / 4.0;
            Tick {
                x: tenth(LABEL_W + TRACK_W * frac),
                label: duration((total * frac).round() as u64),
            }
        })
        .collect();
    let body = TOP + ROW_H * rows.len() as f64;
    Drawing {
        rows,
        ticks,
        axis_y: 16.0,
        track_x: LABEL_W,
        track_end: LABEL_W + TRACK_W,
        legend_y: body + 14.0,
        height: body + 30.0,
        legend,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::payload::*;
    use keel_core::{EventId, ExecId, Tokens, TraceId};
    use uuid::Uuid;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_780_000_000_000 + ms).unwrap()
    }

    fn ev(seq: u64, ms: i64, payload: Payload) -> Event {
        Event {
            event_id: EventId(Uuid::nil()),
            exec_id: ExecId(Uuid::nil()),
            tenant: "acme".into(),
            seq,
            ts: at(ms),
            trace_id: TraceId([0; 16]),
            step_n: 1,
            schema_version: 1,
            payload,
        }
    }

    #[test]
    fn calls_pair_up_by_id_and_a_waiting_gate_runs_to_now() {
        let events = vec![
            ev(
                1,
                0,
                Payload::StepCompleted(StepCompleted { summary: None }),
            ),
            ev(
                2,
                10,
                Payload::MemoryRetrieved(MemoryRetrieved {
                    query: "order 1001".into(),
                    chunks: vec![],
                    memory_version: "m1".into(),
                }),
            ),
            ev(
                3,
                20,
                Payload::ModelCalled(ModelCalled {
                    call_id: "m1".into(),
                    model: "gpt".into(),
                    prompt_version: None,
                    request_ref: Some("sha256:aa".into()),
                }),
            ),
            ev(
                4,
                120,
                Payload::ModelResponded(ModelResponded {
                    call_id: "m1".into(),
                    model: "gpt".into(),
                    tokens: Tokens {
                        input: 100,
                        output: 20,
                    },
                    cost: Cost::Known(120),
                    latency_ms: 99,
                    response_ref: Some("sha256:bb".into()),
                    error: None,
                }),
            ),
            ev(
                5,
                130,
                Payload::GateRequested(GateRequested {
                    gate_id: "g1".into(),
                    action: serde_json::json!({"tool": "refund"}),
                    consequence_tier: 3,
                    evidence_pack: Value::Null,
                    reason: String::new(),
                    queue: "q".into(),
                    deadline_ms: None,
                    expire_after_ms: None,
                    during_call: None,
                    elicitation: None,
                }),
            ),
        ];
        let s = spans(&events, at(1_130));
        let kinds: Vec<_> = s.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [Kind::Retrieval, Kind::Model, Kind::Gate]);
        assert_eq!((s[0].start_ms, s[0].end_ms, s[0].latency_ms), (0, 10, 10));
        assert_eq!((s[1].start_ms, s[1].end_ms, s[1].latency_ms), (20, 120, 99));
        assert_eq!(s[1].tokens, Some((100, 20)));
        let refs: Vec<_> = s[1].parts.iter().map(|p| p.name).collect();
        assert_eq!(refs, ["request", "reply"]);
        assert!(s[2].open(), "{:?}", s[2]);
        assert_eq!((s[2].end_ms, s[2].latency_ms), (1_130, 1_000));
        assert_eq!(s[2].name, "refund (tier 3)");

        let d = draw(s);
        assert_eq!(d.rows.len(), 3);
        let gate = &d.rows[2];
        assert!(
            (gate.x + gate.w - d.track_end).abs() < 0.2,
            "the latest end meets the track end"
        );
        assert!(d.rows[1].w >= MIN_BAR);
        assert_eq!(
            d.legend.iter().map(|l| l.2).collect::<Vec<_>>(),
            [1, 0, 1, 1]
        );
    }

    #[test]
    fn a_retry_is_its_own_span_and_a_refusal_is_drawn_failed() {
        let called = |seq, ms, attempt| {
            ev(
                seq,
                ms,
                Payload::ToolCalled(ToolCalled {
                    call_id: "t1".into(),
                    tool: "lookup_order".into(),
                    args: serde_json::json!({"order_id": "A-1001"}),
                    idempotency_key: None,
                    est_cost: Cost::Known(100),
                    attempt,
                }),
            )
        };
        let result = |seq, ms, status| {
            ev(
                seq,
                ms,
                Payload::ToolResult(ToolResult {
                    call_id: "t1".into(),
                    tool: "lookup_order".into(),
                    status,
                    output_ref: None,
                    actual_cost: Cost::Known(0),
                    latency_ms: 5,
                    error_class: Some("timeout".into()),
                    errors: vec!["timed out".into()],
                }),
            )
        };
        let events = vec![
            called(1, 0, 1),
            result(2, 5, ToolStatus::Error),
            called(3, 10, 2),
            result(4, 15, ToolStatus::Refused),
            // A reply whose call was never recorded (older logs) starts its latency earlier.
            ev(
                5,
                100,
                Payload::ModelResponded(ModelResponded {
                    call_id: "m9".into(),
                    model: "gpt".into(),
                    tokens: Tokens::default(),
                    cost: Cost::Unknown,
                    latency_ms: 40,
                    response_ref: None,
                    error: Some("overloaded".into()),
                }),
            ),
        ];
        let s = spans(&events, at(100));
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "lookup_order");
        assert_eq!(s[1].name, "lookup_order (attempt 2)");
        assert_eq!((s[1].start_ms, s[1].end_ms), (10, 15));
        assert!(s.iter().all(Span::failed), "{s:?}");
        assert_eq!(
            s[1].parts.iter().map(|p| p.name).collect::<Vec<_>>(),
            ["input", "errors"]
        );
        assert_eq!((s[2].start_ms, s[2].end_ms), (60, 100));
        assert_eq!(s[2].figures(), "40 ms · 0/0 tokens · unknown");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(12), "12 ms");
        assert_eq!(duration(1_500), "1.5 s");
        assert_eq!(duration(61_000), "1 min 1 s");
        assert_eq!(duration(3_720_000), "1 h 2 min");
        assert_eq!(clip("héllo wörld", 6), "héllo…");
    }
}
