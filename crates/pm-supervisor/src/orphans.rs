//! Finding children of an earlier monitor that the registry does not know about.
//!
//! Every child is started with `PROCESS_MONITOR_OWNER` (the monitor's folder and instance id) and
//! `PROCESS_MONITOR_PROCESS_ID` in its environment, and leads its own process group. A monitor killed between
//! spawning a child and storing its PID leaves such a child behind; at start-up the monitor looks for group
//! leaders carrying its owner key, so it adopts them instead of starting a second copy.

use std::collections::HashMap;

/// Environment variable naming the monitor that started a process.
pub(crate) const OWNER_VAR: &str = "PROCESS_MONITOR_OWNER";
/// Environment variable naming the managed process id.
pub(crate) const PROCESS_VAR: &str = "PROCESS_MONITOR_PROCESS_ID";

/// The owner key of a monitor: its folder and instance id.
pub(crate) fn owner_key(paths: &pm_registry::Paths) -> String {
    format!("{}#{}", paths.root().display(), paths.instance_id())
}

/// A process found at start-up that a monitor of this folder and instance started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// Its PID (it leads its process group).
    pub(crate) pid: u32,
    /// Its start time (clock ticks since boot).
    pub(crate) start_time: Option<u64>,
    /// Its command line, NUL-separated as in `/proc/{pid}/cmdline`.
    pub(crate) cmdline: Vec<u8>,
}

/// Live process-group leaders started by the monitor `owner`, by process id, earliest started first.
///
/// A managed process's own descendants inherit its environment; those that lead a group of their own (a helper
/// started with `setsid`, a detached worker) are not copies of it. A leader whose parent carries the same
/// process id is such a descendant and is left out.
#[cfg(target_os = "linux")]
pub(crate) fn scan(owner: &str) -> HashMap<String, Vec<Found>> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return HashMap::new() };
    let owner_entry = format!("{OWNER_VAR}={owner}");
    let id_prefix = format!("{PROCESS_VAR}=");
    // Every process carrying the owner key, with its process id.
    let mut carriers: HashMap<u32, String> = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let mut owned = false;
        let mut id = None;
        for var in environ.split(|b| *b == 0) {
            if var == owner_entry.as_bytes() {
                owned = true;
            } else if let Some(value) = var.strip_prefix(id_prefix.as_bytes()) {
                id = Some(String::from_utf8_lossy(value).into_owned());
            }
        }
        if let (true, Some(id)) = (owned, id) {
            carriers.insert(pid, id);
        }
    }
    let mut res: HashMap<String, Vec<Found>> = HashMap::new();
    for (&pid, id) in &carriers {
        let Some(family) = pm_registry::pid::family(pid) else { continue };
        let descendant = carriers.get(&family.ppid).is_some_and(|parent_id| parent_id == id);
        if family.pgrp != pid || descendant {
            continue;
        }
        let found = Found { pid, start_time: Some(family.start_time), cmdline: cmdline(pid) };
        res.entry(id.clone()).or_default().push(found);
    }
    for found in res.values_mut() {
        found.sort_by_key(|found| (found.start_time.unwrap_or(u64::MAX), found.pid));
    }
    res
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn scan(_owner: &str) -> HashMap<String, Vec<Found>> {
    HashMap::new()
}

/// The command line of a live process (empty when it cannot be read).
pub(crate) fn cmdline(pid: u32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
}
