"""Facts about the machine, gathered by the host (no permission needed)."""

from greffon import _runtime


def info():
    """OS, kernel, hostname, CPU, RAM, GPUs and the worker's Python version."""
    return _runtime.call("system.info")
