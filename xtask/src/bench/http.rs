//! A hand-written HTTP/1.1 keep-alive client over `TcpStream` (loopback only, `Content-Length` or chunked
//! bodies), and a tiny health endpoint that the monitor's aliveness checks call.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

/// A connected byte stream: TCP or the monitor's unix socket.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One keep-alive connection to `127.0.0.1:port` (or to a unix socket).
pub(crate) struct Conn {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
    port: u16,
    /// Extra header lines sent with every request (`Authorization: Bearer ...\r\n`).
    extra: String,
}

/// A response: status and body.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

impl Conn {
    pub(crate) fn connect(port: u16) -> anyhow::Result<Conn> {
        Conn::connect_with(port, Duration::from_secs(10))
    }

    fn connect_with(port: u16, read_timeout: Duration) -> anyhow::Result<Conn> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(read_timeout))?;
        Ok(Conn { stream: Box::new(stream), buf: Vec::with_capacity(64 * 1024), port, extra: String::new() })
    }

    /// A keep-alive connection to the monitor's unix socket `path` (short enough for a socket address).
    pub(crate) fn connect_unix(path: &std::path::Path) -> anyhow::Result<Conn> {
        let stream = std::os::unix::net::UnixStream::connect(path)
            .with_context(|| format!("cannot connect to {}", path.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn { stream: Box::new(stream), buf: Vec::with_capacity(64 * 1024), port: 0, extra: String::new() })
    }

    /// Sends `Authorization: Bearer token` with every request from now on.
    pub(crate) fn with_token(mut self, token: &str) -> Conn {
        self.extra = format!("Authorization: Bearer {token}\r\n");
        self
    }

    /// Sends a request without waiting for the answer (pair with [`Conn::read_response`]).
    pub(crate) fn send(&mut self, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<()> {
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            self.extra,
            body.len()
        );
        self.stream.write_all(request.as_bytes()).context("cannot send the request")?;
        Ok(())
    }

    /// One request and its response on this connection.
    pub(crate) fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<Response> {
        self.send(method, path, body)?;
        self.read_response()
    }

    pub(crate) fn get(&mut self, path: &str) -> anyhow::Result<Response> {
        self.request("GET", path, None)
    }

    /// Reads one whole response (head, then a `Content-Length` or chunked body).
    pub(crate) fn read_response(&mut self) -> anyhow::Result<Response> {
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("not an HTTP response: {head:?}"))?;
        let header = |name: &str| {
            head.lines().skip(1).find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
            })
        };
        self.buf.drain(..head_end);
        let body = if let Some(len) = header("content-length") {
            let len: usize = len.parse().context("bad Content-Length")?;
            while self.buf.len() < len {
                self.fill()?;
            }
            self.buf.drain(..len).collect()
        } else if header("transfer-encoding").is_some_and(|value| value.eq_ignore_ascii_case("chunked")) {
            self.read_chunked()?
        } else {
            Vec::new()
        };
        Ok(Response { status, body })
    }

    fn read_chunked(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = find(&self.buf, b"\r\n") {
                    break at;
                }
                self.fill()?;
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .with_context(|| format!("bad chunk size {size_text:?}"))?;
            self.buf.drain(..line_end + 2);
            while self.buf.len() < size + 2 {
                self.fill()?;
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
            if size == 0 {
                return Ok(body);
            }
        }
    }

    fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).context("cannot read the response")?;
        anyhow::ensure!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// One GET on a fresh connection; `None` when nothing answers.
pub(crate) fn get_once(port: u16, path: &str) -> Option<Response> {
    let mut conn = Conn::connect_with(port, Duration::from_secs(2)).ok()?;
    conn.get(path).ok()
}

/// `GET /anything` answers 200 `{"healthy":true}` on keep-alive connections; counts the requests.
pub(crate) struct HealthServer {
    pub(crate) port: u16,
    pub(crate) hits: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl HealthServer {
    pub(crate) fn start() -> anyhow::Result<HealthServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let hits = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_hits, thread_stop) = (hits.clone(), stop.clone());
        std::thread::Builder::new().name("bench-health".to_owned()).spawn(move || {
            for stream in listener.incoming() {
                if thread_stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (hits, stop) = (thread_hits.clone(), thread_stop.clone());
                let _ = std::thread::Builder::new().stack_size(64 * 1024).spawn(move || serve(stream, &hits, &stop));
            }
        })?;
        Ok(HealthServer { port, hits, stop })
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

fn serve(mut stream: TcpStream, hits: &AtomicU64, stop: &AtomicBool) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    const RESPONSE: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"healthy\":true}";
    while !stop.load(Ordering::Relaxed) {
        while let Some(at) = find(&buf, b"\r\n\r\n") {
            buf.drain(..at + 4);
            hits.fetch_add(1, Ordering::Relaxed);
            if stream.write_all(RESPONSE).is_err() {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
