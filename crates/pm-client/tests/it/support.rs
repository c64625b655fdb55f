//! Test fixtures: the in-memory control plane of `pm_http::testing` behind a real remote API on loopback, and bare
//! listeners.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pm_client::{RemoteClientOptions, RemoteProcessMonitorClient};
use pm_http::testing::FakeControl;
use pm_http::{ServerConfig, ServerHandle};
use tokio::task::JoinHandle;

/// A remote API served on `addr` (port 0 picks one) with a [`FakeControl`] behind it.
pub struct Monitor {
    pub fake: Arc<FakeControl>,
    pub server: ServerHandle,
}

impl Monitor {
    pub fn start() -> Monitor {
        Monitor::start_on("127.0.0.1:0".parse().unwrap(), "default")
    }

    pub fn start_on(addr: SocketAddr, instance_id: &str) -> Monitor {
        let fake = FakeControl::for_instance(instance_id);
        let listener = pm_http::bind(addr).unwrap();
        let server = pm_http::spawn_remote_api(listener, fake.clone(), ServerConfig::default()).unwrap();
        Monitor { fake, server }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn client(&self) -> RemoteProcessMonitorClient {
        RemoteProcessMonitorClient::new(&format!("http://{}/", self.addr())).unwrap()
    }
}

/// Client options for `addr` with short timeouts.
pub fn options(addr: SocketAddr, timeout: Duration, retries: u32) -> RemoteClientOptions {
    RemoteClientOptions {
        base_url: format!("http://{addr}"),
        timeout,
        retries,
        retry_delay: Duration::from_millis(50),
        ..RemoteClientOptions::default()
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn unused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// What a [`Listener`] does with the connections it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Closes each connection at once, without answering.
    Close,
    /// Keeps each connection open and never answers.
    Hang,
}

/// A bare TCP listener that counts the connections it accepts; stopped on drop.
pub struct Listener {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Listener {
    pub async fn start(addr: SocketAddr, behaviour: Behaviour) -> std::io::Result<Listener> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                if behaviour == Behaviour::Hang {
                    held.push(stream);
                }
            }
        });
        Ok(Listener { addr, accepted, task })
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}
