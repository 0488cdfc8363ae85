-- Lessor's lease store, SQLite flavour. Times are milliseconds since the Unix epoch (UTC).

-- Target databases. The admin password and the connection URL (which may inline a password) are
-- sealed with the install's seal key; nothing here logs in without it.
CREATE TABLE connections (
    name                     TEXT PRIMARY KEY NOT NULL,
    plugin_name              TEXT NOT NULL,
    connection_url_sealed    TEXT NOT NULL,
    username                 TEXT NOT NULL,
    password_sealed          TEXT NOT NULL,
    allowed_roles            TEXT NOT NULL DEFAULT '[]',   -- JSON array of role names or "*"
    verify_connection        INTEGER NOT NULL DEFAULT 1,
    max_open_connections     INTEGER NOT NULL DEFAULT 4,
    root_rotation_statements TEXT NOT NULL DEFAULT '[]',   -- JSON array
    created_at               INTEGER NOT NULL,
    updated_at               INTEGER NOT NULL
);

-- Templates for dynamic credentials.
CREATE TABLE roles (
    name                  TEXT PRIMARY KEY NOT NULL,
    db_name               TEXT NOT NULL,
    creation_statements   TEXT NOT NULL DEFAULT '[]',
    revocation_statements TEXT NOT NULL DEFAULT '[]',
    rollback_statements   TEXT NOT NULL DEFAULT '[]',
    renew_statements      TEXT NOT NULL DEFAULT '[]',
    default_ttl_secs      INTEGER NOT NULL DEFAULT 0,
    max_ttl_secs          INTEGER NOT NULL DEFAULT 0,
    username_template     TEXT,
    options               TEXT NOT NULL DEFAULT '{}',     -- JSON object of engine-specific options
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);

-- One row per issued credential. A lease carries everything its revocation needs (connection,
-- username, statements), so it can be revoked after its role was changed or deleted.
CREATE TABLE leases (
    id                    TEXT PRIMARY KEY NOT NULL,
    role_name             TEXT NOT NULL,
    connection_name       TEXT NOT NULL,
    username              TEXT NOT NULL,
    revocation_statements TEXT NOT NULL DEFAULT '[]',
    rollback_statements   TEXT NOT NULL DEFAULT '[]',
    renew_statements      TEXT NOT NULL DEFAULT '[]',
    issued_at             INTEGER NOT NULL,
    last_renewed_at       INTEGER,
    expires_at            INTEGER NOT NULL,
    max_expires_at        INTEGER NOT NULL,
    state                 TEXT NOT NULL CHECK (state IN ('active', 'revoking', 'revoked')),
    -- When the reaper must next look at this lease: expiry while active, the retry time while revoking.
    next_action_at        INTEGER NOT NULL,
    attempts              INTEGER NOT NULL DEFAULT 0,
    last_error            TEXT,
    revoked_at            INTEGER,
    owner                 TEXT NOT NULL
);

-- "What is due now": the reaper's only query on the hot path.
CREATE INDEX leases_due ON leases (next_action_at) WHERE state IN ('active', 'revoking');
CREATE INDEX leases_revoked ON leases (revoked_at) WHERE state = 'revoked';
CREATE INDEX leases_role ON leases (role_name, state);

-- Client tokens, stored only as SHA-256 hashes.
CREATE TABLE tokens (
    token_hash   TEXT PRIMARY KEY NOT NULL,
    accessor     TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    policies     TEXT NOT NULL DEFAULT '[]',
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER
);

-- Install-wide facts, such as the value that proves the seal key matches this store.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
