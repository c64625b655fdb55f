//! Raw hyper 1 HTTP/1 server plumbing shared by every server of this crate.
//!
//! One accept loop per server, plain or TLS (see [`Upgrade`]): every accepted socket gets `TCP_NODELAY`, takes a
//! permit of a semaphore that bounds the open connections (within a cap per peer address, and with a few slots only trusted peers may take), and is
//! served by `hyper::server::conn::http1` with a header read timeout (driven by a [`TokioTimer`]) and a write
//! timeout (a peer that stops reading its answers is cut off). Request bodies reach the handler wrapped in [`Limited`]; a request whose `Content-Length` is
//! already over the limit is answered 413 before the handler runs, without reading the body. Responses are
//! whole bodies sent with a `Content-Length`, except the streams of `GET /events` and followed logs (chunked).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

/// The response type of every handler: a whole body, sent with a `Content-Length`, or a stream.
pub(crate) type HttpResponse = Response<crate::body::Body>;

/// The request type every handler gets: the body can be read only up to [`ServerConfig::max_body_bytes`].
pub(crate) type HttpRequest = Request<Limited<Incoming>>;

/// Limits and timeouts of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Connections served at once (default 256). A connection accepted over the limit gets a canned
    /// `503 Service Unavailable` (written without reading its request) and is closed at once.
    pub max_connections: usize,
    /// Connections served at once from one peer address (default 64); more get the canned 503.
    pub max_connections_per_ip: usize,
    /// Of `max_connections`, how many only trusted peers may take (default 4), so that untrusted peers can never
    /// hold every slot.
    pub reserved_for_trusted: usize,
    /// Requests of untrusted peers handled at once (default 16); the others wait, parked, for their turn, so
    /// that however many connections untrusted peers keep busy, a trusted peer's request is not queued behind
    /// all of them.
    pub max_untrusted_in_flight: usize,
    /// How long the answers already due on a connection may wait for the peer to read them (default 10 s):
    /// from the moment a write would block until everything pending is written. A peer that does not read in
    /// that time is disconnected.
    pub write_timeout: Duration,
    /// Time a client has to send a complete request head, also while a kept-alive connection waits for its next
    /// request (default 5 s). The connection is closed when it runs out; the same time bounds reading a body.
    pub header_read_timeout: Duration,
    /// Largest request body accepted (default 1 MiB); larger ones are answered 413.
    pub max_body_bytes: usize,
    /// How long [`ServerHandle::shutdown`] lets open connections finish their requests (default 2 s); the
    /// connections still open then are dropped.
    pub shutdown_grace: Duration,
    /// Streams (`GET /events`, followed logs) open at once (default 64), counted apart from
    /// `max_connections`; one more is answered 503 `{"error":"Too many streams"}` with `Retry-After`.
    pub max_streams: usize,
    /// Time after which an idle event stream gets a heartbeat comment line (default 15 s).
    pub stream_heartbeat: Duration,
    /// Time a stream waits for its client to take data before it cuts the stream (default 30 s).
    pub stream_stall_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 256,
            max_connections_per_ip: 64,
            reserved_for_trusted: 4,
            max_untrusted_in_flight: 16,
            write_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(5),
            max_body_bytes: 1024 * 1024,
            shutdown_grace: Duration::from_secs(2),
            max_streams: 64,
            stream_heartbeat: Duration::from_secs(15),
            stream_stall_timeout: Duration::from_secs(30),
        }
    }
}

/// A running server. Dropping the handle stops it too (without waiting); [`ServerHandle::shutdown`] waits.
#[derive(Debug)]
#[must_use = "dropping a ServerHandle stops the server"]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes the listening socket, lets open connections finish their current request for at
    /// most [`ServerConfig::shutdown_grace`], then drops the rest. Returns when all of that is done.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            if let Err(err) = task.await {
                tracing::warn!(addr = %self.local_addr, "server task ended abnormally: {err}");
            }
        }
    }
}

/// Binds a listening TCP socket on `addr` with `SO_REUSEADDR`, set non-blocking, ready for the `spawn_*` functions.
///
/// An unspecified IPv6 address (`[::]:port`) is bound dual-stack (`IPV6_V6ONLY` off), so IPv4 peers arrive as
/// `::ffff:a.b.c.d` (the servers normalise that back to IPv4). Port 0 picks a free port; ask the listener's
/// `local_addr` for it. Works outside a tokio runtime.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};

    let family = if addr.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
    let socket = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    sockopt::set_socket_reuseaddr(&socket, true)?;
    if let SocketAddr::V6(v6) = addr {
        if v6.ip().is_unspecified() {
            sockopt::set_ipv6_v6only(&socket, false)?;
        }
    }
    rustix::net::bind(&socket, &addr)?;
    rustix::net::listen(&socket, 1024)?;
    let listener = std::net::TcpListener::from(socket);
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// What a server does with one request. Never fails: every error is a response.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Answers `req`, which came from the TCP peer `peer`.
    fn call(&self, req: HttpRequest, peer: SocketAddr) -> impl Future<Output = HttpResponse> + Send;

    /// Whether a connection from `ip` (normalised) may take one of the slots reserved for trusted peers.
    fn trusted_peer(&self, ip: IpAddr) -> bool {
        let _ = ip;
        false
    }
}

/// What a server does with an accepted TCP connection before it serves HTTP on it: nothing ([`Plain`]), or a TLS
/// handshake. Every limit of the accept loop applies before it; the connection's slots are held while it runs.
pub(crate) trait Upgrade: Send + Sync + 'static {
    /// The stream HTTP is served on.
    type Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;

    /// The stream to serve, or `None` when the connection is to be dropped (the reason is logged). `timeout` is the
    /// header read timeout, which bounds a handshake.
    fn upgrade(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        timeout: Duration,
    ) -> impl Future<Output = Option<Self::Stream>> + Send;

    /// Answers a connection over a limit before it is closed: the canned 503 by default.
    fn refuse(&self, stream: TcpStream) {
        refuse(stream);
    }
}

/// Plain HTTP: the accepted stream is served as it is.
pub(crate) struct Plain;

impl Upgrade for Plain {
    type Stream = TcpStream;

    async fn upgrade(&self, stream: TcpStream, _peer: SocketAddr, _timeout: Duration) -> Option<TcpStream> {
        Some(stream)
    }
}

/// Starts serving `listener` with `handler` on the current tokio runtime.
pub(crate) fn spawn<H: Handler>(
    listener: std::net::TcpListener,
    handler: Arc<H>,
    config: ServerConfig,
) -> std::io::Result<ServerHandle> {
    spawn_with(listener, handler, config, Plain)
}

/// Starts serving `listener` with `handler` on the current tokio runtime, each connection upgraded by `upgrade`
/// first.
pub(crate) fn spawn_with<H: Handler, U: Upgrade>(
    listener: std::net::TcpListener,
    handler: Arc<H>,
    config: ServerConfig,
    upgrade: U,
) -> std::io::Result<ServerHandle> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let local_addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, handler, config, Arc::new(upgrade), stop_rx));
    Ok(ServerHandle { local_addr, stop: Some(stop_tx), task: Some(task) })
}

async fn accept_loop<H: Handler, U: Upgrade>(
    listener: tokio::net::TcpListener,
    handler: Arc<H>,
    config: ServerConfig,
    upgrade: Arc<U>,
    mut stop: oneshot::Receiver<()>,
) {
    let local_addr = listener.local_addr().ok();
    let limits = Limits::new(&config);
    let untrusted_turns = Arc::new(Semaphore::new(config.max_untrusted_in_flight.max(1)));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let builder = http1_builder(&config);

    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(it) => it,
                    Err(err) => {
                        // Typically EMFILE or ECONNABORTED: back off a little instead of spinning.
                        tracing::warn!(?local_addr, "accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                tune(&stream, peer);
                let ip = pm_core::normalize_ip(peer.ip());
                let trusted = handler.trusted_peer(ip);
                let slots = match limits.admit(ip, trusted) {
                    Ok(slots) => slots,
                    Err(limit) => {
                        tracing::warn!(%peer, ?local_addr, "{limit}; refusing connection");
                        upgrade.refuse(stream);
                        continue;
                    }
                };
                let turns = (!trusted).then(|| untrusted_turns.clone());
                let service = connection_service(handler.clone(), peer, config.max_body_bytes, turns);
                let (upgrade, builder, watcher) = (upgrade.clone(), builder.clone(), graceful.watcher());
                let (write_timeout, handshake_timeout) = (config.write_timeout, config.header_read_timeout);
                connections.spawn(async move {
                    let _slots = slots;
                    let Some(stream) = upgrade.upgrade(stream, peer, handshake_timeout).await else {
                        return;
                    };
                    let io = WriteTimeout::new(TokioIo::new(stream), write_timeout);
                    if let Err(err) = watcher.watch(builder.serve_connection(io, service)).await {
                        tracing::debug!(%peer, "connection ended: {err}");
                    }
                });
            }
        }
    }

    drop(listener);
    drain(graceful, connections, config.shutdown_grace).await;
}

/// Socket options of every accepted connection: `TCP_NODELAY`, and a fixed send buffer (answers to a peer that
/// does not read back up after this much, not after the megabytes that autotuning would allow, so pipelined
/// requests cost little before the write timeout applies).
fn tune(stream: &TcpStream, peer: SocketAddr) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%peer, "cannot set TCP_NODELAY: {err}");
    }
    if let Err(err) = set_send_buffer(stream, SEND_BUFFER_BYTES) {
        tracing::debug!(%peer, "cannot set SO_SNDBUF: {err}");
    }
}

/// The connection limits of one accept loop: slots in all (a few of them only for trusted peers) and per peer.
struct Limits {
    /// One permit a connection served.
    permits: Arc<Semaphore>,
    /// Connections served a peer address.
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Permits that only trusted peers may take.
    reserved: usize,
    /// Connections served at once from one peer address.
    max_per_ip: usize,
}

impl Limits {
    fn new(config: &ServerConfig) -> Limits {
        Limits {
            permits: Arc::new(Semaphore::new(config.max_connections.max(1))),
            per_ip: Arc::default(),
            reserved: config.reserved_for_trusted.min(config.max_connections.saturating_sub(1)),
            max_per_ip: config.max_connections_per_ip.max(1),
        }
    }

    /// The slots of a connection from `ip`, held until the connection ends, or the limit that refuses it.
    /// Only the accept loop takes permits, so the count cannot drop between look and take.
    fn admit(&self, ip: IpAddr, trusted: bool) -> Result<(OwnedSemaphorePermit, PeerSlot), &'static str> {
        if self.permits.available_permits() <= self.reserved && !trusted {
            return Err("connection limit for untrusted peers reached");
        }
        let Some(slot) = PeerSlot::take(&self.per_ip, ip, self.max_per_ip) else {
            return Err("connection limit per peer reached");
        };
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Err("connection limit reached");
        };
        Ok((permit, slot))
    }
}

/// The hyper service of one connection from `peer`: each request waits for one of `turns` (an untrusted peer's),
/// then goes to `handler`.
fn connection_service<H: Handler>(
    handler: Arc<H>,
    peer: SocketAddr,
    max_body: usize,
    turns: Option<Arc<Semaphore>>,
) -> impl hyper::service::Service<Request<Incoming>, Response = HttpResponse, Error = Infallible, Future: Send>
       + Send
       + 'static {
    service_fn(move |req: Request<Incoming>| {
        let (handler, turns) = (handler.clone(), turns.clone());
        async move {
            let _turn = match &turns {
                Some(turns) => turns.acquire().await.ok(),
                None => None,
            };
            Ok::<_, Infallible>(dispatch(&*handler, req, peer, max_body).await)
        }
    })
}

/// The HTTP/1 connection builder of every server: keep-alive, and the header read timeout of `config`.
pub(crate) fn http1_builder(config: &ServerConfig) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout).keep_alive(true);
    builder
}

/// After an accept loop stopped: lets the open connections finish their current request within `grace`, then
/// drops the rest.
pub(crate) async fn drain(graceful: GracefulShutdown, mut connections: JoinSet<()>, grace: Duration) {
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::debug!(n_open = connections.len(), "shutdown grace over; dropping open connections");
    }
    connections.shutdown().await;
}

/// The send buffer of every accepted connection (the kernel doubles it for its bookkeeping).
const SEND_BUFFER_BYTES: usize = 64 * 1024;

fn set_send_buffer(stream: &TcpStream, bytes: usize) -> std::io::Result<()> {
    Ok(rustix::net::sockopt::set_socket_send_buffer_size(stream, bytes)?)
}

/// One connection counted against its peer address; the count goes down when it is dropped.
struct PeerSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PeerSlot {
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut map = counts.lock().expect("peer counts");
        let count = map.entry(ip).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PeerSlot { counts: counts.clone(), ip })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().expect("peer counts");
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// The connection's I/O with a write deadline: armed when a write would block, cleared once everything pending
/// has been written (hyper flushes then); when it passes first, the write fails with `TimedOut` and hyper closes
/// the connection. So a peer that pipelines requests and never reads the answers holds its slot for at most the
/// write timeout.
struct WriteTimeout<T> {
    inner: T,
    timeout: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteTimeout<T> {
    fn new(inner: T, timeout: Duration) -> WriteTimeout<T> {
        WriteTimeout { inner, timeout, deadline: None }
    }

    /// After the inner write answered `Pending`: arms the deadline, or fails once it has passed.
    fn blocked<R>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<R>> {
        let timeout = self.timeout;
        let deadline = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the peer did not read its answers in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for WriteTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for WriteTimeout<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.blocked(cx),
            ready => ready,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.blocked(cx),
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.deadline = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => self.blocked(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.blocked(cx),
            ready => ready,
        }
    }
}

/// Answers a connection over the limit with a canned 503 and closes it, without reading its request.
fn refuse(stream: TcpStream) {
    const BODY: &str = r#"{"error":"Too many connections"}"#;
    let Ok(mut stream) = stream.into_std() else {
        return;
    };
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    // A fresh socket's send buffer takes this small write whole; the socket is non-blocking, so this never waits.
    let _ = stream.write(response.as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

async fn dispatch<H: Handler>(handler: &H, req: Request<Incoming>, peer: SocketAddr, max_body: usize) -> HttpResponse {
    limit_body(req, max_body, |req| handler.call(req, peer)).await
}

/// Hands `req` to `call` with its body limited to `max_body` bytes; one whose `Content-Length` is already over is
/// answered 413 without reading it.
pub(crate) async fn limit_body<F: Future<Output = HttpResponse>>(
    req: Request<Incoming>,
    max_body: usize,
    call: impl FnOnce(HttpRequest) -> F,
) -> HttpResponse {
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body as u64) {
        return body_too_large();
    }
    call(req.map(|body| Limited::new(body, max_body))).await
}

/// The 413 answer; it also closes the connection, since the rest of the body is not read.
pub(crate) fn body_too_large() -> HttpResponse {
    let mut res = json_error(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large");
    res.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    res
}

/// Reads a whole request body within `timeout`; the error is the response to send instead (413, 408 or 400).
pub(crate) async fn read_body(body: Limited<Incoming>, timeout: Duration) -> Result<Bytes, HttpResponse> {
    match tokio::time::timeout(timeout, body.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(body_too_large()),
        Ok(Err(err)) => Err(json_error(StatusCode::BAD_REQUEST, &format!("Cannot read request body: {err}"))),
        Err(_) => {
            let mut res = json_error(StatusCode::REQUEST_TIMEOUT, "Request body not received in time");
            res.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            Err(res)
        }
    }
}

/// A JSON response with `content-type: application/json`.
pub(crate) fn json_response(status: StatusCode, value: &serde_json::Value) -> HttpResponse {
    json_bytes(status, serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()))
}

/// A JSON response whose body is serialised already.
pub(crate) fn json_bytes(status: StatusCode, body: Vec<u8>) -> HttpResponse {
    let mut res = Response::new(crate::body::Body::full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// A JSON error response `{"error": message}`.
pub(crate) fn json_error(status: StatusCode, message: &str) -> HttpResponse {
    json_response(status, &serde_json::json!({ "error": message }))
}

/// A 405 answer naming the allowed methods in `Allow`.
pub(crate) fn method_not_allowed(allow: &str) -> HttpResponse {
    let mut res = json_error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
    if let Ok(value) = HeaderValue::from_str(allow) {
        res.headers_mut().insert(hyper::header::ALLOW, value);
    }
    res
}

/// A response with an owned body and the given content type.
pub(crate) fn text_body(status: StatusCode, text: String, content_type: &'static str) -> HttpResponse {
    let mut res = Response::new(crate::body::Body::full(text));
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// A plain-text response.
pub(crate) fn text_response(status: StatusCode, text: &'static str) -> HttpResponse {
    let mut res = Response::new(crate::body::Body::full(Bytes::from_static(text.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let config = ServerConfig::default();
        assert_eq!(config.max_connections, 256);
        assert_eq!((config.max_connections_per_ip, config.reserved_for_trusted), (64, 4));
        assert_eq!(config.max_untrusted_in_flight, 16);
        assert_eq!(config.write_timeout, Duration::from_secs(10));
        assert_eq!(config.header_read_timeout, Duration::from_secs(5));
        assert_eq!(config.max_body_bytes, 1024 * 1024);
        assert_eq!(config.shutdown_grace, Duration::from_secs(2));
        assert_eq!(config.max_streams, 64);
    }

    #[test]
    fn bind_gives_a_nonblocking_listener_on_a_free_port() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        // Non-blocking: accept with nobody connecting answers WouldBlock instead of hanging.
        let err = listener.accept().map(|_| ()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    }

    #[test]
    fn bind_on_unspecified_ipv6_accepts_ipv4_peers() {
        let listener = match bind("[::]:0".parse().unwrap()) {
            Ok(it) => it,
            // FIXME: a host without IPv6 cannot test dual-stack; the bind error itself is then the check.
            Err(err) => {
                assert_eq!(err.kind(), std::io::ErrorKind::AddrNotAvailable, "{err}");
                return;
            }
        };
        listener.set_nonblocking(false).unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_stream, peer) = listener.accept().unwrap();
        assert_eq!(pm_core::normalize_ip(peer.ip()), client.local_addr().unwrap().ip());
    }

    #[test]
    fn json_error_has_the_wire_shape() {
        let res = json_error(StatusCode::NOT_FOUND, "Not found");
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
        let allow = method_not_allowed("GET, OPTIONS");
        assert_eq!(allow.headers()[hyper::header::ALLOW], "GET, OPTIONS");
    }
}
