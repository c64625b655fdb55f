//! Test fixtures: an in-memory control plane behind a real remote API on loopback, and bare listeners.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pm_client::{RemoteClientOptions, RemoteProcessMonitorClient};
use pm_core::{
    Error, MonitorState, MonitorStatus, PartnerDiscovery, ProcessConfig, ProcessState, ProcessStatus, Registry,
    RemoteAccessConfig, Settings, SettingsUpdate, Timestamp,
};
use pm_http::{ControlPlane, ServerConfig, ServerHandle};
use tokio::task::JoinHandle;

/// An in-memory control plane: processes in a map, settings trusting loopback, a count of calls, and an error
/// that every call answers while it is set.
pub struct FakeControl {
    pub processes: Mutex<BTreeMap<String, (ProcessConfig, ProcessState)>>,
    pub settings: Mutex<Settings>,
    pub calls: AtomicUsize,
    pub failure: Mutex<Option<Error>>,
    pub instance_id: String,
}

impl FakeControl {
    pub fn new(instance_id: &str) -> Arc<FakeControl> {
        let remote_access = RemoteAccessConfig::default();
        assert!(remote_access.trusted_hosts.contains(&"127.0.0.1".to_owned()));
        Arc::new(FakeControl {
            processes: Mutex::new(BTreeMap::new()),
            settings: Mutex::new(Settings {
                standalone_mode: false,
                remote_access,
                partner_discovery: PartnerDiscovery::default(),
            }),
            calls: AtomicUsize::new(0),
            failure: Mutex::new(None),
            instance_id: instance_id.to_owned(),
        })
    }

    /// Adds a process as the supervisor's registry would hold it.
    pub fn insert(&self, id: &str, is_remote: bool, enabled: bool) {
        let mut config = ProcessConfig::new(id, id, "/bin/true");
        config.is_remote = is_remote;
        config.enabled = enabled;
        let state = if enabled { ProcessState::Stopped } else { ProcessState::Disabled };
        self.processes.lock().unwrap().insert(id.to_owned(), (config, state));
    }

    pub fn config(&self, id: &str) -> Option<ProcessConfig> {
        self.processes.lock().unwrap().get(id).map(|(config, _)| config.clone())
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Makes every call fail with `failure` (or succeed again with `None`).
    pub fn fail_with(&self, failure: Option<Error>) {
        *self.failure.lock().unwrap() = failure;
    }

    pub fn edit_remote(&self, edit: impl FnOnce(&mut RemoteAccessConfig)) {
        edit(&mut self.settings.lock().unwrap().remote_access);
    }

    /// Makes the loopback peer untrusted: the only trusted host is a pattern no test ever talks to.
    pub fn untrust_loopback(&self) {
        self.edit_remote(|remote| remote.trusted_hosts = vec!["10.9.9.9".to_owned()]);
    }

    fn record(&self) -> Result<(), Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.failure.lock().unwrap().clone() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    fn with<T>(
        &self,
        id: &str,
        act: impl FnOnce(&mut ProcessConfig, &mut ProcessState) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.record()?;
        let mut processes = self.processes.lock().unwrap();
        let (config, state) = processes.get_mut(id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
        act(config, state)
    }
}

fn status_of(config: &ProcessConfig, state: ProcessState) -> ProcessStatus {
    ProcessStatus {
        id: config.id.clone(),
        name: config.name.clone(),
        state,
        enabled: config.enabled,
        autostart: config.autostart,
        is_remote: config.is_remote,
        pid: None,
        last_started_at: None,
        last_stopped_at: None,
        restart_attempts: 0,
        command: Some(config.command.clone()),
        last_exit_code: None,
        last_signal: None,
        last_error: None,
        uptime: None,
        cpu_percent: None,
        memory_bytes: None,
        restarts_total: None,
        check_failures_total: None,
        last_check_ms: None,
    }
}

fn start_state(config: &ProcessConfig, state: &mut ProcessState) -> Result<ProcessState, Error> {
    if !config.enabled {
        return Err(Error::Disabled(config.id.clone()));
    }
    *state = ProcessState::Starting;
    Ok(*state)
}

impl ControlPlane for FakeControl {
    async fn list(&self) -> Vec<ProcessStatus> {
        let _ = self.record();
        let processes = self.processes.lock().unwrap();
        processes.values().map(|(config, state)| status_of(config, *state)).collect()
    }

    async fn get(&self, id: &str) -> Result<ProcessStatus, Error> {
        self.with(id, |config, state| Ok(status_of(config, *state)))
    }

    async fn register(&self, config: ProcessConfig) -> Result<(), Error> {
        self.record()?;
        let mut processes = self.processes.lock().unwrap();
        if processes.contains_key(&config.id) {
            return Err(Error::AlreadyExists(config.id));
        }
        let state = if config.enabled { ProcessState::Stopped } else { ProcessState::Disabled };
        processes.insert(config.id.clone(), (config, state));
        Ok(())
    }

    async fn deregister(&self, id: &str) -> Result<(), Error> {
        self.record()?;
        let removed = self.processes.lock().unwrap().remove(id);
        removed.map(|_| ()).ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    async fn start(&self, id: &str) -> Result<ProcessState, Error> {
        self.with(id, |config, state| start_state(config, state))
    }

    async fn stop(&self, id: &str) -> Result<ProcessState, Error> {
        self.with(id, |_, state| {
            *state = ProcessState::Stopped;
            Ok(*state)
        })
    }

    async fn restart(&self, id: &str) -> Result<ProcessState, Error> {
        self.with(id, |config, state| start_state(config, state))
    }

    async fn set_enabled(&self, id: &str, enabled: bool) -> Result<(), Error> {
        self.with(id, |config, state| {
            config.enabled = enabled;
            *state = if enabled { ProcessState::Stopped } else { ProcessState::Disabled };
            Ok(())
        })
    }

    async fn set_autostart(&self, id: &str, autostart: bool) -> Result<(), Error> {
        self.with(id, |config, _| {
            config.autostart = autostart;
            Ok(())
        })
    }

    fn monitor_status(&self) -> MonitorStatus {
        let processes = self.processes.lock().unwrap();
        MonitorStatus {
            instance_id: self.instance_id.clone(),
            pid: 4242,
            started_at: Timestamp::now(),
            uptime: 7,
            state: MonitorState::Running,
            standalone_mode: self.settings.lock().unwrap().standalone_mode,
            partner_instance_id: None,
            partner_status: None,
            partner_pid: None,
            managed_process_count: processes.len(),
            running_process_count: 0,
            version: None,
            aliveness_port: None,
            remote_port: None,
        }
    }

    async fn restart_monitor(&self) -> Result<(), Error> {
        self.record()
    }

    fn settings(&self) -> Settings {
        self.settings.lock().unwrap().clone()
    }

    async fn update_settings(&self, update: SettingsUpdate) -> Result<Settings, Error> {
        self.record()?;
        let mut settings = self.settings.lock().unwrap();
        let mut registry = Registry::new_default("default");
        registry.standalone_mode = settings.standalone_mode;
        registry.remote_access = settings.remote_access.clone();
        registry.partner_discovery = settings.partner_discovery.clone();
        update.apply(&mut registry)?;
        *settings = Settings::of(&registry);
        Ok(settings.clone())
    }

    fn is_remote(&self, id: &str) -> Option<bool> {
        let processes = self.processes.lock().unwrap();
        processes.get(id).map(|(config, _)| config.is_remote)
    }
}

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
        let fake = FakeControl::new(instance_id);
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
    RemoteClientOptions { base_url: format!("http://{addr}"), timeout, retries, retry_delay: Duration::from_millis(50) }
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
