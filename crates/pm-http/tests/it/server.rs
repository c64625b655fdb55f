//! Server plumbing: header timeout, connection limit, graceful shutdown, aliveness endpoints.

use std::time::{Duration, Instant};

use pm_http::{HttpClient, ServerConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{eventually, monitor_status, raw, read_reply, Api, FakeControl};

fn aliveness(config: ServerConfig) -> pm_http::ServerHandle {
    let listener = pm_http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    pm_http::spawn_aliveness(listener, monitor_status, config).unwrap()
}

#[tokio::test]
async fn aliveness_endpoints() {
    let server = aliveness(ServerConfig::default());
    let client = HttpClient::new();
    let base = format!("http://{}", server.local_addr());

    let res = client.get(&format!("{base}/alive"), Duration::from_secs(5)).await.unwrap();
    assert_eq!((res.status, res.body.as_slice()), (200, b"OK".as_slice()));
    assert!(res.headers["content-type"].to_str().unwrap().starts_with("text/plain"));

    let res = client.get(&format!("{base}/status"), Duration::from_secs(5)).await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.headers["content-type"], "application/json");
    let status = res.json().unwrap();
    assert_eq!(
        (status["instanceId"].clone(), status["pid"].clone(), status["uptime"].clone()),
        (json!("default"), json!(4242), json!(7))
    );

    let res = client.get(&format!("{base}/nope"), Duration::from_secs(5)).await.unwrap();
    assert_eq!(res.status, 404);
    let res =
        client.request(hyper::Method::POST, &format!("{base}/alive"), None, Duration::from_secs(5)).await.unwrap();
    assert_eq!((res.status, res.headers["allow"].to_str().unwrap()), (405, "GET"));
    server.shutdown().await;
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let api = Api::start_with(
        FakeControl::new(),
        ServerConfig { header_read_timeout: Duration::from_millis(300), ..ServerConfig::default() },
    );
    let mut stream = tokio::net::TcpStream::connect(api.addr()).await.unwrap();
    stream.write_all(b"GET /processes HTTP/1.1\r\nHost: t\r\nX-Slow: ").await.unwrap();
    let started = Instant::now();
    let res = read_reply(&mut stream, Duration::from_secs(5)).await;
    assert!(res.status == 0 || res.status == 408, "{}", res.head);
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

    // A whole request within the timeout is still served.
    let res = raw(api.addr(), b"GET /processes HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    assert_eq!(res.status, 200);
}

#[tokio::test]
async fn connection_limit_refuses_extra_connections() {
    let config =
        ServerConfig { max_connections: 2, header_read_timeout: Duration::from_secs(20), ..ServerConfig::default() };
    let api = Api::start_with(FakeControl::new(), config);
    let alive = aliveness(ServerConfig::default());

    // Two idle connections take both slots.
    let first = tokio::net::TcpStream::connect(api.addr()).await.unwrap();
    let second = tokio::net::TcpStream::connect(api.addr()).await.unwrap();
    let mut third = tokio::net::TcpStream::connect(api.addr()).await.unwrap();
    let _ = third.write_all(b"GET /processes HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let res = read_reply(&mut third, Duration::from_secs(5)).await;
    assert!(res.status == 503 || res.status == 0, "third connection was served: {}", res.head);

    // The aliveness server is separate and still answers.
    let client = HttpClient::new();
    let res = client.get(&format!("http://{}/alive", alive.local_addr()), Duration::from_secs(5)).await.unwrap();
    assert_eq!(res.status, 200);

    // Closing the idle connections frees the slots.
    drop((first, second));
    let addr = api.addr();
    let served = eventually(Duration::from_secs(5), || async move {
        raw(addr, b"GET /processes HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await.status == 200
    })
    .await;
    assert!(served, "slots were not freed");
    alive.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_listener_and_connections() {
    let api = Api::start();
    let addr = api.addr();
    // A kept-alive connection that has been served once and now idles.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /processes HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    let started = Instant::now();
    api.server.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(3), "shutdown took {:?}", started.elapsed());
    let res = read_reply(&mut idle, Duration::from_secs(3)).await;
    assert_eq!(res.status, 0, "the idle connection is closed");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed");
}

#[tokio::test]
async fn responses_carry_content_length() {
    let api = Api::start();
    let res = raw(api.addr(), b"GET /monitor/status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    let head = res.head.to_ascii_lowercase();
    assert!(head.contains(&format!("content-length: {}", res.body.len())), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
}
