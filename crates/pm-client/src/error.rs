//! The one error type of both clients.

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No process with this id.
    #[error("process not found: {0}")]
    NotFound(String),
    /// The process is disabled.
    #[error("process is disabled: {0}")]
    Disabled(String),
    /// A process with this id exists already.
    #[error("process ID already exists: {0}")]
    AlreadyExists(String),
    /// The id or configuration was refused.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The monitor refused (trust or permission).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The registry or the monitor is busy; try again.
    #[error("busy: {0}")]
    Busy(String),
    /// A dependency rule stands in the way (a dependency that cannot be started, dependents left without it).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The monitor could not be reached.
    #[error("cannot reach ProcessMonitor at {url}: {message}")]
    Transport {
        /// What was called.
        url: String,
        /// Why it failed.
        message: String,
    },
    /// The monitor took the request (or may have) but did not answer in time: it is running but slow, or the
    /// request is still being carried out (a stop waiting for its process). Not "monitor not running".
    #[error("ProcessMonitor at {url} did not answer within {}s; it may still be carrying the request out", .after.as_secs_f64())]
    Timeout {
        /// What was called.
        url: String,
        /// The deadline of the last attempt.
        after: std::time::Duration,
    },
    /// The monitor answered with an unexpected status.
    #[error("ProcessMonitor answered {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// Its error message.
        message: String,
    },
    /// No ProcessMonitor answered during discovery.
    #[error("no ProcessMonitor found: {0}")]
    NotDiscovered(String),
    /// The registry files.
    #[error(transparent)]
    Registry(#[from] pm_registry::Error),
}

impl From<pm_core::Error> for Error {
    fn from(err: pm_core::Error) -> Self {
        match err {
            pm_core::Error::NotFound(id) => Error::NotFound(id),
            pm_core::Error::Disabled(id) => Error::Disabled(id),
            pm_core::Error::AlreadyExists(id) => Error::AlreadyExists(id),
            pm_core::Error::NotAllowed(message) => Error::PermissionDenied(message),
            pm_core::Error::Busy(message) => Error::Busy(message),
            pm_core::Error::Dependency(message) => Error::Conflict(message),
            other => Error::Invalid(other.to_string()),
        }
    }
}
