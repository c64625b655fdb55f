//! End-to-end scenarios: both instances of the real binaries in a temporary home, with faults injected.
//! Run by `cargo xtask e2e`, which builds the binaries and passes their paths.

mod chaos;
mod containment;
mod daemon_files;
mod dashboard;
mod deps;
mod engine_hardening;
mod faults;
mod fuzz;
mod scale;
mod security;
mod security_limits;
mod watcher;
