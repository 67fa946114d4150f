//! API tokens as credentials, against a real `keel serve` process: `keel tokens create` prints the
//! token once; `keel tokens list` shows id, tenant, roles, name, created, expires, last used and
//! status, never a secret; `keel tokens revoke` (or an admin's Revoke button in the web UI, with
//! the session's CSRF token) makes the very next request with it a 401, in the running server; an
//! expired token is refused the same way; an admin sees and revokes only their tenant's tokens.

#![allow(clippy::unwrap_used)]

mod common;
use common::keel;
use common::serve::{Reply, free_addr, send, serve};

use serde_json::Value;
use std::path::Path;

/// `keel tokens create …`: the token (stdout, one line) and its id (from the stderr message).
fn create(data: &Path, args: &[&str]) -> (String, String) {
    let mut all = vec!["tokens", "create"];
    all.extend_from_slice(args);
    let out = keel(data, &all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "only the token on stdout: {stdout}"
    );
    let token = stdout.trim().to_owned();
    assert!(token.starts_with("keel_"), "{token}");
    let id = stderr
        .split_whitespace()
        .nth(1)
        .filter(|w| w.len() == 12)
        .unwrap_or_else(|| panic!("no id in {stderr}"))
        .to_owned();
    (token, id)
}

fn get(addr: &str, token: &str) -> u16 {
    send(
        addr,
        &format!(
            "GET /v1/executions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        ),
    )
    .code
}

fn list_json(data: &Path) -> Vec<Value> {
    let out = keel(data, &["tokens", "list", "--json"]);
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn row<'a>(rows: &'a [Value], id: &str) -> &'a Value {
    rows.iter().find(|r| r["id"] == id).unwrap()
}

/// Logs in to the web UI with `token`; the session cookie (`keel_session=…`).
fn login(addr: &str, token: &str) -> String {
    let body = format!("token={token}");
    let r = send(
        addr,
        &format!(
            "POST /ui/login HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(r.code, 303, "{}", r.body);
    r.header("set-cookie")
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned()
}

fn page(addr: &str, cookie: &str) -> Reply {
    send(
        addr,
        &format!(
            "GET /ui/tokens HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
        ),
    )
}

fn ui_revoke(addr: &str, cookie: &str, csrf: &str, id: &str) -> Reply {
    let body = format!("csrf={csrf}&id={id}");
    send(
        addr,
        &format!(
            "POST /ui/tokens/revoke HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\n\
             Cookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn csrf_of(html: &str) -> String {
    let (_, rest) = html.split_once("name=\"csrf\" value=\"").unwrap();
    rest.chars().take_while(|c| *c != '"').collect()
}

#[test]
fn tokens_are_listed_without_secrets_and_a_revoked_or_expired_one_is_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Reading commands on a directory without tokens say so.
    let none = keel(&data, &["tokens", "list"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no tokens at"));

    let (bot, bot_id) = create(
        &data,
        &["--tenant", "acme", "--role", "agent", "--name", "bot"],
    );
    let (admin, _) = create(&data, &["--tenant", "acme", "--role", "admin"]);
    let (other, other_id) = create(&data, &["--tenant", "globex", "--role", "admin"]);
    let (brief, brief_id) = create(
        &data,
        &["--tenant", "acme", "--role", "agent", "--expires-in", "1s"],
    );
    for bad in ["0d", "10y", "d", "5", "99999999999999999999d"] {
        let out = keel(
            &data,
            &[
                "tokens",
                "create",
                "--tenant",
                "a",
                "--role",
                "agent",
                "--expires-in",
                bad,
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--expires-in"));
    }

    // The table: a header, one row per token, never a secret.
    let table = keel(&data, &["tokens", "list"]);
    let table = String::from_utf8(table.stdout).unwrap();
    let mut lines = table.lines();
    assert_eq!(
        lines.next(),
        Some("id\ttenant\troles\tname\tcreated\texpires\tlast used\tstatus")
    );
    assert_eq!(lines.count(), 4, "{table}");
    for secret in [&bot, &admin, &other, &brief] {
        assert!(!table.contains(secret.as_str()), "a secret in the list");
    }
    assert!(
        table.contains(&format!("{bot_id}\tacme\tagent\tbot\t")),
        "{table}"
    );
    let rows = list_json(&data);
    assert_eq!(row(&rows, &bot_id)["last_used_at"], Value::Null);
    assert_eq!(row(&rows, &bot_id)["expires_at"], Value::Null);
    assert!(row(&rows, &brief_id)["expires_at"].is_string());

    let addr = free_addr();
    let _server = serve(&data, &addr);
    assert_eq!(get(&addr, &bot), 200);
    let rows = list_json(&data);
    assert!(
        row(&rows, &bot_id)["last_used_at"].is_string(),
        "use recorded"
    );
    assert_eq!(row(&rows, &bot_id)["status"], "active");

    // Revoked from another process: the running server refuses the very next request.
    let out = keel(&data, &["tokens", "revoke", &bot_id]);
    assert!(out.status.success());
    assert_eq!(get(&addr, &bot), 401);
    assert_eq!(row(&list_json(&data), &bot_id)["status"], "revoked");
    let again = keel(&data, &["tokens", "revoke", &bot_id]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already revoked"));
    let unknown = keel(&data, &["tokens", "revoke", "0123456789ab"]);
    assert_eq!(unknown.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        msg.contains("no token with id") && msg.contains(&other_id),
        "{msg}"
    );

    // Expired: refused like a revoked one (1 s of expiry has passed after 2 s).
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(get(&addr, &brief), 401);
    assert_eq!(row(&list_json(&data), &brief_id)["status"], "expired");

    // The web UI, for admins: their tenant's tokens only, revoke with the session's CSRF token.
    let (third, third_id) = create(&data, &["--tenant", "acme", "--role", "agent"]);
    assert_eq!(get(&addr, &third), 200);
    let cookie = login(&addr, &admin);
    let p = page(&addr, &cookie);
    assert_eq!(p.code, 200, "{}", p.body);
    assert!(p.body.contains(&third_id) && p.body.contains(&bot_id));
    assert!(!p.body.contains(&other_id), "another tenant's token shown");
    for secret in [&bot, &admin, &other, &third] {
        assert!(!p.body.contains(secret.as_str()), "a secret in the page");
    }
    let csrf = csrf_of(&p.body);
    assert_eq!(ui_revoke(&addr, &cookie, "forged", &third_id).code, 403);
    assert_eq!(get(&addr, &third), 200, "a refused form revokes nothing");
    let r = ui_revoke(&addr, &cookie, &csrf, &third_id);
    assert_eq!(r.code, 200);
    assert!(r.body.contains("is revoked"), "{}", r.body);
    assert_eq!(get(&addr, &third), 401);
    // Another tenant's id is not found, and that token keeps working.
    let r = ui_revoke(&addr, &cookie, &csrf, &other_id);
    assert!(r.body.contains("No token of this tenant"), "{}", r.body);
    assert_eq!(get(&addr, &other), 200);
    // Not an admin: no token page.
    let (approver, _) = create(&data, &["--tenant", "acme", "--role", "approver"]);
    assert_eq!(page(&addr, &login(&addr, &approver)).code, 403);
}
