//! Every method of `RemoteProcessMonitorClient` against the real router, with its results and typed errors.

use std::time::Duration;

use pm_client::{Error, RemoteClientOptions, RemoteProcessMonitorClient};
use pm_core::{MonitorState, PartnerDiscoveryPatch, ProcessConfig, ProcessState, RemoteAccessPatch};

use crate::support::{options, Behaviour, Listener, Monitor};

#[tokio::test]
async fn base_urls_are_checked() {
    let client = RemoteProcessMonitorClient::new("http://127.0.0.1:19881/").unwrap();
    assert_eq!(client.base_url(), "http://127.0.0.1:19881");
    let clone = client.clone();
    client.dispose();
    assert_eq!(clone.base_url(), "http://127.0.0.1:19881");
    for bad in ["https://127.0.0.1:19881", "127.0.0.1:19881", "http://127.0.0.1", "http://h:1/api"] {
        let res = RemoteProcessMonitorClient::new(bad);
        assert!(matches!(res, Err(Error::Invalid(_))), "{bad}: {res:?}");
    }
    let res = RemoteProcessMonitorClient::with_options(RemoteClientOptions {
        base_url: "https://localhost:1".to_owned(),
        ..RemoteClientOptions::default()
    });
    assert!(matches!(res, Err(Error::Invalid(message)) if message.contains("https")));
    assert_eq!(RemoteClientOptions::default().base_url, "http://localhost:19881");
}

#[tokio::test]
async fn process_lifecycle() {
    let monitor = Monitor::start();
    let client = monitor.client();

    let mut config = ProcessConfig::new("web", "Web", "/bin/true");
    config.args = vec!["-x".to_owned()];
    client.register(config.clone()).await.unwrap();
    let stored = monitor.fake.config("web").unwrap();
    assert!(stored.is_remote, "registered through the API");
    assert_eq!(stored.args, ["-x"]);
    let res = client.register(config).await;
    assert!(matches!(&res, Err(Error::AlreadyExists(id)) if id == "web"), "{res:?}");

    monitor.fake.insert("job", false, true);
    let all = client.get_all_status().await.unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), ["job", "web"]);
    assert_eq!(all["web"].name, "Web");
    assert!(all["web"].is_remote && !all["job"].is_remote);

    let status = client.get_status("job").await.unwrap();
    assert_eq!((status.id.as_str(), status.state), ("job", ProcessState::Stopped));
    assert_eq!(client.start("job").await.unwrap(), ProcessState::Starting);
    assert_eq!(client.stop("job").await.unwrap(), ProcessState::Stopped);
    assert_eq!(client.restart("job").await.unwrap(), ProcessState::Starting);

    client.disable("job").await.unwrap();
    assert_eq!(client.get_status("job").await.unwrap().state, ProcessState::Disabled);
    let res = client.start("job").await;
    assert!(matches!(&res, Err(Error::Disabled(id)) if id == "job"), "{res:?}");
    let res = client.restart("job").await;
    assert!(matches!(&res, Err(Error::Disabled(id)) if id == "job"), "{res:?}");
    client.enable("job").await.unwrap();
    assert!(client.get_status("job").await.unwrap().enabled);

    client.set_autostart("job", false).await.unwrap();
    assert!(!monitor.fake.config("job").unwrap().autostart);
    client.set_autostart("job", true).await.unwrap();
    assert!(monitor.fake.config("job").unwrap().autostart);

    client.deregister("web").await.unwrap();
    for res in [
        client.get_status("web").await.map(drop),
        client.deregister("web").await,
        client.start("web").await.map(drop),
        client.stop("web").await.map(drop),
        client.restart("web").await.map(drop),
        client.enable("web").await,
        client.disable("web").await,
        client.set_autostart("web", true).await,
    ] {
        assert!(matches!(&res, Err(Error::NotFound(id)) if id == "web"), "{res:?}");
    }
    assert_eq!(client.get_all_status().await.unwrap().len(), 1);
    monitor.server.shutdown().await;
}

#[tokio::test]
async fn monitor_and_settings() {
    let monitor = Monitor::start();
    let client = monitor.client();

    monitor.fake.insert("job", false, true);
    let status = client.get_monitor_status().await.unwrap();
    assert_eq!((status.instance_id.as_str(), status.pid), ("default", 4242));
    assert_eq!((status.state, status.managed_process_count), (MonitorState::Running, 1));
    let calls = monitor.fake.call_count();
    client.restart_monitor().await.unwrap();
    assert_eq!(monitor.fake.call_count(), calls + 1);

    let remote = client.get_remote_access().await.unwrap();
    assert!(remote.allow_remote_start && !remote.allow_remote_monitor_restart);
    let patch = RemoteAccessPatch {
        allow_remote_start: Some(false),
        allow_remote_monitor_restart: Some(true),
        ..RemoteAccessPatch::default()
    };
    let changed = client.set_remote_access_permissions(patch).await.unwrap();
    assert!(!changed.allow_remote_start && changed.allow_remote_monitor_restart);
    assert_eq!(changed.allow_remote_stop, remote.allow_remote_stop, "keys not sent are kept");
    assert_eq!(client.get_remote_access().await.unwrap(), changed);

    let hosts = vec!["127.0.0.1".to_owned(), "192.168.1.*".to_owned()];
    client.set_trusted_hosts(hosts.clone()).await.unwrap();
    assert_eq!(client.get_trusted_hosts().await.unwrap(), hosts);

    assert_eq!(client.get_executable_whitelist().await.unwrap(), Vec::<String>::new());
    let whitelist = vec!["/usr/bin/*".to_owned(), "/opt/workers/**".to_owned()];
    client.set_remote_executable_whitelist(whitelist.clone()).await.unwrap();
    assert_eq!(client.get_executable_whitelist().await.unwrap(), whitelist);
    let blacklist = vec!["/usr/bin/rm".to_owned(), "**/*.sh".to_owned()];
    client.set_remote_executable_blacklist(blacklist.clone()).await.unwrap();
    assert_eq!(client.get_executable_blacklist().await.unwrap(), blacklist);
    let res = client.set_remote_executable_blacklist(vec!["relative/*".to_owned()]).await;
    assert!(matches!(&res, Err(Error::Invalid(message)) if message.contains("relative/*")), "{res:?}");
    assert_eq!(client.get_executable_blacklist().await.unwrap(), blacklist, "unchanged");

    assert!(!client.is_standalone_mode().await.unwrap());
    client.set_standalone_mode(true).await.unwrap();
    assert!(client.is_standalone_mode().await.unwrap());
    assert!(client.get_monitor_status().await.unwrap().standalone_mode);

    let discovery = client.get_partner_discovery().await.unwrap();
    assert_eq!(discovery.partner_instance_id, None);
    let patch = PartnerDiscoveryPatch {
        partner_instance_id: Some("watcher".to_owned()),
        partner_aliveness_port: Some(19884),
        ..PartnerDiscoveryPatch::default()
    };
    let changed = client.set_partner_discovery(patch).await.unwrap();
    assert_eq!(changed.partner_instance_id.as_deref(), Some("watcher"));
    assert_eq!(changed.partner_aliveness_port, Some(19884));
    assert_eq!(changed.check_interval_ms, discovery.check_interval_ms, "keys not sent are kept");
    assert_eq!(client.get_partner_discovery().await.unwrap(), changed);
    let res = client
        .set_partner_discovery(PartnerDiscoveryPatch {
            partner_instance_id: Some("../x".to_owned()),
            ..PartnerDiscoveryPatch::default()
        })
        .await;
    assert!(matches!(res, Err(Error::Invalid(_))), "{res:?}");
    monitor.server.shutdown().await;
}

#[tokio::test]
async fn untrusted_peers_are_denied() {
    let monitor = Monitor::start();
    let client = monitor.client();
    monitor.fake.insert("local", false, true);
    monitor.fake.insert("remote", true, true);
    monitor.fake.untrust_loopback();

    let denied = |res: Result<(), Error>, fragment: &str| match res {
        Err(Error::PermissionDenied(message)) => {
            assert!(message.contains(fragment), "{message:?} lacks {fragment:?}")
        }
        other => panic!("expected PermissionDenied({fragment:?}), got {other:?}"),
    };
    denied(client.set_trusted_hosts(vec!["127.0.0.1".to_owned()]).await, "trusted host");
    denied(client.set_standalone_mode(true).await, "trusted host");
    denied(client.set_remote_executable_whitelist(vec!["/**".to_owned()]).await, "trusted host");
    denied(client.set_remote_access_permissions(RemoteAccessPatch::default()).await.map(drop), "trusted host");
    denied(client.start("local").await.map(drop), "Cannot modify local process");
    denied(client.deregister("local").await, "Cannot modify local process");
    denied(client.restart_monitor().await, "Monitor restart not allowed");
    let res = client.register(ProcessConfig::new("new", "New", "/bin/true")).await;
    denied(res, "Executable not permitted");

    monitor.fake.edit_remote(|remote| remote.allow_remote_stop = false);
    denied(client.stop("remote").await.map(drop), "Remote stop not allowed");
    assert_eq!(client.start("remote").await.unwrap(), ProcessState::Starting);

    // Reading the configuration stays open to every peer.
    assert_eq!(client.get_trusted_hosts().await.unwrap(), ["10.9.9.9"]);
    monitor.server.shutdown().await;
}

#[tokio::test]
async fn busy_and_other_server_errors_are_typed_and_not_retried() {
    let monitor = Monitor::start();
    let client = RemoteProcessMonitorClient::with_options(options(monitor.addr(), Duration::from_secs(5), 2)).unwrap();
    monitor.fake.insert("job", false, true);

    monitor.fake.fail_with(Some(pm_core::Error::Busy("locked".to_owned())));
    let calls = monitor.fake.call_count();
    let res = client.start("job").await;
    assert!(matches!(&res, Err(Error::Busy(message)) if message.contains("busy")), "{res:?}");
    let res = client.get_status("job").await;
    assert!(matches!(res, Err(Error::Busy(_))), "{res:?}");
    assert_eq!(monitor.fake.call_count(), calls + 2, "an HTTP answer is never retried");

    monitor.fake.fail_with(Some(pm_core::Error::Storage(pm_core::Cause::message("disk full"))));
    let res = client.set_standalone_mode(true).await;
    match res {
        Err(Error::Server { status: 500, message }) => assert!(message.contains("disk full"), "{message}"),
        other => panic!("expected Server 500, got {other:?}"),
    }
    monitor.fake.fail_with(Some(pm_core::Error::ShuttingDown));
    let res = client.restart_monitor().await;
    assert!(matches!(res, Err(Error::Busy(_))), "{res:?}");

    monitor.fake.fail_with(None);
    monitor.fake.edit_remote(|remote| remote.start_remote_access = false);
    let res = client.get_monitor_status().await;
    assert!(matches!(&res, Err(Error::Busy(message)) if message == "Remote access disabled"), "{res:?}");
    monitor.server.shutdown().await;
}

#[tokio::test]
async fn bad_ids_are_refused_before_any_request() {
    let listener = Listener::start("127.0.0.1:0".parse().unwrap(), Behaviour::Close).await.unwrap();
    let client = RemoteProcessMonitorClient::new(&format!("http://{}", listener.addr)).unwrap();
    for id in ["../x", "", "a/b", "a b", ".hidden", "%2e%2e"] {
        let results = [
            client.get_status(id).await.map(drop),
            client.deregister(id).await,
            client.start(id).await.map(drop),
            client.stop(id).await.map(drop),
            client.restart(id).await.map(drop),
            client.enable(id).await,
            client.disable(id).await,
            client.set_autostart(id, true).await,
            client.register(ProcessConfig::new(id, "X", "/bin/true")).await,
        ];
        for res in results {
            assert!(matches!(res, Err(Error::Invalid(_))), "{id:?}: {res:?}");
        }
    }
    let res = client.register(ProcessConfig::new("ok", "", "/bin/true")).await;
    assert!(matches!(&res, Err(Error::Invalid(message)) if message.contains("name")), "{res:?}");
    assert_eq!(listener.accepted(), 0, "nothing was sent");
}

#[tokio::test]
async fn whoami_and_a_process_configuration() {
    let monitor = Monitor::start();
    monitor.fake.insert("job", true, true);
    let client = monitor.client();
    let me = client.whoami().await.unwrap();
    assert_eq!(
        (me["transport"].as_str(), me["trusted"].as_bool(), me["scope"].as_str()),
        (Some("tcp"), Some(true), Some("admin"))
    );
    let config = client.get_process_config("job").await.unwrap();
    assert_eq!((config.id.as_str(), config.command.as_str()), ("job", "/bin/true"));
    let missing = client.get_process_config("nope").await.unwrap_err();
    assert!(matches!(missing, pm_client::Error::NotFound(_)), "{missing:?}");
    assert!(matches!(client.get_process_config("a/b").await, Err(pm_client::Error::Invalid(_))));
}
