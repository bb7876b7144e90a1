"""State shared by the worker and the SDK modules of one worker process.

Outside a worker (a plugin imported by its own unit tests) ``channel`` stays
``None``: host services then raise ``NotInWorker`` and logging falls back to
the standard library's handlers.
"""

import json
import threading

#: The connection to the host, set by ``greffon.worker`` at start.
channel = None

#: The plugin's ``[plugins.NAME.config]`` table, set at load.
plugin_config = {}

#: The plugin's registry name, set once its meta has been read.
plugin_name = None

#: Per-thread call context (output capture), set while a request is served.
local = threading.local()


class NotInWorker(RuntimeError):
    """A host service was called outside a greffon worker."""


class HostError(RuntimeError):
    """A host service answered an error."""

    def __init__(self, message, kind="host_service"):
        super().__init__(message)
        self.kind = kind


def call(method, params=None, timeout=None):
    """Calls a host service and returns its result (raises ``HostError``)."""
    if channel is None:
        raise NotInWorker(f"{method}() is only available inside a greffon worker")
    on_main = getattr(local, "on_main", False)
    return channel.call(method, params if params is not None else {}, timeout, on_main)


def dumps(obj):
    """Compact, strict JSON (NaN and infinities are refused, as in JSON)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
