"""Compatibility with the original contract: ``from app.core.llm import LLM``."""

from greffon.llm import LLM, LLMError

__all__ = ["LLM", "LLMError"]
