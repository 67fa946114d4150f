//! Per-tenant monthly cost budgets (issue 15 item 8), through the `keel` binary and a real
//! `keel serve`: `keel budgets set` records the budget; the alarm (`budget.alarmed`) is appended
//! once a month when spend reaches its threshold; a hard stop refuses new executions of that
//! tenant only, from `keel run` (an error naming the budget) and `POST /v1/executions` (402).

#![allow(clippy::unwrap_used)]

mod common;
use common::serve::{free_addr, send, serve};
use common::{keel_in_repo as keel, ok};

use serde_json::{Value, json};
use std::path::Path;

fn run(data: &Path, tenant: &str) -> std::process::Output {
    keel(
        data,
        &[
            "run",
            "--strategy",
            "support-short",
            "--json",
            "--tenant",
            tenant,
            "Where is my order A-1017?",
        ],
    )
}

/// The control stream's `budget.alarmed` events.
fn alarms(data: &Path) -> Vec<Value> {
    let log = keel_spine::SqliteLog::open(data.join("spine.db"), Default::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    use keel_spine::EventLog;
    rt.block_on(log.read(keel_core::control::CONTROL_STREAM, 1))
        .unwrap()
        .iter()
        .filter_map(|e| match &e.payload {
            keel_core::payload::Payload::BudgetAlarmed(a) => {
                Some(json!({"tenant": a.tenant, "month": a.month}))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_spent_budget_alarms_once_and_its_hard_stop_refuses_new_executions_of_that_tenant() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // One execution to learn what one costs (and to create the store).
    let first: Value = serde_json::from_str(&ok(run(&data, "acme"))).unwrap();
    let micros = first["cost_usd_micros"].as_u64().unwrap_or(0);
    assert!(micros > 0, "{first}");

    // A budget just under what acme already spent, with a hard stop; globex has none.
    let budget = format!("{}", micros as f64 * 0.9 / 1e6);
    ok(keel(
        &data,
        &[
            "budgets",
            "set",
            "acme",
            "--monthly-usd",
            &budget,
            "--alarm-at",
            "80",
            "--hard-stop",
        ],
    ));
    let listed = ok(keel(&data, &["budgets", "list"]));
    assert!(
        listed.contains("acme") && listed.contains("hard stop"),
        "{listed}"
    );
    assert!(alarms(&data).is_empty());

    let out = run(&data, "acme");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tenant acme has spent") && err.contains("monthly cost budget"),
        "{err}"
    );
    ok(run(&data, "globex"));
    // Refused again: the alarm stays one for the month.
    assert!(!run(&data, "acme").status.success());
    let fired = alarms(&data);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["tenant"], "acme");

    // Over HTTP: 402 with the same message for acme, 201 for globex.
    let token = |t: &str| {
        ok(keel(
            &data,
            &["tokens", "create", "--tenant", t, "--role", "agent"],
        ))
        .trim()
        .to_owned()
    };
    let (acme, globex) = (token("acme"), token("globex"));
    let addr = free_addr();
    let _s = serve(&data, &addr);
    let start_keyed = |token: &str, key: Option<&str>| {
        let body = json!({"goal": "Where is my order A-1017?"}).to_string();
        let key = key.map_or(String::new(), |k| format!("Idempotency-Key: {k}\r\n"));
        send(
            &addr,
            &format!(
                "POST /v1/executions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n{key}\
                 Connection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let start = |token: &str| start_keyed(token, None);
    let r = start(&acme);
    assert_eq!(r.code, 402, "{}", r.body);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("monthly cost budget"),
        "{}",
        r.body
    );
    let r = start(&globex);
    assert_eq!(r.code, 201, "{}", r.body);

    // A keyed start made before the budget ran out is answered again once it has: a retry
    // started nothing new, so the hard stop does not refuse it; a new key is refused.
    ok(keel(
        &data,
        &["budgets", "set", "acme", "--monthly-usd", "100"],
    ));
    let first = start_keyed(&acme, Some("order-1017"));
    assert_eq!(first.code, 201, "{}", first.body);
    ok(keel(
        &data,
        &[
            "budgets",
            "set",
            "acme",
            "--monthly-usd",
            &budget,
            "--hard-stop",
        ],
    ));
    let again = start_keyed(&acme, Some("order-1017"));
    assert_eq!(again.code, 200, "{}", again.body);
    assert_eq!(
        again.json()["exec_id"],
        first.json()["exec_id"],
        "{}",
        again.body
    );
    assert_eq!(start_keyed(&acme, Some("order-1018")).code, 402);

    // Raising the budget lets acme start again.
    ok(keel(
        &data,
        &["budgets", "set", "acme", "--monthly-usd", "100"],
    ));
    ok(run(&data, "acme"));
}
