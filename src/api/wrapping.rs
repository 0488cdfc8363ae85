//! Handlers for `sys/wrapping/{unwrap,lookup,rewrap,wrap}` (Vault's shapes, [`crate::wrapping`]
//! does the work).
//!
//! Wrapping an answer is not a handler's business: any request with `X-Vault-Wrap-TTL` is wrapped
//! by the gate after its handler answered, so `sys/wrapping/wrap` only echoes its body as `data`
//! and lets the gate wrap it like any other answer. Which wrapping token `unwrap` and `lookup` act
//! on is decided by the gate too ([`Access::WrappingToken`](super::routes::Access)); the handlers
//! take it as [`WrappingToken`].

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use lessor_plugin::Secret;
use serde_json::{json, Map, Value};

use super::canonical::WrapRequest;
use super::gate::current_request_id;
use super::routes::{field, BodyField, FieldKind};
use super::{respond, ApiError, ApiResult, Body, Caller, Routes};

/// `sys/wrapping/unwrap`, `lookup`, `rewrap`: the wrapping token (else the request's token).
const TOKEN_BODY: &[BodyField] = &[field("token", FieldKind::Secret)];
use crate::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .write("/v1/sys/wrapping/unwrap", unwrap)
        .wrapping_token()
        .body(TOKEN_BODY)
        .write("/v1/sys/wrapping/lookup", lookup)
        .wrapping_token()
        .body(TOKEN_BODY)
        .write("/v1/sys/wrapping/rewrap", rewrap)
        .body(TOKEN_BODY)
        .write("/v1/sys/wrapping/wrap", wrap)
        .free_body("Any JSON object: it is wrapped as the data of the answer")
}

/// The wrapping token a request acts on, as the gate chose it (the body's `token`, else the
/// request's token).
#[derive(Debug, Clone)]
pub struct WrappingToken(pub Secret);

impl<S: Send + Sync> FromRequestParts<S> for WrappingToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        // Only the gate puts it there; a handler reached some other way acts on nothing.
        match parts.extensions.get::<WrappingToken>() {
            Some(token) => Ok(token.clone()),
            None => {
                tracing::error!(path = %parts.uri.path(), "a wrapping route is outside the policy gate; refusing");
                Err(crate::error::Error::PermissionDenied.into())
            }
        }
    }
}

/// `sys/wrapping/unwrap`: the wrapped answer, once.
async fn unwrap(State(state): State<AppState>, token: WrappingToken, mut body: Body) -> ApiResult {
    // The gate already read `token` from the body: it is the one this request acts on.
    body.secret("token")?;
    body.finish()?;
    let mut answer = state.wrapping.unwrap(&token.0).await?;
    if let Some(object) = answer.as_object_mut() {
        object.insert("request_id".into(), json!(current_request_id()));
    }
    Ok(Json(answer).into_response())
}

/// `sys/wrapping/lookup`: creation path, time and TTL; never the secret.
async fn lookup(State(state): State<AppState>, token: WrappingToken, mut body: Body) -> ApiResult {
    body.secret("token")?;
    body.finish()?;
    Ok(respond(state.wrapping.lookup(&token.0).await?))
}

/// `sys/wrapping/rewrap`: the same answer under a new wrapping token; the old token dies.
async fn rewrap(State(state): State<AppState>, _caller: Caller, mut body: Body) -> ApiResult {
    let token = body
        .secret("token")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("token: required"))?;
    body.finish()?;
    let info = state.wrapping.rewrap(&token).await?;
    Ok(Json(info.envelope(&current_request_id())).into_response())
}

/// `sys/wrapping/wrap`: wraps the request body (any JSON object) as `data`. As in Vault, the
/// request must ask for wrapping; answering the data back unwrapped would be pointless.
async fn wrap(_caller: Caller, wrap: Option<Extension<WrapRequest>>, bytes: Bytes) -> ApiResult {
    if wrap.is_none() {
        return Err(ApiError::bad_request(
            "x-vault-wrap-ttl: required on sys/wrapping/wrap (wrapping is requested but no TTL is set)",
        ));
    }
    // Parsed here rather than as `Body`, which drops null fields: the wrapped object comes back
    // exactly as given.
    let data: Map<String, Value> = if bytes.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|_| ApiError::bad_request("request body must be a JSON object"))?
    };
    Ok(respond(data))
}
