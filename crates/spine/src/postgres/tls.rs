//! TLS for the spine's PostgreSQL connections (and the stores sharing them through
//! `connect_session`): rustls with the ring provider (the workspace's; no C build), over
//! tokio-rustls.
//!
//! The URL's `sslmode` says whether: `disable` never, `prefer` (the default) when the server
//! offers it, `require`, `verify-ca` and `verify-full` always. Whenever TLS is used the server's
//! certificate is verified — chain and host name — against `sslrootcert=PATH` (PEM) if the URL
//! names one, else the system's trusted roots: rustls has no "encrypt but trust anyone" mode,
//! and a man in the middle is what TLS is for. So `require` here is libpq's `verify-full`.
//!
//! `sslcert=PATH&sslkey=PATH` (PEM, both or neither) give every connection a client
//! certificate, for servers that authenticate clients by certificate (`hostssl … cert`).

use crate::error::SpineError;
use futures::future::BoxFuture;
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// Makes the TLS connector of every connection to one server.
#[derive(Clone)]
pub struct MakeRustls {
    config: Arc<ClientConfig>,
}

/// The files a URL names for TLS: the roots to trust (`sslrootcert`) and the client's
/// certificate and key (`sslcert`, `sslkey`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `sslrootcert`: the certificates to trust instead of the system's.
    pub root: Option<PathBuf>,
    /// `sslcert`: the client's certificate chain.
    pub cert: Option<PathBuf>,
    /// `sslkey`: the client certificate's private key.
    pub key: Option<PathBuf>,
}

/// The URL without the options tokio-postgres does not parse (`sslrootcert`, `sslcert`,
/// `sslkey`, and the `verify-*` modes, which become `require`: verification is always on), and
/// the files they name.
pub(crate) fn split_url(url: &str) -> (String, TlsFiles) {
    let mut files = TlsFiles::default();
    let mut keep = |key: &str, value: &str| -> Option<String> {
        match (key, value) {
            ("sslrootcert", v) => {
                files.root = Some(PathBuf::from(v));
                None
            }
            ("sslcert", v) => {
                files.cert = Some(PathBuf::from(v));
                None
            }
            ("sslkey", v) => {
                files.key = Some(PathBuf::from(v));
                None
            }
            ("sslmode", "verify-ca" | "verify-full") => Some(format!("{key}=require")),
            (k, v) => Some(format!("{k}={v}")),
        }
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), TlsFiles::default());
        };
        let kept: Vec<String> = query
            .split('&')
            .filter_map(|pair| match pair.split_once('=') {
                Some((k, v)) => keep(k, v),
                None => Some(pair.to_owned()),
            })
            .collect();
        let url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (url, files);
    }
    // libpq's `key=value key=value` form (values without spaces: paths and modes).
    let kept: Vec<String> = url
        .split_whitespace()
        .filter_map(|pair| match pair.split_once('=') {
            Some((k, v)) => keep(k, v),
            None => Some(pair.to_owned()),
        })
        .collect();
    (kept.join(" "), files)
}

impl MakeRustls {
    /// A connector trusting the certificates in `files.root` (PEM), else the system's roots,
    /// and presenting the client certificate `files.cert` with `files.key` if given; `shown`
    /// names the server in errors.
    pub fn new(files: &TlsFiles, shown: &Path) -> Result<Self, SpineError> {
        let root = files.root.as_deref();
        let fail = |detail: String| SpineError::Storage {
            context: "setting up TLS",
            path: shown.to_owned(),
            detail,
        };
        let mut roots = rustls::RootCertStore::empty();
        match root {
            Some(file) => {
                let certs = CertificateDer::pem_file_iter(file)
                    .map_err(|e| fail(format!("sslrootcert {}: {e}", file.display())))?;
                for cert in certs {
                    let cert =
                        cert.map_err(|e| fail(format!("sslrootcert {}: {e}", file.display())))?;
                    roots
                        .add(cert)
                        .map_err(|e| fail(format!("sslrootcert {}: {e}", file.display())))?;
                }
            }
            None => {
                // Unreadable system certificates are skipped: a connection that needs them
                // fails its handshake with rustls's reason.
                let found = rustls_native_certs::load_native_certs();
                let _ = roots.add_parsable_certificates(found.certs);
            }
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| fail(e.to_string()))?
                .with_root_certificates(roots);
        let config = match (&files.cert, &files.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key_file)) => {
                let (chain, key) = client_identity(cert, key_file).map_err(fail)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    fail(format!(
                        "sslkey {} does not go with sslcert {}: {e}",
                        key_file.display(),
                        cert.display()
                    ))
                })?
            }
            (Some(cert), None) => {
                return Err(fail(format!(
                    "sslcert {} is given without sslkey",
                    cert.display()
                )));
            }
            (None, Some(key)) => {
                return Err(fail(format!(
                    "sslkey {} is given without sslcert",
                    key.display()
                )));
            }
        };
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

/// The client's certificate chain and private key from their PEM files; errors name the key
/// (`sslcert`, `sslkey`) and the file.
fn client_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("sslcert {}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("sslcert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("sslcert {}: no certificate in it", cert.display()));
    }
    // PKCS#8, PKCS#1 (RSA) or SEC1 (EC), whichever the PEM holds.
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("sslkey {}: {e}", key.display()))?;
    Ok((chain, key))
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(RustlsConnect {
            config: self.config.clone(),
            name,
        })
    }
}

/// The TLS handshake of one connection.
pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<RustlsStream<S>>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await
                .map(RustlsStream)
        })
    }
}

/// A connection over TLS.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding (tokio-postgres then asks for none).
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::{TlsFiles, split_url};
    use std::path::PathBuf;

    fn root(path: &str) -> TlsFiles {
        TlsFiles {
            root: Some(PathBuf::from(path)),
            ..TlsFiles::default()
        }
    }

    #[test]
    fn the_options_tokio_postgres_does_not_parse_are_taken_out() {
        assert_eq!(
            split_url("postgres://u:p@h/db?sslmode=verify-full&sslrootcert=/ca.pem&x=1"),
            (
                "postgres://u:p@h/db?sslmode=require&x=1".to_owned(),
                root("/ca.pem")
            )
        );
        assert_eq!(
            split_url("postgres://h/db?sslrootcert=/ca.pem"),
            ("postgres://h/db".to_owned(), root("/ca.pem"))
        );
        assert_eq!(
            split_url("host=h sslmode=verify-ca sslrootcert=/c.pem dbname=d"),
            ("host=h sslmode=require dbname=d".to_owned(), root("/c.pem"))
        );
        assert_eq!(
            split_url("postgres://h/db"),
            ("postgres://h/db".to_owned(), TlsFiles::default())
        );
        let client = TlsFiles {
            root: None,
            cert: Some(PathBuf::from("/c.pem")),
            key: Some(PathBuf::from("/k.pem")),
        };
        assert_eq!(
            split_url("postgres://h/db?sslcert=/c.pem&sslmode=require&sslkey=/k.pem"),
            ("postgres://h/db?sslmode=require".to_owned(), client.clone())
        );
        assert_eq!(
            split_url("host=h sslcert=/c.pem sslkey=/k.pem"),
            ("host=h".to_owned(), client)
        );
    }
}
