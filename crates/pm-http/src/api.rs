//! The remote API router: the guide's HTTP endpoints on top of a [`ControlPlane`].
//!
//! The security model is described on [`spawn_remote_api`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderValue, ALLOW};
use hyper::{Method, StatusCode};
use pm_core::{
    host_is_trusted, needs_name_lookup, normalize_ip, validate_process_id, Error, PartnerDiscoveryPatch, ProcessConfig,
    RemoteAccessConfig, RemoteAccessPatch, Settings, SettingsUpdate,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{self, Access, TokenStore, Transport};
use crate::control::ControlPlane;
use crate::names::NameResolver;
use crate::server::{self, json_error, json_response, HttpRequest, HttpResponse, ServerConfig, ServerHandle};

/// Starts the remote API on `listener` (which [`crate::bind`] can make), driving `control`.
///
/// Must be called inside a tokio runtime. The endpoints are those of the user guide plus
/// `PUT /processes/{id}/autostart`, with the bodies of `wire-formats.md`. Successful calls answer 200.
/// When the settings say `startRemoteAccess: false`, every request is answered
/// 503 `{"error":"Remote access disabled"}` (the supervisor is expected to stop the server as well).
///
/// # Security model
/// - Trust comes from the TCP peer address only (IPv4-mapped IPv6 normalised); headers such as
///   `X-Forwarded-For` or `X-Real-IP` are never read. The settings are read on every request, so
///   changes apply at once.
/// - A request from a web page of another site (an `Origin` that is not the monitor's own, or
///   `Sec-Fetch-Site: cross-site`/`same-site`) is refused 403, changing nothing; a same-origin page must
///   send a valid bearer token ([`spawn_remote_api_with`]). Clients that send no `Origin` (curl, the CLI,
///   pm-client) are judged by their address alone, whatever their `Content-Type`. CORS preflights are
///   answered, but without `Access-Control-Allow-Origin`.
/// - Trusted peers may do everything. Untrusted peers need the matching `allowRemote*` permission
///   (restart needs both start and stop; enable and disable need `allowRemoteDisable`), may act only
///   on processes registered remotely (403 `Cannot modify local process` otherwise), may read but not
///   change the configuration (`GET /config/*` is open to every peer, since the settings hold no
///   secret; `PUT /config/*` needs a trusted peer), and may register only commands whose canonical
///   path (`PATH` lookup for a bare name, a relative path only against an absolute
///   `workingDirectory`, symlinks and `..` resolved) passes the whitelist and blacklist; the
///   registration then stores that canonical path as its command, so the file checked is the file
///   run. They may set only the environment variables `allowedEnvironment` lists (never `LD_*` or
///   `DYLD_*`, which would load code into a whitelisted program), must keep within the budget of
///   `pm_core::untrusted_budget`, may check only loopback URLs, may not run the monitor's own program,
///   and are marked `untrusted`, so that the supervisor checks the executable again at every start.
/// - No registration, trusted or not, may take the partner instance's id (409).
/// - Connections are capped per peer address, a few slots are kept for peers trusted by address, and a
///   peer that does not read its answers is cut off by the write timeout ([`ServerConfig`]).
/// - Hostname patterns among the trusted hosts cost a reverse lookup confirmed by a forward lookup
///   (cached per address for a minute, at most a second per request; a timeout means "not
///   trusted"). They are looked up only when a request needs a trust decision and no address
///   pattern already trusts the peer.
/// - Every error is a JSON `{"error": ...}` response; the handler never fails. Each request is
///   handled on a task of its own, so a change that was asked for is carried out even when the
///   client goes away before the answer, and a panic in the control plane costs one 500 answer.
pub fn spawn_remote_api<C: ControlPlane>(
    listener: std::net::TcpListener,
    control: Arc<C>,
    config: ServerConfig,
) -> std::io::Result<ServerHandle> {
    spawn_remote_api_with(listener, control, config, ApiOptions::default())
}

/// What the remote API authenticates with, beyond the guide's address rules (see `docs/authentication.md`).
#[derive(Debug, Clone, Default)]
pub struct ApiOptions {
    /// The bearer tokens (`processes_{id}.tokens.json`); without a store every token is refused (401).
    pub tokens: Option<TokenStore>,
}

/// [`spawn_remote_api`] with bearer tokens, `remoteAccess.requireToken` and the browser rule of
/// `docs/authentication.md`.
///
/// Before the guide's address rules: a request from another site (an `Origin` that is not the monitor's own,
/// or `Sec-Fetch-Site: cross-site`/`same-site`) is refused 403 whatever it carries; a request with a bad
/// `Authorization` header, a same-origin browser request without a token, and (with `requireToken`) any request
/// without a token are refused 401 with `WWW-Authenticate`; a token then limits the request to its scope and its
/// processes (403 beyond them), and the address rules apply on top.
pub fn spawn_remote_api_with<C: ControlPlane>(
    listener: std::net::TcpListener,
    control: Arc<C>,
    config: ServerConfig,
    options: ApiOptions,
) -> std::io::Result<ServerHandle> {
    let state = ApiState::new(control, &config, options.tokens);
    server::spawn(listener, Arc::new(RemoteApi { state: Arc::new(state) }), config)
}

/// [`spawn_remote_api_with`] over TLS (feature `tls`): the same API and rules; a browser's own origin is then
/// `https://` and the `Host`.
#[cfg(feature = "tls")]
pub fn spawn_remote_api_tls<C: ControlPlane>(
    listener: std::net::TcpListener,
    control: Arc<C>,
    config: ServerConfig,
    options: ApiOptions,
    tls: crate::tls::TlsConfig,
) -> std::io::Result<ServerHandle> {
    let state = ApiState::new(control, &config, options.tokens);
    crate::tls::spawn_tls(listener, Arc::new(RemoteApi { state: Arc::new(state) }), config, tls)
}

/// Serves the same API on a unix socket (which [`crate::bind_unix`] can make), driving `control`.
///
/// The peer's credentials (`SO_PEERCRED`) decide: the monitor's own user, root and the users named in
/// `remoteAccess.socketUsers` are trusted peers (tokens and `Origin` are not looked at, and their registrations
/// count as local, as through the registry); any other user is answered 403. The socket answers even when
/// `startRemoteAccess` is false: it is the local API.
pub fn spawn_unix_api<C: ControlPlane>(
    listener: std::os::unix::net::UnixListener,
    path: std::path::PathBuf,
    control: Arc<C>,
    config: ServerConfig,
) -> std::io::Result<crate::unix::UnixServerHandle> {
    let state = ApiState::new(control, &config, None);
    crate::unix::spawn_unix(listener, path, Arc::new(RemoteApi { state: Arc::new(state) }), config)
}

struct RemoteApi<C> {
    state: Arc<ApiState<C>>,
}

struct ApiState<C> {
    control: Arc<C>,
    names: Arc<NameResolver>,
    body_timeout: Duration,
    tokens: Option<TokenStore>,
    streams: crate::sse::StreamLimits,
}

impl<C> ApiState<C> {
    fn new(control: Arc<C>, config: &ServerConfig, tokens: Option<TokenStore>) -> ApiState<C> {
        let streams = crate::sse::StreamLimits {
            permits: Arc::new(tokio::sync::Semaphore::new(config.max_streams)),
            heartbeat: config.stream_heartbeat,
            stall_timeout: config.stream_stall_timeout,
        };
        ApiState { control, names: NameResolver::new(), body_timeout: config.header_read_timeout, tokens, streams }
    }
}

/// One endpoint, with the process id of its path already percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Processes,
    Process(String),
    Action(String, Action),
    MonitorStatus,
    MonitorRestart,
    Config(ConfigItem),
    Metrics,
    Events,
    Logs(String),
    Runs(String),
    /// `GET /processes/{id}/config`: the process's whole `ProcessConfig`.
    ProcessConfig(String),
    /// `GET /auth/whoami`: what the caller is, as the monitor sees it.
    WhoAmI,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Start,
    Stop,
    Restart,
    Enable,
    Disable,
    Autostart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConfigItem {
    RemoteAccess,
    TrustedHosts,
    Whitelist,
    Blacklist,
    StandaloneMode,
    PartnerDiscovery,
}

impl Route {
    /// Parses a request path (without query); `None` for an unknown path.
    fn parse(path: &str) -> Option<Route> {
        let path = path.strip_prefix('/')?;
        let segments: Vec<&str> = path.split('/').collect();
        let route = match segments.as_slice() {
            ["processes"] => Route::Processes,
            ["processes", id] => Route::Process(percent_decode(id)),
            ["events"] => Route::Events,
            ["processes", id, "logs"] => Route::Logs(percent_decode(id)),
            ["processes", id, "runs"] => Route::Runs(percent_decode(id)),
            ["processes", id, "config"] => Route::ProcessConfig(percent_decode(id)),
            ["auth", "whoami"] => Route::WhoAmI,
            ["processes", id, action] => {
                let action = match *action {
                    "start" => Action::Start,
                    "stop" => Action::Stop,
                    "restart" => Action::Restart,
                    "enable" => Action::Enable,
                    "disable" => Action::Disable,
                    "autostart" => Action::Autostart,
                    _ => return None,
                };
                Route::Action(percent_decode(id), action)
            }
            ["monitor", "status"] => Route::MonitorStatus,
            ["metrics"] => Route::Metrics,
            ["monitor", "restart"] => Route::MonitorRestart,
            ["config", item] => Route::Config(match *item {
                "remote-access" => ConfigItem::RemoteAccess,
                "trusted-hosts" => ConfigItem::TrustedHosts,
                "executable-whitelist" => ConfigItem::Whitelist,
                "executable-blacklist" => ConfigItem::Blacklist,
                "standalone-mode" => ConfigItem::StandaloneMode,
                "partner-discovery" => ConfigItem::PartnerDiscovery,
                _ => return None,
            }),
            _ => return None,
        };
        Some(route)
    }

    /// The methods this endpoint answers (besides `OPTIONS`).
    fn methods(&self) -> &'static [Method] {
        match self {
            Route::Processes => &[Method::GET, Method::POST],
            Route::Process(_) => &[Method::GET, Method::DELETE],
            Route::Action(_, Action::Autostart) => &[Method::PUT],
            Route::Action(..) | Route::MonitorRestart => &[Method::POST],
            Route::MonitorStatus
            | Route::Metrics
            | Route::Events
            | Route::Logs(_)
            | Route::Runs(_)
            | Route::ProcessConfig(_)
            | Route::WhoAmI => &[Method::GET],
            Route::Config(_) => &[Method::GET, Method::PUT],
        }
    }

    fn process_id(&self) -> Option<&str> {
        match self {
            Route::Process(id)
            | Route::Action(id, _)
            | Route::Logs(id)
            | Route::Runs(id)
            | Route::ProcessConfig(id) => Some(id),
            _ => None,
        }
    }
}

/// The `key=value` pairs of a query string, percent-decoded (`+` is not a space here).
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

/// Decodes `%XX` escapes; a malformed escape stays as it is and invalid UTF-8 becomes U+FFFD (both then fail
/// process-id validation).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut res = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[idx] == b'%' && idx + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[idx + 1]), hex(bytes[idx + 2])) {
                res.push((hi * 16 + lo) as u8);
                idx += 3;
                continue;
            }
        }
        res.push(bytes[idx]);
        idx += 1;
    }
    String::from_utf8_lossy(&res).into_owned()
}

/// Who sent a request, as far as trust goes.
#[derive(Debug, Clone)]
struct Peer {
    /// The TCP peer's address (`127.0.0.1` for the unix socket, whose peers are [`Access::Local`]).
    ip: IpAddr,
    /// How it authenticated.
    access: Access,
}

impl Peer {
    /// A peer on the unix socket (already known to be permitted).
    fn local(&self) -> bool {
        matches!(self.access, Access::Local)
    }
}

impl<C: ControlPlane> RemoteApi<C> {
    async fn call_with(&self, req: HttpRequest, transport: Transport) -> HttpResponse {
        let state = self.state.clone();
        match tokio::spawn(async move { state.handle(req, transport).await }).await {
            Ok(res) => res,
            Err(err) => {
                tracing::error!("remote API request handler failed: {err}");
                json_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal error")
            }
        }
    }
}

impl<C: ControlPlane> server::Handler for RemoteApi<C> {
    /// Trusted by address (a host name pattern would need a lookup for every connection): such peers may take
    /// the connection slots reserved for trusted peers.
    fn trusted_peer(&self, ip: IpAddr) -> bool {
        host_is_trusted(ip, &[], &self.state.control.settings().remote_access.trusted_hosts)
    }

    async fn call(&self, req: HttpRequest, peer: SocketAddr) -> HttpResponse {
        self.call_with(req, Transport::Tcp { ip: normalize_ip(peer.ip()), tls: false }).await
    }
}

#[cfg(feature = "tls")]
impl<C: ControlPlane> crate::tls::TlsHandler for RemoteApi<C> {
    async fn call_tls(&self, req: HttpRequest, peer: SocketAddr) -> HttpResponse {
        self.call_with(req, Transport::Tcp { ip: normalize_ip(peer.ip()), tls: true }).await
    }
}

impl<C: ControlPlane> crate::unix::UnixHandler for RemoteApi<C> {
    async fn call_unix(&self, req: HttpRequest, uid: u32) -> HttpResponse {
        self.call_with(req, Transport::Unix { uid }).await
    }
}

impl<C: ControlPlane> ApiState<C> {
    async fn handle(&self, req: HttpRequest, transport: Transport) -> HttpResponse {
        let settings = self.control.settings();
        let is_socket = matches!(transport, Transport::Unix { .. });
        if !is_socket && !settings.remote_access.start_remote_access {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "Remote access disabled");
        }
        // The dashboard's files hold no data: served to everyone, before any trust or token decision.
        if crate::ui::is_ui_path(req.uri().path()) {
            return crate::ui::serve(req.method(), req.uri().path());
        }
        let access = match auth::authenticate(req.headers(), transport, &settings.remote_access, self.tokens.as_ref()) {
            Ok(access) => access,
            Err(res) => return res,
        };
        let Some(route) = Route::parse(req.uri().path()) else {
            return json_error(StatusCode::NOT_FOUND, "Not found");
        };
        let methods = route.methods();
        if req.method() == Method::OPTIONS {
            return preflight(methods);
        }
        if !methods.contains(req.method()) {
            return server::method_not_allowed(&allow_header(methods, true));
        }
        if let Some(id) = route.process_id() {
            if let Err(err) = validate_process_id(id) {
                return error_response(&err);
            }
        }
        let needed = auth::needed_scope(req.method(), matches!(route, Route::Action(..)));
        let target = match (&route, route.process_id()) {
            (_, Some(id)) => auth::Target::Process(id),
            (Route::Processes, None) if req.method() == Method::POST => auth::Target::InBody,
            _ => auth::Target::Monitor,
        };
        if let Err(res) = access.permits(needed, target) {
            return res;
        }
        let ip = match &access {
            Access::Remote { ip, .. } => *ip,
            Access::Local => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        };
        let peer = Peer { ip, access };
        let ctx = Ctx { api: self, peer, settings };
        ctx.handle(route, req).await
    }
}

/// One request being handled.
struct Ctx<'a, C> {
    api: &'a ApiState<C>,
    peer: Peer,
    settings: Settings,
}

/// The messages of the 403 for a program of an untrusted registration that the executable lists refuse.
struct Refusals {
    /// It is the monitor's own executable.
    own_executable: &'static str,
    /// The whitelist or the blacklist refuses it.
    not_permitted: &'static str,
}

impl<C: ControlPlane> Ctx<'_, C> {
    fn control(&self) -> &C {
        &self.api.control
    }

    fn remote(&self) -> &RemoteAccessConfig {
        &self.settings.remote_access
    }

    /// Resolves `command` (run in `working_directory`) against the executable lists for untrusted peers, off the
    /// runtime: the canonical path, or why it is refused (a lookup that failed to run counts as not permitted).
    async fn permitted_executable(
        &self,
        command: String,
        working_directory: Option<String>,
    ) -> Result<String, crate::exec::Refusal> {
        let (whitelist, blacklist) =
            (self.remote().executable_whitelist.clone(), self.remote().executable_blacklist.clone());
        tokio::task::spawn_blocking(move || {
            let path_var = std::env::var_os("PATH");
            crate::exec::permitted_executable(
                &command,
                working_directory.as_deref(),
                path_var.as_deref(),
                &whitelist,
                &blacklist,
            )
        })
        .await
        .unwrap_or(Err(crate::exec::Refusal::NotPermitted))
    }

    async fn handle(&self, route: Route, req: HttpRequest) -> HttpResponse {
        let method = req.method().clone();
        match (route, method) {
            (Route::Processes, Method::GET) => {
                // Written straight to bytes from the monitor's processes: a `serde_json::Value`, or a status of
                // each with copies of its strings, costs more to build and drop than the answer itself.
                let access = &self.peer.access;
                match self.control().list_body(|id| !access.hides(id)).await {
                    Ok(body) => server::json_bytes(StatusCode::OK, body),
                    Err(err) => {
                        json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("Cannot encode response: {err}"))
                    }
                }
            }
            (Route::Processes, _) => self.register(req).await,
            (Route::Process(id), Method::GET) => match self.control().get(&id).await {
                Ok(status) => ok_json(&status),
                Err(err) => error_response(&err),
            },
            (Route::Process(id), _) => {
                if let Err(res) = self
                    .authorize(self.remote().allow_remote_deregister, "Remote deregistration not allowed", Some(&id))
                    .await
                {
                    return res;
                }
                let force = req.uri().query().is_some_and(|query| query.split('&').any(|pair| pair == "force=true"));
                match self.control().deregister_with(&id, force).await {
                    Ok(()) => success(),
                    Err(err) => error_response(&err),
                }
            }
            (Route::Action(id, action), _) => self.act(&id, action, req).await,
            (Route::MonitorStatus, _) => ok_json(&self.control().monitor_status()),
            (Route::Metrics, _) => {
                let mut processes = self.control().list().await;
                processes.retain(|status| !self.peer.access.hides(&status.id));
                let text = crate::metrics::render(&self.control().monitor_status(), &processes);
                server::text_body(StatusCode::OK, text, "text/plain; version=0.0.4; charset=utf-8")
            }
            (Route::MonitorRestart, _) => {
                if let Err(res) = self
                    .authorize(self.remote().allow_remote_monitor_restart, "Monitor restart not allowed", None)
                    .await
                {
                    return res;
                }
                match self.control().restart_monitor().await {
                    Ok(()) => json_response(
                        StatusCode::OK,
                        &json!({ "success": true, "message": "ProcessMonitor restart initiated" }),
                    ),
                    Err(err) => error_response(&err),
                }
            }
            (Route::Events, _) => self.events(req).await,
            (Route::Logs(id), _) => self.logs(&id, req).await,
            (Route::Runs(id), _) => self.runs(&id).await,
            (Route::ProcessConfig(id), _) => self.process_config(&id).await,
            (Route::WhoAmI, _) => self.whoami().await,
            (Route::Config(item), Method::GET) => json_response(StatusCode::OK, &config_body(item, &self.settings)),
            (Route::Config(item), _) => self.put_config(item, req).await,
        }
    }

    /// Whether the peer is trusted: by address first, then by confirmed host name when a pattern needs one.
    async fn trusted(&self) -> bool {
        if self.peer.local() {
            return true;
        }
        let patterns = &self.remote().trusted_hosts;
        if host_is_trusted(self.peer.ip, &[], patterns) {
            return true;
        }
        if !patterns.iter().any(|pattern| needs_name_lookup(pattern)) {
            return false;
        }
        let names = self.api.names.confirmed_names(self.peer.ip).await;
        !names.is_empty() && host_is_trusted(self.peer.ip, &names, patterns)
    }

    /// Lets trusted peers through; checks an untrusted peer's permission and, for `target`, that the process was
    /// registered remotely. The error is the response to send.
    async fn authorize(&self, permitted: bool, refusal: &str, target: Option<&str>) -> Result<(), HttpResponse> {
        if self.trusted().await {
            return Ok(());
        }
        if !permitted {
            tracing::info!(peer = %self.peer.ip, "refused: {refusal}");
            return Err(json_error(StatusCode::FORBIDDEN, refusal));
        }
        match target.map(|id| (id, self.control().is_remote(id))) {
            None | Some((_, Some(true))) => Ok(()),
            Some((id, None)) => Err(error_response(&Error::NotFound(id.to_owned()))),
            Some((_, Some(false))) => Err(json_error(StatusCode::FORBIDDEN, "Cannot modify local process")),
        }
    }

    async fn act(&self, id: &str, action: Action, req: HttpRequest) -> HttpResponse {
        let remote = self.remote();
        let (permitted, refusal) = match action {
            Action::Start => (remote.allow_remote_start, "Remote start not allowed"),
            Action::Stop => (remote.allow_remote_stop, "Remote stop not allowed"),
            Action::Restart => (remote.allow_remote_start && remote.allow_remote_stop, "Remote restart not allowed"),
            Action::Enable => (remote.allow_remote_disable, "Remote enable not allowed"),
            Action::Disable => (remote.allow_remote_disable, "Remote disable not allowed"),
            Action::Autostart => (remote.allow_remote_autostart, "Remote autostart change not allowed"),
        };
        if let Err(res) = self.authorize(permitted, refusal, Some(id)).await {
            return res;
        }
        let control = self.control();
        let state = match action {
            Action::Start => control.start(id).await,
            Action::Stop => {
                return match control.stop_reporting(id).await {
                    Ok((state, dependents)) if dependents.is_empty() => {
                        json_response(StatusCode::OK, &json!({ "success": true, "state": state }))
                    }
                    Ok((state, dependents)) => json_response(
                        StatusCode::OK,
                        &json!({ "success": true, "state": state, "stoppedDependents": dependents }),
                    ),
                    Err(err) => error_response(&err),
                };
            }
            Action::Restart => control.restart(id).await,
            Action::Enable | Action::Disable => {
                return unit_result(control.set_enabled(id, action == Action::Enable).await);
            }
            Action::Autostart => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Autostart {
                    autostart: bool,
                }
                let body: Autostart = match self.json_body(req).await {
                    Ok(it) => it,
                    Err(res) => return res,
                };
                return unit_result(control.set_autostart(id, body.autostart).await);
            }
        };
        match state {
            Ok(state) => json_response(StatusCode::OK, &json!({ "success": true, "state": state })),
            Err(err) => error_response(&err),
        }
    }

    async fn register(&self, req: HttpRequest) -> HttpResponse {
        let trusted = self.trusted().await;
        if !trusted && !self.remote().allow_remote_register {
            tracing::info!(peer = %self.peer.ip, "refused: remote registration not allowed");
            return json_error(StatusCode::FORBIDDEN, "Remote registration not allowed");
        }
        let mut config = match self.parse_registration(req).await {
            Ok(it) => it,
            Err(res) => return res,
        };
        // Registrations through the unix socket are local ones, as through the registry.
        config.is_remote = !self.peer.local();
        config.partner = false;
        config.untrusted = !trusted;
        let partner = self.settings.partner_discovery.partner_instance_id.as_deref();
        if pm_core::is_partner_id(&self.control().monitor_status().instance_id, partner, &config.id) {
            tracing::info!(peer = %self.peer.ip, id = %config.id, "refused: registration with the partner instance's id");
            return json_response(
                StatusCode::CONFLICT,
                &json!({ "error": "Process ID reserved for the partner instance", "processId": config.id }),
            );
        }
        if !trusted {
            if let Err(res) = self.untrusted_registration(&mut config).await {
                return res;
            }
            if let Err(res) = self.untrusted_programs(&mut config).await {
                return res;
            }
        }
        let id = config.id.clone();
        match self.control().register(config).await {
            Ok(()) => json_response(StatusCode::OK, &json!({ "success": true, "processId": id })),
            Err(err) => error_response(&err),
        }
    }

    /// The registration in the body, with a valid id the peer may act on and valid fields; the error is the
    /// response to send.
    async fn parse_registration(&self, req: HttpRequest) -> Result<ProcessConfig, HttpResponse> {
        let config: ProcessConfig = self.json_body(req).await?;
        if let Err(Error::InvalidId { reason, .. }) = validate_process_id(&config.id) {
            return Err(json_error(StatusCode::BAD_REQUEST, &format!("Missing or invalid field: id ({reason})")));
        }
        self.peer.access.permits(auth::Scope::Admin, auth::Target::Process(&config.id))?;
        if let Err(err) = config.validate() {
            return Err(error_response(&err));
        }
        Ok(config)
    }

    /// The other programs an untrusted registration runs, its `onStateChange` hook and an exec probe: the
    /// executable lists decide for them too. On success their commands are replaced by the canonical paths that
    /// were checked. The error is the 403 to send.
    async fn untrusted_programs(&self, config: &mut ProcessConfig) -> Result<(), HttpResponse> {
        if let Some(hook) = config.on_state_change.as_mut() {
            let refusals = Refusals {
                own_executable: "onStateChange executable not permitted: the monitor's own executable",
                not_permitted: "onStateChange executable not permitted by whitelist/blacklist",
            };
            let working_directory = config.working_directory.clone();
            hook.command = self.permitted_program(hook.command.clone(), working_directory, refusals).await?;
        }
        if let Some(check) =
            config.aliveness_check.as_mut().filter(|check| check.probe_type == pm_core::ProbeType::Exec)
        {
            let refusals = Refusals {
                own_executable: "Probe executable not permitted: the monitor's own executable (alivenessCheck.command)",
                not_permitted: "Probe executable not permitted by whitelist/blacklist (alivenessCheck.command)",
            };
            let (command, working_directory) =
                (check.command.clone().unwrap_or_default(), config.working_directory.clone());
            check.command = Some(self.permitted_program(command, working_directory, refusals).await?);
        }
        Ok(())
    }

    /// [`Ctx::permitted_executable`] with the 403 to send when it refuses, its message from `refusals`.
    async fn permitted_program(
        &self,
        command: String,
        working_directory: Option<String>,
        refusals: Refusals,
    ) -> Result<String, HttpResponse> {
        match self.permitted_executable(command, working_directory).await {
            Ok(canonical) => Ok(canonical),
            Err(crate::exec::Refusal::OwnExecutable) => Err(json_error(StatusCode::FORBIDDEN, refusals.own_executable)),
            Err(crate::exec::Refusal::NotPermitted) => Err(json_error(StatusCode::FORBIDDEN, refusals.not_permitted)),
        }
    }

    /// What an untrusted peer's registration must satisfy (docs/security-limits.md); on success the command is
    /// replaced by the canonical path that was checked. The error is the 403 to send.
    async fn untrusted_registration(&self, config: &mut ProcessConfig) -> Result<(), HttpResponse> {
        let refuse = |message: &str| {
            tracing::info!(peer = %self.peer.ip, "refused: {}", pm_core::escape_control(message));
            json_error(StatusCode::FORBIDDEN, message)
        };
        if let Err(message) = pm_core::untrusted_budget(config) {
            return Err(refuse(&message));
        }
        let allowed = &self.remote().allowed_environment;
        if let Some(name) = config.environment.iter().flatten().map(|(name, _)| name).find(|name| {
            let upper = name.to_ascii_uppercase();
            upper.starts_with("LD_") || upper.starts_with("DYLD_") || !allowed.contains(name)
        }) {
            return Err(refuse(&format!("Environment variable {name} not permitted for untrusted hosts")));
        }
        if let Some(check) = &config.aliveness_check {
            // What the check connects to: the URL of an http check, the host of a tcp check (an exec check runs
            // a program, checked against the lists below).
            let target = match check.probe_type {
                pm_core::ProbeType::Http => Some(("alivenessCheck.url", check.url.clone())),
                pm_core::ProbeType::Tcp => {
                    let host = check.host.as_deref().unwrap_or("127.0.0.1");
                    let host = if host.contains(':') && !host.starts_with('[') {
                        format!("[{host}]")
                    } else {
                        host.to_owned()
                    };
                    Some(("alivenessCheck.host", format!("http://{host}/")))
                }
                pm_core::ProbeType::Exec => None,
            };
            let urls =
                target.into_iter().chain(check.status_url.iter().map(|url| ("alivenessCheck.statusUrl", url.clone())));
            for (field, url) in urls {
                if !pm_core::url_is_loopback(&url) {
                    return Err(refuse(&format!(
                        "{field} must target loopback (localhost, 127.0.0.0/8 or [::1]) for untrusted hosts"
                    )));
                }
            }
        }
        let resolved = self.permitted_executable(config.command.clone(), config.working_directory.clone()).await;
        match resolved {
            Ok(canonical) => {
                config.command = canonical;
                Ok(())
            }
            Err(crate::exec::Refusal::OwnExecutable) => {
                Err(refuse("Executable not permitted: the monitor's own executable"))
            }
            Err(crate::exec::Refusal::NotPermitted) => Err(refuse("Executable not permitted by whitelist/blacklist")),
        }
    }

    async fn put_config(&self, item: ConfigItem, req: HttpRequest) -> HttpResponse {
        if !self.trusted().await {
            tracing::info!(peer = %self.peer.ip, "refused: configuration change from an untrusted host");
            return json_error(StatusCode::FORBIDDEN, "Configuration changes require trusted host");
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        struct TrustedHosts {
            trusted_hosts: Vec<String>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Patterns {
            patterns: Vec<String>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Enabled {
            enabled: bool,
        }
        let update = match item {
            ConfigItem::RemoteAccess => {
                self.json_body::<RemoteAccessPatch>(req).await.map(SettingsUpdate::RemoteAccess)
            }
            ConfigItem::TrustedHosts => {
                self.json_body::<TrustedHosts>(req).await.map(|it| SettingsUpdate::TrustedHosts(it.trusted_hosts))
            }
            ConfigItem::Whitelist => {
                self.json_body::<Patterns>(req).await.map(|it| SettingsUpdate::ExecutableWhitelist(it.patterns))
            }
            ConfigItem::Blacklist => {
                self.json_body::<Patterns>(req).await.map(|it| SettingsUpdate::ExecutableBlacklist(it.patterns))
            }
            ConfigItem::StandaloneMode => {
                self.json_body::<Enabled>(req).await.map(|it| SettingsUpdate::StandaloneMode(it.enabled))
            }
            ConfigItem::PartnerDiscovery => {
                self.json_body::<PartnerDiscoveryPatch>(req).await.map(SettingsUpdate::PartnerDiscovery)
            }
        };
        let update = match update {
            Ok(it) => it,
            Err(res) => return res,
        };
        match self.control().update_settings(update).await {
            Ok(settings) => json_response(StatusCode::OK, &config_body(item, &settings)),
            Err(err) => error_response(&err),
        }
    }

    /// `GET /events`: the event stream (see `docs/events-and-logs.md`).
    async fn events(&self, req: HttpRequest) -> HttpResponse {
        let mut process = None;
        for (key, value) in query_pairs(req.uri().query()) {
            match key.as_str() {
                "process" => {
                    if let Err(err) = validate_process_id(&value) {
                        return error_response(&err);
                    }
                    process = Some(value);
                }
                other => {
                    return json_error(StatusCode::BAD_REQUEST, &format!("Invalid query: unknown parameter {other:?}"))
                }
            }
        }
        // A token limited to processes may watch only one of them, named with `?process=`.
        if self.peer.access.grant().is_some_and(|grant| !grant.processes.is_empty()) {
            let target = auth::Target::Process(process.as_deref().unwrap_or_default());
            if let Err(res) = self.peer.access.permits(auth::Scope::Read, target) {
                return res;
            }
        }
        let trusted = self.trusted().await;
        if let Some(id) = &process {
            if !trusted && self.control().is_remote(id) == Some(false) {
                return json_error(StatusCode::FORBIDDEN, "Cannot watch local process");
            }
        }
        let bus = self.control().event_bus();
        if bus.is_closed() {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "ProcessMonitor is shutting down");
        }
        let Some(permit) = self.api.streams.acquire() else {
            return too_many_streams();
        };
        let last_event_id = req.headers().get("last-event-id").and_then(|value| value.to_str().ok());
        let filter = crate::sse::EventFilter { process, trusted };
        crate::sse::events_response(bus, filter, last_event_id, permit, &self.api.streams)
    }

    /// The run folders of a process a peer may read the logs of: untrusted peers only those of processes
    /// registered remotely.
    async fn readable_runs(&self, id: &str) -> Result<Vec<std::path::PathBuf>, HttpResponse> {
        match self.control().is_remote(id) {
            None => return Err(error_response(&Error::NotFound(id.to_owned()))),
            Some(false) if !self.trusted().await => {
                return Err(json_error(StatusCode::FORBIDDEN, "Cannot read logs of local process"));
            }
            Some(_) => {}
        }
        let (control, key) = (self.api.control.clone(), id.to_owned());
        match tokio::task::spawn_blocking(move || control.run_dirs(&key)).await {
            Ok(Ok(dirs)) => Ok(dirs),
            Ok(Err(err)) => Err(error_response(&err)),
            Err(err) => Err(json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("Cannot list runs: {err}"))),
        }
    }

    /// `GET /processes/{id}/config`: the whole configuration, as `GET /processes/{id}` is readable by every peer.
    /// `environment` values (often secrets) are shown only to peers that could also change the configuration
    /// (trusted ones, with no token or an `admin` one); everyone else gets the names with the value `"(hidden)"`.
    async fn process_config(&self, id: &str) -> HttpResponse {
        let config = match self.control().process_config(id) {
            Ok(config) => config,
            Err(err) => return error_response(&err),
        };
        let mut value = match serde_json::to_value(&config) {
            Ok(value) => value,
            Err(err) => {
                return json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("Cannot encode response: {err}"))
            }
        };
        let sees_secrets =
            self.peer.access.grant().is_none_or(|grant| grant.scope == auth::Scope::Admin) && self.trusted().await;
        if !sees_secrets {
            if let Some(Value::Object(environment)) = value.get_mut("environment") {
                for entry in environment.values_mut() {
                    *entry = json!(HIDDEN_VALUE);
                }
            }
        }
        json_response(StatusCode::OK, &value)
    }

    /// `GET /auth/whoami`: how the monitor sees the caller (the dashboard hides what its token cannot do).
    async fn whoami(&self) -> HttpResponse {
        let trusted = self.trusted().await;
        let grant = self.peer.access.grant();
        let mut body = json!({
            "transport": if self.peer.local() { "socket" } else { "tcp" },
            "trusted": trusted,
            "token": grant.is_some(),
            "scope": grant.map_or(auth::Scope::Admin, |grant| grant.scope).as_str(),
        });
        if !self.peer.local() {
            body["address"] = json!(self.peer.ip.to_string());
        }
        if let Some(grant) = grant.filter(|grant| !grant.processes.is_empty()) {
            body["processes"] = json!(grant.processes);
        }
        if !trusted {
            let remote = self.remote();
            body["permissions"] = json!({
                "allowRemoteRegister": remote.allow_remote_register,
                "allowRemoteDeregister": remote.allow_remote_deregister,
                "allowRemoteStart": remote.allow_remote_start,
                "allowRemoteStop": remote.allow_remote_stop,
                "allowRemoteDisable": remote.allow_remote_disable,
                "allowRemoteAutostart": remote.allow_remote_autostart,
                "allowRemoteMonitorRestart": remote.allow_remote_monitor_restart,
            });
        }
        json_response(StatusCode::OK, &body)
    }

    /// `GET /processes/{id}/runs`.
    async fn runs(&self, id: &str) -> HttpResponse {
        let dirs = match self.readable_runs(id).await {
            Ok(it) => it,
            Err(res) => return res,
        };
        let runs = tokio::task::spawn_blocking(move || crate::logs::describe_runs(&dirs)).await.unwrap_or_default();
        json_response(StatusCode::OK, &json!({ "processId": id, "runs": runs }))
    }

    /// `GET /processes/{id}/logs`.
    async fn logs(&self, id: &str, req: HttpRequest) -> HttpResponse {
        let query = match crate::logs::LogsQuery::parse(&query_pairs(req.uri().query())) {
            Ok(it) => it,
            Err(reason) => return json_error(StatusCode::BAD_REQUEST, &format!("Invalid query: {reason}")),
        };
        let dirs = match self.readable_runs(id).await {
            Ok(it) => it,
            Err(res) => return res,
        };
        let Some(dir) = crate::logs::pick_run(&dirs, query.run.as_deref()).cloned() else {
            let message = if query.run.is_some() { "Run not found" } else { "No logs" };
            return json_response(StatusCode::NOT_FOUND, &json!({ "error": message, "processId": id }));
        };
        let (file_name, tail, follow) = (query.file_name, query.tail, query.follow);
        // A one-off read goes out in bounded chunks as well, so a large tail never sits in memory whole; only
        // followers count against the stream cap.
        let permit = match follow {
            true => match self.api.streams.acquire() {
                Some(permit) => Some(permit),
                None => return too_many_streams(),
            },
            false => None,
        };
        let started =
            tokio::task::spawn_blocking(move || crate::logs::Follower::start(dir, file_name, tail, !follow)).await;
        let follower = match started {
            Ok(Ok(it)) => it,
            Ok(Err(err)) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("Cannot read log: {err}")),
            Err(err) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("Cannot read log: {err}")),
        };
        let (control, key) = (self.api.control.clone(), id.to_owned());
        let bus = control.event_bus();
        let runs: Arc<dyn Fn() -> Vec<std::path::PathBuf> + Send + Sync> =
            Arc::new(move || control.run_dirs(&key).unwrap_or_default());
        let (mut res, tx) = crate::sse::stream_response("text/plain; charset=utf-8", &self.api.streams);
        // Where the answer stands, so that a client that reconnects can skip what it already has.
        res.headers_mut().insert("x-log-tail-bytes", hyper::header::HeaderValue::from(follower.tail_bytes()));
        if let Some(run) = follower.run_name().and_then(|run| hyper::header::HeaderValue::from_str(run).ok()) {
            res.headers_mut().insert("x-log-run", run);
        }
        tokio::spawn(async move {
            let _permit = permit;
            // Followers end with the monitor (see `EventBus::close`).
            crate::logs::follow(follower, follow, runs, tx, move || bus.is_closed()).await;
        });
        res
    }

    /// Reads and parses a JSON body: 400 `Invalid JSON: ...` when it does not parse, 400
    /// `Missing or invalid field: ...` when it parses but does not fit `T`.
    async fn json_body<T: DeserializeOwned>(&self, req: HttpRequest) -> Result<T, HttpResponse> {
        let bytes = server::read_body(req.into_body(), self.api.body_timeout).await?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|err| json_error(StatusCode::BAD_REQUEST, &format!("Invalid JSON: {err}")))?;
        // Every body is an object with named keys: serde would also fill a struct from an array of its fields in
        // order (`[["10.0.0.1"]]` as trusted hosts), which no client means.
        if !value.is_object() {
            return Err(json_error(StatusCode::BAD_REQUEST, "Invalid JSON: the body must be a JSON object"));
        }
        serde_json::from_value(value)
            .map_err(|err| json_error(StatusCode::BAD_REQUEST, &format!("Missing or invalid field: {err}")))
    }
}

/// What `GET /processes/{id}/config` shows instead of an `environment` value to peers that may not see it.
const HIDDEN_VALUE: &str = "(hidden)";

/// The body of `GET /config/{item}` (and of a successful `PUT`).
fn config_body(item: ConfigItem, settings: &Settings) -> Value {
    let remote = &settings.remote_access;
    match item {
        // Without keys this version does not know (kept in the registry), so that the object can be PUT back.
        ConfigItem::RemoteAccess => {
            let remote = RemoteAccessConfig { extra: serde_json::Map::new(), ..remote.clone() };
            let mut value = serde_json::to_value(&remote).unwrap_or(Value::Null);
            // The registry leaves these out while they have their defaults; the API always shows them.
            value["allowedEnvironment"] = json!(remote.allowed_environment);
            value["maxUntrustedProcesses"] = json!(remote.max_untrusted_processes);
            value
        }
        ConfigItem::TrustedHosts => json!({ "trustedHosts": remote.trusted_hosts }),
        ConfigItem::Whitelist => json!({ "patterns": remote.executable_whitelist }),
        ConfigItem::Blacklist => json!({ "patterns": remote.executable_blacklist }),
        ConfigItem::StandaloneMode => json!({ "enabled": settings.standalone_mode }),
        ConfigItem::PartnerDiscovery => {
            let discovery =
                pm_core::PartnerDiscovery { extra: serde_json::Map::new(), ..settings.partner_discovery.clone() };
            serde_json::to_value(discovery).unwrap_or(Value::Null)
        }
    }
}

fn ok_json<T: serde::Serialize>(value: &T) -> HttpResponse {
    match serde_json::to_value(value) {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(err) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("Cannot encode response: {err}")),
    }
}

fn success() -> HttpResponse {
    json_response(StatusCode::OK, &json!({ "success": true }))
}

fn unit_result(result: Result<(), Error>) -> HttpResponse {
    match result {
        Ok(()) => success(),
        Err(err) => error_response(&err),
    }
}

/// Maps a domain error to its status and wire message.
fn error_response(err: &Error) -> HttpResponse {
    let with_id = |status: StatusCode, message: &str, id: &str| {
        json_response(status, &json!({ "error": message, "processId": id }))
    };
    match err {
        Error::NotFound(id) => with_id(StatusCode::NOT_FOUND, "Process not found", id),
        Error::Disabled(id) => with_id(StatusCode::BAD_REQUEST, "Process is disabled", id),
        Error::AlreadyExists(id) => with_id(StatusCode::CONFLICT, "Process ID already exists", id),
        Error::InvalidId { id, reason } => {
            with_id(StatusCode::BAD_REQUEST, &format!("Invalid process ID: {reason}"), id)
        }
        Error::InvalidField(_) | Error::InvalidPattern { .. } => json_error(StatusCode::BAD_REQUEST, &err.to_string()),
        Error::NotAllowed(message) => json_error(StatusCode::FORBIDDEN, message),
        Error::Dependency(message) => json_error(StatusCode::CONFLICT, message),
        Error::Busy(_) => {
            let mut res = json_error(StatusCode::SERVICE_UNAVAILABLE, "Registry busy, retry later");
            res.headers_mut().insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
            res
        }
        Error::ShuttingDown => json_error(StatusCode::SERVICE_UNAVAILABLE, "ProcessMonitor is shutting down"),
        Error::Storage(message) => {
            tracing::error!("storage error while serving the remote API: {message}");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("Storage error: {message}"))
        }
        Error::Internal { context, source } => {
            tracing::error!("internal error while serving the remote API: {err}");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("Internal error: {context}: {source}"))
        }
        Error::Io { .. } => {
            tracing::error!("system error while serving the remote API: {err}");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string())
        }
    }
}

/// The answer when every stream slot is taken.
fn too_many_streams() -> HttpResponse {
    let mut res = json_error(StatusCode::SERVICE_UNAVAILABLE, "Too many streams");
    res.headers_mut().insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

fn allow_header(methods: &[Method], with_options: bool) -> String {
    let mut names: Vec<&str> = methods.iter().map(Method::as_str).collect();
    if with_options {
        names.push("OPTIONS");
    }
    names.join(", ")
}

/// The answer to a CORS preflight: 204 with the endpoint's methods. No `Access-Control-Allow-Origin` is sent, so
/// browsers do not let other origins read the API.
fn preflight(methods: &[Method]) -> HttpResponse {
    let mut res = HttpResponse::new(Default::default());
    *res.status_mut() = StatusCode::NO_CONTENT;
    let headers = res.headers_mut();
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    put("access-control-allow-methods", allow_header(methods, false));
    put("access-control-allow-headers", "content-type".to_owned());
    put("access-control-max-age", "600".to_owned());
    put(ALLOW.as_str(), allow_header(methods, true));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str, expected: Option<Route>) {
        assert_eq!(Route::parse(path), expected, "path {path:?}");
    }

    #[test]
    fn routes() {
        check("/processes", Some(Route::Processes));
        check("/processes/api", Some(Route::Process("api".to_owned())));
        check("/processes/a%2Fb", Some(Route::Process("a/b".to_owned())));
        check("/processes/api/start", Some(Route::Action("api".to_owned(), Action::Start)));
        check("/processes/api/autostart", Some(Route::Action("api".to_owned(), Action::Autostart)));
        check("/processes//stop", Some(Route::Action(String::new(), Action::Stop)));
        check("/processes/api/explode", None);
        check("/processes/api/start/now", None);
        check("/monitor/status", Some(Route::MonitorStatus));
        check("/monitor/restart", Some(Route::MonitorRestart));
        check("/config/trusted-hosts", Some(Route::Config(ConfigItem::TrustedHosts)));
        check("/config/secrets", None);
        check("/events", Some(Route::Events));
        check("/processes/api/logs", Some(Route::Logs("api".to_owned())));
        check("/processes/api/runs", Some(Route::Runs("api".to_owned())));
        check("/", None);
        check("", None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("%2e%2E"), "..");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
        assert_eq!(percent_decode("plain-id_1.2"), "plain-id_1.2");
    }

    #[test]
    fn error_mapping() {
        let check = |err: Error, status: StatusCode| assert_eq!(error_response(&err).status(), status, "{err:?}");
        check(Error::NotFound("x".into()), StatusCode::NOT_FOUND);
        check(Error::Disabled("x".into()), StatusCode::BAD_REQUEST);
        check(Error::AlreadyExists("x".into()), StatusCode::CONFLICT);
        check(Error::InvalidId { id: "x".into(), reason: "r".into() }, StatusCode::BAD_REQUEST);
        check(Error::InvalidField("f".into()), StatusCode::BAD_REQUEST);
        check(Error::InvalidPattern { pattern: "p".into(), reason: "r".into() }, StatusCode::BAD_REQUEST);
        check(Error::NotAllowed("no".into()), StatusCode::FORBIDDEN);
        check(Error::Dependency("needed by web".into()), StatusCode::CONFLICT);
        check(Error::Busy("b".into()), StatusCode::SERVICE_UNAVAILABLE);
        check(Error::ShuttingDown, StatusCode::SERVICE_UNAVAILABLE);
        check(Error::Storage(pm_core::Cause::message("s")), StatusCode::INTERNAL_SERVER_ERROR);
        check(Error::internal("task", pm_core::Cause::message("panicked")), StatusCode::INTERNAL_SERVER_ERROR);
        check(Error::io("signal", std::io::Error::other("no")), StatusCode::INTERNAL_SERVER_ERROR);
        // A storage error's body reads as it always has; a failed task is not called one.
        let body = |err: Error| match error_response(&err).into_body() {
            crate::body::Body::Full(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            other => panic!("not a whole body: {other:?}"),
        };
        let storage = Error::storage(std::io::Error::other("/x/a.json: cannot read: disk full"));
        assert_eq!(body(storage), serde_json::json!({"error": "Storage error: /x/a.json: cannot read: disk full"}));
        let internal = Error::internal("registry task failed", pm_core::Cause::message("task 3 panicked"));
        assert_eq!(
            body(internal),
            serde_json::json!({"error": "Internal error: registry task failed: task 3 panicked"})
        );
        assert_eq!(error_response(&Error::Busy("b".into())).headers()[hyper::header::RETRY_AFTER], "1");
    }

    #[test]
    fn preflight_lists_the_methods() {
        let res = preflight(&[Method::GET, Method::PUT]);
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(res.headers()["access-control-allow-methods"], "GET, PUT");
        assert_eq!(res.headers()[ALLOW], "GET, PUT, OPTIONS");
    }
}
