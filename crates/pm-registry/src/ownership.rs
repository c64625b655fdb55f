//! The ownership check of an instance's files: nobody but the monitor's own user may control them.
//!
//! A monitor (above all one run as root) that read a registry another user can write, or wrote its logs into a
//! folder another user can rename things into, would run that user's commands with its own rights. So before it
//! uses its home, the monitor checks the home folder and every file and folder of the instance that exists: each
//! must be owned by the monitor's effective user, must not be writable by group or others, and (below the home
//! folder) must not be a symbolic link. Missing ones are fine: the monitor creates them itself, privately.

use std::fs;
use std::io;
use std::path::Path;

use crate::{fsutil, Error, Paths};

/// Checks the home folder of `paths` and the instance's files and folders in it (see the module
/// documentation); the first problem found is [`Error::Unsafe`] naming the path and the fix.
pub fn check_home(paths: &Paths) -> Result<(), Error> {
    // The home folder itself may be reached through a symlink the operator made (a home on another disk): its
    // target is what is checked.
    check(paths.root(), true)?;
    let registry = paths.registry_file();
    for path in [
        registry.clone(),
        fsutil::with_suffix(&registry, ".bak"),
        paths.lock_file(),
        paths.transaction_lock_file(),
        paths.logs_dir(),
        paths.monitor_dir(),
    ] {
        check(&path, false)?;
    }
    Ok(())
}

#[cfg(unix)]
fn check(path: &Path, follow: bool) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let meta = match if follow { fs::metadata(path) } else { fs::symlink_metadata(path) } {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(Error::io(path, "inspect", err)),
    };
    let unsafe_path = |problem: String, fix: String| Err(Error::Unsafe { path: path.to_owned(), problem, fix });
    if meta.file_type().is_symlink() {
        return unsafe_path(
            "is a symbolic link where the monitor keeps its own files".to_owned(),
            format!("remove it (rm {}); the monitor creates its files itself", path.display()),
        );
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return unsafe_path(
            format!("is owned by uid {}, not by the monitor's user (uid {me})", meta.uid()),
            format!("chown {me} {} (or use a --directory of your own)", path.display()),
        );
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return unsafe_path(
            format!("is writable by group or others (mode {mode:04o})"),
            format!("chmod go-w {}", path.display()),
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check(_path: &Path, _follow: bool) -> Result<(), Error> {
    Ok(())
}
