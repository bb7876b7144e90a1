"""Installs the worker's no-exec seccomp filter before any plugin code runs.

The host passes the compiled filter (raw ``sock_filter`` array, hex) as the
bootstrap's second argument when the plugin was not granted ``process``:
from then on ``execve``, ``execveat`` and ``memfd_create`` fail with EPERM
in this process and anything it could start. The kernel sandbox (Landlock,
the main seccomp filter) is already in place; this layer cannot be applied
from the host because the host's own ``execve`` of the interpreter must
succeed. An empty argument means the sandbox is off or ``process`` granted.
"""

import sys


def seal(program_hex):
    import ctypes

    program = bytes.fromhex(program_hex)
    libc = ctypes.CDLL(None, use_errno=True)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.addressof(buf))
    PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        errno = ctypes.get_errno()
        # Fail closed: a worker that cannot seal itself must not run plugins.
        sys.stderr.write(f"greffon worker: cannot install the no-exec filter (errno {errno})\n")
        sys.stderr.flush()
        import os

        os._exit(70)


if len(sys.argv) > 2 and sys.argv[2]:
    seal(sys.argv[2])
