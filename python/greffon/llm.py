"""The local LLM, through the host (``greffon.LLM``; also ``app.core.llm.LLM``).

The model runs in greffon, not in the worker: a plugin needs no
permission to use it, and with the embedded llama.cpp backend nothing
leaves the machine::

    from greffon import LLM

    text = LLM().infer("What is the capital of France?", {"max_tokens": 32})
    answer = LLM().complete("Name three rivers.", {"temperature": 0.7, "seed": 1})
    answer["text"], answer["finish_reason"], answer["completion_tokens"]

Options: ``max_tokens`` (256), ``temperature`` (0: greedy; up to 2),
``top_p`` (0.95), ``top_k`` (40; 0 = off), ``seed``, ``repeat_penalty``
(1 = off), ``stop`` (a list of strings), ``system``. Unknown options and
bad values raise ``LLMError`` naming the option; so do a missing model
(with the command that gets it), a full queue and a timeout.
"""

from greffon import _runtime

__all__ = ["LLM", "LLMError"]


class LLMError(Exception):
    """The LLM refused or failed; ``kind`` is ``validation``, ``timeout``
    or ``host_service``."""

    def __init__(self, message, kind):
        super().__init__(message)
        self.kind = kind


class LLM:
    """The host's model. Cheap to create: every instance uses the same one."""

    def complete(self, prompt, options=None):
        """The full answer: ``text``, ``finish_reason`` (stop, length,
        stop_string), ``model``, ``prompt_tokens``, ``completion_tokens``,
        ``queue_ms``, ``prompt_ms``, ``generation_ms``, ``first_token_ms``."""
        if not isinstance(prompt, str):
            raise LLMError("prompt must be a string", "validation")
        if options is not None and not isinstance(options, dict):
            raise LLMError("options must be a dict", "validation")
        params = {"prompt": prompt, "options": options or {}}
        # The call's remaining time bounds the request: when the plugin's
        # call times out, the host cancels the generation.
        deadline = getattr(_runtime.local, "deadline", None)
        if deadline is not None:
            import time

            params["timeout"] = max(deadline - time.monotonic(), 0.001)
        try:
            return _runtime.call("llm.infer", params)
        except _runtime.HostError as e:
            raise LLMError(str(e), e.kind) from None

    def infer(self, prompt, options=None):
        """The answer's text (the original contract's call)."""
        return self.complete(prompt, options)["text"]
