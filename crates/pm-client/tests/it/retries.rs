//! Transport failures: bounded retries, and a `POST` is never sent twice once its connection was made.

use std::time::{Duration, Instant};

use pm_client::{Error, RemoteProcessMonitorClient};

use crate::support::{options, unused_port, Behaviour, Listener};

fn assert_transport<T: std::fmt::Debug>(res: Result<T, Error>, port: u16) {
    match res {
        Err(Error::Transport { url, .. }) => assert!(url.contains(&format!(":{port}/")), "{url}"),
        other => panic!("expected a transport error, got {other:?}"),
    }
}

#[tokio::test]
async fn closed_port_fails_after_the_retries() {
    let port = unused_port();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = RemoteProcessMonitorClient::with_options(options(addr, Duration::from_secs(1), 2)).unwrap();

    let started = Instant::now();
    assert_transport(client.get_monitor_status().await, port);
    let elapsed = started.elapsed();
    // Two pauses of 50 ms: the refused connection was tried three times.
    assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");

    // Nothing was sent, so a POST is retried as well.
    let started = Instant::now();
    assert_transport(client.start("job").await, port);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");

    let client = RemoteProcessMonitorClient::with_options(options(addr, Duration::from_secs(1), 0)).unwrap();
    let started = Instant::now();
    assert_transport(client.get_all_status().await, port);
    assert!(started.elapsed() < Duration::from_millis(50), "no retry, no pause");
}

#[tokio::test]
async fn a_post_is_not_sent_again_once_connected() {
    let listener = Listener::start("127.0.0.1:0".parse().unwrap(), Behaviour::Close).await.unwrap();
    let port = listener.addr.port();
    let client = RemoteProcessMonitorClient::with_options(options(listener.addr, Duration::from_secs(2), 2)).unwrap();

    assert_transport(client.get_monitor_status().await, port);
    assert_eq!(listener.accepted(), 3, "GET: one attempt and two retries");
    assert_transport(client.set_standalone_mode(true).await, port);
    assert_eq!(listener.accepted(), 6, "PUT: one attempt and two retries");
    assert_transport(client.start("job").await, port);
    assert_eq!(listener.accepted(), 7, "POST: one attempt only");
    assert_transport(client.restart_monitor().await, port);
    assert_eq!(listener.accepted(), 8, "POST: one attempt only");
}

#[tokio::test]
async fn a_silent_monitor_times_out() {
    let listener = Listener::start("127.0.0.1:0".parse().unwrap(), Behaviour::Hang).await.unwrap();
    let port = listener.addr.port();
    let client =
        RemoteProcessMonitorClient::with_options(options(listener.addr, Duration::from_millis(200), 1)).unwrap();

    let started = Instant::now();
    assert_transport(client.get_status("job").await, port);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "two attempts of 200 ms: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(listener.accepted(), 2);

    let started = Instant::now();
    assert_transport(client.stop("job").await, port);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(400), "a POST that may have arrived is not retried: {elapsed:?}");
    assert_eq!(listener.accepted(), 3);
}
