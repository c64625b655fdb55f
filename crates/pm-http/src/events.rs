//! The event bus: a ring of the last events a monitor published, numbered, each rendered once as its SSE frame.
//! `GET /events` streams read it; publishing never waits on a reader.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use hyper::body::Bytes;
use pm_core::Event;
use tokio::sync::watch;

/// Events kept for replay by default.
pub const DEFAULT_EVENT_RING: usize = 1024;

/// One event as held in the ring.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) seq: u64,
    pub(crate) process_id: Option<String>,
    pub(crate) is_remote: bool,
    /// `id: ...\nevent: ...\ndata: {json}\n\n`.
    pub(crate) frame: Bytes,
}

/// What a reader finds after its cursor.
#[derive(Debug)]
pub(crate) enum Fetch {
    /// The events after the cursor (possibly none yet).
    Events(Vec<Stored>),
    /// Events after the cursor were dropped from the ring.
    Behind,
}

/// The ring of recent events of one monitor run.
///
/// Ids are `{epoch}-{seq}`: the epoch (the bus's creation time in Unix milliseconds) tells a `Last-Event-ID` of an
/// earlier monitor run from one of this run; `seq` counts from 1. Memory is bounded by the ring's capacity (each
/// event is a few hundred bytes).
#[derive(Debug)]
pub struct EventBus {
    epoch: u64,
    capacity: usize,
    ring: Mutex<Ring>,
    latest: watch::Sender<u64>,
    closed: AtomicBool,
}

#[derive(Debug, Default)]
struct Ring {
    next_seq: u64,
    events: VecDeque<Stored>,
}

impl EventBus {
    /// A bus keeping the last `capacity` events (at least 1,000).
    pub fn new(capacity: usize) -> EventBus {
        let epoch = u64::try_from(pm_core::Timestamp::now().unix_millis()).unwrap_or(0);
        let capacity = capacity.max(1000);
        let (latest, _) = watch::channel(0);
        EventBus {
            epoch,
            capacity,
            ring: Mutex::new(Ring { next_seq: 1, events: VecDeque::new() }),
            latest,
            closed: AtomicBool::new(false),
        }
    }

    /// The epoch part of this bus's ids.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Events kept for replay.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Numbers `event`, keeps it in the ring (dropping the oldest beyond the capacity) and wakes the readers.
    /// `is_remote` says whether untrusted peers may see it (the process was registered remotely). Answers the id.
    pub fn publish(&self, mut event: Event, is_remote: bool) -> String {
        let mut ring = self.ring.lock().expect("event ring");
        let seq = ring.next_seq;
        ring.next_seq += 1;
        event.id = self.id_of(seq);
        let frame = render(&event, true);
        let stored = Stored { seq, process_id: event.process_id().map(str::to_owned), is_remote, frame };
        if ring.events.len() >= self.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(stored);
        drop(ring);
        self.latest.send_replace(seq);
        tracing::trace!(id = %event.id, kind = event.kind.name(), "event");
        event.id
    }

    /// Ends every stream reading this bus (each gets a final `cut` event) and refuses new ones (the monitor is
    /// shutting down). Events published afterwards are still numbered and kept.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.latest.send_modify(|_| {});
    }

    /// Whether [`EventBus::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// The id of sequence number `seq`.
    pub(crate) fn id_of(&self, seq: u64) -> String {
        format!("{}-{seq}", self.epoch)
    }

    /// The sequence number of the newest event (0 before the first).
    pub(crate) fn latest_seq(&self) -> u64 {
        *self.latest.borrow()
    }

    /// Readers waiting on this bus now (one per open event stream).
    pub fn latest_subscribers(&self) -> usize {
        self.latest.receiver_count()
    }

    /// Wakes on every publish.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Up to `max` events after `cursor`.
    pub(crate) fn after(&self, cursor: u64, max: usize) -> Fetch {
        let ring = self.ring.lock().expect("event ring");
        let first_seq = ring.events.front().map(|it| it.seq);
        match first_seq {
            Some(first) if cursor + 1 < first => Fetch::Behind,
            Some(first) => {
                let skip = usize::try_from(cursor + 1 - first).unwrap_or(usize::MAX);
                Fetch::Events(ring.events.iter().skip(skip).take(max).cloned().collect())
            }
            // Nothing held: behind only if events were published (and dropped) after the cursor.
            None if cursor + 1 < ring.next_seq => Fetch::Behind,
            None => Fetch::Events(Vec::new()),
        }
    }

    /// Where a stream starts: the sequence number after which to send, and the gap to report first (when the
    /// `Last-Event-ID` is of another monitor run or older than the ring). Without an id, only new events are sent.
    pub(crate) fn resume_point(&self, last_event_id: Option<&str>) -> (u64, Option<Event>) {
        let latest = self.latest_seq();
        let Some(last) = last_event_id.map(str::trim).filter(|it| !it.is_empty()) else {
            return (latest, None);
        };
        let first_held = {
            let ring = self.ring.lock().expect("event ring");
            ring.events.front().map(|it| it.seq).unwrap_or(ring.next_seq)
        };
        let gap = |first_held: u64| {
            let first_available_id = (first_held <= latest).then(|| self.id_of(first_held));
            Event::now(pm_core::EventKind::Gap { last_event_id: last.to_owned(), first_available_id })
        };
        let parsed =
            last.split_once('-').and_then(|(epoch, seq)| Some((epoch.parse::<u64>().ok()?, seq.parse::<u64>().ok()?)));
        match parsed {
            Some((epoch, seq)) if epoch == self.epoch => {
                if seq + 1 < first_held {
                    (first_held - 1, Some(gap(first_held)))
                } else {
                    (seq.min(latest), None)
                }
            }
            // Another run (or not an id of ours): everything since is unknown; replay what is held.
            _ => (first_held - 1, Some(gap(first_held))),
        }
    }
}

/// The SSE frame of an event: with its `id:` line when `with_id` (synthetic events such as `gap` and `cut` have none,
/// so they do not move the client's `Last-Event-ID`).
pub(crate) fn render(event: &Event, with_id: bool) -> Bytes {
    Bytes::from(frame_text(event, with_id))
}

/// The text of [`render`]'s frame, allocated at its exact length.
fn frame_text(event: &Event, with_id: bool) -> String {
    let json = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned());
    let with_id = with_id && !event.id.is_empty();
    // Exactly the frame's length: the ring keeps 1,000 or more frames for the monitor's life, and a frame whose
    // length is its capacity becomes `Bytes` without a further allocation (issue 19, memory).
    let id_len = if with_id { "id: \n".len() + event.id.len() } else { 0 };
    let mut frame =
        String::with_capacity(id_len + "event: ".len() + event.kind.name().len() + "\ndata: ".len() + json.len() + 2);
    if with_id {
        frame.push_str("id: ");
        frame.push_str(&event.id);
        frame.push('\n');
    }
    frame.push_str("event: ");
    frame.push_str(event.kind.name());
    frame.push_str("\ndata: ");
    frame.push_str(&json);
    frame.push_str("\n\n");
    frame
}

#[cfg(test)]
mod tests {
    use pm_core::EventKind;

    use super::*;

    fn registered(id: &str) -> Event {
        Event::now(EventKind::Registered { process_id: id.to_owned() })
    }

    /// The ring keeps its frames for the monitor's life: each is allocated at its exact length (it had 64 B of
    /// slack, and `Bytes` made of a `Vec` with slack allocates a further 24 B).
    #[test]
    fn frames_have_no_slack() {
        let mut event = registered("web");
        for with_id in [false, true] {
            let text = frame_text(&event, with_id);
            assert_eq!(text.len(), text.capacity(), "{text:?}");
            assert_eq!(text.starts_with("id: "), with_id, "{text:?}");
            event.id = "1-7".to_owned();
        }
        let text = frame_text(&event, true);
        assert!(text.starts_with("id: 1-7\nevent: registered\ndata: {"), "{text:?}");
        assert!(text.ends_with("}\n\n"), "{text:?}");
    }

    fn seqs(fetch: Fetch) -> Vec<u64> {
        match fetch {
            Fetch::Events(events) => events.iter().map(|it| it.seq).collect(),
            Fetch::Behind => panic!("behind"),
        }
    }

    #[test]
    fn ring_keeps_the_newest_and_reports_readers_behind_it() {
        let bus = EventBus::new(10);
        assert_eq!(bus.capacity(), 1000);
        for n in 0..1500 {
            bus.publish(registered(&format!("p{n}")), false);
        }
        assert_eq!(bus.latest_seq(), 1500);
        assert_eq!(seqs(bus.after(1497, 10)), [1498, 1499, 1500]);
        assert_eq!(seqs(bus.after(500, 2)), [501, 502]);
        assert!(matches!(bus.after(499, 10), Fetch::Behind));
        assert!(seqs(bus.after(1500, 10)).is_empty());
    }

    #[test]
    fn resume_points() {
        let bus = EventBus::new(1000);
        assert_eq!(bus.resume_point(None).0, 0);
        for n in 0..1200 {
            bus.publish(registered(&format!("p{n}")), false);
        }
        let id = |seq: u64| format!("{}-{seq}", bus.epoch());
        assert!(matches!(bus.resume_point(None), (1200, None)));
        assert!(matches!(bus.resume_point(Some(&id(1100))), (1100, None)));
        assert!(matches!(bus.resume_point(Some(&id(200))), (200, None)));
        let (cursor, gap) = bus.resume_point(Some(&id(199)));
        assert_eq!(cursor, 200);
        let Some(Event { kind: EventKind::Gap { first_available_id, .. }, .. }) = gap else { panic!("no gap") };
        assert_eq!(first_available_id, Some(id(201)));
        // An id of an earlier run replays what is held, after a gap.
        let (cursor, gap) = bus.resume_point(Some("12-5"));
        assert_eq!((cursor, gap.is_some()), (200, true));
        let (cursor, gap) = bus.resume_point(Some("garbage"));
        assert_eq!((cursor, gap.is_some()), (200, true));
    }

    #[test]
    fn frames_are_sse() {
        let bus = EventBus::new(1000);
        bus.publish(registered("api"), true);
        let Fetch::Events(events) = bus.after(0, 1) else { panic!() };
        let text = String::from_utf8(events[0].frame.to_vec()).unwrap();
        let prefix = format!("id: {}-1\nevent: registered\ndata: {{\"id\":\"{}-1\",", bus.epoch(), bus.epoch());
        assert!(text.starts_with(&prefix), "{text}");
        assert!(text.ends_with("\"type\":\"registered\",\"processId\":\"api\"}\n\n"), "{text}");
        assert_eq!((events[0].process_id.as_deref(), events[0].is_remote), (Some("api"), true));
    }
}
