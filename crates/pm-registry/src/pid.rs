//! Is a PID alive, and is it still the process we think it is?
//!
//! On Linux the answers come from `/proc/{pid}/stat`: a zombie (exited, not yet reaped) counts as dead, and the
//! start time (field 22, clock ticks since boot) tells a process from a later one that reuses its PID. Elsewhere
//! on unix `kill(pid, 0)` answers liveness and no start time is known.
//!
//! # Caveats
//! Without `/proc` a zombie counts as alive, and [`is_same_process`] cannot detect PID reuse.

use std::sync::OnceLock;

/// What `/proc/{pid}/stat` says about a process.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    /// One-letter state (`R`, `S`, `Z`, ...).
    state: char,
    /// Field 4: parent PID.
    ppid: u32,
    /// Field 5: process group.
    pgrp: u32,
    /// Field 22: start time in clock ticks since boot.
    start_time: u64,
}

/// Parses the contents of `/proc/{pid}/stat`.
///
/// Field 2 (`comm`) is in parentheses and may itself contain spaces and `)`, so the line is split at the last
/// `)`; the fields after it start with field 3 (state).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_stat(text: &str) -> Option<Stat> {
    let close = text.rfind(')')?;
    let mut fields = text[close + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    // Field 5 was the group; field 22 is 17 fields further on.
    let start_time = fields.nth(16)?.parse().ok()?;
    Some(Stat { state, ppid, pgrp, start_time })
}

/// Reads `/proc/{pid}/stat`: `Ok(None)` when the process does not exist, `Err(())` when `/proc` cannot answer.
#[cfg(target_os = "linux")]
fn read_stat(pid: u32) -> Result<Option<Stat>, ()> {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => Ok(parse_stat(&text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && proc_mounted() => Ok(None),
        Err(_) => Err(()),
    }
}

#[cfg(target_os = "linux")]
fn proc_mounted() -> bool {
    static MOUNTED: OnceLock<bool> = OnceLock::new();
    *MOUNTED.get_or_init(|| std::path::Path::new("/proc/self/stat").exists())
}

/// `kill(pid, 0)`: the process exists (we may lack permission to signal it, which still means it exists).
#[cfg(unix)]
fn signal_probe(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 performs only the permission and existence checks; nothing is delivered.
    let res = unsafe { libc::kill(pid, 0) };
    res == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn signal_probe(_pid: u32) -> bool {
    false
}

/// Whether `pid` names a running process (a zombie is not running). PID 0 is never alive.
pub fn alive(pid: u32) -> bool {
    if pid == 0 || i32::try_from(pid).is_err() {
        return false;
    }
    #[cfg(target_os = "linux")]
    if let Ok(stat) = read_stat(pid) {
        return matches!(stat, Some(stat) if !matches!(stat.state, 'Z' | 'X' | 'x'));
    }
    signal_probe(pid)
}

/// The start time of `pid` in clock ticks since boot (`/proc/{pid}/stat` field 22); `None` when the process is
/// gone or the platform does not tell.
pub fn start_time(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    #[cfg(target_os = "linux")]
    if let Ok(stat) = read_stat(pid) {
        return stat.map(|stat| stat.start_time);
    }
    None
}

/// Whether `pid` is alive and, when `start_time` is given, is the process that started then (not a later one
/// that reuses the PID). Where start times cannot be read, a live PID is taken to be the same process.
pub fn is_same_process(pid: u32, start_time: Option<u64>) -> bool {
    if !alive(pid) {
        return false;
    }
    let Some(expected) = start_time else {
        return true;
    };
    match self::start_time(pid) {
        Some(actual) => actual == expected,
        // Alive a moment ago but no start time now: gone in between where /proc answers, unknowable elsewhere.
        None => !cfg!(target_os = "linux") || !alive(pid),
    }
}

/// A live (not zombie) process's parent, process group and start time, from one read of `/proc/{pid}/stat`;
/// `None` when it is gone or the platform does not tell.
pub fn family(pid: u32) -> Option<Family> {
    #[cfg(target_os = "linux")]
    if let Ok(Some(stat)) = read_stat(pid) {
        return (!matches!(stat.state, 'Z' | 'X' | 'x')).then_some(Family {
            ppid: stat.ppid,
            pgrp: stat.pgrp,
            start_time: stat.start_time,
        });
    }
    let _ = pid;
    None
}

/// What [`family`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// Parent PID.
    pub ppid: u32,
    /// Process group.
    pub pgrp: u32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

/// When `pid` started, as wall-clock time: the boot time of `/proc/stat` (whole seconds) plus its start time in
/// clock ticks. `None` when the process is gone or the platform does not tell.
pub fn started_at(pid: u32) -> Option<std::time::SystemTime> {
    #[cfg(target_os = "linux")]
    {
        let ticks = start_time(pid)?;
        let boot = boot_time()?;
        // SAFETY: sysconf has no preconditions.
        let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|hz| *hz > 0)?;
        let since_boot = std::time::Duration::from_millis(ticks.saturating_mul(1000) / per_second);
        boot.checked_add(since_boot)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

#[cfg(target_os = "linux")]
fn boot_time() -> Option<std::time::SystemTime> {
    static BOOT: OnceLock<Option<std::time::SystemTime>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let seconds: u64 = stat.lines().find_map(|line| line.strip_prefix("btime "))?.trim().parse().ok()?;
        std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(seconds))
    })
}

/// Whether `pid` is alive and is the process a record names. With the start time the record kept, that decides.
/// Records without one (the guide's lock format, registries written before start times were kept) give the
/// moment the process was already running (`running_at`: a lock's timestamp, an entry's `lastStartedAt`): a
/// later process reusing the PID started after it, so a process that started more than two seconds later (the
/// boot time is known to the second) is not the one. With neither, a live PID is not trusted to be the process:
/// nothing is adopted or signalled on a guess. Where start times cannot be read at all, a live PID is taken.
pub fn matches_record(pid: u32, start_time: Option<u64>, running_at: Option<std::time::SystemTime>) -> bool {
    if start_time.is_some() {
        return is_same_process(pid, start_time);
    }
    if pid <= 1 || !alive(pid) {
        return false;
    }
    if !cfg!(target_os = "linux") {
        return true;
    }
    match (running_at, started_at(pid)) {
        (Some(running_at), Some(started)) => started <= running_at + std::time::Duration::from_secs(2),
        _ => false,
    }
}

/// The PID of a registry entry's process when that process still runs: checked by [`matches_record`] against
/// the entry's start time, or, without one, against its `lastStartedAt`.
pub fn live_pid_of(entry: &pm_core::ProcessEntry) -> Option<u32> {
    let running_at = entry.last_started_at.and_then(pm_core::Timestamp::to_system_time);
    entry.pid.filter(|pid| matches_record(*pid, entry.pid_start_time, running_at))
}

/// Whether the process group `pgid` still has a member that is not a zombie.
///
/// Members of a stopped service's group that already exited stay zombies until their new parent (often
/// PID 1) reaps them, which some init programs do only every second or two; they hold no resources and can
/// no longer be signalled, so they do not count. On Linux this scans `/proc` (only when the group exists at
/// all); elsewhere any member counts.
pub fn group_alive(pgid: u32) -> bool {
    let Ok(group) = libc::pid_t::try_from(pgid) else { return false };
    if group <= 1 {
        return false;
    }
    // SAFETY: signal 0 to a process group only checks that it exists.
    let exists =
        unsafe { libc::kill(-group, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    #[cfg(target_os = "linux")]
    if proc_mounted() {
        let Ok(entries) = std::fs::read_dir("/proc") else { return true };
        return entries.flatten().any(|entry| {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
                return false;
            };
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            let Some(close) = text.rfind(')') else { return false };
            let mut fields = text[close + 1..].split_whitespace();
            let state = fields.next().and_then(|state| state.chars().next());
            let pgrp = fields.nth(1).and_then(|pgrp| pgrp.parse::<u32>().ok());
            pgrp == Some(pgid) && !matches!(state, Some('Z' | 'X' | 'x'))
        });
    }
    true
}

/// This process: its PID and its start time.
pub fn current() -> (u32, Option<u64>) {
    static START_TIME: OnceLock<Option<u64>> = OnceLock::new();
    let pid = std::process::id();
    (pid, *START_TIME.get_or_init(|| start_time(pid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, expected: Option<(char, u64)>) {
        let parsed = parse_stat(line).map(|stat| (stat.state, stat.start_time));
        if let Some(stat) = parse_stat(line) {
            assert_eq!((stat.ppid, stat.pgrp), (1, 1234), "{line:?}");
        }
        assert_eq!(parsed, expected, "{line:?}");
    }

    const TAIL: &str = "1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 1000 200";

    #[test]
    fn plain_comm() {
        check(&format!("4321 (sleep) S {TAIL} 18446744073709551615 1 1 0"), Some(('S', 987654)));
    }

    #[test]
    fn comm_with_spaces_and_parentheses() {
        check(&format!("4321 (a b) c) (d) Z {TAIL}"), Some(('Z', 987654)));
        check(&format!("4321 ()) R {TAIL}"), Some(('R', 987654)));
    }

    #[test]
    fn truncated_or_garbage_lines() {
        check("4321 (sleep) S 1 2 3", None);
        check("no parenthesis at all", None);
        check("", None);
        check(&format!("4321 (sleep) S {}", TAIL.replace("987654", "x")), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_record_without_start_time_matches_only_a_process_running_by_its_time() {
        use std::time::{Duration, SystemTime};
        let me = std::process::id();
        let started = started_at(me).expect("our own start");
        let now = SystemTime::now();
        assert!(started <= now && now.duration_since(started).unwrap() < Duration::from_secs(3600), "{started:?}");
        // Recorded now: this process was running then.
        assert!(matches_record(me, None, Some(now)));
        // Recorded an hour before this process started: the PID was someone else's then.
        assert!(!matches_record(me, None, Some(started - Duration::from_secs(3600))));
        // Nothing to tell by: not trusted.
        assert!(!matches_record(me, None, None));
        // PID 1 is never a record's process; a start time decides when there is one.
        assert!(!matches_record(1, None, Some(now)));
        assert!(matches_record(me, start_time(me), None));
        assert!(!matches_record(me, start_time(me).map(|ticks| ticks + 1), Some(now)));
    }

    #[test]
    fn pid_zero_and_out_of_range_are_dead() {
        assert!(!alive(0));
        assert!(!alive(u32::MAX));
        assert_eq!(start_time(0), None);
        assert!(!is_same_process(0, None));
    }
}
