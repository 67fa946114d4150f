//! The Parquet export read back by an independent reader (DuckDB from PyPI): same rows, same
//! economics numbers as `keel sql` on the projections.

#![allow(clippy::unwrap_used, clippy::needless_update)]

mod common;

use keel_observe::lakehouse;
use keel_observe::sql::Scope;
use serde_json::Value;

const DUCKDB_SCRIPT: &str = r#"
import duckdb, json, sys
out = sys.argv[1]
con = duckdb.connect()
def q(sql):
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, [None if v is None else (v if isinstance(v, (int, float, str)) else str(v)) for v in row])) for row in cur.fetchall()]
src = lambda t: f"read_parquet('{out}/{t}/*/*/*.parquet', hive_partitioning = true, union_by_name = true)"
result = {
  "economics": q(f"""SELECT strategy_version, COUNT(*) AS executions, AVG(outcome_success::int) AS success_rate,
      quantile_cont(total_cost, 0.5) AS p50_cost, quantile_cont(total_cost, 0.95) AS p95_cost,
      quantile_cont(steps_n, 0.95) AS p95_steps, AVG(gate_escalations) AS gates_per_exec,
      SUM(total_cost) / NULLIF(SUM(outcome_success::int), 0) AS cost_per_success
      FROM {src('executions')} WHERE started_at >= CURRENT_DATE - 14 GROUP BY 1 ORDER BY cost_per_success"""),
  "counts": q(f"SELECT (SELECT count(*) FROM {src('steps')}) AS steps, (SELECT count(*) FROM {src('executions')}) AS executions"),
  "partitions": q(f"SELECT DISTINCT CAST(date AS VARCHAR) AS date, tenant FROM {src('executions')} ORDER BY 1, 2"),
  "types": q(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {src('executions')}) WHERE column_name IN ('started_at', 'total_cost', 'steps_n')  ORDER BY 1"),
}
print(json.dumps(result))
"#;

on_every_backend!(
    duckdb_reads_the_parquet_export_with_the_same_numbers_as_keel_sql,
    continuous_export_rewrites_only_partitions_from_the_earliest_changed_date,
);

async fn duckdb_reads_the_parquet_export_with_the_same_numbers_as_keel_sql(
    stores: &common::Stores,
) {
    let py = common::peer_python();
    let dir = tempfile::tempdir().unwrap();
    let log = common::seed(&dir.path().join("spine.db")).await;
    let mut p = stores.open("observe").await;
    p.catch_up(&log).await.unwrap();
    let out = dir.path().join("lake");
    let report = lakehouse::export(&*p, &out, None).await.unwrap();
    let steps: usize = common::specs()
        .iter()
        .map(|s| common::events(s).len())
        .sum();
    assert_eq!(report.rows, steps + common::specs().len());

    let script = dir.path().join("read.py");
    std::fs::write(&script, DUCKDB_SCRIPT).unwrap();
    let output = std::process::Command::new(&py)
        .arg(&script)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let duck: Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(duck["counts"][0]["steps"], Value::from(steps));
    assert_eq!(
        duck["counts"][0]["executions"],
        Value::from(common::specs().len())
    );
    // Partitioned by date and tenant: six executions on five (date, tenant) pairs at most.
    let parts = duck["partitions"].as_array().unwrap();
    assert!(parts.iter().any(|p| p["tenant"] == "globex"));
    assert!(parts.len() >= 4, "{parts:?}");
    let types: Vec<(String, String)> = duck["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["column_name"].as_str().unwrap().into(),
                t["column_type"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            ("started_at".into(), "TIMESTAMP WITH TIME ZONE".into()),
            ("steps_n".into(), "BIGINT".into()),
            ("total_cost".into(), "DOUBLE".into())
        ]
    );

    let ours = p
        .query(
        &Scope::Admin,
        "SELECT strategy_version, COUNT(*) AS executions, AVG(outcome_success::int) AS success_rate, APPROX_PERCENTILE(total_cost, 0.5) AS p50_cost, APPROX_PERCENTILE(total_cost, 0.95) AS p95_cost, APPROX_PERCENTILE(steps_n, 0.95) AS p95_steps, AVG(gate_escalations) AS gates_per_exec, SUM(total_cost) / NULLIF(SUM(outcome_success::int),0) AS cost_per_success FROM gold.executions WHERE started_at >= CURRENT_DATE - 14 GROUP BY 1 ORDER BY cost_per_success",
    )
    .await
    .unwrap();
    let theirs = duck["economics"].as_array().unwrap();
    assert_eq!(theirs.len(), ours.rows.len());
    for (row, d) in ours.rows.iter().zip(theirs) {
        for (col, v) in ours.columns.iter().zip(row) {
            match v {
                Value::String(s) => assert_eq!(d[col].as_str(), Some(s.as_str())),
                other => {
                    let (a, b) = (other.as_f64().unwrap(), d[col].as_f64().unwrap());
                    assert!((a - b).abs() < 1e-9, "{col}: keel sql {a}, duckdb {b}");
                }
            }
        }
    }

    // A second export over the same data rewrites the same files (stable layout).
    let again = lakehouse::export(&*p, &out, None).await.unwrap();
    assert_eq!(again, report);
}

async fn continuous_export_rewrites_only_partitions_from_the_earliest_changed_date(
    stores: &common::Stores,
) {
    let dir = tempfile::tempdir().unwrap();
    let log = common::seed(&dir.path().join("spine.db")).await;
    let mut p = stores.open("observe").await;
    p.catch_up(&log).await.unwrap();
    let out = dir.path().join("lake");
    let all = lakehouse::export(&*p, &out, None).await.unwrap();
    let from = p.next_offset();
    assert_eq!(
        p.changed_since(from).await.unwrap(),
        None,
        "nothing new, nothing changed"
    );
    // A new execution today: only today's partitions are rewritten.
    let today = common::Spec {
        n: 7,
        tenant: "initech",
        strategy: "s-short",
        days_ago: 0,
        steps: vec![(1_000, keel_core::payload::ToolStatus::Ok)],
        gate: None,
        outcome: keel_core::payload::Outcome::Success,
    };
    let events = common::events(&today);
    common::append(&log, &events).await;
    p.catch_up(&log).await.unwrap();
    let since = p.changed_since(from).await.unwrap().unwrap();
    let date = events[0].ts.format("%Y-%m-%d").to_string();
    assert_eq!(since, date);
    let again = lakehouse::export(&*p, &out, Some(&since)).await.unwrap();
    assert!(again.files < all.files, "{again:?} vs {all:?}");
    let part = out.join(format!(
        "executions/date={date}/tenant=initech/part-0.parquet"
    ));
    assert!(part.exists(), "{}", part.display());
}
