//! Registry entries that cannot run (issue 12, item 11): one such entry no longer makes the whole registry
//! unreadable.
//!
//! An entry of `processes` that does not parse (an unknown `state`, a field of the wrong type), that
//! [`ProcessConfig::validate`](crate::ProcessConfig::validate) refuses (a check URL scheme that is not supported,
//! `logKeep` over 100, ...), or whose key is not a process id the file system can take or differs from its `id`,
//! is set aside as an [`UnusableEntry`]: kept as it is on disk, the same JSON value (every save writes it back in its
//! place), reported with `state: failed` and a `lastError` saying why, and never run. The rest of the registry works.
//! A file that is not JSON at all, or whose top level is wrong, is still refused as a whole.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::{ProcessConfig, ProcessEntry, ProcessState, ProcessStatus, Registry, Timestamp};

/// An entry of `processes` that cannot run, kept as it is on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct UnusableEntry {
    /// The entry exactly as the file has it.
    pub raw: Value,
    /// Why it cannot run.
    pub reason: String,
}

impl UnusableEntry {
    /// How the entry stored under `key` is reported: `failed`, disabled, with `lastError` saying why it cannot run.
    pub fn status(&self, key: &str) -> ProcessStatus {
        let text = |field: &str| self.raw.get(field).and_then(Value::as_str).unwrap_or(key).to_owned();
        let mut config = ProcessConfig::new(key, &text("name"), &text("command"));
        config.enabled = false;
        config.autostart = false;
        let mut entry = ProcessEntry::new(config, Timestamp::now());
        entry.registered_at = None;
        entry.state = ProcessState::Failed;
        entry.last_error = Some(format!("this registry entry cannot run and is left as it is: {}", self.reason));
        entry.status()
    }
}

/// Why the entry `value` stored under `key` cannot run, `None` when it can.
fn problem(key: &str, value: &Value) -> Option<String> {
    if let Err(err) = crate::validate_process_id(key) {
        return Some(err.to_string());
    }
    let entry: ProcessEntry = match serde_json::from_value(value.clone()) {
        Ok(entry) => entry,
        Err(err) => return Some(err.to_string()),
    };
    if entry.config.id != key {
        return Some(format!(
            "the entry under {key:?} has id {:?}; the key and the id must be the same",
            entry.config.id
        ));
    }
    entry.config.validate().err().map(|err| err.to_string())
}

/// The lenient second try of [`Registry::from_json`] after the strict parse failed with `strict`: the unusable
/// entries are set aside and the rest parsed strictly again. Answers `strict` when the file is not JSON, when no
/// entry is unusable (the problem is elsewhere), or when the rest still does not parse.
pub(crate) fn parse_setting_aside(bytes: &[u8], strict: serde_json::Error) -> Result<Registry, serde_json::Error> {
    let Ok(Value::Object(mut document)) = serde_json::from_slice::<Value>(bytes) else { return Err(strict) };
    let Some(Value::Object(processes)) = document.remove("processes") else { return Err(strict) };
    let mut usable = Map::new();
    let mut unusable = BTreeMap::new();
    for (key, value) in processes {
        match problem(&key, &value) {
            Some(reason) => {
                unusable.insert(key, UnusableEntry { raw: value, reason });
            }
            None => {
                usable.insert(key, value);
            }
        }
    }
    if unusable.is_empty() {
        return Err(strict);
    }
    document.insert("processes".to_owned(), Value::Object(usable));
    let Ok(rest) = serde_json::to_vec(&Value::Object(document)) else { return Err(strict) };
    let mut registry = match Registry::from_json_strict(&rest) {
        Ok(registry) => registry,
        Err(_) => return Err(strict),
    };
    registry.unusable = unusable;
    Ok(registry)
}

/// The registry as the file's JSON: [`Registry`]'s own fields plus the unusable entries back in `processes`
/// (an entry of the same id in `processes`, a new registration, replaces an unusable one).
pub(crate) fn to_value(registry: &Registry) -> Result<Value, serde_json::Error> {
    let mut value = serde_json::to_value(registry)?;
    if let Some(Value::Object(processes)) = value.get_mut("processes") {
        for (key, entry) in &registry.unusable {
            if !registry.processes.contains_key(key) {
                processes.insert(key.clone(), entry.raw.clone());
            }
        }
    }
    Ok(value)
}
