//! `adapter.elicitation: gate`, end to end: a real MCP server (the official Python SDK, stdio)
//! whose tool asks for the amount to approve mid-call; a real `keel serve` running the agent
//! holds the call open while a person decides through another process (`keel gates approve
//! --input`) or the HTTP API; the tool's result carries the answer. A wrong input is refused and
//! nothing is recorded; another tenant neither sees nor decides the gate; after a SIGKILL
//! during the wait the call is never run again (its outcome is unknown: it is settled as
//! interrupted and put to a person).

#![allow(clippy::unwrap_used)]

mod common;
use common::serve::free_addr;
use common::webhooks::{Proc, config};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Where scripts/test-peers installed the Python SDK (with `mcp-server-time`).
fn python() -> PathBuf {
    std::env::var_os("KEEL_TEST_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/keel-test-peers")
        })
        .join("venv/bin/python")
}

/// A project: the eliciting server's `refund` tool (tier 2, so no gate before the call: the
/// only gate is the server's question), a scripted model that calls it once and answers with
/// what it returned, and its strategy.
fn project(dir: &Path, log: &Path) -> PathBuf {
    let p = dir.join("project");
    for sub in ["tools", "strategies", "models", "prompts"] {
        std::fs::create_dir_all(p.join(sub)).unwrap();
    }
    std::fs::copy(common::repo().join("prices.toml"), p.join("prices.toml")).unwrap();
    let server = common::repo().join("crates/cli/tests/elicit/server.py");
    let contract = json!({
        "name": "refund",
        "description": "Refund an order; a person approves the amount.",
        "schema": {
            "input": {"type": "object", "properties": {"order": {"type": "string"}, "amount": {"type": "string"}}, "required": ["order", "amount"]},
            "output": {"type": "object"}
        },
        "side_effect": "reversible",
        "consequence_tier": 2,
        "idempotency": {"mode": "required", "key": ["order", "exec_id"]},
        // Shorter than the person takes in the first test: their time is not the tool's.
        "timeout": "5s",
        "adapter": {
            "kind": "mcp",
            "command": [python(), server],
            "env": {"ELICIT_LOG": log},
            "elicitation": {"policy": "gate", "queue": "refunds", "expire_after_s": 600}
        }
    });
    std::fs::write(p.join("tools/refund.yaml"), contract.to_string()).unwrap();
    std::fs::write(p.join("prompts/p.md"), "Refund what is asked.").unwrap();
    std::fs::write(
        p.join("models/elicit.yaml"),
        r#"model: scripted-elicit
rules:
  - name: distill
    when: { prompt: '(?i)^distil durable facts' }
    then: { json: { facts: [] } }
  - name: ask
    when: { goal: 'refund (?P<o>A-\d+) (?P<a>\d+)', not_called: [refund] }
    then:
      text: "Refunding."
      call: { tool: refund, args: { order: "{o}", amount: "{a}" } }
  - name: failed
    when: { last_tool: refund, last_status: error }
    then: { text: "the refund failed" }
  - name: answer
    when: { last_tool: refund }
    then: { text: "answer={result./action} amount={result./approved_amount}" }
"#,
    )
    .unwrap();
    std::fs::write(
        p.join("strategies/elicit.yaml"),
        "name: elicit\nprompt: { file: ../prompts/p.md, version: v1 }\nmodel: { provider: scripted, name: scripted-elicit, script: ../models/elicit.yaml }\ntools: [refund]\nmax_steps: 4\nmax_autonomous_tier: 2\ndefault: true\nsuccess:\n  - { tool: refund, status: ok }\n",
    )
    .unwrap();
    p
}

fn keel(project: &Path, data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(project)
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

fn token(project: &Path, data: &Path, tenant: &str) -> String {
    let out = keel(
        project,
        data,
        &["tokens", "create", "--tenant", tenant, "--role", "approver"],
    );
    common::ok(out).trim().to_owned()
}

/// One HTTP request with a bearer token: the status and the JSON body.
fn http(addr: &str, token: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, serde_json::from_str(body).unwrap_or_default())
}

/// `keel serve` in `project`, once it listens.
fn start_serve(project: &Path, data: &Path, addr: &str, log: &Path) -> Proc {
    let p = Proc::spawn(project, data, &["serve", "--addr", addr], log);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "keel serve did not listen: {}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

fn eventually<T>(what: &str, serve: &Proc, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}; serve said:\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pending gate of `exec` that asks for input, as the API shows it to `token`'s tenant.
fn asking_gate(addr: &str, token: &str, exec: &str) -> Option<Value> {
    let (code, list) = http(addr, token, "GET", "/v1/gates", None);
    assert_eq!(code, 200, "{list}");
    let gates = list.get("gates").unwrap_or(&list).as_array()?.clone();
    gates
        .into_iter()
        .find(|g| g["exec_id"] == exec && g["elicitation"].is_object() && g["decision"].is_null())
}

fn events(data: &Path, exec: &str) -> Vec<Value> {
    common::events(data, &json!({ "exec_id": exec }))
}

fn finished_detail(data: &Path, exec: &str) -> Option<String> {
    events(data, exec).iter().find_map(|e| {
        (e["type"] == "exec.finished")
            .then(|| e["data"]["detail"].as_str().unwrap_or("").to_owned())
    })
}

fn tool_runs(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_answers_the_servers_question_while_keel_serve_holds_the_call() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("tool-runs.jsonl");
    let project = project(tmp.path(), &log);
    let data = tmp.path().join("data");
    let acme = token(&project, &data, "acme");
    let globex = token(&project, &data, "globex");
    let addr = free_addr();
    let serve = start_serve(&project, &data, &addr, &tmp.path().join("serve.log"));
    let env = common::open(&data, &config(&project));
    let s = env.strategies.get("elicit").unwrap();

    // The agent calls the tool; its server asks how much to approve: a gate during the call.
    let exec = env
        .agent
        .start(s, "acme", "refund A-1 120")
        .await
        .unwrap()
        .to_string();
    let gate = eventually("a gate asking for input", &serve, || {
        asking_gate(&addr, &acme, &exec)
    });
    // The call began before its gate was seen.
    let gate_seen = Instant::now();
    let gate_id = gate["gate_id"].as_str().unwrap().to_owned();
    assert_eq!(gate["queue"], "refunds");
    assert!(
        gate["elicitation"]["message"]
            .as_str()
            .unwrap()
            .contains("How much do you approve")
    );
    assert_eq!(
        gate["elicitation"]["requested_schema"]["properties"]["approved_amount"]["type"],
        "number"
    );
    let during = gate["during_call"].as_str().unwrap();
    let called = events(&data, &exec)
        .into_iter()
        .find(|e| e["type"] == "tool.called")
        .unwrap();
    assert_eq!(called["data"]["call_id"], during);

    // Another tenant neither sees nor decides it.
    let (code, _) = http(&addr, &globex, "GET", &format!("/v1/gates/{gate_id}"), None);
    assert_eq!(code, 404);
    assert!(asking_gate(&addr, &globex, &exec).is_none());
    let approve = json!({"verdict": "approve", "input": {"approved_amount": 1}});
    let path = format!("/v1/gates/{gate_id}/decision");
    let (code, _) = http(&addr, &globex, "POST", &path, Some(&approve));
    assert_eq!(code, 404);

    // A wrong answer is refused with the reason, and nothing is recorded.
    let before = events(&data, &exec).len();
    let wrong = json!({"verdict": "approve", "input": {"approved_amount": "lots"}});
    let (code, body) = http(&addr, &acme, "POST", &path, Some(&wrong));
    assert_eq!(code, 422, "{body}");
    assert!(body.to_string().contains("approved_amount"), "{body}");
    let out = keel(
        &project,
        &data,
        &["gates", "approve", &gate_id, "--input", "{}"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("approved_amount"));
    assert_eq!(events(&data, &exec).len(), before);

    // Approved from another process while serve holds the call, later than the contract's 5 s
    // timeout after the call began: the person's time does not count against the tool's.
    let since_called = Duration::from_secs(6).saturating_sub(gate_seen.elapsed());
    std::thread::sleep(since_called);
    let out = keel(
        &project,
        &data,
        &[
            "gates",
            "approve",
            &gate_id,
            "--input",
            r#"{"approved_amount": 80}"#,
        ],
    );
    common::ok(out);
    let detail = eventually("the execution to finish", &serve, || {
        finished_detail(&data, &exec)
    });
    assert_eq!(detail, "answer=accept amount=80.0");
    let evs = events(&data, &exec);
    let types: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let at = types.iter().position(|t| *t == "tool.called").unwrap();
    assert_eq!(
        &types[at..at + 4],
        [
            "tool.called",
            "gate.requested",
            "gate.decided",
            "tool.result"
        ]
    );
    assert_eq!(evs[at + 2]["data"]["input"], json!({"approved_amount": 80}));
    assert_eq!(evs[at + 3]["data"]["status"], "ok");
    let ts = |e: &Value| chrono::DateTime::parse_from_rfc3339(e["ts"].as_str().unwrap()).unwrap();
    eprintln!(
        "elicitation: gate.requested {} ms after tool.called (server start and its question), \
         tool.result {} ms after gate.decided (the owner woken by the spine, the answer, the rest of the call)",
        (ts(&evs[at + 1]) - ts(&evs[at])).num_milliseconds(),
        (ts(&evs[at + 3]) - ts(&evs[at + 2])).num_milliseconds()
    );

    // Rejected through the API: the server is told `decline`.
    let exec2 = env
        .agent
        .start(s, "acme", "refund A-2 50")
        .await
        .unwrap()
        .to_string();
    let gate = eventually("a second gate", &serve, || {
        asking_gate(&addr, &acme, &exec2)
    });
    let path = format!("/v1/gates/{}/decision", gate["gate_id"].as_str().unwrap());
    let reject = json!({"verdict": "reject", "reason": "not this one"});
    let (code, body) = http(&addr, &acme, "POST", &path, Some(&reject));
    assert_eq!(code, 200, "{body}");
    let detail = eventually("the second execution to finish", &serve, || {
        finished_detail(&data, &exec2)
    });
    assert_eq!(detail, "answer=decline amount=null");

    // Each call ran its tool once.
    let runs = tool_runs(&log);
    assert_eq!(runs.len(), 2, "{runs:?}");
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cut_by_a_sigkill_during_the_wait_is_never_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("tool-runs.jsonl");
    let project = project(tmp.path(), &log);
    let data = tmp.path().join("data");
    let acme = token(&project, &data, "acme");
    let addr = free_addr();
    let mut serve = start_serve(&project, &data, &addr, &tmp.path().join("serve.log"));
    let env = common::open(&data, &config(&project));
    let s = env.strategies.get("elicit").unwrap();
    let exec = env
        .agent
        .start(s, "acme", "refund A-3 30")
        .await
        .unwrap()
        .to_string();
    let gate = eventually("a gate asking for input", &serve, || {
        asking_gate(&addr, &acme, &exec)
    });
    let gate_id = gate["gate_id"].as_str().unwrap().to_owned();

    // The call's owner dies mid-wait; the person's answer still lands on the spine.
    serve.child.kill().unwrap();
    serve.child.wait().unwrap();
    let answer = tmp.path().join("answer.json");
    std::fs::write(&answer, r#"{"approved_amount": 30}"#).unwrap();
    let answer = answer.to_str().unwrap();
    let out = keel(
        &project,
        &data,
        &["gates", "approve", &gate_id, "--input-file", answer],
    );
    common::ok(out);
    let decided = events(&data, &exec)
        .into_iter()
        .find(|e| e["type"] == "gate.decided")
        .unwrap();
    assert_eq!(decided["data"]["input"], json!({"approved_amount": 30}));

    // A new server picks the execution up: the call's outcome is unknown (the server may have
    // acted on the answer) and MCP cannot deduplicate, so it is not run again: it is settled as
    // interrupted and a person decides whether it runs again (a new, ordinary gate).
    let addr = free_addr();
    let serve = start_serve(&project, &data, &addr, &tmp.path().join("serve2.log"));
    let escalated = eventually("the interrupted call put to a person", &serve, || {
        let (_, list) = http(&addr, &acme, "GET", "/v1/gates", None);
        list.get("gates")
            .unwrap_or(&list)
            .as_array()?
            .iter()
            .find(|g| g["exec_id"] == exec.as_str() && g["gate_id"] != gate_id.as_str())
            .cloned()
    });
    assert!(escalated.get("elicitation").is_none_or(Value::is_null));
    assert_eq!(escalated["action"]["tool"], "refund");
    let reason = escalated["reason"].as_str().unwrap();
    assert!(reason.contains("a person must decide"), "{reason}");
    let evs = events(&data, &exec);
    let types: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types.iter().filter(|t| **t == "tool.called").count(),
        1,
        "{types:?}"
    );
    let at = types.iter().position(|t| *t == "gate.decided").unwrap();
    assert_eq!(types[at + 1], "tool.result");
    assert_eq!(evs[at + 1]["data"]["error_class"], "interrupted");
    assert!(
        tool_runs(&log).is_empty(),
        "the tool's body never ran, before or after"
    );

    // Rejected: nothing runs; the model is told and the execution ends.
    let path = format!(
        "/v1/gates/{}/decision",
        escalated["gate_id"].as_str().unwrap()
    );
    let reject = json!({"verdict": "reject", "reason": "refunded by hand"});
    let (code, body) = http(&addr, &acme, "POST", &path, Some(&reject));
    assert_eq!(code, 200, "{body}");
    let detail = eventually("the execution to end", &serve, || {
        finished_detail(&data, &exec)
    });
    assert_eq!(detail, "the refund failed");
    assert!(tool_runs(&log).is_empty());
    drop(serve);
}
