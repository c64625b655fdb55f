//! Temporary monitor homes on free loopback ports, their registry written as plain JSON before the monitor
//! starts, registry edits the way the local client makes them, and a guard around each monitor process.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use crate::bench::{http, sys};

/// The bench's own folder under the system temp dir; removed (with every home in it) on drop.
pub(crate) struct TempRoot {
    pub(crate) dir: PathBuf,
}

impl TempRoot {
    pub(crate) fn new() -> anyhow::Result<TempRoot> {
        let dir = std::env::temp_dir().join(format!("pm-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(TempRoot { dir })
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port on 127.0.0.1 (bound to :0, then released).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// One monitor home (`--directory`), instance `default`.
pub(crate) struct Home {
    pub(crate) dir: PathBuf,
    pub(crate) remote_port: u16,
    pub(crate) alive_port: u16,
}

impl Home {
    pub(crate) fn new(root: &TempRoot, name: &str) -> anyhow::Result<Home> {
        let dir = root.dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Home { dir, remote_port: free_port()?, alive_port: free_port()? })
    }

    pub(crate) fn registry_file(&self) -> PathBuf {
        self.dir.join("processes_default.json")
    }

    /// Writes the registry (standalone, loopback-only servers on this home's ports) with `processes`.
    pub(crate) fn write_registry(&self, processes: Vec<Value>) -> anyhow::Result<()> {
        let processes: serde_json::Map<String, Value> =
            processes.into_iter().map(|entry| (entry["id"].as_str().unwrap_or_default().to_owned(), entry)).collect();
        let registry = json!({
            "version": 1,
            "instanceId": "default",
            "monitorIntervalMs": 5000,
            "standaloneMode": true,
            "remoteAccess": {
                "startRemoteAccess": true,
                "remotePort": self.remote_port,
                "bindAddress": "127.0.0.1",
                "trustedHosts": ["127.0.0.1"],
            },
            "alivenessServer": {"enabled": true, "port": self.alive_port, "bindAddress": "127.0.0.1"},
            "processes": processes,
        });
        let path = self.registry_file();
        std::fs::write(&path, serde_json::to_vec_pretty(&registry)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// A read-modify-write of the registry under its transaction flock, the way `pm_registry::Store` does it:
    /// flock the sidecar, read, change, write a synced temporary file, rename it over, sync the folder.
    pub(crate) fn edit_registry(&self, change: impl FnOnce(&mut Value)) -> anyhow::Result<()> {
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.dir.join("processes_default.json.lock"))?;
        lock.lock().context("cannot lock the registry")?;
        let path = self.registry_file();
        let mut registry: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        change(&mut registry);
        let tmp = self.dir.join(format!("processes_default.json.tmp-{}", std::process::id()));
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&serde_json::to_vec_pretty(&registry)?)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        lock.unlock()?;
        Ok(())
    }
}

/// A registry entry for `sleep <seconds>` with a restart backoff of `[0]` and no startup check.
pub(crate) fn sleeper(id: &str, seconds: &str, autostart: bool) -> Value {
    json!({
        "id": id,
        "name": id,
        "command": "sleep",
        "args": [seconds],
        "autostart": autostart,
        "enabled": true,
        "restartPolicy": {
            "maxAttempts": 1_000_000,
            "backoffIntervalsMs": [0],
            "resetAfterMs": 3_600_000,
            "retryIndefinitely": false,
            "indefiniteIntervalMs": 60_000,
        },
        "stopTimeoutMs": 5000,
    })
}

/// Adds an aliveness check against `url` every `interval_ms`.
pub(crate) fn with_check(mut entry: Value, url: &str, interval_ms: u64) -> Value {
    entry["alivenessCheck"] = json!({
        "enabled": true,
        "url": url,
        "intervalMs": interval_ms,
        "timeoutMs": 2000,
        "consecutiveFailuresRequired": 2,
    });
    entry
}

/// A monitor running `--foreground --standalone` in a home, as a child of the bench in its own process group.
/// Dropping it stops it (SIGTERM, then SIGKILL) and kills whatever of its children is left.
pub(crate) struct Daemon {
    child: Child,
    pub(crate) pid: u32,
    pub(crate) alive_port: u16,
    pub(crate) remote_port: u16,
    /// Just before the process was spawned.
    pub(crate) launched: sys::Mark,
}

impl Daemon {
    pub(crate) fn launch(bin: &Path, home: &Home) -> anyhow::Result<Daemon> {
        Daemon::launch_with_env(bin, home, &[])
    }

    /// As [`Daemon::launch`], with variables added to the monitor's environment.
    pub(crate) fn launch_with_env(bin: &Path, home: &Home, env: &[(&str, &Path)]) -> anyhow::Result<Daemon> {
        use std::os::unix::process::CommandExt;
        let launched = sys::Mark::now();
        let child = Command::new(bin)
            .arg("--directory")
            .arg(&home.dir)
            .args(["--foreground", "--standalone"])
            .envs(env.iter().copied())
            .env(sys::TAG_VAR, sys::tag())
            .env_remove("PROCESS_MONITOR_DIR")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child.id();
        Ok(Daemon { child, pid, alive_port: home.alive_port, remote_port: home.remote_port, launched })
    }

    /// Waits until the monitor answers `GET /alive`.
    pub(crate) fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the monitor exited during start-up ({status})");
            }
            if http::get_once(self.alive_port, "/alive").is_some_and(|res| res.status == 200) {
                return Ok(self.launched.at.elapsed());
            }
            anyhow::ensure!(Instant::now() < deadline, "the monitor did not answer within {timeout:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Sends SIGTERM (once: a second one makes the monitor leave its children behind) and waits for the
    /// exit, with SIGKILL after `timeout`; answers how long it took.
    pub(crate) fn stop(&mut self, timeout: Duration) -> Duration {
        let started = Instant::now();
        sys::send(self.pid, sys::SIGTERM);
        self.wait_exit(timeout);
        started.elapsed()
    }

    /// Waits for the exit of a monitor that was already signalled; SIGKILL after `timeout`.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        eprintln!("bench: monitor {} did not exit within {timeout:?}; killing it", self.pid);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited() {
            return;
        }
        let children = sys::children(self.pid);
        self.stop(Duration::from_secs(5));
        for pid in children {
            if sys::alive(pid) {
                sys::send_group(pid, sys::SIGKILL);
                sys::send(pid, sys::SIGKILL);
            }
        }
    }
}
