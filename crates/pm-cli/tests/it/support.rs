//! Support for the end-to-end tests: a private folder and free loopback ports per test, runners for the real
//! binaries, polling under deadlines, an in-process health endpoint, and cleanup of every process a test
//! started (by PID and process group, never by name), pass or fail.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use pm_tests::procs::{self, ProcInfo};
use serde_json::Value;

/// The `process_monitor` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_process_monitor");
/// The `monitor_watcher` binary under test.
pub const WATCHER_BIN: &str = env!("CARGO_BIN_EXE_monitor_watcher");

/// How long anything the monitor does may take before a test gives up (generous: 2 shared cores).
pub const DEADLINE: Duration = Duration::from_secs(20);
/// How long one CLI call may take.
const CLI_DEADLINE: Duration = Duration::from_secs(60);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Two free loopback ports, never handed out twice by this test binary (see [`pm_tests::free_port`]).
pub fn free_ports() -> (u16, u16) {
    (pm_tests::free_port(), pm_tests::free_port())
}

/// A process as first seen: its PID and start time (so a later process reusing the PID is not mistaken for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Proc {
    /// The PID.
    pub pid: u32,
    /// Start time in clock ticks since boot, `None` when it was already gone.
    pub start: Option<u64>,
}

impl Proc {
    /// The process now running as `pid`.
    pub fn of(pid: u32) -> Proc {
        Proc { pid, start: pm_registry::proc::start_time(pid) }
    }

    /// Whether this very process still runs (a zombie does not).
    pub fn running(&self) -> bool {
        self.start.is_some() && pm_registry::proc::is_same_process(self.pid, self.start)
    }

    /// Whether it has ended with all its threads: a killed monitor's leader is a zombie (not `running`) while
    /// its other threads are still exiting and still hold its listening sockets, so a new monitor on the same
    /// ports waits for this.
    pub fn gone(&self) -> bool {
        let threads = std::fs::read_dir(format!("/proc/{}/task", self.pid)).map_or(0, Iterator::count);
        !self.running() && threads <= 1
    }
}

/// Sends `signal` to one process.
pub fn signal(pid: u32, signal: i32) {
    let _ = pm_registry::proc::signal_process(pid, signal);
}

/// Live (non-zombie) processes with their command lines.
fn processes() -> Vec<ProcInfo> {
    procs::scan().into_iter().filter(|info| pm_registry::proc::alive(info.pid)).collect()
}

/// Live processes that have `arg` as one of their arguments.
pub fn count_with_arg(arg: &str) -> usize {
    processes().iter().filter(|info| info.has_arg(arg)).count()
}

/// What a finished CLI call printed.
pub struct Out {
    /// The arguments (for messages).
    pub args: Vec<String>,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`process_monitor {}` exited {}\n--- stdout\n{}--- stderr\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

impl Out {
    /// Asserts exit code 0.
    #[track_caller]
    pub fn ok(self) -> Out {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn code(self, code: i32) -> Out {
        assert_eq!(self.code, code, "{self:?}");
        self
    }

    /// Standard output parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| panic!("not JSON ({err}): {self:?}"))
    }
}

/// A child killed (and reaped) on drop.
pub struct Guarded(pub Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One test's world: a private folder (`root`) whose `pm` subfolder is the monitor's `--directory`, two free
/// loopback ports, and everything started there. Dropping it kills the monitors and every managed process
/// (found by PID and by the owner key the monitor puts in its children's environment) and removes the folder.
pub struct Env {
    /// Scratch folder of the test (holds `dir`).
    pub root: PathBuf,
    /// The monitor's folder (`--directory`).
    pub dir: PathBuf,
    /// Remote API port.
    pub remote_port: u16,
    /// Aliveness port.
    pub alive_port: u16,
    seen: Mutex<BTreeSet<Proc>>,
}

impl Env {
    /// A new world; nothing is created inside `dir` yet.
    pub fn new() -> Env {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("pm-cli-it-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let (remote_port, alive_port) = free_ports();
        Env { dir: root.join("pm"), root, remote_port, alive_port, seen: Mutex::default() }
    }

    /// A path in the scratch folder.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The `--directory` as a string.
    pub fn dir_str(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }

    /// An argument unique to the process `id` of this test (to count its copies in /proc).
    pub fn marker(&self, id: &str) -> String {
        format!("pm-it-marker-{}-{id}", self.root.file_name().unwrap().to_string_lossy())
    }

    /// Live copies of the process carrying `marker(id)`.
    pub fn copies(&self, id: &str) -> usize {
        count_with_arg(&self.marker(id))
    }

    /// Non-empty lines of a scratch file (empty when it does not exist).
    pub fn lines(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.scratch(name))
            .unwrap_or_default()
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// `http://127.0.0.1:{remote port}`.
    pub fn remote_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.remote_port)
    }

    /// The daemon flags every test uses: its own ports, loopback only, no partner.
    pub fn daemon_args(&self) -> Vec<String> {
        vec![
            "--remote-port".to_owned(),
            self.remote_port.to_string(),
            "--aliveness-port".to_owned(),
            self.alive_port.to_string(),
            "--bind".to_owned(),
            "127.0.0.1".to_owned(),
            "--standalone".to_owned(),
        ]
    }

    /// `process_monitor --directory DIR ARGS` with `HOME` inside the scratch folder.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_of(BIN, args)
    }

    /// Like [`Env::command`] for another binary.
    pub fn command_of(&self, bin: &str, args: &[&str]) -> Command {
        let mut command = Command::new(bin);
        command
            .arg("--directory")
            .arg(&self.dir)
            .args(args)
            .env("HOME", &self.root)
            .env_remove("PROCESS_MONITOR_DIR")
            .stdin(Stdio::null());
        command
    }

    /// Runs `process_monitor` to completion (under a deadline).
    pub fn run(&self, args: &[&str]) -> Out {
        self.run_command(self.command(args), args, None)
    }

    /// Runs `process_monitor` with `input` on its standard input.
    pub fn run_with_input(&self, args: &[&str], input: &str) -> Out {
        self.run_command(self.command(args), args, Some(input))
    }

    /// Runs a prepared command to completion; kills it and panics after a minute.
    pub fn run_command(&self, mut command: Command, args: &[&str], input: Option<&str>) -> Out {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        if input.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = command.spawn().expect("spawn the CLI");
        if let Some(input) = input {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let output = match rx.recv_timeout(CLI_DEADLINE) {
            Ok(output) => output.expect("wait for the CLI"),
            Err(_) => {
                signal(pid, libc::SIGKILL);
                panic!("`process_monitor {}` did not finish within {CLI_DEADLINE:?}", args.join(" "));
            }
        };
        self.track();
        Out {
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs and asserts exit code 0.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Out {
        self.run(args).ok()
    }

    /// Runs with `--json` (given first, so that it is never taken for an argument after `--`), asserts exit
    /// code 0 and parses the output.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.insert(0, "--json");
        self.run(&args).ok().json()
    }

    /// Starts the monitor detached (the plain command returns once it answers); answers its PID.
    #[track_caller]
    pub fn start_daemon(&self) -> u32 {
        let args = self.daemon_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.ok(&args);
        assert!(out.stdout.contains("started (pid"), "{out:?}");
        let pid = self.daemon_pid().expect("the started monitor holds its lock");
        self.remember(pid);
        pid
    }

    /// Runs the monitor in the foreground as a child of the test (output into a scratch file).
    pub fn spawn_foreground(&self) -> Guarded {
        let mut args = vec!["--foreground".to_owned()];
        args.extend(self.daemon_args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = std::fs::File::create(self.scratch("foreground.log")).unwrap();
        let mut command = self.command(&args);
        command.stdout(log.try_clone().unwrap()).stderr(log);
        let child = command.spawn().expect("spawn the foreground monitor");
        self.remember(child.id());
        Guarded(child)
    }

    /// PID of the live process named by the instance lock file, if any.
    pub fn daemon_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.join("processes_default.lock")).ok()?;
        let lock: Value = serde_json::from_str(&text).ok()?;
        let pid = u32::try_from(lock["pid"].as_u64()?).ok()?;
        pm_registry::proc::alive(pid).then_some(pid)
    }

    /// The registry as JSON, the journal applied (`Null` when there is none yet, or it does not parse).
    pub fn registry(&self) -> Value {
        // As every reader sees it: the file with the journal's newer lines applied (see docs/daemon-files.md).
        let Ok(paths) = pm_registry::Paths::new(&self.dir, "default") else { return Value::Null };
        pm_registry::Store::new(paths)
            .load()
            .ok()
            .and_then(|registry| registry.to_json_pretty().ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(Value::Null)
    }

    /// One registry entry (`Null` when absent).
    pub fn entry(&self, id: &str) -> Value {
        self.registry()["processes"][id].clone()
    }

    /// `status ID --json` through the CLI.
    #[track_caller]
    pub fn status(&self, id: &str) -> Value {
        self.json(&["status", id])
    }

    /// Registers a ProcessConfig through `register --file`.
    #[track_caller]
    pub fn register(&self, config: &Value) {
        let id = config["id"].as_str().expect("config id");
        let file = self.scratch(&format!("config-{id}.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        let out = self.ok(&["register", "--file", &file.to_string_lossy()]);
        assert_eq!(out.stdout.trim(), format!("{id}: registered"), "{out:?}");
    }

    /// A `/bin/sh -c SCRIPT MARKER` configuration (the marker is `$0`, so copies can be counted); not
    /// started with the monitor unless `autostart` is set on the result. Its stop timeout is short: once the
    /// shell is gone its `sleep` may linger as a zombie until PID 1 reaps it, and the group counts as alive
    /// until then.
    pub fn shell(&self, id: &str, script: &str) -> Value {
        serde_json::json!({
            "id": id,
            "name": id,
            "command": "/bin/sh",
            "args": ["-c", script, self.marker(id)],
            "autostart": false,
            "stopTimeoutMs": 500,
        })
    }

    /// Polls `check` until it answers `Some`, or panics after [`DEADLINE`].
    #[track_caller]
    pub fn wait_for<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            if let Some(res) = check() {
                self.track();
                return res;
            }
            self.track();
            assert!(started.elapsed() < DEADLINE, "timed out after {DEADLINE:?}: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `status ID --json` (through the CLI) until the process is in `state`; answers that status.
    #[track_caller]
    pub fn wait_state(&self, id: &str, state: &str) -> Value {
        let mut last = Value::Null;
        let started = Instant::now();
        loop {
            let status = self.run(&["status", id, "--json"]);
            if status.code == 0 {
                last = status.json();
                // The CLI shows the live state (through the monitor's socket); the registry stores it a moment
                // later. Both, so that a test may go on to read the stored entry.
                if last["state"] == state && self.entry(id)["state"] == state {
                    return last;
                }
            }
            assert!(
                started.elapsed() < DEADLINE,
                "timed out after {DEADLINE:?} waiting for {id} to be {state}; last: {last:#}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The PID of a running process (waits for `running`), remembered for cleanup.
    #[track_caller]
    pub fn running_pid(&self, id: &str) -> Proc {
        let status = self.wait_state(id, "running");
        let pid =
            u32::try_from(status["pid"].as_u64().unwrap_or_else(|| panic!("running without pid: {status:#}"))).unwrap();
        let proc = Proc::of(pid);
        self.seen.lock().unwrap().insert(proc);
        proc
    }

    /// Remembers a process for cleanup.
    pub fn remember(&self, pid: u32) {
        self.seen.lock().unwrap().insert(Proc::of(pid));
    }

    /// Remembers the monitor and every managed process the registry names.
    pub fn track(&self) {
        let mut found = Vec::new();
        if let Some(pid) = self.daemon_pid() {
            found.push(pid);
        }
        if let Some(processes) = self.registry()["processes"].as_object() {
            found.extend(processes.values().filter_map(|entry| entry["pid"].as_u64()).map(|pid| pid as u32));
        }
        let mut seen = self.seen.lock().unwrap();
        for pid in found {
            if !seen.iter().any(|proc| proc.pid == pid && proc.running()) {
                seen.insert(Proc::of(pid));
            }
        }
    }

    /// Live processes started for this test that the bookkeeping may have missed: monitors (their command
    /// line names `dir`) and managed processes with their descendants (their environment carries the
    /// monitor's owner key, which names `dir`).
    fn strays(&self) -> Vec<u32> {
        let dir = self.dir_str();
        let owner = format!("PROCESS_MONITOR_OWNER={dir}#");
        processes()
            .into_iter()
            .filter(|ProcInfo { pid, args, .. }| {
                *pid != std::process::id()
                    && (args.contains(&dir)
                        || std::fs::read(format!("/proc/{pid}/environ"))
                            .unwrap_or_default()
                            .split(|byte| *byte == 0)
                            .any(|var| var.starts_with(owner.as_bytes())))
            })
            .map(|info| info.pid)
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.track();
        // The monitor first, so that it starts nothing new; then the rest, by process and by group.
        if let Some(pid) = self.daemon_pid() {
            signal(pid, libc::SIGKILL);
        }
        self.track();
        let seen: Vec<Proc> = self.seen.lock().unwrap().iter().copied().collect();
        for proc in seen {
            let exists = Path::new(&format!("/proc/{}", proc.pid)).exists();
            if proc.running() {
                signal(proc.pid, libc::SIGKILL);
            }
            // A group outlives its leader only while it has members; its id is not reused meanwhile.
            if proc.running() || !exists {
                // A process group this test started.
                pm_registry::proc::signal_group(proc.pid, libc::SIGKILL);
            }
        }
        for _ in 0..3 {
            let strays = self.strays();
            if strays.is_empty() {
                break;
            }
            for pid in strays {
                signal(pid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The cgroups its monitors made (pass or fail).
        pm_supervisor::cgroup::remove_for_home(&self.dir);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A health endpoint served by [`pm_http::AlivenessServerHelper`] inside the test process.
pub struct Health {
    healthy: Arc<AtomicBool>,
    fail_next: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    /// `http://127.0.0.1:PORT/health`.
    pub url: String,
    helper: pm_http::AlivenessServerHelper,
    runtime: tokio::runtime::Runtime,
}

impl Health {
    /// Serves `/health`, healthy or not.
    pub fn new(healthy: bool) -> Health {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let flag = Arc::new(AtomicBool::new(healthy));
        let fail_next = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let callback = {
            let (flag, fail_next, requests) = (flag.clone(), fail_next.clone(), requests.clone());
            pm_http::AlivenessCallback::default().with_health_check(move || {
                requests.fetch_add(1, Ordering::SeqCst);
                let forced_failure =
                    fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
                let healthy = !forced_failure && flag.load(Ordering::SeqCst);
                async move { healthy }
            })
        };
        let mut helper = pm_http::AlivenessServerHelper::new(0, callback);
        let addr = runtime.block_on(helper.start()).expect("start the health endpoint");
        Health { healthy: flag, fail_next, requests, url: format!("http://{addr}/health"), helper, runtime }
    }

    /// Turns health on or off.
    pub fn set(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// The next `n` checks fail, then the flag decides again.
    pub fn fail_next(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Checks answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Forced failures not yet answered.
    pub fn failures_left(&self) -> usize {
        self.fail_next.load(Ordering::SeqCst)
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        self.runtime.block_on(self.helper.stop());
    }
}

/// Reads lines of a child's stdout on a thread; answers them through a channel.
pub fn line_reader(stdout: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Milliseconds between consecutive `date +%s%N` stamps.
pub fn gaps_ms(stamps: &[String]) -> Vec<u64> {
    let nanos: Vec<u128> = stamps.iter().map(|line| line.trim().parse().expect("a date +%s%N line")).collect();
    nanos.windows(2).map(|pair| ((pair[1] - pair[0]) / 1_000_000) as u64).collect()
}

/// A minimal HTTP/1.1 request to 127.0.0.1 (no keep-alive): (status, body), `None` when nothing answers (the
/// connection is given 2 s, each read of the answer 10 s).
pub fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    pm_tests::http_with(port, method, path, body, Duration::from_secs(2), Duration::from_secs(10))
}
