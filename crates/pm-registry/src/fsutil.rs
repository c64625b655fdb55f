//! Small file-system helpers: private modes, synced writes, directory sync and the sidecar flock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
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

/// Sets the mode of a file or folder this crate just created to exactly `mode`, whatever the umask took away.
#[cfg(unix)]
fn fix_mode(file: &File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(mode))
}

/// Sets the mode of the folder `dir` (just created by us) to exactly 0700, without following a symlink.
#[cfg(unix)]
fn fix_dir_mode(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let handle =
        OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC).open(dir)?;
    fix_mode(&handle, DIR_MODE)
}

/// Creates `dir` and its missing parents with mode 0700 whatever the umask (existing folders keep their mode).
pub(crate) fn create_dir_all_private(dir: &Path) -> Result<(), Error> {
    create_dir_all_private_io(dir).map_err(|err| Error::io(dir, "create folder", err))
}

fn create_dir_all_private_io(dir: &Path) -> io::Result<()> {
    // A folder given through a symlink of the operator's (a home on another disk) is followed; what is below it
    // is checked by the ownership check before anything is written.
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a folder")),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        create_dir_all_private_io(parent)?;
    }
    match create_dir_private(dir) {
        Ok(()) => Ok(()),
        // Created meanwhile by someone else (a concurrent start): fine when it is a folder.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists && fs::metadata(dir)?.is_dir() => Ok(()),
        Err(err) => Err(err),
    }
}

/// Creates the single folder `dir` with mode 0700 whatever the umask; fails with `AlreadyExists` if it is there.
pub(crate) fn create_dir_private(dir: &Path) -> io::Result<()> {
    dir_builder().create(dir)?;
    // Made with 0700: only a umask that takes one of the owner's bits leaves it otherwise (issue 19: the open and
    // `fchmod` were two of the system calls of each start's run folder).
    #[cfg(unix)]
    if umask_takes(DIR_MODE) {
        fix_dir_mode(dir)?;
    }
    Ok(())
}

/// Whether the process's umask takes any bit of `mode` (which a file or folder created with `mode` then lacks).
/// The umask is read once, from `/proc/self/status` (the call that sets it is the only one that reads it, and
/// setting it, even for a moment, would change what other threads create meanwhile): the monitor never changes
/// its own. Where it cannot be read, every bit counts as taken, and modes are set after each creation as before.
#[cfg(unix)]
fn umask_takes(mode: u32) -> bool {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let umask = *UMASK.get_or_init(|| {
        fs::read_to_string("/proc/self/status").ok().as_deref().and_then(umask_in_status).unwrap_or(0o777)
    });
    umask & mode != 0
}

/// The `Umask:` line of a `/proc/<pid>/status` text (octal).
#[cfg(unix)]
fn umask_in_status(status: &str) -> Option<u32> {
    let value = status.lines().find_map(|line| line.strip_prefix("Umask:"))?;
    u32::from_str_radix(value.trim(), 8).ok()
}

/// Options that open a file of the monitor: 0600 when created, never through a symlink, close-on-exec.
fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    }
    options
}

/// Makes a file just opened through [`private_options`] a private regular file: refuses anything else (a FIFO,
/// a device) and sets mode 0600 whatever the umask.
fn settle(path: &Path, file: File) -> io::Result<File> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(format!("{} is not a regular file", path.display())));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o777 != FILE_MODE {
            fix_mode(&file, FILE_MODE)?;
        }
    }
    Ok(file)
}

/// Creates the new file `path` for writing with mode 0600 (whatever the umask); a file or symlink already
/// at `path` is replaced, never followed or written through.
pub(crate) fn create_private_file(path: &Path) -> Result<File, Error> {
    remove_if_exists(path)?;
    let file =
        private_options().write(true).create_new(true).open(path).map_err(|err| Error::io(path, "create", err))?;
    settle(path, file).map_err(|err| Error::io(path, "create", err))
}

/// Opens `path` for appending, creating it with mode 0600 (whatever the umask) if missing; a symlink at `path`
/// is refused (`O_NOFOLLOW`), and so is anything but a regular file.
///
/// A file created by this call (the usual case: each run's logs in its new run folder) is a new regular file of
/// mode 0600 less the umask, so it is not looked at again: one system call where there is nothing to fix.
pub fn open_private_append(path: &Path) -> io::Result<File> {
    match private_options().append(true).create_new(true).open(path) {
        #[cfg(unix)]
        Ok(file) if umask_takes(FILE_MODE) => settle(path, file),
        Ok(file) => Ok(file),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            let file = private_options().append(true).create(true).open(path)?;
            settle(path, file)
        }
        Err(err) => Err(err),
    }
}

/// Opens the existing file `path` for reading and appending (refusing a symlink or anything but a regular file);
/// a missing file is `NotFound`.
pub(crate) fn open_append_existing(path: &Path) -> io::Result<File> {
    let file = private_options().read(true).append(true).open(path)?;
    settle(path, file)
}

/// Creates `path` afresh for writing with mode 0600 whatever the umask: whatever is there (a file, a symlink
/// someone else placed) is removed first, never followed.
pub fn create_private_file_fresh(path: &Path) -> io::Result<File> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let file = private_options().write(true).create_new(true).open(path)?;
    settle(path, file)
}

/// Creates `dir` and its missing parents with mode 0700 whatever the umask (existing folders keep their mode).
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    create_dir_all_private_io(dir)
}

/// Asks the file system to spread the folders made in `dir` over the disk (`FS_TOPDIR_FL`, `chattr +T`), as it
/// does for folders made in the root: ext2/3/4 otherwise put each new folder next to its parent, and every
/// process's log folder would share one block group with whatever else was made and deleted there lately.
/// Without a journal, ext4 reads the inode of each recently deleted one it passes when it allocates an inode,
/// which made each process's first start cost up to a millisecond of CPU (issue 19). Answers whether the flag
/// is set now; a file system without the flag (or a folder not ours) is left as it is.
pub fn spread_subfolders(dir: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{ioctl_getflags, ioctl_setflags, IFlags};
        let Ok(folder) = File::open(dir) else { return false };
        let Ok(flags) = ioctl_getflags(&folder) else { return false };
        flags.contains(IFlags::TOPDIR) || ioctl_setflags(&folder, flags | IFlags::TOPDIR).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}

/// Writes `bytes` to a new private file at `path` and flushes it to the disk.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = create_private_file(path)?;
    file.write_all(bytes).map_err(|err| Error::io(path, "write", err))?;
    file.sync_all().map_err(|err| Error::io(path, "flush to disk", err))
}

/// The extended attribute that marks a registry file as its writer laid it out (see `docs/daemon-files.md`,
/// "The registry's layout mark"): `1 {length} {modification time in ns}` of the file when it was written.
pub(crate) const LAYOUT_MARK: &str = "user.process_monitor.layout";

/// The value of [`LAYOUT_MARK`] for a file of this length and modification time.
fn layout_mark(meta: &fs::Metadata) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(format!("1 {} {}", meta.len(), i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// Writes `parts` one after the other to a new private file at `path`, marks it with [`LAYOUT_MARK`] when
/// `mark` is set (on a file system without extended attributes it is left unmarked), and flushes it to the disk.
pub(crate) fn write_synced_parts(path: &Path, parts: &[&[u8]], mark: bool) -> Result<(), Error> {
    let mut file = create_private_file(path)?;
    for part in parts {
        file.write_all(part).map_err(|err| Error::io(path, "write", err))?;
    }
    if mark {
        // After the last write: the mark holds the modification time the file keeps from now on.
        let value = file.metadata().ok().as_ref().and_then(layout_mark);
        #[cfg(unix)]
        if let Some(value) = value {
            if let Err(err) =
                rustix::fs::fsetxattr(&file, LAYOUT_MARK, value.as_bytes(), rustix::fs::XattrFlags::empty())
            {
                tracing::debug!("{}: layout mark not set: {err}", path.display());
            }
        }
        #[cfg(not(unix))]
        let _ = value;
    }
    file.sync_all().map_err(|err| Error::io(path, "flush to disk", err))
}

/// The bytes of `path` and whether it carries a [`LAYOUT_MARK`] that matches its length and modification time
/// (before and after the read), or `None` if it does not exist.
pub(crate) fn read_marked(path: &Path) -> Result<Option<(Vec<u8>, bool)>, Error> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(Error::io(path, "read", err)),
    };
    let before = file.metadata().map_err(|err| Error::io(path, "read", err))?;
    let mut bytes = Vec::with_capacity(usize::try_from(before.len()).unwrap_or(0).saturating_add(1));
    file.read_to_end(&mut bytes).map_err(|err| Error::io(path, "read", err))?;
    let expected = layout_mark(&before).filter(|_| bytes.len() as u64 == before.len());
    let after = file.metadata().ok().as_ref().and_then(layout_mark);
    let mut found = [0u8; 64];
    #[cfg(unix)]
    let found = rustix::fs::fgetxattr(&file, LAYOUT_MARK, &mut found[..]).ok().map(|len| &found[..len]);
    #[cfg(not(unix))]
    let found: Option<&[u8]> = None;
    let marked = expected
        .is_some_and(|expected| found == Some(expected.as_bytes()) && after.as_deref() == Some(expected.as_str()));
    Ok(Some((bytes, marked)))
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
    let file = private_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .and_then(|file| settle(path, file))
        .map_err(|err| Error::io(path, "open lock file", err))?;
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

    /// The umask is read from the status text; without the line (an old kernel) it is unknown, and every created
    /// file's mode is then set after its creation.
    #[test]
    fn the_umask_is_read_from_the_status_text() {
        assert_eq!(umask_in_status("Name:\tpm\nUmask:\t0022\nState:\tR\n"), Some(0o022));
        assert_eq!(umask_in_status("Umask:\t0277\n"), Some(0o277));
        assert_eq!(umask_in_status("Name:\tpm\nState:\tR\n"), None);
        assert_eq!(umask_in_status("Umask:\tnot octal\n"), None);
        let here = fs::read_to_string("/proc/self/status").unwrap();
        assert!(umask_in_status(&here).is_some(), "this kernel's status has the umask");
    }

    #[test]
    fn unique_suffixes_differ() {
        let first = unique_suffix();
        let second = unique_suffix();
        assert_ne!(first, second);
        assert!(first.starts_with(&format!("{}-", std::process::id())));
    }
}
