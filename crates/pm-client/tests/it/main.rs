//! Integration tests of pm-client's remote client and discovery against an in-process remote API on loopback.
//!
//! Only loopback addresses are ever contacted; the only subnet scanned is 127.0.0.0/24.

mod discover;
mod remote;
mod retries;
mod socket;
mod streams;
mod support;
