-- Several replicas on one store (issue 9). Times are milliseconds since the epoch (UTC).
--
-- Each running Lessor process registers here and beats every few seconds; a replica whose beat
-- is older than the stale limit is dead, and the work it claimed is free for the others.
CREATE TABLE replicas (
    id           TEXT PRIMARY KEY NOT NULL,
    address      TEXT NOT NULL DEFAULT '',
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);

-- A lease being revoked is claimed by one replica until claim_until: no other replica drops its
-- user meanwhile, unless the claimant is dead (see replicas) or the claim has lapsed.
ALTER TABLE leases ADD COLUMN claimed_by TEXT;
ALTER TABLE leases ADD COLUMN claim_until INTEGER;

-- The replica that claimed a static role's rotation (its claim lasts until next_rotation_at).
ALTER TABLE static_roles ADD COLUMN claimed_by TEXT;

-- Leases being created, by issuer: the reaper looks for those whose issuer died.
CREATE INDEX leases_creating ON leases (claimed_by) WHERE state = 'creating';

-- Recent credential reads and refusals, for the anomaly rules' sliding windows when several
-- replicas share the store (counted across all of them). An embedded store's single process
-- counts in memory and leaves this table empty.
CREATE TABLE anomaly_events (
    kind    TEXT NOT NULL,
    subject TEXT NOT NULL,
    at      INTEGER NOT NULL
);
CREATE INDEX anomaly_events_window ON anomaly_events (kind, subject, at);

-- Every database user Lessor creates, recorded before it is created (with its lease) and kept
-- until its drop succeeded: the proof that a user is this installation's, which reconciliation
-- needs before it drops anything (a name prefix proves nothing: Vault's default template starts
-- with `v-` too). suspect_sweeps counts reconciliation sweeps that found the user on its database
-- with no live lease; a second sweep that agrees drops it.
CREATE TABLE issued_users (
    connection_name TEXT NOT NULL,
    username        TEXT NOT NULL,
    lease_id        TEXT NOT NULL,
    issued_at       INTEGER NOT NULL,
    suspect_sweeps  INTEGER NOT NULL DEFAULT 0,
    suspect_since   INTEGER,
    PRIMARY KEY (connection_name, username)
);
-- Live leases by user, for reconciliation's "no live lease" test.
CREATE INDEX leases_user ON leases (connection_name, username) WHERE state IN ('creating', 'active', 'revoking');

-- Periodic jobs (reconciliation per connection, housekeeping) claimed by one replica at a time.
CREATE TABLE jobs (
    name        TEXT PRIMARY KEY NOT NULL,
    claimed_by  TEXT,
    claim_until INTEGER,
    last_run_at INTEGER
);
