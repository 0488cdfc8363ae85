//! A rotation, once started, belongs to a task of the rotator, not to the request that asked for
//! it (defect F5): a client that disconnects after the database took the new password and before
//! Lessor promoted it must not leave `static-creds` serving a password that no longer logs in.
//!
//! Each test pauses a rotation between `set_password` and the promotion (the `fault-injection`
//! pause), lets an impatient client give up during the pause, and then checks against the real
//! PostgreSQL that the password Lessor hands out logs in.

mod common;
mod rotation_support;

use std::path::Path;
use std::time::Duration;

use common::*;
use lessor::rotation::RotationFault;
use lessor::store::RotationStore;
use rotation_support::*;
use serde_json::json;

const CONN: &str = "pg";
/// How long the rotation stays between `set_password` and the promotion.
const PAUSE: Duration = Duration::from_secs(2);
/// How long the impatient client waits: well inside the pause.
const CLIENT_PATIENCE: Duration = Duration::from_millis(300);

/// Creates a login role with a known password, as a DBA's existing user would be.
async fn pg_user(tag: &str, attributes: &str) -> (String, String) {
    let user = unique(&format!("lessor_intr_{tag}")).replace('-', "_");
    let password = format!("Initial-{}-pass1", unique("x").replace('-', ""));
    pg_admin()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {user} LOGIN {attributes} PASSWORD '{password}'"
        ))
        .await
        .unwrap();
    (user, password)
}

/// Drops the test's roles; the roles a connection created through its admin go first.
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

/// Sends `POST path` with a client that gives up after [`CLIENT_PATIENCE`], and asserts that it
/// did give up (so the test really disconnected mid-rotation).
async fn post_and_disconnect(api: &Api, path: &str) {
    let impatient = reqwest::Client::builder()
        .timeout(CLIENT_PATIENCE)
        .build()
        .unwrap();
    let sent = impatient
        .post(format!("{}/v1/{path}", api.base))
        .header("X-Vault-Token", ROOT_TOKEN)
        .send()
        .await;
    match sent {
        Err(error) => assert!(error.is_timeout(), "{path}: {error}"),
        Ok(response) => panic!(
            "{path} answered {} before the client gave up; the test proves nothing",
            response.status()
        ),
    }
}

/// The static role's current password, read from the store files with the seal key, after the
/// server has stopped: (pending left?, current password).
async fn stored_after_stop(dir: &Path, role: &str) -> (bool, String) {
    let store = lessor::store::Store::open(&dir.join("lessor.db").display().to_string())
        .await
        .unwrap();
    let row = store.get_static_role(role).await.unwrap().unwrap();
    let sealer = lessor::seal::Sealer::from_key_file(&dir.join("seal.key"), false).unwrap();
    let user = row.current_username.unwrap();
    let password = sealer
        .open(
            &format!("static-role/{role}/{user}/password"),
            &row.current_password_sealed.unwrap(),
        )
        .unwrap();
    store.close().await;
    (
        row.pending_password_sealed.is_some(),
        password.expose().to_owned(),
    )
}

#[tokio::test]
async fn a_rotate_role_whose_client_disconnects_completes_and_serves_a_working_password() {
    let lessor = Lessor::start().await;
    lessor.add_postgres(CONN).await;
    let (user, _) = pg_user("role", "").await;
    let role = unique("st-intr");
    lessor
        .write_static(
            &role,
            json!({ "db_name": CONN, "username": user, "rotation_period": "24h" }),
        )
        .await;
    let (_, before) = lessor.static_creds(&role).await;

    lessor
        .state
        .rotation
        .inject_pause(RotationFault::AfterPasswordSet, PAUSE);
    post_and_disconnect(&lessor, &format!("database/rotate-role/{role}")).await;

    // Within a few seconds of the pause ending, static-creds hands out a password that logs in.
    let settled = eventually(Duration::from_secs(10), || async {
        let (_, password) = lessor.static_creds(&role).await;
        password != before && logs_in(&user, &password).await
    })
    .await;
    let old_still_works = logs_in(&user, &before).await;
    let read = lessor.read_static(&role).await;
    drop_pg_users(&[&user]).await;

    assert!(
        settled.is_some(),
        "static-creds still serves a password that does not log in: {read}"
    );
    assert!(!old_still_works, "the database took the new password");
    let newest = &read["rotation_history"][0];
    assert_eq!(
        (newest["trigger"].as_str(), newest["outcome"].as_str()),
        (Some("manual"), Some("rotated")),
        "the history shows the interrupted rotation: {read}"
    );
    assert_eq!(read["rotation_in_progress"], json!(false), "{read}");
    assert_eq!(read["last_error"], json!(null), "{read}");
    let next = time_of(&read["next_vault_rotation"]);
    assert!(
        (next - chrono::Utc::now()).num_hours() >= 23,
        "the schedule moved on from the completed rotation: {read}"
    );
}

#[tokio::test]
async fn shutdown_waits_for_a_rotation_whose_client_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let lessor = Lessor::start_in(dir.path()).await;
    lessor.add_postgres(CONN).await;
    let (user, _) = pg_user("stop", "").await;
    let role = unique("st-stop");
    lessor
        .write_static(
            &role,
            json!({ "db_name": CONN, "username": user, "rotation_period": "24h" }),
        )
        .await;
    let (_, before) = lessor.static_creds(&role).await;

    lessor
        .state
        .rotation
        .inject_pause(RotationFault::AfterPasswordSet, PAUSE);
    post_and_disconnect(&lessor, &format!("database/rotate-role/{role}")).await;
    // Stopped in the middle of the pause: the rotation finishes before the server is gone.
    lessor.stop().await;

    let (pending_left, current) = stored_after_stop(dir.path(), &role).await;
    let current_works = logs_in(&user, &current).await;
    drop_pg_users(&[&user]).await;
    assert!(!pending_left, "the rotation finished before shutdown");
    assert_ne!(current, before, "the new password was promoted");
    assert!(current_works, "the stored current password logs in");
}

#[tokio::test]
async fn a_rotate_root_whose_client_disconnects_completes_and_lessor_keeps_its_admin() {
    let lessor = Lessor::start().await;
    let (admin, initial) = pg_user("adm", "CREATEROLE").await;
    let conn = unique("pgadm");
    lessor
        .add_connection(
            &conn,
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres",
                "username": admin,
                "password": initial,
                "allowed_roles": "*",
            }),
        )
        .await;

    lessor
        .state
        .rotation
        .inject_pause(RotationFault::AfterPasswordSet, PAUSE);
    post_and_disconnect(&lessor, &format!("database/rotate-root/{conn}")).await;

    let settled = eventually(Duration::from_secs(10), || async {
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
    let stored = lessor
        .state
        .rotation
        .stored_root_passwords(&conn)
        .await
        .unwrap();
    let stored_works = logs_in(&admin, stored[0].1.expose()).await;
    let initial_works = logs_in(&admin, &initial).await;

    // Lessor still administers the database with the password it holds.
    let role = unique("dyn");
    lessor
        .write_role(&role, json!({ "db_name": conn, "default_ttl": "1h" }))
        .await;
    let (status, body) = lessor
        .call("GET", &format!("database/creds/{role}"), None)
        .await;
    let issued = status.is_success();
    if issued {
        let (status, answer) = lessor
            .call(
                "PUT",
                "sys/leases/revoke",
                Some(json!({ "lease_id": body["lease_id"] })),
            )
            .await;
        assert!(status.is_success(), "{answer}");
    }
    lessor.stop().await;
    drop_pg_users(&[&admin]).await;

    assert!(
        settled.is_some(),
        "the admin rotation stayed pending after its client disconnected"
    );
    assert!(stored_works, "the stored admin password logs in");
    assert!(!initial_works, "the database took the new admin password");
    assert!(
        issued,
        "a credential is issued through the rotated admin: {body}"
    );
}
