//! Handlers for static roles and rotation: `database/static-roles`, `database/static-creds`,
//! `database/rotate-role` and `database/rotate-root`, with Vault's field names so hvac's
//! `create_static_role`, `get_static_credentials`, `rotate_static_role_credentials` and
//! `rotate_root_credentials` work unchanged.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::routes::{field, BodyField, FieldKind};
use super::{listing, respond, written, ApiError, ApiResult, Body, Caller, Envelope};

/// The body of `database/static-roles/:name`, as [`write_static_role`] reads it.
pub const STATIC_ROLE_BODY: &[BodyField] = &[
    field("db_name", FieldKind::String),
    field("username", FieldKind::String),
    field("alternate_username", FieldKind::String),
    field("rotation_period", FieldKind::Duration),
    field("rotation_schedule", FieldKind::String),
    field("rotation_window", FieldKind::Duration),
    field("rotation_statements", FieldKind::StringList),
    field("skip_import_rotation", FieldKind::Boolean),
    field("password", FieldKind::Secret),
    field("credential_type", FieldKind::String),
];
use crate::names::{ConnectionName, StaticRoleName};
use crate::rotation::StaticRoleInput;
use crate::AppState;

pub async fn list_static_roles(State(state): State<AppState>, _caller: Caller) -> ApiResult {
    listing(state.rotation.list_static_roles().await?)
}

pub async fn read_static_role(
    State(state): State<AppState>,
    _caller: Caller,
    name: StaticRoleName,
) -> ApiResult {
    Ok(respond(state.rotation.read_static_role(&name).await?))
}

pub async fn write_static_role(
    State(state): State<AppState>,
    _caller: Caller,
    name: StaticRoleName,
    mut body: Body,
) -> ApiResult {
    let input = StaticRoleInput {
        db_name: body.string("db_name")?,
        username: body.string("username")?,
        alternate_username: body.string("alternate_username")?,
        rotation_period: body.duration("rotation_period")?.filter(|d| !d.is_zero()),
        rotation_schedule: body.string("rotation_schedule")?,
        rotation_window: body.duration("rotation_window")?,
        rotation_statements: body.string_list("rotation_statements", false)?,
        skip_import_rotation: body.boolean("skip_import_rotation")?,
        password: body.secret("password")?,
    };
    match body.string("credential_type")?.as_deref() {
        None | Some("") | Some("password") => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "credential_type: only \"password\" is supported",
            ))
        }
    }
    body.refuse_unsupported(
        "credential_config",
        "only password credentials are supported, which take no configuration",
    )?;
    body.finish()?;
    Ok(written(
        state.rotation.write_static_role(&name, input).await?,
    ))
}

pub async fn delete_static_role(
    State(state): State<AppState>,
    _caller: Caller,
    name: StaticRoleName,
) -> ApiResult {
    state.rotation.delete_static_role(&name).await?;
    Ok(written(vec![]))
}

/// `GET database/static-creds/:name`: the role's current username and password.
pub async fn read_static_creds(
    State(state): State<AppState>,
    _caller: Caller,
    name: StaticRoleName,
) -> ApiResult<Response> {
    let creds = state.rotation.static_credentials(&name).await?;
    let mut data = Map::new();
    data.insert("username".into(), json!(creds.username));
    data.insert("password".into(), json!(creds.password.expose()));
    data.insert(
        "last_vault_rotation".into(),
        json!(creds.last_vault_rotation),
    );
    data.insert("ttl".into(), json!(creds.ttl));
    if let Some(period) = creds.rotation_period {
        data.insert("rotation_period".into(), json!(period));
    }
    if let Some(schedule) = creds.rotation_schedule {
        data.insert("rotation_schedule".into(), json!(schedule));
        data.insert(
            "rotation_window".into(),
            json!(creds.rotation_window.unwrap_or(0)),
        );
    }
    let mut envelope = Envelope::new(Value::Object(data));
    envelope.mount_type = "database";
    Ok(Json(envelope).into_response())
}

/// `POST database/rotate-role/:name`: rotates the static role's password now.
pub async fn rotate_role(
    State(state): State<AppState>,
    _caller: Caller,
    name: StaticRoleName,
    body: Body,
) -> ApiResult {
    body.finish()?;
    state.rotation.rotate_static_role(&name).await?;
    Ok(written(vec![]))
}

/// `POST database/rotate-root/:connection`: rotates the connection's admin password.
pub async fn rotate_root(
    State(state): State<AppState>,
    _caller: Caller,
    name: ConnectionName,
    body: Body,
) -> ApiResult {
    body.finish()?;
    state.rotation.rotate_root(&name).await?;
    Ok(written(vec![]))
}
