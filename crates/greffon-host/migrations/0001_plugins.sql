-- The enabled set and what each plugin was granted when enabled.
CREATE TABLE plugins (
    name        TEXT PRIMARY KEY NOT NULL,
    enabled     INTEGER NOT NULL,
    -- JSON array of canonical permission names granted at enable.
    permissions TEXT NOT NULL DEFAULT '[]',
    updated_at  TEXT NOT NULL
);
