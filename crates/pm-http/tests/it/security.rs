//! Trust and permissions: untrusted peers, spoofed headers, local processes, the executable whitelist.

use std::net::SocketAddr;
use std::path::Path;

use hyper::Method;
use pm_core::RemoteAccessConfig;
use pm_http::ServerConfig;
use serde_json::{json, Value};

use crate::support::{raw, raw_on, Api, FakeControl, TempDir};

type Flag = fn(&mut RemoteAccessConfig) -> &mut bool;

/// Each permission flag with a request it governs and the refusal message.
fn permission_cases() -> Vec<(Flag, Method, &'static str, &'static str)> {
    vec![
        (|r| &mut r.allow_remote_deregister, Method::DELETE, "/processes/remote", "Remote deregistration not allowed"),
        (|r| &mut r.allow_remote_start, Method::POST, "/processes/remote/start", "Remote start not allowed"),
        (|r| &mut r.allow_remote_start, Method::POST, "/processes/remote/restart", "Remote restart not allowed"),
        (|r| &mut r.allow_remote_stop, Method::POST, "/processes/remote/stop", "Remote stop not allowed"),
        (|r| &mut r.allow_remote_stop, Method::POST, "/processes/remote/restart", "Remote restart not allowed"),
        (|r| &mut r.allow_remote_disable, Method::POST, "/processes/remote/enable", "Remote enable not allowed"),
        (|r| &mut r.allow_remote_disable, Method::POST, "/processes/remote/disable", "Remote disable not allowed"),
        (
            |r| &mut r.allow_remote_autostart,
            Method::PUT,
            "/processes/remote/autostart",
            "Remote autostart change not allowed",
        ),
        (|r| &mut r.allow_remote_monitor_restart, Method::POST, "/monitor/restart", "Monitor restart not allowed"),
    ]
}

fn body_for(method: &Method) -> Option<Value> {
    (method == Method::PUT).then(|| json!({"autostart": false}))
}

#[tokio::test]
async fn each_permission_flag_governs_untrusted_peers() {
    for (flag, method, path, refusal) in permission_cases() {
        // Off: refused, and the control plane is not asked to act.
        let api = Api::start();
        api.fake.untrust_loopback();
        api.fake.insert("remote", true, true);
        api.fake.edit_remote(|remote| {
            remote.allow_remote_monitor_restart = true;
            *flag(remote) = false;
        });
        let res = api.call(method.clone(), path, body_for(&method)).await;
        assert_eq!((res.status, res.error()), (403, refusal), "{method} {path}");
        assert!(api.fake.calls().is_empty(), "{method} {path}: {:?}", api.fake.calls());

        // On: allowed.
        api.fake.edit_remote(|remote| *flag(remote) = true);
        let res = api.call(method.clone(), path, body_for(&method)).await;
        assert_eq!(res.status, 200, "{method} {path}: {:?}", res.json);
    }
}

#[tokio::test]
async fn registration_permission_for_untrusted_peers() {
    let dir = TempDir::new();
    let tool = dir.executable("allowed/tool");
    let api = Api::start();
    api.fake.untrust_loopback();
    api.fake.edit_remote(|remote| {
        remote.executable_whitelist = vec![format!("{}/allowed/*", dir.path().display())];
        remote.allow_remote_register = false;
    });
    let body = json!({"id": "t", "name": "T", "command": tool.to_str().unwrap()});
    let res = api.post("/processes", Some(body.clone())).await;
    assert_eq!((res.status, res.error()), (403, "Remote registration not allowed"));
    assert!(api.fake.calls().is_empty());

    api.fake.edit_remote(|remote| remote.allow_remote_register = true);
    let res = api.post("/processes", Some(body)).await;
    assert_eq!(res.status, 200, "{:?}", res.json);
}

#[tokio::test]
async fn trusted_peers_bypass_permissions() {
    let api = Api::start();
    api.fake.insert("remote", true, true);
    api.fake.insert("local", false, true);
    api.fake.edit_remote(|remote| {
        for (flag, ..) in permission_cases() {
            *flag(remote) = false;
        }
        remote.allow_remote_register = false;
    });
    for (_, method, path, _) in permission_cases() {
        api.fake.insert("local", false, true);
        let res = api.call(method.clone(), &path.replace("remote", "local"), body_for(&method)).await;
        assert_eq!(res.status, 200, "{method} {path}: {:?}", res.json);
    }
    // Trusted registrations keep the command as given (no whitelist, no resolution).
    let res = api.post("/processes", Some(json!({"id": "t", "name": "T", "command": "sh"}))).await;
    assert_eq!(res.status, 200, "{:?}", res.json);
    assert_eq!(api.fake.config("t").unwrap().command, "sh");
}

#[tokio::test]
async fn untrusted_peers_act_only_on_remote_processes() {
    let api = Api::start();
    api.fake.untrust_loopback();
    api.fake.insert("local", false, true);
    api.fake.insert("remote", true, true);
    for (method, path) in [
        (Method::POST, "/processes/local/start"),
        (Method::POST, "/processes/local/stop"),
        (Method::POST, "/processes/local/disable"),
        (Method::PUT, "/processes/local/autostart"),
        (Method::DELETE, "/processes/local"),
    ] {
        let res = api.call(method.clone(), path, body_for(&method)).await;
        assert_eq!((res.status, res.error()), (403, "Cannot modify local process"), "{method} {path}");
    }
    assert!(api.fake.calls().is_empty(), "{:?}", api.fake.calls());
    let res = api.post("/processes/ghost/start", None).await;
    assert_eq!((res.status, res.json["processId"].as_str()), (404, Some("ghost")));
    // Reading is open to everyone.
    assert_eq!(api.get("/processes/local").await.status, 200);
    assert_eq!(api.get("/processes").await.status, 200);
    assert_eq!(api.post("/processes/remote/start", None).await.status, 200);
}

#[tokio::test]
async fn configuration_changes_need_a_trusted_peer() {
    let api = Api::start();
    api.fake.untrust_loopback();
    for (path, body) in [
        ("/config/remote-access", json!({"allowRemoteStop": true})),
        ("/config/trusted-hosts", json!({"trustedHosts": ["127.0.0.1"]})),
        ("/config/executable-whitelist", json!({"patterns": ["/**"]})),
        ("/config/executable-blacklist", json!({"patterns": []})),
        ("/config/standalone-mode", json!({"enabled": true})),
        ("/config/partner-discovery", json!({"discoveryOnStartup": true})),
    ] {
        let res = api.put(path, body).await;
        assert_eq!((res.status, res.error()), (403, "Configuration changes require trusted host"), "{path}");
        assert_eq!(api.get(path).await.status, 200, "GET {path} is open");
    }
    assert!(api.fake.calls().is_empty(), "{:?}", api.fake.calls());
}

#[tokio::test]
async fn spoofed_forwarding_headers_are_ignored() {
    let api = Api::start();
    api.fake.untrust_loopback();
    api.fake.edit_remote(|remote| remote.trusted_hosts = vec!["10.9.9.9".to_owned(), "203.0.113.7".to_owned()]);
    let body = r#"{"trustedHosts":["0.0.0.0"]}"#;
    for header in [
        "X-Forwarded-For: 10.9.9.9",
        "X-Real-IP: 10.9.9.9",
        "X-Forwarded-For: 127.0.0.1, 203.0.113.7",
        "Forwarded: for=10.9.9.9",
    ] {
        let request = format!(
            "PUT /config/trusted-hosts HTTP/1.1\r\nHost: t\r\n{header}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let res = raw(api.addr(), request.as_bytes()).await;
        assert_eq!(res.status, 403, "{header}: {}", res.head);
        assert_eq!(res.json()["error"], "Configuration changes require trusted host");
    }
    assert!(api.fake.calls().is_empty(), "{:?}", api.fake.calls());
}

#[tokio::test]
async fn browser_requests_are_not_trusted() {
    let api = Api::start();
    let body = r#"{"enabled":true}"#;
    let request = format!(
        "PUT /config/standalone-mode HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let res = raw(api.addr(), request.as_bytes()).await;
    assert_eq!(res.status, 403, "{}", res.head);
    assert!(!api.fake.settings.lock().unwrap().standalone_mode);
}

/// Connects from `local` (a loopback address) to `addr` and sends a PUT of standalone mode.
async fn put_standalone_from(local: &str, addr: SocketAddr) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let body = r#"{"enabled":true}"#;
    let request = format!(
        "PUT /config/standalone-mode HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw_on(stream, request.as_bytes()).await.status
}

#[tokio::test]
async fn trust_follows_the_tcp_peer_address() {
    let api = Api::start();
    api.fake.edit_remote(|remote| remote.trusted_hosts = vec!["127.0.0.1".to_owned()]);
    assert_eq!(put_standalone_from("127.0.0.2", api.addr()).await, 403);
    assert_eq!(put_standalone_from("127.0.0.1", api.addr()).await, 200);
    api.fake.edit_remote(|remote| remote.trusted_hosts = vec!["127.0.0.*".to_owned()]);
    assert_eq!(put_standalone_from("127.0.0.2", api.addr()).await, 200);
    api.fake.edit_remote(|remote| remote.trusted_hosts = vec!["localhost".to_owned()]);
    assert_eq!(put_standalone_from("127.0.0.2", api.addr()).await, 200, "localhost matches any loopback peer");
    api.fake.edit_remote(|remote| remote.trusted_hosts = vec!["0.0.0.0".to_owned(), "::".to_owned()]);
    assert_eq!(put_standalone_from("127.0.0.1", api.addr()).await, 403, "0.0.0.0 matches no peer");
}

#[tokio::test]
async fn dual_stack_listener_normalizes_ipv4_peers() {
    let fake = FakeControl::new();
    fake.edit_remote(|remote| remote.trusted_hosts = vec!["127.0.0.1".to_owned()]);
    let listener = pm_http::bind("[::]:0".parse().unwrap()).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = pm_http::spawn_remote_api(listener, fake.clone(), ServerConfig::default()).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(put_standalone_from("127.0.0.1", addr).await, 200);
    assert!(fake.settings.lock().unwrap().standalone_mode);
    server.shutdown().await;
}

#[tokio::test]
async fn hostname_patterns_need_a_confirmed_name() {
    // 127.0.0.1 is `localhost` in /etc/hosts: the reverse and forward lookups stay on this machine.
    let api = Api::start();
    api.fake.edit_remote(|remote| remote.trusted_hosts = vec!["localhos*".to_owned()]);
    assert_eq!(put_standalone_from("127.0.0.1", api.addr()).await, 200);
    api.fake.edit_remote(|remote| remote.trusted_hosts = vec!["*.example.invalid".to_owned()]);
    assert_eq!(put_standalone_from("127.0.0.1", api.addr()).await, 403);
}

/// An untrusted API whose whitelist allows `<dir>/allowed/**` and forbids `<dir>/allowed/banned`.
fn whitelisted_api(dir: &TempDir) -> Api {
    let api = Api::start();
    api.fake.untrust_loopback();
    let root = dir.path().display().to_string();
    api.fake.edit_remote(|remote| {
        remote.executable_whitelist = vec![format!("{root}/allowed/**")];
        remote.executable_blacklist = vec![format!("{root}/allowed/banned")];
    });
    api
}

async fn register(api: &Api, id: &str, command: &str, working_directory: Option<&Path>) -> (u16, Value) {
    let mut body = json!({"id": id, "name": id, "command": command});
    if let Some(dir) = working_directory {
        body["workingDirectory"] = json!(dir.to_str().unwrap());
    }
    let res = api.post("/processes", Some(body)).await;
    (res.status, res.json)
}

#[tokio::test]
async fn whitelist_bypass_attempts_are_refused() {
    let dir = TempDir::new();
    let allowed = dir.path().join("allowed");
    dir.executable("allowed/tool");
    dir.executable("allowed/banned");
    dir.executable("elsewhere/tool");
    std::os::unix::fs::symlink("/bin/sh", allowed.join("shell")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), allowed.join("door")).unwrap();
    let api = whitelisted_api(&dir);

    let up = "/..".repeat(allowed.components().count());
    let refused = [
        format!("{}{up}/bin/sh", allowed.display()),
        format!("{}/../elsewhere/tool", allowed.display()),
        format!("{}/shell", allowed.display()),
        format!("{}/door/tool", allowed.display()),
        format!("{}/banned", allowed.display()),
        format!("{}/missing", allowed.display()),
        allowed.display().to_string(),
        "sh".to_owned(),
        "./tool".to_owned(), // relative without a working directory
    ];
    for command in &refused {
        let (status, json) = register(&api, "x", command, None).await;
        assert_eq!(status, 403, "{command}: {json}");
        assert_eq!(json["error"], "Executable not permitted by whitelist/blacklist", "{command}");
    }
    let (status, _) = register(&api, "x", "../elsewhere/tool", Some(&allowed)).await;
    assert_eq!(status, 403);
    let (status, _) = register(&api, "x", "tool", Some(&allowed)).await;
    assert_eq!(status, 403, "a bare name is looked up on PATH, not in the working directory");
    assert!(api.fake.calls().is_empty(), "{:?}", api.fake.calls());

    // An empty whitelist permits nothing.
    api.fake.edit_remote(|remote| remote.executable_whitelist.clear());
    let (status, _) = register(&api, "x", &format!("{}/tool", allowed.display()), None).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn permitted_commands_are_stored_canonical() {
    let dir = TempDir::new();
    let allowed = dir.path().join("allowed");
    let tool = dir.executable("allowed/tool");
    let nested = dir.executable("allowed/sub/inner");
    std::fs::create_dir_all(allowed.join("empty")).unwrap();
    std::os::unix::fs::symlink(&nested, allowed.join("alias")).unwrap();
    let api = whitelisted_api(&dir);

    for (id, command, working_directory, expected) in [
        ("abs", tool.display().to_string(), None, &tool),
        ("dots", format!("{}/empty/../tool", allowed.display()), None, &tool),
        ("rel", "./sub/inner".to_owned(), Some(allowed.as_path()), &nested),
        ("link", format!("{}/alias", allowed.display()), None, &nested),
    ] {
        let (status, json) = register(&api, id, &command, working_directory).await;
        assert_eq!((status, &json), (200, &json!({"success": true, "processId": id})), "{command}");
        assert_eq!(api.fake.config(id).unwrap().command, expected.to_str().unwrap(), "{command}");
    }
}

#[tokio::test]
async fn untrusted_peers_cannot_set_loader_variables() {
    let dir = TempDir::new();
    let tool = dir.executable("allowed/tool");
    let api = whitelisted_api(&dir);
    let body =
        json!({"id": "x", "name": "x", "command": tool.to_str().unwrap(), "environment": {"LD_PRELOAD": "/tmp/x.so"}});
    let res = api.post("/processes", Some(body)).await;
    assert_eq!(res.status, 403, "{:?}", res.json);
    assert!(api.fake.calls().is_empty());
}

#[tokio::test]
async fn an_authorization_header_never_grants_trust() {
    // Without a token store every token is unknown: 401, never ignored and never a way around the address rules.
    let api = Api::start();
    api.fake.insert("local", false, true);
    for header in [
        "Bearer pmt_0000000000000000000000000000000000000000000000000000000000000000",
        "Bearer admin",
        "Basic YWRtaW46YWRtaW4=",
        "Bearer ",
    ] {
        let request = format!(
            "POST /processes/local/stop HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {header}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let res = raw(api.addr(), request.as_bytes()).await;
        assert_eq!(res.status, 401, "{header}: {}", res.head);
        assert!(res.head.to_ascii_lowercase().contains("www-authenticate: bearer"), "{}", res.head);
    }
    assert!(api.fake.calls().is_empty(), "{:?}", api.fake.calls());
}

#[tokio::test]
async fn untrusted_state_change_hooks_obey_the_executable_lists() {
    let dir = TempDir::new();
    let tool = dir.executable("allowed/tool");
    let hook = dir.executable("allowed/sub/hook");
    dir.executable("allowed/banned");
    dir.executable("elsewhere/hook");
    let api = whitelisted_api(&dir);
    let register_with_hook = |id: &str, hook: String| json!({"id": id, "name": id, "command": tool.to_str().unwrap(), "onStateChange": {"command": hook, "args": ["a"]}});
    for refused in [
        format!("{}/allowed/banned", dir.path().display()),
        format!("{}/elsewhere/hook", dir.path().display()),
        format!("{}/allowed/../elsewhere/hook", dir.path().display()),
        "sh".to_owned(),
    ] {
        let res = api.post("/processes", Some(register_with_hook("x", refused.clone()))).await;
        assert_eq!(res.status, 403, "{refused}: {:?}", res.json);
        assert_eq!(res.json["error"], "onStateChange executable not permitted by whitelist/blacklist");
    }
    assert!(api.fake.calls().is_empty(), "{:?}", api.fake.calls());
    // A permitted hook is stored by its canonical path.
    let res = api
        .post("/processes", Some(register_with_hook("ok", format!("{}/allowed/sub/../sub/hook", dir.path().display()))))
        .await;
    assert_eq!(res.status, 200, "{:?}", res.json);
    let stored = api.fake.config("ok").unwrap().on_state_change.unwrap();
    assert_eq!(
        (stored.command.as_str(), stored.args.as_slice()),
        (hook.to_str().unwrap(), ["a".to_owned()].as_slice())
    );
    // Bad hook fields are refused for everybody.
    let res = api
        .post(
            "/processes",
            Some(json!({"id": "y", "name": "y", "command": tool.to_str().unwrap(), "onStateChange": {"command": ""}})),
        )
        .await;
    assert_eq!(res.status, 400, "{:?}", res.json);
}
