//! Raw hyper 1.x plumbing for ProcessMonitor: the servers, a small client, the remote API router and the
//! `AlivenessServerHelper` for managed services.
//!
//! - [`bind`] makes listening sockets (dual-stack for `[::]`); [`spawn_remote_api`] serves the remote API against
//!   a [`ControlPlane`]; [`spawn_aliveness`] serves the monitor's `/alive` and `/status`; each gives a
//!   [`ServerHandle`] for its address and a graceful [`ServerHandle::shutdown`].
//! - [`HttpClient`] is the one HTTP client of the monitor and its clients; [`check_health`] is the aliveness check.
//! - [`AlivenessServerHelper`] gives a managed Rust service its `/health` and `/status` endpoints.
//!
//! Invariants:
//! - Only this crate knows HTTP and the JSON wire shapes of `wire-formats.md`; it knows nothing of child
//!   processes (the supervisor acts behind [`ControlPlane`]).
//! - Handlers never fail: every error is a JSON `{"error": ...}` response with its status code.
//! - Every socket, server side and client side, has `TCP_NODELAY`, and every response is sent whole with a
//!   `Content-Length`, except the streams (`GET /events`, followed logs), which are chunked, bounded in number
//!   and in memory. Request bodies are size-limited, request heads have a read timeout, connections are
//!   bounded ([`ServerConfig`]).
//! - Remote API trust comes from the TCP peer address (or the unix socket peer's credentials), never from a
//!   header; a bearer token ([`auth`]) only narrows what an address may do, and another site's page is refused.
//!
//! With the `test-support` feature (for test suites only), the module `testing` holds test doubles: a fake
//! [`ControlPlane`] and a fixed monitor status.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use pm_core::{MonitorState, MonitorStatus, Timestamp};
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() {
//!     let status = || MonitorStatus {
//!         instance_id: "default".to_owned(),
//!         pid: std::process::id(),
//!         started_at: Timestamp::now(),
//!         uptime: 0,
//!         state: MonitorState::Running,
//!         standalone_mode: true,
//!         partner_instance_id: None,
//!         partner_status: None,
//!         partner_pid: None,
//!         managed_process_count: 0,
//!         running_process_count: 0,
//!         version: None,
//!         aliveness_port: None,
//!         remote_port: None,
//!         containment: None,
//!         containment_reason: None,
//!         registry_error: None,
//!     };
//!     let listener = pm_http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
//!     let server = pm_http::spawn_aliveness(listener, status, pm_http::ServerConfig::default()).unwrap();
//!
//!     let client = pm_http::HttpClient::new();
//!     let url = format!("http://{}/alive", server.local_addr());
//!     let response = client.get(&url, Duration::from_secs(2)).await.unwrap();
//!     assert_eq!((response.status, response.body.as_slice()), (200, b"OK".as_slice()));
//!
//!     server.shutdown().await;
//! }
//! ```
#![deny(missing_docs)]

mod aliveness;
mod api;
pub mod auth;
mod body;
mod client;
mod control;
mod error;
mod events;
mod exec;
mod helper;
mod logs;
pub mod metrics;
mod names;
mod server;
mod sse;
mod stream_client;
#[cfg(feature = "test-support")]
pub mod testing;
#[cfg(feature = "tls")]
mod tls;
mod ui;
mod unix;

pub use aliveness::spawn_aliveness;
#[cfg(feature = "tls")]
pub use api::spawn_remote_api_tls;
pub use api::{spawn_remote_api, spawn_remote_api_with, spawn_unix_api, ApiOptions};
pub use client::{check_health, HttpClient, HttpResponse, MAX_CHECK_BODY_BYTES};
pub use control::{list_body, ControlPlane};
pub use error::Error;
pub use events::{EventBus, DEFAULT_EVENT_RING};
pub use exec::{is_own_executable, own_executables};
pub use helper::{AlivenessCallback, AlivenessServerHelper};
pub use server::{bind, ServerConfig, ServerHandle};
pub use stream_client::{get_stream_unix, HttpStream, SseEvent, SseParser};
#[cfg(feature = "tls")]
pub use tls::TlsConfig;
pub use unix::{bind_unix, blocking_exchange, blocking_request, connect_unix, UnixResponse, UnixServerHandle};
