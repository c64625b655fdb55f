//! Clients of ProcessMonitor: [`ProcessMonitorClient`] drives a monitor on this host through its registry
//! file; [`RemoteProcessMonitorClient`] drives one over its HTTP API.
//!
//! Invariants:
//! - The local client changes the registry only in short transactions under its lock, and never holds the
//!   lock while it waits for an outcome.
//! - Both clients report failures as one typed [`Error`] (not found, disabled, already exists, permission
//!   denied, busy, transport).
//! - The remote client retries only failures to reach the monitor, never an HTTP answer, and sends a `POST`
//!   again only when its connection could not be opened. `discover()` tries this host, then its /24 (the
//!   guide's steps); `discover_with` scans only the subnet it is given, if any.
//!
//! # Example
//! ```
//! use pm_client::ProcessMonitorClient;
//! use pm_core::ProcessConfig;
//!
//! let dir = std::env::temp_dir().join(format!("pm-client-doc-{}", std::process::id()));
//! let client = ProcessMonitorClient::in_directory(&dir, "default").unwrap();
//! let mut config = ProcessConfig::new("my-server", "My Server", "/bin/sleep");
//! config.args = vec!["60".to_owned()];
//! config.autostart = false;
//! client.register(config).unwrap();
//! assert_eq!(client.get_status("my-server").unwrap().state, pm_core::ProcessState::Stopped);
//! client.deregister("my-server").unwrap();
//! std::fs::remove_dir_all(&dir).ok();
//! ```
//!
//! # Remote example
//! ```no_run
//! use pm_client::{Error, RemoteProcessMonitorClient};
//! use pm_core::ProcessConfig;
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Error> {
//!     let client = RemoteProcessMonitorClient::new("http://localhost:19881")?;
//!     // Or find one: `RemoteProcessMonitorClient::discover().await?`.
//!     let status = client.get_monitor_status().await?;
//!     println!("Managed processes: {}", status.managed_process_count);
//!     for (id, process) in client.get_all_status().await? {
//!         println!("{id}: {}", process.state);
//!     }
//!
//!     let config = ProcessConfig::new("remote-server", "Remote Server", "/usr/bin/myserver");
//!     client.register(config).await?;
//!     match client.start("remote-server").await {
//!         Ok(state) => println!("remote-server is {state}"),
//!         Err(Error::Disabled(id)) => println!("{id} is disabled"),
//!         Err(err) => return Err(err),
//!     }
//!     client.dispose();
//!     Ok(())
//! }
//! ```
#![deny(missing_docs)]

mod discover;
mod error;
mod kill;
mod local;
mod remote;
mod socket;
mod streams;

pub use discover::{DiscoverOptions, Subnet};
pub use error::Error;
pub use local::{LocalClientOptions, ProcessMonitorClient};
pub use remote::{RemoteClientOptions, RemoteProcessMonitorClient, STOP_MARGIN};
pub use streams::{EventStream, EventsOptions, LogStream, LogsOptions};
