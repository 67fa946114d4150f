//! The OpenAI-compatible provider against a real local server replaying OpenAI's wire format.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Canned, fixture, start};
use keel_models::http::RetryPolicy;
use keel_models::openai::{OpenAi, OpenAiConfig, ToolChoice};
use keel_models::{
    ChatRequest, FinishReason, Message, ModelError, ModelProvider, ToolCall, ToolSpec,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

// The variable the strategy names, answered by the test's own secret source.
const KEY_VAR: &str = "KEEL_TEST_OPENAI_KEY";
const KEY: &str = "sk-test-0123456789abcdef";

fn provider(base: &str, attempts: u32) -> OpenAi {
    OpenAi::new(
        OpenAiConfig {
            base_url: format!("{base}/v1"),
            api_key_env: Some(KEY_VAR.into()),
            retry: RetryPolicy {
                timeout: Duration::from_millis(400),
                max_attempts: attempts,
                base_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(50),
            },
            tool_choice: None,
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
        model: "gpt-4o-mini".into(),
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
            input_schema: json!({"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}),
        }],
        max_tokens: 256,
    }
}

#[tokio::test]
async fn a_tool_call_reply_is_parsed_and_the_request_is_in_openai_shape() {
    let server = start(vec![Canned::ok(&fixture("openai/tool_call.json"))]).await;
    let mut req = request();
    req.messages.push(Message::Assistant {
        content: None,
        tool_calls: vec![ToolCall {
            id: "call_1".into(),
            name: "lookup_order".into(),
            arguments: json!({"order_id": "1016"}),
        }],
    });
    req.messages.push(Message::Tool {
        call_id: "call_1".into(),
        content: "{\"status\":\"shipped\"}".into(),
        is_error: false,
    });
    let reply = provider(&server.base_url, 1).chat(&req).await.unwrap();
    assert_eq!(reply.finish, FinishReason::ToolCalls);
    assert_eq!(reply.tool_calls.len(), 1);
    assert_eq!(reply.tool_calls[0].id, "call_Vw8r1mWkq5EsRHlY3kUu9nE2");
    assert_eq!(reply.tool_calls[0].arguments, json!({"order_id": "1017"}));
    assert_eq!((reply.usage.input, reply.usage.output), (412, 18));
    assert_eq!(reply.model, "gpt-4o-mini-2024-07-18");
    assert!(reply.raw.contains("chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"));

    let seen = &server.requests()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.headers["authorization"], format!("Bearer {KEY}"));
    let body = &seen.body;
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["stream"], false);
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(body["tools"][0]["function"]["name"], "lookup_order");
    assert_eq!(
        body["messages"][2]["tool_calls"][0]["function"]["arguments"],
        "{\"order_id\":\"1016\"}"
    );
    // An assistant turn of tool calls only carries "" (llama.cpp's server refuses null).
    assert_eq!(body["messages"][2]["content"], "");
    assert_eq!(body["messages"][3]["role"], "tool");
    assert_eq!(body["messages"][3]["tool_call_id"], "call_1");
}

#[tokio::test]
async fn an_answer_reports_cached_tokens() {
    let server = start(vec![Canned::ok(&fixture("openai/answer.json"))]).await;
    let reply = provider(&server.base_url, 1)
        .chat(&request())
        .await
        .unwrap();
    assert_eq!(reply.finish, FinishReason::Stop);
    assert!(reply.text.unwrap().contains("shipped"));
    assert_eq!(
        (
            reply.usage.input,
            reply.usage.cached_input,
            reply.usage.output
        ),
        (2006, 1920, 300)
    );
}

#[tokio::test]
async fn compatible_server_quirks_are_normalised() {
    let server = start(vec![Canned::ok(&fixture("openai/ollama_quirks.json"))]).await;
    let reply = provider(&server.base_url, 1)
        .chat(&request())
        .await
        .unwrap();
    assert_eq!(reply.tool_calls[0].arguments, json!({"order_id": "1017"}));
    assert_eq!(
        reply.tool_calls[0].id, "call_0",
        "a missing id is synthesised deterministically"
    );
    assert_eq!(reply.text, None);
}

#[tokio::test]
async fn rate_limits_are_retried_honouring_retry_after() {
    let server = start(vec![
        Canned::status(429, &fixture("openai/error_429.json")).header("retry-after", "0.05"),
        Canned::status(500, &fixture("openai/error_500.json")),
        Canned::ok(&fixture("openai/answer.json")),
    ])
    .await;
    let reply = provider(&server.base_url, 3)
        .chat(&request())
        .await
        .unwrap();
    assert!(reply.text.is_some());
    assert_eq!(server.requests().len(), 3);
    assert!(
        reply.latency >= Duration::from_millis(50),
        "waited for Retry-After: {:?}",
        reply.latency
    );
}

/// Regression: `Retry-After: 1e20` made `Duration::from_secs_f64` panic on every call.
#[tokio::test]
async fn an_untrusted_retry_after_never_panics_and_is_capped() {
    let hostile = [
        "1e20",
        "-5",
        "NaN",
        "inf",
        "-inf",
        "99999999999999999999999999999999",
        "18446744073709551616",
        "Fri, 31 Dec 1999 23:59:59 GMT",
        "",
    ];
    let mut replies: Vec<Canned> = hostile
        .iter()
        .map(|v| Canned::status(429, &fixture("openai/error_429.json")).header("retry-after", v))
        .collect();
    replies.push(Canned::ok(&fixture("openai/answer.json")));
    let server = start(replies).await;
    // max_backoff (50 ms) bounds every wait, so nine retries finish promptly.
    let attempts = u32::try_from(hostile.len()).unwrap() + 1;
    let reply = provider(&server.base_url, attempts)
        .chat(&request())
        .await
        .unwrap();
    assert!(reply.text.is_some());
    assert_eq!(server.requests().len(), hostile.len() + 1);
}

#[tokio::test]
async fn retries_run_out_with_the_vendor_message() {
    let server = start(vec![
        Canned::status(500, &fixture("openai/error_500.json"));
        3
    ])
    .await;
    let err = provider(&server.base_url, 3)
        .chat(&request())
        .await
        .unwrap_err();
    match &err {
        ModelError::Exhausted {
            status: 500,
            attempts: 3,
            detail,
            ..
        } => assert!(detail.contains("server had an error")),
        other => panic!("expected Exhausted, got {other:?}"),
    }
    assert!(!err.to_string().contains(KEY), "errors never carry the key");
}

#[tokio::test]
async fn a_bad_request_is_not_retried() {
    let server = start(vec![
        Canned::status(400, &fixture("openai/error_400.json"));
        2
    ])
    .await;
    let err = provider(&server.base_url, 3)
        .chat(&request())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ModelError::Rejected { status: 400, detail, .. } if detail.contains("tool_call_id")),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn bad_json_arguments_and_unknown_tools_are_recoverable_malformed_replies() {
    let server = start(vec![
        Canned::ok(&fixture("openai/bad_arguments.json")),
        Canned::ok(&fixture("openai/unknown_tool.json")),
    ])
    .await;
    let p = provider(&server.base_url, 1);
    let err = p.chat(&request()).await.unwrap_err();
    assert!(err.is_recoverable());
    assert!(
        err.to_string().contains("arguments are not valid JSON"),
        "{err}"
    );
    let err = p.chat(&request()).await.unwrap_err();
    assert!(err.is_recoverable());
    assert!(err.to_string().contains("delete_all_orders"), "{err}");
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let server = start(vec![
        Canned::ok(&fixture("openai/answer.json"))
            .delayed(Duration::from_secs(2));
        2
    ])
    .await;
    let err = provider(&server.base_url, 2)
        .chat(&request())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ModelError::Timeout { attempts: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn a_missing_key_names_the_variable() {
    let err = OpenAi::new(
        OpenAiConfig {
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key_env: Some("KEEL_TEST_NO_SUCH_KEY".into()),
            retry: RetryPolicy::default(),
            tool_choice: None,
        },
        &secrets(),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("KEEL_TEST_NO_SUCH_KEY"), "{err}");
}

#[tokio::test]
async fn a_forced_tool_choice_is_sent_until_the_first_tool_result() {
    let server = start(vec![
        Canned::ok(&fixture("openai/tool_call.json")),
        Canned::ok(&fixture("openai/tool_call.json")),
    ])
    .await;
    let p = OpenAi::new(
        OpenAiConfig {
            base_url: format!("{}/v1", server.base_url),
            api_key_env: None,
            retry: RetryPolicy::default(),
            tool_choice: Some(ToolChoice::parse("lookup_order")),
        },
        &secrets(),
    )
    .unwrap();
    p.chat(&request()).await.unwrap();
    let mut answered = request();
    answered.messages.push(Message::Tool {
        call_id: "call_1".into(),
        content: "{}".into(),
        is_error: false,
    });
    p.chat(&answered).await.unwrap();
    let seen = server.requests();
    assert_eq!(
        seen[0].body["tool_choice"],
        json!({"type": "function", "function": {"name": "lookup_order"}})
    );
    assert!(
        seen[1].body.get("tool_choice").is_none(),
        "{}",
        seen[1].body
    );
    assert!(seen[0].headers.get("authorization").is_none());
}

#[tokio::test]
async fn an_empty_reply_and_an_empty_error_message_are_named() {
    let empty = json!({"choices": [{"message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 1}});
    let server = start(vec![
        Canned::ok(&empty.to_string()),
        Canned::status(
            500,
            r#"{"error": {"message": "", "type": "internal_server_error"}}"#,
        ),
    ])
    .await;
    let p = provider(&server.base_url, 1);
    let err = p.chat(&request()).await.unwrap_err();
    assert!(err.is_recoverable(), "{err:?}");
    assert!(
        err.to_string().contains("neither text nor a tool call"),
        "{err}"
    );
    assert_eq!(
        (err.usage().input, err.usage().output),
        (40, 1),
        "billed, so metered"
    );
    let err = p.chat(&request()).await.unwrap_err();
    assert!(err.to_string().contains("no error message"), "{err}");
}
