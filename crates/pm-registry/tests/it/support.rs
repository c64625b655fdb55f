//! Test fixtures: private temporary folders, child processes that are always reaped, and worker re-execution.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use pm_core::{ProcessConfig, ProcessEntry, Registry, Timestamp};
use pm_registry::{Paths, Store};

/// The variable naming the worker role a re-executed test binary plays.
const ROLE_VAR: &str = "PM_REGISTRY_IT_ROLE";
/// The variable holding the worker's folder.
const DIR_VAR: &str = "PM_REGISTRY_IT_DIR";

/// A folder of its own for one test, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("pm-registry-it-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A child process that is killed and reaped when dropped.
pub struct ChildGuard {
    child: Child,
}

impl ChildGuard {
    pub fn spawn(command: &mut Command) -> ChildGuard {
        ChildGuard { child: command.spawn().unwrap() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the exit, at most until `timeout`; panics (and the drop kills it) when it takes longer.
    pub fn wait_timeout(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "child {} still running after {timeout:?}", self.pid());
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGKILL and reaps the child.
    pub fn kill_hard(&mut self) {
        // Our own child, not reaped yet: its PID is still its own.
        pm_registry::proc::signal_process(self.pid(), libc::SIGKILL).unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the test `test_name` of this binary in a new process playing `role` in `dir`.
pub fn spawn_worker(test_name: &str, role: &str, dir: &Path, envs: &[(&str, String)]) -> ChildGuard {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .env(DIR_VAR, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for (key, value) in envs {
        command.env(key, value);
    }
    ChildGuard::spawn(&mut command)
}

/// The folder of this worker when this process was started to play `role`, else `None`.
pub fn worker_dir(role: &str) -> Option<PathBuf> {
    if std::env::var_os(ROLE_VAR)? != *role {
        return None;
    }
    Some(PathBuf::from(std::env::var_os(DIR_VAR).expect("worker folder variable")))
}

/// Polls `condition` every 5 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

pub fn store(dir: &Path, instance_id: &str) -> Store {
    Store::new(Paths::new(dir, instance_id).unwrap())
}

/// Registers a stopped entry `id` running `/bin/true`.
pub fn add_entry(registry: &mut Registry, id: &str) {
    let config = ProcessConfig::new(id, id, "/bin/true");
    registry.processes.insert(id.to_owned(), ProcessEntry::new(config, Timestamp::now()).into());
}

/// Every file directly in `dir` by name, with its bytes (folders map to an empty list).
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let bytes = if entry.file_type().unwrap().is_file() { fs::read(entry.path()).unwrap() } else { Vec::new() };
            (entry.file_name().into_string().unwrap(), bytes)
        })
        .collect()
}

#[cfg(unix)]
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Adds entry `id` in a transaction of its own.
pub fn add_in_transaction(store: &Store, id: &str) {
    store
        .transaction(Duration::from_secs(5), |registry| {
            add_entry(registry, id);
            Ok::<_, pm_registry::Error>(())
        })
        .unwrap();
}
