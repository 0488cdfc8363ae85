//! TLS to a MariaDB target through the HTTP API (the connection fields of issue 11 end to end):
//! an admin that can log in over TLS only (`REQUIRE SSL`) is usable through a connection with
//! `tls=true` and the CA given inline as `tls_ca`, and refused without TLS. The issued login works,
//! then it is refused and gone. The CA comes from scripts/services.sh (/etc/lessor-tests/tls).

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use reqwest::StatusCode;
use serde_json::json;

fn ca_pem() -> String {
    let dir =
        std::env::var("LESSOR_TEST_TLS_DIR").unwrap_or_else(|_| "/etc/lessor-tests/tls".into());
    std::fs::read_to_string(format!("{dir}/ca.pem"))
        .unwrap_or_else(|e| panic!("no test CA in {dir} ({e}): run scripts/services.sh"))
}

async fn root() -> mysql_async::Conn {
    mysql_async::Conn::new(mysql_async::Opts::from_url(&mysql_url()).unwrap())
        .await
        .expect("MariaDB answers; run scripts/services.sh")
}

/// A TLS-only admin, dropped (with whatever it issued) when the test ends.
struct TlsAdmin {
    name: String,
    password: String,
}

impl TlsAdmin {
    async fn create() -> Self {
        let name = unique("lt-api");
        let password = "tls-admin-password-0123456789".to_owned();
        let mut conn = root().await;
        for statement in [
            format!("CREATE USER '{name}'@'%' IDENTIFIED BY '{password}' REQUIRE SSL"),
            format!("GRANT CREATE USER, PROCESS, CONNECTION ADMIN ON *.* TO '{name}'@'%'"),
            format!("GRANT SELECT ON mysql.* TO '{name}'@'%'"),
        ] {
            conn.query_drop(statement).await.unwrap();
        }
        let _ = conn.disconnect().await;
        Self { name, password }
    }

    async fn drop_all(&self) {
        let mut conn = root().await;
        conn.query_drop(format!("DROP USER IF EXISTS '{}'@'%'", self.name))
            .await
            .unwrap();
        let _ = conn.disconnect().await;
    }
}

async fn user_exists(user: &str) -> bool {
    let mut conn = root().await;
    let found: Option<i64> = conn
        .exec_first("SELECT COUNT(*) FROM mysql.user WHERE User = ?", (user,))
        .await
        .unwrap();
    let _ = conn.disconnect().await;
    found.unwrap_or(0) > 0
}

async fn login(user: &str, password: &str) -> Result<(), mysql_async::Error> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(3306)
        .user(Some(user))
        .pass(Some(password));
    let mut conn = mysql_async::Conn::new(opts).await?;
    conn.query_drop("SELECT 1").await?;
    let _ = conn.disconnect().await;
    Ok(())
}

#[tokio::test]
async fn a_tls_only_mariadb_admin_works_through_tls_fields_and_is_refused_without() {
    let admin = TlsAdmin::create().await;
    let server = TestServer::start().await;
    let url = "{{username}}:{{password}}@tcp(127.0.0.1:3306)/";

    // Without TLS, the server refuses the admin: the connection write says so and stores nothing.
    let (status, body) = server
        .call(
            "POST",
            "database/config/plain",
            Some(json!({ "plugin_name": "mysql-database-plugin", "connection_url": url,
                         "username": admin.name, "password": admin.password, "allowed_roles": "*" })),
        )
        .await;
    assert!(
        status.is_client_error() || status.is_server_error(),
        "{status} {body}"
    );
    let (status, _) = server.call("GET", "database/config/plain", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Verified TLS with the CA given inline.
    let (status, body) = server
        .call(
            "POST",
            "database/config/tls",
            Some(json!({ "plugin_name": "mysql-database-plugin",
                         "connection_url": format!("{url}?tls=true"),
                         "username": admin.name, "password": admin.password,
                         "tls_ca": ca_pem(), "allowed_roles": "*" })),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let (_, read) = server.call("GET", "database/config/tls", None).await;
    assert!(!read.to_string().contains("BEGIN CERTIFICATE"), "{read}");

    server
        .write_role("over-tls", json!({ "db_name": "tls", "default_ttl": "5m" }))
        .await;
    let (lease_id, user, password) = server.creds("over-tls").await;
    login(&user, &password)
        .await
        .expect("the issued login works");
    let (status, body) = server
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(
        login(&user, &password).await.is_err(),
        "refused after revocation"
    );
    assert!(!user_exists(&user).await, "the user is gone");

    server.revoke_everything().await;
    server.stop().await;
    admin.drop_all().await;
}
