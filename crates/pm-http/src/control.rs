//! The control plane the remote API drives: implemented by the supervisor, faked in tests.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use pm_core::{Error, MonitorStatus, ProcessConfig, ProcessState, ProcessStatus, Settings, SettingsUpdate};

/// `{"processes": [...]}` of `statuses` (about `count` of them), written into a buffer sized for them up front.
pub fn list_body<'a>(
    statuses: impl Iterator<Item = pm_core::StatusView<'a>>,
    count: usize,
) -> Result<Vec<u8>, serde_json::Error> {
    // Sized up front (about 300 bytes a status): growing by doubling copies the answer several times.
    let mut body = Vec::with_capacity(64 + 384 * count);
    body.extend_from_slice(b"{\"processes\":[");
    for (at, status) in statuses.enumerate() {
        if at > 0 {
            body.push(b',');
        }
        serde_json::to_writer(&mut body, &status)?;
    }
    body.extend_from_slice(b"]}");
    Ok(body)
}

/// Everything the remote API can ask of a running monitor.
///
/// Implementations hold no lock across an `.await` that a request could block on for long, and answer
/// `Err(Error::Busy)` when the registry cannot be locked in time (the API answers 503 with `Retry-After`).
/// Permission and trust decisions are made by the router before these are called; the control plane only acts.
pub trait ControlPlane: Send + Sync + 'static {
    /// Every registered process.
    fn list(&self) -> impl Future<Output = Vec<ProcessStatus>> + Send;
    /// The body of `GET /processes` (`{"processes": [...]}`) with the processes `keep` keeps (by id): see
    /// [`list_body`]. Defaults to writing [`ControlPlane::list`]; an implementation may write its processes
    /// without making a [`ProcessStatus`] of each.
    fn list_body(
        &self,
        keep: impl Fn(&str) -> bool + Send,
    ) -> impl Future<Output = Result<Vec<u8>, serde_json::Error>> + Send {
        let list = self.list();
        async move {
            let processes = list.await;
            list_body(processes.iter().map(ProcessStatus::view).filter(|status| keep(status.id)), processes.len())
        }
    }
    /// The whole configuration of one process, from memory (`Err(NotFound)` for an unknown process).
    fn process_config(&self, id: &str) -> Result<ProcessConfig, Error>;
    /// One process.
    fn get(&self, id: &str) -> impl Future<Output = Result<ProcessStatus, Error>> + Send;
    /// Registers a new process (already validated; `is_remote` already set by the router).
    fn register(&self, config: ProcessConfig) -> impl Future<Output = Result<(), Error>> + Send;
    /// Stops (if needed) and removes a process.
    fn deregister(&self, id: &str) -> impl Future<Output = Result<(), Error>> + Send;
    /// Removes a process; unless `force`, refuses (`Error::Dependency`) when other processes depend on it.
    /// Defaults to [`ControlPlane::deregister`].
    fn deregister_with(&self, id: &str, force: bool) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = force;
        self.deregister(id)
    }
    /// Starts a process; answers the state it is in afterwards (`starting` or `running`).
    fn start(&self, id: &str) -> impl Future<Output = Result<ProcessState, Error>> + Send;
    /// Stops a process and waits until it is stopped.
    fn stop(&self, id: &str) -> impl Future<Output = Result<ProcessState, Error>> + Send;
    /// Stops a process after the processes that depend on it; answers its state and the dependents it stopped
    /// (in order). Defaults to [`ControlPlane::stop`] with no dependents.
    fn stop_reporting(&self, id: &str) -> impl Future<Output = Result<(ProcessState, Vec<String>), Error>> + Send {
        let stop = self.stop(id);
        async move { Ok((stop.await?, Vec::new())) }
    }
    /// Stops then starts a process.
    fn restart(&self, id: &str) -> impl Future<Output = Result<ProcessState, Error>> + Send;
    /// Enables or disables a process (disabling stops it).
    fn set_enabled(&self, id: &str, enabled: bool) -> impl Future<Output = Result<(), Error>> + Send;
    /// Changes whether a process starts with the monitor.
    fn set_autostart(&self, id: &str, autostart: bool) -> impl Future<Output = Result<(), Error>> + Send;
    /// The monitor's status, from memory (never waits on the registry).
    fn monitor_status(&self) -> MonitorStatus;
    /// Starts a replacement monitor process and exits this one; returns once the restart is under way.
    fn restart_monitor(&self) -> impl Future<Output = Result<(), Error>> + Send;
    /// The current settings, from memory.
    fn settings(&self) -> Settings;
    /// Applies and stores a settings change; answers the settings afterwards.
    fn update_settings(&self, update: SettingsUpdate) -> impl Future<Output = Result<Settings, Error>> + Send;
    /// Whether a process is registered remotely (`None` when unknown), from memory.
    fn is_remote(&self, id: &str) -> Option<bool>;
    /// The bus `GET /events` streams from.
    fn event_bus(&self) -> Arc<crate::EventBus>;
    /// The kept run folders of a process (`YYYYMMDD_HHMMSS[_N]`, each holding `stdout.log` and `stderr.log`),
    /// oldest first; `Err(NotFound)` for an unknown process. Called from blocking threads too, so it must not
    /// wait on anything but the file system.
    fn run_dirs(&self, id: &str) -> Result<Vec<PathBuf>, Error>;
}
