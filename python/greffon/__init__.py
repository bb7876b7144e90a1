"""The greffon SDK: what a plugin may import from its host.

- ``greffon.config()``: the plugin's ``[plugins.NAME.config]`` table.
- ``greffon.log.get_logger(category)``: logs into the host's categories.
- ``greffon.system.info()``: facts about the machine.
- ``greffon.http``: HTTP through the host, within the plugin's allowlist.
- ``greffon.tasks``: the host's scheduler (create, update, run_now...).
- ``greffon.LLM``: the local model (``LLM().infer(prompt, options)``).
"""

from greffon import _runtime
from greffon._runtime import HostError, NotInWorker

__all__ = ["LLM", "HostError", "NotInWorker", "config", "http", "log", "system", "tasks"]


def config():
    """A copy of the plugin's ``[plugins.NAME.config]`` table ({} if none)."""
    import copy

    return copy.deepcopy(_runtime.plugin_config)


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
