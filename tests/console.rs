//! The web console in a real browser (Debian's headless chromium through chromedriver) against
//! an in-process Lessor and the real PostgreSQL: sign in, write a static role with a cron
//! schedule and see its next times (an invalid one refused before submit), rotate it and see the
//! history entry, revoke a lease issued through the API (and find it in the audit log as the
//! API call it is), revoke a role's and a connection's leases after the confirmation, a limited
//! token that cannot see another role, the admin password of a connection rotated after a
//! confirmation, and a change without the CSRF value refused; and a JWT sign-in. Screenshots of
//! the main views go to `$LESSOR_CONSOLE_SCREENSHOTS` when set (docs/console/ holds the committed
//! ones), else to a temporary directory.

mod common;
#[path = "console_support/webdriver.rs"]
mod webdriver;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use webdriver::Browser;

const CONN: &str = "pg";
const PG_LOGIN: &str =
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';";

/// An existing PostgreSQL login, as a DBA's user would be.
async fn pg_user(tag: &str) -> String {
    let user = unique(&format!("lessor_ui_{tag}")).replace('-', "_");
    pg_admin()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {user} LOGIN PASSWORD 'Initial-{user}-pass1'"
        ))
        .await
        .unwrap();
    user
}

async fn drop_pg_users(users: &[&str]) {
    let admin = pg_admin().await;
    for user in users {
        admin
            .batch_execute(&format!("DROP ROLE IF EXISTS {user}"))
            .await
            .unwrap();
    }
}

/// A dedicated admin for the admin-password rotation: never the machine's own postgres password.
async fn pg_admin_user() -> (String, String) {
    let user = unique("lessor_ui_adm").replace('-', "_");
    let password = format!("Admin-{}-pass1", unique("x").replace('-', ""));
    pg_admin()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {user} LOGIN CREATEROLE PASSWORD '{password}'; GRANT pg_signal_backend TO {user};"
        ))
        .await
        .unwrap();
    (user, password)
}

async fn history_len(server: &TestServer, role: &str) -> usize {
    let (status, body) = server
        .call("GET", &format!("database/static-roles/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]["rotation_history"]
        .as_array()
        .map_or(0, Vec::len)
}

async fn sign_in(browser: &Browser, base: &str, token: &str) {
    browser.goto(&format!("{base}/ui/login")).await;
    let field = browser.find("#token").await;
    field.type_text(token).await;
    browser
        .find("#token-login button[type=submit]")
        .await
        .click()
        .await;
    browser.find("nav[aria-label=Main]").await;
}

async fn sign_out(browser: &Browser) {
    browser.find("form.logout button").await.click().await;
    browser.find("#token").await;
}

fn screenshot_path(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    dir.join(format!("{name}.png"))
}

#[tokio::test]
async fn the_console_in_a_browser() {
    let server = TestServer::start().await;
    server.add_postgres(CONN).await;
    let base = server.base.clone();
    let role = unique("ui-app");
    server
        .write_role(
            &role,
            json!({ "db_name": CONN, "creation_statements": [PG_LOGIN], "default_ttl": "1h", "max_ttl": "2h" }),
        )
        .await;
    // An audit device, to see console actions recorded as the API calls they are.
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_file = audit_dir.path().join("audit.log");
    let (status, body) = server
        .call(
            "PUT",
            "sys/audit/file",
            Some(json!({ "type": "file", "options": { "file_path": audit_file } })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let static_user = pg_user("dba").await;
    let other_user = pg_user("other").await;
    let static_role = unique("ui-nightly");
    let other_role = unique("ui-hidden");
    let temporary = tempfile::tempdir().unwrap();
    let shots = std::env::var_os("LESSOR_CONSOLE_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temporary.path().to_path_buf());

    let browser = Browser::start().await;

    // Not signed in: the console asks for a sign-in.
    browser.goto(&format!("{base}/ui/")).await;
    browser.find("#token").await;
    assert!(browser.current_url().await.ends_with("/ui/login"));
    browser
        .screenshot(&screenshot_path(&shots, "sign-in"))
        .await;

    // A wrong token is refused on the page.
    browser.find("#token").await.type_text("not-a-token").await;
    browser
        .find("#token-login button[type=submit]")
        .await
        .click()
        .await;
    browser.find("#login-error").await;
    browser.wait_for_text("not valid").await;

    sign_in(&browser, &base, ROOT_TOKEN).await;
    let cookies = browser.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "lessor_session")
        .unwrap_or_else(|| panic!("no session cookie: {cookies:?}"));
    assert_eq!(session["httpOnly"], json!(true), "{session}");
    assert_eq!(session["sameSite"], json!("Strict"), "{session}");
    assert!(
        session["expiry"].as_i64().is_some(),
        "the session cookie must expire: {session}"
    );
    let sealed = session["value"].as_str().unwrap().to_owned();
    assert!(
        !sealed.contains(ROOT_TOKEN),
        "the cookie holds the token in clear"
    );

    // ---- a static role with a cron schedule: live preview, invalid refused before submit
    browser.goto(&format!("{base}/ui/static-roles/new")).await;
    browser.find("#name").await.type_text(&static_role).await;
    browser
        .find("#username")
        .await
        .type_text(&static_user)
        .await;
    let schedule = browser.find("#rotation_schedule").await;
    schedule.type_text("61 * * * *").await;
    browser.find("#schedule-preview.invalid").await;
    browser
        .find("#static-role-form button[type=submit]")
        .await
        .click()
        .await;
    // The browser kept the form: nothing was sent.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(browser
        .current_url()
        .await
        .ends_with("/ui/static-roles/new"));
    assert!(browser.try_find("#form-error").await.is_none());
    let (status, _) = server
        .call("GET", &format!("database/static-roles/{static_role}"), None)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "an invalid schedule was submitted"
    );

    schedule.clear().await;
    schedule.type_text("0 3 * * SUN").await;
    browser.find("#schedule-preview.valid").await;
    let previewed = browser.find_all("#preview-times li").await;
    assert_eq!(previewed.len(), 5, "five next times are previewed");
    let first = previewed[0].text().await;
    assert!(first.contains("03:00:00 UTC"), "{first}");
    browser
        .screenshot(&screenshot_path(&shots, "static-role-form"))
        .await;
    browser
        .find("#static-role-form button[type=submit]")
        .await
        .click()
        .await;
    browser.wait_for_text("The static role was saved.").await;
    let times = browser.find_all("#next-times li").await;
    assert_eq!(times.len(), 5, "the role page shows the next five times");
    for time in &times {
        let text = time.text().await;
        assert!(text.contains("03:00:00 UTC"), "{text}");
    }
    let words = browser.find("#schedule-words").await.text().await;
    assert_eq!(words, "at 03:00 UTC, on Sunday");
    let (status, stored) = server
        .call("GET", &format!("database/static-roles/{static_role}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["data"]["rotation_schedule"], json!("0 3 * * SUN"));

    // ---- rotate now, and the history shows it
    let before = history_len(&server, &static_role).await;
    browser
        .find("form[action$='/rotate'] button")
        .await
        .click()
        .await;
    browser.wait_for_text("The password was rotated.").await;
    assert_eq!(history_len(&server, &static_role).await, before + 1);
    let newest = browser.find("#rotation-history li").await.text().await;
    assert!(newest.contains("manual"), "{newest}");
    assert!(newest.contains("rotated"), "{newest}");
    browser
        .screenshot(&screenshot_path(&shots, "static-role"))
        .await;

    // ---- a lease issued through the API, revoked in the console
    let (lease_id, username, _) = server.creds(&role).await;
    let admin = pg_admin().await;
    assert!(pg_role_exists(&admin, &username).await);
    browser.goto(&format!("{base}/ui/")).await;
    browser.wait_for_text(&role).await;
    browser
        .screenshot(&screenshot_path(&shots, "overview"))
        .await;
    browser.goto(&format!("{base}/ui/leases?role={role}")).await;
    browser.wait_for_text(&lease_id).await;
    browser.screenshot(&screenshot_path(&shots, "leases")).await;
    // The owner filter: the lease's owner finds it, another owner does not.
    let (status, looked_up) = server
        .call(
            "PUT",
            "sys/leases/lookup",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{looked_up}");
    let owner = looked_up["data"]["owner"].as_str().unwrap().to_owned();
    assert!(!owner.is_empty());
    browser
        .goto(&format!("{base}/ui/leases?owner=someone-else"))
        .await;
    browser.wait_for_text("No lease matches").await;
    browser
        .goto(&format!("{base}/ui/leases?owner={owner}&state=active"))
        .await;
    browser.wait_for_text(&lease_id).await;
    browser
        .find(&format!("button[aria-label='Revoke lease {lease_id}']"))
        .await
        .click()
        .await;
    browser
        .wait_for_text("The lease was revoked and its database user dropped.")
        .await;
    assert!(
        !pg_role_exists(&admin, &username).await,
        "the user was not dropped"
    );
    // The audit log has the revocation as an API call: path, lease, caller, address, outcome.
    let audit = std::fs::read_to_string(&audit_file).unwrap();
    let revocation = audit
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|entry| {
            entry["type"] == "response"
                && entry["path"] == "sys/leases/revoke"
                && entry["lease_id"] == json!(lease_id)
        })
        .unwrap_or_else(|| panic!("no audit line for the console's revocation:\n{audit}"));
    assert_eq!(revocation["status"], json!(204), "{revocation}");
    assert_eq!(
        revocation["remote_address"],
        json!("127.0.0.1"),
        "{revocation}"
    );
    assert!(
        revocation["identity"]["accessor"].is_string(),
        "{revocation}"
    );
    assert!(
        !audit.contains(ROOT_TOKEN),
        "the audit log holds the token in clear"
    );

    // ---- a role's leases, after a confirmation that says how many
    let (_, first_user, _) = server.creds(&role).await;
    let (_, second_user, _) = server.creds(&role).await;
    browser.goto(&format!("{base}/ui/roles")).await;
    browser
        .find(&format!("a[href='/ui/roles/{role}/revoke']"))
        .await
        .click()
        .await;
    assert_eq!(browser.find("#lease-count").await.text().await, "2 leases");
    assert_eq!(
        browser.find("#user-count").await.text().await,
        "2 database users"
    );
    // Both users are named before anything is dropped.
    assert!(pg_role_exists(&admin, &first_user).await);
    assert!(pg_role_exists(&admin, &second_user).await);
    browser
        .screenshot(&screenshot_path(&shots, "revoke-role-confirmation"))
        .await;
    browser
        .find(&format!("form[action='/ui/roles/{role}/revoke'] button"))
        .await
        .click()
        .await;
    browser
        .wait_for_text("Every lease of the role was revoked.")
        .await;
    assert!(!pg_role_exists(&admin, &first_user).await);
    assert!(!pg_role_exists(&admin, &second_user).await);

    // ---- every lease on a connection, after a confirmation that says how many
    let (_, on_connection, _) = server.creds(&role).await;
    browser.goto(&format!("{base}/ui/connections")).await;
    browser
        .find(&format!("a[href='/ui/connections/{CONN}/revoke']"))
        .await
        .click()
        .await;
    assert_eq!(browser.find("#lease-count").await.text().await, "1 lease");
    assert!(pg_role_exists(&admin, &on_connection).await);
    browser
        .find(&format!(
            "form[action='/ui/connections/{CONN}/revoke'] button"
        ))
        .await
        .click()
        .await;
    browser
        .wait_for_text("Every lease on the connection was revoked.")
        .await;
    assert!(!pg_role_exists(&admin, &on_connection).await);

    // ---- the admin password of a connection with a dedicated admin, after a confirmation
    let (admin_user, admin_password) = pg_admin_user().await;
    server
        .add_connection(
            "pgadm",
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres",
                "username": admin_user,
                "password": admin_password,
                "allowed_roles": "*",
            }),
        )
        .await;
    assert!(pg_login(&admin_user, &admin_password).await.is_ok());
    browser.goto(&format!("{base}/ui/connections")).await;
    browser
        .find("a[href='/ui/connections/pgadm/rotate-root']")
        .await
        .click()
        .await;
    browser
        .wait_for_text("nobody else knows that password")
        .await;
    browser
        .find("form[action='/ui/connections/pgadm/rotate-root'] button")
        .await
        .click()
        .await;
    browser
        .wait_for_text("The connection's admin password was rotated.")
        .await;
    assert!(
        pg_login(&admin_user, &admin_password).await.is_err(),
        "the old admin password still logs in"
    );
    // Verify now: Lessor reaches the database with the password only it knows.
    browser
        .find("form[action='/ui/connections/pgadm/verify'] button")
        .await
        .click()
        .await;
    browser
        .wait_for_text("The connection was reached and verified just now.")
        .await;

    browser.goto(&format!("{base}/ui/connections")).await;
    browser.wait_for_text("postgresql-database-plugin").await;
    browser
        .screenshot(&screenshot_path(&shots, "connections"))
        .await;
    browser.goto(&format!("{base}/ui/audit")).await;
    browser.wait_for_text("file/").await;

    // A phone-width view of the static roles, readable without zooming.
    browser.set_window_size(390, 844).await;
    browser.goto(&format!("{base}/ui/static-roles")).await;
    browser.wait_for_text(&static_role).await;
    browser
        .screenshot(&screenshot_path(&shots, "static-roles-phone"))
        .await;
    browser.set_window_size(1280, 900).await;

    // ---- a change without the CSRF value, as a plain HTTP request with the session cookie
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let before = history_len(&server, &static_role).await;
    for body in ["", "csrf=0123456789abcdef"] {
        let answer = http
            .post(format!("{base}/ui/static-roles/{static_role}/rotate"))
            .header("cookie", format!("lessor_session={sealed}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::FORBIDDEN, "body {body:?}");
    }
    assert_eq!(
        history_len(&server, &static_role).await,
        before,
        "a change without the CSRF value was made"
    );
    // The same session reads fine, with the console's security headers.
    let page = http
        .get(format!("{base}/ui/static-roles/{static_role}"))
        .header("cookie", format!("lessor_session={sealed}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");

    // ---- a limited token sees its static role, not another one
    let (status, body) = server
        .call(
            "POST",
            &format!("database/static-roles/{other_role}"),
            Some(json!({ "db_name": CONN, "username": other_user, "rotation_period": "24h", "skip_import_rotation": true })),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let policy = unique("ui-dba");
    let text = format!(
        "path \"database/static-roles/\" {{ capabilities = [\"list\"] }}\n\
         path \"database/static-roles/{static_role}\" {{ capabilities = [\"read\"] }}\n\
         path \"database/rotate-role/{static_role}\" {{ capabilities = [\"update\"] }}\n\
         path \"auth/token/lookup-self\" {{ capabilities = [\"read\"] }}\n"
    );
    let (status, body) = server
        .call(
            "PUT",
            &format!("sys/policies/acl/{policy}"),
            Some(json!({ "policy": text })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, answer) = server
        .call(
            "POST",
            "auth/token/create",
            Some(json!({ "policies": [policy], "no_default_policy": true, "ttl": "30m" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let limited = answer["auth"]["client_token"].as_str().unwrap().to_owned();
    sign_out(&browser).await;
    sign_in(&browser, &base, &limited).await;
    let limited_cookie: Value = browser
        .cookies()
        .await
        .into_iter()
        .find(|c| c["name"] == "lessor_session")
        .unwrap();
    let expires_in = limited_cookie["expiry"].as_i64().unwrap() - chrono::Utc::now().timestamp();
    assert!(
        (1700..=1800).contains(&expires_in),
        "the session expires with the 30-minute token, not in {expires_in} s"
    );
    browser.goto(&format!("{base}/ui/static-roles")).await;
    browser.wait_for_text(&static_role).await;
    let listed = browser.text_of_page().await;
    assert!(
        !listed.contains(&other_role),
        "the limited token saw {other_role}:\n{listed}"
    );
    browser
        .goto(&format!("{base}/ui/static-roles/{other_role}"))
        .await;
    browser.wait_for_text("Refused").await;
    let refused = browser.text_of_page().await;
    assert!(!refused.contains(&other_user), "{refused}");
    // Its leases view needs sudo on sys/leases/lookup: refused, as on the API.
    browser.goto(&format!("{base}/ui/leases")).await;
    browser.wait_for_text("Refused").await;

    browser.quit().await;
    server.revoke_everything().await;
    server
        .call(
            "DELETE",
            &format!("database/static-roles/{static_role}"),
            None,
        )
        .await;
    server
        .call(
            "DELETE",
            &format!("database/static-roles/{other_role}"),
            None,
        )
        .await;
    server.stop().await;
    drop_pg_users(&[&static_user, &other_user, &admin_user]).await;
}

/// A JWT signed by `key` with the claims Lessor's JWT login checks.
fn service_account_jwt(key: &rcgen::KeyPair, issuer: &str, subject: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": issuer, "aud": "lessor", "sub": subject,
        "iat": now, "nbf": now - 5, "exp": now + 600,
    });
    let signing = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &signing,
    )
    .unwrap()
}

#[tokio::test]
async fn a_jwt_sign_in_gets_the_jwt_role_s_policies_and_a_bad_jwt_is_refused() {
    let server = TestServer::start().await;
    let base = server.base.clone();
    let issuer = "https://issuer.console.test";
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let (status, body) = server
        .call(
            "POST",
            "auth/jwt/config",
            Some(
                json!({ "jwt_validation_pubkeys": [key.public_key_pem()], "bound_issuer": issuer }),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let policy = unique("ui-jwt");
    let (status, body) = server
        .call(
            "PUT",
            &format!("sys/policies/acl/{policy}"),
            Some(json!({ "policy": "path \"auth/token/lookup-self\" { capabilities = [\"read\"] }\npath \"sys/alerts\" { capabilities = [\"read\"] }\n" })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = server
        .call(
            "POST",
            "auth/jwt/role/dashboards",
            Some(json!({
                "role_type": "jwt", "bound_audiences": ["lessor"], "user_claim": "sub",
                "token_policies": [policy], "token_ttl": "10m",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let browser = Browser::start().await;
    let sign_in_with = |jwt: String| {
        let browser = &browser;
        let base = base.clone();
        async move {
            browser.goto(&format!("{base}/ui/login")).await;
            browser.find("#jwt-login").await;
            browser.find("details summary").await.click().await;
            browser
                .find("#jwt-role")
                .await
                .type_text("dashboards")
                .await;
            browser.find("#jwt").await.type_text(&jwt).await;
            browser
                .find("#jwt-login button[type=submit]")
                .await
                .click()
                .await;
        }
    };
    // Signed by another key: refused on the page, no session.
    let stranger = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    sign_in_with(service_account_jwt(
        &stranger,
        issuer,
        "system:serviceaccount:ops:grafana",
    ))
    .await;
    browser.find("#login-error").await;
    browser.wait_for_text("JWT sign-in refused").await;
    assert!(browser
        .cookies()
        .await
        .iter()
        .all(|c| c["name"] != "lessor_session"));

    sign_in_with(service_account_jwt(
        &key,
        issuer,
        "system:serviceaccount:ops:grafana",
    ))
    .await;
    browser.find("nav[aria-label=Main]").await;
    let session = browser
        .cookies()
        .await
        .into_iter()
        .find(|c| c["name"] == "lessor_session")
        .expect("a session after the JWT sign-in");
    let expires_in = session["expiry"].as_i64().unwrap() - chrono::Utc::now().timestamp();
    assert!(
        (500..=600).contains(&expires_in),
        "the session ends with the 10-minute token, not in {expires_in} s"
    );
    // The token's policies: alerts are readable, leases are not.
    browser.goto(&format!("{base}/ui/alerts")).await;
    browser.wait_for_text("No alerts.").await;
    browser.goto(&format!("{base}/ui/leases")).await;
    browser.wait_for_text("Refused").await;

    browser.quit().await;
    server.stop().await;
}
