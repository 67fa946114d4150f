//! The spine's PostgreSQL connections over TLS. The test server's PostgreSQL build has no TLS,
//! so the test puts a TLS terminator in front of it (rustls, a self-signed certificate made by
//! `openssl` for 127.0.0.1) that accepts only TLS and forwards to the real server, and the URLs
//! ask for PostgreSQL 17's direct TLS (`sslnegotiation=direct`): with
//! `sslmode=verify-full&sslrootcert=…` the spine connects through it and works; with the
//! system's roots the unknown certificate is refused; a plain connection is refused by the
//! terminator; errors name the server and never the password.

#![allow(clippy::unwrap_used)]

use keel_memory::pgserver::PgServer;
use keel_spine::{EventLog, PgEventLog, PgOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

const SECRET: &str = "pw-Lk20-tls-never-shown";

/// A certificate authority and, signed by it, a certificate and key for 127.0.0.1, in `dir`:
/// (authority, certificate, key).
fn certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "2", "-subj", "/CN=keel-test-ca"],
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "key.pem",
                "-out",
                "req.pem",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "req.pem",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}

/// A TLS terminator on a free port of 127.0.0.1 forwarding to `upstream`; its port.
async fn terminator(cert: &Path, key: &Path, upstream: u16) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // Anything but a TLS handshake is dropped.
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut pg) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut pg).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spine_connects_over_verified_tls_and_refuses_an_unknown_certificate() {
    let pg = PgServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path());
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
