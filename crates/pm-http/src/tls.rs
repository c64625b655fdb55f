//! TLS for the remote API (feature `tls`): rustls with the ring provider, certificate chain and key from PEM files.
//!
//! The accept loop mirrors the plain one of `server.rs` (connection limit, header read timeout, graceful
//! shutdown); the TLS handshake must complete within the header read timeout.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Limited;
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;

use crate::server::{body_too_large, HttpRequest, HttpResponse, ServerConfig, ServerHandle};

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

pub(crate) fn spawn_tls<H: TlsHandler>(
    listener: std::net::TcpListener,
    handler: Arc<H>,
    config: ServerConfig,
    tls: TlsConfig,
) -> io::Result<ServerHandle> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let local_addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, handler, config, tls, stop_rx));
    Ok(ServerHandle::from_parts(local_addr, stop_tx, task))
}

async fn accept_loop<H: TlsHandler>(
    listener: tokio::net::TcpListener,
    handler: Arc<H>,
    config: ServerConfig,
    tls: TlsConfig,
    mut stop: oneshot::Receiver<()>,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout).keep_alive(true);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(it) => it,
                    Err(err) => {
                        tracing::warn!("TLS accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "connection limit reached; refusing TLS connection");
                    continue;
                };
                let handler = handler.clone();
                let acceptor = tls.acceptor.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let (handshake_timeout, max_body) = (config.header_read_timeout, config.max_body_bytes);
                connections.spawn(async move {
                    let _permit = permit;
                    let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, "TLS handshake failed: {err}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let service = service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        async move {
                            let declared = req
                                .headers()
                                .get(CONTENT_LENGTH)
                                .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok());
                            if declared.is_some_and(|len| len > max_body as u64) {
                                return Ok::<_, Infallible>(body_too_large());
                            }
                            Ok(handler.call_tls(req.map(|body| Limited::new(body, max_body)), peer).await)
                        }
                    });
                    if let Err(err) = watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await {
                        tracing::debug!(%peer, "TLS connection ended: {err}");
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(config.shutdown_grace, graceful.shutdown()).await;
    connections.shutdown().await;
}
