//! Handlers for ACL policies: `sys/policies/acl[/:name]` and the older `sys/policy[/:name]` that
//! some clients (older hvac) still use.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::gate::current_request_id;
use super::{listing, respond, with_unknown, written, ApiError, ApiResult, Body};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sys/policies/acl", get(list_acl))
        .route("/v1/sys/policies/acl/", get(list_acl))
        .route(
            "/v1/sys/policies/acl/{name}",
            get(read_acl)
                .post(write_acl)
                .put(write_acl)
                .delete(delete_policy),
        )
        .route("/v1/sys/policy", get(list_legacy))
        .route(
            "/v1/sys/policy/{name}",
            get(read_legacy)
                .post(write_legacy)
                .put(write_legacy)
                .delete(delete_policy),
        )
}

async fn list_acl(State(state): State<AppState>, uri: axum::http::Uri) -> ApiResult {
    if !super::wants_list(&uri) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "use LIST (or GET ?list=true) to list policies",
        ));
    }
    listing(state.policies.list().await?)
}

async fn read_acl(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult {
    let text = state.policies.read(&name).await?;
    Ok(respond(
        json!({ "name": name.to_lowercase(), "policy": text }),
    ))
}

async fn write(state: &AppState, name: &str, body: &mut Body, fields: &[&str]) -> ApiResult {
    let mut text = None;
    for field in fields {
        if let Some(value) = body.string(field)? {
            text.get_or_insert(value);
        }
    }
    let text = text.ok_or_else(|| ApiError::bad_request(format!("{}: required", fields[0])))?;
    let warnings = with_unknown(body, Vec::new());
    state.policies.write(name, &text).await?;
    Ok(written(warnings))
}

async fn write_acl(
    State(state): State<AppState>,
    Path(name): Path<String>,
    mut body: Body,
) -> ApiResult {
    write(&state, &name, &mut body, &["policy"]).await
}

async fn delete_policy(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult {
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

async fn read_legacy(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let text = state.policies.read(&name).await?;
    let name = name.to_lowercase();
    Ok(Json(json!({
        "request_id": current_request_id(),
        "name": name,
        "rules": text,
        "data": { "name": name, "rules": text },
    }))
    .into_response())
}

async fn write_legacy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    mut body: Body,
) -> ApiResult {
    write(&state, &name, &mut body, &["policy", "rules"]).await
}
