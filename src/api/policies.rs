//! Handlers for ACL policies: `sys/policies/acl[/:name]` and the older `sys/policy[/:name]` that
//! some clients (older hvac) still use; and password policies, `sys/policies/password[/:name]`
//! and `sys/policies/password/:name/generate`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::gate::current_request_id;
use super::routes::{field, BodyField, FieldKind};
use super::{listing, respond, written, ApiError, ApiResult, Body, Routes};

/// `sys/policies/acl/:name`: the policy text.
const ACL_BODY: &[BodyField] = &[field("policy", FieldKind::String)];
/// `sys/policy/:name`: Vault's older path takes the text as `policy` or `rules`.
const LEGACY_BODY: &[BodyField] = &[
    field("policy", FieldKind::String),
    field("rules", FieldKind::String),
];
use crate::names::PolicyName;
use crate::password_policy::PasswordPolicies;
use crate::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .list("/v1/sys/policies/acl", list_acl)
        .list("/v1/sys/policies/acl/", list_acl)
        .read("/v1/sys/policies/acl/{name}", read_acl)
        .write("/v1/sys/policies/acl/{name}", write_acl)
        .body(ACL_BODY)
        .delete("/v1/sys/policies/acl/{name}", delete_policy)
        // The older path answers a plain GET with the list, as Vault's does.
        .read("/v1/sys/policy", list_legacy)
        .read("/v1/sys/policy/{name}", read_legacy)
        .write("/v1/sys/policy/{name}", write_legacy)
        .body(LEGACY_BODY)
        .delete("/v1/sys/policy/{name}", delete_policy)
        .list("/v1/sys/policies/password", list_password)
        .list("/v1/sys/policies/password/", list_password)
        .read("/v1/sys/policies/password/{name}", read_password)
        .write("/v1/sys/policies/password/{name}", write_password)
        .body(ACL_BODY)
        .delete("/v1/sys/policies/password/{name}", delete_password)
        .read(
            "/v1/sys/policies/password/{name}/generate",
            generate_password,
        )
}

async fn list_acl(State(state): State<AppState>) -> ApiResult {
    listing(state.policies.list().await?)
}

async fn read_acl(State(state): State<AppState>, name: PolicyName) -> ApiResult {
    let text = state.policies.read(&name).await?;
    Ok(respond(json!({ "name": name.as_str(), "policy": text })))
}

async fn write(state: &AppState, name: &str, mut body: Body, fields: &[&str]) -> ApiResult {
    let mut text = None;
    for field in fields {
        if let Some(value) = body.string(field)? {
            text.get_or_insert(value);
        }
    }
    let text = text.ok_or_else(|| ApiError::bad_request(format!("{}: required", fields[0])))?;
    body.finish()?;
    state.policies.write(name, &text).await?;
    Ok(written(vec![]))
}

async fn write_acl(State(state): State<AppState>, name: PolicyName, body: Body) -> ApiResult {
    write(&state, &name, body, &["policy"]).await
}

async fn delete_policy(State(state): State<AppState>, name: PolicyName) -> ApiResult {
    state.policies.delete(&name).await?;
    Ok(written(vec![]))
}

/// `GET sys/policy`: Vault answers `{"policies": [...], "keys": [...]}` at the top level too.
async fn list_legacy(State(state): State<AppState>) -> ApiResult<Response> {
    let names = state.policies.list().await?;
    Ok(Json(json!({
        "request_id": current_request_id(),
        "policies": names,
        "keys": names,
        "data": { "policies": names, "keys": names },
    }))
    .into_response())
}

async fn read_legacy(State(state): State<AppState>, name: PolicyName) -> ApiResult<Response> {
    let text = state.policies.read(&name).await?;
    let name = name.as_str();
    Ok(Json(json!({
        "request_id": current_request_id(),
        "name": name,
        "rules": text,
        "data": { "name": name, "rules": text },
    }))
    .into_response())
}

async fn write_legacy(State(state): State<AppState>, name: PolicyName, body: Body) -> ApiResult {
    write(&state, &name, body, &["policy", "rules"]).await
}

fn password_policies(state: &AppState) -> PasswordPolicies {
    PasswordPolicies::new(state.store.clone())
}

async fn list_password(State(state): State<AppState>) -> ApiResult {
    listing(password_policies(&state).list().await?)
}

async fn read_password(State(state): State<AppState>, name: PolicyName) -> ApiResult {
    let text = password_policies(&state).read(&name).await?;
    Ok(respond(json!({ "policy": text })))
}

async fn write_password(
    State(state): State<AppState>,
    name: PolicyName,
    mut body: Body,
) -> ApiResult {
    let text = body
        .string("policy")?
        .ok_or_else(|| ApiError::bad_request("policy: required"))?;
    body.finish()?;
    password_policies(&state).write(&name, &text).await?;
    super::database::drain_pools_under_password_policy(&state, &name).await?;
    Ok(written(vec![]))
}

async fn delete_password(State(state): State<AppState>, name: PolicyName) -> ApiResult {
    // A policy in use is refused here, so no pool was made by it.
    password_policies(&state).delete(&name).await?;
    Ok(written(vec![]))
}

/// `GET sys/policies/password/:name/generate`: one password from the policy, as Vault answers.
async fn generate_password(State(state): State<AppState>, name: PolicyName) -> ApiResult {
    let password = password_policies(&state).generate(&name).await?;
    Ok(respond(json!({ "password": password.expose() })))
}
