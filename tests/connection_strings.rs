//! The admin credentials Lessor writes into a connection string, against the real PostgreSQL:
//! libpq's keyword/value form (`host=.. user={{username}} password={{password}}`) and the URL form,
//! with an admin password holding characters each form must escape its own way, through credential
//! issuance and `rotate-root` (issue 12); and `disable_escaping`, with which the credentials go in
//! exactly as written.

mod common;

use common::{pg_admin, pg_login, unique, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// An admin password with every character that once broke a form: `-`, `_` and `%` were
/// percent-encoded into a keyword/value string (which reads `%2D` literally); `'` and `\` end or
/// escape a quoted libpq value; a space ends an unquoted one; `@` and `/` end a URL's user part.
const HARD_PASSWORD: &str = "Adm-_%'\\ @/x1";

/// A dedicated PostgreSQL admin, dropped when the test ends however it ends (a failed assertion
/// included), so the suite leaves no user behind.
struct PgAdmin(String);

impl PgAdmin {
    /// Creates the admin with `password`, able to create and drop the dynamic users.
    async fn create(password: &str) -> Self {
        let user = unique("lessor_esc").replace('-', "_");
        // standard_conforming_strings is on: only the quote needs doubling in the literal.
        let literal = password.replace('\'', "''");
        pg_admin()
            .await
            .batch_execute(&format!(
                "CREATE ROLE {user} LOGIN CREATEROLE PASSWORD '{literal}'; GRANT pg_signal_backend TO {user};"
            ))
            .await
            .unwrap();
        Self(user)
    }
}

impl Drop for PgAdmin {
    fn drop(&mut self) {
        // Drop cannot await: a short-lived runtime on its own thread runs the DROP ROLE.
        let user = self.0.clone();
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    pg_admin()
                        .await
                        .batch_execute(&format!("DROP ROLE IF EXISTS {user}"))
                        .await
                })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("cannot drop the test admin {}", self.0);
        }
    }
}

/// Logs in with the password as it is, through the driver's API rather than a connection string,
/// so the check does not depend on the escaping under test.
async fn admin_logs_in(user: &str, password: &str) -> bool {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(5432)
        .dbname("postgres")
        .user(user)
        .password(password)
        .connect_timeout(std::time::Duration::from_secs(5));
    match config.connect(tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            client.simple_query("SELECT 1").await.is_ok()
        }
        Err(_) => false,
    }
}

/// Issues a credential on `role`, proves it logs in, and revokes it.
async fn issue_and_log_in(lessor: &TestServer, role: &str, when: &str) {
    let (status, body) = lessor
        .call("GET", &format!("database/creds/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "creds {when}: {body}");
    let user = body["data"]["username"].as_str().unwrap();
    let password = body["data"]["password"].as_str().unwrap();
    assert!(
        pg_login(user, password).await.is_ok(),
        "the credential issued {when} logs in"
    );
    let (status, answer) = lessor
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": body["lease_id"] })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
}

/// Registers a connection as `admin` with `template`, issues credentials, rotates the admin
/// password, and issues credentials again through the rebuilt pool.
async fn issues_and_rotates_root(template: &str) {
    assert!(
        !admin_logs_in("postgres_no_such_user", HARD_PASSWORD).await,
        "the login check refuses a bad login"
    );
    let lessor = TestServer::start().await;
    let guard = PgAdmin::create(HARD_PASSWORD).await;
    let admin = guard.0.as_str();
    assert!(admin_logs_in(admin, HARD_PASSWORD).await);
    let conn = unique("esc");
    let (status, body) = lessor
        .call(
            "POST",
            &format!("database/config/{conn}"),
            Some(json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": template,
                "username": admin,
                "password": HARD_PASSWORD,
                "allowed_roles": "*",
            })),
        )
        .await;
    let registered = status.is_success();
    if registered {
        let role = unique("esc-dyn");
        lessor
            .write_role(&role, json!({ "db_name": conn, "default_ttl": "1h" }))
            .await;
        issue_and_log_in(&lessor, &role, "before rotate-root").await;

        let (status, body) = lessor
            .call("POST", &format!("database/rotate-root/{conn}"), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "rotate-root: {body}");
        assert!(
            !admin_logs_in(admin, HARD_PASSWORD).await,
            "the old admin password is refused"
        );
        issue_and_log_in(&lessor, &role, "after rotate-root").await;
        lessor.revoke_everything().await;
    }
    lessor.stop().await;
    assert!(
        registered,
        "the connection logs in with the admin password ({status}: {body})"
    );
}

#[tokio::test]
async fn keyword_value_form_carries_a_hard_password_through_rotate_root() {
    issues_and_rotates_root(
        "host=127.0.0.1 port=5432 dbname=postgres user={{username}} password={{password}}",
    )
    .await;
}

/// libpq's documentation quotes values; a template written that way keeps working (Lessor quotes
/// the value itself, so it takes the operator's quotes off the placeholder first).
#[tokio::test]
async fn keyword_value_form_with_quoted_placeholders_carries_a_hard_password() {
    issues_and_rotates_root(
        "host=127.0.0.1 port=5432 dbname=postgres user='{{username}}' password = '{{password}}'",
    )
    .await;
}

#[tokio::test]
async fn url_form_carries_a_hard_password_through_rotate_root() {
    issues_and_rotates_root("postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres").await;
}

fn details(read: &Value) -> &Value {
    &read["data"]["connection_details"]
}

/// `disable_escaping=true`: credentials go into the URL as written. A password that needs no
/// escaping works (and so do the passwords rotate-root generates, whose alphabet needs none); the
/// value is stored, read back, kept by a write that does not mention it, and can be turned off.
#[tokio::test]
async fn disable_escaping_works_with_a_plain_password_and_round_trips() {
    let lessor = TestServer::start().await;
    let password = format!("Plain-pass_{}", unique("x").replace('-', ""));
    let guard = PgAdmin::create(&password).await;
    let admin = guard.0.as_str();
    let conn = unique("noesc");
    let role = unique("noesc-dyn");
    let path = format!("database/config/{conn}");
    lessor
        .add_connection(
            &conn,
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": "host=127.0.0.1 port=5432 dbname=postgres user={{username}} password={{password}}",
                "username": admin,
                "password": password,
                "allowed_roles": "*",
                "disable_escaping": true,
            }),
        )
        .await;
    let (status, read) = lessor.call("GET", &path, None).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(details(&read)["disable_escaping"], true, "{read}");
    lessor
        .write_role(&role, json!({ "db_name": conn, "default_ttl": "1h" }))
        .await;
    issue_and_log_in(&lessor, &role, "with disable_escaping").await;

    // A write that leaves the field out keeps it, as for every other field.
    lessor
        .add_connection(&conn, json!({ "allowed_roles": ["*"] }))
        .await;
    let (_, read) = lessor.call("GET", &path, None).await;
    assert_eq!(details(&read)["disable_escaping"], true, "{read}");

    let (status, body) = lessor
        .call("POST", &format!("database/rotate-root/{conn}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "rotate-root: {body}");
    issue_and_log_in(&lessor, &role, "after rotate-root with disable_escaping").await;

    lessor
        .add_connection(&conn, json!({ "disable_escaping": false }))
        .await;
    let (_, read) = lessor.call("GET", &path, None).await;
    assert_eq!(details(&read)["disable_escaping"], false, "{read}");
    issue_and_log_in(&lessor, &role, "with escaping back on").await;

    let (status, body) = lessor
        .call("POST", &path, Some(json!({ "disable_escaping": "maybe" })))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("disable_escaping"), "{body}");

    lessor.revoke_everything().await;
    lessor.stop().await;
}

/// Escaping really is off: an operator who writes the password already escaped for the URL (as
/// ADO-style strings need their own escaping) gets it through untouched with
/// `disable_escaping=true`, while with escaping on the same text is encoded a second time and the
/// login is refused.
#[tokio::test]
async fn disable_escaping_passes_an_operator_escaped_password_untouched() {
    let lessor = TestServer::start().await;
    let password = "p@ss/word-1";
    let escaped = "p%40ss%2Fword-1";
    let guard = PgAdmin::create(password).await;
    let admin = guard.0.as_str();
    let body = |disable: bool| {
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres",
            "username": admin,
            "password": escaped,
            "allowed_roles": "*",
            "disable_escaping": disable,
        })
    };
    let escaped_twice = lessor
        .call("POST", "database/config/esc-twice", Some(body(false)))
        .await;
    let verbatim = lessor
        .call("POST", "database/config/esc-verbatim", Some(body(true)))
        .await;
    lessor.stop().await;

    assert_eq!(
        escaped_twice.0,
        StatusCode::BAD_REQUEST,
        "escaped again, the password is wrong: {}",
        escaped_twice.1
    );
    assert!(
        verbatim.0.is_success(),
        "put in as written, the URL carries the right password: {}",
        verbatim.1
    );
}
