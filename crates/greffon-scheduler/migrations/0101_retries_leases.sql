-- Retries, leases, and one run per (task, fire, attempt).
ALTER TABLE tasks ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN retry_backoff_s REAL NOT NULL DEFAULT 10;

ALTER TABLE task_runs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
ALTER TABLE task_runs ADD COLUMN retry_at INTEGER;      -- a pending retry's start
ALTER TABLE task_runs ADD COLUMN lease_until INTEGER;   -- a running run's owner holds it until then

-- Runs lost before this version were recorded as errors.
UPDATE task_runs SET status = 'lost' WHERE status = 'error' AND error LIKE 'lost:%';

CREATE UNIQUE INDEX task_runs_one_per_fire ON task_runs (task_id, scheduled_for, attempt)
    WHERE kind = 'scheduled';
CREATE INDEX task_runs_pending ON task_runs (retry_at) WHERE status = 'pending';
