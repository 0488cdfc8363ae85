-- Static roles (existing database users whose passwords Lessor owns and rotates) and the state of
-- admin (root) credential rotation. Times are milliseconds since the Unix epoch (UTC).
--
-- Rotation is two-phase: a new password is sealed into a `pending` column *before* the database
-- is changed, and promoted to `current` only after a login with it succeeded. At every instant the
-- database's password for the user is one of the passwords stored here, so none is ever lost.

CREATE TABLE static_roles (
    name                     TEXT PRIMARY KEY NOT NULL,
    db_name                  TEXT NOT NULL,
    username                 TEXT NOT NULL,
    -- Set for the alternating strategy: the two users take turns, the one not in use is rotated.
    alternate_username       TEXT,
    -- Exactly one of rotation_period_secs and rotation_schedule is set.
    rotation_period_secs     INTEGER,
    rotation_schedule        TEXT,
    rotation_window_secs     INTEGER,
    rotation_statements      TEXT NOT NULL DEFAULT '[]',   -- JSON array of templates
    skip_import_rotation     INTEGER NOT NULL DEFAULT 0,
    -- The credentials clients get: which user, and its password (sealed). NULL until Lessor knows one.
    current_username         TEXT,
    current_password_sealed  TEXT,
    -- The credentials before the last rotation (sealed), kept for the alternating strategy's
    -- overlap and for an operator recovering by hand.
    previous_username        TEXT,
    previous_password_sealed TEXT,
    -- A rotation in flight: written before the database is touched, cleared when promoted.
    pending_username         TEXT,
    pending_password_sealed  TEXT,
    pending_since            INTEGER,
    last_rotated_at          INTEGER,
    -- The schedule occurrence being served (cron roles: start of the rotation window).
    scheduled_at             INTEGER NOT NULL,
    -- When the rotator next looks at this role: the schedule, or a retry after a failure. The
    -- durable truth of the schedule, so rotations missed while Lessor was down are caught up.
    next_rotation_at         INTEGER NOT NULL,
    attempts                 INTEGER NOT NULL DEFAULT 0,
    last_error               TEXT,
    created_at               INTEGER NOT NULL,
    updated_at               INTEGER NOT NULL
);

CREATE INDEX static_roles_due ON static_roles (next_rotation_at);

-- The last rotations of each static role (a bounded number is kept per role).
CREATE TABLE static_role_rotations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    role_name  TEXT NOT NULL REFERENCES static_roles (name) ON DELETE CASCADE,
    at         INTEGER NOT NULL,
    username   TEXT NOT NULL,
    cause      TEXT NOT NULL CHECK (cause IN ('import', 'schedule', 'manual', 'recovery')),
    outcome    TEXT NOT NULL CHECK (outcome IN ('rotated', 'failed', 'skipped')),
    error      TEXT
);

CREATE INDEX static_role_rotations_role ON static_role_rotations (role_name, id);

-- Admin (root) rotation in flight for a connection, same two-phase protocol as static roles.
ALTER TABLE connections ADD COLUMN root_pending_password_sealed TEXT;
ALTER TABLE connections ADD COLUMN root_pending_since INTEGER;
ALTER TABLE connections ADD COLUMN root_rotated_at INTEGER;
