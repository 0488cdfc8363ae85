-- Issue 10: leases_role (role_name, state) changed on every state a lease goes through (creating,
-- active, revoking, revoked: an index entry deleted and inserted elsewhere each time) and served
-- one query only, the benchmark's "make this role's backlog due at once", which may scan. Revoke
-- by role goes by the id range of `database/creds/<role>/`, and the metrics count scans anyway.
DROP INDEX leases_role;
