//! The OpenAPI document (issue 12, item 6): generated from the route table, so it lists exactly
//! what is served, and served at `sys/openapi` and Vault's `sys/internal/specs/openapi`.

mod common;

use std::collections::BTreeSet;

use common::TestServer;
use lessor::api::openapi::{document, methods, openapi_path};
use lessor::api::routes::{Access, BodySpec, FieldKind, Verb};
use reqwest::StatusCode;
use serde_json::{json, Value};

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// A structural check of an OpenAPI 3 document: the fields every tool requires, each operation
/// with responses keyed by status code, each path parameter declared, operation ids unique.
fn assert_openapi3(doc: &Value) {
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "openapi: {}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(doc["info"]["version"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    let paths = doc["paths"].as_object().expect("paths is an object");
    assert!(!paths.is_empty());
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let mut ids = BTreeSet::new();
    for (path, item) in paths {
        assert!(path.starts_with('/'), "{path}");
        assert!(!path.contains('*'), "{path}: axum's catch-all leaked");
        let declared: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let item = item.as_object().expect("a path item");
        for (method, operation) in item {
            assert!(HTTP_METHODS.contains(&method.as_str()), "{path}: {method}");
            let responses = operation["responses"].as_object().expect("responses");
            assert!(!responses.is_empty(), "{method} {path}: no response");
            for (code, response) in responses {
                assert!(
                    code == "default" || (code.len() == 3 && code.parse::<u16>().is_ok()),
                    "{method} {path}: response {code}"
                );
                assert!(
                    response["description"].is_string(),
                    "{method} {path} {code}: a response needs a description"
                );
            }
            let id = operation["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            let in_path: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(
                        p["required"], true,
                        "{method} {path}: path parameters are required"
                    );
                    p["name"].as_str().unwrap()
                })
                .collect();
            assert_eq!(in_path, declared, "{method} {path}: path parameters");
            for requirement in operation["security"].as_array().expect("security") {
                for scheme in requirement.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(scheme), "{method} {path}: {scheme}");
                }
            }
        }
    }
}

#[test]
fn every_routed_path_and_verb_is_in_the_document_and_nothing_else() {
    let (_, table) = lessor::api::routes().into_parts();
    let doc = document(&table);
    assert_openapi3(&doc);

    let mut expected = BTreeSet::new();
    for (template, endpoint) in table.endpoints() {
        let path = openapi_path(template);
        for method in methods(endpoint.verb) {
            expected.insert(format!("{method} {path}"));
            let operation = &doc["paths"][&path][*method];
            assert!(
                operation.is_object(),
                "{:?} {template} is routed but not in the document as {method} {path}",
                endpoint.verb
            );
            // Who may call it, as the gate decides it.
            let unauthenticated = matches!(endpoint.access, Access::Public | Access::Login);
            assert_eq!(
                operation["x-vault-unauthenticated"] == true,
                unauthenticated,
                "{method} {path}"
            );
            assert_eq!(
                operation["security"].as_array().unwrap().is_empty(),
                unauthenticated,
                "{method} {path}"
            );
            assert_eq!(
                operation["x-vault-sudo"] == true,
                endpoint.access == Access::Sudo,
                "{method} {path}"
            );
            assert_eq!(
                operation["x-lessor-issues-credential"] == true,
                endpoint.issues_credential,
                "{method} {path}"
            );
            // The query parameters the gate lets through, and `list=true` on listings.
            let query: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "query")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let mut allowed: BTreeSet<&str> = endpoint.query.iter().copied().collect();
            if endpoint.verb == Verb::List {
                allowed.insert("list");
            }
            assert_eq!(query, allowed, "{method} {path}: query parameters");
        }
    }
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{method} {path}"))
        })
        .collect();
    assert_eq!(
        documented, expected,
        "the document lists exactly the routed endpoints"
    );
    // Spot checks that the walk covered the API, including the document's own paths.
    for operation in [
        "get /database/creds/{name}",
        "post /sys/leases/revoke-prefix/{prefix}",
        "get /sys/internal/specs/openapi",
        "get /sys/openapi",
        "head /sys/health",
    ] {
        assert!(documented.contains(operation), "{operation}");
    }
}

#[tokio::test]
async fn the_document_is_served_on_both_paths_to_a_token_and_refused_without_one() {
    let server = TestServer::start().await;
    let (_, table) = lessor::api::routes().into_parts();
    let expected = document(&table);
    for path in ["sys/openapi", "sys/internal/specs/openapi"] {
        let (status, body) = server.call("GET", path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        // The document itself, not wrapped in the data envelope (as Vault answers it).
        assert_eq!(body, expected, "{path}");
        assert_openapi3(&body);

        let (status, body) = server.call_as(None, "GET", path, None).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{path} without a token: {body}"
        );
        let (status, _) = server.call_as(Some("not-a-token"), "GET", path, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path} with a bad token");
        let (status, _) = server.call("POST", path, None).await;
        assert_eq!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{path} is read-only"
        );
    }
    // Vault clients send generic_mount_paths; any other query parameter is refused by name.
    let (status, body) = server
        .call(
            "GET",
            "sys/internal/specs/openapi?generic_mount_paths=true",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.call("GET", "sys/openapi?verbose=1", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("verbose"), "{body}");
    server.stop().await;
}

/// A value of the JSON type a field of `kind` takes.
fn sample(kind: FieldKind) -> Value {
    match kind {
        FieldKind::String => json!("probe"),
        FieldKind::Secret => json!("probe-secret"),
        FieldKind::StringList => json!(["probe"]),
        FieldKind::Boolean => json!(false),
        FieldKind::Integer => json!(1),
        FieldKind::Duration => json!("1m"),
        FieldKind::Object => json!({}),
    }
}

/// A request path for a route template: every parameter becomes `probe`.
fn concrete(template: &str) -> String {
    template
        .trim_start_matches("/v1/")
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "probe"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Issue 12, item 6: every write endpoint documents its request body, and the fields listed are
/// exactly those its handler reads. The route's declaration is both what the document shows and
/// what the handler's `Body` allows it to read (reading anything else is a 500), so: a request
/// with no field makes the handler read everything it reads unconditionally (no 500 proves each
/// of those is declared), and a request with each listed field alone is never refused as an
/// unknown field (each listed field is read).
#[tokio::test]
async fn every_write_route_documents_exactly_the_body_fields_its_handler_reads() {
    let server = TestServer::start().await;
    let (_, table) = lessor::api::routes().into_parts();
    let doc = document(&table);
    let mut probed = 0;
    for (template, endpoint) in table.endpoints() {
        if endpoint.verb != Verb::Write {
            continue;
        }
        let spec = endpoint
            .body
            .unwrap_or_else(|| panic!("{template}: a write route declares no request body"));
        let path = openapi_path(template);
        for method in ["post", "put"] {
            let schema = &doc["paths"][&path][method]["requestBody"]["content"]["application/json"]
                ["schema"];
            assert_eq!(schema["type"], "object", "{method} {path}: {schema}");
            let fields = match spec {
                BodySpec::Free(_) => {
                    assert_eq!(schema["additionalProperties"], true, "{path}");
                    continue;
                }
                BodySpec::Fields(fields) => fields,
            };
            assert_eq!(schema["additionalProperties"], false, "{path}");
            let listed: BTreeSet<&str> = schema["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let declared: BTreeSet<&str> = fields.iter().map(|f| f.name).collect();
            assert_eq!(listed, declared, "{method} {path}");
        }
        let BodySpec::Fields(fields) = spec else {
            continue;
        };
        // A throwaway root child per route: a probe of revoke-self revokes only it.
        let (_, created) = server
            .call(
                "POST",
                "auth/token/create",
                Some(json!({ "policies": ["root"] })),
            )
            .await;
        let token = created["auth"]["client_token"].as_str().unwrap().to_owned();
        let request_path = concrete(template);
        let mut bodies = vec![json!({})];
        bodies.extend(fields.iter().map(|f| json!({ f.name: sample(f.kind) })));
        for body in bodies {
            let (status, answer) = server
                .call_as(Some(&token), "POST", &request_path, Some(body.clone()))
                .await;
            assert_ne!(
                status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "POST {request_path} {body}: {answer}"
            );
            // Body::finish's refusal; other "unknown" errors are about values, not fields.
            let errors = answer["errors"].to_string();
            assert!(
                !(errors.contains("unknown field") && errors.contains("for this path")),
                "POST {request_path} {body}: a documented field was refused: {answer}"
            );
            probed += 1;
        }
    }
    assert!(
        probed > 100,
        "only {probed} probes: the table walk found too little"
    );
    server.stop().await;
}

/// The declaration is enforced, not advisory: a field the route does not declare is refused by
/// name, and the document shows each field with the schema of how it is read.
#[tokio::test]
async fn body_schemas_follow_the_declared_kinds() {
    let server = TestServer::start().await;
    let (status, doc) = server.call("GET", "sys/openapi", None).await;
    assert_eq!(status, StatusCode::OK);
    let props = &doc["paths"]["/database/config/{name}"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"]["properties"];
    assert_eq!(props["password"]["writeOnly"], true);
    assert_eq!(props["verify_connection"]["type"], "boolean");
    assert_eq!(props["max_open_connections"]["type"], "integer");
    assert!(props["allowed_roles"]["oneOf"].is_array());
    let role = &doc["paths"]["/database/roles/{name}"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"]["properties"];
    assert!(role["default_ttl"]["oneOf"].is_array());
    assert!(role["username_template"].is_object());
    let (status, answer) = server
        .call(
            "POST",
            "database/roles/x",
            Some(json!({ "db_name": "none", "colour": "blue" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["errors"].to_string().contains("colour"), "{answer}");
    server.stop().await;
}
