//! The keys a stack file may use, taken from the types (`ProcessConfig` and its nested objects), the nearest
//! known key for a typo, and the JSON Schema of the stack file (`process_monitor schema`).
//!
//! The key sets come from the types: a struct's own field list as serde's derive hands it to
//! `deserialize_struct` (for structs without flattened fields), otherwise the keys of a fully populated value
//! serialized. The schema's types and descriptions come from a table here; a key the types have and the table
//! lacks (a field added later) still gets an entry that accepts any value, so the schema never refuses a key
//! the monitor reads.

use serde::de::{DeserializeOwned, Visitor};
use serde::Serialize;
use serde_json::{json, Map, Value};

use pm_core::{AlivenessCheck, ProcessConfig, RestartPolicy, StartupCheck};

/// Keys of the process entry that the monitor sets itself and a stack file may not declare.
pub(crate) const MONITOR_ONLY: &[&str] = &["partner"];

/// The stack file's own key per process (not part of `ProcessConfig`).
pub(crate) const ENV_FILE: &str = "envFile";

/// Top-level keys besides `processes`.
pub(crate) const TOP_LEVEL: &[&str] =
    &["processes", "trustedHosts", "executableWhitelist", "executableBlacklist", "remoteAccess", "standaloneMode"];

/// Keys of `remoteAccess` a stack file may set (the permissions and limits of `PUT /config/remote-access`; the
/// host and executable lists are top-level keys).
pub(crate) const REMOTE_ACCESS: &[&str] = &[
    "startRemoteAccess",
    "allowRemoteRegister",
    "allowRemoteDeregister",
    "allowRemoteStart",
    "allowRemoteStop",
    "allowRemoteDisable",
    "allowRemoteAutostart",
    "allowRemoteMonitorRestart",
    "requireToken",
    "socketUsers",
    "allowedEnvironment",
    "maxUntrustedProcesses",
];

/// Schema type and description of a `remoteAccess` key.
fn describe_remote_access_key(key: &str) -> (Value, &'static str) {
    match key {
        "requireToken" => (json!({"type": "boolean"}), "TCP peers need a bearer token (see docs/authentication.md)"),
        "socketUsers" => (strings(), "Other users allowed on the unix socket"),
        "allowedEnvironment" => (strings(), "The only environment variable names untrusted registrations may set"),
        "maxUntrustedProcesses" => (int(0), "How many processes untrusted peers may have registered at once"),
        _ => (json!({"type": "boolean"}), "A remote-access permission"),
    }
}

/// Where a nested object sits and the keys it takes.
pub(crate) struct Nested {
    /// Path of keys from the process object, e.g. `["alivenessCheck", "startupCheck"]`.
    pub path: &'static [&'static str],
    /// Its known keys (camelCase), for hints and the schema.
    pub keys: Vec<String>,
    /// Whether a key is a field of the type (the check a file's keys go through).
    pub is_field: fn(&str) -> bool,
}

/// The known keys of a process table (camelCase, without the monitor-only ones, with `envFile`).
pub(crate) fn process_keys() -> Vec<String> {
    let mut keys = struct_keys(&ProcessConfig::new("a", "a", "a"));
    keys.retain(|key| !MONITOR_ONLY.contains(&key.as_str()));
    keys.push(ENV_FILE.to_owned());
    keys
}

/// The nested objects of a process table whose keys are known.
///
/// These types keep unknown keys (a flattened `extra` map), so serde does not list their fields: the keys are
/// those of a populated value serialized, plus the described keys that [`probe_field`] confirms (fields
/// left out when serialized at their defaults).
pub(crate) fn nested() -> Vec<Nested> {
    let mut check = AlivenessCheck::new("http://localhost/health");
    check.status_url = Some(String::new());
    check.startup_check = Some(StartupCheck::default());
    fn policy_field(key: &str) -> bool {
        probe_field::<RestartPolicy>(json!({}), key)
    }
    fn check_field(key: &str) -> bool {
        probe_field::<AlivenessCheck>(json!({"url": "http://localhost/health"}), key)
    }
    fn startup_field(key: &str) -> bool {
        probe_field::<StartupCheck>(json!({}), key)
    }
    let with_described = |mut keys: Vec<String>, is_field: fn(&str) -> bool| {
        for key in DESCRIBED {
            if !keys.iter().any(|it| it == key) && is_field(key) {
                keys.push((*key).to_owned());
            }
        }
        keys
    };
    vec![
        Nested {
            path: &["restartPolicy"],
            keys: with_described(struct_keys(&RestartPolicy::default()), policy_field),
            is_field: policy_field,
        },
        Nested {
            path: &["alivenessCheck"],
            keys: with_described(struct_keys(&check), check_field),
            is_field: check_field,
        },
        Nested {
            path: &["alivenessCheck", "startupCheck"],
            keys: with_described(struct_keys(&StartupCheck::default()), startup_field),
            is_field: startup_field,
        },
    ]
}

/// Whether `key` is a field of `T` (a type that keeps unknown keys): an unknown key comes back unchanged when
/// the value is read and written again, while a field refuses the probe value or turns it into its own type.
/// `base` holds the fields `T` requires.
fn probe_field<T: Serialize + DeserializeOwned>(base: Value, key: &str) -> bool {
    let probe = json!({"__pm_stack_probe__": [1]});
    let Value::Object(mut map) = base else { return false };
    map.insert(key.to_owned(), probe.clone());
    match serde_json::from_value::<T>(Value::Object(map)) {
        Err(_) => true,
        Ok(value) => serde_json::to_value(value).ok().and_then(|value| value.get(key).cloned()) != Some(probe),
    }
}

/// The field names of `T`: from serde's derive when it lists them, otherwise the keys of `sample` serialized.
fn struct_keys<T: Serialize + DeserializeOwned>(sample: &T) -> Vec<String> {
    if let Some(fields) = declared_fields::<T>() {
        return fields.iter().map(|field| (*field).to_owned()).collect();
    }
    match serde_json::to_value(sample) {
        Ok(Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The field list serde's derive passes to `deserialize_struct` (`None` for a struct with flattened fields,
/// which is read as a map).
fn declared_fields<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut fields = None;
    let _ = T::deserialize(FieldCapture(&mut fields));
    fields
}

/// A deserializer that only records the field list it is asked for, then fails.
struct FieldCapture<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> serde::Deserializer<'de> for FieldCapture<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("field names only"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(serde::de::Error::custom("field names only"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// `working_directory` -> `workingDirectory`.
pub(crate) fn camel(key: &str) -> String {
    let mut res = String::with_capacity(key.len());
    let mut upper = false;
    for ch in key.chars() {
        if ch == '_' {
            upper = !res.is_empty();
        } else if upper {
            res.extend(ch.to_uppercase());
            upper = false;
        } else {
            res.push(ch);
        }
    }
    res
}

/// `workingDirectory` -> `working_directory`.
pub(crate) fn snake(key: &str) -> String {
    let mut res = String::with_capacity(key.len() + 4);
    for ch in key.chars() {
        if ch.is_ascii_uppercase() {
            res.push('_');
            res.push(ch.to_ascii_lowercase());
        } else {
            res.push(ch);
        }
    }
    res
}

/// The known key closest to `key` (edit distance, compared in the style `key` is written in).
pub(crate) fn nearest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    let snake_style = key.contains('_');
    known
        .iter()
        .map(|candidate| {
            let written = if snake_style { snake(candidate) } else { candidate.clone() };
            (distance(&key.to_lowercase(), &written.to_lowercase()), candidate)
        })
        .min_by_key(|(dist, _)| *dist)
        .map(|(_, candidate)| candidate.as_str())
}

/// The name to show for a known key in the style of what the user wrote.
pub(crate) fn styled(known: &str, written: &str) -> String {
    if written.contains('_') {
        snake(known)
    } else {
        known.to_owned()
    }
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            prev = here;
        }
    }
    row[b.len()]
}

/// Every key [`describe`] knows.
const DESCRIBED: &[&str] = &[
    "id",
    "name",
    "command",
    "args",
    "workingDirectory",
    "environment",
    "envFile",
    "autostart",
    "enabled",
    "isRemote",
    "restartPolicy",
    "alivenessCheck",
    "stopTimeoutMs",
    "logMaxBytes",
    "logKeep",
    "keepRuns",
    "maxAttempts",
    "backoffIntervalsMs",
    "resetAfterMs",
    "retryIndefinitely",
    "indefiniteIntervalMs",
    "url",
    "statusUrl",
    "intervalMs",
    "timeoutMs",
    "consecutiveFailuresRequired",
    "startupCheck",
    "initialDelayMs",
    "checkIntervalMs",
    "failAction",
    "trustedHosts",
    "executableWhitelist",
    "executableBlacklist",
    "remoteAccess",
    "standaloneMode",
    "processes",
    "dependsOn",
    "dependencyTimeoutMs",
    "restartDependents",
    "restartOn",
    "type",
    "host",
    "port",
];

/// Type and description of a key, for the schema. Keys the types have that are missing here accept any value.
fn describe(key: &str) -> Option<(Value, &'static str)> {
    describe_process_key(key)
        .or_else(|| describe_restart_key(key))
        .or_else(|| describe_check_key(key))
        .or_else(|| describe_dependency_key(key))
        .or_else(|| describe_settings_key(key))
}

/// An integer schema with a minimum.
fn int(min: u64) -> Value {
    json!({"type": "integer", "minimum": min})
}

/// A list-of-strings schema.
fn strings() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}

/// A key of a process table: what runs, how, and its logs.
fn describe_process_key(key: &str) -> Option<(Value, &'static str)> {
    Some(match key {
        "id" => (
            json!({"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"}),
            "Unique id (the table's name; may be left out)",
        ),
        "name" => (json!({"type": "string"}), "Human-readable name (the id when left out)"),
        "command" => (
            json!({"type": "string"}),
            "The executable: a path, or a bare name looked up on PATH; never run through a shell",
        ),
        "args" => (strings(), "Arguments, passed verbatim"),
        "workingDirectory" => (
            json!({"type": "string"}),
            "Working directory of the child (relative paths are taken against the stack file's folder)",
        ),
        "environment" => (
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
            "Variables set on top of the monitor's environment (they win over envFile)",
        ),
        "envFile" => (
            json!({"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
            "dotenv file(s), relative to the stack file, merged into environment",
        ),
        "autostart" => (json!({"type": "boolean"}), "Start with the monitor (and when registered)"),
        "enabled" => (json!({"type": "boolean"}), "A disabled process is never started"),
        "isRemote" => {
            (json!({"type": "boolean"}), "Treat as registered through the remote API (untrusted hosts may act on it)")
        }
        "restartPolicy" => (json!({"type": "object"}), "How crashes are retried"),
        "alivenessCheck" => (json!({"type": "object"}), "HTTP health check of the running process"),
        "stopTimeoutMs" => (int(0), "SIGTERM to SIGKILL grace in ms (default 10000)"),
        "logMaxBytes" => (int(1), "Rotate stdout.log/stderr.log past this size"),
        "logKeep" => {
            (json!({"type": "integer", "minimum": 0, "maximum": 100}), "Rotated log generations kept (default 3)")
        }
        "keepRuns" => (int(1), "Run folders kept for this process"),
        _ => return None,
    })
}

/// A key of `restartPolicy`, or `restartOn`.
fn describe_restart_key(key: &str) -> Option<(Value, &'static str)> {
    Some(match key {
        "maxAttempts" => (int(0), "Attempts before giving up"),
        "backoffIntervalsMs" => (
            json!({"type": "array", "items": {"type": "integer", "minimum": 0}}),
            "Delay before restart attempt k is the k-th entry (the last one repeats)",
        ),
        "resetAfterMs" => (int(0), "Running this long resets the attempt counter"),
        "retryIndefinitely" => {
            (json!({"type": "boolean"}), "Keep retrying every indefiniteIntervalMs once the attempts are used up")
        }
        "indefiniteIntervalMs" => (int(0), "Retry interval in indefinite mode"),
        "restartOn" => {
            (json!({"enum": ["always", "failure", "never"]}), "Which exits lead to a restart (default always)")
        }
        _ => return None,
    })
}

/// A key of `alivenessCheck` or its `startupCheck`.
fn describe_check_key(key: &str) -> Option<(Value, &'static str)> {
    Some(match key {
        "url" => (json!({"type": "string", "pattern": "^http://"}), "Health URL; a 2xx answer passes"),
        "statusUrl" => (json!({"type": "string"}), "Optional URL of a richer status document"),
        "intervalMs" => (int(1), "Time between checks"),
        "timeoutMs" => (int(1), "Time allowed for one check"),
        "consecutiveFailuresRequired" => {
            (int(1), "Failures in a row before the process is killed and handled as a crash")
        }
        "startupCheck" => (json!({"type": "object"}), "Checks right after a start"),
        "initialDelayMs" => (int(0), "Wait before the first startup check"),
        "checkIntervalMs" => (int(1), "Time between startup checks"),
        "failAction" => (json!({"enum": ["restart", "disable", "fail"]}), "What a failed startup leads to"),
        "type" => (json!({"enum": ["http", "tcp", "exec"]}), "How the check probes (default http)"),
        "host" => (json!({"type": "string"}), "Host a tcp probe connects to (default 127.0.0.1)"),
        "port" => (json!({"type": "integer", "minimum": 1, "maximum": 65535}), "Port a tcp probe connects to"),
        _ => return None,
    })
}

/// A key of the dependencies between processes.
fn describe_dependency_key(key: &str) -> Option<(Value, &'static str)> {
    Some(match key {
        // Keys of the dependencies issue (#14); described here ahead of it, used once the types have them.
        "dependsOn" => (
            json!({"type": "object", "additionalProperties": {"enum": ["started", "healthy", "completedSuccessfully"]}}),
            "Processes this one waits for before it starts, each with its condition",
        ),
        "dependencyTimeoutMs" => (int(1), "How long a start waits for dependsOn (default 60000)"),
        "restartDependents" => {
            (json!({"type": "boolean"}), "Restart the running processes that depend on this one after it restarts")
        }
        _ => return None,
    })
}

/// A key of the monitor settings, or `processes`.
fn describe_settings_key(key: &str) -> Option<(Value, &'static str)> {
    Some(match key {
        "trustedHosts" => (strings(), "Peers that bypass the remote-access permissions"),
        "executableWhitelist" => (strings(), "Executables untrusted peers may register (glob patterns)"),
        "executableBlacklist" => (strings(), "Executables untrusted peers may not register (glob patterns)"),
        "remoteAccess" => (
            json!({"type": "object"}),
            "The allowRemote* permissions, startRemoteAccess, requireToken, socketUsers, allowedEnvironment and \
             maxUntrustedProcesses",
        ),
        "standaloneMode" => (json!({"type": "boolean"}), "No partner (watcher) supervision"),
        "processes" => (json!({"type": "object"}), "One table per process, named by its id"),

        _ => return None,
    })
}

/// An object schema over `keys` (each also under its snake_case name), with defaults from `defaults`.
fn object_schema(keys: &[String], defaults: &Value, children: &[(&str, Value)]) -> Value {
    let mut properties = Map::new();
    for key in keys {
        let mut schema = match children.iter().find(|(name, _)| name == key) {
            Some((_, child)) => child.clone(),
            None => describe(key).map(|(schema, _)| schema).unwrap_or_else(|| json!({})),
        };
        let description = describe(key).map(|(_, text)| text).unwrap_or("See docs/stack-file.md");
        schema["description"] = Value::String(description.to_owned());
        if let Some(default) = defaults.get(key) {
            schema["default"] = default.clone();
        }
        let snake_name = snake(key);
        if snake_name != *key {
            let mut alias = schema.clone();
            alias["description"] = Value::String(format!("{description} (alias of {key})"));
            properties.insert(snake_name, alias);
        }
        properties.insert(key.clone(), schema);
    }
    json!({"type": "object", "properties": properties, "additionalProperties": false})
}

/// The JSON Schema (draft-07) of a stack file.
pub(crate) fn schema() -> Value {
    let nested = nested();
    let keys_of =
        |path: &[&str]| nested.iter().find(|it| it.path == path).map(|it| it.keys.clone()).unwrap_or_default();
    let startup = object_schema(&keys_of(&["alivenessCheck", "startupCheck"]), &json_of(&StartupCheck::default()), &[]);
    let mut check = object_schema(
        &keys_of(&["alivenessCheck"]),
        &json_of(&AlivenessCheck::new("http://localhost/health")),
        &[("startupCheck", startup)],
    );
    // `url` is needed by the http probe only (the default type); tcp and exec probes have none.
    check["if"] = json!({"properties": {"type": {"enum": ["tcp", "exec"]}}, "required": ["type"]});
    check["else"] = json!({"required": ["url"]});
    let policy = object_schema(&keys_of(&["restartPolicy"]), &json_of(&RestartPolicy::default()), &[]);
    let mut defaults = json_of(&ProcessConfig::new("a", "a", "a"));
    if let Value::Object(map) = &mut defaults {
        for key in ["id", "name", "command"] {
            map.remove(key);
        }
    }
    let mut process =
        object_schema(&process_keys(), &defaults, &[("restartPolicy", policy), ("alivenessCheck", check)]);
    process["required"] = json!(["command"]);
    let remote: Vec<String> = REMOTE_ACCESS.iter().map(|key| (*key).to_owned()).collect();
    let mut remote_access = object_schema(&remote, &Value::Null, &[]);
    for key in REMOTE_ACCESS {
        let (schema, description) = describe_remote_access_key(key);
        for (name, text) in
            [((*key).to_owned(), description.to_owned()), (snake(key), format!("{description} (alias of {key})"))]
        {
            let mut entry = schema.clone();
            entry["description"] = Value::String(text);
            remote_access["properties"][name] = entry;
        }
    }
    let processes = json!({
        "type": "object",
        "propertyNames": {"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
        "additionalProperties": process,
    });
    let top: Vec<String> = TOP_LEVEL.iter().map(|key| (*key).to_owned()).collect();
    let mut res = object_schema(&top, &Value::Null, &[("processes", processes), ("remoteAccess", remote_access)]);
    res["properties"]["$schema"] = json!({"type": "string", "description": "This schema's location (JSON files)"});
    res["$schema"] = json!("http://json-schema.org/draft-07/schema#");
    res["title"] = json!("ProcessMonitor stack file");
    res["description"] = json!("Processes declared once; `process_monitor apply -f FILE` makes the registry match");
    res
}

fn json_of<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_types() {
        let keys = process_keys();
        for key in [
            "id",
            "name",
            "command",
            "args",
            "workingDirectory",
            "environment",
            "autostart",
            "enabled",
            "isRemote",
            "restartPolicy",
            "alivenessCheck",
            "stopTimeoutMs",
            "logMaxBytes",
            "logKeep",
            "keepRuns",
            "envFile",
        ] {
            assert!(keys.iter().any(|it| it == key), "{key} missing from {keys:?}");
        }
        assert!(!keys.iter().any(|it| it == "partner"));
        let nested = nested();
        assert!(nested[0].keys.iter().any(|key| key == "backoffIntervalsMs"), "{:?}", nested[0].keys);
        assert!(nested[1].keys.iter().any(|key| key == "statusUrl"), "{:?}", nested[1].keys);
        assert!(nested[2].keys.iter().any(|key| key == "failAction"), "{:?}", nested[2].keys);
        assert!(nested.iter().all(|it| !it.keys.iter().any(|key| key == "extra")));
    }

    #[test]
    fn probing_finds_fields_left_out_when_serialized() {
        let nested = nested();
        let check = &nested[1];
        assert!((check.is_field)("statusUrl") && (check.is_field)("startupCheck") && (check.is_field)("url"));
        assert!(!(check.is_field)("statusUrl2") && !(check.is_field)("extra"));
        assert!((nested[0].is_field)("maxAttempts") && !(nested[0].is_field)("maxAttempt"));
        assert!((nested[2].is_field)("failAction") && !(nested[2].is_field)("fail_action"));
        for name in DESCRIBED {
            assert!(describe(name).is_some(), "{name} is listed but not described");
        }
    }

    #[test]
    fn keys_of_the_guide_are_described() {
        // A field added to the types later without a description still works (a bare entry in the schema), so
        // only the guide's keys are held to it here.
        let mut all = process_keys();
        for it in nested() {
            all.extend(it.keys);
        }
        for key in &all {
            assert!(describe(key).is_some() || !GUIDE_KEYS.contains(&key.as_str()), "{key} has no description");
        }
        for key in GUIDE_KEYS {
            assert!(all.iter().any(|it| it == key), "{key} is not among the keys taken from the types");
        }
    }

    const GUIDE_KEYS: &[&str] = &[
        "id",
        "name",
        "command",
        "args",
        "workingDirectory",
        "environment",
        "autostart",
        "enabled",
        "isRemote",
        "restartPolicy",
        "alivenessCheck",
        "maxAttempts",
        "backoffIntervalsMs",
        "resetAfterMs",
        "retryIndefinitely",
        "indefiniteIntervalMs",
        "url",
        "statusUrl",
        "intervalMs",
        "timeoutMs",
        "consecutiveFailuresRequired",
        "startupCheck",
        "initialDelayMs",
        "checkIntervalMs",
        "failAction",
    ];

    #[test]
    fn case_conversion_and_nearest() {
        assert_eq!(camel("working_directory"), "workingDirectory");
        assert_eq!(camel("command"), "command");
        assert_eq!(snake("consecutiveFailuresRequired"), "consecutive_failures_required");
        let keys = process_keys();
        assert_eq!(nearest("comand", &keys), Some("command"));
        assert_eq!(nearest("working_dir", &keys), Some("workingDirectory"));
        assert_eq!(styled("workingDirectory", "working_dir"), "working_directory");
        assert_eq!(nearest("enviroment", &keys), Some("environment"));
    }

    #[test]
    fn schema_lists_every_key_in_both_spellings() {
        let schema = schema();
        let process = &schema["properties"]["processes"]["additionalProperties"];
        for key in process_keys() {
            assert!(process["properties"].get(&key).is_some(), "{key}");
            assert!(process["properties"].get(snake(&key)).is_some(), "{key}");
        }
        assert_eq!(process["properties"]["stopTimeoutMs"]["type"], "integer");
        assert_eq!(process["properties"]["autostart"]["default"], true);
        let startup = &process["properties"]["alivenessCheck"]["properties"]["startupCheck"];
        assert_eq!(startup["properties"]["failAction"]["enum"], json!(["restart", "disable", "fail"]));
        assert_eq!(schema["properties"]["remoteAccess"]["properties"]["allow_remote_start"]["type"], "boolean");
        let access = &schema["properties"]["remoteAccess"]["properties"];
        assert_eq!(access["allowedEnvironment"]["type"], "array");
        assert_eq!(access["max_untrusted_processes"]["type"], "integer");
        assert_eq!(access["requireToken"]["type"], "boolean");
        // A tcp or exec probe has no url: only an http one (the default type) needs it.
        let check = &process["properties"]["alivenessCheck"];
        assert_eq!(check.get("required"), None);
        assert_eq!(check["else"]["required"], json!(["url"]));
        assert_eq!(check["if"]["properties"]["type"]["enum"], json!(["tcp", "exec"]));
    }
}
