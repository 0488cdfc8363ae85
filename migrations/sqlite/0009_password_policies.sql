-- Password policies (issue 12): Vault's sys/policies/password. The HCL text is kept as written
-- (it was checked on write) and parsed again where a password is generated.
CREATE TABLE password_policies (
    name TEXT PRIMARY KEY NOT NULL,
    text TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- The policy every password generated for the connection follows; NULL means the default
-- (32 random characters). The foreign key makes a connection naming a missing policy, or a
-- policy deleted while a connection uses it, impossible rather than merely checked for.
ALTER TABLE connections ADD COLUMN password_policy TEXT REFERENCES password_policies (name);
