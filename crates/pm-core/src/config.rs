//! What a user asks for: the desired configuration of one managed process.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::DependencyCondition;

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
    /// HTTP health check of the running process (boxed: most entries have none, and an entry is held for every
    /// process, so its size counts; see BENCHMARKS.md, "Per-process memory").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aliveness_check: Option<Box<AlivenessCheck>>,
    /// How long a stop waits after SIGTERM before it sends SIGKILL to the process group (default 10 000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_ms: Option<u64>,
    /// Marks the entry through which an instance supervises its partner monitor (set by the monitor itself,
    /// never accepted from the remote API). It is left running when its owner shuts down.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partner: bool,
    /// Rotate `stdout.log`/`stderr.log` once they grow past this many bytes (additive; no rotation when
    /// absent). The child keeps writing to the same file descriptor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_max_bytes: Option<u64>,
    /// Rotated generations kept beside a log (`stdout.log.1` is the newest; additive, default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_keep: Option<u32>,
    /// Run folders kept for this process (additive; the monitor's `--keep-logs` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_runs: Option<u32>,
    /// Processes this one depends on, each with the condition it waits for before it is spawned (additive;
    /// see `docs/dependencies.md`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, DependencyCondition>,
    /// How long a start waits for `dependsOn` conditions before the process is `failed` (additive, default
    /// 60 000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency_timeout_ms: Option<u64>,
    /// After this process restarts (a restart request, or a restart after a crash), restart the processes
    /// that depend on it and were running (additive, default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restart_dependents: bool,
    /// Hard memory limit of the process's cgroup in bytes (`memory.max`; additive). Needs the cgroup v2 `memory`
    /// controller: refused at register time where it is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max_bytes: Option<u64>,
    /// CPU limit of the process's cgroup in percent of one core (`cpu.max`; additive, 1 to 100000). Needs the
    /// cgroup v2 `cpu` controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_max_percent: Option<u32>,
    /// Most processes and threads in the process's cgroup (`pids.max`; additive). Needs the `pids` controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u64>,
    /// Soft memory threshold in bytes: the process is restarted when its memory (its cgroup's, else its process
    /// group's resident memory) stays above it for two samples in a row (additive; no controller needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_restart_bytes: Option<u64>,
    /// Keep the process `running` while its cgroup holds processes after the leader exited with code 0 (a
    /// program that forks a daemon and returns); additive, default false: leftovers are killed with the leader.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub track_daemonized_children: bool,
    /// Registered by an untrusted peer of the remote API (set by the monitor, never taken from a request;
    /// additive). Such a process runs within the budget of `docs/security-limits.md`: its executable is checked
    /// against the whitelist again at every start, its restarts are at least a second apart, and it does not
    /// inherit the monitor's `HOME` or `PROCESS_MONITOR_DIR`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untrusted: bool,
    /// A command run on every state change of this process, with the event as JSON on stdin and in `PM_EVENT_*`
    /// variables (additive; see `docs/events-and-logs.md`).
    /// Boxed, as `aliveness_check` is: most entries have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_state_change: Option<Box<StateChangeHook>>,
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
            log_max_bytes: None,
            log_keep: None,
            keep_runs: None,
            depends_on: BTreeMap::new(),
            dependency_timeout_ms: None,
            restart_dependents: false,
            memory_max_bytes: None,
            cpu_max_percent: None,
            pids_max: None,
            memory_restart_bytes: None,
            track_daemonized_children: false,
            untrusted: false,
            on_state_change: None,
        }
    }

    /// Default time a start waits for its dependencies.
    pub const DEFAULT_DEPENDENCY_TIMEOUT_MS: u64 = 60_000;

    /// The time a start waits for its dependencies, in milliseconds.
    pub fn dependency_timeout_ms(&self) -> u64 {
        self.dependency_timeout_ms.unwrap_or(Self::DEFAULT_DEPENDENCY_TIMEOUT_MS)
    }

    /// The restart policy in force (the default one when none is configured). For an untrusted registration
    /// every delay is at least [`crate::UNTRUSTED_MIN_BACKOFF_MS`] (an empty schedule counts as that delay) and
    /// the attempts are at most [`crate::UNTRUSTED_MAX_ATTEMPTS`].
    pub fn restart_policy(&self) -> RestartPolicy {
        let mut policy = self.restart_policy.clone().unwrap_or_default();
        if self.untrusted {
            let floor = crate::UNTRUSTED_MIN_BACKOFF_MS;
            if policy.backoff_intervals_ms.is_empty() {
                policy.backoff_intervals_ms.push(floor);
            }
            for delay in &mut policy.backoff_intervals_ms {
                *delay = (*delay).max(floor);
            }
            policy.indefinite_interval_ms = policy.indefinite_interval_ms.max(floor);
            policy.max_attempts = policy.max_attempts.min(crate::UNTRUSTED_MAX_ATTEMPTS);
        }
        policy
    }

    /// The stop grace period in milliseconds (at most [`crate::UNTRUSTED_MAX_STOP_TIMEOUT_MS`] for an untrusted
    /// registration).
    pub fn stop_timeout_ms(&self) -> u64 {
        let cap = if self.untrusted { crate::UNTRUSTED_MAX_STOP_TIMEOUT_MS } else { MAX_STOP_TIMEOUT_MS };
        self.stop_timeout_ms.unwrap_or(Self::DEFAULT_STOP_TIMEOUT_MS).min(cap)
    }

    /// Run folders kept: `keepRuns`, else `default` (at most [`crate::UNTRUSTED_MAX_KEEP_RUNS`] for an untrusted
    /// registration).
    pub fn keep_runs_or(&self, default: usize) -> usize {
        let keep = self.keep_runs.map_or(default, |keep| keep as usize);
        if self.untrusted {
            keep.min(crate::UNTRUSTED_MAX_KEEP_RUNS as usize)
        } else {
            keep
        }
    }

    /// Checks every field a registration must get right, naming the first bad one.
    pub fn validate(&self) -> Result<(), crate::Error> {
        crate::validate_process_id(&self.id)?;
        self.validate_launch()?;
        self.validate_limits()?;
        if let Some(hook) = &self.on_state_change {
            hook.validate()?;
        }
        if let Some(policy) = &self.restart_policy {
            if policy.backoff_intervals_ms.len() > 1000 {
                return invalid("restartPolicy.backoffIntervalsMs (at most 1000 entries)");
            }
        }
        self.validate_dependencies()?;
        if let Some(check) = &self.aliveness_check {
            check.validate()?;
            check.validate_timing()?;
        }
        Ok(())
    }

    /// What is run and how: name, command, args, working directory and environment.
    fn validate_launch(&self) -> Result<(), crate::Error> {
        if self.name.trim().is_empty() || self.name.len() > 256 || self.name.contains('\0') {
            return invalid("name (must be 1 to 256 characters without NUL)");
        }
        if self.command.trim().is_empty() || self.command.len() > 4096 || self.command.contains('\0') {
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
        Ok(())
    }

    /// Log retention and resource limits.
    fn validate_limits(&self) -> Result<(), crate::Error> {
        if self.log_max_bytes == Some(0) || self.keep_runs == Some(0) {
            return invalid("logMaxBytes and keepRuns (must be positive)");
        }
        if self.memory_max_bytes == Some(0) || self.pids_max == Some(0) || self.memory_restart_bytes == Some(0) {
            return invalid("memoryMaxBytes, pidsMax and memoryRestartBytes (must be positive)");
        }
        if self.cpu_max_percent.is_some_and(|percent| percent == 0 || percent > 100_000) {
            return invalid("cpuMaxPercent (1 to 100000, percent of one core)");
        }
        if self.log_keep.is_some_and(|keep| keep > 100) {
            return invalid("logKeep (at most 100)");
        }
        Ok(())
    }

    /// `dependsOn` and `dependencyTimeoutMs`.
    fn validate_dependencies(&self) -> Result<(), crate::Error> {
        if self.depends_on.len() > 1000 {
            return invalid("dependsOn (at most 1000 entries)");
        }
        for dep in self.depends_on.keys() {
            if dep == &self.id {
                return invalid(&format!("dependsOn ({dep:?} cannot depend on itself)"));
            }
            if let Err(err) = crate::validate_process_id(dep) {
                return invalid(&format!("dependsOn ({err})"));
            }
        }
        if self.dependency_timeout_ms == Some(0) {
            return invalid("dependencyTimeoutMs (must be positive)");
        }
        Ok(())
    }
}

/// The error for a bad field, `what` naming it and saying what it must be.
fn invalid(what: &str) -> Result<(), crate::Error> {
    Err(crate::Error::InvalidField(what.to_owned()))
}

/// The longest stop timeout used (a larger `stopTimeoutMs` counts as one hour): beyond it a stop that never
/// escalates to SIGKILL would hold up the monitor's shutdown indefinitely. Applied where it is used rather than
/// refused, so that registries written before the cap stay readable.
const MAX_STOP_TIMEOUT_MS: u64 = 3_600_000;

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
    /// Which exits lead to a restart (additive, default `always`: the guide's behaviour).
    #[serde(skip_serializing_if = "RestartOn::is_always")]
    pub restart_on: RestartOn,
    /// Keys this version does not know, kept on rewrite.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_attempts: 5,
            backoff_intervals_ms: vec![1000, 2000, 5000],
            reset_after_ms: 300_000,
            retry_indefinitely: false,
            indefinite_interval_ms: 21_600_000,
            restart_on: RestartOn::Always,
            extra: serde_json::Map::new(),
        }
    }
}

/// Which exits of a process lead to a restart (wire name `RestartOn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartOn {
    /// Every exit the monitor did not ask for is a crash (the guide's behaviour).
    #[default]
    Always,
    /// Only an exit with a code other than 0, or by a signal; an exit with code 0 ends `stopped` (a job done).
    Failure,
    /// No exit is restarted: code 0 ends `stopped`, anything else `failed`.
    Never,
}

impl RestartOn {
    fn is_always(&self) -> bool {
        *self == RestartOn::Always
    }
}

/// How a check reaches the process (wire name `ProbeType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeType {
    /// `GET url`; a 2xx answer passes (the guide's check).
    #[default]
    Http,
    /// A TCP connection to `host`:`port`; passes when it opens.
    Tcp,
    /// Runs `command` with `args` (no shell) in the process's environment and working directory; passes on
    /// exit code 0 within `timeoutMs`.
    Exec,
}

impl ProbeType {
    fn is_http(&self) -> bool {
        *self == ProbeType::Http
    }
}

/// A command run on every state change of a process (wire name `onStateChange`): no shell, the event as JSON on
/// its stdin and in `PM_EVENT_*` variables, killed after its timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateChangeHook {
    /// The executable, resolved like a process's command (relative to the process's working directory).
    pub command: String,
    /// Arguments, passed verbatim.
    #[serde(default)]
    pub args: Vec<String>,
    /// Time the hook may run before its process group is killed (default 10 000 ms, at most 300 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

impl StateChangeHook {
    /// Default run time of a hook.
    pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
    /// Longest run time a hook may ask for.
    pub const MAX_TIMEOUT_MS: u64 = 300_000;

    /// Checks the fields of the hook, naming the first bad one.
    fn validate(&self) -> Result<(), crate::Error> {
        if self.command.trim().is_empty() || self.command.len() > 4096 || self.command.contains('\0') {
            return invalid("onStateChange.command (must be a non-empty path without NUL)");
        }
        if self.args.len() > 4096 || self.args.iter().any(|arg| arg.contains('\0')) {
            return invalid("onStateChange.args (at most 4096, without NUL)");
        }
        if self.timeout_ms.is_some_and(|ms| ms == 0 || ms > Self::MAX_TIMEOUT_MS) {
            return invalid("onStateChange.timeoutMs (1 to 300000)");
        }
        Ok(())
    }
}

/// Health check of a running process (wire name `AlivenessCheck`): HTTP by default, TCP or exec by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlivenessCheck {
    /// Whether the check runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How the check probes (additive, default `http`).
    #[serde(rename = "type", default, skip_serializing_if = "ProbeType::is_http")]
    pub probe_type: ProbeType,
    /// The health URL; a 2xx answer passes (required for `http`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// Host a `tcp` probe connects to (default `127.0.0.1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port a `tcp` probe connects to (required for `tcp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Executable an `exec` probe runs (required for `exec`; resolved like the process's command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Arguments of an `exec` probe, passed verbatim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
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
    /// Keys this version does not know, kept on rewrite.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
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

    /// What the check probes, in words (`http://...`, `tcp 127.0.0.1:5432`, `exec pg_isready`), for messages.
    pub fn target(&self) -> String {
        match self.probe_type {
            ProbeType::Http => self.url.clone(),
            ProbeType::Tcp => {
                format!("tcp {}:{}", self.host.as_deref().unwrap_or("127.0.0.1"), self.port.unwrap_or(0))
            }
            ProbeType::Exec => format!("exec {}", self.command.as_deref().unwrap_or("")),
        }
    }

    /// Checks the fields of the check, naming the first bad one.
    pub fn validate(&self) -> Result<(), crate::Error> {
        match self.probe_type {
            ProbeType::Http => {
                if !(self.url.starts_with("http://")) {
                    return invalid("alivenessCheck.url (must be an http:// URL)");
                }
            }
            ProbeType::Tcp => {
                if self.port.unwrap_or(0) == 0 {
                    return invalid("alivenessCheck.port (a tcp check needs a port from 1 to 65535)");
                }
                if let Some(host) = &self.host {
                    if host.trim().is_empty() || host.len() > 253 || host.contains(['\0', '/', ' ']) {
                        return invalid("alivenessCheck.host (a host name or IP address)");
                    }
                }
            }
            ProbeType::Exec => {
                let command = self.command.as_deref().unwrap_or("");
                if command.trim().is_empty() || command.len() > 4096 || command.contains('\0') {
                    return invalid("alivenessCheck.command (an exec check needs a non-empty path without NUL)");
                }
                if self.args.len() > 4096 || self.args.iter().any(|arg| arg.contains('\0')) {
                    return invalid("alivenessCheck.args (at most 4096, without NUL)");
                }
            }
        }
        Ok(())
    }

    /// Checks the timing fields of a registered check (interval, timeout, failures, startup interval), naming the
    /// first that is zero.
    fn validate_timing(&self) -> Result<(), crate::Error> {
        if self.interval_ms == 0 {
            return invalid("alivenessCheck.intervalMs (must be positive)");
        }
        if self.timeout_ms == 0 {
            return invalid("alivenessCheck.timeoutMs (must be positive)");
        }
        if self.consecutive_failures_required == 0 {
            return invalid("alivenessCheck.consecutiveFailuresRequired (must be positive)");
        }
        if let Some(startup) = &self.startup_check {
            if startup.check_interval_ms == 0 {
                return invalid("alivenessCheck.startupCheck.checkIntervalMs (must be positive)");
            }
        }
        Ok(())
    }

    /// An enabled check of `url` with every other field at its default.
    pub fn new(url: &str) -> AlivenessCheck {
        AlivenessCheck {
            enabled: true,
            probe_type: ProbeType::Http,
            url: url.to_owned(),
            host: None,
            port: None,
            command: None,
            args: Vec::new(),
            status_url: None,
            interval_ms: Self::default_interval_ms(),
            timeout_ms: Self::default_timeout_ms(),
            consecutive_failures_required: Self::default_failures(),
            startup_check: None,
            extra: serde_json::Map::new(),
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
    /// Keys this version does not know, kept on rewrite.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for StartupCheck {
    fn default() -> Self {
        StartupCheck {
            enabled: true,
            initial_delay_ms: 2000,
            check_interval_ms: 1000,
            max_attempts: 30,
            fail_action: FailAction::Restart,
            extra: serde_json::Map::new(),
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::Error;

    fn valid() -> ProcessConfig {
        let mut config = ProcessConfig::new("api", "My API", "/usr/bin/my-api");
        config.args = vec!["--port".to_owned(), "8080".to_owned()];
        config.working_directory = Some("/opt/api".to_owned());
        config.environment = Some(BTreeMap::from([("APP_ENV".to_owned(), "production".to_owned())]));
        config.restart_policy = Some(RestartPolicy::default());
        let mut check = AlivenessCheck::new("http://localhost:8080/health");
        check.startup_check = Some(StartupCheck::default());
        config.aliveness_check = Some(Box::new(check));
        config
    }

    /// Validates `valid()` changed by `edit`; `expected` is the field the refusal must name, `None` for success.
    fn check(edit: impl FnOnce(&mut ProcessConfig), expected: Option<&str>) {
        let mut config = valid();
        edit(&mut config);
        match (config.validate(), expected) {
            (Ok(()), None) => {}
            (Err(err @ (Error::InvalidField(_) | Error::InvalidId { .. })), Some(field)) => {
                let message = err.to_string();
                assert!(message.contains(field), "{message:?} does not name {field:?}");
            }
            (got, expected) => panic!("got {got:?}, expected refusal naming {expected:?}"),
        }
    }

    /// Parses a `ProcessConfig` from JSON; `Err` carries the serde message.
    fn parse(value: serde_json::Value) -> Result<ProcessConfig, String> {
        serde_json::from_value(value).map_err(|err| err.to_string())
    }

    #[test]
    fn accepts_a_full_config() {
        check(|_| {}, None);
        check(|config| *config = ProcessConfig::new("a", "A", "sleep"), None);
        check(|config| config.aliveness_check.as_mut().unwrap().enabled = false, None);
    }

    #[test]
    fn refusals_name_the_field() {
        check(|config| config.id = "../x".to_owned(), Some("id"));
        check(|config| config.id = String::new(), Some("id"));
        check(|config| config.name = String::new(), Some("name"));
        check(|config| config.name = "  ".to_owned(), Some("name"));
        check(|config| config.name = "n".repeat(257), Some("name"));
        check(|config| config.name = "n".repeat(256), None);
        check(|config| config.name = "a\0b".to_owned(), Some("name"));
        check(|config| config.name = "esc \u{1b}[31m".to_owned(), None);
        check(|config| config.command = String::new(), Some("command"));
        check(|config| config.command = " ".to_owned(), Some("command"));
        check(|config| config.command = "/bin/a\0b".to_owned(), Some("command"));
        check(|config| config.command = format!("/{}", "c".repeat(4096)), Some("command"));
        check(|config| config.args.push("a\0".to_owned()), Some("args"));
        check(|config| config.args = vec![String::new(); 4097], Some("args"));
        check(|config| config.args = vec![String::new(); 4096], None);
        check(|config| config.working_directory = Some(String::new()), Some("workingDirectory"));
        check(|config| config.working_directory = Some("/a\0".to_owned()), Some("workingDirectory"));
        let env = |key: &str, value: &str| Some(BTreeMap::from([(key.to_owned(), value.to_owned())]));
        check(|config| config.environment = env("", "x"), Some("environment"));
        check(|config| config.environment = env("A=B", "x"), Some("environment"));
        check(|config| config.environment = env("A\0", "x"), Some("environment"));
        check(|config| config.environment = env("A", "x\0"), Some("environment"));
        check(|config| config.environment = env("A", ""), None);
        check(
            |config| config.restart_policy.as_mut().unwrap().backoff_intervals_ms = vec![1; 1001],
            Some("restartPolicy.backoffIntervalsMs"),
        );
        fn aliveness(config: &mut ProcessConfig) -> &mut AlivenessCheck {
            config.aliveness_check.as_mut().unwrap()
        }
        check(|config| aliveness(config).url = "https://localhost/health".to_owned(), Some("alivenessCheck.url"));
        check(|config| aliveness(config).url = "localhost:8080".to_owned(), Some("alivenessCheck.url"));
        check(|config| aliveness(config).interval_ms = 0, Some("alivenessCheck.intervalMs"));
        check(|config| aliveness(config).timeout_ms = 0, Some("alivenessCheck.timeoutMs"));
        check(
            |config| aliveness(config).consecutive_failures_required = 0,
            Some("alivenessCheck.consecutiveFailuresRequired"),
        );
        check(
            |config| aliveness(config).startup_check.as_mut().unwrap().check_interval_ms = 0,
            Some("alivenessCheck.startupCheck.checkIntervalMs"),
        );
    }

    #[test]
    fn defaults_on_read() {
        let config = parse(json!({"id": "a", "name": "A", "command": "/bin/true"})).unwrap();
        assert_eq!(config, ProcessConfig::new("a", "A", "/bin/true"));
        assert!(config.args.is_empty());
        assert!(config.autostart && config.enabled && !config.is_remote && !config.partner);
        assert_eq!(config.restart_policy, None);
        assert_eq!(config.restart_policy(), RestartPolicy::default());
        assert_eq!(config.stop_timeout_ms(), 10_000);
        // Serialising omits the optional keys.
        assert_eq!(
            serde_json::to_value(&config).unwrap(),
            json!({"id": "a", "name": "A", "command": "/bin/true", "args": [], "autostart": true, "enabled": true,
                   "isRemote": false})
        );
    }

    #[test]
    fn configured_values_win() {
        let config = parse(json!({
            "id": "a", "name": "A", "command": "/bin/true", "autostart": false, "enabled": false, "isRemote": true,
            "stopTimeoutMs": 250, "restartPolicy": {"maxAttempts": 1}, "partner": true
        }))
        .unwrap();
        assert!(!config.autostart && !config.enabled && config.is_remote && config.partner);
        assert_eq!(config.stop_timeout_ms(), 250);
        // Keys missing inside a given policy take the policy defaults.
        assert_eq!(config.restart_policy(), RestartPolicy { max_attempts: 1, ..RestartPolicy::default() });
    }

    #[test]
    fn id_name_and_command_are_required() {
        for missing in ["id", "name", "command"] {
            let mut value = json!({"id": "a", "name": "A", "command": "/bin/true"});
            value.as_object_mut().unwrap().remove(missing);
            let err = parse(value).unwrap_err();
            assert!(err.contains(missing), "{err}");
        }
        assert!(parse(json!({"id": 7, "name": "A", "command": "/bin/true"})).is_err());
        assert!(parse(json!({"id": "a", "name": "A", "command": "/bin/true", "args": "x y"})).is_err());
    }

    #[test]
    fn default_restart_policy_follows_the_guide() {
        let policy = RestartPolicy::default();
        assert_eq!(
            serde_json::to_value(&policy).unwrap(),
            json!({"maxAttempts": 5, "backoffIntervalsMs": [1000, 2000, 5000], "resetAfterMs": 300000,
                   "retryIndefinitely": false, "indefiniteIntervalMs": 21600000})
        );
        assert_eq!(serde_json::from_value::<RestartPolicy>(json!({})).unwrap(), policy);
    }

    #[test]
    fn aliveness_check_defaults() {
        let check: AlivenessCheck = serde_json::from_value(json!({"url": "http://localhost:19884/alive"})).unwrap();
        assert_eq!(check, AlivenessCheck::new("http://localhost:19884/alive"));
        assert!(check.enabled);
        assert_eq!((check.interval_ms, check.timeout_ms, check.consecutive_failures_required), (3000, 2000, 2));
        assert_eq!(check.startup_check, None);
        let no_url: AlivenessCheck = serde_json::from_value(json!({"enabled": true})).unwrap();
        assert!(no_url.validate().unwrap_err().to_string().contains("alivenessCheck.url"));
        let startup: StartupCheck = serde_json::from_value(json!({})).unwrap();
        assert_eq!(
            serde_json::to_value(startup).unwrap(),
            json!({"enabled": true, "initialDelayMs": 2000, "checkIntervalMs": 1000, "maxAttempts": 30,
                   "failAction": "restart"})
        );
    }

    #[test]
    fn dependency_keys_are_checked_and_default_away() {
        use crate::DependencyCondition::*;
        let deps = |pairs: &[(&str, crate::DependencyCondition)]| {
            pairs.iter().map(|(id, condition)| (id.to_string(), *condition)).collect::<BTreeMap<_, _>>()
        };
        check(|config| config.depends_on = deps(&[("db", Healthy), ("migrate", CompletedSuccessfully)]), None);
        check(|config| config.depends_on = deps(&[("not-yet-registered", Started)]), None);
        check(|config| config.depends_on = deps(&[("api", Started)]), Some("\"api\" cannot depend on itself"));
        check(|config| config.depends_on = deps(&[("../x", Started)]), Some("dependsOn"));
        check(|config| config.dependency_timeout_ms = Some(0), Some("dependencyTimeoutMs"));
        let many: BTreeMap<_, _> = (0..1001).map(|n| (format!("p{n}"), Started)).collect();
        check(|config| config.depends_on = many, Some("dependsOn (at most 1000"));
        let config = parse(json!({"id": "a", "name": "A", "command": "/bin/true",
            "dependsOn": {"db": "healthy", "job": "completedSuccessfully", "x": "started"},
            "dependencyTimeoutMs": 500, "restartDependents": true, "restartPolicy": {"restartOn": "never"}}))
        .unwrap();
        assert_eq!(config.depends_on, deps(&[("db", Healthy), ("job", CompletedSuccessfully), ("x", Started)]));
        assert_eq!((config.dependency_timeout_ms(), config.restart_dependents), (500, true));
        assert_eq!(config.restart_policy().restart_on, RestartOn::Never);
        let err =
            parse(json!({"id": "a", "name": "A", "command": "/bin/true", "dependsOn": {"db": "up"}})).unwrap_err();
        assert!(err.contains("dependsOn condition \"up\""), "{err}");
        assert!(parse(json!({"id": "a", "name": "A", "command": "c", "restartPolicy": {"restartOn": "sometimes"}}))
            .is_err());
        // Absent, they take defaults that keep the guide's behaviour, and are left out when written.
        let plain = ProcessConfig::new("a", "A", "/bin/true");
        assert_eq!(plain.dependency_timeout_ms(), 60_000);
        assert_eq!(plain.restart_policy().restart_on, RestartOn::Always);
        let value = serde_json::to_value(&plain).unwrap();
        for key in ["dependsOn", "dependencyTimeoutMs", "restartDependents"] {
            assert!(value.get(key).is_none(), "{key} written");
        }
    }

    #[test]
    fn probe_types_need_their_fields() {
        fn aliveness(config: &mut ProcessConfig) -> &mut AlivenessCheck {
            config.aliveness_check.as_mut().unwrap()
        }
        let tcp = |config: &mut ProcessConfig| {
            let check = aliveness(config);
            check.probe_type = ProbeType::Tcp;
            check.url = String::new();
            check.port = Some(5432);
        };
        check(tcp, None);
        check(
            |config| {
                tcp(config);
                aliveness(config).port = None
            },
            Some("alivenessCheck.port"),
        );
        check(
            |config| {
                tcp(config);
                aliveness(config).port = Some(0)
            },
            Some("alivenessCheck.port"),
        );
        check(
            |config| {
                tcp(config);
                aliveness(config).host = Some("a b".to_owned())
            },
            Some("alivenessCheck.host"),
        );
        check(
            |config| {
                tcp(config);
                aliveness(config).host = Some("db.local".to_owned())
            },
            None,
        );
        let exec = |config: &mut ProcessConfig| {
            let check = aliveness(config);
            check.probe_type = ProbeType::Exec;
            check.url = String::new();
            check.command = Some("pg_isready".to_owned());
        };
        check(exec, None);
        check(
            |config| {
                exec(config);
                aliveness(config).command = None
            },
            Some("alivenessCheck.command"),
        );
        check(
            |config| {
                exec(config);
                aliveness(config).command = Some(" ".to_owned())
            },
            Some("alivenessCheck.command"),
        );
        check(
            |config| {
                exec(config);
                aliveness(config).args = vec!["a\0".to_owned()]
            },
            Some("alivenessCheck.args"),
        );
        check(|config| aliveness(config).url = String::new(), Some("alivenessCheck.url"));
        // Wire shape: `type` and the probe's own keys; `http` and an empty url are left out.
        let check: AlivenessCheck =
            serde_json::from_value(json!({"type": "exec", "command": "/bin/true", "args": ["-q"]})).unwrap();
        assert_eq!(
            (check.probe_type, check.command.as_deref(), check.args.len()),
            (ProbeType::Exec, Some("/bin/true"), 1)
        );
        assert_eq!(check.target(), "exec /bin/true");
        let value = serde_json::to_value(&check).unwrap();
        assert_eq!(value["type"], "exec");
        assert!(value.get("url").is_none());
        let http = serde_json::to_value(AlivenessCheck::new("http://localhost:1/h")).unwrap();
        assert!(http.get("type").is_none() && http.get("host").is_none() && http.get("args").is_none());
        let tcp: AlivenessCheck = serde_json::from_value(json!({"type": "tcp", "port": 5432})).unwrap();
        assert_eq!(tcp.target(), "tcp 127.0.0.1:5432");
        assert!(serde_json::from_value::<AlivenessCheck>(json!({"type": "udp", "port": 1})).is_err());
    }

    #[test]
    fn fail_action_names() {
        let check_action = |action: FailAction, name: &str| {
            assert_eq!(serde_json::to_value(action).unwrap(), json!(name));
            assert_eq!(serde_json::from_value::<FailAction>(json!(name)).unwrap(), action);
        };
        check_action(FailAction::Restart, "restart");
        check_action(FailAction::Disable, "disable");
        check_action(FailAction::Fail, "fail");
        assert_eq!(FailAction::default(), FailAction::Restart);
        assert!(serde_json::from_value::<FailAction>(json!("Restart")).is_err());
        assert!(serde_json::from_value::<FailAction>(json!("reboot")).is_err());
    }
}
