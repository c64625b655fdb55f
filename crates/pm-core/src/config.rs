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
    /// Registered by an untrusted peer of the remote API (set by the monitor, never taken from a request;
    /// additive). Such a process runs within the budget of `docs/security-limits.md`: its executable is checked
    /// against the whitelist again at every start, its restarts are at least a second apart, and it does not
    /// inherit the monitor's `HOME` or `PROCESS_MONITOR_DIR`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untrusted: bool,
    /// A command run on every state change of this process, with the event as JSON on stdin and in `PM_EVENT_*`
    /// variables (additive; see `docs/events-and-logs.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_state_change: Option<StateChangeHook>,
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
            untrusted: false,
            on_state_change: None,
        }
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
        let invalid = |what: &str| Err(crate::Error::InvalidField(what.to_owned()));
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
        if self.log_max_bytes == Some(0) || self.keep_runs == Some(0) {
            return invalid("logMaxBytes and keepRuns (must be positive)");
        }
        if self.log_keep.is_some_and(|keep| keep > 100) {
            return invalid("logKeep (at most 100)");
        }
        if let Some(hook) = &self.on_state_change {
            if hook.command.trim().is_empty() || hook.command.len() > 4096 || hook.command.contains('\0') {
                return invalid("onStateChange.command (must be a non-empty path without NUL)");
            }
            if hook.args.len() > 4096 || hook.args.iter().any(|arg| arg.contains('\0')) {
                return invalid("onStateChange.args (at most 4096, without NUL)");
            }
            if hook.timeout_ms.is_some_and(|ms| ms == 0 || ms > StateChangeHook::MAX_TIMEOUT_MS) {
                return invalid("onStateChange.timeoutMs (1 to 300000)");
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
            if check.interval_ms == 0 {
                return invalid("alivenessCheck.intervalMs (must be positive)");
            }
            if check.timeout_ms == 0 {
                return invalid("alivenessCheck.timeoutMs (must be positive)");
            }
            if check.consecutive_failures_required == 0 {
                return invalid("alivenessCheck.consecutiveFailuresRequired (must be positive)");
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
            extra: serde_json::Map::new(),
        }
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
        config.aliveness_check = Some(check);
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
        assert!(serde_json::from_value::<AlivenessCheck>(json!({"enabled": true})).is_err());
        let startup: StartupCheck = serde_json::from_value(json!({})).unwrap();
        assert_eq!(
            serde_json::to_value(startup).unwrap(),
            json!({"enabled": true, "initialDelayMs": 2000, "checkIntervalMs": 1000, "maxAttempts": 30,
                   "failAction": "restart"})
        );
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
