//! Static roles and admin credential rotation against the real PostgreSQL, through the HTTP API:
//! import, on-demand, period and cron rotation; the alternating strategy with a client logging in
//! across rotations; crashes between the phases of a rotation; failed rotations retried without
//! blocking others; rotate-root with a dedicated admin; and nothing readable at rest.

mod common;
mod rotation_support;

use std::time::{Duration, Instant};

use chrono::{Datelike, Timelike, Utc};
use common::*;
use lessor::rotation::RotationFault;
use reqwest::StatusCode;
use rotation_support::*;
use serde_json::json;

const CONN: &str = "pg";

/// Creates a login role with a known password, as a DBA's existing user would be.
async fn pg_user(tag: &str) -> (String, String) {
    let user = unique(&format!("lessor_st_{tag}")).replace('-', "_");
    let password = format!("Initial-{}-pass1", unique("x").replace('-', ""));
    pg_admin()
        .await
        .batch_execute(&format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'"))
        .await
        .unwrap();
    (user, password)
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

async fn logs_in(user: &str, password: &str) -> bool {
    pg_login(user, password).await.is_ok()
}

#[tokio::test]
async fn the_machine_checks_postgres_passwords() {
    assert_postgres_checks_passwords().await;
}

#[tokio::test]
async fn import_rotation_then_rotate_role_refuses_the_old_password_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let lessor = Lessor::start_in(dir.path()).await;
    lessor.add_postgres(CONN).await;
    let (user, initial) = pg_user("single").await;
    let role = unique("st-single");

    // The body hvac's create_static_role sends.
    let (status, body) = lessor
        .call(
            "POST",
            &format!("database/static-roles/{role}"),
            Some(json!({ "db_name": CONN, "username": user, "rotation_statements": [], "rotation_period": 86400 })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(
        !logs_in(&user, &initial).await,
        "the import rotation replaced the DBA's password"
    );

    let (status, creds) = lessor
        .call("GET", &format!("database/static-creds/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{creds}");
    let data = &creds["data"];
    assert_eq!(data["username"], json!(user));
    assert_eq!(data["rotation_period"], json!(86400));
    let ttl = data["ttl"].as_i64().unwrap();
    assert!((86_300..=86_400).contains(&ttl), "{creds}");
    let rotated_at = time_of(&data["last_vault_rotation"]);
    assert!((Utc::now() - rotated_at).num_seconds() < 60, "{creds}");
    let first = data["password"].as_str().unwrap().to_owned();
    assert_eq!(first.len(), 32);
    let session = pg_login(&user, &first)
        .await
        .expect("the imported password logs in");

    // Single-user strategy: the held password stops working the moment the rotation lands.
    lessor.rotate(&role).await;
    let (_, second) = lessor.static_creds(&role).await;
    assert_ne!(first, second);
    assert!(
        !logs_in(&user, &first).await,
        "the old password is refused right after a single-user rotation"
    );
    assert!(logs_in(&user, &second).await, "the new password logs in");
    session
        .simple_query("SELECT 1")
        .await
        .expect("sessions opened before a rotation are not cut");

    let read = lessor.read_static(&role).await;
    assert_eq!(read["db_name"], json!(CONN));
    assert_eq!(read["username"], json!(user));
    assert_eq!(read["current_username"], json!(user));
    assert_eq!(read["credential_type"], json!("password"));
    assert_eq!(read["rotation_in_progress"], json!(false));
    let history = read["rotation_history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{read}");
    assert_eq!(
        (
            history[0]["trigger"].as_str(),
            history[0]["outcome"].as_str()
        ),
        (Some("manual"), Some("rotated"))
    );
    assert_eq!(
        (
            history[1]["trigger"].as_str(),
            history[1]["outcome"].as_str()
        ),
        (Some("import"), Some("rotated"))
    );
    let next = time_of(&read["next_vault_rotation"]);
    let ahead = (next - Utc::now()).num_seconds();
    assert!(
        (86_300..=86_400).contains(&ahead),
        "the period restarts at a manual rotation: {read}"
    );

    // LIST as a method and as ?list=true.
    for (method, path) in [
        ("LIST", "database/static-roles".to_owned()),
        ("GET", "database/static-roles?list=true".to_owned()),
    ] {
        let (status, listed) = lessor.call(method, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {listed}");
        assert!(
            listed["data"]["keys"]
                .as_array()
                .unwrap()
                .contains(&json!(role)),
            "{listed}"
        );
    }

    // Deleting the static role leaves the user and its password alone.
    let (status, _) = lessor
        .call("DELETE", &format!("database/static-roles/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = lessor
        .call("GET", &format!("database/static-creds/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        logs_in(&user, &second).await,
        "delete does not touch the database user"
    );

    assert_logs_free_of_all(&[ROOT_TOKEN]);
    assert_logs_free_of_all(&[&first, &second]);
    drop(session);
    drop_pg_users(&[&user]).await;
}

#[tokio::test]
async fn rotation_by_period_every_five_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let lessor = Lessor::start_in(dir.path()).await;
    lessor.add_postgres(CONN).await;
    let (user, _) = pg_user("period").await;
    let role = unique("st-period");
    lessor
        .write_static(
            &role,
            json!({ "db_name": CONN, "username": user, "rotation_period": "5s" }),
        )
        .await;
    let (_, first) = lessor.static_creds(&role).await;
    let imported_at = time_of(&lessor.read_static(&role).await["last_vault_rotation"]);

    let read = wait_for_history(&lessor, &role, Duration::from_secs(20), |h| {
        h["trigger"] == "schedule"
    })
    .await;
    let latest = &read["rotation_history"][0];
    assert_eq!(latest["outcome"], json!("rotated"), "{read}");
    let rotated_at = time_of(&read["last_vault_rotation"]);
    let gap = (rotated_at - imported_at).num_milliseconds();
    assert!(
        (4_900..12_000).contains(&gap),
        "rotated {gap} ms after the import, period 5 s"
    );
    let (_, second) = lessor.static_creds(&role).await;
    assert_ne!(first, second);
    assert!(!logs_in(&user, &first).await, "the old password is refused");
    assert!(logs_in(&user, &second).await, "the new password logs in");
    drop_pg_users(&[&user]).await;
}

#[tokio::test]
async fn rotation_by_cron_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let lessor = Lessor::start_in(dir.path()).await;
    lessor.add_postgres(CONN).await;
    let (user, _) = pg_user("cron").await;

    // A weekly maintenance schedule: the next rotation is Sunday 03:00 UTC.
    let weekly = unique("st-weekly");
    lessor
        .write_static(
            &weekly,
            json!({ "db_name": CONN, "username": user, "rotation_schedule": "0 3 * * SUN", "rotation_window": "2h" }),
        )
        .await;
    let read = lessor.read_static(&weekly).await;
    let next = time_of(&read["next_vault_rotation"]);
    assert_eq!(
        (next.weekday(), next.hour(), next.minute(), next.second()),
        (chrono::Weekday::Sun, 3, 0, 0),
        "{read}"
    );
    assert!((next - Utc::now()).num_days() <= 7);
    assert_eq!(read["rotation_window"], json!(7200));
    assert!(read.get("rotation_period").is_none(), "{read}");
    let (status, creds) = lessor
        .call("GET", &format!("database/static-creds/{weekly}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(creds["data"]["rotation_schedule"], json!("0 3 * * SUN"));
    assert_eq!(creds["data"]["rotation_window"], json!(7200));
    // A new pattern keeps the window; 0 removes it.
    lessor
        .write_static(&weekly, json!({ "rotation_schedule": "30 4 * * SAT" }))
        .await;
    let read = lessor.read_static(&weekly).await;
    assert_eq!(
        (
            read["rotation_schedule"].as_str(),
            read["rotation_window"].as_u64()
        ),
        (Some("30 4 * * SAT"), Some(7200))
    );
    let next = time_of(&read["next_vault_rotation"]);
    assert_eq!(
        (next.weekday(), next.hour(), next.minute()),
        (chrono::Weekday::Sat, 4, 30),
        "{read}"
    );
    lessor
        .write_static(&weekly, json!({ "rotation_window": 0 }))
        .await;
    assert!(lessor
        .read_static(&weekly)
        .await
        .get("rotation_window")
        .is_none());
    let (status, _) = lessor
        .call("DELETE", &format!("database/static-roles/{weekly}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // A six-field (seconds) schedule fires within seconds, on its occurrences.
    let role = unique("st-cron");
    lessor
        .write_static(
            &role,
            json!({ "db_name": CONN, "username": user, "rotation_schedule": "*/3 * * * * *" }),
        )
        .await;
    let (_, first) = lessor.static_creds(&role).await;
    let read = wait_for_history(&lessor, &role, Duration::from_secs(15), |h| {
        h["trigger"] == "schedule"
    })
    .await;
    assert_eq!(
        read["rotation_history"][0]["outcome"],
        json!("rotated"),
        "{read}"
    );
    let next = time_of(&read["next_vault_rotation"]);
    assert_eq!(
        (next.second() % 3, next.nanosecond()),
        (0, 0),
        "the next rotation is an occurrence: {read}"
    );
    let (_, second) = lessor.static_creds(&role).await;
    assert_ne!(first, second);
    assert!(
        logs_in(&user, &second).await || {
            // A further occurrence may have rotated again in between; the current one must log in.
            let (_, third) = lessor.static_creds(&role).await;
            logs_in(&user, &third).await
        }
    );
    assert!(!logs_in(&user, &first).await);
    let (status, _) = lessor
        .call("DELETE", &format!("database/static-roles/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    drop_pg_users(&[&user]).await;
}

#[tokio::test]
async fn alternating_users_keep_a_client_logged_in_across_three_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let lessor = Lessor::start_in(dir.path()).await;
    lessor.add_postgres(CONN).await;
    let (a, _) = pg_user("alt_a").await;
    let (b, _) = pg_user("alt_b").await;
    let role = unique("st-alt");
    lessor
        .write_static(
            &role,
            json!({ "db_name": CONN, "username": a, "alternate_username": b, "rotation_period": "1h" }),
        )
        .await;

    // The previous credentials keep working until the rotation after.
    let (u1, p1) = lessor.static_creds(&role).await;
    assert_eq!(u1, a);
    lessor.rotate(&role).await;
    let (u2, p2) = lessor.static_creds(&role).await;
    assert_eq!(u2, b, "the user not in use was rotated and became current");
    assert!(
        logs_in(&u1, &p1).await,
        "the previous credentials still log in"
    );
    assert!(logs_in(&u2, &p2).await);
    lessor.rotate(&role).await;
    let (u3, p3) = lessor.static_creds(&role).await;
    assert_eq!(u3, a);
    assert_ne!(p3, p1);
    assert!(
        !logs_in(&u1, &p1).await,
        "two rotations later the first credentials are gone"
    );
    assert!(
        logs_in(&u2, &p2).await,
        "the previous credentials still log in"
    );
    assert!(logs_in(&u3, &p3).await);

    // A client that re-reads static-creds now and then and logs in continuously.
    let outcome = log_in_across_rotations(&lessor, &role, 3, |user, password| async move {
        pg_login(&user, &password)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    assert_eq!(outcome.failed, 0, "no login failed across the rotations");
    assert!(
        outcome.ok >= 20,
        "the client kept logging in ({})",
        outcome.ok
    );
    assert!(
        outcome.users.len() >= 4,
        "the client followed the three rotations: {:?}",
        outcome.users
    );

    let read = lessor.read_static(&role).await;
    let history = read["rotation_history"].as_array().unwrap();
    assert_eq!(history.len(), 6, "import + 5 manual rotations: {read}");
    let users: Vec<&str> = history
        .iter()
        .map(|h| h["username"].as_str().unwrap())
        .collect();
    assert!(
        users.windows(2).all(|w| w[0] != w[1]),
        "the users take turns: {users:?}"
    );
    drop_pg_users(&[&a, &b]).await;
}

#[tokio::test]
async fn rotations_missed_while_down_are_caught_up_and_a_passed_window_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (user, _) = pg_user("missed").await;
    let (cron_user, _) = pg_user("window").await;
    let (other_cron_user, _) = pg_user("nowindow").await;
    let (role, windowed, unbounded) = (
        unique("st-missed"),
        unique("st-window"),
        unique("st-nowindow"),
    );
    {
        let lessor = Lessor::start_in(dir.path()).await;
        lessor.add_postgres(CONN).await;
        lessor
            .write_static(
                &role,
                json!({ "db_name": CONN, "username": user, "rotation_period": "5s" }),
            )
            .await;
        lessor.stop().await;
    }
    // Down for longer than the period: the rotation is due the moment Lessor is back.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let lessor = Lessor::start_in(dir.path()).await;
    let restarted = Instant::now();
    wait_for_history(&lessor, &role, Duration::from_secs(10), |h| {
        h["trigger"] == "schedule"
    })
    .await;
    let took = restarted.elapsed();
    assert!(
        took < Duration::from_millis(3500),
        "the missed rotation ran {took:?} after the restart, not a period later"
    );
    let (_, password) = lessor.static_creds(&role).await;
    assert!(
        logs_in(&user, &password).await
            || logs_in(&user, &lessor.static_creds(&role).await.1).await
    );

    // Cron roles whose occurrence was missed three hours ago: with a 2 h window it is skipped to
    // the next occurrence; without a window it is caught up.
    lessor
        .write_static(
            &windowed,
            json!({ "db_name": CONN, "username": cron_user, "rotation_schedule": "0 3 * * *", "rotation_window": "2h" }),
        )
        .await;
    lessor
        .write_static(
            &unbounded,
            json!({ "db_name": CONN, "username": other_cron_user, "rotation_schedule": "0 3 * * *" }),
        )
        .await;
    let three_hours_ago = (Utc::now() - chrono::Duration::hours(3)).timestamp_millis();
    for name in [&windowed, &unbounded] {
        sqlx::query(
            "UPDATE static_roles SET scheduled_at = ?, next_rotation_at = ? WHERE name = ?",
        )
        .bind(three_hours_ago)
        .bind(three_hours_ago)
        .bind(name)
        .execute(lessor.state.store.sqlite_pool().unwrap())
        .await
        .unwrap();
    }
    lessor.state.rotation.wake().notify_one();
    let read = wait_for_history(&lessor, &windowed, Duration::from_secs(10), |h| {
        h["outcome"] == "skipped"
    })
    .await;
    assert!(
        read["rotation_history"][0]["error"]
            .as_str()
            .unwrap()
            .contains("rotation window"),
        "{read}"
    );
    let next = time_of(&read["next_vault_rotation"]);
    assert_eq!(
        (next.hour(), next.minute()),
        (3, 0),
        "waits for the next occurrence: {read}"
    );
    assert!(next > Utc::now());
    let read = wait_for_history(&lessor, &unbounded, Duration::from_secs(10), |h| {
        h["trigger"] == "schedule"
    })
    .await;
    assert_eq!(
        read["rotation_history"][0]["outcome"],
        json!("rotated"),
        "{read}"
    );
    lessor.stop().await;
    drop_pg_users(&[&user, &cron_user, &other_cron_user]).await;
}

/// Crashes a rotation at `point`, checks that the store still holds a password that logs in,
/// restarts Lessor on the same files and checks that the rotation was resolved.
async fn crash_static_rotation_then_restart(point: RotationFault) {
    let dir = tempfile::tempdir().unwrap();
    let lessor = Lessor::start_in(dir.path()).await;
    lessor.add_postgres(CONN).await;
    let (user, _) = pg_user("crash").await;
    let role = unique("st-crash");
    lessor
        .write_static(
            &role,
            json!({ "db_name": CONN, "username": user, "rotation_period": "1h" }),
        )
        .await;
    let (_, before) = lessor.static_creds(&role).await;

    lessor.state.rotation.inject_fault(Some(point));
    let (status, body) = lessor
        .call("POST", &format!("database/rotate-role/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(
        lessor.read_static(&role).await["rotation_in_progress"],
        json!(true)
    );

    let stored = lessor
        .state
        .rotation
        .stored_static_passwords(&role)
        .await
        .unwrap();
    let mut working = Vec::new();
    for (slot, stored_user, password) in &stored {
        if logs_in(stored_user, password.expose()).await {
            working.push(*slot);
        }
    }
    eprintln!(
        "{point:?}: stored {:?}, logging in: {working:?}",
        stored.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    assert!(
        !working.is_empty(),
        "after a crash at {point:?} the store holds a password that logs in"
    );
    match point {
        RotationFault::AfterPendingStored => {
            assert_eq!(working, ["current"], "the database was not changed yet")
        }
        _ => assert_eq!(
            working,
            ["pending"],
            "the database took the pending password"
        ),
    }
    lessor.stop().await;

    // Restart: the rotator resolves the pending rotation before anything else.
    let lessor = Lessor::start_in(dir.path()).await;
    let read = wait_for_history(&lessor, &role, Duration::from_secs(15), |h| {
        h["trigger"] == "recovery"
    })
    .await;
    assert_eq!(
        read["rotation_history"][0]["outcome"],
        json!("rotated"),
        "{read}"
    );
    assert_eq!(read["rotation_in_progress"], json!(false), "{read}");
    let (_, after) = lessor.static_creds(&role).await;
    assert!(
        logs_in(&user, &after).await,
        "after recovery from {point:?} the current password logs in"
    );
    assert!(!logs_in(&user, &before).await);
    let stored = lessor
        .state
        .rotation
        .stored_static_passwords(&role)
        .await
        .unwrap();
    assert!(
        stored.iter().all(|s| s.0 != "pending"),
        "nothing is left pending"
    );
    lessor.stop().await;
    drop_pg_users(&[&user]).await;
}

#[tokio::test]
async fn crash_after_the_pending_password_is_stored_loses_nothing() {
    crash_static_rotation_then_restart(RotationFault::AfterPendingStored).await;
}

#[tokio::test]
async fn crash_after_the_password_is_set_loses_nothing() {
    crash_static_rotation_then_restart(RotationFault::AfterPasswordSet).await;
}

#[tokio::test]
async fn crash_after_the_login_check_loses_nothing() {
    crash_static_rotation_then_restart(RotationFault::AfterLoginChecked).await;
}

#[tokio::test]
async fn failed_rotation_retries_with_a_fresh_password_and_does_not_block_others() {
    let dir = tempfile::tempdir().unwrap();
    let lessor = Lessor::start_in(dir.path()).await;
    lessor.add_postgres(CONN).await;
    let (bad_user, _) = pg_user("bad").await;
    let (good_user, _) = pg_user("good").await;
    let (bad, good) = (unique("st-bad"), unique("st-good"));
    lessor
        .write_static(
            &bad,
            json!({ "db_name": CONN, "username": bad_user, "rotation_period": "5s" }),
        )
        .await;
    lessor
        .write_static(
            &good,
            json!({ "db_name": CONN, "username": good_user, "rotation_period": "5s" }),
        )
        .await;
    let (_, known) = lessor.static_creds(&bad).await;

    // Statements that fail at run time: the transaction rolls back, the password stays.
    lessor
        .write_static(
            &bad,
            json!({ "rotation_statements": ["ALTER ROLE \"{{name}}\" WITH PASSWORD '{{password}}'", "SELECT 1/0"] }),
        )
        .await;
    let (status, body) = lessor
        .call("POST", &format!("database/rotate-role/{bad}"), None)
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("division by zero"),
        "{body}"
    );
    assert!(
        logs_in(&bad_user, &known).await,
        "a failed rotation leaves the known password working"
    );
    let (_, still) = lessor.static_creds(&bad).await;
    assert_eq!(still, known);
    let failed_pending = lessor
        .state
        .rotation
        .stored_static_passwords(&bad)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.0 == "pending")
        .expect("the failed attempt's password stays pending until resolved")
        .2;

    // Retried with backoff while the other role keeps rotating on schedule.
    let read = wait_for_history(&lessor, &bad, Duration::from_secs(20), |h| {
        h["outcome"] == "failed" && h["trigger"] == "schedule"
    })
    .await;
    assert!(read["rotation_attempts"].as_i64().unwrap() >= 2, "{read}");
    assert!(
        read["last_error"]
            .as_str()
            .unwrap()
            .contains("division by zero"),
        "{read}"
    );
    wait_for_history(&lessor, &good, Duration::from_secs(20), |h| {
        h["trigger"] == "schedule" && h["outcome"] == "rotated"
    })
    .await;
    assert!(logs_in(&bad_user, &known).await, "still nothing lost");

    // Once the statements are fixed the retry succeeds, with a password no failed attempt used.
    lessor
        .write_static(&bad, json!({ "rotation_statements": [] }))
        .await;
    let fixed = eventually(Duration::from_secs(20), || async {
        lessor.read_static(&bad).await["rotation_history"][0]["outcome"] == "rotated"
    })
    .await;
    assert!(
        fixed.is_some(),
        "the retry succeeded once the statements were fixed"
    );
    let read = lessor.read_static(&bad).await;
    assert_eq!(read["rotation_attempts"], json!(0), "{read}");
    assert_eq!(read["last_error"], json!(null), "{read}");
    let (_, fresh) = lessor.static_creds(&bad).await;
    assert_ne!(fresh, known);
    assert_ne!(
        fresh,
        failed_pending.expose(),
        "a retry uses a fresh password"
    );
    assert!(
        logs_in(&bad_user, &fresh).await || {
            let (_, newer) = lessor.static_creds(&bad).await;
            logs_in(&bad_user, &newer).await
        }
    );
    drop_pg_users(&[&bad_user, &good_user]).await;
}

/// A dedicated admin for rotate-root tests: never the machine's own postgres password.
async fn pg_admin_user() -> (String, String) {
    let user = unique("lessor_adm").replace('-', "_");
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

async fn add_pg_admin_connection(api: &Api, name: &str, admin: &str, password: &str) {
    api.add_connection(
        name,
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres",
            "username": admin,
            "password": password,
            "allowed_roles": "*",
            "root_rotation_statements": [
                "ALTER ROLE \"{{name}}\" WITH PASSWORD '{{password}}'",
                "COMMENT ON ROLE \"{{name}}\" IS 'password rotated by lessor'"
            ],
        }),
    )
    .await;
}

/// Issues a dynamic credential on `role` and proves it logs in; then revokes it.
async fn issue_and_log_in(api: &Api, role: &str) {
    let (status, body) = api
        .call("GET", &format!("database/creds/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (user, password) = (
        body["data"]["username"].as_str().unwrap(),
        body["data"]["password"].as_str().unwrap(),
    );
    assert!(
        logs_in(user, password).await,
        "a credential issued through the connection logs in"
    );
    let (status, answer) = api
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": body["lease_id"] })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
}

#[tokio::test]
async fn rotate_root_replaces_the_admin_password_and_lessor_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let lessor = Lessor::start_in(dir.path()).await;
    lessor.add_postgres(CONN).await;
    let (admin, initial) = pg_admin_user().await;
    let conn = unique("pgadm");
    add_pg_admin_connection(&lessor, &conn, &admin, &initial).await;
    let dynamic = unique("dyn");
    write_role_on(&lessor, &dynamic, &conn).await;
    issue_and_log_in(&lessor, &dynamic).await;

    // hvac's rotate_root_credentials: POST with no body.
    let (status, body) = lessor
        .call("POST", &format!("database/rotate-root/{conn}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(
        !logs_in(&admin, &initial).await,
        "the old admin password is refused"
    );
    let stored = lessor
        .state
        .rotation
        .stored_root_passwords(&conn)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "nothing pending");
    let rotated = stored[0].1.expose().to_owned();
    assert!(
        logs_in(&admin, &rotated).await,
        "the stored admin password is the database's"
    );
    let comment: Option<String> = pg_admin()
        .await
        .query_one(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
            &[&admin],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        comment.as_deref(),
        Some("password rotated by lessor"),
        "root_rotation_statements ran"
    );

    // Lessor reconnects with the new password.
    issue_and_log_in(&lessor, &dynamic).await;
    let (status, body) = lessor
        .call("PUT", &format!("database/rotate-root/{conn}"), None)
        .await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "a second rotation works through the new password: {body}"
    );
    issue_and_log_in(&lessor, &dynamic).await;
    let (_, read) = lessor
        .call("GET", &format!("database/config/{conn}"), None)
        .await;
    assert!(
        !read.to_string().contains(&rotated),
        "the admin password is never shown"
    );

    // A URL that does not take the password from {{password}} cannot be rotated.
    let (status, body) = lessor
        .call("POST", &format!("database/rotate-root/{CONN}"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["errors"][0].as_str().unwrap().contains("{{password}}"),
        "{body}"
    );
    let (status, _) = lessor
        .call("POST", "database/rotate-root/no-such-connection", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    assert_logs_free_of_all(&[&initial, &rotated]);
    lessor.stop().await;
    drop_pg_users(&[&admin]).await;
}

#[tokio::test]
async fn rotate_root_crash_at_each_phase_is_resolved_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, initial) = pg_admin_user().await;
    let conn = unique("pgadm");
    let dynamic = unique("dyn");
    {
        let lessor = Lessor::start_in(dir.path()).await;
        add_pg_admin_connection(&lessor, &conn, &admin, &initial).await;
        write_role_on(&lessor, &dynamic, &conn).await;
        lessor.stop().await;
    }
    for point in [
        RotationFault::AfterPendingStored,
        RotationFault::AfterPasswordSet,
        RotationFault::AfterLoginChecked,
    ] {
        let lessor = Lessor::start_in(dir.path()).await;
        lessor.state.rotation.inject_fault(Some(point));
        let (status, body) = lessor
            .call("POST", &format!("database/rotate-root/{conn}"), None)
            .await;
        assert_eq!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{point:?}: {body}"
        );
        let stored = lessor
            .state
            .rotation
            .stored_root_passwords(&conn)
            .await
            .unwrap();
        assert_eq!(stored.len(), 2, "{point:?}: current and pending are stored");
        let mut working = Vec::new();
        for (slot, password) in &stored {
            if logs_in(&admin, password.expose()).await {
                working.push(*slot);
            }
        }
        assert_eq!(
            working.len(),
            1,
            "{point:?}: exactly one stored admin password logs in: {working:?}"
        );
        lessor.stop().await;

        let lessor = Lessor::start_in(dir.path()).await;
        let resolved = eventually(Duration::from_secs(15), || async {
            lessor
                .state
                .rotation
                .stored_root_passwords(&conn)
                .await
                .unwrap()
                .len()
                == 1
        })
        .await;
        assert!(
            resolved.is_some(),
            "{point:?}: the pending admin password was resolved at start"
        );
        let stored = lessor
            .state
            .rotation
            .stored_root_passwords(&conn)
            .await
            .unwrap();
        assert!(
            logs_in(&admin, stored[0].1.expose()).await,
            "{point:?}: the stored admin password logs in"
        );
        issue_and_log_in(&lessor, &dynamic).await;
        lessor.stop().await;
    }
    drop_pg_users(&[&admin]).await;
}

#[tokio::test]
async fn no_password_is_readable_in_the_store_files() {
    let dir = tempfile::tempdir().unwrap();
    let lessor = Lessor::start_in(dir.path()).await;
    let (admin, admin_initial) = pg_admin_user().await;
    let conn = unique("pgadm");
    add_pg_admin_connection(&lessor, &conn, &admin, &admin_initial).await;
    let (user, initial) = pg_user("sealed").await;
    let (alt, _) = pg_user("sealed_alt").await;
    let role = unique("st-sealed");
    lessor
        .write_static(
            &role,
            json!({ "db_name": conn, "username": user, "alternate_username": alt, "rotation_period": "1h" }),
        )
        .await;
    let mut secrets = vec![admin_initial.clone(), initial.clone()];
    for _ in 0..3 {
        secrets.push(lessor.static_creds(&role).await.1);
        lessor.rotate(&role).await;
    }
    secrets.push(lessor.static_creds(&role).await.1);
    for _ in 0..2 {
        let (status, body) = lessor
            .call("POST", &format!("database/rotate-root/{conn}"), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        for (_, password) in lessor
            .state
            .rotation
            .stored_root_passwords(&conn)
            .await
            .unwrap()
        {
            secrets.push(password.expose().to_owned());
        }
    }
    // Also an operator-given password (skip_import_rotation + password), stored as is.
    let (given_user, given) = pg_user("given").await;
    let given_role = unique("st-given");
    lessor
        .write_static(
            &given_role,
            json!({ "db_name": conn, "username": given_user, "rotation_period": "1h", "skip_import_rotation": true, "password": given }),
        )
        .await;
    assert_eq!(lessor.static_creds(&given_role).await.1, given);
    secrets.push(given.clone());
    secrets.sort();
    secrets.dedup();
    assert!(secrets.len() >= 8);

    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    // While running (recent writes sit in the WAL) and after a clean stop (checkpointed).
    assert_store_files_free_of(dir.path(), &refs, &role);
    lessor.stop().await;
    assert_store_files_free_of(dir.path(), &refs, &role);
    assert_logs_free_of_all(&refs);
    drop_pg_users(&[&user, &alt, &given_user, &admin]).await;
}

#[tokio::test]
async fn skip_import_rotation_leaves_the_password_until_the_first_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let lessor = Lessor::start_in(dir.path()).await;
    lessor.add_postgres(CONN).await;
    let (user, initial) = pg_user("skip").await;
    let role = unique("st-skip");
    let (status, body) = lessor
        .call(
            "POST",
            &format!("database/static-roles/{role}"),
            Some(json!({ "db_name": CONN, "username": user, "rotation_period": "1h", "skip_import_rotation": true })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a warning says there is no known password yet: {body}"
    );
    assert!(
        body["warnings"][0]
            .as_str()
            .unwrap()
            .contains("no known password"),
        "{body}"
    );
    assert!(
        logs_in(&user, &initial).await,
        "the DBA's password is untouched"
    );
    let (status, body) = lessor
        .call("GET", &format!("database/static-creds/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("skip_import_rotation"),
        "{body}"
    );
    lessor.rotate(&role).await;
    let (_, password) = lessor.static_creds(&role).await;
    assert!(logs_in(&user, &password).await);
    assert!(!logs_in(&user, &initial).await);

    // A wrong initial password is refused before anything is stored.
    let (other, _) = pg_user("skip_wrong").await;
    let (status, body) = lessor
        .call(
            "POST",
            &format!("database/static-roles/{role}-x"),
            Some(json!({ "db_name": CONN, "username": other, "rotation_period": "1h", "skip_import_rotation": true, "password": "Wrong-password-123" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["errors"][0].as_str().unwrap().starts_with("password"),
        "{body}"
    );
    let (status, _) = lessor
        .call("GET", &format!("database/static-roles/{role}-x"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    drop_pg_users(&[&user, &other]).await;
}

#[tokio::test]
async fn bad_static_roles_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let lessor = Lessor::start_in(dir.path()).await;
    lessor.add_postgres(CONN).await;
    lessor
        .add_connection(
            "pg-narrow",
            json!({ "plugin_name": "postgresql-database-plugin", "connection_url": postgres_url(), "allowed_roles": "only-this-one" }),
        )
        .await;
    let (user, initial) = pg_user("valid").await;
    let role = unique("st-bad-input");
    let cases = [
        (
            json!({ "username": user, "rotation_period": 60 }),
            "db_name",
        ),
        (
            json!({ "db_name": "nope", "username": user, "rotation_period": 60 }),
            "db_name",
        ),
        (
            json!({ "db_name": CONN, "rotation_period": 60 }),
            "username",
        ),
        (
            json!({ "db_name": CONN, "username": "x\"; DROP ROLE postgres; --", "rotation_period": 60 }),
            "username",
        ),
        (
            json!({ "db_name": CONN, "username": "lessor_no_such_user_zz", "rotation_period": 60 }),
            "does not exist",
        ),
        (
            json!({ "db_name": CONN, "username": user }),
            "rotation_period or rotation_schedule",
        ),
        (
            json!({ "db_name": CONN, "username": user, "rotation_period": 60, "rotation_schedule": "0 3 * * *" }),
            "not both",
        ),
        (
            json!({ "db_name": CONN, "username": user, "rotation_period": 4 }),
            "at least 5s",
        ),
        (
            json!({ "db_name": CONN, "username": user, "rotation_period": 60, "rotation_window": "2h" }),
            "rotation_window",
        ),
        (
            json!({ "db_name": CONN, "username": user, "rotation_schedule": "every sunday" }),
            "rotation_schedule",
        ),
        (
            json!({ "db_name": CONN, "username": user, "rotation_schedule": "0 3 * * *", "rotation_window": 60 }),
            "rotation_window",
        ),
        (
            json!({ "db_name": CONN, "username": user, "alternate_username": user, "rotation_period": 60 }),
            "alternate_username",
        ),
        (
            json!({ "db_name": CONN, "username": user, "rotation_period": 60, "rotation_statements": ["ALTER ROLE \"{{nmae}}\""] }),
            "rotation_statements",
        ),
        (
            json!({ "db_name": "pg-narrow", "username": user, "rotation_period": 60 }),
            "allowed_roles",
        ),
        (
            json!({ "db_name": CONN, "username": user, "rotation_period": 60, "password": "Some-pass-123" }),
            "password",
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = lessor
            .call(
                "POST",
                &format!("database/static-roles/{role}"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let message = answer["errors"][0].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
    }
    let (status, _) = lessor
        .call("GET", &format!("database/static-roles/{role}"), None)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no invalid static role was stored"
    );
    assert!(
        logs_in(&user, &initial).await,
        "no refused write touched the user"
    );

    // An existing role's user and connection cannot change.
    lessor
        .write_static(
            &role,
            json!({ "db_name": CONN, "username": user, "rotation_period": 60 }),
        )
        .await;
    let (other, _) = pg_user("other").await;
    let (status, body) = lessor
        .call(
            "POST",
            &format!("database/static-roles/{role}"),
            Some(json!({ "username": other })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Switching from a period to a schedule is an update like any other.
    lessor
        .write_static(&role, json!({ "rotation_schedule": "0 3 * * SUN" }))
        .await;
    let read = lessor.read_static(&role).await;
    assert_eq!(read["rotation_schedule"], json!("0 3 * * SUN"));
    assert!(read.get("rotation_period").is_none(), "{read}");
    for path in ["static-creds", "rotate-role", "static-roles"] {
        let method = if path == "rotate-role" { "POST" } else { "GET" };
        let (status, _) = lessor
            .call(method, &format!("database/{path}/bad%22name"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
    }
    let (status, _) = lessor
        .call("GET", "database/static-creds/no-such-role", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    drop_pg_users(&[&user, &other]).await;
}

/// Runs the `lessor` command against `api`; returns (success, stdout, stderr).
async fn lessor_cli(api: &Api, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_lessor"))
        .args(args)
        .env("LESSOR_ADDR", &api.base)
        .env("LESSOR_TOKEN", ROOT_TOKEN)
        .env_remove("RUST_BACKTRACE")
        .output()
        .await
        .expect("run the lessor binary");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn cli_writes_rotates_and_shows_the_next_rotation_time() {
    let dir = tempfile::tempdir().unwrap();
    let lessor = Lessor::start_in(dir.path()).await;
    lessor.add_postgres(CONN).await;
    let (user, _) = pg_user("cli").await;
    let role = unique("st-cli");
    let (ok, out, err) = lessor_cli(
        &lessor,
        &[
            "static-role",
            "write",
            &role,
            "--connection",
            CONN,
            "--username",
            &user,
            "--schedule",
            "0 3 * * SUN",
            "--window",
            "2h",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    let (ok, out, err) = lessor_cli(&lessor, &["static-role", "read", &role]).await;
    assert!(ok, "{out}{err}");
    let next = lessor.read_static(&role).await["next_vault_rotation"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(out.contains(&format!("next rotation:  {next}")), "{out}");
    assert!(
        out.contains("cron \"0 3 * * SUN\" (UTC), within 2h"),
        "{out}"
    );
    assert!(out.contains("import    rotated"), "{out}");

    let (ok, out, err) = lessor_cli(&lessor, &["rotate", &role]).await;
    assert!(ok, "{out}{err}");
    let (ok, out, err) =
        lessor_cli(&lessor, &["static-role", "write", &role, "--period", "30d"]).await;
    assert!(ok, "{out}{err}");
    let (_, out, _) = lessor_cli(&lessor, &["static-role", "read", &role]).await;
    assert!(out.contains("every 30days"), "{out}");
    assert!(out.contains("manual    rotated"), "{out}");
    let (_, listed, _) = lessor_cli(&lessor, &["static-role", "list"]).await;
    assert!(listed.contains(&role), "{listed}");
    let (ok, _, err) = lessor_cli(&lessor, &["rotate-root", CONN]).await;
    assert!(!ok && err.contains("{{password}}"), "{err}");
    let (ok, _, err) = lessor_cli(
        &lessor,
        &[
            "static-role",
            "write",
            &role,
            "--period",
            "1h",
            "--schedule",
            "0 3 * * *",
        ],
    )
    .await;
    assert!(!ok && err.contains("cannot be used with"), "{err}");
    let (ok, out, err) = lessor_cli(&lessor, &["static-role", "delete", &role]).await;
    assert!(ok, "{out}{err}");
    drop_pg_users(&[&user]).await;
}

/// Fails if any of `secrets` appears in the log captured from every Lessor in this process.
fn assert_logs_free_of_all(secrets: &[&str]) {
    let text = logs().text();
    assert!(
        !text.is_empty(),
        "no log was captured; the check would prove nothing"
    );
    for secret in secrets {
        assert!(!text.contains(secret), "a password appeared in the log");
    }
}

/// A dynamic role on `connection` with the engine's default creation statement.
async fn write_role_on(api: &Api, role: &str, connection: &str) {
    let (status, body) = api
        .call(
            "POST",
            &format!("database/roles/{role}"),
            Some(json!({ "db_name": connection, "default_ttl": "1h" })),
        )
        .await;
    assert!(status.is_success(), "{body}");
}
