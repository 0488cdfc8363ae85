-- A connection's password_authentication (issue 10): "password" sends the password itself in
-- creation and rotation statements, as before; "scram-sha-256" sends a SCRAM-SHA-256 verifier
-- Lessor computed, with scram_iterations PBKDF2 iterations for unguessable generated passwords of
-- dynamic users (PostgreSQL's 4,096 for every other password). Existing connections keep
-- "password".
ALTER TABLE connections ADD COLUMN password_authentication TEXT NOT NULL DEFAULT 'password';
ALTER TABLE connections ADD COLUMN scram_iterations BIGINT NOT NULL DEFAULT 4096;
