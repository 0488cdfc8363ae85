//! The HTTP API: a Vault-compatible subset on Vault's paths, so existing clients (hvac, Vault
//! Agent, Spring Vault) work unchanged.
//!
//! - [`router`] builds the routes; `LIST` requests are rewritten to `GET ?list=true` before routing,
//!   so both spellings reach the same handler.
//! - [`gate`] authenticates, checks the caller's policies, audits every request and response
//!   and feeds the anomaly rules, before and after every routed handler; a missing or bad token,
//!   or a path the policies do not allow, is a 403 before any handler runs.
//! - [`Caller`] is the authenticated caller, as the gate resolved it.
//! - [`Body`] parses request bodies as JSON objects, turning malformed JSON into a 400.
//! - [`respond`] wraps data in Vault's envelope `{request_id, lease_id, renewable, lease_duration,
//!   data, warnings}`.

mod audit;
mod auth;
mod database;
pub mod error;
pub mod gate;
mod policies;
mod static_roles;
mod sys;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use lessor_plugin::Secret;
use serde::Serialize;
use serde_json::{Map, Value};

pub use error::{ApiError, ApiResult};

use crate::auth::Identity;
use crate::AppState;

/// Builds the API router. Serve it through [`crate::into_service`], which adds the `LIST` rewrite.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/sys/health", get(sys::health).head(sys::health))
        .route(
            "/v1/auth/token/lookup-self",
            get(sys::lookup_self).post(sys::lookup_self),
        )
        .route("/v1/database/config", get(database::list_connections))
        .route("/v1/database/config/", get(database::list_connections))
        .route(
            "/v1/database/config/{name}",
            get(database::read_connection)
                .post(database::write_connection)
                .put(database::write_connection)
                .delete(database::delete_connection),
        )
        .route(
            "/v1/database/reset/{name}",
            post(database::reset_connection).put(database::reset_connection),
        )
        .route("/v1/database/roles", get(database::list_roles))
        .route("/v1/database/roles/", get(database::list_roles))
        .route(
            "/v1/database/roles/{name}",
            get(database::read_role)
                .post(database::write_role)
                .put(database::write_role)
                .delete(database::delete_role),
        )
        .route(
            "/v1/database/creds/{name}",
            get(database::issue_creds).post(database::issue_creds),
        )
        .route(
            "/v1/database/static-roles",
            get(static_roles::list_static_roles),
        )
        .route(
            "/v1/database/static-roles/",
            get(static_roles::list_static_roles),
        )
        .route(
            "/v1/database/static-roles/{name}",
            get(static_roles::read_static_role)
                .post(static_roles::write_static_role)
                .put(static_roles::write_static_role)
                .delete(static_roles::delete_static_role),
        )
        .route(
            "/v1/database/static-creds/{name}",
            get(static_roles::read_static_creds),
        )
        .route(
            "/v1/database/rotate-role/{name}",
            post(static_roles::rotate_role).put(static_roles::rotate_role),
        )
        .route(
            "/v1/database/rotate-root/{name}",
            post(static_roles::rotate_root).put(static_roles::rotate_root),
        )
        .route(
            "/v1/sys/leases/lookup",
            post(sys::lookup_lease)
                .put(sys::lookup_lease)
                .get(sys::list_leases_root),
        )
        .route("/v1/sys/leases/lookup/", get(sys::list_leases_root))
        .route("/v1/sys/leases/lookup/{*prefix}", get(sys::list_leases))
        .route(
            "/v1/sys/leases/renew",
            post(sys::renew_lease).put(sys::renew_lease),
        )
        .route(
            "/v1/sys/leases/renew/{*lease_id}",
            post(sys::renew_lease_path).put(sys::renew_lease_path),
        )
        .route(
            "/v1/sys/leases/revoke",
            post(sys::revoke_lease).put(sys::revoke_lease),
        )
        .route(
            "/v1/sys/leases/revoke/{*lease_id}",
            post(sys::revoke_lease_path).put(sys::revoke_lease_path),
        )
        .route(
            "/v1/sys/leases/revoke-prefix/{*prefix}",
            post(sys::revoke_prefix).put(sys::revoke_prefix),
        )
        .route(
            "/v1/sys/leases/revoke-force/{*prefix}",
            post(sys::revoke_force).put(sys::revoke_force),
        )
        .merge(auth::routes())
        .merge(policies::routes())
        .merge(audit::routes())
        .fallback(|| async { ApiError::empty_not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "unsupported operation on this path",
            )
        })
        // Must stay the last layer: it wraps only the routes added above it.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            gate::gate,
        ))
        .with_state(state)
}

/// Rewrites Vault's `LIST` method to `GET ?list=true` before routing.
pub fn rewrite_list(mut request: Request) -> Request {
    if request.method().as_str() == "LIST" {
        *request.method_mut() = Method::GET;
        let uri = request.uri();
        let path = uri.path();
        let query = match uri.query() {
            Some(q) if !q.is_empty() => format!("{q}&list=true"),
            _ => "list=true".to_owned(),
        };
        if let Ok(new_uri) = format!("{path}?{query}").parse::<Uri>() {
            *request.uri_mut() = new_uri;
        }
    }
    request
}

/// Whether the request asked for a listing (`LIST` or `?list=true`).
pub fn wants_list(uri: &Uri) -> bool {
    uri.query().is_some_and(|q| {
        q.split('&')
            .any(|pair| pair == "list=true" || pair == "list=1")
    })
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Identity,
    /// The token as presented, kept only for `lookup-self`'s `id`.
    pub token: Secret,
    /// The caller's merged policies, for checks beyond the gate's (sudo over others' leases).
    pub acl: std::sync::Arc<crate::auth::policy::Acl>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // The gate resolved and authorized the caller. A handler reached without it (a route
        // added outside the gate's layer) is refused rather than authenticated without a policy
        // check.
        match parts.extensions.get::<Caller>() {
            Some(caller) => Ok(caller.clone()),
            None => {
                tracing::error!(path = %parts.uri.path(), "a route is outside the policy gate; refusing");
                Err(crate::error::Error::PermissionDenied.into())
            }
        }
    }
}

/// A request body parsed as a JSON object; an empty body is `{}`.
#[derive(Debug, Default)]
pub struct Body(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Map::new()));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(ApiError::bad_request("request body must be a JSON object")),
            Err(e) => Err(ApiError::bad_request(format!("malformed JSON body: {e}"))),
        }
    }
}

impl Body {
    /// Takes a string field; a wrong type is a 400 naming the field.
    pub fn string(&mut self, field: &str) -> Result<Option<String>, ApiError> {
        match self.0.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(ApiError::bad_request(format!("{field}: expected a string"))),
        }
    }

    /// Takes a secret string field (password, URL); its value never appears in an error.
    pub fn secret(&mut self, field: &str) -> Result<Option<Secret>, ApiError> {
        match self.0.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(Secret::new(s))),
            Some(_) => Err(ApiError::bad_request(format!("{field}: expected a string"))),
        }
    }

    /// Takes a list of strings; a single string is accepted as a one-element list, or split on
    /// commas when `comma_separated` (Vault's `allowed_roles="a,b"`).
    pub fn string_list(
        &mut self,
        field: &str,
        comma_separated: bool,
    ) -> Result<Option<Vec<String>>, ApiError> {
        match self.0.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if comma_separated => Ok(Some(
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(Some(vec![])),
            Some(Value::String(s)) => Ok(Some(vec![s])),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    _ => Err(ApiError::bad_request(format!(
                        "{field}: expected a list of strings"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|list| Some(list.into_iter().filter(|s| !s.trim().is_empty()).collect())),
            Some(_) => Err(ApiError::bad_request(format!(
                "{field}: expected a string or a list of strings"
            ))),
        }
    }

    pub fn boolean(&mut self, field: &str) -> Result<Option<bool>, ApiError> {
        match self.0.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::String(s)) if s == "true" || s == "1" => Ok(Some(true)),
            Some(Value::String(s)) if s == "false" || s == "0" => Ok(Some(false)),
            Some(_) => Err(ApiError::bad_request(format!(
                "{field}: expected true or false"
            ))),
        }
    }

    pub fn integer(&mut self, field: &str) -> Result<Option<u32>, ApiError> {
        match self.0.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("{field}: expected a non-negative integer"))
                }),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("{field}: expected a non-negative integer"))
            }),
            Some(_) => Err(ApiError::bad_request(format!(
                "{field}: expected a non-negative integer"
            ))),
        }
    }

    pub fn duration(&mut self, field: &str) -> Result<Option<Duration>, ApiError> {
        match self.0.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => Ok(Some(crate::ttl::parse_duration_value(field, &value)?)),
        }
    }

    pub fn object(&mut self, field: &str) -> Result<Option<Value>, ApiError> {
        Ok(self.0.remove(field).filter(|v| !v.is_null()))
    }

    /// Vault's warning for fields an endpoint does not know; none if all were used.
    pub fn unknown_fields_warning(&self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        let names: Vec<&str> = self.0.keys().map(String::as_str).collect();
        Some(format!(
            "Endpoint ignored these unrecognized parameters: {names:?}"
        ))
    }
}

/// Vault's response envelope.
#[derive(Debug, Serialize)]
pub struct Envelope<T: Serialize> {
    pub request_id: String,
    pub lease_id: String,
    pub renewable: bool,
    pub lease_duration: u64,
    pub data: Option<T>,
    pub wrap_info: Option<()>,
    pub warnings: Option<Vec<String>>,
    pub auth: Option<()>,
    pub mount_type: &'static str,
}

impl<T: Serialize> Envelope<T> {
    pub fn new(data: T) -> Self {
        Self {
            request_id: gate::current_request_id(),
            lease_id: String::new(),
            renewable: false,
            lease_duration: 0,
            data: Some(data),
            wrap_info: None,
            warnings: None,
            auth: None,
            mount_type: "",
        }
    }

    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        if !warnings.is_empty() {
            self.warnings = Some(warnings);
        }
        self
    }
}

/// A 200 with `data` in the envelope.
pub fn respond<T: Serialize>(data: T) -> Response {
    Json(Envelope::new(data)).into_response()
}

/// What a write answers: 204, or 200 with the warnings when there are any (as Vault does).
pub fn written(warnings: Vec<String>) -> Response {
    if warnings.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        let mut envelope = Envelope::<()>::new(());
        envelope.data = None;
        Json(envelope.with_warnings(warnings)).into_response()
    }
}

/// A listing: `{"data": {"keys": [...]}}`, or Vault's `404 {"errors": []}` when empty.
pub fn listing(keys: Vec<String>) -> ApiResult {
    if keys.is_empty() {
        return Err(ApiError::empty_not_found());
    }
    let mut data = BTreeMap::new();
    data.insert("keys", keys);
    Ok(respond(data))
}

/// Adds the unknown-fields warning, if any, to a warning list.
pub fn with_unknown(body: &Body, mut warnings: Vec<String>) -> Vec<String> {
    warnings.extend(body.unknown_fields_warning());
    warnings
}
