//! What `lessor dev` sets up so a credential can be had at once on a fresh machine: the local
//! PostgreSQL as connection `dev-postgres` with role `readonly`, and the local MariaDB/MySQL as
//! `dev-mysql` with role `mysql-readonly`, each only when the database answers.

use std::time::Duration;

use lessor_plugin::Secret;

use crate::catalog::{ConnectionInput, RoleInput};
use crate::AppState;

/// Default admin URL of the local PostgreSQL.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Default admin URL of the local MariaDB or MySQL.
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/";

/// What was registered, for the start-up banner.
#[derive(Debug, Default)]
pub struct DevRegistration {
    pub registered: Vec<String>,
    pub skipped: Vec<String>,
}

/// Registers the local databases that answer. A database that does not answer is reported, not
/// fatal: `lessor dev` still serves.
pub async fn register_local_databases(
    state: &AppState,
    postgres_url: &str,
    mysql_url: &str,
) -> DevRegistration {
    let mut outcome = DevRegistration::default();
    let postgres = ConnectionInput {
        plugin_name: Some("postgresql-database-plugin".into()),
        connection_url: Some(Secret::new(postgres_url)),
        allowed_roles: Some(vec!["*".into()]),
        ..Default::default()
    };
    // Membership in pg_read_all_data, never per-user table grants (which overflow pg_class.relacl
    // after a few thousand live users).
    let readonly = RoleInput {
        db_name: Some("dev-postgres".into()),
        creation_statements: Some(vec![
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE pg_read_all_data;".into(),
        ]),
        default_ttl: Some(Duration::from_secs(3600)),
        max_ttl: Some(Duration::from_secs(24 * 3600)),
        ..Default::default()
    };
    register(
        state,
        "dev-postgres",
        postgres,
        "readonly",
        readonly,
        &mut outcome,
    )
    .await;

    let mysql = ConnectionInput {
        plugin_name: Some("mysql-database-plugin".into()),
        connection_url: Some(Secret::new(mysql_url)),
        allowed_roles: Some(vec!["*".into()]),
        ..Default::default()
    };
    let mysql_readonly = RoleInput {
        db_name: Some("dev-mysql".into()),
        creation_statements: Some(vec![
            "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT SELECT ON *.* TO '{{name}}'@'%';".into(),
        ]),
        default_ttl: Some(Duration::from_secs(3600)),
        max_ttl: Some(Duration::from_secs(24 * 3600)),
        ..Default::default()
    };
    register(
        state,
        "dev-mysql",
        mysql,
        "mysql-readonly",
        mysql_readonly,
        &mut outcome,
    )
    .await;
    outcome
}

async fn register(
    state: &AppState,
    connection: &str,
    input: ConnectionInput,
    role: &str,
    role_input: RoleInput,
    outcome: &mut DevRegistration,
) {
    if let Err(error) = state.catalog.write_connection(connection, input).await {
        outcome.skipped.push(format!("{connection}: {error}"));
        return;
    }
    match state.catalog.write_role(role, role_input).await {
        Ok(_) => outcome
            .registered
            .push(format!("{connection} (role {role})")),
        Err(error) => outcome
            .skipped
            .push(format!("{connection} role {role}: {error}")),
    }
}

/// Revokes every live lease of a dev server whose store is about to be deleted: with the store
/// gone nothing would ever drop those users (and MariaDB users never expire by themselves).
/// Returns how many leases were revoked; a lease whose revocation fails is reported in the error.
pub async fn revoke_everything(state: &AppState) -> crate::Result<usize> {
    let revoked = state.leases.revoke_prefix("database/", false).await;
    state.engines.close_all().await;
    revoked
}
