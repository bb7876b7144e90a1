"""``app.core.logger`` of the original contract, backed by ``greffon.log``."""

from greffon.log import CATEGORIES, get_logger

#: The plugin category's logger, for ``from app.core.logger import logger``.
logger = get_logger("plugin")

__all__ = ["CATEGORIES", "get_logger", "logger"]
