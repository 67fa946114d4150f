//! The approval queue page (`/ui/gates`): each pending gate as a card with its evidence — the
//! tool outputs that led to the action, earlier actions of the tenant on the same object, the
//! subject's history, the strategy's record at the tier (see [`keel_runtime::evidence`]) — and
//! approve / reject in one click with a reason picked from recent ones or typed. Keyboard
//! shortcuts come from `/ui/gates.js` (a file: the CSP allows no inline script).

use super::{principal, render, who};
use crate::api::decide_gate;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::{Caller, State};
use askama::Template;
use axum::Form;
use axum::extract::Path;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use keel_core::payload::Verdict;
use keel_runtime::gates::GateView;
use keel_spine::clock::{Clock, SystemClock};
use serde::Deserialize;
use serde_json::Value;

/// Pending gates shown with their evidence on one page (the oldest first); the count shows all.
const CARDS: usize = 25;
/// Recent distinct reasons offered to pick from.
const RECENT_REASONS: usize = 8;

/// A tool output or result as a card shows it.
struct ToolLine {
    head: String,
    output: String,
    note: String,
}

/// An earlier action on the same object.
struct EarlierLine {
    head: String,
    exec_id: String,
    output: String,
}

struct GateCard {
    gate_id: String,
    exec_id: String,
    tier: u8,
    tool: String,
    queue: String,
    escalated: bool,
    goal: String,
    reason: String,
    action: String,
    contract: String,
    reasoning: Vec<String>,
    tools: Vec<ToolLine>,
    objects: String,
    earlier: Vec<EarlierLine>,
    /// Set when more executions named the object than were read.
    earlier_more: String,
    subject: String,
    record: String,
    memory: Vec<String>,
    cost: String,
    waited: String,
    /// An MCP server's question during the call: its message, the schema of the answer, and a
    /// starting input for the box (the schema's defaults); empty for other gates.
    asks: String,
    asks_schema: String,
    asks_input: String,
}

fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A rendered output (`{text, more_chars}`, `{erased}`, `{unavailable}`, `{none}`): the text
/// and a note under it.
fn shown(o: &Value) -> (String, String) {
    if o["erased"] == true {
        return (String::new(), "output erased with its subject".into());
    }
    if let Some(why) = o["unavailable"].as_str() {
        return (String::new(), why.to_owned());
    }
    let more = o["more_chars"].as_u64().unwrap_or(0);
    let note = if more > 0 {
        format!("… {more} more characters (open the execution for all of it)")
    } else {
        String::new()
    };
    (s(&o["text"]), note)
}

/// `{"order_id":"A-1"}` as `order_id A-1`.
fn args_line(args: &Value) -> String {
    match args.as_object() {
        Some(m) => m
            .iter()
            .map(|(k, v)| format!("{k} {}", s(v)))
            .collect::<Vec<_>>()
            .join(", "),
        None => s(args),
    }
}

fn when(v: &Value) -> String {
    s(v).chars().take(19).collect::<String>().replace('T', " ")
}

fn card(g: &GateView, ev: &Value) -> GateCard {
    let p = &g.evidence_pack;
    let reasoning = p["reasoning"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|r| match r["kind"].as_str() {
                    Some("plan") => format!("step {}: plan — {}", r["step"], s(&r["text"])),
                    _ => format!(
                        "step {}: {} answered ({} in / {} out tokens, {} ms)",
                        r["step"],
                        s(&r["model"]),
                        r["tokens_in"],
                        r["tokens_out"],
                        r["latency_ms"]
                    ),
                })
                .collect()
        })
        .unwrap_or_default();
    let memory = p["memory"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|c| {
                    format!(
                        "{} (score {}) — provenance {}",
                        s(&c["id"]),
                        c["score"],
                        c["provenance"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let tools = ev["tool_results"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|r| {
                    let (output, note) = shown(&r["output"]);
                    let errors = r["errors"]
                        .as_array()
                        .map(|e| e.iter().map(s).collect::<Vec<_>>().join("; "))
                        .unwrap_or_default();
                    ToolLine {
                        head: format!(
                            "step {}: {}({}) → {}{}",
                            r["step"],
                            s(&r["tool"]),
                            args_line(&r["input"]),
                            s(&r["status"]),
                            if errors.is_empty() {
                                String::new()
                            } else {
                                format!(": {errors}")
                            }
                        ),
                        output,
                        note,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let earlier = ev["earlier_actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    let head = if x["kind"] == "gate" {
                        let by = match x["approver"].as_str() {
                            Some(a) => format!(" by {a}"),
                            None => String::new(),
                        };
                        let why = match x["reason"].as_str() {
                            Some(r) if !r.is_empty() => format!(": {r}"),
                            _ => String::new(),
                        };
                        format!(
                            "{} · {}({}) · gate {}{by}{why}",
                            when(&x["at"]),
                            s(&x["tool"]),
                            args_line(&x["args"]),
                            s(&x["decision"])
                        )
                    } else {
                        let by = match x["approved_by"].as_str() {
                            Some(a) => format!(" · approved by {a}"),
                            None => String::new(),
                        };
                        format!(
                            "{} · {}({}) → {}{by}",
                            when(&x["at"]),
                            s(&x["tool"]),
                            args_line(&x["args"]),
                            s(&x["status"])
                        )
                    };
                    let (output, note) = shown(&x["output"]);
                    EarlierLine {
                        head,
                        exec_id: s(&x["exec_id"]),
                        output: if output.is_empty() { note } else { output },
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let (named, read) = (
        ev["earlier_executions"]["named_the_object"]
            .as_u64()
            .unwrap_or(0),
        ev["earlier_executions"]["read"].as_u64().unwrap_or(0),
    );
    let earlier_more = if named > read {
        format!("{named} executions named it; the {read} most recent are listed")
    } else {
        String::new()
    };
    let h = &ev["subject_history"];
    let subject = match h["subject"].as_str() {
        None => "no data subject named".into(),
        Some(who) => {
            let outcomes = h["outcomes"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| format!("{v} {k}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let last = h["recent"]
                .as_array()
                .and_then(|r| r.first())
                .map(|x| {
                    format!(
                        "; last: {} ({}, {})",
                        s(&x["goal"]),
                        s(&x["status"]),
                        when(&x["started_at"])
                    )
                })
                .unwrap_or_default();
            format!(
                "{who}: {} other execution(s){}, ${} spent, {} gate(s){last}",
                h["executions"],
                if outcomes.is_empty() {
                    String::new()
                } else {
                    format!(" ({outcomes})")
                },
                h["cost_usd"],
                h["gates"]
            )
        }
    };
    let r = &ev["strategy_record"];
    let record = format!(
        "{} at tier {}: {} approved, {} rejected{}, {} expired, {} pending",
        s(&r["strategy_version"]),
        r["tier"],
        r["approved"],
        r["rejected"],
        match r["approval_rate"].as_f64() {
            Some(x) => format!(" ({:.0} % approved)", x * 100.0),
            None => " (no decisions yet)".into(),
        },
        r["expired"],
        r["pending"]
    );
    let objects = ev["objects"]
        .as_array()
        .map(|o| o.iter().map(s).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    let contract = &p["contract"];
    GateCard {
        gate_id: g.gate_id.clone(),
        exec_id: g.exec_id.to_string(),
        tier: g.consequence_tier,
        tool: s(&g.action["tool"]),
        queue: g.queue.clone(),
        escalated: g.escalated,
        goal: s(&p["goal"]),
        reason: g.reason.clone(),
        action: serde_json::to_string_pretty(&g.action).unwrap_or_default(),
        contract: format!(
            "{} — {} (side effect: {})",
            s(&contract["name"]),
            s(&contract["description"]),
            s(&contract["side_effect"])
        ),
        reasoning,
        tools,
        objects,
        earlier,
        earlier_more,
        subject,
        record,
        memory,
        cost: format!(
            "${} · {} steps · {} tokens",
            p["cost_so_far"]["usd"],
            p["cost_so_far"]["steps"],
            p["cost_so_far"]["tokens_in"].as_u64().unwrap_or(0)
                + p["cost_so_far"]["tokens_out"].as_u64().unwrap_or(0)
        ),
        waited: ago((SystemClock.now() - g.requested_at).num_milliseconds()),
        asks: g
            .elicitation
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default(),
        asks_schema: g
            .elicitation
            .as_ref()
            .and_then(|e| serde_json::to_string_pretty(&e.requested_schema).ok())
            .unwrap_or_default(),
        asks_input: g
            .elicitation
            .as_ref()
            .map(|e| {
                // Each property's default, as the box's starting answer.
                let defaults: serde_json::Map<String, Value> = e.requested_schema["properties"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, p)| Some((k.clone(), p.get("default")?.clone())))
                    .collect();
                Value::Object(defaults).to_string()
            })
            .unwrap_or_default(),
    }
}

struct DecidedRow {
    at: String,
    tool: String,
    verdict: String,
    approver: String,
    reason: String,
    latency: String,
    exec_id: String,
}

#[derive(Template)]
#[template(path = "gates.html")]
struct GatesPage {
    title: &'static str,
    refresh: bool,
    who: String,
    flash: String,
    pending_n: usize,
    pending: Vec<GateCard>,
    decided: Vec<DecidedRow>,
    reviews: Vec<(String, String, String)>,
    reasons: Vec<String>,
    csrf: String,
}

pub(super) async fn page(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
) -> Response {
    let p = match principal(&state, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    view(&state, &p, &headers, String::new()).await
}

/// The keyboard shortcuts: j / k move between gates, a approves, r rejects (asking for a reason
/// first when none is picked or typed), 1–9 pick a recent reason, / types one.
pub(super) async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../templates/gates.js"),
    )
        .into_response()
}

async fn view(state: &State, p: &Principal, headers: &HeaderMap, flash: String) -> Response {
    let (pending, decided, reviews, reasons) = {
        let book = match state.approvals.book().await {
            Ok(b) => b,
            Err(e) => return ApiError::from(e).into_response(),
        };
        let pending: Vec<GateView> = book.pending(Some(&p.tenant)).into_iter().cloned().collect();
        let mut decided: Vec<&GateView> = book
            .gates
            .values()
            .filter(|g| g.tenant == p.tenant && g.decision.is_some())
            .collect();
        decided.sort_by_key(|g| std::cmp::Reverse(g.decision.as_ref().map(|d| d.at)));
        let mut reasons: Vec<String> = Vec::new();
        for g in &decided {
            if let Some(d) = &g.decision
                && d.verdict != Verdict::Expired
                && !d.reason.trim().is_empty()
                && !reasons.contains(&d.reason)
                && reasons.len() < RECENT_REASONS
            {
                reasons.push(d.reason.clone());
            }
        }
        let decided: Vec<DecidedRow> = decided
            .into_iter()
            .take(20)
            .filter_map(|g| {
                let d = g.decision.as_ref()?;
                Some(DecidedRow {
                    at: d.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    tool: g.action["tool"].as_str().unwrap_or("?").to_owned(),
                    verdict: d.verdict.as_str().into(),
                    approver: d.approver.clone(),
                    reason: d.reason.clone(),
                    latency: ago(d.latency_ms as i64),
                    exec_id: g.exec_id.to_string(),
                })
            })
            .collect();
        let reviews: Vec<(String, String, String)> = book
            .reviews
            .iter()
            .rev()
            .filter(|r| r.tenant == p.tenant)
            .take(20)
            .map(|r| {
                (
                    r.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    r.tool.clone(),
                    r.exec_id.to_string(),
                )
            })
            .collect();
        (pending, decided, reviews, reasons)
    };
    let pending_n = pending.len();
    let mut cards = Vec::new();
    let mut reads = keel_runtime::evidence::Reads::default();
    for g in pending.iter().take(CARDS) {
        let ev = match keel_runtime::evidence::assemble_with(
            &state.agent,
            &state.approvals,
            g,
            &mut reads,
        )
        .await
        {
            Ok(ev) => ev,
            Err(e) => return ApiError::from(e).into_response(),
        };
        cards.push(card(g, &ev));
    }
    render(&GatesPage {
        title: "Approval queue",
        refresh: false,
        who: who(p),
        flash,
        pending_n,
        pending: cards,
        decided,
        reviews,
        reasons,
        csrf: crate::web::csrf_of(headers),
    })
}

#[derive(Deserialize)]
pub(super) struct DecisionForm {
    #[serde(default)]
    verdict: String,
    /// Typed.
    #[serde(default)]
    reason: String,
    /// Picked from the recent reasons (a typed one wins).
    #[serde(default)]
    preset: String,
    /// The answer to an MCP server's question, as JSON (gates during a call).
    #[serde(default)]
    input: String,
}

pub(super) async fn decide(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<DecisionForm>,
) -> Response {
    let p = match principal(&state, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let verdict = match f.verdict.as_str() {
        "approve" => Verdict::Approve,
        "reject" => Verdict::Reject,
        other => {
            return view(
                &state,
                &p,
                &headers,
                format!("verdict {other:?}: choose approve or reject"),
            )
            .await;
        }
    };
    let reason = match f.reason.trim() {
        "" => f.preset.trim(),
        typed => typed,
    };
    if verdict == Verdict::Reject && reason.is_empty() {
        return view(
            &state,
            &p,
            &headers,
            "Give a reason to reject: the agent is told it.".into(),
        )
        .await;
    }
    let input = match f.input.trim() {
        "" => None,
        text => match serde_json::from_str::<Value>(text) {
            Ok(v) => Some(v),
            Err(e) => {
                let why = format!("The input is not JSON: {e}");
                return view(&state, &p, &headers, why).await;
            }
        },
    };
    let caller = Caller(p.clone());
    match decide_gate(&state, &caller, &id, verdict, reason, input).await {
        Ok(v) => {
            let exec = v["exec_id"].as_str().unwrap_or_default();
            Redirect::to(&format!("/ui/executions/{exec}")).into_response()
        }
        Err(e) => view(&state, &p, &headers, e.to_string()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gate(pack: Value, action: Value) -> GateView {
        GateView {
            gate_id: "g1".into(),
            exec_id: keel_core::ExecId(uuid::Uuid::from_u128(1)),
            tenant: "acme".into(),
            trace_id: keel_core::TraceId([1; 16]),
            strategy_version: "s/v1".into(),
            queue: "default".into(),
            consequence_tier: 3,
            action,
            reason: "tier 3".into(),
            evidence_pack: pack,
            requested_at: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
            deadline_ms: None,
            expire_after_ms: None,
            escalated: false,
            decision: None,
            closed: false,
            replay: false,
            during_call: None,
            elicitation: None,
        }
    }

    fn page(cards: Vec<GateCard>) -> String {
        GatesPage {
            title: "Approval queue",
            refresh: false,
            who: String::new(),
            flash: String::new(),
            pending_n: cards.len(),
            pending: cards,
            decided: Vec::new(),
            reviews: Vec::new(),
            reasons: vec!["<b>late</b>".into()],
            csrf: String::new(),
        }
        .render()
        .unwrap_or_default()
    }

    #[test]
    fn tool_outputs_and_reasons_are_escaped() {
        let ev = json!({
            "objects": ["order_id=A-1"],
            "tool_results": [{"step": 0, "tool": "lookup_order", "status": "ok",
                "input": {"order_id": "A-1"},
                "output": {"text": "{\"note\": \"<script>alert(1)</script>\"}", "more_chars": 12}}],
            "earlier_actions": [{"kind": "call", "exec_id": "x", "at": "2026-01-01T00:00:00Z",
                "tool": "refund", "args": {"order_id": "<i>A-1</i>"}, "status": "ok",
                "output": {"text": "<img src=x onerror=alert(2)>", "more_chars": 0}}],
        });
        let g = gate(
            json!({"goal": "refund <b>now</b>"}),
            json!({"tool": "refund"}),
        );
        let html = page(vec![card(&g, &ev)]);
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{html}"
        );
        assert!(!html.contains("<script>alert") && !html.contains("<img src=x"));
        assert!(!html.contains("<b>now</b>") && !html.contains("<b>late</b>"));
        assert!(html.contains("12 more characters"));
    }

    #[test]
    fn an_erased_pack_and_an_empty_evidence_render() {
        let erased = json!("[erased]");
        let g = gate(erased.clone(), erased.clone());
        let ev = json!({"tool_results": [{"tool": "lookup_order", "status": "ok",
            "input": erased, "output": {"erased": true}}], "memory": "[erased]"});
        let html = page(vec![card(&g, &ev), card(&g, &Value::Null)]);
        assert!(html.contains("output erased with its subject"), "{html}");
        assert!(html.contains("no data subject named"));
    }

    #[test]
    fn a_servers_question_shows_its_message_schema_and_an_answer_box() {
        let mut g = gate(json!({}), json!({"tool": "refund", "during_call": "c1"}));
        g.during_call = Some("c1".into());
        g.elicitation = Some(keel_core::payload::Elicitation {
            message: "How much <b>do</b> you approve?".into(),
            requested_schema: json!({"type": "object", "properties": {
                "approved_amount": {"type": "number", "default": 10}}}),
        });
        let html = page(vec![card(&g, &Value::Null)]);
        assert!(html.contains("The tool's server asks"), "{html}");
        assert!(html.contains("How much &#60;b&#62;do&#60;/b&#62; you approve?"));
        assert!(html.contains("approved_amount"));
        assert!(html.contains(r#"<textarea name="input""#));
        // The box starts from the schema's defaults.
        assert!(html.contains("{&#34;approved_amount&#34;:10}"), "{html}");
        // An ordinary gate has no answer box.
        let plain = page(vec![card(
            &gate(json!({}), json!({"tool": "refund"})),
            &Value::Null,
        )]);
        assert!(!plain.contains(r#"name="input""#));
    }
}
