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
    watch_readable(rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?)
}
