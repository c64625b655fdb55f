//! Integration tests of pm-registry: one binary, one module per area.
//!
//! Tests that need other processes re-execute this binary with `--exact <worker test> --nocapture` and a
//! `PM_REGISTRY_IT_ROLE` variable; the worker tests return at once when the variable does not name them.

mod concurrency;
mod corrupt;
mod draft;
mod footprint;
mod journal;
mod lock;
mod ownership;
mod paths;
mod proc;
mod store;
mod support;
