//! The seccomp filters of a worker, compiled in the parent.
//!
//! Three programs, because seccompiler gives one action per filter:
//! - the main one answers EPERM to everything a worker never needs;
//! - `clone3` answers ENOSYS: its flags live behind a pointer seccomp
//!   cannot read, and ENOSYS (unlike EPERM) makes glibc fall back to
//!   `clone`, whose flags the main filter checks, so threads keep working;
//! - x32 syscall numbers answer ENOSYS, since the main filter is keyed on
//!   x86_64 numbers (a no-op on kernels built without x32).
//!
//! `execve` itself must stay allowed here for the interpreter's own exec;
//! [`noexec_program_hex`] is the filter the worker's bootstrap installs
//! before any plugin code runs when `process` is not granted.

use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op,
    SeccompCondition as Cond, SeccompFilter, SeccompRule, TargetArch, sock_filter,
};
use std::collections::BTreeMap;

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// Always refused: kernel attack surface, ways around the other rules,
/// and what would let a plugin act on processes or files outside itself.
const DENIED: &[libc::c_long] = &[
    // The only channels are the inherited fds 3 and 4: no socket at all
    // (TCP, UDP/DNS, netlink, packet, vsock, pathname and abstract UNIX).
    libc::SYS_socket,
    // io_uring can open sockets and files without those syscalls.
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    libc::SYS_kcmp,
    libc::SYS_process_madvise,
    // Namespaces and mounts.
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    // Kernel interfaces a plugin has no use for.
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_fanotify_init,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_vhangup,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_memfd_create,
    libc::SYS_execveat,
    // Landlock does not govern metadata: no chmod, chown, timestamp or
    // xattr changes (so `shutil.copy2` fails; `shutil.copyfile` works).
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchmodat2,
    libc::SYS_chown,
    libc::SYS_fchown,
    libc::SYS_lchown,
    libc::SYS_fchownat,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_fremovexattr,
    libc::SYS_utime,
    libc::SYS_utimes,
    libc::SYS_utimensat,
    libc::SYS_futimesat,
    libc::SYS_mknod,
    libc::SYS_mknodat,
    // The worker stays in the process group the host kills as a whole.
    libc::SYS_setsid,
    libc::SYS_setpgid,
];

/// Denied without `process`.
const DENIED_WITHOUT_PROCESS: &[libc::c_long] = &[libc::SYS_fork, libc::SYS_vfork];

/// `clone` flags that create namespaces, refused even with `process`.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn always(nrs: &[libc::c_long], rules: &mut BTreeMap<i64, Vec<SeccompRule>>) {
    for &nr in nrs {
        rules.insert(nr, Vec::new());
    }
}

fn cond(arg: u8, len: Len, op: Op, value: u64) -> Result<Cond, BackendError> {
    Cond::new(arg, len, op, value)
}

fn rule(conds: Vec<Cond>) -> Result<SeccompRule, BackendError> {
    SeccompRule::new(conds)
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> Result<BpfProgram, BackendError> {
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        ARCH,
    )?
    .try_into()
}

/// The filters for a worker, in the order they are installed.
pub(crate) fn build(process: bool) -> Result<Vec<BpfProgram>, BackendError> {
    let mut deny = BTreeMap::new();
    always(DENIED, &mut deny);
    // socketpair only as asyncio uses it (AF_UNIX stream); rules are OR-ed.
    deny.insert(
        libc::SYS_socketpair,
        vec![
            rule(vec![cond(0, Len::Dword, Op::Ne, libc::AF_UNIX as u64)?])?,
            rule(vec![cond(
                1,
                Len::Dword,
                Op::MaskedEq(0xf),
                libc::SOCK_DGRAM as u64,
            )?])?,
            rule(vec![cond(
                1,
                Len::Dword,
                Op::MaskedEq(0xf),
                libc::SOCK_SEQPACKET as u64,
            )?])?,
        ],
    );
    // No terminal injection, whatever fd a plugin finds.
    deny.insert(
        libc::SYS_ioctl,
        vec![
            rule(vec![cond(1, Len::Dword, Op::Eq, libc::TIOCSTI)?])?,
            rule(vec![cond(1, Len::Dword, Op::Eq, libc::TIOCLINUX)?])?,
        ],
    );
    let clone_rules = if process {
        NAMESPACE_FLAGS
            .iter()
            .map(|&f| rule(vec![cond(0, Len::Qword, Op::MaskedEq(f as u64), f as u64)?]))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        always(DENIED_WITHOUT_PROCESS, &mut deny);
        // A clone without CLONE_THREAD makes a process.
        vec![rule(vec![cond(
            0,
            Len::Qword,
            Op::MaskedEq(libc::CLONE_THREAD as u64),
            0,
        )?])?]
    };
    deny.insert(libc::SYS_clone, clone_rules);
    let main = compile(deny, libc::EPERM)?;
    let clone3 = compile(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        libc::ENOSYS,
    )?;
    Ok(vec![clone3, main, x32_program()])
}

/// `ld nr; jge X32_SYSCALL_BIT ? ENOSYS : ALLOW` (the arch was checked by
/// the other filters, which kill a foreign one).
fn x32_program() -> BpfProgram {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JGE_K: u16 = 0x35;
    const BPF_RET_K: u16 = 0x06;
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        ins(BPF_LD_W_ABS, 0, 0, 0),
        ins(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        ins(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        ins(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
}

/// The filter a worker's trusted bootstrap installs (through `prctl`)
/// before importing any plugin code when `process` is not granted:
/// `execve`, `execveat` and `memfd_create` answer EPERM. Hex of the raw
/// `sock_filter` array, so the Python side needs no syscall numbers.
pub fn noexec_program_hex() -> Result<String, BackendError> {
    let mut deny = BTreeMap::new();
    always(
        &[libc::SYS_execve, libc::SYS_execveat, libc::SYS_memfd_create],
        &mut deny,
    );
    let program = compile(deny, libc::EPERM)?;
    Ok(program_hex(&program))
}

/// A compiled filter as the kernel takes it (a raw `sock_filter` array,
/// native byte order), in hex: what a worker applies to itself.
pub(crate) fn program_hex(program: &BpfProgram) -> String {
    let mut hex = String::with_capacity(program.len() * 16);
    for f in program {
        let mut bytes = Vec::with_capacity(8);
        bytes.extend_from_slice(&f.code.to_ne_bytes());
        bytes.push(f.jt);
        bytes.push(f.jf);
        bytes.extend_from_slice(&f.k.to_ne_bytes());
        for b in bytes {
            hex.push_str(&format!("{b:02x}"));
        }
    }
    hex
}
