//! The ProcessMonitor engine: spawning, process groups, log files, stop escalation, restart policies,
//! aliveness and startup checks, adoption after a monitor restart, partner supervision, and the daemon.
//!
//! Invariants:
//! - Each managed process is owned by exactly one task, the only place its child is spawned, waited for and
//!   signalled; requests reach it over a channel, so racing requests can never start two copies.
//! - Children run without a shell, each in its own process group; a stop signals the whole group.
//! - Exits are noticed when they happen (`wait` for our children, a pidfd for adopted ones), and timers are
//!   exact deadlines, not rounded to a polling tick.
//! - The registry lock is never held across a wait on a child, a sleep or an HTTP call.
//!
//! # Example
//! Supervising a process inside a program, without a daemon:
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! use std::time::Duration;
//! use pm_core::{ProcessConfig, ProcessState};
//! use pm_supervisor::{Supervisor, SupervisorConfig};
//!
//! let dir = std::env::temp_dir().join(format!("pm-doc-{}", std::process::id()));
//! let paths = pm_registry::Paths::new(&dir, "embedded").unwrap();
//! let sup = Supervisor::new(SupervisorConfig {
//!     paths,
//!     keep_runs: 10,
//!     default_cwd: std::env::temp_dir(),
//!     extra_env: Vec::new(),
//! });
//! let mut config = ProcessConfig::new("sleeper", "Sleeper", "sleep");
//! config.args = vec!["30".to_owned()];
//! sup.register(config).unwrap();
//! let entry = sup.wait_for("sleeper", Duration::from_secs(10), |e| e.state == ProcessState::Running).await.unwrap();
//! assert!(entry.pid.is_some());
//! assert_eq!(sup.stop("sleeper").await.unwrap(), ProcessState::Stopped);
//! sup.shutdown(|_| false).await;
//! std::fs::remove_dir_all(&dir).ok();
//! # }
//! ```
#![deny(missing_docs)]

mod actor;
mod aliveness;
pub mod cgroup;
mod cgroup_spawn;
mod daemon;
mod decide;
mod deps;
mod events;
mod execcheck;
mod footprint;
mod groupwait;
mod inbox;
#[cfg(test)]
mod inproc;
mod launch;
mod logrotate;
mod monitor;
mod orphans;
mod os;
mod partner;
mod partner_tick;
mod pidfds;
mod probe;
mod published;
mod resources;
mod servers;
mod spawn;
mod startup;
mod supervisor;
mod timers;
mod unusable;
mod watch;
mod writer;

pub use actor::{ConfigRevs, Counters, Snapshot};
pub use daemon::{Daemon, DaemonConfig, Error, Exit};
pub use decide::StartKind;
pub use os::{tune_heap, Heap};
pub use resources::group_memory;
pub use supervisor::{Supervisor, SupervisorConfig};

pub(crate) use supervisor::Shared;
