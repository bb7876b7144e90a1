"""The greffon SDK: what a plugin may import from its host.

- ``greffon.config()``: the plugin's ``[plugins.NAME.config]`` table.
- ``greffon.log.get_logger(category)``: logs into the host's categories.
- ``greffon.system.info()``: facts about the machine.
"""

import copy

from greffon import _runtime, log, system
from greffon._runtime import HostError, NotInWorker

__all__ = ["HostError", "NotInWorker", "config", "log", "system"]


def config():
    """A copy of the plugin's ``[plugins.NAME.config]`` table ({} if none)."""
    return copy.deepcopy(_runtime.plugin_config)
