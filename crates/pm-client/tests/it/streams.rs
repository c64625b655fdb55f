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
