//! The local client through the monitor's unix socket, and its fall-back to the registry.

use pm_client::{Error, LocalClientOptions, ProcessMonitorClient};
use pm_http::testing::FakeControl;
use pm_http::ServerConfig;
use pm_registry::Paths;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_client_uses_the_socket_while_a_monitor_listens() {
    let dir = std::env::temp_dir().join(format!("pm-client-socket-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let paths = Paths::new(&dir, "default").unwrap();
    let fake = FakeControl::new();
    fake.insert("api", false, true);
    fake.insert("off", false, false);
    let listener = pm_http::bind_unix(&paths.socket_file(), 0o600).unwrap();
    let server = pm_http::spawn_unix_api(listener, paths.socket_file(), fake.clone(), ServerConfig::default()).unwrap();
    let options = LocalClientOptions { directory: Some(dir.clone()), ..LocalClientOptions::default() };

    let client_options = options.clone();
    tokio::task::spawn_blocking(move || {
        let client = ProcessMonitorClient::with_options(&client_options).unwrap();
        let status = client.start("api").unwrap();
        assert_eq!(status.id, "api");
        assert!(matches!(client.start("off"), Err(Error::Disabled(id)) if id == "off"));
        assert!(matches!(client.get_status("nope"), Err(Error::NotFound(id)) if id == "nope"));
        let all = client.get_all_status().unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["api", "off"]);
        client.set_standalone_mode(true).unwrap();
    })
    .await
    .unwrap();
    let calls = fake.calls();
    assert!(calls.iter().any(|call| call.contains("start") && call.contains("api")), "{calls:?}");
    assert!(!paths.registry_file().exists(), "nothing went through the registry");

    // No monitor on the socket: the registry, as before.
    server.shutdown().await;
    tokio::task::spawn_blocking(move || {
        let client = ProcessMonitorClient::with_options(&options).unwrap();
        assert!(client.get_all_status().unwrap().is_empty());
        let mut config = pm_core::ProcessConfig::new("reg", "Reg", "/bin/true");
        config.autostart = false;
        client.register(config).unwrap();
    })
    .await
    .unwrap();
    assert!(paths.registry_file().exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_remote_client_sends_its_token() {
    use pm_client::{RemoteClientOptions, RemoteProcessMonitorClient};
    use pm_http::auth::{Scope, TokenStore};
    let dir = std::env::temp_dir().join(format!("pm-client-token-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = TokenStore::new(dir.join("processes_default.tokens.json"));
    let token = store.create("c", Scope::Read, None, Vec::new()).unwrap();
    let fake = FakeControl::new();
    fake.edit_remote(|remote| remote.require_token = true);
    fake.insert("x", true, true);
    let listener = pm_http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let options = pm_http::ApiOptions { tokens: Some(store) };
    let server = pm_http::spawn_remote_api_with(listener, fake, ServerConfig::default(), options).unwrap();
    let base_url = format!("http://{}", server.local_addr());
    let client = |token: Option<String>| {
        RemoteProcessMonitorClient::with_options(RemoteClientOptions {
            base_url: base_url.clone(),
            token,
            ..RemoteClientOptions::default()
        })
        .unwrap()
    };
    let err = client(None).get_all_status().await.unwrap_err();
    assert!(matches!(err, Error::Server { status: 401, .. }), "{err:?}");
    assert!(client(Some(token.clone())).get_all_status().await.is_ok());
    // The streams send it as well: without it the event and log streams are refused, with it they are not.
    let first_event = |token: Option<String>| {
        let mut stream = client(token).events(pm_client::EventsOptions::default()).unwrap();
        async move { tokio::time::timeout(std::time::Duration::from_secs(2), stream.next()).await }
    };
    fn unauthorised<T>(res: &Result<T, Error>) -> bool {
        matches!(res, Err(Error::Server { status: 401, .. }))
    }
    let res = first_event(None).await;
    assert!(matches!(&res, Ok(Some(got)) if unauthorised(got)), "{res:?}");
    let res = first_event(Some(token.clone())).await;
    assert!(!matches!(&res, Ok(Some(got)) if unauthorised(got)), "{res:?}");
    let res = client(None).logs("x", pm_client::LogsOptions::default()).await.map(drop);
    assert!(unauthorised(&res), "{res:?}");
    let res = client(Some(token.clone())).logs("x", pm_client::LogsOptions::default()).await.map(drop);
    assert!(!unauthorised(&res), "{res:?}");
    // The token is never shown by Debug.
    let options = RemoteClientOptions { token: Some(token.clone()), ..RemoteClientOptions::default() };
    assert!(!format!("{options:?}").contains(&token));
    assert!(!format!("{:?}", client(Some(token.clone()))).contains(&token));
    // Read scope: a change is refused.
    let err = client(Some(token)).stop("x").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)), "{err:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
