-- Response wrapping: a wrapped answer waits here, sealed, until it is unwrapped once or expires.
-- The row is keyed by the wrapping token's keyed hash (as tokens are), never by the token, and the
-- answer is sealed under the install's seal key with the row's accessor as associated data.
-- Times are milliseconds since the epoch (UTC).
CREATE TABLE wrapped_responses (
    token_hash       TEXT PRIMARY KEY NOT NULL,
    accessor         TEXT NOT NULL UNIQUE,
    sealed_response  TEXT NOT NULL,
    creation_path    TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    ttl_secs         INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    -- The accessor of the token inside, when the wrapped answer is a login or token creation.
    wrapped_accessor TEXT
);
-- Expired answers are purged by expiry.
CREATE INDEX wrapped_responses_expiry ON wrapped_responses (expires_at);
