//! A TLS-only front for a test PostgreSQL whose build has no TLS: a rustls terminator on a free
//! port of 127.0.0.1 that completes TLS handshakes (direct TLS, PostgreSQL 17's
//! `sslnegotiation=direct`) and forwards the plain stream to the real server. Anything but a TLS
//! handshake is dropped, so a plain client is refused. Panics on set-up failure: tests only.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Starts a terminator presenting `cert` and `key` (PEM) and forwarding to 127.0.0.1:`upstream`,
/// on the current tokio runtime (it runs as long as the runtime does); its port.
pub async fn terminator(cert: &Path, key: &Path, upstream: u16) -> u16 {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .unwrap_or_else(|e| panic!("reading {}: {e}", cert.display()));
    let key = PrivateKeyDer::from_pem_file(key)
        .unwrap_or_else(|e| panic!("reading {}: {e}", key.display()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
    .unwrap_or_else(|e| panic!("the terminator's TLS configuration: {e}"));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding the terminator: {e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("the terminator's address: {e}"))
        .port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
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
