//! The client side of streams: a response read chunk by chunk ([`HttpStream`]) and the Server-Sent Events
//! framing ([`SseParser`]).

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, ACCEPT, HOST};
use hyper::{HeaderMap, Method, Request};

use crate::client::{connect_targets, parse_url};
use crate::error::{chain, Error};
use crate::HttpClient;

/// A response whose body is read as it arrives.
#[derive(Debug)]
pub struct HttpStream {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    url: String,
    body: Incoming,
}

impl HttpStream {
    /// The next chunk of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Ok(Some(data));
                        }
                    }
                }
                Some(Err(err)) => return Err(Error::Body { url: self.url.clone(), reason: chain(&err) }),
            }
        }
    }

    /// Reads the whole (small) body of an error answer, up to 64 KiB, within `timeout`.
    pub async fn text(mut self, timeout: Duration) -> String {
        let mut res = Vec::new();
        let _ = tokio::time::timeout(timeout, async {
            while let Ok(Some(chunk)) = self.chunk().await {
                res.extend_from_slice(&chunk);
                if res.len() > 64 * 1024 {
                    break;
                }
            }
        })
        .await;
        String::from_utf8_lossy(&res).into_owned()
    }
}

impl HttpClient {
    /// Sends `GET url` with the extra `headers` and answers once the response head arrived (within `timeout`); the
    /// body is then read with [`HttpStream::chunk`], as slowly as the caller likes.
    pub async fn get_stream(
        &self,
        url: &str,
        headers: &[(&str, String)],
        timeout: Duration,
    ) -> Result<HttpStream, Error> {
        let uri = parse_url(url)?;
        let targets = connect_targets(&uri, url)?;
        let exchange = async {
            let mut targets = targets.into_iter().peekable();
            loop {
                let Some(target) = targets.next() else {
                    return Err(Error::Request { url: url.to_owned(), reason: "no address to connect to".to_owned() });
                };
                let mut builder =
                    Request::builder().method(Method::GET).uri(target).header(ACCEPT, HeaderValue::from_static("*/*"));
                if let Some(authority) = uri.authority() {
                    builder = builder.header(HOST, authority.as_str());
                }
                for (name, value) in headers {
                    let name = HeaderName::from_bytes(name.as_bytes())
                        .map_err(|err| Error::InvalidUrl { url: url.to_owned(), reason: err.to_string() })?;
                    let value = HeaderValue::from_str(value)
                        .map_err(|err| Error::InvalidUrl { url: url.to_owned(), reason: err.to_string() })?;
                    builder = builder.header(name, value);
                }
                let request = builder
                    .body(Full::new(Bytes::new()))
                    .map_err(|err| Error::InvalidUrl { url: url.to_owned(), reason: err.to_string() })?;
                match self.inner.request(request).await {
                    Ok(response) => {
                        let (parts, body) = response.into_parts();
                        return Ok(HttpStream {
                            status: parts.status.as_u16(),
                            headers: parts.headers,
                            url: url.to_owned(),
                            body,
                        });
                    }
                    Err(err) if err.is_connect() && targets.peek().is_some() => {}
                    Err(err) => return Err(Error::Request { url: url.to_owned(), reason: chain(&err) }),
                }
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(res) => res,
            Err(_) => Err(Error::Timeout { url: url.to_owned(), timeout }),
        }
    }
}

/// Sends `GET path` (a path and query, such as `/events?process=api`) over the unix socket `socket` (the
/// monitor's local API, [`crate::spawn_unix_api`]) with the extra `headers`, and answers once the response head
/// arrived (within `timeout`), as [`HttpClient::get_stream`] does over TCP.
pub async fn get_stream_unix(
    socket: &std::path::Path,
    path: &str,
    headers: &[(&str, String)],
    timeout: Duration,
) -> Result<HttpStream, Error> {
    let url = format!("unix:{}{path}", socket.display());
    let request_error = |reason: String| Error::Request { url: url.clone(), reason };
    let exchange = async {
        let stream = crate::unix::connect_unix(socket).map_err(|err| request_error(err.to_string()))?;
        stream.set_nonblocking(true).map_err(|err| request_error(err.to_string()))?;
        let stream = tokio::net::UnixStream::from_std(stream).map_err(|err| request_error(err.to_string()))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|err| request_error(chain(&err)))?;
        // The connection is driven by a task of its own until the response body ends or is dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(HOST, HeaderValue::from_static("localhost"))
            .header(ACCEPT, HeaderValue::from_static("*/*"));
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|err| Error::InvalidUrl { url: url.clone(), reason: err.to_string() })?;
            let value = HeaderValue::from_str(value)
                .map_err(|err| Error::InvalidUrl { url: url.clone(), reason: err.to_string() })?;
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Full::new(Bytes::new()))
            .map_err(|err| Error::InvalidUrl { url: url.clone(), reason: err.to_string() })?;
        let response = sender.send_request(request).await.map_err(|err| request_error(chain(&err)))?;
        let (parts, body) = response.into_parts();
        Ok(HttpStream { status: parts.status.as_u16(), headers: parts.headers, url: url.clone(), body })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(res) => res,
        Err(_) => Err(Error::Timeout { url: url.clone(), timeout }),
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `id:` field (empty when the event had none).
    pub id: String,
    /// The `event:` field (`message` when absent).
    pub event: String,
    /// The `data:` lines, joined with newlines.
    pub data: String,
}

/// Splits a Server-Sent Events stream into events, chunk by chunk (comments and `retry:` are skipped).
///
/// A line longer than 1 MiB is an error of the stream: the parser drops what it holds and starts over at the next
/// line, so a hostile server cannot make it buffer without bound.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

const MAX_SSE_LINE: usize = 1024 * 1024;

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feeds a chunk; answers the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut res = Vec::new();
        for byte in chunk {
            if *byte != b'\n' {
                if self.line.len() < MAX_SSE_LINE {
                    self.line.push(*byte);
                }
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.is_empty() {
                if self.has_data {
                    let mut event = std::mem::take(&mut self.current);
                    if event.event.is_empty() {
                        event.event = "message".to_owned();
                    }
                    res.push(event);
                }
                self.current = SseEvent::default();
                self.has_data = false;
                continue;
            }
            let line = String::from_utf8_lossy(&line);
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.current.id = value.to_owned(),
                "event" => self.current.event = value.to_owned(),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_anywhere() {
        let text = ": connected\nretry: 1000\n\nid: 1-1\nevent: state\ndata: {\"a\":1}\n\n: heartbeat\n\nevent: gap\r\ndata: x\r\ndata: y\r\n\r\n";
        for split in 0..text.len() {
            let mut parser = SseParser::new();
            let mut events = parser.push(&text.as_bytes()[..split]);
            events.extend(parser.push(&text.as_bytes()[split..]));
            assert_eq!(
                events,
                [
                    SseEvent { id: "1-1".to_owned(), event: "state".to_owned(), data: "{\"a\":1}".to_owned() },
                    SseEvent { id: String::new(), event: "gap".to_owned(), data: "x\ny".to_owned() },
                ],
                "split at {split}"
            );
        }
    }
}
