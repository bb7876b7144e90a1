"""A working plugin to copy: `greffon plugin scaffold NAME` starts from here.

The contract, in short:
- `plugin = Plugin()` at module level, with a `meta` dict;
- `start()` and `stop()` are optional and run when the plugin is enabled
  and disabled (or the host shuts down);
- `run(**kwargs)` does the work. The host has already checked the
  arguments against `inputs.schema` and filled in defaults, so `run` gets
  exactly the declared fields;
- expected failures are *returned* as `{"error": "..."}`; an unexpected
  exception is caught by the host, answered as an error and written to a
  crash dump, but a clear message is kinder to the caller.

Importing this file must be cheap and side-effect free: the host imports
it, with no permission at all, just to read `meta`. Put real work in
`start()`.
"""

from greffon.log import get_logger

log = get_logger("plugin")


class Plugin:
    meta = {
        "name": "_template",
        "description": "Greets someone; a template for new plugins.",
        # What the plugin may do beyond computing: net, fs_read, fs_write,
        # process. Ask for nothing you do not need: the kernel refuses the
        # rest (no socket, no file outside the grant, no exec).
        "permissions": [],
        # With "net": the hosts greffon.http may reach, e.g.
        # "allowlist_domains": ["api.example.com"],
        # With "fs_read" / "fs_write": the folders, relative to the greffon
        # home (default: data/<name>/), e.g.
        # "paths": {"read": ["data/shared"], "write": ["data/_template"]},
        # Optional limits (defaults: 2048 MiB, 3600 CPU s, 256 files):
        # "limits": {"memory_mb": 256},
        # The simplified schema: {field: type name or JSON Schema fragment}.
        # A field without "default" is required unless it says
        # "required": False.
        "inputs": {
            "schema": {
                "name": {"type": "string", "minLength": 1, "description": "who to greet"},
                "times": {"type": "integer", "default": 1, "minimum": 1, "maximum": 10},
                "shout": {"type": "boolean", "required": False},
            }
        },
        # Or a Pydantic model (declare `pydantic` in requirements.txt next
        # to this file, or use an interpreter that has it): the host checks
        # its JSON Schema, and run() gets the model's fields.
        #     from pydantic import BaseModel, Field
        #     class Inputs(BaseModel):
        #         name: str = Field(min_length=1, description="who to greet")
        #         times: int = Field(1, ge=1, le=10)
        #     "inputs": {"schema": Inputs},
        # Seconds a call may take before the host answers a timeout.
        "timeout": 10,
    }

    def __init__(self):
        self.greetings = None

    def start(self):
        # Allocate what every call needs once, here rather than at import.
        self.greetings = 0
        log.info("started")

    def stop(self):
        log.info("stopped after %s greetings", self.greetings)

    def run(self, name, times=1, shout=False):
        if name.strip() == "":
            return {"error": "name must not be blank"}
        text = " ".join([f"Hello, {name}!"] * times)
        self.greetings += 1
        return {"greeting": text.upper() if shout else text, "count": self.greetings}


plugin = Plugin()
