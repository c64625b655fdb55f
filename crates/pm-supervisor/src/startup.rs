//! The start-up order of the daemon (issue 12, item 1) and the checks before it touches its home (issue 21,
//! item 2).
//!
//! Everything that can refuse a start is done before the registry is marked (`monitorRunning`) and before any
//! process is spawned or adopted: the home's ownership check, the instance lock, the registry's parse, and the
//! binding of both servers. A start refused there exits with the reason and leaves the registry as it found it,
//! so the next start boots as if the refused one had never happened.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use pm_core::{Error as CoreError, RemoteAccessConfig};
use pm_registry::{Paths, Store};

use crate::daemon::{socket_addr, DaemonConfig, Error};

/// The ownership check of the home (see [`pm_registry::check_home`]), on the blocking pool.
pub(crate) async fn check_home(paths: &Paths) -> Result<(), Error> {
    let paths = paths.clone();
    tokio::task::spawn_blocking(move || pm_registry::check_home(&paths))
        .await
        .map_err(|err| CoreError::internal("home check task failed", err))??;
    Ok(())
}

/// Listening sockets of both servers, bound before anything else happens.
#[derive(Default)]
pub(crate) struct Bound {
    /// The aliveness server's, when it is enabled.
    pub(crate) aliveness: Option<(TcpListener, SocketAddr)>,
    /// The remote API's, when it is on, with the address asked for (before an IPv4 fallback).
    pub(crate) remote: Option<(TcpListener, SocketAddr)>,
}

/// Binds the servers the registry (with the command line's port overrides) asks for.
pub(crate) fn bind_servers(registry: &pm_core::Registry, config: &DaemonConfig) -> Result<Bound, Error> {
    let mut bound = Bound::default();
    let aliveness = &registry.aliveness_server;
    if aliveness.enabled {
        let addr = socket_addr(&aliveness.bind_address, config.aliveness_port.unwrap_or(aliveness.port))?;
        let listener = pm_http::bind(addr).map_err(|source| Error::Bind {
            what: "aliveness server",
            addr: addr.to_string(),
            source,
        })?;
        bound.aliveness = Some((listener, addr));
    }
    let mut remote = registry.remote_access.clone();
    if let Some(port) = config.remote_port {
        remote.remote_port = port;
    }
    bound.remote = bind_remote(&remote, config.remote_bind.as_deref())?;
    Ok(bound)
}

/// Binds the remote API as `remote` says (`None` when it is off); an unspecified IPv6 address that cannot be
/// bound falls back to IPv4 only.
pub(crate) fn bind_remote(
    remote: &RemoteAccessConfig,
    bind_override: Option<&str>,
) -> Result<Option<(TcpListener, SocketAddr)>, Error> {
    if !remote.start_remote_access {
        return Ok(None);
    }
    let addr = socket_addr(bind_override.unwrap_or(&remote.bind_address), remote.remote_port)?;
    let listener = match pm_http::bind(addr) {
        Ok(listener) => listener,
        Err(err) if addr.ip().is_unspecified() && addr.is_ipv6() => {
            tracing::warn!("cannot bind {addr} ({err}); falling back to IPv4 only");
            let v4 = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), addr.port());
            pm_http::bind(v4).map_err(|source| Error::Bind { what: "remote API", addr: v4.to_string(), source })?
        }
        Err(source) => return Err(Error::Bind { what: "remote API", addr: addr.to_string(), source }),
    };
    Ok(Some((listener, addr)))
}

/// Undoes the start-up mark after a start that failed before it spawned or adopted anything: `monitorRunning`
/// is cleared again, so the next start boots.
pub(crate) async fn unmark(store: &Arc<Store>) {
    let store = store.clone();
    let res = tokio::task::spawn_blocking(move || {
        store.transaction(Duration::from_secs(10), |registry| {
            registry.monitor_running = false;
            Ok::<_, pm_registry::Error>(())
        })
    })
    .await;
    if !matches!(res, Ok(Ok(()))) {
        tracing::error!("cannot clear monitorRunning after the failed start: {res:?}");
    }
}

/// Writes the ports both servers listen on into the instance lock (`alivenessPort`, `remotePort`), for the
/// lifeline commands when the registry does not parse and for a detached start waiting for the monitor to serve.
/// A failure is logged, never fatal.
pub(crate) fn publish_ports(lock: &mut pm_registry::InstanceLock, monitor: &crate::monitor::Monitor) {
    let (aliveness, remote) = *monitor.ports.read().expect("ports");
    // Both keys are written (`null` for a server that is off): their presence tells a detached start that the
    // monitor is past its start-up checks and serving.
    let mut keys = serde_json::Map::new();
    keys.insert("alivenessPort".to_owned(), aliveness.into());
    keys.insert("remotePort".to_owned(), remote.into());
    if let Err(err) = lock.publish(keys) {
        tracing::warn!("cannot publish the ports in the instance lock: {err}");
    }
}

/// Whether a self-restart may go ahead: its replacement runs the ownership check of the home first and would
/// refuse to start, leaving the children unsupervised. When the check fails, this monitor goes on and says why.
pub(crate) async fn may_restart(paths: &Paths) -> bool {
    match check_home(paths).await {
        Ok(()) => true,
        Err(err) => {
            tracing::error!("not restarting: the replacement would refuse to start ({err}); still supervising");
            false
        }
    }
}
