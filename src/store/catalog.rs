//! Store queries for the catalog: the target connections and the roles issued from them.

use sqlx::FromRow;

use super::Store;
use crate::error::Result;

/// A configured target database.
#[derive(Debug, Clone, FromRow)]
pub struct ConnectionRow {
    pub name: String,
    pub plugin_name: String,
    /// Sealed, since operators sometimes inline the password in the URL.
    pub connection_url_sealed: String,
    pub username: String,
    pub password_sealed: String,
    /// JSON array of role names; `"*"` allows every role.
    pub allowed_roles: String,
    pub verify_connection: bool,
    pub max_open_connections: i64,
    pub root_rotation_statements: String,
    /// `tls_ca` (PEM), sealed; `None` when not set. Like the other TLS columns, written only
    /// through [`crate::store::Store::upsert_connection`] and opened by `engines::settings_for`.
    pub tls_ca_sealed: Option<String>,
    /// `tls_certificate` (PEM), sealed.
    pub tls_certificate_sealed: Option<String>,
    /// `private_key` (PEM), sealed: a secret.
    pub private_key_sealed: Option<String>,
    /// `tls_certificate_key` (PEM certificate and key), sealed: a secret.
    pub tls_certificate_key_sealed: Option<String>,
    /// `tls_server_name`, not secret.
    pub tls_server_name: Option<String>,
    /// `tls_skip_verify`.
    pub tls_skip_verify: bool,
    /// `disable_escaping`: the admin credentials go into the connection URL as they are.
    pub disable_escaping: bool,
    /// `password_authentication`: `"password"` or `"scram-sha-256"` (Vault's values).
    pub password_authentication: String,
    /// `scram_iterations`: PBKDF2 iterations of the SCRAM verifiers of unguessable generated
    /// passwords, under `"scram-sha-256"`; 4096 otherwise.
    pub scram_iterations: i64,
    /// The password policy (`password_policies.name`) every generated password of this
    /// connection follows; `None` is the default generator.
    pub password_policy: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A template for dynamic credentials.
#[derive(Debug, Clone, FromRow)]
pub struct RoleRow {
    pub name: String,
    pub db_name: String,
    pub creation_statements: String,
    pub revocation_statements: String,
    pub rollback_statements: String,
    pub renew_statements: String,
    /// 0 means the system default.
    pub default_ttl_secs: i64,
    /// 0 means the system maximum.
    pub max_ttl_secs: i64,
    pub username_template: Option<String>,
    pub options: String,
    /// Each lease gets a database of its own, dropped with it.
    pub database_per_lease: bool,
    /// What those databases are copied from (PostgreSQL `TEMPLATE`).
    pub template_database: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What [`Store::delete_connection`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionDeletion {
    Deleted,
    NotFound,
    /// Refused: these still reference the connection.
    InUse {
        live_leases: i64,
        static_roles: Vec<String>,
    },
}

impl Store {
    // ---- connections ------------------------------------------------------------------------

    pub async fn upsert_connection(&self, row: &ConnectionRow) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO connections (name, plugin_name, connection_url_sealed, username, password_sealed, allowed_roles,
                 verify_connection, max_open_connections, root_rotation_statements,
                 tls_ca_sealed, tls_certificate_sealed, private_key_sealed, tls_certificate_key_sealed,
                 tls_server_name, tls_skip_verify, password_policy, created_at, updated_at, disable_escaping,
                 password_authentication, scram_iterations)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
                 $20, $21)
             ON CONFLICT (name) DO UPDATE SET plugin_name = excluded.plugin_name,
                 connection_url_sealed = excluded.connection_url_sealed, username = excluded.username,
                 password_sealed = excluded.password_sealed, allowed_roles = excluded.allowed_roles,
                 verify_connection = excluded.verify_connection, max_open_connections = excluded.max_open_connections,
                 root_rotation_statements = excluded.root_rotation_statements,
                 tls_ca_sealed = excluded.tls_ca_sealed, tls_certificate_sealed = excluded.tls_certificate_sealed,
                 private_key_sealed = excluded.private_key_sealed,
                 tls_certificate_key_sealed = excluded.tls_certificate_key_sealed,
                 tls_server_name = excluded.tls_server_name, tls_skip_verify = excluded.tls_skip_verify,
                 password_policy = excluded.password_policy, updated_at = excluded.updated_at,
                 disable_escaping = excluded.disable_escaping,
                 password_authentication = excluded.password_authentication,
                 scram_iterations = excluded.scram_iterations",
        )
        .bind(&row.name)
        .bind(&row.plugin_name)
        .bind(&row.connection_url_sealed)
        .bind(&row.username)
        .bind(&row.password_sealed)
        .bind(&row.allowed_roles)
        .bind(row.verify_connection)
        .bind(row.max_open_connections)
        .bind(&row.root_rotation_statements)
        .bind(&row.tls_ca_sealed)
        .bind(&row.tls_certificate_sealed)
        .bind(&row.private_key_sealed)
        .bind(&row.tls_certificate_key_sealed)
        .bind(&row.tls_server_name)
        .bind(row.tls_skip_verify)
        .bind(&row.password_policy)
        .bind(row.created_at)
        .bind(row.updated_at)
        .bind(row.disable_escaping)
        .bind(&row.password_authentication)
        .bind(row.scram_iterations)
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(())
    }

    pub async fn get_connection(&self, name: &str) -> Result<Option<ConnectionRow>> {
        Ok(with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM connections WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await?))
    }

    pub async fn list_connections(&self) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT name FROM connections ORDER BY name"
        )
        .fetch_all(pool)
        .await?))
    }

    /// Deletes a connection unless it is in use: no live lease and no static role may reference
    /// it, or their users could never be revoked or rotated again. The check and the delete are
    /// one statement, so a lease written concurrently (see [`Store::insert_lease`]) either
    /// blocks the delete or is refused itself.
    pub async fn delete_connection(&self, name: &str) -> Result<ConnectionDeletion> {
        let done = with_pool!(self, |pool| {
            sqlx::query(
            "DELETE FROM connections WHERE name = $1
                 AND NOT EXISTS (SELECT 1 FROM leases
                                 WHERE connection_name = $1 AND state IN ('creating', 'active', 'revoking'))
                 AND NOT EXISTS (SELECT 1 FROM static_roles WHERE db_name = $1)",
        )
        .bind(name)
        .execute(pool)
        .await?.rows_affected()
        });
        if done > 0 {
            return Ok(ConnectionDeletion::Deleted);
        }
        if self.get_connection(name).await?.is_none() {
            return Ok(ConnectionDeletion::NotFound);
        }
        Ok(ConnectionDeletion::InUse {
            live_leases: self.count_live_leases_on_connection(name).await?,
            static_roles: self.static_roles_on_connection(name).await?,
        })
    }

    // ---- roles ------------------------------------------------------------------------------

    pub async fn upsert_role(&self, row: &RoleRow) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO roles (name, db_name, creation_statements, revocation_statements, rollback_statements,
                 renew_statements, default_ttl_secs, max_ttl_secs, username_template, options, created_at, updated_at,
                 database_per_lease, template_database)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (name) DO UPDATE SET db_name = excluded.db_name,
                 creation_statements = excluded.creation_statements, revocation_statements = excluded.revocation_statements,
                 rollback_statements = excluded.rollback_statements, renew_statements = excluded.renew_statements,
                 default_ttl_secs = excluded.default_ttl_secs, max_ttl_secs = excluded.max_ttl_secs,
                 username_template = excluded.username_template, options = excluded.options, updated_at = excluded.updated_at,
                 database_per_lease = excluded.database_per_lease, template_database = excluded.template_database",
        )
        .bind(&row.name)
        .bind(&row.db_name)
        .bind(&row.creation_statements)
        .bind(&row.revocation_statements)
        .bind(&row.rollback_statements)
        .bind(&row.renew_statements)
        .bind(row.default_ttl_secs)
        .bind(row.max_ttl_secs)
        .bind(&row.username_template)
        .bind(&row.options)
        .bind(row.created_at)
        .bind(row.updated_at)
        .bind(row.database_per_lease)
        .bind(&row.template_database)
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(())
    }

    pub async fn get_role(&self, name: &str) -> Result<Option<RoleRow>> {
        Ok(with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM roles WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await?))
    }

    pub async fn list_roles(&self) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT name FROM roles ORDER BY name"
        )
        .fetch_all(pool)
        .await?))
    }

    pub async fn delete_role(&self, name: &str) -> Result<bool> {
        let done = with_pool!(self, |pool| sqlx::query(
            "DELETE FROM roles WHERE name = $1"
        )
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done > 0)
    }
}
