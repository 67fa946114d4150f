//! A TLS-only PostgreSQL for the tests: the test server's PostgreSQL build has no TLS, so a TLS
//! terminator (rustls, a certificate for 127.0.0.1 signed by a throwaway authority made with
//! `openssl`) accepts only TLS handshakes and forwards to the real server. Clients connect with
//! `sslnegotiation=direct` (PostgreSQL 17's direct TLS).

use std::path::{Path, PathBuf};
use std::process::Command;

/// `openssl ARGS…` in `dir`, failing the test on an error.
fn openssl(dir: &Path, args: &[&str]) {
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
}

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A self-signed certificate authority named `name` in `dir`: (its certificate, its key).
pub fn authority(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
    let subject = format!("/CN={name}");
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &EC,
            &["-days", "2", "-subj", &subject],
            &["-keyout", &key, "-out", &cert],
        ]
        .concat(),
    );
    (dir.join(cert), dir.join(key))
}

/// A certificate and key for 127.0.0.1 signed by the authority `ca` (from [`authority`]), in
/// `dir`: (certificate, key).
pub fn leaf(dir: &Path, ca: &(PathBuf, PathBuf)) -> (PathBuf, PathBuf) {
    openssl(
        dir,
        &[
            &["req"][..],
            &EC,
            &[
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.req",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("leaf.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let (ca_cert, ca_key) = (ca.0.to_str().unwrap(), ca.1.to_str().unwrap());
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.req",
            "-CA",
            ca_cert,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.cnf",
            "-out",
            "leaf.pem",
        ],
    );
    (dir.join("leaf.pem"), dir.join("leaf.key"))
}

/// A TLS terminator on a free port of 127.0.0.1 forwarding to `upstream`, on `rt`; its port.
pub fn terminator(rt: &tokio::runtime::Runtime, cert: &Path, key: &Path, upstream: u16) -> u16 {
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
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move {
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
