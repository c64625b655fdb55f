//! The engine's side of the OS: signalling process groups (through `pm_registry::proc`), its own limits and heap,
//! and watching processes that are not our children.

use std::os::fd::OwnedFd;
use std::time::Duration;

use pm_registry::proc::Process;
pub(crate) use pm_registry::proc::{group_exists, signal_group, signal_leader};

/// Descriptors the monitor keeps for itself besides one per process (servers, connections, log files being
/// rotated, the registry and its locks, a check's socket).
pub(crate) const NOFILE_RESERVE: u64 = 256;

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (a monitor holds a descriptor per running
/// process: its pidfd). Answers the (soft, hard) limits in force afterwards (`u64::MAX` for unlimited).
pub(crate) fn raise_nofile_limit() -> Option<(u64, u64)> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let (mut soft, hard) = (limit.current.unwrap_or(u64::MAX), limit.maximum.unwrap_or(u64::MAX));
    // Raising the soft limit up to the hard one needs no privilege.
    if soft < hard && setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum }).is_ok() {
        soft = hard;
    }
    Some((soft, hard))
}

/// What the monitor asks of glibc's allocator (nothing happens elsewhere).
#[derive(Debug, Clone, Copy)]
pub enum Heap {
    /// One malloc arena for all threads (`mallopt(M_ARENA_MAX, 1)`): the daemon allocates little, and per-thread
    /// arenas cost resident memory for nothing. Asked before other threads exist.
    OneArena,
    /// Returns the free memory of the heap to the system (`malloc_trim(0)`).
    Trim,
}

/// Tunes the allocator (see [`Heap`]); no safe crate offers these two glibc calls.
pub fn tune_heap(what: Heap) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning and malloc_trim only releases free memory held by the
    // allocator; neither touches memory of ours.
    unsafe {
        match what {
            Heap::OneArena => {
                libc::mallopt(libc::M_ARENA_MAX, 1);
            }
            Heap::Trim => {
                libc::malloc_trim(0);
            }
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = what;
}

/// Returns the free memory of the heap to the system (glibc's `malloc_trim`; nothing elsewhere).
pub(crate) fn trim_heap() {
    tune_heap(Heap::Trim);
}

/// Moves `fd` (a pidfd, kept as long as its process runs) to the lowest free descriptor from [`NOFILE_RESERVE`]
/// on, where nothing else of the monitor's goes while it has fewer descriptors of its own: the descriptors a
/// spawn hands its child then stay low, and a child copies only the low part of the table (`cgroup_spawn`). Where
/// that fails (a limit), `fd` stays where it is.
pub(crate) fn park_fd(fd: OwnedFd) -> OwnedFd {
    let floor = NOFILE_RESERVE as std::os::fd::RawFd;
    if std::os::fd::AsRawFd::as_raw_fd(&fd) >= floor {
        return fd;
    }
    rustix::io::fcntl_dupfd_cloexec(&fd, floor).unwrap_or(fd)
}

/// Grows the descriptor table to hold [`NOFILE_RESERVE`] at start-up, where [`park_fd`] puts the first pidfd.
///
/// The kernel grows a table shared by several threads only after an RCU grace period (milliseconds on a busy
/// host); done here, that wait is the start-up's and not the first process's start. The table never shrinks.
pub(crate) fn reserve_fd_table() {
    let Ok(root) =
        rustix::fs::open("/", rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC, rustix::fs::Mode::empty())
    else {
        return;
    };
    // Dropped at once: only the grown table stays.
    let _ = rustix::io::fcntl_dupfd_cloexec(&root, NOFILE_RESERVE as std::os::fd::RawFd);
}

/// Registers `fd` with tokio's reactor, to wait until it is readable (a pidfd, an inotify descriptor).
pub(crate) fn watch_readable(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is open and names the same descriptor until it is dropped, and the `AsyncFd` owns it
    // for its whole life: the conditions `register_with_interest` asks of its caller.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|err| std::io::Error::other(err.to_string()))
}

/// Waits until a process that is not our child exits.
///
/// On Linux this uses a pidfd, which becomes readable the moment the process exits; elsewhere (or on kernels
/// without pidfd) it polls every 250 ms.
pub(crate) struct ExitWatch {
    process: Process,
    #[cfg(target_os = "linux")]
    pidfd: Option<tokio::io::unix::AsyncFd<OwnedFd>>,
}

impl ExitWatch {
    pub(crate) fn new(process: Process) -> ExitWatch {
        ExitWatch {
            process,
            #[cfg(target_os = "linux")]
            pidfd: open_pidfd(process.pid).ok(),
        }
    }

    /// Resolves once the process is gone (or is a different process reusing the PID).
    pub(crate) async fn wait(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.pidfd {
            while let Ok(mut guard) = fd.readable().await {
                guard.retain_ready();
                if !self.process.is_running() {
                    return;
                }
                // Readable but still the same live process: spurious; look again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        while self.process.is_running() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(target_os = "linux")]
fn open_pidfd(pid: u32) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).map_err(std::io::Error::other)?)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    watch_readable(park_fd(rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::fd::AsRawFd;

    /// Kills and reaps the child on drop, pass or fail.
    struct Killed(std::process::Child);

    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A pidfd is moved up to the reserve's end, out of the low descriptors a spawn hands its child, and it still
    /// names the process (readable once it exits).
    #[tokio::test]
    async fn pidfds_are_parked_above_the_reserve() {
        let mut child = Killed(std::process::Command::new("sleep").arg("30").spawn().unwrap());
        let pid = rustix::process::Pid::from_raw(child.0.id() as i32).unwrap();
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
        let parked = super::watch_readable(super::park_fd(pidfd)).unwrap();
        assert!(parked.as_raw_fd() >= super::NOFILE_RESERVE as i32, "parked at {}", parked.as_raw_fd());
        child.0.kill().unwrap();
        let ready = tokio::time::timeout(std::time::Duration::from_secs(10), parked.readable()).await;
        assert!(ready.is_ok_and(|ready| ready.is_ok()), "the parked pidfd did not report the exit");
    }

    /// After the start-up's reservation the table holds the parking floor (`FDSize` in `/proc/self/status`).
    #[test]
    fn the_descriptor_table_is_grown_to_the_parking_floor() {
        super::reserve_fd_table();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let size: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("FDSize:"))
            .and_then(|size| size.trim().parse().ok())
            .expect("FDSize in /proc/self/status");
        assert!(size > super::NOFILE_RESERVE, "FDSize {size}");
    }
}
