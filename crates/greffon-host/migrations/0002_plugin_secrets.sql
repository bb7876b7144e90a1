-- JSON array of the secret names granted at enable: a reload that
-- declares another one waits for the operator, like a new permission.
ALTER TABLE plugins ADD COLUMN secrets TEXT NOT NULL DEFAULT '[]';
