//! The domain error shared by every layer that acts on processes.

use std::sync::Arc;

/// What can go wrong when acting on the process table, independent of the transport that asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No process with this id is registered.
    #[error("Process not found: {0}")]
    NotFound(String),
    /// The process is disabled, so it cannot be started.
    #[error("Process is disabled: {0}")]
    Disabled(String),
    /// A process with this id is registered already.
    #[error("Process ID already exists: {0}")]
    AlreadyExists(String),
    /// A process or instance id that cannot be used (ids become folder names).
    #[error("invalid id {id:?}: {reason}")]
    InvalidId {
        /// The id as given.
        id: String,
        /// Why it is refused.
        reason: String,
    },
    /// A request field that is missing or has the wrong type or value.
    #[error("Missing or invalid field: {0}")]
    InvalidField(String),
    /// An executable or host pattern that cannot be matched reliably.
    #[error("invalid pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// Why it is refused.
        reason: String,
    },
    /// The caller may not do this (for example act on a locally registered process from an untrusted host).
    #[error("{0}")]
    NotAllowed(String),
    /// A dependency rule stands in the way: a dependency that cannot be started, or dependents that would be
    /// left without it (answered 409).
    #[error("{0}")]
    Dependency(String),
    /// The registry could not be locked in time; the caller may retry.
    #[error("registry busy: {0}")]
    Busy(String),
    /// The monitor is shutting down or restarting and takes no new work.
    #[error("ProcessMonitor is shutting down")]
    ShuttingDown,
    /// Reading or writing the monitor's files failed; the source is the error of the file layer.
    #[error("storage error: {0}")]
    Storage(#[source] Cause),
    /// A task of the monitor ended abnormally (it panicked or was cancelled): a fault of the monitor, not of the
    /// request or of the files.
    #[error("internal error: {context}: {source}")]
    Internal {
        /// What was being done.
        context: String,
        /// The failure of the task.
        #[source]
        source: Cause,
    },
    /// The operating system refused something the monitor needs that is not one of its files (for example a
    /// signal handler).
    #[error("{context}: {source}")]
    Io {
        /// What was attempted.
        context: String,
        /// What the system said.
        #[source]
        source: Cause,
    },
}

impl Error {
    /// A failure of the file layer, kept as the source.
    pub fn storage<E: std::error::Error + Send + Sync + 'static>(err: E) -> Error {
        Error::Storage(Cause::new(err))
    }

    /// A task that ended abnormally while doing `context` (for example a blocking task's join error).
    pub fn internal<E: std::error::Error + Send + Sync + 'static>(context: &str, err: E) -> Error {
        Error::Internal { context: context.to_owned(), source: Cause::new(err) }
    }

    /// A system call that failed while doing `context`.
    pub fn io<E: std::error::Error + Send + Sync + 'static>(context: &str, err: E) -> Error {
        Error::Io { context: context.to_owned(), source: Cause::new(err) }
    }
}

/// The underlying error of an [`Error`], standing in for it: it reads as that error and its
/// [`source`](std::error::Error::source) is that error's, so the chain is the original one. Shared, so that
/// [`Error`] stays `Clone`; two causes are equal when they read the same.
#[derive(Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl Cause {
    /// Keeps `err`.
    pub fn new<E: std::error::Error + Send + Sync + 'static>(err: E) -> Cause {
        Cause(Arc::new(err))
    }

    /// A cause known only by its text (a failure reported in words, or a test double).
    pub fn message(text: impl Into<String>) -> Cause {
        Cause::new(Message(text.into()))
    }

    /// The underlying error as a `T`, when it is one.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.0.downcast_ref::<T>()
    }
}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for Cause {}

/// The error behind [`Cause::message`].
#[derive(Debug)]
struct Message(String);

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn storage_keeps_its_message_and_its_source_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let err = Error::storage(Outer(io));
        assert_eq!(err.to_string(), "storage error: /x/a.json: cannot read: denied");
        let cause = err.source().expect("a source");
        assert_eq!(cause.to_string(), "/x/a.json: cannot read: denied");
        let Error::Storage(kept) = &err else { panic!("not Storage: {err:?}") };
        assert!(kept.downcast_ref::<Outer>().is_some());
        let below = cause.source().expect("the io error below").downcast_ref::<std::io::Error>().unwrap();
        assert_eq!(below.kind(), std::io::ErrorKind::PermissionDenied);
        assert_eq!(err.clone(), err);
        assert_eq!(err, Error::Storage(Cause::message("/x/a.json: cannot read: denied")));
    }

    #[test]
    fn task_and_system_failures_are_not_storage() {
        let err = Error::internal("registry task failed", Cause::message("task 7 panicked"));
        assert_eq!(err.to_string(), "internal error: registry task failed: task 7 panicked");
        assert!(matches!(err, Error::Internal { .. }));
        let err = Error::io("cannot install the SIGTERM handler", std::io::Error::other("no signals"));
        assert_eq!(err.to_string(), "cannot install the SIGTERM handler: no signals");
        assert_eq!(err.source().unwrap().to_string(), "no signals");
    }

    /// An error of the file layer, as pm-registry's: its message includes its source.
    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "/x/a.json: cannot read: {}", self.0)
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
