//! The scheduler's integration tests: the loop on a paused clock and the
//! behaviour suite both task stores must pass. One test binary.

mod frozen;
mod schedule;
mod stores;
