//! What one worker may do.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// A folder or file granted to a worker, already opened by the host
/// (see [`crate::paths::open_no_symlinks`]) so the rule binds to what was
/// checked, not to whatever the path names later.
#[derive(Debug)]
pub struct Grant {
    pub path: PathBuf,
    pub fd: OwnedFd,
}

/// Resource limits of one worker (rlimits, set before exec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Address space (`RLIMIT_AS`), a coarse backstop: threads and
    /// allocator arenas count too, hence `MALLOC_ARENA_MAX` in the worker.
    pub memory_mb: u64,
    /// CPU seconds over the worker's life (`RLIMIT_CPU`): SIGXCPU at the
    /// limit, SIGKILL a few seconds later.
    pub cpu_s: u64,
    pub max_open_files: u64,
    /// Largest file the worker may write (`RLIMIT_FSIZE`).
    pub max_file_mb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 2048,
            cpu_s: 3600,
            max_open_files: 256,
            max_file_mb: 1024,
        }
    }
}

/// Everything the sandbox of one worker is built from.
#[derive(Debug, Default)]
pub struct Profile {
    /// Read (and list) only: the interpreter's prefixes, the SDK, the
    /// plugin's own folder, shared libraries, time zones, locales.
    pub runtime_read: Vec<PathBuf>,
    /// Files the worker may execute: the interpreter and its ELF loader.
    pub exec: Vec<PathBuf>,
    /// Declared `fs_read` paths.
    pub read: Vec<Grant>,
    /// The private temp folder and the declared `fs_write` paths.
    pub write: Vec<Grant>,
    /// `process` granted: fork and exec of the system's programs allowed.
    pub process: bool,
    pub limits: Limits,
}
