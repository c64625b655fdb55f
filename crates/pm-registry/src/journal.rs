//! The registry journal `processes_{id}.journal`: the changes acknowledged since the registry was last
//! rewritten, one JSON line each, so that storing an acknowledged action costs one small append and `fdatasync`
//! whatever the number of entries.
//!
//! Every line is `{"seq": N, ...}` with exactly one of `update` (the runtime fields of one entry, and its
//! `enabled`/`autostart` when they changed), `add` (a whole new entry) or `remove` (an entry's id). Sequence
//! numbers grow by one from line to line and carry on across rewrites: the registry's top-level `journalSeq` is
//! the last one folded into it, and readers apply only the lines after it. A last line without its newline is
//! an append that never finished (so was never acknowledged) and is ignored; any other line that does not parse
//! is an error naming the file and the line, never skipped.
//!
//! Appends and folds run under the registry's transaction flock. A fold writes the registry (with `journalSeq`)
//! and flushes its folder first, then replaces the journal by an empty file through a rename, so a reader that
//! opened the old journal keeps reading a complete file, and a crash between the two leaves lines that the
//! registry already holds (skipped by their sequence numbers).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use pm_core::{DependencyCondition, PendingAction, ProcessEntry, ProcessState, Registry, Timestamp};
use serde::{Deserialize, Serialize};

use crate::fsutil::{self, with_suffix};
use crate::Error;

/// The runtime fields of one entry as the monitor observes them, plus `enabled` and `autostart` when the
/// monitor itself changed them: everything an acknowledged action changes in an existing entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryUpdate {
    /// The entry's id.
    pub id: String,
    /// Current state.
    pub state: ProcessState,
    /// PID of the running child.
    pub pid: Option<u32>,
    /// Start time of `pid` as the OS reports it.
    pub pid_start_time: Option<u64>,
    /// Last start.
    pub last_started_at: Option<Timestamp>,
    /// Last stop or exit.
    pub last_stopped_at: Option<Timestamp>,
    /// Restarts since the last reset.
    pub restart_attempts: u32,
    /// Aliveness-check failures in a row.
    pub consecutive_failures: u32,
    /// Exit code of the last exit.
    pub last_exit_code: Option<i32>,
    /// Signal that ended the last run.
    pub last_signal: Option<i32>,
    /// Why the last start or run failed.
    pub last_error: Option<String>,
    /// Dependencies the process waits for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub waiting_for: BTreeMap<String, DependencyCondition>,
    /// When the waiting start was requested.
    pub waiting_since: Option<Timestamp>,
    /// The configuration's `enabled`, when the monitor changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The configuration's `autostart`, when the monitor changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
    /// The local client's request (`pendingAction`) whose outcome this is: the entry's `pendingAction` is
    /// cleared if it still is that request (a client that asked for something else since keeps its request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_done: Option<PendingAction>,
}

impl EntryUpdate {
    /// The runtime fields of `entry`, with its `enabled` and `autostart` where asked for.
    pub fn of(entry: &ProcessEntry, with_enabled: bool, with_autostart: bool) -> EntryUpdate {
        EntryUpdate {
            id: entry.config.id.clone(),
            state: entry.state,
            pid: entry.pid,
            pid_start_time: entry.pid_start_time,
            last_started_at: entry.last_started_at,
            last_stopped_at: entry.last_stopped_at,
            restart_attempts: entry.restart_attempts,
            consecutive_failures: entry.consecutive_failures,
            last_exit_code: entry.last_exit_code,
            last_signal: entry.last_signal,
            last_error: entry.last_error.clone(),
            waiting_for: entry.waiting_for.clone(),
            waiting_since: entry.waiting_since,
            enabled: with_enabled.then_some(entry.config.enabled),
            autostart: with_autostart.then_some(entry.config.autostart),
            pending_done: None,
        }
    }

    /// Copies these fields onto `stored` (never its other configuration), and clears its pending request when
    /// this is that request's outcome (`pending_done`).
    pub fn apply(&self, stored: &mut ProcessEntry) {
        stored.state = self.state;
        stored.pid = self.pid;
        stored.pid_start_time = self.pid_start_time;
        stored.last_started_at = self.last_started_at;
        stored.last_stopped_at = self.last_stopped_at;
        stored.restart_attempts = self.restart_attempts;
        stored.consecutive_failures = self.consecutive_failures;
        stored.last_exit_code = self.last_exit_code;
        stored.last_signal = self.last_signal;
        stored.last_error.clone_from(&self.last_error);
        stored.waiting_for.clone_from(&self.waiting_for);
        stored.waiting_since = self.waiting_since;
        if let Some(enabled) = self.enabled {
            stored.config.enabled = enabled;
        }
        if let Some(autostart) = self.autostart {
            stored.config.autostart = autostart;
        }
        if self.pending_done.is_some() && stored.pending_action == self.pending_done {
            stored.pending_action = None;
        }
    }
}

/// One change the journal records.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// New runtime fields of an existing entry (none if the entry is gone by then).
    Update(EntryUpdate),
    /// A new entry (it replaces one of the same id).
    Add(Box<ProcessEntry>),
    /// An entry removed (nothing if it is gone already).
    Remove(String),
}

impl Change {
    /// Applies the change to `registry`.
    pub fn apply(&self, registry: &mut Registry) {
        match self {
            Change::Update(update) => {
                if let Some(stored) = registry.processes.get_mut(&update.id) {
                    update.apply(stored);
                }
            }
            Change::Add(entry) => {
                registry.unusable.remove(&entry.config.id);
                registry.processes.insert(entry.config.id.clone(), (**entry).clone().into());
            }
            Change::Remove(id) => {
                registry.processes.remove(id);
            }
        }
    }
}

/// One line of the journal as written and read.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    update: Option<EntryUpdate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    add: Option<Box<ProcessEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    remove: Option<String>,
}

/// A change with its sequence number, as read from the journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its sequence number.
    pub seq: u64,
    /// What it changes.
    pub change: Change,
}

/// The records of the journal `bytes` (read from `path`, named in errors), in order. A last line without its
/// newline is ignored; any other line that does not parse, holds not exactly one change, or whose sequence
/// number does not follow the previous line's, is [`Error::CorruptJournal`].
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<Record>, Error> {
    // Up to the last newline: what follows it is an append that never finished.
    let complete = match bytes.iter().rposition(|byte| *byte == b'\n') {
        Some(last) => &bytes[..last],
        None => return Ok(Vec::new()),
    };
    let mut records = Vec::new();
    let mut previous: Option<u64> = None;
    for (index, text) in complete.split(|byte| *byte == b'\n').enumerate() {
        let number = index + 1;
        let corrupt = |message: String| Error::CorruptJournal { path: path.to_owned(), line: number, message };
        let line: Line = serde_json::from_slice(text).map_err(|err| corrupt(err.to_string()))?;
        let change = match (line.update, line.add, line.remove) {
            (Some(update), None, None) => Change::Update(update),
            (None, Some(entry), None) => Change::Add(entry),
            (None, None, Some(id)) => Change::Remove(id),
            _ => return Err(corrupt("a line holds exactly one of `update`, `add` and `remove`".to_owned())),
        };
        if let Some(previous) = previous {
            if line.seq != previous + 1 {
                return Err(corrupt(format!("sequence number {} does not follow {previous}", line.seq)));
            }
        }
        previous = Some(line.seq);
        records.push(Record { seq: line.seq, change });
    }
    Ok(records)
}

/// The records of the journal at `path` (none when it is missing).
pub(crate) fn read(path: &Path) -> Result<Vec<Record>, Error> {
    match fsutil::read_optional(path)? {
        Some(bytes) => parse(path, &bytes),
        None => Ok(Vec::new()),
    }
}

/// Applies the records newer than `registry.journal_seq` and raises it to the last one; answers whether any was
/// applied. A journal that starts after the registry's next number (lines lost between them) is an error.
pub(crate) fn apply_newer(path: &Path, registry: &mut Registry, records: &[Record]) -> Result<bool, Error> {
    if !check_follows(path, registry.journal_seq, records)? {
        return Ok(false);
    }
    let held = registry.journal_seq;
    for record in records.iter().filter(|record| record.seq > held) {
        record.change.apply(registry);
        registry.journal_seq = record.seq;
    }
    Ok(true)
}

/// Whether `records` has lines newer than a registry's `journal_seq` (false: none), refusing them when they do
/// not follow it (lines are missing).
pub(crate) fn check_follows(path: &Path, journal_seq: u64, records: &[Record]) -> Result<bool, Error> {
    let Some(first) = records.iter().find(|record| record.seq > journal_seq) else { return Ok(false) };
    if first.seq != journal_seq + 1 {
        return Err(Error::CorruptJournal {
            path: path.to_owned(),
            line: records.iter().position(|record| record.seq == first.seq).map_or(0, |at| at + 1),
            message: format!(
                "sequence number {} does not follow the registry's journalSeq {} (lines are missing)",
                first.seq, journal_seq
            ),
        });
    }
    Ok(true)
}

/// Serialises `changes` as lines of the journal at `path`, numbered from `first`.
pub(crate) fn lines<'a>(
    path: &Path,
    first: u64,
    changes: impl ExactSizeIterator<Item = &'a Change>,
) -> Result<Vec<u8>, Error> {
    let serialize = |err: serde_json::Error| Error::Serialize { path: path.to_path_buf(), message: err.to_string() };
    let mut out = Vec::with_capacity(256 * changes.len());
    for (offset, change) in changes.enumerate() {
        let mut line = Line { seq: first + offset as u64, update: None, add: None, remove: None };
        match change {
            Change::Update(update) => line.update = Some(update.clone()),
            Change::Add(entry) => line.add = Some(entry.clone()),
            Change::Remove(id) => line.remove = Some(id.clone()),
        }
        serde_json::to_writer(&mut out, &line).map_err(serialize)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Appends `bytes` (whole lines) to the journal at `path` and flushes them to the disk (`fdatasync`); the caller
/// holds the transaction flock. A journal that does not exist yet is created and its folder flushed. A last line
/// left without its newline by an append that never finished is cut off first; an append that fails is cut off
/// again, so the file always ends with a whole line.
pub(crate) fn append(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let (mut file, created) = match fsutil::open_append_existing(path) {
        Ok(file) => (file, false),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            (fsutil::open_private_append(path).map_err(|err| Error::io(path, "create", err))?, true)
        }
        Err(err) => return Err(Error::io(path, "open", err)),
    };
    let len = file.metadata().map_err(|err| Error::io(path, "inspect", err))?.len();
    let whole = whole_length(&mut file, len).map_err(|err| Error::io(path, "read", err))?;
    if whole != len {
        file.set_len(whole).map_err(|err| Error::io(path, "cut off an unfinished line", err))?;
    }
    let written = file.write_all(bytes).and_then(|()| file.sync_data());
    if let Err(err) = written {
        let _ = file.set_len(whole);
        return Err(Error::io(path, "append", err));
    }
    if created {
        fsutil::sync_dir(fsutil::parent_of(path))?;
    }
    Ok(())
}

/// The length of `file` (of `len` bytes) up to and with its last newline.
fn whole_length(file: &mut File, len: u64) -> io::Result<u64> {
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    Ok(bytes.iter().rposition(|byte| *byte == b'\n').map_or(0, |at| at as u64 + 1))
}

/// Replaces the journal at `path` by one holding `bytes` (whole lines, maybe none) through a rename, so that a
/// reader of the old one keeps a whole file; the caller holds the flock and has flushed the registry that holds
/// the lines left out.
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = with_suffix(path, &format!(".tmp-{}", std::process::id()));
    if let Err(err) = fsutil::write_synced(&tmp, bytes) {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    if let Err(err) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, &format!("rename to {}", path.display()), err));
    }
    fsutil::sync_dir(fsutil::parent_of(path))
}
