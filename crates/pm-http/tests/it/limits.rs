//! The budget and boundaries of untrusted registrations (issues 12 and 21): the environment allowlist, the caps
//! on fields, loopback-only check URLs, the monitor's own executable, the partner's reserved id, and the
//! `remoteAccess` keys that configure them.

use serde_json::{json, Value};

use crate::support::{Api, FakeControl, TempDir};

/// An API whose loopback peer is untrusted, with `{dir}/allowed/*` whitelisted; answers the allowed tool.
fn untrusted_api(dir: &TempDir) -> (Api, String) {
    let tool = dir.executable("allowed/tool");
    let api = Api::start();
    api.fake.untrust_loopback();
    api.fake.edit_remote(|remote| remote.executable_whitelist = vec![format!("{}/allowed/*", dir.path().display())]);
    (api, tool.to_str().unwrap().to_owned())
}

fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

#[tokio::test]
async fn untrusted_peers_may_set_only_allowlisted_variables() {
    let dir = TempDir::new();
    let (api, tool) = untrusted_api(&dir);
    let base = json!({"id": "t", "name": "T", "command": tool});
    // Empty by default: any variable is refused, naming it; loaders stay refused even when listed.
    for (name, listed) in [("BASH_ENV", false), ("NODE_OPTIONS", false), ("APP_MODE", false), ("LD_PRELOAD", true)] {
        if listed {
            api.fake.edit_remote(|remote| remote.allowed_environment = vec![name.to_owned()]);
        }
        let res = api.post("/processes", Some(with(base.clone(), "environment", json!({ name: "x" })))).await;
        let expected = format!("Environment variable {name} not permitted for untrusted hosts");
        assert_eq!((res.status, res.error()), (403, expected.as_str()));
    }
    assert!(api.fake.calls().is_empty(), "{:?}", api.fake.calls());
    // A listed name is accepted, and the registration is marked untrusted whatever the body says.
    api.fake.edit_remote(|remote| remote.allowed_environment = vec!["APP_MODE".to_owned()]);
    let body = with(with(base, "environment", json!({"APP_MODE": "x"})), "untrusted", json!(false));
    let res = api.post("/processes", Some(body)).await;
    assert_eq!(res.status, 200, "{:?}", res.json);
    let config = api.fake.config("t").unwrap();
    assert!(config.untrusted && config.is_remote);
}

#[tokio::test]
async fn untrusted_registrations_have_a_budget() {
    let dir = TempDir::new();
    let (api, tool) = untrusted_api(&dir);
    let base = json!({"id": "t", "name": "T", "command": tool});
    let cases = [
        ("restartPolicy", json!({"maxAttempts": 1000}), "restartPolicy.maxAttempts"),
        ("restartPolicy", json!({"backoffIntervalsMs": vec![1000; 33]}), "restartPolicy.backoffIntervalsMs"),
        ("keepRuns", json!(1000), "keepRuns"),
        ("stopTimeoutMs", json!(3_600_000), "stopTimeoutMs"),
        ("args", json!(vec!["a"; 257]), "args"),
        ("args", json!(vec!["a".repeat(1024); 65]), "args"),
    ];
    for (key, value, named) in cases {
        let res = api.post("/processes", Some(with(base.clone(), key, value.clone()))).await;
        assert_eq!(res.status, 403, "{key}={value}: {:?}", res.json);
        assert!(res.error().starts_with(named) && res.error().contains("limit"), "{key}: {}", res.error());
    }
    // Check URLs stay on loopback.
    for (check, field) in [
        (json!({"url": "http://10.1.2.3:80/health"}), "alivenessCheck.url"),
        (json!({"url": "http://example.com/health"}), "alivenessCheck.url"),
        (json!({"url": "http://localhost:1/h", "statusUrl": "http://192.168.0.1/s"}), "alivenessCheck.statusUrl"),
    ] {
        let res = api.post("/processes", Some(with(base.clone(), "alivenessCheck", check.clone()))).await;
        assert_eq!(res.status, 403, "{check}: {:?}", res.json);
        assert!(res.error().starts_with(field) && res.error().contains("loopback"), "{}", res.error());
    }
    assert!(api.fake.calls().is_empty(), "{:?}", api.fake.calls());
    // Within the budget, on loopback: accepted. A trusted peer has no such budget.
    let fine = with(base.clone(), "alivenessCheck", json!({"url": "http://127.0.0.1:9/health"}));
    assert_eq!(api.post("/processes", Some(with(fine, "stopTimeoutMs", json!(60_000)))).await.status, 200);
    api.fake.edit_remote(|remote| remote.trusted_hosts = vec!["127.0.0.1".to_owned()]);
    let trusted = with(with(base, "id", json!("t2")), "keepRuns", json!(1000));
    let res = api.post("/processes", Some(with(trusted, "alivenessCheck", json!({"url": "http://10.1.2.3/h"})))).await;
    assert_eq!(res.status, 200, "{:?}", res.json);
    assert!(!api.fake.config("t2").unwrap().untrusted);
}

#[tokio::test]
async fn the_monitors_own_program_is_refused_to_untrusted_peers() {
    let api = Api::start();
    api.fake.untrust_loopback();
    api.fake.edit_remote(|remote| remote.executable_whitelist = vec!["/**".to_owned()]);
    // In this test the running program is the test binary.
    let own = std::env::current_exe().unwrap();
    let res = api.post("/processes", Some(json!({"id": "me", "name": "me", "command": own.to_str().unwrap()}))).await;
    assert_eq!((res.status, res.error()), (403, "Executable not permitted: the monitor's own executable"));
    assert!(api.fake.calls().is_empty());
}

#[tokio::test]
async fn the_partner_id_is_reserved_for_everyone() {
    for (instance, partner) in [("default", "watcher"), ("watcher", "default")] {
        let api = Api::start_with(FakeControl::for_instance(instance), pm_http::ServerConfig::default());
        // Trusted (the default loopback trust) and untrusted alike.
        for untrusted in [false, true] {
            if untrusted {
                api.fake.untrust_loopback();
            }
            let body = json!({"id": partner, "name": "p", "command": "/bin/sleep", "args": ["600"]});
            let res = api.post("/processes", Some(body)).await;
            assert_eq!(
                (res.status, res.error()),
                (409, "Process ID reserved for the partner instance"),
                "{instance}: {partner}"
            );
            assert_eq!(res.json["processId"], partner);
        }
        assert!(api.fake.calls().is_empty(), "{:?}", api.fake.calls());
    }
}

#[tokio::test]
async fn remote_access_keys_round_trip() {
    let api = Api::start();
    let got = api.get("/config/remote-access").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json["allowedEnvironment"], json!([]));
    assert_eq!(got.json["maxUntrustedProcesses"], json!(50));
    // The whole object read can be edited and put back.
    let mut edited = got.json.clone();
    edited["allowedEnvironment"] = json!(["APP_MODE", "TZ"]);
    edited["maxUntrustedProcesses"] = json!(3);
    let res = api.put("/config/remote-access", edited.clone()).await;
    assert_eq!(res.status, 200, "{:?}", res.json);
    assert_eq!(res.json, edited);
    assert_eq!(api.get("/config/remote-access").await.json, edited);
    let bad = api.put("/config/remote-access", json!({"allowedEnvironment": ["A=B"]})).await;
    assert_eq!(bad.status, 400, "{:?}", bad.json);
    assert!(bad.error().contains("allowedEnvironment"), "{}", bad.error());
    assert_eq!(api.get("/config/remote-access").await.json, edited, "a refused change changed something");
}

/// A connection from the loopback source address `from`.
pub(crate) async fn connect_from(addr: std::net::SocketAddr, from: [u8; 4]) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((std::net::Ipv4Addr::from(from), 0).into()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Whether the server answered `stream` with the canned 503 (or closed it) rather than holding it.
pub(crate) async fn refused(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(std::time::Duration::from_millis(300), stream.read(&mut buf)).await {
        Ok(Ok(n)) => n == 0 || buf[..n].starts_with(b"HTTP/1.1 503"),
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

#[tokio::test]
async fn untrusted_peers_cannot_take_every_connection_slot() {
    use std::time::Duration;
    let config = pm_http::ServerConfig {
        max_connections: 8,
        max_connections_per_ip: 3,
        reserved_for_trusted: 2,
        header_read_timeout: Duration::from_secs(20),
        ..pm_http::ServerConfig::default()
    };
    let api = Api::start_with(FakeControl::new(), config);
    api.fake.edit_remote(|remote| remote.trusted_hosts = vec!["127.0.0.1".to_owned()]);
    let mut held = Vec::new();
    // One untrusted address gets its 3 connections, then a 503.
    for _ in 0..3 {
        held.push(connect_from(api.addr(), [127, 0, 0, 2]).await);
    }
    let mut fourth = connect_from(api.addr(), [127, 0, 0, 2]).await;
    assert!(refused(&mut fourth).await, "a fourth connection of one peer was held");
    // Another untrusted address fills the slots untrusted peers may take (8 - 2 reserved = 6).
    for _ in 0..3 {
        held.push(connect_from(api.addr(), [127, 0, 0, 3]).await);
    }
    let mut over = connect_from(api.addr(), [127, 0, 0, 4]).await;
    assert!(refused(&mut over).await, "an untrusted peer took a slot reserved for trusted peers");
    for stream in held.iter_mut().take(3) {
        assert!(!refused(stream).await, "a connection within the limits was refused");
    }
    // A trusted peer is still served.
    let res = crate::support::raw(api.addr(), b"GET /processes HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    assert_eq!(res.status, 200, "{}", res.head);
}

#[tokio::test]
async fn a_peer_that_does_not_read_its_answers_is_cut_off() {
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt;
    let config =
        pm_http::ServerConfig { write_timeout: Duration::from_millis(500), ..pm_http::ServerConfig::default() };
    let api = Api::start_with(FakeControl::new(), config);
    for id in 0..50 {
        api.fake.insert(&format!("p{id:02}-{}", "x".repeat(40)), true, true);
    }
    // Pipelined requests, never read: the answers fill the socket buffers and the server's writes block. Once
    // its write timeout is over, the server drops the connection, and the next write here fails.
    let mut stream = connect_from(api.addr(), [127, 0, 0, 2]).await;
    small_receive_buffer(&stream);
    let started = Instant::now();
    let request = b"GET /processes HTTP/1.1\r\nHost: t\r\n\r\n".repeat(64);
    let mut sent = 0usize;
    let cut_after = loop {
        match tokio::time::timeout(Duration::from_millis(100), stream.write_all(&request)).await {
            Ok(Ok(())) => sent += request.len(),
            Ok(Err(_)) => break started.elapsed(),
            Err(_) => {}
        }
        assert!(started.elapsed() < Duration::from_secs(10), "a non-reading peer held on for 10 s ({sent} bytes sent)");
    };
    assert!(cut_after >= Duration::from_millis(400), "cut off after {cut_after:?}, before the write timeout");
    // Other peers were served all along.
    let res = crate::support::raw(api.addr(), b"GET /processes HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    assert_eq!(res.status, 200);
}

/// A small receive buffer, so that the server's answers back up fast.
fn small_receive_buffer(stream: &tokio::net::TcpStream) {
    rustix::net::sockopt::set_socket_recv_buffer_size(stream, 4096).unwrap();
}

/// Issue 21 item 8: an aliveness check reads at most 64 KiB of a body, for everyone: a 2xx whose body never
/// ends passes on its status at once instead of being read until the check times out.
#[tokio::test]
async fn check_bodies_are_read_only_up_to_64_kib() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 1024];
        let _ = stream.read(&mut head).await;
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n").await;
        let chunk = vec![b'x'; 16 * 1024];
        let mut sent = 0usize;
        // Send until the client stops reading (the write then stalls) or drops the connection.
        while let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(3), stream.write_all(&chunk)).await {
            sent += chunk.len();
        }
        sent
    });
    let client = pm_http::HttpClient::new();
    let started = Instant::now();
    let passed = pm_http::check_health(&client, &format!("http://{addr}/health"), Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(passed, "a 200 with an endless body failed the check");
    assert!(took < Duration::from_secs(2), "the check read for {took:?}");
    drop(client);
    let sent = server.await.unwrap();
    assert!(sent < 64 * 1024 * 1024, "the client let {sent} bytes through");
}
