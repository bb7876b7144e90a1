//! Hardening of the host's end of a worker channel.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// `SO_PASSRIGHTS` (asm-generic/socket.h, Linux 6.16), absent from the libc
/// crate for x86_64.
const SO_PASSRIGHTS: libc::c_int = 83;

/// Makes the kernel refuse descriptors sent to `sock` (`SCM_RIGHTS`
/// answers EPERM to the sender). The host never wants one, and a stream
/// read that meets one stops short of the data after it, which would leave
/// a later frame unread. Returns false on a kernel without the option.
pub fn refuse_passed_fds(sock: &UnixStream) -> bool {
    let off: libc::c_int = 0;
    // SAFETY: setsockopt on a socket the caller owns, with a valid int.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PASSRIGHTS,
            (&off as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}
