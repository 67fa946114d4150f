//! Every PostgreSQL connection `keel` opens takes TLS from its URL, as the spine's do: a
//! TLS-only server (a rustls terminator in front of a throwaway PostgreSQL 18, see
//! `common::pg_tls`) holds the spine, the projections and pgvector memory of a keel.toml whose
//! URLs say `sslmode=verify-full&sslrootcert=…`; `keel config check` reaches all three, a
//! `keel run` with memory succeeds, its fact is listed from pgvector and its execution is counted
//! by `keel sql` from the projections. A URL trusting another authority is an error naming its
//! key and the file, with the handshake's reason, and never the password.
//!
//! On a server that logs in by client certificate (`hostssl … cert`), spine and projections URLs
//! with `sslcert`/`sslkey` check green, a run is appended and projected; a missing key file is
//! named with `sslkey`.

#![allow(clippy::unwrap_used)]

mod common;
use common::pg_tls::{cert_only_server, terminator};
use common::repo;
use keel_testkit::certs::{authority, client, leaf};

use keel_memory::pgserver::PgServer;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// The password in every URL; it must never be printed.
const PASSWORD: &str = "pw-Tz84-tls-never-printed";

/// `keel --config FILE --data DATA ARGS…` from the repository's root; fails the test if the
/// password shows on stdout or stderr.
fn keel(file: &Path, data: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .current_dir(repo())
        .arg("--config")
        .arg(file)
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("KEEL_SPINE_URL")
        .env_remove("KEEL_PROJECTIONS_URL")
        .output()
        .unwrap();
    for bytes in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(PASSWORD),
            "keel {args:?} printed the password:\n{text}"
        );
    }
    out
}

fn ok(out: Output) -> String {
    common::ok(out)
}

fn fails(out: Output) -> String {
    assert!(!out.status.success(), "keel succeeded where it must fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const RUN: [&str; 10] = [
    "run",
    "--json",
    "--strategy",
    "support-memory",
    "--tenant",
    "acme",
    "--subject",
    "cust-7",
    "--strategies",
    "strategies/memory",
];

#[test]
fn keel_run_uses_projections_and_pgvector_memory_on_a_tls_only_server_and_a_wrong_ca_is_named() {
    let pg = PgServer::start().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(pg.create_database("keel_memory")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ca = authority(tmp.path(), "keel-test-ca");
    let (cert, key) = leaf(tmp.path(), &ca);
    let (other, _) = authority(tmp.path(), "another-ca");
    let port = terminator(&rt, &cert, &key, pg.port());
    let url = |db: &str, root: &Path| {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{port}/{db}?sslmode=verify-full&sslnegotiation=direct&sslrootcert={}",
            root.display()
        )
    };
    let config = |name: &str, projections_ca: &Path, memory_ca: &Path| {
        let file = tmp.path().join(name);
        std::fs::write(
            &file,
            format!(
                "[spine]\nurl = \"{}\"\n\n[projections]\nurl = \"{}\"\n\n[memory]\nbackend = \"pgvector\"\nurl = \"{}\"\n",
                url("postgres", &ca.0),
                url("postgres", projections_ca),
                url("keel_memory", memory_ca)
            ),
        )
        .unwrap();
        file
    };
    let good = config("keel.toml", &ca.0, &ca.0);
    let data = tmp.path().join("data");

    // A plain connection is refused by the server: only TLS reaches it.
    let plain = tmp.path().join("plain.toml");
    std::fs::write(
        &plain,
        format!(
            "[projections]\nurl = \"postgres://postgres:{PASSWORD}@127.0.0.1:{port}/postgres?sslmode=disable\"\n"
        ),
    )
    .unwrap();
    let err = fails(keel(&plain, &data, &["config", "check"]));
    assert!(err.contains("projections.url"), "{err}");

    let check = ok(keel(&good, &data, &["config", "check"]));
    assert!(check.contains("projections.url"), "{check}");

    let text = "Where is order A-1001? Please always send me updates by e-mail.";
    let run: Value =
        serde_json::from_str(&ok(keel(&good, &data, &[&RUN[..], &[text]].concat()))).unwrap();
    assert_eq!(run["outcome"], "success", "{run}");
    assert!(!data.join("memory.db").exists(), "memory is pgvector's");
    let facts = ok(keel(
        &good,
        &data,
        &["memory", "list", "--tenant", "acme", "--subject", "cust-7"],
    ));
    assert!(facts.contains("updates by e-mail"), "{facts}");
    let counted = ok(keel(
        &good,
        &data,
        &[
            "sql",
            "SELECT count(*) AS n FROM gold.executions",
            "--format",
            "json",
        ],
    ));
    assert!(
        !data.join("observe.db").exists(),
        "the projections are PostgreSQL's"
    );
    let rows: Value = serde_json::from_str(&counted).unwrap();
    let n = &rows[0]["n"];
    let n = n
        .as_i64()
        .or_else(|| n.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("{counted}"));
    assert!(n >= 1, "the run is in the projections: {counted}");

    // Memory trusting another authority: named, with the handshake's reason.
    let bad = config("memory-wrong-ca.toml", &ca.0, &other);
    for out in [
        keel(&bad, &data, &[&RUN[..], &[text]].concat()),
        keel(&bad, &data, &["config", "check"]),
    ] {
        let err = fails(out);
        assert!(err.contains("memory-wrong-ca.toml"), "{err}");
        assert!(err.contains("memory.url"), "{err}");
        assert!(err.contains("certificate"), "{err}");
    }
    // The projections likewise.
    let bad = config("projections-wrong-ca.toml", &other, &ca.0);
    for out in [
        keel(&bad, &data, &["sql", "SELECT 1"]),
        keel(&bad, &data, &["config", "check"]),
    ] {
        let err = fails(out);
        assert!(err.contains("projections-wrong-ca.toml"), "{err}");
        assert!(err.contains("projections.url"), "{err}");
        assert!(err.contains("certificate"), "{err}");
    }
}

#[test]
fn a_spine_url_with_a_client_certificate_checks_and_runs_and_a_missing_key_is_named() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ca = authority(tmp.path(), "keel-test-ca");
    let pg = cert_only_server(&rt, tmp.path(), &ca);
    let (cert, key) = client(tmp.path(), &ca, "client", "postgres");
    // The spine and the projections (another crate's connections) on the same server.
    let config = |name: &str, key: &Path| {
        let file = tmp.path().join(name);
        let url = format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
            pg.port(),
            ca.0.display(),
            cert.display(),
            key.display()
        );
        std::fs::write(
            &file,
            format!("[spine]\nurl = \"{url}\"\n\n[projections]\nurl = \"{url}\"\n"),
        )
        .unwrap();
        file
    };
    let good = config("keel.toml", &key);
    let data = tmp.path().join("data");

    let check = keel(&good, &data, &["config", "check"]);
    let reached = String::from_utf8_lossy(&check.stderr).into_owned();
    ok(check);
    assert!(reached.contains("ok  spine.url: connected"), "{reached}");
    let run: Value = serde_json::from_str(&ok(keel(
        &good,
        &data,
        &["run", "--json", "Where is my order A-1017?"],
    )))
    .unwrap();
    assert_eq!(run["outcome"], "success", "{run}");
    assert!(!data.join("spine.db").exists(), "the spine is PostgreSQL's");
    let counted = ok(keel(
        &good,
        &data,
        &[
            "sql",
            "SELECT count(*) AS n FROM gold.executions",
            "--format",
            "json",
        ],
    ));
    assert!(
        !data.join("observe.db").exists(),
        "the projections are PostgreSQL's"
    );
    let rows: Value = serde_json::from_str(&counted).unwrap();
    let n = &rows[0]["n"];
    let n = n
        .as_i64()
        .or_else(|| n.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("{counted}"));
    assert_eq!(n, 1, "the run is in the projections: {counted}");

    let missing = tmp.path().join("missing").join("client.key");
    let bad = config("no-key.toml", &missing);
    for out in [
        keel(&bad, &data, &["config", "check"]),
        keel(&bad, &data, &["run", "Where is my order A-1017?"]),
    ] {
        let err = fails(out);
        assert!(err.contains("no-key.toml"), "{err}");
        assert!(err.contains("spine.url"), "{err}");
        assert!(
            err.contains(&format!("sslkey {}", missing.display())),
            "{err}"
        );
    }
}
