-- Throwaway databases (issue 13): a role with database_per_lease gives each lease a database of
-- its own (copied from template_database if set), recorded on the lease so that its revocation
-- drops it, even after the role changed or was deleted.
ALTER TABLE roles ADD COLUMN database_per_lease INTEGER NOT NULL DEFAULT 0;
ALTER TABLE roles ADD COLUMN template_database TEXT;
ALTER TABLE leases ADD COLUMN database_name TEXT;
