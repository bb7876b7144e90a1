"""The worker process: serves one plugin to the host over fds 3 and 4.

Started by the host as ``python -I -B -c <bootstrap> <sdk dir>``; speaks
the framed protocol of ``greffon._channel``. The main thread serves the
requests of the main channel itself, one at a time, with no hand-off
between threads; a side thread reads the side channel, where the host puts
requests that overlap a running one (handed to a pool of threads) and its
answers to the plugin's host calls (so a plugin may call the host
mid-call, whichever thread it runs on).
"""

# Imports are kept to what every worker needs: a worker's start-up is on
# the path from enable to first call (asyncio, inspect, platform and
# traceback alone cost tens of milliseconds).
import importlib.util
import io
import os
import queue
import signal
import socket
import sys
import threading
import time
import types


from greffon import _runtime
from greffon._channel import Channel, ProtocolError
from greffon._runtime import dumps

PROTOCOL_VERSION = 1

#: Python types an author may write in a simplified schema, as JSON types.
PY_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object", type(None): "null"}


class Cancelled(BaseException):
    """Raised in a call its caller cancelled. A BaseException, like
    KeyboardInterrupt, so that a plugin's ``except Exception`` does not
    swallow it."""


class WorkerError(Exception):
    """An error with a protocol kind, answered as such."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


class CallContext:
    """What one request printed, bounded: past ``limit`` characters only
    the count is kept, so a plugin printing megabytes costs no memory."""

    __slots__ = ("limit", "kept", "dropped", "stdout", "stderr")

    def __init__(self, limit):
        self.limit = limit
        self.kept = 0
        self.dropped = 0
        self.stdout = None
        self.stderr = None

    def write(self, stream, text):
        room = self.limit - self.kept
        if room > 0:
            piece = text[:room]
            parts = getattr(self, stream)
            if parts is None:
                parts = []
                setattr(self, stream, parts)
            parts.append(piece)
            self.kept += len(piece)
            self.dropped += len(text) - len(piece)
        else:
            self.dropped += len(text)
        return len(text)

    def output(self):
        return {
            "stdout": "".join(self.stdout or ()),
            "stderr": "".join(self.stderr or ()),
            "dropped": self.dropped,
        }

    def encoded(self):
        """``,"output":{...}`` for the response frame; nothing when the
        request printed nothing (the common, fast case)."""
        if self.kept == 0 and self.dropped == 0:
            return b""
        return b',"output":' + dumps(self.output()).encode("utf-8")


class Capture(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr: writes made while a request is
    served go to that request's context; others to the real stream, which
    the host reads from the worker's pipes."""

    def __init__(self, stream, fallback):
        self._stream = stream
        self._fallback = fallback

    def write(self, text):
        ctx = getattr(_runtime.local, "ctx", None)
        if ctx is None:
            return self._fallback.write(text)
        return ctx.write(self._stream, str(text))

    def flush(self):
        self._fallback.flush()

    def fileno(self):
        return self._fallback.fileno()

    def isatty(self):
        return False

    def writable(self):
        return True

    @property
    def encoding(self):
        return "utf-8"


def json_safe(value):
    """``meta`` made JSON-safe: Pydantic classes and builtin types are
    marked for the host to judge; anything else unrepresentable becomes
    ``{"$unsupported": <type>}`` rather than an error here."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if isinstance(value, type):
        if value in PY_TYPES:
            return PY_TYPES[value]
        if callable(getattr(value, "model_json_schema", None)):
            return {"$pydantic": {"name": value.__name__, "schema": value.model_json_schema()}}
        return {"$unsupported": f"class {value.__name__}"}
    return {"$unsupported": type(value).__name__}


def schema_model(meta):
    """The Pydantic model class of ``inputs.schema``, if that is what it is."""
    inputs = meta.get("inputs")
    schema = inputs.get("schema") if isinstance(inputs, dict) else meta.get("inputs.schema")
    if isinstance(schema, type) and callable(getattr(schema, "model_validate", None)):
        return schema
    return None


class Worker:
    def __init__(self, channel):
        self.channel = channel
        self.plugin = None
        self.model = None
        self.capture_limit = 64 << 10
        self.max_result = 16 << 20
        self.handlers = {
            "load": self.load,
            "start": lambda _params: self.hook("start"),
            "stop": lambda _params: self.hook("stop"),
            "run": self.run,
            "shutdown": lambda _params: None,
        }
        self.queue = queue.SimpleQueue()
        self.count_lock = threading.Lock()
        # Handler threads free to take a request from the queue.
        self.idle = 0
        # The id of the request the main thread is serving, and the ids the
        # host cancelled: the signal handler interrupts the main thread
        # only for the request that was cancelled.
        self.main_request = None
        self.cancelled = set()

    # -- request handlers -------------------------------------------------

    def load(self, params):
        path = params["path"]
        _runtime.plugin_config = params.get("config") or {}
        self.capture_limit = int(params.get("capture_limit", self.capture_limit))
        self.max_result = int(params.get("max_result_bytes", self.max_result))
        folder = os.path.dirname(path)
        # Sibling modules of plugin.py import as they would in the original.
        sys.path.insert(0, folder)
        sys.argv = [path]
        name = "greffon_plugin_" + params["folder"].replace("-", "_")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        plugin = getattr(module, "plugin", None)
        result = {"has_plugin": plugin is not None, "meta": None, "meta_type": None, "has_run": False}
        if plugin is None:
            return result
        self.plugin = plugin
        meta = getattr(plugin, "meta", None)
        if isinstance(meta, dict):
            result["meta"] = json_safe(meta)
            self.model = schema_model(meta)
            if isinstance(meta.get("name"), str):
                _runtime.plugin_name = meta["name"]
        elif meta is not None:
            result["meta_type"] = type(meta).__name__
        result["has_run"] = callable(getattr(plugin, "run", None))
        return result

    def hook(self, name):
        if self.plugin is None:
            raise WorkerError("protocol", "no plugin loaded")
        fn = getattr(self.plugin, name, None)
        if callable(fn):
            awaited(fn())
        return None

    def run(self, params):
        if self.plugin is None:
            raise WorkerError("protocol", "no plugin loaded")
        args = params.get("args") or {}
        timeout_ms = params.get("timeout_ms")
        if timeout_ms:
            _runtime.local.deadline = time.monotonic() + timeout_ms / 1000
        if params.get("pydantic") and self.model is not None:
            args = self.validate_with_model(args)
        return awaited(self.plugin.run(**args))

    def validate_with_model(self, args):
        try:
            return self.model.model_validate(args).model_dump()
        except Exception as e:  # pydantic.ValidationError without importing pydantic here
            errors = getattr(e, "errors", None)
            if not callable(errors):
                raise
            parts = []
            for err in errors():
                field = ".".join(str(p) for p in err.get("loc", ())) or "arguments"
                parts.append(f"argument '{field}': {err.get('msg')} (rule: {err.get('type')})")
            raise WorkerError("validation", "; ".join(parts)) from None

    # -- serving ----------------------------------------------------------

    def handle(self, message):
        request_id = message.get("id")
        if request_id is None:
            return  # host notifications carry nothing the worker must act on yet
        method = message.get("method")
        handler = self.handlers.get(method)
        ctx = CallContext(self.capture_limit)
        local = _runtime.local
        local.ctx = ctx
        local.request_id = request_id
        on_main = getattr(local, "on_main", False)
        try:
            if handler is None:
                raise WorkerError("unknown_method", f"unknown method {method!r}")
            if not on_main:
                result = handler(message.get("params") or {})
            else:
                self.main_request = request_id
                try:
                    # A cancel read before this request started.
                    if request_id in self.cancelled:
                        raise Cancelled()
                    result = handler(message.get("params") or {})
                finally:
                    self.main_request = None
            frame = b'{"id":%d,"result":%s' % (request_id, self.encode_result(method, result))
        except Cancelled:
            frame = b'{"id":%d,"error":%s' % (request_id, dumps({"kind": "cancelled", "message": "cancelled by the caller"}).encode("utf-8"))
        except WorkerError as e:
            frame = b'{"id":%d,"error":%s' % (request_id, dumps({"kind": e.kind, "message": str(e)}).encode("utf-8"))
        except BaseException as e:  # the plugin's failure is reported, never fatal
            error = {
                "kind": "exception",
                "type": type(e).__name__,
                "message": str(e),
                "traceback": format_exc(),
            }
            frame = b'{"id":%d,"error":%s' % (request_id, dumps(error).encode("utf-8"))
        finally:
            local.ctx = None
            local.deadline = None
            local.request_id = None
            self.cancelled.discard(request_id)
        self.channel.send_bytes(frame + ctx.encoded() + b"}")
        if method == "shutdown":
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    def encode_result(self, method, result):
        try:
            body = dumps(result).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise WorkerError("not_serializable", f"the result of {method}() is not JSON-serializable: {e}") from None
        if len(body) > self.max_result:
            raise WorkerError("too_large", f"the result of {method}() is {len(body)} bytes, over the limit of {self.max_result} bytes (max_result_bytes)")
        return body

    def serve(self):
        """The main thread: serves each request of the main channel itself
        (the host sends one there only while the previous is answered), so
        the common call costs no hand-off between threads."""
        signal.signal(signal.SIGUSR1, self.on_cancel_signal)
        threading.Thread(target=self.serve_side, daemon=True).start()
        # Host calls made by this thread read their answer on the main
        # channel (see Channel.call).
        _runtime.local.on_main = True
        self.loop(self.channel.main, self.handle)

    def serve_side(self):
        """The side channel: overlapping requests go to handler threads;
        answers to host calls go to the threads waiting for them."""
        self.loop(self.channel.side, self.dispatch)

    def cancel(self, request_id):
        """The host gave up on a request. The main thread is interrupted
        with a signal (which also wakes it from a blocking sleep or
        read); a handler thread cannot be, and is left to finish or to be
        killed with the worker after the host's grace."""
        self.cancelled.add(request_id)
        if self.main_request == request_id:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)

    def on_cancel_signal(self, _signum, _frame):
        request_id = self.main_request
        if request_id is not None and request_id in self.cancelled:
            raise Cancelled()

    def loop(self, reader, on_request):
        while True:
            try:
                message = reader.read()
            except ProtocolError as e:
                print(f"greffon worker: {e}", file=sys.__stderr__, flush=True)
                os._exit(3)
            if message is None:
                os._exit(0)  # the host has gone
            if "method" not in message:
                self.channel.resolve(message)
            else:
                on_request(message)

    def dispatch(self, message):
        if message.get("method") == "cancel" and "id" not in message:
            request_id = (message.get("params") or {}).get("id")
            if isinstance(request_id, int):
                self.cancel(request_id)
            return
        # Each queued request reserves a thread before it is queued: an idle
        # one, or a new one. Counting a thread idle until it has picked a
        # request up would let two requests share one thread, the second
        # waiting behind the first however long it runs.
        with self.count_lock:
            reserved = self.idle > 0
            if reserved:
                self.idle -= 1
        if not reserved:
            threading.Thread(target=self.handler_loop, daemon=True).start()
        self.queue.put(message)

    def handler_loop(self):
        while True:
            self.handle(self.queue.get())
            with self.count_lock:
                self.idle += 1


def awaited(value):
    """Runs a coroutine returned by an ``async def`` hook to completion."""
    if isinstance(value, types.CoroutineType):
        import asyncio

        return asyncio.run(value)
    return value


def format_exc():
    import traceback

    return traceback.format_exc()


def main():
    channel = Channel(socket.socket(fileno=3), socket.socket(fileno=4))
    _runtime.channel = channel
    # Output written outside a call goes straight to the host's pipes, line
    # by line, so a crash dump holds what was printed just before it.
    sys.stdout.reconfigure(line_buffering=True)
    sys.stdout = Capture("stdout", sys.stdout)
    sys.stderr = Capture("stderr", sys.stderr)
    python = "%d.%d.%d" % sys.version_info[:3]
    channel.notify("hello", {"protocol": PROTOCOL_VERSION, "python": python, "pid": os.getpid()})
    Worker(channel).serve()


if __name__ == "__main__":
    main()
