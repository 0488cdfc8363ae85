//! The OpenAPI document (issue 12, item 6): generated from the route table, so it lists exactly
//! what is served, and served at `sys/openapi` and Vault's `sys/internal/specs/openapi`.

mod common;

use std::collections::BTreeSet;

use common::TestServer;
use lessor::api::openapi::{document, methods, openapi_path};
use lessor::api::routes::{Access, Verb};
use reqwest::StatusCode;
use serde_json::Value;

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
