//! Budgets through the `keel` binary: a cost budget is never overshot (the model call that could
//! cross it is not made), a budgeted strategy whose model has no price is refused at start, and
//! a per-tenant rate budget holds across separate `keel run` processes sharing one store.

#![allow(clippy::unwrap_used)]

mod common;
use common::repo;

use std::path::Path;
use std::process::{Command, Output};

/// A scratch configuration: the repo's tools and prices, and one strategy `name` whose scripted
/// model calls `lookup_order` forever.
fn looping_strategy(dir: &Path, name: &str, model: &str, budget: &str) {
    std::fs::create_dir_all(dir.join("strategies")).unwrap();
    std::fs::write(dir.join("prompt.md"), "Look the order up.").unwrap();
    std::fs::write(
        dir.join("loop.yaml"),
        "rules:\n  - then: { call: { tool: lookup_order, args: { order_id: A-1001 } }, output_tokens: 40 }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("strategies/{name}.yaml")),
        format!(
            "name: {name}
prompt: {{ file: ../prompt.md, version: v1 }}
model: {{ provider: scripted, name: {model}, script: ../loop.yaml, max_tokens: 64 }}
tools: [lookup_order]
max_steps: 500
budget: {budget}
success: [ {{ answer_matches: 'never' }} ]
"
        ),
    )
    .unwrap();
}

fn keel_run(dir: &Path, tools: &Path, strategy: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
    c.arg("--data")
        .arg(dir.join("data"))
        .arg("run")
        .arg("--tools")
        .arg(tools)
        .arg("--strategies")
        .arg(dir.join("strategies"))
        .arg("--prices")
        .arg(repo().join("prices.toml"))
        .args(["--strategy", strategy, "--tenant", "acme", "--json"]);
    c
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Regression: the budget was checked only after a model call had been paid for, so a $0.05
/// budget ended at $0.0613. Now the call that could cross it is not made.
#[test]
fn a_cost_budget_is_never_overshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // scripted-large: $3 / $15 per million tokens; about $0.002 per step here.
    looping_strategy(dir, "spender", "scripted-large", "{ max_cost_usd: 0.01 }");
    let out = keel_run(dir, &repo().join("tools"), "spender")
        .arg("spend until the budget ends")
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(v["outcome"], "budget_exhausted", "{v}");
    let spent = v["cost_usd_micros"].as_u64().unwrap();
    assert!(
        spent <= 10_000,
        "spent {spent} µUSD of a 10000 µUSD budget: {v}"
    );
    assert!(spent > 0, "{v}");
    let answer = v["answer"].as_str().unwrap();
    assert!(answer.contains("cost budget"), "{answer}");
}

/// Regression: a budgeted strategy whose model is not in prices.toml started, and then every
/// tool call was refused (its cost unknown) without a word. Now it does not start.
#[test]
fn a_budgeted_strategy_with_an_unpriced_model_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    looping_strategy(
        dir,
        "unpriced",
        "scripted-mystery",
        "{ max_cost_usd: 0.05 }",
    );
    let out = keel_run(dir, &repo().join("tools"), "unpriced")
        .arg("Where is my order 1001?")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("scripted-mystery") && stderr.contains("prices.toml"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing started");
    // The same about a data subject (another way in), and over the API: a 422 naming the model.
    let out = keel_run(dir, &repo().join("tools"), "unpriced")
        .args(["--subject", "cust-7", "Where is my order 1001?"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scripted-mystery"));

    let keel = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
        c.arg("--data").arg(dir.join("data")).args(args);
        c
    };
    let token = keel(&["tokens", "create", "--tenant", "acme", "--role", "agent"])
        .output()
        .unwrap();
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8(token.stdout).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut serve = keel(&["serve", "--addr", &addr])
        .arg("--tools")
        .arg(repo().join("tools"))
        .arg("--strategies")
        .arg(dir.join("strategies"))
        .arg("--prices")
        .arg(repo().join("prices.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "keel serve did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let body = r#"{"goal":"Where is my order 1001?","strategy":"unpriced"}"#;
    let reply = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "POST /v1/executions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            token.trim(),
            body.len()
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    serve.kill().unwrap();
    serve.wait().unwrap();
    assert!(reply.starts_with("HTTP/1.1 422"), "{reply}");
    assert!(
        reply.contains("scripted-mystery") && reply.contains("prices.toml"),
        "{reply}"
    );
}

/// Regression: the rate budget was an in-process limiter, so 12 `keel run` processes each
/// called a tool whose contract allows 10 calls per tenant. Now the budget is decided in the
/// store they share: exactly 10 calls run in total and the rest are refused with the reason.
#[tokio::test(flavor = "multi_thread")]
async fn a_rate_budget_holds_across_separate_keel_processes() {
    use keel_core::payload::{Payload, ToolStatus};
    use keel_spine::{EventLog, SqliteLog, SqliteOptions};

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The demo's lookup_order, allowing 10 calls per hour per tenant (an hour, so that no permit
    // refills while the processes start, however slow the machine).
    let tools = dir.join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    let contract = std::fs::read_to_string(repo().join("tools/lookup_order.yaml")).unwrap();
    assert!(contract.contains("rate: 120/min"));
    std::fs::write(
        tools.join("lookup_order.yaml"),
        contract.replace("rate: 120/min", "rate: 10/hour"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("strategies")).unwrap();
    std::fs::write(dir.join("prompt.md"), "Look the order up once.").unwrap();
    std::fs::write(
        dir.join("once.yaml"),
        "rules:
  - when: { last_tool: none }
    then: { call: { tool: lookup_order, args: { order_id: A-1001 } } }
  - then: { text: done }
",
    )
    .unwrap();
    std::fs::write(
        dir.join("strategies/once.yaml"),
        "name: once
prompt: { file: ../prompt.md, version: v1 }
model: { provider: scripted, name: scripted-small, script: ../once.yaml }
tools: [lookup_order]
max_steps: 5
success: [ { answer_matches: 'done' } ]
",
    )
    .unwrap();
    // The store exists before the processes race for it (`kill list`, a reading command, no
    // longer creates one).
    std::fs::create_dir_all(dir.join("data")).unwrap();
    drop(SqliteLog::open(dir.join("data/spine.db"), SqliteOptions::default()).unwrap());

    let children: Vec<_> = (0..12)
        .map(|i| {
            keel_run(dir, &tools, "once")
                .arg(format!("look order 1001 up ({i})"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let log = SqliteLog::open(dir.join("data/spine.db"), SqliteOptions::default()).unwrap();
    let all = log.read_all(1, 1_000_000).await.unwrap();
    let results: Vec<_> = all
        .iter()
        .filter_map(|c| match &c.event.payload {
            Payload::ToolResult(r) if r.tool == "lookup_order" => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), 12, "every process called the tool once");
    let ran = results
        .iter()
        .filter(|r| r.status == ToolStatus::Ok)
        .count();
    assert_eq!(ran, 10, "exactly the budget ran, across 12 processes");
    for r in results.iter().filter(|r| r.status != ToolStatus::Ok) {
        assert_eq!(r.status, ToolStatus::Refused, "{r:?}");
        assert!(
            r.errors.iter().any(|e| e.contains("rate budget exhausted")),
            "{r:?}"
        );
    }
}
