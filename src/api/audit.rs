//! Handlers for audit devices (`sys/audit`, `sys/audit/:name`, `sys/audit-hash/:name`), the anomaly
//! monitor (`sys/monitor/rules`, `sys/alerts`) and `sys/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::gate::current_request_id;
use super::routes::{field, BodyField, FieldKind};
use super::{respond, written, ApiError, ApiResult, Body, QueryParams, Routes};

/// `sys/audit/:name`, as [`enable_device`] reads it.
const DEVICE_BODY: &[BodyField] = &[
    field("type", FieldKind::String),
    field("description", FieldKind::String),
    field("options", FieldKind::Object),
];
/// `sys/audit-hash/:name`.
const HASH_BODY: &[BodyField] = &[field("input", FieldKind::Secret)];
use crate::metrics::render;
use crate::names::AuditDeviceName;
use crate::store::MetricsStore;
use crate::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .read("/v1/sys/audit", list_devices)
        .sudo()
        .write("/v1/sys/audit/{name}", enable_device)
        .sudo()
        .body(DEVICE_BODY)
        .delete("/v1/sys/audit/{name}", disable_device)
        .sudo()
        .write("/v1/sys/audit-hash/{name}", audit_hash)
        .sudo()
        .body(HASH_BODY)
        .read("/v1/sys/monitor/rules", read_rules)
        .write("/v1/sys/monitor/rules", write_rules)
        .free_body("A patch of the anomaly rules, as GET sys/monitor/rules shows them: only the rules named change")
        .read("/v1/sys/alerts", list_alerts)
        .query(&["limit"])
        .read("/v1/sys/metrics", metrics)
        .query(&["format"])
}

/// `sys/audit`: Vault puts the devices both at the top level and under `data`.
async fn list_devices(State(state): State<AppState>) -> Response {
    let devices = state.audit.describe();
    let mut body = Map::new();
    for (name, device) in &devices {
        body.insert(name.clone(), device.clone());
    }
    body.insert("request_id".into(), json!(current_request_id()));
    body.insert("data".into(), json!(devices));
    Json(Value::Object(body)).into_response()
}

/// `sys/audit/:name` as hvac's `enable_audit_device` sends it:
/// `{"type": "file", "description": "", "options": {"file_path": "..."}, "local": false}`.
async fn enable_device(
    State(state): State<AppState>,
    name: AuditDeviceName,
    mut body: Body,
) -> ApiResult {
    let device_type = body
        .string("type")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("type: required (file or stdout)"))?;
    let description = body.string("description")?.unwrap_or_default();
    let options = match body.object("options")? {
        None => Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(ApiError::bad_request("options: expected an object")),
    };
    body.refuse_unsupported("local", "there is no replication; every device is local")?;
    body.finish()?;
    state
        .audit
        .enable(&name, &device_type, &description, options)
        .await?;
    Ok(written(vec![]))
}

async fn disable_device(State(state): State<AppState>, name: AuditDeviceName) -> ApiResult {
    state.audit.disable(&name).await?;
    Ok(written(vec![]))
}

/// `sys/audit-hash/:name`: what `input` looks like in that device's log.
async fn audit_hash(
    State(state): State<AppState>,
    name: AuditDeviceName,
    mut body: Body,
) -> ApiResult<Response> {
    if !state.audit.has_device(&name) {
        return Err(ApiError::bad_request(format!(
            "unknown audit device {name:?}"
        )));
    }
    let input = body
        .secret("input")?
        .ok_or_else(|| ApiError::bad_request("input: required"))?;
    body.finish()?;
    let hash = state.audit.hash(input.expose());
    Ok(
        Json(json!({ "request_id": current_request_id(), "hash": hash, "data": { "hash": hash } }))
            .into_response(),
    )
}

async fn read_rules(State(state): State<AppState>) -> Response {
    respond(state.monitor.rules())
}

async fn write_rules(State(state): State<AppState>, body: Body) -> ApiResult {
    let rules = state.monitor.update_rules(&Value::Object(body.0)).await?;
    Ok(respond(rules))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertQuery {
    limit: Option<i64>,
}

/// `sys/alerts`: newest first, 100 unless `?limit=` says otherwise (at most 1000).
async fn list_alerts(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<AlertQuery>,
) -> ApiResult {
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    Ok(respond(
        json!({ "alerts": state.monitor.alerts(limit).await? }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsQuery {
    format: Option<String>,
}

/// `sys/metrics?format=prometheus`: the text exposition; without `format`, the same numbers are
/// not offered as JSON (no client asks for them), so the format is required.
async fn metrics(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<MetricsQuery>,
) -> ApiResult<Response> {
    if query.format.as_deref() != Some("prometheus") {
        return Err(ApiError::bad_request(
            "format: only format=prometheus is supported",
        ));
    }
    let live = state.store.live_lease_counts().await?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&live, &state.leases.warm_pool().counts()),
    )
        .into_response())
}
