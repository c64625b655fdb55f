//! One managed process in the registry: its configuration plus what the monitor observed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{ProcessConfig, ProcessState, ProcessStatus, StatusView, Timestamp};

/// One managed process: its configuration plus what the monitor observed.
///
/// `Deserialize` is written by hand (see [`crate::wire`]): it reads the configuration's keys with
/// [`ProcessConfig`]'s derived visitor, the observed fields below and the unknown keys in the same pass, as
/// `#[serde(flatten)]` would but without copying the entry first.
#[derive(Debug, Clone, PartialEq, Serialize)]
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

impl<'de> Deserialize<'de> for ProcessEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> serde::de::Visitor<'de> for EntryVisitor {
            type Value = ProcessEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("struct ProcessEntry")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ProcessEntry, A::Error> {
                let mut observed = Observed::default();
                let mut extra = Map::new();
                let config: ProcessConfig = crate::wire::read_routed(&mut map, &mut observed, &mut extra)?;
                Ok(observed.into_entry(config, extra))
            }
        }
        deserializer.deserialize_map(EntryVisitor)
    }
}

/// The fields of [`ProcessEntry`] besides its configuration and unknown keys, as read (`None`: not given).
#[derive(Default)]
struct Observed {
    registered_at: Option<Option<Timestamp>>,
    last_started_at: Option<Option<Timestamp>>,
    last_stopped_at: Option<Option<Timestamp>>,
    pid: Option<Option<u32>>,
    pid_start_time: Option<Option<u64>>,
    state: Option<ProcessState>,
    restart_attempts: Option<u32>,
    consecutive_failures: Option<u32>,
    last_exit_code: Option<Option<i32>>,
    last_signal: Option<Option<i32>>,
    last_error: Option<Option<String>>,
    pending_action: Option<Option<PendingAction>>,
    waiting_for: Option<BTreeMap<String, crate::DependencyCondition>>,
    waiting_since: Option<Option<Timestamp>>,
}

impl<'de> crate::wire::Outer<'de> for Observed {
    fn take<A: serde::de::MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        use crate::wire::set;
        match key {
            "registeredAt" => set(&mut self.registered_at, "registeredAt", map)?,
            "lastStartedAt" => set(&mut self.last_started_at, "lastStartedAt", map)?,
            "lastStoppedAt" => set(&mut self.last_stopped_at, "lastStoppedAt", map)?,
            "pid" => set(&mut self.pid, "pid", map)?,
            "pidStartTime" => set(&mut self.pid_start_time, "pidStartTime", map)?,
            "state" => set(&mut self.state, "state", map)?,
            "restartAttempts" => set(&mut self.restart_attempts, "restartAttempts", map)?,
            "consecutiveFailures" => set(&mut self.consecutive_failures, "consecutiveFailures", map)?,
            "lastExitCode" => set(&mut self.last_exit_code, "lastExitCode", map)?,
            "lastSignal" => set(&mut self.last_signal, "lastSignal", map)?,
            "lastError" => set(&mut self.last_error, "lastError", map)?,
            "pendingAction" => set(&mut self.pending_action, "pendingAction", map)?,
            "waitingFor" => set(&mut self.waiting_for, "waitingFor", map)?,
            "waitingSince" => set(&mut self.waiting_since, "waitingSince", map)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Observed {
    /// The entry, with the defaults the field attributes above name for the fields not given.
    fn into_entry(self, config: ProcessConfig, extra: Map<String, Value>) -> ProcessEntry {
        ProcessEntry {
            config,
            registered_at: self.registered_at.flatten(),
            last_started_at: self.last_started_at.flatten(),
            last_stopped_at: self.last_stopped_at.flatten(),
            pid: self.pid.flatten(),
            pid_start_time: self.pid_start_time.flatten(),
            state: self.state.unwrap_or_default(),
            restart_attempts: self.restart_attempts.unwrap_or_default(),
            consecutive_failures: self.consecutive_failures.unwrap_or_default(),
            last_exit_code: self.last_exit_code.flatten(),
            last_signal: self.last_signal.flatten(),
            last_error: self.last_error.flatten(),
            pending_action: self.pending_action.flatten(),
            waiting_for: self.waiting_for.unwrap_or_default(),
            waiting_since: self.waiting_since.flatten(),
            extra,
        }
    }
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
        self.status_view().to_status()
    }

    /// [`ProcessEntry::status`], borrowing the entry's strings.
    pub fn status_view(&self) -> StatusView<'_> {
        StatusView {
            id: &self.config.id,
            name: &self.config.name,
            state: self.state,
            enabled: self.config.enabled,
            autostart: self.config.autostart,
            is_remote: self.config.is_remote,
            pid: if self.state.has_child() { self.pid } else { None },
            last_started_at: self.last_started_at,
            last_stopped_at: self.last_stopped_at,
            restart_attempts: self.restart_attempts,
            command: Some(&self.config.command),
            last_exit_code: self.last_exit_code,
            last_signal: self.last_signal,
            last_error: self.last_error.as_deref(),
            waiting_for: (!self.waiting_for.is_empty()).then_some(&self.waiting_for),
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

/// A [`ProcessEntry`] that several holders share until one of them changes it: the registry's entries
/// ([`crate::Registry::processes`]), a process's task and its published snapshot in the monitor. Reading goes
/// through `Deref`; a change goes through `DerefMut`, which copies the entry first only when someone else holds it
/// (`Arc::make_mut`), so every holder keeps the value it had, as with an owned entry. The monitor's cached registry
/// and its tasks thus keep one copy of each entry instead of two (issue 19, memory per process).
#[derive(Clone)]
pub struct SharedEntry(std::sync::Arc<ProcessEntry>);

impl SharedEntry {
    /// Shares `entry` as it is.
    pub fn from_arc(entry: std::sync::Arc<ProcessEntry>) -> SharedEntry {
        SharedEntry(entry)
    }

    /// The shared allocation.
    pub fn arc(&self) -> &std::sync::Arc<ProcessEntry> {
        &self.0
    }

    /// Whether `self` and `other` are the same allocation (not merely equal).
    pub fn shares(&self, other: &std::sync::Arc<ProcessEntry>) -> bool {
        std::sync::Arc::ptr_eq(&self.0, other)
    }

    /// The entry, moved out when nobody else holds it, else copied.
    pub fn into_entry(self) -> ProcessEntry {
        std::sync::Arc::unwrap_or_clone(self.0)
    }
}

impl From<ProcessEntry> for SharedEntry {
    fn from(entry: ProcessEntry) -> SharedEntry {
        SharedEntry(std::sync::Arc::new(entry))
    }
}

impl std::ops::Deref for SharedEntry {
    type Target = ProcessEntry;

    fn deref(&self) -> &ProcessEntry {
        &self.0
    }
}

impl std::ops::DerefMut for SharedEntry {
    fn deref_mut(&mut self) -> &mut ProcessEntry {
        std::sync::Arc::make_mut(&mut self.0)
    }
}

impl PartialEq for SharedEntry {
    fn eq(&self, other: &SharedEntry) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl PartialEq<ProcessEntry> for SharedEntry {
    fn eq(&self, other: &ProcessEntry) -> bool {
        *self.0 == *other
    }
}

impl std::fmt::Debug for SharedEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for SharedEntry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ProcessEntry::deserialize(deserializer).map(SharedEntry::from)
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
    /// An entry with unknown keys at every level it has objects that keep them, placed between known keys.
    fn entry_with_unknown_keys() -> Value {
        json!({
            "futureFirst": {"nested": [1, {"deep": null}]},
            "id": "a", "name": "A", "command": "/bin/true", "args": ["x"],
            "futureMiddle": "kept",
            "restartPolicy": {"maxAttempts": 3, "futurePolicy": [true]},
            "alivenessCheck": {"url": "http://127.0.0.1:1/h", "futureCheck": 1.5,
                               "startupCheck": {"maxAttempts": 2, "futureStartup": "s"}},
            "state": "running", "pid": 42, "pidStartTime": 7, "restartAttempts": 2,
            "registeredAt": "2026-01-24T10:00:00.000Z",
            "futureLast": -1
        })
    }

    #[test]
    fn unknown_keys_round_trip_at_every_level() {
        let input = entry_with_unknown_keys();
        for entry in [
            serde_json::from_str::<ProcessEntry>(&input.to_string()).unwrap(),
            serde_json::from_value::<ProcessEntry>(input.clone()).unwrap(),
        ] {
            let keys: Vec<&str> = entry.extra.keys().map(String::as_str).collect();
            assert_eq!(keys, ["futureFirst", "futureMiddle", "futureLast"], "only the unknown keys, in order");
            assert_eq!(entry.extra["futureFirst"], json!({"nested": [1, {"deep": null}]}));
            assert_eq!((entry.config.id.as_str(), entry.config.args.as_slice()), ("a", ["x".to_owned()].as_slice()));
            assert_eq!((entry.state, entry.pid, entry.pid_start_time), (ProcessState::Running, Some(42), Some(7)));
            assert_eq!(entry.restart_attempts, 2);
            let policy = entry.config.restart_policy.as_ref().unwrap();
            assert_eq!((policy.max_attempts, &policy.extra["futurePolicy"]), (3, &json!([true])));
            let check = entry.config.aliveness_check.as_ref().unwrap();
            assert_eq!(check.extra["futureCheck"], json!(1.5));
            assert_eq!(check.startup_check.as_ref().unwrap().extra["futureStartup"], json!("s"));
            // Written back, every unknown key is there with its value, and reading it again gives the same entry.
            let written = serde_json::to_value(&entry).unwrap();
            for pointer in [
                "/futureFirst",
                "/futureMiddle",
                "/futureLast",
                "/restartPolicy/futurePolicy",
                "/alivenessCheck/futureCheck",
                "/alivenessCheck/startupCheck/futureStartup",
            ] {
                assert_eq!(written.pointer(pointer), input.pointer(pointer), "{pointer}");
            }
            assert_eq!(serde_json::from_value::<ProcessEntry>(written).unwrap(), entry);
        }
    }

    #[test]
    fn keys_with_escapes_are_read_like_any_other() {
        let entry: ProcessEntry =
            serde_json::from_str(r#"{"id":"a","n\u0061me":"A","command":"/bin/true","p\u0069d":5,"fut\u0075re":1}"#)
                .unwrap();
        assert_eq!((entry.config.name.as_str(), entry.pid), ("A", Some(5)));
        assert_eq!(entry.extra["future"], json!(1));
    }

    /// The error reading `text` as an entry, from text and from a `Value` (which has no position).
    fn errors(text: &str) -> (String, String) {
        let from_text = serde_json::from_str::<ProcessEntry>(text).unwrap_err().to_string();
        let value: Value = serde_json::from_str(text).unwrap();
        (from_text, serde_json::from_value::<ProcessEntry>(value).err().map(|err| err.to_string()).unwrap_or_default())
    }

    #[test]
    fn bad_entries_are_refused_naming_the_field_and_where_it_is() {
        let base = r#""id":"a","name":"A","command":"/bin/true""#;
        let cases = [
            // Missing configuration keys: named, at the end of the entry.
            (
                r#"{"id":"a","name":"A"}"#.to_owned(),
                "missing field `command` at line 1 column 21",
                "missing field `command`",
            ),
            // Wrong types: the message of the field's type, at the value.
            (format!(r#"{{{base},"pid":"x"}}"#), r#"invalid type: string "x", expected u32 at line 1 column 52"#, ""),
            (
                r#"{"id":5,"name":"A","command":"/bin/true"}"#.to_owned(),
                "invalid type: integer `5`, expected a string at line 1 column 7",
                "",
            ),
            (format!(r#"{{{base},"restartPolicy":{{"maxAttempts":"x"}}}}"#), r#"expected u32 at line 1 column 77"#, ""),
            (format!(r#"{{{base},"state":"bogus"}}"#), "unknown variant `bogus`", ""),
            (format!(r#"{{{base},"restartAttempts":null}}"#), "invalid type: null, expected u32", ""),
            // A key twice, observed or configuration.
            (format!(r#"{{{base},"pid":1,"pid":2}}"#), "duplicate field `pid`", ""),
            (format!(r#"{{{base},"id":"b"}}"#), "duplicate field `id`", ""),
            // Not an object.
            (
                "[1]".to_owned(),
                "invalid type: sequence, expected struct ProcessEntry",
                "invalid type: sequence, expected struct ProcessEntry",
            ),
        ];
        for (text, from_text, from_value) in cases {
            let (got_text, got_value) = errors(&text);
            assert!(got_text.contains(from_text), "{text}: {got_text}");
            let from_value =
                if from_value.is_empty() { from_text.split(" at line").next().unwrap() } else { from_value };
            // A `Value` has no duplicate keys: the last one is read.
            if !from_text.starts_with("duplicate") {
                assert!(got_value.contains(from_value), "{text}: {got_value}");
            }
        }
    }

    #[test]
    fn absent_and_null_observed_fields_take_their_defaults() {
        let entry: ProcessEntry = serde_json::from_value(
            json!({"id": "a", "name": "A", "command": "/bin/true", "pid": null, "lastError": null, "environment": null}),
        )
        .unwrap();
        assert_eq!((entry.pid, entry.last_error, entry.config.environment), (None, None, None));
        assert_eq!((entry.state, entry.restart_attempts, entry.waiting_for.len()), (ProcessState::Stopped, 0, 0));
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
    fn the_borrowed_status_writes_what_the_status_writes() {
        let registry: Registry = serde_json::from_value(example()).unwrap();
        let mut entry = registry.processes["api"].clone();
        entry.last_error = Some("boom".to_owned());
        entry.last_signal = Some(9);
        entry.waiting_for.insert("db".to_owned(), crate::DependencyCondition::Healthy);
        for state in [ProcessState::Running, ProcessState::Stopped] {
            entry.state = state;
            let (status, view) = (entry.status(), entry.status_view());
            assert_eq!(view.to_status(), status);
            assert_eq!(status.view(), view);
            assert_eq!(serde_json::to_value(view).unwrap(), serde_json::to_value(&status).unwrap());
            let back: ProcessStatus = serde_json::from_value(serde_json::to_value(view).unwrap()).unwrap();
            assert_eq!(back, status);
        }
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
