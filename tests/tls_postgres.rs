//! TLS to PostgreSQL targets, end to end through the HTTP API against the real local PostgreSQL
//! (scripts/services.sh turns TLS on with a test CA in /etc/lessor-tests/tls, and makes members
//! of `lessor_tls_only` log in over TLS only, members of `lessor_tls_cert` with a client
//! certificate only).
//!
//! Every admin a test uses can only log in over TLS, so a credential issued, revoked or rotated
//! through it proves the connection was encrypted and verified as configured; the refusals prove
//! that a wrong name, an unknown CA or `sslmode=disable` stop at the connection write with the
//! reason. Users and roles are dropped at the end, also when a test fails.

mod common;
mod rotation_support;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use lessor_plugin::{ConnectionSettings, DatabasePlugin, Secret, TlsMaterial};
use reqwest::StatusCode;
use rotation_support::assert_store_files_free_of;
use serde_json::{json, Value};

/// Where scripts/services.sh put the test CA and certificates.
fn tls_dir() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("LESSOR_TEST_TLS_DIR").unwrap_or_else(|_| "/etc/lessor-tests/tls".into()),
    );
    assert!(
        dir.join("ca.pem").exists(),
        "no test CA in {}: run scripts/services.sh",
        dir.display()
    );
    dir
}

fn tls_file(name: &str) -> String {
    let path = tls_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn tls_path(name: &str) -> String {
    tls_dir().join(name).display().to_string()
}

/// PostgreSQL roles a test made, dropped when it ends, even by a panic. Dynamic users issued
/// through Lessor are added too, so a failed revocation leaves nothing behind either.
#[derive(Default)]
struct Roles(Mutex<Vec<String>>);

impl Roles {
    fn add(&self, user: &str) {
        self.0.lock().unwrap().push(user.to_owned());
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        let users = std::mem::take(&mut *self.0.lock().unwrap());
        if users.is_empty() {
            return;
        }
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread with its
        // own runtime does the async work.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let admin = pg_admin().await;
                    // Last made first: dynamic users before the admin that made them.
                    for user in users.iter().rev() {
                        let _ = admin
                            .execute(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                                &[user],
                            )
                            .await;
                        if let Err(e) = admin
                            .batch_execute(&format!("DROP ROLE IF EXISTS \"{user}\""))
                            .await
                        {
                            eprintln!("cannot drop role {user}: {e}");
                        }
                    }
                })
        })
        .join();
    }
}

/// A CREATEROLE admin that can log in over TLS only (member of `lessor_tls_only`), with a password.
async fn tls_only_admin(roles: &Roles) -> (String, String) {
    let user = unique("lessor_tlsadm").replace('-', "_");
    let password = format!("Admin-{}-pass1", unique("x").replace('-', ""));
    roles.add(&user);
    pg_admin()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {user} LOGIN CREATEROLE PASSWORD '{password}' IN ROLE lessor_tls_only;
             GRANT pg_signal_backend TO {user};"
        ))
        .await
        .unwrap();
    (user, password)
}

/// Logs in as `user` over TLS verified against the test CA, through the PostgreSQL plugin itself
/// (the harness's own client speaks plain TCP only), and runs a query.
async fn tls_login(user: &str, password: &str) -> Result<(), String> {
    let plugin = lessor_postgres::connect(ConnectionSettings {
        connection_url: Secret::new("postgresql://127.0.0.1:5432/postgres?sslmode=verify-full"),
        username: user.to_owned(),
        password: Secret::new(password),
        max_open_connections: 1,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::ZERO,
        tls: TlsMaterial {
            ca_pem: Some(tls_file("ca.pem")),
            ..Default::default()
        },
        disable_escaping: false,
        password_authentication: Default::default(),
        user_marker: None,
    })
    .await
    .map_err(|e| e.to_string())?;
    let result = plugin.verify().await.map_err(|e| e.to_string());
    plugin.close().await;
    result
}

/// The error text of a refused request.
fn error_text(body: &Value) -> String {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_else(|| body.to_string())
}

/// Writes a connection and expects a 400 whose message contains every one of `expected`.
async fn refused(api: &Api, name: &str, body: Value, expected: &[&str]) -> String {
    let (status, answer) = api
        .call("POST", &format!("database/config/{name}"), Some(body))
        .await;
    let message = error_text(&answer);
    eprintln!("refused as expected: {message}");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    for part in expected {
        assert!(message.contains(part), "expected {part:?} in: {message}");
    }
    message
}

async fn write_role_on(api: &Api, role: &str, connection: &str) {
    api.write_role(
        role,
        json!({ "db_name": connection, "default_ttl": "10m", "max_ttl": "1h" }),
    )
    .await;
}

/// Issues a credential through `role`, proves it logs in, revokes it and proves the login is
/// refused and the user gone.
async fn issue_log_in_revoke(api: &Api, roles: &Roles, role: &str) {
    let (lease, user, password) = api.creds(role).await;
    roles.add(&user);
    let admin = pg_admin().await;
    assert!(pg_role_exists(&admin, &user).await);
    pg_login(&user, &password)
        .await
        .unwrap_or_else(|e| panic!("the issued login {user} does not log in: {e}"));
    let (status, body) = api
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(
        pg_login(&user, &password).await.is_err(),
        "the revoked login {user} still logs in"
    );
    assert!(
        !pg_role_exists(&admin, &user).await,
        "the revoked user {user} is still there"
    );
}

#[tokio::test]
async fn the_tls_only_admin_cannot_log_in_in_plain_text() {
    // Without this, the tests below would not prove that Lessor used TLS.
    let roles = Roles::default();
    let (admin, password) = tls_only_admin(&roles).await;
    let Err(error) = pg_login(&admin, &password).await else {
        panic!("a TLS-only admin logged in over plain TCP: run scripts/services.sh");
    };
    let reason = error.as_db_error().map(|db| db.message().to_owned());
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("no encryption")),
        "{error:?}"
    );
    tls_login(&admin, &password).await.unwrap();
}

#[tokio::test]
async fn verify_full_with_an_inline_ca_issues_revokes_and_rotates_through_a_tls_only_admin() {
    let roles = Roles::default();
    let lessor = TestServer::start().await;
    let (admin, admin_password) = tls_only_admin(&roles).await;
    let conn = unique("pgtls");
    lessor
        .add_connection(
            &conn,
            json!({
                "plugin_name": "postgresql-database-plugin",
                // channel_binding=require: the login must be SCRAM-SHA-256-PLUS, bound to the
                // server's certificate, which fails unless the TLS stream gives the binding.
                "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres?sslmode=verify-full&channel_binding=require",
                "username": admin,
                "password": admin_password,
                "tls_ca": tls_file("ca.pem"),
                "allowed_roles": "*",
            }),
        )
        .await;

    // Dynamic credentials: issued, used, revoked.
    let role = unique("tls-dyn");
    write_role_on(&lessor, &role, &conn).await;
    issue_log_in_revoke(&lessor, &roles, &role).await;

    // A static role whose user also logs in over TLS only: the import rotation and rotate-role
    // both set the password through the admin and then log in as the user, which works only if
    // that login check uses the connection's TLS settings too.
    let static_user = unique("lessor_tlsst").replace('-', "_");
    let initial = format!("Initial-{}-pass1", unique("x").replace('-', ""));
    roles.add(&static_user);
    pg_admin()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {static_user} LOGIN PASSWORD '{initial}' IN ROLE lessor_tls_only"
        ))
        .await
        .unwrap();
    let static_role = unique("tls-st");
    lessor
        .write_static(
            &static_role,
            json!({ "db_name": conn, "username": static_user, "rotation_period": "1h" }),
        )
        .await;
    let (_, imported) = lessor.static_creds(&static_role).await;
    assert_ne!(imported, initial);
    tls_login(&static_user, &imported).await.unwrap();
    assert!(tls_login(&static_user, &initial).await.is_err());
    lessor.rotate(&static_role).await;
    let (_, rotated) = lessor.static_creds(&static_role).await;
    assert_ne!(rotated, imported);
    tls_login(&static_user, &rotated).await.unwrap();
    let old = tls_login(&static_user, &imported).await.unwrap_err();
    assert!(old.contains("password authentication failed"), "{old}");

    // Root rotation: the admin's own password, set and checked over TLS; Lessor keeps working.
    let (status, body) = lessor
        .call("POST", &format!("database/rotate-root/{conn}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(tls_login(&admin, &admin_password).await.is_err());
    issue_log_in_revoke(&lessor, &roles, &role).await;

    let (status, body) = lessor
        .call(
            "DELETE",
            &format!("database/static-roles/{static_role}"),
            None,
        )
        .await;
    assert!(status.is_success(), "{body}");
    lessor.revoke_everything().await;
    lessor.assert_logs_free_of(&[&admin_password, &imported, &rotated]);
}

#[tokio::test]
async fn sslmode_disable_or_no_sslmode_is_refused_for_a_tls_only_admin_with_the_databases_reason() {
    let roles = Roles::default();
    let lessor = TestServer::start().await;
    let (admin, password) = tls_only_admin(&roles).await;
    let conn = unique("pgplain");
    for url in [
        "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres?sslmode=disable",
        // No sslmode and no TLS material: plain text, as Lessor always did.
        "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres",
    ] {
        refused(
            &lessor,
            &conn,
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": url,
                "username": admin,
                "password": password,
            }),
            &["error verifying connection", "pg_hba.conf", "no encryption"],
        )
        .await;
    }
    // A CA with sslmode=disable would be ignored: refused, naming it.
    refused(
        &lessor,
        &conn,
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres?sslmode=disable",
            "username": admin,
            "password": password,
            "tls_ca": tls_file("ca.pem"),
        }),
        &["tls_ca", "sslmode=disable"],
    )
    .await;
    let (status, _) = lessor
        .call("GET", &format!("database/config/{conn}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_that_does_not_name_the_host() {
    let roles = Roles::default();
    let lessor = TestServer::start().await;
    let (admin, password) = tls_only_admin(&roles).await;
    // The server's certificate names localhost and 127.0.0.1. Connecting to 127.0.0.1 while
    // calling the host wrong.example (hostaddr, as libpq) is what a DNS entry pointing at the
    // wrong server looks like.
    let url = |mode: &str| {
        format!("postgresql://{{{{username}}}}:{{{{password}}}}@wrong.example:5432/postgres?hostaddr=127.0.0.1&sslmode={mode}")
    };
    let body = |mode: &str| {
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": url(mode),
            "username": admin,
            "password": password,
            "tls_ca": tls_file("ca.pem"),
            "allowed_roles": "*",
        })
    };
    let conn = unique("pgname");
    let message = refused(
        &lessor,
        &conn,
        body("verify-full"),
        &[
            "certificate not valid for name",
            "wrong.example",
            "does not name the host",
        ],
    )
    .await;
    assert!(message.contains("127.0.0.1"), "{message}");
    // No sslmode but a CA: the strictest check applies.
    let mut implicit = body("verify-full");
    implicit["connection_url"] = json!(url("verify-full").replace("&sslmode=verify-full", ""));
    refused(
        &lessor,
        &conn,
        implicit,
        &["certificate not valid for name"],
    )
    .await;

    // verify-ca checks the chain only, so the same server is accepted, and works.
    lessor.add_connection(&conn, body("verify-ca")).await;
    let role = unique("tls-ca");
    write_role_on(&lessor, &role, &conn).await;
    issue_log_in_revoke(&lessor, &roles, &role).await;
    lessor.revoke_everything().await;
}

#[tokio::test]
async fn a_server_certificate_from_an_unknown_ca_is_refused_and_require_or_prefer_encrypt_without_a_ca(
) {
    let roles = Roles::default();
    let lessor = TestServer::start().await;
    let (admin, password) = tls_only_admin(&roles).await;
    let body = |mode: &str, ca: Option<String>| {
        let mut body = json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@localhost:5432/postgres?sslmode={mode}"),
            "username": admin,
            "password": password,
            "allowed_roles": "*",
        });
        if let Some(ca) = ca {
            body["tls_ca"] = json!(ca);
        }
        body
    };
    let conn = unique("pgca");
    // verify-ca, and require with a CA (which verifies the chain, as libpq does).
    for mode in ["verify-ca", "require", "verify-full"] {
        refused(
            &lessor,
            &conn,
            body(mode, Some(tls_file("other-ca.pem"))),
            &[
                "invalid peer certificate",
                "not signed by the CA given in tls_ca",
            ],
        )
        .await;
    }
    // require with no CA: encrypted (the TLS-only admin gets in), the server unverified.
    lessor.add_connection(&conn, body("require", None)).await;
    let role = unique("tls-req");
    write_role_on(&lessor, &role, &conn).await;
    issue_log_in_revoke(&lessor, &roles, &role).await;
    // prefer: TLS when the server offers it, which is the only way this admin gets in.
    lessor.add_connection(&conn, body("prefer", None)).await;
    issue_log_in_revoke(&lessor, &roles, &role).await;
    // verify-ca without any CA cannot verify anything: refused before connecting.
    refused(
        &lessor,
        &conn,
        body("verify-ca", None),
        &["tls_ca", "needs the CA"],
    )
    .await;
    lessor.revoke_everything().await;
}

#[tokio::test]
async fn a_client_certificate_admin_works_inline_and_by_path_and_no_key_is_readable() {
    let roles = Roles::default();
    let dir = tempfile::tempdir().unwrap();
    let lessor = TestServer::start_in(dir.path()).await;
    // pg_hba `cert`: the certificate's CN (lessor_tls_client) must be the user name, and no
    // password is asked. A run that died may have left the role.
    let admin = "lessor_tls_client";
    let pg = pg_admin().await;
    pg.batch_execute(&format!(
        "DROP ROLE IF EXISTS {admin}; CREATE ROLE {admin} LOGIN CREATEROLE IN ROLE lessor_tls_cert; GRANT pg_signal_backend TO {admin};"
    ))
    .await
    .unwrap();
    roles.add(admin);
    let ca = tls_file("ca.pem");
    let certificate = tls_file("client.pem");
    let key = tls_file("client.key");

    // Inline PEM, with the keyword/value form of the connection string.
    let inline = unique("pgcert");
    let inline_body = json!({
        "plugin_name": "postgresql-database-plugin",
        "connection_url": format!("host=localhost port=5432 dbname=postgres user={admin} sslmode=verify-full"),
        "tls_ca": ca,
        "tls_certificate": certificate,
        "private_key": key,
        "allowed_roles": "*",
    });
    lessor.add_connection(&inline, inline_body.clone()).await;
    let role = unique("tls-cert");
    write_role_on(&lessor, &role, &inline).await;
    issue_log_in_revoke(&lessor, &roles, &role).await;

    // A read says what is set, never what it is.
    let (status, read) = lessor
        .call("GET", &format!("database/config/{inline}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    let details = &read["data"]["connection_details"];
    assert_eq!(details["tls_ca_set"], json!(true), "{read}");
    assert_eq!(details["tls_certificate_set"], json!(true), "{read}");
    assert_eq!(details["private_key_set"], json!(true), "{read}");
    assert_eq!(details["tls_certificate_key_set"], json!(false), "{read}");
    assert!(!read.to_string().contains("BEGIN"), "{read}");

    // An update that leaves the TLS fields out keeps them; an empty string clears one, and a
    // verify-full connection without its CA is refused, naming it, with the stored one unchanged.
    lessor
        .add_connection(
            &inline,
            json!({ "allowed_roles": "*", "max_open_connections": 2 }),
        )
        .await;
    issue_log_in_revoke(&lessor, &roles, &role).await;
    refused(
        &lessor,
        &inline,
        json!({ "tls_ca": "" }),
        &["tls_ca", "needs the CA"],
    )
    .await;
    // Without the client certificate, the server refuses the admin.
    refused(
        &lessor,
        &inline,
        json!({ "tls_certificate": "", "private_key": "" }),
        &["error verifying connection", "client certificate"],
    )
    .await;
    issue_log_in_revoke(&lessor, &roles, &role).await;

    // The same as paths in a URL.
    let by_path = unique("pgcertpath");
    lessor
        .add_connection(
            &by_path,
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": format!(
                    "postgresql://{admin}@localhost:5432/postgres?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
                    tls_path("ca.pem"), tls_path("client.pem"), tls_path("client.key")
                ),
                "allowed_roles": "*",
            }),
        )
        .await;
    let path_role = unique("tls-certpath");
    write_role_on(&lessor, &path_role, &by_path).await;
    issue_log_in_revoke(&lessor, &roles, &path_role).await;

    // No PEM line of the key, nor of the certificates, is readable in the store files, while
    // running and after a clean stop.
    let secret_lines: Vec<&str> = key
        .lines()
        .chain(certificate.lines())
        .filter(|line| !line.starts_with("-----") && line.len() >= 40)
        .collect();
    assert!(secret_lines.len() > 10);
    lessor.revoke_everything().await;
    assert_store_files_free_of(dir.path(), &secret_lines, &inline);
    lessor.assert_logs_free_of(&secret_lines);
    let (status, body) = lessor
        .call("DELETE", &format!("database/roles/{role}"), None)
        .await;
    assert!(status.is_success(), "{body}");
    lessor.stop().await;
    assert_store_files_free_of(dir.path(), &secret_lines, &inline);
}

#[tokio::test]
async fn bad_tls_fields_are_refused_naming_the_field_and_nothing_is_stored() {
    let lessor = TestServer::start().await;
    let base = || {
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": "postgresql://postgres@127.0.0.1:5432/postgres?sslmode=verify-full",
            "tls_ca": tls_file("ca.pem"),
        })
    };
    let key = tls_file("client.key");
    let key_line = key.lines().nth(3).unwrap().to_owned();
    let with = |field: &str, value: Value| {
        let mut body = base();
        body[field] = value;
        body
    };
    let conn = unique("pgbad");
    let broken_key = key.replace(&key_line, "!!!!");
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            with("tls_ca", json!("not a certificate")),
            vec!["tls_ca", "no PEM certificate"],
        ),
        (
            with(
                "tls_ca",
                json!("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
            ),
            vec!["tls_ca", "not valid PEM"],
        ),
        (
            with("tls_certificate", json!(tls_file("client.pem"))),
            vec!["private_key", "without its key"],
        ),
        (
            {
                let mut body = with("tls_certificate", json!(tls_file("client.pem")));
                body["private_key"] = json!(broken_key);
                body
            },
            vec!["private_key", "no valid PEM private key"],
        ),
        (
            {
                // A key that is not the certificate's.
                let mut body = with("tls_certificate", json!(tls_file("client.pem")));
                body["private_key"] = json!(tls_file("server.key"));
                body
            },
            vec!["private_key", "does not belong to the certificate"],
        ),
        (
            with(
                "tls_certificate_key",
                json!(format!("{}{}", tls_file("client.pem"), key)),
            ),
            vec!["tls_certificate_key", "tls_certificate and private_key"],
        ),
        (
            with("tls_server_name", json!("localhost")),
            vec!["tls_server_name", "hostaddr"],
        ),
        (
            with("tls_skip_verify", json!(true)),
            vec!["tls_skip_verify", "sslmode=require"],
        ),
        (
            with("tls_skip_verify", json!("yes")),
            vec!["tls_skip_verify", "true or false"],
        ),
        (
            {
                let mut body = base();
                body["connection_url"] = json!(format!(
                    "postgresql://postgres@127.0.0.1:5432/postgres?sslmode=verify-full&sslrootcert={}",
                    tls_path("ca.pem")
                ));
                body
            },
            vec!["tls_ca", "sslrootcert", "give it once"],
        ),
        (
            {
                let mut body = base();
                body.as_object_mut().unwrap().remove("tls_ca");
                body["connection_url"] =
                    json!("postgresql://postgres@127.0.0.1:5432/postgres?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
                body
            },
            vec!["sslrootcert", "cannot read", "/nonexistent/ca.pem"],
        ),
        (
            {
                let mut body = base();
                body["connection_url"] =
                    json!("postgresql://postgres@127.0.0.1:5432/postgres?sslmode=allow");
                body
            },
            vec!["connection_url", "sslmode=allow is not supported"],
        ),
    ];
    for (body, expected) in cases {
        let message = refused(&lessor, &conn, body, &expected).await;
        assert!(!message.contains(&key_line), "{message}");
    }
    let (status, _) = lessor
        .call("GET", &format!("database/config/{conn}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");
    lessor.assert_logs_free_of(&[&key_line]);
}
