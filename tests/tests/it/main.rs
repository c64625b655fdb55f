//! End-to-end scenarios: both instances of the real binaries in a temporary home, with faults injected.
//! Run by `cargo xtask e2e`, which builds the binaries and passes their paths.

mod chaos;
mod daemon_files;
mod dashboard;
mod engine_hardening;
mod faults;
mod fuzz;
mod security;
mod security_limits;
mod watcher;
