-- Issue 10: every issued credential writes its lease row four times (creating, active, revoking,
-- revoked) and each write goes through every index of the table it changes, so an index no query
-- needs is paid for on every issue and revocation.
-- leases_user (connection_name, username) has the same live-state condition as leases_connection
-- (connection_name) and begins with its column, so it serves every search leases_connection did.
DROP INDEX leases_connection;
-- leases_in_flight (claimed_by) covers the creating and revoking leases, a superset of
-- leases_creating's; the reaper's search for a dead replica's leases already goes through it.
DROP INDEX leases_creating;
