//! Authentication: scoped bearer tokens over every endpoint, bad tokens, `requireToken`, browsers (`Origin`,
//! `Sec-Fetch-Site`), and the unix-socket API.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use pm_http::auth::{Scope, TokenStore};
use pm_http::{ApiOptions, HttpClient, ServerConfig, ServerHandle};
use serde_json::{json, Value};

use crate::support::{raw, FakeControl, Reply, TempDir};

/// A remote API with a token store in a temporary folder.
struct AuthApi {
    fake: Arc<FakeControl>,
    server: ServerHandle,
    client: HttpClient,
    store: TokenStore,
    _dir: TempDir,
}

impl AuthApi {
    fn start() -> AuthApi {
        let dir = TempDir::new();
        let store = TokenStore::new(dir.path().join("processes_default.tokens.json"));
        let fake = FakeControl::new();
        fake.insert("api", true, true);
        fake.insert("other", true, true);
        let listener = pm_http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let options = ApiOptions { tokens: Some(store.clone()) };
        let server = pm_http::spawn_remote_api_with(listener, fake.clone(), ServerConfig::default(), options).unwrap();
        AuthApi { fake, server, client: HttpClient::new(), store, _dir: dir }
    }

    fn token(&self, name: &str, scope: Scope, processes: &[&str]) -> String {
        self.store.create(name, scope, None, processes.iter().map(|id| id.to_string()).collect()).unwrap()
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>, headers: &[(&str, &str)]) -> Reply {
        let url = format!("http://{}{path}", self.server.local_addr());
        let body = body.map(|value| serde_json::to_vec(value).unwrap());
        let res = self.client.request_with(method, &url, body, Duration::from_secs(10), headers).await.unwrap();
        let json = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
        Reply { status: res.status, headers: res.headers, json }
    }

    async fn with_token(&self, method: Method, path: &str, body: Option<&Value>, token: &str) -> Reply {
        let bearer = format!("Bearer {token}");
        self.call(method, path, body, &[("authorization", &bearer)]).await
    }
}

/// What an endpoint needs from a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Needs {
    Read,
    Operate,
    Admin,
}

/// Every endpoint of the API, with a body that it accepts and the scope it needs.
fn endpoints() -> Vec<(Method, &'static str, Option<Value>, Needs)> {
    let mut list = vec![
        (Method::GET, "/processes", None, Needs::Read),
        (Method::GET, "/processes/api", None, Needs::Read),
        (Method::GET, "/monitor/status", None, Needs::Read),
        (Method::GET, "/metrics", None, Needs::Read),
        (Method::GET, "/processes/api/logs", None, Needs::Read),
        (Method::GET, "/processes/api/runs", None, Needs::Read),
        (Method::GET, "/processes/api/config", None, Needs::Read),
        (Method::GET, "/auth/whoami", None, Needs::Read),
        (Method::POST, "/processes/api/start", None, Needs::Operate),
        (Method::POST, "/processes/api/stop", None, Needs::Operate),
        (Method::POST, "/processes/api/restart", None, Needs::Operate),
        (Method::POST, "/processes/api/enable", None, Needs::Operate),
        (Method::POST, "/processes/api/disable", None, Needs::Operate),
        (Method::PUT, "/processes/api/autostart", Some(json!({"autostart": false})), Needs::Operate),
        (Method::POST, "/processes", Some(json!({"id": "new", "name": "New", "command": "/bin/true"})), Needs::Admin),
        (Method::DELETE, "/processes/api", None, Needs::Admin),
        (Method::POST, "/monitor/restart", None, Needs::Admin),
        (Method::PUT, "/config/remote-access", Some(json!({"allowRemoteStart": true})), Needs::Admin),
        (Method::PUT, "/config/trusted-hosts", Some(json!({"trustedHosts": ["localhost", "127.0.0.1"]})), Needs::Admin),
        (Method::PUT, "/config/executable-whitelist", Some(json!({"patterns": []})), Needs::Admin),
        (Method::PUT, "/config/executable-blacklist", Some(json!({"patterns": []})), Needs::Admin),
        (Method::PUT, "/config/standalone-mode", Some(json!({"enabled": true})), Needs::Admin),
        (Method::PUT, "/config/partner-discovery", Some(json!({})), Needs::Admin),
    ];
    for item in [
        "remote-access",
        "trusted-hosts",
        "executable-whitelist",
        "executable-blacklist",
        "standalone-mode",
        "partner-discovery",
    ] {
        let path: &'static str = Box::leak(format!("/config/{item}").into_boxed_str());
        list.push((Method::GET, path, None, Needs::Read));
    }
    list
}

#[tokio::test]
async fn each_scope_allows_exactly_its_endpoints() {
    let mut checked = 0;
    for (scope, level) in [(Scope::Read, Needs::Read), (Scope::Operate, Needs::Operate), (Scope::Admin, Needs::Admin)] {
        for (method, path, body, needs) in endpoints() {
            // A fresh monitor per request, so that one endpoint's change does not decide another's answer.
            let api = AuthApi::start();
            let token = api.token("t", scope, &[]);
            let res = api.with_token(method.clone(), path, body.as_ref(), &token).await;
            if needs <= level {
                // Allowed: whatever the endpoint answers (the fake monitor has no log files), never 401 or 403.
                let expected_ok = if path.ends_with("/logs") || path.ends_with("/runs") { res.status } else { 200 };
                assert_eq!(res.status, expected_ok, "{scope} {method} {path}: {:?}", res.json);
                assert!(res.status != 401 && res.status != 403, "{scope} {method} {path}: {:?}", res.json);
            } else {
                assert_eq!((res.status, res.error()), (403, "Not permitted for this token"), "{scope} {method} {path}");
                assert!(api.fake.calls().is_empty(), "{scope} {method} {path} acted: {:?}", api.fake.calls());
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * endpoints().len());
}

#[tokio::test]
async fn a_token_limited_to_processes_acts_only_on_them() {
    let api = AuthApi::start();
    let token = api.token("ops", Scope::Operate, &["api"]);
    let res = api.with_token(Method::POST, "/processes/api/start", None, &token).await;
    assert_eq!(res.status, 200, "{:?}", res.json);
    for (method, path) in [(Method::POST, "/processes/other/start"), (Method::GET, "/processes/other")] {
        let res = api.with_token(method.clone(), path, None, &token).await;
        assert_eq!(res.status, 403, "{method} {path}");
    }
    let res = api.with_token(Method::GET, "/processes", None, &token).await;
    let ids: Vec<&str> = res.json["processes"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["api"], "the list shows only the token's processes");
    let res = api.with_token(Method::GET, "/monitor/status", None, &token).await;
    assert_eq!(res.status, 200);

    let admin = api.token("adm", Scope::Admin, &["api2"]);
    let res = api.with_token(Method::PUT, "/config/standalone-mode", Some(&json!({"enabled": true})), &admin).await;
    assert_eq!(res.status, 403, "monitor-wide changes are beyond a process-limited token");
    let register = |id: &str| json!({"id": id, "name": id, "command": "/bin/true"});
    let res = api.with_token(Method::POST, "/processes", Some(&register("x")), &admin).await;
    assert_eq!(res.status, 403);
    let res = api.with_token(Method::POST, "/processes", Some(&register("api2")), &admin).await;
    assert_eq!(res.status, 200, "{:?}", res.json);
}

#[tokio::test]
async fn missing_malformed_unknown_expired_and_revoked_tokens_get_the_same_401() {
    let api = AuthApi::start();
    api.fake.edit_remote(|remote| remote.require_token = true);
    let good = api.token("good", Scope::Read, &[]);
    let expired = api.token("old", Scope::Read, &[]);
    // Backdate the expiry of `old` in the file (as if it had been made with `--expires` long ago).
    let mut file: Value = serde_json::from_slice(&std::fs::read(api.store.path()).unwrap()).unwrap();
    for record in file["tokens"].as_array_mut().unwrap() {
        if record["name"] == "old" {
            record["expiresAt"] = json!("2020-01-01T00:00:00.000Z");
        }
    }
    std::fs::write(api.store.path(), file.to_string()).unwrap();
    let mut unknown = good.clone();
    let last = unknown.pop().unwrap();
    unknown.push(if last == '0' { '1' } else { '0' });

    let res = api.with_token(Method::GET, "/processes", None, &good).await;
    assert_eq!(res.status, 200);
    let missing = api.call(Method::GET, "/processes", None, &[]).await;
    let cases: Vec<(&str, String)> = vec![
        ("malformed scheme", format!("Basic {good}")),
        ("no token", "Bearer".to_owned()),
        ("not a token", "Bearer hello".to_owned()),
        ("unknown", format!("Bearer {unknown}")),
        ("expired", format!("Bearer {expired}")),
        ("two tokens", format!("Bearer {good} {good}")),
    ];
    let mut bodies = vec![missing.json.clone()];
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header("www-authenticate"), "Bearer realm=\"process-monitor\"");
    for (what, header) in &cases {
        let res = api.call(Method::GET, "/processes", None, &[("authorization", header)]).await;
        assert_eq!(res.status, 401, "{what}");
        assert_eq!(res.header("www-authenticate"), "Bearer realm=\"process-monitor\"", "{what}");
        bodies.push(res.json.clone());
    }
    assert!(bodies.iter().all(|body| *body == bodies[0]), "the answers say nothing of what was wrong: {bodies:?}");

    // Revocation takes effect on the very next request.
    assert!(api.store.revoke("good").unwrap());
    let res = api.with_token(Method::GET, "/processes", None, &good).await;
    assert_eq!(res.status, 401);
    assert!(api.fake.calls().iter().all(|call| !call.contains("start")), "{:?}", api.fake.calls());
}

#[tokio::test]
async fn require_token_applies_to_trusted_addresses_too() {
    let api = AuthApi::start();
    // Loopback is trusted by default; without requireToken it needs no token.
    assert_eq!(api.call(Method::GET, "/processes", None, &[]).await.status, 200);
    api.fake.edit_remote(|remote| remote.require_token = true);
    let calls = api.fake.call_count();
    let res = api.call(Method::POST, "/processes/api/stop", None, &[]).await;
    assert_eq!(res.status, 401);
    assert_eq!(api.fake.call_count(), calls, "{:?}", api.fake.calls());
    let token = api.token("t", Scope::Operate, &[]);
    assert_eq!(api.with_token(Method::POST, "/processes/api/stop", None, &token).await.status, 200);
    // A wrong token is 401 even without requireToken: it is never silently ignored.
    api.fake.edit_remote(|remote| remote.require_token = false);
    let res = api.with_token(Method::GET, "/processes", None, "pmt_nope").await;
    assert_eq!(res.status, 401);
}

#[tokio::test]
async fn a_token_in_the_query_string_is_never_accepted() {
    let api = AuthApi::start();
    api.fake.edit_remote(|remote| remote.require_token = true);
    let token = api.token("t", Scope::Admin, &[]);
    for query in ["token", "access_token", "authorization", "bearer"] {
        let path = format!("/processes?{query}={token}");
        let res = api.call(Method::GET, &path, None, &[]).await;
        assert_eq!(res.status, 401, "{path}");
        let path = format!("/processes/api/stop?{query}=Bearer%20{token}");
        let res = api.call(Method::POST, &path, None, &[]).await;
        assert_eq!(res.status, 401, "{path}");
    }
    assert!(api.fake.calls().is_empty(), "{:?}", api.fake.calls());
}

#[tokio::test]
async fn an_admin_token_from_an_untrusted_address_is_still_bound_by_the_address_rules() {
    let api = AuthApi::start();
    api.fake.untrust_loopback();
    api.fake.edit_remote(|remote| remote.allow_remote_start = false);
    let token = api.token("adm", Scope::Admin, &[]);
    let res = api.with_token(Method::PUT, "/config/standalone-mode", Some(&json!({"enabled": true})), &token).await;
    assert_eq!((res.status, res.error()), (403, "Configuration changes require trusted host"));
    let res = api.with_token(Method::POST, "/processes/api/start", None, &token).await;
    assert_eq!((res.status, res.error()), (403, "Remote start not allowed"));
    let res = api.with_token(Method::POST, "/processes/api/stop", None, &token).await;
    assert_eq!(res.status, 200, "{:?}", res.json);
}

#[tokio::test]
async fn whoami_says_the_scope_the_processes_and_the_trust_of_the_caller() {
    let api = AuthApi::start();
    let res = api.call(Method::GET, "/auth/whoami", None, &[]).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.json,
        json!({"transport": "tcp", "trusted": true, "token": false, "scope": "admin", "address": "127.0.0.1"})
    );
    for scope in [Scope::Read, Scope::Operate, Scope::Admin] {
        let token = api.token(&format!("t-{scope}"), scope, &[]);
        let res = api.with_token(Method::GET, "/auth/whoami", None, &token).await;
        assert_eq!(
            (res.status, res.json["scope"].as_str(), res.json["token"].as_bool()),
            (200, Some(scope.as_str()), Some(true))
        );
        assert!(res.json.get("processes").is_none(), "{:?}", res.json);
        // The token's name is never sent back.
        assert!(!res.json.to_string().contains("t-"), "{:?}", res.json);
    }
    let limited = api.token("limited", Scope::Operate, &["api"]);
    let res = api.with_token(Method::GET, "/auth/whoami", None, &limited).await;
    assert_eq!((res.json["scope"].as_str(), &res.json["processes"]), (Some("operate"), &json!(["api"])));
    // An untrusted peer is told so, with the flags that bind it.
    api.fake.untrust_loopback();
    api.fake.edit_remote(|remote| remote.allow_remote_stop = false);
    let res = api.with_token(Method::GET, "/auth/whoami", None, &limited).await;
    assert_eq!(res.json["trusted"], json!(false), "{:?}", res.json);
    assert_eq!(res.json["permissions"]["allowRemoteStop"], json!(false), "{:?}", res.json);
    assert_eq!(res.json["permissions"]["allowRemoteStart"], json!(true), "{:?}", res.json);
    // Same origin (the dashboard) with its token; a bad token is 401 as everywhere.
    let bearer = format!("Bearer {limited}");
    let host = api.server.local_addr().to_string();
    let origin = format!("http://{host}");
    let res = api.call(Method::GET, "/auth/whoami", None, &[("authorization", &bearer), ("origin", &origin)]).await;
    assert_eq!((res.status, res.json["scope"].as_str()), (200, Some("operate")));
    assert_eq!(api.with_token(Method::GET, "/auth/whoami", None, "pmt_nope").await.status, 401);
    assert_eq!(api.call(Method::POST, "/auth/whoami", None, &[]).await.status, 405);
}

#[tokio::test]
async fn a_process_config_shows_environment_values_only_to_those_who_could_change_it() {
    let api = AuthApi::start();
    let body = json!({"id": "env", "name": "Env", "command": "/bin/true", "args": ["-x"],
        "environment": {"API_KEY": "s3cret"}, "stopTimeoutMs": 1234});
    assert_eq!(api.call(Method::POST, "/processes", Some(&body), &[]).await.status, 200);
    let res = api.call(Method::GET, "/processes/env/config", None, &[]).await;
    assert_eq!(res.status, 200, "{:?}", res.json);
    assert_eq!(
        (&res.json["id"], &res.json["command"], &res.json["args"]),
        (&json!("env"), &json!("/bin/true"), &json!(["-x"]))
    );
    assert_eq!(res.json["stopTimeoutMs"], json!(1234));
    assert_eq!(res.json["environment"], json!({"API_KEY": "s3cret"}), "a trusted peer without a token sees it all");
    let admin = api.token("adm", Scope::Admin, &[]);
    let res = api.with_token(Method::GET, "/processes/env/config", None, &admin).await;
    assert_eq!(res.json["environment"], json!({"API_KEY": "s3cret"}));
    for scope in [Scope::Read, Scope::Operate] {
        let token = api.token(&format!("t-{scope}"), scope, &[]);
        let res = api.with_token(Method::GET, "/processes/env/config", None, &token).await;
        assert_eq!(res.json["environment"], json!({"API_KEY": "(hidden)"}), "{scope}");
    }
    api.fake.untrust_loopback();
    let res = api.with_token(Method::GET, "/processes/env/config", None, &admin).await;
    assert_eq!(res.json["environment"], json!({"API_KEY": "(hidden)"}), "an untrusted admin token");
    assert!(!res.json.to_string().contains("s3cret"));
    let res = api.call(Method::GET, "/processes/nope/config", None, &[]).await;
    assert_eq!((res.status, res.error()), (404, "Process not found"));
}

#[tokio::test]
async fn browsers_need_the_same_origin_and_a_token() {
    let api = AuthApi::start();
    let token = api.token("dash", Scope::Operate, &[]);
    let bearer = format!("Bearer {token}");
    let own = format!("http://{}", api.server.local_addr());
    // Same origin with a token: accepted.
    let res =
        api.call(Method::POST, "/processes/api/stop", None, &[("origin", &own), ("authorization", &bearer)]).await;
    assert_eq!(res.status, 200, "{:?}", res.json);
    let calls = api.fake.call_count();
    // Same origin without a token: 401.
    let res = api.call(Method::POST, "/processes/api/stop", None, &[("origin", &own)]).await;
    assert_eq!(res.status, 401);
    // Another origin, with or without the token, or a cross-site fetch: 403, and nothing done.
    for headers in [
        vec![("origin", "http://evil.example"), ("authorization", bearer.as_str())],
        vec![("origin", "null"), ("authorization", bearer.as_str())],
        vec![("origin", "http://evil.example")],
        vec![("sec-fetch-site", "cross-site"), ("authorization", bearer.as_str())],
        vec![("sec-fetch-site", "same-site"), ("authorization", bearer.as_str())],
        vec![("origin", own.as_str()), ("sec-fetch-site", "cross-site"), ("authorization", bearer.as_str())],
    ] {
        for (method, path) in [(Method::POST, "/processes/api/stop"), (Method::OPTIONS, "/processes/api/stop")] {
            let res = api.call(method.clone(), path, None, &headers).await;
            assert_eq!(res.status, 403, "{method} {path} {headers:?}");
        }
    }
    assert_eq!(api.fake.call_count(), calls, "{:?}", api.fake.calls());
}

#[tokio::test]
async fn a_text_plain_post_from_another_site_changes_nothing_but_clients_without_origin_work() {
    let api = AuthApi::start();
    let addr = api.server.local_addr();
    let forged = format!(
        "POST /processes/api/disable HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\n\
         Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    );
    let res = raw(addr, forged.as_bytes()).await;
    assert_eq!(res.status, 403, "{}", res.head);
    assert!(api.fake.calls().is_empty(), "{:?}", api.fake.calls());
    // curl-like: no Origin, any content type.
    let plain = format!(
        "POST /processes/api/disable HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\nhi"
    );
    let res = raw(addr, plain.as_bytes()).await;
    assert_eq!(res.status, 200, "{}", res.head);
    assert_eq!(api.fake.calls().len(), 1, "{:?}", api.fake.calls());
}

fn socket_in(dir: &Path) -> std::path::PathBuf {
    // Deeper than a socket address can hold, so that the relative bind and connect are what is tested.
    let deep = dir.join("s".repeat(80)).join("t".repeat(40));
    std::fs::create_dir_all(&deep).unwrap();
    let path = deep.join("processes_default.sock");
    assert!(path.as_os_str().len() > 108, "{}", path.display());
    path
}

#[tokio::test]
async fn the_unix_socket_serves_the_owner_at_a_long_path() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    let path = socket_in(dir.path());
    let fake = FakeControl::new();
    fake.insert("api", false, true);
    // The socket is the local API: it answers with remote access off, and requireToken does not apply to it.
    fake.edit_remote(|remote| {
        remote.start_remote_access = false;
        remote.require_token = true;
    });
    let listener = pm_http::bind_unix(&path, 0o600).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let server = pm_http::spawn_unix_api(listener, path.clone(), fake.clone(), ServerConfig::default()).unwrap();
    let call = |method: &'static str, target: &'static str, body: Option<Value>| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            let body = body.map(|value| value.to_string().into_bytes());
            pm_http::blocking_request(&path, method, target, body.as_deref(), Duration::from_secs(10)).unwrap()
        })
    };
    let res = call("GET", "/processes", None).await.unwrap();
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    // Local peers are trusted: a local process may be stopped and config changed; registrations stay local.
    let res = call("POST", "/processes/api/stop", None).await.unwrap();
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    let body = json!({"id": "mine", "name": "Mine", "command": "/bin/true"});
    let res = call("POST", "/processes", Some(body)).await.unwrap();
    assert_eq!(res.status, 200, "{}", String::from_utf8_lossy(&res.body));
    assert!(!fake.config("mine").unwrap().is_remote, "a socket registration is a local one");
    server.shutdown().await;
    assert!(!path.exists(), "the socket file is removed at shutdown");
}

/// The status of a streaming answer (`GET /events`), read from its head only.
async fn stream_status(addr: std::net::SocketAddr, path: &str, token: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
    })
    .await;
    assert!(read.is_ok(), "no head: {:?}", String::from_utf8_lossy(&head));
    String::from_utf8_lossy(&head).split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn the_event_stream_follows_the_token() {
    let api = AuthApi::start();
    let addr = api.server.local_addr();
    let all = api.token("all", Scope::Read, &[]);
    let limited = api.token("one", Scope::Read, &["api"]);
    assert_eq!(stream_status(addr, "/events", &all).await, 200);
    assert_eq!(stream_status(addr, "/events", &limited).await, 403, "all events are beyond a process-limited token");
    assert_eq!(stream_status(addr, "/events?process=other", &limited).await, 403);
    assert_eq!(stream_status(addr, "/events?process=api", &limited).await, 200);
    assert_eq!(stream_status(addr, "/events", "pmt_x").await, 401);
}
