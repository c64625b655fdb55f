//! The remote API from a trusted loopback peer: every endpoint's happy path and every error status.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hyper::Method;
use pm_core::ProcessState;
use pm_http::ServerConfig;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::support::{raw, read_reply, Api, FakeControl};

#[tokio::test]
async fn register_list_and_get() {
    let api = Api::start();
    let body = json!({"id": "web", "name": "Web", "command": "/bin/true", "args": ["-x"], "partner": true});
    let res = api.post("/processes", Some(body)).await;
    assert_eq!((res.status, &res.json), (200, &json!({"success": true, "processId": "web"})));
    assert_eq!(res.header("content-type"), "application/json");

    let config = api.fake.config("web").unwrap();
    assert!(config.is_remote, "registration through the API is remote");
    assert!(!config.partner, "the partner flag is never accepted from the API");
    assert_eq!((config.command.as_str(), config.args.as_slice()), ("/bin/true", ["-x".to_owned()].as_slice()));

    let res = api.get("/processes").await;
    assert_eq!(res.status, 200);
    let processes = res.json["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 1);
    assert_eq!(processes[0]["id"], "web");
    assert_eq!(processes[0]["isRemote"], true);

    let res = api.get("/processes/web").await;
    assert_eq!(res.status, 200);
    for (key, value) in [("id", json!("web")), ("name", json!("Web")), ("state", json!("stopped"))] {
        assert_eq!(res.json[key], value, "{key}");
    }
    for key in ["enabled", "autostart", "isRemote", "restartAttempts"] {
        assert!(res.json.get(key).is_some(), "{key} missing in {}", res.json);
    }
}

#[tokio::test]
async fn process_actions() {
    let api = Api::start();
    api.fake.insert("job", false, true);

    let res = api.post("/processes/job/start", None).await;
    assert_eq!((res.status, &res.json), (200, &json!({"success": true, "state": "starting"})));
    let res = api.post("/processes/job/stop", None).await;
    assert_eq!((res.status, &res.json), (200, &json!({"success": true, "state": "stopped"})));
    let res = api.post("/processes/job/restart", None).await;
    assert_eq!((res.status, &res.json), (200, &json!({"success": true, "state": "starting"})));

    let res = api.post("/processes/job/disable", None).await;
    assert_eq!((res.status, &res.json), (200, &json!({"success": true})));
    assert_eq!(api.fake.state("job"), Some(ProcessState::Disabled));
    let res = api.post("/processes/job/enable", None).await;
    assert_eq!((res.status, &res.json), (200, &json!({"success": true})));
    assert!(api.fake.config("job").unwrap().enabled);

    let res = api.put("/processes/job/autostart", json!({"autostart": false})).await;
    assert_eq!((res.status, &res.json), (200, &json!({"success": true})));
    assert!(!api.fake.config("job").unwrap().autostart);
    let res = api.put("/processes/job/autostart", json!({"autostart": "no"})).await;
    assert_eq!(res.status, 400);
    assert!(res.error().starts_with("Missing or invalid field"), "{}", res.error());

    let res = api.delete("/processes/job").await;
    assert_eq!((res.status, &res.json), (200, &json!({"success": true})));
    assert!(api.fake.config("job").is_none());
}

#[tokio::test]
async fn monitor_endpoints() {
    let api = Api::start();
    let res = api.get("/monitor/status").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json["instanceId"], "default");
    assert_eq!(res.json["pid"], 4242);
    assert_eq!(res.json["state"], "running");
    assert_eq!(res.json["managedProcessCount"], 1);
    assert_eq!(res.json["partnerStatus"], "alive");

    let res = api.post("/monitor/restart", None).await;
    assert_eq!(
        (res.status, &res.json),
        (200, &json!({"success": true, "message": "ProcessMonitor restart initiated"}))
    );
    assert!(api.fake.calls().contains(&"restart_monitor".to_owned()));
}

#[tokio::test]
async fn config_endpoints() {
    let api = Api::start();

    let res = api.get("/config/remote-access").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json["allowRemoteMonitorRestart"], false);
    assert_eq!(res.json["trustedHosts"], json!(["localhost", "127.0.0.1", "::1", "0.0.0.0"]));
    let res =
        api.put("/config/remote-access", json!({"allowRemoteStop": false, "allowRemoteMonitorRestart": true})).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        (res.json["allowRemoteStop"].clone(), res.json["allowRemoteMonitorRestart"].clone()),
        (json!(false), json!(true))
    );
    assert!(!api.fake.settings.lock().unwrap().remote_access.allow_remote_stop);
    let res = api.put("/config/remote-access", json!({"allowEverything": true})).await;
    assert_eq!(res.status, 400, "unknown keys are refused");

    let res = api.get("/config/trusted-hosts").await;
    assert_eq!(res.json, json!({"trustedHosts": ["localhost", "127.0.0.1", "::1", "0.0.0.0"]}));
    let res = api.put("/config/trusted-hosts", json!({"trustedHosts": ["127.0.0.1", "10.0.*.*"]})).await;
    assert_eq!((res.status, &res.json), (200, &json!({"trustedHosts": ["127.0.0.1", "10.0.*.*"]})));

    let res = api.get("/config/executable-whitelist").await;
    assert_eq!((res.status, &res.json), (200, &json!({"patterns": []})));
    let res = api.put("/config/executable-whitelist", json!({"patterns": ["/usr/bin/*"]})).await;
    assert_eq!((res.status, &res.json), (200, &json!({"patterns": ["/usr/bin/*"]})));
    let res = api.put("/config/executable-whitelist", json!({"patterns": ["relative/*"]})).await;
    assert_eq!(res.status, 400, "invalid patterns are refused: {:?}", res.json);
    let res = api.put("/config/executable-blacklist", json!({"patterns": ["/usr/bin/rm"]})).await;
    assert_eq!((res.status, &res.json), (200, &json!({"patterns": ["/usr/bin/rm"]})));
    assert_eq!(api.get("/config/executable-blacklist").await.json, json!({"patterns": ["/usr/bin/rm"]}));

    assert_eq!(api.get("/config/standalone-mode").await.json, json!({"enabled": false}));
    let res = api.put("/config/standalone-mode", json!({"enabled": true})).await;
    assert_eq!((res.status, &res.json), (200, &json!({"enabled": true})));

    let res = api.get("/config/partner-discovery").await;
    assert_eq!((res.status, res.json["discoveryOnStartup"].clone()), (200, json!(false)));
    let res = api
        .put("/config/partner-discovery", json!({"partnerInstanceId": "watcher", "partnerAlivenessPort": 19884}))
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        (res.json["partnerInstanceId"].clone(), res.json["partnerAlivenessPort"].clone()),
        (json!("watcher"), json!(19884))
    );
    let res = api.put("/config/partner-discovery", json!({"checkIntervalMs": 0})).await;
    assert_eq!(res.status, 400);
}

#[tokio::test]
async fn bodies_must_be_json_objects_not_arrays_of_fields() {
    let api = Api::start();
    let before = api.fake.settings.lock().unwrap().clone();
    let cases = [
        ("/config/trusted-hosts", json!([[]])),
        ("/config/trusted-hosts", json!([["10.0.0.1"]])),
        ("/config/standalone-mode", json!([true])),
        ("/config/executable-whitelist", json!([["/usr/bin/*"]])),
        ("/config/remote-access", json!([false])),
    ];
    for (path, body) in cases {
        let res = api.put(path, body.clone()).await;
        assert_eq!(res.status, 400, "{path} {body}: {:?}", res.json);
        assert!(res.error().contains("must be a JSON object"), "{:?}", res.json);
    }
    let res = api.post("/processes", Some(json!(["web", "Web", "/bin/true"]))).await;
    assert_eq!(res.status, 400, "{:?}", res.json);
    assert_eq!(*api.fake.settings.lock().unwrap(), before, "nothing changed");
    assert!(api.fake.config("web").is_none());
}

#[tokio::test]
async fn config_objects_read_with_get_can_be_put_back_whole() {
    let api = Api::start();
    // Keys a later version wrote into the registry stay there but are not part of the API's objects.
    api.fake.edit_remote(|remote| {
        remote.extra.insert("futureKey".to_owned(), json!(1));
    });
    api.fake.settings.lock().unwrap().partner_discovery.extra.insert("futureKey".to_owned(), json!(2));
    for item in ["remote-access", "partner-discovery"] {
        let path = format!("/config/{item}");
        let mut body = api.get(&path).await.json;
        assert_eq!(body.get("futureKey"), None, "{item}: {body}");
        match item {
            "remote-access" => body["allowRemoteStop"] = json!(false),
            _ => body["checkIntervalMs"] = json!(1500),
        }
        let res = api.put(&path, body.clone()).await;
        assert_eq!((res.status, &res.json), (200, &body), "{item}");
    }
    let settings = api.fake.settings.lock().unwrap().clone();
    assert!(!settings.remote_access.allow_remote_stop);
    assert_eq!(settings.partner_discovery.check_interval_ms, 1500);
    assert_eq!(settings.remote_access.extra.get("futureKey"), Some(&json!(1)), "kept where it was");
    // Another endpoint's key with a different value is refused, naming that endpoint; nothing changes.
    let mut body = api.get("/config/remote-access").await.json;
    body["trustedHosts"] = json!(["10.1.1.1"]);
    body["allowRemoteStart"] = json!(false);
    let res = api.put("/config/remote-access", body).await;
    assert_eq!(res.status, 400);
    assert!(res.error().contains("/config/trusted-hosts"), "{:?}", res.json);
    assert!(api.fake.settings.lock().unwrap().remote_access.allow_remote_start);
}

#[tokio::test]
async fn client_errors() {
    let api = Api::start();
    api.fake.insert("off", false, false);
    api.fake.insert("dup", false, true);

    let res = api
        .client
        .request(
            Method::POST,
            &format!("http://{}/processes", api.addr()),
            Some(b"{nope".to_vec()),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(res.status, 400);
    let message = res.json().unwrap()["error"].as_str().unwrap().to_owned();
    assert!(message.starts_with("Invalid JSON: "), "{message}");

    let res = api.post("/processes", Some(json!({"id": "x", "name": "X"}))).await;
    assert_eq!(res.status, 400);
    assert!(res.error().starts_with("Missing or invalid field: "), "{}", res.error());
    let res = api.post("/processes", Some(json!({"id": "x", "name": " ", "command": "/bin/true"}))).await;
    assert_eq!(res.status, 400);
    assert!(res.error().starts_with("Missing or invalid field: name"), "{}", res.error());

    let res = api.post("/processes/off/start", None).await;
    assert_eq!((res.status, res.error()), (400, "Process is disabled"));

    let res = api.get("/processes/ghost").await;
    assert_eq!((res.status, &res.json), (404, &json!({"error": "Process not found", "processId": "ghost"})));
    let res = api.post("/processes/ghost/stop", None).await;
    assert_eq!((res.status, res.json["processId"].as_str()), (404, Some("ghost")));

    let res = api.get("/nowhere").await;
    assert_eq!((res.status, &res.json), (404, &json!({"error": "Not found"})));
    assert_eq!(res.header("content-type"), "application/json");
    assert_eq!(api.get("/processes/dup/explode").await.status, 404);

    let res = api.delete("/processes").await;
    assert_eq!((res.status, res.header("allow")), (405, "GET, POST, OPTIONS"));
    assert_eq!(res.header("content-type"), "application/json");
    let res = api.get("/processes/dup/start").await;
    assert_eq!((res.status, res.header("allow")), (405, "POST, OPTIONS"));
    let res = api.post("/config/trusted-hosts", None).await;
    assert_eq!((res.status, res.header("allow")), (405, "GET, PUT, OPTIONS"));

    let res = api.post("/processes", Some(json!({"id": "dup", "name": "D", "command": "/bin/true"}))).await;
    assert_eq!((res.status, res.error()), (409, "Process ID already exists"));
}

#[tokio::test]
async fn busy_and_disabled_answer_503() {
    let api = Api::start();
    api.fake.insert("job", false, true);
    api.fake.fail_with(Some(pm_core::Error::Busy("test".to_owned())));
    for res in [api.post("/processes/job/start", None).await, api.get("/processes/job").await] {
        assert_eq!((res.status, res.header("retry-after")), (503, "1"));
        assert_eq!(res.header("content-type"), "application/json");
    }
    api.fake.fail_with(None);

    api.fake.edit_remote(|remote| remote.start_remote_access = false);
    for path in ["/processes", "/monitor/status", "/nowhere"] {
        let res = api.get(path).await;
        assert_eq!((res.status, res.error()), (503, "Remote access disabled"), "{path}");
    }
    // Read per request: turning it back on applies at once.
    api.fake.edit_remote(|remote| remote.start_remote_access = true);
    assert_eq!(api.get("/processes").await.status, 200);
}

#[tokio::test]
async fn a_panicking_control_plane_costs_one_answer() {
    let api = Api::start();
    api.fake.insert("job", false, true);
    api.fake.panic.store(true, Ordering::SeqCst);
    let res = api.post("/processes/job/start", None).await;
    assert_eq!((res.status, res.error()), (500, "Internal error"));
    api.fake.panic.store(false, Ordering::SeqCst);
    assert_eq!(api.post("/processes/job/start", None).await.status, 200);
}

#[tokio::test]
async fn options_preflight_lists_methods() {
    let api = Api::start();
    for (path, methods) in [
        ("/processes", "GET, POST"),
        ("/processes/x", "GET, DELETE"),
        ("/processes/x/stop", "POST"),
        ("/processes/x/autostart", "PUT"),
        ("/monitor/status", "GET"),
        ("/monitor/restart", "POST"),
        ("/config/remote-access", "GET, PUT"),
    ] {
        let res = api.call(Method::OPTIONS, path, None).await;
        assert_eq!(res.status, 204, "{path}");
        assert_eq!(res.header("access-control-allow-methods"), methods, "{path}");
        assert_eq!(res.header("access-control-allow-headers"), "content-type");
        assert_eq!(res.header("allow"), format!("{methods}, OPTIONS"));
    }
    assert_eq!(api.call(Method::OPTIONS, "/nowhere", None).await.status, 404);
}

#[tokio::test]
async fn invalid_ids_are_refused_before_anything_happens() {
    let api = Api::start();
    let long = "a".repeat(300);
    for id in ["a%2Fb", "..", "%2e%2e", "", long.as_str(), "-dash", "sp%20ace"] {
        for (method, path) in [
            (Method::GET, format!("/processes/{id}")),
            (Method::DELETE, format!("/processes/{id}")),
            (Method::POST, format!("/processes/{id}/start")),
            (Method::POST, format!("/processes/{id}/disable")),
            (Method::PUT, format!("/processes/{id}/autostart")),
        ] {
            let body = (method == Method::PUT).then(|| json!({"autostart": true}));
            let res = api.call(method.clone(), &path, body).await;
            assert_eq!(res.status, 400, "{method} {path}: {:?}", res.json);
        }
    }
    for id in ["a/b", "..", "", long.as_str()] {
        let res = api.post("/processes", Some(json!({"id": id, "name": "N", "command": "/bin/true"}))).await;
        assert_eq!(res.status, 400, "{id:?}");
        assert!(res.error().starts_with("Missing or invalid field: id"), "{}", res.error());
    }
    let calls = api.fake.calls();
    assert!(calls.is_empty(), "the control plane was called: {calls:?}");
}

#[tokio::test]
async fn oversized_body_is_refused_quickly() {
    let api = Api::start();
    let started = Instant::now();
    // Declared length over the limit: answered before the body is read.
    let mut stream = tokio::net::TcpStream::connect(api.addr()).await.unwrap();
    let head = format!(
        "POST /processes HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        10 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sender = tokio::spawn(async move {
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..160 {
            if writer.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        while let Ok(n) = reader.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.ends_with(r#"{"error":"Request body too large"}"#), "{text}");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    sender.abort();

    // Chunked body without a declared length: cut off at the limit by `Limited`.
    let fake = FakeControl::new();
    let small = Api::start_with(fake, ServerConfig { max_body_bytes: 1000, ..ServerConfig::default() });
    let mut request =
        b"POST /processes HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..3 {
        request.extend_from_slice(format!("{:x}\r\n{}\r\n", 600, " ".repeat(600)).as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let res = raw(small.addr(), &request).await;
    assert_eq!(res.status, 413, "{}", res.head);
    assert_eq!(res.json(), json!({"error": "Request body too large"}));

    // Under the limit it is served.
    let body = br#"{"id":"ok","name":"O","command":"/bin/true"}"#;
    let request = format!(
        "POST /processes HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        std::str::from_utf8(body).unwrap()
    );
    let mut stream = tokio::net::TcpStream::connect(small.addr()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let res = read_reply(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(res.status, 200, "{}", res.head);
    assert!(res.head.to_ascii_lowercase().contains("content-length:"), "{}", res.head);
}
