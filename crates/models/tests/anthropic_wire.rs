//! The Anthropic provider against a real local server replaying Anthropic's wire format.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Canned, fixture, start};
use keel_models::anthropic::{API_VERSION, Anthropic, AnthropicConfig};
use keel_models::http::RetryPolicy;
use keel_models::{
    ChatRequest, FinishReason, Message, ModelError, ModelProvider, ToolCall, ToolSpec,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

// The variable the strategy names, answered by the test's own secret source.
const KEY_VAR: &str = "KEEL_TEST_ANTHROPIC_KEY";
const KEY: &str = "sk-ant-test-0123456789abcdef";

fn provider(base: &str, attempts: u32) -> Anthropic {
    Anthropic::new(
        AnthropicConfig {
            base_url: base.into(),
            api_key_env: KEY_VAR.into(),
            retry: RetryPolicy {
                timeout: Duration::from_millis(400),
                max_attempts: attempts,
                base_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(50),
            },
        },
        &secrets(),
    )
    .unwrap()
}

fn secrets() -> BTreeMap<String, String> {
    BTreeMap::from([(KEY_VAR.to_owned(), KEY.to_owned())])
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "claude-sonnet-4-5".into(),
        messages: vec![
            Message::System {
                content: "You are a support agent.".into(),
            },
            Message::User {
                content: "Where is order 1017?".into(),
            },
        ],
        tools: vec![ToolSpec {
            name: "lookup_order".into(),
            description: "Look up an order".into(),
            input_schema: json!({"type": "object", "properties": {"order_id": {"type": "string"}}}),
        }],
        max_tokens: 512,
    }
}

#[tokio::test]
async fn a_tool_use_reply_is_parsed_and_the_request_is_in_anthropic_shape() {
    let server = start(vec![Canned::ok(&fixture("anthropic/tool_use.json"))]).await;
    let mut req = request();
    req.messages.push(Message::Assistant {
        content: Some("Checking two orders.".into()),
        tool_calls: vec![
            ToolCall {
                id: "toolu_1".into(),
                name: "lookup_order".into(),
                arguments: json!({"order_id": "1016"}),
            },
            ToolCall {
                id: "toolu_2".into(),
                name: "lookup_order".into(),
                arguments: json!({"order_id": "1015"}),
            },
        ],
    });
    req.messages.push(Message::Tool {
        call_id: "toolu_1".into(),
        content: "{\"status\":\"shipped\"}".into(),
        is_error: false,
    });
    req.messages.push(Message::Tool {
        call_id: "toolu_2".into(),
        content: "order not found".into(),
        is_error: true,
    });
    let reply = provider(&server.base_url, 1).chat(&req).await.unwrap();
    assert_eq!(reply.finish, FinishReason::ToolCalls);
    assert_eq!(
        reply.text.as_deref(),
        Some("I'll look up order 1017 first.")
    );
    assert_eq!(reply.tool_calls[0].id, "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(reply.tool_calls[0].arguments, json!({"order_id": "1017"}));
    assert_eq!((reply.usage.input, reply.usage.output), (472, 71));

    let seen = &server.requests()[0];
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], KEY);
    assert_eq!(seen.headers["anthropic-version"], API_VERSION);
    let body = &seen.body;
    assert_eq!(body["system"], "You are a support agent.");
    assert_eq!(body["max_tokens"], 512);
    assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(
        messages.len(),
        3,
        "user, assistant, and one user turn holding both tool results"
    );
    assert_eq!(messages[1]["content"][1]["type"], "tool_use");
    assert_eq!(
        messages[1]["content"][2]["input"],
        json!({"order_id": "1015"})
    );
    assert_eq!(messages[2]["role"], "user");
    assert_eq!(messages[2]["content"][0]["type"], "tool_result");
    assert_eq!(messages[2]["content"][1]["tool_use_id"], "toolu_2");
    assert_eq!(messages[2]["content"][1]["is_error"], true);
}

#[tokio::test]
async fn input_tokens_include_cache_reads_and_writes() {
    let server = start(vec![Canned::ok(&fixture("anthropic/answer.json"))]).await;
    let reply = provider(&server.base_url, 1)
        .chat(&request())
        .await
        .unwrap();
    assert_eq!(reply.finish, FinishReason::Stop);
    assert_eq!(
        (
            reply.usage.input,
            reply.usage.cached_input,
            reply.usage.output
        ),
        (120 + 380 + 1500, 1500, 22)
    );
}

#[tokio::test]
async fn overloaded_is_retried_and_bad_requests_are_not() {
    let server = start(vec![
        Canned::status(529, &fixture("anthropic/error_529.json")).header("retry-after", "0"),
        Canned::ok(&fixture("anthropic/answer.json")),
        Canned::status(400, &fixture("anthropic/error_400.json")),
    ])
    .await;
    let p = provider(&server.base_url, 3);
    assert!(p.chat(&request()).await.is_ok());
    let err = p.chat(&request()).await.unwrap_err();
    assert!(
        matches!(&err, ModelError::Rejected { status: 400, detail, .. } if detail.contains("valid dictionary")),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn a_tool_use_input_that_is_not_an_object_is_malformed() {
    let server = start(vec![Canned::ok(&fixture("anthropic/bad_input.json"))]).await;
    let err = provider(&server.base_url, 1)
        .chat(&request())
        .await
        .unwrap_err();
    assert!(err.is_recoverable(), "{err:?}");
    assert!(err.to_string().contains("must be a JSON object"), "{err}");
    assert!(!format!("{err:?}").contains(KEY));
}
