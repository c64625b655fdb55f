//! Streams of the remote client: the monitor's events (`GET /events`, reconnecting with `Last-Event-ID`) and a
//! process's log (`GET /processes/{id}/logs`).
//!
//! Both are [`futures_core::Stream`]s, so they work with any stream combinator library, and have an inherent
//! `next()` for callers without one. The trait comes from `futures-core`, which hyper already depends on: no crate
//! is added to the build. Each stream is driven by a task of its own that feeds a small bounded channel, so a
//! consumer that stops polling holds at most that much; dropping the stream ends the task and the connection.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pm_core::{Event, EventKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::remote::{percent_encode, process_path, status_error};
use crate::{Error, RemoteProcessMonitorClient};

/// Items buffered between a stream's task and its consumer.
const BUFFERED: usize = 64;

/// What [`RemoteProcessMonitorClient::events`] streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsOptions {
    /// Only the events of this process.
    pub process: Option<String>,
    /// Start after this event id (replayed from the monitor's ring); only new events without it.
    pub last_event_id: Option<String>,
    /// Pause before reconnecting after the connection ended or failed (default 1 s).
    pub reconnect_delay: Duration,
    /// Connection attempts in a row that may fail (refused, timed out, answered 503) before the stream yields the
    /// error and ends (default 10); a stream that was open starts the count afresh when it ends. An answer such as
    /// 403 or 404 ends the stream at once.
    pub max_failures: u32,
}

impl Default for EventsOptions {
    fn default() -> Self {
        EventsOptions { process: None, last_event_id: None, reconnect_delay: Duration::from_secs(1), max_failures: 10 }
    }
}

/// What [`RemoteProcessMonitorClient::logs`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsOptions {
    /// `stderr.log` instead of `stdout.log`.
    pub stderr: bool,
    /// Lines from the end to start with (the monitor's default, 100, when `None`).
    pub tail: Option<usize>,
    /// Keep streaming new lines, into later run folders after restarts.
    pub follow: bool,
    /// A run folder (`YYYYMMDD_HHMMSS[_N]`) instead of the newest.
    pub run: Option<String>,
    /// While following: pause before reconnecting after the connection ended or failed (default 1 s).
    pub reconnect_delay: Duration,
    /// While following: reconnection attempts in a row that may fail (refused, timed out, answered 503) before
    /// the stream yields the error and ends (default 10); 0 never reconnects. An answer such as 403 or 404 ends
    /// the stream at once.
    pub max_failures: u32,
}

impl Default for LogsOptions {
    fn default() -> Self {
        LogsOptions {
            stderr: false,
            tail: None,
            follow: false,
            run: None,
            reconnect_delay: Duration::from_secs(1),
            max_failures: 10,
        }
    }
}

/// Lines asked for again when a followed log reconnects, to find where the stream stood.
const RESUME_TAIL_LINES: usize = 1000;
/// The last lines a followed log keeps to recognise where it stood (and at most this many bytes of them).
const RESUME_WINDOW_LINES: usize = 50;
const RESUME_WINDOW_BYTES: usize = 64 * 1024;

/// The monitor's events, as they happen. Never ends on its own while the monitor can be reached: when the
/// connection ends (the monitor cut a slow reader, restarted, or the network failed) it reconnects with the id of
/// the last event seen, so nothing is lost or repeated; events the monitor no longer held come as one
/// [`EventKind::Gap`] event.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<Result<Event, Error>>,
    task: JoinHandle<()>,
}

/// A process's log as chunks of whole lines.
#[derive(Debug)]
pub struct LogStream {
    rx: mpsc::Receiver<Result<Vec<u8>, Error>>,
    task: JoinHandle<()>,
}

impl EventStream {
    /// The next event; `None` once the stream ended (after its last error).
    pub async fn next(&mut self) -> Option<Result<Event, Error>> {
        self.rx.recv().await
    }
}

impl LogStream {
    /// The next chunk of lines; `None` at the end of the log (never, while following).
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, Error>> {
        self.rx.recv().await
    }
}

impl futures_core::Stream for EventStream {
    type Item = Result<Event, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

impl futures_core::Stream for LogStream {
    type Item = Result<Vec<u8>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Drop for LogStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RemoteProcessMonitorClient {
    /// Streams the monitor's events (`GET /events`). Must be called inside a tokio runtime.
    ///
    /// [`Error::Invalid`] at once for an invalid process id; connection failures are retried as
    /// [`EventsOptions`] says.
    pub fn events(&self, options: EventsOptions) -> Result<EventStream, Error> {
        let mut path = "/events".to_owned();
        if let Some(id) = &options.process {
            pm_core::validate_process_id(id)?;
            path = format!("/events?process={}", percent_encode(id));
        }
        let url = format!("{}{path}", self.base_url());
        let (tx, rx) = mpsc::channel(BUFFERED);
        let client = self.clone();
        let task = tokio::spawn(async move { client.drive_events(url, options, tx).await });
        Ok(EventStream { rx, task })
    }

    async fn drive_events(&self, url: String, options: EventsOptions, tx: mpsc::Sender<Result<Event, Error>>) {
        let mut last_event_id = options.last_event_id.clone();
        let mut failures = 0u32;
        loop {
            let mut headers: Vec<(&str, String)> =
                last_event_id.iter().map(|id| ("last-event-id", id.clone())).collect();
            headers.extend(self.authorization());
            let failure = match self.open_stream(&url, &headers).await {
                Err(err) => Error::Transport { url: url.clone(), message: err.to_string() },
                Ok(stream) if stream.status != 200 => {
                    let status = stream.status;
                    let body = stream.text(self.timeout()).await;
                    let err = status_error(status, body.as_bytes(), options.process.as_deref());
                    if status != 503 {
                        let _ = tx.send(Err(err)).await;
                        return;
                    }
                    err
                }
                Ok(mut stream) => {
                    // The monitor answered: whatever ends this connection later starts a new count.
                    failures = 0;
                    let mut parser = pm_http::SseParser::new();
                    let end = loop {
                        let chunk = match stream.chunk().await {
                            Ok(Some(chunk)) => chunk,
                            Ok(None) => {
                                break Error::Transport { url: url.clone(), message: "stream ended".to_owned() }
                            }
                            Err(err) => break Error::Transport { url: url.clone(), message: err.to_string() },
                        };
                        for sse in parser.push(&chunk) {
                            let event: Event = match serde_json::from_str(&sse.data) {
                                Ok(event) => event,
                                Err(err) => {
                                    tracing::debug!(kind = %sse.event, "skipping an event this client does not know: {err}");
                                    if !sse.id.is_empty() {
                                        last_event_id = Some(sse.id);
                                    }
                                    continue;
                                }
                            };
                            if !sse.id.is_empty() {
                                last_event_id = Some(sse.id);
                            }
                            let cut = matches!(event.kind, EventKind::Cut { .. });
                            if tx.send(Ok(event)).await.is_err() {
                                return;
                            }
                            if cut {
                                tracing::debug!(%url, "the monitor cut the stream; reconnecting");
                            }
                        }
                    };
                    end
                }
            };
            failures += 1;
            if failures > options.max_failures {
                let _ = tx.send(Err(failure)).await;
                return;
            }
            tracing::debug!(%url, failures, "event stream: {failure}; reconnecting");
            tokio::select! {
                () = tokio::time::sleep(options.reconnect_delay) => {}
                () = tx.closed() => return,
            }
        }
    }

    /// Reads a process's log (`GET /processes/{id}/logs`); with `follow` it goes on as lines are written, into the
    /// next run folder after a restart and through rotations. Must be called inside a tokio runtime.
    ///
    /// The stream yields whole lines (a last line without its newline comes at the end of a one-off read). An
    /// answer other than 200 to the first request is the error. A followed log reconnects by itself when the
    /// connection ends or fails (as [`LogsOptions`] says): it asks for the newest run's last 1,000 lines again and
    /// skips them up to and including the last lines it had already yielded, so a short interruption neither
    /// repeats nor loses a line. What it cannot line up (the process restarted meanwhile, more than 1,000 lines
    /// were written, or the lines it had seen no longer exist) it yields from that tail on, without repeating,
    /// and says so in a warning of the `tracing` log. A one-off read does not reconnect.
    pub async fn logs(&self, id: &str, options: LogsOptions) -> Result<LogStream, Error> {
        let url = self.logs_url(id, &options, options.tail, options.run.as_deref())?;
        let stream = self
            .open_stream(&url, &Vec::from_iter(self.authorization()))
            .await
            .map_err(|err| Error::Transport { url: url.clone(), message: err.to_string() })?;
        if stream.status != 200 {
            let status = stream.status;
            let body = stream.text(self.timeout()).await;
            return Err(status_error(status, body.as_bytes(), Some(id)));
        }
        let (tx, rx) = mpsc::channel(BUFFERED);
        let client = self.clone();
        let id = id.to_owned();
        let task = tokio::spawn(async move { client.drive_logs(id, url, options, stream, tx).await });
        Ok(LogStream { rx, task })
    }

    fn logs_url(
        &self,
        id: &str,
        options: &LogsOptions,
        tail: Option<usize>,
        run: Option<&str>,
    ) -> Result<String, Error> {
        let mut query = vec![format!("stream={}", if options.stderr { "stderr" } else { "stdout" })];
        if let Some(tail) = tail {
            query.push(format!("tail={tail}"));
        }
        if options.follow {
            query.push("follow=true".to_owned());
        }
        if let Some(run) = run {
            query.push(format!("run={}", percent_encode(run)));
        }
        let path = process_path(id, &format!("/logs?{}", query.join("&")))?;
        Ok(format!("{}{path}", self.base_url()))
    }

    async fn drive_logs(
        &self,
        id: String,
        mut url: String,
        options: LogsOptions,
        first: pm_http::HttpStream,
        tx: mpsc::Sender<Result<Vec<u8>, Error>>,
    ) {
        let mut lines = LineTracker::default();
        let mut stream = Some(first);
        let mut failures = 0u32;
        loop {
            let failure = match stream.take() {
                Some(answer) => match read_logs_answer(answer, &url, &mut lines, &options, &tx).await {
                    Some(failure) => failure,
                    None => return,
                },
                None => match self.reopen_logs(&id, &options, &mut url, &tx).await {
                    Reopened::Stream(answer) => {
                        failures = 0;
                        stream = Some(answer);
                        continue;
                    }
                    Reopened::Failed(failure) => failure,
                    Reopened::Given => return,
                },
            };
            failures += 1;
            if failures > options.max_failures {
                let _ = tx.send(Err(failure)).await;
                return;
            }
            tracing::debug!(%url, failures, "log stream: {failure}; reconnecting");
            tokio::select! {
                () = tokio::time::sleep(options.reconnect_delay) => {}
                () = tx.closed() => return,
            }
        }
    }

    /// Reconnects a followed logs stream: the newest run's tail (`url` becomes its address), to be lined up with
    /// what was yielded.
    async fn reopen_logs(
        &self,
        id: &str,
        options: &LogsOptions,
        url: &mut String,
        tx: &mpsc::Sender<Result<Vec<u8>, Error>>,
    ) -> Reopened {
        *url = match self.logs_url(id, options, Some(RESUME_TAIL_LINES), None) {
            Ok(url) => url,
            Err(err) => {
                let _ = tx.send(Err(err)).await;
                return Reopened::Given;
            }
        };
        match self.open_stream(url, &Vec::from_iter(self.authorization())).await {
            Err(err) => Reopened::Failed(Error::Transport { url: url.clone(), message: err.to_string() }),
            Ok(answer) if answer.status == 200 => Reopened::Stream(answer),
            Ok(answer) => {
                let status = answer.status;
                let body = answer.text(self.timeout()).await;
                let err = status_error(status, body.as_bytes(), Some(id));
                if status != 503 {
                    let _ = tx.send(Err(err)).await;
                    return Reopened::Given;
                }
                Reopened::Failed(err)
            }
        }
    }

    /// The kept run folders of a process, oldest first (`GET /processes/{id}/runs`): each with its name (`run`) and
    /// the sizes of its logs (`stdoutBytes`, `stderrBytes`).
    pub async fn runs(&self, id: &str) -> Result<Vec<serde_json::Value>, Error> {
        #[derive(serde::Deserialize)]
        struct Runs {
            runs: Vec<serde_json::Value>,
        }
        let path = process_path(id, "/runs")?;
        let res: Runs = self.get_json(&path, Some(id)).await?;
        Ok(res.runs)
    }
}

/// Longest piece without a newline a log stream holds back; a longer one is yielded as it is (the monitor sends
/// such lines in pieces too).
const MAX_PARTIAL: usize = 64 * 1024;

/// What a reconnection of a followed logs stream came to.
enum Reopened {
    /// A new answer to read.
    Stream(pm_http::HttpStream),
    /// A failure that counts towards `max_failures`.
    Failed(Error),
    /// A final error, already given to the reader: the stream ends.
    Given,
}

/// Reads one answer of a logs stream into `tx`, lined up with what was yielded. Answers the failure to count
/// when a followed stream must reconnect, `None` when the stream is over (a one-off read ended, or the reader
/// went away).
async fn read_logs_answer(
    mut answer: pm_http::HttpStream,
    url: &str,
    lines: &mut LineTracker,
    options: &LogsOptions,
    tx: &mpsc::Sender<Result<Vec<u8>, Error>>,
) -> Option<Error> {
    // What a reconnection must skip: the tail up to the lines already yielded.
    let tail_bytes = answer.headers.get("x-log-tail-bytes").and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    let mut resume = lines.resume(tail_bytes);
    // `None` at the body's end, else how it failed.
    let failed = loop {
        match answer.chunk().await {
            Ok(Some(chunk)) => {
                let out = lines.push(&chunk, &mut resume);
                if !out.is_empty() && tx.send(Ok(out)).await.is_err() {
                    return None;
                }
            }
            Ok(None) => break None,
            Err(err) => break Some(Error::Transport { url: url.to_owned(), message: err.to_string() }),
        }
    };
    if !options.follow {
        // A one-off read: its end is the end of the log (a failure is the error).
        let last = match failed {
            None => Ok(lines.finish()),
            Some(err) => Err(err),
        };
        if !last.as_ref().is_ok_and(Vec::is_empty) {
            let _ = tx.send(last).await;
        }
        return None;
    }
    // A tail cut short is dropped whole: the next connection lines up again from what was yielded.
    drop(resume);
    Some(failed.unwrap_or_else(|| Error::Transport { url: url.to_owned(), message: "stream ended".to_owned() }))
}

/// The lines a log stream yielded: it yields whole lines only, and keeps the last few to line a reconnection up.
#[derive(Debug, Default)]
struct LineTracker {
    /// Bytes after the last newline, not yielded yet.
    partial: Vec<u8>,
    /// The last lines yielded (each with its newline), oldest first.
    recent: std::collections::VecDeque<Vec<u8>>,
    recent_bytes: usize,
}

/// A reconnection's tail being lined up: held back until all of it came, then skipped up to the lines already
/// yielded.
#[derive(Debug)]
struct Resume {
    /// Bytes of the tail still to come (`X-Log-Tail-Bytes`: the whole lines the monitor had when it answered).
    tail_left: u64,
    /// The tail's lines so far.
    held: Vec<Vec<u8>>,
}

impl LineTracker {
    /// How a new answer is lined up: `None` when nothing was yielded yet, or when the monitor does not say where
    /// its tail ends (an older monitor: its answer is taken whole).
    fn resume(&mut self, tail_bytes: Option<u64>) -> Option<Resume> {
        if self.recent.is_empty() {
            return None;
        }
        // A partial line of the old connection is dropped: the new answer has it whole.
        self.partial.clear();
        Some(Resume { tail_left: tail_bytes?, held: Vec::new() })
    }

    /// Takes a chunk of the answer; answers the whole lines to yield now.
    fn push(&mut self, chunk: &[u8], resume: &mut Option<Resume>) -> Vec<u8> {
        self.partial.extend_from_slice(chunk);
        let mut lines = Vec::new();
        let mut start = 0;
        for (at, byte) in self.partial.iter().enumerate() {
            if *byte == b'\n' {
                lines.push(self.partial[start..=at].to_vec());
                start = at + 1;
            }
        }
        self.partial.drain(..start);
        if self.partial.len() > MAX_PARTIAL {
            lines.push(std::mem::take(&mut self.partial));
        }
        let Some(pending) = resume.as_mut() else { return self.yield_lines(lines) };
        pending.tail_left = pending.tail_left.saturating_sub(chunk.len() as u64);
        pending.held.extend(lines);
        if pending.tail_left > 0 {
            return Vec::new();
        }
        let held = std::mem::take(&mut pending.held);
        *resume = None;
        let skip = match line_up(&held, &self.recent) {
            Some(skip) => skip,
            None => {
                tracing::warn!(
                    "log stream: the lines seen before the reconnection are not in the log's tail (the process \
                     restarted, or wrote more than {RESUME_TAIL_LINES} lines meanwhile); lines may be missing"
                );
                0
            }
        };
        self.yield_lines(held.into_iter().skip(skip).collect())
    }

    /// Records `lines` as yielded and joins them.
    fn yield_lines(&mut self, lines: Vec<Vec<u8>>) -> Vec<u8> {
        let mut out = Vec::with_capacity(lines.iter().map(Vec::len).sum());
        for line in lines {
            out.extend_from_slice(&line);
            self.recent_bytes += line.len();
            self.recent.push_back(line);
            while self.recent.len() > RESUME_WINDOW_LINES
                || (self.recent.len() > 1 && self.recent_bytes > RESUME_WINDOW_BYTES)
            {
                let dropped = self.recent.pop_front().expect("not empty");
                self.recent_bytes -= dropped.len();
            }
        }
        out
    }

    /// The rest at the end of a one-off read (a last line without its newline).
    fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.partial)
    }
}

/// How many lines of `tail` were already yielded: the end of the last place where `tail` holds the lines of
/// `recent` (all of them, or as many as precede that place when it is near the tail's start). `None` when there is
/// no such place.
fn line_up(tail: &[Vec<u8>], recent: &std::collections::VecDeque<Vec<u8>>) -> Option<usize> {
    let m = recent.len();
    if m == 0 {
        return Some(0);
    }
    (1..=tail.len()).rev().find(|&p| {
        let k = m.min(p);
        tail[p - k..p].iter().zip(recent.iter().skip(m - k)).all(|(a, b)| a == b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<Vec<u8>> {
        text.split_inclusive('\n').map(|line| line.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_reconnection_is_lined_up_with_what_was_yielded() {
        let recent: std::collections::VecDeque<Vec<u8>> = lines("b\nc\n").into();
        assert_eq!(line_up(&lines("a\nb\nc\nd\n"), &recent), Some(3));
        assert_eq!(line_up(&lines("a\nb\nc\n"), &recent), Some(3));
        // The last place wins: nothing is yielded twice.
        assert_eq!(line_up(&lines("b\nc\nb\nc\ne\n"), &recent), Some(4));
        // Near the tail's start (the head rotated away) a shorter match counts.
        assert_eq!(line_up(&lines("c\nd\n"), &recent), Some(1));
        assert_eq!(line_up(&lines("x\ny\n"), &recent), None);
        assert_eq!(line_up(&[], &recent), None);
    }

    #[test]
    fn whole_lines_only_and_the_tail_held_until_complete() {
        let mut tracker = LineTracker::default();
        let mut none = None;
        assert_eq!(tracker.push(b"one\ntw", &mut none), b"one\n");
        assert_eq!(tracker.push(b"o\n", &mut none), b"two\n");
        let mut resume = tracker.resume(Some(12));
        assert!(resume.is_some());
        // "one\ntwo\n" (8 bytes) and "new\n" (4) make the tail: held until all 12 came, then the new line only.
        assert_eq!(tracker.push(b"one\ntwo", &mut resume), b"");
        assert_eq!(tracker.push(b"\nnew\n", &mut resume), b"new\n");
        assert!(resume.is_none());
        assert_eq!(tracker.push(b"later\n", &mut resume), b"later\n");
        // Without the header (an older monitor) the answer is taken whole.
        assert!(tracker.resume(None).is_none());
    }
}
