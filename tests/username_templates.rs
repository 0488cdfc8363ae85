//! Vault's `username_template` syntax on dynamic roles (issue 12, item 1), end to end on the real
//! PostgreSQL and MariaDB: a role written with a Vault-style template issues a credential whose
//! username the template shaped, and that login works; templates the engine could never accept
//! are refused when the role is written, with a 400 naming the problem.

mod common;

use common::{mysql_url, pg_admin, pg_login, pg_role_exists, unique, TestServer};
use mysql_async::prelude::Queryable;
use reqwest::StatusCode;
use serde_json::json;

const READ_ALL: &str = "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT SELECT ON *.* TO '{{name}}'@'%';";

fn mysql_admin_opts() -> mysql_async::Opts {
    mysql_async::Opts::from_url(&mysql_url()).expect("LESSOR_TEST_MYSQL_URL is a mysql:// URL")
}

async fn mysql_login(user: &str, password: &str) -> Result<String, mysql_async::Error> {
    let admin = mysql_admin_opts();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(admin.ip_or_hostname().to_owned())
        .tcp_port(admin.tcp_port())
        .prefer_socket(false)
        .user(Some(user))
        .pass(Some(password));
    let mut conn = mysql_async::Conn::new(opts).await?;
    let current: Option<String> = conn.query_first("SELECT CURRENT_USER()").await?;
    let _ = conn.disconnect().await;
    Ok(current.unwrap_or_default())
}

async fn mysql_user_exists(user: &str) -> bool {
    let mut admin = mysql_async::Conn::new(mysql_admin_opts()).await.unwrap();
    let found: Option<String> = admin
        .exec_first("SELECT User FROM mysql.user WHERE User = ?", (user,))
        .await
        .unwrap();
    let _ = admin.disconnect().await;
    found.is_some()
}

#[tokio::test]
async fn postgres_issues_a_login_named_by_a_vault_template() {
    let role = unique("tpl");
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    // The PostgreSQL plugin's default in Vault, with the role name made lower case and the
    // dashes of the test's role name turned into underscores.
    let template = r#"{{ printf "v-%s-%s-%s-%s" (.DisplayName | truncate 8) (.RoleName | replace "-" "_" | truncate 8) (random 20) (unix_time) | truncate 63 }}"#;
    server
        .write_role(
            &role,
            json!({ "db_name": "pg", "default_ttl": "10m", "username_template": template }),
        )
        .await;
    let (status, body) = server
        .call("GET", &format!("database/roles/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["username_template"], template);

    let before = chrono::Utc::now().timestamp();
    let (lease_id, username, password) = server.creds(&role).await;
    let after = chrono::Utc::now().timestamp();
    // v-root-tpl_xxxx-<20 random>-<unix time>
    let role_part: String = role.replace('-', "_").chars().take(8).collect();
    let prefix = format!("v-root-{role_part}-");
    assert!(username.starts_with(&prefix), "{username}");
    let rest = &username[prefix.len()..];
    let (random, time) = rest.split_once('-').expect("random and time parts");
    assert_eq!(random.len(), 20, "{username}");
    assert!(random.chars().all(|c| c.is_ascii_alphanumeric()));
    let time: i64 = time.parse().expect("unix time");
    assert!((before..=after).contains(&time), "{username}");

    let client = pg_login(&username, &password)
        .await
        .expect("the templated login works");
    let row = client.query_one("SELECT current_user", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), username);
    drop(client);

    let (status, _) = server
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    assert!(status.is_success());
    assert!(!pg_role_exists(&pg_admin().await, &username).await);
    server.stop().await;
}

#[tokio::test]
async fn mariadb_issues_a_login_named_by_a_vault_template() {
    let role = unique("tpl");
    let server = TestServer::start().await;
    server.add_mysql("my").await;
    // MySQL 8 allows 32 characters; the template keeps within it, as Vault's MySQL default does.
    let template = r#"{{ printf "v_%s_%s" (.RoleName | truncate 8 | uppercase) (random 8) | truncate 32 }}_{{unix_time_millis | truncate_sha256 10}}"#;
    server
        .write_role(
            &role,
            json!({ "db_name": "my", "creation_statements": [READ_ALL], "default_ttl": "10m", "username_template": template }),
        )
        .await;
    let (_, username, password) = server.creds(&role).await;
    let head = format!(
        "v_{}_",
        role.chars().take(8).collect::<String>().to_uppercase()
    );
    assert!(username.starts_with(&head), "{username}");
    assert!(username.len() <= 32, "{username}");
    let current = mysql_login(&username, &password)
        .await
        .expect("the templated login works");
    assert!(current.starts_with(&format!("{username}@")), "{current}");

    server.revoke_everything().await;
    assert!(!mysql_user_exists(&username).await, "{username} survived");
    server.stop().await;
}

#[tokio::test]
async fn templates_the_engine_cannot_accept_are_refused_when_the_role_is_written() {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    server.add_mysql("my").await;
    let cases = [
        // Too long for MySQL's 32 characters and MariaDB's 80, at write time rather than at
        // issue time.
        (
            "my",
            r#"{{ printf "v-%s-%s" .RoleName (random 100) }}"#,
            "-character limit; end the template with | truncate",
        ),
        ("pg", r#"{{ "ab" | base64 }}{{ random 8 }}"#, "contains '='"),
        (
            "pg",
            r#"{{ .RoleName | frobnicate }}{{ random 8 }}"#,
            "unknown function frobnicate",
        ),
        ("pg", r#"{{ timestamp "2006" }}{{ random 8 }}"#, "timestamp"),
        ("pg", r#"{{ .RoleName }}"#, "{{random N}}"),
        (
            "pg",
            r#"{{ printf "%s-%s" .RoleName (random 8) | truncate 4 }}"#,
            "same username",
        ),
        (
            "pg",
            "{{ ((((((((((random 8)))))))))) }}",
            "nested more than",
        ),
    ];
    for (db, template, needle) in cases {
        let role = unique("bad");
        let mut role_body = json!({ "db_name": db, "username_template": template });
        if db == "my" {
            role_body["creation_statements"] = json!([READ_ALL]);
        }
        let (status, body) = server
            .call("POST", &format!("database/roles/{role}"), Some(role_body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{template}: {body}");
        let message = body["errors"][0].as_str().unwrap_or_default();
        assert!(
            message.contains(needle) && message.contains("username_template"),
            "{template}: {message}"
        );
        let (status, _) = server
            .call("GET", &format!("database/roles/{role}"), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "a refused role was stored");
    }
    server.stop().await;
}
