# A malicious plugin: every escape attempt listed in docs/security.md.
#
# The red-team tests (crates/greffon-host/tests/it/redteam.rs) install this file
# as several plugins, each with its own meta (the line below is replaced), and
# call `run(attempt=NAME, ...)`. Each attempt reports what the kernel said:
# {"ok": True} when the operation went through, else {"ok": False, "errno":
# "EACCES", "error": "..."}. The tests assert the specific denial.
META = {}  # replaced by the test

import ctypes
import errno
import os
import socket
import subprocess
import sys
import threading
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

# x86_64 syscall numbers.
NR = {
    "ptrace": 101, "setsid": 112, "pivot_root": 155, "chroot": 161, "mount": 165,
    "reboot": 169, "init_module": 175, "keyctl": 250, "unshare": 272,
    "perf_event_open": 298, "name_to_handle_at": 303, "open_by_handle_at": 304,
    "setns": 308, "process_vm_readv": 310, "renameat2": 316, "seccomp": 317,
    "memfd_create": 319, "bpf": 321, "execveat": 322, "userfaultfd": 323,
    "io_uring_setup": 425, "clone": 56, "fork": 57, "vfork": 58, "clone3": 435,
    "landlock_create_ruleset": 444, "landlock_restrict_self": 446,
}


def denied(e):
    code = getattr(e, "errno", None)
    return {"ok": False, "errno": errno.errorcode.get(code, str(code)), "error": f"{type(e).__name__}: {e}"}


def attempt(fn):
    try:
        value = fn()
        return {"ok": True, "value": value if isinstance(value, (int, str, bool, type(None))) else str(value)}
    except OSError as e:
        return denied(e)


def sys_call(name, *args):
    """A raw syscall; a child created by mistake exits at once."""
    ctypes.set_errno(0)
    r = libc.syscall(NR[name], *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    if r == 0 and name in ("clone", "fork", "vfork"):
        os._exit(0)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def read(path, **_):
    return attempt(lambda: open(path, "rb").read(64).decode("latin-1"))


def write(path, **_):
    return attempt(lambda: open(path, "w").write("owned"))


def create_exec(path, **_):
    # A mode at creation is not chmod: the file is executable by DAC, so
    # only Landlock can refuse to run it.
    def go():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o755)
        with open("/bin/true", "rb") as src:
            os.write(fd, src.read())
        os.close(fd)
        return subprocess.run([path]).returncode
    return attempt(go)


def truncate(path, **_):
    return attempt(lambda: os.truncate(path, 0))


def open_trunc(path, **_):
    return attempt(lambda: os.close(os.open(path, os.O_WRONLY | os.O_TRUNC)))


def unlink(path, **_):
    return attempt(lambda: os.unlink(path))


def rmdir(path, **_):
    return attempt(lambda: os.rmdir(path))


def mkdir(path, **_):
    return attempt(lambda: os.mkdir(path))


def symlink_write(path, link, **_):
    def go():
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(path, link)
        with open(link, "w") as f:
            f.write("owned")
    return attempt(go)


def hardlink(path, link, **_):
    return attempt(lambda: os.link(path, link))


def rename(path, target, **_):
    return attempt(lambda: os.rename(path, target))


def exchange(path, target, **_):
    RENAME_EXCHANGE = 2
    return attempt(lambda: sys_call("renameat2", -100, path.encode(), -100, target.encode(), RENAME_EXCHANGE))


def chmod(path, **_):
    return attempt(lambda: os.chmod(path, 0o777))


def chown(path, **_):
    return attempt(lambda: os.chown(path, 65534, 65534))


def utime(path, **_):
    return attempt(lambda: os.utime(path, (0, 0)))


def setxattr(path, **_):
    return attempt(lambda: os.setxattr(path, "user.greffon", b"x"))


def raw_socket(family, kind="stream", **_):
    fam = getattr(socket, family)
    typ = {"stream": socket.SOCK_STREAM, "dgram": socket.SOCK_DGRAM, "raw": socket.SOCK_RAW}[kind]
    return attempt(lambda: socket.socket(fam, typ).close())


def socketpair(kind="stream", **_):
    typ = socket.SOCK_STREAM if kind == "stream" else socket.SOCK_DGRAM
    def go():
        a, b = socket.socketpair(socket.AF_UNIX, typ)
        a.close()
        b.close()
    return attempt(go)


def syscall(name, args=(), **_):
    return attempt(lambda: sys_call(name, *args))


def fork(**_):
    def go():
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return attempt(go)


def subprocess_run(argv=("/bin/true",), **_):
    return attempt(lambda: subprocess.run(list(argv), capture_output=True).returncode)


def child_facts(**_):
    code = ("import ctypes;l=ctypes.CDLL(None);"
            "h=(ctypes.c_uint32*2)(0x20080522,0);d=(ctypes.c_uint32*6)();"
            "l.syscall(125,h,d);print(l.prctl(39,0,0,0,0),d[0],d[1])")
    return attempt(lambda: subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True).stdout.strip())


def multiprocess(**_):
    import multiprocessing

    def go():
        p = multiprocessing.get_context("fork").Process(target=lambda: None)
        p.start()
        p.join()
    return attempt(go)


def posix_spawn(**_):
    return attempt(lambda: os.waitpid(os.posix_spawn("/bin/true", ["true"], {}), 0))


def execv(path="/bin/sh", argv=("sh", "-c", "exit 0"), **_):
    return attempt(lambda: os.execv(path, list(argv)))


def memfd_exec(**_):
    def go():
        fd = os.memfd_create("x")
        with open("/bin/true", "rb") as src:
            os.write(fd, src.read())
        os.execv(f"/proc/self/fd/{fd}", ["x"])
    return attempt(go)


def threads(count=8, **_):
    done = []
    ts = [threading.Thread(target=lambda: done.append(1)) for _ in range(count)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return {"ok": True, "value": len(done)}


def kill_parent(**_):
    return attempt(lambda: os.kill(os.getppid(), 0))


def tiocsti(**_):
    import fcntl
    import termios
    return attempt(lambda: fcntl.ioctl(0, termios.TIOCSTI, b"x"))


def self_facts(**_):
    h = (ctypes.c_uint32 * 2)(0x20080522, 0)
    d = (ctypes.c_uint32 * 6)()
    libc.syscall(125, h, d)
    return {"ok": True, "no_new_privs": libc.prctl(39, 0, 0, 0, 0), "cap_effective": d[0], "cap_permitted": d[1],
            "env": sorted(os.environ)}


def open_fds(**_):
    """Every descriptor past the worker's five (0-2, the channels 3 and 4)."""
    found = []
    for fd in range(5, 1024):
        try:
            os.fstat(fd)
            found.append(fd)
        except OSError:
            pass
    return {"ok": True, "fds": found}


def undo_nnp(**_):
    ctypes.set_errno(0)
    r = libc.prctl(38, 0, 0, 0, 0)
    if r != 0:
        e = ctypes.get_errno()
        return denied(OSError(e, os.strerror(e)))
    return {"ok": True}


def permissive_seccomp(**_):
    # A filter that allows everything: stacking it must not lift the others.
    import struct
    prog = struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000)
    buf = ctypes.create_string_buffer(prog)

    class F(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    r = libc.prctl(22, 2, ctypes.byref(F(1, ctypes.addressof(buf))), 0, 0)
    return {"ok": r == 0, "socket_after": raw_socket("AF_INET"), "read_after": read("/etc/shadow")}


def empty_landlock(**_):
    class Attr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64)]

    fd = libc.syscall(NR["landlock_create_ruleset"], ctypes.byref(Attr(1)), ctypes.c_size_t(8), 0)
    r = libc.syscall(NR["landlock_restrict_self"], ctypes.c_int(fd), 0) if fd >= 0 else -1
    return {"ok": r == 0, "read_after": read("/etc/shadow")}


def strict_seccomp(**_):
    # SECCOMP_MODE_STRICT would leave only read, write and exit.
    ctypes.set_errno(0)
    if libc.prctl(22, 1, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        return denied(OSError(e, os.strerror(e)))
    return {"ok": True}


def garbage_frame(**_):
    os.write(3, b"\x7f\xff\xff\xffnot json")
    time.sleep(5)
    return {"ok": True}


def bad_json_frame(**_):
    body = b"{not json"
    os.write(3, len(body).to_bytes(4, "big") + body)
    time.sleep(5)
    return {"ok": True}


def pass_fd(**_):
    # SCM_RIGHTS to the host: the host never accepts descriptors.
    s = socket.socket(fileno=os.dup(3))
    fd = os.open("/dev/null", os.O_RDONLY)
    body = b'{"method":"log","params":{"category":"plugin","level":"INFO","logger":"x","message":"fd"}}'
    try:
        return attempt(lambda: s.sendmsg(
            [len(body).to_bytes(4, "big") + body],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(ctypes.c_int(fd)))],
        ))
    finally:
        s.close()


def http_without_net(**_):
    from greffon import http
    try:
        http.get("http://127.0.0.1:9/")
        return {"ok": True}
    except PermissionError as e:
        return {"ok": False, "errno": "PermissionError", "error": str(e)}


def thread_bomb(**_):
    release = threading.Event()
    started = []
    try:
        for _ in range(100000):
            t = threading.Thread(target=release.wait, args=(30,), daemon=True)
            t.start()
            started.append(t)
        outcome = {"ok": True}
    except RuntimeError as e:
        outcome = {"ok": False, "errno": "RuntimeError", "error": str(e)}
    release.set()
    for t in started:
        t.join()
    outcome["started"] = len(started)
    return outcome


def big_alloc(mb=50 * 1024, **_):
    try:
        bytearray(mb << 20)
        return {"ok": True}
    except MemoryError as e:
        return {"ok": False, "errno": "MemoryError", "error": str(e)}


def busy(**_):
    while True:
        pass


def sleep_forever(**_):
    time.sleep(1e9)


def fd_exhaust(**_):
    fds = []
    try:
        while True:
            fds.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as e:
        out = denied(e)
        out["opened"] = len(fds)
        return out
    finally:
        for fd in fds:
            os.close(fd)


def big_file(path, mb=64, **_):
    def go():
        chunk = b"\0" * (1 << 20)
        with open(path, "wb") as f:
            for _ in range(mb):
                f.write(chunk)
    return attempt(go)


def spawn_sleepers(count=5, **_):
    procs = [subprocess.Popen(["/bin/sleep", "1000"]) for _ in range(count)]
    return {"ok": True, "pids": [p.pid for p in procs]}


def escape_group(**_):
    return attempt(lambda: subprocess.Popen(["/bin/sleep", "1000"], start_new_session=True).pid)


def ping(**_):
    return {"ok": True, "pid": os.getpid()}


class Plugin:
    meta = META

    def run(self, attempt, **kwargs):
        return globals()[attempt](**kwargs)


plugin = Plugin()
