//! Dynamic MySQL/MariaDB credentials end to end through the HTTP API, against the real MariaDB on
//! this machine: the same lease manager, reaper and API as PostgreSQL.

mod common;

use std::time::Duration;

use common::*;
use mysql_async::prelude::Queryable;
use reqwest::StatusCode;
use serde_json::json;

const READ_ALL: &str = "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT SELECT ON *.* TO '{{name}}'@'%';";

fn admin_opts() -> mysql_async::Opts {
    mysql_async::Opts::from_url(&mysql_url()).expect("LESSOR_TEST_MYSQL_URL is a mysql:// URL")
}

async fn mysql_admin() -> mysql_async::Conn {
    mysql_async::Conn::new(admin_opts())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "MariaDB/MySQL at {} cannot be reached ({e}); start it with scripts/services.sh",
                mysql_url()
            )
        })
}

/// Logs in over TCP as `user` and runs a query.
async fn mysql_login(user: &str, password: &str) -> Result<mysql_async::Conn, mysql_async::Error> {
    let admin = admin_opts();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(admin.ip_or_hostname().to_owned())
        .tcp_port(admin.tcp_port())
        .prefer_socket(false)
        .user(Some(user))
        .pass(Some(password));
    let mut conn = mysql_async::Conn::new(opts).await?;
    conn.query_drop("SELECT 1").await?;
    Ok(conn)
}

async fn mysql_user_exists(user: &str) -> bool {
    let mut admin = mysql_admin().await;
    let found: Option<String> = admin
        .exec_first("SELECT User FROM mysql.user WHERE User = ?", (user,))
        .await
        .unwrap();
    let _ = admin.disconnect().await;
    found.is_some()
}

async fn server_with_role(role: &str, extra: serde_json::Value) -> TestServer {
    let server = TestServer::start().await;
    server.add_mysql("my").await;
    let mut body = json!({ "db_name": "my", "creation_statements": [READ_ALL], "default_ttl": "1h", "max_ttl": "2h" });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    server.write_role(role, body).await;
    server
}

#[tokio::test]
async fn issue_login_renew_revoke_then_login_refused_and_user_gone() {
    let role = unique("my");
    let server = server_with_role(&role, json!({})).await;
    let (lease_id, username, password) = server.creds(&role).await;
    assert!(username.starts_with(&format!("v-{role}-")), "{username}");

    let mut session = mysql_login(&username, &password)
        .await
        .expect("issued login works");
    let count: Option<i64> = session
        .query_first("SELECT COUNT(*) FROM mysql.db")
        .await
        .unwrap();
    assert!(count.is_some(), "the SELECT grant works");
    assert!(mysql_login(&username, "not-the-password-1234")
        .await
        .is_err());

    let (status, renewed) = server
        .call(
            "PUT",
            "sys/leases/renew",
            Some(json!({ "lease_id": lease_id, "increment": 5400 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    assert_eq!(renewed["lease_duration"], json!(5400));

    let (status, _) = server
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        session.query_drop("SELECT 1").await.is_err(),
        "the session open at revocation is killed"
    );
    assert!(
        mysql_login(&username, &password).await.is_err(),
        "login refused after revocation"
    );
    assert!(!mysql_user_exists(&username).await, "the user is dropped");
    server.assert_logs_free_of(&[&password]);
}

#[tokio::test]
async fn expiry_through_the_reaper_drops_the_user() {
    let role = unique("myexp");
    let server = server_with_role(&role, json!({ "default_ttl": 2, "max_ttl": 2 })).await;
    let (_, username, password) = server.creds(&role).await;
    let mut session = mysql_login(&username, &password)
        .await
        .expect("works before expiry");
    eventually(Duration::from_secs(8), || async {
        !mysql_user_exists(&username).await
    })
    .await
    .expect("the reaper dropped the expired MariaDB user");
    assert!(
        session.query_drop("SELECT 1").await.is_err(),
        "the open session was killed at expiry"
    );
    assert!(mysql_login(&username, &password).await.is_err());
}

#[tokio::test]
async fn usernames_fit_the_server_limit_and_long_templates_are_refused_at_write() {
    let role = unique("mylimit");
    let server = TestServer::start().await;
    server.add_mysql("my").await;
    // MariaDB allows 80 characters: a long prefix is cut, the random part kept whole.
    let long_prefix = "p".repeat(90);
    server
        .write_role(
            &role,
            json!({ "db_name": "my", "username_template": format!("{long_prefix}-{{{{random}}}}"), "creation_statements": [READ_ALL] }),
        )
        .await;
    let (lease_id, username, password) = server.creds(&role).await;
    assert_eq!(username.len(), 80, "{username}");
    mysql_login(&username, &password)
        .await
        .expect("an 80-character user logs in");
    server
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    assert!(!mysql_user_exists(&username).await);

    // A template whose random part cannot fit is refused when the role is written.
    let (status, body) = server
        .call(
            "POST",
            &format!("database/roles/{role}-too-long"),
            Some(json!({ "db_name": "my", "username_template": format!("{{{{random}}}}{}", "s".repeat(70)) })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["errors"][0].as_str().unwrap().contains("80-character"),
        "{body}"
    );
}

#[tokio::test]
async fn default_statements_and_host_option_are_used_when_a_role_leaves_them_empty() {
    let role = unique("myhost");
    let server = TestServer::start().await;
    server.add_mysql("my").await;
    server
        .write_role(
            &role,
            json!({ "db_name": "my", "options": { "host": "127.0.0.1" } }),
        )
        .await;
    let (lease_id, username, password) = server.creds(&role).await;
    let mut admin = mysql_admin().await;
    let host: Option<String> = admin
        .exec_first("SELECT Host FROM mysql.user WHERE User = ?", (&username,))
        .await
        .unwrap();
    assert_eq!(host.as_deref(), Some("127.0.0.1"));
    mysql_login(&username, &password)
        .await
        .expect("login from 127.0.0.1");
    server
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    assert!(!mysql_user_exists(&username).await);

    let (status, body) = server
        .call(
            "POST",
            &format!("database/roles/{role}-bad"),
            Some(json!({ "db_name": "my", "options": { "host": "x'; DROP USER root;--" } })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["errors"][0].as_str().unwrap().contains("options"),
        "{body}"
    );
    let (status, body) = server
        .call(
            "POST",
            &format!("database/roles/{role}-bad"),
            Some(json!({ "db_name": "my", "options": { "hots": "%" } })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn bad_input_is_refused_with_400_and_nothing_runs_on_mariadb() {
    let role = unique("mybad");
    let server = server_with_role(&role, json!({})).await;
    let count = || async {
        let mut admin = mysql_admin().await;
        let n: Option<i64> = admin
            .exec_first(
                "SELECT COUNT(*) FROM mysql.user WHERE User LIKE ?",
                (format!("v-{role}%"),),
            )
            .await
            .unwrap();
        let _ = admin.disconnect().await;
        n.unwrap_or(0)
    };
    let before = count().await;
    for body in [
        json!({ "db_name": "my", "creation_statements": ["CREATE USER '{{user}}'@'%'"] }),
        json!({ "db_name": "my", "default_ttl": "-1h" }),
        json!({ "db_name": "my", "max_ttl": 1e40 }),
    ] {
        let (status, answer) = server
            .call(
                "POST",
                &format!("database/roles/{role}"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
    }
    for name in ["a%27b", "a%3Bb", "%C3%BC"] {
        let (status, _) = server
            .call("GET", &format!("database/creds/{name}"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
    }
    assert_eq!(count().await, before, "nothing ran on MariaDB");
    // The stored role still issues working credentials.
    let (_, username, password) = server.creds(&role).await;
    mysql_login(&username, &password)
        .await
        .expect("the role was not changed by refused writes");
    server.revoke_everything().await;
}

/// Revocations in flight together on one connection go as batches (src/revocation_group.rs), and
/// each still answers only once its own user is locked out, its sessions killed and the account
/// dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revocations_go_as_batches_and_each_ends_its_own_user() {
    let role = unique("mygroup");
    let server = server_with_role(&role, json!({})).await;
    let issued = server.creds_many(&role, 16).await;
    let mut sessions = Vec::new();
    for (_, username, password) in &issued {
        sessions.push(
            mysql_login(username, password)
                .await
                .expect("issued login works"),
        );
    }
    server.revoke_all_at_once(&issued).await;
    for (session, (_, username, password)) in sessions.iter_mut().zip(&issued) {
        assert!(
            session.query_drop("SELECT 1").await.is_err(),
            "the session of {username} was killed"
        );
        assert!(mysql_login(username, password).await.is_err());
        assert!(!mysql_user_exists(username).await, "{username} is dropped");
    }
    let passwords: Vec<&str> = issued.iter().map(|(_, _, p)| p.as_str()).collect();
    server.assert_logs_free_of(&passwords);
}
