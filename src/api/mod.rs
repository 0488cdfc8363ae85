//! The HTTP API: a Vault-compatible subset on Vault's paths, so existing clients (hvac, Vault
//! Agent, Spring Vault) work unchanged.
//!
//! One decision point, in three steps that each happen once:
//! - [`canonical`] decodes the path once, before routing, and turns `LIST` / `?list=true` into a
//!   flag; paths that would need a second reading (`//`, `..`, a `%` left after decoding) are 400s.
//! - [`routes`] declares every endpoint with its operation (read, list, write, delete), whether it
//!   needs `sudo`, and whether it serves `HEAD`; [`routes()`] is the whole API in one list.
//! - [`gate`] finds the declaration for the matched route and the request's verb (none: 405, no
//!   handler runs), authenticates, checks the caller's policies against exactly that operation on
//!   the canonical path, audits the request and the response, and feeds the anomaly rules.
//!
//! Handlers take names as checked types ([`crate::names`]) and bodies as [`Body`], whose
//! [`Body::finish`] refuses every field the handler did not use, with a 400 naming it.
//! - [`Caller`] is the authenticated caller, as the gate resolved it.
//! - [`Body`] parses request bodies as JSON objects, turning malformed JSON into a 400.
//! - [`respond`] wraps data in Vault's envelope `{request_id, lease_id, renewable, lease_duration,
//!   data, warnings}`.

mod audit;
mod auth;
pub mod canonical;
mod database;
pub mod error;
pub mod gate;
pub mod openapi;
mod policies;
pub mod routes;
mod static_roles;
mod sys;
mod wrapping;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use lessor_plugin::Secret;
use serde::Serialize;
use serde_json::{Map, Value};

pub use error::{ApiError, ApiResult};
pub use routes::Routes;

use crate::auth::Identity;
use crate::AppState;

/// Every endpoint of the API, each declared with its operation and who may call it; the gate
/// checks exactly these declarations (see [`routes`]).
pub fn routes() -> Routes {
    Routes::new()
        .read("/v1/sys/health", sys::health)
        .also_head()
        .public()
        .read("/v1/auth/token/lookup-self", sys::lookup_self)
        .write("/v1/auth/token/lookup-self", sys::lookup_self)
        .body(&[])
        .list("/v1/database/config", database::list_connections)
        .list("/v1/database/config/", database::list_connections)
        .read("/v1/database/config/{name}", database::read_connection)
        .query(database::READ_CONNECTION_QUERY)
        .summary(
            "Read a connection; with verify=true, also whether its database answers now \
             (reachability: reachable, error, checked_at, elapsed_ms), checked without side effects",
        )
        .write("/v1/database/config/{name}", database::write_connection)
        .body(database::CONNECTION_BODY)
        .delete("/v1/database/config/{name}", database::delete_connection)
        .write("/v1/database/reset/{name}", database::reset_connection)
        .body(&[])
        .list("/v1/database/roles", database::list_roles)
        .list("/v1/database/roles/", database::list_roles)
        .read("/v1/database/roles/{name}", database::read_role)
        .write("/v1/database/roles/{name}", database::write_role)
        .body(database::ROLE_BODY)
        .delete("/v1/database/roles/{name}", database::delete_role)
        // Issuing is a read in Vault's model, whichever method a client uses.
        .read("/v1/database/creds/{name}", database::issue_creds)
        .issues_credential()
        .list("/v1/database/static-roles", static_roles::list_static_roles)
        .list(
            "/v1/database/static-roles/",
            static_roles::list_static_roles,
        )
        .read(
            "/v1/database/static-roles/{name}",
            static_roles::read_static_role,
        )
        .write(
            "/v1/database/static-roles/{name}",
            static_roles::write_static_role,
        )
        .body(static_roles::STATIC_ROLE_BODY)
        .delete(
            "/v1/database/static-roles/{name}",
            static_roles::delete_static_role,
        )
        .read(
            "/v1/database/static-creds/{name}",
            static_roles::read_static_creds,
        )
        .issues_credential()
        .write("/v1/database/rotate-role/{name}", static_roles::rotate_role)
        .body(&[])
        .write("/v1/database/rotate-root/{name}", static_roles::rotate_root)
        .sudo()
        .body(&[])
        .write("/v1/sys/leases/lookup", sys::lookup_lease)
        .body(sys::LEASE_ID_BODY)
        .list("/v1/sys/leases/lookup", sys::list_leases_root)
        .sudo()
        .query(sys::LEASE_LIST_QUERY)
        .summary(sys::LEASE_LIST_SUMMARY)
        .list("/v1/sys/leases/lookup/", sys::list_leases_root)
        .sudo()
        .query(sys::LEASE_LIST_QUERY)
        .summary(sys::LEASE_LIST_SUMMARY)
        .list("/v1/sys/leases/lookup/{*prefix}", sys::list_leases)
        .sudo()
        .query(sys::LEASE_LIST_QUERY)
        .summary(sys::LEASE_LIST_SUMMARY)
        .write("/v1/sys/leases/renew", sys::renew_lease)
        .body(sys::RENEW_BODY)
        .write("/v1/sys/leases/renew/{*lease_id}", sys::renew_lease_path)
        .body(sys::RENEW_PATH_BODY)
        .write("/v1/sys/leases/revoke", sys::revoke_lease)
        .body(sys::LEASE_ID_BODY)
        .write("/v1/sys/leases/revoke/{*lease_id}", sys::revoke_lease_path)
        .body(&[])
        .write("/v1/sys/leases/revoke-prefix/{*prefix}", sys::revoke_prefix)
        .sudo()
        .body(sys::PREFIX_BODY)
        .write("/v1/sys/leases/revoke-force/{*prefix}", sys::revoke_force)
        .sudo()
        .body(sys::PREFIX_BODY)
        .write("/v1/sys/leases/reconcile", sys::reconcile)
        .sudo()
        .body(sys::RECONCILE_BODY)
        .read("/v1/sys/leases", sys::irrevocable_leases)
        .sudo()
        .query(&["type", "include_child", "limit"])
        // Vault's older lease paths, still used by async-hvac and older clients.
        .write("/v1/sys/renew", sys::renew_lease)
        .body(sys::RENEW_BODY)
        .write("/v1/sys/renew/{*lease_id}", sys::renew_lease_path)
        .body(sys::RENEW_PATH_BODY)
        .write("/v1/sys/revoke", sys::revoke_lease)
        .body(sys::LEASE_ID_BODY)
        .write("/v1/sys/revoke/{*lease_id}", sys::revoke_lease_path)
        .body(&[])
        .write("/v1/sys/revoke-prefix/{*prefix}", sys::revoke_prefix)
        .sudo()
        .body(sys::PREFIX_BODY)
        .write("/v1/sys/revoke-force/{*prefix}", sys::revoke_force)
        .sudo()
        .body(sys::PREFIX_BODY)
        .read("/v1/sys/seal-status", sys::seal_status)
        .public()
        .read("/v1/sys/mounts", sys::mounts)
        .read("/v1/sys/auth", sys::auth_methods)
        .write("/v1/database/reload/{name}", database::reload_plugin)
        .body(&[])
        .merge(auth::routes())
        .merge(policies::routes())
        .merge(audit::routes())
        .merge(wrapping::routes())
        .merge(openapi::routes())
}

/// Builds the API router behind the policy gate. Serve it through [`crate::app`], which puts the
/// canonicalization in front of it.
pub fn router(state: AppState) -> Router {
    let (routes, table) = routes().into_parts();
    routes
        .fallback(|| async { ApiError::empty_not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "unsupported operation on this path",
            )
        })
        // The gate buffers the body under the same limit; this keeps the extractors in step.
        .layer(axum::extract::DefaultBodyLimit::max(gate::BODY_LIMIT))
        // Must stay the last layer: it wraps only the routes added above it.
        .layer(axum::middleware::from_fn_with_state(
            gate::GateState {
                app: state.clone(),
                table,
            },
            gate::gate,
        ))
        .with_state(state)
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

/// A request body parsed as a JSON object; an empty body is `{}`. The second part is what the
/// route declares ([`routes::BodySpec`]): taking a field it does not declare, or as another
/// kind, is a 500, so a handler and the OpenAPI document made from the declaration cannot
/// disagree without every request to that endpoint failing in the tests.
#[derive(Debug, Default)]
pub struct Body(pub Map<String, Value>, pub Option<routes::BodySpec>);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared = request
            .extensions()
            .get::<routes::DeclaredBody>()
            .and_then(|d| d.0);
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(Map::new(), declared));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(mut map)) => {
                // An explicit null means "not given" (async-hvac sends `"id": null`).
                map.retain(|_, value| !value.is_null());
                Ok(Self(map, declared))
            }
            Ok(_) => Err(ApiError::bad_request("request body must be a JSON object")),
            Err(e) => Err(ApiError::bad_request(format!("malformed JSON body: {e}"))),
        }
    }
}

impl Body {
    /// Takes `field` out of the body, after checking the route declares it as `kind`.
    fn take(&mut self, field: &str, kind: routes::FieldKind) -> Result<Option<Value>, ApiError> {
        if let Some(routes::BodySpec::Fields(declared)) = self.1 {
            if !declared.iter().any(|f| f.name == field && f.kind == kind) {
                tracing::error!(
                    field,
                    ?kind,
                    "a handler read a body field its route does not declare"
                );
                return Err(crate::error::Error::Internal(format!(
                    "the handler reads body field {field} ({kind:?}), which its route does not declare"
                ))
                .into());
            }
        }
        Ok(self.0.remove(field))
    }

    /// Takes a string field; a wrong type is a 400 naming the field.
    pub fn string(&mut self, field: &str) -> Result<Option<String>, ApiError> {
        match self.take(field, routes::FieldKind::String)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(ApiError::bad_request(format!("{field}: expected a string"))),
        }
    }

    /// Takes a secret string field (password, URL); its value never appears in an error.
    pub fn secret(&mut self, field: &str) -> Result<Option<Secret>, ApiError> {
        match self.take(field, routes::FieldKind::Secret)? {
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
        match self.take(field, routes::FieldKind::StringList)? {
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
        match self.take(field, routes::FieldKind::Boolean)? {
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
        match self.take(field, routes::FieldKind::Integer)? {
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
        match self.take(field, routes::FieldKind::Duration)? {
            None | Some(Value::Null) => Ok(None),
            Some(value) => Ok(Some(crate::ttl::parse_duration_value(field, &value)?)),
        }
    }

    pub fn object(&mut self, field: &str) -> Result<Option<Value>, ApiError> {
        Ok(self
            .take(field, routes::FieldKind::Object)?
            .filter(|v| !v.is_null()))
    }

    /// Refuses `field` unless it is absent or holds its "off" value (`""`, `false`, `0`, `"0s"`,
    /// `[]`, `{}`): for Vault fields Lessor does not implement, so a client that sends one with a
    /// meaning is told rather than silently ignored.
    pub fn refuse_unsupported(&mut self, field: &str, why: &str) -> Result<(), ApiError> {
        let off = match self.0.remove(field) {
            None => true,
            Some(Value::String(s)) => matches!(s.trim(), "" | "0" | "0s" | "false"),
            Some(Value::Bool(b)) => !b,
            Some(Value::Number(n)) => n.as_f64() == Some(0.0),
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            Some(Value::Null) => true,
        };
        if off {
            Ok(())
        } else {
            Err(ApiError::bad_request(format!("{field}: {why}")))
        }
    }

    /// Takes `field` if the client repeated a path parameter in the body (node-vault sends the
    /// parameters of its path templates, such as `path_prefix`, as body fields too): it must equal
    /// the path's value, or the request is ambiguous and refused.
    pub fn echoed_path_parameter(&mut self, field: &str, in_path: &str) -> Result<(), ApiError> {
        match self.take(field, routes::FieldKind::String)? {
            None => Ok(()),
            Some(Value::String(s)) if s.trim_matches('/') == in_path.trim_matches('/') => Ok(()),
            Some(_) => Err(ApiError::bad_request(format!(
                "{field}: does not match the path ({in_path})"
            ))),
        }
    }

    /// Ends parsing: every field the handler did not take is refused with a 400 naming it, so a
    /// misspelled or unsupported field never goes unnoticed.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.0.keys().map(String::as_str).collect();
        Err(ApiError::bad_request(format!(
            "unknown field{} for this path: {}",
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        )))
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

/// Names come out of the (canonical) path as checked types: a handler never sees an unchecked
/// name, and an invalid one is a 400 naming what is wrong before the handler runs.
macro_rules! path_names {
    ($($name:ty),* $(,)?) => {$(
        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
                let axum::extract::Path(raw) =
                    axum::extract::Path::<String>::from_request_parts(parts, state)
                        .await
                        .map_err(|e| ApiError::bad_request(format!("{}: {e}", <$name>::KIND)))?;
                Ok(<$name>::parse(raw)?)
            }
        }
    )*};
}

path_names!(
    crate::names::RoleName,
    crate::names::StaticRoleName,
    crate::names::ConnectionName,
    crate::names::JwtRoleName,
    crate::names::TokenRoleName,
    crate::names::AuditDeviceName,
    crate::names::LeaseId,
    crate::names::LeasePrefix,
    crate::names::PolicyName,
);

/// Query parameters parsed into `T`; a bad value is a 400 in the API's error shape. Which
/// parameters an endpoint takes at all is declared in the route table and checked by the gate.
pub struct QueryParams<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))
    }
}

#[cfg(test)]
mod tests {
    use super::routes::{Access, Verb};

    /// The endpoints that act on everything at once or on the audit trail need sudo, declared in
    /// the one route table the gate checks; nothing else does.
    #[test]
    fn sudo_and_public_endpoints_are_exactly_these() {
        let (_, table) = super::routes().into_parts();
        let mut sudo: Vec<String> = table
            .endpoints()
            .filter(|(_, e)| e.access == Access::Sudo)
            .map(|(t, e)| format!("{:?} {t}", e.verb))
            .collect();
        sudo.sort();
        assert_eq!(
            sudo,
            [
                "Delete /v1/auth/token/roles/{name}",
                "Delete /v1/sys/audit/{name}",
                "List /v1/sys/leases/lookup",
                "List /v1/sys/leases/lookup/",
                "List /v1/sys/leases/lookup/{*prefix}",
                "Read /v1/sys/audit",
                "Read /v1/sys/leases",
                "Write /v1/auth/token/create-orphan",
                "Write /v1/auth/token/revoke-orphan",
                // A token role may grant policies its writer does not hold.
                "Write /v1/auth/token/roles/{name}",
                "Write /v1/database/rotate-root/{name}",
                "Write /v1/sys/audit-hash/{name}",
                "Write /v1/sys/audit/{name}",
                "Write /v1/sys/leases/reconcile",
                "Write /v1/sys/leases/revoke-force/{*prefix}",
                "Write /v1/sys/leases/revoke-prefix/{*prefix}",
                "Write /v1/sys/revoke-force/{*prefix}",
                "Write /v1/sys/revoke-prefix/{*prefix}",
            ]
        );
        let mut unauthenticated: Vec<String> = table
            .endpoints()
            .filter(|(_, e)| matches!(e.access, Access::Public | Access::Login))
            .map(|(t, e)| format!("{:?} {t}", e.verb))
            .collect();
        unauthenticated.sort();
        assert_eq!(
            unauthenticated,
            [
                "Head /v1/sys/health",
                "Read /v1/sys/health",
                "Read /v1/sys/seal-status",
                "Write /v1/auth/cert/login",
                "Write /v1/auth/jwt/login",
            ]
        );
        // HEAD is served only where it has no side effect.
        let heads: Vec<&str> = table
            .endpoints()
            .filter(|(_, e)| e.verb == Verb::Head)
            .map(|(t, _)| t)
            .collect();
        assert_eq!(heads, ["/v1/sys/health"]);
    }
}
