//! `keel init DIR` as a new user runs it: the project it writes passes `keel config check`,
//! `keel run` in it works offline (the scripted strategy is the default) and stops at the HTTP
//! tool's gate; approved, a worker posts to the contract's URL (a local receiver here, as the
//! user points it at theirs) with the idempotency key. A non-empty directory is refused.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::mpsc;

/// `keel ARGS…` in `dir`, as a user in their project: no `--data`, no key in the environment.
fn keel_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(dir)
        .env_remove("KEEL_DATA")
        .env_remove("KEEL_CONFIG")
        .env_remove("OPENAI_API_KEY")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Answers one POST with `{"posted": true}` and hands its headers (lower-cased) and body over.
fn receiver() -> (String, mpsc::Receiver<(Vec<String>, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/updates", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end().to_ascii_lowercase();
            if line.is_empty() {
                break;
            }
            if let Some(n) = line.strip_prefix("content-length:") {
                length = n.trim().parse().unwrap();
            }
            headers.push(line);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        // Handed over before the reply, so it is there once the worker has exited.
        tx.send((headers, serde_json::from_slice(&body).unwrap()))
            .unwrap();
        let reply = r#"{"posted": true}"#;
        let mut conn = conn;
        write!(
            conn,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
            reply.len()
        )
        .unwrap();
    });
    (url, rx)
}

#[test]
fn a_new_project_runs_offline_to_a_gate_and_posts_once_approved() {
    let tmp = tempfile::tempdir().unwrap();
    let out = keel_in(tmp.path(), &["init", "agent"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("keel run"),
        "next steps: {}",
        stderr(&out)
    );
    let project = tmp.path().join("agent");
    for file in [
        "keel.toml",
        "tools/post_update.yaml",
        "tools/get_current_time.yaml",
        "strategies/assistant.yaml",
        "strategies/assistant-offline.yaml",
        "prompts/assistant-v1.md",
        "models/offline.yaml",
        "prices.toml",
    ] {
        assert!(project.join(file).is_file(), "{file} missing");
    }
    let openai = std::fs::read_to_string(project.join("strategies/assistant.yaml")).unwrap();
    assert!(openai.contains("api_key_env: OPENAI_API_KEY"), "{openai}");

    // Both contracts (the HTTP and the MCP one) are valid, and the configuration checks out.
    let out = keel_in(&project, &["tools", "check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = keel_in(&project, &["config", "check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("keel.toml"),
        "the project's keel.toml is read"
    );

    // The user points the HTTP tool at their endpoint.
    let (url, posted) = receiver();
    let contract = project.join("tools/post_update.yaml");
    let text = std::fs::read_to_string(&contract).unwrap();
    let text = text.replace("http://127.0.0.1:8787/updates", &url);
    assert!(text.contains(&url), "the template names the URL to change");
    std::fs::write(&contract, text).unwrap();

    // Offline, without a key: the default (scripted) strategy stops at the gate.
    let goal = "Tell the team the release is out";
    let out = keel_in(&project, &["run", "--json", goal]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        run["strategy_version"]
            .as_str()
            .unwrap()
            .starts_with("assistant-offline/"),
        "{run}"
    );
    let outcome = run["outcome"].as_str().unwrap();
    let gate = outcome
        .strip_prefix("suspended_at_gate(")
        .and_then(|g| g.strip_suffix(')'))
        .unwrap_or_else(|| panic!("expected a gate, got {run}"));
    assert!(
        project.join(".keel/spine.db").is_file(),
        "the store is under .keel"
    );

    // Approved, the worker runs the call: one POST with the key, and the execution succeeds.
    let out = keel_in(
        &project,
        &["gates", "approve", gate, "--reason", "looks right"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = keel_in(&project, &["worker", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let exec = run["exec_id"].as_str().unwrap();
    let out = keel_in(&project, &["events", exec]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let finished = events.last().unwrap();
    assert_eq!(finished["type"], "exec.finished", "{finished}");
    assert_eq!(finished["data"]["outcome"], "success", "{finished}");
    let (headers, body) = posted.try_recv().expect("the approved call was POSTed");
    assert_eq!(body, serde_json::json!({"channel": "team", "text": goal}));
    assert!(
        headers.iter().any(|h| h.starts_with("idempotency-key:")),
        "{headers:?}"
    );
}

#[test]
fn init_refuses_a_directory_with_anything_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
    let out = keel_in(tmp.path(), &["init", "."]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("notes.txt")).unwrap(),
        "mine"
    );
    assert!(!tmp.path().join("keel.toml").exists());

    let out = keel_in(tmp.path(), &["init", "notes.txt"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a directory"), "{}", stderr(&out));
}
