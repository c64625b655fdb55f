//! Support for the end-to-end scenarios: a temporary home with both instances configured on free loopback
//! ports, the binaries that `cargo xtask e2e` built, and cleanup of every process the scenario started.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pm_core::{ProcessConfig, ProcessEntry, ProcessState, Registry, Timestamp};
use pm_registry::{InstanceLock, Paths, Store};

pub mod browser;
pub mod chaos;
pub mod fuzz;
pub mod procs;
pub mod rng;
pub mod site;
pub mod wire;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The binaries under test, from `PM_BIN_PROCESS_MONITOR` and `PM_BIN_MONITOR_WATCHER` (set by
/// `cargo xtask e2e`). `None` outside xtask: the scenarios then say so and skip.
pub fn binaries() -> Option<(PathBuf, PathBuf)> {
    let main = std::env::var_os("PM_BIN_PROCESS_MONITOR")?;
    let watcher = std::env::var_os("PM_BIN_MONITOR_WATCHER")?;
    Some((main.into(), watcher.into()))
}

/// Ports of one instance.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Aliveness server.
    pub alive: u16,
    /// Remote API.
    pub remote: u16,
}

/// A temporary home holding the registries of `default` and `watcher`, each on its own free loopback ports and
/// pointing at the other as partner. Dropping it kills every process it has seen (daemons and managed
/// children, by process group) and removes the folder.
pub struct Home {
    /// The folder (`--directory`).
    pub dir: PathBuf,
    /// `process_monitor`.
    pub main_bin: PathBuf,
    /// `monitor_watcher`.
    pub watcher_bin: PathBuf,
    /// Ports of `default`.
    pub default_ports: Ports,
    /// Ports of `watcher`.
    pub watcher_ports: Ports,
    seen: std::sync::Mutex<BTreeSet<u32>>,
}

/// A loopback port nothing listens on, for a daemon that binds it later, never handed out twice by this test
/// binary. Taken below the kernel's ephemeral range: a port the kernel gave out for `:0` can be handed to any
/// outgoing connection as its source port meanwhile (and stay taken in TIME_WAIT for a minute), and then the
/// daemon cannot bind it.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let low = ephemeral_low().clamp(12_000, 61_000);
    let span = usize::from(low - 10_000);
    // Each test binary starts at its own place in the range (by PID), then walks it.
    let start = std::process::id() as usize * 7919;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 10_000 + ((start + n * 13) % span) as u16;
        let mut handed_out = HANDED_OUT.lock().unwrap();
        if handed_out.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

impl Home {
    /// A new home, configured; `None` (with a message) when the binaries are not given.
    pub fn new(check_interval_ms: u64) -> Option<Home> {
        let Some((main_bin, watcher_bin)) = binaries() else {
            eprintln!("skipped: the end-to-end scenarios run under `cargo xtask e2e` (PM_BIN_* not set)");
            return None;
        };
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pm-e2e-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let home = Home {
            dir,
            main_bin,
            watcher_bin,
            default_ports: Ports { alive: free_port(), remote: free_port() },
            watcher_ports: Ports { alive: free_port(), remote: free_port() },
            seen: Default::default(),
        };
        for (id, ports, partner) in
            [("default", home.default_ports, home.watcher_ports), ("watcher", home.watcher_ports, home.default_ports)]
        {
            home.edit(id, |registry| {
                registry.remote_access.remote_port = ports.remote;
                registry.remote_access.bind_address = "127.0.0.1".to_owned();
                registry.aliveness_server.port = ports.alive;
                registry.partner_discovery.partner_aliveness_port = Some(partner.alive);
                registry.partner_discovery.partner_status_url =
                    Some(format!("http://localhost:{}/status", partner.alive));
                registry.partner_discovery.check_interval_ms = check_interval_ms;
            });
        }
        Some(home)
    }

    /// The paths of an instance.
    pub fn paths(&self, instance: &str) -> Paths {
        Paths::new(&self.dir, instance).unwrap()
    }

    /// Edits an instance's registry in one transaction.
    pub fn edit(&self, instance: &str, f: impl FnOnce(&mut Registry)) {
        Store::new(self.paths(instance))
            .transaction(Duration::from_secs(10), |registry| {
                f(registry);
                Ok::<_, pm_registry::Error>(())
            })
            .unwrap();
    }

    /// Reads an instance's registry.
    pub fn registry(&self, instance: &str) -> Registry {
        Store::new(self.paths(instance)).load().unwrap()
    }

    /// Registers a `sleep` that writes a marker line each time it starts (to count copies and starts).
    pub fn add_sleeper(&self, instance: &str, id: &str) {
        let marker = self.dir.join(format!("{id}.starts"));
        let mut config = ProcessConfig::new(id, id, "/bin/sh");
        config.args = vec!["-c".to_owned(), format!("echo $$ >> {}; sleep 600", marker.display()), self.marker(id)];
        self.edit(instance, |registry| {
            registry.processes.insert(id.to_owned(), ProcessEntry::new(config, Timestamp::now()).into());
        });
    }

    /// Registers on `instance` a process that takes `secs` seconds to stop after SIGTERM (it finishes its work,
    /// then exits 0), with a stop timeout of `stop_ms`; marked like [`Home::add_sleeper`] (not counted in starts).
    pub fn add_slow_stopper(&self, instance: &str, id: &str, secs: u32, stop_ms: u64) {
        let mut config = ProcessConfig::new(id, id, "/bin/sh");
        let script = format!("trap 'sleep {secs}; exit 0' TERM; while :; do sleep 0.2; done");
        config.args = vec!["-c".to_owned(), script, self.marker(id)];
        config.stop_timeout_ms = Some(stop_ms);
        self.edit(instance, |registry| {
            registry.processes.insert(id.to_owned(), ProcessEntry::new(config, Timestamp::now()).into());
        });
    }

    /// The argument that marks the process `id` of this home (to count its copies in /proc).
    pub fn marker(&self, id: &str) -> String {
        format!("pm-e2e-marker-{id}-{}", self.dir.file_name().unwrap().to_string_lossy())
    }

    /// Live copies of the managed process `id` of this home.
    pub fn copies(&self, id: &str) -> usize {
        self.count_processes(&[&self.marker(id)])
    }

    /// How often the process `id` was started so far.
    pub fn starts(&self, id: &str) -> usize {
        std::fs::read_to_string(self.dir.join(format!("{id}.starts"))).unwrap_or_default().lines().count()
    }

    /// Runs one of the binaries to completion with `--directory` and answers (exit code, stdout, stderr).
    pub fn cli(&self, watcher: bool, args: &[&str]) -> (i32, String, String) {
        let bin = if watcher { &self.watcher_bin } else { &self.main_bin };
        let output = Command::new(bin).arg("--directory").arg(&self.dir).args(args).output().unwrap();
        self.track();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// The live holder of an instance's lock.
    pub fn holder(&self, instance: &str) -> Option<u32> {
        let pid = InstanceLock::holder(&self.paths(instance)).ok().flatten().map(|info| info.pid);
        self.track();
        pid
    }

    /// The PID of a managed process as its instance stored it.
    pub fn child_pid(&self, instance: &str, id: &str) -> Option<u32> {
        let entry = self.registry(instance).processes.get(id).cloned()?;
        (entry.state == ProcessState::Running).then_some(entry.pid).flatten()
    }

    /// Live processes whose command line holds all of `needles` (counted from /proc; zombies excluded).
    pub fn count_processes(&self, needles: &[&str]) -> usize {
        let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
        entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| pm_registry::proc::alive(*pid))
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let args: Vec<String> =
                    cmdline.split(|b| *b == 0).map(|arg| String::from_utf8_lossy(arg).into_owned()).collect();
                needles.iter().all(|needle| args.iter().any(|arg| arg == needle))
            })
            .count()
    }

    /// Monitor processes of `instance` in this home.
    pub fn instances(&self, instance: &str) -> usize {
        let dir = self.dir.to_string_lossy().into_owned();
        self.count_processes(&["--instance-id", instance, "--directory", &dir])
    }

    /// `GET path` on a loopback port; (status, body).
    pub fn get(&self, port: u16, path: &str) -> Option<(u16, String)> {
        http(port, "GET", path, None)
    }

    /// Whether an instance answers `/alive`.
    pub fn answers(&self, ports: Ports) -> bool {
        self.get(ports.alive, "/alive").is_some_and(|(status, body)| status == 200 && body == "OK")
    }

    /// Remembers the PIDs of both monitors and of every managed process (for cleanup).
    pub fn track(&self) {
        let mut seen = self.seen.lock().unwrap();
        for instance in ["default", "watcher"] {
            if let Ok(Some(info)) = InstanceLock::holder(&self.paths(instance)) {
                seen.insert(info.pid);
            }
            if let Ok(registry) = Store::new(self.paths(instance)).load() {
                seen.extend(registry.processes.values().filter_map(|entry| entry.pid));
            }
        }
    }

    /// Polls `check` until it holds; answers how long that took, or panics after `timeout`.
    pub fn wait_until(&self, timeout: Duration, what: &str, check: impl Fn() -> bool) -> Duration {
        let started = Instant::now();
        loop {
            self.track();
            if check() {
                return started.elapsed();
            }
            assert!(started.elapsed() < timeout, "timed out after {timeout:?}: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        self.track();
        for pid in self.seen.lock().unwrap().iter() {
            // SAFETY: kill(2) on processes and process groups this scenario started.
            unsafe {
                libc::kill(*pid as i32, libc::SIGKILL);
                libc::kill(-(*pid as i32), libc::SIGKILL);
            }
        }
        remove_cgroups(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the cgroups the monitors of home `dir` made (killing what is left in them), pass or fail of the
/// scenario; only those monitors' own `pm-<instance>-<hash>` folders are touched.
pub fn remove_cgroups(dir: &std::path::Path) {
    pm_supervisor::cgroup::remove_for_home(dir);
}

/// Sends SIGKILL to one process.
pub fn kill9(pid: u32) {
    // SAFETY: kill(2) on a process this scenario started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

/// A minimal HTTP/1.1 request on 127.0.0.1 (no keep-alive); (status, body) or `None` when nothing answers (the
/// connection is given 1 s, each read of the answer 5 s).
pub fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    http_with(port, method, path, body, Duration::from_secs(1), Duration::from_secs(5))
}

/// As [`http`], with the time the connection (`connect_timeout`) and each read of the answer (`read_timeout`)
/// may take.
pub fn http_with(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    connect_timeout: Duration,
    read_timeout: Duration,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), connect_timeout).ok()?;
    stream.set_read_timeout(Some(read_timeout)).ok()?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Writes a line the way the scenarios report their figures.
pub fn report(scenario: &str, figure: &str) {
    eprintln!("e2e | {scenario:<48} | {figure}");
}
