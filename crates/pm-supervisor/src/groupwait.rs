//! Waiting for the rest of a process group to end after its leader did (the stop grace), without scanning
//! all of `/proc` on an async worker.
//!
//! `kill(-pgid, 0)` says whether any process, zombies included, is in the group; it costs one system call.
//! When it says yes, the group's members are looked up once with a full `/proc` scan on the blocking pool,
//! and from then on only those members' own `/proc/{pid}/stat` files are read. Only when every known member
//! has ended while the group still exists (a member forked, or only zombies are left) is the group scanned
//! again, and then at most once per [`RESCAN_EVERY`].

use std::time::Duration;

use pm_registry::proc::{group_exists, is_group_member, proc_mounted};
use tokio::time::Instant;

/// The least time between two full scans of `/proc` for one group.
const RESCAN_EVERY: Duration = Duration::from_millis(250);

/// Waits until no live (non-zombie) process is left in the group `pgid`, or until `deadline`. Answers whether
/// the group is gone (only zombies left counts as gone: they hold nothing and need only reaping).
pub(crate) async fn wait_group_gone(pgid: u32, deadline: Instant) -> bool {
    let mut members: Vec<u32> = Vec::new();
    let mut scanned_at: Option<Instant> = None;
    // Without /proc only the system call can tell: the group counts as alive while it exists at all.
    let readable = cfg!(target_os = "linux") && proc_mounted();
    let mut pause = Duration::from_millis(10);
    loop {
        if !group_exists(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        members.retain(|pid| is_group_member(*pid, pgid));
        if readable && members.is_empty() && scanned_at.is_none_or(|at| at.elapsed() >= RESCAN_EVERY) {
            scanned_at = Some(Instant::now());
            members = tokio::task::spawn_blocking(move || scan_members(pgid)).await.unwrap_or_default();
            if members.is_empty() {
                // Present only as zombies: as good as gone.
                return true;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The groups scanned so far, one element per scan (tests count their own group's: other tests of the same binary
/// wait for groups of their own at the same time).
#[cfg(test)]
static SCANS: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Live (non-zombie) members of the group `pgid`, from one scan of `/proc` (blocking).
fn scan_members(pgid: u32) -> Vec<u32> {
    #[cfg(test)]
    SCANS.lock().expect("scans").push(pgid);
    let Ok(pids) = pm_registry::proc::all_pids() else { return Vec::new() };
    pids.filter(|pid| is_group_member(*pid, pgid)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kills the group on drop, pass or fail.
    struct Group(u32);

    impl Drop for Group {
        fn drop(&mut self) {
            crate::os::signal_group(self.0, libc::SIGKILL);
        }
    }

    /// A group whose leader is gone but whose member lives on: the wait reads `/proc` in full once, then only
    /// the member's own file, until the deadline; once the member is killed, it notices within a poll.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waits_for_the_rest_of_a_group_without_rescanning() {
        use std::os::unix::process::CommandExt;
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "sleep 60 & echo started; wait"])
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = leader.id();
        let _guard = Group(pgid);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(leader.stdout.take().unwrap()), &mut line).unwrap();
        // The leader we spawned.
        pm_registry::proc::signal_process(pgid, libc::SIGKILL).unwrap();
        leader.wait().unwrap();
        let scans_of_this_group = || SCANS.lock().unwrap().iter().filter(|scanned| **scanned == pgid).count();
        let before = scans_of_this_group();
        let started = Instant::now();
        assert!(!wait_group_gone(pgid, Instant::now() + Duration::from_millis(1500)).await, "the member still runs");
        assert!(started.elapsed() >= Duration::from_millis(1400));
        assert_eq!(scans_of_this_group() - before, 1, "one full scan, then only the member's own file");
        crate::os::signal_group(pgid, libc::SIGKILL);
        let started = Instant::now();
        assert!(wait_group_gone(pgid, Instant::now() + Duration::from_secs(10)).await);
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }
}
