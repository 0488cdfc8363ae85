-- Certificate auth roles (auth/cert/certs/:name); the body is the role's JSON (its CA certificate
-- as PEM, allowed names, policies, TTLs). A CA certificate is public: nothing here is sealed.
CREATE TABLE cert_roles (
    name       TEXT PRIMARY KEY NOT NULL,
    config     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
