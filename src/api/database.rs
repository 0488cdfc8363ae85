//! Handlers for the database secrets engine paths: `database/config`, `database/roles`,
//! `database/creds` and `database/reset`.
//!
//! Names arrive as checked types and bodies are finished with [`Body::finish`]: a field this
//! engine does not implement is refused with a 400 naming it, never accepted and ignored.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::routes::{field, BodyField, FieldKind};
use super::{listing, respond, written, ApiResult, Body, Caller, Envelope, QueryParams};
use crate::catalog::{options_from_json, AddressInput, ConnectionInput, RoleInput, TlsInput};
use crate::lease::Requester;
use crate::names::{ConnectionName, RoleName};
use crate::AppState;

pub async fn list_connections(State(state): State<AppState>, _caller: Caller) -> ApiResult {
    listing(state.catalog.list_connections().await?)
}

/// `?verify=true` on `GET database/config/:name`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadConnectionQuery {
    verify: Option<String>,
}

/// The query parameters of `GET database/config/:name`, as the route table declares them.
pub const READ_CONNECTION_QUERY: &[&str] = &["verify"];

/// `GET database/config/:name`: the connection as stored; with `?verify=true` also whether its
/// database answers now (`reachability`), checked without side effects (see
/// [`crate::catalog::Catalog::check_reachable`]). Reading the config is what authorizes both:
/// whoever may see a connection may see whether it is up.
pub async fn read_connection(
    State(state): State<AppState>,
    _caller: Caller,
    name: ConnectionName,
    QueryParams(query): QueryParams<ReadConnectionQuery>,
) -> ApiResult {
    let verify = match query.verify.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(super::ApiError::bad_request("verify: true or false")),
    };
    let mut view = state.catalog.read_connection(&name).await?;
    if verify {
        view.reachability = Some(state.catalog.check_reachable(&name).await?);
    }
    Ok(respond(view))
}

/// Vault's connection fields that Lessor does not implement yet, and why; a client sending one
/// with a meaning gets a 400 rather than a setting it asked for silently ignored.
const UNSUPPORTED_CONNECTION_FIELDS: &[(&str, &str)] = &[
    (
        "username_template",
        "Lessor keeps the username template on each role (database/roles/:name username_template)",
    ),
    (
        "max_idle_connections",
        "not supported; max_open_connections sizes the pool",
    ),
    ("max_connection_lifetime", "not supported"),
    ("plugin_version", "plugin versions are not supported"),
];

/// The body of `database/config/:name`, as [`write_connection`] reads it.
pub const CONNECTION_BODY: &[BodyField] = &[
    field("plugin_name", FieldKind::String),
    field("connection_url", FieldKind::Secret),
    field("username", FieldKind::String),
    field("password", FieldKind::Secret),
    field("allowed_roles", FieldKind::StringList),
    field("verify_connection", FieldKind::Boolean),
    field("max_open_connections", FieldKind::Integer),
    field("root_rotation_statements", FieldKind::StringList),
    field("password_policy", FieldKind::String),
    field("tls_ca", FieldKind::Secret),
    field("tls_certificate", FieldKind::Secret),
    field("private_key", FieldKind::Secret),
    field("tls_certificate_key", FieldKind::Secret),
    field("tls_server_name", FieldKind::String),
    field("tls_skip_verify", FieldKind::Boolean),
    field("disable_escaping", FieldKind::Boolean),
    field("password_authentication", FieldKind::String),
    field("scram_iterations", FieldKind::Integer),
    // Vault's address fields, for engines whose Vault plugin takes them (Redis).
    field("host", FieldKind::String),
    field("port", FieldKind::Integer),
    field("tls", FieldKind::Boolean),
    field("insecure_tls", FieldKind::Boolean),
    field("ca_cert", FieldKind::Secret),
];

/// The body of `database/roles/:name`, as [`write_role`] reads it.
pub const ROLE_BODY: &[BodyField] = &[
    field("db_name", FieldKind::String),
    field("creation_statements", FieldKind::StringList),
    field("revocation_statements", FieldKind::StringList),
    field("rollback_statements", FieldKind::StringList),
    field("renew_statements", FieldKind::StringList),
    field("default_ttl", FieldKind::Duration),
    field("max_ttl", FieldKind::Duration),
    field("username_template", FieldKind::String),
    field("credential_type", FieldKind::String),
    field("options", FieldKind::Object),
    field("database_per_lease", FieldKind::Boolean),
    field("template_database", FieldKind::String),
    field("warm_pool_size", FieldKind::Integer),
];

pub async fn write_connection(
    State(state): State<AppState>,
    _caller: Caller,
    name: ConnectionName,
    mut body: Body,
) -> ApiResult {
    let input = ConnectionInput {
        plugin_name: body.string("plugin_name")?,
        connection_url: body.secret("connection_url")?,
        username: body.string("username")?,
        password: body.secret("password")?,
        allowed_roles: body.string_list("allowed_roles", true)?,
        verify_connection: body.boolean("verify_connection")?,
        max_open_connections: body.integer("max_open_connections")?,
        root_rotation_statements: body.string_list("root_rotation_statements", false)?,
        password_policy: body.string("password_policy")?,
        tls: TlsInput {
            tls_ca: body.secret("tls_ca")?,
            tls_certificate: body.secret("tls_certificate")?,
            private_key: body.secret("private_key")?,
            tls_certificate_key: body.secret("tls_certificate_key")?,
            tls_server_name: body.string("tls_server_name")?,
            tls_skip_verify: body.boolean("tls_skip_verify")?,
        },
        disable_escaping: body.boolean("disable_escaping")?,
        password_authentication: body.string("password_authentication")?,
        scram_iterations: body.integer("scram_iterations")?,
        address: AddressInput {
            host: body.string("host")?,
            port: body.integer("port")?,
            tls: body.boolean("tls")?,
            insecure_tls: body.boolean("insecure_tls")?,
            ca_cert: body.secret("ca_cert")?,
        },
    };
    for (field, why) in UNSUPPORTED_CONNECTION_FIELDS {
        body.refuse_unsupported(field, why)?;
    }
    body.finish()?;
    // Pooled users were made through the connection as it is now: they go first, through it, so
    // that none is left where changed settings (another server, say) would no longer reach; and
    // none is made until the new settings are written.
    let _paused = state.leases.pause_warm_pools_on(&name).await;
    drain_pools_on_connection(&state, &name).await?;
    Ok(written(state.catalog.write_connection(&name, input).await?))
}

/// Drops the warm pools of every role on a connection that generates its passwords by the
/// password policy `policy`: their passwords were made under the policy's old rules. Called
/// after the policy changed: a user whose creation is still running then is dropped when it
/// finishes (the drain started a new generation of its pool), and the refill generates by the
/// new rules.
pub(super) async fn drain_pools_under_password_policy(
    state: &AppState,
    policy: &str,
) -> Result<(), super::ApiError> {
    for connection in state.catalog.list_connections().await? {
        if let Ok(found) = state.catalog.read_connection(&connection).await {
            if found.password_policy == policy {
                drain_pools_on_connection(state, &connection).await?;
            }
        }
    }
    Ok(())
}

/// Drops the warm pools of every role on `connection` (they refill afterwards, if the role can
/// still be issued).
async fn drain_pools_on_connection(
    state: &AppState,
    connection: &str,
) -> Result<(), super::ApiError> {
    for role in state.catalog.list_roles().await? {
        if let Ok(found) = state.catalog.role(&role).await {
            if found.db_name == connection && found.warm_pool_size > 0 {
                state.leases.drain_warm_pool(&role).await?;
            }
        }
    }
    Ok(())
}

pub async fn delete_connection(
    State(state): State<AppState>,
    _caller: Caller,
    name: ConnectionName,
) -> ApiResult {
    // Pooled users of the connection's roles go first: they are not leases, but their users
    // could never be dropped without it. None is made meanwhile, or the delete would find it.
    let _paused = state.leases.pause_warm_pools_on(&name).await;
    drain_pools_on_connection(&state, &name).await?;
    state.catalog.delete_connection(&name).await?;
    Ok(written(vec![]))
}

pub async fn reset_connection(
    State(state): State<AppState>,
    _caller: Caller,
    name: ConnectionName,
    body: Body,
) -> ApiResult {
    body.finish()?;
    state.catalog.reset_connection(&name).await?;
    Ok(written(vec![]))
}

/// `database/reload/:plugin_name`: every connection using that plugin reconnects on next use with
/// its stored settings (Vault's answer: which connections, how many).
pub async fn reload_plugin(
    State(state): State<AppState>,
    _caller: Caller,
    axum::extract::Path(plugin_name): axum::extract::Path<String>,
    mut body: Body,
) -> ApiResult {
    body.refuse_unsupported("scope", "there is one node; reload is always local")?;
    body.finish()?;
    let reloaded = state.catalog.reload_plugin(&plugin_name).await?;
    Ok(respond(
        json!({ "connections": reloaded, "count": reloaded.len() }),
    ))
}

pub async fn list_roles(State(state): State<AppState>, _caller: Caller) -> ApiResult {
    listing(state.catalog.list_roles().await?)
}

pub async fn read_role(
    State(state): State<AppState>,
    _caller: Caller,
    name: RoleName,
) -> ApiResult {
    let mut view = state.catalog.read_role(&name).await?;
    if view.warm_pool_size > 0 {
        view.warm_pool_ready = Some(state.leases.warm_pool().ready(&name));
    }
    Ok(respond(view))
}

pub async fn write_role(
    State(state): State<AppState>,
    _caller: Caller,
    name: RoleName,
    mut body: Body,
) -> ApiResult {
    let options = match body.object("options")? {
        Some(value) => Some(options_from_json(&value)?),
        None => None,
    };
    let input = RoleInput {
        db_name: body.string("db_name")?,
        creation_statements: body.string_list("creation_statements", false)?,
        revocation_statements: body.string_list("revocation_statements", false)?,
        rollback_statements: body.string_list("rollback_statements", false)?,
        renew_statements: body.string_list("renew_statements", false)?,
        default_ttl: body.duration("default_ttl")?,
        max_ttl: body.duration("max_ttl")?,
        username_template: body.string("username_template")?,
        options,
        database_per_lease: body.boolean("database_per_lease")?,
        template_database: body.string("template_database")?,
        warm_pool_size: body.integer("warm_pool_size")?,
    };
    match body.string("credential_type")?.as_deref() {
        None | Some("") | Some("password") => {}
        Some(other) => {
            return Err(super::ApiError::bad_request(format!(
                "credential_type: only \"password\" is supported, not {other:?}"
            )))
        }
    }
    body.refuse_unsupported(
        "credential_config",
        "only password credentials are supported, which take no configuration",
    )?;
    body.finish()?;
    let before = state
        .catalog
        .role(&name)
        .await
        .ok()
        .map(|role| crate::lease::pool::fingerprint(&role));
    let mut warnings = state.catalog.write_role(&name, input).await?;
    if let Some(warning) = state.leases.warm_pool_role_written(&name, before).await {
        warnings.push(warning);
    }
    Ok(written(warnings))
}

pub async fn delete_role(
    State(state): State<AppState>,
    _caller: Caller,
    name: RoleName,
) -> ApiResult {
    state.catalog.delete_role(&name).await?;
    // No user made for the role may be issued any more, nor kept.
    state.leases.drain_warm_pool(&name).await?;
    Ok(written(vec![]))
}

/// `GET database/creds/:role`: a new user, returned once with its lease.
pub async fn issue_creds(
    State(state): State<AppState>,
    caller: Caller,
    name: RoleName,
) -> ApiResult<Response> {
    let requester = Requester {
        // The entity owns the lease, so the same workload logging in again keeps control of it.
        accessor: caller.identity.entity_id.clone(),
        display_name: caller.identity.display_name.clone(),
        token_accessor: Some(caller.identity.accessor.clone()),
    };
    let issued = state.leases.issue(&name, &requester).await?;
    let mut data = json!({
        "username": issued.username,
        "password": issued.password.expose(),
    });
    if let Some(database) = &issued.database {
        data["database"] = json!(database);
        data["connection_url"] = json!(issued.connection_url);
    }
    let mut envelope = Envelope::new(data);
    envelope.lease_id = issued.lease_id;
    envelope.renewable = true;
    envelope.lease_duration = issued.lease_duration.as_secs();
    envelope.mount_type = "database";
    Ok(Json(envelope).into_response())
}
