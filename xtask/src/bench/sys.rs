//! Linux process plumbing for the bench: signals, `/proc` readings (liveness, children, memory, CPU), and the
//! clean-up that finds every process this run started by a tag in its environment.
//!
//! xtask stays on std: the three libc calls it needs (`kill`, `signal`, `write`) are declared here; std links
//! libc anyway.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub(crate) const SIGINT: i32 = 2;
pub(crate) const SIGKILL: i32 = 9;
pub(crate) const SIGTERM: i32 = 15;

/// The environment variable every process the bench starts carries (daemons pass it on to their children).
pub(crate) const TAG_VAR: &str = "PM_BENCH_RUN";

mod ffi {
    #[repr(C)]
    pub(super) struct Timespec {
        pub(super) tv_sec: i64,
        pub(super) tv_nsec: i64,
    }

    extern "C" {
        pub(super) fn kill(pid: i32, sig: i32) -> i32;
        pub(super) fn signal(signum: i32, handler: usize) -> usize;
        pub(super) fn write(fd: i32, buf: *const u8, count: usize) -> isize;
        pub(super) fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
        pub(super) fn socket(domain: i32, kind: i32, protocol: i32) -> i32;
        pub(super) fn bind(fd: i32, addr: *const u8, len: u32) -> i32;
        pub(super) fn setsockopt(fd: i32, level: i32, name: i32, value: *const u8, len: u32) -> i32;
        pub(super) fn getrlimit(resource: i32, limit: *mut Rlimit) -> i32;
        pub(super) fn setrlimit(resource: i32, limit: *const Rlimit) -> i32;
    }

    #[repr(C)]
    pub(super) struct Rlimit {
        pub(super) cur: u64,
        pub(super) max: u64,
    }
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (children inherit it); answers the soft limit
/// in force afterwards.
pub(crate) fn raise_nofile_limit() -> u64 {
    const RLIMIT_NOFILE: i32 = 7;
    let mut limit = ffi::Rlimit { cur: 0, max: 0 };
    // SAFETY: getrlimit writes one rlimit (two 64-bit fields on 64-bit Linux) into `limit`.
    if unsafe { ffi::getrlimit(RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    if limit.cur < limit.max {
        let raised = ffi::Rlimit { cur: limit.max, max: limit.max };
        // SAFETY: setrlimit reads one rlimit; raising the soft limit up to the hard one needs no privilege.
        if unsafe { ffi::setrlimit(RLIMIT_NOFILE, &raised) } == 0 {
            limit.cur = raised.cur;
        }
    }
    limit.cur
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of the kernel's process-event timestamps.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = ffi::Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    unsafe {
        ffi::clock_gettime(1, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Exec timestamps of every process on the machine, from the kernel's process-events connector (netlink,
/// needs CAP_NET_ADMIN). With them, "when did the child exist" comes from the kernel (`ktime_get_ns` at exec)
/// instead of from how often the bench looks at /proc.
pub(crate) struct ExecEvents {
    seen: std::sync::Arc<(std::sync::Mutex<std::collections::HashMap<u32, u64>>, std::sync::Condvar)>,
    /// Exit timestamps of processes (thread-group leaders), by PID.
    exits: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u32, u64>>>,
}

impl ExecEvents {
    /// Subscribes; `None` when the connector is not available (no permission, or not built into the kernel).
    pub(crate) fn listen() -> Option<ExecEvents> {
        use std::io::Write;
        use std::os::fd::FromRawFd;
        const AF_NETLINK: i32 = 16;
        const SOCK_DGRAM: i32 = 2;
        const SOCK_CLOEXEC: i32 = 0o2000000;
        const NETLINK_CONNECTOR: i32 = 11;
        const SOL_SOCKET: i32 = 1;
        const SO_RCVBUFFORCE: i32 = 33;
        // SAFETY: socket(2) takes plain integers.
        let fd = unsafe { ffi::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let mut socket = unsafe { std::fs::File::from_raw_fd(fd) };
        let mut addr = [0u8; 12];
        addr[..2].copy_from_slice(&(AF_NETLINK as u16).to_ne_bytes());
        addr[8..12].copy_from_slice(&1u32.to_ne_bytes()); // CN_IDX_PROC
        let rcvbuf = 8i32 << 20;
        // SAFETY: the pointers address live buffers of the given lengths.
        unsafe {
            if ffi::bind(fd, addr.as_ptr(), addr.len() as u32) != 0 {
                return None;
            }
            ffi::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, (&rcvbuf as *const i32).cast(), 4);
        }
        socket.write_all(&listen_request()).ok()?;
        let seen =
            std::sync::Arc::new((std::sync::Mutex::new(std::collections::HashMap::new()), std::sync::Condvar::new()));
        let shared = seen.clone();
        let exits = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let shared_exits = exits.clone();
        std::thread::Builder::new()
            .name("bench-proc-events".to_owned())
            .spawn(move || read_events(socket, &shared, &shared_exits))
            .ok()?;
        Some(ExecEvents { seen, exits })
    }

    /// The monotonic time at which `pid` exited at or after `after_ns`, if seen.
    pub(crate) fn exit_ns(&self, pid: u32, after_ns: u64) -> Option<u64> {
        self.exits.lock().expect("exit events").get(&pid).copied().filter(|stamp| *stamp >= after_ns)
    }

    /// The monotonic time at which `pid` exec'd at or after `after_ns`, waiting up to `timeout` for the event
    /// (an older entry belongs to an earlier process with the same PID).
    pub(crate) fn exec_ns(&self, pid: u32, after_ns: u64, timeout: Duration) -> Option<u64> {
        let (map, ready) = &*self.seen;
        let deadline = Instant::now() + timeout;
        let mut map = map.lock().expect("exec events");
        loop {
            if let Some(stamp) = map.get(&pid).filter(|stamp| **stamp >= after_ns) {
                return Some(*stamp);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            map = ready.wait_timeout(map, left).expect("exec events").0;
        }
    }
}

/// Sends `sig` to one process; false when it does not exist (or is not ours).
pub(crate) fn send(pid: u32, sig: i32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    if pid <= 1 {
        return false;
    }
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { ffi::kill(pid, sig) == 0 }
}

/// Sends `sig` to a process group.
pub(crate) fn send_group(pgid: u32, sig: i32) -> bool {
    let Ok(pgid) = i32::try_from(pgid) else { return false };
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid addresses the group.
    unsafe { ffi::kill(-pgid, sig) == 0 }
}

/// The fields of `/proc/<pid>/stat` the bench reads.
#[derive(Debug, Clone)]
pub(crate) struct Stat {
    pub(crate) comm: String,
    pub(crate) state: char,
    /// utime + stime, in clock ticks (whole thread group, including threads that ended).
    pub(crate) cpu_ticks: u64,
}

pub(crate) fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let state = rest.first()?.chars().next()?;
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some(Stat { comm, state, cpu_ticks: utime + stime })
}

/// The process exists and is neither a zombie nor dead.
pub(crate) fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|stat| !matches!(stat.state, 'Z' | 'X' | 'x'))
}

/// The command line of a process, split at NULs.
pub(crate) fn cmdline(pid: u32) -> Vec<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    bytes
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// Direct children of `pid` (of all its threads), from `/proc/<pid>/task/*/children`.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let mut res = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return res };
    let mut text = String::new();
    for task in tasks.flatten() {
        text.clear();
        let Ok(mut file) = std::fs::File::open(task.path().join("children")) else { continue };
        if file.read_to_string(&mut text).is_err() {
            continue;
        }
        res.extend(text.split_whitespace().filter_map(|pid| pid.parse::<u32>().ok()));
    }
    res
}

/// Whether the kernel offers `/proc/<pid>/task/<tid>/children` (CONFIG_PROC_CHILDREN).
pub(crate) fn has_children_files() -> bool {
    Path::new(&format!("/proc/self/task/{}/children", std::process::id())).exists()
}

/// Resident and proportional set size, in KiB, from `/proc/<pid>/smaps_rollup`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Memory {
    pub(crate) rss_kib: u64,
    pub(crate) pss_kib: u64,
    pub(crate) anon_kib: u64,
}

pub(crate) fn memory(pid: u32) -> Option<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|line| line.starts_with(name))?;
        line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()
    };
    Some(Memory { rss_kib: field("Rss:")?, pss_kib: field("Pss:")?, anon_kib: field("Anonymous:").unwrap_or(0) })
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 when that is unavailable).
pub(crate) fn clk_tck() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .filter(|tck| *tck > 0)
            .unwrap_or(100)
    })
}

/// CPU time of a process as two readings: `/proc/<pid>/stat` utime+stime (whole group, clock-tick resolution),
/// and the sum of `/proc/<pid>/task/*/schedstat` run times (nanoseconds, live threads only).
#[derive(Debug, Clone)]
pub(crate) struct Cpu {
    pub(crate) ticks: u64,
    pub(crate) run_ns: u64,
    pub(crate) tids: BTreeSet<u32>,
}

pub(crate) fn cpu(pid: u32) -> Option<Cpu> {
    let ticks = stat(pid)?.cpu_ticks;
    let mut run_ns = 0;
    let mut tids = BTreeSet::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        run_ns += text.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()).unwrap_or(0);
        tids.insert(tid);
    }
    Some(Cpu { ticks, run_ns, tids })
}

/// Milliseconds of CPU between two readings: the nanosecond figure when the set of threads stayed the same
/// (so no thread's time was lost), else the clock-tick figure. Also answers which one was used.
pub(crate) fn cpu_ms_between(before: &Cpu, after: &Cpu) -> (f64, &'static str) {
    if before.tids == after.tids && after.run_ns >= before.run_ns {
        ((after.run_ns - before.run_ns) as f64 / 1e6, "schedstat")
    } else {
        (after.ticks.saturating_sub(before.ticks) as f64 * 1000.0 / clk_tck() as f64, "stat ticks")
    }
}

/// Milliseconds of CPU `pid` used over the next `window`, at nanosecond resolution: every thread's
/// `/proc/<pid>/task/<tid>/schedstat` run time, read every 250 ms so that a thread that ends during the window
/// (a blocking-pool thread, say) loses at most what it ran in its last 250 ms. Also says how it was read; the
/// clock-tick figure of `/proc/<pid>/stat` (10 ms resolution) where no thread's schedstat is readable.
pub(crate) fn cpu_ms_over(pid: u32, window: Duration) -> Option<(f64, &'static str)> {
    let read = || -> Option<std::collections::BTreeMap<u32, u64>> {
        let mut threads = std::collections::BTreeMap::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
            let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
            if let Some(ns) = text.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()) {
                threads.insert(tid, ns);
            }
        }
        Some(threads)
    };
    let ticks_before = stat(pid)?.cpu_ticks;
    let started = Instant::now();
    let mut last = read()?;
    let mut run_ns = 0u64;
    let mut threads_seen = !last.is_empty();
    while started.elapsed() < window {
        std::thread::sleep(Duration::from_millis(250).min(window.saturating_sub(started.elapsed())));
        let now = read()?;
        threads_seen |= !now.is_empty();
        for (tid, ns) in &now {
            // A thread that started during the window counts from zero.
            run_ns += ns.saturating_sub(last.get(tid).copied().unwrap_or(0));
        }
        last = now;
    }
    if threads_seen {
        return Some((run_ns as f64 / 1e6, "schedstat ns, per thread every 250 ms"));
    }
    let ticks = stat(pid)?.cpu_ticks.saturating_sub(ticks_before);
    Some((ticks as f64 * 1000.0 / clk_tck() as f64, "stat clock ticks"))
}

/// The CPU `pid` has used so far, in ms: the sum of its live threads' `schedstat` run times (nanoseconds); the
/// clock ticks of `/proc/<pid>/stat` (which count ended threads too, at 10 ms resolution) where none is readable.
pub(crate) fn cpu_ms_so_far(pid: u32) -> Option<f64> {
    let mut run_ns = 0u64;
    let mut seen = false;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        if let Some(ns) = text.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()) {
            run_ns += ns;
            seen = true;
        }
    }
    if seen {
        return Some(run_ns as f64 / 1e6);
    }
    Some(stat(pid)?.cpu_ticks as f64 * 1000.0 / clk_tck() as f64)
}

/// The tag of this run (set once at start).
static TAG: OnceLock<String> = OnceLock::new();

pub(crate) fn set_tag(tag: &str) {
    let _ = TAG.set(tag.to_owned());
}

pub(crate) fn tag() -> &'static str {
    TAG.get().map(String::as_str).unwrap_or("")
}

/// Every live process (other than this one) whose environment carries this run's tag.
pub(crate) fn tagged_pids() -> Vec<u32> {
    let tag = tag();
    if tag.is_empty() {
        return Vec::new();
    }
    let needle = format!("{TAG_VAR}={tag}");
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|environ| environ.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
        })
        .collect()
}

/// SIGKILLs every process of this run (and their groups) until none is left, for up to two seconds. Monitors
/// go first so that they do not restart what is killed next.
pub(crate) fn sweep() -> usize {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut killed = BTreeSet::new();
    loop {
        let mut pids: Vec<u32> = tagged_pids().into_iter().filter(|pid| alive(*pid)).collect();
        if pids.is_empty() || Instant::now() > deadline {
            return killed.len();
        }
        pids.sort_by_key(|pid| !stat(*pid).is_some_and(|stat| stat.comm.starts_with("process_monit")));
        for pid in pids {
            send(pid, SIGKILL);
            send_group(pid, SIGKILL);
            killed.insert(pid);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_signum: i32) {
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is a valid byte on the stack.
        unsafe {
            ffi::write(fd, &byte, 1);
        }
    }
}

/// On SIGINT or SIGTERM: runs `cleanup` on a helper thread (not in the handler), then exits with 130.
pub(crate) fn on_interrupt(cleanup: impl Fn() + Send + 'static) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let (mut rx, tx) = std::os::unix::net::UnixStream::pair()?;
    WAKE_FD.store(tx.as_raw_fd(), Ordering::Relaxed);
    // The write end stays open for the life of the process.
    std::mem::forget(tx);
    std::thread::Builder::new().name("bench-interrupt".to_owned()).spawn(move || {
        let mut byte = [0u8; 1];
        if rx.read_exact(&mut byte).is_ok() {
            eprintln!("\nbench: interrupted; killing everything it started");
            cleanup();
            std::process::exit(130);
        }
    })?;
    let handler = on_signal as extern "C" fn(i32) as usize;
    // SAFETY: the handler only calls write(2) on a descriptor that stays open.
    unsafe {
        ffi::signal(SIGINT, handler);
        ffi::signal(SIGTERM, handler);
    }
    Ok(())
}

/// A moment to measure from, on both clocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    pub(crate) ns: u64,
    pub(crate) at: Instant,
}

impl Mark {
    pub(crate) fn now() -> Mark {
        Mark { ns: monotonic_ns(), at: Instant::now() }
    }
}

/// Tells when a child came to exist: from the kernel's exec timestamp when process events are available,
/// otherwise from when the bench's /proc polling saw it.
pub(crate) struct Observer {
    events: Option<ExecEvents>,
}

impl Observer {
    pub(crate) fn new() -> Observer {
        Observer { events: ExecEvents::listen() }
    }

    /// Which clock the start timings use.
    pub(crate) fn source(&self) -> &'static str {
        if self.events.is_some() {
            "kernel exec timestamps (proc connector)"
        } else {
            "/proc polling every 0.2 ms (no proc connector: needs CAP_NET_ADMIN)"
        }
    }

    /// Milliseconds from `mark` until the last of `pids` existed (exec done), `seen` being when polling found them
    /// all: the latest of their exec timestamps, waiting for the events up to a second in all (a PID without one
    /// counts as `seen`).
    pub(crate) fn last_of(&self, mark: Mark, pids: &[u32], seen: Instant) -> f64 {
        let seen_ms = seen.saturating_duration_since(mark.at).as_secs_f64() * 1000.0;
        let Some(events) = &self.events else { return seen_ms };
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut last: f64 = 0.0;
        for pid in pids {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = match events.exec_ns(*pid, mark.ns, left) {
                Some(stamp) => (stamp - mark.ns) as f64 / 1e6,
                None => seen_ms,
            };
            last = last.max(ms);
        }
        last
    }

    /// Waits until every one of `pids` has exited (its kernel exit event, else no live process with that PID), up to
    /// `timeout`; answers the milliseconds from `mark` until the last exit (from the exit events where the bench has
    /// them, else when polling saw the last one gone), or the number still running at the timeout.
    ///
    /// With exit events each look costs a map lookup per PID still running, and `/proc` is read only for PIDs whose
    /// event did not come within a second of the others: polling 10,000 `/proc/<pid>/stat` files every few
    /// milliseconds takes CPU from the monitor being measured.
    pub(crate) fn wait_exits(&self, mark: Mark, pids: &[u32], timeout: Duration) -> Result<f64, usize> {
        let mut left: Vec<u32> = pids.to_vec();
        let mut last_ns = mark.ns;
        let mut quiet_since = Instant::now();
        loop {
            let before = left.len();
            match &self.events {
                Some(events) => left.retain(|pid| match events.exit_ns(*pid, mark.ns) {
                    Some(stamp) => {
                        last_ns = last_ns.max(stamp);
                        false
                    }
                    None => true,
                }),
                None => left.retain(|pid| alive(*pid)),
            }
            if left.len() != before {
                quiet_since = Instant::now();
            }
            // An exit event lost (the socket's buffer overflowed): look at `/proc` for those.
            if self.events.is_some() && !left.is_empty() && quiet_since.elapsed() > Duration::from_secs(1) {
                left.retain(|pid| alive(*pid));
                if left.is_empty() {
                    last_ns = last_ns.max(monotonic_ns());
                }
            }
            if left.is_empty() {
                return Ok(if self.events.is_some() {
                    (last_ns - mark.ns) as f64 / 1e6
                } else {
                    mark.at.elapsed().as_secs_f64() * 1000.0
                });
            }
            if mark.at.elapsed() > timeout {
                return Err(left.len());
            }
            std::thread::sleep(Duration::from_millis(if self.events.is_some() { 20 } else { 2 }));
        }
    }

    /// Milliseconds from `mark` until `pid` existed (exec done); `seen` is when polling found it.
    pub(crate) fn since(&self, mark: Mark, pid: u32, seen: Instant) -> f64 {
        if let Some(stamp) =
            self.events.as_ref().and_then(|events| events.exec_ns(pid, mark.ns, Duration::from_secs(1)))
        {
            return (stamp - mark.ns) as f64 / 1e6;
        }
        seen.saturating_duration_since(mark.at).as_secs_f64() * 1000.0
    }
}

/// The `PROC_CN_MCAST_LISTEN` request of the process-events connector: nlmsghdr (16) + cn_msg (20) + the op (4).
fn listen_request() -> Vec<u8> {
    let mut msg = Vec::with_capacity(40);
    msg.extend_from_slice(&40u32.to_ne_bytes());
    msg.extend_from_slice(&3u16.to_ne_bytes()); // NLMSG_DONE
    msg.extend_from_slice(&0u16.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&std::process::id().to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // CN_IDX_PROC
    msg.extend_from_slice(&1u32.to_ne_bytes()); // CN_VAL_PROC
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&4u16.to_ne_bytes());
    msg.extend_from_slice(&0u16.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // PROC_CN_MCAST_LISTEN
    msg
}

type ExecSeen = (std::sync::Mutex<std::collections::HashMap<u32, u64>>, std::sync::Condvar);

/// Reads process events off the connector `socket` until it closes: exec timestamps into `seen` (waking its
/// waiters), whole-process exit timestamps into `exits`, by PID.
fn read_events(
    mut socket: std::fs::File,
    seen: &ExecSeen,
    exits: &std::sync::Mutex<std::collections::HashMap<u32, u64>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match socket.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            // ENOBUFS: events were lost; carry on.
            Err(err) if err.raw_os_error() == Some(105) => continue,
            Err(_) => return,
        };
        let mut at = 0;
        while at + 16 <= n {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap_or_default()) as usize;
            if len < 16 || at + len > n {
                break;
            }
            // After nlmsghdr (16) and cn_msg (20): what, cpu, timestamp_ns, then the event data.
            let event = &buf[at + 36..at + len];
            let what = event.get(0..4).map_or(0, |what| u32::from_ne_bytes(what.try_into().unwrap_or_default()));
            // PROC_EVENT_EXIT: process_pid, process_tgid after the header; a whole process when equal.
            if event.len() >= 24 && what == 0x8000_0000 && event[16..20] == event[20..24] {
                let stamp = u64::from_ne_bytes(event[8..16].try_into().unwrap_or_default());
                let pid = u32::from_ne_bytes(event[16..20].try_into().unwrap_or_default());
                exits.lock().expect("exit events").insert(pid, stamp);
            }
            if event.len() >= 24 && what == 2 {
                let stamp = u64::from_ne_bytes(event[8..16].try_into().unwrap_or_default());
                let pid = u32::from_ne_bytes(event[16..20].try_into().unwrap_or_default());
                let (map, ready) = seen;
                map.lock().expect("exec events").insert(pid, stamp);
                ready.notify_all();
            }
            at += (len + 3) & !3;
        }
    }
}
