//! `AlivenessServerHelper`: health and status endpoints for services that ProcessMonitor manages.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use hyper::{Method, StatusCode};
use pm_core::Timestamp;
use serde_json::{json, Map, Value};

use crate::error::Error;
use crate::server::{self, json_error, json_response, HttpRequest, HttpResponse, ServerConfig, ServerHandle};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type HealthFn = dyn Fn() -> BoxFuture<bool> + Send + Sync;
type StatusFn = dyn Fn() -> BoxFuture<Map<String, Value>> + Send + Sync;

/// What a service reports through its [`AlivenessServerHelper`]: an async health check and an async status map.
///
/// The default is always healthy with an empty status map. A callback that panics counts as unhealthy
/// (health) or answers 500 (status); it does not bring the server down.
#[derive(Clone)]
pub struct AlivenessCallback {
    on_health_check: Arc<HealthFn>,
    on_status_request: Arc<StatusFn>,
}

impl std::fmt::Debug for AlivenessCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlivenessCallback").finish_non_exhaustive()
    }
}

impl Default for AlivenessCallback {
    fn default() -> Self {
        AlivenessCallback::new(|| async { true }, || async { Map::new() })
    }
}

impl AlivenessCallback {
    /// Both callbacks: `on_health_check` answers whether the service is healthy, `on_status_request` the map
    /// that `GET /status` reports (with `timestamp` and `pid` added).
    pub fn new<H, HF, S, SF>(on_health_check: H, on_status_request: S) -> AlivenessCallback
    where
        H: Fn() -> HF + Send + Sync + 'static,
        HF: Future<Output = bool> + Send + 'static,
        S: Fn() -> SF + Send + Sync + 'static,
        SF: Future<Output = Map<String, Value>> + Send + 'static,
    {
        AlivenessCallback {
            on_health_check: Arc::new(move || Box::pin(on_health_check())),
            on_status_request: Arc::new(move || Box::pin(on_status_request())),
        }
    }

    /// Replaces the health callback.
    pub fn with_health_check<H, HF>(mut self, on_health_check: H) -> AlivenessCallback
    where
        H: Fn() -> HF + Send + Sync + 'static,
        HF: Future<Output = bool> + Send + 'static,
    {
        self.on_health_check = Arc::new(move || Box::pin(on_health_check()));
        self
    }

    /// Replaces the status callback.
    pub fn with_status_request<S, SF>(mut self, on_status_request: S) -> AlivenessCallback
    where
        S: Fn() -> SF + Send + Sync + 'static,
        SF: Future<Output = Map<String, Value>> + Send + 'static,
    {
        self.on_status_request = Arc::new(move || Box::pin(on_status_request()));
        self
    }
}

/// A small HTTP server a managed service runs so ProcessMonitor's aliveness check can ask it how it is.
///
/// - `GET /health`: 200 `{"healthy": true, "timestamp": "<UTC>"}`, or 503 with `"healthy": false`.
/// - `GET /status`: 200 with the status callback's map plus `timestamp` and `pid`.
/// - Other paths answer 404, other methods 405.
///
/// [`AlivenessServerHelper::new`] listens on `127.0.0.1`; [`AlivenessServerHelper::with_address`] on any address.
/// The server stops on [`AlivenessServerHelper::stop`] or when the helper is dropped.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use pm_http::{AlivenessCallback, AlivenessServerHelper, HttpClient};
///
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() {
///     let callback = AlivenessCallback::default()
///         .with_health_check(|| async { true })
///         .with_status_request(|| async {
///             let mut map = serde_json::Map::new();
///             map.insert("version".to_owned(), "1.0.0".into());
///             map
///         });
///     let mut aliveness = AlivenessServerHelper::new(0, callback);
///     let addr = aliveness.start().await.unwrap();
///
///     let client = HttpClient::new();
///     let url = format!("http://{addr}/health");
///     let response = client.get(&url, Duration::from_secs(2)).await.unwrap();
///     assert_eq!(response.status, 200);
///     assert!(pm_http::check_health(&client, &url, Duration::from_secs(2)).await);
///
///     aliveness.stop().await;
/// }
/// ```
#[derive(Debug)]
pub struct AlivenessServerHelper {
    addr: SocketAddr,
    callback: AlivenessCallback,
    server: Option<ServerHandle>,
}

impl AlivenessServerHelper {
    /// A helper that will listen on `127.0.0.1:port` (0 picks a free port, see [`AlivenessServerHelper::start`]).
    pub fn new(port: u16, callback: AlivenessCallback) -> AlivenessServerHelper {
        AlivenessServerHelper::with_address(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), callback)
    }

    /// A helper that will listen on `addr` (`[::]:port` listens on every IPv4 and IPv6 interface).
    pub fn with_address(addr: SocketAddr, callback: AlivenessCallback) -> AlivenessServerHelper {
        AlivenessServerHelper { addr, callback, server: None }
    }

    /// Binds and starts serving; answers the bound address (with the real port when asked for port 0).
    /// Starting a started helper just answers its address. Must be called inside a tokio runtime.
    pub async fn start(&mut self) -> Result<SocketAddr, Error> {
        if let Some(server) = &self.server {
            return Ok(server.local_addr());
        }
        let listener = crate::bind(self.addr).map_err(|source| Error::Bind { addr: self.addr, source })?;
        let handler = Arc::new(HelperHandler { callback: self.callback.clone() });
        let server = server::spawn(listener, handler, ServerConfig::default())?;
        let addr = server.local_addr();
        tracing::info!(%addr, "aliveness helper listening");
        self.server = Some(server);
        Ok(addr)
    }

    /// Stops serving (open requests get a short grace period). Stopping a stopped helper does nothing.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    /// The address it listens on while started.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(ServerHandle::local_addr)
    }
}

struct HelperHandler {
    callback: AlivenessCallback,
}

impl server::Handler for HelperHandler {
    async fn call(&self, req: HttpRequest, _peer: SocketAddr) -> HttpResponse {
        let path = req.uri().path();
        if path != "/health" && path != "/status" {
            return json_error(StatusCode::NOT_FOUND, "Not found");
        }
        if req.method() != Method::GET {
            return server::method_not_allowed("GET");
        }
        let timestamp = Timestamp::now().to_string();
        if path == "/health" {
            // Run on its own task so a panicking callback only costs this answer.
            let healthy = tokio::spawn((self.callback.on_health_check)()).await.unwrap_or(false);
            let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            return json_response(status, &json!({ "healthy": healthy, "timestamp": timestamp }));
        }
        match tokio::spawn((self.callback.on_status_request)()).await {
            Ok(mut map) => {
                map.insert("timestamp".to_owned(), Value::String(timestamp));
                map.insert("pid".to_owned(), Value::from(std::process::id()));
                json_response(StatusCode::OK, &Value::Object(map))
            }
            Err(err) => {
                tracing::warn!("aliveness status callback failed: {err}");
                json_error(StatusCode::INTERNAL_SERVER_ERROR, "Status callback failed")
            }
        }
    }
}
