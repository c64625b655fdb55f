//! Raw HTTP/1.1 on loopback for the security and fuzz suites: requests written byte for byte (also broken
//! ones), from a chosen source address (127.0.0.2 is an untrusted peer when only 127.0.0.1 is trusted), and
//! answers read back without any client library smoothing them over.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// An answer as it came off the wire.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code of the first status line.
    pub status: u16,
    /// The head (status line and headers) as text.
    pub head: String,
    /// Everything after the head.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The `error` message of a JSON error body ("" when there is none).
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The loopback address 127.0.0.1:`port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Opens a TCP connection to `to`, from the address `from` when given (any port), with `TCP_NODELAY`.
pub fn connect(to: SocketAddr, from: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(from) = from else {
        let stream = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        stream.set_nodelay(true)?;
        return Ok(stream);
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
    let stream = runtime.block_on(async {
        let socket = match to {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(from, 0))?;
        let stream = tokio::time::timeout(Duration::from_secs(2), socket.connect(to))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.into_std()
    })?;
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The bytes of a request with `Connection: close` and a `Content-Length` for `body`.
pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Sends one request and reads the whole answer (the server closes after it).
pub fn request(
    to: SocketAddr,
    from: Option<IpAddr>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    let mut stream = connect(to, from)?;
    stream.write_all(&request_bytes(method, path, headers, body))?;
    read_reply(&mut stream, Duration::from_secs(10))?
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed without an answer"))
}

/// `request` with a JSON body.
pub fn request_json(
    to: SocketAddr,
    from: Option<IpAddr>,
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> std::io::Result<Reply> {
    request(to, from, method, path, &[], body.to_string().as_bytes())
}

/// Reads one answer: the head, then the body by `Content-Length` (or until the server closes). `Ok(None)` when
/// the server closed (or reset) the connection before sending anything.
pub fn read_reply(stream: &mut TcpStream, timeout: Duration) -> std::io::Result<Option<Reply>> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at;
        }
        match read_some(stream, &mut chunk, deadline)? {
            0 if buf.is_empty() => return Ok(None),
            0 => return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed inside the head")),
            n => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 1024 * 1024 {
            return Err(std::io::Error::other("answer head over 1 MiB"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP status line: {head:?}")))?;
    if !head.starts_with("HTTP/1.") {
        return Err(std::io::Error::other(format!("not an HTTP/1 answer: {head:?}")));
    }
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok()).flatten()
    });
    let mut body = buf[head_end + 4..].to_vec();
    loop {
        if length.is_some_and(|length| body.len() >= length) {
            body.truncate(length.unwrap_or_default());
            break;
        }
        match read_some(stream, &mut chunk, deadline) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            // A reset after a complete head (the server closing on unread request bytes) ends the body.
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset && length.is_none() => break,
            Err(err) => return Err(err),
        }
    }
    Ok(Some(Reply { status, head, body }))
}

fn read_some(stream: &mut TcpStream, chunk: &mut [u8], deadline: Instant) -> std::io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"));
    }
    stream.set_read_timeout(Some(left))?;
    match stream.read(chunk) {
        Ok(n) => Ok(n),
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => Ok(0),
        Err(err) if matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))
        }
        Err(err) => Err(err),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// Waits until the server closes `stream` (EOF or reset), reading and dropping what it sends; answers how long
/// that took, or `None` when it stayed open for `timeout`.
pub fn wait_closed(stream: &mut TcpStream, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left.min(Duration::from_millis(200)))).ok()?;
        match stream.read(&mut chunk) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(err) if matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
}
