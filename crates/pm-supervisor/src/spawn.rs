//! Turning a [`ProcessConfig`] into a running child: no shell, its own process group, stdio into log files.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use pm_core::ProcessConfig;

/// Everything a spawn needs besides the configuration.
#[derive(Clone, Copy)]
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
/// and process group. With the child, its start time when the spawn could tell it (`cgroup_spawn::spawn_into`).
pub(crate) fn spawn_into_cgroup(
    config: &ProcessConfig,
    ctx: &SpawnContext<'_>,
    cgroup: std::os::fd::RawFd,
) -> std::io::Result<(crate::cgroup_spawn::Forked, Option<u64>)> {
    let Prepared { cwd, program, stdout, stderr } = prepare(config, ctx)?;
    // The monitor's variables and the extra ones, made once; over them the process's own and the markers.
    let mut own: std::collections::BTreeMap<OsString, OsString> = std::collections::BTreeMap::new();
    if let Some(vars) = &config.environment {
        own.extend(vars.iter().map(|(key, value)| (key.into(), value.into())));
    }
    own.insert(crate::orphans::OWNER_VAR.into(), ctx.owner.into());
    own.insert(crate::orphans::PROCESS_VAR.into(), config.id.clone().into());
    let launch = crate::cgroup_spawn::Launch {
        program: program.into_os_string(),
        args: config.args.iter().map(OsString::from).collect(),
        base_env: base_env(ctx.extra_env)?,
        env: own.into_iter().collect(),
        cwd: cwd.clone(),
        stdin: dev_null()?,
        stdout: stdout.into(),
        stderr: stderr.into(),
    };
    crate::cgroup_spawn::spawn_into(launch, cgroup).map_err(|err| describe(err, config, &cwd))
}

/// The environment every child cloned into its cgroup starts from: the monitor's own variables with `extra`
/// over them, as `NAME=value` C strings, made at the first spawn and again only when `extra` differs (another
/// supervisor in the same program). It was copied from the monitor's environment into a new map, and each
/// variable into a C string, at every spawn: several dozen allocations per restart (issue 19, the crash storm).
/// The monitor never changes its own environment once it runs.
fn base_env(extra: &[(String, String)]) -> std::io::Result<std::sync::Arc<crate::cgroup_spawn::BaseEnv>> {
    type Made = Option<(Vec<(String, String)>, std::sync::Arc<crate::cgroup_spawn::BaseEnv>)>;
    static BASE: std::sync::Mutex<Made> = std::sync::Mutex::new(None);
    let mut base = BASE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, env)) = base.as_ref().filter(|(made_for, _)| made_for == extra) {
        return Ok(env.clone());
    }
    let mut vars: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for (key, value) in extra {
        vars.insert(key.into(), value.into());
    }
    let env = std::sync::Arc::new(crate::cgroup_spawn::BaseEnv::new(vars)?);
    *base = Some((extra.to_vec(), env.clone()));
    Ok(env)
}

/// `/dev/null`, every cloned child's stdin: opened once (it was opened and closed at every spawn).
fn dev_null() -> std::io::Result<std::os::fd::BorrowedFd<'static>> {
    use std::os::fd::AsFd;
    static DEV_NULL: std::sync::OnceLock<std::os::fd::OwnedFd> = std::sync::OnceLock::new();
    if DEV_NULL.get().is_none() {
        let _ = DEV_NULL.set(File::open("/dev/null")?.into());
    }
    Ok(DEV_NULL.get().expect("set above").as_fd())
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
    let child_path = config.environment.as_ref().and_then(|env| env.get("PATH"));
    let program = resolve_recent(&config.command, &cwd, child_path, std::time::Instant::now());
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

/// How long a program found on `PATH` is taken as found there by the spawns, without looking again.
const FOUND_FOR: std::time::Duration = std::time::Duration::from_secs(1);
/// Programs found on `PATH` remembered at most (the oldest is forgotten first).
const FOUND_MAX: usize = 64;

/// A program found on `PATH`: the command, the folder and `PATH` it was looked up with, where, and when.
type Found = (String, PathBuf, Option<String>, PathBuf, std::time::Instant);

/// [`resolve_program`] for a spawn at `now`: a bare name found on `PATH` less than [`FOUND_FOR`] ago is taken as
/// found then. A crash storm restarted the same program hundreds of times a second, each start looking for it
/// in every folder of `PATH` (nine `statx` on this machine; issue 19). A program installed in an earlier folder
/// of `PATH` is found within a second; a name not found is looked up at every start.
fn resolve_recent(command: &str, cwd: &Path, child_path: Option<&String>, now: std::time::Instant) -> PathBuf {
    static FOUND: std::sync::Mutex<Vec<Found>> = std::sync::Mutex::new(Vec::new());
    if command.contains('/') {
        return cwd.join(command);
    }
    let same = |found: &Found| found.0 == command && found.1 == cwd && found.2.as_ref() == child_path;
    let mut found = FOUND.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(at) = found.iter().position(same) {
        if now.saturating_duration_since(found[at].4) < FOUND_FOR {
            return found[at].3.clone();
        }
        found.remove(at);
    }
    let program = resolve_program(command, cwd, child_path);
    if program.is_absolute() {
        if found.len() >= FOUND_MAX {
            found.remove(0);
        }
        found.push((command.to_owned(), cwd.to_path_buf(), child_path.cloned(), program.clone(), now));
    }
    program
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

#[cfg(test)]
pub(crate) mod tests {
    /// `/dev/null` for a test's launch.
    pub(crate) fn dev_null_for_tests() -> std::os::fd::BorrowedFd<'static> {
        super::dev_null().unwrap()
    }

    /// A program found on `PATH` is not looked for again for a second; then it is (and one gone is not found).
    #[test]
    fn a_program_found_on_path_is_looked_up_again_after_a_second() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pm-found-on-path-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let program = dir.join("pm-found-program");
        std::fs::write(&program, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = Some(dir.display().to_string());
        let (cwd, now) = (std::path::Path::new("/"), std::time::Instant::now());
        let resolve = |at| super::resolve_recent("pm-found-program", cwd, path.as_ref(), at);
        assert_eq!(resolve(now), program);
        std::fs::remove_file(&program).unwrap();
        assert_eq!(resolve(now + std::time::Duration::from_millis(500)), program, "looked up again at once");
        let later = now + super::FOUND_FOR + std::time::Duration::from_millis(1);
        assert_eq!(resolve(later), std::path::PathBuf::from("pm-found-program"), "gone, and still found");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The monitor's environment is made into C strings once, not at every spawn (issue 19, the crash storm):
    /// the same base for the same extra variables, a new one with them over the monitor's own when they differ.
    #[test]
    fn the_base_environment_is_made_once() {
        let extra = vec![("PM_BASE_ENV_TEST".to_owned(), "1".to_owned())];
        let first = super::base_env(&extra).unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &super::base_env(&extra).unwrap()), "made again for a spawn");
        let other = vec![("PATH".to_owned(), "/nowhere".to_owned())];
        let second = super::base_env(&other).unwrap();
        let paths: Vec<_> = second.vars().filter(|var| var.starts_with(b"PATH=")).collect();
        assert_eq!(paths, [b"PATH=/nowhere".as_slice()], "the extra PATH replaces the monitor's");
        assert!(std::sync::Arc::ptr_eq(&second, &super::base_env(&other).unwrap()));
    }
}
