"""The greffon SDK: what a plugin may import from its host.

- ``greffon.config()``: the plugin's ``[plugins.NAME.config]`` table.
- ``greffon.log.get_logger(category)``: logs into the host's categories.
- ``greffon.system.info()``: facts about the machine.
- ``greffon.http``: HTTP through the host, within the plugin's allowlist.
- ``greffon.tasks``: the host's scheduler (create, update, run_now...).
- ``greffon.LLM``: the local model (``LLM().infer(prompt, options)``).
- ``greffon.progress(done, total=None, message=None)``: how far a long
  ``run`` has got, shown to an MCP client that asked for progress.
- ``greffon.secret(name)``: the value of a secret the plugin declares in
  ``meta["secrets"]`` (set with ``greffon secret set PLUGIN NAME``).
"""

from greffon import _runtime
from greffon._runtime import HostError, NotInWorker

__all__ = ["LLM", "HostError", "NotInWorker", "config", "http", "log", "progress", "secret", "system", "tasks"]


def config():
    """A copy of the plugin's ``[plugins.NAME.config]`` table ({} if none)."""
    import copy

    return copy.deepcopy(_runtime.plugin_config)


def progress(done, total=None, message=None):
    """Reports how far the current ``run`` has got: ``done`` out of
    ``total`` (either a count or a fraction), with an optional message.
    The host forwards it to a caller that asked for progress (an MCP
    client's progress token) and drops it otherwise; outside a call, or
    outside a worker, it does nothing (after checking its arguments, so a
    plugin's own tests catch a mistake). Never blocks on the caller."""
    if isinstance(done, bool) or not isinstance(done, (int, float)):
        raise TypeError(f"progress(): done must be a number, not {type(done).__name__}")
    if total is not None and (isinstance(total, bool) or not isinstance(total, (int, float))):
        raise TypeError(f"progress(): total must be a number or None, not {type(total).__name__}")
    request_id = getattr(_runtime.local, "request_id", None)
    if _runtime.channel is None or request_id is None:
        return
    params = {"id": request_id, "progress": done}
    if total is not None:
        params["total"] = total
    if message is not None:
        params["message"] = str(message)
    _runtime.channel.notify("progress", params)


def secret(name):
    """The value of the secret ``name``, asked from the host each time (a
    value set while the plugin runs is seen at once). Only a name listed in
    ``meta["secrets"]`` can be read, and only once it is set: otherwise
    ``HostError`` (``kind`` ``permission_denied`` or ``not_found``) names
    it. The host hides the value in crash dumps, logs and its own error
    messages; do not return it or write it to files yourself."""
    if not isinstance(name, str):
        raise TypeError(f"secret(): name must be a string, not {type(name).__name__}")
    return _runtime.call("secret.get", {"name": name})


def __getattr__(name):
    # Submodules load on first use: a worker whose plugin does not log does
    # not pay for importing logging.
    if name == "LLM":
        from greffon.llm import LLM

        return LLM
    if name in ("http", "llm", "log", "system", "tasks"):
        import importlib

        return importlib.import_module(f"greffon.{name}")
    raise AttributeError(f"module 'greffon' has no attribute {name!r}")
