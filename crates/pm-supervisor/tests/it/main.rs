//! Integration tests of the engine: real child processes supervised in-process.

mod deps;
mod engine;
mod props;
mod support;
