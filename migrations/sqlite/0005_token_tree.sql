-- Tokens form a tree: revoking a token finds its children through parent_accessor, and the check
-- of a child token walks up through accessor (already unique, so indexed).
CREATE INDEX IF NOT EXISTS tokens_parent ON tokens (parent_accessor);
-- Housekeeping looks for expired tokens.
CREATE INDEX IF NOT EXISTS tokens_expiry ON tokens (expires_at);
