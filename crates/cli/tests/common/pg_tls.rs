//! A TLS-only PostgreSQL for the tests: the test server's PostgreSQL build has no TLS, so a TLS
//! terminator (rustls, a certificate for 127.0.0.1 signed by a throwaway authority from
//! `keel_testkit::certs`) accepts only TLS handshakes and forwards to the real server. Clients
//! connect with `sslnegotiation=direct` (PostgreSQL 17's direct TLS). Client certificates need
//! the server itself to speak TLS: [`cert_only_server`], Debian's PostgreSQL.

use std::path::Path;

use keel_testkit::certs::leaf;

/// A TLS terminator on a free port of 127.0.0.1 forwarding to `upstream`, on `rt`; its port.
pub fn terminator(rt: &tokio::runtime::Runtime, cert: &Path, key: &Path, upstream: u16) -> u16 {
    rt.block_on(keel_testkit::terminator::terminator(cert, key, upstream))
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
