"""Scheduled tasks from a plugin call: a CRUD bridge to greffon's scheduler.

`action` is one of create, update, delete, run_now, list, get; the other
fields are what that action needs. The work is done by the host's
scheduler through `greffon.tasks` (no permission needed; the host audits
every call), so a task created here is the same as one created with
`greffon task create` or `POST /v1/tasks`.

A trigger is given either whole (`trigger`) or by one of its shortcuts:
`cron` (+ `tz`), `every_s`, `at`.
"""

from greffon import tasks

ACTIONS = ("create", "update", "delete", "run_now", "list", "get")
OPTIONS = (
    "enabled",
    "coalesce",
    "misfire_grace_s",
    "max_instances",
    "jitter_s",
    "timeout_s",
    "retries",
    "retry_backoff_s",
)
# What each action needs besides `action`.
NEEDS = {"create": ("name", "plugin"), "update": ("task",), "delete": ("task",), "run_now": ("task",), "get": ("task",)}


class Plugin:
    meta = {
        "name": "tasks",
        "description": "Creates, changes, deletes, lists and runs scheduled tasks.",
        "permissions": [],
        "inputs": {
            "schema": {
                "action": {"type": "string", "enum": list(ACTIONS)},
                "task": {"type": ["integer", "string"], "required": False, "description": "id or name"},
                "name": {"type": "string", "minLength": 1, "maxLength": 100, "required": False},
                "plugin": {"type": "string", "minLength": 1, "required": False},
                "args": {"type": "object", "required": False, "description": "the plugin's arguments"},
                "trigger": {"type": "object", "required": False, "description": "{kind: cron|interval|date, ...}"},
                "cron": {"type": "string", "required": False, "description": "shortcut for a cron trigger"},
                "tz": {"type": "string", "required": False, "description": "IANA zone of `cron`"},
                "every_s": {"type": "integer", "minimum": 1, "required": False},
                "at": {"type": "string", "required": False, "description": "RFC 3339 time of a one-shot"},
                "enabled": {"type": "boolean", "required": False},
                "coalesce": {"type": "string", "enum": ["latest", "earliest", "all"], "required": False},
                "misfire_grace_s": {"type": ["number", "null"], "minimum": 0, "required": False},
                "max_instances": {"type": "integer", "minimum": 1, "required": False},
                "jitter_s": {"type": "number", "minimum": 0, "required": False},
                "timeout_s": {"type": ["number", "null"], "exclusiveMinimum": 0, "required": False},
                "retries": {"type": "integer", "minimum": 0, "maximum": 100, "required": False},
                "retry_backoff_s": {"type": "number", "minimum": 0, "required": False},
                "force": {"type": "boolean", "default": False, "description": "run_now beyond max_instances"},
            }
        },
        # run_now waits for the run it starts.
        "timeout": 120,
    }

    def run(self, action, force=False, **fields):
        missing = [f for f in NEEDS.get(action, ()) if f not in fields]
        if missing:
            return {"error": f"action '{action}' needs '{missing[0]}'"}
        try:
            trigger = self.trigger(fields)
        except ValueError as e:
            return {"error": str(e)}
        if action == "create" and trigger is None:
            return {"error": "action 'create' needs a trigger: 'trigger', 'cron', 'every_s' or 'at'"}
        options = {k: fields[k] for k in OPTIONS if k in fields}
        try:
            if action == "create":
                return tasks.create(fields["name"], fields["plugin"], trigger, args=fields.get("args"), **options)
            if action == "update":
                changes = dict(options)
                for key in ("name", "plugin", "args"):
                    if key in fields:
                        changes[key] = fields[key]
                if trigger is not None:
                    changes["trigger"] = trigger
                return tasks.update(fields["task"], **changes)
            if action == "delete":
                return tasks.delete(fields["task"])
            if action == "run_now":
                return tasks.run_now(fields["task"], force=force)
            if action == "get":
                return tasks.get(fields["task"])
            return {"tasks": tasks.list()}
        except tasks.TaskError as e:
            return {"error": str(e)}

    @staticmethod
    def trigger(fields):
        """The trigger from `trigger` or one shortcut; None when none is given."""
        given = [k for k in ("trigger", "cron", "every_s", "at") if k in fields]
        if len(given) > 1:
            raise ValueError(f"give one trigger, not {' and '.join(repr(g) for g in given)}")
        if "tz" in fields and "cron" not in fields:
            raise ValueError("'tz' goes with 'cron'")
        if not given:
            return None
        if given[0] == "trigger":
            return fields["trigger"]
        if given[0] == "cron":
            trigger = {"kind": "cron", "expr": fields["cron"]}
            if "tz" in fields:
                trigger["tz"] = fields["tz"]
            return trigger
        if given[0] == "every_s":
            return {"kind": "interval", "every_s": fields["every_s"]}
        return {"kind": "date", "at": fields["at"]}


plugin = Plugin()
