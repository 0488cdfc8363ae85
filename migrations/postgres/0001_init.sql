-- Lessor's store, PostgreSQL flavour: the schema SQLite reaches through migrations 0001-0009, in
-- one step. Later migrations keep the SQLite numbers, so one number means one change on both.
-- Times are milliseconds since the Unix epoch (UTC), in BIGINT, as on SQLite. Names and ids are
-- compared bytewise (COLLATE "C"), as SQLite compares TEXT: lease-id prefix ranges depend on it.

-- Install-wide facts, such as the value that proves the seal key matches this store.
CREATE TABLE meta (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL
);

-- Password policies (Vault's sys/policies/password), as written.
CREATE TABLE password_policies (
    name       TEXT COLLATE "C" PRIMARY KEY,
    text       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Target databases. The admin password, the connection URL and private keys are sealed with the
-- install's seal key.
CREATE TABLE connections (
    name                          TEXT COLLATE "C" PRIMARY KEY,
    plugin_name                   TEXT NOT NULL,
    connection_url_sealed         TEXT NOT NULL,
    username                      TEXT NOT NULL,
    password_sealed               TEXT NOT NULL,
    allowed_roles                 TEXT NOT NULL DEFAULT '[]',
    verify_connection             BOOLEAN NOT NULL DEFAULT TRUE,
    max_open_connections          BIGINT NOT NULL DEFAULT 4,
    root_rotation_statements      TEXT NOT NULL DEFAULT '[]',
    created_at                    BIGINT NOT NULL,
    updated_at                    BIGINT NOT NULL,
    -- Admin (root) rotation in flight: the two-phase protocol of static roles.
    root_pending_password_sealed  TEXT,
    root_pending_since            BIGINT,
    root_rotated_at               BIGINT,
    tls_ca_sealed                 TEXT,
    tls_certificate_sealed        TEXT,
    private_key_sealed            TEXT,
    tls_certificate_key_sealed    TEXT,
    tls_server_name               TEXT,
    tls_skip_verify               BOOLEAN NOT NULL DEFAULT FALSE,
    password_policy               TEXT COLLATE "C" REFERENCES password_policies (name)
);

-- Templates for dynamic credentials.
CREATE TABLE roles (
    name                  TEXT COLLATE "C" PRIMARY KEY,
    db_name               TEXT NOT NULL,
    creation_statements   TEXT NOT NULL DEFAULT '[]',
    revocation_statements TEXT NOT NULL DEFAULT '[]',
    rollback_statements   TEXT NOT NULL DEFAULT '[]',
    renew_statements      TEXT NOT NULL DEFAULT '[]',
    default_ttl_secs      BIGINT NOT NULL DEFAULT 0,
    max_ttl_secs          BIGINT NOT NULL DEFAULT 0,
    username_template     TEXT,
    options               TEXT NOT NULL DEFAULT '{}',
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);

-- One row per issued credential, carrying everything its revocation needs.
CREATE TABLE leases (
    id                    TEXT COLLATE "C" PRIMARY KEY,
    role_name             TEXT NOT NULL,
    connection_name       TEXT NOT NULL,
    username              TEXT NOT NULL,
    revocation_statements TEXT NOT NULL DEFAULT '[]',
    rollback_statements   TEXT NOT NULL DEFAULT '[]',
    renew_statements      TEXT NOT NULL DEFAULT '[]',
    issued_at             BIGINT NOT NULL,
    last_renewed_at       BIGINT,
    expires_at            BIGINT NOT NULL,
    max_expires_at        BIGINT NOT NULL,
    state                 TEXT NOT NULL CHECK (state IN ('creating', 'active', 'revoking', 'revoked')),
    next_action_at        BIGINT NOT NULL,
    attempts              BIGINT NOT NULL DEFAULT 0,
    last_error            TEXT,
    revoked_at            BIGINT,
    owner                 TEXT NOT NULL,
    revoke_requested      BOOLEAN NOT NULL DEFAULT FALSE,
    token_accessor        TEXT
);

CREATE INDEX leases_due ON leases (next_action_at) WHERE state IN ('creating', 'active', 'revoking');
CREATE INDEX leases_revoked ON leases (revoked_at) WHERE state = 'revoked';
CREATE INDEX leases_role ON leases (role_name, state);
CREATE INDEX leases_connection ON leases (connection_name) WHERE state IN ('creating', 'active', 'revoking');
CREATE INDEX leases_token ON leases (token_accessor, id) WHERE token_accessor IS NOT NULL;

-- Client tokens, stored only as keyed hashes. Accessors keep the default collation: the token
-- tree's recursive queries mix them with bound values, and nothing orders them.
CREATE TABLE tokens (
    token_hash            TEXT COLLATE "C" PRIMARY KEY,
    accessor              TEXT NOT NULL UNIQUE,
    display_name          TEXT NOT NULL,
    policies              TEXT NOT NULL DEFAULT '[]',
    created_at            BIGINT NOT NULL,
    expires_at            BIGINT,
    entity_id             TEXT NOT NULL DEFAULT '',
    renewable             BOOLEAN NOT NULL DEFAULT FALSE,
    ttl_secs              BIGINT NOT NULL DEFAULT 0,
    explicit_max_ttl_secs BIGINT NOT NULL DEFAULT 0,
    max_expires_at        BIGINT,
    path                  TEXT NOT NULL DEFAULT 'auth/token/root',
    meta                  TEXT NOT NULL DEFAULT '{}',
    parent_accessor       TEXT
);
CREATE INDEX tokens_parent ON tokens (parent_accessor);
CREATE INDEX tokens_expiry ON tokens (expires_at);

-- Static roles and their rotation state (see the SQLite migration 0002 for the protocol).
CREATE TABLE static_roles (
    name                     TEXT COLLATE "C" PRIMARY KEY,
    db_name                  TEXT NOT NULL,
    username                 TEXT NOT NULL,
    alternate_username       TEXT,
    rotation_period_secs     BIGINT,
    rotation_schedule        TEXT,
    rotation_window_secs     BIGINT,
    rotation_statements      TEXT NOT NULL DEFAULT '[]',
    skip_import_rotation     BOOLEAN NOT NULL DEFAULT FALSE,
    current_username         TEXT,
    current_password_sealed  TEXT,
    previous_username        TEXT,
    previous_password_sealed TEXT,
    pending_username         TEXT,
    pending_password_sealed  TEXT,
    pending_since            BIGINT,
    last_rotated_at          BIGINT,
    scheduled_at             BIGINT NOT NULL,
    next_rotation_at         BIGINT NOT NULL,
    attempts                 BIGINT NOT NULL DEFAULT 0,
    last_error               TEXT,
    created_at               BIGINT NOT NULL,
    updated_at               BIGINT NOT NULL
);
CREATE INDEX static_roles_due ON static_roles (next_rotation_at);

CREATE TABLE static_role_rotations (
    id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    role_name  TEXT COLLATE "C" NOT NULL REFERENCES static_roles (name) ON DELETE CASCADE,
    at         BIGINT NOT NULL,
    username   TEXT NOT NULL,
    cause      TEXT NOT NULL CHECK (cause IN ('import', 'schedule', 'manual', 'recovery')),
    outcome    TEXT NOT NULL CHECK (outcome IN ('rotated', 'failed', 'skipped')),
    error      TEXT
);
CREATE INDEX static_role_rotations_role ON static_role_rotations (role_name, id);

-- ACL policies as written.
CREATE TABLE policies (
    name       TEXT COLLATE "C" PRIMARY KEY,
    text       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE jwt_roles (
    name       TEXT COLLATE "C" PRIMARY KEY,
    config     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE cert_roles (
    name       TEXT COLLATE "C" PRIMARY KEY,
    config     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE audit_devices (
    name        TEXT COLLATE "C" PRIMARY KEY,
    device_type TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    options     TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL
);

-- Where each identity has read credentials from, for the "new source address" rule; shared by
-- every replica, so a new address is new to the installation, not to one process.
CREATE TABLE source_addresses (
    identity   TEXT NOT NULL,
    address    TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL,
    PRIMARY KEY (identity, address)
);

CREATE TABLE alerts (
    id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    rule         TEXT NOT NULL,
    identity     TEXT NOT NULL DEFAULT '',
    display_name TEXT NOT NULL DEFAULT '',
    address      TEXT NOT NULL DEFAULT '',
    role         TEXT NOT NULL DEFAULT '',
    count        BIGINT NOT NULL,
    first_seen   BIGINT NOT NULL,
    last_seen    BIGINT NOT NULL,
    detail       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX alerts_open ON alerts (rule, identity, address, role, last_seen);

CREATE TABLE wrapped_responses (
    token_hash       TEXT COLLATE "C" PRIMARY KEY,
    accessor         TEXT COLLATE "C" NOT NULL UNIQUE,
    sealed_response  TEXT NOT NULL,
    creation_path    TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    ttl_secs         BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    wrapped_accessor TEXT
);
CREATE INDEX wrapped_responses_expiry ON wrapped_responses (expires_at);
