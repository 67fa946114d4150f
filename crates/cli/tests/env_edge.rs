//! The environment is read at the edge: the `keel` binary answers the secrets that contracts and
//! strategies name from its process environment, and the libraries only ever see the values it
//! hands down. Through the binary, against a real HTTP server on 127.0.0.1 that records what it
//! was sent: a contract's header and a provider's API key arrive from the variable named, a
//! missing variable is an error naming it, and the value is never printed nor stored.

#![allow(clippy::unwrap_used)]

mod common;
use common::{files_contain, repo};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

/// An HTTP server answering every request with one JSON body and keeping each request's
/// `Authorization` header (empty if none).
struct Recorder {
    port: u16,
    auth: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn start(reply: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let auth = Arc::new(Mutex::new(Vec::new()));
        let seen = auth.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let (mut length, mut authorization) = (0usize, String::new());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        match name.to_ascii_lowercase().as_str() {
                            "content-length" => length = value.trim().parse().unwrap_or(0),
                            "authorization" => authorization = value.trim().to_owned(),
                            _ => {}
                        }
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                seen.lock().unwrap().push(authorization);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            }
        });
        Recorder { port, auth }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn auth(&self) -> Vec<String> {
        self.auth.lock().unwrap().clone()
    }
}

/// `keel --data DATA ARGS…` from the repository's root, with `var` set to `value` or unset.
fn keel_with(data: &Path, args: &[&str], var: &str, value: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
    c.current_dir(repo()).arg("--data").arg(data).args(args);
    c.env_remove(var);
    if let Some(v) = value {
        c.env(var, v);
    }
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_contract_header_comes_from_the_variable_it_names_and_is_never_printed_or_stored() {
    const VAR: &str = "KEEL_TEST_EDGE_TOOL_TOKEN";
    const SECRET: &str = "Bearer edge-s3cret-7f3a";
    let server = Recorder::start(r#"{"ok": true}"#);
    let tmp = tempfile::tempdir().unwrap();
    let contract = tmp.path().join("authed.yaml");
    std::fs::write(
        &contract,
        format!(
            "name: authed\ndescription: a tool behind a token\n\
             schema:\n  input: {{type: object, properties: {{item: {{type: string}}}}, required: [item]}}\n  output: {{type: object}}\n\
             side_effect: read_only\nconsequence_tier: 0\nidempotency: none\n\
             failure_policy: {{}}\ntimeout: 10s\n\
             adapter: {{kind: http, url: \"{}\", headers_from_env: {{Authorization: {VAR}}}}}\n",
            server.url("/tool")
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let args = [
        "tools",
        "call",
        contract.to_str().unwrap(),
        "--args",
        r#"{"item": "a"}"#,
    ];

    let out = keel_with(&data, &args, VAR, Some(SECRET));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        server.auth(),
        [SECRET],
        "the header carries the variable's value"
    );
    let printed = text(&out.stdout) + &text(&out.stderr);
    assert!(!printed.contains("s3cret"), "{printed}");

    // Unset: the call fails naming the variable, and nothing reaches the server.
    let out = keel_with(&data, &args, VAR, None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let printed = text(&out.stdout) + &text(&out.stderr);
    assert!(
        printed.contains(&format!("environment variable {VAR} is not set")),
        "{printed}"
    );
    assert_eq!(server.auth().len(), 1);
    assert_eq!(files_contain(&data, "s3cret"), Vec::<String>::new());
}

#[test]
fn a_provider_key_comes_from_the_variable_the_strategy_names_and_is_never_printed_or_stored() {
    const VAR: &str = "KEEL_TEST_EDGE_MODEL_KEY";
    const SECRET: &str = "sk-edge-s3cret-51c0";
    let server = Recorder::start(include_str!(
        "../../models/tests/fixtures/openai/answer.json"
    ));
    let tmp = tempfile::tempdir().unwrap();
    let strategies = tmp.path().join("strategies");
    std::fs::create_dir_all(&strategies).unwrap();
    std::fs::write(
        strategies.join("edge.yaml"),
        format!(
            "name: edge\n\
             prompt: {{ file: {}, version: v1 }}\n\
             model: {{ provider: openai, name: gpt-4o-mini, base_url: \"{}\", api_key_env: {VAR} }}\n\
             tools: [lookup_order]\n\
             max_steps: 2\n\
             success:\n  - {{ answer_matches: '(?i)shipped' }}\n",
            repo().join("prompts/support-v1.md").display(),
            server.url("/v1")
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let args = [
        "run",
        "--json",
        "--strategies",
        strategies.to_str().unwrap(),
        "--strategy",
        "edge",
        "Where is order 1017?",
    ];

    let out = keel_with(&data, &args, VAR, Some(SECRET));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["outcome"], "success", "{run}");
    assert_eq!(server.auth(), [format!("Bearer {SECRET}")]);
    let printed = text(&out.stdout) + &text(&out.stderr);
    assert!(!printed.contains("s3cret"), "{printed}");

    // Unset: refused before any model call, naming the variable.
    let out = keel_with(&data, &args, VAR, None);
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains(VAR), "{err}");
    assert_eq!(server.auth().len(), 1);
    assert_eq!(files_contain(&data, "s3cret"), Vec::<String>::new());
}
