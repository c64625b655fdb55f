//! `ProcessMonitorClient`: drives a monitor through its registry file, as the guide's local API.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use pm_core::{
    PartnerDiscoveryPatch, PendingAction, ProcessConfig, ProcessEntry, ProcessState, ProcessStatus, Registry,
    RemoteAccessPatch, Settings, SettingsUpdate, SharedEntry, Timestamp,
};
use pm_registry::{InstanceLock, LockInfo, Paths, Store};

use crate::remote::{patch_body, process_path};
use crate::socket::Socket;
use crate::Error;

/// How long a registry transaction waits for the lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a waiting call re-reads the registry.
const POLL: Duration = Duration::from_millis(20);
/// Time a socket call may take beyond the wait timeout (and, for calls that stop a process, its stop timeout).
const SOCKET_SLACK: Duration = Duration::from_secs(5);
/// Time a read through the socket may take before the registry is read instead.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// The stop timeout assumed when the registry cannot be read (another user on the socket).
const UNKNOWN_STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a [`ProcessMonitorClient`] finds its monitor.
#[derive(Debug, Clone)]
pub struct LocalClientOptions {
    /// The monitor's folder; `~/.tom/process_monitor` when `None`.
    pub directory: Option<std::path::PathBuf>,
    /// The instance (`default` unless told otherwise).
    pub instance_id: String,
    /// How long a call that implies an outcome (start, stop, restart) waits for it, on top of the
    /// process's stop timeout.
    pub wait_timeout: Duration,
    /// Talk to a running monitor through its unix socket `processes_{id}.sock` (default); the registry is used
    /// when no monitor listens there, or always when this is false.
    pub use_socket: bool,
}

impl Default for LocalClientOptions {
    fn default() -> Self {
        LocalClientOptions {
            directory: None,
            instance_id: pm_core::DEFAULT_INSTANCE.to_owned(),
            wait_timeout: Duration::from_secs(10),
            use_socket: true,
        }
    }
}

/// The local client.
///
/// While a monitor listens on its unix socket `processes_{id}.sock`, the calls that act (register, deregister,
/// start, stop, restart, enable, disable, autostart, settings changes) and the status reads go through it, as the
/// monitor's HTTP API (it answers once the action is done); otherwise (and with
/// [`LocalClientOptions::use_socket`] off) the registry is used as follows. A client that has changed the registry
/// itself (a call made while no monitor listened, or the key-level calls such as [`Self::update_config`]) stays on
/// the registry from then on, so that its later calls never overtake its own edits.
///
/// Every call is one short transaction on the registry under its lock. The monitor notices the edit within
/// a fraction of a second and acts; `start`, `stop` and `restart` wait (bounded) for the outcome. With no
/// monitor running, edits are stored and acted on when it starts, and `stop` (also `disable` and
/// `deregister`) stops the process itself, by its process group.
///
/// The calls block (small files, short waits); from async code run them under `spawn_blocking`.
pub struct ProcessMonitorClient {
    store: Store,
    wait_timeout: Duration,
    socket: Option<Socket>,
    /// Set once this client has changed the registry itself: from then on it stays on the registry, so that its
    /// later calls see its own edits (a running monitor takes a registry edit up a moment later, and a call through
    /// the socket could overtake it).
    wrote_registry: std::sync::atomic::AtomicBool,
}

impl ProcessMonitorClient {
    /// Streams the monitor's events (`GET /events`) through its unix socket, as
    /// [`crate::RemoteProcessMonitorClient::events`] does over TCP (reconnecting with `Last-Event-ID`, also to a
    /// monitor that restarted): no port, no token, and it works while `startRemoteAccess` is false. Must be called
    /// inside a tokio runtime. [`Error::Invalid`] when this client does not use the socket
    /// ([`LocalClientOptions::use_socket`] off); a monitor that does not listen shows as the stream's error, after
    /// [`crate::EventsOptions::max_failures`] attempts.
    pub fn events(&self, options: crate::EventsOptions) -> Result<crate::EventStream, Error> {
        let socket = self.socket.as_ref().ok_or_else(|| {
            Error::Invalid("this client does not use the monitor's socket (LocalClientOptions::use_socket)".to_owned())
        })?;
        crate::RemoteProcessMonitorClient::streams_over_socket(&socket.path).events(options)
    }

    /// Whether a monitor listens on this instance's unix socket now (always false without
    /// [`LocalClientOptions::use_socket`]).
    pub fn socket_listens(&self) -> bool {
        self.socket.as_ref().is_some_and(|socket| pm_http::connect_unix(&socket.path).is_ok())
    }

    /// A client of the default instance in `~/.tom/process_monitor`.
    pub fn new() -> Result<ProcessMonitorClient, Error> {
        ProcessMonitorClient::with_options(&LocalClientOptions::default())
    }

    /// A client of the given folder and instance.
    pub fn with_options(options: &LocalClientOptions) -> Result<ProcessMonitorClient, Error> {
        let paths = Paths::resolve(options.directory.as_deref(), &options.instance_id)?;
        let socket = options.use_socket.then(|| Socket { path: paths.socket_file() });
        Ok(ProcessMonitorClient {
            store: Store::new(paths),
            wait_timeout: options.wait_timeout,
            socket,
            wrote_registry: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A client of `instance_id` in `directory`.
    pub fn in_directory(directory: &Path, instance_id: &str) -> Result<ProcessMonitorClient, Error> {
        let options = LocalClientOptions {
            directory: Some(directory.to_path_buf()),
            instance_id: instance_id.to_owned(),
            ..LocalClientOptions::default()
        };
        ProcessMonitorClient::with_options(&options)
    }

    /// The files this client works on.
    pub fn paths(&self) -> &Paths {
        self.store.paths()
    }

    /// The running monitor's lock (PID, since when), or `None` when no monitor runs.
    pub fn monitor(&self) -> Result<Option<LockInfo>, Error> {
        Ok(InstanceLock::holder(self.store.paths())?)
    }

    /// Registers a process. With `autostart`, a running monitor starts it at once.
    pub fn register(&self, config: ProcessConfig) -> Result<(), Error> {
        config.validate()?;
        let mut config = config;
        config.partner = false;
        let body = serde_json::to_value(&config)
            .map_err(|err| Error::Invalid(format!("cannot encode the configuration: {err}")))?;
        if let Some(res) = self.socket_call::<serde_json::Value>("POST", "/processes", Some(body), Some(&config.id)) {
            return res.map(drop);
        }
        // A new entry is a change: no copy of the registry is taken to find out, and the entries it does not
        // touch are not built (`Store::transaction_draft`).
        self.transaction_draft(|registry| {
            // The partner instance's id is how the two monitors supervise each other.
            let top = registry.top_level();
            let partner = top.partner_discovery.partner_instance_id.as_deref();
            if registry.contains(&config.id) || pm_core::is_partner_id(&top.instance_id, partner, &config.id) {
                return Err(Error::AlreadyExists(config.id.clone()));
            }
            // `check_new_dependencies`, on the graph the draft gives.
            let mut graph = registry.dependency_graph()?;
            graph.insert(config.id.clone(), config.depends_on.keys().cloned().collect());
            pm_core::check_acyclic(&graph)?;
            registry.insert(ProcessEntry::new(config.clone(), Timestamp::now()));
            Ok(((), true))
        })
    }

    /// Registers a process like [`ProcessMonitorClient::register`], storing `keys` beside its configuration in
    /// the entry (additive keys such as a stack file's `stackFile` mark; the monitor keeps them on rewrite).
    /// Keys that are configuration or runtime fields of the entry are refused.
    pub fn register_with_keys(
        &self,
        config: ProcessConfig,
        keys: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), Error> {
        config.validate()?;
        check_extra_keys(&keys)?;
        let mut config = config;
        config.partner = false;
        self.transaction(|registry| {
            if registry.processes.contains_key(&config.id) {
                return Err(Error::AlreadyExists(config.id.clone()));
            }
            pm_core::check_new_dependencies(registry, &config)?;
            let mut entry = ProcessEntry::new(config.clone(), Timestamp::now());
            entry.extra = keys;
            registry.processes.insert(config.id.clone(), entry.into());
            Ok(())
        })
    }

    /// Replaces the configuration of a registered process, keeping its runtime fields (PID, state, counters),
    /// and sets the additive entry `keys` (a `null` value removes one). A running monitor takes the new
    /// configuration up without restarting the process: command, arguments, environment and working directory
    /// apply from its next start. `enabled` is left as it is (use [`ProcessMonitorClient::enable`] and
    /// [`ProcessMonitorClient::disable`]); the partner entry cannot be changed this way.
    pub fn update_config(
        &self,
        config: ProcessConfig,
        keys: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), Error> {
        config.validate()?;
        check_extra_keys(&keys)?;
        self.transaction(|registry| {
            if registry.processes.contains_key(&config.id) {
                pm_core::check_new_dependencies(registry, &config)?;
            }
            let entry = registry.processes.get_mut(&config.id).ok_or_else(|| Error::NotFound(config.id.clone()))?;
            if entry.config.partner {
                return Err(Error::Invalid(format!("{}: the partner entry is managed by the monitor", config.id)));
            }
            let enabled = entry.config.enabled;
            entry.config = config;
            entry.config.enabled = enabled;
            entry.config.partner = false;
            for (key, value) in keys {
                if value.is_null() {
                    entry.extra.remove(&key);
                } else {
                    entry.extra.insert(key, value);
                }
            }
            Ok(())
        })
    }

    /// Removes a process and returns once it no longer runs: a running monitor stops it, and with no monitor
    /// this call stops it. A process others depend on is refused ([`Error::Conflict`] naming them); see
    /// [`ProcessMonitorClient::deregister_forced`].
    pub fn deregister(&self, id: &str) -> Result<(), Error> {
        self.deregister_with(id, false)
    }

    /// Removes a process even when others depend on it (they then wait for it in vain when started).
    pub fn deregister_forced(&self, id: &str) -> Result<(), Error> {
        self.deregister_with(id, true)
    }

    fn deregister_with(&self, id: &str, force: bool) -> Result<(), Error> {
        pm_core::validate_process_id(id)?;
        let mut path = process_path(id, "")?;
        if force {
            path.push_str("?force=true");
        }
        if let Some(res) = self.socket_call_stopping::<serde_json::Value>("DELETE", &path, Some(id)) {
            return res.map(drop);
        }
        let refuse = |id: &str, dependents: &[String]| {
            if dependents.is_empty() {
                return Ok(());
            }
            Err(Error::Conflict(format!(
                "Process {id} is a dependency of {}; deregister or change them first, or force it",
                dependents.join(", ")
            )))
        };
        let refuse_dependents = |registry: &Registry| {
            let dependents = if force { Vec::new() } else { pm_core::dependents_in(registry, id) };
            refuse(id, &dependents)
        };
        if self.monitor()?.is_none() {
            // Nothing runs (no live process of the entry): one transaction checks and removes, as the steps below
            // would end up doing one transaction each.
            let removed = self.transaction_draft(|registry| {
                if !force {
                    // `dependents_in`, on the graph the draft gives.
                    let graph = registry.dependency_graph()?;
                    let dependents: Vec<String> = graph
                        .iter()
                        .filter(|(other, deps)| other.as_str() != id && deps.contains(id))
                        .map(|(other, _)| other.clone())
                        .collect();
                    refuse(id, &dependents)?;
                }
                let entry = registry.entry(id)?.ok_or_else(|| Error::NotFound(id.to_owned()))?;
                if pm_registry::proc::live_pid_of(entry).is_some() {
                    return Ok((false, false));
                }
                registry.remove(id);
                Ok((true, true))
            })?;
            if removed {
                return Ok(());
            }
            self.stop_directly(id, ProcessState::Stopped)?;
        } else {
            refuse_dependents(&self.load()?)?;
        }
        let removed = self.transaction(|registry| match registry.processes.remove(id) {
            Some(entry) => Ok(entry),
            None => Err(Error::NotFound(id.to_owned())),
        })?;
        if let Some(pid) = pm_registry::proc::live_pid_of(&removed) {
            let deadline = Instant::now() + self.wait_timeout + Duration::from_millis(removed.config.stop_timeout_ms());
            while pm_registry::proc::is_same_process(pid, removed.pid_start_time) && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
        }
        Ok(())
    }

    /// Starts a process (a no-op when it runs) and waits until the monitor has started it. With no monitor
    /// running, the request is stored and the current status returned.
    pub fn start(&self, id: &str) -> Result<ProcessStatus, Error> {
        if let Some(res) = self.socket_action(id, "start") {
            return res;
        }
        // A dependency that is disabled or failed makes the start fail (the monitor would refuse it too).
        if pm_core::validate_process_id(id).is_ok() {
            let registry = self.load()?;
            let graph = pm_core::graph_of(&registry);
            let stopped = registry.processes.get(id).is_some_and(|entry| !entry.state.has_child());
            let blocker = stopped
                .then(|| pm_core::start_blocker(|dep| registry.processes.get(dep).map(|entry| &**entry), &graph, id));
            if let Some(problem) = blocker.flatten() {
                return Err(Error::Conflict(problem));
            }
        }
        let before = self.request(id, PendingAction::Start)?;
        if before.state.has_child() || self.monitor()?.is_none() {
            return Ok(before.status());
        }
        // Done once the monitor took the request and began a run (or could not: a spawn error also records a
        // start time). Comparing start times avoids answering with the state from before the request.
        let started_before = before.last_started_at;
        self.wait(id, self.wait_timeout, |entry| {
            entry.pending_action.is_none() && (entry.state.has_child() || entry.last_started_at != started_before)
        })
    }

    /// Stops a process and waits until it is stopped (with no monitor, stops it directly).
    pub fn stop(&self, id: &str) -> Result<ProcessStatus, Error> {
        pm_core::validate_process_id(id)?;
        if let Some(res) = self.socket_action(id, "stop") {
            return res;
        }
        if self.monitor()?.is_none() {
            return self.stop_directly(id, ProcessState::Stopped);
        }
        let before = self.request(id, PendingAction::Stop)?;
        let timeout = self.wait_timeout + Duration::from_millis(before.config.stop_timeout_ms());
        self.wait(id, timeout, |entry| {
            entry.pending_action.is_none() && matches!(entry.state, ProcessState::Stopped | ProcessState::Disabled)
        })
    }

    /// Stops a process like [`ProcessMonitorClient::stop`], and answers also the processes that depend on it
    /// which the running monitor stopped first (in that order; none without a monitor on the socket).
    pub fn stop_with_dependents(&self, id: &str) -> Result<(ProcessStatus, Vec<String>), Error> {
        pm_core::validate_process_id(id)?;
        if let Some(res) = self.socket_call_stopping::<serde_json::Value>("POST", &process_path(id, "/stop")?, Some(id))
        {
            let reply = res?;
            let dependents = reply["stoppedDependents"]
                .as_array()
                .map(|ids| ids.iter().filter_map(|id| id.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            let status = match self.socket_call("GET", &process_path(id, "")?, None, Some(id)) {
                Some(res) => res?,
                None => self.get_status(id)?,
            };
            return Ok((status, dependents));
        }
        Ok((self.stop(id)?, Vec::new()))
    }

    /// Stops then starts a process and waits until the new run has begun.
    pub fn restart(&self, id: &str) -> Result<ProcessStatus, Error> {
        pm_core::validate_process_id(id)?;
        if let Some(res) = self.socket_action(id, "restart") {
            return res;
        }
        if self.monitor()?.is_none() {
            self.stop_directly(id, ProcessState::Stopped)?;
            return self.start(id);
        }
        let before = self.request(id, PendingAction::Restart)?;
        let timeout = self.wait_timeout + Duration::from_millis(before.config.stop_timeout_ms());
        let started_before = before.last_started_at;
        self.wait(id, timeout, |entry| {
            entry.pending_action.is_none()
                && entry.last_started_at != started_before
                && !matches!(entry.state, ProcessState::Stopped | ProcessState::Stopping)
        })
    }

    /// The status of one process, as last stored by the monitor.
    pub fn get_status(&self, id: &str) -> Result<ProcessStatus, Error> {
        pm_core::validate_process_id(id)?;
        if let Some(res) = self.socket_call("GET", &process_path(id, "")?, None, Some(id)) {
            return res;
        }
        let registry = self.load()?;
        // An entry that cannot run is reported as `failed` with the reason (see `pm_core::UnusableEntry`).
        let unusable = registry.unusable.get(id).map(|entry| entry.status(id));
        registry
            .processes
            .get(id)
            .map(|entry| entry.status())
            .or(unusable)
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    /// The status of every process, by id (entries that cannot run as `failed`, with the reason).
    pub fn get_all_status(&self) -> Result<BTreeMap<String, ProcessStatus>, Error> {
        #[derive(serde::Deserialize)]
        struct List {
            processes: Vec<ProcessStatus>,
        }
        if let Some(res) = self.socket_call::<List>("GET", "/processes", None, None) {
            return res.map(|list| list.processes.into_iter().map(|status| (status.id.clone(), status)).collect());
        }
        let registry = self.load()?;
        let unusable = registry.unusable.iter().map(|(id, entry)| (id.clone(), entry.status(id)));
        Ok(unusable.chain(registry.processes.iter().map(|(id, entry)| (id.clone(), entry.status()))).collect())
    }

    /// The whole stored entry of a process (configuration and runtime fields).
    pub fn get_entry(&self, id: &str) -> Result<ProcessEntry, Error> {
        pm_core::validate_process_id(id)?;
        self.load()?.processes.remove(id).map(SharedEntry::into_entry).ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    /// Enables a process.
    pub fn enable(&self, id: &str) -> Result<(), Error> {
        pm_core::validate_process_id(id)?;
        if let Some(res) = self.socket_call::<serde_json::Value>("POST", &process_path(id, "/enable")?, None, Some(id))
        {
            return res.map(drop);
        }
        self.update_entry(id, |entry| {
            entry.config.enabled = true;
            if entry.state == ProcessState::Disabled {
                entry.state = ProcessState::Stopped;
            }
        })
    }

    /// Disables a process; it is stopped (by the monitor, or by this call when no monitor runs).
    pub fn disable(&self, id: &str) -> Result<(), Error> {
        pm_core::validate_process_id(id)?;
        let path = process_path(id, "/disable")?;
        if let Some(res) = self.socket_call_stopping::<serde_json::Value>("POST", &path, Some(id)) {
            return res.map(drop);
        }
        let running = self.monitor()?.is_some();
        if !running {
            self.stop_directly(id, ProcessState::Disabled)?;
        }
        self.update_entry(id, |entry| {
            entry.config.enabled = false;
            if !running {
                entry.state = ProcessState::Disabled;
            }
        })?;
        if running {
            self.wait(id, self.wait_timeout + Duration::from_secs(10), |entry| entry.state == ProcessState::Disabled)?;
        }
        Ok(())
    }

    /// Changes whether a process starts with the monitor.
    pub fn set_autostart(&self, id: &str, autostart: bool) -> Result<(), Error> {
        pm_core::validate_process_id(id)?;
        let body = serde_json::json!({ "autostart": autostart });
        if let Some(res) =
            self.socket_call::<serde_json::Value>("PUT", &process_path(id, "/autostart")?, Some(body), Some(id))
        {
            return res.map(drop);
        }
        self.update_entry(id, |entry| entry.config.autostart = autostart)
    }

    /// The monitor-wide settings.
    pub fn settings(&self) -> Result<Settings, Error> {
        Ok(Settings::of(&self.load()?))
    }

    /// Turns standalone mode (no partner monitoring) on or off.
    pub fn set_standalone_mode(&self, enabled: bool) -> Result<(), Error> {
        self.update_settings(SettingsUpdate::StandaloneMode(enabled))
    }

    /// Whether standalone mode is on.
    pub fn is_standalone_mode(&self) -> Result<bool, Error> {
        Ok(self.load()?.standalone_mode)
    }

    /// Sets the given remote-access permissions (keys left `None` are unchanged).
    pub fn set_remote_access_permissions(&self, patch: RemoteAccessPatch) -> Result<(), Error> {
        self.update_settings(SettingsUpdate::RemoteAccess(patch))
    }

    /// Replaces the trusted hosts.
    pub fn set_trusted_hosts(&self, hosts: Vec<String>) -> Result<(), Error> {
        self.update_settings(SettingsUpdate::TrustedHosts(hosts))
    }

    /// Replaces the executable whitelist (glob patterns, validated).
    pub fn set_remote_executable_whitelist(&self, patterns: Vec<String>) -> Result<(), Error> {
        self.update_settings(SettingsUpdate::ExecutableWhitelist(patterns))
    }

    /// Replaces the executable blacklist (glob patterns, validated).
    pub fn set_remote_executable_blacklist(&self, patterns: Vec<String>) -> Result<(), Error> {
        self.update_settings(SettingsUpdate::ExecutableBlacklist(patterns))
    }

    /// Merges the given partner-discovery keys.
    pub fn set_partner_discovery(&self, patch: PartnerDiscoveryPatch) -> Result<(), Error> {
        self.update_settings(SettingsUpdate::PartnerDiscovery(patch))
    }

    /// Applies one settings change.
    pub fn update_settings(&self, update: SettingsUpdate) -> Result<(), Error> {
        let (path, body) = match &update {
            SettingsUpdate::RemoteAccess(patch) => ("/config/remote-access", patch_body(patch)?),
            SettingsUpdate::TrustedHosts(hosts) => {
                ("/config/trusted-hosts", serde_json::json!({ "trustedHosts": hosts }))
            }
            SettingsUpdate::ExecutableWhitelist(patterns) => {
                ("/config/executable-whitelist", serde_json::json!({ "patterns": patterns }))
            }
            SettingsUpdate::ExecutableBlacklist(patterns) => {
                ("/config/executable-blacklist", serde_json::json!({ "patterns": patterns }))
            }
            SettingsUpdate::StandaloneMode(enabled) => {
                ("/config/standalone-mode", serde_json::json!({ "enabled": enabled }))
            }
            SettingsUpdate::PartnerDiscovery(patch) => ("/config/partner-discovery", patch_body(patch)?),
        };
        if let Some(res) = self.socket_call::<serde_json::Value>("PUT", path, Some(body), None) {
            return res.map(drop);
        }
        self.transaction(|registry| update.apply(registry).map_err(Error::from))
    }

    /// One call through the monitor's socket; `None` when no monitor listens there (or the socket is not used).
    fn socket_call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        id: Option<&str>,
    ) -> Option<Result<T, Error>> {
        let socket =
            self.socket.as_ref().filter(|_| !self.wrote_registry.load(std::sync::atomic::Ordering::Relaxed))?;
        if method == "GET" {
            // A read falls back to the registry also when the monitor accepts but does not answer in time (stopped
            // or stuck): the registry holds what it last stored.
            return match socket.call(method, path, body, id, READ_TIMEOUT)? {
                Err(Error::Transport { .. }) => None,
                other => Some(other),
            };
        }
        socket.call(method, path, body, id, self.wait_timeout + SOCKET_SLACK)
    }

    /// A socket call that may stop process `id`: it may take the process's stop timeout on top.
    fn socket_call_stopping<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        id: Option<&str>,
    ) -> Option<Result<T, Error>> {
        let socket =
            self.socket.as_ref().filter(|_| !self.wrote_registry.load(std::sync::atomic::Ordering::Relaxed))?;
        // No socket file, no monitor there: the registry (read for the stop budget) is not read for nothing.
        if std::fs::symlink_metadata(&socket.path).is_err() {
            return None;
        }
        let stop = id.and_then(|id| stop_budget(&self.load().ok()?, id)).unwrap_or(UNKNOWN_STOP_TIMEOUT);
        socket.call(method, path, None, id, self.wait_timeout + stop + SOCKET_SLACK)
    }

    /// `start`, `stop` or `restart` through the socket, answering the status afterwards.
    fn socket_action(&self, id: &str, action: &str) -> Option<Result<ProcessStatus, Error>> {
        let path = match process_path(id, &format!("/{action}")) {
            Ok(path) => path,
            Err(err) => return Some(Err(err)),
        };
        let res = match action {
            "start" => self.socket_call::<serde_json::Value>("POST", &path, None, Some(id))?,
            _ => self.socket_call_stopping::<serde_json::Value>("POST", &path, Some(id))?,
        };
        Some(res.and_then(|_| match self.socket_call("GET", &process_path(id, "")?, None, Some(id)) {
            Some(res) => res,
            None => self.get_status(id),
        }))
    }

    fn load(&self) -> Result<Registry, Error> {
        match self.store.load() {
            Ok(registry) => Ok(registry),
            Err(pm_registry::Error::Missing { .. }) => Ok(Registry::new_default(self.store.paths().instance_id())),
            Err(err) => Err(err.into()),
        }
    }

    fn transaction<T>(&self, f: impl FnOnce(&mut Registry) -> Result<T, Error>) -> Result<T, Error> {
        self.wrote_registry.store(true, std::sync::atomic::Ordering::Relaxed);
        self.store.transaction(LOCK_TIMEOUT, f)
    }

    /// [`ProcessMonitorClient::transaction`] whose `f` says whether it changed the registry and builds only the
    /// entries it asks for ([`Store::transaction_draft`]).
    fn transaction_draft<T>(
        &self,
        f: impl FnOnce(&mut dyn pm_core::RegistryDraft) -> Result<(T, bool), Error>,
    ) -> Result<T, Error> {
        self.wrote_registry.store(true, std::sync::atomic::Ordering::Relaxed);
        self.store.transaction_draft(LOCK_TIMEOUT, f)
    }

    fn update_entry(&self, id: &str, f: impl FnOnce(&mut ProcessEntry)) -> Result<(), Error> {
        pm_core::validate_process_id(id)?;
        self.transaction(|registry| {
            let entry = registry.processes.get_mut(id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
            f(entry);
            Ok(())
        })
    }

    /// Leaves a request for the monitor; answers the entry as it was.
    fn request(&self, id: &str, action: PendingAction) -> Result<ProcessEntry, Error> {
        pm_core::validate_process_id(id)?;
        self.transaction(|registry| {
            let entry = registry.processes.get_mut(id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
            if !entry.config.enabled && action != PendingAction::Stop {
                return Err(Error::Disabled(id.to_owned()));
            }
            let before = (**entry).clone();
            entry.pending_action = Some(action);
            Ok(before)
        })
    }

    /// Polls the registry until `done` holds for the entry, or the timeout passes (then answers the last
    /// status seen).
    fn wait(&self, id: &str, timeout: Duration, done: impl Fn(&ProcessEntry) -> bool) -> Result<ProcessStatus, Error> {
        let deadline = Instant::now() + timeout;
        // Start with short pauses (a running monitor usually answers within milliseconds), then back off.
        let mut pause = Duration::from_millis(1);
        loop {
            let registry = self.load()?;
            let entry = registry.processes.get(id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
            if done(entry) || Instant::now() >= deadline {
                return Ok(entry.status());
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(POLL);
        }
    }

    /// With no monitor running: ends the process group of the stored PID (SIGTERM, stop timeout, SIGKILL)
    /// and stores `target`. The registry lock is not held while waiting.
    ///
    /// The stop request is stored first and left in place, so that a monitor starting meanwhile honours it
    /// instead of restarting the process it sees die (the next monitor clears it).
    fn stop_directly(&self, id: &str, target: ProcessState) -> Result<ProcessStatus, Error> {
        pm_core::validate_process_id(id)?;
        let entry = self.transaction(|registry| {
            let stored = registry.processes.get_mut(id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
            stored.pending_action = Some(PendingAction::Stop);
            Ok(stored.clone())
        })?;
        if let Some(pid) = pm_registry::proc::live_pid_of(&entry) {
            crate::kill::stop_group(
                pm_registry::proc::Process::new(pid, entry.pid_start_time),
                Duration::from_millis(entry.config.stop_timeout_ms()),
            );
        }
        let status = self.transaction(|registry| {
            let stored = registry.processes.get_mut(id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
            if stored.pid == entry.pid {
                if stored.state.has_child() || matches!(stored.state, ProcessState::Retrying | ProcessState::Crashed) {
                    stored.last_stopped_at = Some(Timestamp::now());
                }
                stored.pid = None;
                stored.pid_start_time = None;
                stored.state = if stored.config.enabled { target } else { ProcessState::Disabled };
            }
            Ok(stored.status())
        })?;
        if self.monitor()?.is_some() {
            // A monitor came up meanwhile: it has the request; wait for its outcome.
            let timeout = self.wait_timeout + Duration::from_millis(entry.config.stop_timeout_ms());
            return self.wait(id, timeout, |entry| {
                entry.pending_action.is_none() && matches!(entry.state, ProcessState::Stopped | ProcessState::Disabled)
            });
        }
        Ok(status)
    }
}

/// Refuses additive entry keys that would shadow a field of the entry (configuration or runtime): such a key
/// does not come back as an additive key when the entry is written and read again.
fn check_extra_keys(keys: &serde_json::Map<String, serde_json::Value>) -> Result<(), Error> {
    let mut probe = ProcessEntry::new(ProcessConfig::new("probe", "probe", "probe"), Timestamp::now());
    probe.extra = keys.clone();
    let back = serde_json::to_value(&probe).and_then(serde_json::from_value::<ProcessEntry>);
    match back {
        Ok(back) if back.extra == *keys => Ok(()),
        _ => {
            let names: Vec<&str> = keys.keys().map(String::as_str).collect();
            Err(Error::Invalid(format!("{} would shadow a field of the entry", names.join(", "))))
        }
    }
}

/// How long stopping `id` may take at most: its stop timeout, plus those of the processes that depend on it
/// (the monitor stops them first, one after the other); `None` when it is not registered.
fn stop_budget(registry: &Registry, id: &str) -> Option<Duration> {
    let own = registry.processes.get(id)?.config.stop_timeout_ms();
    let dependents: u64 = pm_core::dependents_stop_order(&pm_core::graph_of(registry), id)
        .iter()
        .filter_map(|dependent| registry.processes.get(dependent))
        .map(|entry| entry.config.stop_timeout_ms())
        .sum();
    Some(Duration::from_millis(own.saturating_add(dependents)))
}
