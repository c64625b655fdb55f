//! Resolving the command of an untrusted registration to the canonical executable it would run.
//!
//! The whitelist and blacklist are matched against this canonical path, and the registration then stores it in
//! place of the command as given, so the file that was checked is the file that runs: no later `PATH` lookup,
//! relative path or symlink can point the command somewhere else.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Resolves `command` to a canonical (absolute, symlink- and `..`-free) path of an executable regular file.
///
/// - A command with a `/` is a path: an absolute one is taken as is; a relative one is taken against
///   `working_directory`, which must then be absolute (a relative command without one is refused, since the
///   daemon's own working directory must never matter).
/// - A bare name is looked up in the absolute entries of `path_var` (the monitor's `PATH`), the first executable
///   regular file wins, as `execvp` would choose.
///
/// `None` when nothing executable is found.
pub(crate) fn resolve_executable(
    command: &str,
    working_directory: Option<&str>,
    path_var: Option<&OsStr>,
) -> Option<PathBuf> {
    if command.is_empty() || command.contains('\0') {
        return None;
    }
    let candidate = if command.contains('/') {
        let path = Path::new(command);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            let dir = Path::new(working_directory?);
            if !dir.is_absolute() {
                return None;
            }
            dir.join(path)
        }
    } else {
        std::env::split_paths(path_var?)
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join(command))
            .find(|path| is_executable_file(path))?
    };
    let canonical = std::fs::canonicalize(candidate).ok()?;
    is_executable_file(&canonical).then_some(canonical)
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Why an untrusted registration may not run a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not found, not executable, or not permitted by the whitelist and blacklist.
    NotPermitted,
    /// The monitor's own program (`process_monitor` or `monitor_watcher`), which would reach the monitor's files.
    OwnExecutable,
}

/// Whether an untrusted registration may run `command`; `Ok(canonical path)` when it may.
pub(crate) fn permitted_executable(
    command: &str,
    working_directory: Option<&str>,
    path_var: Option<&OsStr>,
    whitelist: &[String],
    blacklist: &[String],
) -> Result<String, Refusal> {
    let canonical = resolve_executable(command, working_directory, path_var).ok_or(Refusal::NotPermitted)?;
    if is_own_executable(&canonical) {
        tracing::info!(command = %pm_core::escape_control(command), "the monitor's own executable refused");
        return Err(Refusal::OwnExecutable);
    }
    let canonical = canonical.to_str().ok_or(Refusal::NotPermitted)?.to_owned();
    match pm_core::executable_permitted(&canonical, whitelist, blacklist) {
        Ok(true) => Ok(canonical),
        Ok(false) => {
            tracing::info!(
                command = %pm_core::escape_control(command),
                canonical = %pm_core::escape_control(&canonical),
                "executable not permitted by whitelist/blacklist"
            );
            Err(Refusal::NotPermitted)
        }
        Err(err) => {
            tracing::warn!(command = %pm_core::escape_control(command), "stored executable patterns are invalid, refusing: {err}");
            Err(Refusal::NotPermitted)
        }
    }
}

/// The monitor's own programs, canonical: the running executable and its siblings `process_monitor` and
/// `monitor_watcher` (the two names the monitor ships under).
pub fn own_executables() -> &'static [PathBuf] {
    static OWN: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    OWN.get_or_init(|| {
        let mut own = Vec::new();
        if let Ok(exe) = std::env::current_exe().and_then(std::fs::canonicalize) {
            if let Some(dir) = exe.parent() {
                for name in ["process_monitor", "monitor_watcher"] {
                    if let Ok(sibling) = std::fs::canonicalize(dir.join(name)) {
                        own.push(sibling);
                    }
                }
            }
            own.push(exe);
        }
        own
    })
}

/// Whether `canonical` is one of [`own_executables`] (compared by path and by file identity).
pub fn is_own_executable(canonical: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let identity = |path: &Path| std::fs::metadata(path).ok().map(|meta| (meta.dev(), meta.ino()));
    let target = identity(canonical);
    own_executables().iter().any(|own| own == canonical || (target.is_some() && identity(own) == target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Dir(PathBuf);

    impl Dir {
        fn new() -> Dir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "pm-http-exec-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Dir(std::fs::canonicalize(path).unwrap())
        }

        fn executable(&self, name: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn check(command: &str, working_directory: Option<&str>, path_var: Option<&str>, expected: Option<&Path>) {
        let got = resolve_executable(command, working_directory, path_var.map(OsStr::new));
        assert_eq!(got.as_deref(), expected, "command {command:?}");
    }

    #[test]
    fn resolves_paths_names_and_links() {
        let dir = Dir::new();
        let tool = dir.executable("tool");
        std::fs::write(dir.0.join("plain"), "data").unwrap();
        std::os::unix::fs::symlink(&tool, dir.0.join("link")).unwrap();
        let root = dir.0.to_str().unwrap();

        check(tool.to_str().unwrap(), None, None, Some(&tool));
        check(&format!("{root}/./sub/../tool"), None, None, None); // `sub` does not exist
        std::fs::create_dir(dir.0.join("sub")).unwrap();
        check(&format!("{root}/sub/../tool"), None, None, Some(&tool));
        check(&format!("{root}/link"), None, None, Some(&tool));
        check("./tool", Some(root), None, Some(&tool));
        check("./tool", None, None, None);
        check("./tool", Some("relative/dir"), None, None);
        check("tool", None, Some(&format!("relative:{root}")), Some(&tool));
        check("tool", None, Some("relative"), None);
        check("plain", None, Some(root), None); // not executable
        check(&format!("{root}/plain"), None, None, None);
        check(root, None, None, None); // a directory
        check("", None, Some(root), None);
    }

    #[test]
    fn whitelist_is_matched_on_the_canonical_path() {
        let dir = Dir::new();
        let tool = dir.executable("tool");
        let root = dir.0.to_str().unwrap();
        let whitelist = vec![format!("{root}/*")];
        std::os::unix::fs::symlink("/bin/sh", dir.0.join("shell")).unwrap();

        let allowed = permitted_executable("tool", None, Some(OsStr::new(root)), &whitelist, &[]);
        assert_eq!(allowed.as_deref().ok(), tool.to_str());
        let no = Err(Refusal::NotPermitted);
        assert_eq!(permitted_executable(&format!("{root}/shell"), None, None, &whitelist, &[]), no);
        assert_eq!(permitted_executable(&format!("{root}/../../bin/sh"), None, None, &whitelist, &[]), no);
        assert_eq!(permitted_executable(tool.to_str().unwrap(), None, None, &[], &[]), no);
        assert_eq!(permitted_executable(tool.to_str().unwrap(), None, None, &whitelist, &whitelist), no);
        assert_eq!(permitted_executable(tool.to_str().unwrap(), None, None, &["relative/*".to_owned()], &[]), no);
        // The running program itself (here the test binary) is refused whatever the whitelist says.
        let exe = std::env::current_exe().unwrap();
        let everything = vec!["/**".to_owned()];
        assert_eq!(
            permitted_executable(exe.to_str().unwrap(), None, None, &everything, &[]),
            Err(Refusal::OwnExecutable)
        );
    }
}
