//! A site for the reliability and security suites: one standalone `default` instance of the real binary in a
//! temporary folder, on free loopback ports, started (and SIGKILLed, and started again) under a
//! `pm-test-reaper`, so that every process the daemon ever started — children, grandchildren, orphans and
//! zombies — stays below a process of ours. Dropping the site kills all of them, pass or fail.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pm_core::{ProcessConfig, ProcessStatus, Registry, RestartPolicy};
use pm_registry::{InstanceLock, Paths, Store};

use crate::procs::{self, ProcInfo};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The instance every site runs.
pub const INSTANCE: &str = "default";

/// How a daemon of a site is started.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// `RLIMIT_FSIZE` in bytes for the daemon and everything it starts: a write past it fails with `EFBIG`
    /// (`SIGXFSZ` is ignored), which is how the suites simulate a full disk without privileges.
    pub file_size_limit: Option<u64>,
    /// The umask the daemon starts with.
    pub umask: Option<u32>,
    /// Arguments added to the command line.
    pub extra_args: Vec<String>,
}

impl DaemonOptions {
    /// Nothing special.
    pub fn plain() -> DaemonOptions {
        DaemonOptions { file_size_limit: None, umask: None, extra_args: Vec::new() }
    }
}

/// The registry's transaction flock, held by the suite (see [`Site::hold_registry_lock`]); closing the file
/// releases it.
pub struct RegistryLock(#[allow(dead_code)] std::fs::File);

struct Reaper {
    child: Child,
}

/// A temporary home with one standalone instance; see the module documentation.
pub struct Site {
    /// The folder (`--directory`).
    pub dir: PathBuf,
    /// `process_monitor`.
    pub bin: PathBuf,
    /// `pm-test-reaper`.
    pub reaper_bin: PathBuf,
    /// Aliveness port.
    pub alive_port: u16,
    /// Remote API port.
    pub remote_port: u16,
    reapers: Mutex<Vec<Reaper>>,
    stderr_files: Mutex<BTreeMap<u32, PathBuf>>,
    n_daemons: AtomicUsize,
    daemon_env: Mutex<Vec<(String, String)>>,
}

impl Site {
    /// A new site whose registry binds both servers to 127.0.0.1 on free ports, in standalone mode; `None` (with
    /// a message) outside `cargo xtask e2e`. `reaper_bin` is `env!("CARGO_BIN_EXE_pm-test-reaper")`.
    pub fn new(label: &str, reaper_bin: &Path) -> Option<Site> {
        let Some((bin, _)) = crate::binaries() else {
            eprintln!("skipped: the end-to-end scenarios run under `cargo xtask e2e` (PM_BIN_* not set)");
            return None;
        };
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pm-rel-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("starts")).unwrap();
        let site = Site {
            dir,
            bin,
            reaper_bin: reaper_bin.to_owned(),
            alive_port: crate::free_port(),
            remote_port: crate::free_port(),
            reapers: Mutex::new(Vec::new()),
            stderr_files: Mutex::new(BTreeMap::new()),
            n_daemons: AtomicUsize::new(0),
            daemon_env: Mutex::new(Vec::new()),
        };
        let (alive_port, remote_port) = (site.alive_port, site.remote_port);
        site.edit(|registry| {
            registry.standalone_mode = true;
            registry.remote_access.remote_port = remote_port;
            registry.remote_access.bind_address = "127.0.0.1".to_owned();
            registry.aliveness_server.port = alive_port;
            registry.aliveness_server.bind_address = "127.0.0.1".to_owned();
        });
        Some(site)
    }

    /// The instance's files.
    pub fn paths(&self) -> Paths {
        Paths::new(&self.dir, INSTANCE).unwrap()
    }

    /// The instance's registry store.
    pub fn store(&self) -> Store {
        Store::new(self.paths())
    }

    /// Edits the registry in one transaction (panics when that fails).
    pub fn edit(&self, f: impl FnOnce(&mut Registry)) {
        self.store()
            .transaction(Duration::from_secs(10), |registry| {
                f(registry);
                Ok::<_, pm_registry::Error>(())
            })
            .unwrap();
    }

    /// Holds the registry's transaction flock, as a slow writer would, until the guard is dropped: no
    /// transaction of the daemon or of a client can complete meanwhile.
    pub fn hold_registry_lock(&self) -> RegistryLock {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.paths().transaction_lock_file())
            .unwrap();
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
        RegistryLock(file)
    }

    /// Reads and parses the registry.
    pub fn registry(&self) -> Result<Registry, pm_registry::Error> {
        self.store().load()
    }

    /// Sets a variable in the environment of the daemons started from now on.
    pub fn set_daemon_env(&self, name: &str, value: &str) {
        self.daemon_env.lock().unwrap().push((name.to_owned(), value.to_owned()));
    }

    /// Starts a daemon and waits until it holds the lock and answers `/alive`; answers its PID.
    pub fn start_daemon(&self) -> u32 {
        let pid = self.spawn_daemon(&DaemonOptions::plain());
        if let Err(err) = self.wait_ready(pid, Duration::from_secs(20)) {
            panic!("daemon {pid} did not come up: {err}");
        }
        pid
    }

    /// Starts a daemon under a new reaper without waiting for it; answers its PID.
    pub fn spawn_daemon(&self, options: &DaemonOptions) -> u32 {
        let n = self.n_daemons.fetch_add(1, Ordering::Relaxed);
        let stderr_file = self.dir.join(format!("daemon-{n}.stderr"));
        let stderr = std::fs::File::create(&stderr_file).unwrap();
        let mut cmd = Command::new(&self.reaper_bin);
        cmd.arg(&self.bin)
            .arg("--directory")
            .arg(&self.dir)
            .args(["--instance-id", INSTANCE, "--standalone", "--detached"])
            .args(&options.extra_args)
            .env("RUST_LOG", "info")
            .envs(self.daemon_env.lock().unwrap().iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0);
        let (limit, umask) = (options.file_size_limit, options.umask);
        // SAFETY: only async-signal-safe calls (setrlimit, signal, umask) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(bytes) = limit {
                    let rlim = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: bytes as libc::rlim_t };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &rlim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                }
                if let Some(mask) = umask {
                    libc::umask(mask as libc::mode_t);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("cannot start pm-test-reaper");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let daemon_pid: u32 = line.trim().parse().unwrap_or_else(|_| panic!("reaper printed {line:?}"));
        self.reapers.lock().unwrap().push(Reaper { child });
        self.stderr_files.lock().unwrap().insert(daemon_pid, stderr_file);
        daemon_pid
    }

    /// Waits until `pid` holds the instance lock and answers `/alive`; the error says why not (with what the
    /// daemon wrote on stderr when it exited).
    pub fn wait_ready(&self, pid: u32, timeout: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            let holds = InstanceLock::holder(&self.paths()).ok().flatten().is_some_and(|info| info.pid == pid);
            // The local socket is served moments after `/alive`; a test that snapshots the home waits for it too
            // (bounded: a monitor that cannot make its socket runs without it).
            let socket = self.paths().socket_file().exists() || started.elapsed() > timeout / 2;
            if holds && self.alive() && socket {
                return Ok(started.elapsed());
            }
            if !pm_registry::proc::alive(pid) {
                return Err(format!("daemon {pid} exited: {}", self.daemon_stderr(pid)));
            }
            if started.elapsed() > timeout {
                return Err(format!("daemon {pid} not ready after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The live holder of the instance lock.
    pub fn daemon_pid(&self) -> Option<u32> {
        InstanceLock::holder(&self.paths()).ok().flatten().map(|info| info.pid)
    }

    /// SIGKILLs a daemon and waits until it is gone (reaped).
    pub fn kill_daemon(&self, pid: u32) {
        procs::signal(pid as i32, libc::SIGKILL);
        self.wait_gone(pid, Duration::from_secs(10));
    }

    /// SIGTERMs a daemon (a clean stop: it stops its processes) and waits until it is gone.
    pub fn stop_daemon(&self, pid: u32) {
        procs::signal(pid as i32, libc::SIGTERM);
        self.wait_gone(pid, Duration::from_secs(60));
    }

    /// Waits until a process below one of our reapers is gone (not even a zombie).
    pub fn wait_gone(&self, pid: u32, timeout: Duration) {
        let started = Instant::now();
        while procs::read(pid).is_some() {
            assert!(started.elapsed() < timeout, "process {pid} still there after {timeout:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// What the daemon with PID `pid` wrote on stderr (its fatal errors; it logs to its log file).
    pub fn daemon_stderr(&self, pid: u32) -> String {
        let files = self.stderr_files.lock().unwrap();
        files.get(&pid).and_then(|path| std::fs::read_to_string(path).ok()).unwrap_or_default()
    }

    /// Everything the instance logged (all monitor log files in `{id}_logs/_monitor`, oldest first).
    pub fn daemon_log(&self) -> String {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.paths().monitor_dir())
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.path())
                    .filter(|path| path.is_file() && path.file_name().is_some_and(|name| name != "startup.log"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.iter().map(|path| std::fs::read_to_string(path).unwrap_or_default()).collect()
    }

    /// Whether the instance answers `GET /alive` with 200 `OK`.
    pub fn alive(&self) -> bool {
        crate::http(self.alive_port, "GET", "/alive", None).is_some_and(|(status, body)| status == 200 && body == "OK")
    }

    /// A request on the remote API from 127.0.0.1; (status, body) or `None` when nothing answers.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
        crate::http(self.remote_port, method, path, body)
    }

    /// Every process the daemon reports, by id (`GET /processes`); `None` when it does not answer.
    /// A few tries: on two shared cores, under the other suites' load, one answer can take its time.
    pub fn statuses(&self) -> Option<BTreeMap<String, ProcessStatus>> {
        for _ in 0..4 {
            if let Some(statuses) = self.statuses_once() {
                return Some(statuses);
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        self.statuses_once()
    }

    fn statuses_once(&self) -> Option<BTreeMap<String, ProcessStatus>> {
        let (status, body) = self.api("GET", "/processes", None)?;
        if status != 200 {
            return None;
        }
        let value: serde_json::Value = serde_json::from_str(&body).ok()?;
        let list: Vec<ProcessStatus> = serde_json::from_value(value["processes"].clone()).ok()?;
        Some(list.into_iter().map(|status| (status.id.clone(), status)).collect())
    }

    /// The argument that marks the managed process `id` of this site.
    pub fn marker(&self, id: &str) -> String {
        format!("{}{id}", self.marker_prefix())
    }

    /// What every marker of this site starts with.
    pub fn marker_prefix(&self) -> String {
        format!("pm-mark-{}-", self.dir.file_name().unwrap().to_string_lossy())
    }

    /// A `/bin/sh` that records its PID in `starts/{id}` and then waits on a `sleep` (a grandchild), with the
    /// marker of `id` in its argv; restarted after 50 ms, forever.
    pub fn sleeper(&self, id: &str) -> ProcessConfig {
        sleeper_config(&self.dir, &self.marker(id), id)
    }

    /// Live copies (leader PIDs) of the sleeper `id`.
    pub fn copies(&self, id: &str) -> Vec<u32> {
        procs::with_marker(&procs::scan(), &self.marker(id))
    }

    /// The PIDs the sleeper `id` recorded, one per start.
    pub fn starts(&self, id: &str) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("starts").join(id))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// PIDs of our reapers that are still running.
    pub fn reaper_pids(&self) -> Vec<u32> {
        let mut reapers = self.reapers.lock().unwrap();
        reapers.retain_mut(|reaper| !matches!(reaper.child.try_wait(), Ok(Some(_))));
        reapers.iter().map(|reaper| reaper.child.id()).collect()
    }

    /// Every process below our reapers (daemons, their children, grandchildren, orphans and zombies).
    pub fn descendants(&self) -> Vec<ProcInfo> {
        procs::descendants(&procs::scan(), &self.reaper_pids())
    }

    /// Waits until every reaper has exited, that is until nothing the daemons started is left, not even a
    /// zombie; the error lists what is left.
    pub fn wait_all_gone(&self, timeout: Duration) -> Result<Duration, Vec<ProcInfo>> {
        let started = Instant::now();
        loop {
            if self.reaper_pids().is_empty() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                return Err(self.descendants());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills every process below our reapers (each with its process group) and the reapers; waits for them.
    pub fn kill_everything(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = self.descendants();
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            for info in &left {
                procs::signal(info.pid as i32, libc::SIGKILL);
                if info.pgrp > 1 && info.pgrp != std::process::id() {
                    procs::signal(-(info.pgrp as i32), libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut reapers = self.reapers.lock().unwrap();
        for reaper in reapers.iter_mut() {
            if !matches!(reaper.child.try_wait(), Ok(Some(_))) {
                let _ = reaper.child.kill();
                let _ = reaper.child.wait();
            }
        }
        reapers.clear();
    }
}

/// The configuration of [`Site::sleeper`] for the site in `dir` with the given marker.
pub fn sleeper_config(dir: &Path, marker: &str, id: &str) -> ProcessConfig {
    let starts = dir.join("starts").join(id);
    let mut config = ProcessConfig::new(id, id, "/bin/sh");
    config.args =
        vec!["-c".to_owned(), format!("echo $$ >> '{}'; sleep 600 & wait", starts.display()), marker.to_owned()];
    config.restart_policy = Some(RestartPolicy {
        max_attempts: 1000,
        backoff_intervals_ms: vec![50, 100],
        reset_after_ms: 60_000,
        retry_indefinitely: true,
        indefinite_interval_ms: 100,
        restart_on: Default::default(),
        extra: serde_json::Map::new(),
    });
    config.stop_timeout_ms = Some(3000);
    config
}

impl Drop for Site {
    fn drop(&mut self) {
        self.kill_everything();
        crate::remove_cgroups(&self.dir);
        if std::env::var_os("PM_KEEP_SITES").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
