//! Projections and SQL on every backend (a SQLite file; a real PostgreSQL), fed by a real SQLite
//! spine: the checkpoint survives a restart, a rebuild from offset 0 gives identical tables, two
//! consumers sharing a store apply each event once, the seed's two queries return the numbers
//! computed by hand for the fixture (see `common/mod.rs`), and the SQL path is read-only and
//! tenant-scoped.

#![allow(clippy::unwrap_used, clippy::needless_update)]

mod common;

use common::Stores;
use keel_observe::sql::{Format, Scope};
use keel_observe::store::TABLES;
use keel_spine::EventLog;
use serde_json::{Value, json};

const TRACE_LOOKUP: &str =
    "SELECT step_n, event_type, summary FROM traces.steps WHERE trace_id = '{}'";

/// The seed's economics query, verbatim (PostgreSQL dialect; `translate` handles it).
const ECONOMICS: &str = "SELECT strategy_version, COUNT(*) AS executions, AVG(outcome_success::int) AS success_rate, APPROX_PERCENTILE(total_cost, 0.5) AS p50_cost, APPROX_PERCENTILE(total_cost, 0.95) AS p95_cost, APPROX_PERCENTILE(steps_n, 0.95) AS p95_steps, AVG(gate_escalations) AS gates_per_exec, SUM(total_cost) / NULLIF(SUM(outcome_success::int),0) AS cost_per_success FROM gold.executions WHERE started_at >= CURRENT_DATE - 14 GROUP BY 1 ORDER BY cost_per_success";

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

on_every_backend!(
    checkpoint_survives_restart_and_rebuild_gives_identical_tables,
    two_consumers_sharing_a_store_apply_each_event_once,
    seed_trace_lookup_returns_every_step_in_order,
    seed_economics_query_matches_hand_computed_numbers,
    sql_path_is_read_only_and_tenant_scoped,
);

async fn dump_all(p: &dyn keel_observe::ProjectionStore) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for t in TABLES {
        out.push(p.dump(t).await.unwrap());
    }
    out
}

async fn seeded(stores: &Stores) -> (tempfile::TempDir, Box<dyn keel_observe::ProjectionStore>) {
    let dir = tempfile::tempdir().unwrap();
    let log = common::seed(&dir.path().join("spine.db")).await;
    let mut p = stores.open("observe").await;
    p.catch_up(&log).await.unwrap();
    (dir, p)
}

async fn checkpoint_survives_restart_and_rebuild_gives_identical_tables(stores: &Stores) {
    let dir = tempfile::tempdir().unwrap();
    let log = keel_spine::SqliteLog::open(dir.path().join("spine.db"), Default::default()).unwrap();
    let specs = common::specs();

    // Half the executions, projected in small batches, then the consumer stops.
    for s in &specs[..3] {
        common::append(&log, &common::events(s)).await;
    }
    let first_half;
    {
        let mut p = stores.open("observe").await;
        loop {
            let batch = log.read_all(p.next_offset(), 7).await.unwrap();
            if batch.is_empty() {
                break;
            }
            p.apply(&batch).await.unwrap();
        }
        first_half = p.next_offset() - 1;
        // A batch delivered again is not applied twice.
        let again = log.read_all(1, 1000).await.unwrap();
        p.apply(&again).await.unwrap();
        assert_eq!(p.next_offset(), first_half + 1);
    }
    // The rest arrives; a restarted consumer resumes at its checkpoint.
    for s in &specs[3..] {
        common::append(&log, &common::events(s)).await;
    }
    let mut resumed = stores.open("observe").await;
    assert_eq!(resumed.next_offset(), first_half + 1);
    let applied = resumed.catch_up(&log).await.unwrap();
    let total: usize = specs.iter().map(|s| common::events(s).len()).sum();
    assert_eq!(applied as usize, total - first_half as usize);
    assert_eq!(resumed.catch_up(&log).await.unwrap(), 0);

    // A rebuild from offset 0 into a fresh file, and a reset in place, give identical tables.
    let mut fresh = stores.open("rebuilt").await;
    fresh.catch_up(&log).await.unwrap();
    let live = dump_all(&*resumed).await;
    let rebuilt = dump_all(&*fresh).await;
    assert_eq!(live, rebuilt);
    assert_eq!(live[0].len(), total);
    assert_eq!(live[1].len(), specs.len());
    resumed.reset().await.unwrap();
    assert_eq!(resumed.next_offset(), 1);
    resumed.catch_up(&log).await.unwrap();
    assert_eq!(live, dump_all(&*resumed).await);
    // A cursor of another consumer survives beside the checkpoint; `main` is refused.
    resumed.set_cursor("otlp", 5).await.unwrap();
    assert_eq!(resumed.cursor("otlp").await.unwrap(), 5);
    assert!(resumed.set_cursor("main", 1).await.is_err());
}

async fn two_consumers_sharing_a_store_apply_each_event_once(stores: &Stores) {
    let dir = tempfile::tempdir().unwrap();
    let log = common::seed(&dir.path().join("spine.db")).await;
    let mut a = stores.open("observe").await;
    let mut b = stores.open("observe").await;
    // Both start at offset 1 and take turns with overlapping batches; neither fails and no
    // event lands twice.
    let all = log.read_all(1, 10_000).await.unwrap();
    for chunk in all.chunks(5) {
        a.apply(chunk).await.unwrap();
        b.apply(chunk).await.unwrap();
        b.apply(&all[..chunk.len()]).await.unwrap();
    }
    assert_eq!(a.catch_up(&log).await.unwrap(), 0);
    let n = a
        .query(
            &Scope::Admin,
            "SELECT count(*), count(DISTINCT log_offset) FROM traces.steps",
        )
        .await
        .unwrap();
    assert_eq!(n.rows[0], vec![json!(all.len()), json!(all.len())]);
    let fresh = {
        let mut f = stores.open("fresh").await;
        f.catch_up(&log).await.unwrap();
        dump_all(&*f).await
    };
    assert_eq!(dump_all(&*b).await, fresh);
}

async fn seed_trace_lookup_returns_every_step_in_order(stores: &Stores) {
    let (_dir, p) = seeded(stores).await;
    let events = common::events(&common::specs()[3]);
    let trace = events[0].trace_id.to_string();
    let rows = p
        .query(&Scope::Admin, &TRACE_LOOKUP.replace("{}", &trace))
        .await
        .unwrap();
    assert_eq!(rows.columns, ["step_n", "event_type", "summary"]);
    assert_eq!(rows.rows.len(), events.len());
    for (row, e) in rows.rows.iter().zip(&events) {
        assert_eq!(row[0], json!(e.step_n));
        assert_eq!(row[1], json!(e.event_type().as_str()));
    }
    // The gate, its verdict and the tool failure are readable in the summaries.
    let summaries: Vec<&str> = rows.rows.iter().map(|r| r[2].as_str().unwrap()).collect();
    assert!(
        summaries
            .iter()
            .any(|s| s.starts_with("gate gate-") && s.contains("approve by alice")),
        "{summaries:?}"
    );
    assert!(summaries[0].starts_with("started [s-long]: goal 4"));
    assert_eq!(*summaries.last().unwrap(), "finished: success in 3 steps");
    let table = rows.render(Format::Table);
    assert!(
        table.contains("model.responded") && table.ends_with(&format!("({} rows)\n", events.len()))
    );
}

async fn seed_economics_query_matches_hand_computed_numbers(stores: &Stores) {
    let (_dir, p) = seeded(stores).await;
    let rows = p.query(&Scope::Admin, ECONOMICS).await.unwrap();
    assert_eq!(
        rows.columns,
        [
            "strategy_version",
            "executions",
            "success_rate",
            "p50_cost",
            "p95_cost",
            "p95_steps",
            "gates_per_exec",
            "cost_per_success"
        ]
    );
    assert_eq!(rows.rows.len(), 2, "{rows:?}");
    // s-short (execution 6 is 30 days old and excluded): costs 0.01009, 0.02009, 0.03009
    // (model + one 90 µ$ tool call each); two successes.
    let s = &rows.rows[0];
    assert_eq!(s[0], json!("s-short"));
    assert_eq!(s[1], json!(3));
    close(f(&s[2]), 2.0 / 3.0);
    close(f(&s[3]), 0.02009);
    close(f(&s[4]), 0.02009 + 0.9 * 0.01); // position 0.95 × 2 = 1.9
    close(f(&s[5]), 1.0);
    close(f(&s[6]), 0.0);
    close(f(&s[7]), (0.01009 + 0.02009 + 0.03009) / 2.0);
    // s-long: 3 steps × 0.05009 = 0.15027 (success), 2 × 0.05009 = 0.10018 (failure), one gate each.
    let l = &rows.rows[1];
    assert_eq!(l[0], json!("s-long"));
    assert_eq!(l[1], json!(2));
    close(f(&l[2]), 0.5);
    close(f(&l[3]), (0.10018 + 0.15027) / 2.0);
    close(f(&l[4]), 0.10018 + 0.95 * 0.05009);
    close(f(&l[5]), 2.95);
    close(f(&l[6]), 1.0);
    close(f(&l[7]), 0.15027 + 0.10018);
    // The same in JSON and CSV.
    let as_json: Value = serde_json::from_str(&rows.render(Format::Json)).unwrap();
    assert_eq!(as_json[1]["strategy_version"], json!("s-long"));
    let csv = rows.render(Format::Csv);
    assert!(csv.starts_with("strategy_version,executions,success_rate,"));
    assert!(
        csv.contains("\ns-short,3,0.666667,0.02009,0.02909,1,0,0.030135\n"),
        "{csv}"
    );
}

async fn sql_path_is_read_only_and_tenant_scoped(stores: &Stores) {
    let (_dir, p) = seeded(stores).await;
    for bad in [
        "DELETE FROM gold.executions",
        "UPDATE traces.steps SET summary = 'x'",
        "CREATE TABLE traces.x (a)",
        "CREATE TABLE x (a)",
        "ATTACH DATABASE '/tmp/other.db' AS other",
        "SELECT 1; DELETE FROM gold.executions",
    ] {
        let err = p.query(&Scope::Admin, bad).await.unwrap_err().to_string();
        assert!(
            err.contains("refused") || err.contains("failed"),
            "{bad}: {err}"
        );
    }
    let err = p
        .query(&Scope::Admin, "DELETE FROM gold.executions")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("read-only"), "{err}");
    let err = p
        .query(&Scope::Admin, "SELEC 1")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("syntax error") && err.contains("SELEC 1"),
        "{err}"
    );
    let n = p
        .query(&Scope::Admin, "SELECT count(*) FROM gold.executions")
        .await
        .unwrap();
    assert_eq!(n.rows[0][0], json!(6));
    let scoped = Scope::Tenant("globex".into());
    let n = p
        .query(
            &scoped,
            "SELECT count(*), min(tenant), max(tenant) FROM gold.executions",
        )
        .await
        .unwrap();
    assert_eq!(n.rows[0], vec![json!(1), json!("globex"), json!("globex")]);
    let n = p
        .query(&scoped, "SELECT count(DISTINCT tenant) FROM traces.steps")
        .await
        .unwrap();
    assert_eq!(n.rows[0][0], json!(1));
    // Ways out of the tenant's rows. Moving the tenant setting or the role from inside a
    // query fails (PostgreSQL: set_config is revoked; SQLite has no such function)…
    for escape in [
        "SELECT set_config('keel.tenant', 'acme', true), tenant FROM gold.executions",
        "SELECT set_config('role', 'postgres', true), tenant FROM gold.executions",
        "WITH s AS MATERIALIZED (SELECT set_config('keel.tenant', 'acme', true) AS x) \
         SELECT e.tenant FROM s, gold.executions AS e",
    ] {
        let err = p.query(&scoped, escape).await.unwrap_err().to_string();
        assert!(err.contains("set_config"), "{escape}: {err}");
    }
    // …and every table shows only the tenant's rows.
    for q in [
        "SELECT tenant FROM gold.executions UNION ALL SELECT tenant FROM traces.steps",
        "SELECT tenant FROM traces.retrieval_samples",
    ] {
        for r in &p.query(&scoped, q).await.unwrap().rows {
            assert_eq!(r[0], json!("globex"), "{q}");
        }
    }
    // A single statement that is no query is refused, however it is spelled.
    for bad in ["SET ROLE postgres", "RESET ROLE", "COMMIT", "VACUUM"] {
        assert!(p.query(&scoped, bad).await.is_err(), "{bad}");
    }
}
