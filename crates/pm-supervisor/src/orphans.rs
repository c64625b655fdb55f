//! Finding children of an earlier monitor that the registry does not know about.
//!
//! Every child is started with `PROCESS_MONITOR_OWNER` (the monitor's folder, instance id and a per-instance
//! secret) and `PROCESS_MONITOR_PROCESS_ID` in its environment, and leads its own process group. A monitor killed
//! between spawning a child and storing its PID leaves such a child behind; at start-up the monitor looks for group
//! leaders carrying its owner key, so it adopts them instead of starting a second copy.
//!
//! Adoption must not be spoofable: any process can put any variable in its own environment. So a process is only
//! taken for one of ours when it runs as the monitor's own user (real and effective uid), carries the owner key
//! with the secret (random, kept in the 0600 registry as `ownerSecret`, not derivable from anything public, and
//! rotated on every clean boot), and, to be adopted as a registered process, runs that process's executable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Environment variable naming the monitor that started a process.
pub(crate) const OWNER_VAR: &str = "PROCESS_MONITOR_OWNER";
/// Environment variable naming the managed process id.
pub(crate) const PROCESS_VAR: &str = "PROCESS_MONITOR_PROCESS_ID";
/// Registry key (additive, top level) of the owner secret.
pub(crate) const SECRET_KEY: &str = "ownerSecret";

/// The owner key of a monitor: its folder, instance id and owner secret (`{root}#{instance}#{secret}`; without a
/// secret, for engines that never adopt by environment, `{root}#{instance}`).
pub(crate) fn owner_key(paths: &pm_registry::Paths, secret: Option<&str>) -> String {
    match secret {
        Some(secret) => format!("{}#{}#{secret}", paths.root().display(), paths.instance_id()),
        None => format!("{}#{}", paths.root().display(), paths.instance_id()),
    }
}

/// The registry's owner secret, made afresh when `rotate` (a clean boot: nothing of an earlier monitor is
/// supposed to run) or when there is none or it is malformed; otherwise (a resume after a crash or a
/// self-restart) the one the running children carry.
pub(crate) fn ensure_secret(registry: &mut pm_core::Registry, rotate: bool) -> std::io::Result<String> {
    let current = registry.extra.get(SECRET_KEY).and_then(|value| value.as_str()).filter(|secret| well_formed(secret));
    if let (false, Some(secret)) = (rotate, current) {
        return Ok(secret.to_owned());
    }
    let secret = new_secret()?;
    registry.extra.insert(SECRET_KEY.to_owned(), serde_json::Value::from(secret.clone()));
    Ok(secret)
}

fn well_formed(secret: &str) -> bool {
    secret.len() == 32 && secret.bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// 128 random bits from the kernel, as 32 hex digits.
fn new_secret() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
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
    /// The executable it runs (`/proc/{pid}/exe`), when readable.
    pub(crate) exe: Option<PathBuf>,
}

impl Found {
    /// Whether this process runs `program` (already resolved as a spawn would): the same executable, or, for a
    /// script started through its `#!` line, the interpreter with the script as one of its first arguments.
    pub(crate) fn runs(&self, program: &Path) -> bool {
        let Ok(program) = std::fs::canonicalize(program) else { return false };
        if self.exe.as_deref() == Some(program.as_path()) {
            return true;
        }
        let script = std::fs::File::open(&program).ok().and_then(|file| {
            use std::io::Read;
            let mut head = [0u8; 2];
            file.take(2).read_exact(&mut head).ok().map(|()| head == *b"#!")
        });
        script == Some(true)
            && self.cmdline.split(|byte| *byte == 0).take(3).skip(1).any(|arg| {
                use std::os::unix::ffi::OsStrExt;
                // A script of an untrusted registration runs from the descriptor it was checked through
                // (`execcheck.rs`): its interpreter names it `/dev/fd/N`, which is the process's own descriptor N.
                if let Some(fd) = arg.strip_prefix(b"/dev/fd/").and_then(|fd| std::str::from_utf8(fd).ok()) {
                    return fd.parse::<u32>().is_ok()
                        && std::fs::read_link(format!("/proc/{}/fd/{fd}", self.pid)).is_ok_and(|path| path == program);
                }
                std::fs::canonicalize(std::ffi::OsStr::from_bytes(arg)).is_ok_and(|arg| arg == program)
            })
    }
}

/// Live process-group leaders started by the monitor `owner`, by process id, earliest started first. Only
/// processes whose real and effective uid are this process's effective uid count (see the module documentation).
///
/// A managed process's own descendants inherit its environment; those that lead a group of their own (a helper
/// started with `setsid`, a detached worker) are not copies of it. A leader whose parent carries the same
/// process id is such a descendant and is left out.
#[cfg(target_os = "linux")]
pub(crate) fn scan(owner: &str) -> HashMap<String, Vec<Found>> {
    let Ok(pids) = pm_registry::proc::all_pids() else { return HashMap::new() };
    let owner_entry = format!("{OWNER_VAR}={owner}");
    let id_prefix = format!("{PROCESS_VAR}=");
    let me = rustix::process::geteuid().as_raw();
    // Every process carrying the owner key, with its process id.
    let mut carriers: HashMap<u32, String> = HashMap::new();
    for pid in pids {
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
            if runs_as(pid, me) {
                carriers.insert(pid, id);
            }
        }
    }
    let mut res: HashMap<String, Vec<Found>> = HashMap::new();
    for (&pid, id) in &carriers {
        let Some(family) = pm_registry::proc::family(pid) else { continue };
        let descendant = carriers.get(&family.ppid).is_some_and(|parent_id| parent_id == id);
        if family.pgrp != pid || descendant {
            continue;
        }
        let found = Found { pid, start_time: Some(family.start_time), cmdline: cmdline(pid), exe: exe(pid) };
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

/// Whether the real and the effective uid of `pid` (from `/proc/{pid}/status`) are both `uid`.
#[cfg(target_os = "linux")]
fn runs_as(pid: u32, uid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    let Some(line) = status.lines().find_map(|line| line.strip_prefix("Uid:")) else { return false };
    let ids: Vec<u32> = line.split_whitespace().filter_map(|field| field.parse().ok()).collect();
    ids.len() >= 2 && ids[0] == uid && ids[1] == uid
}

/// The executable of a live process, without the ` (deleted)` the kernel adds once the file was replaced (an
/// upgrade in place still counts as the same program).
fn exe(pid: u32) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let link = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let bytes = link.as_os_str().as_bytes();
    let trimmed = bytes.strip_suffix(b" (deleted)").unwrap_or(bytes);
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(trimmed)))
}

/// The command line of a live process (empty when it cannot be read).
pub(crate) fn cmdline(pid: u32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_kept_on_resume_and_rotated_on_boot() {
        let mut registry = pm_core::Registry::new_default("default");
        let first = ensure_secret(&mut registry, false).unwrap();
        assert!(well_formed(&first), "{first}");
        assert_eq!(ensure_secret(&mut registry, false).unwrap(), first, "a resume keeps the secret");
        let rotated = ensure_secret(&mut registry, true).unwrap();
        assert_ne!(rotated, first, "a clean boot rotates it");
        assert_eq!(registry.extra[SECRET_KEY], rotated.as_str());
        registry.extra.insert(SECRET_KEY.to_owned(), serde_json::Value::from("guessable"));
        assert_ne!(ensure_secret(&mut registry, false).unwrap(), "guessable", "a malformed secret is replaced");
    }

    #[test]
    fn owner_keys_carry_the_secret() {
        let paths = pm_registry::Paths::new(Path::new("/srv/pm"), "default").unwrap();
        assert_eq!(owner_key(&paths, Some("ab")), "/srv/pm#default#ab");
        assert_eq!(owner_key(&paths, None), "/srv/pm#default");
    }

    #[test]
    fn a_process_runs_its_executable_or_its_script() {
        let me = std::process::id();
        let found = Found { pid: me, start_time: None, cmdline: cmdline(me), exe: exe(me) };
        assert!(found.runs(&std::env::current_exe().unwrap()));
        assert!(!found.runs(Path::new("/bin/sh")));
        let dir = std::env::temp_dir().join(format!("pm-orphans-{me}"));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("run.sh");
        std::fs::write(&script, "#!/bin/sh\nsleep 1\n").unwrap();
        let interpreted = Found {
            pid: 0,
            start_time: None,
            cmdline: format!("/bin/sh\0{}\0", script.display()).into_bytes(),
            exe: std::fs::canonicalize("/bin/sh").ok(),
        };
        assert!(interpreted.runs(&script));
        assert!(!interpreted.runs(&dir.join("other.sh")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
