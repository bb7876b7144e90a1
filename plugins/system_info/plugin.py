"""Facts about the machine: OS, kernel, hostname, CPU, RAM, GPUs, Python.

The host gathers them (`greffon.system.info()`), so this plugin needs no
permission: it cannot read /proc or /sys itself once sandboxed, and does
not have to.
"""

from greffon import system

SECTIONS = ("os", "kernel", "hostname", "cpu", "memory", "gpus", "python")


class Plugin:
    meta = {
        "name": "system_info",
        "description": "Returns OS, kernel, hostname, CPU, RAM, GPUs and Python version.",
        "permissions": [],
        "inputs": {
            "schema": {
                "only": {
                    "type": "array",
                    "items": {"type": "string", "enum": list(SECTIONS)},
                    "uniqueItems": True,
                    "required": False,
                    "description": "return only these sections",
                }
            }
        },
        "timeout": 5,
    }

    def run(self, only=None):
        facts = system.info()
        if only:
            return {key: facts[key] for key in only if key in facts}
        return facts


plugin = Plugin()
