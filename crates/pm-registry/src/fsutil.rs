//! Small file-system helpers: private modes, synced writes, directory sync and the sidecar flock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::Error;

/// Mode of every file this crate creates.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;
/// Mode of every folder this crate creates.
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;

/// Longest pause between two attempts to take a contended flock.
const MAX_LOCK_POLL: Duration = Duration::from_millis(10);

/// A name part unique within this machine for the life of this process: `{pid}-{counter}`.
pub(crate) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// `path` with `suffix` appended to its file name (`a.json` + `.bak` = `a.json.bak`).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn dir_builder() -> fs::DirBuilder {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder
}

/// Creates `dir` and its missing parents with mode 0700 (existing folders keep their mode).
pub(crate) fn create_dir_all_private(dir: &Path) -> Result<(), Error> {
    dir_builder().recursive(true).create(dir).map_err(|err| Error::io(dir, "create folder", err))
}

/// Creates the single folder `dir` with mode 0700; fails with `AlreadyExists` if it is there.
pub(crate) fn create_dir_private(dir: &Path) -> io::Result<()> {
    dir_builder().create(dir)
}

/// Opens `path` for writing with mode 0600, truncating it if it exists.
pub(crate) fn create_private_file(path: &Path) -> Result<File, Error> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    options.open(path).map_err(|err| Error::io(path, "create", err))
}

/// Writes `bytes` to a new private file at `path` and flushes it to the disk.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = create_private_file(path)?;
    file.write_all(bytes).map_err(|err| Error::io(path, "write", err))?;
    file.sync_all().map_err(|err| Error::io(path, "flush to disk", err))
}

/// Flushes the entries of `dir` (a rename or link in it) to the disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        let handle = File::open(dir).map_err(|err| Error::io(dir, "open folder", err))?;
        handle.sync_all().map_err(|err| Error::io(dir, "flush folder to disk", err))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The bytes of `path`, or `None` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(Error::io(path, "read", err)),
    }
}

/// Removes `path`; a file that is gone already is fine.
pub(crate) fn remove_if_exists(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(Error::io(path, "remove", err)),
    }
}

/// The parent folder of a file path (`.` for a bare name).
pub(crate) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// An exclusive flock on a sidecar file; released when dropped (closing the file releases it).
#[derive(Debug)]
pub(crate) struct Flock {
    file: File,
}

impl Drop for Flock {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock anyway; unlocking first makes it immediate even if a
        // duplicate of the descriptor were still open somewhere.
        let _ = fs4::FileExt::unlock(&self.file);
    }
}

/// Takes an exclusive flock on `path` (created 0600 if missing, in an existing folder), polling with short
/// sleeps until `timeout` has passed.
pub(crate) fn lock_exclusive(path: &Path, timeout: Duration) -> Result<Flock, Error> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    let file = options.open(path).map_err(|err| Error::io(path, "open lock file", err))?;
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => return Ok(Flock { file }),
            Err(fs4::TryLockError::WouldBlock) => {}
            Err(fs4::TryLockError::Error(err)) => return Err(Error::io(path, "lock", err)),
        }
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(Error::LockTimeout { path: path.to_owned(), waited });
        }
        // A little jitter keeps contenders that started together from polling in lockstep.
        let jitter_us =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|at| u64::from(at.subsec_micros()) % 1000).unwrap_or(0);
        let sleep = (pause + Duration::from_micros(jitter_us)).min(timeout - waited);
        std::thread::sleep(sleep);
        pause = (pause * 2).min(MAX_LOCK_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_append_to_the_file_name() {
        let path = Path::new("/x/processes_default.json");
        assert_eq!(with_suffix(path, ".bak"), Path::new("/x/processes_default.json.bak"));
        assert_eq!(parent_of(path), Path::new("/x"));
        assert_eq!(parent_of(Path::new("a.json")), Path::new("."));
    }

    #[test]
    fn unique_suffixes_differ() {
        let first = unique_suffix();
        let second = unique_suffix();
        assert_ne!(first, second);
        assert!(first.starts_with(&format!("{}-", std::process::id())));
    }
}
