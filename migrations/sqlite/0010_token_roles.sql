-- Token roles (issue 12): Vault's auth/token/roles/:name, from which auth/token/create/:name makes
-- tokens. Policy lists are JSON arrays of policy names (checked when written); durations are
-- seconds, 0 meaning "not set" (the server's default or maximum applies).
CREATE TABLE token_roles (
    name TEXT PRIMARY KEY NOT NULL,
    allowed_policies TEXT NOT NULL DEFAULT '[]',
    disallowed_policies TEXT NOT NULL DEFAULT '[]',
    orphan INTEGER NOT NULL DEFAULT 0,
    renewable INTEGER NOT NULL DEFAULT 1,
    token_ttl_secs INTEGER NOT NULL DEFAULT 0,
    token_max_ttl_secs INTEGER NOT NULL DEFAULT 0,
    token_explicit_max_ttl_secs INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
