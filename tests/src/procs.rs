//! Looking at processes through `/proc`: states, parents, process groups, command lines, memory and open files.

use std::collections::{BTreeMap, BTreeSet};

/// One process as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Its PID.
    pub pid: u32,
    /// Its parent's PID.
    pub ppid: u32,
    /// Its process group.
    pub pgrp: u32,
    /// One-letter state (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Its argv (empty for zombies and kernel threads).
    pub args: Vec<String>,
}

impl ProcInfo {
    /// Whether it is a zombie (exited, not reaped yet).
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }

    /// Whether it is alive and leads its process group, as every managed process does (see [`with_marker`]).
    pub fn is_copy(&self) -> bool {
        !self.is_zombie() && self.pid == self.pgrp
    }

    /// Whether one of its arguments is exactly `needle`.
    pub fn has_arg(&self, needle: &str) -> bool {
        self.args.iter().any(|arg| arg == needle)
    }
}

/// Reads `/proc/{pid}`; `None` when the process is gone.
pub fn read(pid: u32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = stat.rsplit_once(')')?;
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args = cmdline
        .split(|byte| *byte == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    Some(ProcInfo { pid, ppid, pgrp, state, args })
}

/// Every process of the machine (those that vanish while being read are left out).
pub fn scan() -> Vec<ProcInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries.flatten().filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok()).filter_map(read).collect()
}

/// The processes below `roots` in `all` by parent links (the roots themselves excluded).
pub fn descendants(all: &[ProcInfo], roots: &[u32]) -> Vec<ProcInfo> {
    let mut children: BTreeMap<u32, Vec<&ProcInfo>> = BTreeMap::new();
    for info in all {
        children.entry(info.ppid).or_default().push(info);
    }
    let mut seen = BTreeSet::new();
    let mut res = Vec::new();
    let mut todo: Vec<u32> = roots.to_vec();
    while let Some(pid) = todo.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            if seen.insert(child.pid) {
                res.push((*child).clone());
                todo.push(child.pid);
            }
        }
    }
    res
}

/// Live (not zombie) processes with `marker` among their arguments that lead their process group, by PID.
///
/// A managed process leads a group of its own. Counting only leaders leaves out the moment when it has forked
/// a child that has not called `exec` yet: that child still shows its parent's argv, marker included.
pub fn with_marker(all: &[ProcInfo], marker: &str) -> Vec<u32> {
    all.iter().filter(|info| info.is_copy() && info.has_arg(marker)).map(|info| info.pid).collect()
}

/// Resident memory of a process in KiB (`VmRSS`), `None` when it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Number of open file descriptors of a process, `None` when it is gone.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Number of threads of a process, `None` when it is gone.
pub fn thread_count(pid: u32) -> Option<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("Threads:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Sends `signal` to a process (a positive PID) or a process group (a negative one); false when it failed.
pub fn signal(target: i32, signal: i32) -> bool {
    if target == 0 || target == 1 || target == -1 {
        return false;
    }
    // SAFETY: kill(2) on processes and groups the suites started; it has no memory-safety preconditions.
    unsafe { libc::kill(target, signal) == 0 }
}
