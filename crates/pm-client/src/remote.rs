//! `RemoteProcessMonitorClient`: drives a monitor over its remote HTTP API (the guide's "Using the Remote API").
//!
//! Every method is one call of an endpoint of `wire-formats.md`; the answer's status and its JSON `error` message
//! become a typed [`Error`]. Failures to reach the monitor are retried a bounded number of times (see
//! [`RemoteClientOptions`]); an HTTP answer, whatever its status, never is.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Duration;

use pm_core::{
    validate_process_id, MonitorStatus, PartnerDiscovery, PartnerDiscoveryPatch, ProcessConfig, ProcessState,
    ProcessStatus, RemoteAccessConfig, RemoteAccessPatch,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::Error;

/// How a [`RemoteProcessMonitorClient`] reaches its monitor. Its `Debug` output hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteClientOptions {
    /// `http://host:port` of the monitor's remote API (a trailing `/` is ignored; `https` is not supported).
    pub base_url: String,
    /// Time allowed for one attempt of one call: connecting, sending and reading the whole answer (default 5 s).
    /// Calls that may stop a process get the process's `stopTimeoutMs` plus [`STOP_MARGIN`] on top.
    pub timeout: Duration,
    /// Further attempts after a transport failure (default 2). See [`RemoteProcessMonitorClient`] for which
    /// failures are retried.
    pub retries: u32,
    /// Pause before each further attempt (default 100 ms).
    pub retry_delay: Duration,
    /// A bearer token (`process_monitor token create`), sent as `Authorization: Bearer ...` with every call;
    /// needed when the monitor sets `requireToken` (default `None`).
    pub token: Option<String>,
}

impl std::fmt::Debug for RemoteClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteClientOptions")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("retry_delay", &self.retry_delay)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl Default for RemoteClientOptions {
    fn default() -> Self {
        RemoteClientOptions {
            base_url: "http://localhost:19881".to_owned(),
            timeout: Duration::from_secs(5),
            retries: 2,
            retry_delay: Duration::from_millis(100),
            token: None,
        }
    }
}

/// The remote client: every endpoint of the monitor's HTTP API as an async method.
///
/// Cheap to clone: clones share one connection pool. Calls must run inside a tokio runtime.
///
/// Process ids are checked with [`pm_core::validate_process_id`] before anything is sent ([`Error::Invalid`]),
/// and percent-encoded in the path all the same.
///
/// Errors: 404 is [`Error::NotFound`], 400 `Process is disabled` is [`Error::Disabled`], any other 400 is
/// [`Error::Invalid`], 403 is [`Error::PermissionDenied`], 409 is [`Error::AlreadyExists`] (or
/// [`Error::Conflict`] for a dependency conflict), 503 is
/// [`Error::Busy`], any other non-2xx status (or a 2xx body that does not parse) is [`Error::Server`], a
/// monitor that cannot be reached is [`Error::Transport`], and one that does not answer in time is
/// [`Error::Timeout`].
///
/// Retries: only transport failures are retried, up to [`RemoteClientOptions::retries`] times, with
/// [`RemoteClientOptions::retry_delay`] in between; so one call takes at most
/// `(retries + 1) * timeout + retries * retry_delay` (with the longer attempt deadline below for calls that may stop
/// a process, after the `GET` that reads it). `GET`, `PUT` and `DELETE` are retried on any transport
/// failure (connection refused or reset, timeout, body cut short). A `POST` (register, start, stop, restart,
/// enable, disable, restart the monitor) is not idempotent, so it is retried only when the TCP connection could
/// not be opened at all (refused, unreachable, connect timeout), that is when nothing was sent; once a connection
/// was made, the request may have reached the monitor and is not sent again.
///
/// Deadlines: calls that may stop a process (stop, restart, disable, deregister) first read the process's
/// `stopTimeoutMs` (`GET /processes/{id}`), and their attempt is allowed [`RemoteClientOptions::timeout`] plus
/// that stop timeout plus [`STOP_MARGIN`], since the monitor answers once the process has stopped. A call whose
/// answer does not come in time is [`Error::Timeout`] (the monitor is there but slow), not
/// [`Error::Transport`] (it could not be reached).
///
/// A `DELETE` whose answer was lost is sent again; if the retry finds the process gone ([`Error::NotFound`]) the
/// first attempt deregistered it, and the call succeeds.
#[derive(Debug, Clone)]
pub struct RemoteProcessMonitorClient {
    http: pm_http::HttpClient,
    base_url: Arc<str>,
    timeout: Duration,
    retries: u32,
    retry_delay: Duration,
    /// `Bearer ...`, when a token is set.
    authorization: Option<Secret>,
    /// Streams go over this unix socket instead of TCP (the local client's streams, see
    /// [`crate::ProcessMonitorClient::events`]).
    stream_socket: Option<Arc<std::path::Path>>,
}

/// A header value that `Debug` does not show.
#[derive(Clone)]
struct Secret(Arc<str>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

#[derive(Deserialize)]
struct ProcessList {
    processes: Vec<ProcessStatus>,
}

/// Added to a process's stop timeout in the deadline of a call that may stop it.
pub const STOP_MARGIN: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct StateReply {
    state: ProcessState,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StopReply {
    state: ProcessState,
    #[serde(default)]
    stopped_dependents: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TrustedHosts {
    trusted_hosts: Vec<String>,
}

#[derive(Deserialize)]
struct Patterns {
    patterns: Vec<String>,
}

#[derive(Deserialize)]
struct Enabled {
    enabled: bool,
}

impl RemoteProcessMonitorClient {
    /// A client of the monitor at `base_url` (`http://host:port`) with the default options.
    pub fn new(base_url: &str) -> Result<RemoteProcessMonitorClient, Error> {
        RemoteProcessMonitorClient::with_options(RemoteClientOptions {
            base_url: base_url.to_owned(),
            ..RemoteClientOptions::default()
        })
    }

    /// A client with the given options; [`Error::Invalid`] when the base URL is not `http://host:port`.
    pub fn with_options(options: RemoteClientOptions) -> Result<RemoteProcessMonitorClient, Error> {
        let base_url = normalize_base_url(&options.base_url)?;
        Ok(RemoteProcessMonitorClient {
            http: pm_http::HttpClient::new(),
            base_url: base_url.into(),
            timeout: options.timeout,
            retries: options.retries,
            retry_delay: options.retry_delay,
            authorization: options.token.as_deref().map(|token| Secret(Arc::from(format!("Bearer {}", token.trim())))),
            stream_socket: None,
        })
    }

    /// A client whose streams (`events`, `logs`) go to the monitor's unix socket `socket`; for the local client.
    /// Its base URL is `unix:{socket}`, which error messages show; only the streams may be used.
    pub(crate) fn streams_over_socket(socket: &std::path::Path) -> RemoteProcessMonitorClient {
        let mut client = RemoteProcessMonitorClient::new("http://localhost:1").expect("a valid base URL");
        client.base_url = format!("unix:{}", socket.display()).into();
        client.stream_socket = Some(Arc::from(socket));
        client
    }

    /// The monitor's URL, `http://host:port` without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Drops the client (the guide's `dispose`). Its pooled connections close once every clone is gone.
    pub fn dispose(self) {}

    /// The monitor's status (`GET /monitor/status`).
    pub async fn get_monitor_status(&self) -> Result<MonitorStatus, Error> {
        self.call(Method::Get, "/monitor/status", None, None).await
    }

    /// How the monitor sees this client (`GET /auth/whoami`): `transport`, `trusted`, `token`, `scope`, and when
    /// they apply `address`, `processes` and `permissions` (see `docs/authentication.md`).
    pub async fn whoami(&self) -> Result<serde_json::Value, Error> {
        self.call(Method::Get, "/auth/whoami", None, None).await
    }

    /// The whole configuration of a process (`GET /processes/{id}/config`); `environment` values are
    /// `"(hidden)"` unless this client could change the configuration (see `docs/dashboard.md`).
    pub async fn get_process_config(&self, id: &str) -> Result<pm_core::ProcessConfig, Error> {
        let path = process_path(id, "/config")?;
        self.call(Method::Get, &path, None, Some(id)).await
    }

    /// Every registered process by id (`GET /processes`).
    pub async fn get_all_status(&self) -> Result<BTreeMap<String, ProcessStatus>, Error> {
        let list: ProcessList = self.call(Method::Get, "/processes", None, None).await?;
        Ok(list.processes.into_iter().map(|status| (status.id.clone(), status)).collect())
    }

    /// One process (`GET /processes/{id}`).
    pub async fn get_status(&self, id: &str) -> Result<ProcessStatus, Error> {
        let path = process_path(id, "")?;
        self.call(Method::Get, &path, None, Some(id)).await
    }

    /// Registers a process (`POST /processes`). The configuration is checked with
    /// [`ProcessConfig::validate`] before it is sent; the monitor marks it as remote.
    pub async fn register(&self, config: ProcessConfig) -> Result<(), Error> {
        config.validate()?;
        let body = serde_json::to_value(&config)
            .map_err(|err| Error::Invalid(format!("cannot encode the configuration: {err}")))?;
        let _: Value = self.call(Method::Post, "/processes", Some(body), Some(&config.id)).await?;
        Ok(())
    }

    /// Stops (if needed) and removes a process (`DELETE /processes/{id}`).
    pub async fn deregister(&self, id: &str) -> Result<(), Error> {
        self.delete(id, process_path(id, "")?).await
    }

    /// `DELETE path` of the process `id`, waiting as long as stopping it may take.
    async fn delete(&self, id: &str, path: String) -> Result<(), Error> {
        let timeout = self.stop_deadline(id).await?;
        let (res, resent) = self.exchange(Method::Delete, &path, None, timeout).await?;
        // A retry after an attempt that may have gone through finds the process gone: that attempt removed it.
        if res.status == 404 && resent {
            return Ok(());
        }
        let _: Value = parse_answer(res, &path, Some(id))?;
        Ok(())
    }

    /// Starts a process; answers its state afterwards, usually `starting` (`POST /processes/{id}/start`).
    pub async fn start(&self, id: &str) -> Result<ProcessState, Error> {
        self.act(id, "start").await
    }

    /// Stops a process; answers its state afterwards (`POST /processes/{id}/stop`).
    pub async fn stop(&self, id: &str) -> Result<ProcessState, Error> {
        self.act(id, "stop").await
    }

    /// Stops a process after the processes that depend on it; answers its state and the dependents the monitor
    /// stopped first, in order (`stoppedDependents` of `POST /processes/{id}/stop`).
    ///
    /// The deadline covers the stop timeouts of every process under way (any of them may be a dependent).
    pub async fn stop_with_dependents(&self, id: &str) -> Result<(ProcessState, Vec<String>), Error> {
        let path = process_path(id, "/stop")?;
        let statuses = self.get_all_status().await?;
        if !statuses.contains_key(id) {
            return Err(Error::NotFound(id.to_owned()));
        }
        let stops: u64 = statuses
            .values()
            .filter(|status| status.id == id || status.state.has_child())
            .map(|status| status.stop_timeout_ms.unwrap_or(ProcessConfig::DEFAULT_STOP_TIMEOUT_MS))
            .sum();
        let timeout = self.timeout + Duration::from_millis(stops) + STOP_MARGIN;
        let res: StopReply = self.call_within(Method::Post, &path, None, Some(id), timeout).await?;
        Ok((res.state, res.stopped_dependents))
    }

    /// Deregisters a process even when others depend on it (`DELETE /processes/{id}?force=true`).
    pub async fn deregister_forced(&self, id: &str) -> Result<(), Error> {
        self.delete(id, process_path(id, "")? + "?force=true").await
    }

    /// Restarts a process; answers its state afterwards (`POST /processes/{id}/restart`).
    pub async fn restart(&self, id: &str) -> Result<ProcessState, Error> {
        self.act(id, "restart").await
    }

    /// Enables a process (`POST /processes/{id}/enable`).
    pub async fn enable(&self, id: &str) -> Result<(), Error> {
        let path = process_path(id, "/enable")?;
        let _: Value = self.call(Method::Post, &path, None, Some(id)).await?;
        Ok(())
    }

    /// Disables (and so stops) a process (`POST /processes/{id}/disable`).
    pub async fn disable(&self, id: &str) -> Result<(), Error> {
        let path = process_path(id, "/disable")?;
        let timeout = self.stop_deadline(id).await?;
        let _: Value = self.call_within(Method::Post, &path, None, Some(id), timeout).await?;
        Ok(())
    }

    /// Sets whether a process starts with the monitor (`PUT /processes/{id}/autostart`).
    pub async fn set_autostart(&self, id: &str, autostart: bool) -> Result<(), Error> {
        let path = process_path(id, "/autostart")?;
        let body = json!({ "autostart": autostart });
        let _: Value = self.call(Method::Put, &path, Some(body), Some(id)).await?;
        Ok(())
    }

    /// Asks the monitor to restart itself (`POST /monitor/restart`).
    pub async fn restart_monitor(&self) -> Result<(), Error> {
        let _: Value = self.call(Method::Post, "/monitor/restart", None, None).await?;
        Ok(())
    }

    /// The remote access settings (`GET /config/remote-access`).
    pub async fn get_remote_access(&self) -> Result<RemoteAccessConfig, Error> {
        self.call(Method::Get, "/config/remote-access", None, None).await
    }

    /// Changes the permission keys given in `patch` (`PUT /config/remote-access`); answers the settings
    /// afterwards.
    pub async fn set_remote_access_permissions(&self, patch: RemoteAccessPatch) -> Result<RemoteAccessConfig, Error> {
        let body = patch_body(&patch)?;
        self.call(Method::Put, "/config/remote-access", Some(body), None).await
    }

    /// The trusted host patterns (`GET /config/trusted-hosts`).
    pub async fn get_trusted_hosts(&self) -> Result<Vec<String>, Error> {
        let res: TrustedHosts = self.call(Method::Get, "/config/trusted-hosts", None, None).await?;
        Ok(res.trusted_hosts)
    }

    /// Replaces the trusted host patterns (`PUT /config/trusted-hosts`).
    pub async fn set_trusted_hosts(&self, hosts: Vec<String>) -> Result<(), Error> {
        let body = json!({ "trustedHosts": hosts });
        let _: TrustedHosts = self.call(Method::Put, "/config/trusted-hosts", Some(body), None).await?;
        Ok(())
    }

    /// The executable whitelist (`GET /config/executable-whitelist`).
    pub async fn get_executable_whitelist(&self) -> Result<Vec<String>, Error> {
        self.get_patterns("/config/executable-whitelist").await
    }

    /// Replaces the executable whitelist (`PUT /config/executable-whitelist`).
    pub async fn set_remote_executable_whitelist(&self, patterns: Vec<String>) -> Result<(), Error> {
        self.set_patterns("/config/executable-whitelist", patterns).await
    }

    /// The executable blacklist (`GET /config/executable-blacklist`).
    pub async fn get_executable_blacklist(&self) -> Result<Vec<String>, Error> {
        self.get_patterns("/config/executable-blacklist").await
    }

    /// Replaces the executable blacklist (`PUT /config/executable-blacklist`).
    pub async fn set_remote_executable_blacklist(&self, patterns: Vec<String>) -> Result<(), Error> {
        self.set_patterns("/config/executable-blacklist", patterns).await
    }

    /// Whether the monitor runs without a partner (`GET /config/standalone-mode`).
    pub async fn is_standalone_mode(&self) -> Result<bool, Error> {
        let res: Enabled = self.call(Method::Get, "/config/standalone-mode", None, None).await?;
        Ok(res.enabled)
    }

    /// Turns standalone mode on or off (`PUT /config/standalone-mode`).
    pub async fn set_standalone_mode(&self, enabled: bool) -> Result<(), Error> {
        let body = json!({ "enabled": enabled });
        let _: Enabled = self.call(Method::Put, "/config/standalone-mode", Some(body), None).await?;
        Ok(())
    }

    /// The partner discovery settings (`GET /config/partner-discovery`).
    pub async fn get_partner_discovery(&self) -> Result<PartnerDiscovery, Error> {
        self.call(Method::Get, "/config/partner-discovery", None, None).await
    }

    /// Changes the partner discovery keys given in `patch` (`PUT /config/partner-discovery`); answers the
    /// settings afterwards.
    pub async fn set_partner_discovery(&self, patch: PartnerDiscoveryPatch) -> Result<PartnerDiscovery, Error> {
        let body = patch_body(&patch)?;
        self.call(Method::Put, "/config/partner-discovery", Some(body), None).await
    }

    /// The HTTP client (for the streams).
    /// Opens a stream: `GET url` (a URL under [`RemoteProcessMonitorClient::base_url`]) over TCP, or over the unix
    /// socket for a client made by [`RemoteProcessMonitorClient::streams_over_socket`].
    pub(crate) async fn open_stream(
        &self,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<pm_http::HttpStream, pm_http::Error> {
        match &self.stream_socket {
            None => self.http.get_stream(url, headers, self.timeout).await,
            Some(socket) => {
                let path = url.strip_prefix(&*self.base_url).unwrap_or(url);
                pm_http::get_stream_unix(socket, path, headers, self.timeout).await
            }
        }
    }

    /// The `Authorization` header of every request (the streams' too), when a token is set.
    pub(crate) fn authorization(&self) -> Option<(&'static str, String)> {
        self.authorization.as_ref().map(|value| ("authorization", value.0.to_string()))
    }

    /// Time allowed for one attempt of one call.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `GET path` parsed as `T` (errors as for every call).
    pub(crate) async fn get_json<T: DeserializeOwned>(&self, path: &str, id: Option<&str>) -> Result<T, Error> {
        self.call(Method::Get, path, None, id).await
    }

    async fn act(&self, id: &str, action: &str) -> Result<ProcessState, Error> {
        let path = process_path(id, &format!("/{action}"))?;
        let timeout = if action == "start" { self.timeout } else { self.stop_deadline(id).await? };
        let res: StateReply = self.call_within(Method::Post, &path, None, Some(id), timeout).await?;
        Ok(res.state)
    }

    /// The deadline of one attempt of a call that may stop process `id`: the client's timeout plus the process's
    /// stop timeout (read from the monitor; the default 10 s when it does not say) plus [`STOP_MARGIN`].
    async fn stop_deadline(&self, id: &str) -> Result<Duration, Error> {
        let status = self.get_status(id).await?;
        let stop = Duration::from_millis(status.stop_timeout_ms.unwrap_or(ProcessConfig::DEFAULT_STOP_TIMEOUT_MS));
        Ok(self.timeout + stop + STOP_MARGIN)
    }

    async fn get_patterns(&self, path: &str) -> Result<Vec<String>, Error> {
        let res: Patterns = self.call(Method::Get, path, None, None).await?;
        Ok(res.patterns)
    }

    async fn set_patterns(&self, path: &str, patterns: Vec<String>) -> Result<(), Error> {
        let body = json!({ "patterns": patterns });
        let _: Patterns = self.call(Method::Put, path, Some(body), None).await?;
        Ok(())
    }

    /// One call: sends `body` as JSON, maps a non-2xx answer to its error (`id` names the process concerned, if
    /// any) and parses a 2xx body as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        id: Option<&str>,
    ) -> Result<T, Error> {
        self.call_within(method, path, body, id, self.timeout).await
    }

    /// [`Self::call`] with `timeout` for each attempt.
    async fn call_within<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        id: Option<&str>,
        timeout: Duration,
    ) -> Result<T, Error> {
        let body = body.map(|value| value.to_string().into_bytes());
        let (res, _) = self.exchange(method, path, body, timeout).await?;
        parse_answer(res, path, id)
    }

    /// Sends one request, retrying transport failures as the type's documentation says; answers the response
    /// and whether an earlier attempt may have reached the monitor (it failed after the connection was made).
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(pm_http::HttpResponse, bool), Error> {
        let url = format!("{}{path}", self.base_url);
        let mut attempt = 0;
        let mut resent = false;
        loop {
            // `HttpClient::request` takes hyper's `Method`; parsing the name lets that type be inferred, so this
            // crate needs no dependency on hyper (the four names always parse).
            let http_method =
                method.as_str().parse().map_err(|_| Error::Invalid(format!("HTTP method {}", method.as_str())))?;
            let headers: Vec<(&str, &str)> =
                self.authorization.as_ref().map(|value| ("authorization", &*value.0)).into_iter().collect();
            let err = match self.http.request_with(http_method, &url, body.clone(), timeout, &headers).await {
                Ok(res) => return Ok((res, resent)),
                Err(err) => err,
            };
            if attempt >= self.retries || !may_retry(method, &err) {
                return Err(transport_error(&url, err));
            }
            resent |= !matches!(&err, pm_http::Error::Request { reason, .. } if connect_failed(reason));
            attempt += 1;
            tracing::debug!(%url, attempt, "retrying after a transport failure: {err}");
            tokio::time::sleep(self.retry_delay).await;
        }
    }
}

/// Whether a failed attempt may be sent again: see [`RemoteProcessMonitorClient`].
fn may_retry(method: Method, err: &pm_http::Error) -> bool {
    match err {
        pm_http::Error::Request { reason, .. } => method != Method::Post || connect_failed(reason),
        pm_http::Error::Timeout { .. } | pm_http::Error::Body { .. } => method != Method::Post,
        pm_http::Error::InvalidUrl { .. } | pm_http::Error::Bind { .. } | pm_http::Error::Io(_) => false,
    }
}

/// Whether a request failure happened while opening the connection, before anything was sent.
///
/// `pm_http::Error::Request` carries the cause as text only; hyper-util's client reports connection failures as
/// `client error (Connect)`, and requests that failed after connecting as other kinds (`SendRequest`, ...).
fn connect_failed(reason: &str) -> bool {
    reason.contains("client error (Connect)")
}

/// A 2xx answer parsed as `T`, or the error of any other status.
fn parse_answer<T: DeserializeOwned>(res: pm_http::HttpResponse, path: &str, id: Option<&str>) -> Result<T, Error> {
    if !res.is_success() {
        return Err(status_error(res.status, &res.body, id));
    }
    serde_json::from_slice(&res.body)
        .map_err(|err| Error::Server { status: res.status, message: format!("unexpected answer to {path}: {err}") })
}

fn transport_error(url: &str, err: pm_http::Error) -> Error {
    match err {
        pm_http::Error::InvalidUrl { url, reason } => Error::Invalid(format!("URL {url}: {reason}")),
        pm_http::Error::Timeout { timeout, .. } => Error::Timeout { url: url.to_owned(), after: timeout },
        pm_http::Error::Request { reason, .. } | pm_http::Error::Body { reason, .. } => {
            Error::Transport { url: url.to_owned(), message: reason }
        }
        other => Error::Transport { url: url.to_owned(), message: other.to_string() },
    }
}

/// The error of a non-2xx answer, from its status and its JSON `error` message. `id` is the process the call
/// was about (the body's `processId` stands in when there is none).
pub(crate) fn status_error(status: u16, body: &[u8], id: Option<&str>) -> Error {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let field = |key: &str| json.as_ref().and_then(|value| value.get(key)).and_then(Value::as_str).map(str::to_owned);
    let message = field("error").unwrap_or_else(|| {
        let text: String = String::from_utf8_lossy(body).trim().chars().take(200).collect();
        if text.is_empty() {
            format!("HTTP {status}")
        } else {
            text
        }
    });
    let id = id.map(str::to_owned).or_else(|| field("processId"));
    match (status, id) {
        (404, Some(id)) => Error::NotFound(id),
        (400, Some(id)) if message.starts_with("Process is disabled") => Error::Disabled(id),
        (400, _) => Error::Invalid(message),
        (403, _) => Error::PermissionDenied(message),
        (409, Some(id)) if !message.starts_with("Process ID already exists") && !message.contains(id.as_str()) => {
            Error::Conflict(format!("{message}: {id}"))
        }
        (409, _) if !message.starts_with("Process ID already exists") => Error::Conflict(message),
        (409, Some(id)) => Error::AlreadyExists(id),
        (409, None) => Error::AlreadyExists(message),
        (503, _) => Error::Busy(message),
        (status, _) => Error::Server { status, message },
    }
}

/// `/processes/{id}{suffix}` for a valid id.
pub(crate) fn process_path(id: &str, suffix: &str) -> Result<String, Error> {
    validate_process_id(id)?;
    Ok(format!("/processes/{}{suffix}", percent_encode(id)))
}

/// Percent-encodes everything but the unreserved characters of RFC 3986.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut res = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            res.push(char::from(byte));
        } else {
            let _ = write!(res, "%{byte:02X}");
        }
    }
    res
}

/// A patch as a JSON object of the keys it sets (keys left `None` are not sent).
pub(crate) fn patch_body<T: serde::Serialize>(patch: &T) -> Result<Value, Error> {
    let mut value =
        serde_json::to_value(patch).map_err(|err| Error::Invalid(format!("cannot encode the settings: {err}")))?;
    if let Value::Object(map) = &mut value {
        map.retain(|_, value| !value.is_null());
    }
    Ok(value)
}

/// Checks `url` is `http://host:port` (a trailing `/` allowed) and answers it without the trailing `/`.
pub(crate) fn normalize_base_url(url: &str) -> Result<String, Error> {
    let invalid = |reason: &str| Err(Error::Invalid(format!("base URL {url:?}: {reason}")));
    let Some((scheme, rest)) = url.trim().split_once("://") else {
        return invalid("expected http://host:port");
    };
    if scheme.eq_ignore_ascii_case("https") {
        return invalid("https is not supported, use http://host:port");
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return invalid("expected http://host:port");
    }
    let authority = rest.trim_end_matches('/');
    if authority.contains(['/', '?', '#', '@']) || authority.contains(char::is_whitespace) {
        return invalid("expected http://host:port without path, query or user");
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((ip, after)) = bracketed.split_once(']') else {
            return invalid("unclosed '[' in the host");
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return invalid("invalid IPv6 address");
        }
        let Some(port) = after.strip_prefix(':') else {
            return invalid("a port is required");
        };
        (format!("[{ip}]"), port)
    } else {
        let Some((host, port)) = authority.rsplit_once(':') else {
            return invalid("a port is required");
        };
        if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
            return invalid("invalid host (use a name, an IPv4 address or a bracketed IPv6 address)");
        }
        (host.to_owned(), port)
    };
    match port.parse::<u16>() {
        Ok(number) if number != 0 && port.chars().all(|c| c.is_ascii_digit()) => Ok(format!("http://{host}:{number}")),
        _ => invalid("invalid port"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_url(url: &str, expected: Result<&str, &str>) {
        match (normalize_base_url(url), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{url:?}"),
            (Err(Error::Invalid(message)), Err(fragment)) => {
                assert!(message.contains(fragment), "{url:?}: {message:?} lacks {fragment:?}")
            }
            (got, want) => panic!("{url:?}: got {got:?}, expected {want:?}"),
        }
    }

    #[test]
    fn base_urls() {
        check_url("http://localhost:19881", Ok("http://localhost:19881"));
        check_url("http://localhost:19881/", Ok("http://localhost:19881"));
        check_url("http://127.0.0.1:1//", Ok("http://127.0.0.1:1"));
        check_url(" HTTP://Host-1.example:80 ", Ok("http://Host-1.example:80"));
        check_url("http://[::1]:19881/", Ok("http://[::1]:19881"));
        check_url("https://localhost:19881", Err("https is not supported"));
        check_url("localhost:19881", Err("expected http://host:port"));
        check_url("ftp://localhost:21", Err("expected http://host:port"));
        check_url("http://localhost", Err("port is required"));
        check_url("http://localhost:0", Err("invalid port"));
        check_url("http://localhost:65536", Err("invalid port"));
        check_url("http://localhost:+80", Err("invalid port"));
        check_url("http://localhost:", Err("invalid port"));
        check_url("http://:80", Err("invalid host"));
        check_url("http://::1:80", Err("invalid host"));
        check_url("http://[::1]", Err("port is required"));
        check_url("http://[zz]:80", Err("IPv6"));
        check_url("http://localhost:80/api", Err("without path"));
        check_url("http://localhost:80?x=1", Err("without path"));
        check_url("http://user@localhost:80", Err("without path"));
        check_url("http://local host:80", Err("without path"));
    }

    #[test]
    fn ids_in_paths() {
        assert_eq!(process_path("api.v2_1-x", "/start").unwrap(), "/processes/api.v2_1-x/start");
        for bad in ["", "../x", "a/b", "a b", "%2e"] {
            assert!(matches!(process_path(bad, ""), Err(Error::Invalid(_))), "{bad:?}");
        }
        assert_eq!(percent_encode("a/b c%é~"), "a%2Fb%20c%25%C3%A9~");
    }

    /// The error `status` and `body` map to, for a call about process `id`, in `Debug` form.
    fn check_status(status: u16, body: &str, id: Option<&str>, expected: &str) {
        let got = format!("{:?}", status_error(status, body.as_bytes(), id));
        assert_eq!(got, expected, "{status} {body}");
    }

    #[test]
    fn status_errors() {
        let not_found = r#"{"error":"Process not found","processId":"api"}"#;
        check_status(404, not_found, Some("api"), r#"NotFound("api")"#);
        check_status(404, not_found, None, r#"NotFound("api")"#);
        check_status(404, r#"{"error":"Not found"}"#, None, r#"Server { status: 404, message: "Not found" }"#);
        let disabled = r#"{"error":"Process is disabled","processId":"api"}"#;
        check_status(400, disabled, Some("api"), r#"Disabled("api")"#);
        check_status(400, r#"{"error":"Invalid JSON: eof"}"#, None, r#"Invalid("Invalid JSON: eof")"#);
        check_status(
            403,
            r#"{"error":"Remote start not allowed"}"#,
            Some("api"),
            r#"PermissionDenied("Remote start not allowed")"#,
        );
        check_status(
            409,
            r#"{"error":"Process ID already exists","processId":"api"}"#,
            Some("api"),
            r#"AlreadyExists("api")"#,
        );
        let needed =
            r#"{"error":"Process db is a dependency of api; deregister or change them first, or use ?force=true"}"#;
        check_status(
            409,
            needed,
            Some("db"),
            r#"Conflict("Process db is a dependency of api; deregister or change them first, or use ?force=true")"#,
        );
        // A conflict whose message does not name the process gets its id appended, so the CLI's error names it.
        check_status(
            409,
            r#"{"error":"Process ID reserved for the partner instance","processId":"watcher"}"#,
            None,
            r#"Conflict("Process ID reserved for the partner instance: watcher")"#,
        );
        check_status(503, r#"{"error":"Registry busy, retry later"}"#, None, r#"Busy("Registry busy, retry later")"#);
        check_status(
            500,
            r#"{"error":"Storage error: disk"}"#,
            None,
            r#"Server { status: 500, message: "Storage error: disk" }"#,
        );
        check_status(502, "Bad Gateway", None, r#"Server { status: 502, message: "Bad Gateway" }"#);
        check_status(500, "", None, r#"Server { status: 500, message: "HTTP 500" }"#);
    }

    #[test]
    fn retry_policy() {
        let request = |reason: &str| pm_http::Error::Request {
            url: "http://127.0.0.1:1/x".to_owned(),
            reason: reason.to_owned(),
        };
        let refused = request("client error (Connect): tcp connect error: Connection refused (os error 111)");
        let reset = request("client error (SendRequest): connection closed before message completed");
        let timeout =
            pm_http::Error::Timeout { url: "http://127.0.0.1:1/x".to_owned(), timeout: Duration::from_secs(1) };
        for method in [Method::Get, Method::Put, Method::Delete] {
            assert!(may_retry(method, &refused) && may_retry(method, &reset) && may_retry(method, &timeout));
        }
        assert!(may_retry(Method::Post, &refused));
        assert!(!may_retry(Method::Post, &reset));
        assert!(!may_retry(Method::Post, &timeout));
    }

    #[test]
    fn patches_send_only_the_keys_they_set() {
        let patch = RemoteAccessPatch { allow_remote_start: Some(false), ..RemoteAccessPatch::default() };
        assert_eq!(patch_body(&patch).unwrap(), json!({"allowRemoteStart": false}));
        assert_eq!(patch_body(&PartnerDiscoveryPatch::default()).unwrap(), json!({}));
    }
}
