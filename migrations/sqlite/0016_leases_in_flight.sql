-- Leases being created or revoked, by the replica working on them: the reaper's search for the
-- in-flight leases of a dead replica (claim_due_leases' second query) reads only these, instead of
-- every row of a large store.
CREATE INDEX leases_in_flight ON leases (claimed_by) WHERE state IN ('creating', 'revoking');
