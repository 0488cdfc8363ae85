//! Handlers for the database secrets engine paths: `database/config`, `database/roles`,
//! `database/creds` and `database/reset`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{listing, respond, with_unknown, written, ApiResult, Body, Caller, Envelope};
use crate::catalog::{check_name, options_from_json, ConnectionInput, RoleInput};
use crate::lease::Requester;
use crate::AppState;

pub async fn list_connections(State(state): State<AppState>, _caller: Caller) -> ApiResult {
    listing(state.catalog.list_connections().await?)
}

pub async fn read_connection(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
    uri: axum::http::Uri,
) -> ApiResult {
    if super::wants_list(&uri) {
        return Err(super::ApiError::empty_not_found());
    }
    Ok(respond(state.catalog.read_connection(&name).await?))
}

pub async fn write_connection(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
    mut body: Body,
) -> ApiResult {
    check_name("connection name", &name)?;
    let input = ConnectionInput {
        plugin_name: body.string("plugin_name")?,
        connection_url: body.secret("connection_url")?,
        username: body.string("username")?,
        password: body.secret("password")?,
        allowed_roles: body.string_list("allowed_roles", true)?,
        verify_connection: body.boolean("verify_connection")?,
        max_open_connections: body.integer("max_open_connections")?,
        root_rotation_statements: body.string_list("root_rotation_statements", false)?,
    };
    // Accepted for Vault compatibility and not used.
    for ignored in [
        "plugin_version",
        "password_policy",
        "max_idle_connections",
        "max_connection_lifetime",
    ] {
        body.0.remove(ignored);
    }
    let template_ignored = body.0.contains_key("username_template");
    let mut warnings = with_unknown(&body, state.catalog.write_connection(&name, input).await?);
    if template_ignored {
        // Vault keeps the template on the connection; Lessor keeps it on each role.
        warnings.push(
            "username_template is set per role in Lessor, not on the connection; it was ignored"
                .into(),
        );
    }
    Ok(written(warnings))
}

pub async fn delete_connection(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    state.catalog.delete_connection(&name).await?;
    Ok(written(vec![]))
}

pub async fn reset_connection(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    state.catalog.reset_connection(&name).await?;
    Ok(written(vec![]))
}

pub async fn list_roles(State(state): State<AppState>, _caller: Caller) -> ApiResult {
    listing(state.catalog.list_roles().await?)
}

pub async fn read_role(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
    uri: axum::http::Uri,
) -> ApiResult {
    if super::wants_list(&uri) {
        return Err(super::ApiError::empty_not_found());
    }
    Ok(respond(state.catalog.read_role(&name).await?))
}

pub async fn write_role(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
    mut body: Body,
) -> ApiResult {
    check_name("role name", &name)?;
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
    };
    body.0.remove("credential_type");
    let warnings = state.catalog.write_role(&name, input).await?;
    Ok(written(with_unknown(&body, warnings)))
}

pub async fn delete_role(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    state.catalog.delete_role(&name).await?;
    Ok(written(vec![]))
}

/// `GET database/creds/:role`: a new user, returned once with its lease.
pub async fn issue_creds(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    check_name("role name", &name)?;
    let requester = Requester {
        // The entity owns the lease, so the same workload logging in again keeps control of it.
        accessor: caller.identity.entity_id.clone(),
        display_name: caller.identity.display_name.clone(),
        token_accessor: Some(caller.identity.accessor.clone()),
    };
    let issued = state.leases.issue(&name, &requester).await?;
    let mut envelope = Envelope::new(json!({
        "username": issued.username,
        "password": issued.password.expose(),
    }));
    envelope.lease_id = issued.lease_id;
    envelope.renewable = true;
    envelope.lease_duration = issued.lease_duration.as_secs();
    envelope.mount_type = "database";
    Ok(Json(envelope).into_response())
}
