//! One managed process in the registry: its configuration plus what the monitor observed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{ProcessConfig, ProcessState, ProcessStatus, Timestamp};

/// One managed process: its configuration plus what the monitor observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessEntry {
    /// The desired configuration.
    #[serde(flatten)]
    pub config: ProcessConfig,
    /// When it was registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<Timestamp>,
    /// Last start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_started_at: Option<Timestamp>,
    /// Last stop or exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stopped_at: Option<Timestamp>,
    /// PID of the running child (also the id of its process group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Start time of `pid` as the OS reports it, to tell the process from a later one that reuses the PID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start_time: Option<u64>,
    /// Current state.
    #[serde(default)]
    pub state: ProcessState,
    /// Restarts since the last reset.
    #[serde(default)]
    pub restart_attempts: u32,
    /// Aliveness-check failures in a row.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Exit code of the last exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_code: Option<i32>,
    /// Signal that ended the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_signal: Option<i32>,
    /// Why the last start or run failed, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// A request of a local client that the monitor has not taken up yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_action: Option<PendingAction>,
    /// Dependencies whose condition does not hold yet, while the process waits in `starting` before it is
    /// spawned (additive).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub waiting_for: BTreeMap<String, crate::DependencyCondition>,
    /// When the start that is waiting for dependencies was requested (additive; `completedSuccessfully` counts
    /// exits since then, and `dependencyTimeoutMs` runs from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Timestamp>,
    /// Keys this version does not know, kept on rewrite.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ProcessEntry {
    /// A newly registered entry (stopped, counters zero).
    pub fn new(config: ProcessConfig, registered_at: Timestamp) -> ProcessEntry {
        ProcessEntry {
            state: if config.enabled { ProcessState::Stopped } else { ProcessState::Disabled },
            config,
            registered_at: Some(registered_at),
            last_started_at: None,
            last_stopped_at: None,
            pid: None,
            pid_start_time: None,
            restart_attempts: 0,
            consecutive_failures: 0,
            last_exit_code: None,
            last_signal: None,
            last_error: None,
            pending_action: None,
            waiting_for: BTreeMap::new(),
            waiting_since: None,
            extra: Map::new(),
        }
    }

    /// The API view of this entry.
    pub fn status(&self) -> ProcessStatus {
        ProcessStatus {
            id: self.config.id.clone(),
            name: self.config.name.clone(),
            state: self.state,
            enabled: self.config.enabled,
            autostart: self.config.autostart,
            is_remote: self.config.is_remote,
            pid: if self.state.has_child() { self.pid } else { None },
            last_started_at: self.last_started_at,
            last_stopped_at: self.last_stopped_at,
            restart_attempts: self.restart_attempts,
            command: Some(self.config.command.clone()),
            last_exit_code: self.last_exit_code,
            last_signal: self.last_signal,
            last_error: self.last_error.clone(),
            waiting_for: (!self.waiting_for.is_empty()).then(|| self.waiting_for.clone()),
            uptime: None,
            cpu_percent: None,
            memory_bytes: None,
            restarts_total: None,
            check_failures_total: None,
            last_check_ms: None,
            stop_timeout_ms: Some(self.config.stop_timeout_ms()),
        }
    }
}

/// A local client's request, left in the registry for the monitor to carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PendingAction {
    /// Start (a no-op when running).
    Start,
    /// Stop.
    Stop,
    /// Stop, then start.
    Restart,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::tests::example;
    use crate::{Registry, RestartPolicy};

    #[test]
    fn pending_action_names() {
        for (action, name) in
            [(PendingAction::Start, "start"), (PendingAction::Stop, "stop"), (PendingAction::Restart, "restart")]
        {
            assert_eq!(serde_json::to_value(action).unwrap(), json!(name));
            assert_eq!(serde_json::from_value::<PendingAction>(json!(name)).unwrap(), action);
        }
    }

    #[test]
    fn entry_defaults_on_read() {
        let entry: ProcessEntry =
            serde_json::from_value(json!({"id": "a", "name": "A", "command": "/bin/true"})).unwrap();
        assert_eq!(entry.config, ProcessConfig::new("a", "A", "/bin/true"));
        assert!(entry.config.args.is_empty());
        assert!(entry.config.autostart && entry.config.enabled && !entry.config.is_remote);
        assert_eq!(entry.state, ProcessState::Stopped);
        assert_eq!((entry.restart_attempts, entry.consecutive_failures), (0, 0));
        assert_eq!(
            (entry.pid, entry.registered_at, entry.last_started_at, entry.last_stopped_at),
            (None, None, None, None)
        );
        assert_eq!(entry.config.restart_policy, None);
        assert_eq!(entry.config.restart_policy(), RestartPolicy::default());
        assert!(entry.extra.is_empty());
    }
    #[test]
    fn new_entry_state_follows_enabled() {
        let at = Timestamp::parse("2026-01-24T10:00:00Z").unwrap();
        let entry = ProcessEntry::new(ProcessConfig::new("a", "A", "/bin/true"), at);
        assert_eq!((entry.state, entry.registered_at, entry.pid), (ProcessState::Stopped, Some(at), None));
        assert_eq!((entry.restart_attempts, entry.consecutive_failures), (0, 0));
        let mut config = ProcessConfig::new("a", "A", "/bin/true");
        config.enabled = false;
        assert_eq!(ProcessEntry::new(config, at).state, ProcessState::Disabled);
    }

    /// `status()` of the example entry in `state` reports `expected_pid`.
    fn check_status(state: ProcessState, expected_pid: Option<u32>) {
        let registry: Registry = serde_json::from_value(example()).unwrap();
        let mut entry = registry.processes["api"].clone();
        entry.state = state;
        entry.restart_attempts = 4;
        entry.last_exit_code = Some(3);
        let status = entry.status();
        assert_eq!(status.pid, expected_pid, "{state}");
        assert_eq!(status.state, state);
        assert_eq!((status.id.as_str(), status.name.as_str()), ("api", "My API"));
        assert_eq!((status.enabled, status.autostart, status.is_remote), (true, true, false));
        assert_eq!(status.restart_attempts, 4);
        assert_eq!(status.last_exit_code, Some(3));
        assert_eq!(status.command.as_deref(), Some("/usr/bin/my-api"));
        assert_eq!(status.last_started_at, entry.last_started_at);
        assert_eq!(status.last_stopped_at, entry.last_stopped_at);
    }

    #[test]
    fn status_reports_a_pid_only_with_a_child() {
        check_status(ProcessState::Starting, Some(12345));
        check_status(ProcessState::Running, Some(12345));
        check_status(ProcessState::Stopping, Some(12345));
        check_status(ProcessState::Stopped, None);
        check_status(ProcessState::Crashed, None);
        check_status(ProcessState::Retrying, None);
        check_status(ProcessState::Failed, None);
        check_status(ProcessState::Disabled, None);
    }
}
