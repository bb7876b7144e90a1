-- Scheduled tasks and their runs, shared by several greffon hosts.
-- Instants are UTC milliseconds since the epoch (BIGINT), as in the SQLite
-- store, so both apply the same scheduling arithmetic.
CREATE TABLE tasks (
    id              BIGSERIAL PRIMARY KEY,
    name            TEXT             NOT NULL UNIQUE,
    plugin          TEXT             NOT NULL,
    args            TEXT             NOT NULL,   -- JSON object
    trigger         TEXT             NOT NULL,   -- JSON: {"kind": "cron" | "interval" | "date", ...}
    enabled         BOOLEAN          NOT NULL,
    coalesce        TEXT             NOT NULL,   -- latest | earliest | all
    misfire_grace_s DOUBLE PRECISION,            -- NULL: a late fire always runs
    max_instances   BIGINT           NOT NULL,
    jitter_s        DOUBLE PRECISION NOT NULL,
    timeout_s       DOUBLE PRECISION,            -- NULL: the plugin's own timeout
    retries         BIGINT           NOT NULL DEFAULT 0,
    retry_backoff_s DOUBLE PRECISION NOT NULL DEFAULT 10,
    next_run_at     BIGINT,                      -- NULL: nothing left to fire
    last_run_at     BIGINT,
    created_at      BIGINT           NOT NULL,
    updated_at      BIGINT           NOT NULL
);

CREATE INDEX tasks_due ON tasks (next_run_at) WHERE enabled AND next_run_at IS NOT NULL;

CREATE TABLE task_runs (
    id            BIGSERIAL PRIMARY KEY,
    task_id       BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    kind          TEXT   NOT NULL,               -- scheduled | manual
    scheduled_for BIGINT,                        -- the fire time (manual: the request time)
    started_at    BIGINT,
    finished_at   BIGINT,
    status        TEXT   NOT NULL,               -- pending | running | ok | error | missed | timed_out | lost
    owner         TEXT,                          -- the process running it: host:pid:start
    attempt       BIGINT NOT NULL DEFAULT 1,
    retry_at      BIGINT,                        -- a pending retry's start
    lease_until   BIGINT,                        -- a running run's owner holds it until then
    result        TEXT,                          -- JSON
    error         TEXT
);

CREATE INDEX task_runs_by_task ON task_runs (task_id, id);
CREATE INDEX task_runs_running ON task_runs (lease_until) WHERE status = 'running';
CREATE INDEX task_runs_pending ON task_runs (retry_at) WHERE status = 'pending';
-- One run per fire and attempt, whichever host claims it.
CREATE UNIQUE INDEX task_runs_one_per_fire ON task_runs (task_id, scheduled_for, attempt)
    WHERE kind = 'scheduled';

-- The hosts using this database and their clocks, for `greffon doctor`.
CREATE TABLE scheduler_hosts (
    owner      TEXT   PRIMARY KEY,
    host_clock BIGINT NOT NULL,    -- the host's time at its last heartbeat
    db_clock   BIGINT NOT NULL     -- the database's time then
);
