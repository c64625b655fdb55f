//! `AlivenessServerHelper`: health, status, 404, 405, start and stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pm_http::{AlivenessCallback, AlivenessServerHelper, HttpClient};
use serde_json::{json, Map, Value};

fn status_map(pairs: Value) -> Map<String, Value> {
    pairs.as_object().unwrap().clone()
}

#[tokio::test]
async fn health_follows_the_callback() {
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let callback = AlivenessCallback::default().with_health_check(move || {
        let flag = flag.clone();
        async move { flag.load(Ordering::SeqCst) }
    });
    let mut helper = AlivenessServerHelper::new(0, callback);
    let addr = helper.start().await.unwrap();
    assert_ne!(addr.port(), 0);
    assert_eq!(helper.local_addr(), Some(addr));
    assert_eq!(helper.start().await.unwrap(), addr, "starting twice keeps the server");
    let client = HttpClient::new();
    let url = format!("http://{addr}/health");

    let res = client.get(&url, Duration::from_secs(5)).await.unwrap();
    assert_eq!(res.status, 200);
    let body = res.json().unwrap();
    assert_eq!(body["healthy"], true);
    let timestamp = body["timestamp"].as_str().unwrap();
    assert!(pm_core::Timestamp::parse(timestamp).is_some() && timestamp.ends_with('Z'), "{timestamp}");

    healthy.store(false, Ordering::SeqCst);
    let res = client.get(&url, Duration::from_secs(5)).await.unwrap();
    assert_eq!((res.status, res.json().unwrap()["healthy"].clone()), (503, json!(false)));
    assert!(!pm_http::check_health(&client, &url, Duration::from_secs(5)).await);

    helper.stop().await;
    assert_eq!(helper.local_addr(), None);
    assert!(client.get(&url, Duration::from_secs(5)).await.is_err(), "stopped helper still answers");
    helper.stop().await;
}

#[tokio::test]
async fn status_reports_callback_map_pid_and_timestamp() {
    let callback = AlivenessCallback::new(
        || async { true },
        || async { status_map(json!({"version": "1.0.0", "connections": 3, "pid": "spoofed"})) },
    );
    let mut helper = AlivenessServerHelper::with_address("127.0.0.1:0".parse().unwrap(), callback);
    let addr = helper.start().await.unwrap();
    let client = HttpClient::new();

    let res = client.get(&format!("http://{addr}/status"), Duration::from_secs(5)).await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.headers["content-type"], "application/json");
    let body = res.json().unwrap();
    assert_eq!((body["version"].clone(), body["connections"].clone()), (json!("1.0.0"), json!(3)));
    assert_eq!(body["pid"], std::process::id());
    assert!(body["timestamp"].as_str().is_some());

    let res = client.get(&format!("http://{addr}/other"), Duration::from_secs(5)).await.unwrap();
    assert_eq!(res.status, 404);
    let res = client
        .request(hyper::Method::POST, &format!("http://{addr}/health"), None, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((res.status, res.headers["allow"].to_str().unwrap()), (405, "GET"));
    helper.stop().await;
}

#[tokio::test]
async fn a_panicking_callback_does_not_break_the_server() {
    let callback =
        AlivenessCallback::new(|| async { panic!("health exploded") }, || async { panic!("status exploded") });
    let mut helper = AlivenessServerHelper::new(0, callback);
    let addr = helper.start().await.unwrap();
    let client = HttpClient::new();
    let res = client.get(&format!("http://{addr}/health"), Duration::from_secs(5)).await.unwrap();
    assert_eq!(res.status, 503);
    let res = client.get(&format!("http://{addr}/status"), Duration::from_secs(5)).await.unwrap();
    assert_eq!(res.status, 500);
    helper.stop().await;
}
