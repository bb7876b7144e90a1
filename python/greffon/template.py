"""The template process: forks workers that start with the SDK imported.

Started by the host as ``python -I -B -c <bootstrap> <sdk dir>`` with a
``SOCK_SEQPACKET`` control socket on fd 3. It imports what every worker
needs, freezes those objects out of the garbage collector (so that a
forked worker's collections do not write to the pages it shares with the
template), says ``ready``, then serves two requests, one message each:

- ``fork`` (with the worker's main and side channels, its stdout and
  stderr pipes and, when the sandbox is on, its Landlock ruleset as
  passed descriptors): forks a worker, which applies its own sandbox —
  the same rules a worker started with exec gets — and only then serves
  the host. Answers its pid.
- ``reap``: waits for a worker the host saw exit; answers its raw wait
  status (the host decides when, so a pid it may still signal is never
  reused under it).

The template runs no plugin code and holds nothing of any plugin: each
request's descriptors are closed in the template once its worker is
forked, and a worker closes everything but its own five.
"""

import os
import socket
import sys

# What every worker imports anyway, loaded once here.
import greffon  # noqa: F401
import greffon.worker
import greffon._seal
import fcntl
import json
import resource
import ctypes
import gc

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SYS_CAPSET = 126
SYS_CLOSE_RANGE = 436
SYS_LANDLOCK_RESTRICT_SELF = 446
LINUX_CAPABILITY_VERSION_3 = 0x20080522

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def check(rc, what):
    if rc != 0:
        raise OSError(ctypes.get_errno(), f"{what} failed")


def drop_capabilities():
    """No capability left in any set: without an exec, clearing the
    bounding set alone would leave a root worker its effective ones."""
    for cap in range(64):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (CapData * 2)()
    check(libc.syscall(SYS_CAPSET, ctypes.byref(header), data), "capset")


def place(fds, targets):
    """Moves ``fds`` to ``targets`` (0..4) without clobbering one another,
    then closes every other descriptor: nothing of the template or of a
    sibling stays reachable."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in fds]
    for fd, target in zip(high, targets):
        os.dup2(fd, target)
    check(libc.syscall(SYS_CLOSE_RANGE, len(targets), 0xFFFFFFFF, 0), "close_range")


def become_worker(request, fds, template_pid):
    """In the forked child: the sandbox first, then the worker."""
    os.setsid()
    check(libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0), "prctl(PDEATHSIG)")
    if os.getppid() != template_pid:
        os._exit(1)  # the template died before the signal was armed
    main, side, out, err = fds[:4]
    ruleset = fds[4] if len(fds) > 4 else None
    null = os.open("/dev/null", os.O_RDONLY)
    for res, soft, hard in request["rlimits"]:
        resource.setrlimit(res, (soft, hard))
    if request["drop_caps"]:
        drop_capabilities()
    if ruleset is not None:
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
        check(libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    place([null, out, err, main, side], [0, 1, 2, 3, 4])
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for program in request["filters"]:
        greffon._seal.seal(program)
    if request["noexec"]:
        greffon._seal.seal(request["noexec"])
    if sys.flags.no_site:
        # A plugin's environment: its packages' `.pth` files run only now,
        # sealed.
        import site

        site.main()
    sys.argv = ["greffon-worker"]
    greffon.worker.main()


def serve(ctl):
    template_pid = os.getpid()
    while True:
        message, fds, _flags, _addr = socket.recv_fds(ctl, 1 << 16, 8)
        if not message:
            os._exit(0)  # the host has gone
        request = json.loads(message)
        if request["op"] == "fork":
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    ctl.close()
                    become_worker(request, fds, template_pid)
                except BaseException as e:  # noqa: BLE001 - the child must never return here
                    try:
                        os.write(2, f"greffon template: cannot start the worker: {e}\n".encode())
                    except OSError:
                        pass
                    code = 71
                os._exit(code)
            for fd in fds:
                os.close(fd)
            ctl.send(json.dumps({"pid": pid}).encode())
        elif request["op"] == "reap":
            try:
                _, status = os.waitpid(request["pid"], 0)
                answer = {"status": status}
            except ChildProcessError as e:
                answer = {"error": str(e)}
            ctl.send(json.dumps(answer).encode())
        else:
            for fd in fds:
                os.close(fd)
            ctl.send(json.dumps({"error": f"unknown op {request['op']!r}"}).encode())


def main():
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=3)
    gc.collect()
    gc.freeze()
    ctl.send(json.dumps({"ready": os.getpid()}).encode())
    serve(ctl)


if __name__ == "__main__":
    main()
