//! `keel tools call` as a user runs it: the real binary, a contract file on the demo shop, and a
//! real MCP server over Streamable HTTP (`@modelcontextprotocol/server-everything`, installed
//! by `scripts/test-peers`) with a header from the environment.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
use common::{keel, repo};

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json_out(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)))
}

/// The event types of an execution, in seq order.
fn event_types(data: &std::path::Path, exec: &str) -> Vec<String> {
    let out = keel(data, &["events", exec]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| {
            let e: Value = serde_json::from_str(l).unwrap();
            e["type"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn a_contract_file_call_is_validated_both_ways_and_recorded_in_a_scratch_execution() {
    let data = tempfile::tempdir().unwrap();
    let contract = repo().join("tools/lookup_order.yaml");
    let contract = contract.to_str().unwrap();
    let out = keel(
        data.path(),
        &[
            "tools",
            "call",
            contract,
            "--args",
            r#"{"order_id": "A-1017"}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = json_out(&out);
    assert_eq!(report["outcome"], "ok", "{report}");
    assert_eq!(report["tool"], "lookup_order");
    assert_eq!(report["output"]["order_id"], "A-1017", "{report}");
    let exec = report["exec_id"].as_str().unwrap();
    assert_eq!(
        event_types(data.path(), exec),
        [
            "exec.started",
            "tool.called",
            "tool.result",
            "exec.finished"
        ]
    );

    // Arguments that break the input schema never reach the tool: rejected, recorded, exit 1.
    let out = keel(
        data.path(),
        &[
            "tools",
            "call",
            contract,
            "--args",
            r#"{"order_id": "1017"}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let report = json_out(&out);
    assert_eq!(report["outcome"], "rejected", "{report}");
    assert!(report["errors"][0].as_str().unwrap().contains("order_id"));
    let out = keel(data.path(), &["tools", "call", contract, "--args", "[1]"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--args must be a JSON object"));
}

/// The everything server over Streamable HTTP on a free loopback port; killed on drop.
struct HttpPeer(std::process::Child, String);

impl Drop for HttpPeer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn everything_http() -> HttpPeer {
    let dir = std::env::var_os("KEEL_TEST_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/keel-test-peers")
        });
    let server = dir.join("node_modules/.bin/mcp-server-everything");
    assert!(
        server.exists(),
        "{} is missing: run scripts/test-peers",
        server.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&server)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Polls until the peer listens (a readiness wait, not a timed assertion).
    let listening = (0..400).any(|_| {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            false
        }
    });
    assert!(listening, "the everything server did not listen on {port}");
    HttpPeer(child, format!("http://127.0.0.1:{port}/mcp"))
}

#[test]
fn a_url_call_drafts_the_contract_sends_env_headers_and_an_unset_variable_is_an_auth_failure() {
    let peer = everything_http();
    let data = tempfile::tempdir().unwrap();
    let secret = "s3cr3t-value-never-printed";
    let run = |extra_env: Option<&str>, args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel"));
        cmd.arg("--data").arg(data.path()).args(args);
        cmd.env_remove("KEEL_TEST_API_KEY");
        if let Some(v) = extra_env {
            cmd.env("KEEL_TEST_API_KEY", v);
        }
        cmd.output().unwrap()
    };
    let call = [
        "tools",
        "call",
        peer.1.as_str(),
        "echo",
        "--args",
        r#"{"message": "hi over http"}"#,
        "--header-env",
        "X-Api-Key=KEEL_TEST_API_KEY",
    ];
    let out = run(Some(secret), &call);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains(secret) && !text(&out.stderr).contains(secret));
    let report = json_out(&out);
    assert_eq!(report["outcome"], "ok", "{report}");
    assert_eq!(report["protocol_version"], "2025-11-25");
    assert_eq!(report["drift"], serde_json::json!([]));
    assert!(
        report["output"].to_string().contains("hi over http"),
        "{report}"
    );
    let exec = report["exec_id"].as_str().unwrap();
    assert_eq!(
        event_types(data.path(), exec),
        [
            "exec.started",
            "tool.called",
            "tool.result",
            "exec.finished"
        ]
    );

    // Without the variable the session cannot open: the error names the variable, never a value.
    let out = run(None, &call);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("not authorized"), "{err}");
    assert!(err.contains("KEEL_TEST_API_KEY"), "{err}");

    // A contract that names the variable: the call runs, fails with class `auth` and is not
    // retried, though its policy retries connection failures three times.
    let yaml = format!(
        "name: echo\ndescription: echo\nschema:\n  input: {{type: object, properties: {{message: {{type: string}}}}, required: [message]}}\n  output: {{type: object}}\n\
         side_effect: read_only\nconsequence_tier: 0\nidempotency: none\n\
         failure_policy: {{retryable: [connection], max_attempts: 3, backoff: {{initial: 10ms, max: 20ms}}}}\n\
         timeout: 10s\nadapter: {{kind: mcp, url: \"{}\", headers_from_env: {{X-Api-Key: KEEL_TEST_API_KEY}}}}\n",
        peer.1
    );
    let file = data.path().join("echo.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = run(
        None,
        &[
            "tools",
            "call",
            file.to_str().unwrap(),
            "--args",
            r#"{"message": "x"}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report = json_out(&out);
    assert_eq!(report["error_class"], "auth", "{report}");
    assert_eq!(report["attempts"], 1, "{report}");
    // Neither the secret's value nor anything derived from it is printed.
    assert!(!text(&out.stdout).contains(secret) && !text(&out.stderr).contains(secret));
}
