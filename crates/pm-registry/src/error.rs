//! The error type of this crate: every variant names the file it is about.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pm_core::Timestamp;

/// What can go wrong with the monitor's files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An instance or process id that cannot name a file.
    #[error("invalid id {id:?}: {reason}")]
    InvalidId {
        /// The id as given.
        id: String,
        /// Why it is refused.
        reason: String,
    },
    /// A file system operation failed.
    #[error("{path}: cannot {action}: {source}")]
    Io {
        /// The file or folder acted on.
        path: PathBuf,
        /// What was attempted (for example `read`, `create`, `rename to ...`).
        action: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The registry file does not exist.
    #[error("{path}: registry file is missing")]
    Missing {
        /// The registry file.
        path: PathBuf,
    },
    /// The registry file does not parse; it is left untouched.
    #[error("{path}: registry file is corrupt at line {line}, column {column}: {message}")]
    Corrupt {
        /// The registry file.
        path: PathBuf,
        /// Line of the first error (1-based; 0 when unknown).
        line: usize,
        /// Column of the first error (1-based; 0 at the start of a line or when unknown).
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A line of the registry journal (other than an unfinished last one) does not parse or does not follow the
    /// line before it; the journal and the registry are left untouched.
    #[error("{path}: registry journal is corrupt at line {line}: {message}")]
    CorruptJournal {
        /// The journal file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The registry lock could not be taken in time.
    #[error("{path}: could not lock the registry within {} ms (held by another writer)", waited.as_millis())]
    LockTimeout {
        /// The lock file (sidecar) waited on.
        path: PathBuf,
        /// How long it was waited for.
        waited: Duration,
    },
    /// Another live process holds the instance lock.
    #[error("{path}: instance is locked by running process {pid} (since {since})")]
    InstanceLocked {
        /// The instance lock file.
        path: PathBuf,
        /// PID of the holder.
        pid: u32,
        /// When the holder took the lock.
        since: Timestamp,
    },
    /// A file or folder of the monitor that another user could control: owned by someone else, writable by
    /// group or others, or a symbolic link where the monitor keeps its own files.
    #[error("{path}: {problem}; the monitor refuses to use it (fix: {fix})")]
    Unsafe {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// What the operator can do.
        fix: String,
    },
    /// The registry could not be turned into JSON (should not happen).
    #[error("{path}: cannot serialize the registry: {message}")]
    Serialize {
        /// The registry file that was to be written.
        path: PathBuf,
        /// What the serializer said.
        message: String,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, action: &str, source: io::Error) -> Error {
        Error::Io { path: path.to_owned(), action: action.to_owned(), source }
    }

    pub(crate) fn corrupt(path: &Path, err: &serde_json::Error) -> Error {
        // serde_json appends " at line L column C" to its message; keep only the description.
        let full = err.to_string();
        let message = match full.rfind(" at line ") {
            Some(at) => full[..at].to_owned(),
            None => full,
        };
        Error::Corrupt { path: path.to_owned(), line: err.line(), column: err.column(), message }
    }
}

impl From<Error> for pm_core::Error {
    fn from(err: Error) -> pm_core::Error {
        match err {
            Error::LockTimeout { .. } => pm_core::Error::Busy(err.to_string()),
            Error::InvalidId { id, reason } => pm_core::Error::InvalidId { id, reason },
            other => pm_core::Error::storage(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_message_names_file_line_and_column() {
        let parse_err = serde_json::from_str::<serde_json::Value>("{\n  \"a\": nope\n}").unwrap_err();
        let err = Error::corrupt(Path::new("/x/processes_default.json"), &parse_err);
        let text = err.to_string();
        assert!(text.starts_with("/x/processes_default.json: registry file is corrupt at line 2, column"), "{text}");
        assert_eq!(text.matches("line").count(), 1, "{text}");
        let Error::Corrupt { line, column, .. } = err else { panic!("not Corrupt: {err:?}") };
        assert_eq!((line, column), (2, 9));
    }

    #[test]
    fn lock_timeout_becomes_busy_and_the_rest_storage() {
        let timeout = Error::LockTimeout { path: "/x/a.json.lock".into(), waited: Duration::from_millis(250) };
        let core: pm_core::Error = timeout.into();
        let pm_core::Error::Busy(message) = core else { panic!("not Busy: {core:?}") };
        assert!(message.contains("/x/a.json.lock") && message.contains("250 ms"), "{message}");

        let missing: pm_core::Error = Error::Missing { path: "/x/a.json".into() }.into();
        assert_eq!(missing.to_string(), "storage error: /x/a.json: registry file is missing");
        let pm_core::Error::Storage(cause) = &missing else { panic!("not Storage: {missing:?}") };
        assert!(matches!(cause.downcast_ref::<Error>(), Some(Error::Missing { .. })), "the source is kept: {cause:?}");
    }
}
