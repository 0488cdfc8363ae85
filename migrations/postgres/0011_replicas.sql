-- Several replicas on one store (issue 9); see the SQLite migration of the same number.
CREATE TABLE replicas (
    id           TEXT COLLATE "C" PRIMARY KEY,
    address      TEXT NOT NULL DEFAULT '',
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

ALTER TABLE leases ADD COLUMN claimed_by TEXT COLLATE "C";
ALTER TABLE leases ADD COLUMN claim_until BIGINT;

ALTER TABLE static_roles ADD COLUMN claimed_by TEXT COLLATE "C";

-- Every replica keeps connection pools, audit devices and anomaly rules in memory; a change to
-- their rows on any replica is announced on the channel lessor_changes when it commits, so the
-- others drop what they hold within a moment. The payload is "<table>:<key>".
CREATE FUNCTION lessor_announce_change() RETURNS trigger AS $$
DECLARE
    changed JSONB := to_jsonb(CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END);
BEGIN
    PERFORM pg_notify('lessor_changes',
        TG_TABLE_NAME || ':' || COALESCE(changed ->> 'name', changed ->> 'key', ''));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER connections_announce AFTER INSERT OR UPDATE OR DELETE ON connections
    FOR EACH ROW EXECUTE FUNCTION lessor_announce_change();
CREATE TRIGGER audit_devices_announce AFTER INSERT OR UPDATE OR DELETE ON audit_devices
    FOR EACH ROW EXECUTE FUNCTION lessor_announce_change();
CREATE TRIGGER meta_announce AFTER INSERT OR UPDATE OR DELETE ON meta
    FOR EACH ROW EXECUTE FUNCTION lessor_announce_change();

CREATE INDEX leases_creating ON leases (claimed_by) WHERE state = 'creating';

-- Recent credential reads and refusals, counted across replicas for the anomaly rules.
CREATE TABLE anomaly_events (
    kind    TEXT NOT NULL,
    subject TEXT NOT NULL,
    at      BIGINT NOT NULL
);
CREATE INDEX anomaly_events_window ON anomaly_events (kind, subject, at);

CREATE TABLE issued_users (
    connection_name TEXT COLLATE "C" NOT NULL,
    username        TEXT COLLATE "C" NOT NULL,
    lease_id        TEXT COLLATE "C" NOT NULL,
    issued_at       BIGINT NOT NULL,
    suspect_sweeps  BIGINT NOT NULL DEFAULT 0,
    suspect_since   BIGINT,
    PRIMARY KEY (connection_name, username)
);
CREATE INDEX leases_user ON leases (connection_name, username) WHERE state IN ('creating', 'active', 'revoking');

CREATE TABLE jobs (
    name        TEXT COLLATE "C" PRIMARY KEY,
    claimed_by  TEXT COLLATE "C",
    claim_until BIGINT,
    last_run_at BIGINT
);
