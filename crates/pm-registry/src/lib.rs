//! The on-disk home of ProcessMonitor: path layout, the instance lock, and atomic registry transactions.
//!
//! Everything an instance keeps lives in one root folder (`~/.tom/process_monitor` unless a directory is
//! given): the registry `processes_{id}.json` with its journal `processes_{id}.journal` (the changes acknowledged
//! since the registry was last rewritten, one JSON line each), the instance lock `processes_{id}.lock`, and the
//! logs under `{id}_logs/`. [`Paths`] names those files, [`Store`] reads and writes the registry, [`InstanceLock`]
//! keeps one monitor per instance id, and [`proc`] tells live processes from dead or reused PIDs.
//!
//! Invariants:
//! - The registry file is never missing once created, and never seen half-written: a save writes a temporary
//!   file in the same folder, flushes it, and renames it over the registry. Readers need no lock.
//! - Writers are mutually exclusive across threads and processes: [`Store::transaction`] holds an exclusive
//!   flock on the sidecar `processes_{id}.json.lock` (never renamed or deleted) for the read-modify-write only.
//! - A registry that does not parse is never overwritten; it is reported with its path, line and column, or
//!   (by [`Store::init_recovering`]) replaced by the last good version while the bad copy is kept aside.
//! - The instance lock is only ever removed by its holder, or as stale (dead holder, garbage) under the
//!   sidecar flock.
//! - Files are created with mode 0600 and folders with mode 0700. All I/O is blocking `std` I/O.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use pm_core::{ProcessConfig, ProcessEntry, Timestamp};
//! use pm_registry::{InstanceLock, Paths, Store};
//!
//! # let root = std::env::temp_dir().join(format!("pm-registry-doctest-{}", std::process::id()));
//! let paths = Paths::new(&root, "default")?;
//! let _lock = InstanceLock::acquire(&paths, Duration::from_secs(5))?;
//! let store = Store::new(paths);
//! let registry = store.init()?;
//! assert_eq!(registry.remote_access.remote_port, 19881);
//!
//! store.transaction(Duration::from_secs(5), |registry| {
//!     let config = ProcessConfig::new("api", "My API", "/usr/bin/my-api");
//!     registry.processes.insert("api".to_owned(), ProcessEntry::new(config, Timestamp::now()).into());
//!     Ok::<_, pm_registry::Error>(())
//! })?;
//! assert!(store.load()?.processes.contains_key("api"));
//! # drop(_lock);
//! # std::fs::remove_dir_all(&root).unwrap();
//! # Ok::<_, pm_registry::Error>(())
//! ```
#![deny(missing_docs)]

mod error;
mod fsutil;
mod journal;
mod lock;
mod ownership;
mod paths;
pub mod proc;
mod store;

pub use error::Error;
pub use fsutil::{create_private_dir_all, create_private_file_fresh, open_private_append, spread_subfolders};
pub use journal::{Change, EntryUpdate, Record};
pub use lock::{InstanceLock, LockInfo};
pub use ownership::check_home;
pub use paths::{KnownRuns, Paths, MONITOR_DIR};
pub use store::{FileStamp, Store};
