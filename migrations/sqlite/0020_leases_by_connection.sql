-- Issue 10: leases_user (connection_name, username) is keyed by usernames, random by design, and
-- its condition is on the state, so each of a lease's four writes deleted and inserted an entry on
-- a page anywhere in it: with 20,000 live leases in the store, that made about a third of the WAL
-- a credential wrote when writes share a commit. Its queries go another way now:
-- * reconciliation's "does a live lease cover this user on record" follows the record's lease id
--   (the primary key): every live lease's user is on record, pointing at it, written in the same
--   transaction as the lease, and the statement below makes that hold for older stores too
--   (should two live leases name one user, the newer is the one on record);
-- * the live leases of a connection (its deletion check, the count) go by the connection alone,
--   whose entries for new leases are the last in rowid order, so on the pages written last.
INSERT INTO issued_users (connection_name, username, lease_id, issued_at)
    SELECT connection_name, username, id, issued_at FROM leases
    WHERE state IN ('creating', 'active', 'revoking')
    ORDER BY issued_at
    ON CONFLICT (connection_name, username) DO UPDATE SET lease_id = excluded.lease_id,
        issued_at = excluded.issued_at, suspect_sweeps = 0, suspect_since = NULL;
CREATE INDEX leases_connection ON leases (connection_name) WHERE state IN ('creating', 'active', 'revoking');
DROP INDEX leases_user;
