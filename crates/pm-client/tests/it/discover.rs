//! Discovery on loopback: through the candidates, through a scan of 127.0.0.0/24, and giving up in time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pm_client::{DiscoverOptions, Error, RemoteProcessMonitorClient, Subnet};

use crate::support::{unused_port, Behaviour, Listener, Monitor};

fn loopback_subnet() -> Option<Subnet> {
    Some(Subnet::parse("127.0.0.0/24").unwrap())
}

#[tokio::test]
async fn finds_a_monitor_among_the_candidates() {
    let monitor = Monitor::start();
    let port = monitor.addr().port();

    let options = DiscoverOptions { port, ..DiscoverOptions::default() };
    let client = RemoteProcessMonitorClient::discover_with(options).await.unwrap();
    // 0.0.0.0 is the first candidate; connecting to it reaches this host.
    assert_eq!(client.base_url(), format!("http://0.0.0.0:{port}"));
    assert_eq!(client.get_monitor_status().await.unwrap().instance_id, "default");

    // Candidates are tried in order: a refused one is passed over.
    let options = DiscoverOptions {
        port,
        candidates: vec!["127.0.0.2".to_owned(), "localhost".to_owned(), "127.0.0.1".to_owned()],
        ..DiscoverOptions::default()
    };
    let client = RemoteProcessMonitorClient::discover_with(options).await.unwrap();
    assert_eq!(client.base_url(), format!("http://localhost:{port}"));
    monitor.server.shutdown().await;
}

#[tokio::test]
async fn finds_a_monitor_by_scanning_the_subnet() {
    // The monitor listens on 127.0.0.7, so the scan must get past .1; a listener that never answers holds
    // 127.0.0.1 on the same port (no other test can take it meanwhile), so the first responder wins, not the
    // first host.
    let (monitor, silent) = loop {
        let monitor = Monitor::start_on("127.0.0.7:0".parse().unwrap(), "scanned");
        let guard: SocketAddr = format!("127.0.0.1:{}", monitor.addr().port()).parse().unwrap();
        if let Ok(silent) = Listener::start(guard, Behaviour::Hang).await {
            break (monitor, silent);
        }
    };
    let port = monitor.addr().port();
    let options = DiscoverOptions {
        port,
        candidates: Vec::new(),
        subnet: loopback_subnet(),
        timeout: Duration::from_secs(10),
        probe_timeout: Duration::from_secs(5),
        concurrency: 16,
    };
    let started = Instant::now();
    let client = RemoteProcessMonitorClient::discover_with(options).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "did not wait for the silent host");
    assert_eq!(client.base_url(), format!("http://127.0.0.7:{port}"));
    assert_eq!(client.get_monitor_status().await.unwrap().instance_id, "scanned");
    assert_eq!(silent.accepted(), 1);
    monitor.server.shutdown().await;
}

#[tokio::test]
async fn gives_up_when_nothing_answers() {
    let port = unused_port();
    let options = DiscoverOptions {
        port,
        subnet: loopback_subnet(),
        timeout: Duration::from_secs(2),
        ..DiscoverOptions::default()
    };
    let started = Instant::now();
    let res = RemoteProcessMonitorClient::discover_with(options).await;
    let elapsed = started.elapsed();
    match res {
        Err(Error::NotDiscovered(message)) => {
            for tried in [format!("http://127.0.0.1:{port}"), "127.0.0.0/24".to_owned()] {
                assert!(message.contains(&tried), "{message:?} lacks {tried:?}");
            }
        }
        other => panic!("expected NotDiscovered, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");

    let res = RemoteProcessMonitorClient::discover_with(DiscoverOptions {
        candidates: Vec::new(),
        ..DiscoverOptions::default()
    })
    .await;
    assert!(matches!(&res, Err(Error::NotDiscovered(message)) if message.contains("nothing")), "{res:?}");
}

#[tokio::test]
async fn gives_up_at_the_overall_timeout() {
    let silent = Listener::start("127.0.0.1:0".parse().unwrap(), Behaviour::Hang).await.unwrap();
    let options = DiscoverOptions {
        port: silent.addr.port(),
        candidates: vec!["127.0.0.1".to_owned()],
        subnet: loopback_subnet(),
        timeout: Duration::from_millis(800),
        probe_timeout: Duration::from_secs(30),
        concurrency: 4,
    };
    let started = Instant::now();
    let res = RemoteProcessMonitorClient::discover_with(options).await;
    let elapsed = started.elapsed();
    assert!(matches!(&res, Err(Error::NotDiscovered(message)) if message.contains("timeout")), "{res:?}");
    assert!(elapsed >= Duration::from_millis(800), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1800), "{elapsed:?}");
}
