//! Integration tests of pm-http: real servers on 127.0.0.1 (and ::1), talked to only over loopback.

mod api;
mod auth;
mod client;
mod dashboard;
mod helper;
mod limits;
mod metrics;
mod security;
mod server;
mod streams;
mod support;
mod tls;
