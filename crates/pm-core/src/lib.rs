//! Domain types and pure logic of ProcessMonitor.
//!
//! This crate is the vocabulary every other crate speaks: the registry document and its entries, the eight
//! process states, restart policies, aliveness checks, the wire shapes of the HTTP API, and the pure rules
//! (process-id validation, the backoff schedule, trusted-host and executable-pattern matching).
//!
//! Invariants:
//! - No I/O and no async runtime: every function here is a pure computation on its inputs.
//! - The JSON shapes are those of `shared/spec/wire-formats.md` (camelCase keys, optional keys omitted when
//!   empty); unknown keys of the registry are kept on a rewrite.
//!
//! # Example
//! ```
//! use pm_core::{ProcessConfig, ProcessState, validate_process_id};
//!
//! let config: ProcessConfig = serde_json::from_str(r#"{"id":"api","name":"API","command":"/bin/sleep"}"#).unwrap();
//! assert!(config.autostart && config.enabled);
//! assert!(validate_process_id(&config.id).is_ok());
//! assert_eq!(ProcessState::default(), ProcessState::Stopped);
//! ```
#![deny(missing_docs)]

mod backoff;
mod config;
mod deps;
mod draft;
mod entry;
mod error;
mod event;
mod exec;
mod id;
mod registry;
mod scan;
mod settings;
mod status;
mod timestamp;
mod trust;
mod untrusted;
mod unusable;
mod wire;

pub use backoff::{next_restart, RestartDecision};
pub use config::{
    AlivenessCheck, FailAction, ProbeType, ProcessConfig, RestartOn, RestartPolicy, StartupCheck, StateChangeHook,
};
pub use deps::{
    check_acyclic, check_new_dependencies, dependents_in, dependents_stop_order, direct_dependents, find_cycle,
    graph_of, layers, shutdown_layers, start_blocker, start_order, DependencyCondition, Graph, Observed,
};
pub use draft::{LazyRegistry, RegistryDraft};
pub use entry::{PendingAction, ProcessEntry, SharedEntry};
pub use error::{Cause, Error};
pub use event::{Event, EventKind};
pub use exec::{executable_permitted, validate_executable_pattern};
pub use id::{validate_instance_id, validate_process_id};
pub use registry::{Registry, DEFAULT_INSTANCE, WATCHER_INSTANCE};
pub use settings::{
    AlivenessServerConfig, PartnerDiscovery, PartnerDiscoveryPatch, RemoteAccessConfig, RemoteAccessPatch, Settings,
    SettingsUpdate,
};
pub use status::{MonitorState, MonitorStatus, ProcessState, ProcessStatus, StatusView};
pub use timestamp::Timestamp;
pub use trust::{host_is_trusted, needs_name_lookup, normalize_ip};
pub use untrusted::{
    escape_control, is_control, is_partner_id, untrusted_budget, url_is_loopback, UNTRUSTED_MAX_ARGS,
    UNTRUSTED_MAX_ARGS_BYTES, UNTRUSTED_MAX_ATTEMPTS, UNTRUSTED_MAX_BACKOFF_ENTRIES, UNTRUSTED_MAX_ENV_BYTES,
    UNTRUSTED_MAX_ENV_VARS, UNTRUSTED_MAX_KEEP_RUNS, UNTRUSTED_MAX_STOP_TIMEOUT_MS, UNTRUSTED_MIN_BACKOFF_MS,
};
pub use unusable::UnusableEntry;
