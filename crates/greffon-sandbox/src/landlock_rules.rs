//! The Landlock ruleset of a worker, built in the parent.

use crate::profile::Profile;
use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, Ruleset,
    RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetError, Scope,
};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

/// Programs a worker with `process` may run, and the libraries they load.
const PROCESS_ROOTS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib64"];

/// Device files every worker may use.
const DEVICES_RW: &[&str] = &["/dev/null"];
const DEVICES_RO: &[&str] = &["/dev/urandom", "/dev/zero"];

fn read_rights() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::ReadDir
}

fn exec_rights() -> BitFlags<AccessFs> {
    read_rights() | AccessFs::Execute
}

/// Everything but execution and device nodes.
fn write_rights() -> BitFlags<AccessFs> {
    read_rights() | (AccessFs::from_write(ABI::V5) & !(AccessFs::MakeChar | AccessFs::MakeBlock))
}

/// Landlock refuses folder-only rights on a file: keep the file ones.
fn fit(fd: &impl AsFd, rights: BitFlags<AccessFs>) -> BitFlags<AccessFs> {
    // SAFETY: fstat on a valid descriptor into a zeroed struct.
    let is_dir = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd.as_fd().as_raw_fd(), &mut st) == 0
            && st.st_mode & libc::S_IFMT == libc::S_IFDIR
    };
    if is_dir {
        rights
    } else {
        rights & AccessFs::from_file(ABI::V5)
    }
}

/// Opens a runtime path (the host's own choice, not a plugin's) as
/// `O_PATH`; `None` when this system does not have it.
fn open_path(path: &Path) -> Option<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .ok()
        .map(OwnedFd::from)
}

/// Builds the ruleset. What greffon relies on (file rights up to ABI 3,
/// including truncate, and the signal and abstract-socket scopes of ABI 6)
/// is a hard requirement: an older kernel makes this fail instead of
/// silently enforcing less.
pub(crate) fn build(profile: &Profile) -> Result<RulesetCreated, RulesetError> {
    let mut rules: Vec<(OwnedFd, BitFlags<AccessFs>)> = Vec::new();
    let mut host_path = |path: &Path, rights: BitFlags<AccessFs>| {
        if let Some(fd) = open_path(path) {
            let rights = fit(&fd, rights);
            rules.push((fd, rights));
        }
    };
    for p in &profile.runtime_read {
        host_path(p, read_rights());
    }
    for p in &profile.exec {
        host_path(p, exec_rights());
    }
    if profile.process {
        for p in PROCESS_ROOTS {
            host_path(Path::new(p), exec_rights());
        }
    }
    for p in DEVICES_RW {
        host_path(Path::new(p), AccessFs::ReadFile | AccessFs::WriteFile);
    }
    for p in DEVICES_RO {
        host_path(Path::new(p), AccessFs::ReadFile.into());
    }

    let mut created = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V3))?
        .scope(Scope::from_all(ABI::V6))?
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(ABI::V5))?
        // No port rule follows: TCP bind and connect stay denied, under
        // the seccomp rule that already refuses socket().
        .handle_access(AccessNet::from_all(ABI::V4))?
        .create()?;
    for (fd, rights) in rules {
        created = created.add_rule(PathBeneath::new(fd, rights))?;
    }
    for g in &profile.read {
        created = created.add_rule(PathBeneath::new(&g.fd, fit(&g.fd, read_rights())))?;
    }
    for g in &profile.write {
        created = created.add_rule(PathBeneath::new(&g.fd, fit(&g.fd, write_rights())))?;
    }
    Ok(created)
}
