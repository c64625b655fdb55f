//! The registry document `processes_{instanceId}.json`: its top-level keys, the instance-dependent defaults and
//! the `processes` object (the entries are in `entry.rs`, the settings sections in `settings.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    AlivenessServerConfig, PartnerDiscovery, ProcessEntry, RemoteAccessConfig, SharedEntry, Timestamp, UnusableEntry,
};

/// Id of the main instance.
pub const DEFAULT_INSTANCE: &str = "default";
/// Id of the instance that guards the main one.
pub const WATCHER_INSTANCE: &str = "watcher";

/// The whole registry of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registry {
    /// Format version (1).
    #[serde(default = "Registry::version")]
    pub version: u32,
    /// When the file was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<Timestamp>,
    /// The instance this registry belongs to.
    pub instance_id: String,
    /// Interval of the monitor's housekeeping tick.
    #[serde(default = "Registry::monitor_interval_ms")]
    pub monitor_interval_ms: u64,
    /// No partner monitoring when set.
    #[serde(default)]
    pub standalone_mode: bool,
    /// Set while a monitor runs on this registry and cleared by its clean shutdown (additive). A monitor that
    /// finds it set knows its predecessor died: it resumes what ran and starts nothing that was stopped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub monitor_running: bool,
    /// Sequence number of the last line of the journal `processes_{id}.journal` whose change this file holds
    /// (additive; 0, left out, before any): readers apply the journal's later lines on top.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub journal_seq: u64,
    /// How the partner instance is found and watched.
    #[serde(default)]
    pub partner_discovery: PartnerDiscovery,
    /// The remote API and its permissions.
    #[serde(default)]
    pub remote_access: RemoteAccessConfig,
    /// The aliveness server.
    #[serde(default)]
    pub aliveness_server: AlivenessServerConfig,
    /// Managed processes by id (each key a valid process id, equal to its entry's `id`). Each entry may be shared
    /// with other holders (the monitor's tasks) and is copied on its first change ([`SharedEntry`]).
    #[serde(default, deserialize_with = "processes_by_id")]
    pub processes: BTreeMap<String, SharedEntry>,
    /// Keys this version does not know, kept on rewrite.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Entries of `processes` that cannot run, by key, kept as they are on disk (see [`UnusableEntry`]): not in
    /// [`Registry::processes`], written back in place by [`Registry::to_json_pretty`].
    #[serde(skip)]
    pub unusable: BTreeMap<String, UnusableEntry>,
}

impl Registry {
    fn version() -> u32 {
        1
    }
    fn monitor_interval_ms() -> u64 {
        5000
    }

    /// Parses a registry file. Keys whose default depends on the instance (the ports, the partner) take the
    /// defaults of the file's `instanceId` when absent (a watcher registry without `remoteAccess` listens on 19882,
    /// not on the default instance's 19881); everything else defaults as the serde attributes say. Errors carry
    /// serde_json's line and column.
    ///
    /// An entry that cannot run does not make the whole file unreadable: it is set aside in
    /// [`Registry::unusable`] (see [`UnusableEntry`]) and the rest is parsed.
    pub fn from_json(bytes: &[u8]) -> Result<Registry, serde_json::Error> {
        Registry::from_json_strict(bytes).or_else(|strict| crate::unusable::parse_setting_aside(bytes, strict))
    }

    /// The registry as the file stores it, pretty-printed: its fields, with the [`Registry::unusable`] entries
    /// back in `processes` as they were read. Every write of the file goes through this.
    pub fn to_json_pretty(&self) -> Result<Vec<u8>, serde_json::Error> {
        // Sized for the whole file up front: growing by doubling copies a registry of 10,000 entries (3 MB and
        // more) several times over, and touches fresh pages each time.
        let mut out = Vec::with_capacity(4096 + 640 * (self.processes.len() + self.unusable.len()));
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, crate::wire::Pretty::default());
        if self.unusable.is_empty() {
            self.serialize(&mut serializer)?;
        } else {
            crate::unusable::to_value(self)?.serialize(&mut serializer)?;
        }
        Ok(out)
    }

    /// [`Registry::from_json`] without setting unusable entries aside: any problem refuses the whole file.
    pub(crate) fn from_json_strict(bytes: &[u8]) -> Result<Registry, serde_json::Error> {
        let mut registry: Registry = serde_json::from_slice(bytes)?;
        if let Some(id) = &registry.partner_discovery.partner_instance_id {
            if let Err(err) = crate::validate_instance_id(id) {
                return Err(serde::de::Error::custom(format!("partnerDiscovery.partnerInstanceId: {err}")));
            }
        }
        let present: Present = serde_json::from_slice(bytes)?;
        let defaults = Registry::new_default(&registry.instance_id);
        let remote = present.remote_access.unwrap_or_default();
        if !remote.remote_port {
            registry.remote_access.remote_port = defaults.remote_access.remote_port;
        }
        if !present.aliveness_server.unwrap_or_default().port {
            registry.aliveness_server.port = defaults.aliveness_server.port;
        }
        let Some(partner) = present.partner_discovery else {
            registry.partner_discovery = defaults.partner_discovery;
            return Ok(registry);
        };
        let (ours, theirs) = (&mut registry.partner_discovery, defaults.partner_discovery);
        if !partner.partner_instance_id {
            ours.partner_instance_id = theirs.partner_instance_id;
        }
        if !partner.partner_aliveness_port {
            ours.partner_aliveness_port = theirs.partner_aliveness_port;
        }
        if !partner.partner_status_url {
            ours.partner_status_url = theirs.partner_status_url;
        }
        if !partner.discovery_on_startup {
            ours.discovery_on_startup = theirs.discovery_on_startup;
        }
        if !partner.start_partner_if_missing {
            ours.start_partner_if_missing = theirs.start_partner_if_missing;
        }
        Ok(registry)
    }

    /// The registry a first start creates for `instance_id`: the guide's ports and partners for `default` and
    /// `watcher`; other ids get the default instance's settings with partner discovery off.
    pub fn new_default(instance_id: &str) -> Registry {
        let watcher = instance_id == WATCHER_INSTANCE;
        let (remote_port, aliveness_port) = if watcher { (19882, 19884) } else { (19881, 19883) };
        let partner_discovery = if watcher {
            PartnerDiscovery::for_partner(DEFAULT_INSTANCE, 19883, true)
        } else if instance_id == DEFAULT_INSTANCE {
            PartnerDiscovery::for_partner(WATCHER_INSTANCE, 19884, false)
        } else {
            PartnerDiscovery::default()
        };
        Registry {
            version: 1,
            last_modified: None,
            instance_id: instance_id.to_owned(),
            monitor_interval_ms: Self::monitor_interval_ms(),
            standalone_mode: false,
            monitor_running: false,
            journal_seq: 0,
            partner_discovery,
            remote_access: RemoteAccessConfig { remote_port, ..RemoteAccessConfig::default() },
            aliveness_server: AlivenessServerConfig { port: aliveness_port, ..AlivenessServerConfig::default() },
            processes: BTreeMap::new(),
            extra: Map::new(),
            unusable: BTreeMap::new(),
        }
    }
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// The `processes` object, refusing a key that is not a valid process id or differs from its entry's `id` (the
/// monitor, the API and the local client all address an entry by both): the error is raised right after that
/// entry, so its line and column point there.
fn processes_by_id<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, SharedEntry>, D::Error> {
    struct Entries;
    impl<'de> serde::de::Visitor<'de> for Entries {
        type Value = BTreeMap<String, SharedEntry>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of process entries by id")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            use serde::de::Error as _;
            let mut entries = BTreeMap::new();
            while let Some((key, entry)) = map.next_entry::<String, ProcessEntry>()? {
                if let Err(err) = crate::validate_process_id(&key) {
                    return Err(A::Error::custom(format!("processes: {err}")));
                }
                if entry.config.id != key {
                    return Err(A::Error::custom(format!(
                        "processes: the entry under {key:?} has id {:?}; the key and the id must be the same",
                        entry.config.id
                    )));
                }
                if let Err(err) = entry.config.validate() {
                    return Err(A::Error::custom(format!("processes: entry {key:?}: {err}")));
                }
                if entries.insert(key.clone(), SharedEntry::from(entry)).is_some() {
                    return Err(A::Error::custom(format!("processes: {key:?} appears twice")));
                }
            }
            Ok(entries)
        }
    }
    deserializer.deserialize_map(Entries)
}

/// Which instance-dependent keys a registry file gives, `null` included (values skipped unread).
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Present {
    remote_access: Option<PresentRemote>,
    aliveness_server: Option<PresentAliveness>,
    partner_discovery: Option<PresentPartner>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PresentRemote {
    #[serde(default, deserialize_with = "given")]
    remote_port: bool,
}

#[derive(Default, Deserialize)]
struct PresentAliveness {
    #[serde(default, deserialize_with = "given")]
    port: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PresentPartner {
    #[serde(default, deserialize_with = "given")]
    partner_instance_id: bool,
    #[serde(default, deserialize_with = "given")]
    partner_aliveness_port: bool,
    #[serde(default, deserialize_with = "given")]
    partner_status_url: bool,
    #[serde(default, deserialize_with = "given")]
    discovery_on_startup: bool,
    #[serde(default, deserialize_with = "given")]
    start_partner_if_missing: bool,
}

/// True for a key that is there, whatever its value.
fn given<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(deserializer).map(|_| true)
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;
    use crate::{PendingAction, ProcessConfig, ProcessState, RestartPolicy};

    /// The example registry of `shared/spec/wire-formats.md`, verbatim (shared with pm-registry's tests).
    const WIRE_EXAMPLE: &str = include_str!("../testdata/wire-example.json");

    /// Removes `pointer`'s last key from `value` after checking that it holds `expected`.
    fn take_added(value: &mut Value, pointer: &str, expected: Value) {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let object = value.pointer_mut(parent).and_then(Value::as_object_mut).unwrap();
        assert_eq!(object.remove(key), Some(expected), "additive key {pointer}");
    }

    /// Reads `input` as a registry, writes it back, and compares the meaning: the output must equal the input
    /// plus exactly the `added` keys (JSON pointer, value), the additive defaults this implementation writes.
    fn check_round_trip(input: &Value, added: &[(&str, Value)]) -> Registry {
        let registry: Registry = serde_json::from_value(input.clone()).unwrap();
        let mut output = serde_json::to_value(&registry).unwrap();
        for (pointer, expected) in added {
            take_added(&mut output, pointer, expected.clone());
        }
        assert_eq!(&output, input);
        // And the text form reads back to the same document.
        let text = serde_json::to_string_pretty(&registry).unwrap();
        assert_eq!(serde_json::from_str::<Registry>(&text).unwrap(), registry);
        registry
    }

    /// The keys a rewrite adds to a registry written by the original, with their default values.
    fn additive_defaults() -> Vec<(&'static str, Value)> {
        vec![
            ("/remoteAccess/bindAddress", json!("::")),
            ("/alivenessServer/bindAddress", json!("127.0.0.1")),
            ("/partnerDiscovery/checkIntervalMs", json!(3000)),
            ("/partnerDiscovery/failuresBeforeRestart", json!(2)),
        ]
    }

    pub(crate) fn example() -> Value {
        serde_json::from_str(WIRE_EXAMPLE).unwrap()
    }

    #[test]
    fn wire_example_round_trips() {
        let registry = check_round_trip(&example(), &additive_defaults());
        assert_eq!(registry.instance_id, "default");
        assert_eq!(registry.last_modified.unwrap().to_string(), "2026-01-24T10:30:00.123Z");
        let api = &registry.processes["api"];
        assert_eq!(api.state, ProcessState::Running);
        assert_eq!(api.pid, Some(12345));
        assert_eq!(api.config.args, ["--port", "8080"]);
        assert_eq!(api.config.environment.as_ref().unwrap()["APP_ENV"], "production");
        assert_eq!(api.config.restart_policy(), RestartPolicy::default());
        let startup = api.config.aliveness_check.as_ref().unwrap().startup_check.as_ref().unwrap();
        assert_eq!(startup.fail_action, crate::FailAction::Restart);
        assert!(api.extra.is_empty() && registry.extra.is_empty());
    }

    #[test]
    fn written_additive_keys_round_trip_unchanged() {
        // Once the additive keys are written, a second round trip changes nothing.
        let first: Registry = serde_json::from_value(example()).unwrap();
        let written = serde_json::to_value(&first).unwrap();
        check_round_trip(&written, &[]);
    }

    #[test]
    fn unknown_keys_survive() {
        let mut input = example();
        input["futureTop"] = json!({"nested": [1, 2, {"deep": null}]});
        input["zzz"] = json!("last");
        input["processes"]["api"]["futureEntry"] = json!("kept");
        input["processes"]["api"]["cpuLimit"] = json!(1.5);
        let registry = check_round_trip(&input, &additive_defaults());
        assert_eq!(registry.extra["futureTop"], json!({"nested": [1, 2, {"deep": null}]}));
        let api = &registry.processes["api"];
        assert_eq!(api.extra.len(), 2, "only the unknown keys land in extra: {:?}", api.extra);
        assert_eq!(api.extra["futureEntry"], json!("kept"));
    }

    #[test]
    fn additive_entry_keys_round_trip() {
        let mut input = example();
        let api = input["processes"]["api"].as_object_mut().unwrap();
        api.insert("stopTimeoutMs".to_owned(), json!(2500));
        api.insert("partner".to_owned(), json!(true));
        api.insert("pidStartTime".to_owned(), json!(987654));
        api.insert("lastExitCode".to_owned(), json!(-1));
        api.insert("lastSignal".to_owned(), json!(9));
        api.insert("lastError".to_owned(), json!("boom"));
        api.insert("pendingAction".to_owned(), json!("restart"));
        let registry = check_round_trip(&input, &additive_defaults());
        let api = &registry.processes["api"];
        assert!(api.extra.is_empty(), "{:?}", api.extra);
        assert_eq!(api.pending_action, Some(PendingAction::Restart));
        assert_eq!(api.config.stop_timeout_ms(), 2500);
    }

    #[test]
    fn entry_requires_id_name_command() {
        for missing in ["id", "name", "command"] {
            let mut input = example();
            input["processes"]["api"].as_object_mut().unwrap().remove(missing);
            let err = serde_json::from_value::<Registry>(input).unwrap_err().to_string();
            assert!(err.contains(missing), "{err}");
        }
    }

    #[test]
    fn entry_rejects_bad_values() {
        for (key, value) in [("state", json!("paused")), ("pid", json!(-1)), ("registeredAt", json!("later"))] {
            let mut input = example();
            input["processes"]["api"][key] = value;
            assert!(serde_json::from_value::<Registry>(input).is_err(), "{key}");
        }
    }

    #[test]
    fn instance_dependent_keys_default_by_the_files_instance() {
        for instance in ["default", "watcher", "other"] {
            let text = json!({"instanceId": instance}).to_string();
            assert_eq!(Registry::from_json(text.as_bytes()).unwrap(), Registry::new_default(instance), "{instance}");
        }
        // Partial sections: only the absent instance-dependent keys take the instance's values.
        let text = json!({
            "instanceId": "watcher",
            "remoteAccess": {"allowRemoteStop": false},
            "alivenessServer": {"enabled": true},
            "partnerDiscovery": {"checkIntervalMs": 1000, "partnerAlivenessPort": 20000}
        })
        .to_string();
        let registry = Registry::from_json(text.as_bytes()).unwrap();
        let mut expected = Registry::new_default("watcher");
        expected.remote_access.allow_remote_stop = false;
        expected.partner_discovery.check_interval_ms = 1000;
        expected.partner_discovery.partner_aliveness_port = Some(20000);
        assert_eq!(registry, expected);
        // Given values, null included, are kept as given.
        let text = json!({"instanceId": "watcher", "remoteAccess": {"remotePort": 1},
                          "partnerDiscovery": {"partnerInstanceId": null}})
        .to_string();
        let registry = Registry::from_json(text.as_bytes()).unwrap();
        assert_eq!(registry.remote_access.remote_port, 1);
        assert_eq!(registry.aliveness_server.port, 19884);
        assert_eq!(registry.partner_discovery.partner_instance_id, None);
        assert_eq!(registry.partner_discovery.partner_aliveness_port, Some(19883));
        // Errors still say where.
        let err = Registry::from_json(b"{\"instanceId\": \"watcher\",\n \"remoteAccess\": {\"remotePort\": \"x\"}}")
            .unwrap_err();
        assert_eq!(err.line(), 2, "{err}");
    }

    #[test]
    fn process_keys_must_be_valid_ids_equal_to_the_entries_ids() {
        let entry = |id: &str| json!({"id": id, "name": "n", "command": "/bin/true"});
        // An entry that cannot run is set aside, kept as it is, and the rest of the registry is read.
        let cases = [
            ("mismatch", entry("other"), "has id \"other\""),
            ("../x", entry("../x"), "invalid id \"../x\""),
            ("", entry(""), "invalid id \"\""),
            (
                "big",
                json!({"id": "big", "name": "n", "command": "/bin/true", "logKeep": 4294967295u64}),
                "Missing or invalid field: logKeep",
            ),
            (
                "odd-state",
                json!({"id": "odd-state", "name": "n", "command": "/bin/true", "state": "sleeping"}),
                "sleeping",
            ),
            (
                "ftp-check",
                json!({"id": "ftp-check", "name": "n", "command": "/bin/true", "alivenessCheck": {"url": "ftp://h/x"}}),
                "alivenessCheck.url",
            ),
        ];
        for (key, bad, expected) in cases {
            let document = json!({"instanceId": "default", "processes": {"good": entry("good"), key: bad.clone()}});
            let text = serde_json::to_string_pretty(&document).unwrap();
            let registry = Registry::from_json(text.as_bytes()).unwrap_or_else(|err| panic!("{key:?}: {err}"));
            assert_eq!(registry.processes.keys().collect::<Vec<_>>(), ["good"], "{key:?}");
            let unusable = &registry.unusable[key];
            assert!(unusable.reason.contains(expected), "{key:?}: {}", unusable.reason);
            assert_eq!(unusable.raw, bad, "{key:?} kept as it is");
            let status = unusable.status(key);
            assert_eq!((status.state, status.enabled, status.autostart), (ProcessState::Failed, false, false));
            assert!(status.last_error.as_deref().is_some_and(|err| err.contains(expected)), "{status:?}");
            // Written back in place, byte for byte the same value.
            let written: Value = serde_json::from_slice(&registry.to_json_pretty().unwrap()).unwrap();
            assert_eq!(written["processes"][key], bad, "{key:?}");
            assert_eq!(written["processes"]["good"]["id"], "good");
            assert_eq!(Registry::from_json(&registry.to_json_pretty().unwrap()).unwrap(), registry, "{key:?}");
        }
        // A new registration under the same id replaces the unusable entry.
        let text = json!({"instanceId": "default", "processes": {"x": {"id": "x", "state": "sleeping"}}}).to_string();
        let mut registry = Registry::from_json(text.as_bytes()).unwrap();
        registry.processes.insert(
            "x".to_owned(),
            ProcessEntry::new(ProcessConfig::new("x", "n", "/bin/true"), Timestamp::now()).into(),
        );
        let written: Value = serde_json::from_slice(&registry.to_json_pretty().unwrap()).unwrap();
        assert_eq!(written["processes"]["x"]["command"], "/bin/true");
        // A file that is not JSON, or whose problem is not an entry, is still refused as a whole.
        let err = Registry::from_json(b"{\"instanceId\": \"default\", \"processes\": {\"a\": ").unwrap_err();
        assert!(err.is_eof(), "{err}");
        let text = json!({"instanceId": 3, "processes": {"odd": {"id": "odd", "state": "sleeping"}}}).to_string();
        assert!(Registry::from_json(text.as_bytes()).is_err());
        let text = r#"{"instanceId": "default", "processes": {"a": {"id": "a", "name": "n", "command": "/bin/true"},
                        "a": {"id": "a", "name": "n", "command": "/bin/true"}}}"#;
        let err = Registry::from_json(text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
        let text = json!({"instanceId": "default", "processes": {"a": entry("a")}}).to_string();
        assert_eq!(Registry::from_json(text.as_bytes()).unwrap().processes["a"].config.id, "a");
        // A stop timeout over the one-hour cap (accepted by earlier versions) is read, and used as one hour.
        let text = json!({"instanceId": "default", "processes": {"slow": {"id": "slow", "name": "n",
                          "command": "/bin/true", "stopTimeoutMs": 86_400_000u64}}})
        .to_string();
        let registry = Registry::from_json(text.as_bytes()).unwrap();
        assert_eq!(registry.processes["slow"].config.stop_timeout_ms(), 3_600_000);
        // The partner's id becomes a process id (and file names): an unusable one is refused, named.
        let text =
            json!({"instanceId": "watcher", "partnerDiscovery": {"partnerInstanceId": "my watcher"}}).to_string();
        let err = Registry::from_json(text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("partnerDiscovery.partnerInstanceId"), "{err}");
    }

    #[test]
    fn registry_defaults_on_read() {
        let registry: Registry = serde_json::from_value(json!({"instanceId": "default"})).unwrap();
        let mut expected = Registry::new_default("other");
        expected.instance_id = "default".to_owned();
        assert_eq!(registry, expected);
        assert_eq!((registry.version, registry.monitor_interval_ms), (1, 5000));
        assert!(serde_json::from_value::<Registry>(json!({"version": 1})).is_err());
        // Partial sub-objects take defaults key by key.
        let registry: Registry =
            serde_json::from_value(json!({"instanceId": "x", "remoteAccess": {"remotePort": 1}})).unwrap();
        assert_eq!(registry.remote_access, RemoteAccessConfig { remote_port: 1, ..RemoteAccessConfig::default() });
    }

    #[test]
    fn all_states_round_trip_in_an_entry() {
        for state in ProcessState::ALL {
            let mut input = example();
            input["processes"]["api"]["state"] = json!(state.as_str());
            let registry = check_round_trip(&input, &additive_defaults());
            assert_eq!(registry.processes["api"].state, state);
        }
    }

    /// The first-start registry of `instance_id`, written as JSON.
    fn check_new_default(instance_id: &str, expected: Value) {
        let registry = Registry::new_default(instance_id);
        assert_eq!(serde_json::to_value(&registry).unwrap(), expected, "{instance_id}");
        assert_eq!(serde_json::from_value::<Registry>(expected).unwrap(), registry);
    }

    fn default_remote_access(remote_port: u16) -> Value {
        json!({
            "startRemoteAccess": true,
            "remotePort": remote_port,
            "bindAddress": "::",
            "trustedHosts": ["localhost", "127.0.0.1", "::1", "0.0.0.0"],
            "allowRemoteRegister": true,
            "allowRemoteDeregister": true,
            "allowRemoteStart": true,
            "allowRemoteStop": true,
            "allowRemoteDisable": true,
            "allowRemoteAutostart": true,
            "allowRemoteMonitorRestart": false,
            "executableWhitelist": [],
            "executableBlacklist": []
        })
    }

    #[test]
    fn first_start_of_default() {
        check_new_default(
            "default",
            json!({
                "version": 1,
                "instanceId": "default",
                "monitorIntervalMs": 5000,
                "standaloneMode": false,
                "partnerDiscovery": {
                    "partnerInstanceId": "watcher",
                    "partnerAlivenessPort": 19884,
                    "partnerStatusUrl": "http://localhost:19884/status",
                    "discoveryOnStartup": false,
                    "startPartnerIfMissing": false,
                    "checkIntervalMs": 3000,
                    "failuresBeforeRestart": 2
                },
                "remoteAccess": default_remote_access(19881),
                "alivenessServer": {"enabled": true, "port": 19883, "bindAddress": "127.0.0.1"},
                "processes": {}
            }),
        );
    }

    #[test]
    fn first_start_of_watcher() {
        check_new_default(
            "watcher",
            json!({
                "version": 1,
                "instanceId": "watcher",
                "monitorIntervalMs": 5000,
                "standaloneMode": false,
                "partnerDiscovery": {
                    "partnerInstanceId": "default",
                    "partnerAlivenessPort": 19883,
                    "partnerStatusUrl": "http://localhost:19883/status",
                    "discoveryOnStartup": true,
                    "startPartnerIfMissing": true,
                    "checkIntervalMs": 3000,
                    "failuresBeforeRestart": 2
                },
                "remoteAccess": default_remote_access(19882),
                "alivenessServer": {"enabled": true, "port": 19884, "bindAddress": "127.0.0.1"},
                "processes": {}
            }),
        );
    }

    #[test]
    fn first_start_of_another_instance() {
        check_new_default(
            "staging",
            json!({
                "version": 1,
                "instanceId": "staging",
                "monitorIntervalMs": 5000,
                "standaloneMode": false,
                "partnerDiscovery": {
                    // Written as null, so that a rewrite keeps "no partner" (absent keys take the instance's
                    // defaults).
                    "partnerInstanceId": null,
                    "partnerAlivenessPort": null,
                    "partnerStatusUrl": null,
                    "discoveryOnStartup": false,
                    "startPartnerIfMissing": false,
                    "checkIntervalMs": 3000,
                    "failuresBeforeRestart": 2
                },
                "remoteAccess": default_remote_access(19881),
                "alivenessServer": {"enabled": true, "port": 19883, "bindAddress": "127.0.0.1"},
                "processes": {}
            }),
        );
    }
}
