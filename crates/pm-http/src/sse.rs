//! Streaming responses: `GET /events` (Server-Sent Events from the [`EventBus`]) and the plumbing the followed
//! logs share with it (the stream cap, the producer-to-body channel that keeps one slot for a final frame).
//!
//! Each stream is a producer task feeding a channel of [`STREAM_CHUNKS`] chunks that the response body drains.
//! Memory per stream is bounded by that channel; the events themselves are shared in the bus's ring. A reader
//! that falls behind the ring, or takes nothing for [`StreamLimits::stall_timeout`], is cut: it gets a final
//! `cut` event (the channel always keeps a free slot for it) and the stream ends.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use pm_core::{Event, EventKind};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::body::Body;
use crate::events::{render, EventBus, Fetch};
use crate::server::HttpResponse;

/// Chunks buffered per stream between its producer and the connection.
pub(crate) const STREAM_CHUNKS: usize = 8;

/// The limits shared by every stream of one server.
#[derive(Debug, Clone)]
pub(crate) struct StreamLimits {
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) heartbeat: Duration,
    pub(crate) stall_timeout: Duration,
}

impl StreamLimits {
    /// A slot for one more stream; `None` when all are taken.
    pub(crate) fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }
}

/// The sending side of a stream: every send leaves one slot free for a final frame.
pub(crate) struct StreamTx {
    tx: mpsc::Sender<Bytes>,
    stall_timeout: Duration,
}

/// Why a stream ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The client went away.
    Closed,
    /// The client took nothing for the stall timeout (a final frame was queued).
    Stalled,
}

impl StreamTx {
    /// Queues `chunk`, waiting while the client does not read (up to the stall timeout; then `final_frame` is
    /// queued in the slot kept free and the stream is over).
    pub(crate) async fn send(&self, chunk: Bytes, final_frame: impl FnOnce() -> Option<Bytes>) -> Result<(), Ended> {
        match tokio::time::timeout(self.stall_timeout, self.tx.reserve_many(2)).await {
            Ok(Ok(mut permits)) => {
                if let Some(permit) = permits.next() {
                    permit.send(chunk);
                }
                Ok(())
            }
            Ok(Err(_)) => Err(Ended::Closed),
            Err(_) => {
                if let Some(frame) = final_frame() {
                    let _ = self.tx.try_send(frame);
                }
                Err(Ended::Stalled)
            }
        }
    }

    /// Queues a last frame without waiting (the slot kept free takes it).
    pub(crate) fn send_last(&self, chunk: Bytes) {
        let _ = self.tx.try_send(chunk);
    }

    /// Resolves when the client went away.
    pub(crate) async fn closed(&self) {
        self.tx.closed().await
    }
}

/// A streaming response of `content_type` and the sender feeding it.
pub(crate) fn stream_response(content_type: &'static str, limits: &StreamLimits) -> (HttpResponse, StreamTx) {
    let (tx, rx) = mpsc::channel(STREAM_CHUNKS);
    let mut res = Response::new(Body::Stream(rx));
    *res.status_mut() = StatusCode::OK;
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    (res, StreamTx { tx, stall_timeout: limits.stall_timeout })
}

/// Which events a stream shows.
#[derive(Debug, Clone)]
pub(crate) struct EventFilter {
    /// Only the events of this process (monitor events are left out too).
    pub(crate) process: Option<String>,
    /// Trusted peers see every event; the others only those of processes registered remotely.
    pub(crate) trusted: bool,
}

impl EventFilter {
    fn admits(&self, process_id: Option<&str>, is_remote: bool) -> bool {
        if let Some(only) = &self.process {
            if process_id != Some(only.as_str()) {
                return false;
            }
        }
        self.trusted || (is_remote && process_id.is_some())
    }
}

/// Answers `GET /events`: replays from `last_event_id` (after a `gap` event when that is no longer held), then
/// streams new events, with a comment line every heartbeat while idle.
pub(crate) fn events_response(
    bus: Arc<EventBus>,
    filter: EventFilter,
    last_event_id: Option<&str>,
    permit: OwnedSemaphorePermit,
    limits: &StreamLimits,
) -> HttpResponse {
    let (cursor, gap) = bus.resume_point(last_event_id);
    let (res, tx) = stream_response("text/event-stream", limits);
    let heartbeat = limits.heartbeat;
    tokio::spawn(async move {
        let _permit = permit;
        let ended = produce_events(&bus, &filter, cursor, gap, &tx, heartbeat).await.err();
        tracing::debug!(?ended, "event stream ended");
    });
    res
}

fn cut(reason: &str) -> Bytes {
    render(&Event::now(EventKind::Cut { reason: reason.to_owned() }), false)
}

const STALLED: &str = "the client did not read; reconnect with Last-Event-ID";

async fn produce_events(
    bus: &EventBus,
    filter: &EventFilter,
    mut cursor: u64,
    gap: Option<Event>,
    tx: &StreamTx,
    heartbeat: Duration,
) -> Result<(), Ended> {
    let stalled = || Some(cut(STALLED));
    let mut wake = bus.subscribe();
    // An initial comment lets clients (and tests) see the stream is open before any event; `retry` sets the
    // reconnect delay of browsers' EventSource.
    tx.send(Bytes::from_static(b": connected\nretry: 1000\n\n"), stalled).await?;
    if let Some(gap) = gap {
        tx.send(render(&gap, false), stalled).await?;
    }
    let mut idle_since = Instant::now();
    loop {
        wake.borrow_and_update();
        if bus.is_closed() {
            tx.send_last(cut("the monitor is shutting down"));
            return Err(Ended::Closed);
        }
        match bus.after(cursor, 256) {
            Fetch::Behind => {
                tx.send_last(cut("the client read too slowly and events were dropped; reconnect with Last-Event-ID"));
                return Err(Ended::Stalled);
            }
            Fetch::Events(events) if !events.is_empty() => {
                for event in events {
                    cursor = event.seq;
                    if filter.admits(event.process_id.as_deref(), event.is_remote) {
                        tx.send(event.frame, stalled).await?;
                        idle_since = Instant::now();
                    }
                }
                continue;
            }
            Fetch::Events(_) => {}
        }
        tokio::select! {
            changed = wake.changed() => {
                if changed.is_err() {
                    tx.send_last(cut("the monitor is shutting down"));
                    return Err(Ended::Closed);
                }
            }
            () = tokio::time::sleep_until(idle_since + heartbeat) => {
                tx.send(Bytes::from_static(b": heartbeat\n\n"), stalled).await?;
                idle_since = Instant::now();
            }
            () = tx.closed() => return Err(Ended::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let all = EventFilter { process: None, trusted: true };
        assert!(all.admits(None, false));
        assert!(all.admits(Some("a"), false));
        let untrusted = EventFilter { process: None, trusted: false };
        assert!(!untrusted.admits(None, false));
        assert!(!untrusted.admits(Some("a"), false));
        assert!(untrusted.admits(Some("a"), true));
        let one = EventFilter { process: Some("a".to_owned()), trusted: true };
        assert!(one.admits(Some("a"), false));
        assert!(!one.admits(Some("b"), false));
        assert!(!one.admits(None, false));
    }
}
