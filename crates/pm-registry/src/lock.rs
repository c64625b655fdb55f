//! The instance lock `processes_{id}.lock`: one running monitor per instance id (the guide's lock protocol).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use pm_core::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::fsutil::{self, with_suffix};
use crate::{proc, Error, Paths};

/// Pause between two looks at a lock held by a live process.
const POLL: Duration = Duration::from_millis(50);
/// Pause between writing the lock and checking that it is still ours.
const VERIFY_DELAY: Duration = Duration::from_millis(10);
/// Least time allowed for taking the sidecar flock (it is only ever held briefly).
const MIN_SIDECAR_WAIT: Duration = Duration::from_secs(1);
/// Time allowed for taking the sidecar flock on release.
const RELEASE_SIDECAR_WAIT: Duration = Duration::from_secs(5);

/// The contents of an instance lock file: `{"pid": 12345, "timestamp": "...", "startTime": 4242}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockInfo {
    /// PID of the holder.
    pub pid: u32,
    /// When the lock was taken.
    pub timestamp: Timestamp,
    /// Start time of the holder (see [`proc::start_time`]), to tell it from a later process with the same PID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// Keys this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl LockInfo {
    /// Whether the holder described is still running: same PID and start time, or, for a lock without a start
    /// time (the guide's format), a live PID that started no later than the lock was taken.
    pub fn is_live(&self) -> bool {
        proc::matches_record(self.pid, self.start_time, self.timestamp.to_system_time())
    }

    fn belongs_to(&self, other: &LockInfo) -> bool {
        self.pid == other.pid && self.start_time == other.start_time && self.timestamp == other.timestamp
    }
}

/// What a lock file holds.
#[derive(Debug)]
enum LockFile {
    Missing,
    Holder(LockInfo),
    /// Empty or not a lock record; the message says why.
    Garbage(String),
}

impl LockFile {
    fn describe(&self) -> String {
        match self {
            LockFile::Missing => "missing".to_owned(),
            LockFile::Holder(info) => format!("held by pid {} since {}", info.pid, info.timestamp),
            LockFile::Garbage(why) => format!("not a lock record: {why}"),
        }
    }
}

fn read_lock_file(path: &Path) -> Result<LockFile, Error> {
    let Some(bytes) = fsutil::read_optional(path)? else {
        return Ok(LockFile::Missing);
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(LockFile::Garbage("empty".to_owned()));
    }
    Ok(match serde_json::from_slice(&bytes) {
        Ok(info) => LockFile::Holder(info),
        Err(err) => LockFile::Garbage(err.to_string()),
    })
}

/// The instance lock, held from [`InstanceLock::acquire`] until [`InstanceLock::release`] or drop.
///
/// # Caveats
/// The lock file is written by hard-linking a complete temporary file, so the folder's file system must
/// support hard links.
#[derive(Debug)]
pub struct InstanceLock {
    path: PathBuf,
    sidecar: PathBuf,
    info: LockInfo,
    released: bool,
}

impl InstanceLock {
    /// Takes the instance lock of `paths`, waiting up to `timeout` for a live holder to let go.
    ///
    /// The lock file appears complete or not at all (a finished temporary file is hard-linked to its name). An
    /// existing lock whose holder is dead (a PID that is gone or has been reused, judged by the recorded start
    /// time), or that is empty or garbage, is stale: it is removed while the sidecar flock
    /// [`Paths::transaction_lock_file`] is held, so that two contenders cannot both take it over. A live holder
    /// is polled every 50 ms until `timeout`, then [`Error::InstanceLocked`] names it. After writing, the lock is
    /// checked again 10 ms later.
    ///
    /// Looking at an existing lock takes the sidecar flock, waiting at least a second for it; a transaction that
    /// holds it longer than that and `timeout` makes this fail with [`Error::LockTimeout`]. So do not call this
    /// (or [`InstanceLock::release`]) from inside a [`crate::Store::transaction`] of the same instance.
    pub fn acquire(paths: &Paths, timeout: Duration) -> Result<InstanceLock, Error> {
        fsutil::create_dir_all_private(paths.root())?;
        let path = paths.lock_file();
        let sidecar = paths.transaction_lock_file();
        let proc::Process { pid: own_pid, start_time: own_start_time } = proc::Process::current();
        let started = Instant::now();
        loop {
            let info =
                LockInfo { pid: own_pid, timestamp: Timestamp::now(), start_time: own_start_time, extra: Map::new() };
            if create_lock_file(&path, &info)? {
                thread::sleep(VERIFY_DELAY);
                match read_lock_file(&path)? {
                    LockFile::Holder(on_disk) if on_disk.pid == own_pid && on_disk.start_time == own_start_time => {
                        tracing::debug!(lock = %path.display(), "instance lock taken");
                        return Ok(InstanceLock { path, sidecar, info: on_disk, released: false });
                    }
                    other => {
                        tracing::warn!(lock = %path.display(), "instance lock changed right after it was taken ({}); retrying", other.describe());
                        continue;
                    }
                }
            }
            let remaining = timeout.saturating_sub(started.elapsed());
            let flock = fsutil::lock_exclusive(&sidecar, remaining.max(MIN_SIDECAR_WAIT))?;
            let holder = match read_lock_file(&path)? {
                LockFile::Missing => None,
                LockFile::Holder(info) if info.is_live() => Some(info),
                stale => {
                    tracing::info!(lock = %path.display(), "removing stale instance lock ({})", stale.describe());
                    fsutil::remove_if_exists(&path)?;
                    None
                }
            };
            drop(flock);
            if let Some(holder) = holder {
                let waited = started.elapsed();
                if waited >= timeout {
                    return Err(Error::InstanceLocked { path, pid: holder.pid, since: holder.timestamp });
                }
                thread::sleep(POLL.min(timeout - waited));
            }
        }
    }

    /// The live holder of the instance lock of `paths`, if any: `None` when there is no lock file, or it is
    /// stale, empty or garbage. Changes nothing.
    pub fn holder(paths: &Paths) -> Result<Option<LockInfo>, Error> {
        Ok(match read_lock_file(&paths.lock_file())? {
            LockFile::Holder(info) if info.is_live() => Some(info),
            _ => None,
        })
    }

    /// What this lock wrote (as read back from the file).
    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// Adds `keys` to the lock record (the monitor publishes the ports it serves on, `alivenessPort` and
    /// `remotePort`, so that `--status` and `--stop` find it even when the registry does not parse). The file is
    /// replaced atomically, under the sidecar flock, and only while it is still ours; readers see the old or the
    /// new record, never a partial one.
    pub fn publish(&mut self, keys: Map<String, Value>) -> Result<(), Error> {
        let _flock = fsutil::lock_exclusive(&self.sidecar, RELEASE_SIDECAR_WAIT)?;
        match read_lock_file(&self.path)? {
            LockFile::Holder(info) if info.belongs_to(&self.info) => {}
            other => {
                tracing::warn!(lock = %self.path.display(), "instance lock is no longer ours ({}); not updated", other.describe());
                return Ok(());
            }
        }
        let mut info = self.info.clone();
        info.extra.extend(keys);
        let mut bytes = serde_json::to_vec_pretty(&info)
            .map_err(|err| Error::Serialize { path: self.path.clone(), message: err.to_string() })?;
        bytes.push(b'\n');
        let tmp = with_suffix(&self.path, &format!(".tmp-{}", fsutil::unique_suffix()));
        if let Err(err) = fsutil::write_synced(&tmp, &bytes) {
            let _ = fs::remove_file(&tmp);
            return Err(err);
        }
        if let Err(err) = fs::rename(&tmp, &self.path) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(&tmp, &format!("rename to {}", self.path.display()), err));
        }
        fsutil::sync_dir(fsutil::parent_of(&self.path))?;
        self.info = info;
        Ok(())
    }

    /// Lets go of the lock: removes the lock file if it is still ours (same PID, start time and timestamp),
    /// deciding under the sidecar flock. A lock file that now belongs to someone else is left alone.
    pub fn release(mut self) -> Result<(), Error> {
        self.released = true;
        self.release_inner()
    }

    fn release_inner(&self) -> Result<(), Error> {
        let _flock = fsutil::lock_exclusive(&self.sidecar, RELEASE_SIDECAR_WAIT)?;
        match read_lock_file(&self.path)? {
            LockFile::Holder(info) if info.belongs_to(&self.info) => {
                fsutil::remove_if_exists(&self.path)?;
                tracing::debug!(lock = %self.path.display(), "instance lock released");
            }
            other => {
                tracing::warn!(lock = %self.path.display(), "instance lock is no longer ours ({}); left alone", other.describe());
            }
        }
        Ok(())
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        if !self.released {
            self.released = true;
            if let Err(err) = self.release_inner() {
                tracing::warn!("instance lock not released: {err}");
            }
        }
    }
}

/// Creates the lock file holding `info` if there is none: `true` if created, `false` if one exists.
fn create_lock_file(path: &Path, info: &LockInfo) -> Result<bool, Error> {
    let mut bytes = serde_json::to_vec_pretty(info)
        .map_err(|err| Error::Serialize { path: path.to_owned(), message: err.to_string() })?;
    bytes.push(b'\n');
    let tmp = with_suffix(path, &format!(".tmp-{}", fsutil::unique_suffix()));
    if let Err(err) = fsutil::write_synced(&tmp, &bytes) {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            fsutil::sync_dir(fsutil::parent_of(path))?;
            Ok(true)
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(err) => Err(Error::io(path, "create lock file", err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_info_wire_form() {
        let text = r#"{"pid": 12345, "timestamp": "2026-01-24T10:30:00.000Z", "host": "a"}"#;
        let info: LockInfo = serde_json::from_str(text).unwrap();
        assert_eq!(info.pid, 12345);
        assert_eq!(info.start_time, None);
        assert_eq!(info.extra.get("host"), Some(&Value::from("a")));
        let written = serde_json::to_value(&info).unwrap();
        assert_eq!(written, serde_json::json!({"pid": 12345, "timestamp": "2026-01-24T10:30:00.000Z", "host": "a"}));

        let with_start: LockInfo =
            serde_json::from_str(r#"{"pid": 7, "timestamp": "2026-01-24T10:30:00.000Z", "startTime": 99}"#).unwrap();
        assert_eq!(with_start.start_time, Some(99));
        assert_eq!(serde_json::to_value(&with_start).unwrap()["startTime"], 99);
    }

    #[test]
    fn records_without_pid_or_timestamp_are_garbage() {
        for text in [r#"{"pid": 1}"#, r#"{"timestamp": "2026-01-24T10:30:00.000Z"}"#, "[]", "12"] {
            assert!(serde_json::from_str::<LockInfo>(text).is_err(), "{text}");
        }
    }
}
