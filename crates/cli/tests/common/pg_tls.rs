//! A TLS-only PostgreSQL for the tests: the test server's PostgreSQL build has no TLS, so a TLS
//! terminator (rustls, a certificate for 127.0.0.1 signed by a throwaway authority from
//! `keel_testkit::certs`) accepts only TLS handshakes and forwards to the real server. Clients
//! connect with `sslnegotiation=direct` (PostgreSQL 17's direct TLS). Client certificates need
//! the server itself to speak TLS: [`cert_only_server`], Debian's PostgreSQL.

use std::path::Path;

use keel_testkit::certs::leaf;

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

/// Debian's PostgreSQL (`$KEEL_TEST_PG_TLS_BIN`, built with TLS) requiring, on `rt`, a client
/// certificate signed by the authority `ca` whose CN is the role; its own certificate is for
/// 127.0.0.1, signed by `ca`, made in `dir`.
pub fn cert_only_server(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    ca: &(std::path::PathBuf, std::path::PathBuf),
) -> keel_memory::pgserver::PgServer {
    let bin = std::env::var_os("KEEL_TEST_PG_TLS_BIN")
        .expect("KEEL_TEST_PG_TLS_BIN is not set: run scripts/test (scripts/test-services)");
    let pg = keel_memory::pgserver::PgServer::start_from(Path::new(&bin)).unwrap();
    let (cert, key) = leaf(dir, ca);
    rt.block_on(pg.require_client_certificates(&cert, &key, &ca.0))
        .unwrap();
    pg
}
