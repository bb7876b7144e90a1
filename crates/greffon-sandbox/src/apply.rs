//! A prepared sandbox and its application between fork and exec.

use crate::probe::Support;
use crate::profile::{Limits, Profile};
use landlock::{RulesetCreated, RulesetError, RulesetStatus};
use seccompiler::{BackendError, BpfProgram};
use std::io;
use std::os::fd::OwnedFd;

/// Why a sandbox could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the kernel cannot enforce the sandbox: {}", .0.join("; "))]
    Unsupported(Vec<String>),
    #[error("cannot build the Landlock ruleset: {0}")]
    Landlock(#[from] RulesetError),
    #[error("cannot build the seccomp filters: {0}")]
    Seccomp(#[from] BackendError),
}

/// Linux capability header and data (linux/capability.h, version 3).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// Highest capability number the loop tries; unknown ones fail harmlessly.
const CAP_LAST: libc::c_ulong = 63;

/// Everything the child applies to itself, built beforehand so that the
/// child only makes syscalls: no allocation, no lock, no panic.
#[derive(Debug)]
pub struct Sandbox {
    /// None when the sandbox is off (`sandbox = "off"`), or once applied.
    ruleset: Option<RulesetCreated>,
    filters: Vec<BpfProgram>,
    rlimits: [(libc::__rlimit_resource_t, libc::rlim_t, libc::rlim_t); 5],
    /// The host's pid: a child whose parent already died must not run.
    parent: libc::pid_t,
    /// The host runs as root: drop every capability from the worker.
    drop_caps: bool,
}

impl Sandbox {
    /// Builds the sandbox for `profile`, refusing when `support` lacks
    /// what the rules rely on (never a weaker sandbox in silence).
    pub fn prepare(profile: &Profile, support: Support) -> Result<Sandbox, SandboxError> {
        let missing = support.missing();
        if !missing.is_empty() {
            return Err(SandboxError::Unsupported(missing));
        }
        let ruleset = crate::landlock_rules::build(profile)?;
        let filters = crate::filter::build(profile.process)?;
        Ok(Sandbox {
            ruleset: Some(ruleset),
            filters,
            ..Sandbox::off(profile.limits)
        })
    }

    /// Limits, capability drop and parent-death handling only: the
    /// operator's explicit `sandbox = "off"`.
    pub fn off(limits: Limits) -> Sandbox {
        const MIB: libc::rlim_t = 1 << 20;
        Sandbox {
            ruleset: None,
            filters: Vec::new(),
            rlimits: [
                (libc::RLIMIT_CORE, 0, 0),
                (
                    libc::RLIMIT_AS,
                    limits.memory_mb * MIB,
                    limits.memory_mb * MIB,
                ),
                // SIGXCPU at the limit, SIGKILL if the worker ignores it.
                (libc::RLIMIT_CPU, limits.cpu_s, limits.cpu_s + 5),
                (
                    libc::RLIMIT_NOFILE,
                    limits.max_open_files,
                    limits.max_open_files,
                ),
                (
                    libc::RLIMIT_FSIZE,
                    limits.max_file_mb * MIB,
                    limits.max_file_mb * MIB,
                ),
            ],
            // SAFETY: getpid has no preconditions.
            parent: unsafe { libc::getpid() },
            // SAFETY: geteuid has no preconditions.
            drop_caps: unsafe { libc::geteuid() } == 0,
        }
    }

    /// Whether Landlock and seccomp are part of this sandbox.
    pub fn enforced(&self) -> bool {
        self.ruleset.is_some()
    }

    /// Applies the sandbox to the calling (forked) process. `place_fds`
    /// runs after Landlock (whose ruleset fd it could otherwise clobber)
    /// and before seccomp, which goes last so that no setup syscall is
    /// filtered; `execve` of the interpreter follows.
    ///
    /// Only for `pre_exec`: syscalls only, nothing allocated.
    pub fn apply(&mut self, place_fds: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let os_err = io::Error::last_os_error;
        // SAFETY: plain syscalls on integers and on memory owned by self.
        unsafe {
            // Armed from greffon's long-lived spawner thread, so it fires
            // when the host dies, not when some thread of it ends.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(os_err());
            }
            // The host died before the signal was armed.
            if libc::getppid() != self.parent {
                libc::_exit(1);
            }
            for &(resource, soft, hard) in &self.rlimits {
                let limit = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(os_err());
                }
            }
            if self.drop_caps {
                drop_capabilities()?;
            }
        }
        if let Some(ruleset) = self.ruleset.take() {
            let status = ruleset
                .restrict_self()
                .map_err(|_| io::Error::from_raw_os_error(libc::EPERM))?;
            if status.ruleset == RulesetStatus::NotEnforced {
                return Err(io::Error::from_raw_os_error(libc::ENOSYS));
            }
        }
        place_fds()?;
        for filter in &self.filters {
            seccompiler::apply_filter(filter)
                .map_err(|_| io::Error::from_raw_os_error(libc::EPERM))?;
        }
        Ok(())
    }
}

/// A sandbox as a process applies it to itself without an exec (a worker
/// forked from the template process): the same rules as
/// [`Sandbox::apply`], handed over as data.
#[derive(Debug)]
pub struct ChildRules {
    /// The Landlock ruleset to restrict itself with (None: sandbox off).
    pub ruleset: Option<OwnedFd>,
    /// Seccomp filters, raw `sock_filter` arrays in hex, applied in order
    /// after everything else.
    pub filters: Vec<String>,
    /// `(resource, soft, hard)` for `setrlimit`.
    pub rlimits: Vec<(libc::__rlimit_resource_t, libc::rlim_t, libc::rlim_t)>,
    /// Clear every capability set (the host runs as root).
    pub drop_caps: bool,
}

impl Sandbox {
    /// The rules for a process that applies them itself, consuming this
    /// sandbox.
    pub fn into_child_rules(mut self) -> ChildRules {
        ChildRules {
            ruleset: self.ruleset.take().and_then(Option::<OwnedFd>::from),
            filters: self
                .filters
                .iter()
                .map(crate::filter::program_hex)
                .collect(),
            rlimits: self.rlimits.to_vec(),
            drop_caps: self.drop_caps,
        }
    }
}

/// Empties the bounding, ambient and inheritable sets, so that the exec
/// of the interpreter gives a root worker no capability at all.
///
/// # Safety
/// Only syscalls; callable between fork and exec.
unsafe fn drop_capabilities() -> io::Result<()> {
    // SAFETY: plain syscalls; the cap structs live on this stack frame.
    unsafe {
        for cap in 0..=CAP_LAST {
            // Numbers past the kernel's last capability fail with EINVAL.
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        let mut header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        for d in &mut data {
            d.inheritable = 0;
        }
        if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
