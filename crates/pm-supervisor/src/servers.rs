//! The daemon's servers: the aliveness server, the remote API (plain or TLS) and the unix-socket API, started,
//! moved and stopped as the settings say.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use pm_core::Error as CoreError;
use pm_http::{ServerConfig, ServerHandle};

use crate::daemon::{socket_addr, Error};
use crate::monitor::Monitor;

/// The servers and the settings they were started with.
#[derive(Default)]
pub(crate) struct Servers {
    aliveness: Option<ServerHandle>,
    remote: Option<(ServerHandle, SocketAddr)>,
    /// The unix-socket API and the mode of its file.
    unix: Option<(pm_http::UnixServerHandle, u32)>,
    /// `processes_{id}.tokens.json`.
    tokens_file: Option<PathBuf>,
    /// `processes_{id}.sock`.
    socket_file: Option<PathBuf>,
    /// The certificate and key of the remote API, when it serves TLS.
    tls: Option<Tls>,
}

#[cfg(feature = "tls")]
type Tls = pm_http::TlsConfig;
#[cfg(not(feature = "tls"))]
type Tls = std::convert::Infallible;

/// Loads the TLS certificate and key; without the `tls` feature, asking for TLS is an error.
fn load_tls(files: Option<&(PathBuf, PathBuf)>) -> Result<Option<Tls>, Error> {
    let Some((cert, key)) = files else { return Ok(None) };
    #[cfg(feature = "tls")]
    {
        pm_http::TlsConfig::from_pem_files(cert, key)
            .map(Some)
            .map_err(|err| Error::Core(CoreError::InvalidField(format!("TLS: {err}"))))
    }
    #[cfg(not(feature = "tls"))]
    {
        Err(Error::Core(CoreError::InvalidField(format!(
            "--tls-cert {} / --tls-key {}: this build has no TLS; build with `--features tls` or put a reverse \
             proxy in front (see docs/authentication.md)",
            cert.display(),
            key.display()
        ))))
    }
}

impl Servers {
    /// The servers of the home `paths`, none started yet. The TLS certificate and key (if any) are loaded now:
    /// one that does not load stops the start before anything is touched.
    pub(crate) fn new(tls: Option<&(PathBuf, PathBuf)>, paths: &pm_registry::Paths) -> Result<Servers, Error> {
        Ok(Servers {
            tls: load_tls(tls)?,
            tokens_file: Some(paths.tokens_file()),
            socket_file: Some(paths.socket_file()),
            ..Servers::default()
        })
    }

    /// Starts the aliveness server on the socket bound at start-up.
    pub(crate) fn serve_aliveness(
        &mut self,
        bound: Option<(std::net::TcpListener, SocketAddr)>,
        monitor: &Arc<Monitor>,
    ) -> Result<(), Error> {
        if let Some((listener, addr)) = bound {
            let handle = crate::aliveness::serve_on_own_thread(listener, monitor.clone())
                .map_err(|source| Error::Bind { what: "aliveness server", addr: addr.to_string(), source })?;
            monitor.set_aliveness_port(Some(handle.local_addr().port()));
            tracing::info!("aliveness server on {}", handle.local_addr());
            self.aliveness = Some(handle);
        }
        Ok(())
    }

    /// Serves the remote API on the socket bound at start-up, if it is on. It is bound already, so a failure here
    /// is not a taken port; the processes are supervised: the daemon goes on without it.
    pub(crate) fn serve_bound_remote(
        &mut self,
        bound: Option<(std::net::TcpListener, SocketAddr)>,
        monitor: &Arc<Monitor>,
    ) {
        match bound {
            Some((listener, addr)) => {
                if let Err(err) = self.serve_remote(listener, addr, monitor) {
                    tracing::error!("{err}; running without the remote API");
                }
            }
            None => tracing::info!("remote API off"),
        }
    }

    fn serve_remote(
        &mut self,
        listener: std::net::TcpListener,
        addr: SocketAddr,
        monitor: &Arc<Monitor>,
    ) -> Result<(), Error> {
        let options = pm_http::ApiOptions { tokens: self.tokens_file.clone().map(pm_http::auth::TokenStore::new) };
        let spawned = match &self.tls {
            #[cfg(feature = "tls")]
            Some(tls) => {
                pm_http::spawn_remote_api_tls(listener, monitor.clone(), ServerConfig::default(), options, tls.clone())
            }
            #[cfg(not(feature = "tls"))]
            Some(never) => match *never {},
            None => pm_http::spawn_remote_api_with(listener, monitor.clone(), ServerConfig::default(), options),
        };
        let handle = spawned.map_err(|source| Error::Bind { what: "remote API", addr: addr.to_string(), source })?;
        tracing::info!("remote API on {}", handle.local_addr());
        monitor.set_remote_port(Some(handle.local_addr().port()));
        self.remote = Some((handle, addr));
        Ok(())
    }

    /// Starts, stops or moves the remote API server to match the settings.
    pub(crate) async fn ensure_remote(
        &mut self,
        monitor: &Arc<Monitor>,
        bind_override: Option<&str>,
    ) -> Result<(), Error> {
        let remote = monitor.remote_access();
        let wanted = if remote.start_remote_access {
            Some(socket_addr(bind_override.unwrap_or(&remote.bind_address), remote.remote_port)?)
        } else {
            None
        };
        if self.remote.as_ref().map(|(_, addr)| *addr) == wanted {
            return Ok(());
        }
        self.shutdown_remote().await;
        let Some((listener, addr)) = crate::startup::bind_remote(&remote, bind_override)? else {
            tracing::info!("remote API off");
            monitor.set_remote_port(None);
            return Ok(());
        };
        self.serve_remote(listener, addr, monitor)
    }

    /// Starts the unix-socket API if it does not run, and keeps its file's mode in line with the settings: 0600
    /// (owner only), or 0666 when `socketUsers` names other users (their credentials then decide). A socket that
    /// cannot be made is logged, not fatal: clients then use the registry.
    pub(crate) fn ensure_socket(&mut self, monitor: &Arc<Monitor>) {
        let Some(path) = self.socket_file.clone() else { return };
        let others = !monitor.remote_access().socket_users.is_empty();
        let mode = if others { 0o666 } else { 0o600 };
        match &mut self.unix {
            Some((_, current)) if *current == mode => {}
            Some((handle, current)) => {
                use std::os::unix::fs::PermissionsExt;
                match std::fs::set_permissions(handle.path(), std::fs::Permissions::from_mode(mode)) {
                    Ok(()) => *current = mode,
                    Err(err) => tracing::error!("cannot set the mode of {}: {err}", handle.path().display()),
                }
            }
            None => {
                let started = pm_http::bind_unix(&path, mode).and_then(|listener| {
                    pm_http::spawn_unix_api(listener, path.clone(), monitor.clone(), ServerConfig::default())
                });
                match started {
                    Ok(handle) => {
                        tracing::info!("local API on {}", path.display());
                        self.unix = Some((handle, mode));
                    }
                    Err(err) => tracing::error!("cannot serve the local API on {}: {err}", path.display()),
                }
            }
        }
    }

    pub(crate) async fn shutdown_remote(&mut self) {
        if let Some((handle, _)) = self.remote.take() {
            handle.shutdown().await;
        }
    }

    pub(crate) async fn shutdown_socket(&mut self) {
        if let Some((handle, _)) = self.unix.take() {
            handle.shutdown().await;
        }
    }

    pub(crate) async fn shutdown_aliveness(&mut self) {
        if let Some(handle) = self.aliveness.take() {
            handle.shutdown().await;
        }
    }
}
