//! What the running kernel offers.

/// The Landlock ABI greffon requires: 3 for `truncate` control, 6 for the
/// signal and abstract UNIX socket scopes.
pub const LANDLOCK_ABI_REQUIRED: i32 = 6;

const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
const SECCOMP_GET_ACTION_AVAIL: libc::c_uint = 2;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

/// The kernel features the sandbox is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Support {
    /// 0 when Landlock is absent or disabled at boot.
    pub landlock_abi: i32,
    /// seccomp filters with an errno action.
    pub seccomp: bool,
    /// `SO_PASSRIGHTS` (Linux 6.16): the host's end of a worker channel can
    /// refuse descriptors. Not required; without it a worker that sends one
    /// can only stall its own calls until their timeout.
    pub refuse_passed_fds: bool,
}

/// Asks the kernel (no side effect: no ruleset is kept, no filter set).
pub fn probe() -> Support {
    // SAFETY: the version query takes no pointer and creates nothing.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    let action: u32 = SECCOMP_RET_ERRNO;
    // SAFETY: the kernel reads one u32 from a valid pointer.
    let seccomp = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_ACTION_AVAIL,
            0u32,
            &action as *const u32,
        )
    } == 0;
    let refuse_passed_fds = std::os::unix::net::UnixStream::pair()
        .map(|(a, _b)| crate::channel::refuse_passed_fds(&a))
        .unwrap_or(false);
    Support {
        landlock_abi: i32::try_from(abi.max(0)).unwrap_or(0),
        seccomp,
        refuse_passed_fds,
    }
}

impl Support {
    /// What is missing for the sandbox to be enforced, one line each;
    /// empty when everything is there.
    pub fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        if self.landlock_abi == 0 {
            missing.push(format!(
                "Landlock is not available (needs Linux 6.12 or later with Landlock enabled at boot, ABI {LANDLOCK_ABI_REQUIRED})"
            ));
        } else if self.landlock_abi < LANDLOCK_ABI_REQUIRED {
            let lacks = if self.landlock_abi < 3 {
                "truncate control and the signal and abstract-socket scopes"
            } else {
                "the signal and abstract-socket scopes"
            };
            missing.push(format!(
                "Landlock ABI {} lacks {lacks} (ABI {LANDLOCK_ABI_REQUIRED} needed, Linux 6.12 or later)",
                self.landlock_abi
            ));
        }
        if !self.seccomp {
            missing.push(
                "seccomp filters are not available (kernel built without CONFIG_SECCOMP_FILTER)"
                    .into(),
            );
        }
        missing
    }

    /// The ABI as used: `cap` lowers it (never raises it), to check how
    /// greffon behaves on an older kernel.
    pub fn capped(self, cap: Option<i32>) -> Support {
        Support {
            landlock_abi: cap.map_or(self.landlock_abi, |c| c.min(self.landlock_abi)),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_missing_feature_is_named() {
        let ok = Support {
            landlock_abi: 7,
            seccomp: true,
            refuse_passed_fds: true,
        };
        assert!(ok.missing().is_empty());
        let none = Support {
            landlock_abi: 0,
            seccomp: false,
            refuse_passed_fds: false,
        };
        let m = none.missing();
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].contains("Landlock is not available"));
        assert!(m[1].contains("seccomp"));
        let old = Support {
            landlock_abi: 2,
            ..ok
        };
        assert!(old.missing()[0].contains("truncate"));
        let five = Support {
            landlock_abi: 5,
            ..ok
        };
        assert!(five.missing()[0].contains("ABI 5 lacks the signal"));
    }

    #[test]
    fn a_cap_only_lowers_the_abi() {
        let s = Support {
            landlock_abi: 7,
            seccomp: true,
            refuse_passed_fds: true,
        };
        assert_eq!(s.capped(Some(5)).landlock_abi, 5);
        assert_eq!(s.capped(Some(9)).landlock_abi, 7);
        assert_eq!(s.capped(None).landlock_abi, 7);
    }

    #[test]
    fn this_kernel_is_probed() {
        let s = probe();
        // The CI machines run Linux 6.18 (Landlock ABI 7).
        assert!(s.landlock_abi >= 1, "{s:?}");
        assert!(s.seccomp);
        assert!(s.refuse_passed_fds);
    }
}
