//! The gate every routed request passes: find the endpoint the route table declares for the
//! matched route and the request's verb (none: 405 before any handler), refuse undeclared query
//! parameters, authenticate, authorize exactly the declared operation on the canonical path (and
//! `sudo` where declared), record the request in the audit log, run the handler, record the
//! response, feed the anomaly rules and the latency histogram.
//!
//! Order matters for fail-closed auditing of credentials. The request line is written *before*
//! the handler runs, so if no audit device can record it nothing is issued at all. If the
//! response line then cannot be written, the response is withheld (500) and what it carried is
//! undone: an issued lease is revoked, a new token is revoked. Writing the request first keeps
//! the common failure (a dead device) free of side effects; withholding covers a device that
//! dies between the two lines. The caller never holds a credential the audit log does not show.
//!
//! Response wrapping (`X-Vault-Wrap-TTL`, parsed by [`super::canonical`]) happens here, after
//! the handler and before the response line: the policy check and the request line are those of
//! the request as asked; the response line records the answer the caller really gets (the wrap,
//! its token HMAC'd like every token); and when that line cannot be written, what the wrap hid
//! is undone like any withheld answer (its lease or token revoked) and the wrap is discarded. The
//! endpoints that consume wrapping tokens (`Access::WrappingToken`) are authorized here too, by
//! possession of the wrapping token, which the handler receives as [`WrappingToken`].
//!
//! Public endpoints (`sys/health`) are neither authenticated nor audited (load balancers poll them
//! every few seconds); login endpoints (`auth/jwt/login`) are unauthenticated by nature and audited
//! like everything else. Paths no route matches fall through to the 404 fallback untouched.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use lessor_plugin::Secret;
use serde_json::{json, Value};

use super::canonical::{Listing, WrapRequest};
use super::routes::{Access, Endpoint, RouteTable, Verb};
use super::wrapping::WrappingToken;
use super::{ApiError, Caller};
use crate::audit::anomaly::Actor;
use crate::audit::{Audit, EntryKind};
use crate::auth::policy::Operation;
use crate::error::Error;
use crate::wrapping::{is_wrappable, WrapInfo};
use crate::AppState;

tokio::task_local! {
    /// The id of the request being answered, so the envelope and the audit lines agree.
    static REQUEST_ID: String;
}

/// The current request's id, or a fresh one outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string())
}

/// Largest request body accepted (413 past it), by the gate and by the handlers' extractors
/// alike; policies and PEM bundles fit easily.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// What the gate middleware needs: the application and the route table it checks against.
#[derive(Clone)]
pub struct GateState {
    pub app: AppState,
    pub table: Arc<RouteTable>,
}

/// The token presented as `X-Vault-Token` or `Authorization: Bearer`.
pub fn presented_token(headers: &HeaderMap) -> Option<Secret> {
    headers
        .get("x-vault-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .or_else(|| {
            headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim)
                .filter(|v| !v.is_empty())
        })
        .map(Secret::from)
}

/// Resolves the caller behind a client token, without checking what it may do.
async fn identify(state: &AppState, token: Option<Secret>) -> Result<Caller, Error> {
    let identity = state.auth.authenticate(token.as_ref()).await?;
    let acl = state.policies.acl(&identity.policies).await?;
    Ok(Caller {
        identity,
        token: token.unwrap_or_default(),
        acl,
    })
}

/// Resolves and authorizes a caller for `operation` on `path`.
async fn authorize(
    state: &AppState,
    token: Option<Secret>,
    path: &str,
    operation: Operation,
    sudo: bool,
) -> Result<Caller, Error> {
    let caller = identify(state, token).await?;
    let acl = &caller.acl;
    if !acl.allows(path, operation) || (sudo && !acl.has_sudo(path)) {
        tracing::info!(accessor = %caller.identity.accessor, %path, operation = operation.as_str(), "refused by policy");
        return Err(Error::PermissionDenied);
    }
    Ok(caller)
}

/// The wrapping token an `Access::WrappingToken` endpoint acts on: the body's `token`, else the
/// request's token. Holding it is the authorization. A request token sent alongside a body token
/// is a client token: it must be live (a bad token is a 403 on every path) and the audit line
/// names its holder. A wrapping token is never a client token, so it passes nowhere else.
async fn wrapping_token(state: &AppState, record: &mut Record) -> Result<WrappingToken, Error> {
    match record.body.get("token") {
        Some(Value::String(token)) if !token.trim().is_empty() => {
            let token = WrappingToken(Secret::new(token.trim()));
            if let Some(client) = record.token.clone() {
                record.caller = Some(identify(state, Some(client)).await?);
            }
            Ok(token)
        }
        None | Some(Value::Null) | Some(Value::String(_)) => {
            record.token.clone().map(WrappingToken).ok_or_else(|| {
                Error::invalid(
                    "token: a wrapping token is required, as the request's token or as \"token\" in the body",
                )
            })
        }
        Some(_) => Err(Error::invalid("token: expected a string")),
    }
}

/// What the audit lines of one request share.
struct Record {
    request_id: String,
    remote: Option<IpAddr>,
    operation: Operation,
    path: String,
    role: Option<String>,
    lease_id: Option<String>,
    caller: Option<Caller>,
    /// The presented token; audit lines carry only its HMAC, so a leaked token can be traced
    /// with `sys/audit-hash`.
    token: Option<Secret>,
    /// The request body as sent; audit lines carry it with secrets HMAC'd.
    body: Value,
}

impl Record {
    fn identity(&self, audit: &Audit) -> Value {
        let token_hmac = self.token.as_ref().map(|t| audit.hash(t.expose()));
        match &self.caller {
            Some(caller) => json!({
                "accessor": caller.identity.accessor,
                "display_name": caller.identity.display_name,
                "policies": caller.identity.policies,
                "entity_id": caller.identity.entity_id,
                "client_token": token_hmac,
            }),
            None => json!({ "client_token": token_hmac }),
        }
    }

    /// One audit line. Built only when an audit device is enabled: the HMACs cost time on
    /// every request otherwise.
    fn entry(
        &self,
        audit: &Audit,
        kind: EntryKind,
        status: Option<StatusCode>,
        error: Option<&str>,
        response: Option<&Value>,
    ) -> Value {
        let mut entry = json!({
            "time": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "type": match kind { EntryKind::Request => "request", EntryKind::Response => "response", EntryKind::Event => "event" },
            "request_id": self.request_id,
            "identity": self.identity(audit),
            "remote_address": self.remote.map(|a| a.to_string()),
            "operation": self.operation.as_str(),
            "path": self.path,
            "role": self.role,
            "lease_id": self.lease_id,
            "data": audit.redact(&self.body),
        });
        if kind == EntryKind::Response {
            entry["status"] = json!(status.map(|s| s.as_u16()));
            entry["error"] = json!(error);
            entry["response"] = response.map_or(Value::Null, |r| audit.redact(r));
        }
        entry
    }

    fn actor(&self) -> Actor {
        Actor {
            identity: self
                .caller
                .as_ref()
                .map(|c| c.identity.entity_id.clone())
                .unwrap_or_default(),
            display_name: self
                .caller
                .as_ref()
                .map(|c| c.identity.display_name.clone())
                .unwrap_or_default(),
            address: self.remote,
        }
    }
}

/// The role a request concerns, for the audit line and the rules.
fn role_of(route: &str, path: &str, body: &Value) -> Option<String> {
    if route == "/v1/auth/jwt/login" {
        return body.get("role").and_then(Value::as_str).map(str::to_owned);
    }
    let concerns_role = [
        "/v1/database/creds/",
        "/v1/database/roles/",
        "/v1/database/static-",
        "/v1/database/rotate-role/",
        "/v1/auth/jwt/role/",
    ]
    .iter()
    .any(|prefix| route.starts_with(prefix));
    if !concerns_role {
        return None;
    }
    let template: Vec<&str> = route.trim_start_matches("/v1/").split('/').collect();
    let at = template.iter().position(|s| *s == "{name}")?;
    path.split('/').nth(at).map(str::to_owned)
}

/// The lease a request concerns: from the body, or the path of `sys/leases/*/{lease_id}`.
fn lease_of(route: &str, path: &str, body: &Value) -> Option<String> {
    if let Some(id) = body.get("lease_id").and_then(Value::as_str) {
        return Some(id.to_owned());
    }
    if route.starts_with("/v1/sys/leases/") && route.contains("/{*") {
        let fixed = route.trim_start_matches("/v1/").split("/{*").next()?;
        return path
            .strip_prefix(fixed)
            .map(|rest| rest.trim_start_matches('/').to_owned());
    }
    None
}

fn error_text(body: &Value) -> Option<String> {
    let errors = body.get("errors")?.as_array()?;
    let joined: Vec<&str> = errors.iter().filter_map(Value::as_str).collect();
    (!joined.is_empty()).then(|| joined.join("; "))
}

/// The middleware. Layered on the router (so the matched route template is known), behind the
/// canonicalization (so the path it checks is the decoded one the handler serves).
pub async fn gate(State(gate): State<GateState>, request: Request, next: Next) -> Response {
    let Some(route) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
    else {
        return next.run(request).await;
    };
    let listing = request
        .extensions()
        .get::<Listing>()
        .is_some_and(|listing| listing.0);
    let started = Instant::now();
    let method = request.method().clone();
    let Some(endpoint) =
        Verb::of(&method, listing).and_then(|verb| gate.table.endpoint(&route, verb))
    else {
        // Nothing is declared for this verb here: no handler runs, whatever axum would route.
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            if listing {
                "this path cannot be listed"
            } else {
                "unsupported operation on this path"
            },
        )
        .into_response();
    };
    if let Some(unknown) = request.uri().query().and_then(|query| {
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split('=').next().unwrap_or_default())
            .find(|name| !endpoint.query.contains(name))
    }) {
        return ApiError::bad_request(format!(
            "query parameter {unknown:?} is not supported on this path"
        ))
        .into_response();
    }
    // The handler's [`super::Body`] holds it to the fields this route declares.
    let mut request = request;
    request
        .extensions_mut()
        .insert(super::routes::DeclaredBody(endpoint.body));
    let response = if endpoint.access == Access::Public {
        next.run(request).await
    } else {
        guarded(&gate.app, &route, endpoint, request, next).await
    };
    crate::metrics::observe_request(&route, method.as_str(), started.elapsed());
    response
}

async fn guarded(
    state: &AppState,
    route: &str,
    endpoint: Endpoint,
    request: Request,
    next: Next,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let operation = endpoint.verb.operation();
    let mut path = request.uri().path().trim_start_matches("/v1/").to_owned();
    // Vault checks listings against the path with a trailing slash.
    if operation == Operation::List && !path.ends_with('/') {
        path.push('/');
    }
    let (mut parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
            .into_response();
    };
    let body_json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut record = Record {
        request_id: request_id.clone(),
        remote,
        operation,
        role: role_of(route, &path, &body_json),
        lease_id: lease_of(route, &path, &body_json),
        path,
        caller: None,
        token: presented_token(&parts.headers),
        body: body_json,
    };

    match endpoint.access {
        Access::Login => {}
        Access::WrappingToken => match wrapping_token(state, &mut record).await {
            Ok(token) => {
                parts.extensions.insert(token);
            }
            Err(error) => return refuse(state, &record, error).await,
        },
        Access::Policy | Access::Sudo | Access::Public => {
            let sudo = endpoint.access == Access::Sudo;
            match authorize(state, record.token.clone(), &record.path, operation, sudo).await {
                Ok(caller) => record.caller = Some(caller),
                Err(error) => return refuse(state, &record, error).await,
            }
        }
    }
    let wrap = parts.extensions.get::<WrapRequest>().copied();
    let audit = &state.audit;
    if let Err(error) = audit
        .write(EntryKind::Request, || {
            record.entry(audit, EntryKind::Request, None, None, None)
        })
        .await
    {
        return ApiError::from(error).into_response();
    }
    if let Some(caller) = &record.caller {
        parts.extensions.insert(caller.clone());
    }
    let response = REQUEST_ID
        .scope(
            request_id.clone(),
            next.run(Request::from_parts(parts, Body::from(bytes))),
        )
        .await;
    let handler_status = response.status();
    // Vault wraps successful answers only; an error goes back as it is.
    let wrap = wrap.filter(|_| handler_status.is_success());
    if !audit.is_enabled() && wrap.is_none() {
        // Nothing to record or wrap: the response goes out as the handler made it, unbuffered.
        observe(state, endpoint, &record, handler_status).await;
        return response;
    }

    let Some((mut response_parts, mut response_bytes)) = buffered(response).await else {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot read the response",
        )
        .into_response();
    };
    let original: Value = serde_json::from_slice(&response_bytes).unwrap_or(Value::Null);
    if record.lease_id.is_none() {
        record.lease_id = original
            .get("lease_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
    }

    // The wrapping step: the answer is stored sealed and the caller gets a wrapping token.
    let mut status = handler_status;
    let mut wrapped: Option<WrapInfo> = None;
    let mut undone = false;
    let mut answer = None;
    if let Some(wrap) = wrap.filter(|_| is_wrappable(&original)) {
        match state.wrapping.wrap(&original, &record.path, wrap.ttl).await {
            Ok(info) => {
                let envelope = info.envelope(&request_id);
                response_bytes = Bytes::from(envelope.to_string());
                // The handler's length, if it set one, was the unwrapped answer's.
                response_parts.headers.remove(header::CONTENT_LENGTH);
                answer = Some(envelope);
                wrapped = Some(info);
            }
            Err(error) => {
                // It cannot go out wrapped and must not go out unwrapped: undo what it carried.
                withhold(state, handler_status, &original).await;
                undone = true;
                let Some((parts, bytes)) = buffered(ApiError::from(error).into_response()).await
                else {
                    return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                };
                status = parts.status;
                answer = serde_json::from_slice(&bytes).ok();
                (response_parts, response_bytes) = (parts, bytes);
            }
        }
    }
    let answer = answer.as_ref().unwrap_or(&original);

    let written = audit
        .write(EntryKind::Response, || {
            record.entry(
                audit,
                EntryKind::Response,
                Some(status),
                error_text(answer).as_deref(),
                Some(answer),
            )
        })
        .await;
    if let Err(error) = written {
        if !undone {
            withhold(state, handler_status, &original).await;
        }
        if let Some(info) = &wrapped {
            if let Err(e) = state.wrapping.discard(&info.token).await {
                tracing::error!(accessor = %info.accessor, error = %e, "response withheld (audit failed); cannot discard the wrapped answer");
            }
        }
        return ApiError::from(error).into_response();
    }

    observe(state, endpoint, &record, status).await;
    Response::from_parts(response_parts, Body::from(response_bytes))
}

/// A response read into memory, to be recorded or wrapped; `None` when its body cannot be read.
async fn buffered(response: Response) -> Option<(axum::http::response::Parts, Bytes)> {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.ok()?;
    Some((parts, bytes))
}

/// Answers a refused request, audited like any other.
async fn refuse(state: &AppState, record: &Record, error: Error) -> Response {
    let api_error = ApiError::from(error);
    let status = api_error.status;
    let message = api_error.errors.join("; ");
    let body = json!({ "errors": api_error.errors });
    let audit = &state.audit;
    for (kind, response) in [
        (EntryKind::Request, None),
        (EntryKind::Response, Some(&body)),
    ] {
        let written = audit
            .write(kind, || {
                let status = response.map(|_| status);
                record.entry(audit, kind, status, Some(&message), response)
            })
            .await;
        if let Err(error) = written {
            return ApiError::from(error).into_response();
        }
    }
    if status == StatusCode::FORBIDDEN {
        if let Err(e) = state.monitor.denied(&record.actor()).await {
            tracing::error!(error = %e, "anomaly rules could not record a denial");
        }
    }
    (status, axum::Json(body)).into_response()
}

/// Undoes what a withheld response carried: the caller never saw it, so nobody may use it.
async fn withhold(state: &AppState, status: StatusCode, response: &Value) {
    if !status.is_success() {
        return;
    }
    if let Some(lease_id) = response
        .get("lease_id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
    {
        match state
            .leases
            .revoke(lease_id, crate::lease::Holder::Anyone)
            .await
        {
            Ok(()) => {
                tracing::warn!(%lease_id, "response withheld (audit failed); the lease was revoked")
            }
            Err(e) => {
                tracing::error!(%lease_id, error = %e, "response withheld (audit failed); revocation failed and the reaper will retry")
            }
        }
    }
    if let Some(accessor) = response.pointer("/auth/accessor").and_then(Value::as_str) {
        match state.auth.revoke_accessor(accessor).await {
            Ok(()) => {
                tracing::warn!(%accessor, "response withheld (audit failed); the new token was revoked")
            }
            Err(e) => {
                tracing::error!(%accessor, error = %e, "response withheld (audit failed); cannot revoke the new token")
            }
        }
    }
}

/// Feeds the anomaly rules. Their failures are logged, never the request's.
async fn observe(state: &AppState, endpoint: Endpoint, record: &Record, status: StatusCode) {
    let outcome = if status == StatusCode::FORBIDDEN {
        state.monitor.denied(&record.actor()).await
    } else if status.is_success() && endpoint.issues_credential {
        let role = record.role.clone().unwrap_or_default();
        state.monitor.credential_read(&record.actor(), &role).await
    } else {
        Ok(())
    };
    if let Err(e) = outcome {
        tracing::error!(error = %e, "anomaly rules could not record a request");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_leases_come_from_routes() {
        let none = Value::Null;
        assert_eq!(
            role_of("/v1/database/creds/{name}", "database/creds/app", &none).as_deref(),
            Some("app")
        );
        assert_eq!(
            role_of("/v1/database/config/{name}", "database/config/pg", &none),
            None
        );
        assert_eq!(
            role_of(
                "/v1/auth/jwt/login",
                "auth/jwt/login",
                &json!({"role": "k8s"})
            )
            .as_deref(),
            Some("k8s")
        );
        assert_eq!(
            lease_of(
                "/v1/sys/leases/revoke/{*lease_id}",
                "sys/leases/revoke/database/creds/app/x",
                &none
            )
            .as_deref(),
            Some("database/creds/app/x")
        );
        assert_eq!(
            lease_of(
                "/v1/sys/leases/renew",
                "sys/leases/renew",
                &json!({"lease_id": "a/b"})
            )
            .as_deref(),
            Some("a/b")
        );
    }
}
