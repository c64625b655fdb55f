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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogsOptions {
    /// `stderr.log` instead of `stdout.log`.
    pub stderr: bool,
    /// Lines from the end to start with (the monitor's default, 100, when `None`).
    pub tail: Option<usize>,
    /// Keep streaming new lines, into later run folders after restarts.
    pub follow: bool,
    /// A run folder (`YYYYMMDD_HHMMSS[_N]`) instead of the newest.
    pub run: Option<String>,
}

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
            let failure = match self.http().get_stream(&url, &headers, self.timeout()).await {
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
    /// The stream does not reconnect: a log has no event ids to resume from, so it ends with the error when the
    /// connection fails (start again with a `tail` to pick up).
    pub async fn logs(&self, id: &str, options: LogsOptions) -> Result<LogStream, Error> {
        let mut query = vec![format!("stream={}", if options.stderr { "stderr" } else { "stdout" })];
        if let Some(tail) = options.tail {
            query.push(format!("tail={tail}"));
        }
        if options.follow {
            query.push("follow=true".to_owned());
        }
        if let Some(run) = &options.run {
            query.push(format!("run={}", percent_encode(run)));
        }
        let path = process_path(id, &format!("/logs?{}", query.join("&")))?;
        let url = format!("{}{path}", self.base_url());
        let stream = self
            .http()
            .get_stream(&url, &Vec::from_iter(self.authorization()), self.timeout())
            .await
            .map_err(|err| Error::Transport { url: url.clone(), message: err.to_string() })?;
        if stream.status != 200 {
            let status = stream.status;
            let body = stream.text(self.timeout()).await;
            return Err(status_error(status, body.as_bytes(), Some(id)));
        }
        let (tx, rx) = mpsc::channel(BUFFERED);
        let task = tokio::spawn(async move {
            let mut stream = stream;
            loop {
                match stream.chunk().await {
                    Ok(Some(chunk)) => {
                        if tx.send(Ok(chunk.to_vec())).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(err) => {
                        let _ = tx.send(Err(Error::Transport { url, message: err.to_string() })).await;
                        return;
                    }
                }
            }
        });
        Ok(LogStream { rx, task })
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
