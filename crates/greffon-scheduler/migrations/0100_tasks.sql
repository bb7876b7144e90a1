-- Scheduled tasks and their runs. Instants are UTC milliseconds since the
-- epoch (INTEGER), so "what is due" is an indexed integer comparison.
CREATE TABLE tasks (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT    NOT NULL UNIQUE,
    plugin          TEXT    NOT NULL,
    args            TEXT    NOT NULL,          -- JSON object
    trigger         TEXT    NOT NULL,          -- JSON: {"kind": "cron" | "interval" | "date", ...}
    enabled         INTEGER NOT NULL,
    coalesce        TEXT    NOT NULL,          -- latest | earliest | all
    misfire_grace_s REAL,                      -- NULL: a late fire always runs
    max_instances   INTEGER NOT NULL,
    jitter_s        REAL    NOT NULL,
    timeout_s       REAL,                      -- NULL: the plugin's own timeout
    next_run_at     INTEGER,                   -- NULL: nothing left to fire
    last_run_at     INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

CREATE INDEX tasks_due ON tasks (next_run_at) WHERE enabled = 1 AND next_run_at IS NOT NULL;

CREATE TABLE task_runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id       INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    kind          TEXT    NOT NULL,            -- scheduled | manual
    scheduled_for INTEGER,                     -- the fire time (manual: the request time)
    started_at    INTEGER,
    finished_at   INTEGER,
    status        TEXT    NOT NULL,            -- running | ok | error | missed | timed_out
    owner         TEXT,                        -- the process running it: host:pid:start
    result        TEXT,                        -- JSON
    error         TEXT
);

CREATE INDEX task_runs_by_task ON task_runs (task_id, id);
CREATE INDEX task_runs_running ON task_runs (status) WHERE status = 'running';
