//! Paths a plugin declares (`meta["paths"]`): opened without following
//! symlinks, and refused when they would expose greffon itself.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Whether a path is to be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Read,
    Write,
}

impl Use {
    pub fn as_str(self) -> &'static str {
        match self {
            Use::Read => "read",
            Use::Write => "write",
        }
    }
}

/// What no plugin may be granted.
#[derive(Debug, Clone, Default)]
pub struct Protected {
    /// Never a write target themselves (`/`, the user's home, the greffon
    /// home): writing there reaches everything below.
    pub exact: Vec<(PathBuf, &'static str)>,
    /// Neither written, nor a folder containing them written: the
    /// interpreter, the plugins' code, greffon's own state.
    pub no_write: Vec<(PathBuf, &'static str)>,
    /// Neither read nor written, nor a folder containing them: greffon's
    /// secrets (token, config, database, logs).
    pub no_access: Vec<(PathBuf, &'static str)>,
}

/// A declared path greffon will not grant, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .message)]
pub struct PathError {
    pub message: String,
}

fn refuse(path: &Path, why: String) -> PathError {
    PathError {
        message: format!("'{}' {why}", path.display()),
    }
}

/// Makes `declared` absolute (relative to `base`) and refuses `..`, so
/// that the checked text is the path the kernel resolves.
pub fn absolute(base: &Path, declared: &str) -> Result<PathBuf, PathError> {
    let p = Path::new(declared);
    if declared.is_empty() {
        return Err(refuse(p, "is empty".into()));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(refuse(p, "contains '..'; write the path without it".into()));
    }
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    // Drops `.` and repeated slashes.
    Ok(joined.components().collect())
}

impl Protected {
    /// Refuses `path` for `usage` when it is, contains, or lies inside a
    /// protected path.
    pub fn check(&self, path: &Path, usage: Use) -> Result<(), PathError> {
        let held = |(p, why): &(PathBuf, &str), usage: Use| {
            refuse(
                path,
                format!(
                    "cannot be granted for {}: it is or holds {why} ('{}')",
                    usage.as_str(),
                    p.display()
                ),
            )
        };
        if usage == Use::Write
            && let Some((_, why)) = self.exact.iter().find(|(p, _)| p == path)
        {
            return Err(refuse(
                path,
                format!("cannot be granted for write: it is {why}"),
            ));
        }
        if let Some(hit) = overlapping(&self.no_access, path) {
            return Err(held(hit, usage));
        }
        if usage == Use::Read {
            return Ok(());
        }
        match overlapping(&self.no_write, path) {
            Some(hit) => Err(held(hit, Use::Write)),
            None => Ok(()),
        }
    }
}

/// The entry of `list` that `path` is, holds, or lies inside (whole
/// components: `/h/app` does not hold `/h/application`).
fn overlapping<'a>(
    list: &'a [(PathBuf, &'static str)],
    path: &Path,
) -> Option<&'a (PathBuf, &'static str)> {
    list.iter()
        .find(|(p, _)| path.starts_with(p) || p.starts_with(path))
}

/// `struct open_how` (linux/openat2.h); the libc crate's is non-exhaustive.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;

/// Opens `path` (absolute) as `O_PATH` with `openat2`, refusing any
/// symlink on the way: the Landlock rule then binds to what was checked,
/// and a plugin that swaps a folder for a symlink between two runs gets an
/// error, not a grant.
pub fn open_no_symlinks(path: &Path) -> Result<OwnedFd, PathError> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| refuse(path, "contains a NUL byte".into()))?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: valid C string and open_how for the duration of the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ELOOP) => refuse(
                path,
                "goes through a symlink; declare the real path (symlinks are refused so a plugin cannot redirect a grant)".into(),
            ),
            Some(libc::ENOENT) => refuse(path, "does not exist".into()),
            _ => refuse(path, format!("cannot be opened: {e}")),
        });
    }
    // SAFETY: openat2 returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protected(home: &Path) -> Protected {
        Protected {
            exact: vec![
                (PathBuf::from("/"), "the root folder"),
                (home.to_path_buf(), "the greffon home"),
            ],
            no_write: vec![(home.join("plugins"), "the plugins' code")],
            no_access: vec![(home.join("app"), "greffon's own state")],
        }
    }

    #[test]
    fn relative_paths_land_in_the_base_and_dotdot_is_refused() {
        let base = Path::new("/h");
        assert_eq!(
            absolute(base, "data/x").expect("valid"),
            Path::new("/h/data/x")
        );
        assert_eq!(
            absolute(base, "./data//x/").expect("valid"),
            Path::new("/h/data/x")
        );
        assert_eq!(
            absolute(base, "/srv/d").expect("valid"),
            Path::new("/srv/d")
        );
        assert!(
            absolute(base, "data/../../etc")
                .expect_err("refused")
                .message
                .contains("'..'")
        );
        assert!(absolute(base, "").is_err());
    }

    #[test]
    fn protected_paths_are_refused_with_the_reason() {
        let home = Path::new("/h");
        let p = protected(home);
        assert!(p.check(Path::new("/h/data/x"), Use::Write).is_ok());
        assert!(p.check(Path::new("/h/data/x"), Use::Read).is_ok());
        let e = p.check(Path::new("/"), Use::Write).expect_err("refused");
        assert!(e.message.contains("it is the root folder"), "{e}");
        let e = p.check(Path::new("/"), Use::Read).expect_err("refused");
        assert!(e.message.contains("greffon's own state"), "{e}");
        let e = p.check(Path::new("/h"), Use::Write).expect_err("refused");
        assert!(e.message.contains("'/h'"), "{e}");
        let e = p
            .check(Path::new("/h/plugins/other"), Use::Write)
            .expect_err("refused");
        assert!(e.message.contains("the plugins' code"), "{e}");
        assert!(p.check(Path::new("/h/plugins/other"), Use::Read).is_ok());
        let e = p
            .check(Path::new("/h/app/token"), Use::Read)
            .expect_err("refused");
        assert!(e.message.contains("for read"), "{e}");
        // A prefix that is not a whole component does not match.
        assert!(p.check(Path::new("/h/application"), Use::Write).is_ok());
    }

    #[test]
    fn symlinks_are_refused_when_opening() {
        let dir = tempfile::tempdir().expect("valid");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).expect("valid");
        std::os::unix::fs::symlink(&real, dir.path().join("link")).expect("valid");
        let base = dir.path().canonicalize().expect("valid");
        assert!(open_no_symlinks(&base.join("real")).is_ok());
        let e = open_no_symlinks(&base.join("link")).expect_err("refused");
        assert!(e.message.contains("symlink"), "{e}");
        let e = open_no_symlinks(&base.join("link/inside")).expect_err("refused");
        assert!(e.message.contains("symlink"), "{e}");
        let e = open_no_symlinks(&base.join("missing")).expect_err("refused");
        assert!(e.message.contains("does not exist"), "{e}");
    }
}
