//! Token roles (`auth/token/roles/:name`, `auth/token/create/:name`, issue 12 item 1), through the
//! HTTP API and through the unmodified hvac client: a token made from a role holds only what the
//! role allows (and what it holds really works), its parent and lifetime follow the role, and
//! writing a role takes sudo, since a role may grant policies its writer does not hold.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn put_policy(server: &TestServer, name: &str, text: &str) {
    let (status, body) = server
        .call(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": text })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

/// A token holding only `policies`, made by root.
async fn token_with(server: &TestServer, policies: &[&str]) -> String {
    let (status, body) = server
        .call(
            "POST",
            "auth/token/create",
            Some(json!({ "policies": policies })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["auth"]["client_token"].as_str().unwrap().to_owned()
}

fn error_text(body: &Value) -> String {
    body["errors"].to_string()
}

#[tokio::test]
async fn a_token_from_a_role_holds_only_what_the_role_allows() {
    let server = TestServer::start().await;
    // `mounts` may read sys/mounts; `auths` may read sys/auth; `maker` may create tokens from
    // the role and read roles, but holds neither of the others.
    put_policy(
        &server,
        "mounts",
        r#"path "sys/mounts" { capabilities = ["read"] }"#,
    )
    .await;
    put_policy(
        &server,
        "auths",
        r#"path "sys/auth" { capabilities = ["read"] }"#,
    )
    .await;
    put_policy(
        &server,
        "maker",
        r#"path "auth/token/create/app" { capabilities = ["update"] }
           path "auth/token/roles/*" { capabilities = ["create", "update", "read", "delete"] }"#,
    )
    .await;
    let (status, body) = server
        .call(
            "POST",
            "auth/token/roles/app",
            Some(json!({ "allowed_policies": "mounts", "disallowed_policies": ["auths"], "token_ttl": "10m", "token_max_ttl": "20m" })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let maker = token_with(&server, &["maker"]).await;

    // The role, not the maker, is the limit: the maker gets a token with `mounts`...
    let (status, body) = server
        .call_as(
            Some(&maker),
            "POST",
            "auth/token/create/app",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let auth = &body["auth"];
    assert_eq!(auth["policies"], json!(["default", "mounts"]));
    assert_eq!(auth["orphan"], json!(false));
    assert_eq!(auth["lease_duration"], json!(600), "token_ttl applies");
    let app_token = auth["client_token"].as_str().unwrap().to_owned();
    // ... which works as `mounts` and nothing more.
    let (status, _) = server
        .call_as(Some(&app_token), "GET", "sys/mounts", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .call_as(Some(&app_token), "GET", "sys/auth", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A policy the role does not allow, or disallows, is refused, naming it; so is root.
    for (asked, needle) in [
        (json!(["auths"]), "auths"),
        (json!(["mounts", "maker"]), "does not allow maker"),
        (json!(["root"]), "root"),
    ] {
        let (status, body) = server
            .call_as(
                Some(&maker),
                "POST",
                "auth/token/create/app",
                Some(json!({ "policies": asked })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{asked}: {body}");
        assert!(error_text(&body).contains(needle), "{asked}: {body}");
    }
    // A longer TTL than the role's max is cut to it.
    let (_, body) = server
        .call_as(
            Some(&maker),
            "POST",
            "auth/token/create/app",
            Some(json!({ "ttl": "1h" })),
        )
        .await;
    assert_eq!(body["auth"]["lease_duration"], json!(1200), "{body}");

    // Writing a role needs sudo, even with create/update on the path: a role grants policies.
    let (status, body) = server
        .call_as(
            Some(&maker),
            "POST",
            "auth/token/roles/escalate",
            Some(json!({ "allowed_policies": ["auths"] })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // Another role's create path is not granted by `maker`.
    let (status, _) = server
        .call_as(
            Some(&maker),
            "POST",
            "auth/token/create/other",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // An unknown role is a 400 naming it.
    let (status, body) = server
        .call("POST", "auth/token/create/missing", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error_text(&body).contains("unknown token role missing"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_role_without_allowed_policies_keeps_the_creators_limit() {
    let server = TestServer::start().await;
    put_policy(
        &server,
        "mounts",
        r#"path "sys/mounts" { capabilities = ["read"] }"#,
    )
    .await;
    put_policy(
        &server,
        "auths",
        r#"path "sys/auth" { capabilities = ["read"] }"#,
    )
    .await;
    put_policy(
        &server,
        "maker",
        r#"path "auth/token/create/plain" { capabilities = ["update"] }"#,
    )
    .await;
    let (status, _) = server
        .call(
            "POST",
            "auth/token/roles/plain",
            Some(json!({ "disallowed_policies": "auths", "orphan": true, "renewable": false })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let maker = token_with(&server, &["maker", "mounts", "auths"]).await;
    // Inherited policies lose the disallowed one; the token is an orphan, not renewable.
    let (status, body) = server
        .call_as(
            Some(&maker),
            "POST",
            "auth/token/create/plain",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["auth"]["policies"],
        json!(["default", "maker", "mounts"])
    );
    assert_eq!(body["auth"]["orphan"], json!(true));
    assert_eq!(body["auth"]["renewable"], json!(false));
    let child = body["auth"]["client_token"].as_str().unwrap().to_owned();
    // An orphan outlives its creator.
    let (status, _) = server
        .call_as(Some(&maker), "POST", "auth/token/revoke-self", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server
        .call_as(Some(&child), "GET", "sys/mounts", None)
        .await;
    assert_eq!(status, StatusCode::OK, "the orphan died with its creator");
    // Without allowed_policies, a policy the creator lacks is refused.
    let other = token_with(&server, &["maker"]).await;
    let (status, body) = server
        .call_as(
            Some(&other),
            "POST",
            "auth/token/create/plain",
            Some(json!({ "policies": ["mounts"] })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_text(&body).contains("not held: mounts"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn token_role_fields_are_implemented_or_refused_by_name() {
    let server = TestServer::start().await;
    let (status, _) = server
        .call(
            "POST",
            "auth/token/roles/r1",
            Some(json!({ "allowed_policies": ["a", "b"], "token_explicit_max_ttl": "30m", "token_type": "service" })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // An update keeps what it does not name.
    let (status, _) = server
        .call(
            "POST",
            "auth/token/roles/r1",
            Some(json!({ "orphan": true })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = server.call("GET", "auth/token/roles/r1", None).await;
    assert_eq!(status, StatusCode::OK);
    let data = &body["data"];
    assert_eq!(data["allowed_policies"], json!(["a", "b"]));
    assert_eq!(data["orphan"], json!(true));
    assert_eq!(data["token_explicit_max_ttl"], json!(1800));
    assert_eq!(data["token_type"], json!("service"));
    let (status, body) = server.call("LIST", "auth/token/roles", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["keys"], json!(["r1"]));

    for (field, value) in [
        ("period", json!("1h")),
        ("token_period", json!("1h")),
        ("token_num_uses", json!(3)),
        ("token_bound_cidrs", json!(["10.0.0.0/8"])),
        ("path_suffix", json!("x")),
        ("allowed_policies_glob", json!(["a*"])),
        ("token_type", json!("batch")),
        ("allowed_policies", json!(["root"])),
        ("allowed_policies", json!(["bad name"])),
        ("token_ttl", json!("bogus")),
        ("colour", json!("blue")),
    ] {
        let (status, body) = server
            .call("POST", "auth/token/roles/r2", Some(json!({ field: value })))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}={value}: {body}");
        assert!(error_text(&body).contains(field), "{field}: {body}");
    }
    let (status, _) = server.call("GET", "auth/token/roles/r2", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a refused role was stored");
    // Both names of the explicit max TTL must agree.
    let (status, body) = server
        .call(
            "POST",
            "auth/token/roles/r2",
            Some(json!({ "explicit_max_ttl": "1h", "token_explicit_max_ttl": "2h" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = server.call("DELETE", "auth/token/roles/r1", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server.call("GET", "auth/token/roles/r1", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

fn python() -> String {
    std::env::var("LESSOR_TEST_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_owned())
}

#[tokio::test]
async fn hvac_manages_token_roles_and_creates_tokens_from_them() {
    let python = python();
    let probe = std::process::Command::new(&python)
        .args(["-c", "import hvac"])
        .output();
    match probe {
        Ok(output) if output.status.success() => {}
        _ => panic!("{python} cannot import hvac; run scripts/test.sh, or: python3 -m venv .venv && .venv/bin/pip install hvac"),
    }
    let server = TestServer::start().await;
    put_policy(
        &server,
        "mounts",
        r#"path "sys/mounts" { capabilities = ["read"] }"#,
    )
    .await;
    let output = tokio::process::Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/hvac/token_roles_flow.py"
        ))
        .env("LESSOR_ADDR", &server.base)
        .env("LESSOR_TOKEN", ROOT_TOKEN)
        .env("ROLE", "hvac-role")
        .env("POLICY", "mounts")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "the hvac flow failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("the flow prints JSON");
    let token = report["token"].as_str().unwrap();
    // The token hvac made from the role works as the role's policy, and only as it.
    let (status, _) = server.call_as(Some(token), "GET", "sys/mounts", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.call_as(Some(token), "GET", "sys/auth", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Deleting the role left its token alone, as in Vault.
    let (status, body) = server
        .call_as(Some(token), "GET", "auth/token/lookup-self", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["path"], json!("auth/token/create/hvac-role"));
    server.stop().await;
}
