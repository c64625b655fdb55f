//! Stopping a process group from a client when no monitor runs.

use std::time::{Duration, Instant};

use pm_registry::proc::{self, Process};

/// SIGTERM to the group led by `leader`, up to `grace` for it to exit, then SIGKILL to what is left.
pub(crate) fn stop_group(leader: Process, grace: Duration) {
    let pgid = leader.pid;
    if pgid <= 1 || i32::try_from(pgid).is_err() {
        return;
    }
    proc::signal_group(pgid, libc::SIGTERM);
    // A stopped process acts on SIGTERM only once continued.
    proc::signal_group(pgid, libc::SIGCONT);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && (leader.is_running() || proc::group_alive(pgid)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Signal 0 only checks that the group exists (and may be signalled).
    if proc::group_alive(pgid) && proc::signal_group(pgid, 0) {
        proc::signal_group(pgid, libc::SIGKILL);
    }
}
