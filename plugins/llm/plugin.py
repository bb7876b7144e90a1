"""Answers a prompt with the local model: `LLM().infer(prompt, options)`.

No permission at all: the model runs inside greffon (embedded llama.cpp on
a GGUF file by default), so this plugin cannot reach the network or the
disk, and the kernel sandbox proves it. `greffon model pull smollm2`
fetches the default model.
"""

from greffon.llm import LLM, LLMError

OPTIONS = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "system")


class Plugin:
    meta = {
        "name": "llm",
        "description": "Answers a prompt with the local language model.",
        "permissions": [],
        "inputs": {
            "schema": {
                "prompt": {"type": "string", "minLength": 1, "description": "what to ask"},
                "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4096, "required": False},
                "temperature": {"type": "number", "minimum": 0, "maximum": 2, "required": False},
                "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "required": False},
                "top_k": {"type": "integer", "minimum": 0, "required": False},
                "seed": {"type": "integer", "minimum": 0, "maximum": 4294967295, "required": False},
                "stop": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 8, "required": False},
                "system": {"type": "string", "required": False, "description": "the system message"},
            }
        },
        "timeout": 120,
    }

    def run(self, prompt, **options):
        chosen = {k: options[k] for k in OPTIONS if k in options}
        try:
            answer = LLM().complete(prompt, chosen)
        except LLMError as e:
            return {"error": str(e)}
        return answer


plugin = Plugin()
