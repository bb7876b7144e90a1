//! The host engine's integration tests, with real sandboxed workers. One
//! test binary; `flood.rs` stays apart because it measures its own
//! process's peak memory, which other tests would raise.

mod common;

mod engine;
mod redteam;
mod reload;
