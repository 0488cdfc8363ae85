//! Dynamic and static Redis ACL credentials end to end through the HTTP API, against the real
//! Redis on this machine (`LESSOR_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`): Vault's
//! connection fields, ACL rules in Vault's JSON form, revocation, the reaper, static roles and
//! revoke-prefix.
//!
//! Each test makes its own admin ACL user (so the `username` and `password` fields are exercised,
//! not Redis's password-less `default` user) and deletes it and every user it issued at the end,
//! also when it fails.

mod common;

use std::time::Duration;

use common::*;
use lessor_plugin::generate_password;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use reqwest::StatusCode;
use serde_json::{json, Value as Json};

fn redis_url() -> String {
    std::env::var("LESSOR_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The host and port of the test server, for Vault's discrete fields.
fn host_and_port() -> (String, u16) {
    let info = redis::IntoConnectionInfo::into_connection_info(redis_url().as_str())
        .expect("LESSOR_TEST_REDIS_URL is a redis:// URL");
    match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
        other => panic!("LESSOR_TEST_REDIS_URL must be plain redis://host:port, not {other:?}"),
    }
}

async fn redis_admin() -> MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Redis at {} cannot be reached ({e}); start it with scripts/services.sh",
                redis_url()
            )
        })
}

/// A fresh connection as `username`, as a service holding the credentials would open it.
async fn redis_login(username: &str, password: &str) -> redis::RedisResult<MultiplexedConnection> {
    let info = redis::IntoConnectionInfo::into_connection_info(redis_url().as_str())?;
    let login = info
        .redis_settings()
        .clone()
        .set_username(username)
        .set_password(password)
        .set_skip_set_lib_name();
    redis::Client::open(info.set_redis_settings(login))?
        .get_multiplexed_async_connection_with_config(
            &AsyncConnectionConfig::new().set_connection_timeout(Some(Duration::from_secs(5))),
        )
        .await
}

async fn acl_user_exists(username: &str) -> bool {
    let found: Value = redis::cmd("ACL")
        .arg("GETUSER")
        .arg(username)
        .query_async(&mut redis_admin().await)
        .await
        .unwrap();
    !matches!(found, Value::Nil)
}

async fn acl_users_with_prefix(prefix: &str) -> Vec<String> {
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut redis_admin().await)
        .await
        .unwrap();
    users
        .into_iter()
        .filter(|u| u.starts_with(prefix))
        .collect()
}

/// Makes an ACL user with `rules`, returning its password.
async fn make_acl_user(username: &str, rules: &[&str]) -> String {
    let password = generate_password(32).expose().to_owned();
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(username)
        .arg("reset")
        .arg("on")
        .arg(format!(">{password}"))
        .arg(rules)
        .query_async::<()>(&mut redis_admin().await)
        .await
        .unwrap();
    password
}

/// Deletes, when the test ends (passed or failed), the ACL users the test made itself and every
/// user whose name starts with one of the prefixes (the users Lessor issued for the test's roles).
struct AclCleanup {
    users: Vec<String>,
    prefixes: Vec<String>,
}

impl Drop for AclCleanup {
    fn drop(&mut self) {
        let Ok(mut conn) = redis::Client::open(redis_url()).and_then(|c| c.get_connection()) else {
            return;
        };
        let existing: Vec<String> = redis::cmd("ACL")
            .arg("USERS")
            .query(&mut conn)
            .unwrap_or_default();
        for user in existing {
            if self.users.contains(&user) || self.prefixes.iter().any(|p| user.starts_with(p)) {
                let _: redis::RedisResult<i64> =
                    redis::cmd("ACL").arg("DELUSER").arg(&user).query(&mut conn);
            }
        }
    }
}

/// A Lessor with connection `rd` to this Redis in Vault's fields, logged in as an admin ACL user
/// of the test's own; returns the server, the admin's name and password, and the clean-up guard.
async fn server_with_admin(test: &str) -> (TestServer, String, String, AclCleanup) {
    let admin = unique(&format!("lt-admin-{test}"));
    let admin_password = make_acl_user(&admin, &["~*", "&*", "+@all"]).await;
    let cleanup = AclCleanup {
        users: vec![admin.clone()],
        prefixes: Vec::new(),
    };
    let server = TestServer::start().await;
    let (host, port) = host_and_port();
    server
        .add_connection(
            "rd",
            json!({
                "plugin_name": "redis-database-plugin",
                "host": host,
                "port": port,
                "username": admin,
                "password": admin_password,
                "tls": false,
                "allowed_roles": "*",
            }),
        )
        .await;
    (server, admin, admin_password, cleanup)
}

async fn get(conn: &mut MultiplexedConnection, key: &str) -> redis::RedisResult<Option<String>> {
    redis::cmd("GET").arg(key).query_async(conn).await
}

#[tokio::test]
async fn vault_fields_rules_creds_then_revoke_refuses_login_and_removes_the_user() {
    let (server, admin, admin_password, mut cleanup) = server_with_admin("life").await;
    let role = unique("rd");
    cleanup.prefixes.push(format!("v-{role}-"));

    let (status, read) = server.call("GET", "database/config/rd", None).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    let details = &read["data"]["connection_details"];
    let (host, port) = host_and_port();
    assert_eq!(details["host"], json!(host), "{read}");
    assert_eq!(details["port"], json!(port));
    assert_eq!(details["tls"], json!(false));
    assert_eq!(details["insecure_tls"], json!(false));
    assert_eq!(details["ca_cert_set"], json!(false));
    assert_eq!(details["username"], json!(admin));
    assert_eq!(read["data"]["plugin_name"], json!("redis-database-plugin"));
    assert!(!read.to_string().contains(&admin_password), "{read}");

    server
        .write_role(
            &role,
            json!({ "db_name": "rd", "creation_statements": [r#"["~app:*", "+@read"]"#], "default_ttl": "1h", "max_ttl": "2h" }),
        )
        .await;
    let (lease_id, username, password) = server.creds(&role).await;
    assert!(username.starts_with(&format!("v-{role}-")), "{username}");

    let mut admin_conn = redis_admin().await;
    let key = format!("app:{username}");
    redis::cmd("SET")
        .arg(&key)
        .arg("hello")
        .query_async::<()>(&mut admin_conn)
        .await
        .unwrap();
    let mut session = redis_login(&username, &password)
        .await
        .expect("the issued credentials log in");
    assert_eq!(
        get(&mut session, &key)
            .await
            .expect("GET on app:* is allowed"),
        Some("hello".into())
    );
    let set = redis::cmd("SET")
        .arg(&key)
        .arg("changed")
        .query_async::<()>(&mut session)
        .await
        .unwrap_err();
    assert_eq!(set.code(), Some("NOPERM"), "SET is refused: {set}");
    let outside = get(&mut session, &format!("other:{username}"))
        .await
        .unwrap_err();
    assert_eq!(
        outside.code(),
        Some("NOPERM"),
        "a key outside app:*: {outside}"
    );
    assert!(redis_login(&username, "Not-the-password-123")
        .await
        .is_err());
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut admin_conn)
        .await
        .unwrap();

    let (status, body) = server
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(
        get(&mut session, &key).await.is_err(),
        "the session open at revocation is killed"
    );
    assert!(
        redis_login(&username, &password).await.is_err(),
        "login refused after revocation"
    );
    assert!(!acl_user_exists(&username).await, "the ACL user is gone");
    server.assert_logs_free_of(&[&password, &admin_password]);
    server.revoke_everything().await;
}

#[tokio::test]
async fn the_reaper_deletes_an_expired_user_and_its_sessions() {
    let (server, _, _, mut cleanup) = server_with_admin("exp").await;
    let role = unique("rdexp");
    cleanup.prefixes.push(format!("v-{role}-"));
    server
        .write_role(
            &role,
            json!({ "db_name": "rd", "default_ttl": 2, "max_ttl": 2 }),
        )
        .await;
    let (_, username, password) = server.creds(&role).await;
    let mut session = redis_login(&username, &password)
        .await
        .expect("works before expiry");
    get(&mut session, "any-key")
        .await
        .expect("the default rules let it read");
    eventually(Duration::from_secs(8), || async {
        !acl_user_exists(&username).await
    })
    .await
    .expect("the reaper deleted the expired Redis user");
    assert!(
        get(&mut session, "any-key").await.is_err(),
        "the open session was killed at expiry"
    );
    assert!(redis_login(&username, &password).await.is_err());
}

#[tokio::test]
async fn revoke_prefix_removes_every_user_of_the_role() {
    let (server, _, _, mut cleanup) = server_with_admin("prefix").await;
    let role = unique("rdpre");
    let prefix = format!("v-{role}-");
    cleanup.prefixes.push(prefix.clone());
    server
        .write_role(&role, json!({ "db_name": "rd", "default_ttl": "1h" }))
        .await;
    let mut issued = Vec::new();
    for _ in 0..3 {
        issued.push(server.creds(&role).await);
    }
    assert_eq!(acl_users_with_prefix(&prefix).await.len(), 3);
    let (status, body) = server
        .call(
            "PUT",
            &format!("sys/leases/revoke-prefix/database/creds/{role}"),
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    assert!(
        acl_users_with_prefix(&prefix).await.is_empty(),
        "users left after revoke-prefix"
    );
    for (_, username, password) in issued {
        assert!(redis_login(&username, &password).await.is_err());
    }
}

#[tokio::test]
async fn a_static_role_rotates_an_existing_acl_users_password() {
    let (server, _, _, mut cleanup) = server_with_admin("static").await;
    let user = unique("lt-static");
    cleanup.users.push(user.clone());
    let initial = make_acl_user(&user, &["~static:*", "+get"]).await;
    let role = unique("rdst");
    let (status, body) = server
        .call(
            "POST",
            &format!("database/static-roles/{role}"),
            Some(json!({ "db_name": "rd", "username": user, "rotation_period": 86400 })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(
        redis_login(&user, &initial).await.is_err(),
        "the import rotation replaced the initial password"
    );
    let static_password = |server: &TestServer| {
        let api = server.api.clone();
        let role = role.clone();
        async move {
            let (status, body) = api
                .call("GET", &format!("database/static-creds/{role}"), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["data"]["password"].as_str().unwrap().to_owned()
        }
    };
    let first = static_password(&server).await;
    let mut session = redis_login(&user, &first)
        .await
        .expect("the static password logs in");
    get(&mut session, "static:x")
        .await
        .expect("the user keeps its own rules");

    let (status, body) = server
        .call("POST", &format!("database/rotate-role/{role}"), None)
        .await;
    assert!(status.is_success(), "{status} {body}");
    let second = static_password(&server).await;
    assert_ne!(first, second);
    assert!(
        redis_login(&user, &first).await.is_err(),
        "the old password is refused after rotation"
    );
    redis_login(&user, &second)
        .await
        .expect("the new password logs in");

    let (status, _) = server
        .call("DELETE", &format!("database/static-roles/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        acl_user_exists(&user).await,
        "deleting the static role leaves the user alone"
    );
    server.assert_logs_free_of(&[&first, &second]);
}

/// Every bad field is a 400 naming it, and nothing reaches Redis.
#[tokio::test]
async fn bad_input_is_refused_with_400_naming_the_field() {
    let (server, _, _, mut cleanup) = server_with_admin("bad").await;
    let role = unique("rdbad");
    cleanup.prefixes.push(format!("v-{role}-"));

    let refused = |body: Json, field: &'static str| {
        let api = server.api.clone();
        let role = role.clone();
        async move {
            let mut role_body = json!({ "db_name": "rd" });
            for (k, v) in body.as_object().unwrap() {
                role_body[k] = v.clone();
            }
            let (status, answer) = api
                .call("POST", &format!("database/roles/{role}"), Some(role_body))
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {answer}");
            assert!(answer.to_string().contains(field), "{field}: {answer}");
        }
    };
    refused(
        json!({ "creation_statements": [r#"[">a-password"]"#] }),
        "creation_statements",
    )
    .await;
    refused(
        json!({ "creation_statements": ["~* +@read"] }),
        "creation_statements",
    )
    .await;
    refused(
        json!({ "creation_statements": ["nopass"] }),
        "creation_statements",
    )
    .await;
    refused(
        json!({ "creation_statements": [r#"["~*", ["+@read"]]"#] }),
        "creation_statements",
    )
    .await;
    refused(
        json!({ "revocation_statements": [r#"["+@all"]"#] }),
        "revocation_statements",
    )
    .await;
    refused(json!({ "renew_statements": ["+get"] }), "renew_statements").await;
    refused(
        json!({ "rollback_statements": ["+get"] }),
        "rollback_statements",
    )
    .await;
    refused(json!({ "options": { "host": "%" } }), "options").await;

    let connection = |body: Json, field: &'static str| {
        let api = server.api.clone();
        async move {
            let (status, answer) = api.call("POST", "database/config/rd-bad", Some(body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {answer}");
            assert!(answer.to_string().contains(field), "{field}: {answer}");
        }
    };
    let (host, port) = host_and_port();
    connection(
        json!({ "plugin_name": "postgresql-database-plugin", "host": host, "port": 5432 }),
        "host",
    )
    .await;
    connection(
        json!({ "plugin_name": "mysql-database-plugin", "connection_url": mysql_url(), "ca_cert": "x" }),
        "ca_cert",
    )
    .await;
    connection(
        json!({ "plugin_name": "redis-database-plugin", "connection_url": redis_url(), "host": host }),
        "connection_url",
    )
    .await;
    connection(
        json!({ "plugin_name": "redis-database-plugin", "host": "localhost://127.0.0.1", "port": port }),
        "host",
    )
    .await;
    connection(
        json!({ "plugin_name": "redis-database-plugin", "host": host, "port": 70000 }),
        "port",
    )
    .await;
    connection(
        json!({ "plugin_name": "redis-database-plugin", "host": host, "port": port, "insecure_tls": true }),
        "insecure_tls",
    )
    .await;
    connection(
        json!({ "plugin_name": "redis-database-plugin", "host": host, "port": port, "ca_cert": "-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n" }),
        "ca_cert",
    )
    .await;
    connection(
        json!({ "plugin_name": "redis-database-plugin", "host": host, "port": port, "tls": true, "ca_cert": "not a certificate" }),
        "ca_cert",
    )
    .await;
    connection(
        json!({ "plugin_name": "redis-database-plugin", "host": host, "port": port, "tls_certificate": "x" }),
        "tls_certificate",
    )
    .await;
    connection(
        json!({ "plugin_name": "redis-database-plugin", "connection_url": "mysql://127.0.0.1:3306" }),
        "connection_url",
    )
    .await;
    let (status, _) = server
        .call("GET", &format!("database/creds/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a refused role was stored");
    assert!(acl_users_with_prefix(&format!("v-{role}-"))
        .await
        .is_empty());

    // An update of one address field keeps the others.
    let (status, body) = server
        .call(
            "POST",
            "database/config/rd",
            Some(json!({ "port": 1, "verify_connection": false })),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let (_, read) = server.call("GET", "database/config/rd", None).await;
    assert_eq!(read["data"]["connection_details"]["host"], json!(host));
    assert_eq!(read["data"]["connection_details"]["port"], json!(1));
}

/// `connection_url` works too, with the admin credentials in `username` and `password`.
#[tokio::test]
async fn a_connection_url_works_as_well() {
    let (server, admin, admin_password, mut cleanup) = server_with_admin("url").await;
    let role = unique("rdurl");
    cleanup.prefixes.push(format!("v-{role}-"));
    let (host, port) = host_and_port();
    server
        .add_connection(
            "rd-url",
            json!({
                "plugin_name": "redis",
                "connection_url": format!("redis://{{{{username}}}}:{{{{password}}}}@{host}:{port}"),
                "username": admin,
                "password": admin_password,
                "allowed_roles": "*",
            }),
        )
        .await;
    server
        .write_role(&role, json!({ "db_name": "rd-url", "default_ttl": "1h" }))
        .await;
    let (_, username, password) = server.creds(&role).await;
    redis_login(&username, &password)
        .await
        .expect("the issued credentials log in");
    server.revoke_everything().await;
    assert!(!acl_user_exists(&username).await);
}
