-- Identity, policies, audit devices and anomaly alerts. Times are milliseconds since the epoch (UTC).

-- Tokens learn their lifetime rules and the entity (workload) they stand for. entity_id '' means
-- "the accessor itself" (tokens stored before this migration: the root token).
ALTER TABLE tokens ADD COLUMN entity_id TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN renewable INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN ttl_secs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN explicit_max_ttl_secs INTEGER NOT NULL DEFAULT 0;
-- No renewal moves expires_at past this (explicit max TTL, or the system maximum).
ALTER TABLE tokens ADD COLUMN max_expires_at INTEGER;
ALTER TABLE tokens ADD COLUMN path TEXT NOT NULL DEFAULT 'auth/token/root';
ALTER TABLE tokens ADD COLUMN meta TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tokens ADD COLUMN parent_accessor TEXT;

-- ACL policies as written (HCL or JSON); parsed when used, so the text is what operators read back.
CREATE TABLE policies (
    name       TEXT PRIMARY KEY NOT NULL,
    text       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- JWT auth roles; the body is the role's JSON (bound claims, policies, TTLs).
CREATE TABLE jwt_roles (
    name       TEXT PRIMARY KEY NOT NULL,
    config     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- Enabled audit devices.
CREATE TABLE audit_devices (
    name        TEXT PRIMARY KEY NOT NULL,
    device_type TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    options     TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL
);

-- Where each identity has read credentials from, for the "new source address" rule.
CREATE TABLE source_addresses (
    identity   TEXT NOT NULL,
    address    TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    PRIMARY KEY (identity, address)
);

-- Raised anomaly alerts. Empty strings stand for "not applicable" so that equality finds the
-- open alert a repeat belongs to.
CREATE TABLE alerts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    rule         TEXT NOT NULL,
    identity     TEXT NOT NULL DEFAULT '',
    display_name TEXT NOT NULL DEFAULT '',
    address      TEXT NOT NULL DEFAULT '',
    role         TEXT NOT NULL DEFAULT '',
    count        INTEGER NOT NULL,
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    detail       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX alerts_open ON alerts (rule, identity, address, role, last_seen);
