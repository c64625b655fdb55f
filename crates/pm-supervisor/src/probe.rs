//! The probes behind startup and aliveness checks: `http` (a 2xx answer), `tcp` (a connection opens) and
//! `exec` (a command exits 0 in time). An exec probe runs in a process group of its own, which is killed when
//! the probe ends, times out or is cancelled, so that a hung probe leaves nothing behind.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use pm_core::{AlivenessCheck, ProbeType, ProcessConfig};

/// What an exec probe inherits from its process: environment and working directory.
pub(crate) struct ExecContext {
    /// The monitor's default working directory (base of a relative one).
    pub(crate) default_cwd: PathBuf,
    /// Variables added for every child.
    pub(crate) extra_env: Vec<(String, String)>,
    /// The process's working directory and environment.
    pub(crate) config: ProcessConfig,
}

/// Runs one probe of `check`, bounded by `timeout`; answers whether it passed.
pub(crate) async fn run(
    http: &pm_http::HttpClient,
    check: &AlivenessCheck,
    ctx: &ExecContext,
    timeout: Duration,
) -> bool {
    match check.probe_type {
        ProbeType::Http => pm_http::check_health(http, &check.url, timeout).await,
        ProbeType::Tcp => tcp(check.host.as_deref().unwrap_or("127.0.0.1"), check.port.unwrap_or(0), timeout).await,
        ProbeType::Exec => match exec(check, ctx, timeout).await {
            Ok(passed) => passed,
            Err(err) => {
                tracing::debug!(process = %ctx.config.id, "exec probe: {err}");
                false
            }
        },
    }
}

/// Whether a TCP connection to `host`:`port` opens within `timeout`.
pub(crate) async fn tcp(host: &str, port: u16, timeout: Duration) -> bool {
    if port == 0 {
        return false;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    matches!(tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await, Ok(Ok(_)))
}

/// Kills a probe's process group when dropped (on every way out, a cancelled check included).
struct GroupGuard(u32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if crate::os::group_exists(self.0) {
            crate::os::signal_group(self.0, libc::SIGKILL);
        }
    }
}

/// Runs the exec probe: passes on exit code 0 within `timeout`. Its whole process group is killed afterwards.
async fn exec(check: &AlivenessCheck, ctx: &ExecContext, timeout: Duration) -> std::io::Result<bool> {
    let config = &ctx.config;
    let command = check.command.as_deref().unwrap_or_default();
    let cwd = match &config.working_directory {
        Some(dir) => ctx.default_cwd.join(dir),
        None => ctx.default_cwd.clone(),
    };
    let program =
        crate::spawn::resolve_program(command, &cwd, config.environment.as_ref().and_then(|env| env.get("PATH")));
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(check.args.iter().map(OsString::from))
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    for (key, value) in &ctx.extra_env {
        cmd.env(key, value);
    }
    if let Some(env) = &config.environment {
        cmd.envs(env);
    }
    let mut child = cmd.spawn()?;
    let Some(pid) = child.id() else { return Ok(false) };
    let _guard = GroupGuard(pid);
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => Ok(status?.success()),
        Err(_) => {
            tracing::debug!(process = %config.id, pid, "exec probe timed out after {timeout:?}; killing its group");
            crate::os::signal_group(pid, libc::SIGKILL);
            let _ = child.wait().await;
            Ok(false)
        }
    }
}
