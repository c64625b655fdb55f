//! `Daemon::run`: the whole monitor process — instance lock, registry, supervisor, servers, the loop that
//! reacts to local clients, partner supervision, signals, shutdown and self-restart.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pm_core::{
    AlivenessCheck, Error as CoreError, ProcessConfig, ProcessEntry, ProcessState, RestartPolicy, StartupCheck,
    Timestamp,
};
use pm_http::{ServerConfig, ServerHandle};
use pm_registry::proc::Process;
use pm_registry::{InstanceLock, Paths, Store};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::actor::Begin;
use crate::monitor::{DaemonEvent, Monitor};
use crate::{Supervisor, SupervisorConfig};

/// How a daemon is run.
pub struct DaemonConfig {
    /// The monitor's files.
    pub paths: Paths,
    /// Run without partner monitoring, whatever the registry says.
    pub standalone: bool,
    /// Remote API port to use and store in the registry.
    pub remote_port: Option<u16>,
    /// Aliveness port to use and store in the registry.
    pub aliveness_port: Option<u16>,
    /// Address the remote API binds instead of the registry's (`127.0.0.1` in tests).
    pub remote_bind: Option<String>,
    /// Program and arguments that start this same instance again (self-restart).
    pub restart_command: Vec<OsString>,
    /// The program that starts a partner instance (`process_monitor`).
    pub partner_program: PathBuf,
    /// This process replaces a monitor that restarted itself: adopt, but start nothing that was stopped.
    pub resume: bool,
    /// Run folders kept per process.
    pub keep_runs: usize,
    /// How long to wait for the instance lock.
    pub lock_timeout: Duration,
    /// PEM certificate chain and private key: serve the remote API over TLS (only with the `tls` feature;
    /// without it the daemon refuses to start when this is set).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Stopped by a signal (its processes stopped, a partner left running).
    Stopped,
    /// Replaced by a new process with this PID (its processes left running for it to adopt).
    Restarted {
        /// PID of the new monitor process.
        pid: u32,
    },
}

/// What keeps the daemon from running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry or the instance lock.
    #[error(transparent)]
    Registry(#[from] pm_registry::Error),
    /// A server could not listen.
    #[error("cannot listen for the {what} on {addr}{}", bind_hint(.source))]
    Bind {
        /// Which server.
        what: &'static str,
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The replacement process of a self-restart could not be started.
    #[error("cannot start the replacement monitor")]
    Respawn(#[source] std::io::Error),
    /// The open-files limit is too low for the registry, even after raising the soft limit to the hard one.
    #[error(
        "the open-files limit (RLIMIT_NOFILE) is {soft} (hard limit {hard}), too low for {processes} registered \
         processes: the monitor needs one descriptor per process plus {reserve}, so at least {needed}; raise the \
         hard limit (`ulimit -Hn`, LimitNOFILE= of a systemd unit, /etc/security/limits.conf) or register fewer \
         processes"
    )]
    FileLimit {
        /// The soft limit in force.
        soft: u64,
        /// The hard limit.
        hard: u64,
        /// Entries of the registry.
        processes: usize,
        /// Descriptors kept besides one per process.
        reserve: u64,
        /// The least limit that fits.
        needed: u64,
    },
    /// Any other failure.
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// The monitor process.
pub struct Daemon;

impl Daemon {
    /// Runs the monitor until a signal stops it or it restarts itself. Must run on a multi-threaded tokio
    /// runtime. SIGTERM and SIGINT stop it (a further SIGTERM while it stops changes nothing; a second SIGINT
    /// forces an exit that leaves the children running); SIGHUP restarts it in place.
    pub async fn run(config: DaemonConfig) -> Result<Exit, Error> {
        let paths = config.paths.clone();
        // Nothing is read or written in a home another user controls.
        crate::startup::check_home(&paths).await?;
        let mut lock = {
            let paths = paths.clone();
            let timeout = config.lock_timeout;
            tokio::task::spawn_blocking(move || InstanceLock::acquire(&paths, timeout))
                .await
                .map_err(|err| CoreError::internal("instance lock task failed", err))??
        };
        tracing::info!(instance = paths.instance_id(), pid = std::process::id(), dir = %paths.root().display(), "instance lock acquired");
        let res = run_locked(config, &mut lock).await;
        let release = tokio::task::spawn_blocking(move || lock.release()).await;
        if let Ok(Err(err)) = release {
            tracing::warn!("releasing the instance lock failed: {err}");
        }
        res
    }
}

/// Raises the soft open-files limit to the hard one, and refuses to run when even that leaves no descriptor
/// for each of `processes` (plus the monitor's own).
fn check_file_limit(processes: usize) -> Result<(), Error> {
    let Some((soft, hard)) = crate::os::raise_nofile_limit() else { return Ok(()) };
    let reserve = crate::os::NOFILE_RESERVE;
    let needed = processes as u64 + reserve;
    if soft < needed {
        return Err(Error::FileLimit { soft, hard, processes, reserve, needed });
    }
    tracing::debug!(soft, hard, "open-files limit");
    Ok(())
}

/// Least time between two background registry writes of the writer task.
const WRITER_GAP: Duration = Duration::from_millis(250);

async fn run_locked(config: DaemonConfig, lock: &mut InstanceLock) -> Result<Exit, Error> {
    let paths = config.paths.clone();
    // Before anything is touched: a certificate or key that does not load stops the start.
    let tls = load_tls(config.tls.as_ref())?;
    // The monitor's transactions start from the registry it last wrote while nobody else changed the file.
    let store = Arc::new(Store::new_cached(paths.clone()));
    let (registry, set_aside) = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.init_recovering())
            .await
            .map_err(|err| CoreError::internal("registry task failed", err))??
    };
    if let Some(bad) = set_aside {
        tracing::error!(
            "registry {} did not parse; restored the last good copy and kept the bad one as {}",
            paths.registry_file().display(),
            bad.display()
        );
    }
    check_file_limit(registry.processes.len())?;
    let standalone_override = config.standalone;
    let remote_port = config.remote_port;
    let aliveness_port = config.aliveness_port;
    // A predecessor that did not shut down cleanly (killed, crashed, or killed while taking over) left
    // `monitorRunning` set: then this start resumes, it does not boot.
    let crashed_before = registry.monitor_running;
    let boot = !config.resume && !crashed_before;
    // Start-up order: what can refuse the start (the ports, the signal handlers) comes before the registry is
    // marked and before anything is spawned or adopted, so a refused start leaves no trace (see `startup`).
    let bound = crate::startup::bind_servers(&registry, &config)?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|err| CoreError::io("cannot install the SIGTERM handler", err))?;
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|err| CoreError::io("cannot install the SIGINT handler", err))?;
    let mut sighup =
        signal(SignalKind::hangup()).map_err(|err| CoreError::io("cannot install the SIGHUP handler", err))?;
    let (registry, owner_secret) = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            store.transaction(Duration::from_secs(10), |registry| {
                registry.monitor_running = true;
                if let Some(port) = remote_port {
                    registry.remote_access.remote_port = port;
                }
                if let Some(port) = aliveness_port {
                    registry.aliveness_server.port = port;
                }
                if standalone_override {
                    registry.processes.retain(|_, entry| !entry.config.partner);
                }
                // Rotated on a clean boot, kept on a resume (the running children carry it).
                let secret = crate::orphans::ensure_secret(registry, boot).map_err(|err| pm_registry::Error::Io {
                    path: "/dev/urandom".into(),
                    action: "read the owner secret".to_owned(),
                    source: err,
                })?;
                Ok::<_, pm_registry::Error>((registry.clone(), secret))
            })
        })
        .await
        .map_err(|err| CoreError::internal("registry task failed", err))??
    };

    let containment = crate::cgroup::Containment::detect(&paths);
    let containment = match containment {
        crate::cgroup::Containment::ProcessGroup { reason } => {
            let reason = match crate::cgroup::become_subreaper() {
                Ok(()) => format!("{reason}; process groups, a child subreaper and the owner key instead"),
                Err(err) => format!("{reason}; process groups and the owner key instead (no child subreaper: {err})"),
            };
            crate::cgroup::Containment::ProcessGroup { reason }
        }
        cgroup => cgroup,
    };
    tracing::info!(containment = containment.mode(), "{}", containment.reason());
    let process_groups = containment.base().is_none();
    let sup = Supervisor::with_containment(
        SupervisorConfig {
            paths: paths.clone(),
            keep_runs: config.keep_runs,
            default_cwd: Paths::home_dir(),
            extra_env: vec![("PROCESS_MONITOR_INSTANCE".to_owned(), paths.instance_id().to_owned())],
        },
        Some(&owner_secret),
        containment.clone(),
        process_groups,
    );
    let reaper = process_groups.then(|| spawn_reaper(sup.clone()));
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut registry = registry;
    crate::unusable::report(&registry.unusable);
    let registry_processes = std::mem::take(&mut registry.processes);
    let monitor = Arc::new(Monitor::new(store.clone(), sup.clone(), registry, standalone_override, events_tx));
    // The aliveness server serves from here on; the remote API, bound already, is served once every registered
    // process has its task (a request must not find a registered process missing).
    let mut servers = Servers {
        tls,
        tokens_file: Some(paths.tokens_file()),
        socket_file: Some(paths.socket_file()),
        ..Servers::default()
    };
    let remote_listener = bound.remote;
    if let Err(err) = servers.serve_aliveness(bound.aliveness, &monitor) {
        if !crashed_before {
            crate::startup::unmark(&store).await;
        }
        return Err(err);
    }
    tracing::info!(boot, processes = registry_processes.len(), "taking over the registry");
    let mut orphans = {
        let sup = sup.clone();
        tokio::task::spawn_blocking(move || sup.orphans()).await.unwrap_or_default()
    };
    let registered: std::collections::HashSet<String> = registry_processes.keys().cloned().collect();
    for (_, mut entry) in registry_processes {
        // A stop asked for while no monitor ran (or while this one was starting) is honoured, not undone.
        let stop_requested = entry.pending_action == Some(pm_core::PendingAction::Stop);
        let mut found = orphans.remove(&entry.config.id).unwrap_or_default();
        // Only a process that runs this entry's executable is taken for it (the owner key and uid were checked by
        // the scan); anything else is neither adopted nor stopped.
        found.retain(|found| {
            let runs = sup.runs_registered(found, &entry.config);
            if !runs {
                tracing::warn!(process = %entry.config.id, pid = found.pid, exe = ?found.exe, "a process carries this monitor's owner key but does not run the registered executable; not adopted");
            }
            runs
        });
        let known = pm_registry::proc::live_pid_of(&entry);
        let mut keep = known;
        for found in found {
            let pid = found.pid;
            if Some(pid) == keep {
                continue;
            }
            let Some(kept) = keep else {
                tracing::warn!(process = %entry.config.id, pid, "found a running copy the registry did not record; adopting it");
                entry.pid = Some(pid);
                entry.pid_start_time = found.start_time;
                // The recorded run is gone and this is a newer one: it runs (a stop in the record was about
                // the old run).
                entry.state = pm_core::ProcessState::Running;
                keep = Some(pid);
                continue;
            };
            // A second copy runs the same command line; anything else that carries the id (a detached helper
            // whose parent is gone) is the process's own business.
            if entry.config.partner || found.cmdline != crate::orphans::cmdline(kept) {
                tracing::info!(process = %entry.config.id, pid, "leaving running a detached process of this id");
            } else {
                tracing::warn!(process = %entry.config.id, pid, "stopping a duplicate copy started by an earlier monitor");
                stop_stray(Process::new(pid, found.start_time));
            }
        }
        if let Some(dir) = containment.dir(&entry.config.id).filter(|dir| !entry.config.partner && dir.is_dir()) {
            if keep.is_none() {
                // Its leader is gone. A tracked daemon is adopted through its cgroup's members; otherwise they are
                // leftovers of an exit like any other, and killed.
                let member = crate::cgroup::ProcCgroup::existing(dir.clone()).and_then(|cgroup| cgroup.first_member());
                match member {
                    Some(Process { pid, start_time }) if entry.config.track_daemonized_children => {
                        tracing::info!(process = %entry.config.id, pid, "adopting the daemonized children in its cgroup");
                        entry.pid = Some(pid);
                        entry.pid_start_time = start_time;
                        entry.state = pm_core::ProcessState::Running;
                        keep = Some(pid);
                    }
                    _ => {
                        if crate::cgroup::kill_leftovers(&dir) {
                            tracing::warn!(process = %entry.config.id, "killed what its exited leader left in its cgroup");
                        }
                    }
                }
            }
        }
        if stop_requested {
            if keep.is_some() {
                entry.state = pm_core::ProcessState::Stopping;
            } else {
                entry.pid = None;
                if entry.state != pm_core::ProcessState::Disabled {
                    entry.state = pm_core::ProcessState::Stopped;
                }
            }
        }
        if let Err(err) = sup.resume(entry.clone(), boot && !stop_requested) {
            tracing::warn!(process = %entry.config.id, "cannot supervise: {err}");
        }
    }
    if let Some(base) = containment.base() {
        for id in crate::cgroup::empty_strays(base, &registered) {
            tracing::warn!(process = %id, "emptied the cgroup of a process that is no longer registered");
        }
    }
    for (id, strays) in orphans {
        // Started by this instance, but its registration is gone: deregistered while the monitor that should have
        // stopped it was killed. Nothing supervises it any more, so it is stopped, unless it is a monitor of this
        // home (a partner dropped by standalone mode keeps running: it holds its instance lock).
        let monitor = sup.live_instance(&id).map(|monitor| monitor.pid);
        for crate::orphans::Found { pid, start_time, .. } in strays {
            if Some(pid) == monitor {
                tracing::info!(instance = %id, pid, "a monitor started by an earlier one runs unsupervised; left running");
            } else {
                tracing::warn!(process = %id, pid, "stopping a process started by an earlier monitor that is no longer registered");
                stop_stray(Process::new(pid, start_time));
            }
        }
    }

    match remote_listener {
        Some((listener, addr)) => {
            if let Err(err) = servers.serve_remote(listener, addr, &monitor) {
                // Bound already, so this cannot be a taken port; the processes are supervised: go on without it.
                tracing::error!("{err}; running without the remote API");
            }
        }
        None => tracing::info!("remote API off"),
    }
    servers.ensure_socket(&monitor);
    crate::startup::publish_ports(lock, &monitor);

    let writer = {
        let monitor = monitor.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                // Once a burst of changes (a start-up, many restarts) has settled for a second, the heap it freed
                // goes back to the system instead of staying resident; then wait for the next change.
                if tokio::time::timeout(Duration::from_secs(1), monitor.sup.changed()).await.is_err() {
                    crate::os::trim_heap();
                    monitor.sup.changed().await;
                }
                match monitor.flush().await {
                    Ok(()) => {
                        if failing {
                            tracing::info!("registry writes work again");
                        }
                        failing = false;
                        // Background writes (restarts, exits, a start-up) are rewrites of the whole file: at most
                        // a few a second, whatever the churn; the changes of the gap go out in the next one.
                        // Acknowledged API actions do not wait for this (they commit before they answer).
                        tokio::time::sleep(WRITER_GAP).await;
                    }
                    Err(err) => {
                        if !failing {
                            tracing::error!("cannot write the registry: {err}; supervising from memory and retrying");
                        }
                        failing = true;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        monitor.sup.notify_changed();
                    }
                }
            }
        })
    };
    monitor.sup.notify_changed();

    let mut registry_watch = crate::watch::RegistryWatch::new(paths.root());
    let mut partner_every = partner_interval(&monitor);
    let mut partner_tick = tokio::time::interval(partner_every);
    partner_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reconcile_failing = false;

    let restart = loop {
        tokio::select! {
            () = registry_watch.changed() => match monitor.reconcile().await {
                Ok(()) => reconcile_failing = false,
                Err(err) => {
                    if !reconcile_failing {
                        tracing::error!("cannot read the registry: {err}; supervising from memory");
                    }
                    reconcile_failing = true;
                }
            },
            _ = partner_tick.tick() => partner_tick_once(&monitor, &config).await,
            event = events.recv() => match event {
                Some(DaemonEvent::RestartMonitor) => if crate::startup::may_restart(&paths).await { break true },
                Some(DaemonEvent::SettingsChanged) => {
                    if let Err(err) = servers.ensure_remote(&monitor, config.remote_bind.as_deref()).await {
                        tracing::error!("{err}");
                    }
                    servers.ensure_socket(&monitor);
                    let every = partner_interval(&monitor);
                    if every != partner_every {
                        partner_every = every;
                        partner_tick = tokio::time::interval(every);
                    }
                    partner_tick_once(&monitor, &config).await;
                }
                None => break false,
            },
            _ = sigterm.recv() => break false,
            _ = sigint.recv() => break false,
            _ = sighup.recv() => if crate::startup::may_restart(&paths).await { break true },
        }
    };

    if restart {
        monitor.sup.publish_monitor_event(pm_core::EventKind::MonitorRestart {});
    }
    // Open streams end now (with a `cut` event), so that they do not hold up the remote API's shutdown.
    monitor.sup.event_bus().close();
    monitor.stopping.store(true, Ordering::Relaxed);
    tracing::info!(restart, "shutting down");
    writer.abort();
    servers.shutdown_remote().await;
    servers.shutdown_socket().await;
    let entries = if restart {
        servers.shutdown_aliveness().await;
        sup.shutdown(|_| true).await
    } else {
        let shutdown = sup.shutdown(|entry| entry.config.partner);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                entries = &mut shutdown => break entries,
                // Another `--stop` (or a service manager repeating itself): the same shutdown goes on; cutting it
                // short would leave the processes still stopping running unsupervised.
                _ = sigterm.recv() => tracing::info!("SIGTERM during the shutdown: already stopping, carrying on"),
                // A second Ctrl-C in a terminal is a deliberate "exit now".
                _ = sigint.recv() => force_exit(),
            }
        }
    };
    if let Err(err) = monitor.flush_entries(entries, !restart).await {
        tracing::error!("cannot store the final process states: {err}");
    }
    servers.shutdown_aliveness().await;
    if let Some(reaper) = reaper {
        reaper.abort();
    }
    if let (false, Some(base)) = (restart, containment.base()) {
        crate::cgroup::remove_base(base);
    }
    if restart {
        let pid = respawn(&config.restart_command).map_err(Error::Respawn)?;
        tracing::info!(pid, "replacement monitor started");
        return Ok(Exit::Restarted { pid });
    }
    Ok(Exit::Stopped)
}

/// Reaps re-parented descendants (the monitor is their child subreaper) when a child ends, and every 5 s.
fn spawn_reaper(sup: Supervisor) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut sigchld = signal(SignalKind::child()).ok();
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            match sigchld.as_mut() {
                Some(sigchld) => tokio::select! {
                    _ = sigchld.recv() => {}
                    _ = tick.tick() => {}
                },
                None => {
                    tick.tick().await;
                }
            }
            let sup = sup.clone();
            let _ = tokio::task::spawn_blocking(move || sup.reap_strays()).await;
        }
    })
}

/// SIGTERM to a stray process group now, SIGKILL to what is left of it 10 s later.
fn stop_stray(leader: Process) {
    let Process { pid: pgid, start_time } = leader;
    crate::os::signal_group(pgid, libc::SIGTERM);
    crate::os::signal_group(pgid, libc::SIGCONT);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        // Still the group it was: its leader, or members left after the leader ended. A live leader with
        // another start time is a new process that reuses the PID (and so leads a new group): left alone.
        let leader_alive = pm_registry::proc::alive(pgid);
        let same = if leader_alive { pm_registry::proc::is_same_process(pgid, start_time) } else { true };
        if same && crate::os::group_exists(pgid) {
            crate::os::signal_group(pgid, libc::SIGKILL);
        }
    });
}

/// What to do about a port already taken: other instance ids than `default` and `watcher` start on the default
/// instance's ports.
fn bind_hint(err: &std::io::Error) -> &'static str {
    if err.kind() == std::io::ErrorKind::AddrInUse {
        " (the port is taken, by another program or another instance: choose another with --remote-port / \
         --aliveness-port, or remoteAccess.remotePort / alivenessServer.port in the registry)"
    } else {
        ""
    }
}

fn force_exit() -> ! {
    tracing::warn!("second SIGINT: exiting at once; processes still stopping are left running");
    std::process::exit(130)
}

fn partner_interval(monitor: &Monitor) -> Duration {
    let ms = monitor.settings.read().expect("settings").partner_discovery.check_interval_ms;
    Duration::from_millis(ms.clamp(100, 3_600_000))
}

/// Starts the replacement of this monitor: same program and arguments (plus `--resume`), a new session,
/// stdio on /dev/null (it logs to its own file).
fn respawn(command: &[OsString]) -> std::io::Result<u32> {
    let (program, args) = command.split_first().ok_or_else(|| std::io::Error::other("no restart command"))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args.iter().filter(|arg| *arg != "--resume"))
        .arg("--resume")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    pm_registry::proc::detach(&mut cmd);
    let child = cmd.spawn()?;
    Ok(child.id())
}

pub(crate) fn socket_addr(bind: &str, port: u16) -> Result<SocketAddr, Error> {
    let ip: std::net::IpAddr =
        bind.parse().map_err(|_| CoreError::InvalidField(format!("bindAddress {bind:?} is not an IP address")))?;
    Ok(SocketAddr::new(ip, port))
}

/// The servers and the settings they were started with.
#[derive(Default)]
struct Servers {
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
    /// Starts the aliveness server on the socket bound at start-up.
    fn serve_aliveness(
        &mut self,
        bound: Option<(std::net::TcpListener, SocketAddr)>,
        monitor: &Arc<Monitor>,
    ) -> Result<(), Error> {
        if let Some((listener, addr)) = bound {
            let handle = crate::aliveness::serve_on_own_thread(listener, monitor.clone())
                .map_err(|source| Error::Bind { what: "aliveness server", addr: addr.to_string(), source })?;
            monitor.ports.write().expect("ports").0 = Some(handle.local_addr().port());
            tracing::info!("aliveness server on {}", handle.local_addr());
            self.aliveness = Some(handle);
        }
        Ok(())
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
        monitor.ports.write().expect("ports").1 = Some(handle.local_addr().port());
        self.remote = Some((handle, addr));
        Ok(())
    }

    /// Starts, stops or moves the remote API server to match the settings.
    async fn ensure_remote(&mut self, monitor: &Arc<Monitor>, bind_override: Option<&str>) -> Result<(), Error> {
        let remote = monitor.settings.read().expect("settings").remote_access.clone();
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
            monitor.ports.write().expect("ports").1 = None;
            return Ok(());
        };
        self.serve_remote(listener, addr, monitor)
    }

    /// Starts the unix-socket API if it does not run, and keeps its file's mode in line with the settings: 0600
    /// (owner only), or 0666 when `socketUsers` names other users (their credentials then decide). A socket that
    /// cannot be made is logged, not fatal: clients then use the registry.
    fn ensure_socket(&mut self, monitor: &Arc<Monitor>) {
        let Some(path) = self.socket_file.clone() else { return };
        let others = !monitor.settings.read().expect("settings").remote_access.socket_users.is_empty();
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

    async fn shutdown_remote(&mut self) {
        if let Some((handle, _)) = self.remote.take() {
            handle.shutdown().await;
        }
    }

    async fn shutdown_socket(&mut self) {
        if let Some((handle, _)) = self.unix.take() {
            handle.shutdown().await;
        }
    }

    async fn shutdown_aliveness(&mut self) {
        if let Some(handle) = self.aliveness.take() {
            handle.shutdown().await;
        }
    }
}

/// Keeps the partner entry in line with the settings: registers it (adopting a running partner, or starting
/// one when `startPartnerIfMissing`), re-adopts a partner that came back on its own, and drops it in
/// standalone mode (leaving the partner running).
async fn partner_tick_once(monitor: &Arc<Monitor>, config: &DaemonConfig) {
    let settings = monitor.settings.read().expect("settings").clone();
    let discovery = &settings.partner_discovery;
    let partner_id = discovery
        .partner_instance_id
        .clone()
        .filter(|id| *id != monitor.instance_id && pm_core::validate_instance_id(id).is_ok());
    let standalone = monitor.standalone();
    for id in monitor.sup.ids_where(|entry| entry.config.partner) {
        if standalone || Some(&id) != partner_id.as_ref() {
            tracing::info!(partner = %id, "no longer supervising the partner (standalone or reconfigured)");
            let _ = monitor.sup.detach(&id).await;
            let _sync = monitor.sync.lock().await;
            let _ = monitor
                .transaction(Duration::from_secs(2), move |registry| {
                    registry.processes.remove(&id);
                    Ok(())
                })
                .await;
        }
    }
    if standalone {
        return;
    }
    let Some(partner_id) = partner_id else { return };
    let live = monitor.sup.live_instance(&partner_id);
    // Where the partner serves and how long it may take to stop, from its own registry, every tick.
    let facts = {
        let (paths, id, read) = (monitor.sup.paths().clone(), partner_id.clone(), discovery.clone());
        match tokio::task::spawn_blocking(move || crate::partner::read_facts(&paths, &id, &read)).await {
            Ok(facts) => facts,
            Err(_) => crate::partner::facts_of(None, &partner_id, discovery),
        }
    };
    match monitor.sup.get(&partner_id) {
        Some(entry) if entry.config.partner => {
            // Settings changed since the entry was made (interval, threshold), or the partner serves on another
            // port or has processes that take longer to stop: store the new entry, which the reconcile step
            // hands to the process's task.
            let mut wanted = partner_config(&partner_id, discovery, &facts, config, monitor);
            wanted.enabled = entry.config.enabled;
            wanted.autostart = entry.config.autostart;
            if wanted != entry.config {
                let _sync = monitor.sync.lock().await;
                let id = partner_id.clone();
                let stored = monitor
                    .transaction(Duration::from_secs(2), move |registry| {
                        if let Some(stored) = registry.processes.get_mut(&id) {
                            stored.config = wanted;
                        }
                        Ok(())
                    })
                    .await;
                if let Err(err) = stored {
                    tracing::warn!(partner = %partner_id, "cannot update the partner entry: {err}");
                }
            }
            if matches!(entry.state, ProcessState::Stopped | ProcessState::Failed) {
                // A partner that came back on its own is supervised again; one that is shutting down (stopped
                // by `--stop` without us) is not, or its exit would be taken for a crash and undone.
                if let Some(partner) = live {
                    if partner_serving(monitor.sup.http(), &facts, partner.pid).await {
                        let _ = monitor.sup.adopt(&partner_id, partner).await;
                    }
                }
            }
        }
        Some(_) => {}
        None => {
            if live.is_none() && !discovery.start_partner_if_missing {
                return;
            }
            let mut entry =
                ProcessEntry::new(partner_config(&partner_id, discovery, &facts, config, monitor), Timestamp::now());
            // A partner that is shutting down is not taken over (its exit would read as a crash and be undone).
            let stopping = match live {
                Some(partner) => {
                    crate::partner::reported_state(monitor.sup.http(), &facts.status_url(), partner.pid).await
                        == Some(pm_core::MonitorState::Stopping)
                }
                None => false,
            };
            if stopping {
                return;
            }
            if let Some(partner) = live {
                entry.pid = Some(partner.pid);
                entry.pid_start_time = partner.start_time;
                entry.state = ProcessState::Running;
            }
            tracing::info!(partner = %partner_id, running = ?live.map(|partner| partner.pid), "supervising the partner instance");
            if let Err(err) = monitor.register_entry(entry, Begin::MonitorStart { boot: true }).await {
                tracing::warn!(partner = %partner_id, "cannot register the partner: {err}");
            }
        }
    }
}

/// Whether the partner instance with lock holder `pid` answers on the port it serves as running (not stopping).
async fn partner_serving(http: &pm_http::HttpClient, facts: &crate::partner::PartnerFacts, pid: u32) -> bool {
    crate::partner::reported_state(http, &facts.status_url(), pid).await == Some(pm_core::MonitorState::Running)
}

/// The managed-process entry through which an instance supervises its partner (the guide's "Watcher
/// Registration"): the same program with `--instance-id`, checked on the partner's `/alive`.
fn partner_config(
    partner_id: &str,
    discovery: &pm_core::PartnerDiscovery,
    facts: &crate::partner::PartnerFacts,
    config: &DaemonConfig,
    monitor: &Monitor,
) -> ProcessConfig {
    let mut check = AlivenessCheck::new(&facts.alive_url());
    check.interval_ms = discovery.check_interval_ms.max(100);
    check.timeout_ms = check.interval_ms.min(2000);
    check.consecutive_failures_required = discovery.failures_before_restart.max(1);
    check.startup_check = Some(StartupCheck {
        enabled: true,
        initial_delay_ms: 100,
        check_interval_ms: 200,
        max_attempts: 100,
        fail_action: pm_core::FailAction::Restart,
        extra: serde_json::Map::new(),
    });
    let mut res = ProcessConfig::new(
        partner_id,
        &format!("ProcessMonitor {partner_id}"),
        &config.partner_program.to_string_lossy(),
    );
    res.args = vec![
        "--instance-id".to_owned(),
        partner_id.to_owned(),
        "--directory".to_owned(),
        monitor.sup.paths().root().to_string_lossy().into_owned(),
        "--detached".to_owned(),
    ];
    res.partner = true;
    res.restart_policy = Some(RestartPolicy {
        max_attempts: 5,
        backoff_intervals_ms: vec![500, 1000, 2000],
        reset_after_ms: 60_000,
        retry_indefinitely: true,
        indefinite_interval_ms: 5_000,
        restart_on: Default::default(),
        extra: serde_json::Map::new(),
    });
    res.aliveness_check = Some(check);
    // The partner stops its processes before it exits: never SIGKILLed in the middle of that.
    res.stop_timeout_ms = Some(facts.stop_grace_ms);
    res
}
