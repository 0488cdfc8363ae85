//! Handlers for `auth/token/*` (create, renew-self, revoke-self, lookup, lookup-accessor,
//! revoke-accessor) and the JWT auth method `auth/jwt/{config,role/:name,login}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::gate::current_request_id;
use super::{listing, respond, with_unknown, written, ApiError, ApiResult, Body, Caller};
use crate::auth::jwt::{JwtConfig, JwtRole};
use crate::auth::tokens::{IssuedToken, TokenRequest};
use crate::AppState;

/// The routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/auth/token/create",
            post(create_token).put(create_token),
        )
        .route(
            "/v1/auth/token/renew-self",
            post(renew_self).put(renew_self),
        )
        .route(
            "/v1/auth/token/revoke-self",
            post(revoke_self).put(revoke_self),
        )
        .route(
            "/v1/auth/token/lookup",
            post(lookup_token).put(lookup_token),
        )
        .route(
            "/v1/auth/token/lookup-accessor",
            post(lookup_accessor).put(lookup_accessor),
        )
        .route(
            "/v1/auth/token/revoke-accessor",
            post(revoke_accessor).put(revoke_accessor),
        )
        .route(
            "/v1/auth/jwt/config",
            get(read_jwt_config)
                .post(write_jwt_config)
                .put(write_jwt_config),
        )
        .route("/v1/auth/jwt/role", get(list_jwt_roles))
        .route("/v1/auth/jwt/role/", get(list_jwt_roles))
        .route(
            "/v1/auth/jwt/role/{name}",
            get(read_jwt_role)
                .post(write_jwt_role)
                .put(write_jwt_role)
                .delete(delete_jwt_role),
        )
        .route("/v1/auth/jwt/login", post(jwt_login).put(jwt_login))
}

/// Vault's answer to a login or token creation: the token in `auth`, no `data`.
fn auth_response(issued: &IssuedToken, warnings: Vec<String>) -> Response {
    Json(json!({
        "request_id": current_request_id(),
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": null,
        "wrap_info": null,
        "warnings": if warnings.is_empty() { Value::Null } else { json!(warnings) },
        "auth": issued.auth_json(),
        "mount_type": "",
    }))
    .into_response()
}

fn string_map(field: &str, value: Option<Value>) -> Result<Map<String, Value>, ApiError> {
    match value {
        None => Ok(Map::new()),
        Some(Value::Object(map)) if map.values().all(Value::is_string) => Ok(map),
        Some(_) => Err(ApiError::bad_request(format!(
            "{field}: expected an object of strings"
        ))),
    }
}

pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    mut body: Body,
) -> ApiResult {
    let request = TokenRequest {
        policies: body.string_list("policies", true)?,
        ttl: body.duration("ttl")?,
        explicit_max_ttl: body.duration("explicit_max_ttl")?,
        renewable: body.boolean("renewable")?,
        display_name: body.string("display_name")?,
        no_default_policy: body.boolean("no_default_policy")?.unwrap_or(false),
        meta: string_map("meta", body.object("meta")?)?,
    };
    // Accepted for client compatibility; every token is an orphan service token here.
    for ignored in ["no_parent", "type", "num_uses", "period", "entity_alias"] {
        body.0.remove(ignored);
    }
    if body.0.remove("id").is_some() {
        return Err(ApiError::bad_request(
            "id: choosing a token's value is not supported",
        ));
    }
    let warnings = with_unknown(&body, Vec::new());
    let issued = state.auth.create_token(&caller.identity, request).await?;
    Ok(auth_response(&issued, warnings))
}

pub async fn renew_self(
    State(state): State<AppState>,
    caller: Caller,
    mut body: Body,
) -> ApiResult {
    let increment = body.duration("increment")?;
    let (ttl, warnings) = state.auth.renew_token(&caller.identity, increment).await?;
    let identity = &caller.identity;
    let auth = json!({
        "client_token": caller.token.expose(),
        "accessor": identity.accessor,
        "policies": identity.policies,
        "token_policies": identity.policies,
        "metadata": if identity.meta.is_empty() { Value::Null } else { Value::Object(identity.meta.clone()) },
        "lease_duration": ttl.as_secs(),
        "renewable": identity.renewable,
        "entity_id": identity.entity_id,
        "token_type": "service",
        "orphan": true,
    });
    Ok(Json(json!({
        "request_id": current_request_id(),
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": null,
        "wrap_info": null,
        "warnings": if warnings.is_empty() { Value::Null } else { json!(warnings) },
        "auth": auth,
        "mount_type": "token",
    }))
    .into_response())
}

pub async fn revoke_self(State(state): State<AppState>, caller: Caller) -> ApiResult {
    state
        .auth
        .revoke_accessor(&caller.identity.accessor)
        .await?;
    Ok(written(vec![]))
}

pub async fn lookup_token(State(state): State<AppState>, mut body: Body) -> ApiResult {
    let token = body
        .secret("token")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("token: required"))?;
    Ok(respond(state.auth.lookup_token(&token).await?))
}

fn required(body: &mut Body, field: &str) -> Result<String, ApiError> {
    body.string(field)?
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("{field}: required")))
}

pub async fn lookup_accessor(State(state): State<AppState>, mut body: Body) -> ApiResult {
    let accessor = required(&mut body, "accessor")?;
    Ok(respond(state.auth.lookup_accessor(&accessor).await?))
}

pub async fn revoke_accessor(State(state): State<AppState>, mut body: Body) -> ApiResult {
    let accessor = required(&mut body, "accessor")?;
    state.auth.revoke_accessor(&accessor).await?;
    Ok(written(vec![]))
}

pub async fn read_jwt_config(State(state): State<AppState>) -> ApiResult {
    let config = state
        .jwt
        .config()
        .await?
        .ok_or_else(ApiError::empty_not_found)?;
    Ok(respond(config))
}

pub async fn write_jwt_config(State(state): State<AppState>, mut body: Body) -> ApiResult {
    if body
        .string("oidc_discovery_url")?
        .is_some_and(|u| !u.is_empty())
    {
        return Err(ApiError::bad_request(
            "oidc_discovery_url: OIDC discovery is not supported; set jwks_url or jwt_validation_pubkeys",
        ));
    }
    let config = JwtConfig {
        jwt_validation_pubkeys: body
            .string_list("jwt_validation_pubkeys", false)?
            .unwrap_or_default(),
        jwks_url: body.string("jwks_url")?.unwrap_or_default(),
        bound_issuer: body.string("bound_issuer")?.unwrap_or_default(),
        jwt_supported_algs: body
            .string_list("jwt_supported_algs", true)?
            .unwrap_or_default(),
        default_role: body.string("default_role")?.unwrap_or_default(),
    };
    // hvac sends these (often null); they have no meaning without OIDC.
    for ignored in [
        "oidc_discovery_ca_pem",
        "oidc_client_id",
        "oidc_client_secret",
        "oidc_response_mode",
        "oidc_response_types",
        "jwks_ca_pem",
        "provider_config",
        "namespace_in_state",
    ] {
        body.0.remove(ignored);
    }
    let warnings = with_unknown(&body, Vec::new());
    state.jwt.write_config(config).await?;
    Ok(written(warnings))
}

pub async fn list_jwt_roles(State(state): State<AppState>, uri: axum::http::Uri) -> ApiResult {
    if !super::wants_list(&uri) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "use LIST (or GET ?list=true) to list roles",
        ));
    }
    listing(state.jwt.list_roles().await?)
}

pub async fn read_jwt_role(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult {
    Ok(respond(state.jwt.role(&name).await?))
}

/// Creates a role or updates the fields given, as Vault does.
pub async fn write_jwt_role(
    State(state): State<AppState>,
    Path(name): Path<String>,
    mut body: Body,
) -> ApiResult {
    let mut role = match state.jwt.role(&name).await {
        Ok(existing) => existing,
        Err(crate::Error::NotFound { .. }) => JwtRole::default(),
        Err(e) => return Err(e.into()),
    };
    if let Some(v) = body.string("role_type")? {
        role.role_type = v;
    }
    if let Some(v) = body.string_list("bound_audiences", true)? {
        role.bound_audiences = v;
    }
    if let Some(v) = body.string("bound_subject")? {
        role.bound_subject = v;
    }
    if let Some(v) = body.object("bound_claims")? {
        role.bound_claims = v
            .as_object()
            .cloned()
            .ok_or_else(|| ApiError::bad_request("bound_claims: expected an object"))?;
    }
    if let Some(v) = body.object("claim_mappings")? {
        role.claim_mappings = string_map("claim_mappings", Some(v))?;
    }
    if let Some(v) = body.string("user_claim")? {
        role.user_claim = v;
    }
    // hvac's flag for "user_claim is a JSON pointer"; ours reads any claim starting with '/' so.
    if body.boolean("user_claim_json_pointer")? == Some(true) && !role.user_claim.starts_with('/') {
        role.user_claim = format!("/{}", role.user_claim);
    }
    let policies = match body.string_list("token_policies", true)? {
        Some(p) => Some(p),
        None => body.string_list("policies", true)?,
    };
    if let Some(v) = policies {
        role.token_policies = v;
    }
    let secs = |d: std::time::Duration| d.as_secs();
    if let Some(v) = body.duration("token_ttl")?.or(body.duration("ttl")?) {
        role.token_ttl = secs(v);
    }
    if let Some(v) = body
        .duration("token_max_ttl")?
        .or(body.duration("max_ttl")?)
    {
        role.token_max_ttl = secs(v);
    }
    if let Some(v) = body.duration("token_explicit_max_ttl")? {
        role.token_explicit_max_ttl = secs(v);
    }
    if let Some(v) = body.boolean("token_no_default_policy")? {
        role.token_no_default_policy = v;
    }
    if let Some(v) = body.duration("clock_skew_leeway")? {
        role.clock_skew_leeway = secs(v);
    }
    match body.string("bound_claims_type")?.as_deref() {
        None | Some("string") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "bound_claims_type: only \"string\" is supported, not {other:?}"
            )))
        }
    }
    match body.string("token_type")?.as_deref() {
        None | Some("") | Some("default") | Some("service") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "token_type: only service tokens are issued, not {other:?}"
            )))
        }
    }
    // OIDC-flow and Vault-internal settings that hvac may send; they change nothing for JWT login.
    for ignored in [
        "allowed_redirect_uris",
        "oidc_scopes",
        "groups_claim",
        "verbose_oidc_logging",
        "expiration_leeway",
        "not_before_leeway",
        "max_age",
        "token_num_uses",
        "token_period",
    ] {
        body.0.remove(ignored);
    }
    if body
        .string_list("token_bound_cidrs", true)?
        .is_some_and(|c| !c.is_empty())
    {
        return Err(ApiError::bad_request("token_bound_cidrs: not supported"));
    }
    let warnings = with_unknown(&body, Vec::new());
    state.jwt.write_role(&name, role).await?;
    Ok(written(warnings))
}

pub async fn delete_jwt_role(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult {
    state.jwt.delete_role(&name).await?;
    Ok(written(vec![]))
}

/// `auth/jwt/login`: unauthenticated; the JWT is the credential. Refusals are 403 and audited.
pub async fn jwt_login(State(state): State<AppState>, mut body: Body) -> ApiResult {
    let jwt = body
        .secret("jwt")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("jwt: required"))?;
    let role = match body.string("role")?.filter(|r| !r.is_empty()) {
        Some(role) => role,
        None => state
            .jwt
            .config()
            .await?
            .map(|c| c.default_role)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request("role: required (no default_role is configured)")
            })?,
    };
    let issued = state.jwt.login(&state.auth, &role, &jwt).await?;
    Ok(auth_response(&issued, vec![]))
}
