//! End-to-end tests of the `process_monitor` and `monitor_watcher` binaries: each test runs the real programs
//! in its own folder on its own loopback ports, and kills whatever it started when it ends.

mod support;

mod adoption;
mod auth;
mod cli;
mod daemon;
mod events;
mod files;
mod hardening;
mod health;
mod local_client;
mod logs;
mod processes;
mod restart_policy;
mod stack;
mod states;
