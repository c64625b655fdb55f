//! `Daemon::run`: the whole monitor process — instance lock, registry, supervisor, servers, the loop that
//! reacts to local clients, partner supervision, signals, shutdown and self-restart.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pm_core::{Error as CoreError, ProcessEntry, ProcessState, SharedEntry};
use pm_registry::proc::Process;
use pm_registry::{InstanceLock, Paths, Store};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use crate::cgroup::Containment;
use crate::decide::{self, StartKind, Stray};
use crate::monitor::Monitor;
use crate::orphans::Found;
use crate::partner_tick::partner_tick_once;
use crate::servers::Servers;
use crate::writer::Writer;
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
        Daemon::run_with(config, Hooks::default()).await
    }

    /// [`Daemon::run`], with the hooks of an in-process run.
    pub(crate) async fn run_with(config: DaemonConfig, hooks: Hooks) -> Result<Exit, Error> {
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
        let res = run_locked(config, &mut lock, hooks).await;
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
    crate::os::reserve_fd_table();
    let Some((soft, hard)) = crate::os::raise_nofile_limit() else { return Ok(()) };
    let reserve = crate::os::NOFILE_RESERVE;
    let needed = processes as u64 + reserve;
    if soft < needed {
        return Err(Error::FileLimit { soft, hard, processes, reserve, needed });
    }
    tracing::debug!(soft, hard, "open-files limit");
    Ok(())
}

/// What the daemon loop reacts to: [`Running::next_event`] waits for one, [`Running::handle`] handles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DaemonEvent {
    /// The registry file may have changed: reconcile.
    RegistryChanged,
    /// Time for the partner tick.
    PartnerTick,
    /// The settings changed (through the API or a local edit): the servers and the partner tick follow them.
    SettingsChanged,
    /// Restart in place (the API's restart, SIGHUP).
    RestartMonitor,
    /// Stop (SIGTERM, SIGINT).
    Stop,
}

/// Hooks of an in-process run (tests).
#[derive(Default)]
pub(crate) struct Hooks {
    /// Receives the monitor once every registered process has its task and the servers serve.
    pub(crate) serving: Option<tokio::sync::oneshot::Sender<Arc<Monitor>>>,
}

/// The run of a locked instance, step by step: take over the registry, adopt what runs, start the servers and
/// the registry writer, run the event loop, shut down.
async fn run_locked(config: DaemonConfig, lock: &mut InstanceLock, hooks: Hooks) -> Result<Exit, Error> {
    // Before anything is touched: a certificate or key that does not load stops the start.
    let mut servers = Servers::new(config.tls.as_ref(), &config.paths)?;
    // The monitor's transactions start from the registry it last wrote while nobody else changed the file.
    let store = Arc::new(Store::new_cached(config.paths.clone()));
    let registry = read_registry(&store).await?;
    check_file_limit(registry.processes.len())?;
    // A predecessor that did not shut down cleanly (killed, crashed, or killed while taking over) left
    // `monitorRunning` set: then this start resumes, it does not boot.
    let left_marked = registry.monitor_running;
    let start = StartKind::of(config.resume, left_marked);
    // Start-up order: what can refuse the start (the ports, the signal handlers) comes before the registry is
    // marked and before anything is spawned or adopted, so a refused start leaves no trace (see `startup`).
    let bound = crate::startup::bind_servers(&registry, &config)?;
    // The take-over below reads the registry again; this copy (about 2 KiB per entry) is not kept for the
    // daemon's life.
    drop(registry);
    let signals = Signals::install()?;
    let (mut registry, owner_secret) = take_over_registry(&store, &config, start).await?;
    let containment = contain(&config.paths);
    let sup = supervisor(&config, &owner_secret, containment.clone());
    let reaper = containment.base().is_none().then(|| spawn_reaper(sup.clone()));
    crate::unusable::report(&registry.unusable);
    let processes = std::mem::take(&mut registry.processes);
    let (events_tx, events) = mpsc::unbounded_channel();
    let monitor = Arc::new(Monitor::new(store.clone(), sup.clone(), registry, config.standalone, events_tx));
    // The aliveness server serves from here on; the remote API, bound already, is served once every registered
    // process has its task (a request must not find a registered process missing).
    if let Err(err) = servers.serve_aliveness(bound.aliveness, &monitor) {
        if !left_marked {
            crate::startup::unmark(&store).await;
        }
        return Err(err);
    }
    adopt(&sup, &containment, processes, start).await;
    servers.serve_bound_remote(bound.remote, &monitor);
    servers.ensure_socket(&monitor);
    crate::startup::publish_ports(lock, &monitor);
    let writer = Writer::start(monitor.clone());
    if let Some(serving) = hooks.serving {
        let _ = serving.send(monitor.clone());
    }
    let watch = Watch::new(&monitor, config.paths.root());
    let mut running = Running { config, monitor, sup, events, signals, servers, watch };
    let restart = running.run_loop().await;
    running.shut_down(restart, writer, reaper, &containment).await
}

/// Reads the registry, restoring the last good copy when it does not parse (the bad one is kept aside).
async fn read_registry(store: &Arc<Store>) -> Result<pm_core::Registry, Error> {
    let (registry, set_aside) = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.init_recovering())
            .await
            .map_err(|err| CoreError::internal("registry task failed", err))??
    };
    if let Some(bad) = set_aside {
        tracing::error!(
            "registry {} did not parse; restored the last good copy and kept the bad one as {}",
            store.paths().registry_file().display(),
            bad.display()
        );
    }
    Ok(registry)
}

/// The signals the daemon answers: SIGTERM and SIGINT stop it, SIGHUP restarts it.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> Result<Signals, Error> {
        let term =
            signal(SignalKind::terminate()).map_err(|err| CoreError::io("cannot install the SIGTERM handler", err))?;
        let int =
            signal(SignalKind::interrupt()).map_err(|err| CoreError::io("cannot install the SIGINT handler", err))?;
        let hup =
            signal(SignalKind::hangup()).map_err(|err| CoreError::io("cannot install the SIGHUP handler", err))?;
        Ok(Signals { term, int, hup })
    }
}

/// Marks the registry as run by this monitor (`monitorRunning`), stores the command line's ports, drops the
/// partner entry under `--standalone`, and makes or keeps the owner secret (rotated at a boot, kept at a resume:
/// the running children carry it). Returns the registry as stored and the secret.
async fn take_over_registry(
    store: &Arc<Store>,
    config: &DaemonConfig,
    start: StartKind,
) -> Result<(pm_core::Registry, String), Error> {
    let (remote_port, aliveness_port, standalone) = (config.remote_port, config.aliveness_port, config.standalone);
    let store = store.clone();
    let taken = tokio::task::spawn_blocking(move || {
        store.transaction(Duration::from_secs(10), |registry| {
            registry.monitor_running = true;
            if let Some(port) = remote_port {
                registry.remote_access.remote_port = port;
            }
            if let Some(port) = aliveness_port {
                registry.aliveness_server.port = port;
            }
            if standalone {
                registry.processes.retain(|_, entry| !entry.config.partner);
            }
            let secret =
                crate::orphans::ensure_secret(registry, start.is_boot()).map_err(|err| pm_registry::Error::Io {
                    path: "/dev/urandom".into(),
                    action: "read the owner secret".to_owned(),
                    source: err,
                })?;
            Ok::<_, pm_registry::Error>((registry.clone(), secret))
        })
    })
    .await
    .map_err(|err| CoreError::internal("registry task failed", err))??;
    Ok(taken)
}

/// How the processes are contained: cgroups when the home has a delegated one, process groups (with the monitor
/// a child subreaper where it can be) otherwise.
fn contain(paths: &Paths) -> Containment {
    let containment = match Containment::detect(paths) {
        Containment::ProcessGroup { reason } => {
            let reason = match crate::cgroup::become_subreaper() {
                Ok(()) => format!("{reason}; process groups, a child subreaper and the owner key instead"),
                Err(err) => format!("{reason}; process groups and the owner key instead (no child subreaper: {err})"),
            };
            Containment::ProcessGroup { reason }
        }
        cgroup => cgroup,
    };
    tracing::info!(containment = containment.mode(), "{}", containment.reason());
    containment
}

/// The supervisor of the daemon's processes: they get the owner key `secret` and the instance id.
fn supervisor(config: &DaemonConfig, secret: &str, containment: Containment) -> Supervisor {
    let process_groups = containment.base().is_none();
    let paths = &config.paths;
    Supervisor::with_containment(
        SupervisorConfig {
            paths: paths.clone(),
            keep_runs: config.keep_runs,
            default_cwd: Paths::home_dir(),
            extra_env: vec![("PROCESS_MONITOR_INSTANCE".to_owned(), paths.instance_id().to_owned())],
        },
        Some(secret),
        containment,
        process_groups,
    )
}

/// Hands every registered process to a task of `sup`: what still runs (as recorded, or a copy found carrying the
/// owner key) is adopted, duplicates are stopped, and at a boot stopped autostart processes start. Then the
/// processes of ids no longer registered are stopped (see [`decide::strays`]).
async fn adopt(
    sup: &Supervisor,
    containment: &Containment,
    processes: BTreeMap<String, SharedEntry>,
    start: StartKind,
) {
    tracing::info!(?start, processes = processes.len(), "taking over the registry");
    let mut orphans = {
        let sup = sup.clone();
        tokio::task::spawn_blocking(move || sup.orphans()).await.unwrap_or_default()
    };
    let registered: HashSet<String> = processes.keys().cloned().collect();
    for (_, entry) in processes {
        let found = orphans.remove(&entry.config.id).unwrap_or_default();
        // A stop asked for while no monitor ran (or while this one was starting) is honoured, not undone.
        let stop_requested = entry.pending_action == Some(pm_core::PendingAction::Stop);
        let entry = adopt_copies(sup, containment, entry, found);
        let start = if stop_requested { StartKind::Resume } else { start };
        if let Err(err) = sup.resume(entry.clone(), start) {
            tracing::warn!(process = %entry.config.id, "cannot supervise: {err}");
        }
    }
    if let Some(base) = containment.base() {
        for id in crate::cgroup::empty_strays(base, &registered) {
            tracing::warn!(process = %id, "emptied the cgroup of a process that is no longer registered");
        }
    }
    // Started by this instance, but its registration is gone: deregistered while the monitor that should have
    // stopped it was killed. Nothing supervises it any more, so it is stopped, unless it is a monitor of this
    // home (a partner dropped by standalone mode keeps running: it holds its instance lock).
    for stray in decide::strays(orphans, |id| sup.live_instance(id).map(|process| process.pid)) {
        match stray {
            Stray::LeaveMonitor { id, pid } => {
                tracing::info!(instance = %id, pid, "a monitor started by an earlier one runs unsupervised; left running");
            }
            Stray::Stop { id, pid, start_time } => {
                tracing::warn!(process = %id, pid, "stopping a process started by an earlier monitor that is no longer registered");
                stop_stray(Process::new(pid, start_time));
            }
        }
    }
}

/// Settles which process `entry` stands for, given the copies `found` running with the owner key (see
/// [`decide::sort_copies`]) and, with cgroups, what its cgroup holds; then honours a pending stop.
fn adopt_copies(
    sup: &Supervisor,
    containment: &Containment,
    mut entry: SharedEntry,
    mut found: Vec<Found>,
) -> SharedEntry {
    let id = entry.config.id.clone();
    // Only a process that runs this entry's executable is taken for it (the owner key and uid were checked by
    // the scan); anything else is neither adopted nor stopped.
    found.retain(|found| {
        let runs = sup.runs_registered(found, &entry.config);
        if !runs {
            tracing::warn!(process = %id, pid = found.pid, exe = ?found.exe, "a process carries this monitor's owner key but does not run the registered executable; not adopted");
        }
        runs
    });
    let known = pm_registry::proc::live_pid_of(&entry);
    let copies = decide::sort_copies(known, entry.config.partner, &found, crate::orphans::cmdline);
    if let Some((pid, start_time)) = copies.adopt {
        tracing::warn!(process = %id, pid, "found a running copy the registry did not record; adopting it");
        entry.pid = Some(pid);
        entry.pid_start_time = start_time;
        // The recorded run is gone and this is a newer one: it runs (a stop in the record was about the old run).
        entry.state = ProcessState::Running;
    }
    for pid in copies.leave {
        tracing::info!(process = %id, pid, "leaving running a detached process of this id");
    }
    for (pid, start_time) in copies.stop {
        tracing::warn!(process = %id, pid, "stopping a duplicate copy started by an earlier monitor");
        stop_stray(Process::new(pid, start_time));
    }
    let runs = known.is_some() || copies.adopt.is_some() || adopt_from_cgroup(containment, &mut entry);
    // Changed only when there is a stop to honour: the entry is still shared with the monitor's cached registry.
    if entry.pending_action.is_some() {
        decide::honour_pending_stop(&mut entry, runs);
    }
    entry
}

/// With cgroups, for a process whose leader is gone: a tracked daemon is adopted through its cgroup's members
/// (true); otherwise they are leftovers of an exit like any other, and killed.
fn adopt_from_cgroup(containment: &Containment, entry: &mut SharedEntry) -> bool {
    let Some(dir) = containment.dir(&entry.config.id).filter(|dir| !entry.config.partner && dir.is_dir()) else {
        return false;
    };
    let member = crate::cgroup::ProcCgroup::existing(dir.clone()).and_then(|cgroup| cgroup.first_member());
    match member {
        Some(Process { pid, start_time }) if entry.config.track_daemonized_children => {
            tracing::info!(process = %entry.config.id, pid, "adopting the daemonized children in its cgroup");
            entry.pid = Some(pid);
            entry.pid_start_time = start_time;
            entry.state = ProcessState::Running;
            true
        }
        _ => {
            if crate::cgroup::kill_leftovers(&dir) {
                tracing::warn!(process = %entry.config.id, "killed what its exited leader left in its cgroup");
            }
            false
        }
    }
}

/// The daemon once it serves: what its loop waits on and what it drives.
struct Running {
    config: DaemonConfig,
    monitor: Arc<Monitor>,
    sup: Supervisor,
    events: mpsc::UnboundedReceiver<DaemonEvent>,
    signals: Signals,
    servers: Servers,
    watch: Watch,
}

/// What the loop watches besides its channel and the signals: the registry file and the partner tick's clock.
struct Watch {
    registry: crate::watch::RegistryWatch,
    partner_every: Duration,
    partner_tick: tokio::time::Interval,
    /// A reconcile failed and said so; said again only after one worked.
    reconcile_failing: bool,
}

impl Watch {
    fn new(monitor: &Monitor, home: &std::path::Path) -> Watch {
        let partner_every = partner_interval(monitor);
        let mut partner_tick = tokio::time::interval(partner_every);
        partner_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Watch {
            registry: crate::watch::RegistryWatch::new(home),
            partner_every,
            partner_tick,
            reconcile_failing: false,
        }
    }
}

impl Running {
    /// Handles events until one ends the loop; true for a restart in place.
    async fn run_loop(&mut self) -> bool {
        loop {
            let event = self.next_event().await;
            if let Some(restart) = self.handle(event).await {
                return restart;
            }
        }
    }

    async fn next_event(&mut self) -> DaemonEvent {
        tokio::select! {
            () = self.watch.registry.changed() => DaemonEvent::RegistryChanged,
            _ = self.watch.partner_tick.tick() => DaemonEvent::PartnerTick,
            event = self.events.recv() => event.unwrap_or(DaemonEvent::Stop),
            _ = self.signals.term.recv() => DaemonEvent::Stop,
            _ = self.signals.int.recv() => DaemonEvent::Stop,
            _ = self.signals.hup.recv() => DaemonEvent::RestartMonitor,
        }
    }

    /// Handles `event`; `Some(restart)` ends the loop.
    async fn handle(&mut self, event: DaemonEvent) -> Option<bool> {
        match event {
            DaemonEvent::RegistryChanged => self.reconcile().await,
            DaemonEvent::PartnerTick => partner_tick_once(&self.monitor, &self.config.partner_program).await,
            DaemonEvent::SettingsChanged => self.follow_settings().await,
            DaemonEvent::RestartMonitor => {
                if crate::startup::may_restart(&self.config.paths).await {
                    return Some(true);
                }
            }
            DaemonEvent::Stop => return Some(false),
        }
        None
    }

    /// Takes up the edits of local clients; a registry that cannot be read is said once, not at every event.
    async fn reconcile(&mut self) {
        match self.monitor.reconcile().await {
            Ok(()) => self.watch.reconcile_failing = false,
            Err(err) => {
                if !self.watch.reconcile_failing {
                    tracing::error!("cannot read the registry: {err}; supervising from memory");
                }
                self.watch.reconcile_failing = true;
            }
        }
    }

    /// The remote API, the socket's mode and the partner tick follow new settings.
    async fn follow_settings(&mut self) {
        if let Err(err) = self.servers.ensure_remote(&self.monitor, self.config.remote_bind.as_deref()).await {
            tracing::error!("{err}");
        }
        self.servers.ensure_socket(&self.monitor);
        let every = partner_interval(&self.monitor);
        if every != self.watch.partner_every {
            self.watch.partner_every = every;
            self.watch.partner_tick = tokio::time::interval(every);
        }
        partner_tick_once(&self.monitor, &self.config.partner_program).await;
    }

    /// Stops the servers and the writer, then the processes (all but a partner, which keeps running; all of them
    /// left running for the replacement of a `restart`), stores their final states and, for a restart, starts
    /// the replacement.
    async fn shut_down(
        mut self,
        restart: bool,
        writer: Writer,
        reaper: Option<tokio::task::JoinHandle<()>>,
        containment: &Containment,
    ) -> Result<Exit, Error> {
        self.monitor.begin_shutdown(restart);
        tracing::info!(restart, "shutting down");
        writer.stop();
        self.servers.shutdown_remote().await;
        self.servers.shutdown_socket().await;
        let entries = if restart {
            self.servers.shutdown_aliveness().await;
            self.sup.shutdown(|_| true).await
        } else {
            self.stop_processes().await
        };
        if let Err(err) = self.monitor.flush_entries(entries, !restart).await {
            tracing::error!("cannot store the final process states: {err}");
        }
        self.servers.shutdown_aliveness().await;
        if let Some(reaper) = reaper {
            reaper.abort();
        }
        if let (false, Some(base)) = (restart, containment.base()) {
            crate::cgroup::remove_base(base);
        }
        if restart {
            let pid = respawn(&self.config.restart_command).map_err(Error::Respawn)?;
            tracing::info!(pid, "replacement monitor started");
            return Ok(Exit::Restarted { pid });
        }
        Ok(Exit::Stopped)
    }

    /// Stops every process but a partner; signals while that goes on do not cut it short.
    async fn stop_processes(&mut self) -> Vec<ProcessEntry> {
        let shutdown = self.sup.shutdown(|entry| entry.config.partner);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                entries = &mut shutdown => break entries,
                // Another `--stop` (or a service manager repeating itself): the same shutdown goes on; cutting it
                // short would leave the processes still stopping running unsupervised.
                _ = self.signals.term.recv() => tracing::info!("SIGTERM during the shutdown: already stopping, carrying on"),
                // A second Ctrl-C in a terminal is a deliberate "exit now".
                _ = self.signals.int.recv() => force_exit(),
            }
        }
    }
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
    let ms = monitor.partner_discovery().check_interval_ms;
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
