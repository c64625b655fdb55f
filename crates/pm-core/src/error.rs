//! The domain error shared by every layer that acts on processes.

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
    /// Reading or writing the monitor's files failed.
    #[error("storage error: {0}")]
    Storage(String),
}
