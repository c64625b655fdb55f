//! The executable check of an untrusted registration at every start, and the file descriptor it is run through.
//!
//! At registration the remote API stores the canonical path that passed the whitelist and blacklist. At each
//! start (and restart) of an untrusted registration the monitor opens that path (`O_PATH`), reads back which
//! file it actually opened (`/proc/self/fd`), checks that file against the whitelist and blacklist in force and
//! refuses the monitor's own programs; the child is then executed from that descriptor (`execveat` with
//! `AT_EMPTY_PATH`), so a symlink or rename swapped in between the check and the exec runs nothing else.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The whitelist and blacklist in force (updated by the monitor whenever its settings change).
#[derive(Debug, Clone, Default)]
pub(crate) struct ExecPolicy {
    pub(crate) whitelist: Vec<String>,
    pub(crate) blacklist: Vec<String>,
}

/// An executable that passed the check: the open descriptor and the canonical path of the file it refers to.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) fd: OwnedFd,
    pub(crate) path: PathBuf,
}

/// Opens the command of an untrusted registration and checks the file it reaches; the error says why it may not
/// run.
pub(crate) fn check(command: &str, policy: &ExecPolicy) -> Result<Checked, String> {
    use std::os::unix::fs::PermissionsExt;
    let refused = |path: &str| {
        format!("Executable not permitted by whitelist/blacklist: {} (checked at start)", pm_core::escape_control(path))
    };
    if !command.starts_with('/') {
        return Err(refused(command));
    }
    let fd = open_path(command)
        .map_err(|err| format!("executable {} cannot be opened: {err}", pm_core::escape_control(command)))?;
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let path = std::fs::read_link(&link).map_err(|err| format!("cannot tell which file {command} is: {err}"))?;
    let meta = std::fs::metadata(&link).map_err(|err| format!("cannot inspect {command}: {err}"))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("executable {} is not an executable file", pm_core::escape_control(command)));
    }
    let text = path.to_str().ok_or_else(|| refused(command))?;
    if pm_http::is_own_executable(&path) {
        return Err(format!(
            "Executable not permitted: the monitor's own executable ({})",
            pm_core::escape_control(text)
        ));
    }
    match pm_core::executable_permitted(text, &policy.whitelist, &policy.blacklist) {
        Ok(true) => Ok(Checked { fd, path }),
        Ok(false) => Err(refused(text)),
        Err(err) => Err(format!("{} ({err})", refused(text))),
    }
}

/// `open(path, O_PATH | O_CLOEXEC)`: a descriptor that names the file without reading it (an executable need
/// not be readable).
fn open_path(path: &str) -> std::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    if path.contains('\0') {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    Ok(rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?)
}

/// What the child of an untrusted registration execs: argv and envp made before the fork (the child must not
/// allocate), run from the checked descriptor.
pub(crate) struct FdExec {
    fd: i32,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

// SAFETY: the raw pointers point into the CStrings owned by the same value, which are never changed.
unsafe impl Send for FdExec {}
// SAFETY: as above; the value is only read.
unsafe impl Sync for FdExec {}

impl FdExec {
    /// argv is `program` then `args`; envp is `env` as `NAME=value`. `None` when a string holds a NUL.
    pub(crate) fn new<'a>(
        checked: &Checked,
        program: &Path,
        args: impl Iterator<Item = &'a str>,
        env: &[(OsString, OsString)],
    ) -> Option<FdExec> {
        let argv: Vec<CString> = std::iter::once(CString::new(program.as_os_str().as_bytes()).ok())
            .chain(args.map(|arg| CString::new(arg).ok()))
            .collect::<Option<_>>()?;
        let envp: Vec<CString> = env
            .iter()
            .map(|(name, value)| {
                let mut pair = name.as_bytes().to_vec();
                pair.push(b'=');
                pair.extend_from_slice(value.as_bytes());
                CString::new(pair).ok()
            })
            .collect::<Option<_>>()?;
        let argv_ptrs = argv.iter().map(|arg| arg.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        let envp_ptrs = envp.iter().map(|var| var.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        Some(FdExec { fd: checked.fd.as_raw_fd(), _argv: argv, _envp: envp, argv_ptrs, envp_ptrs })
    }
}

/// What a child does between fork and exec, after the standard library's own steps (stdio, working directory,
/// process group, a detach): join its cgroup by writing to `cgroup.procs`, open as `cgroup_procs`; then, for an
/// untrusted registration, exec from the checked descriptor (`exec`).
///
/// A script (`#!`) is run by its interpreter through `/dev/fd/N`, which needs the descriptor to stay open across
/// the exec: the first attempt keeps it close-on-exec (so a binary does not inherit it), and only when the kernel
/// answers `ENOENT` for that reason is the flag cleared and the exec tried again.
pub(crate) fn before_exec(command: &mut std::process::Command, cgroup_procs: Option<RawFd>, exec: Option<FdExec>) {
    use std::os::unix::process::CommandExt;
    if cgroup_procs.is_none() && exec.is_none() {
        return;
    }
    // SAFETY: the hook runs between fork and exec, where only async-signal-safe calls are allowed and nothing may
    // allocate: it makes system calls only (one write, execveat, fcntl), on descriptors the parent keeps open until
    // the spawn returns (`cgroup.procs`, the checked executable) and on the argv/envp arrays `exec` prepared before
    // the fork and owns for as long as the command lives.
    unsafe {
        command.pre_exec(move || {
            if let Some(fd) = cgroup_procs {
                crate::cgroup::join_in_child(std::os::fd::BorrowedFd::borrow_raw(fd))?;
            }
            let Some(exec) = &exec else { return Ok(()) };
            let attempt = || {
                libc::syscall(
                    libc::SYS_execveat,
                    exec.fd,
                    c"".as_ptr(),
                    exec.argv_ptrs.as_ptr(),
                    exec.envp_ptrs.as_ptr(),
                    libc::AT_EMPTY_PATH,
                );
                std::io::Error::last_os_error()
            };
            let err = attempt();
            if err.raw_os_error() != Some(libc::ENOENT) || libc::fcntl(exec.fd, libc::F_SETFD, 0) != 0 {
                return Err(err);
            }
            Err(attempt())
        });
    }
}

/// The environment of a child: the monitor's own, without `HOME` and `PROCESS_MONITOR_DIR` for an untrusted
/// registration (they would lead it to the monitor's files), then `extra`, then the registration's own.
pub(crate) fn child_env<'a>(
    untrusted: bool,
    extra: impl Iterator<Item = (&'a OsStr, &'a OsStr)>,
) -> Vec<(OsString, OsString)> {
    let mut env: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    if untrusted {
        for name in HIDDEN_FROM_UNTRUSTED {
            env.remove(OsStr::new(name));
        }
    }
    for (name, value) in extra {
        env.insert(name.to_owned(), value.to_owned());
    }
    env.into_iter().collect()
}

/// Variables of the monitor's environment an untrusted registration's child does not inherit.
pub(crate) const HIDDEN_FROM_UNTRUSTED: [&str; 2] = ["HOME", "PROCESS_MONITOR_DIR"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_opened_is_the_file_checked() {
        let dir = std::env::temp_dir().join(format!("pm-execcheck-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("allowed")).unwrap();
        let dir = std::fs::canonicalize(dir).unwrap();
        let tool = dir.join("allowed/tool");
        std::fs::write(&tool, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let policy = ExecPolicy { whitelist: vec![format!("{}/allowed/*", dir.display())], blacklist: Vec::new() };
        let checked = check(tool.to_str().unwrap(), &policy).unwrap();
        assert_eq!(checked.path, tool);
        // Swapped for a symlink to a program outside the whitelist: refused, naming the real target.
        std::fs::remove_file(&tool).unwrap();
        std::os::unix::fs::symlink("/bin/sh", &tool).unwrap();
        let err = check(tool.to_str().unwrap(), &policy).unwrap_err();
        assert!(err.starts_with("Executable not permitted by whitelist/blacklist"), "{err}");
        assert!(!err.contains("allowed/tool"), "names the file reached, not the link: {err}");
        // The whitelist in force counts, not the one at registration.
        std::fs::remove_file(&tool).unwrap();
        std::fs::write(&tool, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let blacklisted = ExecPolicy { blacklist: vec![tool.to_str().unwrap().to_owned()], ..policy.clone() };
        assert!(check(tool.to_str().unwrap(), &blacklisted).is_err());
        assert!(check("relative/tool", &policy).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A binary and a script, each run from the checked descriptor: the binary is what runs, with the argv
    /// and environment given; the script runs through its interpreter.
    #[tokio::test]
    async fn children_run_from_the_checked_descriptor() {
        let dir = std::env::temp_dir().join(format!("pm-execfd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dir = std::fs::canonicalize(dir).unwrap();
        let sleep = std::fs::canonicalize("/bin/sleep").unwrap();
        let out = dir.join("script-ran");
        let script = dir.join("script");
        std::fs::write(&script, format!("#!/bin/sh\necho \"$1 $PM_T\" > '{}'\n", out.display())).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let policy = ExecPolicy {
            whitelist: vec![sleep.to_str().unwrap().to_owned(), format!("{}/*", dir.display())],
            blacklist: Vec::new(),
        };
        for (command, args) in [(sleep.to_str().unwrap(), vec!["30"]), (script.to_str().unwrap(), vec!["hello"])] {
            let mut config = pm_core::ProcessConfig::new("t", "t", command);
            config.untrusted = true;
            config.args = args.iter().map(|arg| arg.to_string()).collect();
            config.environment = Some([("PM_T".to_owned(), "env-given".to_owned())].into());
            let checked = check(command, &policy).unwrap();
            let ctx = crate::spawn::SpawnContext {
                default_cwd: &dir,
                run_dir: &dir,
                extra_env: &[],
                owner: "test-owner",
                checked: Some(&checked),
                cgroup_procs: None,
            };
            let mut child = crate::spawn::spawn(&config, &ctx).unwrap();
            let pid = child.id().unwrap();
            if command == sleep.to_str().unwrap() {
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
                assert_eq!(exe, sleep);
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
                assert!(cmdline.ends_with(b"30\0"), "{:?}", String::from_utf8_lossy(&cmdline));
                let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
                assert!(String::from_utf8_lossy(&environ).contains("PM_T=env-given"));
                child.kill().await.unwrap();
            } else {
                let status = child.wait().await.unwrap();
                assert!(status.success(), "{status:?}");
                assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello env-given\n");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn untrusted_children_lose_the_monitor_home() {
        let extra = [(OsStr::new("A"), OsStr::new("1"))];
        let env = child_env(true, extra.iter().copied());
        assert!(env.iter().all(|(name, _)| name != "HOME" && name != "PROCESS_MONITOR_DIR"));
        assert!(env.iter().any(|(name, value)| name == "A" && value == "1"));
        let own = [(OsStr::new("HOME"), OsStr::new("/their/home"))];
        let env = child_env(true, own.iter().copied());
        assert!(env.iter().any(|(name, value)| name == "HOME" && value == "/their/home"));
    }
}
