//! A real OpenAI-compatible server that is not Keel's — llama.cpp's, from PyPI
//! `llama-cpp-python[server]`, serving SmolLM2-135M (scripts/test-model-peers installs both and
//! exports KEEL_LLAMA_SERVER_PY and KEEL_LLAMA_MODEL; without them this test fails, it does not
//! skip) — driven through `keel run` with `provider: openai` strategies. What is asserted is
//! what the server returned (its token counts, its tool call, its errors), never the model's
//! words: a forced tool call runs through the contract layer and its result goes back to the
//! model; a truncated tool call is recorded as malformed (with the tokens the server billed for
//! it) and asked again until the loop gives up; `tool_choice: required`, which this server answers with HTTP 500 and an empty message, is
//! recorded and ends the execution cleanly.

#![allow(clippy::unwrap_used)]

mod common;

use common::{keel_in_repo, ok, repo};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The llama.cpp server, killed when dropped.
struct Llama {
    child: Child,
    base_url: String,
}

impl Drop for Llama {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run scripts/test, or eval \"$(scripts/test-model-peers)\"")
    })
}

/// Starts the server on a free port and waits until it lists its model.
fn llama() -> Llama {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log =
        std::fs::File::create(std::env::temp_dir().join(format!("keel-llama-{port}.log"))).unwrap();
    // Multi-token batches crash llama.cpp on some CPUs (seen on the CI machine): one at a time.
    let child = Command::new(var("KEEL_LLAMA_SERVER_PY"))
        .args([
            "-m",
            "llama_cpp.server",
            "--model",
            &var("KEEL_LLAMA_MODEL"),
        ])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--n_batch", "1", "--n_ubatch", "1", "--n_ctx", "2048"])
        .args(["--chat_format", "chatml-function-calling"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut server = Llama {
        child,
        base_url: format!("http://127.0.0.1:{port}/v1"),
    };
    let models = format!("{}/models", server.base_url);
    for _ in 0..1200 {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("the llama.cpp server exited ({status}) before it served");
        }
        if lists_models(port) {
            return server;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("the llama.cpp server did not answer {models}");
}

/// True once `GET /v1/models` on `port` answers 200 (plain HTTP/1.0 over a socket: the test
/// needs no HTTP client of its own).
fn lists_models(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let request = "GET /v1/models HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    let mut reply = String::new();
    conn.write_all(request.as_bytes()).is_ok()
        && conn.read_to_string(&mut reply).is_ok()
        && (reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"))
}

/// A strategy offering the demo's `lookup_order`, on the llama server, with `model_extra`
/// settings.
fn strategy(dir: &Path, name: &str, base_url: &str, model_extra: &str) {
    let prompt = repo().join("prompts/support-v1.md");
    let yaml = format!(
        "name: {name}\n\
         prompt: {{ file: {}, version: v1 }}\n\
         model: {{ provider: openai, name: smollm2-135m, base_url: \"{base_url}\"{model_extra} }}\n\
         tools: [lookup_order]\n\
         max_steps: 4\n\
         success:\n  - {{ tool: lookup_order, status: ok }}\n",
        prompt.display()
    );
    std::fs::write(dir.join(format!("{name}.yaml")), yaml).unwrap();
}

/// `keel run --json` of `strategy` from the repository (its tools, the shop).
fn run(data: &Path, strategies: &Path, strategy: &str, goal: &str) -> Value {
    let out = keel_in_repo(
        data,
        &[
            "run",
            "--json",
            "--strategies",
            strategies.to_str().unwrap(),
            "--strategy",
            strategy,
            goal,
        ],
    );
    serde_json::from_str(&ok(out)).unwrap()
}

fn events(data: &Path, run: &Value) -> Vec<Value> {
    common::events(data, run)
}

fn of_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

fn tokens(e: &Value) -> (u64, u64) {
    (
        e["data"]["tokens"]["in"].as_u64().unwrap(),
        e["data"]["tokens"]["out"].as_u64().unwrap(),
    )
}

#[test]
fn keel_runs_against_llama_cpp_and_survives_what_a_small_model_returns() {
    let server = llama();
    let data = tempfile::tempdir().unwrap();
    let strategies = tempfile::tempdir().unwrap();
    let s = strategies.path();
    strategy(
        s,
        "llama-forced",
        &server.base_url,
        ", tool_choice: lookup_order, max_tokens: 64",
    );
    strategy(
        s,
        "llama-truncated",
        &server.base_url,
        ", tool_choice: lookup_order, max_tokens: 4",
    );
    strategy(
        s,
        "llama-required",
        &server.base_url,
        ", tool_choice: required",
    );
    let goal = "Where is my order A-1003?";

    // A forced tool call: the model's call goes through the contract layer (valid arguments run
    // the tool, others are rejected with an event), its result goes back in the next request
    // (sent without tool_choice), and the server's usage is metered on every reply.
    let forced = run(data.path(), s, "llama-forced", goal);
    let ev = events(data.path(), &forced);
    let replies = of_type(&ev, "model.responded");
    assert!(replies.len() >= 2, "a reply after the tool result: {ev:#?}");
    let first = replies[0];
    assert!(first["data"]["error"].is_null(), "{first}");
    let (input, output) = tokens(first);
    assert!(input > 0 && output > 0, "the server's usage: {first}");
    let called = of_type(&ev, "tool.called");
    let results = of_type(&ev, "tool.result");
    let rejected_before_call = results
        .iter()
        .any(|r| r["data"]["status"] == "rejected" && called.is_empty());
    assert!(
        (!called.is_empty() && called[0]["data"]["tool"] == "lookup_order") || rejected_before_call,
        "the model's tool call reached the contract layer: {ev:#?}"
    );
    assert_eq!(results[0]["data"]["tool"], "lookup_order", "{ev:#?}");
    let result_seq = results[0]["seq"].as_u64().unwrap();
    assert!(
        replies
            .iter()
            .any(|r| r["seq"].as_u64().unwrap() > result_seq),
        "the tool's result went back to the model"
    );
    let metered: u64 = replies.iter().map(|r| tokens(r).0 + tokens(r).1).sum();
    assert_eq!(forced["tokens"].as_u64().unwrap(), metered, "{forced}");
    assert_eq!(of_type(&ev, "exec.finished").len(), 1, "{forced}");

    // Four tokens cut the forced call's arguments short: a reply that is not a valid tool call,
    // recorded as malformed, asked again, and the execution ends with outcome `error`.
    let truncated = run(data.path(), s, "llama-truncated", goal);
    assert_eq!(truncated["outcome"], "error", "{truncated}");
    let ev = events(data.path(), &truncated);
    let replies = of_type(&ev, "model.responded");
    assert_eq!(
        replies.len(),
        3,
        "asked again until three in a row: {ev:#?}"
    );
    for r in &replies {
        let error = r["data"]["error"].as_str().unwrap();
        assert!(error.contains("malformed reply"), "{error}");
        assert!(error.contains("not valid JSON"), "{error}");
        // The server billed the unusable reply: its usage is metered all the same.
        let (input, output) = tokens(r);
        assert!(input > 0 && output > 0, "{r}");
    }
    let metered: u64 = replies.iter().map(|r| tokens(r).0 + tokens(r).1).sum();
    assert_eq!(
        truncated["tokens"].as_u64().unwrap(),
        metered,
        "{truncated}"
    );
    assert!(of_type(&ev, "tool.called").is_empty());
    let detail = of_type(&ev, "exec.finished")[0]["data"]["detail"].to_string();
    assert!(detail.contains("3 malformed replies in a row"), "{detail}");

    // `required`: this server answers HTTP 500 with an empty message; retried as a server
    // error, then recorded, and the execution ends cleanly.
    let required = run(data.path(), s, "llama-required", goal);
    assert_eq!(required["outcome"], "error", "{required}");
    let ev = events(data.path(), &required);
    let replies = of_type(&ev, "model.responded");
    assert_eq!(replies.len(), 1, "{ev:#?}");
    let error = replies[0]["data"]["error"].as_str().unwrap();
    assert!(error.contains("HTTP 500"), "{error}");
    assert!(error.contains("no error message"), "{error}");

    // The server still serves after all of it (Keel's requests did not crash it).
    assert!(server.child.id() > 0);
    let again = run(data.path(), s, "llama-forced", goal);
    assert!(again["tokens"].as_u64().unwrap() > 0, "{again}");
}
