"""The framed connection to the host: 4-byte big-endian length, then a JSON
object. Requests go both ways and are matched by id.

Two sockets: fd 3 (main) carries everything the worker sends, the host's
requests while the main thread is free, and the answers to host calls the
main thread makes while serving one; fd 4 (side) carries the host's
overlapping requests and its answers to the other threads' host calls.
"""

import itertools
import json
import threading

from greffon._runtime import HostError, dumps

#: Largest frame accepted from the host; its own limits are far below.
MAX_FRAME = 256 << 20


class ProtocolError(Exception):
    """The host sent something that is not a frame."""


class FrameReader:
    """Reads frames from one socket; one thread at a time."""

    def __init__(self, sock):
        self._rfile = sock.makefile("rb", buffering=1 << 16)

    def read(self):
        """Returns the next message, or None when the host has gone."""
        header = self._rfile.read(4)
        if len(header) < 4:
            return None
        size = int.from_bytes(header, "big")
        if size == 0 or size > MAX_FRAME:
            raise ProtocolError(f"frame of {size} bytes refused")
        body = self._rfile.read(size)
        if len(body) < size:
            return None
        try:
            message = json.loads(body)
        except ValueError as e:
            raise ProtocolError(f"invalid JSON frame: {e}") from None
        if not isinstance(message, dict):
            raise ProtocolError("frame is not a JSON object")
        return message


class Channel:
    def __init__(self, sock, side=None):
        self._sock = sock
        self.main = FrameReader(sock)
        self.side = FrameReader(side) if side is not None else None
        self._wlock = threading.Lock()
        self._ids = itertools.count(1)
        # id -> [threading.Event, response dict or None]
        self._pending = {}

    def send_bytes(self, body):
        header = len(body).to_bytes(4, "big")
        with self._wlock:
            self._sock.sendall(header + body)

    def send(self, message):
        self.send_bytes(dumps(message).encode("utf-8"))

    def notify(self, method, params):
        self.send({"method": method, "params": params})


    def call(self, method, params, timeout=None, on_main=False):
        """Sends a request to the host and blocks until its response.

        ``on_main``: the caller is the main thread serving a request of the
        main channel; the host answers there and this thread reads it
        itself, with no hand-off (the host sends nothing else on the main
        channel until that request is answered).
        """
        request_id = next(self._ids)
        if on_main:
            self.send({"id": request_id, "method": method, "params": params, "main": True})
            response = self.main.read()
            if response is None:
                raise HostError(f"the host went away during {method}")
            if response.get("id") != request_id or "method" in response:
                raise ProtocolError(f"expected the answer to {method} on the main channel")
        else:
            slot = [threading.Event(), None]
            self._pending[request_id] = slot
            try:
                self.send({"id": request_id, "method": method, "params": params})
                if not slot[0].wait(timeout):
                    raise TimeoutError(f"host service {method} did not answer within {timeout} s")
            finally:
                self._pending.pop(request_id, None)
            response = slot[1]
        if "error" in response:
            error = response["error"] or {}
            raise HostError(error.get("message", "host service failed"), error.get("kind", "host_service"))
        return response.get("result")

    def resolve(self, response):
        """Hands a response from the host to the thread waiting for it."""
        slot = self._pending.get(response.get("id"))
        if slot is not None:
            slot[1] = response
            slot[0].set()
