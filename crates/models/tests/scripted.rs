//! The scripted model: deterministic replies from a rule script, read from the conversation it
//! is sent, behind the same trait as the HTTP providers.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use keel_models::scripted::ScriptedModel;
use keel_models::{ChatRequest, FinishReason, Message, ModelProvider, ToolCall, ToolSpec};
use serde_json::json;

fn model() -> ScriptedModel {
    ScriptedModel::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/support.yaml"
    )))
    .unwrap()
}

fn tool(name: &str) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: format!("{name} tool"),
        input_schema: json!({"type": "object"}),
    }
}

fn request(goal: &str) -> ChatRequest {
    ChatRequest {
        model: "scripted-support-short".into(),
        messages: vec![
            Message::System {
                content: "Be brief.".into(),
            },
            Message::User {
                content: goal.into(),
            },
        ],
        tools: vec![tool("lookup_order"), tool("issue_customer_refund")],
        max_tokens: 200,
    }
}

fn answer(req: &mut ChatRequest, call: &ToolCall, result: serde_json::Value, is_error: bool) {
    req.messages.push(Message::Assistant {
        content: None,
        tool_calls: vec![call.clone()],
    });
    req.messages.push(Message::Tool {
        call_id: call.id.clone(),
        content: result.to_string(),
        is_error,
    });
}

#[tokio::test]
async fn a_refund_conversation_runs_the_script_step_by_step() {
    let m = model();
    let mut req = request("Please refund order 1023, it arrived broken");
    let r1 = m.chat(&req).await.unwrap();
    assert_eq!(r1.finish, FinishReason::ToolCalls);
    assert_eq!(
        r1.text.as_deref(),
        Some("Look up order 1023, then refund it.")
    );
    assert_eq!(r1.tool_calls[0].name, "lookup_order");
    assert_eq!(r1.tool_calls[0].arguments, json!({"order_id": "1023"}));
    assert_eq!(
        r1.model, "scripted-support-short",
        "replies echo the requested model"
    );

    answer(
        &mut req,
        &r1.tool_calls[0],
        json!({"order_id": "1023", "total_cents": 4599, "status": "delivered"}),
        false,
    );
    let r2 = m.chat(&req).await.unwrap();
    assert_eq!(r2.tool_calls[0].name, "issue_customer_refund");
    assert_eq!(r2.tool_calls[0].id, "call_2");
    assert_eq!(
        r2.tool_calls[0].arguments["amount_cents"],
        json!(4599),
        "a lone placeholder keeps its JSON type"
    );
    assert_eq!(
        r2.tool_calls[0].arguments["reason"],
        "customer asked: Please refund order 1023, it arrived broken"
    );
    assert_eq!(r2.usage.output, 60);
    assert!(
        r2.usage.input > r1.usage.input,
        "a longer conversation costs more input tokens"
    );

    answer(
        &mut req,
        &r2.tool_calls[0],
        json!({"refund_id": "R-7"}),
        false,
    );
    let r3 = m.chat(&req).await.unwrap();
    assert_eq!(r3.finish, FinishReason::Stop);
    assert_eq!(r3.text.as_deref(), Some("Refund R-7 issued."));
    assert!(
        r3.raw.contains("refund-done"),
        "the raw reply names the rule, for the trace"
    );
}

#[tokio::test]
async fn a_failed_tool_is_read_back_to_the_user() {
    let m = model();
    let mut req = request("refund 1044");
    let r1 = m.chat(&req).await.unwrap();
    answer(
        &mut req,
        &r1.tool_calls[0],
        json!({"error": "no such order"}),
        true,
    );
    let r2 = m.chat(&req).await.unwrap();
    assert_eq!(
        r2.text.as_deref(),
        Some("Sorry, that did not work: no such order")
    );
}

#[tokio::test]
async fn the_same_conversation_gets_the_same_reply() {
    let m = model();
    let req = request("refund order 1001");
    let (a, b) = (m.chat(&req).await.unwrap(), m.chat(&req).await.unwrap());
    assert_eq!(
        (a.text, a.tool_calls, a.usage, a.raw),
        (b.text, b.tool_calls, b.usage, b.raw)
    );
}

#[tokio::test]
async fn malformed_replies_and_unknown_tools_are_recoverable_errors() {
    let m = model();
    let err = m.chat(&request("garble this")).await.unwrap_err();
    assert!(
        err.is_recoverable() && err.to_string().contains("not valid JSON"),
        "{err}"
    );
    let err = m.chat(&request("delete everything now")).await.unwrap_err();
    assert!(
        err.is_recoverable() && err.to_string().contains("delete_all_orders"),
        "{err}"
    );
    let fallback = m.chat(&request("hello")).await.unwrap();
    assert_eq!(
        fallback.text.as_deref(),
        Some("I could not understand the request.")
    );
}

#[test]
fn bad_scripts_name_the_rule_and_field() {
    let cases = [
        ("rules: []", "at least one rule"),
        (
            "rules:\n  - name: r\n    when: { goal: '(' }\n    then: { text: x }",
            "rules[0] (r).when.goal: invalid regex",
        ),
        ("rules:\n  - then: {}", "rules[0].then: a rule must reply"),
        ("rules:\n  - then: { txet: x }", "txet"),
        ("model: m\nrules: 3", "rules"),
    ];
    for (text, want) in cases {
        let err = ScriptedModel::parse(text, "script.yaml").err().unwrap();
        let msg = err.to_string();
        assert!(
            msg.starts_with("script.yaml: ") && msg.contains(want),
            "{text:?} gave {msg}"
        );
    }
}

/// Regression (issue 12, item 21): a `"` or `\` in the goal broke a JSON reply written as a
/// `text` template; a `json:` reply is serialised, so whatever the customer typed stays valid.
#[tokio::test]
async fn a_json_reply_survives_quotes_backslashes_and_newlines_in_the_goal() {
    let m = ScriptedModel::parse(
        r#"
rules:
  - when: { goal: '(?i)policy says (?P<claim>[\s\S]+)' }
    then:
      json: { facts: [ { text: "The customer claims {claim}", n: "{goal}" } ] }
"#,
        "inline.yaml",
    )
    .unwrap();
    let goal = "Your policy says \"free\" shipping \\ always,\nand {braces} too";
    let r = m.chat(&request(goal)).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(r.text.as_deref().unwrap()).unwrap();
    assert_eq!(
        v["facts"][0]["text"],
        "The customer claims \"free\" shipping \\ always,\nand {braces} too"
    );
    assert_eq!(v["facts"][0]["n"], goal);
    // The demo's own script replies with `json:` for distillation.
    let demo = ScriptedModel::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/support.yaml"
    )))
    .unwrap();
    let mut req = request(
        "customer: Where is A-1007? Please always send me updates by e-mail. Also, your policy says \"shipping\" is free \\ always\n",
    );
    req.messages[0] = Message::System {
        content: "Distil durable facts from this support conversation.".into(),
    };
    let r = demo.chat(&req).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(r.text.as_deref().unwrap()).unwrap();
    assert_eq!(
        v["facts"][1]["text"],
        "The customer claims the policy says \"shipping\" is free \\ always"
    );
    let e = ScriptedModel::parse(
        "rules: [ { then: { text: a, json: { b: 1 } } } ]",
        "both.yaml",
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("rules[0].then"), "{e}");
}
