//! Test fixtures: a running API with the in-memory control plane of `pm_http::testing` behind it, raw HTTP over
//! loopback, temporary folders.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use pm_http::{HttpClient, ServerConfig, ServerHandle};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use pm_http::testing::{monitor_status, FakeControl};

/// A remote API served on loopback with a fake control plane behind it.
pub struct Api {
    pub fake: Arc<FakeControl>,
    pub server: ServerHandle,
    pub client: HttpClient,
}

/// A parsed response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub json: Value,
}

impl Reply {
    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or_else(|| panic!("no error message in {self:?}"))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or("")
    }
}

impl Api {
    pub fn start() -> Api {
        Api::start_with(FakeControl::new(), ServerConfig::default())
    }

    pub fn start_with(fake: Arc<FakeControl>, config: ServerConfig) -> Api {
        let listener = pm_http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let server = pm_http::spawn_remote_api(listener, fake.clone(), config).unwrap();
        Api { fake, server, client: HttpClient::new() }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let url = format!("http://{}{path}", self.addr());
        let body = body.map(|value| serde_json::to_vec(&value).unwrap());
        let res = self.client.request(method, &url, body, Duration::from_secs(10)).await.unwrap();
        let json = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
        Reply { status: res.status, headers: res.headers, json }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Reply {
        self.call(Method::POST, path, body).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }
}

/// A raw HTTP exchange: sends `request` as is (it should say `Connection: close`) and reads until EOF.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> RawReply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw_on(stream, request).await
}

/// As [`raw`], on an already connected stream.
pub async fn raw_on(mut stream: tokio::net::TcpStream, request: &[u8]) -> RawReply {
    stream.write_all(request).await.unwrap();
    read_reply(&mut stream, Duration::from_secs(10)).await
}

/// Reads a whole response (until EOF or error) within `deadline`.
pub async fn read_reply(stream: &mut tokio::net::TcpStream, deadline: Duration) -> RawReply {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(deadline, async {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no EOF within {deadline:?}; got {:?}", String::from_utf8_lossy(&buf));
    RawReply::parse(&buf)
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawReply {
    /// 0 when nothing (or no status line) came back.
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawReply {
    fn parse(buf: &[u8]) -> RawReply {
        let split = buf.windows(4).position(|w| w == b"\r\n\r\n");
        let (head, body) = match split {
            Some(at) => (String::from_utf8_lossy(&buf[..at]).into_owned(), buf[at + 4..].to_vec()),
            None => (String::from_utf8_lossy(buf).into_owned(), Vec::new()),
        };
        let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
        RawReply { status, head, body }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Polls `check` until it holds or `deadline` passes; answers whether it held.
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A temporary folder (canonical path), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "pm-http-it-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(std::fs::canonicalize(path).unwrap())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Creates an executable shell script `name` (folders included) and answers its path.
    pub fn executable(&self, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
