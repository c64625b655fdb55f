//! Containment: a cgroup v2 per managed process where the host lets the monitor write to the cgroup tree, else
//! process groups plus a child subreaper and the owner key every child carries in its environment.
//!
//! Layout: `<the monitor's cgroup>/pm-<instance>-<hash of the home folder>/<process id>/`. The hash keeps the
//! monitors of different homes (tests run many at once) from ever sharing a cgroup; a monitor only touches the
//! cgroups below its own `pm-…` folder. A child is moved into its cgroup between fork and exec (a write of `0`
//! to the cgroup's `cgroup.procs`, opened before the fork), so nothing it forks can escape it.
//!
//! The test-only setting `PROCESS_MONITOR_CGROUP_ROOT` names the folder in which the `pm-…` folder is made
//! instead of the monitor's own cgroup (pointing it at a folder that is not a cgroup v2 file system forces the
//! process-group fallback).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Environment variable (for tests) naming the folder that holds the monitor's `pm-…` cgroup.
pub const ROOT_VAR: &str = "PROCESS_MONITOR_CGROUP_ROOT";

/// `statfs` magic of a cgroup v2 file system.
const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;

/// The controllers the per-process options use.
const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// How the monitor contains its processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Containment {
    /// A cgroup per process below `base`.
    Cgroup {
        /// The monitor's `pm-<instance>-<hash>` folder.
        base: PathBuf,
        /// Controllers enabled for the per-process cgroups (of `memory`, `cpu`, `pids`).
        controllers: Vec<String>,
        /// Why, in words.
        reason: String,
    },
    /// Process groups, a child subreaper and the owner key.
    ProcessGroup {
        /// Why, in words.
        reason: String,
    },
}

impl Containment {
    /// The wire name: `cgroup` or `process-group`.
    pub fn mode(&self) -> &'static str {
        match self {
            Containment::Cgroup { .. } => "cgroup",
            Containment::ProcessGroup { .. } => "process-group",
        }
    }

    /// Why this containment is in force.
    pub fn reason(&self) -> &str {
        match self {
            Containment::Cgroup { reason, .. } | Containment::ProcessGroup { reason } => reason,
        }
    }

    /// The cgroup folder of process `id` (which may not exist yet); `None` without cgroup containment.
    pub(crate) fn dir(&self, id: &str) -> Option<PathBuf> {
        match self {
            Containment::Cgroup { base, .. } => Some(base.join(id)),
            Containment::ProcessGroup { .. } => None,
        }
    }

    /// The base folder, with cgroup containment.
    pub(crate) fn base(&self) -> Option<&Path> {
        match self {
            Containment::Cgroup { base, .. } => Some(base),
            Containment::ProcessGroup { .. } => None,
        }
    }

    /// Whether the per-process cgroups have `memory.events` (the memory controller is enabled for them): without
    /// it a start looks for no earlier OOM kills and an exit for none (one failed open each; issue 19).
    pub(crate) fn memory_events(&self) -> bool {
        self.has("memory")
    }

    fn has(&self, controller: &str) -> bool {
        matches!(self, Containment::Cgroup { controllers, .. } if controllers.iter().any(|c| c == controller))
    }

    /// Refuses limits whose controller is not available, naming it.
    pub fn check_limits(&self, config: &pm_core::ProcessConfig) -> Result<(), pm_core::Error> {
        let wanted = [
            ("memoryMaxBytes", "memory", config.memory_max_bytes.is_some()),
            ("cpuMaxPercent", "cpu", config.cpu_max_percent.is_some()),
            ("pidsMax", "pids", config.pids_max.is_some()),
        ];
        for (key, controller, set) in wanted {
            if set && config.partner {
                return Err(pm_core::Error::InvalidField(format!("{key} (not for a partner monitor)")));
            }
            if set && !self.has(controller) {
                let why = match self {
                    Containment::Cgroup { .. } => "is not available in this monitor's cgroup v2 tree".to_owned(),
                    Containment::ProcessGroup { reason } => {
                        format!("is not available: no cgroup containment ({reason})")
                    }
                };
                return Err(pm_core::Error::InvalidField(format!(
                    "{key} needs the cgroup v2 {controller} controller, which {why}"
                )));
            }
        }
        Ok(())
    }

    /// Finds the cgroup v2 tree and makes the monitor's folder in it, or says why the fallback is in force.
    pub fn detect(paths: &pm_registry::Paths) -> Containment {
        #[cfg(target_os = "linux")]
        {
            let parent = match parent_dir() {
                Ok(parent) => parent,
                Err(reason) => return Containment::ProcessGroup { reason },
            };
            let base = parent.join(base_name(paths.root(), paths.instance_id()));
            match make_base(&parent, &base) {
                Ok(controllers) => {
                    let reason = if std::env::var_os(ROOT_VAR).is_some() {
                        format!("cgroup v2 at {} ({ROOT_VAR})", base.display())
                    } else {
                        format!("cgroup v2 at {}", base.display())
                    };
                    Containment::Cgroup { base, controllers, reason }
                }
                Err(reason) => Containment::ProcessGroup { reason },
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = paths;
            Containment::ProcessGroup { reason: "cgroups are Linux only".to_owned() }
        }
    }
}

impl Containment {
    /// What [`Containment::detect`] would find, without making anything (for a local client that refuses
    /// limits up front): the controllers are those the monitor's folder has, or else could get.
    pub fn probe(paths: &pm_registry::Paths) -> Containment {
        #[cfg(target_os = "linux")]
        {
            let parent = match parent_dir() {
                Ok(parent) => parent,
                Err(reason) => return Containment::ProcessGroup { reason },
            };
            match rustix::fs::statfs(&parent) {
                #[allow(clippy::unnecessary_cast)]
                Ok(fs) if fs.f_type as u64 == CGROUP2_SUPER_MAGIC => {}
                _ => {
                    return Containment::ProcessGroup {
                        reason: format!("{} is not a cgroup v2 file system", parent.display()),
                    }
                }
            }
            let base = parent.join(base_name(paths.root(), paths.instance_id()));
            let listed = match std::fs::read_to_string(base.join("cgroup.subtree_control")) {
                Ok(text) => text,
                Err(_) => std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default(),
            };
            let controllers =
                listed.split_whitespace().filter(|c| CONTROLLERS.contains(c)).map(str::to_owned).collect();
            Containment::Cgroup { reason: format!("cgroup v2 at {}", base.display()), base, controllers }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = paths;
            Containment::ProcessGroup { reason: "cgroups are Linux only".to_owned() }
        }
    }
}

/// `pm-<instance>-<12 hex digits of a hash of the home folder>`.
fn base_name(root: &Path, instance: &str) -> String {
    use std::os::unix::ffi::OsStrExt;
    // FNV-1a: stable across builds and platforms, unlike the standard library's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in root.as_os_str().as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("pm-{instance}-{:012x}", hash & 0xffff_ffff_ffff)
}

/// The folder a monitor of home `root` and `instance` started from this process's cgroup would use (for tests
/// that clean up after the monitors they ran); `None` where no cgroup v2 tree is found.
pub fn base_for(root: &Path, instance: &str) -> Option<PathBuf> {
    Some(parent_dir().ok()?.join(base_name(root, instance)))
}

/// Removes every cgroup folder that monitors of the home `root` (any instance) started from this process's
/// cgroup made, killing what is left in them; for tests and tools that clean up after the monitors they ran.
/// Touches only `pm-<instance>-<hash of root>` folders.
pub fn remove_for_home(root: &Path) {
    let Ok(parent) = parent_dir() else { return };
    let suffix = base_name(root, "x").split_off("pm-x".len());
    let Ok(entries) = std::fs::read_dir(&parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("pm-") && name.ends_with(&suffix) {
            remove_tree(&entry.path());
        }
    }
}

/// Kills the members of the cgroup `dir` and of the cgroups below it, waits (up to 5 s) for them to empty, and
/// removes them all.
pub fn remove_tree(dir: &Path) {
    if !dir.join("cgroup.procs").exists() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    if populated(dir) {
        kill_members(dir);
        wait_empty_blocking(dir, Duration::from_secs(5));
    }
    let _ = std::fs::remove_dir(dir);
}

/// Where the monitor's folder goes: the test override, else this process's cgroup in the v2 hierarchy.
fn parent_dir() -> Result<PathBuf, String> {
    if let Some(root) = std::env::var_os(ROOT_VAR).filter(|root| !root.is_empty()) {
        return Ok(PathBuf::from(root));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|err| format!("cannot read /proc/self/mountinfo: {err}"))?;
    let mount = mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == "cgroup2").then(|| unescape(mount))
        })
        .ok_or_else(|| "no cgroup v2 file system is mounted".to_owned())?;
    let own =
        std::fs::read_to_string("/proc/self/cgroup").map_err(|err| format!("cannot read /proc/self/cgroup: {err}"))?;
    let path = own
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(|| "this process has no cgroup v2 membership".to_owned())?;
    let path = path.trim_start_matches('/');
    if path.contains(" (deleted)") {
        return Err("this process's cgroup was removed".to_owned());
    }
    Ok(PathBuf::from(mount).join(path))
}

/// A mountinfo field with its octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let value = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Makes the monitor's folder below `parent` and enables what it can of the controllers; answers the
/// controllers the per-process cgroups get.
#[cfg(target_os = "linux")]
fn make_base(parent: &Path, base: &Path) -> Result<Vec<String>, String> {
    let fs = rustix::fs::statfs(parent).map_err(|err| format!("cannot use {}: {err}", parent.display()))?;
    #[allow(clippy::unnecessary_cast)]
    if fs.f_type as u64 != CGROUP2_SUPER_MAGIC {
        return Err(format!("{} is not a cgroup v2 file system", parent.display()));
    }
    match std::fs::create_dir(base) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(format!("cannot create the cgroup {}: {err}", base.display())),
    }
    if let Err(err) = rustix::fs::access(base.join("cgroup.procs"), rustix::fs::Access::WRITE_OK) {
        return Err(format!("cannot move processes into {}: {err}", base.display()));
    }
    // Controllers reach a cgroup only when its parent enables them for its children. The parent's write fails
    // when the monitor shares its cgroup with processes (no internal processes where controllers are enabled):
    // then only what is already enabled is used.
    let available = |dir: &Path| -> Vec<String> {
        let text = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        text.split_whitespace().filter(|c| CONTROLLERS.contains(c)).map(str::to_owned).collect()
    };
    let enable = |dir: &Path, controllers: &[String]| {
        for controller in controllers {
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{controller}"));
        }
    };
    enable(parent, &available(parent));
    enable(base, &available(base));
    let enabled = std::fs::read_to_string(base.join("cgroup.subtree_control")).unwrap_or_default();
    Ok(enabled.split_whitespace().filter(|c| CONTROLLERS.contains(c)).map(str::to_owned).collect())
}

/// The cgroup of one run of a managed process.
#[derive(Debug, Clone)]
pub(crate) struct ProcCgroup {
    pub(crate) dir: PathBuf,
    /// `oom_kill` of `memory.events` when the run started; [`NO_MEMORY_EVENTS`] when it had none.
    oom_base: u64,
}

/// [`ProcCgroup::oom_base`] of a cgroup without `memory.events` (no memory controller) when the run started: its
/// exit looks for no OOM kill, instead of failing to open that file at every exit of a crash storm (issue 19).
const NO_MEMORY_EVENTS: u64 = u64::MAX;

/// A cgroup made ready for a child: its folder, open for `clone3(CLONE_INTO_CGROUP)`; its `cgroup.procs` is
/// opened only where the child must write itself into it before it executes ([`Prepared::procs`]).
pub(crate) struct Prepared {
    pub(crate) cgroup: ProcCgroup,
    pub(crate) dir: std::fs::File,
}

impl Prepared {
    /// The cgroup's `cgroup.procs`, opened in its open folder, for a child that joins it between its fork and
    /// its exec (where `clone3` cannot clone it there, and for an untrusted registration). A clone into the cgroup
    /// needs only the folder: it was opened and closed at every start of a crash storm for nothing (issue 19).
    pub(crate) fn procs(&self) -> std::io::Result<std::fs::File> {
        use rustix::fs::{Mode, OFlags};
        let procs = rustix::fs::openat(&self.dir, "cgroup.procs", OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(procs.into())
    }
}

impl ProcCgroup {
    /// The cgroup at `dir`, for a process found running in it.
    pub(crate) fn existing(dir: PathBuf) -> Option<ProcCgroup> {
        dir.is_dir().then(|| {
            let oom_base = read_key(&dir.join("memory.events"), "oom_kill").unwrap_or(NO_MEMORY_EVENTS);
            ProcCgroup { dir, oom_base }
        })
    }

    /// Makes the cgroup at `dir`, applies the limits of `config`, and opens it. An existing
    /// cgroup is used again only when `reuse` says the last run left it empty without a kill; otherwise it is
    /// emptied, removed and made afresh, since a child cloned into a cgroup that `cgroup.kill` emptied may be
    /// killed at once (its kill count differs from the parent's on some kernels).
    ///
    /// `reuse` also says that the configuration's limits did not change since the last run applied them (the task
    /// clears it when they change): a cgroup used again is only opened, its limits left as they are.
    /// `memory_events`: whether the cgroup has `memory.events` ([`Containment::memory_events`]).
    pub(crate) fn prepare(
        dir: &Path,
        config: &pm_core::ProcessConfig,
        reuse: bool,
        memory_events: bool,
    ) -> std::io::Result<Prepared> {
        let annotate = |what: &str, err: std::io::Error| {
            std::io::Error::new(err.kind(), format!("cannot {what} cgroup {}: {err}", dir.display()))
        };
        if reuse {
            // Left empty by the last run, and nothing enters a cgroup without a member to fork but a write of
            // a PID into its `cgroup.procs`: no need to look at it again. Gone meanwhile: made afresh below.
            match Self::open(dir, false, memory_events) {
                Ok(prepared) => return Ok(prepared),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(annotate("open", err)),
            }
        }
        let fresh = match std::fs::create_dir(dir) {
            Ok(()) => true,
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                if !reuse || populated(dir) {
                    if populated(dir) {
                        kill_members(dir);
                        wait_empty_blocking(dir, Duration::from_secs(2));
                    }
                    remove(dir);
                    std::fs::create_dir(dir).map_err(|err| annotate("create", err))?;
                    true
                } else {
                    false
                }
            }
            Err(err) => return Err(annotate("create", err)),
        };
        let mut limits: Vec<(&str, String)> = Vec::new();
        if let Some(bytes) = config.memory_max_bytes {
            limits.push(("memory.max", bytes.to_string()));
        }
        if let Some(percent) = config.cpu_max_percent {
            limits.push(("cpu.max", format!("{} 100000", u64::from(percent) * 1000)));
        }
        if let Some(max) = config.pids_max {
            limits.push(("pids.max", max.to_string()));
        }
        for (file, value) in limits {
            std::fs::write(dir.join(file), &value).map_err(|err| annotate(&format!("set {file} {value} in"), err))?;
        }
        // Unset limits go back to "max" (the folder may be an earlier run's, with other limits).
        for (file, set) in [
            ("memory.max", config.memory_max_bytes.is_some()),
            ("cpu.max", config.cpu_max_percent.is_some()),
            ("pids.max", config.pids_max.is_some()),
        ] {
            if !fresh && !set && dir.join(file).exists() {
                let _ = std::fs::write(dir.join(file), "max");
            }
        }
        Self::open(dir, fresh, memory_events).map_err(|err| annotate("open", err))
    }

    /// Opens the existing cgroup `dir` for a child; one made `fresh` has had no OOM kill. Its files are opened in
    /// the open folder: their names are looked up there, not along the whole path through the cgroup file system
    /// again.
    fn open(dir: &Path, fresh: bool, memory_events: bool) -> std::io::Result<Prepared> {
        use std::os::fd::AsFd;
        let dir_fd =
            std::fs::File::from(open_in_cgroup(dir, "", rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY)?);
        let oom_base = if !memory_events {
            NO_MEMORY_EVENTS
        } else if fresh {
            0
        } else {
            let mut buf = [0u8; 512];
            let events = pm_registry::proc::read_small_at(dir_fd.as_fd(), "memory.events", &mut buf);
            events.ok().and_then(|text| key_in(text, "oom_kill")).unwrap_or(NO_MEMORY_EVENTS)
        };
        Ok(Prepared { cgroup: ProcCgroup { dir: dir.to_path_buf(), oom_base }, dir: dir_fd })
    }

    pub(crate) fn populated(&self) -> bool {
        populated(&self.dir)
    }

    /// Sends `signals`, in turn, to every member outside the process group `pgid` (which the caller signals
    /// itself, so that no process gets a signal twice).
    pub(crate) fn signal_members_outside(&self, pgid: u32, signals: &[i32]) {
        let members = members(&self.dir);
        if members == [pgid] {
            // Only the leader (the usual case): in its group, the group's signal reached it; moved out of it, it
            // left the group empty, and the caller signalled it alone. No `/proc` to read.
            return;
        }
        for pid in members {
            if pm_registry::proc::family(pid).is_some_and(|family| family.pgrp != pgid) {
                for signal in signals {
                    signal_pid(pid, *signal);
                }
            }
        }
    }

    /// Kills every member at once (without waiting).
    pub(crate) fn kill_now(&self) {
        kill_members(&self.dir);
    }

    /// After the leader's exit: an empty cgroup stays for the restart (making one costs more than the rest of a
    /// restart) and true is answered; one with leftovers is killed, waited for (up to `wait`) and removed.
    pub(crate) async fn kill_leftovers(&self, wait: Duration) -> bool {
        if populated(&self.dir) {
            self.kill_and_remove(wait).await;
            return false;
        }
        true
    }

    /// Kills every member and removes the cgroup once it is empty (waiting up to `wait`).
    pub(crate) async fn kill_and_remove(&self, wait: Duration) {
        if !populated(&self.dir) {
            // Nothing to wait for (the common case after a stop or a crash): no trip to the blocking pool.
            remove(&self.dir);
            return;
        }
        self.kill_and_wait(wait).await;
        remove(&self.dir);
    }

    /// Kills every member and waits (up to `wait`) for the cgroup to be empty; the cgroup stays.
    pub(crate) async fn kill_and_wait(&self, wait: Duration) {
        if !populated(&self.dir) {
            return;
        }
        let dir = self.dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if populated(&dir) {
                kill_members(&dir);
            }
            wait_empty_blocking(&dir, wait);
        })
        .await;
    }

    /// Removes the cgroup (empty, or the removal fails and it stays).
    pub(crate) fn remove(&self) {
        remove(&self.dir);
    }

    /// The kernel's OOM killer acted in this run: "killed by the kernel's OOM killer (memory.max …)". Not looked
    /// for when the cgroup had no `memory.events` as the run started.
    pub(crate) fn oom_error(&self) -> Option<String> {
        if self.oom_base == NO_MEMORY_EVENTS {
            return None;
        }
        let kills = read_key(&self.dir.join("memory.events"), "oom_kill")?;
        (kills > self.oom_base).then(|| {
            let max = std::fs::read_to_string(self.dir.join("memory.max")).unwrap_or_default();
            let max = max.trim();
            if max.is_empty() || max == "max" {
                "killed by the kernel's OOM killer (memory.max max)".to_owned()
            } else {
                format!("killed by the kernel's OOM killer (memory.max {max} bytes)")
            }
        })
    }

    /// Memory of the cgroup: `memory.current`, else the summed resident memory of its members.
    pub(crate) fn memory_bytes(&self) -> u64 {
        memory_of(&self.dir)
    }

    /// Resolves when the cgroup holds no process any more (for a tracked daemon whose leader exited).
    pub(crate) async fn wait_empty(&self) {
        let mut pause = Duration::from_millis(20);
        while populated(&self.dir) {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// The member to adopt as the process: the earliest started (the leader, when it still runs).
    pub(crate) fn first_member(&self) -> Option<pm_registry::proc::Process> {
        members(&self.dir)
            .into_iter()
            .filter_map(|pid| Some((pid, pm_registry::proc::family(pid)?.start_time)))
            .min_by_key(|(pid, start)| (*start, *pid))
            .map(|(pid, start)| pm_registry::proc::Process::new(pid, Some(start)))
    }
}

fn populated(dir: &Path) -> bool {
    match read_key_in(dir, "cgroup.events", "populated") {
        Some(value) => value != 0,
        // No cgroup.events (an old kernel): look at the members.
        None => !members(dir).is_empty(),
    }
}

fn members(dir: &Path) -> Vec<u32> {
    let file = dir.join("cgroup.procs");
    // Read at every stop (of all processes at once at a shutdown): a few PIDs without an allocation, more the
    // long way.
    let mut buf = [0u8; 512];
    let parse = |text: &str| text.lines().filter_map(|line| line.trim().parse().ok()).collect();
    match pm_registry::proc::read_small(&file, &mut buf) {
        Ok(bytes) => parse(std::str::from_utf8(bytes).unwrap_or_default()),
        Err(err) if err.kind() == std::io::ErrorKind::InvalidData => {
            parse(&std::fs::read_to_string(&file).unwrap_or_default())
        }
        Err(_) => Vec::new(),
    }
}

/// `cgroup.kill`, or where it is missing: freeze, SIGKILL every member, thaw.
fn kill_members(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    let frozen = std::fs::write(dir.join("cgroup.freeze"), "1").is_ok();
    // Frozen, nothing can fork meanwhile; without a freezer, repeat until no new member shows up.
    for _ in 0..if frozen { 1 } else { 20 } {
        let pids = members(dir);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            signal_pid(pid, libc::SIGKILL);
        }
    }
    if frozen {
        let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
    }
}

fn wait_empty_blocking(dir: &Path, wait: Duration) {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(1);
    while populated(dir) && Instant::now() < deadline {
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Removes an empty cgroup (and its empty child cgroups, which a managed process may have made): one `rmdir`
/// when it has none (the usual case), its folder read only when that fails.
fn remove(dir: &Path) {
    match std::fs::remove_dir(dir) {
        Ok(()) => return,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
        Err(_) => {}
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                remove(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Signals one member of a cgroup this monitor made (never PID 0, 1 or this process).
fn signal_pid(pid: u32, signal: i32) {
    let _ = pm_registry::proc::signal_process(pid, signal);
}

/// The folder holding the per-process cgroups (the monitor's base) last looked in, open (`O_PATH`): a cgroup's
/// files read at every start and exit (`cgroup.events`, the cgroup's folder itself) are opened from it, their names
/// looked up in two folders instead of along the whole path through the cgroup file system (`/sys/fs/cgroup/`,
/// the monitor's own cgroup's path, often a dozen folders deep; issue 19, the crash storm). One base at a time
/// (tests run several monitors in one process: another base opens its own, and the paths are the truth).
static PARENT: std::sync::Mutex<Option<(PathBuf, std::sync::Arc<std::os::fd::OwnedFd>)>> = std::sync::Mutex::new(None);

/// The open folder `parent` (see [`PARENT`]); `None` when it cannot be opened.
fn parent_fd(parent: &Path) -> Option<std::sync::Arc<std::os::fd::OwnedFd>> {
    use rustix::fs::{Mode, OFlags};
    let mut cached = PARENT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, fd)) = cached.as_ref().filter(|(path, _)| path == parent) {
        return Some(fd.clone());
    }
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fd = std::sync::Arc::new(rustix::fs::open(parent, flags, Mode::empty()).ok()?);
    *cached = Some((parent.to_path_buf(), fd.clone()));
    Some(fd)
}

/// Forgets the open parent `fd` (when it is still the one kept), so that the next use opens the path again.
fn forget_parent(fd: &std::sync::Arc<std::os::fd::OwnedFd>) {
    let mut cached = PARENT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if cached.as_ref().is_some_and(|(_, kept)| std::sync::Arc::ptr_eq(kept, fd)) {
        *cached = None;
    }
}

/// Opens `name` in the cgroup folder `dir` (the folder itself when `name` is empty) with `flags`, from its open
/// parent ([`PARENT`]). Whatever fails that way (a parent removed and made again keeps the old folder open, in
/// which nothing is found) is opened along the whole path, whose answer stands.
fn open_in_cgroup(dir: &Path, name: &str, flags: rustix::fs::OFlags) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::Mode;
    let flags = flags | rustix::fs::OFlags::CLOEXEC;
    if let (Some(parent), Some(leaf)) = (dir.parent(), dir.file_name()) {
        if let Some(parent) = parent_fd(parent) {
            let mut relative = PathBuf::from(leaf);
            if !name.is_empty() {
                relative.push(name);
            }
            match rustix::fs::openat(&*parent, &relative, flags, Mode::empty()) {
                Ok(fd) => return Ok(fd),
                // Perhaps no longer the folder at that path: opened again next time.
                Err(_) => forget_parent(&parent),
            }
        }
    }
    let path = if name.is_empty() { dir.to_path_buf() } else { dir.join(name) };
    Ok(rustix::fs::open(&path, flags, Mode::empty())?)
}

/// [`read_key`] of the file `name` of the cgroup `dir`, opened from its parent ([`open_in_cgroup`]).
fn read_key_in(dir: &Path, name: &str, key: &str) -> Option<u64> {
    let file = open_in_cgroup(dir, name, rustix::fs::OFlags::RDONLY).ok()?;
    let mut buf = [0u8; 512];
    key_in(pm_registry::proc::read_small_from(file.into(), &mut buf).ok()?, key)
}

fn read_key(file: &Path, key: &str) -> Option<u64> {
    // `cgroup.events` and `memory.events`, read at every exit and start: no allocation, no size hint.
    let mut buf = [0u8; 512];
    key_in(pm_registry::proc::read_small(file, &mut buf).ok()?, key)
}

/// The value of `key` in the text of a flat-keyed cgroup file (`name value` lines).
fn key_in(text: &[u8], key: &str) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

fn memory_of(dir: &Path) -> u64 {
    if let Some(bytes) = std::fs::read_to_string(dir.join("memory.current")).ok().and_then(|t| t.trim().parse().ok()) {
        return bytes;
    }
    let page = pm_registry::proc::page_size();
    members(dir)
        .into_iter()
        .filter_map(|pid| {
            let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
            statm.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum::<u64>()
        * page
}

/// CPU time of the cgroup in microseconds (`usage_usec` of `cpu.stat`).
fn cpu_usec(dir: &Path) -> Option<u64> {
    read_key(&dir.join("cpu.stat"), "usage_usec")
}

/// CPU percentages of cgroups from the difference of `cpu.stat` between two looks.
#[derive(Default)]
pub(crate) struct CpuSampler {
    last: HashMap<PathBuf, (u64, Instant)>,
}

impl CpuSampler {
    /// (CPU percent of one core since the last look, memory bytes) of the cgroup `dir`; O(1) files per process.
    pub(crate) fn usage(&mut self, dir: &Path) -> Option<(Option<f32>, u64)> {
        let usec = cpu_usec(dir)?;
        let now = Instant::now();
        let percent = self.last.get(dir).and_then(|(before, at)| {
            let wall = now.duration_since(*at).as_secs_f64();
            (wall > 0.05 && usec >= *before).then(|| ((usec - before) as f64 / 1e6 / wall * 100.0) as f32)
        });
        // Keep the older reading while it is fresh, so two looks in quick succession still give a percentage.
        if self.last.get(dir).is_none_or(|(_, at)| now.duration_since(*at) >= Duration::from_secs(1)) {
            self.last.insert(dir.to_path_buf(), (usec, now));
        }
        if self.last.len() > 4096 {
            self.last.retain(|dir, _| dir.is_dir());
        }
        Some((percent, memory_of(dir)))
    }
}

/// Empties and removes the cgroups below `base` whose process is not registered (its registration went while
/// no monitor ran); answers their ids.
pub(crate) fn empty_strays(base: &Path, registered: &HashSet<String>) -> Vec<String> {
    let mut res = Vec::new();
    let Ok(entries) = std::fs::read_dir(base) else { return res };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if !entry.file_type().is_ok_and(|kind| kind.is_dir()) || registered.contains(&name) {
            continue;
        }
        let dir = entry.path();
        if populated(&dir) {
            kill_members(&dir);
        }
        res.push(name);
        let dir = dir.clone();
        std::thread::spawn(move || {
            wait_empty_blocking(&dir, Duration::from_secs(10));
            remove(&dir);
        });
    }
    res
}

/// Kills what is left in the cgroup `dir` of a process (its leader is gone and no one tracks the rest), waits
/// (up to 2 s) for it to empty, and removes it; answers whether anything was killed.
pub(crate) fn kill_leftovers(dir: &Path) -> bool {
    if dir.is_dir() && populated(dir) {
        kill_members(dir);
        wait_empty_blocking(dir, Duration::from_secs(2));
        remove(dir);
        return true;
    }
    false
}

/// Removes the cgroup `dir` (and its child cgroups) where it exists and is empty.
pub(crate) fn remove_empty(dir: &Path) {
    remove(dir);
}

/// Removes the monitor's folder at a clean shutdown (only when every process cgroup in it is gone).
pub(crate) fn remove_base(base: &Path) {
    remove(base);
}

/// Writes `0` (the calling process) into the open `cgroup.procs` `fd`: run in the child between fork and exec,
/// so it allocates nothing and makes one system call.
pub(crate) fn join_in_child(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    match rustix::io::write(fd, b"0") {
        Ok(_) => Ok(()),
        Err(errno) => Err(std::io::Error::from_raw_os_error(errno.raw_os_error())),
    }
}

/// Without cgroup access: become a child subreaper, so that descendants which leave their process group (a
/// double fork, `setsid`) are re-parented to the monitor, not to init. Linux only.
pub(crate) fn become_subreaper() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).map_err(|err| err.to_string())
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err("no child subreaper on this platform".to_owned())
    }
}

/// Reaps children that are not managed processes (descendants re-parented to this subreaper once they end):
/// every zombie child whose PID is not in `owned`. The caller holds `owned` locked.
pub(crate) fn reap_strays(owned: &HashSet<u32>) {
    #[cfg(target_os = "linux")]
    {
        let me = std::process::id();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return };
        let mut children = Vec::new();
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                children.extend(text.split_whitespace().filter_map(|pid| pid.parse::<u32>().ok()));
            }
        }
        for pid in children {
            if owned.contains(&pid) || pid == me {
                continue;
            }
            let zombie = pm_registry::proc::stat(pid).is_some_and(|stat| stat.state == 'Z');
            // One zombie child that no other part of the program waits for.
            let pid = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw);
            if let (true, Some(pid)) = (zombie, pid) {
                let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = owned;
}

/// Processes (other than this one) whose environment carries the owner key `owner` and the process id `id`.
pub(crate) fn carriers(owner: &str, id: &str) -> Vec<u32> {
    let owner_entry = format!("{}={owner}", crate::orphans::OWNER_VAR);
    let id_entry = format!("{}={id}", crate::orphans::PROCESS_VAR);
    let me = std::process::id();
    let Ok(pids) = pm_registry::proc::all_pids() else { return Vec::new() };
    let mut res = Vec::new();
    for pid in pids {
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        let (mut owned, mut same_id) = (false, false);
        for var in environ.split(|b| *b == 0) {
            owned |= var == owner_entry.as_bytes();
            same_id |= var == id_entry.as_bytes();
        }
        if owned && same_id {
            res.push(pid);
        }
    }
    res
}

/// Sends `signal` to the carriers of the owner key and process id outside the process group `pgid`.
pub(crate) fn signal_carriers_outside(owner: &str, id: &str, pgid: u32, signal: i32) {
    for pid in carriers(owner, id) {
        if pm_registry::proc::family(pid).is_some_and(|family| family.pgrp != pgid) {
            signal_pid(pid, signal);
        }
    }
}

/// Sends `signal` to every process carrying the owner key and process id (the process-group fallback's way to
/// reach children that left the group); answers how many were signalled.
pub(crate) fn signal_carriers(owner: &str, id: &str, signal: i32) -> usize {
    let pids = carriers(owner, id);
    for pid in &pids {
        signal_pid(*pid, signal);
    }
    pids.len()
}

/// Writes a line to a file opened for appending (test helper for the module's own tests).
#[cfg(test)]
fn append(path: &Path, line: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    writeln!(file, "{line}").unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names_differ_per_home_and_instance() {
        let a = base_name(Path::new("/tmp/home-a"), "default");
        assert!(a.starts_with("pm-default-") && a.len() == "pm-default-".len() + 12, "{a}");
        assert_ne!(a, base_name(Path::new("/tmp/home-b"), "default"));
        assert_ne!(a, base_name(Path::new("/tmp/home-a"), "watcher"));
        assert_eq!(a, base_name(Path::new("/tmp/home-a"), "default"));
    }

    #[test]
    fn the_home_suffix_matches_every_instance() {
        let suffix = base_name(Path::new("/tmp/h"), "x").split_off("pm-x".len());
        assert!(base_name(Path::new("/tmp/h"), "default").ends_with(&suffix));
        assert!(base_name(Path::new("/tmp/h"), "blue").ends_with(&suffix));
        assert!(!base_name(Path::new("/tmp/other"), "default").ends_with(&suffix));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/sys/fs/cgroup/a\040b"), "/sys/fs/cgroup/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
    }

    /// The members of a cgroup are read whole, a few or many (past the small buffer); the removal of a folder
    /// with an empty child folder (a cgroup a process made below its own) takes both.
    #[test]
    fn members_few_or_many_and_removal_with_children() {
        let dir = std::env::temp_dir().join(format!("pm-cgroup-members-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.procs"), "41\n42\n").unwrap();
        assert_eq!(members(&dir), [41, 42]);
        let many: Vec<u32> = (100_000..100_300).collect();
        let text: String = many.iter().map(|pid| format!("{pid}\n")).collect();
        std::fs::write(dir.join("cgroup.procs"), text).unwrap();
        assert_eq!(members(&dir), many);
        std::fs::remove_file(dir.join("cgroup.procs")).unwrap();
        assert!(members(&dir).is_empty());
        std::fs::create_dir_all(dir.join("inner").join("deeper")).unwrap();
        remove(&dir);
        assert!(!dir.exists(), "the folder and its empty children are removed");
        remove(&dir);
    }

    #[test]
    fn keys_of_flat_keyed_files() {
        let dir = std::env::temp_dir().join(format!("pm-cgroup-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("memory.events");
        let _ = std::fs::remove_file(&file);
        append(&file, "low 0");
        append(&file, "oom_kill 3");
        assert_eq!(read_key(&file, "oom_kill"), Some(3));
        assert_eq!(read_key(&file, "oom"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An empty folder `{tag}-{pid}` in the temp dir, whatever was there before.
    fn fresh_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A cgroup the last run left empty is only opened again (its limit files as they were, no `mkdir`); one that
    /// is gone by then is made afresh.
    #[test]
    fn a_reused_cgroup_is_opened_as_it_is() {
        let dir = fresh_dir("pm-cgroup-reuse");
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        std::fs::write(dir.join("memory.max"), "1048576\n").unwrap();
        std::fs::write(dir.join("memory.events"), "oom 0\noom_kill 3\n").unwrap();
        let config = pm_core::ProcessConfig::new("job", "job", "/bin/true");
        let prepared = ProcCgroup::prepare(&dir, &config, true, true).expect("opened");
        assert_eq!(prepared.cgroup.dir, dir);
        assert_eq!(prepared.cgroup.oom_base, 3, "the kills so far are the run's base");
        assert_eq!(std::fs::read_to_string(dir.join("memory.max")).unwrap(), "1048576\n", "left as it was");
        drop(prepared);
        // Without `memory.events` as the run starts (no memory controller), its exit does not look for one.
        std::fs::remove_file(dir.join("memory.events")).unwrap();
        let prepared = ProcCgroup::prepare(&dir, &config, true, true).expect("opened");
        std::fs::write(dir.join("memory.events"), "oom 0\noom_kill 3\n").unwrap();
        assert_eq!(prepared.cgroup.oom_error(), None, "memory.events was read at the exit");
        drop(prepared);
        std::fs::remove_dir_all(&dir).unwrap();
        let prepared = ProcCgroup::prepare(&dir, &config, true, true).expect("made afresh");
        assert!(dir.is_dir(), "gone: made afresh");
        assert_eq!(prepared.cgroup.oom_base, 0, "a cgroup made afresh has had no OOM kill");
        // A plain folder has no `cgroup.procs`: opened only for a child that joins the cgroup itself.
        assert!(prepared.procs().is_err());
        drop(prepared);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Without the memory controller (no `memory.events`), neither a start nor the exit looks for OOM kills, even
    /// when a file of that name is there.
    #[test]
    fn without_memory_events_no_oom_kill_is_looked_for() {
        let dir = fresh_dir("pm-cgroup-no-memory");
        std::fs::write(dir.join("memory.events"), "oom 0\noom_kill 3\n").unwrap();
        let config = pm_core::ProcessConfig::new("job", "job", "/bin/true");
        let prepared = ProcCgroup::prepare(&dir, &config, true, false).expect("opened");
        assert_eq!(prepared.cgroup.oom_base, NO_MEMORY_EVENTS);
        std::fs::write(dir.join("memory.events"), "oom 0\noom_kill 4\n").unwrap();
        assert_eq!(prepared.cgroup.oom_error(), None);
        drop(prepared);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A cgroup's files are read from its open parent, and along the whole path when the parent held open is not
    /// the one at that path any more (removed and made again): the answer is the file's at the path.
    #[test]
    fn cgroup_files_are_read_from_the_open_parent_or_the_path() {
        let parent = std::env::temp_dir().join(format!("pm-cgroup-parent-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&parent);
        let dir = parent.join("job");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        assert!(populated(&dir));
        std::fs::remove_dir_all(&parent).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.events"), "populated 0\nfrozen 0\n").unwrap();
        assert!(!populated(&dir), "read in the removed parent held open");
        assert_eq!(read_key_in(&dir, "cgroup.events", "populated"), Some(0));
        std::fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        assert!(populated(&dir));
        std::fs::remove_dir_all(&parent).unwrap();
    }

    #[test]
    fn limits_need_their_controller() {
        let mut config = pm_core::ProcessConfig::new("job", "job", "/bin/true");
        let none = Containment::ProcessGroup { reason: "test".to_owned() };
        assert!(none.check_limits(&config).is_ok());
        config.memory_restart_bytes = Some(1 << 20);
        assert!(none.check_limits(&config).is_ok(), "memoryRestartBytes needs no controller");
        config.memory_max_bytes = Some(1 << 20);
        let err = none.check_limits(&config).unwrap_err().to_string();
        assert!(err.contains("memoryMaxBytes") && err.contains("memory controller"), "{err}");
        let cg = Containment::Cgroup { base: "/x".into(), controllers: vec!["pids".to_owned()], reason: String::new() };
        let err = cg.check_limits(&config).unwrap_err().to_string();
        assert!(err.contains("memory controller") && err.contains("cgroup v2 tree"), "{err}");
        config.memory_max_bytes = None;
        config.pids_max = Some(10);
        assert!(cg.check_limits(&config).is_ok());
        config.cpu_max_percent = Some(50);
        assert!(cg.check_limits(&config).unwrap_err().to_string().contains("cpu controller"));
    }

    #[test]
    fn a_folder_that_is_not_a_cgroup_is_refused() {
        let dir = std::env::temp_dir();
        let err = make_base(&dir, &dir.join("pm-never-made")).unwrap_err();
        assert!(err.contains("not a cgroup v2 file system"), "{err}");
        assert!(!dir.join("pm-never-made").exists());
    }
}
