//! Stopping a process group from a client when no monitor runs.

use std::time::{Duration, Instant};

/// SIGTERM to the group led by `pid`, up to `grace` for it to exit, then SIGKILL to what is left.
pub(crate) fn stop_group(pid: u32, start_time: Option<u64>, grace: Duration) {
    let Ok(pgid) = i32::try_from(pid) else { return };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid addresses the process group.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    // SAFETY: as above; a stopped process acts on SIGTERM only once continued.
    unsafe { libc::kill(-pgid, libc::SIGCONT) };
    let deadline = Instant::now() + grace;
    // SAFETY: as above; signal 0 only checks that the group exists.
    let group_exists = || unsafe { libc::kill(-pgid, 0) == 0 };
    while Instant::now() < deadline
        && (pm_registry::pid::is_same_process(pid, start_time) || pm_registry::pid::group_alive(pid))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    if pm_registry::pid::group_alive(pid) && group_exists() {
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}
