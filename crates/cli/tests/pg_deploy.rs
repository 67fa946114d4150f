//! Agents on the PostgreSQL spine, as users run them: the real `keel` binary with a keel.toml
//! whose `spine.url` names a throwaway PostgreSQL 18 server (started by the test from
//! `$KEEL_TEST_PG_BIN`), and two local directories `a` and `b` standing for two machines (each
//! keeps only its local files: tokens, snapshots, the shop).
//!
//! Checked: `keel run` on one machine, its events and gate seen and decided on the other, the
//! approved refund run by a `keel worker` of the first, the kill-switch set on one refusing a run
//! on the other; `keel serve` A and B: an execution started through A is read through B with a
//! token made on A, which, revoked on B, both refuse; a refund approved through B is run on by
//! A's workers; a kill-switch set through server B stops a runaway `keel run` on A at its next
//! step; no `spine.db` or `auth.db` is written anywhere. Bad spine URLs (unreachable, wrong password, `sslmode=require`
//! against a server without TLS) are errors naming `spine.url` and the file. The URL carries a
//! password, and no command ever prints it.

#![allow(clippy::unwrap_used)]

mod common;
use common::repo;
use common::serve::{Serve, free_addr, send, serve_with};

use keel_memory::pgserver::PgServer;
use keel_spine::{EventLog, PgEventLog, PgOptions};
use serde_json::Value;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The password in every spine URL; it must never be printed.
const SECRET: &str = "pw-Jd83-spine-never-printed";

/// `keel --config CONFIG --data DATA ARGS…` from the repository's root (its tools and
/// strategies). Fails the test if the password shows in stdout or stderr.
/// Longest any one command of these tests may take: a hang fails the test, naming the command.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(180);

fn keel(config: &Path, data: &Path, args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(repo())
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("KEEL_SPINE_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = match rx.recv_timeout(PATIENCE) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid]).status();
            let out = rx.recv().unwrap().unwrap();
            panic!(
                "keel {args:?} did not end within {PATIENCE:?}; its stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(SECRET),
            "keel {args:?} printed the spine's password on {name}:\n{text}"
        );
    }
    out
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "keel failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(out: Output) -> String {
    assert!(!out.status.success(), "keel succeeded where it must fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The value after `key` on a `key   value` line of `keel run`'s output.
fn field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

/// A keel.toml in `dir` whose spine is `url`.
fn config(dir: &Path, url: &str) -> std::path::PathBuf {
    let file = dir.join("keel.toml");
    std::fs::write(&file, format!("[spine]\nurl = \"{url}\"\n")).unwrap();
    file
}

fn get(addr: &str, token: &str, path: &str) -> (u16, Value) {
    let r = send(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    );
    (r.code, r.json())
}

/// Polls `f` every 20 ms until it gives a value (at most 60 s: a hung test fails, it is not a
/// timing assertion).
fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn agents_run_on_the_postgres_spine_across_two_machines() {
    let pg = PgServer::start().unwrap();
    // Trust authentication ignores the password; it is there to be hidden.
    let url = pg
        .url("postgres")
        .replacen("postgres@", &format!("postgres:{SECRET}@"), 1);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &url);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));

    // A run on machine A stops at the refund's gate.
    let out = ok(keel(
        &cfg,
        &a,
        &[
            "run",
            "--tenant",
            "acme",
            "Please refund order 1005, it arrived damaged",
        ],
    ));
    let exec = field(&out, "exec_id");
    assert!(
        field(&out, "outcome").starts_with("suspended_at_gate"),
        "{out}"
    );

    // Machine B reads its events and its gate from the shared spine, and approves it.
    let events = ok(keel(&cfg, &b, &["events", &exec]));
    assert!(events.lines().count() >= 3, "{events}");
    let listed = ok(keel(&cfg, &b, &["gates", "list", "--tenant", "acme"]));
    let gate = listed
        .lines()
        .find(|l| l.contains(&exec))
        .and_then(|l| l.split('\t').next())
        .unwrap_or_else(|| panic!("no gate of {exec} in:\n{listed}"))
        .to_owned();
    ok(keel(
        &cfg,
        &b,
        &[
            "gates", "approve", &gate, "--reason", "checked", "--as", "alice",
        ],
    ));

    // A worker on machine A runs it on after the decision, to the end.
    ok(keel(&cfg, &a, &["worker", "--once"]));
    let events = ok(keel(&cfg, &b, &["events", &exec]));
    assert!(
        events.contains("\"gate.decided\"") && events.contains("\"exec.finished\""),
        "{events}"
    );
    assert!(
        events.contains("issue_customer_refund"),
        "the approved refund ran: {events}"
    );

    // A kill-switch set on B stops a run on A before its first step.
    ok(keel(&cfg, &b, &["kill", "set", "tenant", "globex"]));
    let out = ok(keel(
        &cfg,
        &a,
        &["run", "--tenant", "globex", "Where is my order A-1017?"],
    ));
    assert_eq!(field(&out, "outcome"), "killed", "{out}");
    ok(keel(&cfg, &a, &["kill", "clear", "tenant", "globex"]));

    // Two servers on the two machines, one token made on A: an execution started through A is
    // read through B with it.
    let ta = ok(keel(
        &cfg,
        &a,
        &[
            "tokens", "create", "--tenant", "acme", "--role", "agent", "--role", "approver",
        ],
    ))
    .trim()
    .to_owned();
    let (addr_a, addr_b) = (free_addr(), free_addr());
    let global = [OsStr::new("--config"), cfg.as_os_str()];
    let _sa = serve_with(&global, &a, &addr_a);
    let _sb = serve_with(&global, &b, &addr_b);
    let post = |addr: &str, path: &str, body: Value| {
        let body = body.to_string();
        send(
            addr,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ta}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let started = post(
        &addr_a,
        "/v1/executions",
        serde_json::json!({"goal": "Where is my order A-1017?"}),
    );
    assert_eq!(started.code, 201, "{}", started.body);
    let id = started.json()["exec_id"].as_str().unwrap().to_owned();
    let (code, seen) = get(&addr_b, &ta, &format!("/v1/executions/{id}"));
    assert_eq!(code, 200, "{seen}");
    assert_eq!(seen["exec_id"].as_str(), Some(id.as_str()), "{seen}");

    // A refund started through A waits at its gate; approved through B, the workers attached
    // to A (a `keel worker` and A's own) run it on. The delay is printed, not asserted.
    let _worker = Serve(
        Command::new(env!("CARGO_BIN_EXE_keel"))
            .current_dir(repo())
            .arg("--config")
            .arg(&cfg)
            .arg("--data")
            .arg(&a)
            .arg("worker")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let refund = post(
        &addr_a,
        "/v1/executions",
        serde_json::json!({"goal": "Please refund order 1005, it arrived damaged"}),
    );
    assert_eq!(refund.code, 201, "{}", refund.body);
    let refund = refund.json()["exec_id"].as_str().unwrap().to_owned();
    let gate = wait_for(|| {
        let (_, v) = get(&addr_b, &ta, "/v1/gates?status=pending");
        v["gates"].as_array().and_then(|gates| {
            gates
                .iter()
                .find(|g| g["exec_id"] == refund.as_str())
                .and_then(|g| g["gate_id"].as_str().map(str::to_owned))
        })
    });
    let approved = Instant::now();
    let decided = post(
        &addr_b,
        &format!("/v1/gates/{gate}/decision"),
        serde_json::json!({"verdict": "approve", "reason": "checked on B"}),
    );
    assert_eq!(decided.code, 200, "{}", decided.body);
    let status = wait_for(|| {
        let (_, v) = get(&addr_a, &ta, &format!("/v1/executions/{refund}"));
        let s = v["status"].as_str().unwrap_or("running").to_owned();
        (s != "running" && s != "at_gate").then_some(s)
    });
    eprintln!(
        "the refund approved through B ended ({status}) on A's workers {} ms after the approval",
        approved.elapsed().as_millis()
    );
    assert_eq!(status, "success");

    // Revoked on B: refused by both servers at the next request.
    let listed = ok(keel(&cfg, &b, &["tokens", "list", "--tenant", "acme"]));
    let token_id = listed
        .lines()
        .find(|l| l.contains("agent"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no token listed on B:\n{listed}"))
        .to_owned();
    ok(keel(&cfg, &b, &["tokens", "revoke", &token_id]));
    for addr in [&addr_a, &addr_b] {
        let (code, v) = get(addr, &ta, &format!("/v1/executions/{id}"));
        assert_eq!(code, 401, "{v}");
    }

    for dir in [&a, &b] {
        for file in ["spine.db", "auth.db"] {
            assert!(
                !dir.join(file).exists(),
                "{} has a {file}: they live in PostgreSQL",
                dir.display()
            );
        }
    }
}

#[test]
fn bad_spine_urls_are_named_with_their_file_and_never_show_the_password() {
    let pg = PgServer::start().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(pg.add_password_role("keel", "the-right-one-Ws2"))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = ["run", "Where is my order A-1017?"];
    let port = pg.port();

    // A wrong password.
    let cfg = config(
        tmp.path(),
        &format!("postgres://keel:{SECRET}@127.0.0.1:{port}/postgres"),
    );
    let err = fails(keel(&cfg, &data, &run));
    assert!(
        err.contains(&format!(
            "keel.toml: spine.url: cannot open the PostgreSQL spine at postgres://keel:***@127.0.0.1:{port}/postgres"
        )) && err.contains("password authentication failed"),
        "{err}"
    );

    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(
        tmp.path(),
        &format!("postgres://keel:{SECRET}@127.0.0.1:{closed}/postgres"),
    );
    let err = fails(keel(
        &cfg,
        &data,
        &["events", "0190b6f4-0000-7000-8000-000000000000"],
    ));
    assert!(
        err.contains("keel.toml: spine.url: cannot open the PostgreSQL spine at postgres://keel:***@127.0.0.1:"),
        "{err}"
    );

    // TLS required of a server without TLS.
    let cfg = config(
        tmp.path(),
        &format!("postgres://keel:{SECRET}@127.0.0.1:{port}/postgres?sslmode=require"),
    );
    let err = fails(keel(&cfg, &data, &run));
    assert!(
        err.contains("keel.toml: spine.url: cannot open the PostgreSQL spine")
            && err.contains("TLS"),
        "{err}"
    );
    // `keel config check` reaches the spine as the commands do, TLS included.
    let err = fails(keel(&cfg, &data, &["config", "check"]));
    assert!(
        err.contains("keel.toml: spine.url: cannot connect to postgres://keel:***@127.0.0.1:")
            && err.contains("TLS"),
        "{err}"
    );

    // The right password works.
    let cfg = config(
        tmp.path(),
        &format!("postgres://keel:the-right-one-Ws2@127.0.0.1:{port}/postgres"),
    );
    let out = ok(keel(&cfg, &data, &run));
    assert_eq!(field(&out, "outcome"), "success", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_switch_set_through_server_b_stops_a_run_on_machine_a_at_its_next_step() {
    use keel_core::payload::{Outcome, Payload};
    let pg = PgServer::start().unwrap();
    let url = pg
        .url("postgres")
        .replacen("postgres@", &format!("postgres:{SECRET}@"), 1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = config(dir, &url);
    let (a, b) = (dir.join("a"), dir.join("b"));
    common::write_runaway(dir);
    let operator = ok(keel(
        &cfg,
        &b,
        &["tokens", "create", "--tenant", "acme", "--role", "operator"],
    ))
    .trim()
    .to_owned();
    let addr_b = free_addr();
    let _sb = serve_with(&[OsStr::new("--config"), cfg.as_os_str()], &b, &addr_b);

    let run = Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(repo())
        .arg("--config")
        .arg(&cfg)
        .arg("--data")
        .arg(&a)
        .arg("run")
        .arg("--strategies")
        .arg(dir.join("strategies"))
        .args([
            "--strategy",
            "runaway",
            "--tenant",
            "acme",
            "--json",
            "loop forever",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Wait until it is well into its loop (read from the shared spine).
    let log = PgEventLog::connect(&url, PgOptions::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let exec = loop {
        assert!(Instant::now() < deadline, "the execution never got going");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Some(exec) = log
            .list_unfinished()
            .await
            .unwrap()
            .first()
            .map(|s| s.exec_id)
        else {
            continue;
        };
        let steps = log
            .read(exec, 1)
            .await
            .unwrap()
            .iter()
            .filter(|e| matches!(e.payload, Payload::StepCompleted(_)))
            .count();
        if steps >= 20 {
            break exec;
        }
    };

    // The switch, through server B.
    let body = serde_json::json!({"reason": "runaway loop"}).to_string();
    let set = tokio::task::spawn_blocking({
        let addr_b = addr_b.clone();
        move || {
            send(
                &addr_b,
                &format!(
                    "PUT /v1/kill-switches/strategy/runaway HTTP/1.1\r\nHost: x\r\n\
                     Authorization: Bearer {operator}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                ),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(set.code, 200, "{}", set.body);
    // The switch is committed by now (same machine, same clock as the events' stamps).
    let set_at = keel_spine::clock::Clock::now(&keel_spine::clock::SystemClock);

    let out = tokio::task::spawn_blocking(move || run.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("killed"), "{stdout}");
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !String::from_utf8_lossy(bytes).contains(SECRET),
            "keel run printed the password on {name}"
        );
    }

    // After the switch's commit at most the step in flight completed. (By time: offsets follow
    // the appending transactions' ids, which need not be the order their commits became
    // visible in.)
    let all = log.read_all(1, 10_000_000).await.unwrap();
    assert!(
        all.iter()
            .any(|c| matches!(&c.event.payload, Payload::KillSet(k) if k.name == "runaway"))
    );
    let steps_after = all
        .iter()
        .filter(|c| c.event.exec_id == exec && c.event.ts > set_at)
        .filter(|c| matches!(c.event.payload, Payload::StepCompleted(_)))
        .count();
    eprintln!("steps completed after the kill-switch set through B: {steps_after}");
    assert!(
        steps_after <= 1,
        "{steps_after} steps completed after the kill"
    );
    let Payload::ExecFinished(f) = &all
        .iter()
        .rfind(|c| c.event.exec_id == exec)
        .unwrap()
        .event
        .payload
    else {
        panic!("the execution did not finish");
    };
    assert_eq!(f.outcome, Outcome::Killed);
}
