-- Every replica caches the rows each credential request reads (issue 10): roles, connections,
-- ACL policies, password policies and tokens. A change to them on any replica is announced on
-- lessor_changes when it commits (connections already are, since 0011), so the others forget
-- what they cached within a moment.
CREATE TRIGGER roles_announce AFTER INSERT OR UPDATE OR DELETE ON roles
    FOR EACH ROW EXECUTE FUNCTION lessor_announce_change();
CREATE TRIGGER policies_announce AFTER INSERT OR UPDATE OR DELETE ON policies
    FOR EACH ROW EXECUTE FUNCTION lessor_announce_change();
CREATE TRIGGER password_policies_announce AFTER INSERT OR UPDATE OR DELETE ON password_policies
    FOR EACH ROW EXECUTE FUNCTION lessor_announce_change();

-- Tokens are cached by hash, which must not travel on a channel every store session may listen
-- to; and a revocation deletes a whole subtree. So a token change is announced once per
-- statement, without a key ("tokens:"), and each replica forgets all its cached tokens. Inserts
-- are not announced: a new token changes nothing another replica cached (nothing absent is cached).
CREATE FUNCTION lessor_announce_table_change() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('lessor_changes', TG_TABLE_NAME || ':');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER tokens_announce AFTER UPDATE OR DELETE ON tokens
    FOR EACH STATEMENT EXECUTE FUNCTION lessor_announce_table_change();
