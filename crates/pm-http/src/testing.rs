//! Test doubles for the test suites of this crate and of the crates built on it: an in-memory [`ControlPlane`]
//! that records every call, and a fixed [`MonitorStatus`].
//!
//! Compiled only with the `test-support` feature, which only dev-dependencies enable: no shipped binary
//! contains it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pm_core::{
    Error, MonitorState, MonitorStatus, PartnerDiscovery, ProcessConfig, ProcessEntry, ProcessState, ProcessStatus,
    Registry, RemoteAccessConfig, Settings, SettingsUpdate, Timestamp,
};

use crate::ControlPlane;

/// The monitor status the fakes report: instance `default`, PID 4242, up 7 s, running, one managed process, and
/// a partner `watcher` (PID 4343) that is `alive`.
///
/// Also a ready-made status callback for `spawn_aliveness`.
pub fn monitor_status() -> MonitorStatus {
    MonitorStatus {
        instance_id: "default".to_owned(),
        pid: 4242,
        started_at: Timestamp::now(),
        uptime: 7,
        state: MonitorState::Running,
        standalone_mode: false,
        partner_instance_id: Some("watcher".to_owned()),
        partner_status: Some("alive".to_owned()),
        partner_pid: Some(4343),
        managed_process_count: 1,
        running_process_count: 0,
        version: None,
        aliveness_port: None,
        remote_port: None,
        containment: None,
        containment_reason: None,
        registry_error: None,
    }
}

/// A test double of [`ControlPlane`]: processes in a map (as registry entries), settings trusting loopback,
/// and a record of every call.
///
/// Every call that acts (all but `monitor_status`, `settings` and `is_remote`) is recorded by name (`"list"`,
/// `"start:job"`, `"set_enabled:job:false"`, ...), then panics while [`FakeControl::panic`] is set, then
/// answers the error given to [`FakeControl::fail_with`] while there is one.
pub struct FakeControl {
    /// The processes by id.
    pub processes: Mutex<BTreeMap<String, ProcessEntry>>,
    /// The settings (remote access as by default: loopback is trusted).
    pub settings: Mutex<Settings>,
    /// Every call so far, by name.
    pub calls: Mutex<Vec<String>>,
    /// The error every call answers while it is set.
    pub failure: Mutex<Option<Error>>,
    /// Every call panics while it is set.
    pub panic: AtomicBool,
    /// The instance id that [`ControlPlane::monitor_status`] reports.
    pub instance_id: String,
    /// The bus `GET /events` streams from (tests publish on it directly).
    pub events: Arc<crate::EventBus>,
    /// Where the run folders of each process are (`{logs_root}/{id}/{run}`); a process without a folder there has
    /// no runs.
    pub logs_root: Mutex<Option<std::path::PathBuf>>,
}

impl FakeControl {
    /// A fake of the instance `default`, with no processes.
    pub fn new() -> Arc<FakeControl> {
        FakeControl::for_instance("default")
    }

    /// A fake of `instance_id`, with no processes.
    pub fn for_instance(instance_id: &str) -> Arc<FakeControl> {
        let remote_access = RemoteAccessConfig::default();
        assert!(remote_access.trusted_hosts.contains(&"127.0.0.1".to_owned()));
        Arc::new(FakeControl {
            processes: Mutex::new(BTreeMap::new()),
            settings: Mutex::new(Settings {
                standalone_mode: false,
                remote_access,
                partner_discovery: PartnerDiscovery::default(),
            }),
            calls: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
            panic: AtomicBool::new(false),
            instance_id: instance_id.to_owned(),
            events: Arc::new(crate::EventBus::new(crate::DEFAULT_EVENT_RING)),
            logs_root: Mutex::new(None),
        })
    }

    /// Adds a process directly (as the supervisor's registry would hold it): stopped, or disabled.
    pub fn insert(&self, id: &str, is_remote: bool, enabled: bool) {
        let mut config = ProcessConfig::new(id, id, "/bin/true");
        config.is_remote = is_remote;
        config.enabled = enabled;
        self.processes.lock().unwrap().insert(id.to_owned(), ProcessEntry::new(config, Timestamp::now()));
    }

    /// The configuration of a process.
    pub fn config(&self, id: &str) -> Option<ProcessConfig> {
        self.processes.lock().unwrap().get(id).map(|entry| entry.config.clone())
    }

    /// The state of a process.
    pub fn state(&self, id: &str) -> Option<ProcessState> {
        self.processes.lock().unwrap().get(id).map(|entry| entry.state)
    }

    /// Every call so far, by name.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// How many calls there were so far.
    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// Makes every call fail with `failure` (or succeed again with `None`).
    pub fn fail_with(&self, failure: Option<Error>) {
        *self.failure.lock().unwrap() = failure;
    }

    /// Changes the remote access settings.
    pub fn edit_remote(&self, edit: impl FnOnce(&mut RemoteAccessConfig)) {
        edit(&mut self.settings.lock().unwrap().remote_access);
    }

    /// Makes the loopback peer untrusted: the only trusted host is an address no test ever talks to.
    pub fn untrust_loopback(&self) {
        self.edit_remote(|remote| remote.trusted_hosts = vec!["10.9.9.9".to_owned()]);
    }

    fn record(&self, call: String) -> Result<(), Error> {
        self.calls.lock().unwrap().push(call);
        assert!(!self.panic.load(Ordering::SeqCst), "the fake control plane was told to panic");
        match self.failure.lock().unwrap().clone() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Records `call`, then acts on the entry `id` (`NotFound` when there is none).
    fn with<T>(
        &self,
        call: String,
        id: &str,
        act: impl FnOnce(&mut ProcessEntry) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.record(call)?;
        let mut processes = self.processes.lock().unwrap();
        let entry = processes.get_mut(id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
        act(entry)
    }
}

fn start_state(entry: &mut ProcessEntry) -> Result<ProcessState, Error> {
    if !entry.config.enabled {
        return Err(Error::Disabled(entry.config.id.clone()));
    }
    entry.state = ProcessState::Starting;
    Ok(entry.state)
}

impl ControlPlane for FakeControl {
    async fn list(&self) -> Vec<ProcessStatus> {
        let _ = self.record("list".to_owned());
        self.processes.lock().unwrap().values().map(ProcessEntry::status).collect()
    }

    async fn get(&self, id: &str) -> Result<ProcessStatus, Error> {
        self.with(format!("get:{id}"), id, |entry| Ok(entry.status()))
    }

    fn process_config(&self, id: &str) -> Result<ProcessConfig, Error> {
        self.config(id).ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    async fn register(&self, config: ProcessConfig) -> Result<(), Error> {
        self.record(format!("register:{}", config.id))?;
        let mut processes = self.processes.lock().unwrap();
        if processes.contains_key(&config.id) {
            return Err(Error::AlreadyExists(config.id));
        }
        processes.insert(config.id.clone(), ProcessEntry::new(config, Timestamp::now()));
        Ok(())
    }

    async fn deregister(&self, id: &str) -> Result<(), Error> {
        self.record(format!("deregister:{id}"))?;
        self.processes.lock().unwrap().remove(id).map(|_| ()).ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    async fn start(&self, id: &str) -> Result<ProcessState, Error> {
        self.with(format!("start:{id}"), id, start_state)
    }

    async fn stop(&self, id: &str) -> Result<ProcessState, Error> {
        self.with(format!("stop:{id}"), id, |entry| {
            entry.state = ProcessState::Stopped;
            Ok(entry.state)
        })
    }

    async fn restart(&self, id: &str) -> Result<ProcessState, Error> {
        self.with(format!("restart:{id}"), id, start_state)
    }

    async fn set_enabled(&self, id: &str, enabled: bool) -> Result<(), Error> {
        self.with(format!("set_enabled:{id}:{enabled}"), id, |entry| {
            entry.config.enabled = enabled;
            entry.state = if enabled { ProcessState::Stopped } else { ProcessState::Disabled };
            Ok(())
        })
    }

    async fn set_autostart(&self, id: &str, autostart: bool) -> Result<(), Error> {
        self.with(format!("set_autostart:{id}:{autostart}"), id, |entry| {
            entry.config.autostart = autostart;
            Ok(())
        })
    }

    /// [`monitor_status`] with this fake's instance id and standalone mode.
    fn monitor_status(&self) -> MonitorStatus {
        MonitorStatus {
            instance_id: self.instance_id.clone(),
            standalone_mode: self.settings.lock().unwrap().standalone_mode,
            ..monitor_status()
        }
    }

    async fn restart_monitor(&self) -> Result<(), Error> {
        self.record("restart_monitor".to_owned())
    }

    fn settings(&self) -> Settings {
        self.settings.lock().unwrap().clone()
    }

    async fn update_settings(&self, update: SettingsUpdate) -> Result<Settings, Error> {
        self.record(format!("update_settings:{update:?}"))?;
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
        self.processes.lock().unwrap().get(id).map(|entry| entry.config.is_remote)
    }

    fn event_bus(&self) -> Arc<crate::EventBus> {
        self.events.clone()
    }

    fn run_dirs(&self, id: &str) -> Result<Vec<std::path::PathBuf>, Error> {
        if !self.processes.lock().unwrap().contains_key(id) {
            return Err(Error::NotFound(id.to_owned()));
        }
        let Some(root) = self.logs_root.lock().unwrap().clone() else { return Ok(Vec::new()) };
        let mut dirs: Vec<std::path::PathBuf> = std::fs::read_dir(root.join(id))
            .map(|entries| entries.flatten().map(|entry| entry.path()).filter(|path| path.is_dir()).collect())
            .unwrap_or_default();
        dirs.sort();
        Ok(dirs)
    }
}
