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

/// Live process-group leaders started by the monitor `owner`, by process id: (PID, start time).
#[cfg(target_os = "linux")]
pub(crate) fn scan(owner: &str) -> HashMap<String, Vec<(u32, Option<u64>)>> {
    let mut res: HashMap<String, Vec<(u32, Option<u64>)>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return res };
    let owner_entry = format!("{OWNER_VAR}={owner}");
    let id_prefix = format!("{PROCESS_VAR}=");
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
        let (true, Some(id)) = (owned, id) else { continue };
        if !is_group_leader(pid) || !pm_registry::pid::alive(pid) {
            continue;
        }
        res.entry(id).or_default().push((pid, pm_registry::pid::start_time(pid)));
    }
    res
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn scan(_owner: &str) -> HashMap<String, Vec<(u32, Option<u64>)>> {
    HashMap::new()
}

#[cfg(target_os = "linux")]
fn is_group_leader(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let Some(close) = stat.rfind(')') else { return false };
    // After the command: state, ppid, pgrp.
    stat[close + 1..].split_whitespace().nth(2).and_then(|pgrp| pgrp.parse::<u32>().ok()) == Some(pid)
}
