-- Issue 10: every issued credential writes its lease row four times (creating, active, revoking,
-- revoked) and each write goes through every index of the table it changes, so an index no query
-- needs is paid for on every issue and revocation.
-- leases_user (connection_name, username) has the same live-state condition as leases_connection
-- (connection_name) and begins with its column, so it serves every search leases_connection did.
DROP INDEX leases_connection;
-- leases_in_flight (claimed_by) covers the creating and revoking leases, a superset of
-- leases_creating's; the reaper's search for a dead replica's leases already goes through it.
DROP INDEX leases_creating;
-- issued_users is only ever searched by its primary key, or its first column: kept as that key
-- alone (WITHOUT ROWID), recording a user and forgetting it each write one b-tree, not two.
CREATE TABLE issued_users_by_key (
    connection_name TEXT NOT NULL,
    username        TEXT NOT NULL,
    lease_id        TEXT NOT NULL,
    issued_at       INTEGER NOT NULL,
    suspect_sweeps  INTEGER NOT NULL DEFAULT 0,
    suspect_since   INTEGER,
    PRIMARY KEY (connection_name, username)
) WITHOUT ROWID;
INSERT INTO issued_users_by_key
    (connection_name, username, lease_id, issued_at, suspect_sweeps, suspect_since)
    SELECT connection_name, username, lease_id, issued_at, suspect_sweeps, suspect_since
    FROM issued_users;
DROP TABLE issued_users;
ALTER TABLE issued_users_by_key RENAME TO issued_users;
