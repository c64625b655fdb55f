//! `GET /events`, `GET /processes/{id}/logs` and `/runs` against the fake control plane: replay, gaps, filters,
//! trust, the stream cap, heartbeats, slow readers, tails and follows.

use std::io::Write;
use std::time::Duration;

use pm_core::{Event, EventKind};
use pm_http::{HttpStream, ServerConfig, SseEvent, SseParser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{eventually, Api, FakeControl, TempDir};

/// An open event stream and its parser.
struct Events {
    stream: HttpStream,
    parser: SseParser,
    pending: std::collections::VecDeque<SseEvent>,
    raw: String,
}

impl Events {
    async fn open(api: &Api, query: &str, last_event_id: Option<&str>) -> Events {
        let stream = open(api, &format!("/events{query}"), last_event_id).await;
        assert_eq!(stream.status, 200);
        assert_eq!(stream.headers["content-type"], "text/event-stream");
        Events { stream, parser: SseParser::new(), pending: Default::default(), raw: String::new() }
    }

    /// The next event within 10 s; `None` at the end of the stream.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.stream.chunk())
                .await
                .expect("no event within 10 s")
                .unwrap()?;
            self.raw.push_str(&String::from_utf8_lossy(&chunk));
            self.pending.extend(self.parser.push(&chunk));
        }
    }

    async fn next_json(&mut self) -> serde_json::Value {
        let event = self.next().await.expect("stream ended");
        serde_json::from_str(&event.data).unwrap()
    }
}

async fn open(api: &Api, path: &str, last_event_id: Option<&str>) -> HttpStream {
    let url = format!("http://{}{path}", api.addr());
    let headers: Vec<(&str, String)> = last_event_id.map(|id| ("last-event-id", id.to_owned())).into_iter().collect();
    api.client.get_stream(&url, &headers, Duration::from_secs(10)).await.unwrap()
}

fn registered(id: &str) -> Event {
    Event::now(EventKind::Registered { process_id: id.to_owned() })
}

#[tokio::test]
async fn replays_after_last_event_id_then_streams_live() {
    let api = Api::start();
    let bus = api.fake.events.clone();
    let ids: Vec<String> = (0..10).map(|n| bus.publish(registered(&format!("p{n}")), false)).collect();
    let mut events = Events::open(&api, "", Some(&ids[4])).await;
    for (n, id) in ids.iter().enumerate().skip(5) {
        let event = events.next().await.unwrap();
        assert_eq!((event.id.as_str(), event.event.as_str()), (id.as_str(), "registered"));
        let json: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(json["processId"], format!("p{n}"));
        assert_eq!(json["id"], id.as_str());
    }
    let live = bus.publish(registered("live"), false);
    assert_eq!(events.next().await.unwrap().id, live);
    // Without Last-Event-ID only new events come.
    let mut fresh = Events::open(&api, "", None).await;
    let newer = bus.publish(registered("newer"), false);
    assert_eq!(fresh.next().await.unwrap().id, newer);
}

#[tokio::test]
async fn a_client_behind_the_ring_gets_a_gap_event_first() {
    let api = Api::start();
    let bus = api.fake.events.clone();
    let first = bus.publish(registered("first"), false);
    for n in 0..bus.capacity() + 10 {
        bus.publish(registered(&format!("p{n}")), false);
    }
    let mut events = Events::open(&api, "", Some(&first)).await;
    let gap = events.next().await.unwrap();
    assert_eq!((gap.event.as_str(), gap.id.as_str()), ("gap", ""));
    let gap: serde_json::Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!(gap["lastEventId"], first.as_str());
    let next = events.next().await.unwrap();
    assert_eq!(gap["firstAvailableId"].as_str(), Some(next.id.as_str()));
    assert_eq!(next.id, format!("{}-12", bus.epoch()));
    // An id of another monitor run: a gap, then everything held.
    let mut other = Events::open(&api, "", Some("1-1")).await;
    assert_eq!(other.next().await.unwrap().event, "gap");
    assert_eq!(other.next().await.unwrap().id, next.id);
}

#[tokio::test]
async fn untrusted_peers_see_only_remote_processes_and_filters_apply() {
    let api = Api::start();
    api.fake.insert("local", false, true);
    api.fake.insert("remote", true, true);
    let bus = api.fake.events.clone();
    let mut trusted = Events::open(&api, "", None).await;
    let mut only_remote = Events::open(&api, "?process=remote", None).await;
    api.fake.untrust_loopback();
    let mut untrusted = Events::open(&api, "", None).await;
    let refused = api.get("/events?process=local").await;
    assert_eq!((refused.status, refused.error()), (403, "Cannot watch local process"));
    assert_eq!(api.get("/events?process=a%2Fb").await.status, 400);
    assert_eq!(api.get("/events?color=red").await.status, 400);

    bus.publish(registered("local"), false);
    bus.publish(Event::now(EventKind::StandaloneChanged { enabled: true }), false);
    bus.publish(registered("remote"), true);
    for expected in ["local", "", "remote"] {
        let json = trusted.next_json().await;
        assert_eq!(json["processId"].as_str().unwrap_or(""), expected);
    }
    assert_eq!(untrusted.next_json().await["processId"], "remote");
    assert_eq!(only_remote.next_json().await["processId"], "remote");
    // Nothing else reached the filtered streams.
    let last = bus.publish(registered("remote"), true);
    assert_eq!(untrusted.next().await.unwrap().id, last);
    assert_eq!(only_remote.next().await.unwrap().id, last);
}

#[tokio::test]
async fn streams_beyond_the_cap_get_503_and_slots_free_on_close() {
    let config = ServerConfig { max_streams: 3, ..ServerConfig::default() };
    let api = Api::start_with(FakeControl::new(), config);
    let mut open_streams = Vec::new();
    for _ in 0..3 {
        open_streams.push(Events::open(&api, "", None).await);
    }
    let refused = api.get("/events").await;
    assert_eq!((refused.status, refused.error(), refused.header("retry-after")), (503, "Too many streams", "1"));
    // Ordinary requests are not streams.
    assert_eq!(api.get("/processes").await.status, 200);
    open_streams.pop();
    assert!(eventually(Duration::from_secs(10), || async { open(&api, "/events", None).await.status == 200 }).await);
}

#[tokio::test]
async fn idle_streams_get_heartbeat_comments() {
    let config = ServerConfig { stream_heartbeat: Duration::from_millis(100), ..ServerConfig::default() };
    let api = Api::start_with(FakeControl::new(), config);
    let mut events = Events::open(&api, "", None).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while events.raw.matches(": heartbeat").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "no heartbeats: {:?}", events.raw);
        let chunk = events.stream.chunk().await.unwrap().unwrap();
        events.raw.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(events.raw.starts_with(": connected\nretry: 1000\n\n"), "{:?}", events.raw);
}

#[tokio::test]
async fn a_reader_that_does_not_read_is_cut_with_a_final_event() {
    let config = ServerConfig { stream_stall_timeout: Duration::from_millis(300), ..ServerConfig::default() };
    let api = Api::start_with(FakeControl::new(), config);
    let mut socket = tokio::net::TcpStream::connect(api.addr()).await.unwrap();
    socket.write_all(b"GET /events HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    // Wait until the stream is open (its first comment sent), without reading it.
    assert!(eventually(Duration::from_secs(10), || async { api.fake.events.latest_subscribers() > 0 }).await);
    let bus = api.fake.events.clone();
    let padding = "x".repeat(400);
    for n in 0..20_000 {
        bus.publish(registered(&format!("p{n}-{padding}")), false);
        if n % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Now read it all: the stream ends, its last event a `cut`.
    let mut text = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut text)).await;
    let text = String::from_utf8_lossy(&text);
    assert!(read.is_ok(), "the stream did not end");
    let last = text.trim_end_matches(['\r', '\n', '0']).rsplit("\n\n").next().unwrap_or("");
    assert!(last.contains("event: cut"), "last frame: {last:?}");
    assert!(text.len() < 16 * 1024 * 1024, "{} bytes buffered for one reader", text.len());
    // And the slot is free again.
    assert!(eventually(Duration::from_secs(10), || async { api.fake.events.latest_subscribers() == 0 }).await);
}

/// A log folder `{root}/job/{run}` with the given stdout.
fn run_dir(root: &std::path::Path, run: &str, stdout: &str) -> std::path::PathBuf {
    let dir = root.join("job").join(run);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("stdout.log"), stdout).unwrap();
    std::fs::write(dir.join("stderr.log"), "err\n").unwrap();
    dir
}

#[tokio::test]
async fn runs_and_tails() {
    let api = Api::start();
    let root = TempDir::new();
    *api.fake.logs_root.lock().unwrap() = Some(root.path().to_path_buf());
    api.fake.insert("job", false, true);
    assert_eq!(api.get("/processes/job/logs").await.error(), "No logs");
    run_dir(root.path(), "20250101_120000", "old\n");
    run_dir(root.path(), "20250101_120005", "a\nb\nc\n");
    let runs = api.get("/processes/job/runs").await;
    assert_eq!(runs.status, 200);
    assert_eq!(runs.json["runs"][0]["run"], "20250101_120000");
    assert_eq!(runs.json["runs"][1]["stdoutBytes"], 6);
    let text = |path: &str| {
        let url = format!("http://{}{path}", api.addr());
        let client = api.client.clone();
        async move { client.get(&url, Duration::from_secs(10)).await.unwrap() }
    };
    assert_eq!(text("/processes/job/logs?tail=2").await.body, b"b\nc\n");
    assert_eq!(text("/processes/job/logs").await.body, b"a\nb\nc\n");
    assert_eq!(text("/processes/job/logs?stream=stderr").await.body, b"err\n");
    assert_eq!(text("/processes/job/logs?run=20250101_120000").await.body, b"old\n");
    assert_eq!(api.get("/processes/job/logs?run=20250101_130000").await.error(), "Run not found");
    assert_eq!(api.get("/processes/job/logs?run=..").await.status, 400);
    assert_eq!(api.get("/processes/job/logs?tail=x").await.status, 400);
    assert_eq!(api.get("/processes/nope/logs").await.status, 404);
    api.fake.untrust_loopback();
    let refused = api.get("/processes/job/logs").await;
    assert_eq!((refused.status, refused.error()), (403, "Cannot read logs of local process"));
    assert_eq!(api.get("/processes/job/runs").await.status, 403);
}

#[tokio::test]
async fn follow_goes_on_into_the_next_run() {
    let api = Api::start();
    let root = TempDir::new();
    *api.fake.logs_root.lock().unwrap() = Some(root.path().to_path_buf());
    api.fake.insert("job", true, true);
    let first = run_dir(root.path(), "20250101_120000", "one\ntwo\n");
    let mut stream = open(&api, "/processes/job/logs?follow=true&tail=1", None).await;
    assert_eq!(stream.status, 200);
    let mut seen = String::new();
    let read_until = async |stream: &mut HttpStream, seen: &mut String, want: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !seen.ends_with(want) {
            assert!(std::time::Instant::now() < deadline, "saw {seen:?}, waiting for {want:?}");
            let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk()).await.unwrap().unwrap().unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    read_until(&mut stream, &mut seen, "two\n").await;
    let mut file = std::fs::OpenOptions::new().append(true).open(first.join("stdout.log")).unwrap();
    file.write_all(b"three\n").unwrap();
    read_until(&mut stream, &mut seen, "three\n").await;
    file.write_all(b"four\n").unwrap();
    run_dir(root.path(), "20250101_120009", "next run\n");
    read_until(&mut stream, &mut seen, "next run\n").await;
    assert_eq!(seen, "two\nthree\nfour\nnext run\n");
}

#[tokio::test]
async fn closing_the_bus_ends_streams_with_a_cut_and_refuses_new_ones() {
    let api = Api::start();
    let mut events = Events::open(&api, "", None).await;
    api.fake.events.close();
    let cut = events.next().await.unwrap();
    assert_eq!(cut.event, "cut");
    assert!(events.next().await.is_none(), "the stream goes on after the cut");
    let refused = api.get("/events").await;
    assert_eq!((refused.status, refused.error()), (503, "ProcessMonitor is shutting down"));
}
