//! Thin wrappers over the POSIX calls the engine needs: signalling process groups and watching processes that
//! are not our children.

use std::time::Duration;

/// Sends `signal` to every process in the group `pgid`. Returns false when the group no longer exists.
pub(crate) fn signal_group(pgid: u32, signal: i32) -> bool {
    let Ok(pgid) = i32::try_from(pgid) else { return false };
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid addresses the process group.
    unsafe { libc::kill(-pgid, signal) == 0 }
}

/// Sends `signal` to the process group led by `pid`, or, when `pid` leads no group (an adopted monitor started
/// from a script without job control shares its parent's group), to `pid` alone, if it is still the process
/// that started at `start_time`. Never to PID 0, 1 or this process. Returns false when nothing was signalled.
pub(crate) fn signal_leader(pid: u32, start_time: Option<u64>, signal: i32) -> bool {
    if signal_group(pid, signal) {
        return true;
    }
    let Ok(raw) = i32::try_from(pid) else { return false };
    if raw <= 1 || pid == std::process::id() || !pm_registry::pid::is_same_process(pid, start_time) {
        return false;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a positive pid addresses that one process.
    unsafe { libc::kill(raw, signal) == 0 }
}

/// Descriptors the monitor keeps for itself besides one per process (servers, connections, log files being
/// rotated, the registry and its locks, a check's socket).
pub(crate) const NOFILE_RESERVE: u64 = 256;

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (a monitor holds a descriptor per running
/// process: its pidfd). Answers the (soft, hard) limits in force afterwards; `None` where they cannot be read.
pub(crate) fn raise_nofile_limit() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads one rlimit; raising the soft limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    // rlim_t is u64 on Linux and the BSDs.
    let finite = |value: libc::rlim_t| if value == libc::RLIM_INFINITY { u64::MAX } else { value };
    Some((finite(limit.rlim_cur), finite(limit.rlim_max)))
}

/// Returns the free memory of the heap to the system (glibc's `malloc_trim`; nothing elsewhere).
pub(crate) fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory held by the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Whether any process (including a zombie) is still in the group `pgid`.
pub(crate) fn group_exists(pgid: u32) -> bool {
    signal_group(pgid, 0)
}

/// Waits until a process that is not our child exits.
///
/// On Linux this uses a pidfd, which becomes readable the moment the process exits; elsewhere (or on kernels
/// without pidfd) it polls every 250 ms.
pub(crate) struct ExitWatch {
    pid: u32,
    start_time: Option<u64>,
    #[cfg(target_os = "linux")]
    pidfd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl ExitWatch {
    pub(crate) fn new(pid: u32, start_time: Option<u64>) -> ExitWatch {
        ExitWatch {
            pid,
            start_time,
            #[cfg(target_os = "linux")]
            pidfd: open_pidfd(pid).ok(),
        }
    }

    /// Resolves once the process is gone (or is a different process reusing the PID).
    pub(crate) async fn wait(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.pidfd {
            while let Ok(mut guard) = fd.readable().await {
                guard.retain_ready();
                if !pm_registry::pid::is_same_process(self.pid, self.start_time) {
                    return;
                }
                // Readable but still the same live process: spurious; look again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        while pm_registry::pid::is_same_process(self.pid, self.start_time) {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(target_os = "linux")]
fn open_pidfd(pid: u32) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh descriptor that nothing else owns.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: we own the descriptor and keep it open for as long as the AsyncFd lives.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }
        .map_err(|err| std::io::Error::other(err.to_string()))
}
