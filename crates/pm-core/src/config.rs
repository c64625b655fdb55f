//! What a user asks for: the desired configuration of one managed process.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

fn yes() -> bool {
    true
}

/// The configuration of one managed process, as registered (wire name `ProcessConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessConfig {
    /// Unique id; also the name of the process's log folder (see [`crate::validate_process_id`]).
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// The executable: an absolute path, a relative path (against `working_directory`), or a bare name looked up
    /// on `PATH`. Never run through a shell.
    pub command: String,
    /// Arguments, passed verbatim.
    #[serde(default)]
    pub args: Vec<String>,
    /// Working directory of the child; the monitor's home directory when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    /// Variables set on top of the monitor's own environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<BTreeMap<String, String>>,
    /// Start when the monitor starts (and when registered).
    #[serde(default = "yes")]
    pub autostart: bool,
    /// A disabled process is never started.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Registered through the remote API; untrusted hosts may act only on such processes.
    #[serde(default)]
    pub is_remote: bool,
    /// How crashes are retried; the default policy when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// HTTP health check of the running process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aliveness_check: Option<AlivenessCheck>,
    /// How long a stop waits after SIGTERM before it sends SIGKILL to the process group (default 10 000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_ms: Option<u64>,
    /// Marks the entry through which an instance supervises its partner monitor (set by the monitor itself,
    /// never accepted from the remote API). It is left running when its owner shuts down.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partner: bool,
}

impl ProcessConfig {
    /// Default time between SIGTERM and SIGKILL when stopping.
    pub const DEFAULT_STOP_TIMEOUT_MS: u64 = 10_000;

    /// A configuration with the given id, name and command and every other field at its default.
    pub fn new(id: &str, name: &str, command: &str) -> ProcessConfig {
        ProcessConfig {
            id: id.to_owned(),
            name: name.to_owned(),
            command: command.to_owned(),
            args: Vec::new(),
            working_directory: None,
            environment: None,
            autostart: true,
            enabled: true,
            is_remote: false,
            restart_policy: None,
            aliveness_check: None,
            stop_timeout_ms: None,
            partner: false,
        }
    }

    /// The restart policy in force (the default one when none is configured).
    pub fn restart_policy(&self) -> RestartPolicy {
        self.restart_policy.clone().unwrap_or_default()
    }

    /// The stop grace period in milliseconds.
    pub fn stop_timeout_ms(&self) -> u64 {
        self.stop_timeout_ms.unwrap_or(Self::DEFAULT_STOP_TIMEOUT_MS)
    }

    /// Checks every field a registration must get right, naming the first bad one.
    pub fn validate(&self) -> Result<(), crate::Error> {
        crate::validate_process_id(&self.id)?;
        let invalid = |what: &str| Err(crate::Error::InvalidField(what.to_owned()));
        if self.name.trim().is_empty() || self.name.len() > 256 {
            return invalid("name (must be 1 to 256 characters)");
        }
        if self.command.is_empty() || self.command.len() > 4096 || self.command.contains('\0') {
            return invalid("command (must be a non-empty path without NUL)");
        }
        if self.args.len() > 4096 || self.args.iter().any(|arg| arg.contains('\0')) {
            return invalid("args (at most 4096, without NUL)");
        }
        if let Some(dir) = &self.working_directory {
            if dir.is_empty() || dir.contains('\0') {
                return invalid("workingDirectory");
            }
        }
        if let Some(env) = &self.environment {
            if env.keys().any(|key| key.is_empty() || key.contains('=') || key.contains('\0'))
                || env.values().any(|value| value.contains('\0'))
            {
                return invalid("environment (names must be non-empty without '=' or NUL)");
            }
        }
        if let Some(policy) = &self.restart_policy {
            if policy.backoff_intervals_ms.len() > 1000 {
                return invalid("restartPolicy.backoffIntervalsMs (at most 1000 entries)");
            }
        }
        if let Some(check) = &self.aliveness_check {
            if !(check.url.starts_with("http://")) {
                return invalid("alivenessCheck.url (must be an http:// URL)");
            }
            if check.interval_ms == 0 || check.timeout_ms == 0 {
                return invalid("alivenessCheck.intervalMs and timeoutMs (must be positive)");
            }
            if let Some(startup) = &check.startup_check {
                if startup.check_interval_ms == 0 {
                    return invalid("alivenessCheck.startupCheck.checkIntervalMs (must be positive)");
                }
            }
        }
        Ok(())
    }
}

/// How crashes are retried (wire name `RestartPolicy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RestartPolicy {
    /// Restarts after a crash before the process is `failed`.
    pub max_attempts: u32,
    /// Delay before restart attempt k is `backoff_intervals_ms[min(k, len - 1)]`; empty means no delay.
    pub backoff_intervals_ms: Vec<u64>,
    /// Running this long without a crash resets the attempt counter.
    pub reset_after_ms: u64,
    /// After `max_attempts`, keep retrying every `indefinite_interval_ms` instead of failing.
    pub retry_indefinitely: bool,
    /// Retry interval once the attempts are used up in indefinite mode.
    pub indefinite_interval_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_attempts: 5,
            backoff_intervals_ms: vec![1000, 2000, 5000],
            reset_after_ms: 300_000,
            retry_indefinitely: false,
            indefinite_interval_ms: 21_600_000,
        }
    }
}

/// HTTP health check of a running process (wire name `AlivenessCheck`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlivenessCheck {
    /// Whether the check runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The health URL; a 2xx answer passes.
    pub url: String,
    /// Optional URL of a richer status document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
    /// Time between checks.
    #[serde(default = "AlivenessCheck::default_interval_ms")]
    pub interval_ms: u64,
    /// Time allowed for one check.
    #[serde(default = "AlivenessCheck::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Failures in a row after which the process is killed and handled as a crash.
    #[serde(default = "AlivenessCheck::default_failures")]
    pub consecutive_failures_required: u32,
    /// Checks right after a start, before the process counts as up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_check: Option<StartupCheck>,
}

impl AlivenessCheck {
    fn default_interval_ms() -> u64 {
        3000
    }
    fn default_timeout_ms() -> u64 {
        2000
    }
    fn default_failures() -> u32 {
        2
    }

    /// An enabled check of `url` with every other field at its default.
    pub fn new(url: &str) -> AlivenessCheck {
        AlivenessCheck {
            enabled: true,
            url: url.to_owned(),
            status_url: None,
            interval_ms: Self::default_interval_ms(),
            timeout_ms: Self::default_timeout_ms(),
            consecutive_failures_required: Self::default_failures(),
            startup_check: None,
        }
    }
}

/// Checks right after a start (wire name `StartupCheck`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StartupCheck {
    /// Whether startup checks run.
    pub enabled: bool,
    /// Wait before the first check.
    pub initial_delay_ms: u64,
    /// Time between startup checks.
    pub check_interval_ms: u64,
    /// Checks before the startup counts as failed.
    pub max_attempts: u32,
    /// What a failed startup leads to.
    pub fail_action: FailAction,
}

impl Default for StartupCheck {
    fn default() -> Self {
        StartupCheck {
            enabled: true,
            initial_delay_ms: 2000,
            check_interval_ms: 1000,
            max_attempts: 30,
            fail_action: FailAction::Restart,
        }
    }
}

/// What a failed startup check leads to, after the process group is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailAction {
    /// Handle it as a crash: backoff and retry under the restart policy.
    #[default]
    Restart,
    /// Disable the process (`disabled`).
    Disable,
    /// Give up (`failed`).
    Fail,
}
