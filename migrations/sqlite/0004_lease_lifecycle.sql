-- The lease lifecycle made race-free (issue 8: F4, F13, F16, F18). Times are milliseconds since the
-- Unix epoch (UTC).
--
-- A lease is now written `creating` before its user exists and becomes `active` only through a
-- conditional update that fails if a revocation was requested meanwhile (`revoke_requested`), so a
-- revoke racing the creation can no longer mark the lease revoked before the user exists. SQLite
-- cannot change a CHECK constraint in place, hence the table rebuild.

CREATE TABLE leases_new (
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
    state                 TEXT NOT NULL CHECK (state IN ('creating', 'active', 'revoking', 'revoked')),
    -- When the reaper must next look at this lease: the creation deadline while creating (the
    -- issuer is dead or gave up by then), expiry while active, the retry time while revoking.
    next_action_at        INTEGER NOT NULL,
    attempts              INTEGER NOT NULL DEFAULT 0,
    last_error            TEXT,
    revoked_at            INTEGER,
    owner                 TEXT NOT NULL,
    -- Set by a revoke that met the lease while `creating`: the issuer drops the user instead of
    -- activating the lease.
    revoke_requested      INTEGER NOT NULL DEFAULT 0,
    -- The accessor of the token that obtained the lease, so revoking the token revokes it.
    token_accessor        TEXT
);

INSERT INTO leases_new (id, role_name, connection_name, username, revocation_statements,
    rollback_statements, renew_statements, issued_at, last_renewed_at, expires_at, max_expires_at,
    state, next_action_at, attempts, last_error, revoked_at, owner)
SELECT id, role_name, connection_name, username, revocation_statements, rollback_statements,
    renew_statements, issued_at, last_renewed_at, expires_at, max_expires_at, state, next_action_at,
    attempts, last_error, revoked_at, owner
FROM leases;

DROP TABLE leases;
ALTER TABLE leases_new RENAME TO leases;

-- "What is due now": the reaper's only query on the hot path; creating leases fall due at their
-- creation deadline.
CREATE INDEX leases_due ON leases (next_action_at) WHERE state IN ('creating', 'active', 'revoking');
CREATE INDEX leases_revoked ON leases (revoked_at) WHERE state = 'revoked';
CREATE INDEX leases_role ON leases (role_name, state);
-- Live leases per connection: a connection with any cannot be deleted.
CREATE INDEX leases_connection ON leases (connection_name) WHERE state IN ('creating', 'active', 'revoking');
-- Leases per token, in id order for paging, for revoking a token's leases.
CREATE INDEX leases_token ON leases (token_accessor, id) WHERE token_accessor IS NOT NULL;
