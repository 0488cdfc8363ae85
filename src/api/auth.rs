//! Handlers for `auth/token/*` (create, create/:role, roles/:name, renew-self, revoke-self,
//! lookup, lookup-accessor, revoke-accessor), the JWT auth method `auth/jwt/{config,role/:name,login}` and the certificate
//! auth method `auth/cert/{certs/:name,login}`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::gate::current_request_id;
use super::routes::{field, BodyField, FieldKind};
use super::{listing, respond, written, ApiError, ApiResult, Body, Caller, Routes};
use crate::auth::jwt::{JwtConfig, JwtRole};
use crate::auth::token_roles::TokenRoleInput;
use crate::auth::tokens::{IssuedToken, TokenRequest};
use crate::names::{JwtRoleName, TokenRoleName};
use crate::AppState;

/// The routes of this module.
pub fn routes() -> Routes {
    Routes::new()
        .write("/v1/auth/token/create", create_token)
        .body(CREATE_TOKEN_BODY)
        .write("/v1/auth/token/create-orphan", create_orphan_token)
        .sudo()
        .body(CREATE_TOKEN_BODY)
        .write("/v1/auth/token/create/{name}", create_token_from_role)
        .body(CREATE_FROM_ROLE_BODY)
        .list("/v1/auth/token/roles", list_token_roles)
        .list("/v1/auth/token/roles/", list_token_roles)
        .read("/v1/auth/token/roles/{name}", read_token_role)
        // A role may grant policies its user does not hold: writing one is a sudo act.
        .write("/v1/auth/token/roles/{name}", write_token_role)
        .sudo()
        .body(TOKEN_ROLE_BODY)
        .delete("/v1/auth/token/roles/{name}", delete_token_role)
        .sudo()
        .write("/v1/auth/token/revoke", revoke_token)
        .body(TOKEN_BODY)
        .write("/v1/auth/token/revoke-orphan", revoke_orphan)
        .sudo()
        .body(TOKEN_BODY)
        .write("/v1/auth/token/renew-self", renew_self)
        .body(INCREMENT_BODY)
        .write("/v1/auth/token/renew", renew_token)
        .body(RENEW_TOKEN_BODY)
        .write("/v1/auth/token/revoke-self", revoke_self)
        .body(&[])
        .write("/v1/auth/token/lookup", lookup_token)
        .body(TOKEN_BODY)
        .write("/v1/auth/token/lookup-accessor", lookup_accessor)
        .body(ACCESSOR_BODY)
        .write("/v1/auth/token/revoke-accessor", revoke_accessor)
        .body(ACCESSOR_BODY)
        .read("/v1/auth/jwt/config", read_jwt_config)
        .write("/v1/auth/jwt/config", write_jwt_config)
        .body(JWT_CONFIG_BODY)
        .list("/v1/auth/jwt/role", list_jwt_roles)
        .list("/v1/auth/jwt/role/", list_jwt_roles)
        .read("/v1/auth/jwt/role/{name}", read_jwt_role)
        .write("/v1/auth/jwt/role/{name}", write_jwt_role)
        .body(JWT_ROLE_BODY)
        .delete("/v1/auth/jwt/role/{name}", delete_jwt_role)
        .write("/v1/auth/jwt/login", jwt_login)
        .login()
        .body(JWT_LOGIN_BODY)
        .list("/v1/auth/cert/certs", list_cert_roles)
        .list("/v1/auth/cert/certs/", list_cert_roles)
        .read("/v1/auth/cert/certs/{name}", read_cert_role)
        .write("/v1/auth/cert/certs/{name}", write_cert_role)
        .body(CERT_ROLE_BODY)
        .delete("/v1/auth/cert/certs/{name}", delete_cert_role)
        .write("/v1/auth/cert/login", cert_login)
        .login()
        .body(CERT_LOGIN_BODY)
}

/// `auth/token/create` and `create-orphan`, as [`token_request`] reads them.
const CREATE_TOKEN_BODY: &[BodyField] = &[
    field("policies", FieldKind::StringList),
    field("ttl", FieldKind::Duration),
    field("explicit_max_ttl", FieldKind::Duration),
    field("renewable", FieldKind::Boolean),
    field("display_name", FieldKind::String),
    field("no_default_policy", FieldKind::Boolean),
    field("meta", FieldKind::Object),
    field("type", FieldKind::String),
    field("no_parent", FieldKind::Boolean),
];

/// `auth/token/create/:role_name`: the same, and the role name repeated (hvac sends it).
const CREATE_FROM_ROLE_BODY: &[BodyField] = &[
    field("role_name", FieldKind::String),
    field("policies", FieldKind::StringList),
    field("ttl", FieldKind::Duration),
    field("explicit_max_ttl", FieldKind::Duration),
    field("renewable", FieldKind::Boolean),
    field("display_name", FieldKind::String),
    field("no_default_policy", FieldKind::Boolean),
    field("meta", FieldKind::Object),
    field("type", FieldKind::String),
    field("no_parent", FieldKind::Boolean),
];

/// `auth/token/roles/:role_name`, as [`write_token_role`] reads it.
const TOKEN_ROLE_BODY: &[BodyField] = &[
    field("role_name", FieldKind::String),
    field("allowed_policies", FieldKind::StringList),
    field("disallowed_policies", FieldKind::StringList),
    field("orphan", FieldKind::Boolean),
    field("renewable", FieldKind::Boolean),
    field("token_ttl", FieldKind::Duration),
    field("token_max_ttl", FieldKind::Duration),
    field("token_explicit_max_ttl", FieldKind::Duration),
    field("explicit_max_ttl", FieldKind::Duration),
    field("token_type", FieldKind::String),
];

const TOKEN_BODY: &[BodyField] = &[field("token", FieldKind::Secret)];
const RENEW_TOKEN_BODY: &[BodyField] = &[
    field("token", FieldKind::Secret),
    field("increment", FieldKind::Duration),
];
const INCREMENT_BODY: &[BodyField] = &[field("increment", FieldKind::Duration)];
const ACCESSOR_BODY: &[BodyField] = &[field("accessor", FieldKind::String)];

const JWT_CONFIG_BODY: &[BodyField] = &[
    field("oidc_discovery_url", FieldKind::String),
    field("jwt_validation_pubkeys", FieldKind::StringList),
    field("jwks_url", FieldKind::String),
    field("bound_issuer", FieldKind::String),
    field("jwt_supported_algs", FieldKind::StringList),
    field("default_role", FieldKind::String),
    field("namespace_in_state", FieldKind::Boolean),
];

const JWT_ROLE_BODY: &[BodyField] = &[
    field("role_type", FieldKind::String),
    field("bound_audiences", FieldKind::StringList),
    field("bound_subject", FieldKind::String),
    field("bound_claims", FieldKind::Object),
    field("claim_mappings", FieldKind::Object),
    field("user_claim", FieldKind::String),
    field("user_claim_json_pointer", FieldKind::Boolean),
    field("token_policies", FieldKind::StringList),
    field("policies", FieldKind::StringList),
    field("token_ttl", FieldKind::Duration),
    field("ttl", FieldKind::Duration),
    field("token_max_ttl", FieldKind::Duration),
    field("max_ttl", FieldKind::Duration),
    field("token_explicit_max_ttl", FieldKind::Duration),
    field("token_no_default_policy", FieldKind::Boolean),
    field("clock_skew_leeway", FieldKind::Duration),
    field("bound_claims_type", FieldKind::String),
    field("token_type", FieldKind::String),
    field("token_bound_cidrs", FieldKind::StringList),
];

const JWT_LOGIN_BODY: &[BodyField] = &[
    field("jwt", FieldKind::Secret),
    field("role", FieldKind::String),
];

const CERT_ROLE_BODY: &[BodyField] = &[
    field("name", FieldKind::String),
    field("certificate", FieldKind::String),
    field("allowed_common_names", FieldKind::StringList),
    field("allowed_dns_sans", FieldKind::StringList),
    field("display_name", FieldKind::String),
    field("token_policies", FieldKind::StringList),
    field("policies", FieldKind::StringList),
    field("token_ttl", FieldKind::Duration),
    field("ttl", FieldKind::Duration),
    field("token_max_ttl", FieldKind::Duration),
    field("max_ttl", FieldKind::Duration),
    field("token_explicit_max_ttl", FieldKind::Duration),
    field("token_no_default_policy", FieldKind::Boolean),
    field("token_type", FieldKind::String),
];

const CERT_LOGIN_BODY: &[BodyField] = &[field("name", FieldKind::String)];

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

pub async fn create_token(State(state): State<AppState>, caller: Caller, body: Body) -> ApiResult {
    create(&state, &caller, body, false).await
}

/// `auth/token/create-orphan`: the route needs sudo (declared in the route table).
pub async fn create_orphan_token(
    State(state): State<AppState>,
    caller: Caller,
    body: Body,
) -> ApiResult {
    create(&state, &caller, body, true).await
}

/// `auth/token/create/:name`: a token shaped by the token role (policies, parent, lifetime).
pub async fn create_token_from_role(
    State(state): State<AppState>,
    caller: Caller,
    name: TokenRoleName,
    mut body: Body,
) -> ApiResult {
    body.echoed_path_parameter("role_name", &name)?;
    let (request, no_parent) = token_request(&mut body)?;
    if no_parent {
        return Err(ApiError::bad_request(
            "no_parent: a token made from a role is an orphan exactly when the role says orphan=true",
        ));
    }
    body.finish()?;
    let issued = state
        .auth
        .create_token_from_role(&caller.identity, &name, request)
        .await?;
    Ok(auth_response(&issued, vec![]))
}

pub async fn list_token_roles(State(state): State<AppState>, _caller: Caller) -> ApiResult {
    listing(state.auth.list_token_roles().await?)
}

pub async fn read_token_role(
    State(state): State<AppState>,
    _caller: Caller,
    name: TokenRoleName,
) -> ApiResult {
    let role = state.auth.token_role(&name).await?;
    let secs = |d: std::time::Duration| d.as_secs();
    // Vault's fields, with the ones Lessor refuses shown at their "off" value.
    Ok(respond(json!({
        "name": role.name,
        "allowed_policies": role.allowed_policies,
        "disallowed_policies": role.disallowed_policies,
        "allowed_policies_glob": [],
        "disallowed_policies_glob": [],
        "orphan": role.orphan,
        "renewable": role.renewable,
        "token_ttl": secs(role.token_ttl),
        "token_max_ttl": secs(role.token_max_ttl),
        "token_explicit_max_ttl": secs(role.token_explicit_max_ttl),
        "explicit_max_ttl": secs(role.token_explicit_max_ttl),
        "token_period": 0,
        "period": 0,
        "token_type": "service",
        "token_no_default_policy": false,
        "token_num_uses": 0,
        "token_bound_cidrs": [],
        "path_suffix": "",
        "allowed_entity_aliases": null,
    })))
}

/// The fields of `auth/token/roles/:name` that Lessor does not implement, and why.
const UNSUPPORTED_TOKEN_ROLE_FIELDS: &[(&str, &str)] = &[
    ("period", "periodic tokens are not supported"),
    ("token_period", "periodic tokens are not supported"),
    ("path_suffix", "path suffixes are not supported"),
    ("allowed_entity_aliases", "entity aliases are not supported"),
    ("token_bound_cidrs", "CIDR-bound tokens are not supported"),
    ("bound_cidrs", "CIDR-bound tokens are not supported"),
    ("token_num_uses", "limited-use tokens are not supported"),
    (
        "allowed_policies_glob",
        "policy globs are not supported; list the policies",
    ),
    (
        "disallowed_policies_glob",
        "policy globs are not supported; list the policies",
    ),
    (
        "token_no_default_policy",
        "not supported; pass no_default_policy when creating the token",
    ),
];

pub async fn write_token_role(
    State(state): State<AppState>,
    _caller: Caller,
    name: TokenRoleName,
    mut body: Body,
) -> ApiResult {
    body.echoed_path_parameter("role_name", &name)?;
    let token_explicit_max_ttl = body.duration("token_explicit_max_ttl")?;
    // Vault's older name for the same setting; both at once must agree.
    let legacy_explicit_max_ttl = body.duration("explicit_max_ttl")?;
    if let (Some(new), Some(old)) = (token_explicit_max_ttl, legacy_explicit_max_ttl) {
        if new != old {
            return Err(ApiError::bad_request(
                "explicit_max_ttl: differs from token_explicit_max_ttl; send one of them",
            ));
        }
    }
    let input = TokenRoleInput {
        allowed_policies: body.string_list("allowed_policies", true)?,
        disallowed_policies: body.string_list("disallowed_policies", true)?,
        orphan: body.boolean("orphan")?,
        renewable: body.boolean("renewable")?,
        token_ttl: body.duration("token_ttl")?,
        token_max_ttl: body.duration("token_max_ttl")?,
        token_explicit_max_ttl: token_explicit_max_ttl.or(legacy_explicit_max_ttl),
    };
    match body.string("token_type")?.as_deref() {
        None | Some("") | Some("default") | Some("service") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "token_type: only service tokens are issued, not {other:?}"
            )))
        }
    }
    for (field, why) in UNSUPPORTED_TOKEN_ROLE_FIELDS {
        body.refuse_unsupported(field, why)?;
    }
    body.finish()?;
    state.auth.write_token_role(&name, input).await?;
    Ok(written(vec![]))
}

pub async fn delete_token_role(
    State(state): State<AppState>,
    _caller: Caller,
    name: TokenRoleName,
) -> ApiResult {
    state.auth.delete_token_role(&name).await?;
    Ok(written(vec![]))
}

/// The fields of a token creation request, shared by `create`, `create-orphan` and
/// `create/:role`; returns the request and `no_parent`.
fn token_request(body: &mut Body) -> Result<(TokenRequest, bool), ApiError> {
    let request = TokenRequest {
        policies: body.string_list("policies", true)?,
        ttl: body.duration("ttl")?,
        explicit_max_ttl: body.duration("explicit_max_ttl")?,
        renewable: body.boolean("renewable")?,
        display_name: body.string("display_name")?,
        no_default_policy: body.boolean("no_default_policy")?.unwrap_or(false),
        meta: string_map("meta", body.object("meta")?)?,
    };
    match body.string("type")?.as_deref() {
        None | Some("") | Some("service") | Some("default") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "type: only service tokens are issued, not {other:?}"
            )))
        }
    }
    body.refuse_unsupported("num_uses", "limited-use tokens are not supported")?;
    body.refuse_unsupported("period", "periodic tokens are not supported")?;
    body.refuse_unsupported("entity_alias", "entity aliases are not supported")?;
    let no_parent = body.boolean("no_parent")?.unwrap_or(false);
    body.refuse_unsupported("id", "choosing a token's value is not supported")?;
    Ok((request, no_parent))
}

async fn create(
    state: &AppState,
    caller: &Caller,
    mut body: Body,
    orphan_route: bool,
) -> ApiResult {
    let (request, no_parent) = token_request(&mut body)?;
    body.finish()?;
    let issued = if orphan_route {
        state
            .auth
            .create_orphan_token(&caller.identity, true, request)
            .await?
    } else if no_parent {
        // As in Vault, an orphan from `create` needs root or sudo on the path called.
        let has_sudo = caller.acl.has_sudo("auth/token/create");
        state
            .auth
            .create_orphan_token(&caller.identity, has_sudo, request)
            .await?
    } else {
        state.auth.create_token(&caller.identity, request).await?
    };
    Ok(auth_response(&issued, vec![]))
}

pub async fn renew_self(
    State(state): State<AppState>,
    caller: Caller,
    mut body: Body,
) -> ApiResult {
    let increment = body.duration("increment")?;
    body.finish()?;
    let (ttl, warnings) = state.auth.renew_token(&caller.identity, increment).await?;
    Ok(renewed(&caller.identity, &caller.token, ttl, warnings))
}

/// `auth/token/renew`: renews the token given by value (operators; as Vault).
pub async fn renew_token(State(state): State<AppState>, mut body: Body) -> ApiResult {
    let token = required_token(&mut body)?;
    let increment = body.duration("increment")?;
    body.finish()?;
    let identity = match state.auth.authenticate(Some(&token)).await {
        Ok(identity) => identity,
        Err(crate::Error::PermissionDenied) => {
            return Err(ApiError::bad_request("token: not a live token"))
        }
        Err(other) => return Err(other.into()),
    };
    let (ttl, warnings) = state.auth.renew_token(&identity, increment).await?;
    Ok(renewed(&identity, &token, ttl, warnings))
}

/// Vault's answer to a token renewal: the token in `auth` with its new lease duration.
fn renewed(
    identity: &crate::auth::Identity,
    token: &lessor_plugin::Secret,
    ttl: std::time::Duration,
    warnings: Vec<String>,
) -> Response {
    let auth = json!({
        "client_token": token.expose(),
        "accessor": identity.accessor,
        "policies": identity.policies,
        "token_policies": identity.policies,
        "metadata": if identity.meta.is_empty() { Value::Null } else { Value::Object(identity.meta.clone()) },
        "lease_duration": ttl.as_secs(),
        "renewable": identity.renewable,
        "entity_id": identity.entity_id,
        "token_type": "service",
        "orphan": identity.parent_accessor.is_none(),
    });
    Json(json!({
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
    .into_response()
}

pub async fn revoke_self(State(state): State<AppState>, caller: Caller, body: Body) -> ApiResult {
    body.finish()?;
    let revoked = state.auth.revoke_tree(&caller.identity.accessor).await?;
    revoke_leases_of(&state, &revoked).await?;
    Ok(written(vec![]))
}

/// Revoking a token revokes the leases its subtree obtained, as in Vault: a holder about to be
/// cut off cannot keep database access through credentials it already has. A lease whose
/// revocation fails stays with the reaper, which retries until it succeeds.
async fn revoke_leases_of(state: &AppState, accessors: &[String]) -> Result<(), ApiError> {
    if accessors.is_empty() {
        return Ok(());
    }
    state.leases.revoke_by_token_accessors(accessors).await?;
    Ok(())
}

/// `auth/token/revoke`: the token given by value, its children and their leases.
pub async fn revoke_token(State(state): State<AppState>, mut body: Body) -> ApiResult {
    let token = required_token(&mut body)?;
    body.finish()?;
    let revoked = state.auth.revoke_token(&token).await?;
    revoke_leases_of(&state, &revoked).await?;
    Ok(written(vec![]))
}

/// `auth/token/revoke-orphan` (sudo): the token and its leases; its children live on as orphans.
pub async fn revoke_orphan(State(state): State<AppState>, mut body: Body) -> ApiResult {
    let token = required_token(&mut body)?;
    body.finish()?;
    let Some(accessor) = state.auth.accessor_of(&token).await? else {
        return Ok(written(vec![]));
    };
    let revoked = state.auth.revoke_orphan(&accessor).await?;
    revoke_leases_of(&state, &revoked).await?;
    Ok(written(vec![]))
}

pub async fn lookup_token(State(state): State<AppState>, mut body: Body) -> ApiResult {
    let token = required_token(&mut body)?;
    body.finish()?;
    Ok(respond(state.auth.lookup_token(&token).await?))
}

/// The `token` field, which these endpoints cannot do without; never echoed in an error.
fn required_token(body: &mut Body) -> Result<lessor_plugin::Secret, ApiError> {
    body.secret("token")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("token: required"))
}

fn required(body: &mut Body, field: &str) -> Result<String, ApiError> {
    body.string(field)?
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("{field}: required")))
}

pub async fn lookup_accessor(State(state): State<AppState>, mut body: Body) -> ApiResult {
    let accessor = required(&mut body, "accessor")?;
    body.finish()?;
    Ok(respond(state.auth.lookup_accessor(&accessor).await?))
}

pub async fn revoke_accessor(State(state): State<AppState>, mut body: Body) -> ApiResult {
    let accessor = required(&mut body, "accessor")?;
    body.finish()?;
    let revoked = state.auth.revoke_tree(&accessor).await?;
    revoke_leases_of(&state, &revoked).await?;
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
    // hvac sends these (usually empty); they have a meaning only with OIDC.
    for oidc_only in [
        "oidc_discovery_ca_pem",
        "oidc_client_id",
        "oidc_client_secret",
        "oidc_response_mode",
        "oidc_response_types",
        "provider_config",
    ] {
        body.refuse_unsupported(
            oidc_only,
            "OIDC is not supported; this is a JWT auth method",
        )?;
    }
    body.refuse_unsupported(
        "jwks_ca_pem",
        "a custom CA for the JWKS URL is not supported yet",
    )?;
    // Vault's default is true and it changes nothing without OIDC state.
    body.boolean("namespace_in_state")?;
    body.finish()?;
    state.jwt.write_config(config).await?;
    Ok(written(vec![]))
}

pub async fn list_jwt_roles(State(state): State<AppState>) -> ApiResult {
    listing(state.jwt.list_roles().await?)
}

pub async fn read_jwt_role(State(state): State<AppState>, name: JwtRoleName) -> ApiResult {
    Ok(respond(state.jwt.role(&name).await?))
}

/// Creates a role or updates the fields given, as Vault does.
pub async fn write_jwt_role(
    State(state): State<AppState>,
    name: JwtRoleName,
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
    // OIDC-flow settings that hvac sends (usually empty); they have a meaning only with OIDC.
    for oidc_only in [
        "allowed_redirect_uris",
        "oidc_scopes",
        "verbose_oidc_logging",
        "max_age",
    ] {
        body.refuse_unsupported(
            oidc_only,
            "OIDC is not supported; this is a JWT auth method",
        )?;
    }
    body.refuse_unsupported("groups_claim", "group mapping is not supported")?;
    body.refuse_unsupported(
        "expiration_leeway",
        "not supported; clock_skew_leeway applies",
    )?;
    body.refuse_unsupported(
        "not_before_leeway",
        "not supported; clock_skew_leeway applies",
    )?;
    body.refuse_unsupported("token_num_uses", "limited-use tokens are not supported")?;
    body.refuse_unsupported("token_period", "periodic tokens are not supported")?;
    if body
        .string_list("token_bound_cidrs", true)?
        .is_some_and(|c| !c.is_empty())
    {
        return Err(ApiError::bad_request("token_bound_cidrs: not supported"));
    }
    body.finish()?;
    state.jwt.write_role(&name, role).await?;
    Ok(written(vec![]))
}

pub async fn delete_jwt_role(State(state): State<AppState>, name: JwtRoleName) -> ApiResult {
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
    body.finish()?;
    let issued = state.jwt.login(&state.auth, &role, &jwt).await?;
    Ok(auth_response(&issued, vec![]))
}

// ---- certificate auth method -------------------------------------------------------------------

/// A certificate role's name from the (canonical) path, checked before the handler runs.
pub struct CertRoleName(String);

impl axum::extract::FromRequestParts<AppState> for CertRoleName {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::bad_request(format!("role name: {e}")))?;
        crate::catalog::check_name("role name", &raw)?;
        Ok(Self(raw))
    }
}

fn cert_auth(state: &AppState) -> crate::auth::cert::CertAuth {
    crate::auth::cert::CertAuth::new(state.store.clone())
}

pub async fn list_cert_roles(State(state): State<AppState>) -> ApiResult {
    listing(cert_auth(&state).list_roles().await?)
}

pub async fn read_cert_role(State(state): State<AppState>, name: CertRoleName) -> ApiResult {
    let role = cert_auth(&state).role(&name.0).await?;
    let mut data =
        serde_json::to_value(&role).map_err(|e| crate::Error::Internal(e.to_string()))?;
    // Vault answers with both spellings of the policies.
    data["policies"] = json!(role.token_policies);
    Ok(respond(data))
}

/// Creates a role or updates the fields given, as Vault does.
pub async fn write_cert_role(
    State(state): State<AppState>,
    name: CertRoleName,
    mut body: Body,
) -> ApiResult {
    let certs = cert_auth(&state);
    let mut role = match certs.role(&name.0).await {
        Ok(existing) => existing,
        Err(crate::Error::NotFound { .. }) => crate::auth::cert::CertRole::default(),
        Err(e) => return Err(e.into()),
    };
    // hvac repeats the name in the body.
    if let Some(named) = body.string("name")? {
        if named != name.0 {
            return Err(ApiError::bad_request(format!(
                "name: {named:?} differs from the name in the path"
            )));
        }
    }
    if let Some(v) = body.string("certificate")? {
        role.certificate = v;
    }
    if let Some(v) = body.string_list("allowed_common_names", true)? {
        role.allowed_common_names = v;
    }
    if let Some(v) = body.string_list("allowed_dns_sans", true)? {
        role.allowed_dns_sans = v;
    }
    if let Some(v) = body.string("display_name")? {
        role.display_name = v;
    }
    let policies = match body.string_list("token_policies", true)? {
        Some(p) => Some(p),
        None => body.string_list("policies", true)?,
    };
    if let Some(v) = policies {
        role.token_policies = v;
    }
    if let Some(v) = body.duration("token_ttl")?.or(body.duration("ttl")?) {
        role.token_ttl = v.as_secs();
    }
    if let Some(v) = body
        .duration("token_max_ttl")?
        .or(body.duration("max_ttl")?)
    {
        role.token_max_ttl = v.as_secs();
    }
    if let Some(v) = body.duration("token_explicit_max_ttl")? {
        role.token_explicit_max_ttl = v.as_secs();
    }
    if let Some(v) = body.boolean("token_no_default_policy")? {
        role.token_no_default_policy = v;
    }
    match body.string("token_type")?.as_deref() {
        None | Some("") | Some("default") | Some("service") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "token_type: only service tokens are issued, not {other:?}"
            )))
        }
    }
    // Vault fields with a meaning Lessor does not implement; hvac sends them empty.
    for (field, why) in [
        (
            "allowed_names",
            "not supported; use allowed_common_names or allowed_dns_sans",
        ),
        (
            "allowed_email_sans",
            "constraints on email SANs are not supported",
        ),
        (
            "allowed_uri_sans",
            "constraints on URI SANs are not supported",
        ),
        (
            "allowed_organizational_units",
            "constraints on OUs are not supported",
        ),
        (
            "required_extensions",
            "required extensions are not supported",
        ),
        (
            "allowed_metadata_extensions",
            "metadata extensions are not supported",
        ),
        ("ocsp_enabled", "OCSP is not supported"),
        ("ocsp_ca_certificates", "OCSP is not supported"),
        ("ocsp_servers_override", "OCSP is not supported"),
        ("token_bound_cidrs", "not supported"),
        ("bound_cidrs", "not supported"),
        ("token_num_uses", "limited-use tokens are not supported"),
        ("token_period", "periodic tokens are not supported"),
        ("period", "periodic tokens are not supported"),
    ] {
        body.refuse_unsupported(field, why)?;
    }
    body.finish()?;
    certs.write_role(&name.0, role).await?;
    Ok(written(vec![]))
}

pub async fn delete_cert_role(State(state): State<AppState>, name: CertRoleName) -> ApiResult {
    cert_auth(&state).delete_role(&name.0).await?;
    Ok(written(vec![]))
}

/// `auth/cert/login`: unauthenticated; the TLS client certificate of the connection is the
/// credential. Refusals are 403 with the reason, and audited.
pub async fn cert_login(
    State(state): State<AppState>,
    verified: Option<axum::Extension<crate::tls::ClientCertificates>>,
    rejected: Option<axum::Extension<crate::tls::RejectedClientCertificate>>,
    mut body: Body,
) -> ApiResult {
    use crate::auth::cert::PresentedCertificate;
    let role = body.string("name")?.filter(|r| !r.is_empty());
    body.finish()?;
    let presented = match (verified, rejected) {
        (Some(axum::Extension(chain)), _) => PresentedCertificate::Verified(chain),
        (None, Some(axum::Extension(reason))) => PresentedCertificate::Rejected(reason),
        (None, None) => PresentedCertificate::None,
    };
    let issued = cert_auth(&state)
        .login(&state.auth, role.as_deref(), &presented)
        .await?;
    Ok(auth_response(&issued, vec![]))
}
