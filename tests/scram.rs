//! SCRAM-SHA-256 verifiers computed by Lessor (`password_authentication = "scram-sha-256"` and
//! `scram_iterations`), against the real PostgreSQL, whose TCP logins for non-admin users check
//! passwords with SCRAM (scripts/services.sh; proved first below):
//! - Lessor's verifier equals the one PostgreSQL computes for the same password and salt, and a
//!   role given Lessor's verifier logs in with the password, at 4,096 iterations and at 1;
//! - dynamic credentials through the API on a connection with 1 iteration log in, store
//!   `SCRAM-SHA-256$1:...`, carry the verifier (never the password) in their statements, refuse a
//!   wrong password, and are gone after revocation; a weak password policy gets 4,096;
//! - static-role rotation and rotate-root on such a connection store 4,096 iterations and log in;
//! - the fields are checked by name (MySQL and Redis refuse them), kept by a write that leaves
//!   them out, and shown by a read.

mod common;

use base64::Engine as _;
use common::*;
use lessor_plugin::Secret;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Drops PostgreSQL roles (the named ones, and every one starting with one of the prefixes: the
/// dynamic users of a role) when the test ends, also when an assertion failed first.
#[derive(Default)]
struct DropRoles {
    names: Vec<String>,
    prefixes: Vec<String>,
}

impl Drop for DropRoles {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.names);
        let prefixes = std::mem::take(&mut self.prefixes);
        // Drop runs outside the test's runtime: a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let admin = pg_admin().await;
                let mut all = names;
                for prefix in prefixes {
                    for row in admin
                        .query(
                            "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1)",
                            &[&prefix],
                        )
                        .await
                        .unwrap()
                    {
                        all.push(row.get(0));
                    }
                }
                for name in all {
                    let _ = admin
                        .batch_execute(&format!("DROP ROLE IF EXISTS \"{name}\""))
                        .await;
                }
            });
        })
        .join();
    }
}

/// What PostgreSQL stores for `user`'s password.
async fn stored_verifier(admin: &tokio_postgres::Client, user: &str) -> String {
    admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
}

/// A connection to the local PostgreSQL with Lessor's verifiers of `iterations` iterations.
async fn add_scram_postgres(api: &Api, name: &str, iterations: u32) {
    api.add_connection(
        name,
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": postgres_url(),
            "allowed_roles": "*",
            "password_authentication": "scram-sha-256",
            "scram_iterations": iterations,
        }),
    )
    .await;
}

fn error_of(body: &Value) -> String {
    body["errors"][0].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn postgresql_checks_tcp_passwords_with_scram() {
    assert_postgres_checks_passwords().await;
    // With the `md5` method a role whose stored password is MD5 logs in; with `scram-sha-256`
    // it is refused. So a refusal here shows the method is SCRAM, not md5 (nor trust).
    let admin = pg_admin().await;
    let user = unique("lessor_md5").replace('-', "_");
    let _cleanup = DropRoles {
        names: vec![user.clone()],
        prefixes: Vec::new(),
    };
    admin
        .batch_execute(&format!(
            "SET password_encryption = 'md5'; CREATE ROLE {user} LOGIN PASSWORD 'Md5-password-123'; \
             RESET password_encryption;"
        ))
        .await
        .unwrap();
    assert!(stored_verifier(&admin, &user).await.starts_with("md5"));
    assert!(
        pg_login(&user, "Md5-password-123").await.is_err(),
        "an MD5-stored password logged in over TCP: pg_hba.conf uses md5 or trust, not scram-sha-256; run scripts/services.sh"
    );
}

#[tokio::test]
async fn lessors_verifier_is_postgresqls_and_logs_in_at_4096_and_at_1() {
    let admin = pg_admin().await;
    let mut cleanup = DropRoles::default();

    // PostgreSQL computes a verifier for a password; Lessor, given the same salt, the same one.
    let password = Secret::new(lessor_plugin::generate_password(32).expose());
    let own = unique("lessor_scram_pg").replace('-', "_");
    cleanup.names.push(own.clone());
    admin
        .batch_execute(&format!(
            "SET password_encryption = 'scram-sha-256'; CREATE ROLE {own} LOGIN PASSWORD '{}'; \
             RESET password_encryption;",
            password.expose()
        ))
        .await
        .unwrap();
    let postgresqls = stored_verifier(&admin, &own).await;
    let salt = postgresqls
        .strip_prefix("SCRAM-SHA-256$4096:")
        .and_then(|rest| rest.split_once('$'))
        .map(|(salt, _)| {
            base64::engine::general_purpose::STANDARD
                .decode(salt)
                .unwrap()
        })
        .unwrap_or_else(|| panic!("not a 4,096-iteration SCRAM verifier: {postgresqls}"));
    let lessors = lessor_postgres::scram::verifier_with_salt(
        &password,
        std::num::NonZeroU32::new(4096).unwrap(),
        &salt,
    )
    .unwrap();
    assert_eq!(lessors.expose(), postgresqls);

    // A role given Lessor's verifier (fresh salt) logs in with the password, and only with it.
    for iterations in [4096, 1] {
        let user = unique("lessor_scram").replace('-', "_");
        cleanup.names.push(user.clone());
        let verifier = lessor_postgres::scram::verifier(
            &password,
            std::num::NonZeroU32::new(iterations).unwrap(),
        )
        .unwrap();
        admin
            .batch_execute(&format!(
                "CREATE ROLE {user} LOGIN PASSWORD '{}'",
                verifier.expose()
            ))
            .await
            .unwrap();
        assert_eq!(
            stored_verifier(&admin, &user).await,
            verifier.expose(),
            "the server stores the verifier as given"
        );
        pg_login(&user, password.expose())
            .await
            .unwrap_or_else(|e| panic!("{iterations} iteration(s): the password is refused: {e}"));
        assert!(
            pg_login(&user, "Wrong-password-1234567890").await.is_err(),
            "{iterations} iteration(s): a wrong password logs in"
        );
    }
}

#[tokio::test]
async fn dynamic_credentials_with_one_iteration_log_in_and_carry_only_the_verifier() {
    let server = TestServer::start().await;
    let conn = unique("pgscram");
    add_scram_postgres(&server, &conn, 1).await;
    let role = unique("scram");
    let mut cleanup = DropRoles {
        names: Vec::new(),
        prefixes: vec![format!("v-{role}-")],
    };
    // The comment records what `{{password}}` stood for in the statements the server ran.
    server
        .write_role(
            &role,
            json!({
                "db_name": conn,
                "default_ttl": "1h",
                "creation_statements": [
                    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'",
                    // Where the test can read back what the statements carried (the role's
                    // comment is Lessor's installation marker).
                    "ALTER ROLE \"{{name}}\" SET lessor.statement_password TO '{{password}}'",
                ],
            }),
        )
        .await;

    let (_, read) = server
        .call("GET", &format!("database/config/{conn}"), None)
        .await;
    let details = &read["data"]["connection_details"];
    assert_eq!(
        details["password_authentication"],
        json!("scram-sha-256"),
        "{read}"
    );
    assert_eq!(details["scram_iterations"], json!(1), "{read}");

    let admin = pg_admin().await;
    let (lease, user, password) = server.creds(&role).await;
    let stored = stored_verifier(&admin, &user).await;
    assert!(stored.starts_with("SCRAM-SHA-256$1:"), "{stored}");
    let carried: Vec<String> = admin
        .query_one(
            "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
             WHERE r.rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        carried,
        [format!("lessor.statement_password={stored}")],
        "the statements carried the verifier"
    );
    assert!(!stored.contains(&password));
    pg_login(&user, &password)
        .await
        .expect("the issued password logs in");
    assert!(
        pg_login(&user, "Wrong-password-1234567890").await.is_err(),
        "a wrong password is refused"
    );
    let mut wrong = password.clone();
    wrong.replace_range(..1, if wrong.starts_with('A') { "B" } else { "A" });
    assert!(
        pg_login(&user, &wrong).await.is_err(),
        "a password one character off is refused"
    );

    server.revoke_lease(&lease).await;
    assert!(
        !pg_role_exists(&admin, &user).await,
        "revoked: the user is gone"
    );
    assert!(pg_login(&user, &password).await.is_err());

    // A password policy whose passwords can be guessed (20 characters of 62: about 115 bits)
    // gets PostgreSQL's full 4,096 iterations, whatever the connection says.
    let policy = unique("weak");
    server
        .write_password_policy(
            &policy,
            "length = 20\nrule \"charset\" { charset = \"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\" }",
        )
        .await;
    let (status, body) = server
        .call(
            "POST",
            &format!("database/config/{conn}"),
            Some(json!({ "password_policy": policy })),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (_, weak_user, weak_password) = server.creds(&role).await;
    let stored = stored_verifier(&admin, &weak_user).await;
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
    pg_login(&weak_user, &weak_password)
        .await
        .expect("the policy's password logs in");

    server.revoke_everything().await;
    assert!(!pg_role_exists(&admin, &weak_user).await);
    server.assert_logs_free_of(&[&password, &weak_password]);
    server.stop().await;
    cleanup.prefixes.clear();
}

#[tokio::test]
async fn static_and_root_rotation_on_a_one_iteration_connection_store_4096() {
    let server = TestServer::start().await;
    let admin = pg_admin().await;
    let mut cleanup = DropRoles::default();

    // A static role: the DBA's user, rotated by Lessor at import and on demand.
    let conn = unique("pgscram");
    add_scram_postgres(&server, &conn, 1).await;
    let user = unique("lessor_st_scram").replace('-', "_");
    cleanup.names.push(user.clone());
    admin
        .batch_execute(&format!(
            "CREATE ROLE {user} LOGIN PASSWORD 'Initial-password-123'"
        ))
        .await
        .unwrap();
    let role = unique("st-scram");
    let (status, body) = server
        .call(
            "POST",
            &format!("database/static-roles/{role}"),
            Some(json!({ "db_name": conn, "username": user, "rotation_period": 86400 })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    for round in ["import", "rotate-role"] {
        if round == "rotate-role" {
            let (status, body) = server
                .call("POST", &format!("database/rotate-role/{role}"), None)
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        }
        let (status, creds) = server
            .call("GET", &format!("database/static-creds/{role}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{creds}");
        let password = creds["data"]["password"].as_str().unwrap().to_owned();
        let stored = stored_verifier(&admin, &user).await;
        assert!(
            stored.starts_with("SCRAM-SHA-256$4096:"),
            "{round}: {stored}"
        );
        pg_login(&user, &password)
            .await
            .unwrap_or_else(|e| panic!("{round}: the rotated password is refused: {e}"));
    }
    assert!(pg_login(&user, "Initial-password-123").await.is_err());

    // rotate-root: a dedicated admin whose password Lessor rotates.
    let root = unique("lessor_adm_scram").replace('-', "_");
    cleanup.names.push(root.clone());
    admin
        .batch_execute(&format!(
            "CREATE ROLE {root} LOGIN CREATEROLE PASSWORD 'Admin-password-123'; \
             GRANT pg_signal_backend TO {root};"
        ))
        .await
        .unwrap();
    let root_conn = unique("pgadm-scram");
    server
        .add_connection(
            &root_conn,
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres",
                "username": root,
                "password": "Admin-password-123",
                "allowed_roles": "*",
                "password_authentication": "scram-sha-256",
                "scram_iterations": 1,
            }),
        )
        .await;
    let dynamic = unique("scram-root");
    cleanup.prefixes.push(format!("v-{dynamic}-"));
    server
        .write_role(
            &dynamic,
            json!({ "db_name": root_conn, "default_ttl": "1h" }),
        )
        .await;
    let (status, body) = server
        .call("POST", &format!("database/rotate-root/{root_conn}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let stored = stored_verifier(&admin, &root).await;
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
    assert!(pg_login(&root, "Admin-password-123").await.is_err());
    // Lessor logs in with the rotated password and still issues 1-iteration credentials.
    let (_, user_after, password_after) = server.creds(&dynamic).await;
    assert!(stored_verifier(&admin, &user_after)
        .await
        .starts_with("SCRAM-SHA-256$1:"));
    pg_login(&user_after, &password_after)
        .await
        .expect("a credential issued after rotate-root logs in");

    server.revoke_everything().await;
    assert!(!pg_role_exists(&admin, &user_after).await);
    for name in [&role] {
        let (status, body) = server
            .call("DELETE", &format!("database/static-roles/{name}"), None)
            .await;
        assert!(status.is_success(), "{body}");
    }
    server.stop().await;
    drop(cleanup);
}

#[tokio::test]
async fn the_fields_are_checked_by_name_and_kept_and_mysql_and_redis_refuse_them() {
    let server = TestServer::start().await;
    let refused = |status: StatusCode, body: &Value, field: &str| {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {body}");
        assert!(error_of(body).contains(field), "{field}: {body}");
    };
    let postgres = |extra: Value| {
        let mut body = json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": postgres_url(),
            "allowed_roles": "*",
        });
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    let conn = unique("pgchecks");
    for (extra, field) in [
        (
            json!({ "password_authentication": "md5" }),
            "password_authentication",
        ),
        (json!({ "scram_iterations": 1 }), "scram_iterations"),
        (
            json!({ "password_authentication": "password", "scram_iterations": 1 }),
            "scram_iterations",
        ),
        (
            json!({ "password_authentication": "scram-sha-256", "scram_iterations": 0 }),
            "scram_iterations",
        ),
        (
            json!({ "password_authentication": "scram-sha-256", "scram_iterations": 4097 }),
            "scram_iterations",
        ),
        (
            json!({ "password_authentication": "scram-sha-256", "scram_iterations": -1 }),
            "scram_iterations",
        ),
    ] {
        let (status, body) = server
            .call(
                "POST",
                &format!("database/config/{conn}"),
                Some(postgres(extra)),
            )
            .await;
        refused(status, &body, field);
    }
    let (status, _) = server
        .call("GET", &format!("database/config/{conn}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");

    // The default is Vault's: "password", and 4096 shown.
    server.add_postgres(&conn).await;
    let details = |server: &TestServer| {
        let api = server.api.clone();
        let conn = conn.clone();
        async move {
            let (status, read) = api
                .call("GET", &format!("database/config/{conn}"), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{read}");
            let details = &read["data"]["connection_details"];
            (
                details["password_authentication"].clone(),
                details["scram_iterations"].clone(),
            )
        }
    };
    assert_eq!(details(&server).await, (json!("password"), json!(4096)));
    // scram-sha-256 alone keeps 4096; a later write of other fields keeps both.
    let (status, body) = server
        .call(
            "POST",
            &format!("database/config/{conn}"),
            Some(json!({ "password_authentication": "scram-sha-256" })),
        )
        .await;
    assert!(status.is_success(), "{body}");
    assert_eq!(
        details(&server).await,
        (json!("scram-sha-256"), json!(4096))
    );
    let (status, body) = server
        .call(
            "POST",
            &format!("database/config/{conn}"),
            Some(json!({ "scram_iterations": "16" })),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (status, body) = server
        .call(
            "POST",
            &format!("database/config/{conn}"),
            Some(json!({ "max_open_connections": 3 })),
        )
        .await;
    assert!(status.is_success(), "{body}");
    assert_eq!(details(&server).await, (json!("scram-sha-256"), json!(16)));
    // Back to "password" (an empty string means it too): the count no longer applies.
    let (status, body) = server
        .call(
            "POST",
            &format!("database/config/{conn}"),
            Some(json!({ "password_authentication": "" })),
        )
        .await;
    assert!(status.is_success(), "{body}");
    assert_eq!(details(&server).await, (json!("password"), json!(4096)));

    // MySQL hashes passwords itself: both fields are refused by name, and nothing is stored.
    let mysql = unique("mychecks");
    for (extra, field) in [
        (
            json!({ "password_authentication": "scram-sha-256" }),
            "password_authentication",
        ),
        (
            json!({ "password_authentication": "scram-sha-256", "scram_iterations": 1 }),
            "password_authentication",
        ),
        (json!({ "scram_iterations": 1 }), "scram_iterations"),
    ] {
        let mut body = json!({
            "plugin_name": "mysql-database-plugin",
            "connection_url": mysql_url(),
            "allowed_roles": "*",
        });
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        let (status, answer) = server
            .call("POST", &format!("database/config/{mysql}"), Some(body))
            .await;
        refused(status, &answer, field);
    }
    let (status, _) = server
        .call("GET", &format!("database/config/{mysql}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");
    // So does Redis (ACL SETUSER takes the password).
    let redis = unique("rdchecks");
    let redis_url =
        std::env::var("LESSOR_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let (status, answer) = server
        .call(
            "POST",
            &format!("database/config/{redis}"),
            Some(json!({
                "plugin_name": "redis-database-plugin",
                "connection_url": redis_url,
                "allowed_roles": "*",
                "password_authentication": "scram-sha-256",
                "scram_iterations": 1,
            })),
        )
        .await;
    refused(status, &answer, "password_authentication");
    // "password" is what MySQL does anyway, and is accepted.
    server
        .add_connection(
            &mysql,
            json!({
                "plugin_name": "mysql-database-plugin",
                "connection_url": mysql_url(),
                "allowed_roles": "*",
                "password_authentication": "password",
            }),
        )
        .await;
    server.stop().await;
}
