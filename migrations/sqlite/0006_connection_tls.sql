-- TLS material given inline on a connection (issue 11): Vault's field names. The PEM texts are
-- sealed like the admin password (each under its own context, connection/<name>/<field>), since
-- private keys are secrets and certificates are better kept with them; NULL means not set.
-- The TLS *mode* lives in the connection URL (PostgreSQL sslmode, MySQL tls=).
ALTER TABLE connections ADD COLUMN tls_ca_sealed TEXT;
ALTER TABLE connections ADD COLUMN tls_certificate_sealed TEXT;
ALTER TABLE connections ADD COLUMN private_key_sealed TEXT;
ALTER TABLE connections ADD COLUMN tls_certificate_key_sealed TEXT;
ALTER TABLE connections ADD COLUMN tls_server_name TEXT;
ALTER TABLE connections ADD COLUMN tls_skip_verify INTEGER NOT NULL DEFAULT 0;
