//! The scaled projection path as users run it: the real `keel` binary with
//! `KEEL_PROJECTIONS_URL` naming a database on a throwaway PostgreSQL 18 server (started by the
//! test from `$KEEL_TEST_PG_BIN`; missing binaries fail the test, never skip it), over a store
//! that `keel demo` and `keel run` filled (real MiniLM from `$KEEL_MINILM_DIR`).
//!
//! Checked: `keel project` names the PostgreSQL target and applies the whole spine; the seed's
//! economics query runs verbatim and gives the embedded default's numbers on the same store;
//! `keel sql --tenant` sees one tenant's rows; sampled retrievals are listed and rated; `keel slo`
//! agrees with the embedded default; `keel project --rebuild` gives identical tables; nothing is
//! written to the embedded file meanwhile; a malformed or unreachable URL is a clear error naming
//! the variable. The URL carries a password (trust authentication ignores it), and no command
//! ever prints it.

mod common;
use common::{ok, repo};

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// The password in every URL the tests pass; it must never be printed.
const SECRET: &str = "pw-Zq7x3kVw-never-printed";

/// The seed's economics query (`crates/observe/tests/projection_sql.rs`), verbatim.
const ECONOMICS: &str = "SELECT strategy_version, COUNT(*) AS executions, AVG(outcome_success::int) AS success_rate, APPROX_PERCENTILE(total_cost, 0.5) AS p50_cost, APPROX_PERCENTILE(total_cost, 0.95) AS p95_cost, APPROX_PERCENTILE(steps_n, 0.95) AS p95_steps, AVG(gate_escalations) AS gates_per_exec, SUM(total_cost) / NULLIF(SUM(outcome_success::int),0) AS cost_per_success FROM gold.executions WHERE started_at >= CURRENT_DATE - 14 GROUP BY 1 ORDER BY cost_per_success";

/// The tenant whose memory-retrieving executions this test adds.
const TENANT: &str = "globex";

/// `keel --data DATA ARGS…` from the repo root, with `KEEL_PROJECTIONS_URL` set to `url` (or
/// unset: the embedded default). Fails the test if the password shows in stdout or stderr.
fn keel(data: &Path, url: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
    c.current_dir(repo()).arg("--data").arg(data).args(args);
    match url {
        Some(u) => c.env("KEEL_PROJECTIONS_URL", u),
        None => c.env_remove("KEEL_PROJECTIONS_URL"),
    };
    let out = c.output().expect("running keel");
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(SECRET),
            "keel {args:?} printed the URL's password on {name}:\n{text}"
        );
    }
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `keel sql QUERY --format json [--tenant T]` → its rows.
fn sql(data: &Path, url: Option<&str>, tenant: Option<&str>, query: &str) -> Vec<Value> {
    let mut args = vec!["sql", query, "--format", "json"];
    if let Some(t) = tenant {
        args.extend(["--tenant", t]);
    }
    let v: Value = serde_json::from_str(&ok(keel(data, url, &args)))
        .unwrap_or_else(|e| panic!("keel sql --format json printed no JSON ({e}): {query}"));
    v.as_array().expect("an array of rows").clone()
}

/// `keel retrievals list --format json ARGS…` → its rows.
fn retrievals(data: &Path, url: Option<&str>, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["retrievals", "list", "--format", "json"];
    all.extend(args);
    let v: Value = serde_json::from_str(&ok(keel(data, url, &all)))
        .expect("keel retrievals list --format json prints JSON");
    v.as_array().expect("an array of rows").clone()
}

/// Asserts `a` and `b` are the same JSON, numbers equal to 1e-9 relative (PostgreSQL and SQLite
/// may round a float's last digit differently).
fn same(a: &Value, b: &Value, at: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().expect("a finite number"),
                y.as_f64().expect("a finite number"),
            );
            assert!(
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
                "{at}: {x} != {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: lengths differ:\n{a:#}\n{b:#}");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                same(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys = |o: &serde_json::Map<String, Value>| o.keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(x), keys(y), "{at}: columns differ");
            for (k, v) in x {
                same(v, &y[k], &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

/// Economics rows keyed by strategy version, and the versions with a cost per success in the
/// order the query returned them. (Where rows without one — no success — sort is the dialect's
/// choice: first in SQLite, last in PostgreSQL.)
fn economics(rows: &[Value]) -> (Vec<(String, Value)>, Vec<String>) {
    let mut keyed: Vec<(String, Value)> = rows
        .iter()
        .map(|r| {
            let v = r["strategy_version"].as_str().expect("strategy_version");
            (v.to_owned(), r.clone())
        })
        .collect();
    let ordered = keyed
        .iter()
        .filter(|(_, r)| !r["cost_per_success"].is_null())
        .map(|(v, _)| v.clone())
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    (keyed, ordered)
}

fn same_economics(pg: &[Value], embedded: &[Value], what: &str) {
    let (pg_rows, pg_order) = economics(pg);
    let (emb_rows, emb_order) = economics(embedded);
    assert_eq!(pg_order, emb_order, "{what}: order by cost_per_success");
    same(
        &Value::Array(pg_rows.into_iter().map(|(_, r)| r).collect()),
        &Value::Array(emb_rows.into_iter().map(|(_, r)| r).collect()),
        what,
    );
}

/// The spine's last offset (what a full projection has applied).
fn last_offset(data: &Path) -> u64 {
    let c = rusqlite::Connection::open_with_flags(
        data.join("spine.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("opening the spine");
    c.query_row(
        "SELECT coalesce(max(last_offset), 0) FROM batches",
        [],
        |r| r.get(0),
    )
    .expect("reading the spine's last offset")
}

/// One execution of the memory strategy for [`TENANT`] (it retrieves before planning).
fn run_with_memory(data: &Path, i: usize) {
    let goals = [
        "Where is my order A-1017?",
        "Has order 1012 shipped yet?",
        "Where is my order A-1003?",
    ];
    ok(keel(
        data,
        None,
        &[
            "run",
            "--strategies",
            "strategies/memory",
            "--strategy",
            "support-memory",
            "--tenant",
            TENANT,
            "--json",
            goals[i % goals.len()],
        ],
    ));
}

/// `postgresql://postgres:SECRET@127.0.0.1:PORT/DB` for `server.url(DB)`.
fn with_password(url: &str) -> String {
    let url = url.replacen("postgres@", &format!("postgres:{SECRET}@"), 1);
    assert!(url.contains(SECRET), "{url}");
    url
}

#[test]
fn keel_commands_run_on_postgresql_projections_like_on_the_embedded_default() {
    assert!(
        std::env::var_os("KEEL_MINILM_DIR").is_some(),
        "KEEL_MINILM_DIR is not set: the demo embeds memory with all-MiniLM-L6-v2 (run \
         scripts/test, or eval \"$(scripts/test-services)\")"
    );
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let server = keel_memory::pgserver::PgServer::start().expect("starting PostgreSQL");
    let url = with_password(
        &rt.block_on(server.create_database("keel_projections"))
            .expect("creating the projection database"),
    );
    let pg = Some(url.as_str());

    // A store: the demo (three tenants, gates, a replay, memory), then executions of the memory
    // strategy for globex until the projection has sampled one of their retrievals (one in ten
    // is, by event id).
    let tmp = tempfile::tempdir().expect("a temporary directory");
    ok(keel(tmp.path(), None, &["demo"]));
    let data = tmp.path().to_path_buf();
    let sampled = |data: &Path| {
        !sql(
            data,
            None,
            None,
            &format!("SELECT exec_id FROM traces.retrieval_samples WHERE tenant = '{TENANT}'"),
        )
        .is_empty()
    };
    let mut runs = 0;
    while !sampled(&data) {
        assert!(runs < 150, "no retrieval sampled in {runs} executions");
        run_with_memory(&data, runs);
        runs += 1;
    }
    eprintln!("{runs} executions of support-memory until a retrieval of {TENANT} was sampled");

    // The embedded default's answers on this store, then its file is removed: the PostgreSQL
    // phase must not bring it back.
    let all_executions = "SELECT * FROM gold.executions ORDER BY exec_id";
    let emb_economics = sql(&data, None, None, ECONOMICS);
    let emb_economics_tenant = sql(&data, None, Some(TENANT), ECONOMICS);
    let emb_executions = sql(&data, None, None, all_executions);
    let emb_samples = retrievals(&data, None, &[]);
    assert!(emb_economics.len() >= 5, "{emb_economics:#?}");
    for f in ["observe.db", "observe.db-wal", "observe.db-shm"] {
        let _ = std::fs::remove_file(data.join(f));
    }

    // keel project: the PostgreSQL target (password masked), the whole spine applied.
    let out = keel(&data, pg, &["project"]);
    let said = stderr(&out);
    ok(out);
    let target = format!(
        "postgresql://postgres:***@127.0.0.1:{}/keel_projections",
        server.port()
    );
    let last = last_offset(&data);
    assert!(
        said.contains(&format!("applied {last} events into {target}")),
        "{said}"
    );
    let out = keel(&data, pg, &["project"]);
    let said = stderr(&out);
    ok(out);
    assert!(
        said.contains(&format!(
            "applied 0 events into {target}; checkpoint at offset {}",
            last + 1
        )),
        "a second run resumes from the checkpoint: {said}"
    );

    // The seed's economics query, verbatim: the embedded default's numbers, for every
    // strategy and for one tenant.
    let pg_economics = sql(&data, pg, None, ECONOMICS);
    same_economics(&pg_economics, &emb_economics, "economics");
    same_economics(
        &sql(&data, pg, Some(TENANT), ECONOMICS),
        &emb_economics_tenant,
        "economics --tenant",
    );
    // gold.executions as a whole, row for row.
    let pg_executions = sql(&data, pg, None, all_executions);
    same(
        &Value::Array(pg_executions.clone()),
        &Value::Array(emb_executions),
        "gold.executions",
    );

    // --tenant: only that tenant's rows, in every table, whatever the query asks for.
    let execs_of = |t: &str| pg_executions.iter().filter(|r| r["tenant"] == t).count() as u64;
    assert!(execs_of(TENANT) > 0 && execs_of("acme") > 0);
    for table in [
        "gold.executions",
        "traces.steps",
        "traces.retrieval_samples",
    ] {
        let tenants = sql(
            &data,
            pg,
            Some(TENANT),
            &format!("SELECT DISTINCT tenant FROM {table}"),
        );
        assert_eq!(
            tenants,
            vec![serde_json::json!({"tenant": TENANT})],
            "{table}"
        );
    }
    let counted = sql(
        &data,
        pg,
        Some(TENANT),
        "SELECT count(*) AS n FROM gold.executions",
    );
    assert_eq!(counted[0]["n"].as_u64(), Some(execs_of(TENANT)));
    let other = sql(
        &data,
        pg,
        Some(TENANT),
        "SELECT count(*) AS n FROM gold.executions WHERE tenant = 'acme'",
    );
    assert_eq!(other[0]["n"], 0, "acme's rows do not exist for globex");

    // Sampled retrievals: the same list; a rating recorded by name; tenant-scoped.
    let samples = retrievals(&data, pg, &[]);
    same(
        &Value::Array(samples.clone()),
        &Value::Array(emb_samples),
        "retrievals list",
    );
    let sample = samples
        .iter()
        .find(|s| s["tenant"] == TENANT)
        .expect("a sample of globex");
    let exec = sample["exec_id"].as_str().expect("exec_id").to_owned();
    let seq_n = sample["seq"].as_u64().expect("seq");
    let seq = seq_n.to_string();
    assert!(sample["rating"].is_null(), "{sample}");
    let refused = keel(
        &data,
        pg,
        &[
            "retrievals",
            "rate",
            &exec,
            &seq,
            "2",
            "--by",
            "ana",
            "--tenant",
            "acme",
        ],
    );
    assert!(!refused.status.success(), "acme rated globex's sample");
    assert!(
        stderr(&refused).contains("no sampled retrieval"),
        "{}",
        stderr(&refused)
    );
    let out = keel(
        &data,
        pg,
        &[
            "retrievals",
            "rate",
            &exec,
            &seq,
            "2",
            "--by",
            "ana",
            "--note",
            "the right order, an old fact",
        ],
    );
    let said = stderr(&out);
    ok(out);
    assert!(said.contains("recorded: "), "{said}");
    let rated = retrievals(&data, pg, &["--tenant", TENANT]);
    let row = rated
        .iter()
        .find(|s| s["exec_id"] == exec.as_str() && s["seq"] == seq_n)
        .expect("the rated sample is listed for its tenant");
    assert_eq!(row["rating"], 2, "{row}");
    assert_eq!(row["rated_by"], "ana", "{row}");
    assert_eq!(row["rating_note"], "the right order, an old fact", "{row}");
    assert!(rated.iter().all(|s| s["tenant"] == TENANT), "{rated:#?}");
    assert!(
        retrievals(&data, pg, &["--unrated"])
            .iter()
            .all(|s| s["exec_id"] != exec.as_str() || s["seq"] != seq_n),
        "a rated sample leaves the queue"
    );
    assert!(
        retrievals(&data, pg, &["--tenant", "acme"])
            .iter()
            .all(|s| s["tenant"] == "acme"),
        "acme sees only its own samples"
    );

    // keel slo --json: runs, and sees the rating.
    let slo: Value = serde_json::from_str(&ok(keel(&data, pg, &["slo", "--json"])))
        .expect("keel slo --json prints JSON");
    assert!(
        slo["strategies"].as_array().is_some_and(|s| s.len() >= 5),
        "{slo:#}"
    );
    assert!(
        slo["retrieval"]
            .as_array()
            .expect("retrieval")
            .iter()
            .any(|r| r["rated"].as_u64() >= Some(1) && r["mean_rating"].as_f64().is_some()),
        "{slo:#}"
    );

    // keel project --rebuild: the same tables (the rating too: it is an event on the spine).
    let samples_query = "SELECT * FROM traces.retrieval_samples ORDER BY log_offset";
    let before = (
        sql(&data, pg, None, all_executions),
        sql(&data, pg, None, samples_query),
    );
    let out = keel(&data, pg, &["project", "--rebuild"]);
    let said = stderr(&out);
    ok(out);
    assert!(
        said.contains("projections emptied; rebuilding from offset 1"),
        "{said}"
    );
    assert!(said.contains(&target), "{said}");
    let after = (
        sql(&data, pg, None, all_executions),
        sql(&data, pg, None, samples_query),
    );
    assert_eq!(before, after, "a rebuild gives identical tables");

    // Everything above went to PostgreSQL: the embedded file was never recreated, and the rows
    // are in the database.
    assert!(
        !data.join("observe.db").exists(),
        "a command wrote the embedded projections while KEEL_PROJECTIONS_URL was set"
    );
    let in_pg: i64 = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connecting to the projection database");
        tokio::spawn(conn);
        client
            .query_one("SELECT count(*) FROM gold.executions", &[])
            .await
            .expect("counting gold.executions")
            .get(0)
    });
    assert_eq!(in_pg as usize, pg_executions.len());

    // And the embedded default, brought up to date, agrees with PostgreSQL's SLOs.
    let emb_slo: Value = serde_json::from_str(&ok(keel(&data, None, &["slo", "--json"])))
        .expect("keel slo --json prints JSON");
    same(&slo, &emb_slo, "slo");
}

#[test]
fn a_malformed_or_unreachable_projections_url_is_a_clear_error_without_its_password() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let data = tmp.path().join("store");
    ok(keel(
        &data,
        None,
        &[
            "run",
            "--strategy",
            "support-short",
            "--tenant",
            "acme",
            "Where is my order A-1017?",
        ],
    ));
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let cases = [
        (
            format!("mysql://keel:{SECRET}@db.example/keel"),
            "mysql://keel:***@db.example/keel",
        ),
        ("mysql://x".to_owned(), "mysql://x"),
        (
            format!("postgresql://postgres:{SECRET}@127.0.0.1:{closed_port}/keel"),
            "postgresql://postgres:***@127.0.0.1",
        ),
    ];
    for (url, shown) in &cases {
        for args in [
            &["sql", "SELECT count(*) FROM gold.executions"][..],
            &["project"][..],
        ] {
            let out = keel(&data, Some(url), args);
            let said = stderr(&out);
            assert!(!out.status.success(), "keel {args:?} with {shown}: {said}");
            assert!(said.contains(shown), "keel {args:?}: {said}");
            if url.starts_with("mysql") {
                assert!(
                    said.contains("KEEL_PROJECTIONS_URL"),
                    "keel {args:?}: {said}"
                );
            }
        }
    }
    assert!(
        !data.join("observe.db").exists(),
        "a bad URL fell back to the embedded projections"
    );
}
