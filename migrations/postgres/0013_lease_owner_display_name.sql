-- The display name of a lease's owner (issue 14): who holds a credential, in the words an operator
-- knows ("token-ci-runner", "jwt-system:serviceaccount:ops:grafana"), not only the entity id. Leases
-- issued before this take the display name of the token that obtained them, where that token is
-- still stored; the others keep an empty name.
ALTER TABLE leases ADD COLUMN owner_display_name TEXT NOT NULL DEFAULT '';
UPDATE leases SET owner_display_name = COALESCE(
    (SELECT tokens.display_name FROM tokens WHERE tokens.accessor = leases.token_accessor), '')
WHERE token_accessor IS NOT NULL;
-- `LIST sys/leases/lookup/...?owner_display_name=` pages one owner's live leases in id order.
CREATE INDEX leases_owner_display_name ON leases (owner_display_name, id)
    WHERE state IN ('creating', 'active', 'revoking');
