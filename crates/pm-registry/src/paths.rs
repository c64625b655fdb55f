//! Where an instance keeps its files: the guide's layout under one root folder.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use pm_core::Timestamp;

use crate::fsutil;
use crate::Error;

/// The files of one instance under one root folder (`~/.tom/process_monitor` by default).
///
/// The root is absolute and the instance id valid (it names files), so every path built here is safe to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    root: PathBuf,
    instance_id: String,
}

impl Paths {
    /// The files of `instance_id` under `root`; a relative `root` is taken against the current folder.
    pub fn new(root: &Path, instance_id: &str) -> Result<Paths, Error> {
        pm_core::validate_instance_id(instance_id).map_err(into_invalid_id)?;
        let root = if root.is_absolute() {
            root.to_owned()
        } else {
            let cwd =
                std::env::current_dir().map_err(|err| Error::io(root, "resolve against the current folder", err))?;
            cwd.join(root)
        };
        Ok(Paths { root, instance_id: instance_id.to_owned() })
    }

    /// The files of `instance_id` under `directory`, or under `home_dir()/.tom/process_monitor` without one.
    pub fn resolve(directory: Option<&Path>, instance_id: &str) -> Result<Paths, Error> {
        match directory {
            Some(directory) => Paths::new(directory, instance_id),
            None => Paths::new(&default_root(&Paths::home_dir()), instance_id),
        }
    }

    /// The home folder: `$HOME`, else `$USERPROFILE`, else `.` (an empty variable counts as unset).
    pub fn home_dir() -> PathBuf {
        home_dir_from(std::env::var_os("HOME"), std::env::var_os("USERPROFILE"))
    }

    /// The files of another instance (the partner) under the same root.
    pub fn for_instance(&self, instance_id: &str) -> Result<Paths, Error> {
        Paths::new(&self.root, instance_id)
    }

    /// The root folder (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The instance id.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// `processes_{id}.json`: the registry.
    pub fn registry_file(&self) -> PathBuf {
        self.root.join(format!("processes_{}.json", self.instance_id))
    }

    /// `processes_{id}.journal`: the changes acknowledged since the registry was last rewritten, one JSON line
    /// each (see `docs/daemon-files.md`).
    pub fn journal_file(&self) -> PathBuf {
        self.root.join(format!("processes_{}.journal", self.instance_id))
    }

    /// `processes_{id}.lock`: the instance lock of the guide's lock protocol.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join(format!("processes_{}.lock", self.instance_id))
    }

    /// `processes_{id}.json.lock`: the flock sidecar of registry transactions (never renamed or deleted).
    pub fn transaction_lock_file(&self) -> PathBuf {
        self.root.join(format!("processes_{}.json.lock", self.instance_id))
    }

    /// `processes_{id}.sock`: the unix socket of the local HTTP API (mode 0600 unless other users are named).
    ///
    /// The path can be longer than the kernel's limit for socket addresses (108 bytes on Linux); bind and connect
    /// through `pm_http::unix` (relative to the folder) rather than with this path directly.
    pub fn socket_file(&self) -> PathBuf {
        self.root.join(format!("processes_{}.sock", self.instance_id))
    }

    /// `processes_{id}.tokens.json`: the hashes of the bearer tokens of the remote API (mode 0600).
    pub fn tokens_file(&self) -> PathBuf {
        self.root.join(format!("processes_{}.tokens.json", self.instance_id))
    }

    /// `{id}_logs`: the log folder of this instance.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join(format!("{}_logs", self.instance_id))
    }

    /// `{id}_logs/_monitor`: the folder of the monitor's own files (its logs, `startup.log`). Process ids start
    /// with a letter or digit, so no process folder can take this name, and no id can name one of these files.
    pub fn monitor_dir(&self) -> PathBuf {
        self.logs_dir().join(MONITOR_DIR)
    }

    /// `{id}_logs/_monitor/{YYYYMMDD_HHMMSS}_{id}.log`: the monitor's own log of a run started `at`.
    pub fn monitor_log_file(&self, at: Timestamp) -> PathBuf {
        self.monitor_dir().join(format!("{}_{}.log", at.compact(), self.instance_id))
    }

    /// `{id}_logs/_monitor/startup.log`: stderr of the last detached start.
    pub fn startup_log_file(&self) -> PathBuf {
        self.monitor_dir().join("startup.log")
    }

    /// `{id}_logs/{process_id}`: the folder of a managed process's run folders.
    pub fn process_logs_dir(&self, process_id: &str) -> PathBuf {
        self.logs_dir().join(process_id)
    }

    /// The newest run folder of a process (the one its current run logs into), by the folders' order
    /// (`YYYYMMDD_HHMMSS`, then `_2`, `_3`, ...); `None` when there is none.
    pub fn newest_run_dir(&self, process_id: &str) -> Option<PathBuf> {
        pm_core::validate_process_id(process_id).ok()?;
        newest_run(&self.process_logs_dir(process_id)).map(|(_, path)| path)
    }

    /// The run folders of a process, oldest first.
    pub fn run_dirs(&self, process_id: &str) -> Vec<PathBuf> {
        if pm_core::validate_process_id(process_id).is_err() {
            return Vec::new();
        }
        list_runs(&self.process_logs_dir(process_id)).unwrap_or_default().into_iter().map(|(_, path)| path).collect()
    }

    /// Creates a fresh run folder `{id}_logs/{process_id}/{YYYYMMDD_HHMMSS}` (continuing with `_2`, `_3`, ...
    /// when a folder of that second or a later one exists) with mode 0700, then deletes the oldest run folders so that at most `keep` remain
    /// (never the new one). Only folders named like run folders are counted or deleted.
    pub fn create_run_dir(&self, process_id: &str, at: Timestamp, keep: usize) -> Result<PathBuf, Error> {
        let created = self.new_run_dir(process_id, at)?;
        prune_run_dirs(&self.process_logs_dir(process_id), &created, keep)?;
        Ok(created)
    }

    /// Deletes the oldest run folders of a process so that at most `keep` remain (never `newest`).
    pub fn prune_run_dirs(&self, process_id: &str, keep: usize, newest: &Path) -> Result<(), Error> {
        pm_core::validate_process_id(process_id).map_err(into_invalid_id)?;
        prune_run_dirs(&self.process_logs_dir(process_id), newest, keep)
    }

    /// Like [`Paths::create_run_dir`] without the pruning (for callers that prune later, off their hot path).
    pub fn new_run_dir(&self, process_id: &str, at: Timestamp) -> Result<PathBuf, Error> {
        self.new_run_dir_listed(process_id, at, usize::MAX).map(|(created, _)| created)
    }

    /// Like [`Paths::new_run_dir`], and answers as well the run folders that a prune to `keep` runs would delete
    /// now (the oldest, never the new one), found in the same reading of the process's folder: a caller that
    /// deletes them later (off its hot path) does what [`Paths::prune_run_dirs`] would, without listing the
    /// folder again. A folder in the list that is gone by then was deleted by someone else: nothing to do.
    pub fn new_run_dir_listed(
        &self,
        process_id: &str,
        at: Timestamp,
        keep: usize,
    ) -> Result<(PathBuf, Vec<PathBuf>), Error> {
        self.new_run_dir_known(process_id, at, keep, None).map(|(created, old, _)| (created, old))
    }

    /// Like [`Paths::new_run_dir_listed`], from the run folders `known` to the caller (what the last call
    /// answered) instead of a listing of the process's folder; answers as well the runs known now, the new one
    /// included and those beyond `keep` left out. The caller must be the only one making run folders for the
    /// process (its task), so that what it knows is what is there: a folder someone else made with a run's name
    /// in the meantime is skipped when the new folder is named (its name taken), and a process folder that is gone
    /// is made again and listed. Without `known`, the folder is listed as [`Paths::new_run_dir_listed`] does.
    /// A crash storm's restarts listed each process's folder at every start (issue 19).
    pub fn new_run_dir_known(
        &self,
        process_id: &str,
        at: Timestamp,
        keep: usize,
        known: Option<Box<KnownRuns>>,
    ) -> Result<(PathBuf, Vec<PathBuf>, Box<KnownRuns>), Error> {
        pm_core::validate_process_id(process_id).map_err(into_invalid_id)?;
        let parent = self.process_logs_dir(process_id);
        let stamp = stamp_key(&at.compact()).unwrap_or(0);
        if let Some(mut known) = known {
            if let Some(created) = known.make_next(&parent, stamp)? {
                let old = known.forget_beyond(keep).into_iter().map(|key| parent.join(run_name(key))).collect();
                return Ok((created, old, known));
            }
        }
        // Made first (one system call), looked at only when it was there already: at the first start of each
        // process that is all (issue 19, the run folders of a start of 10,000).
        let fresh = make_process_dir(&parent)?;
        // A process folder made just now holds no runs.
        let runs = if fresh { Vec::new() } else { list_runs(&parent).unwrap_or_default() };
        let mut known = Box::new(KnownRuns(
            runs.iter().filter_map(|((base, number), _)| Some((stamp_key(base)?, *number))).collect(),
        ));
        let created = known.make_next(&parent, stamp)?.ok_or_else(|| {
            Error::io(
                &parent,
                "create folder",
                io::Error::new(io::ErrorKind::NotFound, "the process's log folder vanished"),
            )
        })?;
        // With the new one, `runs.len() + 1` runs: the oldest beyond `keep` go (all of them older than the new one).
        let excess = (runs.len() + 1).saturating_sub(keep.max(1)).min(runs.len());
        known.forget_beyond(keep);
        let old = runs.into_iter().take(excess).map(|(_, path)| path).collect();
        Ok((created, old, known))
    }

    /// Deletes run folders found by [`Paths::new_run_dir_listed`]; one already gone is no error.
    pub fn remove_run_dirs(&self, runs: &[PathBuf]) -> Result<(), Error> {
        for path in runs {
            if let Err(err) = remove_run_dir(path) {
                if err.kind() != io::ErrorKind::NotFound {
                    return Err(Error::io(path, "remove old run folder", err));
                }
            }
        }
        Ok(())
    }
}

/// Makes the process folder `parent` (mode 0700, with the log folder when that is missing too); answers whether it
/// was made now. One that was there must be a folder: logs are never written through a symlink the monitor did not
/// create.
fn make_process_dir(parent: &Path) -> Result<bool, Error> {
    let meta = match fsutil::create_dir_private(parent) {
        Ok(()) => return Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            fsutil::create_dir_all_private(parent)?;
            fs::symlink_metadata(parent)
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => fs::symlink_metadata(parent),
        Err(err) => return Err(Error::io(parent, "create folder", err)),
    };
    match meta {
        Ok(meta) if meta.is_dir() => Ok(false),
        Ok(meta) if !meta.file_type().is_symlink() => Err(Error::io(
            parent,
            "create folder",
            io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a folder"),
        )),
        Ok(_) => Err(Error::Unsafe {
            path: parent.to_owned(),
            problem: "is a symbolic link, not the process's log folder".to_owned(),
            fix: format!("remove it (rm {}); the monitor creates the folder itself", parent.display()),
        }),
        Err(err) => Err(Error::io(parent, "inspect", err)),
    }
}

/// The two logs of a run, all a run folder holds unless its logs were rotated.
const RUN_LOGS: [&str; 2] = ["stdout.log", "stderr.log"];

/// Deletes the run folder `path`: its two logs and the folder, without listing it (the listing of a run folder,
/// its open and its close, were half of the system calls of each prune of a crash storm; issue 19); a folder that
/// holds more (rotated logs, anything else) is deleted whole as before. Never through a symlink: the folder is
/// opened with `O_NOFOLLOW`, and the logs are removed in the open folder.
fn remove_run_dir(path: &Path) -> io::Result<()> {
    use rustix::fs::{AtFlags, Mode, OFlags, CWD};
    let dir = match rustix::fs::openat(
        CWD,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(dir) => dir,
        // A symlink (`ELOOP`) or not a folder: `remove_dir_all` removes the link or the file as it always did.
        Err(err) if err != rustix::io::Errno::NOENT => return fs::remove_dir_all(path),
        Err(err) => return Err(err.into()),
    };
    for name in RUN_LOGS {
        match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(_) => return fs::remove_dir_all(path),
        }
    }
    drop(dir);
    match fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        // Not empty: rotated logs, or files of someone else's.
        Err(_) => fs::remove_dir_all(path),
    }
}

/// Name of the folder of the monitor's own files in `{id}_logs` (see [`Paths::monitor_dir`]).
pub const MONITOR_DIR: &str = "_monitor";

fn into_invalid_id(err: pm_core::Error) -> Error {
    match err {
        pm_core::Error::InvalidId { id, reason } => Error::InvalidId { id, reason },
        other => Error::InvalidId { id: String::new(), reason: other.to_string() },
    }
}

/// `home/.tom/process_monitor`.
fn default_root(home: &Path) -> PathBuf {
    home.join(".tom").join("process_monitor")
}

/// The home-folder decision on given variable values.
fn home_dir_from(home: Option<OsString>, user_profile: Option<OsString>) -> PathBuf {
    [home, user_profile]
        .into_iter()
        .flatten()
        .find(|value| !value.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Order of a run folder name `YYYYMMDD_HHMMSS` or `YYYYMMDD_HHMMSS_N`; `None` for any other name.
fn run_dir_key(name: &str) -> Option<(&str, u64)> {
    let is_digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    if !name.is_ascii() {
        return None;
    }
    let base = name.get(..15)?;
    let stamp_ok = is_digits(&base[..8]) && base.as_bytes()[8] == b'_' && is_digits(&base[9..]);
    if !stamp_ok {
        return None;
    }
    match &name[15..] {
        "" => Some((base, 1)),
        rest => {
            let number = rest.strip_prefix('_').filter(|number| is_digits(number))?;
            Some((base, number.parse().ok()?))
        }
    }
}

/// The run folders of one process as the task that makes them knows them, oldest first: each one's time stamp
/// (`YYYYMMDDHHMMSS` as a number) and its number (1 for `YYYYMMDD_HHMMSS`, 2 for `YYYYMMDD_HHMMSS_2`, ...).
/// Kept by the monitor between the starts of a crash loop (16 B a run) so that a restart need not list the
/// process's folder (see [`Paths::new_run_dir_known`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownRuns(Vec<(u64, u64)>);

impl KnownRuns {
    /// Makes the next run folder in `parent` for a start at `stamp`, after every known one (continuing the newest's
    /// numbering when it is of this second or later: the clock may go back); a name taken by a folder made by
    /// someone else is skipped. `None` when `parent` itself is gone.
    fn make_next(&mut self, parent: &Path, stamp: u64) -> Result<Option<PathBuf>, Error> {
        let (base, mut number) = match self.0.last() {
            Some(&(newest, number)) if newest >= stamp => (newest, number + 1),
            _ => (stamp, 1),
        };
        loop {
            let candidate = parent.join(run_name((base, number)));
            match fsutil::create_dir_private(&candidate) {
                Ok(()) => {
                    self.0.push((base, number));
                    return Ok(Some(candidate));
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => number += 1,
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(err) => return Err(Error::io(&candidate, "create folder", err)),
            }
        }
    }

    /// Forgets the oldest runs beyond `keep` (at least one is kept), answering them (for deletion).
    fn forget_beyond(&mut self, keep: usize) -> Vec<(u64, u64)> {
        let excess = self.0.len().saturating_sub(keep.max(1));
        self.0.drain(..excess).collect()
    }

    /// How many runs are known.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no run is known.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `YYYYMMDD_HHMMSS` as the number `YYYYMMDDHHMMSS`; `None` for anything else.
fn stamp_key(base: &str) -> Option<u64> {
    let (date, time) = base.split_once('_')?;
    let digits = |part: &str, len: usize| part.len() == len && part.bytes().all(|byte| byte.is_ascii_digit());
    if !digits(date, 8) || !digits(time, 6) {
        return None;
    }
    Some(date.parse::<u64>().ok()? * 1_000_000 + time.parse::<u64>().ok()?)
}

/// The folder name of run `(stamp, number)` of [`KnownRuns`].
fn run_name((stamp, number): (u64, u64)) -> String {
    let base = format!("{:08}_{:06}", stamp / 1_000_000, stamp % 1_000_000);
    if number <= 1 {
        base
    } else {
        format!("{base}_{number}")
    }
}

/// A run folder with its order key (timestamp part, number).
type Run = ((String, u64), PathBuf);

/// The run folders in `parent`, oldest first, with their order keys.
fn list_runs(parent: &Path) -> Result<Vec<Run>, Error> {
    let entries = match fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(Error::io(parent, "list folder", err)),
    };
    let mut runs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| Error::io(parent, "list folder", err))?;
        let is_dir = entry.file_type().map(|kind| kind.is_dir()).unwrap_or(false);
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let (true, Some((base, number))) = (is_dir, run_dir_key(name)) {
            runs.push(((base.to_owned(), number), entry.path()));
        }
    }
    runs.sort();
    Ok(runs)
}

fn newest_run(parent: &Path) -> Option<Run> {
    list_runs(parent).ok()?.pop()
}

/// Deletes the oldest run folders in `parent` until at most `keep` remain. Only folders older than `created` are
/// deleted: a prune that runs late (after later starts made newer folders) never removes a newer run, and
/// concurrent prunes of one process, each deleting oldest first, never delete more than needed together. When
/// `created` is gone already, a later prune has done the work and nothing is deleted.
fn prune_run_dirs(parent: &Path, created: &Path, keep: usize) -> Result<(), Error> {
    let runs = list_runs(parent)?;
    let Some(position) = runs.iter().position(|(_, path)| path == created) else { return Ok(()) };
    let excess = runs.len().saturating_sub(keep.max(1)).min(position);
    for (_, path) in runs.into_iter().take(excess) {
        if let Err(err) = fs::remove_dir_all(&path) {
            if err.kind() != io::ErrorKind::NotFound {
                return Err(Error::io(&path, "remove old run folder", err));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder named `name` (with this process's id), its layout, and a fixed timestamp.
    fn scratch(name: &str) -> (PathBuf, Paths, Timestamp) {
        let root = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let paths = Paths::new(&root, "default").unwrap();
        (root, paths, Timestamp::parse("2026-01-24T10:30:00Z").unwrap())
    }

    #[test]
    fn run_folders_of_one_second_keep_their_order_through_pruning() {
        let (root, paths, at) = scratch("pm-runs");
        let mut created = Vec::new();
        for _ in 0..13 {
            created.push(paths.create_run_dir("api", at, 10).unwrap());
        }
        let earlier = Timestamp::parse("2026-01-24T10:29:00Z").unwrap();
        created.push(paths.create_run_dir("api", earlier, 10).unwrap());
        let kept = paths.run_dirs("api");
        assert_eq!(kept, created[created.len() - 10..].to_vec(), "the newest ten, in creation order");
        assert_eq!(paths.newest_run_dir("api").as_ref(), created.last());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_late_prune_never_deletes_newer_runs() {
        let (root, paths, at) = scratch("pm-runs-late");
        let runs: Vec<PathBuf> = (0..4).map(|_| paths.new_run_dir("api", at).unwrap()).collect();
        // The prune of the second start runs only now, after two more starts: with keep 1 it may delete the first
        // run only, never the newer third and fourth (the live child's folder).
        paths.prune_run_dirs("api", 1, &runs[1]).unwrap();
        assert_eq!(paths.run_dirs("api"), runs[1..].to_vec());
        // The newest start's prune then leaves just itself.
        paths.prune_run_dirs("api", 1, &runs[3]).unwrap();
        assert_eq!(paths.run_dirs("api"), vec![runs[3].clone()]);
        // A prune whose own folder is gone deletes nothing.
        let fifth = paths.new_run_dir("api", at).unwrap();
        paths.prune_run_dirs("api", 1, &runs[0]).unwrap();
        assert_eq!(paths.run_dirs("api"), vec![runs[3].clone(), fifth.clone()]);
        fs::remove_dir_all(&root).unwrap();
    }

    fn check_home(home: Option<&str>, user_profile: Option<&str>, expected: &str) {
        let got = home_dir_from(home.map(OsString::from), user_profile.map(OsString::from));
        assert_eq!(got, PathBuf::from(expected), "HOME={home:?} USERPROFILE={user_profile:?}");
    }

    #[test]
    fn home_dir_prefers_home_then_user_profile_then_dot() {
        check_home(Some("/home/a"), Some("C:\\Users\\a"), "/home/a");
        check_home(None, Some("C:\\Users\\a"), "C:\\Users\\a");
        check_home(Some(""), Some("C:\\Users\\a"), "C:\\Users\\a");
        check_home(None, None, ".");
        check_home(Some(""), Some(""), ".");
        check_home(None, Some(""), ".");
    }

    #[test]
    fn default_root_is_under_dot_tom() {
        assert_eq!(default_root(Path::new("/home/a")), Path::new("/home/a/.tom/process_monitor"));
    }

    #[test]
    fn run_dir_names_are_recognised_and_ordered() {
        assert_eq!(run_dir_key("20260124_103000"), Some(("20260124_103000", 1)));
        assert_eq!(run_dir_key("20260124_103000_2"), Some(("20260124_103000", 2)));
        assert_eq!(run_dir_key("20260124_103000_10"), Some(("20260124_103000", 10)));
        for other in [
            "notes",
            "20260124_103000_",
            "20260124_103000x",
            "2026012a_103000",
            "20260124-103000",
            "",
            "2026012é_103000",
        ] {
            assert_eq!(run_dir_key(other), None, "{other}");
        }
        let mut names = ["20260124_103000_10", "20260124_103001", "20260124_103000_2", "20260124_103000"];
        names.sort_by_key(|name| run_dir_key(name));
        assert_eq!(names, ["20260124_103000", "20260124_103000_2", "20260124_103000_10", "20260124_103001"]);
    }
}
