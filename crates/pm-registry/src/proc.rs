//! Processes by PID, in one place for the monitor, the client and the command line: is a PID alive and still the
//! process we think it is ([`Process`]), what `/proc/{pid}/stat` says about it ([`stat`]), signalling it or its
//! process group, and starting a child detached in a session of its own ([`detach`]).
//!
//! On Linux the answers come from `/proc/{pid}/stat`: a zombie (exited, not yet reaped) counts as dead, and the
//! start time (field 22, clock ticks since boot) tells a process from a later one that reuses its PID. Elsewhere
//! on unix `kill(pid, 0)` answers liveness and no start time is known.
//!
//! # Caveats
//! Without `/proc` a zombie counts as alive, and [`is_same_process`] cannot detect PID reuse.

use std::sync::OnceLock;

use rustix::process::{Pid, Signal};

/// A process as a record names it: its PID and, where known, its start time (clock ticks since boot), which
/// tells it from a later process that reuses the PID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Process {
    /// The PID.
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/{pid}/stat` field 22); `None` where it is not known.
    pub start_time: Option<u64>,
}

impl Process {
    /// The process `pid` that started at `start_time`.
    pub fn new(pid: u32, start_time: Option<u64>) -> Process {
        Process { pid, start_time }
    }

    /// This process: its PID and its start time.
    pub fn current() -> Process {
        static START_TIME: OnceLock<Option<u64>> = OnceLock::new();
        let pid = std::process::id();
        Process { pid, start_time: *START_TIME.get_or_init(|| start_time(pid)) }
    }

    /// Whether it still runs (see [`is_same_process`]).
    pub fn is_running(&self) -> bool {
        is_same_process(self.pid, self.start_time)
    }
}

/// What `/proc/{pid}/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// One-letter state (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Field 4: parent PID.
    pub ppid: u32,
    /// Field 5: process group.
    pub pgrp: u32,
    /// Fields 14 and 15: CPU time in user and kernel mode, in clock ticks.
    pub cpu_ticks: u64,
    /// Field 22: start time in clock ticks since boot.
    pub start_time: u64,
    /// Field 24: resident set size in pages.
    pub rss_pages: u64,
}

impl Stat {
    /// Whether the process has exited (a zombie, or dead).
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses the contents of `/proc/{pid}/stat`; `None` when it is not such a line.
///
/// Field 2 (`comm`) is in parentheses and may itself contain spaces and `)`, so the line is split at the last
/// `)`; the fields after it start with field 3 (state).
pub fn parse_stat(text: &str) -> Option<Stat> {
    let close = text.rfind(')')?;
    // Fields 3 (state) to 24 (rss).
    let mut fields = [""; 22];
    let mut words = text[close + 1..].split_whitespace();
    for slot in &mut fields {
        *slot = words.next()?;
    }
    let number = |n: usize| fields[n - 3].parse::<u64>().ok();
    Some(Stat {
        state: fields[0].chars().next()?,
        ppid: u32::try_from(number(4)?).ok()?,
        pgrp: u32::try_from(number(5)?).ok()?,
        cpu_ticks: number(14)?.checked_add(number(15)?)?,
        start_time: number(22)?,
        rss_pages: number(24)?,
    })
}

/// Reads and parses `/proc/{pid}/stat`; `None` when the process is gone or `/proc` cannot tell.
pub fn stat(pid: u32) -> Option<Stat> {
    read_stat(pid).ok().flatten()
}

/// Reads `/proc/{pid}/stat`: `Ok(None)` when the process does not exist, `Err(())` when `/proc` cannot answer.
fn read_stat(pid: u32) -> Result<Option<Stat>, ()> {
    let path = format!("/proc/{pid}/stat");
    let mut buf = [0u8; 1024];
    match read_small(std::path::Path::new(&path), &mut buf) {
        Ok(bytes) => std::str::from_utf8(bytes).map(parse_stat).map_err(drop),
        // A name of a strange length: read it the long way.
        Err(err) if err.kind() == std::io::ErrorKind::InvalidData => {
            std::fs::read_to_string(&path).map(|text| parse_stat(&text)).map_err(drop)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && proc_mounted() => Ok(None),
        Err(_) => Err(()),
    }
}

/// Reads a small file (a `/proc` or cgroup file of a few hundred bytes) into `buf`: one `open`, one `read` and a
/// `close`, without the `statx` for a size hint and the allocation of `read_to_string`, for files the monitor
/// reads at every exit or start. A read that leaves room in `buf` has the whole file (the kernel makes such a file
/// whole at its first read): no second `read` to see the end (issue 19, system calls per restart). That holds for
/// a `buf` of at most a page, which is what these files are read with: a `seq_file` read stops short of the
/// caller's length only at the end or when the kernel's own page-sized buffer is full. A file that does not fit
/// in `buf` is an `InvalidData` error.
pub fn read_small<'a>(path: &std::path::Path, buf: &'a mut [u8]) -> std::io::Result<&'a [u8]> {
    read_whole(std::fs::File::open(path)?, buf)
}

/// [`read_small`] of the file `name` in the folder open as `dir`: the name is looked up in that folder alone,
/// not along the whole path again (a cgroup's files, a dozen folders deep in the cgroup file system, at every
/// start of a crash storm; issue 19).
pub fn read_small_at<'a>(dir: std::os::fd::BorrowedFd<'_>, name: &str, buf: &'a mut [u8]) -> std::io::Result<&'a [u8]> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    read_whole(std::fs::File::from(fd), buf)
}

/// [`read_small`] of a file opened by the caller (read from where it stands, its start when just opened).
pub fn read_small_from(file: std::fs::File, buf: &mut [u8]) -> std::io::Result<&[u8]> {
    read_whole(file, buf)
}

/// The reads of [`read_small`] on an open file.
fn read_whole(mut file: std::fs::File, buf: &mut [u8]) -> std::io::Result<&[u8]> {
    use std::io::Read;
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "longer than expected"));
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => return Ok(&buf[..len]),
            Ok(read) if len + read < buf.len() => return Ok(&buf[..len + read]),
            Ok(read) => len += read,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// Whether `/proc` is there to read (asked once).
pub fn proc_mounted() -> bool {
    static MOUNTED: OnceLock<bool> = OnceLock::new();
    *MOUNTED.get_or_init(|| std::path::Path::new("/proc/self/stat").exists())
}

/// The PIDs listed in `/proc`; an error when it cannot be read.
pub fn all_pids() -> std::io::Result<impl Iterator<Item = u32>> {
    Ok(std::fs::read_dir("/proc")?.flatten().filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok()))
}

/// `pid` as a kernel PID: `None` for 0 and for numbers past `i32::MAX`.
fn kernel_pid(pid: u32) -> Option<Pid> {
    Pid::from_raw(i32::try_from(pid).ok()?)
}

/// `kill(pid, 0)`: the process exists (we may lack permission to signal it, which still means it exists).
fn signal_probe(pid: u32) -> bool {
    kernel_pid(pid).is_some_and(|pid| exists(rustix::process::test_kill_process(pid)))
}

/// Whether a signal-0 probe found its target: it did when it was allowed, or refused for want of permission.
fn exists(probe: rustix::io::Result<()>) -> bool {
    matches!(probe, Ok(()) | Err(rustix::io::Errno::PERM))
}

/// Whether `pid` names a running process (a zombie is not running). PID 0 is never alive.
pub fn alive(pid: u32) -> bool {
    if pid == 0 || i32::try_from(pid).is_err() {
        return false;
    }
    if cfg!(target_os = "linux") {
        if let Ok(stat) = read_stat(pid) {
            return stat.is_some_and(|stat| !stat.is_zombie());
        }
    }
    signal_probe(pid)
}

/// The start time of `pid` in clock ticks since boot (`/proc/{pid}/stat` field 22); `None` when the process is
/// gone or the platform does not tell.
pub fn start_time(pid: u32) -> Option<u64> {
    if pid == 0 || !cfg!(target_os = "linux") {
        return None;
    }
    stat(pid).map(|stat| stat.start_time)
}

/// The clock ticks since boot now, on the clock and in the unit of a process's start time in `/proc/{pid}/stat`
/// (`CLOCK_BOOTTIME`, from which the kernel takes a new task's `start_boottime`, divided down to clock ticks);
/// `None` where that clock cannot be read or a tick is not a whole number of nanoseconds. Read just before and
/// just after a process is made, the same figure twice is that process's start time, without a read of its
/// `/proc` files (see [`start_time_between`]).
pub fn boot_ticks() -> Option<u64> {
    const NANOS: u64 = 1_000_000_000;
    let per_second = clock_ticks_per_second();
    if NANOS % per_second != 0 {
        return None;
    }
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let nanos = u64::try_from(now.tv_sec).ok()?.checked_mul(NANOS)?.checked_add(u64::try_from(now.tv_nsec).ok()?)?;
    Some(nanos / (NANOS / per_second))
}

/// The start time of a process made between two readings of [`boot_ticks`]: the tick both fell in, exactly what
/// `/proc/{pid}/stat` says (the kernel stamps a new task between them and rounds down the same way); `None` when
/// the two differ (a tick ended in between) or one is unknown.
pub fn start_time_between(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    before.filter(|_| before == after)
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
    if !cfg!(target_os = "linux") {
        return None;
    }
    let stat = stat(pid).filter(|stat| !stat.is_zombie())?;
    Some(Family { ppid: stat.ppid, pgrp: stat.pgrp, start_time: stat.start_time })
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
    let ticks = start_time(pid)?;
    let boot = boot_time()?;
    let per_second = clock_ticks_per_second();
    let since_boot = std::time::Duration::from_millis(ticks.saturating_mul(1000) / per_second);
    boot.checked_add(since_boot)
}

/// Clock ticks per second, the unit of the times in `/proc/{pid}/stat` (`sysconf(_SC_CLK_TCK)`; at least 1).
pub fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

/// The size of a memory page in bytes, the unit of the resident size in `/proc/{pid}/stat` and `statm`.
pub fn page_size() -> u64 {
    (rustix::param::page_size() as u64).max(1)
}

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

/// Whether any process (zombies included) is in the group `pgid`: `kill(-pgid, 0)`; a group we may not signal
/// exists all the same. Groups 0 and 1 never count.
pub fn group_exists(pgid: u32) -> bool {
    group_pid(pgid).is_some_and(|group| exists(rustix::process::test_kill_process_group(group)))
}

/// Whether the process group `pgid` still has a member that is not a zombie.
///
/// Members of a stopped service's group that already exited stay zombies until their new parent (often
/// PID 1) reaps them, which some init programs do only every second or two; they hold no resources and can
/// no longer be signalled, so they do not count. On Linux this scans `/proc` (only when the group exists at
/// all); elsewhere any member counts.
pub fn group_alive(pgid: u32) -> bool {
    if !group_exists(pgid) {
        return false;
    }
    if cfg!(target_os = "linux") && proc_mounted() {
        let Ok(mut pids) = all_pids() else { return true };
        return pids.any(|pid| is_group_member(pid, pgid));
    }
    true
}

/// Whether `pid` is a live (non-zombie) member of the group `pgid`, from its own `/proc/{pid}/stat`.
pub fn is_group_member(pid: u32, pgid: u32) -> bool {
    stat(pid).is_some_and(|stat| stat.pgrp == pgid && !stat.is_zombie())
}

/// The process group `pgid` as a kernel PID; `None` for groups 0 and 1 (never signalled) and out-of-range numbers.
fn group_pid(pgid: u32) -> Option<Pid> {
    kernel_pid(pgid).filter(|group| group.as_raw_nonzero().get() > 1)
}

/// Sends `signal` (a `SIGxxx` number; 0 only probes) to every process in the group `pgid`. Returns false when
/// the group no longer exists (or may not be signalled); groups 0 and 1 are never signalled.
pub fn signal_group(pgid: u32, signal: i32) -> bool {
    let Some(group) = group_pid(pgid) else { return false };
    match named(signal) {
        Some(Some(signal)) => rustix::process::kill_process_group(group, signal).is_ok(),
        Some(None) => rustix::process::test_kill_process_group(group).is_ok(),
        None => false,
    }
}

/// Sends `signal` (a `SIGxxx` number; 0 only probes) to the one process `pid`. PID 0, 1 and this process are
/// refused (`InvalidInput`).
pub fn signal_process(pid: u32, signal: i32) -> std::io::Result<()> {
    let refused = || std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("refusing to signal pid {pid}"));
    let target = kernel_pid(pid).filter(|_| pid > 1 && pid != std::process::id()).ok_or_else(refused)?;
    let res = match named(signal) {
        Some(Some(signal)) => rustix::process::kill_process(target, signal),
        Some(None) => rustix::process::test_kill_process(target),
        None => Err(rustix::io::Errno::INVAL),
    };
    res.map_err(std::io::Error::from)
}

/// Sends `signal` to the process group led by `process`, or, when it leads no group (an adopted monitor started
/// from a script without job control shares its parent's group), to it alone, if it is still the process that
/// started at its start time. Never to PID 0, 1 or this process. Returns false when nothing was signalled.
pub fn signal_leader(process: Process, signal: i32) -> bool {
    if signal_group(process.pid, signal) {
        return true;
    }
    process.is_running() && signal_process(process.pid, signal).is_ok()
}

/// A signal number as rustix names it: `Some(None)` for 0 (a probe), `None` for a number that names no signal.
fn named(signal: i32) -> Option<Option<Signal>> {
    if signal == 0 {
        return Some(None);
    }
    Signal::from_named_raw(signal).map(Some)
}

/// Makes `command` start its process detached: in a session of its own (`setsid` between fork and exec), so in a
/// process group of its own and without the controlling terminal of this process.
pub fn detach(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs between fork and exec; it makes one async-signal-safe system call (setsid, through
    // rustix's direct system call, no allocation, no lock) and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| rustix::process::setsid().map(drop).map_err(std::io::Error::from));
    }
}

#[cfg(test)]
mod tests {
    /// A small file is read whole; one that does not fit is an error, not a cut-off; a missing one is `NotFound`.
    #[test]
    fn small_files_are_read_whole_or_refused() {
        let dir = std::env::temp_dir().join(format!("pm-read-small-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("events");
        std::fs::write(&file, "populated 0\nfrozen 0\n").unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(super::read_small(&file, &mut buf).unwrap(), b"populated 0\nfrozen 0\n");
        // The same, by its name in the open folder.
        let folder = std::fs::File::open(&dir).unwrap();
        let at = super::read_small_at(std::os::fd::AsFd::as_fd(&folder), "events", &mut buf).map(<[u8]>::to_vec);
        assert_eq!(at.unwrap(), b"populated 0\nfrozen 0\n");
        let missing_at = super::read_small_at(std::os::fd::AsFd::as_fd(&folder), "missing", &mut buf).unwrap_err();
        assert_eq!(missing_at.kind(), std::io::ErrorKind::NotFound);
        let mut tight = [0u8; 21];
        assert_eq!(super::read_small(&file, &mut tight).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
        let mut exact = [0u8; 22];
        assert_eq!(super::read_small(&file, &mut exact).unwrap().len(), 21);
        let missing = super::read_small(&dir.join("missing"), &mut buf).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
        // One read that leaves room is the whole file: read from a pipe whose writer stays open, the text it holds
        // comes back without a second read (which would wait for the writer to close).
        let fifo = dir.join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR).unwrap();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (fifo, closed) = (fifo.clone(), closed.clone());
            std::thread::spawn(move || {
                use std::io::Write;
                let mut pipe = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
                pipe.write_all(b"populated 1\n").unwrap();
                // Open until the reader is done; a reader that waits for the end gets it after 20 s, too late.
                if finished.recv_timeout(std::time::Duration::from_secs(20)).is_err() {
                    closed.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            })
        };
        let read = super::read_small(&fifo, &mut buf).map(<[u8]>::to_vec);
        let waited_for_the_end = closed.load(std::sync::atomic::Ordering::SeqCst);
        let _ = done.send(());
        writer.join().unwrap();
        assert_eq!(read.unwrap(), b"populated 1\n");
        assert!(!waited_for_the_end, "read_small read again after a read that left room");
        let own = super::stat(std::process::id()).expect("our own stat");
        assert_eq!(own.pgrp, rustix::process::getpgrp().as_raw_nonzero().get() as u32);
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
    fn cpu_time_and_resident_size() {
        let line = "1234 (my) (proc 1) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 555 1000000 250 1844 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!((stat.pgrp, stat.cpu_ticks, stat.rss_pages, stat.start_time), (1234, 10, 250, 555));
        assert!(!stat.is_zombie());
        assert!(parse_stat("42 (a) b) Z 1 77 77 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 555 1000000 250")
            .unwrap()
            .is_zombie());
    }

    #[test]
    fn truncated_or_garbage_lines() {
        check("1 (x) S 1", None);
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

    /// A child made between two readings of the boot clock that fall in one tick has that tick as its start time,
    /// exactly what its `/proc/{pid}/stat` says (so the spawn need not read it). Tried until two readings fall in
    /// one tick (a tick is 10 ms; a spawn takes well under one).
    #[test]
    fn a_start_time_between_two_readings_of_the_boot_clock_is_the_kernels() {
        let mut told = 0;
        for _ in 0..50 {
            let before = super::boot_ticks();
            let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
            let between = super::start_time_between(before, super::boot_ticks());
            let kernels = super::start_time(child.id());
            let _ = child.kill();
            let _ = child.wait();
            if let Some(between) = between {
                assert_eq!(Some(between), kernels, "the boot clock's tick is not the kernel's start time");
                told += 1;
            }
        }
        assert!(told > 0, "no two readings of the boot clock fell in one tick in 50 spawns");
        assert_eq!(super::start_time_between(Some(7), Some(8)), None, "a tick ended in between");
        assert_eq!(super::start_time_between(None, None), None);
    }
}
