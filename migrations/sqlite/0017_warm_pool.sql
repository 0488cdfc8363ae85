-- Warm pools (issue 10): a role may keep warm_pool_size users created ahead of demand, unable to
-- log in until issued. Each pooled user has a row here, written before the user is created and
-- claimed by the replica that holds its password (in memory only, never stored); issuing moves it
-- into `leases` under the same id. Rows whose replica is dead are dropped by the survivors (at
-- start on an embedded store). Its user is also on record in `issued_users`, under this id.
ALTER TABLE roles ADD COLUMN warm_pool_size INTEGER NOT NULL DEFAULT 0;
CREATE TABLE pooled_users (
    id                    TEXT PRIMARY KEY,
    role_name             TEXT NOT NULL,
    connection_name       TEXT NOT NULL,
    username              TEXT NOT NULL,
    revocation_statements TEXT NOT NULL DEFAULT '[]',
    created_at            INTEGER NOT NULL,
    claimed_by            TEXT NOT NULL
);
CREATE INDEX pooled_users_claimed_by ON pooled_users (claimed_by);
CREATE INDEX pooled_users_user ON pooled_users (connection_name, username);
