//! `keel tools check|list|import-mcp` and `keel bench tools` as users run them: the real binary.

// Test helpers too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
use common::keel;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where scripts/test-peers installed the real MCP servers.
fn peers() -> PathBuf {
    std::env::var_os("KEEL_TEST_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/keel-test-peers")
        })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn tools_check_accepts_the_demo_folder() {
    let data = tempfile::tempdir().unwrap();
    let dir = repo().join("tools");
    let out = keel(data.path(), &["tools", "check", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("5 contract(s), all valid"));
}

#[test]
fn tools_check_prints_every_problem_one_a_line_and_fails() {
    let data = tempfile::tempdir().unwrap();
    let dir = repo().join("crates/tools/tests/fixtures/broken");
    let out = keel(data.path(), &["tools", "check", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() >= 15, "{stdout}");
    for l in &lines {
        let parts: Vec<&str> = l.splitn(3, ": ").collect();
        assert_eq!(parts.len(), 3, "not `<file>: <field path>: <what>`: {l}");
        assert!(parts[0].ends_with(".yaml"), "{l}");
    }
    assert!(
        stdout.contains("many_problems.yaml: consequence_tier: must be an integer 0–3, found 7"),
        "{stdout}"
    );
    assert!(
        stdout.contains("unknown_fields.yaml: retries: unknown field"),
        "{stdout}"
    );
    assert!(stdout.contains(
        "irreversible_low_tier.yaml: consequence_tier: an irreversible tool must be tier 3"
    ));
    assert!(text(&out.stderr).contains(&format!("{} problem(s)", lines.len())));
    // A folder that does not exist is an error naming it.
    let out = keel(data.path(), &["tools", "check", "/no/such/folder"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/no/such/folder"));
}

/// Regression: a key field missing from the input schema passed `check` (every call then failed
/// at run time), and cross-file problems of files with other problems were reported only once
/// those were fixed. Now one run reports all of them.
#[test]
fn tools_check_reports_key_fields_and_cross_file_problems_in_one_pass() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("tools");
    std::fs::create_dir(&dir).unwrap();
    let contract = |name: &str, input: &str, key: &str, extra: &str| {
        format!(
            "name: {name}\ndescription: d\nschema: {{input: {input}, output: {{type: object}}}}\n\
             side_effect: reversible\nconsequence_tier: 1\nidempotency: {{mode: required, key: {key}}}\n\
             adapter: {{kind: http, url: \"http://127.0.0.1:9/x\"}}\n{extra}"
        )
    };
    let room = "{type: object, properties: {room: {type: string}}, required: [room]}";
    let files = [
        // The key names a field the schema lacks, and the compensation tool does not exist.
        (
            "a.yaml",
            contract(
                "book",
                room,
                "[booking_id, exec_id]",
                "failure_policy: {compensation: unbook}\n",
            ),
        ),
        // A duplicate name in a file that also has a per-file problem.
        (
            "b.yaml",
            contract("book", room, "[room]", "timeout: soon\n"),
        ),
        // A required key field the schema declares but does not require.
        (
            "c.yaml",
            contract(
                "hold",
                "{type: object, properties: {room: {type: string}}}",
                "[room, exec_id]",
                "",
            ),
        ),
        ("d.yaml", contract("fine", room, "[room, tenant]", "")),
    ];
    for (file, text) in &files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    let out = keel(data.path(), &["tools", "check", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let a = dir.join("a.yaml");
    let b = dir.join("b.yaml");
    let c = dir.join("c.yaml");
    for expected in [
        format!(
            "{}: idempotency.key.0: \"booking_id\" is not a property of schema.input",
            a.display()
        ),
        format!(
            "{}: failure_policy.compensation: names \"unbook\", which is not a tool in this folder",
            a.display()
        ),
        format!("{}: timeout: ", b.display()),
        format!(
            "{}: name: tool \"book\" is already defined in {}",
            b.display(),
            a.display()
        ),
        format!(
            "{}: idempotency.key.0: \"room\" is not in schema.input.required",
            c.display()
        ),
    ] {
        assert!(
            stdout.contains(&expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("d.yaml"), "{stdout}");
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
}

#[test]
fn tools_list_prints_one_json_object_per_tool() {
    let data = tempfile::tempdir().unwrap();
    let dir = repo().join("tools");
    let out = keel(
        data.path(),
        &["tools", "list", "--dir", dir.to_str().unwrap(), "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tools: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(tools.len(), 5);
    let refund = tools
        .iter()
        .find(|t| t["tool"] == "issue_customer_refund")
        .unwrap();
    assert_eq!(refund["consequence_tier"], 3);
    assert_eq!(refund["cost_est_micros"], 2000);
}

#[test]
fn import_mcp_drafts_contracts_that_pass_check() {
    let server = peers().join("venv/bin/mcp-server-time");
    assert!(
        server.exists(),
        "{} is missing: run scripts/test-peers",
        server.display()
    );
    let data = tempfile::tempdir().unwrap();
    let out_dir = data.path().join("imported");
    let out = keel(
        data.path(),
        &[
            "tools",
            "import-mcp",
            "--out",
            out_dir.to_str().unwrap(),
            server.to_str().unwrap(),
            "--local-timezone",
            "UTC",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = text(&out.stdout);
    assert!(
        written.contains("get_current_time.yaml") && written.contains("convert_time.yaml"),
        "{written}"
    );
    let out = keel(data.path(), &["tools", "check", out_dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // Importing again does not overwrite reviewed files unless asked to.
    let out = keel(
        data.path(),
        &[
            "tools",
            "import-mcp",
            "--out",
            out_dir.to_str().unwrap(),
            server.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--force"));
}

/// The everything server over Streamable HTTP on a free loopback port; killed on drop.
struct HttpPeer(std::process::Child);

impl Drop for HttpPeer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Regression: the binary panicked ("No rustls crypto provider is configured", exit 101) before
/// sending a request to any Streamable HTTP MCP server, since only building a tool runner
/// installed the TLS provider.
#[test]
fn import_mcp_over_streamable_http_writes_contracts_and_exits_0() {
    let server = peers().join("node_modules/.bin/mcp-server-everything");
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
    let _peer = HttpPeer(
        Command::new(&server)
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Polls until the peer listens (a readiness wait, not a timed assertion).
    let listening = (0..400).any(|_| {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            false
        }
    });
    assert!(listening, "the everything server did not listen on {port}");
    let data = tempfile::tempdir().unwrap();
    let out_dir = data.path().join("imported");
    let url = format!("http://127.0.0.1:{port}/mcp");
    let out = keel(
        data.path(),
        &[
            "tools",
            "import-mcp",
            "--out",
            out_dir.to_str().unwrap(),
            &url,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let written = text(&out.stdout);
    assert!(written.contains("echo.yaml"), "{written}");
    assert!(out_dir.join("echo.yaml").exists());
    let out = keel(data.path(), &["tools", "check", out_dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn bench_tools_json_prints_one_object() {
    let data = tempfile::tempdir().unwrap();
    let out = keel(data.path(), &["bench", "tools", "--json", "--calls", "10"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    for k in [
        "baseline_read_builtin_us",
        "read_only_call_us",
        "keyed_call_us",
    ] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{k}: {v}");
    }
    // An overhead is a difference of two noisy medians: on a busy machine it may be zero or
    // below, so only its presence as a finite number is a promise.
    for k in ["read_only_overhead_us", "keyed_overhead_us"] {
        assert!(v[k].as_f64().unwrap().is_finite(), "{k}: {v}");
    }
}

/// A keyed call made by `keel run` (two processes, one after the other, on one store): the
/// ledger row in the spine's file names the call the spine recorded and holds its result, and
/// the tool's rate budget was taken in the same file: the ledger and the rates are written by the
/// spine's own commits (decision 121), so they agree with the events.
#[test]
fn keel_run_records_a_keyed_calls_ledger_row_and_rate_in_the_spine() {
    let dir = tempfile::tempdir().unwrap();
    for order in ["1030", "1031"] {
        let goal = format!("This is terrible, order A-{order} arrived broken");
        let args = [
            "run",
            "--json",
            "--strategy",
            "support-short",
            "--tenant",
            "acme",
            goal.as_str(),
        ];
        let exec: serde_json::Value =
            serde_json::from_str(&common::ok(common::keel_in_repo(dir.path(), &args))).unwrap();
        let events = common::events(dir.path(), &exec);
        let called = events
            .iter()
            .find(|e| e["type"] == "tool.called" && e["data"]["tool"] == "notify_team")
            .unwrap_or_else(|| panic!("no notify_team call in {events:?}"));
        let call_id = called["data"]["call_id"].as_str().unwrap();
        let key = called["data"]["idempotency_key"].as_str().unwrap();
        let result = events
            .iter()
            .find(|e| e["type"] == "tool.result" && e["data"]["call_id"] == call_id)
            .unwrap();
        assert_eq!(result["data"]["status"], "ok", "{result}");
        let spine = rusqlite::Connection::open(dir.path().join("spine.db")).unwrap();
        let (state, ledger_call, output_ref): (String, String, Option<String>) = spine
            .query_row(
                "SELECT state, call_id, output_ref FROM tool_ledger WHERE tenant = 'acme' AND key = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (state.as_str(), ledger_call.as_str()),
            ("finished", call_id)
        );
        assert_eq!(output_ref.as_deref(), result["data"]["output_ref"].as_str());
    }
    let spine = rusqlite::Connection::open(dir.path().join("spine.db")).unwrap();
    let rated: i64 = spine
        .query_row(
            "SELECT count(*) FROM tool_rates WHERE tenant = 'acme' AND tool = 'notify_team'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        rated, 1,
        "one budget row for the tenant's tool, shared by both runs"
    );
}
