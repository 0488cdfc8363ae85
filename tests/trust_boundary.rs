//! The API's trust boundary, tried as an attacker would (issue 8): a `list` grant must not issue
//! credentials, percent-encoding must not walk past a `deny`, `HEAD` must not issue, and fields
//! Lessor does not implement are refused rather than ignored. Last, a property test: for generated
//! paths, encodings and methods, whatever a handler actually did is what the policy allows.
//!
//! Requests go out over a raw TCP connection, byte for byte as written here: an HTTP client
//! library would normalize `/./`, `//` or the case of percent-escapes before Lessor saw them.

mod common;

use common::{pg_admin, pg_login, unique, TestServer, ROOT_TOKEN};
use lessor::store::{LeaseState, LeaseStore};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Sends one request exactly as given and returns (status, body).
async fn raw(
    server: &TestServer,
    method: &str,
    target: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, String) {
    raw_with(server, method, target, token, body, &[]).await
}

async fn raw_with(
    server: &TestServer,
    method: &str,
    target: &str,
    token: Option<&str>,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if let Some(token) = token {
        all.push(("X-Vault-Token", token));
    }
    let body = body.map(Value::to_string).unwrap_or_default();
    common::raw_request(server, method, target, &all, &body).await
}

async fn write_policy(server: &TestServer, name: &str, text: &str) {
    let (status, body) = server
        .call(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": text })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "policy {name}: {body}");
}

async fn token_with(server: &TestServer, policy: &str) -> String {
    let (status, answer) = server
        .call(
            "POST",
            "auth/token/create",
            Some(json!({ "policies": [policy], "no_default_policy": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["auth"]["client_token"].as_str().unwrap().to_owned()
}

/// Live leases in this server's own store.
async fn live_leases(server: &TestServer) -> i64 {
    let store = &server.state.store;
    store.count_leases(LeaseState::Active).await.unwrap()
        + store.count_leases(LeaseState::Revoking).await.unwrap()
}

/// PostgreSQL roles issued for Lessor role `role` (usernames `v-<role>-...`).
async fn pg_users_of(role: &str) -> i64 {
    let prefix = format!("v-{role}-");
    pg_admin()
        .await
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE left(rolname, length($1)) = $1",
            &[&prefix],
        )
        .await
        .unwrap()
        .get(0)
}

/// A server with the local PostgreSQL as `pg` and a read-only role for each name.
async fn server_with_roles(roles: &[&str]) -> TestServer {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    for role in roles {
        server
            .write_role(role, json!({ "db_name": "pg", "default_ttl": "5m" }))
            .await;
    }
    server
}

/// Revokes everything the server issued and checks the users are gone from PostgreSQL.
async fn revoke_all(server: &TestServer, roles: &[&str]) {
    let (status, body) = server
        .call("PUT", "sys/leases/revoke-prefix/database/creds", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    for role in roles {
        assert_eq!(pg_users_of(role).await, 0, "users of {role} left behind");
    }
}

/// Defect 1: the gate checked `list` while the handler issued a credential (and read a static
/// password). A listing now exists only on list routes.
#[tokio::test]
async fn a_list_grant_never_issues_or_reads_a_password() {
    let role = unique("tb-list");
    let server = server_with_roles(&[&role]).await;
    // A static role on a user of our own, with a password we know.
    let admin = pg_admin().await;
    let static_user = unique("tb_static").replace('-', "_");
    let static_password = "static-password-0123456789";
    admin
        .batch_execute(&format!(
            "CREATE ROLE {static_user} LOGIN PASSWORD '{static_password}'"
        ))
        .await
        .unwrap();
    let static_role = unique("tb-st");
    let (status, body) = server
        .call(
            "POST",
            &format!("database/static-roles/{static_role}"),
            Some(
                json!({ "db_name": "pg", "username": static_user, "rotation_period": "24h",
                         "skip_import_rotation": true, "password": static_password }),
            ),
        )
        .await;
    assert!(status.is_success(), "{body}");

    write_policy(
        &server,
        "lister",
        r#"path "database/*" { capabilities = ["list"] }"#,
    )
    .await;
    let token = token_with(&server, "lister").await;

    for (method, target) in [
        ("LIST", format!("/v1/database/creds/{role}")),
        ("GET", format!("/v1/database/creds/{role}?list=true")),
        ("LIST", format!("/v1/database/static-creds/{static_role}")),
        (
            "GET",
            format!("/v1/database/static-creds/{static_role}?list=1"),
        ),
    ] {
        let (status, body) = raw(&server, method, &target, Some(&token), None).await;
        assert_eq!(status, 405, "{method} {target}: {body}");
        assert!(!body.contains("password"), "{method} {target}: {body}");
        assert!(!body.contains(static_password));
    }
    assert_eq!(live_leases(&server).await, 0, "no lease was issued");
    assert_eq!(pg_users_of(&role).await, 0, "no user was created");

    // The grant still does what it is for: listing.
    let (status, body) = raw(&server, "LIST", "/v1/database/roles", Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&role), "{body}");

    server
        .call(
            "DELETE",
            &format!("database/static-roles/{static_role}"),
            None,
        )
        .await;
    admin
        .batch_execute(&format!("DROP ROLE {static_user}"))
        .await
        .unwrap();
}

/// Defect 2: the policy was matched against the encoded path while the handler acted on the
/// decoded name. The path is now decoded once, before routing, and both see the same name.
#[tokio::test]
async fn percent_encoding_cannot_walk_past_a_deny() {
    let allowed = unique("tb-ok");
    let denied = unique("tb-no");
    let server = server_with_roles(&[&allowed, &denied]).await;
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_file = audit_dir.path().join("audit.log");
    let (status, body) = server
        .call(
            "PUT",
            "sys/audit/file",
            Some(json!({ "type": "file", "options": { "file_path": audit_file } })),
        )
        .await;
    assert!(status.is_success(), "{body}");
    write_policy(
        &server,
        "creds-but-one",
        &format!(
            r#"path "database/creds/*" {{ capabilities = ["read"] }}
               path "database/creds/{denied}" {{ capabilities = ["deny"] }}"#
        ),
    )
    .await;
    let token = token_with(&server, "creds-but-one").await;

    let every_byte = |name: &str, upper: bool| -> String {
        name.bytes()
            .map(|b| {
                if upper {
                    format!("%{b:02X}")
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect()
    };
    let dash_only = denied.replace('-', "%2D");
    let first_only = format!("%{:02x}{}", denied.as_bytes()[0], &denied[1..]);
    for encoded in [
        denied.clone(),
        every_byte(&denied, true),
        every_byte(&denied, false),
        dash_only,
        first_only,
    ] {
        let target = format!("/v1/database/creds/{encoded}");
        let (status, body) = raw(&server, "GET", &target, Some(&token), None).await;
        assert_eq!(status, 403, "{target}: {body}");
    }
    // Spellings that would need a second decoding, or a path clean-up, are refused outright.
    for target in [
        format!(
            "/v1/database/creds/{}",
            every_byte(&denied, true).replace('%', "%25")
        ),
        format!("/v1/database/creds/./{denied}"),
        format!("/v1/database/creds/x/../{denied}"),
        format!("/v1/database//creds/{denied}"),
        format!("/v1/database/creds/{denied}%2F"),
    ] {
        let (status, body) = raw(&server, "GET", &target, Some(&token), None).await;
        assert!(status == 400 || status == 404, "{target}: {status} {body}");
    }
    assert_eq!(pg_users_of(&denied).await, 0, "no user of the denied role");

    // The allowed role, fully encoded, is served: decoding happens, once.
    let target = format!("/v1/database/creds/{}", every_byte(&allowed, false));
    let (status, body) = raw(&server, "GET", &target, Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    let issued: Value = serde_json::from_str(&body).unwrap();
    let username = issued["data"]["username"].as_str().unwrap();
    let password = issued["data"]["password"].as_str().unwrap();
    pg_login(username, password)
        .await
        .expect("issued login works");
    // The audit log and the anomaly rules saw the decoded name.
    let log = std::fs::read_to_string(&audit_file).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["path"] == format!("database/creds/{allowed}")
                && l["role"] == allowed.as_str()
                && l["type"] == "response"),
        "{log}"
    );
    assert!(
        !log.contains("%"),
        "an encoded path reached the audit log: {log}"
    );
    assert!(!log.contains(password), "a password reached the audit log");

    server.call("DELETE", "sys/audit/file", None).await;
    revoke_all(&server, &[&allowed, &denied]).await;
}

/// Defect 12: axum answers HEAD with the GET handler, which issued a credential nobody received.
#[tokio::test]
async fn head_never_runs_a_handler_with_side_effects() {
    let role = unique("tb-head");
    let server = server_with_roles(&[&role]).await;
    let (status, _) = raw(
        &server,
        "HEAD",
        &format!("/v1/database/creds/{role}"),
        Some(ROOT_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 405);
    assert_eq!(live_leases(&server).await, 0);
    assert_eq!(pg_users_of(&role).await, 0);
    // Health keeps answering HEAD for load balancers.
    let (status, _) = raw(&server, "HEAD", "/v1/sys/health", None, None).await;
    assert_eq!(status, 200);
    // And a method no endpoint declares never reaches one.
    for method in ["PATCH", "OPTIONS", "POST"] {
        let (status, body) = raw(
            &server,
            method,
            &format!("/v1/database/creds/{role}"),
            Some(ROOT_TOKEN),
            Some(&json!({})),
        )
        .await;
        assert_eq!(status, 405, "{method}: {body}");
    }
    assert_eq!(live_leases(&server).await, 0);
}

/// Defect 17: security-relevant fields were accepted and ignored. Every field is now either
/// implemented or refused with a 400 that names it, and nothing runs.
#[tokio::test]
async fn unsupported_fields_are_refused_by_name_and_nothing_runs() {
    let role = unique("tb-field");
    let server = server_with_roles(&[&role]).await;

    // A wrapped response was answered unwrapped. Wrapping is implemented now (tests/wrapping.rs);
    // a wrap it cannot make (JWT format) is refused, never answered unwrapped.
    let (status, body) = raw_with(
        &server,
        "GET",
        &format!("/v1/database/creds/{role}"),
        Some(ROOT_TOKEN),
        None,
        &[("X-Vault-Wrap-TTL", "60s"), ("X-Vault-Wrap-Format", "jwt")],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("x-vault-wrap-format"), "{body}");
    assert_eq!(live_leases(&server).await, 0);

    // A query parameter the endpoint does not read.
    let (status, body) = raw(
        &server,
        "GET",
        &format!("/v1/database/creds/{role}?ttl=10"),
        Some(ROOT_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("ttl"), "{body}");
    assert_eq!(live_leases(&server).await, 0);

    // Token fields: a single-use token worked twice.
    for (field, value) in [
        ("num_uses", json!(1)),
        ("period", json!("1h")),
        ("type", json!("batch")),
        ("id", json!("my-own-token-value")),
    ] {
        let mut request = json!({ "policies": ["default"] });
        request[field] = value;
        let (status, body) = server
            .call("POST", "auth/token/create", Some(request))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {body}");
        assert!(body.to_string().contains(field), "{field}: {body}");
    }
    // async-hvac sends explicit nulls: they mean "not given".
    let (status, body) = server
        .call(
            "POST",
            "auth/token/create",
            Some(json!({ "policies": ["default"], "id": null, "num_uses": null, "period": null })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Zero values are the defaults and mean nothing either.
    let (status, body) = server
        .call(
            "POST",
            "auth/token/create",
            Some(json!({ "policies": ["default"], "num_uses": 0, "period": "0s" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Connection fields that were accepted and ignored (a TLS connection silently stayed
    // plaintext): each is now implemented and checks its value, or is refused for this engine; a
    // bad value is a 400 naming the field, and nothing is stored.
    for field in [
        "tls_ca",
        "tls_certificate",
        "private_key",
        "tls_server_name",
        "password_policy",
    ] {
        let connection = unique("tb-conn");
        let mut request = json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": common::postgres_url(),
            "allowed_roles": "*",
        });
        request[field] = json!("-----BEGIN CERTIFICATE-----");
        let (status, body) = server
            .call(
                "POST",
                &format!("database/config/{connection}"),
                Some(request),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {body}");
        assert!(body.to_string().contains(field), "{field}: {body}");
        let (status, _) = server
            .call("GET", &format!("database/config/{connection}"), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{field}: nothing was stored");
    }

    // Role fields: a misspelt field and an unsupported credential type.
    for (request, field) in [
        (
            json!({ "db_name": "pg", "creation_statments": ["x"] }),
            "creation_statments",
        ),
        (
            json!({ "db_name": "pg", "credential_type": "rsa_private_key" }),
            "credential_type",
        ),
    ] {
        let (status, body) = server
            .call("POST", &format!("database/roles/{role}"), Some(request))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {body}");
        assert!(body.to_string().contains(field), "{field}: {body}");
    }
    let (_, read) = server
        .call("GET", &format!("database/roles/{role}"), None)
        .await;
    assert_eq!(read["data"]["default_ttl"], 300, "the role is unchanged");
}

/// The body limit the README states holds, before any handler runs.
#[tokio::test]
async fn bodies_past_one_mebibyte_are_refused() {
    let server = TestServer::start().await;
    let policy = format!(
        "# {}\npath \"x\" {{ capabilities = [\"read\"] }}",
        "x".repeat(1024 * 1024)
    );
    let (status, _) = server
        .call(
            "PUT",
            "sys/policies/acl/big",
            Some(json!({ "policy": policy })),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _) = server.call("GET", "sys/policies/acl/big", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");
}

/// Defect 13: child tokens outlived their revoked parent, and a revoked token's credentials kept
/// working. Revoking a token now revokes its subtree and every lease those tokens obtained.
#[tokio::test]
async fn revoking_a_token_revokes_its_children_and_their_credentials() {
    let role = unique("tb-tree");
    let server = server_with_roles(&[&role]).await;
    write_policy(
        &server,
        "issuer",
        &format!(
            r#"path "database/creds/{role}" {{ capabilities = ["read"] }}
               path "auth/token/create" {{ capabilities = ["update"] }}
               path "auth/token/revoke-self" {{ capabilities = ["update"] }}
               path "auth/token/lookup-self" {{ capabilities = ["read"] }}"#
        ),
    )
    .await;
    let parent = token_with(&server, "issuer").await;
    let create_child = |token: String| {
        let server = &server;
        async move {
            let (status, answer) = server
                .call_as(
                    Some(&token),
                    "POST",
                    "auth/token/create",
                    Some(json!({ "policies": ["issuer"], "no_default_policy": true })),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            answer["auth"]["client_token"].as_str().unwrap().to_owned()
        }
    };
    let child = create_child(parent.clone()).await;
    let grandchild = create_child(child.clone()).await;
    let mut logins = Vec::new();
    for token in [&parent, &child, &grandchild] {
        let (status, body) = server
            .call_as(Some(token), "GET", &format!("database/creds/{role}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (user, password) = (
            body["data"]["username"].as_str().unwrap().to_owned(),
            body["data"]["password"].as_str().unwrap().to_owned(),
        );
        pg_login(&user, &password)
            .await
            .expect("issued login works");
        logins.push((user, password));
    }
    // An orphan made by root with the same policy is not part of the tree.
    let bystander = token_with(&server, "issuer").await;
    let (_, body) = server
        .call_as(
            Some(&bystander),
            "GET",
            &format!("database/creds/{role}"),
            None,
        )
        .await;
    let bystander_login = (
        body["data"]["username"].as_str().unwrap().to_owned(),
        body["data"]["password"].as_str().unwrap().to_owned(),
    );

    // Revoking the child takes the grandchild and both their credentials; the parent lives on.
    let (status, body) = server
        .call_as(Some(&child), "POST", "auth/token/revoke-self", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    for token in [&child, &grandchild] {
        let (status, _) = server
            .call_as(Some(token), "GET", "auth/token/lookup-self", None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    for (user, password) in &logins[1..] {
        assert!(
            pg_login(user, password).await.is_err(),
            "{user} still logs in"
        );
        assert_eq!(
            pg_users_of(&role).await,
            2,
            "parent's and bystander's users remain"
        );
    }
    pg_login(&logins[0].0, &logins[0].1)
        .await
        .expect("the parent's login still works");

    // Revoking the parent by accessor (an operator) takes its own credential too.
    let (_, looked) = server
        .call_as(Some(&parent), "GET", "auth/token/lookup-self", None)
        .await;
    let accessor = looked["data"]["accessor"].as_str().unwrap().to_owned();
    let (status, body) = server
        .call(
            "POST",
            "auth/token/revoke-accessor",
            Some(json!({ "accessor": accessor })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(pg_login(&logins[0].0, &logins[0].1).await.is_err());
    pg_login(&bystander_login.0, &bystander_login.1)
        .await
        .expect("a token outside the tree keeps its credential");
    revoke_all(&server, &[&role]).await;
}
