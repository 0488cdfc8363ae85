//! Store queries for the catalog: the target connections, the roles issued from them, and the
//! password policies connections name.

use chrono::{DateTime, Utc};
use lessor_plugin::RoleOptions;
use sqlx::FromRow;

use super::codec::{self, encode_list};
use super::{from_millis, to_millis, Store};
use crate::error::{Error, Result};

/// A configured target database. Secrets arrive here sealed (`*_sealed`): sealing happens above
/// the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub name: String,
    pub plugin_name: String,
    /// Sealed, since operators sometimes inline the password in the URL.
    pub connection_url_sealed: String,
    pub username: String,
    pub password_sealed: String,
    /// Role names or globs that may use this connection; `"*"` allows every role.
    pub allowed_roles: Vec<String>,
    pub verify_connection: bool,
    pub max_open_connections: u32,
    /// Statement templates of a root rotation; empty means the engine's default.
    pub root_rotation_statements: Vec<String>,
    /// `tls_ca` (PEM), sealed; `None` when not set. Like the other TLS fields, written only
    /// through [`CatalogStore::upsert_connection`] and opened by `engines::settings_for`.
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
    pub scram_iterations: u32,
    /// The password policy (`password_policies.name`) every generated password of this
    /// connection follows; `None` is the default generator.
    pub password_policy: Option<String>,
    /// Kept as first written: an upsert of an existing connection does not change it.
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A template for dynamic credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    /// The connection the role issues on.
    pub db_name: String,
    pub creation_statements: Vec<String>,
    pub revocation_statements: Vec<String>,
    pub rollback_statements: Vec<String>,
    pub renew_statements: Vec<String>,
    /// Zero means the system default.
    pub default_ttl: std::time::Duration,
    /// Zero means the system maximum.
    pub max_ttl: std::time::Duration,
    pub username_template: Option<String>,
    pub options: RoleOptions,
    /// Each lease gets a database of its own, dropped with it.
    pub database_per_lease: bool,
    /// What those databases are copied from (PostgreSQL `TEMPLATE`).
    pub template_database: Option<String>,
    /// Users kept created ahead of demand, unable to log in until issued (0: no pool).
    pub warm_pool_size: u32,
    /// Kept as first written: an upsert of an existing role does not change it.
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What [`CatalogStore::delete_connection`] did.
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

/// A `connections` row as stored (the columns [`Connection`] has).
#[derive(FromRow)]
struct ConnectionRow {
    name: String,
    plugin_name: String,
    connection_url_sealed: String,
    username: String,
    password_sealed: String,
    /// JSON array.
    allowed_roles: String,
    verify_connection: bool,
    max_open_connections: i64,
    /// JSON array.
    root_rotation_statements: String,
    tls_ca_sealed: Option<String>,
    tls_certificate_sealed: Option<String>,
    private_key_sealed: Option<String>,
    tls_certificate_key_sealed: Option<String>,
    tls_server_name: Option<String>,
    tls_skip_verify: bool,
    disable_escaping: bool,
    password_authentication: String,
    scram_iterations: i64,
    password_policy: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<ConnectionRow> for Connection {
    type Error = Error;

    fn try_from(row: ConnectionRow) -> Result<Self> {
        const TABLE: &str = "connections";
        Ok(Self {
            allowed_roles: codec::decode(TABLE, "allowed_roles", &row.allowed_roles)?,
            max_open_connections: codec::to_u32(
                TABLE,
                "max_open_connections",
                row.max_open_connections,
            )?,
            root_rotation_statements: codec::decode(
                TABLE,
                "root_rotation_statements",
                &row.root_rotation_statements,
            )?,
            scram_iterations: codec::to_u32(TABLE, "scram_iterations", row.scram_iterations)?,
            created_at: from_millis(row.created_at),
            updated_at: from_millis(row.updated_at),
            name: row.name,
            plugin_name: row.plugin_name,
            connection_url_sealed: row.connection_url_sealed,
            username: row.username,
            password_sealed: row.password_sealed,
            verify_connection: row.verify_connection,
            tls_ca_sealed: row.tls_ca_sealed,
            tls_certificate_sealed: row.tls_certificate_sealed,
            private_key_sealed: row.private_key_sealed,
            tls_certificate_key_sealed: row.tls_certificate_key_sealed,
            tls_server_name: row.tls_server_name,
            tls_skip_verify: row.tls_skip_verify,
            disable_escaping: row.disable_escaping,
            password_authentication: row.password_authentication,
            password_policy: row.password_policy,
        })
    }
}

/// A `roles` row as stored.
#[derive(FromRow)]
struct RoleRow {
    name: String,
    db_name: String,
    /// JSON arrays of statement templates.
    creation_statements: String,
    revocation_statements: String,
    rollback_statements: String,
    renew_statements: String,
    default_ttl_secs: i64,
    max_ttl_secs: i64,
    username_template: Option<String>,
    /// JSON object of strings.
    options: String,
    database_per_lease: bool,
    template_database: Option<String>,
    warm_pool_size: i64,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<RoleRow> for Role {
    type Error = Error;

    fn try_from(row: RoleRow) -> Result<Self> {
        const TABLE: &str = "roles";
        Ok(Self {
            creation_statements: codec::decode(
                TABLE,
                "creation_statements",
                &row.creation_statements,
            )?,
            revocation_statements: codec::decode(
                TABLE,
                "revocation_statements",
                &row.revocation_statements,
            )?,
            rollback_statements: codec::decode(
                TABLE,
                "rollback_statements",
                &row.rollback_statements,
            )?,
            renew_statements: codec::decode(TABLE, "renew_statements", &row.renew_statements)?,
            default_ttl: codec::from_secs(row.default_ttl_secs),
            max_ttl: codec::from_secs(row.max_ttl_secs),
            options: codec::decode(TABLE, "options", &row.options)?,
            created_at: from_millis(row.created_at),
            updated_at: from_millis(row.updated_at),
            name: row.name,
            db_name: row.db_name,
            username_template: row.username_template,
            database_per_lease: row.database_per_lease,
            template_database: row.template_database,
            warm_pool_size: u32::try_from(row.warm_pool_size).unwrap_or(0),
        })
    }
}

/// The catalog: connections, roles, and the password policies connections name.
// Only ever called on the concrete `Store`, so each future's `Send`-ness is known at the call.
#[allow(async_fn_in_trait)]
pub trait CatalogStore {
    /// Creates a connection or replaces its fields (all but `created_at`).
    async fn upsert_connection(&self, connection: &Connection) -> Result<()>;
    async fn get_connection(&self, name: &str) -> Result<Option<Connection>>;
    async fn list_connections(&self) -> Result<Vec<String>>;
    /// Deletes a connection unless it is in use: no live lease and no static role may reference
    /// it, or their users could never be revoked or rotated again. The check and the delete are
    /// one statement, so a lease written concurrently (see `Store::insert_lease`) either
    /// blocks the delete or is refused itself.
    async fn delete_connection(&self, name: &str) -> Result<ConnectionDeletion>;

    /// Creates a role or replaces its fields (all but `created_at`).
    async fn upsert_role(&self, role: &Role) -> Result<()>;
    async fn get_role(&self, name: &str) -> Result<Option<Role>>;
    async fn list_roles(&self) -> Result<Vec<String>>;
    async fn delete_role(&self, name: &str) -> Result<bool>;

    /// Creates a password policy or replaces its text.
    async fn upsert_password_policy(
        &self,
        name: &str,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// The text of a password policy.
    async fn get_password_policy(&self, name: &str) -> Result<Option<String>>;
    async fn list_password_policies(&self) -> Result<Vec<String>>;
    /// Names of the connections whose `password_policy` is `name`.
    async fn connections_using_password_policy(&self, name: &str) -> Result<Vec<String>>;
    /// Deletes a policy. A connection naming it makes the foreign key refuse the delete, which
    /// comes back as a Conflict even if a connection took the policy up after the caller checked.
    async fn delete_password_policy(&self, name: &str) -> Result<()>;
    /// The `(name, text)` of the password policy `connection` uses, if it names one.
    async fn connection_password_policy_text(
        &self,
        connection: &str,
    ) -> Result<Option<(String, String)>>;
}

impl CatalogStore for Store {
    // ---- connections ------------------------------------------------------------------------

    async fn upsert_connection(&self, connection: &Connection) -> Result<()> {
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
        .bind(&connection.name)
        .bind(&connection.plugin_name)
        .bind(&connection.connection_url_sealed)
        .bind(&connection.username)
        .bind(&connection.password_sealed)
        .bind(encode_list(&connection.allowed_roles))
        .bind(connection.verify_connection)
        .bind(i64::from(connection.max_open_connections))
        .bind(encode_list(&connection.root_rotation_statements))
        .bind(&connection.tls_ca_sealed)
        .bind(&connection.tls_certificate_sealed)
        .bind(&connection.private_key_sealed)
        .bind(&connection.tls_certificate_key_sealed)
        .bind(&connection.tls_server_name)
        .bind(connection.tls_skip_verify)
        .bind(&connection.password_policy)
        .bind(to_millis(connection.created_at))
        .bind(to_millis(connection.updated_at))
        .bind(connection.disable_escaping)
        .bind(&connection.password_authentication)
        .bind(i64::from(connection.scram_iterations))
        .execute(pool)
        .await?.rows_affected()
        });
        self.cache.connections.forget(&connection.name);
        Ok(())
    }

    async fn get_connection(&self, name: &str) -> Result<Option<Connection>> {
        if let Some(cached) = self.cache.connections.get(name) {
            return Ok(Some(cached));
        }
        let generation = self.cache.connections.generation();
        let row: Option<ConnectionRow> = with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM connections WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await?);
        let connection = row.map(Connection::try_from).transpose()?;
        if let Some(connection) = &connection {
            self.cache
                .connections
                .put(generation, name, connection.clone());
        }
        Ok(connection)
    }

    async fn list_connections(&self) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT name FROM connections ORDER BY name"
        )
        .fetch_all(pool)
        .await?))
    }

    async fn delete_connection(&self, name: &str) -> Result<ConnectionDeletion> {
        let done = with_pool!(self, |pool| {
            sqlx::query(
            "DELETE FROM connections WHERE name = $1
                 AND NOT EXISTS (SELECT 1 FROM leases
                                 WHERE connection_name = $1 AND state IN ('creating', 'active', 'revoking'))
                 AND NOT EXISTS (SELECT 1 FROM static_roles WHERE db_name = $1)
                 AND NOT EXISTS (SELECT 1 FROM pooled_users WHERE connection_name = $1)",
        )
        .bind(name)
        .execute(pool)
        .await?.rows_affected()
        });
        self.cache.connections.forget(name);
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

    async fn upsert_role(&self, role: &Role) -> Result<()> {
        let options = codec::encode("roles", "options", &role.options)?;
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO roles (name, db_name, creation_statements, revocation_statements, rollback_statements,
                 renew_statements, default_ttl_secs, max_ttl_secs, username_template, options, created_at, updated_at,
                 database_per_lease, template_database, warm_pool_size)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (name) DO UPDATE SET db_name = excluded.db_name,
                 creation_statements = excluded.creation_statements, revocation_statements = excluded.revocation_statements,
                 rollback_statements = excluded.rollback_statements, renew_statements = excluded.renew_statements,
                 default_ttl_secs = excluded.default_ttl_secs, max_ttl_secs = excluded.max_ttl_secs,
                 username_template = excluded.username_template, options = excluded.options, updated_at = excluded.updated_at,
                 database_per_lease = excluded.database_per_lease, template_database = excluded.template_database,
                 warm_pool_size = excluded.warm_pool_size",
        )
        .bind(&role.name)
        .bind(&role.db_name)
        .bind(encode_list(&role.creation_statements))
        .bind(encode_list(&role.revocation_statements))
        .bind(encode_list(&role.rollback_statements))
        .bind(encode_list(&role.renew_statements))
        .bind(codec::to_secs(role.default_ttl))
        .bind(codec::to_secs(role.max_ttl))
        .bind(&role.username_template)
        .bind(&options)
        .bind(to_millis(role.created_at))
        .bind(to_millis(role.updated_at))
        .bind(role.database_per_lease)
        .bind(&role.template_database)
        .bind(i64::from(role.warm_pool_size))
        .execute(pool)
        .await?.rows_affected()
        });
        self.cache.roles.forget(&role.name);
        Ok(())
    }

    async fn get_role(&self, name: &str) -> Result<Option<Role>> {
        if let Some(cached) = self.cache.roles.get(name) {
            return Ok(Some(cached));
        }
        let generation = self.cache.roles.generation();
        let row: Option<RoleRow> = with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM roles WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await?);
        let role = row.map(Role::try_from).transpose()?;
        if let Some(role) = &role {
            self.cache.roles.put(generation, name, role.clone());
        }
        Ok(role)
    }

    async fn list_roles(&self) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT name FROM roles ORDER BY name"
        )
        .fetch_all(pool)
        .await?))
    }

    async fn delete_role(&self, name: &str) -> Result<bool> {
        let done = with_pool!(self, |pool| sqlx::query(
            "DELETE FROM roles WHERE name = $1"
        )
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected());
        self.cache.roles.forget(name);
        Ok(done > 0)
    }

    // ---- password policies (migration 0009) ------------------------------------------------

    async fn upsert_password_policy(
        &self,
        name: &str,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO password_policies (name, text, created_at, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET text = excluded.text, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(text)
        .bind(to_millis(now))
        .bind(to_millis(now))
        .execute(pool)
        .await?.rows_affected()
        });
        self.cache.password_policies.forget(name);
        Ok(())
    }

    async fn get_password_policy(&self, name: &str) -> Result<Option<String>> {
        if let Some(cached) = self.cache.password_policies.get(name) {
            return Ok(Some(cached));
        }
        let generation = self.cache.password_policies.generation();
        let text: Option<String> = with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT text FROM password_policies WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await?);
        if let Some(text) = &text {
            self.cache
                .password_policies
                .put(generation, name, text.clone());
        }
        Ok(text)
    }

    async fn list_password_policies(&self) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT name FROM password_policies ORDER BY name"
        )
        .fetch_all(pool)
        .await?))
    }

    async fn connections_using_password_policy(&self, name: &str) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT name FROM connections WHERE password_policy = $1 ORDER BY name",
        )
        .bind(name)
        .fetch_all(pool)
        .await?))
    }

    async fn delete_password_policy(&self, name: &str) -> Result<()> {
        let deleted = with_pool!(self, |pool| sqlx::query(
            "DELETE FROM password_policies WHERE name = $1"
        )
        .bind(name)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()));
        self.cache.password_policies.forget(name);
        match deleted {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                Err(Error::Conflict(format!(
                    "password policy {name} is in use by a connection; change its password_policy first"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn connection_password_policy_text(
        &self,
        connection: &str,
    ) -> Result<Option<(String, String)>> {
        Ok(with_pool!(self, |pool| sqlx::query_as(
            "SELECT p.name, p.text FROM connections c
                 JOIN password_policies p ON p.name = c.password_policy
             WHERE c.name = $1",
        )
        .bind(connection)
        .fetch_optional(pool)
        .await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A column that does not decode is an internal error naming its table and column, never a
    /// panic or a silently empty list.
    #[tokio::test]
    async fn a_malformed_list_names_its_table_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("lessor.db").display().to_string())
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO connections (name, plugin_name, connection_url_sealed, username,
                 password_sealed, allowed_roles, created_at, updated_at)
             VALUES ('db', 'postgresql-database-plugin', '', '', '', 'not json', 0, 0)",
        )
        .execute(store.sqlite_pool().unwrap())
        .await
        .unwrap();
        let error = store.get_connection("db").await.unwrap_err();
        assert!(
            matches!(&error, Error::Internal(m) if m.contains("connections.allowed_roles")),
            "{error}"
        );
        store.close().await;
    }
}
