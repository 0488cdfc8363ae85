//! Handlers for `sys/health`, `sys/leases/*` and `auth/token/lookup-self`.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::json;

use serde::Deserialize;

use super::routes::{field, BodyField, FieldKind};
use super::{listing, respond, written, ApiError, ApiResult, Body, Caller, Envelope, QueryParams};

/// `sys/leases/lookup`, `sys/leases/revoke` (and the legacy `sys/revoke`).
pub const LEASE_ID_BODY: &[BodyField] = &[field("lease_id", FieldKind::String)];
/// `sys/leases/renew` (and `sys/renew`).
pub const RENEW_BODY: &[BodyField] = &[
    field("lease_id", FieldKind::String),
    field("increment", FieldKind::Duration),
];
/// `sys/leases/renew/:lease_id` (and `sys/renew/:lease_id`).
pub const RENEW_PATH_BODY: &[BodyField] = &[field("increment", FieldKind::Duration)];
/// `sys/leases/revoke-prefix/:prefix`, `revoke-force/:prefix`: node-vault repeats the prefix.
pub const PREFIX_BODY: &[BodyField] = &[field("path_prefix", FieldKind::String)];
/// `sys/leases/reconcile`.
pub const RECONCILE_BODY: &[BodyField] = &[
    field("dry_run", FieldKind::Boolean),
    field("connection", FieldKind::String),
];
use crate::auth::Auth;
use crate::lease::{Holder, ListPage};
use crate::names::{LeaseId, LeasePrefix};
use crate::store::LeaseStore;
use crate::AppState;

/// `sys/health`: unauthenticated, as in Vault; load balancers poll it.
pub async fn health(State(state): State<AppState>) -> Response {
    // The store is what every answer needs: when it cannot be reached this replica can serve
    // nothing, so it reports 503 and a load balancer (or a readiness probe) sends clients to
    // another replica.
    let (status, store_error) = match state.store.ping(HEALTH_STORE_TIMEOUT).await {
        Ok(()) => (StatusCode::OK, None),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, Some(error.to_string())),
    };
    let store = json!({
        "kind": state.store.kind().as_str(),
        "reachable": store_error.is_none(),
        "error": store_error,
    });
    (
        status,
        Json(json!({
            "initialized": true,
            "sealed": false,
            "standby": false,
            "performance_standby": false,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": Utc::now().timestamp(),
            "version": env!("CARGO_PKG_VERSION"),
            "cluster_name": "lessor",
            "replica_id": state.replica.id(),
            "store": store,
        })),
    )
        .into_response()
}

/// How long `sys/health` waits for the store before reporting it unreachable.
const HEALTH_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `sys/seal-status`: unauthenticated, as in Vault. Lessor has no seal to open (its key is given
/// at start), so it is always initialized and unsealed; clients that check before working proceed.
pub async fn seal_status(State(state): State<AppState>) -> Response {
    Json(json!({
        "type": "shamir",
        "initialized": true,
        "sealed": false,
        "t": 1,
        "n": 1,
        "progress": 0,
        "nonce": "",
        "version": env!("CARGO_PKG_VERSION"),
        "build_date": "",
        "migration": false,
        "cluster_name": "lessor",
        "cluster_id": "",
        "recovery_seal": false,
        "storage_type": state.store.kind().as_str(),
    }))
    .into_response()
}

/// One entry of `sys/mounts` / `sys/auth`, in Vault's shape.
fn mount(kind: &str, description: &str, accessor: &str, state: &AppState) -> serde_json::Value {
    let limits = state.catalog.limits();
    json!({
        "type": kind,
        "description": description,
        "accessor": accessor,
        "config": {
            "default_lease_ttl": limits.default_ttl.as_secs(),
            "max_lease_ttl": limits.max_ttl.as_secs(),
            "force_no_cache": false,
        },
        "local": false,
        "seal_wrap": false,
        "external_entropy_access": false,
        "options": null,
        "uuid": accessor,
    })
}

/// Vault puts the table both at the top level and under `data`.
fn mount_table(entries: Vec<(&str, serde_json::Value)>) -> Response {
    let mut body = serde_json::Map::new();
    let mut data = serde_json::Map::new();
    for (path, entry) in entries {
        body.insert(path.to_owned(), entry.clone());
        data.insert(path.to_owned(), entry);
    }
    body.insert(
        "request_id".into(),
        json!(super::gate::current_request_id()),
    );
    body.insert("data".into(), serde_json::Value::Object(data));
    Json(serde_json::Value::Object(body)).into_response()
}

/// `sys/mounts`: the secrets engines this server has (fixed: the database engine and `sys`).
pub async fn mounts(State(state): State<AppState>, _caller: Caller) -> Response {
    mount_table(vec![
        (
            "database/",
            mount(
                "database",
                "dynamic and static database credentials",
                "database_lessor",
                &state,
            ),
        ),
        (
            "sys/",
            mount("system", "system endpoints", "system_lessor", &state),
        ),
    ])
}

/// `sys/auth`: the auth methods this server has.
pub async fn auth_methods(State(state): State<AppState>, _caller: Caller) -> Response {
    mount_table(vec![
        (
            "token/",
            mount(
                "token",
                "token based credentials",
                "auth_token_lessor",
                &state,
            ),
        ),
        (
            "jwt/",
            mount(
                "jwt",
                "workload identity: signed JWTs",
                "auth_jwt_lessor",
                &state,
            ),
        ),
        (
            "cert/",
            mount(
                "cert",
                "workload identity: TLS client certificates",
                "auth_cert_lessor",
                &state,
            ),
        ),
    ])
}

pub async fn lookup_self(caller: Caller) -> Response {
    respond(Auth::describe(&caller.identity, &caller.token))
}

/// Whose leases `caller` may act on at `path`: anyone's with `sudo` there, otherwise its own.
/// The lease manager checks it on the row the operation reads.
fn holder<'a>(caller: &'a Caller, path: &str) -> Holder<'a> {
    if caller.acl.has_sudo(path) {
        Holder::Anyone
    } else {
        Holder::Identity {
            entity_id: &caller.identity.entity_id,
            accessor: &caller.identity.accessor,
        }
    }
}

/// The canonical path a request was authorized on (legacy `sys/renew` and current
/// `sys/leases/renew` alike), which is where an operator's `sudo` over others' leases is looked up.
fn policy_path(uri: &Uri) -> &str {
    uri.path().trim_start_matches("/v1/")
}

fn required_lease_id(body: &mut Body) -> Result<LeaseId, ApiError> {
    let id = body
        .string("lease_id")?
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ApiError::bad_request("lease_id: required"))?;
    Ok(LeaseId::parse(id)?)
}

pub async fn lookup_lease(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    mut body: Body,
) -> ApiResult {
    let lease_id = required_lease_id(&mut body)?;
    body.finish()?;
    let holder = holder(&caller, policy_path(&uri));
    Ok(respond(state.leases.lookup(&lease_id, holder).await?))
}

/// `?after=KEY&limit=N` on a lease listing (OpenBao's paging), and Lessor's
/// `owner_display_name=NAME`: only the leases that owner obtained.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    after: Option<String>,
    limit: Option<usize>,
    owner_display_name: Option<String>,
}

/// The query parameters of a lease listing, as the route table declares them.
pub const LEASE_LIST_QUERY: &[&str] = &["after", "limit", "owner_display_name"];

/// The lease listing, in one line for the OpenAPI document.
pub const LEASE_LIST_SUMMARY: &str =
    "List the live leases under a prefix (keys, deeper levels ending in /); \
    after and limit page them, owner_display_name keeps only the leases that owner obtained";

/// Longest owner display name a listing is filtered by: longer than any Lessor gives a token
/// (96 characters), so a real name is never refused.
const MAX_DISPLAY_NAME: usize = 128;

/// Longest page a client may ask for; without `limit` every key is answered.
const MAX_PAGE: usize = 100_000;

impl PageQuery {
    fn into_page(self) -> Result<ListPage, ApiError> {
        if let Some(after) = self.after.as_deref().filter(|a| !a.is_empty()) {
            LeasePrefix::parse(after.trim_end_matches('/'))
                .map_err(|e| ApiError::bad_request(format!("after: {e}")))?;
        }
        if self.limit.is_some_and(|l| l == 0 || l > MAX_PAGE) {
            return Err(ApiError::bad_request(format!(
                "limit: must be 1 to {MAX_PAGE}"
            )));
        }
        let owner_display_name = match self.owner_display_name {
            None => None,
            Some(name)
                if name.is_empty()
                    || name.chars().count() > MAX_DISPLAY_NAME
                    || name.chars().any(char::is_control) =>
            {
                return Err(ApiError::bad_request(format!(
                    "owner_display_name: 1 to {MAX_DISPLAY_NAME} characters, no control characters"
                )))
            }
            Some(name) => Some(name),
        };
        Ok(ListPage {
            after: self.after,
            limit: self.limit,
            owner_display_name,
        })
    }
}

/// Listing needs `list` and `sudo` on the path; the gate checked both.
pub async fn list_leases_root(
    State(state): State<AppState>,
    _caller: Caller,
    QueryParams(page): QueryParams<PageQuery>,
) -> ApiResult {
    listing(state.leases.list("", &page.into_page()?).await?)
}

pub async fn list_leases(
    State(state): State<AppState>,
    _caller: Caller,
    prefix: LeasePrefix,
    QueryParams(page): QueryParams<PageQuery>,
) -> ApiResult {
    listing(state.leases.list(&prefix, &page.into_page()?).await?)
}

async fn renew(
    state: &AppState,
    lease_id: &LeaseId,
    holder: Holder<'_>,
    mut body: Body,
) -> ApiResult {
    let increment = body.duration("increment")?;
    body.finish()?;
    let renewed = state.leases.renew(lease_id, increment, holder).await?;
    let mut envelope = Envelope::<()>::new(()).with_warnings(renewed.warnings);
    envelope.data = None;
    envelope.lease_id = renewed.lease_id;
    envelope.renewable = true;
    envelope.lease_duration = renewed.lease_duration.as_secs();
    Ok(Json(envelope).into_response())
}

pub async fn renew_lease(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    mut body: Body,
) -> ApiResult {
    let lease_id = required_lease_id(&mut body)?;
    renew(&state, &lease_id, holder(&caller, policy_path(&uri)), body).await
}

pub async fn renew_lease_path(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    lease_id: LeaseId,
    body: Body,
) -> ApiResult {
    renew(&state, &lease_id, holder(&caller, policy_path(&uri)), body).await
}

pub async fn revoke_lease(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    mut body: Body,
) -> ApiResult {
    let lease_id = required_lease_id(&mut body)?;
    body.refuse_unsupported("sync", "revocation is always synchronous here")?;
    body.finish()?;
    let holder = holder(&caller, policy_path(&uri));
    state.leases.revoke(&lease_id, holder).await?;
    Ok(written(vec![]))
}

pub async fn revoke_lease_path(
    State(state): State<AppState>,
    caller: Caller,
    uri: Uri,
    lease_id: LeaseId,
    body: Body,
) -> ApiResult {
    body.finish()?;
    let holder = holder(&caller, policy_path(&uri));
    state.leases.revoke(&lease_id, holder).await?;
    Ok(written(vec![]))
}

/// Needs `sudo` on the path (checked by the gate): it reaches every identity's leases.
pub async fn revoke_prefix(
    State(state): State<AppState>,
    _caller: Caller,
    prefix: LeasePrefix,
    mut body: Body,
) -> ApiResult {
    body.refuse_unsupported("sync", "revocation is always synchronous here")?;
    body.echoed_path_parameter("path_prefix", &prefix)?;
    body.finish()?;
    state.leases.revoke_prefix(&prefix, false).await?;
    Ok(written(vec![]))
}

/// Revokes every lease under the prefix even where the database refuses; the leases are
/// marked revoked with the error noted. Needs `sudo` on the path (checked by the gate).
pub async fn revoke_force(
    State(state): State<AppState>,
    _caller: Caller,
    prefix: LeasePrefix,
    mut body: Body,
) -> ApiResult {
    body.echoed_path_parameter("path_prefix", &prefix)?;
    body.finish()?;
    state.leases.revoke_prefix(&prefix, true).await?;
    Ok(written(vec![]))
}

/// `PUT sys/leases/reconcile`: one reconciliation sweep now (see [`crate::lease::reconcile`]);
/// `dry_run` reports what a sweep would do and changes nothing, `connection` limits it to one.
pub async fn reconcile(
    State(state): State<AppState>,
    _caller: Caller,
    mut body: Body,
) -> ApiResult {
    let dry_run = body.boolean("dry_run")?.unwrap_or(false);
    let connection = body
        .string("connection")?
        .map(|name| {
            crate::names::ConnectionName::parse(&name)
                .map_err(|e| ApiError::bad_request(format!("connection: {e}")))
        })
        .transpose()?;
    body.finish()?;
    let report = crate::lease::reconcile::sweep(&state, connection.as_deref(), dry_run).await?;
    Ok(respond(report))
}

/// `?type=irrevocable[&include_child=..][&limit=N|none]` on `sys/leases` (Vault's form).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrrevocableQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    include_child: Option<bool>,
    limit: Option<String>,
}

/// Longest listing of irrevocable leases without `limit=none`, as in Vault.
const IRREVOCABLE_DEFAULT_LIMIT: i64 = 10_000;

/// `GET sys/leases?type=irrevocable`: leases whose revocation keeps failing (still retried by
/// the reaper), with the last error, so an operator sees which users may outlive their lease.
pub async fn irrevocable_leases(
    State(state): State<AppState>,
    _caller: Caller,
    QueryParams(query): QueryParams<IrrevocableQuery>,
) -> ApiResult {
    match query.kind.as_deref() {
        Some("irrevocable") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "type: only \"irrevocable\" is supported, not {other:?}"
            )))
        }
        None => return Err(ApiError::bad_request("type: required (irrevocable)")),
    }
    // Lessor has one lease namespace, so there are no child namespaces to include or leave out.
    let _ = query.include_child;
    let limit = match query.limit.as_deref() {
        None => IRREVOCABLE_DEFAULT_LIMIT,
        Some("none") => i64::MAX,
        Some(n) => n
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ApiError::bad_request("limit: a positive number or \"none\""))?,
    };
    let leases = state
        .store
        .irrevocable_leases(crate::lease::IRREVOCABLE_AFTER_ATTEMPTS, limit)
        .await?;
    let listed: Vec<_> = leases
        .iter()
        .map(|lease| {
            json!({
                "lease_id": lease.id,
                "error": lease.last_error,
                "attempts": lease.attempts,
                "username": lease.username,
                "connection": lease.connection_name,
                "expire_time": lease.expires_at.to_rfc3339(),
                "mount_id": "database",
            })
        })
        .collect();
    Ok(respond(
        json!({ "lease_count": listed.len(), "leases": listed }),
    ))
}
