//! The kernel sandbox of a greffon worker.
//!
//! A [`Profile`] says what one worker may touch: the runtime it reads, the
//! folders it was granted, whether it may spawn processes, its limits.
//! [`Sandbox::prepare`] turns it, in the parent, into a Landlock ruleset,
//! seccomp filters and rlimits; [`Sandbox::apply`] enforces them between
//! fork and exec with syscalls only, or hands them over ([`ChildRules`])
//! to a worker forked from the template process, which applies them
//! itself. [`probe`] reports what the running
//! kernel offers, for `greffon doctor` and for refusing to start plugins
//! when it is not enough. [`refuse_passed_fds`] hardens the host's end of
//! a worker channel. [`paths`] opens the folders a plugin declares
//! without following symlinks and refuses the ones greffon must protect.
//!
//! Nothing in the worker's interpreter is a security boundary (a plugin
//! can issue any syscall through `ctypes`): every rule here is enforced by
//! the kernel.

mod apply;
mod channel;
mod filter;
mod landlock_rules;
pub mod paths;
mod probe;
mod profile;

pub use apply::{ChildRules, Sandbox, SandboxError};
pub use channel::refuse_passed_fds;
pub use filter::noexec_program_hex;
pub use probe::{LANDLOCK_ABI_REQUIRED, Support, probe};
pub use profile::{Grant, Limits, Profile};
