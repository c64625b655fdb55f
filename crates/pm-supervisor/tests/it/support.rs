//! Test fixtures: a temporary home, a supervisor on it, and cleanup of every process it started.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pm_core::{ProcessConfig, ProcessEntry};
use pm_supervisor::{Supervisor, SupervisorConfig};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A temporary folder removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pm-sup-it-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A supervisor in its own temporary home. On drop, every process group it ever reported is killed, pass or
/// fail.
pub struct Fixture {
    pub sup: Supervisor,
    pub dir: TempDir,
    seen: Arc<std::sync::Mutex<Vec<u32>>>,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::with(Supervisor::new)
    }

    /// A supervisor with a cgroup per process where the machine lets it make them (as the daemon does).
    #[allow(dead_code)] // not used by every test binary
    pub fn with_cgroups() -> Fixture {
        Fixture::with(Supervisor::with_detected_containment)
    }

    fn with(make: impl FnOnce(SupervisorConfig) -> Supervisor) -> Fixture {
        let dir = TempDir::new();
        let paths = pm_registry::Paths::new(dir.path(), "test").unwrap();
        let sup = make(SupervisorConfig {
            paths,
            keep_runs: 10,
            default_cwd: dir.path().to_path_buf(),
            extra_env: Vec::new(),
        });
        Fixture { sup, dir, seen: Default::default() }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Remembers the PIDs of every process, for cleanup.
    pub fn track(&self) {
        let mut seen = self.seen.lock().unwrap();
        for entry in self.sup.list() {
            if let Some(pid) = entry.pid {
                if !seen.contains(&pid) {
                    seen.push(pid);
                }
            }
        }
    }

    /// Polls `done` on the entry until it holds or `timeout` passes; tracks PIDs on the way.
    pub async fn wait(&self, id: &str, timeout: Duration, done: impl Fn(&ProcessEntry) -> bool) -> ProcessEntry {
        let deadline = Instant::now() + timeout;
        loop {
            self.track();
            let entry = self.sup.get(id).expect("process registered");
            if done(&entry) {
                return entry;
            }
            assert!(Instant::now() < deadline, "timed out waiting on {id}; last entry: {entry:#?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.track();
        for pid in self.seen.lock().unwrap().iter() {
            // A process group we started.
            pm_registry::proc::signal_group(*pid, libc::SIGKILL);
        }
        // The cgroup folders a fixture with containment made (`pm-test-<hash of its home>`), and anything left in
        // them: no daemon shuts down here to remove them.
        pm_supervisor::cgroup::remove_for_home(self.dir.path());
    }
}

/// A child of the test killed (by PID and by its group) and reaped on drop, pass or fail.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Once reaped, its PID may belong to someone else: nothing to kill then.
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        // A process we started and have not reaped (so its PID is still ours).
        let pid = self.0.id();
        pm_registry::proc::signal_group(pid, libc::SIGKILL);
        let _ = pm_registry::proc::signal_process(pid, libc::SIGKILL);
        let _ = self.0.wait();
    }
}

/// A config running `sh -c script`.
pub fn sh(id: &str, script: &str) -> ProcessConfig {
    let mut config = ProcessConfig::new(id, id, "/bin/sh");
    config.args = vec!["-c".to_owned(), script.to_owned()];
    config
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    pm_registry::proc::alive(pid)
}

/// Reads a file of one integer per line.
pub fn read_numbers(path: &Path) -> Vec<u128> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|line| line.trim().parse().ok()).collect()
}

/// Polls until `check` holds or the timeout passes.
pub async fn eventually(timeout: Duration, what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
