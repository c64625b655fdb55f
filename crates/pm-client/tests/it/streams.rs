//! The event and log streams of the remote client against the in-process API: reconnecting with
//! `Last-Event-ID` loses and repeats nothing, errors end the stream, logs are read and followed.

use std::time::Duration;

use pm_client::{EventsOptions, LogsOptions};
use pm_core::{Event, EventKind};
use pm_http::{ServerConfig, ServerHandle};

use crate::support::Monitor;

fn registered(id: &str) -> Event {
    Event::now(EventKind::Registered { process_id: id.to_owned() })
}

async fn next_id(stream: &mut pm_client::EventStream) -> String {
    let event = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("no event in 10 s");
    let event = event.expect("stream ended").expect("stream failed");
    match event.kind {
        EventKind::Registered { process_id } => process_id,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn events_reconnect_with_last_event_id_and_lose_nothing() {
    let monitor = Monitor::start();
    let addr = monitor.addr();
    let client = monitor.client();
    let options = EventsOptions { reconnect_delay: Duration::from_millis(50), ..EventsOptions::default() };
    let mut stream = client.events(options).unwrap();
    // The stream is open once the bus has a reader.
    let bus = monitor.fake.events.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while bus.latest_subscribers() == 0 {
        assert!(std::time::Instant::now() < deadline, "the stream did not open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bus.publish(registered("a"), false);
    assert_eq!(next_id(&mut stream).await, "a");
    // The server goes away; events published meanwhile come after the reconnect, once each.
    let Monitor { fake, server } = monitor;
    server.shutdown().await;
    bus.publish(registered("b"), false);
    bus.publish(registered("c"), false);
    let listener = pm_http::bind(addr).unwrap();
    let config = ServerConfig { shutdown_grace: Duration::from_millis(100), ..ServerConfig::default() };
    let server: ServerHandle = pm_http::spawn_remote_api(listener, fake.clone(), config).unwrap();
    assert_eq!(next_id(&mut stream).await, "b");
    assert_eq!(next_id(&mut stream).await, "c");
    bus.publish(registered("d"), false);
    assert_eq!(next_id(&mut stream).await, "d");
    drop(stream);
    server.shutdown().await;
}

#[tokio::test]
async fn a_refused_stream_ends_with_its_error() {
    let monitor = Monitor::start();
    monitor.fake.insert("local", false, true);
    monitor.fake.untrust_loopback();
    let mut stream =
        monitor.client().events(EventsOptions { process: Some("local".to_owned()), ..Default::default() }).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap_err();
    assert!(matches!(err, pm_client::Error::PermissionDenied(_)), "{err:?}");
    assert!(stream.next().await.is_none());
    assert!(monitor.client().events(EventsOptions { process: Some("a/b".to_owned()), ..Default::default() }).is_err());
}

#[tokio::test]
async fn logs_are_read_and_followed() {
    let monitor = Monitor::start();
    let root = std::env::temp_dir().join(format!("pm-client-logs-{}", std::process::id()));
    let run = root.join("job").join("20250101_120000");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("stdout.log"), "a\nb\n").unwrap();
    *monitor.fake.logs_root.lock().unwrap() = Some(root.clone());
    monitor.fake.insert("job", true, true);
    let client = monitor.client();
    let mut whole = client.logs("job", LogsOptions { tail: Some(1), ..Default::default() }).await.unwrap();
    assert_eq!(whole.next().await.unwrap().unwrap(), b"b\n");
    assert!(whole.next().await.is_none());
    let mut follow = client.logs("job", LogsOptions { follow: true, ..Default::default() }).await.unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().append(true).open(run.join("stdout.log")).unwrap();
        file.write_all(b"c\n").unwrap();
    }
    while !seen.ends_with(b"c\n") {
        assert!(std::time::Instant::now() < deadline, "saw {:?}", String::from_utf8_lossy(&seen));
        let chunk = tokio::time::timeout(Duration::from_secs(10), follow.next()).await.unwrap().unwrap().unwrap();
        seen.extend(chunk);
    }
    assert_eq!(seen, b"a\nb\nc\n");
    let missing = client.logs("nope", LogsOptions::default()).await.unwrap_err();
    assert!(matches!(missing, pm_client::Error::NotFound(_)), "{missing:?}");
    assert_eq!(client.runs("job").await.unwrap()[0]["run"], "20250101_120000");
    let _ = std::fs::remove_dir_all(&root);
}

/// Reads a log stream into `seen` until it ends with `end`.
async fn read_until(follow: &mut pm_client::LogStream, seen: &mut Vec<u8>, end: &[u8]) {
    while !seen.ends_with(end) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), follow.next()).await;
        let chunk = chunk.expect("no line in 10 s").expect("stream ended").expect("stream failed");
        seen.extend(chunk);
    }
}

#[tokio::test]
async fn a_followed_log_reconnects_and_neither_repeats_nor_loses_a_line() {
    use std::io::Write;
    let monitor = Monitor::start();
    let addr = monitor.addr();
    let root = std::env::temp_dir().join(format!("pm-client-logs-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let run = root.join("job").join("20250101_120000");
    std::fs::create_dir_all(&run).unwrap();
    let path = run.join("stdout.log");
    // Repeated lines make the lining up non-trivial: only the last place where the seen lines stand counts.
    std::fs::write(&path, "tick\ntick\nold\n").unwrap();
    *monitor.fake.logs_root.lock().unwrap() = Some(root.clone());
    monitor.fake.insert("job", true, true);
    let append = |text: &str| {
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(text.as_bytes()).unwrap();
    };
    let options = LogsOptions {
        follow: true,
        tail: Some(10),
        reconnect_delay: Duration::from_millis(50),
        ..LogsOptions::default()
    };
    let mut follow = monitor.client().logs("job", options).await.unwrap();
    let mut seen = Vec::new();
    append("tick\na1\n");
    read_until(&mut follow, &mut seen, b"a1\n").await;
    // The monitor goes away; lines written meanwhile (one still without its newline) come after the
    // reconnection, once each.
    let Monitor { fake, server } = monitor;
    server.shutdown().await;
    append("tick\nb1\ntick\nb2\npart");
    let listener = pm_http::bind(addr).unwrap();
    let config = ServerConfig { shutdown_grace: Duration::from_millis(100), ..ServerConfig::default() };
    let server: ServerHandle = pm_http::spawn_remote_api(listener, fake.clone(), config).unwrap();
    append("ial\nc1\n");
    read_until(&mut follow, &mut seen, b"c1\n").await;
    assert_eq!(String::from_utf8_lossy(&seen), "tick\ntick\nold\ntick\na1\ntick\nb1\ntick\nb2\npartial\nc1\n");
    append("d1\n");
    read_until(&mut follow, &mut seen, b"d1\n").await;
    assert!(seen.ends_with(b"c1\nd1\n"));
    drop(follow);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&root);
}
