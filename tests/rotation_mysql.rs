//! Static roles and admin credential rotation against the real MariaDB (or MySQL), through the HTTP
//! API: import and on-demand rotation, period and cron schedules, the alternating strategy with a
//! client logging in across rotations, crashes between phases, and rotate-root with a dedicated
//! admin and custom `root_rotation_statements`.

mod common;
mod rotation_support;

use std::time::Duration;

use chrono::Timelike;
use common::*;
use lessor::rotation::RotationFault;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use reqwest::StatusCode;
use rotation_support::*;
use serde_json::json;

const CONN: &str = "my";

fn admin_opts() -> OptsBuilder {
    let opts = Opts::from_url(&mysql_url()).expect("LESSOR_TEST_MYSQL_URL must be a mysql:// URL");
    OptsBuilder::from_opts(opts).prefer_socket(false)
}

async fn my_admin() -> Conn {
    Conn::new(admin_opts()).await.unwrap_or_else(|e| {
        panic!(
            "MariaDB at {} cannot be reached ({e}); start it with scripts/services.sh",
            mysql_url()
        )
    })
}

/// Logs in over TCP as `user` and runs a query.
async fn logs_in(user: &str, password: &str) -> bool {
    let opts = admin_opts()
        .user(Some(user))
        .pass(Some(password))
        .db_name(None::<String>);
    match Conn::new(opts).await {
        Ok(mut conn) => {
            let ok = conn.query_drop("SELECT 1").await.is_ok();
            let _ = conn.disconnect().await;
            ok
        }
        Err(_) => false,
    }
}

/// Creates an account `user`@`%` with a known password, as a DBA's existing user would be.
async fn my_user(tag: &str) -> (String, String) {
    let user = unique(&format!("lst-{tag}"));
    let password = format!("Initial-{}-pass1", unique("x").replace('-', ""));
    let mut admin = my_admin().await;
    admin
        .query_drop(format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"
        ))
        .await
        .unwrap();
    (user, password)
}

async fn drop_my_users(users: &[&str]) {
    let mut admin = my_admin().await;
    for user in users {
        admin
            .query_drop(format!("DROP USER IF EXISTS '{user}'@'%'"))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn import_then_rotate_role_refuses_the_old_password_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let lessor = Lessor::start_in(dir.path()).await;
    lessor.add_mysql(CONN).await;
    let (user, initial) = my_user("single").await;
    let role = unique("st-single");
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
    let (u1, p1) = lessor.static_creds(&role).await;
    assert_eq!(u1, user);
    assert!(logs_in(&user, &p1).await);

    lessor.rotate(&role).await;
    let (_, p2) = lessor.static_creds(&role).await;
    assert_ne!(p1, p2);
    assert!(
        !logs_in(&user, &p1).await,
        "single user: the old password is refused right after the rotation"
    );
    assert!(logs_in(&user, &p2).await);
    let read = lessor.read_static(&role).await;
    let triggers: Vec<&str> = read["rotation_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["trigger"].as_str().unwrap())
        .collect();
    assert_eq!(triggers, ["manual", "import"], "{read}");

    let (status, _) = lessor
        .call("DELETE", &format!("database/static-roles/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        logs_in(&user, &p2).await,
        "delete does not touch the database user"
    );
    let text = logs().text();
    assert!(
        !text.contains(&p1) && !text.contains(&p2),
        "a password appeared in the log"
    );
    drop_my_users(&[&user]).await;
}

#[tokio::test]
async fn rotation_by_period_and_by_cron_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let lessor = Lessor::start_in(dir.path()).await;
    lessor.add_mysql(CONN).await;
    let (by_period, _) = my_user("period").await;
    let (by_cron, _) = my_user("cron").await;
    let (period_role, cron_role) = (unique("st-period"), unique("st-cron"));
    lessor
        .write_static(
            &period_role,
            json!({ "db_name": CONN, "username": by_period, "rotation_period": 5 }),
        )
        .await;
    lessor
        .write_static(
            &cron_role,
            json!({ "db_name": CONN, "username": by_cron, "rotation_schedule": "*/4 * * * * *" }),
        )
        .await;
    let (_, period_first) = lessor.static_creds(&period_role).await;
    let (_, cron_first) = lessor.static_creds(&cron_role).await;

    let read = wait_for_history(&lessor, &cron_role, Duration::from_secs(15), |h| {
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
        (next.second() % 4, next.nanosecond()),
        (0, 0),
        "cron occurrences drive it: {read}"
    );
    let read = wait_for_history(&lessor, &period_role, Duration::from_secs(20), |h| {
        h["trigger"] == "schedule"
    })
    .await;
    assert_eq!(
        read["rotation_history"][0]["outcome"],
        json!("rotated"),
        "{read}"
    );

    for (role, user, first) in [
        (&period_role, &by_period, &period_first),
        (&cron_role, &by_cron, &cron_first),
    ] {
        assert!(
            !logs_in(user, first).await,
            "{role}: the old password is refused"
        );
        // The schedule may rotate again at any moment; one of two consecutive reads logs in.
        let (_, now) = lessor.static_creds(role).await;
        let works =
            logs_in(user, &now).await || logs_in(user, &lessor.static_creds(role).await.1).await;
        assert!(works, "{role}: the current password logs in");
    }
    for role in [&period_role, &cron_role] {
        let (status, _) = lessor
            .call("DELETE", &format!("database/static-roles/{role}"), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    drop_my_users(&[&by_period, &by_cron]).await;
}

#[tokio::test]
async fn alternating_users_keep_a_client_logged_in_across_three_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let lessor = Lessor::start_in(dir.path()).await;
    lessor.add_mysql(CONN).await;
    let (a, _) = my_user("alt-a").await;
    let (b, _) = my_user("alt-b").await;
    let role = unique("st-alt");
    lessor
        .write_static(
            &role,
            json!({ "db_name": CONN, "username": a, "alternate_username": b, "rotation_period": "1h" }),
        )
        .await;
    let (u1, p1) = lessor.static_creds(&role).await;
    assert_eq!(u1, a);
    lessor.rotate(&role).await;
    let (u2, p2) = lessor.static_creds(&role).await;
    assert_eq!(u2, b);
    assert!(
        logs_in(&u1, &p1).await,
        "the previous credentials still log in"
    );
    lessor.rotate(&role).await;
    assert!(
        !logs_in(&u1, &p1).await,
        "two rotations later the first credentials are gone"
    );
    assert!(logs_in(&u2, &p2).await);

    let outcome = log_in_across_rotations(&lessor, &role, 3, |user, password| async move {
        if logs_in(&user, &password).await {
            Ok(())
        } else {
            Err("refused".to_owned())
        }
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
    drop_my_users(&[&a, &b]).await;
}

#[tokio::test]
async fn crash_between_phases_loses_nothing_and_is_resolved_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (user, _) = my_user("crash").await;
    let role = unique("st-crash");
    {
        let lessor = Lessor::start_in(dir.path()).await;
        lessor.add_mysql(CONN).await;
        lessor
            .write_static(
                &role,
                json!({ "db_name": CONN, "username": user, "rotation_period": "1h" }),
            )
            .await;
        lessor.stop().await;
    }
    for point in [
        RotationFault::AfterPendingStored,
        RotationFault::AfterPasswordSet,
        RotationFault::AfterLoginChecked,
    ] {
        let lessor = Lessor::start_in(dir.path()).await;
        let (_, before) = lessor.static_creds(&role).await;
        lessor.state.rotation.inject_fault(Some(point));
        let (status, body) = lessor
            .call("POST", &format!("database/rotate-role/{role}"), None)
            .await;
        assert_eq!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{point:?}: {body}"
        );
        let mut working = Vec::new();
        for (slot, stored_user, password) in lessor
            .state
            .rotation
            .stored_static_passwords(&role)
            .await
            .unwrap()
        {
            if logs_in(&stored_user, password.expose()).await {
                working.push(slot);
            }
        }
        let expected = if point == RotationFault::AfterPendingStored {
            "current"
        } else {
            "pending"
        };
        assert_eq!(
            working,
            [expected],
            "{point:?}: the store holds the password the database has"
        );
        lessor.stop().await;

        let lessor = Lessor::start_in(dir.path()).await;
        let resolved = eventually(Duration::from_secs(15), || async {
            lessor.read_static(&role).await["rotation_in_progress"] == json!(false)
        })
        .await;
        assert!(resolved.is_some(), "{point:?}: resolved at restart");
        let read = lessor.read_static(&role).await;
        assert_eq!(
            read["rotation_history"][0]["trigger"],
            json!("recovery"),
            "{read}"
        );
        let (_, after) = lessor.static_creds(&role).await;
        assert!(
            logs_in(&user, &after).await,
            "{point:?}: the current password logs in after recovery"
        );
        assert!(
            !logs_in(&user, &before).await,
            "{point:?}: the rotation took effect"
        );
        lessor.stop().await;
    }
    drop_my_users(&[&user]).await;
}

#[tokio::test]
async fn rotate_root_with_a_dedicated_admin_and_custom_statements() {
    let dir = tempfile::tempdir().unwrap();
    let lessor = Lessor::start_in(dir.path()).await;
    let admin = unique("lst-adm");
    let initial = format!("Admin-{}-pass1", unique("x").replace('-', ""));
    {
        let mut root = my_admin().await;
        root.query_drop(format!(
            "CREATE USER '{admin}'@'%' IDENTIFIED BY '{initial}'"
        ))
        .await
        .unwrap();
        root.query_drop(format!(
            "GRANT ALL PRIVILEGES ON *.* TO '{admin}'@'%' WITH GRANT OPTION"
        ))
        .await
        .unwrap();
    }
    let conn = unique("myadm");
    lessor
        .add_connection(
            &conn,
            json!({
                "plugin_name": "mysql-database-plugin",
                "connection_url": "{{username}}:{{password}}@tcp(127.0.0.1:3306)/",
                "username": admin,
                "password": initial,
                "allowed_roles": "*",
                "root_rotation_statements": [
                    "ALTER USER '{{username}}'@'%' IDENTIFIED BY '{{password}}'",
                    "ALTER USER '{{username}}'@'%' WITH MAX_USER_CONNECTIONS 77"
                ],
            }),
        )
        .await;
    let dynamic = unique("dyn");
    let (status, body) = lessor
        .call(
            "POST",
            &format!("database/roles/{dynamic}"),
            Some(json!({ "db_name": conn, "default_ttl": "1h" })),
        )
        .await;
    assert!(status.is_success(), "{body}");

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
    assert_eq!(stored.len(), 1);
    let rotated = stored[0].1.expose().to_owned();
    assert!(
        logs_in(&admin, &rotated).await,
        "the stored admin password is the database's"
    );
    let mut root = my_admin().await;
    let limit: Option<u64> = root
        .exec_first(
            "SELECT max_user_connections FROM mysql.user WHERE User = ? AND Host = '%'",
            (admin.as_str(),),
        )
        .await
        .unwrap();
    assert_eq!(limit, Some(77), "root_rotation_statements ran");

    // Lessor keeps working through the connection with the new password.
    let (status, body) = lessor
        .call("GET", &format!("database/creds/{dynamic}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (user, password) = (
        body["data"]["username"].as_str().unwrap(),
        body["data"]["password"].as_str().unwrap(),
    );
    assert!(
        logs_in(user, password).await,
        "a credential issued after rotate-root logs in"
    );
    let (status, answer) = lessor
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": body["lease_id"] })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    assert!(!logs_in(user, password).await);

    // The machine's own root connection has no {{password}} template: refused, untouched.
    lessor.add_mysql(CONN).await;
    let (status, body) = lessor
        .call("POST", &format!("database/rotate-root/{CONN}"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let text = logs().text();
    assert!(
        !text.contains(&initial) && !text.contains(&rotated),
        "an admin password appeared in the log"
    );
    lessor.stop().await;
    root.query_drop(format!("DROP USER IF EXISTS '{admin}'@'%'"))
        .await
        .unwrap();
}
