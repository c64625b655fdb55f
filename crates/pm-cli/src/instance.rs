//! Running and managing a monitor instance: start (detached or in the foreground), `--status`, `--stop`,
//! `--restart`.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use anyhow::Context;
use pm_core::{MonitorStatus, Registry};
use pm_registry::{InstanceLock, LockInfo, Paths, Store};

use crate::cli::Cli;
use crate::code;

/// The instance is not running (exit code 3).
#[derive(Debug)]
pub(crate) struct NotRunning(pub(crate) String);

impl std::fmt::Display for NotRunning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotRunning {}

/// How long a detached start waits for the new monitor to answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) fn run(cli: &Cli, instance_id: &str) -> anyhow::Result<u8> {
    let paths = Paths::resolve(cli.directory.as_deref(), instance_id)?;
    if cli.status {
        return status(cli, &paths);
    }
    if cli.stop {
        return stop(cli, &paths);
    }
    if cli.restart {
        return restart(cli, &paths);
    }
    if cli.foreground || cli.detached {
        return run_here(cli, &paths);
    }
    start_detached(cli, &paths, &[])
}

/// Marks every inherited file descriptor above stderr close-on-exec, so that no managed child inherits
/// what the monitor's own parent left open (a terminal's pipe, a test harness's sockets).
fn stop_fd_inheritance() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd").or_else(|_| std::fs::read_dir("/dev/fd")) else { return };
    let fds: Vec<i32> =
        entries.flatten().filter_map(|entry| entry.file_name().to_str()?.parse().ok()).filter(|fd| *fd > 2).collect();
    // SAFETY: fcntl on descriptor numbers of this process touches no memory; setting FD_CLOEXEC changes nothing
    // else about a descriptor, and on a number no longer open (the listing's own) both calls fail with EBADF. No
    // safe call takes a bare descriptor number: rustix's needs a `BorrowedFd`, whose promise (open for its whole
    // life) this loop cannot make.
    unsafe {
        for fd in fds {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Runs the daemon in this process.
fn run_here(cli: &Cli, paths: &Paths) -> anyhow::Result<u8> {
    stop_fd_inheritance();
    // One malloc arena for all threads: the daemon allocates little, and per-thread arenas cost resident
    // memory for nothing.
    pm_supervisor::tune_heap(pm_supervisor::Heap::OneArena);
    // Nothing is written (not even the monitor's log) in a home another user controls.
    pm_registry::check_home(paths)?;
    let log_file = crate::logging::init(paths, cli.foreground && !cli.detached, cli.keep_logs);
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut restart_command: Vec<OsString> = vec![exe.clone().into_os_string()];
    restart_command.extend(std::env::args_os().skip(1).map(|arg| {
        if arg == "--foreground" {
            "--detached".into()
        } else {
            arg
        }
    }));
    let config = pm_supervisor::DaemonConfig {
        paths: paths.clone(),
        standalone: cli.standalone,
        remote_port: cli.remote_port,
        aliveness_port: cli.aliveness_port,
        remote_bind: cli.bind.clone(),
        restart_command,
        partner_program: exe,
        resume: cli.resume,
        keep_runs: cli.keep_logs,
        lock_timeout: Duration::from_secs(5),
        tls: match (&cli.tls_cert, &cli.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            _ => None,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .thread_stack_size(512 * 1024)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let log = log_file.as_deref().map_or_else(|| "stderr".to_owned(), |path| path.display().to_string());
    tracing::info!(version = env!("CARGO_PKG_VERSION"), log = %log, "ProcessMonitor starting");
    let res = runtime.block_on(pm_supervisor::Daemon::run(config));
    runtime.shutdown_timeout(Duration::from_millis(500));
    match res {
        Ok(pm_supervisor::Exit::Stopped) => {
            tracing::info!("stopped");
            Ok(code::OK)
        }
        Ok(pm_supervisor::Exit::Restarted { pid }) => {
            tracing::info!(pid, "restarted as a new process");
            Ok(code::OK)
        }
        Err(err) => {
            let err = anyhow::Error::from(err);
            tracing::error!("{err:#}");
            if cli.foreground && !cli.detached {
                // Already on the console through the log.
                return Ok(code::ERROR);
            }
            Err(err)
        }
    }
}

/// Starts the monitor as a detached process (new session, stdio away from this terminal) and returns once
/// it holds the instance lock and answers `/alive`.
fn start_detached(cli: &Cli, paths: &Paths, extra_args: &[&str]) -> anyhow::Result<u8> {
    if let Some(holder) = InstanceLock::holder(paths)? {
        println!("ProcessMonitor {} is already running (pid {})", paths.instance_id(), holder.pid);
        return Ok(code::OK);
    }
    // Nothing is written into a home another user controls; the folders and startup.log are private whatever the
    // umask, and startup.log is created afresh (a symlink placed there is replaced, never written through).
    pm_registry::check_home(paths)?;
    pm_registry::create_private_dir_all(&paths.monitor_dir())
        .with_context(|| format!("cannot create {}", paths.monitor_dir().display()))?;
    let startup_log = paths.startup_log_file();
    let stderr = pm_registry::create_private_file_fresh(&startup_log)
        .with_context(|| format!("cannot create {}", startup_log.display()))?;
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut command = std::process::Command::new(exe);
    command
        .args(std::env::args_os().skip(1).filter(|arg| arg != "--restart"))
        .arg("--detached")
        .args(extra_args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr);
    if cli.instance_id.is_none() {
        command.arg("--instance-id").arg(paths.instance_id());
    }
    pm_registry::proc::detach(&mut command);
    let mut child = command.spawn().context("cannot start the monitor process")?;
    let pid = child.id();
    let deadline = Instant::now() + START_TIMEOUT;
    // Without an aliveness server, the remote API's status answers instead (so that `--status` right after works).
    let alive_url = aliveness_url(cli, paths).or_else(|| status_urls(cli, paths).into_iter().next());
    loop {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&startup_log).unwrap_or_default();
            let reason = log.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("no output").to_owned();
            anyhow::bail!("ProcessMonitor {} did not start ({status}): {reason}", paths.instance_id());
        }
        // The lock is taken early in the start-up; the ports it publishes once both servers listen (and the
        // registry holds the ports of the command line) say the monitor is up.
        let holds_lock = InstanceLock::holder(paths)?.is_some_and(|holder| holder.pid == pid && serving(&holder));
        if holds_lock
            && alive_url
                .as_deref()
                .is_none_or(|url| http_get(url, Duration::from_millis(500)).is_ok_and(|(status, _)| status == 200))
        {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "ProcessMonitor {} (pid {pid}) did not answer within {}s; see {}",
                paths.instance_id(),
                START_TIMEOUT.as_secs(),
                paths.logs_dir().display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if cli.json {
        println!("{}", serde_json::json!({"instanceId": paths.instance_id(), "pid": pid, "started": true}));
    } else {
        println!("ProcessMonitor {} started (pid {pid})", paths.instance_id());
    }
    Ok(code::OK)
}

fn status(cli: &Cli, paths: &Paths) -> anyhow::Result<u8> {
    let Some(holder) = InstanceLock::holder(paths)? else {
        if cli.json {
            println!("{}", serde_json::json!({"instanceId": paths.instance_id(), "running": false}));
        } else {
            println!("ProcessMonitor {} is not running", paths.instance_id());
        }
        return Ok(code::NOT_RUNNING);
    };
    // A registry that does not parse does not silence the status: the ports come from the defaults (and the
    // command line), and the status says the registry is unreadable. A monitor of this version says so in its
    // answer (`registryError`, checked as the file is now, without a parse while it is the version the monitor
    // last read or wrote); otherwise this reads the registry itself.
    let status = read_status(cli, paths, Duration::from_secs(1));
    let unreadable = match &status {
        Some(status) if status.version.as_deref() == Some(env!("CARGO_PKG_VERSION")) => status.registry_error.clone(),
        _ => registry_or_defaults(paths).1,
    };
    let res = match (status, cli.json) {
        (Some(mut status), true) => {
            status.registry_error = None;
            let mut value = serde_json::to_value(&status)?;
            if let (Some(err), Some(object)) = (&unreadable, value.as_object_mut()) {
                object.insert("registryError".to_owned(), serde_json::Value::from(err.as_str()));
            }
            println!("{}", serde_json::to_string_pretty(&value)?);
            code::OK
        }
        (Some(status), false) => {
            print_status(&status);
            code::OK
        }
        (None, true) => {
            let mut value = serde_json::json!({"instanceId": paths.instance_id(), "running": true, "pid": holder.pid, "answering": false});
            if let Some(err) = &unreadable {
                value["registryError"] = serde_json::Value::from(err.as_str());
            }
            println!("{value}");
            code::NOT_RUNNING
        }
        (None, false) => {
            println!(
                "ProcessMonitor {} holds its lock (pid {}) but answers neither on its aliveness port nor on its \
                 remote API",
                paths.instance_id(),
                holder.pid
            );
            code::NOT_RUNNING
        }
    };
    if let (Some(err), false) = (&unreadable, cli.json) {
        println!(
            "  registry:   UNREADABLE ({err}); ports taken from the instance lock, the command line or the defaults"
        );
    }
    Ok(res)
}

/// The instance's status as it answers it itself: on its unix socket, else at [`status_urls`]; `None` when
/// nothing answers.
fn read_status(cli: &Cli, paths: &Paths, timeout: Duration) -> Option<MonitorStatus> {
    if let Ok(res) = pm_http::blocking_request(&paths.socket_file(), "GET", "/monitor/status", None, timeout) {
        if let Some(status) = (res.status == 200).then(|| serde_json::from_slice(&res.body).ok()).flatten() {
            return Some(status);
        }
    }
    status_urls(cli, paths).iter().find_map(|url| {
        let (code, body) = http_get(url, timeout).ok()?;
        (code == 200).then(|| serde_json::from_slice::<MonitorStatus>(&body).ok()).flatten()
    })
}

/// Where the instance's status can be read: the aliveness server's `/status`, then the remote API's
/// `/monitor/status` (for an instance that runs without an aliveness server).
fn status_urls(cli: &Cli, paths: &Paths) -> Vec<String> {
    let mut urls: Vec<String> =
        aliveness_url(cli, paths).map(|url| url.replace("/alive", "/status")).into_iter().collect();
    {
        let registry = registry_or_defaults(paths).0;
        let remote = &registry.remote_access;
        if remote.start_remote_access {
            let port = cli.remote_port.unwrap_or(remote.remote_port);
            urls.push(format!("http://{}:{port}/monitor/status", connect_host(&remote.bind_address)));
        }
    }
    urls
}

fn print_status(status: &MonitorStatus) {
    use crate::commands::esc;
    println!("ProcessMonitor {} is running", esc(&status.instance_id));
    println!("  pid:        {}", status.pid);
    println!("  started:    {} (up {}s)", status.started_at, status.uptime);
    println!("  processes:  {} managed, {} running", status.managed_process_count, status.running_process_count);
    println!("  standalone: {}", status.standalone_mode);
    if let Some(partner) = &status.partner_instance_id {
        let (partner, state) = (esc(partner), esc(status.partner_status.as_deref().unwrap_or("unknown")));
        match status.partner_pid {
            Some(pid) => println!("  partner:    {partner} ({state}, pid {pid})"),
            None => println!("  partner:    {partner} ({state})"),
        }
    }
    if let Some(port) = status.aliveness_port {
        println!("  aliveness:  port {port}");
    }
    if let Some(port) = status.remote_port {
        println!("  remote API: port {port}");
    }
    if let Some(containment) = &status.containment {
        match &status.containment_reason {
            Some(reason) => println!("  containment: {containment} ({reason})"),
            None => println!("  containment: {containment}"),
        }
    }
}

/// Stops the instance: through its partner when the partner supervises this very process (so it is not brought
/// back), otherwise with SIGTERM; waits until it has released its lock.
fn stop(cli: &Cli, paths: &Paths) -> anyhow::Result<u8> {
    let Some(holder) = InstanceLock::holder(paths)? else {
        println!("ProcessMonitor {} is not running", paths.instance_id());
        return Ok(code::NOT_RUNNING);
    };
    let (registry, unreadable) = registry_or_defaults(paths);
    if let Some(err) = &unreadable {
        eprintln!("warning: the registry is unreadable ({err}); stopping with the default partner settings");
    }
    let children = crate::stopping::children(&registry);
    let running = children.len();
    // A shutdown already under way (another --stop, a signal) is waited for, not hurried: a second signal
    // would only cut it short and leave processes running.
    let already_stopping = read_status(cli, paths, Duration::from_secs(1))
        .is_some_and(|status| status.pid == holder.pid && status.state == pm_core::MonitorState::Stopping);
    let discovery = &registry.partner_discovery;
    let via_partner = match discovery.partner_instance_id.as_deref() {
        Some(_) if already_stopping => false,
        Some(partner_id) => stop_through_partner(cli, paths, partner_id, &holder, discovery.check_interval_ms)?,
        None => false,
    };
    if already_stopping {
        eprintln!("ProcessMonitor {} (pid {}) is already stopping; waiting for it", paths.instance_id(), holder.pid);
    } else if !via_partner {
        signal(holder.pid, libc::SIGTERM)?;
    }
    wait_released(paths, &holder, crate::stopping::stop_wait(&registry))?;
    let left = crate::stopping::left_running(children, load_registry(paths).ok().as_ref());
    if cli.json {
        let mut out = serde_json::json!({"instanceId": paths.instance_id(), "pid": holder.pid, "stopped": true,
            "processesStopped": running.saturating_sub(left.len())});
        if !left.is_empty() {
            let left_ids: Vec<&str> = left.iter().map(|child| child.id.as_str()).collect();
            out["processesLeftRunning"] = serde_json::json!(left_ids);
        }
        if let Some(err) = &unreadable {
            // What ran is unknown: the count above is 0.
            out["registryError"] = serde_json::Value::from(err.as_str());
        }
        println!("{out}");
    } else if left.is_empty() {
        let stopped = match unreadable {
            None => format!("{running} running process(es) were stopped with it"),
            Some(_) => "its processes were stopped with it (how many: unknown, the registry is unreadable)".to_owned(),
        };
        println!(
            "ProcessMonitor {} (pid {}) stopped; {stopped}{}",
            paths.instance_id(),
            holder.pid,
            if via_partner { "; its partner will not restart it" } else { "" }
        );
    }
    if !left.is_empty() {
        let list: Vec<String> = left.iter().map(|child| format!("{} (pid {})", child.id, child.pid)).collect();
        eprintln!(
            "ProcessMonitor {} (pid {}) exited, but these processes are still running: {}",
            paths.instance_id(),
            holder.pid,
            list.join(", ")
        );
        return Ok(code::ERROR);
    }
    Ok(code::OK)
}

/// Has the running partner stop this instance when it supervises the lock holder itself; answers whether the
/// partner took the stop on. A partner that supervises an earlier process of this instance (right after a
/// self-restart) gets a few check intervals to adopt the new one. When no partner runs, when it does not take the
/// instance over in time, or when it leaves the instance running, the caller signals the instance itself; the
/// partner, told of the stop, does not adopt an instance that is shutting down.
fn stop_through_partner(
    cli: &Cli,
    paths: &Paths,
    partner_id: &str,
    holder: &LockInfo,
    check_ms: u64,
) -> anyhow::Result<bool> {
    let id = paths.instance_id();
    let Ok(client) = pm_client::ProcessMonitorClient::in_directory(paths.root(), partner_id) else { return Ok(false) };
    if !client.get_entry(id).is_ok_and(|entry| entry.config.partner) {
        return Ok(false);
    }
    let partner_paths = paths.for_instance(partner_id)?;
    if InstanceLock::holder(&partner_paths)?.is_none() {
        return Ok(false);
    }
    let deadline = Instant::now() + Duration::from_millis(check_ms.saturating_mul(3).clamp(1_000, 20_000));
    let tracked = loop {
        // A registry that cannot be read right now counts as "not supervised": the instance is signalled directly.
        let Ok(entry) = client.get_entry(id) else { break false };
        if entry.pid == Some(holder.pid) && entry.state.has_child() {
            break true;
        }
        // A disabled entry is never adopted again: no point waiting.
        if Instant::now() >= deadline || entry.state == pm_core::ProcessState::Disabled {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = client.stop(id).context("asking the partner to stop this instance")?;
    if tracked && matches!(status.state, pm_core::ProcessState::Stopped | pm_core::ProcessState::Disabled) {
        return Ok(true);
    }
    // Not (yet) stopped by the partner: fine while the instance is shutting down (the partner adopted it at the
    // last moment and stops it, or its processes take long to stop), where a second SIGTERM would make it exit
    // at once and abandon them. If it still serves as running, or answers nowhere, it is signalled directly.
    let state = read_status(cli, paths, Duration::from_secs(2)).filter(|status| status.pid == holder.pid);
    let shutting_down = !pm_registry::proc::is_same_process(holder.pid, holder.start_time)
        || state.is_some_and(|status| status.state == pm_core::MonitorState::Stopping);
    if tracked && !shutting_down {
        eprintln!("the partner {partner_id} did not stop {id}; stopping it directly");
    }
    Ok(shutting_down)
}

/// Restarts the instance in place (SIGHUP: it respawns itself and its successor adopts the children).
fn restart(cli: &Cli, paths: &Paths) -> anyhow::Result<u8> {
    let Some(holder) = InstanceLock::holder(paths)? else {
        return start_detached(cli, paths, &[]);
    };
    let alive_url = aliveness_url(cli, paths);
    let answering = alive_url.as_deref().is_none_or(|url| http_get(url, Duration::from_secs(2)).is_ok());
    if !answering {
        eprintln!("ProcessMonitor {} (pid {}) does not answer; replacing it", paths.instance_id(), holder.pid);
        signal(holder.pid, libc::SIGKILL)?;
        wait_released(paths, &holder, Duration::from_secs(10)).ok();
        return start_detached(cli, paths, &["--resume"]);
    }
    signal(holder.pid, libc::SIGHUP)?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(new) = InstanceLock::holder(paths)? {
            if new.pid != holder.pid
                && serving(&new)
                && alive_url.as_deref().is_none_or(|url| http_get(url, Duration::from_millis(500)).is_ok())
            {
                println!("ProcessMonitor {} restarted (pid {} -> {})", paths.instance_id(), holder.pid, new.pid);
                return Ok(code::OK);
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "ProcessMonitor {} did not come back within {}s",
                paths.instance_id(),
                START_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the lock holder has published its ports (see `pm_supervisor`'s start-up): it is serving.
fn serving(holder: &LockInfo) -> bool {
    holder.extra.contains_key("remotePort")
}

fn signal(pid: u32, signal: i32) -> anyhow::Result<()> {
    if pid <= 1 || pid == std::process::id() {
        anyhow::bail!("refusing to signal pid {pid}: not a monitor this command may stop");
    }
    i32::try_from(pid).context("pid out of range")?;
    pm_registry::proc::signal_process(pid, signal).map_err(|err| anyhow::anyhow!("cannot signal pid {pid}: {err}"))
}

fn wait_released(paths: &Paths, holder: &LockInfo, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    // The lock is released just before the process exits: wait for both, so that a caller that checks right
    // after finds the process gone.
    let holds = || -> anyhow::Result<bool> {
        Ok(InstanceLock::holder(paths)?.is_some_and(|now| now.pid == holder.pid)
            || pm_registry::proc::is_same_process(holder.pid, holder.start_time))
    };
    while holds()? {
        if Instant::now() > deadline {
            anyhow::bail!(
                "ProcessMonitor {} (pid {}) is still running after {}s",
                paths.instance_id(),
                holder.pid,
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub(crate) fn load_registry(paths: &Paths) -> anyhow::Result<Registry> {
    match Store::new(paths.clone()).load() {
        Ok(registry) => Ok(registry),
        Err(pm_registry::Error::Missing { .. }) => Ok(Registry::new_default(paths.instance_id())),
        Err(err) => Err(err.into()),
    }
}

/// The registry, or the instance's defaults with the ports the running monitor published in its lock, when it
/// cannot be read (with the reason): for the lifeline commands (`--status`, `--stop`), which must work whatever the
/// registry's state.
pub(crate) fn registry_or_defaults(paths: &Paths) -> (Registry, Option<String>) {
    match load_registry(paths) {
        Ok(registry) => (registry, None),
        Err(err) => {
            // The ports the running monitor published in its lock beat the defaults.
            let mut registry = Registry::new_default(paths.instance_id());
            if let Ok(Some(holder)) = InstanceLock::holder(paths) {
                let port = |key: &str| {
                    holder.extra.get(key).and_then(|value| value.as_u64()).and_then(|port| u16::try_from(port).ok())
                };
                if let Some(port) = port("alivenessPort") {
                    registry.aliveness_server.port = port;
                }
                if let Some(port) = port("remotePort") {
                    registry.remote_access.remote_port = port;
                }
            }
            (registry, Some(format!("{err:#}")))
        }
    }
}

/// `http://host:port/alive` of the instance's aliveness server, `None` when it is disabled.
pub(crate) fn aliveness_url(cli: &Cli, paths: &Paths) -> Option<String> {
    let registry = registry_or_defaults(paths).0;
    let server = &registry.aliveness_server;
    if !server.enabled {
        return None;
    }
    let port = cli.aliveness_port.unwrap_or(server.port);
    Some(format!("http://{}:{port}/alive", connect_host(&server.bind_address)))
}

/// The address to connect to for a server bound to `bind`.
pub(crate) fn connect_host(bind: &str) -> String {
    match bind.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
        Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        Ok(ip) => ip.to_string(),
        Err(_) => "127.0.0.1".to_owned(),
    }
}

/// A blocking GET on loopback: status and body.
pub(crate) fn http_get(url: &str, timeout: Duration) -> anyhow::Result<(u16, Vec<u8>)> {
    let client = pm_http::HttpClient::new();
    let response = crate::block_on(client.get(url, timeout))??;
    Ok((response.status, response.body))
}
