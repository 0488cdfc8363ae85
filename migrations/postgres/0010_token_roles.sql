-- Token roles (issue 12): Vault's auth/token/roles/:name, from which auth/token/create/:name makes
-- tokens. The PostgreSQL twin of migrations/sqlite/0010_token_roles.sql: the same columns, with
-- BIGINT for integers and BOOLEAN for booleans. Policy lists are JSON arrays of policy names
-- (checked when written); durations are seconds, 0 meaning "not set".
CREATE TABLE token_roles (
    name TEXT PRIMARY KEY NOT NULL,
    allowed_policies TEXT NOT NULL DEFAULT '[]',
    disallowed_policies TEXT NOT NULL DEFAULT '[]',
    orphan BOOLEAN NOT NULL DEFAULT FALSE,
    renewable BOOLEAN NOT NULL DEFAULT TRUE,
    token_ttl_secs BIGINT NOT NULL DEFAULT 0,
    token_max_ttl_secs BIGINT NOT NULL DEFAULT 0,
    token_explicit_max_ttl_secs BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
