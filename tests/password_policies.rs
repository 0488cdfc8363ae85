//! Password policies (`sys/policies/password`) against the real PostgreSQL, through the HTTP API:
//! generation meets every rule; a connection's `password_policy` shapes the passwords of its
//! dynamic users (which log in, then are refused after revocation) and of its static rotations;
//! bad policies and bad references are 400s naming the problem, and a policy in use cannot be
//! deleted.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;

const READONLY: &str = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE pg_read_all_data;";

/// A policy no default password could meet: only these characters, `~` and `.` included (the
/// default alphabet has neither), with minimums that a 24-character draw could miss.
const POLICY: &str = r#"
length = 24
rule "charset" {
  charset = "abcdef"
  min-chars = 4
}
rule "charset" {
  charset = "0123456789"
  min-chars = 4
}
rule "charset" {
  charset = "~."
  min-chars = 2
}
"#;

/// Asserts `password` meets [`POLICY`].
fn assert_meets_policy(password: &str) {
    assert_eq!(password.len(), 24, "{password}");
    assert!(
        password.chars().all(|c| "abcdef0123456789~.".contains(c)),
        "{password} uses a character outside the policy"
    );
    let count = |set: &str| password.chars().filter(|c| set.contains(*c)).count();
    assert!(count("abcdef") >= 4, "{password}");
    assert!(count("0123456789") >= 4, "{password}");
    assert!(count("~.") >= 2, "{password}");
}

async fn write_policy(
    server: &TestServer,
    name: &str,
    text: &str,
) -> (StatusCode, serde_json::Value) {
    server
        .call(
            "POST",
            &format!("sys/policies/password/{name}"),
            Some(json!({ "policy": text })),
        )
        .await
}

/// Drops the PostgreSQL roles even when an assertion failed first.
struct DropRoles(Vec<String>);

impl Drop for DropRoles {
    fn drop(&mut self) {
        let users = std::mem::take(&mut self.0);
        if users.is_empty() {
            return;
        }
        // Drop runs outside the test's runtime; a fresh thread with its own runtime is simplest.
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let admin = pg_admin().await;
                for user in users {
                    let _ = admin
                        .batch_execute(&format!("DROP ROLE IF EXISTS \"{user}\""))
                        .await;
                }
            })
        })
        .join()
        .unwrap();
    }
}

#[tokio::test]
async fn the_machine_checks_postgres_passwords() {
    assert_postgres_checks_passwords().await;
}

#[tokio::test]
async fn generate_meets_every_rule_and_the_policy_reads_lists_and_deletes() {
    let server = TestServer::start().await;
    let name = unique("pw");
    let (status, body) = write_policy(&server, &name, POLICY).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let mut seen = std::collections::HashSet::new();
    for _ in 0..300 {
        let (status, body) = server
            .call(
                "GET",
                &format!("sys/policies/password/{name}/generate"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let password = body["data"]["password"].as_str().unwrap().to_owned();
        assert_meets_policy(&password);
        seen.insert(password);
    }
    assert_eq!(seen.len(), 300, "generated passwords repeat");

    let (status, body) = server
        .call("GET", &format!("sys/policies/password/{name}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["policy"], json!(POLICY));
    let (status, body) = server.call("LIST", "sys/policies/password", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["data"]["keys"]
        .as_array()
        .unwrap()
        .contains(&json!(name)));

    let (status, _) = server
        .call("DELETE", &format!("sys/policies/password/{name}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for path in [
        format!("sys/policies/password/{name}"),
        format!("sys/policies/password/{name}/generate"),
    ] {
        let (status, _) = server.call("GET", &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_policies_are_400s_naming_the_problem_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let rule = |charset: &str, min: usize| {
        format!("rule \"charset\" {{\n  charset = \"{charset}\"\n  min-chars = {min}\n}}\n")
    };
    let cases = [
        (format!("length = 3\n{}", rule("abc", 1)), "length"),
        (format!("length = 101\n{}", rule("abc", 1)), "length"),
        ("length = 20\n".to_owned(), "rule"),
        (rule("abc", 1), "length is required"),
        (format!("length = 20\n{}", rule("", 0)), "charset"),
        (format!("length = 20\n{}", rule("abc'", 1)), "charset"),
        (format!("length = 20\n{}", rule("abc\\\\", 1)), "charset"),
        (format!("length = 20\n{}", rule("abc\\\"", 1)), "charset"),
        (format!("length = 20\n{}", rule("abc;", 1)), "charset"),
        (format!("length = 20\n{}", rule("abcé", 1)), "charset"),
        (
            format!("length = 8\n{}{}", rule("abc", 5), rule("123", 4)),
            "min-chars",
        ),
        (
            "length = 20\nrule \"charset\" { charset = \"abc\"".to_owned(),
            "end of text",
        ),
        (
            "length = 20\nbogus = 1\n".to_owned(),
            "line 2: unknown field \"bogus\"",
        ),
    ];
    for (text, needle) in &cases {
        let name = unique("bad");
        let (status, body) = write_policy(&server, &name, text).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}: {body}");
        let error = body["errors"][0].as_str().unwrap_or_default();
        assert!(error.starts_with("policy: "), "{text}: {error}");
        assert!(error.contains(needle), "{text}: {error} lacks {needle}");
        let (status, _) = server
            .call("GET", &format!("sys/policies/password/{name}"), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "a refused policy was stored");
    }
    let (status, body) = server
        .call("POST", "sys/policies/password/nopolicy", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.to_string().contains("policy: required"), "{body}");
    let (status, body) = server
        .call(
            "POST",
            "sys/policies/password/extra",
            Some(json!({ "policy": POLICY, "lenght": 3 })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.to_string().contains("lenght"), "{body}");

    // A connection naming a policy that does not exist is refused and not stored.
    let connection = unique("pg");
    let (status, body) = server
        .call(
            "POST",
            &format!("database/config/{connection}"),
            Some(json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": postgres_url(),
                "allowed_roles": "*",
                "password_policy": "no-such-policy",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("password_policy: "),
        "{body}"
    );
    let (status, _) = server
        .call("GET", &format!("database/config/{connection}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn a_connection_policy_shapes_dynamic_passwords_that_log_in_then_are_refused() {
    assert_postgres_checks_passwords().await;
    let server = TestServer::start().await;
    let policy = unique("pw");
    let (status, body) = write_policy(&server, &policy, POLICY).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    server
        .add_connection(
            "pg",
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": postgres_url(),
                "allowed_roles": "*",
                "password_policy": policy,
            }),
        )
        .await;
    let (_, config) = server.call("GET", "database/config/pg", None).await;
    assert_eq!(config["data"]["password_policy"], json!(policy));
    server
        .write_role(
            "app",
            json!({ "db_name": "pg", "creation_statements": [READONLY], "default_ttl": "1h" }),
        )
        .await;

    let mut cleanup = DropRoles(Vec::new());
    let mut leases = Vec::new();
    for _ in 0..3 {
        let (lease_id, username, password) = server.creds("app").await;
        cleanup.0.push(username.clone());
        assert_meets_policy(&password);
        pg_login(&username, &password)
            .await
            .expect("a password from the policy logs in");
        leases.push((lease_id, username, password));
    }

    // A policy in use cannot be deleted: the connection could make no password without it.
    let (status, body) = server
        .call("DELETE", &format!("sys/policies/password/{policy}"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.to_string().contains("in use"), "{body}");

    let admin = pg_admin().await;
    for (lease_id, username, password) in &leases {
        let (status, _) = server
            .call(
                "PUT",
                "sys/leases/revoke",
                Some(json!({ "lease_id": lease_id })),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(
            pg_login(username, password).await.is_err(),
            "login after revoke"
        );
        assert!(
            !pg_role_exists(&admin, username).await,
            "{username} left behind"
        );
    }

    // Cleared, the connection is back to the default generator and the policy can go.
    server
        .add_connection("pg", json!({ "password_policy": "" }))
        .await;
    let (lease_id, username, password) = server.creds("app").await;
    cleanup.0.push(username.clone());
    assert_eq!(password.len(), 32);
    let (status, _) = server
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = server
        .call("DELETE", &format!("sys/policies/password/{policy}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    server.stop().await;
    drop(cleanup);
}

#[tokio::test]
async fn static_rotation_uses_the_connection_policy() {
    assert_postgres_checks_passwords().await;
    let server = TestServer::start().await;
    let policy = unique("pw");
    let (status, body) = write_policy(&server, &policy, POLICY).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    server
        .add_connection(
            "pg",
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": postgres_url(),
                "allowed_roles": "*",
                "password_policy": policy,
            }),
        )
        .await;
    let user = unique("lessor_pwst").replace('-', "_");
    let cleanup = DropRoles(vec![user.clone()]);
    pg_admin()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {user} LOGIN PASSWORD 'Initial-pass-123'"
        ))
        .await
        .unwrap();
    let role = unique("st");
    let (status, body) = server
        .call(
            "POST",
            &format!("database/static-roles/{role}"),
            Some(json!({ "db_name": "pg", "username": user, "rotation_period": 86400 })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let mut previous = String::new();
    for round in 0..3 {
        if round > 0 {
            let (status, body) = server
                .call("POST", &format!("database/rotate-role/{role}"), None)
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        }
        let (status, body) = server
            .call("GET", &format!("database/static-creds/{role}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let password = body["data"]["password"].as_str().unwrap().to_owned();
        assert_meets_policy(&password);
        assert_ne!(password, previous);
        pg_login(&user, &password)
            .await
            .expect("the rotated password from the policy logs in");
        if !previous.is_empty() {
            assert!(
                pg_login(&user, &previous).await.is_err(),
                "old password still works"
            );
        }
        previous = password;
    }
    let (status, _) = server
        .call("DELETE", &format!("database/static-roles/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    server.stop().await;
    drop(cleanup);
}

#[tokio::test]
async fn root_rotation_uses_the_connection_policy() {
    assert_postgres_checks_passwords().await;
    let server = TestServer::start().await;
    let policy = unique("pw");
    let (status, body) = write_policy(&server, &policy, POLICY).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // A dedicated admin: never the machine's own postgres password.
    let admin = unique("lessor_pwadm").replace('-', "_");
    let cleanup = DropRoles(vec![admin.clone()]);
    pg_admin()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {admin} LOGIN CREATEROLE PASSWORD 'Admin-initial-123'"
        ))
        .await
        .unwrap();
    let connection = unique("pgadm");
    server
        .add_connection(
            &connection,
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres",
                "username": admin,
                "password": "Admin-initial-123",
                "allowed_roles": "*",
                "password_policy": policy,
            }),
        )
        .await;

    let (status, body) = server
        .call("POST", &format!("database/rotate-root/{connection}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let stored = server
        .state
        .rotation
        .stored_root_passwords(&connection)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "nothing pending");
    let rotated = stored[0].1.expose().to_owned();
    assert_meets_policy(&rotated);
    pg_login(&admin, &rotated)
        .await
        .expect("the rotated admin password from the policy logs in");
    assert!(pg_login(&admin, "Admin-initial-123").await.is_err());

    // Lessor itself still works through the rotated admin.
    server
        .write_role(
            "app",
            json!({ "db_name": connection, "creation_statements": [READONLY] }),
        )
        .await;
    let (lease_id, username, password) = server.creds("app").await;
    let mut cleanup = cleanup;
    cleanup.0.insert(0, username.clone());
    assert_meets_policy(&password);
    pg_login(&username, &password)
        .await
        .expect("issued after root rotation");
    let (status, _) = server
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    server.stop().await;
    drop(cleanup);
}
