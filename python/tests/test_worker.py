"""The worker as a real subprocess, driven over fd 3 by a Python peer
playing the host: the protocol as the Rust host relies on it."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

SDK = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BOOTSTRAP = "import sys; sys.path.insert(0, sys.argv[1]); from greffon.worker import main; main()"


class Peer:
    """The host side of one worker."""

    def __init__(self, tmp_path, code):
        plugin_dir = tmp_path / f"p{id(self)}"
        plugin_dir.mkdir()
        (plugin_dir / "plugin.py").write_text(textwrap.dedent(code))
        self.path = str(plugin_dir / "plugin.py")
        ours, theirs = socket.socketpair()
        side, side_theirs = socket.socketpair()

        def place_fds():
            main_fd, side_fd = os.dup(theirs.fileno()), os.dup(side_theirs.fileno())
            os.dup2(main_fd, 3)
            os.dup2(side_fd, 4)

        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-B", "-c", BOOTSTRAP, SDK],
            close_fds=False,
            preexec_fn=place_fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        theirs.close()
        side_theirs.close()
        self.sock = ours
        self.side = side
        self.rfile = ours.makefile("rb")
        self.next_id = 0
        self.lock = threading.Lock()
        hello = self.read()
        assert hello["method"] == "hello"
        assert hello["params"]["protocol"] == 1

    def send(self, obj, side=False):
        body = json.dumps(obj).encode()
        with self.lock:
            (self.side if side else self.sock).sendall(len(body).to_bytes(4, "big") + body)

    def read(self):
        header = self.rfile.read(4)
        if len(header) < 4:
            return None
        return json.loads(self.rfile.read(int.from_bytes(header, "big")))

    def request(self, method, params=None, side=False):
        """Sends a request; as the host does, on the side channel when it
        overlaps one in flight."""
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params or {}}, side)
        return self.next_id

    def wait_response(self, request_id, notes=None):
        while True:
            message = self.read()
            assert message is not None, "worker closed the channel"
            if message.get("id") == request_id and "method" not in message:
                return message
            if notes is not None:
                notes.append(message)

    def load(self, config=None):
        rid = self.request("load", {"path": self.path, "folder": "p", "config": config or {}, "capture_limit": 1000, "max_result_bytes": 1 << 20})
        return self.wait_response(rid)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def peer_for(tmp_path):
    made = []

    def make(code):
        p = Peer(tmp_path, code)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


ECHO = """
    import sys
    class P:
        meta = {"name": "echo", "permissions": ["net"], "inputs": {"schema": {"x": int}}}
        def run(self, **kw):
            print("out", kw)
            print("err", file=sys.stderr)
            return kw
    plugin = P()
"""


def test_load_reports_meta_and_hooks(peer_for):
    peer = peer_for(ECHO)
    r = peer.load()["result"]
    assert r["has_plugin"] and r["has_run"]
    assert r["meta"]["inputs"]["schema"] == {"x": "integer"}


def test_run_answers_the_result_with_its_captured_output(peer_for):
    peer = peer_for(ECHO)
    peer.load()
    response = peer.wait_response(peer.request("run", {"args": {"x": 5}}))
    assert response["result"] == {"x": 5}
    assert response["output"]["stdout"] == "out {'x': 5}\n"
    assert response["output"]["stderr"] == "err\n"


def test_exceptions_and_bad_results_are_answers_not_crashes(peer_for):
    peer = peer_for("""
        class P:
            meta = {"name": "bad"}
            def run(self, kind):
                if kind == "raise":
                    raise KeyError("missing")
                if kind == "set":
                    return {1, 2}
                if kind == "nan":
                    return float("nan")
                if kind == "exit":
                    raise SystemExit(4)
                return "x" * (2 << 20)
        plugin = P()
    """)
    peer.load()
    err = peer.wait_response(peer.request("run", {"args": {"kind": "raise"}}))["error"]
    assert err["kind"] == "exception" and err["type"] == "KeyError" and "Traceback" in err["traceback"]
    assert peer.wait_response(peer.request("run", {"args": {"kind": "set"}}))["error"]["kind"] == "not_serializable"
    assert peer.wait_response(peer.request("run", {"args": {"kind": "nan"}}))["error"]["kind"] == "not_serializable"
    assert peer.wait_response(peer.request("run", {"args": {"kind": "exit"}}))["error"]["type"] == "SystemExit"
    big = peer.wait_response(peer.request("run", {"args": {"kind": "big"}}))["error"]
    assert big["kind"] == "too_large" and "max_result_bytes" in big["message"]
    assert peer.proc.poll() is None, "the worker survived every one"


def test_unknown_methods_are_refused(peer_for):
    peer = peer_for(ECHO)
    assert peer.wait_response(peer.request("frobnicate"))["error"]["kind"] == "unknown_method"


def test_a_plugin_calls_the_host_mid_call_while_other_calls_run(peer_for):
    peer = peer_for("""
        import threading
        from greffon import system
        GATE = threading.Event()
        class P:
            meta = {"name": "cb"}
            def run(self, op):
                if op == "wait":
                    return GATE.wait(10)
                facts = system.info()
                GATE.set()
                return facts["python"]
        plugin = P()
    """)
    peer.load()
    waiting = peer.request("run", {"args": {"op": "wait"}})
    asking = peer.request("run", {"args": {"op": "ask"}}, side=True)
    answers = {}
    while len(answers) < 2:
        message = peer.read()
        if message.get("method") == "system.info":
            peer.send({"id": message["id"], "result": {"python": "3.x"}}, side=True)
        elif "id" in message:
            answers[message["id"]] = message["result"]
    assert answers == {waiting: True, asking: "3.x"}


def test_log_records_are_notifications(peer_for):
    peer = peer_for("""
        from greffon.log import get_logger
        class P:
            meta = {"name": "logs"}
            def run(self):
                get_logger("audit").warning("noted %s", 1)
                return None
        plugin = P()
    """)
    peer.load()
    notes = []
    response = peer.wait_response(peer.request("run", {"args": {}}), notes)
    assert response["result"] is None
    assert notes == [{"method": "log", "params": {"category": "audit", "level": "WARNING", "logger": "greffon.audit.logs", "message": "noted 1"}}]


def test_config_reaches_the_plugin(peer_for):
    peer = peer_for("""
        import greffon
        class P:
            meta = {"name": "cfg"}
            def run(self):
                return greffon.config()
        plugin = P()
    """)
    peer.load(config={"key": "value"})
    assert peer.wait_response(peer.request("run", {"args": {}}))["result"] == {"key": "value"}


def test_async_hooks_are_awaited(peer_for):
    peer = peer_for("""
        import asyncio
        class P:
            meta = {"name": "aio"}
            async def run(self, n):
                await asyncio.sleep(0)
                return n * 2
        plugin = P()
    """)
    peer.load()
    assert peer.wait_response(peer.request("run", {"args": {"n": 21}}))["result"] == 42


def test_pydantic_models_validate_and_fill_defaults(peer_for):
    pytest.importorskip("pydantic")
    peer = peer_for("""
        from pydantic import BaseModel
        class Args(BaseModel):
            n: int
            label: str = "none"
        class P:
            meta = {"name": "pyd", "inputs": {"schema": Args}}
            def run(self, n, label):
                return [n, label]
        plugin = P()
    """)
    peer.load()
    ok = peer.wait_response(peer.request("run", {"args": {"n": 1}, "pydantic": True}))
    assert ok["result"] == [1, "none"]
    bad = peer.wait_response(peer.request("run", {"args": {"n": "x"}, "pydantic": True}))["error"]
    assert bad["kind"] == "validation" and "argument 'n'" in bad["message"]


def test_shutdown_exits_zero_and_garbage_exits_three(peer_for):
    peer = peer_for(ECHO)
    peer.wait_response(peer.request("shutdown"))
    assert peer.proc.wait(5) == 0
    peer = peer_for(ECHO)
    peer.sock.sendall(b"\x00\x00\x00\x05notjs")
    assert peer.proc.wait(5) == 3
    assert b"invalid JSON frame" in peer.proc.stderr.read()


def test_overlapping_requests_never_wait_behind_each_other(peer_for):
    peer = peer_for("""
        import threading, time
        GATE = threading.Event()
        STARTED = []
        class P:
            meta = {"name": "gate"}
            def run(self, op):
                if op == "wait":
                    STARTED.append(1)
                    return GATE.wait(10)
                deadline = time.monotonic() + 5
                while len(STARTED) < 3 and time.monotonic() < deadline:
                    time.sleep(0.01)
                GATE.set()
                return "opened" if len(STARTED) == 3 else "a waiter never started"
        plugin = P()
    """)
    peer.load()
    # Three blocked requests at once, then the one that frees them: each
    # must get a thread of its own, whatever the timing.
    first = peer.request("run", {"args": {"op": "wait"}})
    waits = [peer.request("run", {"args": {"op": "wait"}}, side=True) for _ in range(2)]
    opener = peer.request("run", {"args": {"op": "open"}}, side=True)
    answers = {}
    while len(answers) < 4:
        message = peer.read()
        answers[message["id"]] = message["result"]
    assert answers == {first: True, waits[0]: True, waits[1]: True, opener: "opened"}


def test_progress_reports_are_notifications_naming_their_request(peer_for):
    peer = peer_for("""
        import greffon
        class P:
            meta = {"name": "prog"}
            def run(self):
                greffon.progress(1, 2, "half")
                greffon.progress(0.5)
                return "done"
        plugin = P()
    """)
    peer.load()
    notes = []
    rid = peer.request("run", {"args": {}})
    assert peer.wait_response(rid, notes)["result"] == "done"
    assert notes == [
        {"method": "progress", "params": {"id": rid, "progress": 1, "total": 2, "message": "half"}},
        {"method": "progress", "params": {"id": rid, "progress": 0.5}},
    ]


SLEEPER = """
    import time
    class P:
        meta = {"name": "sleeper"}
        def run(self, s):
            try:
                time.sleep(s)
                return "slept"
            except Exception:
                return "swallowed"
    plugin = P()
"""


def test_a_cancelled_call_on_the_main_thread_is_interrupted_even_in_a_sleep(peer_for):
    peer = peer_for(SLEEPER)
    peer.load()
    rid = peer.request("run", {"args": {"s": 30}})
    # The host cancels on the side channel: the main thread is busy.
    peer.send({"method": "cancel", "params": {"id": rid}}, side=True)
    response = peer.wait_response(rid)
    # Not caught by the plugin's `except Exception`.
    assert response["error"]["kind"] == "cancelled"
    # The worker serves the next call.
    assert peer.wait_response(peer.request("run", {"args": {"s": 0}}))["result"] == "slept"


def test_a_cancel_for_another_request_changes_nothing(peer_for):
    peer = peer_for(SLEEPER)
    peer.load()
    rid = peer.request("run", {"args": {"s": 0.3}})
    peer.send({"method": "cancel", "params": {"id": rid + 100}}, side=True)
    assert peer.wait_response(rid)["result"] == "slept"
