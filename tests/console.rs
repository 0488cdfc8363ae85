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
mod tls_support;
#[path = "console_support/webdriver.rs"]
mod webdriver;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

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

/// Drops the PostgreSQL users a test makes when the test ends, also when it fails part-way (a
/// panic skips the test's own clean-up): the users named, and every user whose name starts with
/// one of the prefixes (the dynamic users of a test's roles, `v-<role>-...`). After a passing
/// test there is nothing left to drop.
struct PgCleanup {
    users: Vec<String>,
    prefixes: Vec<String>,
}

impl PgCleanup {
    fn new(prefixes: &[String]) -> Self {
        Self {
            users: vec![],
            prefixes: prefixes.to_vec(),
        }
    }
}

impl Drop for PgCleanup {
    fn drop(&mut self) {
        let users = std::mem::take(&mut self.users);
        let prefixes = std::mem::take(&mut self.prefixes);
        // Drop cannot await on the test's runtime, which may be unwinding: a runtime of its own.
        let cleaned = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let admin = pg_admin().await;
                let mut names = users;
                for prefix in &prefixes {
                    for row in admin
                        .query(
                            "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1)",
                            &[prefix],
                        )
                        .await
                        .unwrap()
                    {
                        names.push(row.get(0));
                    }
                }
                for name in names {
                    admin
                        .batch_execute(&format!("DROP ROLE IF EXISTS \"{name}\""))
                        .await
                        .unwrap();
                }
            })
        })
        .join();
        if cleaned.is_err() && !std::thread::panicking() {
            panic!("dropping the test's PostgreSQL users failed");
        }
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
    let mut cleanup = PgCleanup::new(&[format!("v-{role}-")]);
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
    cleanup
        .users
        .extend([static_user.clone(), other_user.clone()]);
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
    // Plain HTTP here: a Secure cookie would never be sent back (TLS: see the test below).
    assert_eq!(session["secure"], json!(false), "{session}");
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

    // ---- edit the role: a new schedule with a window, then the window taken away
    browser
        .goto(&format!("{base}/ui/static-roles/{static_role}/edit"))
        .await;
    assert_eq!(
        browser
            .find("#name")
            .await
            .attribute("readonly")
            .await
            .as_deref(),
        Some("true"),
        "the name of an existing role is not editable"
    );
    let schedule = browser.find("#rotation_schedule").await;
    schedule.clear().await;
    schedule.type_text("30 4 * * *").await;
    let window = browser.find("#rotation_window").await;
    window.clear().await;
    window.type_text("2h").await;
    browser.wait_for_text("04:30:00 UTC").await;
    browser
        .find("#static-role-form button[type=submit]")
        .await
        .click()
        .await;
    browser.wait_for_text("The static role was saved.").await;
    for time in browser.find_all("#next-times li").await {
        let text = time.text().await;
        assert!(text.contains("04:30:00 UTC"), "{text}");
    }
    let (_, stored) = server
        .call("GET", &format!("database/static-roles/{static_role}"), None)
        .await;
    assert_eq!(stored["data"]["rotation_schedule"], json!("30 4 * * *"));
    assert_eq!(stored["data"]["rotation_window"], json!(7200));
    assert_eq!(stored["data"]["username"], json!(static_user));
    browser
        .goto(&format!("{base}/ui/static-roles/{static_role}/edit"))
        .await;
    let window = browser.find("#rotation_window").await;
    assert_eq!(
        window.property("value").await,
        "2h",
        "the form shows the window"
    );
    window.clear().await;
    browser
        .find("#static-role-form button[type=submit]")
        .await
        .click()
        .await;
    browser.wait_for_text("The static role was saved.").await;
    let (_, stored) = server
        .call("GET", &format!("database/static-roles/{static_role}"), None)
        .await;
    assert_eq!(
        stored["data"]["rotation_window"].as_u64().unwrap_or(0),
        0,
        "the emptied window was kept: {stored}"
    );
    assert_eq!(stored["data"]["rotation_schedule"], json!("30 4 * * *"));

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
    cleanup.users.push(admin_user.clone());
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
    // The connections view asks every database whether it answers: Lessor reaches pgadm with
    // the password only it knows now.
    assert_eq!(
        browser
            .find("td.reachability[data-connection='pgadm'] .status")
            .await
            .text()
            .await,
        "Reachable"
    );
    // Reconnecting (database/reset) reopens the pool, which still answers.
    browser
        .find("form[action='/ui/connections/pgadm/reset'] button")
        .await
        .click()
        .await;
    browser
        .wait_for_text("closed and reopened with its stored settings")
        .await;
    assert_eq!(
        browser
            .find("td.reachability[data-connection='pgadm'] .status")
            .await
            .text()
            .await,
        "Reachable"
    );

    browser.goto(&format!("{base}/ui/connections")).await;
    browser.wait_for_text("postgresql-database-plugin").await;
    browser
        .screenshot(&screenshot_path(&shots, "connections"))
        .await;
    browser.goto(&format!("{base}/ui/audit")).await;
    browser.wait_for_text("file/").await;

    // ---- phone width: every view reflows, nothing scrolls sideways
    let (_, phone_user, _) = server.creds(&role).await;
    browser.set_window_size(380, 844).await;
    for view in [
        "/ui/".to_owned(),
        format!("/ui/leases?role={role}"),
        "/ui/roles".to_owned(),
        "/ui/static-roles".to_owned(),
        format!("/ui/static-roles/{static_role}"),
        "/ui/static-roles/new".to_owned(),
        "/ui/connections".to_owned(),
        "/ui/alerts".to_owned(),
        "/ui/audit".to_owned(),
    ] {
        browser.goto(&format!("{base}{view}")).await;
        browser.find("main h1").await;
        let widths = browser
            .execute(
                "return [document.documentElement.scrollWidth, document.documentElement.clientWidth, window.innerWidth];",
            )
            .await;
        let [scroll, client, inner] = [0, 1, 2].map(|i| widths[i].as_i64().unwrap());
        assert!(inner <= 400, "the window is not phone-wide: {widths}");
        assert!(
            scroll <= client,
            "{view} scrolls sideways at {inner} px: {scroll} px of content in {client} px"
        );
        // Nor does any part of it (a table scrolling within itself is no reflow); the column
        // headers and other text for screen readers only are clipped on purpose.
        let scrolling = browser
            .execute(
                "return [...document.querySelectorAll('main *')]\
                   .filter(e => !e.closest('thead, .sr'))\
                   .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')\
                   .map(e => e.tagName + '.' + e.className);",
            )
            .await;
        assert_eq!(scrolling, json!([]), "{view}: parts scroll sideways");
        match view.as_str() {
            "/ui/static-roles" => {
                browser
                    .screenshot(&screenshot_path(&shots, "static-roles-phone"))
                    .await
            }
            "/ui/connections" => {
                browser
                    .screenshot(&screenshot_path(&shots, "connections-phone"))
                    .await
            }
            leases if leases.starts_with("/ui/leases") => {
                // The row is a card of labelled lines.
                browser.wait_for_text(&phone_user).await;
                let cell = browser
                    .execute(
                        "const td = document.querySelector('table.leases td[data-label=User]'); \
                         return [getComputedStyle(td).display, getComputedStyle(td, '::before').content];",
                    )
                    .await;
                assert_eq!(
                    cell,
                    json!(["block", "\"User: \""]),
                    "not a card of labelled lines"
                );
                browser
                    .screenshot(&screenshot_path(&shots, "leases-phone"))
                    .await
            }
            _ => {}
        }
    }
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
    // Editing a role with a period and saving it unchanged keeps it as it was.
    browser
        .goto(&format!("{base}/ui/static-roles/{other_role}/edit"))
        .await;
    assert_eq!(
        browser
            .find("#rotation_period")
            .await
            .property("value")
            .await,
        "1d"
    );
    browser
        .find("#static-role-form button[type=submit]")
        .await
        .click()
        .await;
    browser.wait_for_text("The static role was saved.").await;
    let (_, stored) = server
        .call("GET", &format!("database/static-roles/{other_role}"), None)
        .await;
    assert_eq!(stored["data"]["rotation_period"], json!(86_400), "{stored}");
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

/// A TCP server that accepts connections and never answers: a database that hangs.
async fn stalled_database() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

/// The backends of the local PostgreSQL that a connection with `application_name` holds.
async fn backends_of(admin: &tokio_postgres::Client, application_name: &str) -> Vec<i32> {
    admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid",
            &[&application_name],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

async fn token_with_policy(server: &TestServer, rules: &str, extra: Value) -> String {
    let policy = unique("ui-policy");
    let (status, body) = server
        .call(
            "PUT",
            &format!("sys/policies/acl/{policy}"),
            Some(json!({ "policy": rules })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let mut request = json!({ "policies": [policy], "no_default_policy": true, "ttl": "30m" });
    for (key, value) in extra.as_object().into_iter().flatten() {
        request[key] = value.clone();
    }
    let (status, answer) = server
        .call("POST", "auth/token/create", Some(request))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["auth"]["client_token"].as_str().unwrap().to_owned()
}

/// The ids of the leases the leases view shows.
async fn lease_ids(browser: &Browser) -> Vec<String> {
    let mut ids = vec![];
    for cell in browser
        .find_all("table.leases tbody tr td[data-label=Lease] code")
        .await
    {
        ids.push(cell.text().await);
    }
    ids
}

/// The text of the status cell of `connection` on the connections view.
async fn reachability_of(browser: &Browser, connection: &str) -> (String, String) {
    let cell = browser
        .find(&format!("td.reachability[data-connection='{connection}']"))
        .await;
    let status = browser
        .find(&format!(
            "td.reachability[data-connection='{connection}'] .status"
        ))
        .await
        .text()
        .await;
    (status, cell.text().await)
}

#[tokio::test]
async fn the_connections_view_shows_which_databases_answer_and_a_stalled_one_cannot_hang_it() {
    // Long target deadlines: a check of a stalled database outlasts the view's wait.
    let server = TestServer::start_with(|settings| {
        settings.target_connect_timeout = Duration::from_secs(20);
    })
    .await;
    let base = server.base.clone();
    let application_name = unique("lessor_ui_check").replace('-', "_");
    let separator = if postgres_url().contains('?') {
        '&'
    } else {
        '?'
    };
    server
        .add_connection(
            "pg",
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": format!("{}{separator}application_name={application_name}", postgres_url()),
                "allowed_roles": "*",
            }),
        )
        .await;
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (stalled_port, stalled) = stalled_database().await;
    for (name, port) in [
        ("down", closed_port),
        ("stalled-a", stalled_port),
        ("stalled-b", stalled_port),
    ] {
        server
            .add_connection(
                name,
                json!({
                    "plugin_name": "postgresql-database-plugin",
                    "connection_url": format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                    "allowed_roles": "*",
                    "verify_connection": false,
                }),
            )
            .await;
    }

    // ---- the API: a read of the connection, with ?verify=true
    let (status, body) = server
        .call("GET", "database/config/pg?verify=true", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reachability = &body["data"]["reachability"];
    assert_eq!(reachability["reachable"], json!(true), "{body}");
    assert!(reachability["error"].is_null(), "{body}");
    assert!(reachability["checked_at"].is_string(), "{body}");
    let (status, body) = server.call("GET", "database/config/pg", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["data"].get("reachability").is_none(),
        "a plain read checks nothing: {body}"
    );
    let (status, body) = server
        .call("GET", "database/config/down?verify=true", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["reachability"]["reachable"], json!(false));
    let why = body["data"]["reachability"]["error"].as_str().unwrap();
    assert!(why.contains("cannot reach the database"), "{why}");
    let (status, body) = server
        .call("GET", "database/config/pg?verify=yes", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("verify"), "{body}");

    // Side-effect free: checks reuse the pool's connection; a reset (the old "verify now")
    // replaces it.
    let admin = pg_admin().await;
    // The write's own check may still be closing its connection: wait for the pool's one.
    eventually(Duration::from_secs(10), || async {
        backends_of(&admin, &application_name).await.len() == 1
    })
    .await;
    let before = backends_of(&admin, &application_name).await;
    assert_eq!(before.len(), 1, "one pooled connection: {before:?}");
    for _ in 0..3 {
        let (status, body) = server
            .call("GET", "database/config/pg?verify=true", None)
            .await;
        assert_eq!(
            body["data"]["reachability"]["reachable"],
            json!(true),
            "{status} {body}"
        );
    }
    assert_eq!(
        backends_of(&admin, &application_name).await,
        before,
        "a check reconnected"
    );
    let (status, body) = server.call("POST", "database/reset/pg", None).await;
    assert!(status.is_success(), "{body}");
    server
        .call("GET", "database/config/pg?verify=true", None)
        .await;
    let after_reset = eventually(Duration::from_secs(10), || async {
        let now = backends_of(&admin, &application_name).await;
        now.len() == 1 && now != before
    })
    .await;
    assert!(
        after_reset.is_some(),
        "a reset did not reconnect, so the check above proves nothing"
    );

    // Authorized as reading the connection's config: that policy may check, not reset; a token
    // that may read another connection may not check this one.
    let reader = token_with_policy(
        &server,
        "path \"database/config/pg\" { capabilities = [\"read\"] }\n",
        json!({}),
    )
    .await;
    let (status, body) = server
        .call_as(Some(&reader), "GET", "database/config/pg?verify=true", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["reachability"]["reachable"], json!(true));
    let (status, _) = server
        .call_as(Some(&reader), "POST", "database/reset/pg", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let stranger = token_with_policy(
        &server,
        "path \"database/config/down\" { capabilities = [\"read\"] }\n",
        json!({}),
    )
    .await;
    let (status, _) = server
        .call_as(
            Some(&stranger),
            "GET",
            "database/config/pg?verify=true",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The route table documents it: the OpenAPI document has the parameter.
    let (status, document) = server.call("GET", "sys/openapi", None).await;
    assert_eq!(status, StatusCode::OK);
    let read = &document["paths"]["/database/config/{name}"]["get"];
    assert!(
        read["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "verify" && p["in"] == "query"),
        "{read}"
    );
    assert!(
        read["summary"].as_str().unwrap().contains("verify=true"),
        "{read}"
    );

    // ---- the view: every connection checked at once, the stalled ones cost only the wait
    let browser = Browser::start().await;
    sign_in(&browser, &base, ROOT_TOKEN).await;
    let started = Instant::now();
    browser.goto(&format!("{base}/ui/connections")).await;
    let took = started.elapsed();
    browser.find("td.reachability").await;
    assert!(
        took < Duration::from_secs(8),
        "the view waited {took:?} for its checks"
    );
    let (status, cell) = reachability_of(&browser, "pg").await;
    assert_eq!(status, "Reachable", "{cell}");
    let (status, cell) = reachability_of(&browser, "down").await;
    assert_eq!(status, "Unreachable", "{cell}");
    assert!(cell.contains("cannot reach the database"), "{cell}");
    // Checked concurrently: both stalled databases were asked, neither answered in time.
    for stalled in ["stalled-a", "stalled-b"] {
        let (status, cell) = reachability_of(&browser, stalled).await;
        assert_eq!(status, "No answer within 3 s", "{cell}");
    }

    if let Some(shots) = std::env::var_os("LESSOR_CONSOLE_SCREENSHOTS") {
        browser
            .screenshot(&screenshot_path(
                std::path::Path::new(&shots),
                "connections-unreachable",
            ))
            .await;
    }

    // A token that may read one connection sees its status and is refused the others'.
    sign_out(&browser).await;
    let one_reader = token_with_policy(
        &server,
        "path \"database/config/\" { capabilities = [\"list\"] }\n\
         path \"database/config/pg\" { capabilities = [\"read\"] }\n\
         path \"auth/token/lookup-self\" { capabilities = [\"read\"] }\n",
        json!({}),
    )
    .await;
    sign_in(&browser, &base, &one_reader).await;
    browser.goto(&format!("{base}/ui/connections")).await;
    let (status, _) = reachability_of(&browser, "pg").await;
    assert_eq!(status, "Reachable");
    let down = browser
        .find("td.reachability[data-connection='down']")
        .await
        .text()
        .await;
    assert!(down.contains("Refused"), "{down}");

    browser.quit().await;
    stalled.abort();
    server.stop().await;
}

#[tokio::test]
async fn the_leases_view_pages_and_finds_an_owner_by_display_name() {
    let server = TestServer::start().await;
    server.add_postgres(CONN).await;
    let base = server.base.clone();
    let role = unique("ui-page");
    server
        .write_role(
            &role,
            json!({ "db_name": CONN, "creation_statements": [PG_LOGIN], "default_ttl": "1h" }),
        )
        .await;
    let _cleanup = PgCleanup::new(&[format!("v-{role}-")]);
    let ci = token_with_policy(
        &server,
        &format!("path \"database/creds/{role}\" {{ capabilities = [\"read\"] }}\n"),
        json!({ "display_name": "ci-runner" }),
    )
    .await;
    // More leases than a page (25): 26 of the CI token's, 2 of root's.
    let mut ci_leases = BTreeSet::new();
    for _ in 0..26 {
        let (status, body) = server
            .call_as(Some(&ci), "GET", &format!("database/creds/{role}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        ci_leases.insert(body["lease_id"].as_str().unwrap().to_owned());
    }
    let mut root_leases = BTreeSet::new();
    for _ in 0..2 {
        root_leases.insert(server.creds(&role).await.0);
    }

    // ---- the API: the listing takes owner_display_name, and the lookup shows it
    let some_ci_lease = ci_leases.iter().next().unwrap().clone();
    let (status, looked_up) = server
        .call(
            "PUT",
            "sys/leases/lookup",
            Some(json!({ "lease_id": some_ci_lease })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{looked_up}");
    assert_eq!(
        looked_up["data"]["owner_display_name"],
        json!("token-ci-runner")
    );
    let (status, listed) = server
        .call(
            "LIST",
            &format!("sys/leases/lookup/database/creds/{role}/?owner_display_name=token-ci-runner"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let keys: BTreeSet<String> = listed["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| format!("database/creds/{role}/{}", k.as_str().unwrap()))
        .collect();
    assert_eq!(keys, ci_leases);
    let (status, levels) = server
        .call(
            "LIST",
            "sys/leases/lookup/database/creds/?owner_display_name=token-ci-runner",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{levels}");
    assert_eq!(levels["data"]["keys"], json!([format!("{role}/")]));
    let (status, _) = server
        .call(
            "LIST",
            "sys/leases/lookup/database/creds/?owner_display_name=nobody",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nobody holds a lease");
    let (status, body) = server
        .call(
            "LIST",
            "sys/leases/lookup/database/creds/?owner_display_name=a%0Ab",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("owner_display_name"), "{body}");

    // ---- the view: pages of 25, next and previous
    let browser = Browser::start().await;
    sign_in(&browser, &base, ROOT_TOKEN).await;
    browser.goto(&format!("{base}/ui/leases?role={role}")).await;
    browser.find("table.leases").await;
    let first = lease_ids(&browser).await;
    assert_eq!(first.len(), 25, "a page holds 25 leases");
    assert!(browser.try_find("a[rel=prev]").await.is_none());
    browser.find("a[rel=next]").await.click().await;
    browser.wait_for_text("Page 2").await;
    let second = lease_ids(&browser).await;
    assert_eq!(second.len(), 3, "{second:?}");
    assert!(browser.try_find("a[rel=next]").await.is_none());
    browser.find("a[rel=prev]").await;
    let seen: BTreeSet<String> = first.iter().chain(&second).cloned().collect();
    let all: BTreeSet<String> = ci_leases.union(&root_leases).cloned().collect();
    assert_eq!(seen, all, "every lease once, on one page or the other");

    // ---- filtered by the owner's display name, typed into the form
    browser.goto(&format!("{base}/ui/leases")).await;
    browser
        .find("input[name=owner_name]")
        .await
        .type_text("token-ci-runner")
        .await;
    browser
        .find("form.filters button[type=submit]")
        .await
        .click()
        .await;
    browser.wait_for_text("Page 1").await;
    assert!(browser
        .current_url()
        .await
        .contains("owner_name=token-ci-runner"));
    let first = lease_ids(&browser).await;
    assert_eq!(first.len(), 25);
    for name in browser.find_all("td.owner .owner-name").await {
        assert_eq!(name.text().await, "token-ci-runner");
    }
    browser.find("a[rel=next]").await.click().await;
    browser.wait_for_text("Page 2").await;
    let second = lease_ids(&browser).await;
    let seen: BTreeSet<String> = first.into_iter().chain(second).collect();
    assert_eq!(seen, ci_leases, "exactly the CI token's leases");
    browser
        .goto(&format!("{base}/ui/leases?owner_name=root"))
        .await;
    browser.find("table.leases").await;
    let seen: BTreeSet<String> = lease_ids(&browser).await.into_iter().collect();
    assert_eq!(seen, root_leases);
    browser
        .goto(&format!("{base}/ui/leases?owner_name=nobody"))
        .await;
    browser.wait_for_text("No lease matches").await;

    browser.quit().await;
    server.revoke_everything().await;
    server.stop().await;
}

#[tokio::test]
async fn repeated_denials_raise_an_alert_that_the_console_shows() {
    let server = TestServer::start().await;
    let base = server.base.clone();
    // More refusals from one address than the denials rule allows (10 in its window).
    for _ in 0..12 {
        let (status, _) = server
            .call_as(Some("not-a-token"), "GET", "database/roles/app", None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let raised = eventually(Duration::from_secs(10), || async {
        let (_, body) = server.call("GET", "sys/alerts", None).await;
        body["data"]["alerts"]
            .as_array()
            .is_some_and(|alerts| alerts.iter().any(|a| a["rule"] == "denials"))
    })
    .await;
    assert!(raised.is_some(), "no denials alert was raised");

    let browser = Browser::start().await;
    sign_in(&browser, &base, ROOT_TOKEN).await;
    browser.goto(&format!("{base}/ui/alerts")).await;
    let rules = browser.find_all("td[data-label=Rule]").await;
    let mut found = false;
    for (i, rule) in rules.iter().enumerate() {
        if rule.text().await == "denials" {
            let from = browser.find_all("td[data-label=From]").await;
            assert_eq!(from[i].text().await, "127.0.0.1");
            found = true;
        }
    }
    assert!(found, "the alerts view does not list the denials alert");
    assert!(browser.try_find("p.empty").await.is_none());
    let shots = std::env::var_os("LESSOR_CONSOLE_SCREENSHOTS").map(std::path::PathBuf::from);
    if let Some(shots) = &shots {
        browser.screenshot(&screenshot_path(shots, "alerts")).await;
    }
    // The overview lists it among the alerts of the last 24 hours.
    browser.goto(&format!("{base}/ui/")).await;
    let recent = browser
        .find("section[aria-labelledby=alerts24]")
        .await
        .text()
        .await;
    assert!(recent.contains("denials"), "{recent}");
    assert!(!recent.contains("No alerts"), "{recent}");

    browser.quit().await;
    server.stop().await;
}

#[tokio::test]
async fn over_tls_the_console_s_cookies_are_secure() {
    let server = tls_support::TlsServer::start(None).await;
    let base = server.base.clone();
    assert!(base.starts_with("https://"));
    // The sign-in form's double-submit cookie, as a client that trusts the test CA sees it.
    let form = server
        .http
        .get(format!("{base}/ui/login"))
        .send()
        .await
        .unwrap();
    let login_cookie = form.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(login_cookie.starts_with("lessor_login="), "{login_cookie}");
    assert!(login_cookie.ends_with("; Secure"), "{login_cookie}");

    let browser = Browser::start_accepting_test_certificates().await;
    sign_in(&browser, &base, ROOT_TOKEN).await;
    assert!(browser.current_url().await.starts_with("https://"));
    let cookies = browser.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "lessor_session")
        .unwrap_or_else(|| panic!("no session cookie over TLS: {cookies:?}"));
    assert_eq!(session["secure"], json!(true), "{session}");
    assert_eq!(session["httpOnly"], json!(true), "{session}");
    assert_eq!(session["sameSite"], json!("Strict"), "{session}");
    // The session works over TLS: a view that needs it.
    browser.goto(&format!("{base}/ui/audit")).await;
    browser.find("main h1").await;
    assert_eq!(browser.find("main h1").await.text().await, "Audit devices");

    browser.quit().await;
    server.stop().await;
}
