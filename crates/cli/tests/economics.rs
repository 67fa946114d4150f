//! `keel economics` through the binary, on a fixed ledger (two tenants, three strategy versions,
//! three days; `common/ledger.rs`): every figure against values computed by hand, the
//! per-strategy table against `keel sql` running the seed's query, one tenant's view holding
//! nothing of the other's; and `GET /v1/economics` and `/ui/economics` from a real `keel serve`,
//! where each tenant's token sees only its own tenant (issue 15 item 6).

#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/ledger.rs"]
mod ledger;

use common::serve::{free_addr, send, serve};
use common::{keel, ok};
use ledger::{LONG, SECRET, SHORT, day};
use serde_json::Value;
use std::path::Path;

/// The seed's economics query, verbatim.
const SEED: &str = "SELECT strategy_version, COUNT(*) AS executions, AVG(outcome_success::int) AS success_rate, APPROX_PERCENTILE(total_cost, 0.5) AS p50_cost, APPROX_PERCENTILE(total_cost, 0.95) AS p95_cost, APPROX_PERCENTILE(steps_n, 0.95) AS p95_steps, AVG(gate_escalations) AS gates_per_exec, SUM(total_cost) / NULLIF(SUM(outcome_success::int),0) AS cost_per_success FROM gold.executions WHERE started_at >= CURRENT_DATE - 14 GROUP BY 1 ORDER BY cost_per_success";

fn close(a: &Value, b: f64) {
    let a = a.as_f64().unwrap_or_else(|| panic!("{a} is not a number"));
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

fn economics(data: &Path, args: &[&str]) -> Value {
    let mut all = vec!["economics", "--json"];
    all.extend(args);
    serde_json::from_str(&ok(keel(data, &all))).unwrap()
}

fn row<'a>(rows: &'a Value, key: &str, name: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r[key] == name)
        .unwrap_or_else(|| panic!("no {key} {name} in {rows}"))
}

#[test]
fn economics_match_hand_computed_values_and_keel_sql() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ledger::write(&data);

    // Every tenant (the machine's operator, as with `keel sql`). Each step's tool call costs
    // 90 µ$: short = 0.01009 + 0.02009 (failure) + 0.01009; long = 0.10018 + 0.15027 (acme) +
    // 0.90009 (globex); secret = 0.07009.
    let e = economics(&data, &[]);
    assert_eq!(e["since"], day(14));
    assert_eq!(e["tenant"], Value::Null);
    let order: Vec<&str> = e["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["strategy_version"].as_str().unwrap())
        .collect();
    assert_eq!(order, [SHORT, SECRET, LONG], "cheapest per success first");
    let s = row(&e["strategies"], "strategy_version", SHORT);
    assert_eq!(
        (s["executions"].as_u64(), s["successes"].as_u64()),
        (Some(3), Some(2))
    );
    close(&s["success_rate"], 2.0 / 3.0);
    close(&s["p50_cost"], 0.01009);
    close(&s["p95_cost"], 0.01009 + 0.9 * 0.01); // rank 0.95 × 2 = 1.9
    close(&s["total_cost"], 0.04027);
    close(&s["cost_per_success"], 0.04027 / 2.0);
    let l = row(&e["strategies"], "strategy_version", LONG);
    assert_eq!(l["executions"], 3);
    close(&l["success_rate"], 1.0);
    close(&l["p95_steps"], 2.0 + 0.9 * 1.0); // steps 1, 2, 3
    close(&l["cost_per_success"], (0.10018 + 0.15027 + 0.90009) / 3.0);

    let t: Vec<(&str, u64, u64)> = e["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tenant"].as_str().unwrap(),
                t["executions"].as_u64().unwrap(),
                t["successes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(t, [("globex", 2, 2), ("acme", 5, 4)], "costliest first");
    close(&e["tenants"][0]["total_cost"], 0.90009 + 0.07009);
    close(&e["tenants"][1]["total_cost"], 0.04027 + 0.25045);
    close(
        &e["tenants"][1]["cost_per_success"],
        (0.04027 + 0.25045) / 4.0,
    );
    let tool = row(&e["tools"], "name", "lookup_order");
    assert_eq!(
        (tool["calls"].as_u64(), tool["failures"].as_u64()),
        (Some(10), Some(0))
    );
    close(&tool["cost"], 10.0 * 0.00009);
    close(&row(&e["models"], "name", "scripted")["cost"], 1.26);

    // The per-day series: short has a failure on day -2, so 0.03018 over one success.
    let point = |v: &str, d: &str| {
        e["series"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["strategy_version"] == v && p["day"] == d)
            .unwrap_or_else(|| panic!("no point {v} {d}"))
            .clone()
    };
    close(&point(SHORT, &day(2))["cost_per_success"], 0.03018);
    close(&point(SHORT, &day(1))["cost_per_success"], 0.01009);
    close(
        &point(LONG, &day(1))["cost_per_success"],
        (0.15027 + 0.90009) / 2.0,
    );
    close(&point(SECRET, &day(0))["cost_per_success"], 0.07009);
    assert_eq!(e["series"].as_array().unwrap().len(), 5);

    // The per-strategy table agrees with `keel sql` running the seed's query.
    let sql: Value =
        serde_json::from_str(&ok(keel(&data, &["sql", "--format", "json", SEED]))).unwrap();
    assert_eq!(sql.as_array().unwrap().len(), 3, "{sql}");
    for r in sql.as_array().unwrap() {
        let v = r["strategy_version"].as_str().unwrap();
        let mine = row(&e["strategies"], "strategy_version", v);
        assert_eq!(mine["executions"], r["executions"], "{v}");
        for k in [
            "success_rate",
            "p50_cost",
            "p95_cost",
            "p95_steps",
            "gates_per_exec",
            "cost_per_success",
        ] {
            close(&mine[k], r[k].as_f64().unwrap());
        }
    }

    // One tenant: nothing of the other's, not even a strategy version's name.
    let a = economics(&data, &["--tenant", "acme"]);
    let text = a.to_string();
    assert!(
        !text.contains("globex") && !text.contains(SECRET) && !text.contains("0.90009"),
        "{text}"
    );
    close(
        &row(&a["strategies"], "strategy_version", LONG)["cost_per_success"],
        0.25045 / 2.0,
    );
    assert_eq!(a["tenants"].as_array().unwrap().len(), 1);

    // The tables for people.
    let table = ok(keel(&data, &["economics"]));
    assert!(
        table.contains("per strategy version (cheapest per success first)")
            && table.contains("cost by tenant")
            && table.contains("cost by tool")
            && table.contains("0.020135"),
        "{table}"
    );
    // A window beyond the limit is refused, naming it.
    let bad = keel(&data, &["economics", "--days", "400000"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("economics window"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

fn token(data: &Path, tenant: &str) -> String {
    ok(keel(
        data,
        &[
            "tokens", "create", "--tenant", tenant, "--role", "admin", "--name", "boss",
        ],
    ))
    .trim()
    .to_owned()
}

fn get(addr: &str, path: &str, token: &str) -> common::serve::Reply {
    send(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        ),
    )
}

#[test]
fn over_http_each_tenant_sees_only_its_own_economics() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ledger::write(&data);
    // Admin tokens: even an admin reads only its own tenant.
    let (acme, globex) = (token(&data, "acme"), token(&data, "globex"));
    let addr = free_addr();
    let _serve = serve(&data, &addr);

    let a = get(&addr, "/v1/economics", &acme);
    assert_eq!(a.code, 200, "{}", a.body);
    let a = a.json();
    assert_eq!(a["tenant"], "acme");
    assert!(
        !a.to_string().contains("globex") && !a.to_string().contains(SECRET),
        "{a}"
    );
    close(
        &row(&a["strategies"], "strategy_version", SHORT)["cost_per_success"],
        0.020135,
    );
    close(&a["tenants"][0]["total_cost"], 0.29072);

    let g = get(&addr, "/v1/economics?days=30", &globex).json();
    assert_eq!(g["tenant"], "globex");
    let versions: Vec<&str> = g["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["strategy_version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, [SECRET, LONG]);
    assert!(
        !g.to_string().contains("acme") && !g.to_string().contains(SHORT),
        "{g}"
    );

    // Bad input names the parameter; an agent token is refused.
    let bad = get(&addr, "/v1/economics?days=0", &acme);
    assert_eq!(bad.code, 400);
    assert!(bad.body.contains("days"), "{}", bad.body);
    let bad = get(&addr, "/v1/economics?days=lots", &acme);
    assert_eq!(bad.code, 400);
    let agent = ok(keel(
        &data,
        &[
            "tokens", "create", "--tenant", "acme", "--role", "agent", "--name", "bot",
        ],
    ));
    assert_eq!(get(&addr, "/v1/economics", agent.trim()).code, 403);
}
