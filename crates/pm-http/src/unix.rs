//! The unix-socket side of the remote API: binding and connecting whatever the length of the path, the accept
//! loop (the peer's `SO_PEERCRED` travels with each request), and a small blocking client for local tools.
//!
//! A socket address holds at most 107 bytes of path on Linux. Longer paths (deep temporary folders reach it) are
//! bound and connected through `/proc/self/fd/N/NAME`, where `N` is an open descriptor of the socket's folder:
//! the kernel resolves that short path to the real folder.

use std::convert::Infallible;
use std::fs::File;
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH};
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::server::{drain, http1_builder, limit_body, HttpRequest, HttpResponse, ServerConfig};

/// Longest path a `sockaddr_un` takes (with its terminating NUL it is 108 bytes on Linux).
const MAX_SUN_PATH: usize = 107;

/// Runs `f` with a path that names `path` and fits in a socket address: `path` itself when short enough, else
/// `/proc/self/fd/N/NAME` with `N` an open descriptor of its folder (kept open while `f` runs).
fn with_short_path<T>(path: &Path, f: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    if path.as_os_str().as_bytes().len() <= MAX_SUN_PATH {
        return f(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no file", path.display())));
    };
    let dir = File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    if short.as_os_str().as_bytes().len() > MAX_SUN_PATH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket file name too long: {}", path.display()),
        ));
    }
    let res = f(&short);
    drop(dir);
    res
}

/// Binds the socket `path` with mode `mode` (0600 for the owner only): a stale socket left there by a monitor
/// that died is removed first (the caller holds the instance lock, so nobody else listens on it); anything
/// else at that path is an error. The socket is bound under a temporary name, given its mode, then renamed into
/// place, so it is never reachable with a wider mode.
pub fn bind_unix(path: &Path, mode: u32) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket; remove it", path.display()),
            ))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = with_short_path(&tmp, |short| UnixListener::bind(short))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(err) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Connects to the socket `path` (blocking), whatever its length.
pub fn connect_unix(path: &Path) -> io::Result<UnixStream> {
    with_short_path(path, |short| UnixStream::connect(short))
}

/// A running unix-socket server; like [`crate::ServerHandle`], dropping it stops it. The socket file is removed
/// when it stops.
#[derive(Debug)]
#[must_use = "dropping a UnixServerHandle stops the server"]
pub struct UnixServerHandle {
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl UnixServerHandle {
    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, removes the socket file, lets open connections finish as [`crate::ServerHandle::shutdown`]
    /// does.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for UnixServerHandle {
    fn drop(&mut self) {
        if self.stop.is_some() || self.task.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What a unix-socket server does with one request from a peer with user id `uid`.
pub(crate) trait UnixHandler: Send + Sync + 'static {
    fn call_unix(&self, req: HttpRequest, uid: u32) -> impl Future<Output = HttpResponse> + Send;
}

pub(crate) fn spawn_unix<H: UnixHandler>(
    listener: UnixListener,
    path: PathBuf,
    handler: Arc<H>,
    config: ServerConfig,
) -> io::Result<UnixServerHandle> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, path.clone(), handler, config, stop_rx));
    Ok(UnixServerHandle { path, stop: Some(stop_tx), task: Some(task) })
}

async fn accept_loop<H: UnixHandler>(
    listener: tokio::net::UnixListener,
    path: PathBuf,
    handler: Arc<H>,
    config: ServerConfig,
    mut stop: oneshot::Receiver<()>,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let builder = http1_builder(&config);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        tracing::warn!(socket = %path.display(), "accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let uid = match stream.peer_cred() {
                    Ok(cred) => cred.uid(),
                    Err(err) => {
                        tracing::warn!("cannot read the socket peer's credentials: {err}");
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::warn!(uid, "socket connection limit reached; refusing connection");
                    continue;
                };
                let service = {
                    let handler = handler.clone();
                    let max_body = config.max_body_bytes;
                    service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        async move {
                            Ok::<_, Infallible>(limit_body(req, max_body, |req| handler.call_unix(req, uid)).await)
                        }
                    })
                };
                let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                connections.spawn(async move {
                    let _permit = permit;
                    if let Err(err) = connection.await {
                        tracing::debug!(uid, "socket connection ended: {err}");
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&path);
    drain(graceful, connections, config.shutdown_grace).await;
}

/// A response read by [`blocking_request`].
#[derive(Debug, Clone)]
pub struct UnixResponse {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

/// One HTTP/1.1 request over the unix socket `socket`, blocking, within `timeout` per read and write: for local
/// tools that have no async runtime (the local client, the CLI). `path` is the request target (`/processes`);
/// a `body` is sent as JSON. The connection is closed afterwards. A connection closed or reset before any answer
/// (the monitor went away) is an error of kind `UnexpectedEof`, `ConnectionReset` or `BrokenPipe`.
pub fn blocking_request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<UnixResponse> {
    blocking_exchange(connect_unix(socket)?, method, path, body, timeout)
}

/// [`blocking_request`] on a stream already connected (with [`connect_unix`]): a caller that falls back to
/// another way when no monitor listens connects first, so that it knows nothing was sent when that fails.
pub fn blocking_exchange(
    mut stream: UnixStream,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<UnixResponse> {
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    match body {
        Some(body) => head.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n", body.len())),
        None if method != "GET" => head.push_str("content-length: 0\r\n"),
        None => {}
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&request)?;
    let mut raw = Vec::new();
    stream.take(16 * 1024 * 1024).read_to_end(&mut raw)?;
    if raw.is_empty() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed without an answer"));
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> io::Result<UnixResponse> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("bad HTTP response: {what}"));
    let end = raw.windows(4).position(|window| window == b"\r\n\r\n").ok_or_else(|| bad("no end of head"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status =
        status_line.split(' ').nth(1).and_then(|code| code.parse::<u16>().ok()).ok_or_else(|| bad("status"))?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| bad("header line"))?;
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name.trim().as_bytes()), HeaderValue::from_str(value.trim()))
        {
            headers.append(name, value);
        }
    }
    let mut body = raw[end + 4..].to_vec();
    if let Some(len) = headers.get(CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<usize>().ok()) {
        if body.len() < len {
            return Err(bad("body cut short"));
        }
        body.truncate(len);
    }
    Ok(UnixResponse { status, headers, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse() {
        let res = parse_response(b"HTTP/1.1 404 Not Found\r\ncontent-length: 5\r\nx: y\r\n\r\nhello!").unwrap();
        assert_eq!((res.status, res.body.as_slice()), (404, b"hello".as_slice()));
        assert_eq!(res.headers["x"], "y");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort").is_err());
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn long_paths_bind_and_connect() {
        let base = std::env::temp_dir().join(format!("pm-unix-unit-{}", std::process::id()));
        let deep = base.join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let path = deep.join("processes_default.sock");
        assert!(path.as_os_str().len() > 108);
        let listener = bind_unix(&path, 0o600).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let _client = connect_unix(&path).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (_server_side, _) = listener.accept().unwrap();
        // A stale socket is replaced; a regular file is not.
        drop(listener);
        let _again = bind_unix(&path, 0o600).unwrap();
        let file = deep.join("plain");
        std::fs::write(&file, "x").unwrap();
        assert!(bind_unix(&file, 0o600).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
