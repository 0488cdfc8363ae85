//! What `lessor dev` sets up so a credential can be had at once on a fresh machine: each built-in
//! engine's local server (its descriptor's `local` target: PostgreSQL as connection
//! `dev-postgres` with role `readonly`, MariaDB/MySQL as `dev-mysql` with role `mysql-readonly`,
//! Redis as `dev-redis` with role `redis-readonly`), each only when the server answers.

use std::time::Duration;

use lessor_plugin::Secret;

use crate::catalog::{ConnectionInput, RoleInput};
use crate::AppState;

/// What was registered, for the start-up banner.
#[derive(Debug, Default)]
pub struct DevRegistration {
    pub registered: Vec<String>,
    /// The roles registered, in the same order, for the banner's example.
    pub roles: Vec<&'static str>,
    pub skipped: Vec<String>,
}

/// Registers the local server of every engine that answers, at its descriptor's admin URL or the
/// one its environment variable (`LESSOR_DEV_POSTGRES_URL`, ...) names. A server that does not
/// answer is reported, not fatal: `lessor dev` still serves.
pub async fn register_local_databases(state: &AppState) -> DevRegistration {
    let mut outcome = DevRegistration::default();
    for engine in crate::engines::ENGINES {
        let local = &engine.local;
        let url = std::env::var(local.url_env).unwrap_or_else(|_| local.admin_url.to_owned());
        let connection = ConnectionInput {
            plugin_name: Some(engine.plugin_name().into()),
            connection_url: Some(Secret::new(url)),
            allowed_roles: Some(vec!["*".into()]),
            ..Default::default()
        };
        let role = RoleInput {
            db_name: Some(local.connection.into()),
            creation_statements: Some(
                local
                    .readonly_creation
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
            ),
            default_ttl: Some(Duration::from_secs(3600)),
            max_ttl: Some(Duration::from_secs(24 * 3600)),
            ..Default::default()
        };
        register(
            state,
            local.connection,
            connection,
            local.role,
            role,
            &mut outcome,
        )
        .await;
    }
    outcome
}

async fn register(
    state: &AppState,
    connection: &str,
    input: ConnectionInput,
    role: &'static str,
    role_input: RoleInput,
    outcome: &mut DevRegistration,
) {
    if let Err(error) = state.catalog.write_connection(connection, input).await {
        outcome.skipped.push(format!("{connection}: {error}"));
        return;
    }
    match state.catalog.write_role(role, role_input).await {
        Ok(_) => {
            outcome
                .registered
                .push(format!("{connection} (role {role})"));
            outcome.roles.push(role);
        }
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
