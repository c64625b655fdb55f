//! TLS for the remote API (feature `tls`): rustls with the ring provider, certificate chain and key from PEM files.
//!
//! Served by the accept loop of `server.rs` (connection limits per peer and overall, slots reserved for trusted
//! peers, header read and write timeouts, graceful shutdown), with the TLS handshake as the connection's
//! [`Upgrade`]; the handshake must complete within the header read timeout.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;

use crate::server::{Handler, HttpRequest, HttpResponse, ServerConfig, ServerHandle, Upgrade};

/// A loaded certificate chain and key, ready to serve.
#[derive(Clone)]
pub struct TlsConfig {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig")
    }
}

impl TlsConfig {
    /// Loads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1). The error names
    /// the file and what is wrong with it.
    pub fn from_pem_files(cert: &Path, key: &Path) -> io::Result<TlsConfig> {
        let invalid = |path: &Path, what: String| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()))
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|err| invalid(cert, format!("cannot read the certificate: {err}")))?
            .collect::<Result<_, _>>()
            .map_err(|err| invalid(cert, format!("not a PEM certificate chain: {err}")))?;
        if certs.is_empty() {
            return Err(invalid(cert, "holds no certificate".to_owned()));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|err| invalid(key, format!("no usable PEM private key: {err}")))?;
        // ring rather than aws-lc-rs: no cmake and less memory; it lacks only the post-quantum key exchange.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| io::Error::other(err.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|err| {
                io::Error::new(io::ErrorKind::InvalidData, format!("certificate and key do not fit: {err}"))
            })?;
        Ok(TlsConfig { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) })
    }
}

/// What a TLS server does with one request from the TCP peer `peer`.
pub(crate) trait TlsHandler: Send + Sync + 'static {
    fn call_tls(&self, req: HttpRequest, peer: SocketAddr) -> impl Future<Output = HttpResponse> + Send;
}

/// Serves `listener` over TLS with the accept loop of `server.rs`: `handler`'s trust decides the reserved slots,
/// its [`TlsHandler::call_tls`] answers the requests.
pub(crate) fn spawn_tls<H: TlsHandler + Handler>(
    listener: std::net::TcpListener,
    handler: Arc<H>,
    config: ServerConfig,
    tls: TlsConfig,
) -> io::Result<ServerHandle> {
    crate::server::spawn_with(listener, Arc::new(OverTls(handler)), config, tls)
}

/// A handler's TLS side, as the plain accept loop calls it.
struct OverTls<H>(Arc<H>);

impl<H: TlsHandler + Handler> Handler for OverTls<H> {
    async fn call(&self, req: HttpRequest, peer: SocketAddr) -> HttpResponse {
        self.0.call_tls(req, peer).await
    }

    fn trusted_peer(&self, ip: IpAddr) -> bool {
        self.0.trusted_peer(ip)
    }
}

impl Upgrade for TlsConfig {
    type Stream = tokio_rustls::server::TlsStream<TcpStream>;

    async fn upgrade(&self, stream: TcpStream, peer: SocketAddr, timeout: Duration) -> Option<Self::Stream> {
        match tokio::time::timeout(timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(err)) => {
                tracing::debug!(%peer, "TLS handshake failed: {err}");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                None
            }
        }
    }

    /// A plain-text 503 means nothing to a TLS client: the connection is just closed.
    fn refuse(&self, stream: TcpStream) {
        drop(stream);
    }
}
