//! `HttpClient` and `check_health` against loopback servers.

use std::time::{Duration, Instant};

use pm_http::{check_health, AlivenessCallback, AlivenessServerHelper, HttpClient, ServerConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::monitor_status;

/// A helper whose `/status` answers `body` with 200.
async fn status_server(body: Value) -> AlivenessServerHelper {
    let map = body.as_object().unwrap().clone();
    let callback = AlivenessCallback::default().with_status_request(move || {
        let map = map.clone();
        async move { map }
    });
    let mut helper = AlivenessServerHelper::new(0, callback);
    helper.start().await.unwrap();
    helper
}

#[tokio::test]
async fn check_health_semantics() {
    let client = HttpClient::new();
    let timeout = Duration::from_secs(5);

    let listener = pm_http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let alive = pm_http::spawn_aliveness(listener, monitor_status, ServerConfig::default()).unwrap();
    assert!(check_health(&client, &format!("http://{}/alive", alive.local_addr()), timeout).await, "2xx text passes");
    assert!(check_health(&client, &format!("http://{}/status", alive.local_addr()), timeout).await, "2xx JSON passes");
    assert!(!check_health(&client, &format!("http://{}/missing", alive.local_addr()), timeout).await, "404 fails");

    for (body, expected) in [
        (json!({"healthy": false}), false),
        (json!({"status": "degraded"}), false),
        (json!({"status": "ok"}), true),
        (json!({"healthy": true, "status": "ok"}), true),
    ] {
        let mut helper = status_server(body.clone()).await;
        let url = format!("http://{}/status", helper.local_addr().unwrap());
        assert_eq!(check_health(&client, &url, timeout).await, expected, "{body}");
        helper.stop().await;
    }

    let mut unhealthy =
        AlivenessServerHelper::new(0, AlivenessCallback::default().with_health_check(|| async { false }));
    let addr = unhealthy.start().await.unwrap();
    assert!(!check_health(&client, &format!("http://{addr}/health"), timeout).await, "503 fails");
    unhealthy.stop().await;
    alive.shutdown().await;
}

#[tokio::test]
async fn check_health_fails_on_refused_and_silent_servers() {
    let client = HttpClient::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    assert!(!check_health(&client, &format!("http://127.0.0.1:{port}/health"), Duration::from_secs(5)).await);

    // Accepts connections but never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let started = Instant::now();
    assert!(!check_health(&client, &format!("http://{addr}/health"), Duration::from_millis(300)).await);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    let err = client.get(&format!("http://{addr}/health"), Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(err, pm_http::Error::Timeout { .. }), "{err}");
    holder.abort();
}

#[tokio::test]
async fn localhost_reaches_ipv4_and_ipv6_listeners() {
    let client = HttpClient::new();
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let listener = pm_http::bind(bind.parse().unwrap()).unwrap();
        let server = pm_http::spawn_aliveness(listener, monitor_status, ServerConfig::default()).unwrap();
        let url = format!("http://localhost:{}/alive", server.local_addr().port());
        let res = client.get(&url, Duration::from_secs(5)).await.unwrap();
        assert_eq!(res.status, 200, "{bind}");
        server.shutdown().await;
    }
}

#[tokio::test]
async fn request_sends_json_bodies_and_reads_whole_responses() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&request).contains("{\"a\":1}") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert_ne!(n, 0, "request cut short");
            request.extend_from_slice(&chunk[..n]);
        }
        stream.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Test: yes\r\n\r\nok").await.unwrap();
        String::from_utf8_lossy(&request).to_ascii_lowercase()
    });
    let client = HttpClient::new();
    let res = client
        .request(hyper::Method::PUT, &format!("http://{addr}/x"), Some(br#"{"a":1}"#.to_vec()), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (res.status, res.body.as_slice(), res.headers["x-test"].to_str().unwrap()),
        (201, b"ok".as_slice(), "yes")
    );
    let request = server.await.unwrap();
    assert!(request.starts_with("put /x http/1.1"), "{request}");
    assert!(request.contains("content-type: application/json"), "{request}");

    for bad in ["/relative", "https://127.0.0.1/", "ftp://x/"] {
        let err = client.get(bad, Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, pm_http::Error::InvalidUrl { .. }), "{bad}: {err}");
    }
}
