//! Vault's older and lesser-known paths and fields that real clients use (issue 12, item 1):
//! the legacy `sys/renew`, `sys/revoke`, `sys/revoke-prefix`; `sys/seal-status`, `sys/mounts`,
//! `sys/auth`; `database/reload`; `auth/token/renew`; `allowed_roles` globs; and one name for one
//! kind of role. Checked on the real PostgreSQL: the login works, then it is refused and gone.

mod common;

use common::{pg_admin, pg_login, pg_role_exists, unique, TestServer};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn legacy_lease_paths_renew_and_revoke_a_real_login() {
    let role = unique("compat");
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    server
        .write_role(
            &role,
            json!({ "db_name": "pg", "default_ttl": "10m", "max_ttl": "1h" }),
        )
        .await;
    let admin = pg_admin().await;

    let (lease_id, username, password) = server.creds(&role).await;
    pg_login(&username, &password)
        .await
        .expect("issued login works");
    let (status, body) = server
        .call(
            "PUT",
            "sys/renew",
            Some(json!({ "lease_id": lease_id, "increment": "30m" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["lease_duration"], 1800);
    let (status, body) = server
        .call(
            "PUT",
            &format!("sys/renew/{lease_id}"),
            Some(json!({ "increment": 600 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .call("PUT", "sys/revoke", Some(json!({ "lease_id": lease_id })))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(
        pg_login(&username, &password).await.is_err(),
        "refused after revocation"
    );
    assert!(!pg_role_exists(&admin, &username).await, "user dropped");

    let (second, second_user, _) = server.creds(&role).await;
    let (status, _) = server
        .call("PUT", &format!("sys/revoke/{second}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!pg_role_exists(&admin, &second_user).await);
    // Revoking it again succeeds (the lease exists, revoked); a lease that never existed is 404.
    let (status, _) = server
        .call("PUT", &format!("sys/revoke/{second}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = server
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": format!("database/creds/{role}/never-issued") })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.to_string().contains("never-issued"), "{body}");

    let mut users = Vec::new();
    for _ in 0..3 {
        users.push(server.creds(&role).await.1);
    }
    let (status, body) = server
        .call(
            "PUT",
            &format!("sys/revoke-prefix/database/creds/{role}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    for user in users {
        assert!(!pg_role_exists(&admin, &user).await, "{user} dropped");
    }

    // The legacy revoke-prefix needs sudo like the current one.
    let (status, body) = server
        .call(
            "PUT",
            "sys/policies/acl/legacy",
            Some(json!({ "policy": r#"path "sys/*" { capabilities = ["update"] }"# })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, token) = server
        .call(
            "POST",
            "auth/token/create",
            Some(json!({ "policies": ["legacy"] })),
        )
        .await;
    let token = token["auth"]["client_token"].as_str().unwrap().to_owned();
    let (status, _) = server
        .call_as(
            Some(&token),
            "PUT",
            &format!("sys/revoke-prefix/database/creds/{role}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn status_mounts_auth_methods_and_plugin_reload_answer_in_vaults_shape() {
    let server = TestServer::start().await;
    server.add_postgres("pg-a").await;
    server.add_postgres("pg-b").await;

    // Unauthenticated, as in Vault.
    let (status, body) = server.call_as(None, "GET", "sys/seal-status", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["sealed"], false);
    assert_eq!(body["initialized"], true);

    let (status, body) = server.call("GET", "sys/mounts", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["database/"]["type"], "database");
    assert_eq!(body["data"]["database/"]["type"], "database");
    let (status, body) = server.call_as(None, "GET", "sys/mounts", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let (status, body) = server.call("GET", "sys/auth", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["token/"]["type"], "token");
    assert_eq!(body["data"]["jwt/"]["type"], "jwt");
    assert_eq!(body["data"]["cert/"]["type"], "cert");

    let (status, body) = server
        .call("POST", "database/reload/postgresql-database-plugin", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["count"], 2);
    assert_eq!(body["data"]["connections"], json!(["pg-a", "pg-b"]));
    // A reloaded connection reconnects and works.
    server
        .write_role(
            "reloaded",
            json!({ "db_name": "pg-a", "default_ttl": "5m" }),
        )
        .await;
    let (_, user, password) = server.creds("reloaded").await;
    pg_login(&user, &password)
        .await
        .expect("works after reload");
    server.revoke_everything().await;
}

#[tokio::test]
async fn allowed_roles_take_globs_and_a_name_is_one_kind_of_role() {
    let server = TestServer::start().await;
    let (status, body) = server
        .call(
            "POST",
            "database/config/globbed",
            Some(json!({ "plugin_name": "postgresql-database-plugin",
                         "connection_url": common::postgres_url(), "allowed_roles": "gl-*,*-ro" })),
        )
        .await;
    assert!(status.is_success(), "{body}");
    for role in ["gl-app", "billing-ro", "elsewhere"] {
        server
            .write_role(role, json!({ "db_name": "globbed", "default_ttl": "5m" }))
            .await;
    }
    let (_, user, password) = server.creds("gl-app").await;
    pg_login(&user, &password)
        .await
        .expect("a role matching gl-* is allowed");
    server.creds("billing-ro").await;
    let (status, body) = server.call("GET", "database/creds/elsewhere", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("allowed_roles"), "{body}");
    let (status, body) = server
        .call(
            "POST",
            "database/config/globbed",
            Some(json!({ "allowed_roles": "gl-;*" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // `gl-app` is a dynamic role: no static role may take its name, and the other way round.
    let (status, body) = server
        .call(
            "POST",
            "database/static-roles/gl-app",
            Some(json!({ "db_name": "globbed", "username": "postgres", "rotation_period": "1h" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("dynamic role"), "{body}");
    server.revoke_everything().await;
}

#[tokio::test]
async fn auth_token_renew_renews_another_token() {
    let server = TestServer::start().await;
    let (_, created) = server
        .call(
            "POST",
            "auth/token/create",
            Some(json!({ "policies": ["default"], "ttl": "10m" })),
        )
        .await;
    let token = created["auth"]["client_token"].as_str().unwrap().to_owned();
    let (status, body) = server
        .call(
            "POST",
            "auth/token/renew",
            Some(json!({ "token": token, "increment": "20m" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["auth"]["lease_duration"], 1200);
    let (status, body) = server
        .call(
            "POST",
            "auth/token/renew",
            Some(json!({ "token": "hvs.not-a-token" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}
