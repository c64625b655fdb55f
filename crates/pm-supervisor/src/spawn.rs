//! Turning a [`ProcessConfig`] into a running child: no shell, its own process group, stdio into log files.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use pm_core::ProcessConfig;

/// Everything a spawn needs besides the configuration.
pub(crate) struct SpawnContext<'a> {
    /// Working directory when the configuration names none (and base of a relative one).
    pub(crate) default_cwd: &'a Path,
    /// The run folder that receives `stdout.log` and `stderr.log`.
    pub(crate) run_dir: &'a Path,
    /// Variables added for every child (after the monitor's own, before the process's).
    pub(crate) extra_env: &'a [(String, String)],
    /// The monitor's owner key, set in the child's environment to find it again after a crash.
    pub(crate) owner: &'a str,
    /// The open `cgroup.procs` of the process's cgroup: the child moves itself there before it executes.
    pub(crate) cgroup_procs: Option<std::os::fd::RawFd>,
    /// For an untrusted registration: the executable checked at this start, which the child is executed from.
    pub(crate) checked: Option<&'a crate::execcheck::Checked>,
}

/// Starts the process. The child leads a new process group (its PID is the group id; a partner monitor leads a
/// new session as well), its stdin is `/dev/null`, and its stdout and stderr are the run folder's log files,
/// opened here and handed over so the child keeps logging while the monitor restarts.
pub(crate) fn spawn(config: &ProcessConfig, ctx: &SpawnContext<'_>) -> std::io::Result<tokio::process::Child> {
    let Prepared { cwd, program, stdout, stderr } = prepare(config, ctx)?;
    let program = ctx.checked.map_or(program, |checked| checked.path.clone());
    let mut command = tokio::process::Command::new(&program);
    command
        .args(config.args.iter().map(OsString::from))
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .kill_on_drop(false);
    if config.partner {
        // The partner monitor runs detached, as a start from the command line does: a session of its own (and
        // so a process group of its own), no controlling terminal shared with this monitor.
        pm_registry::proc::detach(command.as_std_mut());
    } else {
        command.process_group(0);
    }
    if config.untrusted {
        // Would lead the child to the monitor's own files; the registration may set them itself.
        for name in crate::execcheck::HIDDEN_FROM_UNTRUSTED {
            command.env_remove(name);
        }
    }
    for (key, value) in ctx.extra_env {
        command.env(key, value);
    }
    if let Some(env) = &config.environment {
        command.envs(env);
    }
    command.env(crate::orphans::OWNER_VAR, ctx.owner).env(crate::orphans::PROCESS_VAR, &config.id);
    let mut exec = None;
    if let Some(checked) = ctx.checked {
        let own = [(crate::orphans::OWNER_VAR, ctx.owner), (crate::orphans::PROCESS_VAR, config.id.as_str())];
        let extra = ctx
            .extra_env
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .chain(config.environment.iter().flatten().map(|(name, value)| (name.as_str(), value.as_str())))
            .chain(own)
            .map(|(name, value)| (std::ffi::OsStr::new(name), std::ffi::OsStr::new(value)));
        let env = crate::execcheck::child_env(config.untrusted, extra);
        exec = Some(
            crate::execcheck::FdExec::new(checked, &program, config.args.iter().map(String::as_str), &env)
                .ok_or_else(|| std::io::Error::other("an argument or variable holds NUL"))?,
        );
    }
    // Last of the steps between fork and exec: join the cgroup, then exec the checked descriptor.
    crate::execcheck::before_exec(command.as_std_mut(), ctx.cgroup_procs, exec);
    command.spawn().map_err(|err| describe(err, config, &cwd))
}

/// Starts the process like [`spawn`], but directly inside the cgroup whose folder is open as `cgroup`
/// (`clone3` with `CLONE_INTO_CGROUP`): the same program, arguments, environment, working directory, log files
/// and process group.
pub(crate) fn spawn_into_cgroup(
    config: &ProcessConfig,
    ctx: &SpawnContext<'_>,
    cgroup: std::os::fd::RawFd,
) -> std::io::Result<crate::cgroup_spawn::Forked> {
    let Prepared { cwd, program, stdout, stderr } = prepare(config, ctx)?;
    let stdin = File::open("/dev/null")?;
    let mut env: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for (key, value) in ctx.extra_env {
        env.insert(key.into(), value.into());
    }
    if let Some(vars) = &config.environment {
        env.extend(vars.iter().map(|(key, value)| (key.into(), value.into())));
    }
    env.insert(crate::orphans::OWNER_VAR.into(), ctx.owner.into());
    env.insert(crate::orphans::PROCESS_VAR.into(), config.id.clone().into());
    let launch = crate::cgroup_spawn::Launch {
        program: program.into_os_string(),
        args: config.args.iter().map(OsString::from).collect(),
        env: env.into_iter().collect(),
        cwd: cwd.clone(),
        stdin: stdin.into(),
        stdout: stdout.into(),
        stderr: stderr.into(),
    };
    crate::cgroup_spawn::spawn_into(launch, cgroup).map_err(|err| describe(err, config, &cwd))
}

/// What both ways of starting a process need first.
struct Prepared {
    /// The working directory.
    cwd: PathBuf,
    /// The program, as `resolve_program` finds it.
    program: PathBuf,
    /// The run folder's `stdout.log`, opened for appending.
    stdout: File,
    /// The run folder's `stderr.log`, opened for appending.
    stderr: File,
}

/// Finds the working directory and the program, and opens the log files.
fn prepare(config: &ProcessConfig, ctx: &SpawnContext<'_>) -> std::io::Result<Prepared> {
    let cwd = match &config.working_directory {
        Some(dir) => ctx.default_cwd.join(dir),
        None => ctx.default_cwd.to_path_buf(),
    };
    let program = resolve_program(&config.command, &cwd, config.environment.as_ref().and_then(|env| env.get("PATH")));
    let stdout = open_log(&ctx.run_dir.join("stdout.log"))?;
    let stderr = open_log(&ctx.run_dir.join("stderr.log"))?;
    Ok(Prepared { cwd, program, stdout, stderr })
}

/// A spawn error in words: what is missing or wrong, then the system's message.
fn describe(err: std::io::Error, config: &ProcessConfig, cwd: &Path) -> std::io::Error {
    let what = match err.kind() {
        std::io::ErrorKind::NotFound if !cwd.is_dir() => {
            format!("working directory {} does not exist", cwd.display())
        }
        std::io::ErrorKind::NotFound => format!("executable {:?} not found", config.command),
        std::io::ErrorKind::PermissionDenied => format!("executable {:?} is not executable", config.command),
        _ => format!("cannot start {:?}", config.command),
    };
    std::io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// The program a spawn of `config` runs (see [`resolve_program`]), with `default_cwd` as in [`SpawnContext`].
pub(crate) fn program_of(config: &ProcessConfig, default_cwd: &Path) -> PathBuf {
    let cwd = match &config.working_directory {
        Some(dir) => default_cwd.join(dir),
        None => default_cwd.to_path_buf(),
    };
    resolve_program(&config.command, &cwd, config.environment.as_ref().and_then(|env| env.get("PATH")))
}

/// A command with a `/` is taken relative to the working directory; a bare name is looked up on the child's
/// `PATH` (its own environment's, else the monitor's) so that the lookup does not depend on the monitor's cwd.
pub(crate) fn resolve_program(command: &str, cwd: &Path, child_path: Option<&String>) -> PathBuf {
    if command.contains('/') {
        return cwd.join(command);
    }
    let search = child_path.map(OsString::from).or_else(|| std::env::var_os("PATH")).unwrap_or_default();
    for dir in std::env::split_paths(&search) {
        let candidate = cwd.join(dir).join(command);
        if is_executable(&candidate) {
            return candidate;
        }
    }
    PathBuf::from(command)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Opens a log file of a run for appending: 0600 whatever the umask, never through a symlink.
fn open_log(path: &Path) -> std::io::Result<File> {
    pm_registry::open_private_append(path)
        .map_err(|err| std::io::Error::new(err.kind(), format!("cannot open log {}: {err}", path.display())))
}
