//! User feedback on executions (issue 15 item 7), as users send it: `POST
//! /v1/executions/{id}/feedback` to a real `keel serve` (tenant-scoped, 400s naming the field,
//! seen by `/v1/sql` and by `keel sql` after the server is gone), and `keel feedback` through
//! the binary (by execution or trace id; a comment on an execution about a data subject is
//! refused; projection rebuilds keep every rating because each is an event).

#![allow(clippy::unwrap_used)]

mod common;
use common::serve::{free_addr, send, serve};
use common::{keel_in_repo as keel, ok};

use serde_json::{Value, json};
use std::path::Path;

fn post(addr: &str, token: &str, path: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let r = send(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    (r.code, r.json())
}

fn token(data: &Path, tenant: &str, role: &str) -> String {
    ok(keel(
        data,
        &["tokens", "create", "--tenant", tenant, "--role", role],
    ))
    .trim()
    .to_owned()
}

fn sql(data: &Path, q: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(&ok(keel(data, &["sql", q, "--format", "json"])))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn feedback_over_http_is_tenant_scoped_validated_and_joined_into_gold_executions() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let acme = token(&data, "acme", "agent");
    let acme_ops = token(&data, "acme", "operator");
    let globex = token(&data, "globex", "agent");
    let addr = free_addr();
    let s = serve(&data, &addr);

    let (code, started) = post(
        &addr,
        &acme,
        "/v1/executions",
        &json!({"goal": "Where is my order A-1017?"}),
    );
    assert_eq!(code, 201, "{started}");
    let exec = started["exec_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/executions/{exec}/feedback");

    let (code, given) = post(
        &addr,
        &acme,
        &path,
        &json!({"rating": 4, "comment": "quick and right"}),
    );
    assert_eq!(code, 200, "{given}");
    assert_eq!(given["rating"], 4);
    let (code, given) = post(&addr, &acme, &path, &json!({"rating": 1}));
    assert_eq!(code, 200, "{given}");

    // Bad input is a 400 naming the field.
    for (body, field) in [
        (json!({"rating": 6}), "rating"),
        (json!({"rating": 0}), "rating"),
        (json!({"rating": -1}), "rating"),
        (json!({"rating": "5"}), "rating"),
        (json!({"comment": "no rating"}), "rating"),
        (json!({"rating": 3, "stars": 3}), "stars"),
        (json!({"rating": 3, "comment": 7}), "comment"),
    ] {
        let (code, err) = post(&addr, &acme, &path, &body);
        assert_eq!(code, 400, "{body}: {err}");
        assert_eq!(err["field"], field, "{body}: {err}");
    }
    let (code, err) = post(
        &addr,
        &acme,
        "/v1/executions/not-an-id/feedback",
        &json!({"rating": 3}),
    );
    assert_eq!(code, 400, "{err}");
    assert_eq!(err["field"], "id", "{err}");

    // Another tenant's execution does not exist for globex.
    let (code, err) = post(&addr, &globex, &path, &json!({"rating": 5}));
    assert_eq!(code, 404, "{err}");

    // gold.executions has the count and the mean, over the API …
    let q = format!(
        "SELECT feedback_count, feedback_rating FROM gold.executions WHERE exec_id = '{exec}'"
    );
    let (code, rows) = post(&addr, &acme_ops, "/v1/sql", &json!({"query": q}));
    assert_eq!(code, 200, "{rows}");
    assert_eq!(rows["rows"], json!([[2, 2.5]]), "{rows}");
    drop(s);

    // … and through `keel sql`, also after the projections are rebuilt from the spine.
    let row = &sql(&data, &q)[0];
    assert_eq!(
        (&row["feedback_count"], &row["feedback_rating"]),
        (&json!(2), &json!(2.5))
    );
    std::fs::remove_file(data.join("observe.db")).unwrap();
    let row = &sql(&data, &q)[0];
    assert_eq!(
        (&row["feedback_count"], &row["feedback_rating"]),
        (&json!(2), &json!(2.5))
    );
}

#[test]
fn keel_feedback_records_a_rating_by_execution_or_trace_id() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = |subject: Option<&str>| -> Value {
        let mut args = vec![
            "run",
            "--strategy",
            "support-short",
            "--json",
            "--tenant",
            "acme",
        ];
        if let Some(s) = subject {
            args.extend(["--subject", s]);
        }
        args.push("Where is my order A-1017?");
        serde_json::from_str(&ok(keel(&data, &args))).unwrap()
    };
    let plain = run(None);
    let exec = plain["exec_id"].as_str().unwrap();
    let trace = plain["trace_id"].as_str().unwrap();

    ok(keel(&data, &["feedback", exec, "--rating", "5"]));
    ok(keel(
        &data,
        &[
            "feedback",
            trace,
            "--rating",
            "2",
            "--comment",
            "slow",
            "--tenant",
            "acme",
        ],
    ));
    let rows = sql(
        &data,
        &format!(
            "SELECT feedback_count, feedback_rating FROM gold.executions WHERE exec_id = '{exec}'"
        ),
    );
    assert_eq!(rows[0]["feedback_count"], 2);
    assert_eq!(rows[0]["feedback_rating"], 3.5);

    // Errors name what is wrong, and nothing is recorded.
    let out = keel(&data, &["feedback", exec, "--rating", "9"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rating") && err.contains("1 (bad) to 5"),
        "{err}"
    );
    let out = keel(
        &data,
        &["feedback", exec, "--rating", "3", "--tenant", "globex"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not found") || err.contains(exec), "{err}");

    // About a data subject: the rating counts, a comment (maybe personal data) is refused.
    let about = run(Some("cust-7"));
    let exec2 = about["exec_id"].as_str().unwrap();
    let out = keel(
        &data,
        &[
            "feedback",
            exec2,
            "--rating",
            "4",
            "--comment",
            "I am Jane, 12 Elm St",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("comment") && err.contains("data subject"),
        "{err}"
    );
    ok(keel(&data, &["feedback", exec2, "--rating", "4"]));
    let rows = sql(
        &data,
        "SELECT exec_id, feedback_count FROM gold.executions ORDER BY started_at",
    );
    let counts: Vec<i64> = rows
        .iter()
        .map(|r| r["feedback_count"].as_i64().unwrap())
        .collect();
    assert_eq!(counts, vec![2, 1]);
    // The refused comment is nowhere in the store.
    let spine = std::fs::read(data.join("spine.db")).unwrap();
    assert!(!spine.windows(6).any(|w| w == b"12 Elm"));
}
