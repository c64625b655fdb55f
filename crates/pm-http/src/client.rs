//! A small HTTP/1 client for the monitor's own calls: aliveness checks, the partner's status, the remote client.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, HOST};
use hyper::http::uri::Authority;
use hyper::{HeaderMap, Method, Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::{chain, Error};

/// Largest response body read.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Largest part of an aliveness check's response body read, for every check (the rest is never read).
pub const MAX_CHECK_BODY_BYTES: usize = 64 * 1024;
/// Time allowed to open one TCP connection (split across the resolved addresses).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pooled connections are dropped after this long unused, before servers (5 s header timeout here) close them.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// An HTTP/1 client over hyper-util's pooled `legacy::Client`. Cheap to clone (clones share the pool); build one
/// and clone it rather than building one per call.
///
/// Sockets get `TCP_NODELAY`; a host name is resolved and every address it resolves to is tried in turn;
/// `localhost` is tried as `127.0.0.1` and then `::1` whatever the hosts file says, so `http://localhost:port/`
/// reaches a server listening on either. Only `http://` URLs.
///
/// # Caveats
/// Calls must run inside a tokio runtime.
#[derive(Clone, Debug)]
pub struct HttpClient {
    pub(crate) inner: Client<HttpConnector, Full<Bytes>>,
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body (at most 16 MiB are accepted).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body parsed as JSON, `None` when it is not JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let inner = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        HttpClient { inner }
    }
}

impl HttpClient {
    /// A new client with its own connection pool.
    pub fn new() -> HttpClient {
        HttpClient::default()
    }

    /// Sends one request to the absolute `url` and reads the whole response, all within `timeout`.
    ///
    /// With a `body` the request carries `content-type: application/json`.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<HttpResponse, Error> {
        self.request_capped(method, url, body, timeout, None, &[]).await
    }

    /// [`HttpClient::request`] with extra request headers (`("authorization", "Bearer ...")`); a header name or
    /// value that is not valid HTTP is an [`Error::InvalidUrl`] naming it, without its value.
    pub async fn request_with(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
        headers: &[(&str, &str)],
    ) -> Result<HttpResponse, Error> {
        self.request_capped(method, url, body, timeout, None, headers).await
    }

    /// Like [`HttpClient::request_with`]; with `cap`, at most `cap` bytes of the body are read and the rest is left
    /// unread (the connection is then dropped, not reused); `body` holds what was read.
    async fn request_capped(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
        cap: Option<usize>,
        headers: &[(&str, &str)],
    ) -> Result<HttpResponse, Error> {
        let headers = parse_headers(url, headers)?;
        let uri = parse_url(url)?;
        let targets = connect_targets(&uri, url)?;
        let outgoing = Outgoing {
            url,
            method,
            authority: uri.authority(),
            json: body.is_some(),
            body: Full::new(body.map(Bytes::from).unwrap_or_default()),
            headers,
        };
        let exchange = async {
            let response = self.send_to_first_reachable(&outgoing, targets).await?;
            let (parts, body) = response.into_parts();
            let body = read_body(url, body, cap).await?;
            Ok(HttpResponse { status: parts.status.as_u16(), headers: parts.headers, body })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(res) => res,
            Err(_) => Err(Error::Timeout { url: url.to_owned(), timeout }),
        }
    }

    /// Sends `outgoing` to each of `targets` in turn until one accepts the connection; a failure other than a
    /// refused connection, or one at the last target, is the error.
    async fn send_to_first_reachable(
        &self,
        outgoing: &Outgoing<'_>,
        targets: Vec<Uri>,
    ) -> Result<Response<Incoming>, Error> {
        let url = outgoing.url;
        let mut targets = targets.into_iter().peekable();
        loop {
            let Some(target) = targets.next() else {
                return Err(Error::Request { url: url.to_owned(), reason: "no address to connect to".to_owned() });
            };
            match self.inner.request(outgoing.to(target)?).await {
                Ok(response) => return Ok(response),
                Err(err) if err.is_connect() && targets.peek().is_some() => {
                    tracing::trace!(%url, "connect failed, trying the next address: {}", chain(&err));
                }
                Err(err) => return Err(Error::Request { url: url.to_owned(), reason: chain(&err) }),
            }
        }
    }

    /// `GET url` within `timeout`.
    pub async fn get(&self, url: &str, timeout: Duration) -> Result<HttpResponse, Error> {
        self.request(Method::GET, url, None, timeout).await
    }
}

/// One request as the caller gave it, before it is addressed to a connect target.
struct Outgoing<'a> {
    url: &'a str,
    method: Method,
    /// The `host` header (the URL's authority, whichever address is connected to).
    authority: Option<&'a Authority>,
    /// Whether the body is JSON (the caller gave one).
    json: bool,
    body: Full<Bytes>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Outgoing<'_> {
    /// The request addressed to `target`.
    fn to(&self, target: Uri) -> Result<Request<Full<Bytes>>, Error> {
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(target)
            .header(ACCEPT, HeaderValue::from_static("application/json, */*"));
        if let Some(authority) = self.authority {
            builder = builder.header(HOST, authority.as_str());
        }
        if self.json {
            builder = builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(self.body.clone())
            .map_err(|err| Error::InvalidUrl { url: self.url.to_owned(), reason: err.to_string() })
    }
}

/// The caller's extra headers as sensitive header values; a name or value that is not valid HTTP is an
/// [`Error::InvalidUrl`] naming the header, without its value.
fn parse_headers(url: &str, headers: &[(&str, &str)]) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
    let mut res = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let invalid = || Error::InvalidUrl { url: url.to_owned(), reason: format!("invalid value for header {name}") };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let mut value = HeaderValue::from_str(value).map_err(|_| invalid())?;
        value.set_sensitive(true);
        res.push((name, value));
    }
    Ok(res)
}

/// The response body: with `cap`, its first `cap` bytes (the rest is left unread); without, all of it up to
/// [`MAX_RESPONSE_BYTES`].
async fn read_body(url: &str, body: Incoming, cap: Option<usize>) -> Result<Vec<u8>, Error> {
    if let Some(cap) = cap {
        return read_prefix(url, body, cap).await;
    }
    let body = Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|err| Error::Body { url: url.to_owned(), reason: chain(&*err) })?
        .to_bytes();
    Ok(body.to_vec())
}

/// At most the first `cap` bytes of `body`, reading no further frame once they are in.
async fn read_prefix(url: &str, mut body: Incoming, cap: usize) -> Result<Vec<u8>, Error> {
    let mut read = Vec::new();
    while read.len() < cap {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let take = data.len().min(cap - read.len());
                    read.extend_from_slice(&data[..take]);
                }
            }
            Some(Err(err)) => return Err(Error::Body { url: url.to_owned(), reason: chain(&err) }),
            None => break,
        }
    }
    Ok(read)
}

pub(crate) fn parse_url(url: &str) -> Result<Uri, Error> {
    let invalid = |reason: &str| Error::InvalidUrl { url: url.to_owned(), reason: reason.to_owned() };
    let uri: Uri = url.parse().map_err(|err: hyper::http::uri::InvalidUri| invalid(&err.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid("only absolute http:// URLs are supported"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("the URL names no host"));
    }
    Ok(uri)
}

/// The URIs to try in turn: `localhost` is always loopback (RFC 6761), so it is tried as `127.0.0.1` and then as
/// `[::1]` whatever the resolver says (many hosts files name only one of them); other hosts are resolved by the
/// connector, which tries each resolved address.
pub(crate) fn connect_targets(uri: &Uri, url: &str) -> Result<Vec<Uri>, Error> {
    let host = uri.host().unwrap_or_default();
    if !host.eq_ignore_ascii_case("localhost") {
        return Ok(vec![uri.clone()]);
    }
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |it| it.as_str());
    ["127.0.0.1", "[::1]"]
        .iter()
        .map(|ip| {
            format!("http://{ip}:{port}{path}")
                .parse::<Uri>()
                .map_err(|err| Error::InvalidUrl { url: url.to_owned(), reason: err.to_string() })
        })
        .collect()
}

/// An aliveness check of `url`: passes on a 2xx answer within `timeout`, unless the body is a JSON object saying
/// `"healthy": false` or having a `"status"` other than `"ok"` (compared without regard to case). Connection
/// errors and timeouts fail it.
///
/// At most [`MAX_CHECK_BODY_BYTES`] of the body are read; a longer body is judged on its status (a cut JSON
/// document does not parse, so it counts as a plain 2xx body).
pub async fn check_health(client: &HttpClient, url: &str, timeout: Duration) -> bool {
    match client.request_capped(Method::GET, url, None, timeout, Some(MAX_CHECK_BODY_BYTES), &[]).await {
        Ok(response) if response.is_success() => body_says_healthy(&response.body),
        Ok(response) => {
            tracing::debug!(%url, status = response.status, "aliveness check failed");
            false
        }
        Err(err) => {
            tracing::debug!(%url, "aliveness check failed: {err}");
            false
        }
    }
}

fn body_says_healthy(body: &[u8]) -> bool {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return true;
    };
    if map.get("healthy") == Some(&serde_json::Value::Bool(false)) {
        return false;
    }
    match map.get("status") {
        None => true,
        Some(status) => status.as_str().is_some_and(|status| status.eq_ignore_ascii_case("ok")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_bodies() {
        let check = |body: &str, expected: bool| assert_eq!(body_says_healthy(body.as_bytes()), expected, "{body}");
        check("OK", true);
        check("", true);
        check(r#"{"healthy":true}"#, true);
        check(r#"{"healthy":false}"#, false);
        check(r#"{"status":"ok"}"#, true);
        check(r#"{"status":"OK","healthy":true}"#, true);
        check(r#"{"status":"degraded"}"#, false);
        check(r#"{"status":500}"#, false);
        check(r#"[1,2]"#, true);
    }

    #[test]
    fn localhost_is_tried_on_both_loopbacks() {
        let targets = |url: &str| {
            connect_targets(&parse_url(url).unwrap(), url).unwrap().iter().map(Uri::to_string).collect::<Vec<_>>()
        };
        assert_eq!(
            targets("http://LocalHost:8080/health?x=1"),
            ["http://127.0.0.1:8080/health?x=1", "http://[::1]:8080/health?x=1"]
        );
        assert_eq!(targets("http://localhost"), ["http://127.0.0.1:80/", "http://[::1]:80/"]);
        assert_eq!(targets("http://127.0.0.1:1/a"), ["http://127.0.0.1:1/a"]);
    }

    #[test]
    fn urls() {
        assert!(parse_url("http://127.0.0.1:1/alive").is_ok());
        assert!(parse_url("http://localhost:1").is_ok());
        for bad in ["/alive", "https://example.invalid/", "localhost:80", "not a url"] {
            assert!(matches!(parse_url(bad), Err(Error::InvalidUrl { .. })), "{bad}");
        }
    }
}
