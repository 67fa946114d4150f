//! The MCP adapter and `import-mcp` against real third-party MCP servers, installed from npm and
//! PyPI by `scripts/test-peers` (never servers written in this repo):
//! `@modelcontextprotocol/server-everything` (stdio and Streamable HTTP),
//! `@modelcontextprotocol/server-memory` (stdio) and `mcp-server-time` (stdio, Python SDK).
//!
//! These tests fail (they do not skip) when the servers are missing: run `scripts/test-peers`.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use keel_core::secrets::NoSecrets;
use keel_tools::contract::{McpServer, SideEffect};
use keel_tools::import::{import, server_from_target};
use keel_tools::{CallContext, CallOutcome, ErrorClass, Registry};
use serde_json::json;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

fn peers() -> PathBuf {
    let dir = std::env::var_os("KEEL_TEST_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/keel-test-peers")
        });
    for bin in [
        "node_modules/.bin/mcp-server-everything",
        "node_modules/.bin/mcp-server-memory",
        "venv/bin/mcp-server-time",
    ] {
        assert!(
            dir.join(bin).exists(),
            "MCP test server {} is missing: run scripts/test-peers (scripts/test does)",
            dir.join(bin).display()
        );
    }
    dir
}

fn bin(rel: &str) -> String {
    peers().join(rel).to_string_lossy().into_owned()
}

fn everything_stdio() -> McpServer {
    McpServer::Stdio {
        command: vec![
            bin("node_modules/.bin/mcp-server-everything"),
            "stdio".into(),
        ],
        env: Default::default(),
    }
}

fn time_stdio() -> McpServer {
    McpServer::Stdio {
        command: vec![
            bin("venv/bin/mcp-server-time"),
            "--local-timezone".into(),
            "UTC".into(),
        ],
        env: Default::default(),
    }
}

/// The everything server over Streamable HTTP on a free loopback port; killed on drop.
struct HttpPeer {
    child: tokio::process::Child,
    url: String,
}

impl Drop for HttpPeer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn everything_http() -> HttpPeer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(bin("node_modules/.bin/mcp-server-everything"))
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return HttpPeer {
                child,
                url: format!("http://127.0.0.1:{port}/mcp"),
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the everything server did not listen on {port} within 10 s");
}

/// Drafts contracts for every tool of `server`, loads them as a registry (they must pass the
/// same checks as hand-written ones) and returns the drafts' YAML by tool name.
async fn import_and_load(server: &McpServer) -> (Vec<(PathBuf, String)>, Registry) {
    let drafts = import(server, &NoSecrets).await.unwrap();
    assert!(!drafts.is_empty());
    let sources: Vec<_> = drafts
        .iter()
        .map(|d| (PathBuf::from(&d.file_name), d.yaml.clone()))
        .collect();
    let registry = Registry::from_sources(&sources, None).unwrap_or_else(|e| panic!("{e}"));
    (sources, registry)
}

fn pick(sources: &[(PathBuf, String)], names: &[&str]) -> Vec<(String, String)> {
    sources
        .iter()
        .filter(|(p, _)| {
            names
                .iter()
                .any(|n| p.to_string_lossy() == format!("{n}.yaml"))
        })
        .map(|(p, t)| (p.to_string_lossy().into_owned(), t.clone()))
        .collect()
}

fn as_extra(v: &[(String, String)]) -> Vec<(&str, String)> {
    v.iter().map(|(n, t)| (n.as_str(), t.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_server_over_stdio_imports_and_calls() {
    let server = everything_stdio();
    let (sources, registry) = import_and_load(&server).await;
    assert!(registry.len() >= 10, "{}", registry.len());
    let echo = registry.get("echo").unwrap();
    assert!(echo.source.to_string_lossy().ends_with("echo.yaml"));
    let env = env(&as_extra(&pick(
        &sources,
        &["echo", "get-sum", "get-structured-content"],
    )));
    let state = start(&env.log, "acme", None).await;

    let ctx = CallContext::from_state(&state).unwrap();
    let report = env
        .runner
        .call(&ctx, "echo", json!({"message": "hello over stdio"}))
        .await
        .unwrap();
    let CallOutcome::Ok { output, .. } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(output["content"][0]["text"], "Echo: hello over stdio");
    let state = apply(&state, &report);

    let ctx = CallContext::from_state(&state).unwrap();
    let report = env
        .runner
        .call(&ctx, "get-sum", json!({"a": 2, "b": 3}))
        .await
        .unwrap();
    let CallOutcome::Ok { output, .. } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert!(output.to_string().contains('5'), "{output}");
    let state = apply(&state, &report);

    // Arguments the server's own schema refuses never reach it.
    let ctx = CallContext::from_state(&state).unwrap();
    let report = env
        .runner
        .call(&ctx, "get-sum", json!({"a": "two", "b": 3}))
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, CallOutcome::Rejected { .. }),
        "{:?}",
        report.outcome
    );
    let state = apply(&state, &report);
    check_log(&env.log, &state).await;
    env.runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_server_over_streamable_http_imports_and_calls() {
    let peer = everything_http().await;
    let server = server_from_target(std::slice::from_ref(&peer.url)).unwrap();
    assert!(matches!(server, McpServer::Http { .. }));
    let (sources, registry) = import_and_load(&server).await;
    assert!(registry.get("echo").is_some());
    let env = env(&as_extra(&pick(&sources, &["echo"])));
    let state = start(&env.log, "acme", None).await;
    let ctx = CallContext::from_state(&state).unwrap();
    let report = env
        .runner
        .call(&ctx, "echo", json!({"message": "hi over http"}))
        .await
        .unwrap();
    let CallOutcome::Ok { output, .. } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(output["content"][0]["text"], "Echo: hi over http");
    let state = apply(&state, &report);
    check_log(&env.log, &state).await;
    env.runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_server_structured_output_is_validated_against_its_output_schema() {
    let (sources, registry) = import_and_load(&time_stdio()).await;
    let c = registry.get("get_current_time").unwrap();
    assert_eq!(
        c.side_effect,
        SideEffect::ReadOnly,
        "readOnlyHint → read_only"
    );
    assert_eq!(c.consequence_tier, 0);
    let env = env(&as_extra(&pick(&sources, &["get_current_time"])));
    let state = start(&env.log, "acme", None).await;
    let ctx = CallContext::from_state(&state).unwrap();
    let report = env
        .runner
        .call(
            &ctx,
            "get_current_time",
            json!({"timezone": "Europe/Paris"}),
        )
        .await
        .unwrap();
    let CallOutcome::Ok { output, .. } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(output["timezone"], "Europe/Paris");
    assert!(output["datetime"].as_str().unwrap().contains('T'));
    apply(&state, &report);

    // The same tool with a stricter (wrong) output schema: its real output is refused.
    let strict = format!(
        "name: strict_time
description: get_current_time, with an output schema the server does not meet
schema:
  input: {{type: object, properties: {{timezone: {{type: string}}}}, required: [timezone]}}
  output: {{type: object, required: [timezone, no_such_field]}}
side_effect: read_only
consequence_tier: 0
idempotency: none
adapter: {{kind: mcp, command: [{:?}, --local-timezone, UTC], tool: get_current_time}}
",
        bin("venv/bin/mcp-server-time")
    );
    let env = common::env(&[("strict_time.yaml", strict)]);
    let state = start(&env.log, "acme", None).await;
    let ctx = CallContext::from_state(&state).unwrap();
    let report = env
        .runner
        .call(&ctx, "strict_time", json!({"timezone": "UTC"}))
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, CallOutcome::InvalidOutput { .. }),
        "{:?}",
        report.outcome
    );
    env.runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_server_annotations_map_to_contract_defaults_and_writes_are_keyed() {
    let dir = tempfile::tempdir().unwrap();
    let memory_file = dir.path().join("memory.jsonl");
    let server = McpServer::Stdio {
        command: vec![bin("node_modules/.bin/mcp-server-memory")],
        env: [(
            "MEMORY_FILE_PATH".to_owned(),
            memory_file.to_string_lossy().into_owned(),
        )]
        .into(),
    };
    let drafts = import(&server, &NoSecrets).await.unwrap();
    let by_name = |n: &str| {
        drafts
            .iter()
            .find(|d| d.file_name == format!("{n}.yaml"))
            .unwrap()
            .yaml
            .clone()
    };
    assert!(by_name("read_graph").contains("side_effect: read_only"));
    assert!(
        by_name("delete_entities").contains("side_effect: irreversible"),
        "{}",
        by_name("delete_entities")
    );
    assert!(by_name("delete_entities").contains("consequence_tier: 3"));
    assert!(by_name("create_entities").contains("REVIEW"));

    // The env of the stdio command is kept in the draft, so the imported contract runs as is.
    let yaml = by_name("create_entities");
    assert!(yaml.contains("MEMORY_FILE_PATH"), "{yaml}");
    let env = env(&[("create_entities.yaml", yaml)]);
    let state = start(&env.log, "acme", None).await;
    let ctx = CallContext::from_state(&state).unwrap();
    let args = json!({"entities": [{"name": "Ada", "entityType": "customer", "observations": ["prefers email"]}]});
    let report = env
        .runner
        .call(&ctx, "create_entities", args)
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, CallOutcome::Ok { .. }),
        "{:?}",
        report.outcome
    );
    assert!(report.idempotency_key.is_some(), "a write carries a key");
    apply(&state, &report);
    env.runner.shutdown().await;
    assert!(
        std::fs::read_to_string(&memory_file)
            .unwrap()
            .contains("prefers email")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_tool_error_is_a_classified_failure() {
    let server = everything_stdio();
    let drafts = import(&server, &NoSecrets).await.unwrap();
    // A permissive input schema lets a bad call through to the server, which refuses it.
    let echo = drafts.iter().find(|d| d.file_name == "echo.yaml").unwrap();
    let mut yaml = echo.yaml.replace("name: echo", "name: loose_echo");
    let start_in = yaml.find("  input:").unwrap();
    let end_in = yaml.find("  output:").unwrap();
    yaml.replace_range(start_in..end_in, "  input: {type: object}\n");
    let env = env(&[("loose_echo.yaml", yaml)]);
    let state = start(&env.log, "acme", None).await;
    let ctx = CallContext::from_state(&state).unwrap();
    let report = env
        .runner
        .call(&ctx, "loose_echo", json!({"not_message": 1}))
        .await
        .unwrap();
    let CallOutcome::Failed { error_class, .. } = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert!(
        matches!(error_class, ErrorClass::ToolError | ErrorClass::Protocol),
        "{error_class:?}"
    );
    apply(&state, &report);
    env.runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_server_gets_the_newest_revision_it_speaks_and_keel_by_name() {
    use keel_tools::adapter::mcp::McpClient;
    use keel_tools::contract::ElicitationPolicy;
    // The Python SDK 2.x server answers `server/discover`: the session runs on 2026-07-28.
    let time = McpClient::connect(&time_stdio(), ElicitationPolicy::Decline, &NoSecrets)
        .await
        .unwrap();
    assert_eq!(time.protocol_version().as_deref(), Some("2026-07-28"));
    assert!(time.tools().iter().any(|t| t.name == "get_current_time"));
    time.close().await;
    // The TypeScript SDK 1.x server has no discovery: `initialize` at 2025-11-25, over stdio
    // and over Streamable HTTP.
    let stdio = McpClient::connect(&everything_stdio(), ElicitationPolicy::Decline, &NoSecrets)
        .await
        .unwrap();
    assert_eq!(stdio.protocol_version().as_deref(), Some("2025-11-25"));
    stdio.close().await;
    let peer = everything_http().await;
    let http = McpClient::connect(
        &McpServer::http(&peer.url),
        ElicitationPolicy::Decline,
        &NoSecrets,
    )
    .await
    .unwrap();
    assert_eq!(http.protocol_version().as_deref(), Some("2025-11-25"));
    // tools/list ran at connect: a contract that drifted from the server's schema is reported.
    let echo = http.tools().iter().find(|t| t.name == "echo").unwrap();
    let mut schema = serde_json::Value::Object((*echo.input_schema).clone());
    assert!(http.drift("echo", &schema).is_empty());
    schema["properties"]["extra"] = json!({"type": "string"});
    let drift = http.drift("echo", &schema);
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert!(
        drift[0].contains("\"extra\" is in the contract"),
        "{drift:?}"
    );
    assert_eq!(http.drift("no_such_tool", &schema).len(), 1);
    http.close().await;
}
