//! The spine's PostgreSQL connections over TLS. The test server's PostgreSQL build has no TLS,
//! so the test puts a TLS terminator in front of it (rustls, a self-signed certificate made by
//! `openssl` for 127.0.0.1) that accepts only TLS and forwards to the real server, and the URLs
//! ask for PostgreSQL 17's direct TLS (`sslnegotiation=direct`): with
//! `sslmode=verify-full&sslrootcert=…` the spine connects through it and works; with the
//! system's roots the unknown certificate is refused; a plain connection is refused by the
//! terminator; errors name the server and never the password.
//!
//! Client certificates need the server itself to speak TLS: Debian's PostgreSQL
//! (`$KEEL_TEST_PG_TLS_BIN`, from scripts/test-services) with `hostssl … cert`. A certificate
//! signed by the server's authority for the role logs in and the spine appends; none, or one
//! signed by another authority, is refused by the server; a certificate without its key, or with
//! another's, is named before any connection.

#![allow(clippy::unwrap_used)]

use keel_memory::pgserver::PgServer;
use keel_spine::{EventLog, PgEventLog, PgOptions};
use keel_testkit::certs;
use keel_testkit::terminator::terminator;
use std::path::{Path, PathBuf};

const SECRET: &str = "pw-Lk20-tls-never-shown";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spine_connects_over_verified_tls_and_refuses_an_unknown_certificate() {
    let pg = PgServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::authority(dir.path(), "keel-test-ca");
    let (cert, key) = certs::leaf(dir.path(), &ca);
    let ca = ca.0;
    let port = terminator(&cert, &key, pg.port()).await;
    let url = format!("postgres://postgres:{SECRET}@127.0.0.1:{port}/postgres");
    let verified = format!(
        "{url}?sslmode=verify-full&sslnegotiation=direct&sslrootcert={}",
        ca.display()
    );
    let (session, _) = keel_spine::postgres::connect_session(&verified)
        .await
        .unwrap();
    let one: i32 = session.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    // The spine itself: every connection it opens (writer, readers, listener) is verified TLS.
    let log = PgEventLog::connect(&verified, PgOptions::default())
        .await
        .unwrap();
    assert!(log.read_all(1, 10).await.unwrap().is_empty());
    let exec = keel_testkit::builder::exec_id(1);
    let events = keel_testkit::builder::ExecBuilder::new(exec, "acme")
        .started("Where is my order?")
        .build();
    log.append(exec, 0, &events).await.unwrap();
    assert_eq!(log.read(exec, 1).await.unwrap(), events);

    // Plain text to the terminator is refused.
    assert!(
        keel_spine::postgres::connect_session(&format!("{url}?sslmode=disable"))
            .await
            .is_err()
    );

    // The system's roots do not know the self-signed certificate.
    let err = PgEventLog::connect(
        &format!("{url}?sslmode=require&sslnegotiation=direct"),
        PgOptions::default(),
    )
    .await
    .err()
    .expect("an unknown certificate is refused")
    .to_string();
    assert!(!err.contains(SECRET), "{err}");
    assert!(err.contains("certificate"), "the reason is given: {err}");
    assert!(
        err.contains(&format!("postgres://postgres@127.0.0.1:{port}/postgres")),
        "{err}"
    );

    // A missing sslrootcert file is named.
    let err = PgEventLog::connect(
        &format!("{url}?sslmode=verify-full&sslnegotiation=direct&sslrootcert=/nonexistent/ca.pem"),
        PgOptions::default(),
    )
    .await
    .err()
    .expect("no such file")
    .to_string();
    assert!(err.contains("sslrootcert /nonexistent/ca.pem"), "{err}");
    assert!(!err.contains(SECRET), "{err}");
}

/// Debian's PostgreSQL (built with TLS), requiring a client certificate signed by `ca` whose CN
/// is the role.
async fn cert_only_server(dir: &Path, ca: &(PathBuf, PathBuf)) -> PgServer {
    let bin = std::env::var_os("KEEL_TEST_PG_TLS_BIN")
        .expect("KEEL_TEST_PG_TLS_BIN is not set: run scripts/test (scripts/test-services)");
    let pg = PgServer::start_from(Path::new(&bin)).unwrap();
    let (cert, key) = certs::leaf(dir, ca);
    pg.require_client_certificates(&cert, &key, &ca.0)
        .await
        .unwrap();
    pg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_signed_by_the_servers_authority_logs_in_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::authority(dir.path(), "keel-test-ca");
    let pg = cert_only_server(dir.path(), &ca).await;
    let (cert, key) = certs::client(dir.path(), &ca, "client", "postgres");
    // libpq's three key formats all load; this one is SEC1 (`BEGIN EC PRIVATE KEY`).
    let key = certs::sec1(&key);
    let other = certs::authority(dir.path(), "another-ca");
    let (stranger, stranger_key) = certs::client(dir.path(), &other, "stranger", "postgres");
    let base = format!(
        "postgres://postgres:{SECRET}@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
        pg.port(),
        ca.0.display()
    );
    let with = |cert: &Path, key: &Path| {
        format!("{base}&sslcert={}&sslkey={}", cert.display(), key.display())
    };

    let log = PgEventLog::connect(&with(&cert, &key), PgOptions::default())
        .await
        .unwrap();
    let exec = keel_testkit::builder::exec_id(1);
    let events = keel_testkit::builder::ExecBuilder::new(exec, "acme")
        .started("Where is my order?")
        .build();
    log.append(exec, 0, &events).await.unwrap();
    assert_eq!(log.read(exec, 1).await.unwrap(), events);
    // The stores sharing the spine's database connect the same way.
    let (session, _) = keel_spine::postgres::connect_session(&with(&cert, &key))
        .await
        .unwrap();
    let user: String = session
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, "postgres");
    // libpq's key=value form too.
    let kv = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
        pg.port(),
        ca.0.display(),
        cert.display(),
        key.display()
    );
    keel_spine::postgres::connect_session(&kv).await.unwrap();

    // Without a certificate the server refuses the login.
    let err = keel_spine::postgres::connect_session(&base)
        .await
        .expect_err("no certificate is refused")
        .to_string();
    assert!(!err.contains(SECRET), "{err}");
    assert!(err.contains("certificate"), "the server's reason: {err}");

    // A certificate from another authority: the server refuses the handshake.
    let err = PgEventLog::connect(&with(&stranger, &stranger_key), PgOptions::default())
        .await
        .err()
        .expect("another authority's certificate is refused")
        .to_string();
    assert!(!err.contains(SECRET), "{err}");
    assert!(
        err.contains(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            pg.port()
        )),
        "{err}"
    );

    // Half a pair, a missing file, a key of another certificate: named before connecting.
    let cases = [
        (
            format!("{base}&sslcert={}", cert.display()),
            "sslcert",
            cert.clone(),
        ),
        (
            format!("{base}&sslkey={}", key.display()),
            "sslkey",
            key.clone(),
        ),
        (
            with(&cert, Path::new("/nonexistent/client.key")),
            "sslkey",
            PathBuf::from("/nonexistent/client.key"),
        ),
        (
            with(Path::new("/nonexistent/client.pem"), &key),
            "sslcert",
            PathBuf::from("/nonexistent/client.pem"),
        ),
        (with(&cert, &stranger_key), "sslkey", stranger_key.clone()),
    ];
    for (url, name, file) in cases {
        let err = PgEventLog::connect(&url, PgOptions::default())
            .await
            .err()
            .unwrap_or_else(|| panic!("{name} {} is refused", file.display()))
            .to_string();
        assert!(
            err.contains(&format!("{name} {}", file.display())),
            "{name} and its file are named: {err}"
        );
        assert!(!err.contains(SECRET), "{err}");
    }
}
