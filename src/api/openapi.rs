//! The OpenAPI 3 document of the API, generated from the route table ([`super::routes`]).
//!
//! The table is what axum routes and what the gate checks, so a document made from it cannot list
//! an endpoint that does not exist or miss one that does: every (template, verb) becomes one
//! operation, with its path parameters (from the template), its query parameters (as declared),
//! who may call it (`security`, and Vault's `x-vault-sudo` / `x-vault-unauthenticated`
//! extensions, which Vault tooling reads), the answers the verb gives, and for a write the request
//! body: the fields its route declares, each with the schema of the way the handler reads it
//! (the handler's [`super::Body`] refuses to read a field the route does not declare, so the two
//! cannot drift).
//!
//! Served at `sys/openapi` and at Vault's `sys/internal/specs/openapi`, to a token whose policies
//! grant `read` there (as in Vault, where the document is an authenticated endpoint): it reveals
//! no secret, but a gated endpoint is audited like every other, and needs no new kind of access.
//! Unlike Vault, the document lists every endpoint rather than only those the token may call.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::routes::{Access, BodySpec, Endpoint, FieldKind, RouteTable, Verb};
use super::Routes;

/// The prefix of every route; the document's `servers` entry carries it, as Vault's does.
const PREFIX: &str = "/v1";

/// The endpoints that serve the document.
pub fn routes() -> Routes {
    Routes::new()
        .read("/v1/sys/openapi", openapi)
        .summary("The OpenAPI 3 document of this API, generated from its route table")
        .read("/v1/sys/internal/specs/openapi", openapi)
        .summary("The OpenAPI 3 document of this API (Vault's path)")
        // Vault clients may ask for generic mount paths; Lessor's mounts are fixed, so the
        // document is the same either way.
        .query(&["generic_mount_paths"])
}

/// `GET sys/openapi`, `GET sys/internal/specs/openapi`: the document itself, not in the data
/// envelope (as Vault answers it).
pub async fn openapi() -> Response {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    let document = DOCUMENT.get_or_init(|| {
        let (_, table) = super::routes().into_parts();
        document(&table)
    });
    Json(document).into_response()
}

/// The OpenAPI path of a route template: without the `/v1` prefix, and with axum's catch-all
/// `{*name}` written as the parameter `{name}` it is in OpenAPI.
pub fn openapi_path(template: &str) -> String {
    template
        .strip_prefix(PREFIX)
        .unwrap_or(template)
        .replace("{*", "{")
}

/// The HTTP methods (lower case, as OpenAPI keys them) that reach an endpoint of `verb`.
pub fn methods(verb: Verb) -> &'static [&'static str] {
    match verb {
        // A listing is a GET with `list=true` (or Vault's LIST method, which OpenAPI cannot name).
        Verb::Read | Verb::List => &["get"],
        Verb::Write => &["post", "put"],
        Verb::Delete => &["delete"],
        Verb::Head => &["head"],
    }
}

/// The whole document for `table`.
pub fn document(table: &RouteTable) -> Value {
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for (template, endpoint) in table.endpoints() {
        let item = paths.entry(openapi_path(template)).or_default();
        for method in methods(endpoint.verb) {
            item.insert((*method).to_owned(), operation(template, method, &endpoint));
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Lessor API",
            "description": "Dynamic database credentials with a Vault-compatible HTTP API. \
                Generated from the route table: every path below is served, and nothing else. \
                All paths are prefixed with /v1.",
            "version": env!("CARGO_PKG_VERSION"),
            "license": { "name": "Apache-2.0" },
        },
        "servers": [{ "url": PREFIX }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "vaultToken": { "type": "apiKey", "in": "header", "name": "X-Vault-Token" },
                "bearerToken": { "type": "http", "scheme": "bearer" },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "errors": { "type": "array", "items": { "type": "string" } },
                    },
                },
                "Envelope": {
                    "type": "object",
                    "description": "Vault's response envelope.",
                    "properties": {
                        "request_id": { "type": "string" },
                        "lease_id": { "type": "string" },
                        "renewable": { "type": "boolean" },
                        "lease_duration": { "type": "integer" },
                        "data": { "type": "object", "nullable": true },
                        "warnings": {
                            "type": "array",
                            "items": { "type": "string" },
                            "nullable": true,
                        },
                    },
                },
            },
        },
    })
}

fn operation(template: &str, method: &str, endpoint: &Endpoint) -> Value {
    let path = openapi_path(template);
    let mut parameters: Vec<Value> = path_parameters(&path)
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": { "type": "string" },
            })
        })
        .collect();
    if endpoint.verb == Verb::List {
        parameters.push(json!({
            "name": "list",
            "in": "query",
            "required": true,
            "description": "Asks for a listing (Vault's LIST method does the same).",
            "schema": { "type": "string", "enum": ["true"] },
        }));
    }
    for name in endpoint.query {
        parameters.push(json!({
            "name": name,
            "in": "query",
            "required": false,
            "schema": { "type": "string" },
        }));
    }
    let display = path.trim_start_matches('/');
    let summary = endpoint.summary.map(str::to_owned).unwrap_or_else(|| {
        let what = match endpoint.verb {
            Verb::Read => "Read",
            Verb::List => "List",
            Verb::Write => "Write",
            Verb::Delete => "Delete",
            Verb::Head => "Check",
        };
        format!("{what} {display}")
    });
    let mut operation = json!({
        "operationId": operation_id(method, &path),
        "summary": summary,
        "tags": [display.split('/').next().unwrap_or("")],
        "parameters": parameters,
        "responses": responses(endpoint),
    });
    let object = operation.as_object_mut().expect("an object");
    if let Some(body) = endpoint.body.filter(|_| endpoint.verb == Verb::Write) {
        object.insert("requestBody".into(), request_body(body));
    }
    let security = match endpoint.access {
        Access::Public | Access::Login => {
            object.insert("x-vault-unauthenticated".into(), json!(true));
            json!([])
        }
        // The wrapping token is the body's `token`, else the request's token.
        Access::WrappingToken => json!([{}, { "vaultToken": [] }, { "bearerToken": [] }]),
        Access::Policy => json!([{ "vaultToken": [] }, { "bearerToken": [] }]),
        Access::Sudo => {
            object.insert("x-vault-sudo".into(), json!(true));
            json!([{ "vaultToken": [] }, { "bearerToken": [] }])
        }
    };
    object.insert("security".into(), security);
    if endpoint.issues_credential {
        object.insert("x-lessor-issues-credential".into(), json!(true));
    }
    operation
}

/// The request body of a write endpoint, from the fields its route declares (the same
/// declaration [`super::Body`] holds the handler to).
fn request_body(body: BodySpec) -> Value {
    let schema = match body {
        BodySpec::Fields(fields) => {
            let properties: Map<String, Value> = fields
                .iter()
                .map(|f| (f.name.to_owned(), field_schema(f.kind)))
                .collect();
            json!({
                "type": "object",
                "properties": properties,
                // A field not listed is refused by name (400).
                "additionalProperties": false,
            })
        }
        BodySpec::Free(description) => json!({
            "type": "object",
            "description": description,
            "additionalProperties": true,
        }),
    };
    json!({
        "required": false,
        "content": { "application/json": { "schema": schema } },
    })
}

/// The JSON schema of a field read as `kind`: what [`super::Body`]'s method of that kind accepts.
pub fn field_schema(kind: FieldKind) -> Value {
    match kind {
        FieldKind::String => json!({ "type": "string" }),
        FieldKind::Secret => json!({ "type": "string", "format": "password", "writeOnly": true }),
        FieldKind::StringList => json!({
            "oneOf": [
                { "type": "array", "items": { "type": "string" } },
                { "type": "string", "description": "One value, or several separated by commas where the field allows it." },
            ],
        }),
        FieldKind::Boolean => json!({ "type": "boolean" }),
        FieldKind::Integer => json!({ "type": "integer", "minimum": 0 }),
        FieldKind::Duration => json!({
            "oneOf": [
                { "type": "integer", "minimum": 0, "description": "Seconds." },
                { "type": "string", "example": "1h30m" },
            ],
        }),
        FieldKind::Object => json!({ "type": "object" }),
    }
}

/// The names of the `{parameters}` of an OpenAPI path.
fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

/// A unique id per (method, path): `get_database_roles_name`; a trailing `/` (the listing of a
/// directory, distinct from the bare path) becomes `_dir`.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = String::from(method);
    for part in path.split('/').filter(|p| !p.is_empty()) {
        id.push('_');
        id.extend(part.chars().filter(|c| !matches!(c, '{' | '}')).map(|c| {
            if c.is_ascii_alphanumeric() {
                c
            } else {
                '_'
            }
        }));
    }
    if path.ends_with('/') {
        id.push_str("_dir");
    }
    id
}

fn responses(endpoint: &Endpoint) -> Value {
    let envelope = json!({
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Envelope" } } }
    });
    let error = |description: &str| {
        json!({
            "description": description,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
        })
    };
    let mut responses = Map::new();
    match endpoint.verb {
        Verb::Read => {
            let mut ok = envelope.clone();
            ok["description"] = json!("The answer.");
            responses.insert("200".into(), ok);
            responses.insert("404".into(), error("Nothing at this path."));
        }
        Verb::Head => {
            responses.insert("200".into(), json!({ "description": "Served." }));
        }
        Verb::List => {
            let mut ok = envelope.clone();
            ok["description"] = json!("The keys, in `data.keys`.");
            responses.insert("200".into(), ok);
            responses.insert("404".into(), error("No key under this path."));
        }
        Verb::Write => {
            let mut ok = envelope.clone();
            ok["description"] = json!("Done, with data or warnings.");
            responses.insert("200".into(), ok);
            responses.insert("204".into(), json!({ "description": "Done." }));
        }
        Verb::Delete => {
            responses.insert("204".into(), json!({ "description": "Deleted." }));
        }
    }
    responses.insert(
        "400".into(),
        error("Bad input: the error names the field or parameter."),
    );
    if !matches!(endpoint.access, Access::Public) {
        responses.insert(
            "403".into(),
            error("No valid token, or its policies do not grant this."),
        );
    }
    Value::Object(responses)
}
