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

/// A monitor that takes the connection but does not answer is slow, not absent: [`Error::Timeout`], never the
/// "cannot reach" of a monitor that is not running.
#[tokio::test]
async fn a_silent_monitor_times_out() {
    let listener = Listener::start("127.0.0.1:0".parse().unwrap(), Behaviour::Hang).await.unwrap();
    let port = listener.addr.port();
    let client =
        RemoteProcessMonitorClient::with_options(options(listener.addr, Duration::from_millis(200), 1)).unwrap();
    let assert_timeout = |res: Result<_, Error>| match res {
        Err(Error::Timeout { url, after }) => {
            assert!(url.contains(&format!(":{port}/")), "{url}");
            assert_eq!(after, Duration::from_millis(200));
        }
        other => panic!("expected a timeout, got {other:?}"),
    };

    let started = Instant::now();
    assert_timeout(client.get_status("job").await.map(drop));
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "two attempts of 200 ms: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(listener.accepted(), 2);

    let started = Instant::now();
    assert_timeout(client.start("job").await.map(drop));
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(400), "a POST that may have arrived is not retried: {elapsed:?}");
    assert_eq!(listener.accepted(), 3);
    let message = Error::Timeout { url: "http://127.0.0.1:1/x".to_owned(), after: Duration::from_secs(5) }.to_string();
    assert!(message.contains("did not answer within 5s") && !message.contains("cannot reach"), "{message}");
}

/// A `DELETE` whose answer was lost (the connection closed after the monitor took it) is sent again; the retry
/// finding the process gone means the first attempt removed it: the call succeeds.
#[tokio::test]
async fn a_retried_delete_that_finds_the_process_gone_succeeds() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let deletes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = deletes.clone();
    let server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let (status, body) = if head.starts_with(b"GET ") {
                (
                    "200 OK",
                    r#"{"id":"job","name":"job","state":"running","enabled":true,"autostart":true,"isRemote":true,"restartAttempts":0,"stopTimeoutMs":100}"#,
                )
            } else if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                // Taken and carried out, but the answer is lost.
                continue;
            } else {
                ("404 Not Found", r#"{"error":"Process not found","processId":"job"}"#)
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    let client = RemoteProcessMonitorClient::with_options(options(addr, Duration::from_secs(2), 2)).unwrap();
    client.deregister("job").await.expect("the first DELETE went through");
    assert_eq!(deletes.load(std::sync::atomic::Ordering::SeqCst), 2, "sent once, retried once");
    server.abort();
}
