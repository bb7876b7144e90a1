"""Scheduled tasks: the host's scheduler, for plugins (``greffon.tasks``).

No permission is needed; the host audits every call. A task is named by
its id (an int) or its name::

    from greffon import tasks

    t = tasks.create("backup", "sync", {"kind": "cron", "expr": "0 3 * * *"}, args={"dest": "nas"})
    tasks.update("backup", enabled=False)
    run = tasks.run_now("backup")          # waits for the run; its status and result
    tasks.runs("backup", limit=5)

Triggers: ``{"kind": "cron", "expr": "30 2 * * *", "tz": "Europe/Paris"}``
(``tz`` defaults to the host's zone), ``{"kind": "interval", "every_s": 3600}``,
``{"kind": "date", "at": "2026-12-01T09:00:00+01:00"}``. Options: ``enabled``,
``coalesce`` (latest, earliest, all), ``misfire_grace_s``, ``max_instances``,
``jitter_s``, ``timeout_s``, ``retries`` and ``retry_backoff_s`` (a scheduled
run that failed, timed out or was lost is tried again, the wait doubling).

Failures raise ``TaskError``; its ``kind`` is ``validation`` (the message
names the field), ``not_found`` or ``conflict``.
"""

from greffon import _runtime

__all__ = ["TaskError", "create", "delete", "get", "list", "next", "run_now", "runs", "update"]


class TaskError(Exception):
    """The scheduler refused or failed; ``kind`` says how."""

    def __init__(self, message, kind):
        super().__init__(message)
        self.kind = kind


def _call(method, params):
    try:
        return _runtime.call(f"tasks.{method}", params)
    except _runtime.HostError as e:
        raise TaskError(str(e), e.kind) from None


def create(name, plugin, trigger, args=None, **options):
    """Saves a task and returns it (with ``id`` and ``next_run_at``)."""
    return _call("create", {"name": name, "plugin": plugin, "trigger": trigger, "args": args or {}, **options})


def update(task, **changes):
    """Changes some fields; a new ``trigger`` restarts the schedule."""
    return _call("update", {"task": task, "changes": changes})


def delete(task):
    """Deletes the task and its runs; returns the deleted task."""
    return _call("delete", {"task": task})


def get(task):
    return _call("get", {"task": task})


def list():  # noqa: A001 - the module is used as ``tasks.list()``
    return _call("list", {})


def run_now(task, force=False):
    """Runs the task now (the schedule does not move) and returns the run."""
    return _call("run_now", {"task": task, "force": force})


def runs(task, limit=20):
    """The most recent runs, newest first."""
    return _call("runs", {"task": task, "limit": limit})


def next(task, n=5):  # noqa: A001
    """The next ``n`` fire times (ISO 8601, UTC)."""
    return _call("next", {"task": task, "n": n})
