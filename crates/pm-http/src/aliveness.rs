//! The monitor's aliveness server: `GET /alive` and `GET /status`, answered from memory.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::{Method, StatusCode};
use pm_core::MonitorStatus;

use crate::server::{
    self, json_error, json_response, text_response, HttpRequest, HttpResponse, ServerConfig, ServerHandle,
};

/// Starts the aliveness server on `listener` (which [`crate::bind`] can make). Must be called inside a tokio runtime.
///
/// `GET /alive` answers 200 `OK` (text/plain); `GET /status` answers `status()` as JSON. Other paths answer 404,
/// other methods 405. `status` is called for each `/status` request, so it must answer from memory and fast.
pub fn spawn_aliveness<F>(
    listener: std::net::TcpListener,
    status: F,
    config: ServerConfig,
) -> std::io::Result<ServerHandle>
where
    F: Fn() -> MonitorStatus + Send + Sync + 'static,
{
    server::spawn(listener, Arc::new(Aliveness { status }), config)
}

struct Aliveness<F> {
    status: F,
}

impl<F> server::Handler for Aliveness<F>
where
    F: Fn() -> MonitorStatus + Send + Sync + 'static,
{
    /// The monitor's own clients (the partner, the command line) connect from the loopback addresses.
    fn trusted_peer(&self, ip: std::net::IpAddr) -> bool {
        ip == std::net::Ipv4Addr::LOCALHOST || ip == std::net::Ipv6Addr::LOCALHOST
    }

    async fn call(&self, req: HttpRequest, _peer: SocketAddr) -> HttpResponse {
        let path = req.uri().path();
        if path != "/alive" && path != "/status" {
            return json_error(StatusCode::NOT_FOUND, "Not found");
        }
        if req.method() != Method::GET {
            return server::method_not_allowed("GET");
        }
        if path == "/alive" {
            return text_response(StatusCode::OK, "OK");
        }
        match serde_json::to_value((self.status)()) {
            Ok(value) => json_response(StatusCode::OK, &value),
            Err(err) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("Cannot encode status: {err}")),
        }
    }
}
