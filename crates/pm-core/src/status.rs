//! What the monitor observes: process states and the status documents of the API.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// The lifecycle state of a managed process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessState {
    /// Not running, and not meant to be.
    #[default]
    Stopped,
    /// Spawned; startup checks (if any) have not passed yet.
    Starting,
    /// Running normally.
    Running,
    /// SIGTERM sent to its process group; waiting for it to exit.
    Stopping,
    /// Exited without being asked to; a restart decision follows at once.
    Crashed,
    /// Waiting out the backoff before the next restart.
    Retrying,
    /// Gave up after the restart attempts were used up (or a startup check said so).
    Failed,
    /// Disabled: never started until enabled.
    Disabled,
}

impl ProcessState {
    /// Every state, in the order of the guide's table.
    pub const ALL: [ProcessState; 8] = [
        ProcessState::Stopped,
        ProcessState::Starting,
        ProcessState::Running,
        ProcessState::Stopping,
        ProcessState::Crashed,
        ProcessState::Retrying,
        ProcessState::Failed,
        ProcessState::Disabled,
    ];

    /// The wire name (`"running"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessState::Stopped => "stopped",
            ProcessState::Starting => "starting",
            ProcessState::Running => "running",
            ProcessState::Stopping => "stopping",
            ProcessState::Crashed => "crashed",
            ProcessState::Retrying => "retrying",
            ProcessState::Failed => "failed",
            ProcessState::Disabled => "disabled",
        }
    }

    /// Whether a child process may exist in this state.
    pub fn has_child(self) -> bool {
        matches!(self, ProcessState::Starting | ProcessState::Running | ProcessState::Stopping)
    }
}

impl std::fmt::Display for ProcessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ProcessState {
    type Err = crate::Error;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ProcessState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| crate::Error::InvalidField(format!("state {text:?}")))
    }
}

/// One process as the API reports it (wire name `ProcessStatus`). Written through [`StatusView`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessStatus {
    /// Process id.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Current state.
    pub state: ProcessState,
    /// Whether it may be started.
    pub enabled: bool,
    /// Whether it starts with the monitor.
    pub autostart: bool,
    /// Registered through the remote API.
    pub is_remote: bool,
    /// PID of the running child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Last start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_started_at: Option<Timestamp>,
    /// Last stop or exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stopped_at: Option<Timestamp>,
    /// Restarts since the last reset.
    #[serde(default)]
    pub restart_attempts: u32,
    /// The command (additive field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Exit code of the last exit (additive field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_code: Option<i32>,
    /// Signal that ended the last run (additive field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_signal: Option<i32>,
    /// Why the last start or run failed, in words (additive field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Dependencies (id → condition) a `starting` process still waits for before it is spawned (additive field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<std::collections::BTreeMap<String, crate::DependencyCondition>>,
    /// Seconds since the current run started (additive field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime: Option<u64>,
    /// CPU use of the process group in percent of one core (additive field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f32>,
    /// Resident memory of the process group in bytes (additive field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Restarts since the monitor started, never reset (additive field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts_total: Option<u64>,
    /// Failed aliveness or startup checks since the monitor started (additive field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_failures_total: Option<u64>,
    /// Duration of the last aliveness or startup check in milliseconds (additive field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_ms: Option<f64>,
    /// The stop timeout in force (SIGTERM to SIGKILL), in milliseconds: how long a stop, restart, disable or
    /// deregister of this process may take; clients size their deadline by it (additive field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_ms: Option<u64>,
}

/// A [`ProcessStatus`] that borrows its strings: what a `ProcessStatus` is written as, and what a list of many
/// processes is written from without copying every name and command first (`GET /processes`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView<'a> {
    /// Process id.
    pub id: &'a str,
    /// Human-readable name.
    pub name: &'a str,
    /// Current state.
    pub state: ProcessState,
    /// Whether it may be started.
    pub enabled: bool,
    /// Whether it starts with the monitor.
    pub autostart: bool,
    /// Registered through the remote API.
    pub is_remote: bool,
    /// PID of the running child.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Last start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_started_at: Option<Timestamp>,
    /// Last stop or exit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_stopped_at: Option<Timestamp>,
    /// Restarts since the last reset.
    pub restart_attempts: u32,
    /// The command (additive field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<&'a str>,
    /// Exit code of the last exit (additive field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit_code: Option<i32>,
    /// Signal that ended the last run (additive field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_signal: Option<i32>,
    /// Why the last start or run failed, in words (additive field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<&'a str>,
    /// Dependencies (id → condition) a `starting` process still waits for before it is spawned (additive field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<&'a std::collections::BTreeMap<String, crate::DependencyCondition>>,
    /// Seconds since the current run started (additive field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime: Option<u64>,
    /// CPU use of the process group in percent of one core (additive field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f32>,
    /// Resident memory of the process group in bytes (additive field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Restarts since the monitor started, never reset (additive field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarts_total: Option<u64>,
    /// Failed aliveness or startup checks since the monitor started (additive field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_failures_total: Option<u64>,
    /// Duration of the last aliveness or startup check in milliseconds (additive field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check_ms: Option<f64>,
    /// The stop timeout in force (SIGTERM to SIGKILL), in milliseconds: how long a stop, restart, disable or
    /// deregister of this process may take; clients size their deadline by it (additive field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout_ms: Option<u64>,
}

impl StatusView<'_> {
    /// The owned status.
    pub fn to_status(&self) -> ProcessStatus {
        let StatusView {
            id,
            name,
            state,
            enabled,
            autostart,
            is_remote,
            pid,
            last_started_at,
            last_stopped_at,
            restart_attempts,
            command,
            last_exit_code,
            last_signal,
            last_error,
            waiting_for,
            uptime,
            cpu_percent,
            memory_bytes,
            restarts_total,
            check_failures_total,
            last_check_ms,
            stop_timeout_ms,
        } = self;
        ProcessStatus {
            id: (*id).to_owned(),
            name: (*name).to_owned(),
            state: *state,
            enabled: *enabled,
            autostart: *autostart,
            is_remote: *is_remote,
            pid: *pid,
            last_started_at: *last_started_at,
            last_stopped_at: *last_stopped_at,
            restart_attempts: *restart_attempts,
            command: command.map(str::to_owned),
            last_exit_code: *last_exit_code,
            last_signal: *last_signal,
            last_error: last_error.map(str::to_owned),
            waiting_for: waiting_for.cloned(),
            uptime: *uptime,
            cpu_percent: *cpu_percent,
            memory_bytes: *memory_bytes,
            restarts_total: *restarts_total,
            check_failures_total: *check_failures_total,
            last_check_ms: *last_check_ms,
            stop_timeout_ms: *stop_timeout_ms,
        }
    }
}

impl ProcessStatus {
    /// This status, borrowed.
    pub fn view(&self) -> StatusView<'_> {
        let ProcessStatus {
            id,
            name,
            state,
            enabled,
            autostart,
            is_remote,
            pid,
            last_started_at,
            last_stopped_at,
            restart_attempts,
            command,
            last_exit_code,
            last_signal,
            last_error,
            waiting_for,
            uptime,
            cpu_percent,
            memory_bytes,
            restarts_total,
            check_failures_total,
            last_check_ms,
            stop_timeout_ms,
        } = self;
        StatusView {
            id,
            name,
            state: *state,
            enabled: *enabled,
            autostart: *autostart,
            is_remote: *is_remote,
            pid: *pid,
            last_started_at: *last_started_at,
            last_stopped_at: *last_stopped_at,
            restart_attempts: *restart_attempts,
            command: command.as_deref(),
            last_exit_code: *last_exit_code,
            last_signal: *last_signal,
            last_error: last_error.as_deref(),
            waiting_for: waiting_for.as_ref(),
            uptime: *uptime,
            cpu_percent: *cpu_percent,
            memory_bytes: *memory_bytes,
            restarts_total: *restarts_total,
            check_failures_total: *check_failures_total,
            last_check_ms: *last_check_ms,
            stop_timeout_ms: *stop_timeout_ms,
        }
    }
}

impl Serialize for ProcessStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.view().serialize(serializer)
    }
}

/// Whether the monitor is serving or on its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MonitorState {
    /// Serving.
    Running,
    /// Shutting down or restarting.
    Stopping,
}

/// The monitor as the API reports it (wire name `MonitorStatus`; also `GET /status` on the aliveness port).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MonitorStatus {
    /// Instance id (`default`, `watcher`, ...).
    pub instance_id: String,
    /// PID of the monitor.
    pub pid: u32,
    /// When this monitor process started.
    pub started_at: Timestamp,
    /// Seconds since `started_at`.
    pub uptime: u64,
    /// Serving or stopping.
    pub state: MonitorState,
    /// Whether partner monitoring is off.
    pub standalone_mode: bool,
    /// The partner instance, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_instance_id: Option<String>,
    /// `alive`, `unreachable` or `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_status: Option<String>,
    /// PID the partner last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_pid: Option<u32>,
    /// Registered processes.
    pub managed_process_count: usize,
    /// Processes in `running` state.
    pub running_process_count: usize,
    /// Program version (additive field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Bound aliveness port (additive field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aliveness_port: Option<u16>,
    /// Bound remote API port (additive field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
    /// How managed processes are contained: `cgroup` or `process-group` (additive field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containment: Option<String>,
    /// Why that containment is in force, in words (additive field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containment_reason: Option<String>,
    /// Why the registry file (with its journal) cannot be read as it is on disk now, when it cannot (additive
    /// field; absent when it can). A monitor that gives `version` checks this on every status answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The state writes as `name` (JSON, `Display`, `as_str`) and every form reads back.
    fn check(state: ProcessState, name: &str, has_child: bool) {
        assert_eq!(serde_json::to_value(state).unwrap(), json!(name));
        assert_eq!(serde_json::from_value::<ProcessState>(json!(name)).unwrap(), state);
        assert_eq!(state.as_str(), name);
        assert_eq!(state.to_string(), name);
        assert_eq!(name.parse::<ProcessState>(), Ok(state));
        assert_eq!(state.has_child(), has_child, "{name}");
    }

    #[test]
    fn all_eight_states() {
        check(ProcessState::Stopped, "stopped", false);
        check(ProcessState::Starting, "starting", true);
        check(ProcessState::Running, "running", true);
        check(ProcessState::Stopping, "stopping", true);
        check(ProcessState::Crashed, "crashed", false);
        check(ProcessState::Retrying, "retrying", false);
        check(ProcessState::Failed, "failed", false);
        check(ProcessState::Disabled, "disabled", false);
        let names: Vec<&str> = ProcessState::ALL.iter().map(|state| state.as_str()).collect();
        assert_eq!(names, ["stopped", "starting", "running", "stopping", "crashed", "retrying", "failed", "disabled"]);
        assert_eq!(ProcessState::default(), ProcessState::Stopped);
    }

    #[test]
    fn unknown_state_names_are_refused() {
        for bad in ["Running", "RUNNING", "", "paused", " running"] {
            assert!(bad.parse::<ProcessState>().is_err(), "{bad:?}");
            assert!(serde_json::from_value::<ProcessState>(json!(bad)).is_err(), "{bad:?}");
        }
        let err = "paused".parse::<ProcessState>().unwrap_err();
        assert_eq!(err, crate::Error::InvalidField("state \"paused\"".to_owned()));
    }

    #[test]
    fn monitor_state_names() {
        assert_eq!(serde_json::to_value(MonitorState::Running).unwrap(), json!("running"));
        assert_eq!(serde_json::to_value(MonitorState::Stopping).unwrap(), json!("stopping"));
        assert_eq!(serde_json::from_value::<MonitorState>(json!("stopping")).unwrap(), MonitorState::Stopping);
    }

    #[test]
    fn process_status_wire_shape() {
        let status = ProcessStatus {
            id: "api".to_owned(),
            name: "My API".to_owned(),
            state: ProcessState::Running,
            enabled: true,
            autostart: false,
            is_remote: true,
            pid: Some(42),
            last_started_at: Timestamp::parse("2026-01-24T10:30:00Z"),
            last_stopped_at: None,
            restart_attempts: 3,
            command: None,
            last_exit_code: None,
            last_signal: None,
            last_error: None,
            waiting_for: None,
            uptime: None,
            cpu_percent: None,
            memory_bytes: None,
            restarts_total: None,
            check_failures_total: None,
            last_check_ms: None,
            stop_timeout_ms: None,
        };
        let value = serde_json::to_value(&status).unwrap();
        assert_eq!(
            value,
            json!({"id": "api", "name": "My API", "state": "running", "enabled": true, "autostart": false,
                   "isRemote": true, "pid": 42, "lastStartedAt": "2026-01-24T10:30:00.000Z", "restartAttempts": 3})
        );
        assert_eq!(serde_json::from_value::<ProcessStatus>(value).unwrap(), status);
    }

    #[test]
    fn monitor_status_wire_shape() {
        let status = MonitorStatus {
            instance_id: "default".to_owned(),
            pid: 12345,
            started_at: Timestamp::parse("2026-01-24T10:00:00Z").unwrap(),
            uptime: 3600,
            state: MonitorState::Running,
            standalone_mode: false,
            partner_instance_id: Some("watcher".to_owned()),
            partner_status: Some("alive".to_owned()),
            partner_pid: None,
            managed_process_count: 2,
            running_process_count: 1,
            version: None,
            aliveness_port: Some(19883),
            remote_port: None,
            containment: None,
            containment_reason: None,
            registry_error: None,
        };
        let value = serde_json::to_value(&status).unwrap();
        assert_eq!(
            value,
            json!({"instanceId": "default", "pid": 12345, "startedAt": "2026-01-24T10:00:00.000Z", "uptime": 3600,
                   "state": "running", "standaloneMode": false, "partnerInstanceId": "watcher",
                   "partnerStatus": "alive", "managedProcessCount": 2, "runningProcessCount": 1,
                   "alivenessPort": 19883})
        );
        assert_eq!(serde_json::from_value::<MonitorStatus>(value).unwrap(), status);
    }
}
