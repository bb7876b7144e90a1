"""Logging into the host's four categories: ``server``, ``plugin``,
``llm`` and ``audit``.

``get_logger(category)`` returns a standard ``logging.Logger``; inside a
worker its records are sent to the host, which writes them as JSON lines to
``<logs_dir>/<category>.log``. Outside a worker they go to stderr.
"""

import logging

from greffon import _runtime

CATEGORIES = ("server", "plugin", "llm", "audit")

#: Longest message sent to the host; the rest is cut, never buffered.
MAX_MESSAGE = 8192


class HostHandler(logging.Handler):
    """Forwards records to the host as ``log`` notifications."""

    def __init__(self, category):
        super().__init__()
        self.category = category

    def emit(self, record):
        channel = _runtime.channel
        if channel is None:
            return
        try:
            message = self.format(record)
            if len(message) > MAX_MESSAGE:
                message = message[:MAX_MESSAGE] + f"... [{len(message) - MAX_MESSAGE} characters cut]"
            channel.notify(
                "log",
                {
                    "category": self.category,
                    "level": record.levelname,
                    "logger": record.name,
                    "message": message,
                },
            )
        except Exception:  # a log call must never break the plugin
            self.handleError(record)


def get_logger(category="plugin"):
    """A logger whose records land in the host's ``category`` log."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown log category {category!r}; expected one of {', '.join(CATEGORIES)}")
    name = f"greffon.{category}"
    if _runtime.plugin_name:
        name += f".{_runtime.plugin_name}"
    logger = logging.getLogger(name)
    if _runtime.channel is not None and not any(isinstance(h, HostHandler) for h in logger.handlers):
        logger.addHandler(HostHandler(category))
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    return logger
