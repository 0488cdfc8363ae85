//! Reconciliation and irrevocable leases (issue 9): users this installation created and no live
//! lease covers are dropped after two sweeps that agree; users it cannot prove it created are
//! reported and never touched, whatever their name; leases whose revocation keeps failing are
//! listed with their last error. Against the real PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::{
    pg_admin, pg_role_exists, postgres_url, through_proxy, unique, CuttableProxy, TestServer,
};
use lessor::store::{LeaseStore, MetaStore};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn outcomes(report: &Value, username: &str) -> Vec<String> {
    report["data"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["username"] == username)
        .map(|f| f["outcome"].as_str().unwrap().to_owned())
        .collect()
}

async fn sweep(server: &TestServer, dry_run: bool) -> Value {
    let (status, body) = server
        .call(
            "PUT",
            "sys/leases/reconcile",
            Some(json!({ "dry_run": dry_run })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn an_orphaned_user_is_dropped_after_two_agreeing_sweeps_and_a_lookalike_never() {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    let role = unique("orphan");
    server
        .write_role(&role, json!({ "db_name": "pg", "default_ttl": "1h" }))
        .await;
    let (kept, kept_user, _) = server.creds(&role).await;
    let (lost, lost_user, _) = server.creds(&role).await;
    // The lease of `lost_user` is recorded revoked while its user survives: what a forced
    // revocation of an unreachable database leaves behind.
    server
        .state
        .store
        .mark_revoked(
            &lost,
            chrono::DateTime::from_timestamp_millis(1).unwrap(),
            Some("forced for the test"),
            false,
        )
        .await
        .unwrap();
    // A user named like Lessor's that this installation never issued (Vault's, say).
    let lookalike = format!("v-{role}-notours");
    let admin = pg_admin().await;
    admin
        .batch_execute(&format!("CREATE ROLE \"{lookalike}\" LOGIN"))
        .await
        .unwrap();

    let dry = sweep(&server, true).await;
    assert_eq!(outcomes(&dry, &lost_user), ["would_suspect"]);
    assert_eq!(outcomes(&dry, &lookalike), ["lookalike"]);
    assert!(
        outcomes(&dry, &kept_user).is_empty(),
        "a user with a live lease is no finding"
    );

    let first = sweep(&server, false).await;
    assert_eq!(outcomes(&first, &lost_user), ["suspect"]);
    assert!(
        pg_role_exists(&admin, &lost_user).await,
        "one sweep drops nothing"
    );
    let dry = sweep(&server, true).await;
    assert_eq!(outcomes(&dry, &lost_user), ["would_drop"]);
    assert!(
        pg_role_exists(&admin, &lost_user).await,
        "a dry run drops nothing"
    );

    let second = sweep(&server, false).await;
    assert_eq!(outcomes(&second, &lost_user), ["dropped"]);
    assert_eq!(outcomes(&second, &lookalike), ["lookalike"]);
    assert!(
        !pg_role_exists(&admin, &lost_user).await,
        "the orphan is gone"
    );
    assert!(
        pg_role_exists(&admin, &lookalike).await,
        "the look-alike is untouched"
    );
    assert!(
        pg_role_exists(&admin, &kept_user).await,
        "the live lease's user is untouched"
    );
    let third = sweep(&server, false).await;
    assert!(
        outcomes(&third, &lost_user).is_empty(),
        "its record is gone with it"
    );

    // Findings are counted.
    let (_, metrics) = server
        .call("GET", "sys/metrics?format=prometheus", None)
        .await;
    let text = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        text.contains("lessor_reconcile_findings_total{outcome=\"dropped\"} 1"),
        "{text}"
    );

    let (status, body) = server
        .call(
            "PUT",
            "sys/leases/reconcile",
            Some(json!({ "dry_run": true, "surprise": 1 })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown fields are refused: {body}"
    );
    let (status, _) = server
        .call(
            "PUT",
            "sys/leases/reconcile",
            Some(json!({ "connection": "nope" })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    admin
        .batch_execute(&format!("DROP ROLE \"{lookalike}\""))
        .await
        .unwrap();
    let (status, _) = server
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": kept })),
        )
        .await;
    assert!(status.is_success());
    assert!(!pg_role_exists(&admin, &kept_user).await);
    server.stop().await;
}

#[tokio::test]
async fn leases_whose_revocation_keeps_failing_are_listed_as_irrevocable() {
    let proxy = CuttableProxy::start(5432).await;
    let server = TestServer::start_with(|settings| {
        settings.target_connect_timeout = Duration::from_secs(1);
        settings.target_operation_timeout = Duration::from_secs(3);
    })
    .await;
    server
        .add_connection(
            "flaky",
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": through_proxy(&postgres_url(), &proxy),
                "allowed_roles": "*",
            }),
        )
        .await;
    let role = unique("irrevocable");
    server
        .write_role(
            &role,
            json!({ "db_name": "flaky", "default_ttl": "2s", "max_ttl": "2s" }),
        )
        .await;
    let (lease_id, username, _) = server.creds(&role).await;
    proxy.cut();

    let started = Instant::now();
    let listed = loop {
        let (status, body) = server
            .call("GET", "sys/leases?type=irrevocable", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["data"]["lease_count"] == 1 {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never listed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let lease = &listed["data"]["leases"][0];
    assert_eq!(lease["lease_id"], lease_id.as_str());
    assert_eq!(lease["username"], username.as_str());
    assert!(lease["attempts"].as_i64().unwrap() >= 3);
    assert!(
        lease["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot revoke")),
        "{lease}"
    );
    let (status, _) = server.call("GET", "sys/leases?type=expired", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server.call("GET", "sys/leases", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    proxy.restore();
    let admin = pg_admin().await;
    let started = Instant::now();
    while pg_role_exists(&admin, &username).await {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the reaper kept retrying and dropped it"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The lease is marked revoked right after its user is dropped.
    let started = Instant::now();
    loop {
        let (_, body) = server
            .call("GET", "sys/leases?type=irrevocable", None)
            .await;
        if body["data"]["lease_count"] == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still listed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
}

/// The comment PostgreSQL keeps on a role.
async fn role_comment(admin: &tokio_postgres::Client, username: &str) -> Option<String> {
    admin
        .query_one(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
            &[&username],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_installation_s_marker_proves_a_user_whose_record_is_lost_and_another_s_vetoes() {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    let role = unique("marked");
    server
        .write_role(&role, json!({ "db_name": "pg", "default_ttl": "1h" }))
        .await;
    let installation = server
        .state
        .store
        .meta_get("installation_id")
        .await
        .unwrap()
        .expect("an installation id is made at first start");
    let admin = pg_admin().await;

    // Every user Lessor creates carries the marker, from the moment it exists.
    let (lost, lost_user, _) = server.creds(&role).await;
    assert_eq!(
        role_comment(&admin, &lost_user).await.as_deref(),
        Some(format!("lessor installation {installation}").as_str())
    );
    // The store forgets the user entirely (a store restored from a backup older than the
    // lease): no lease row, no record of its issue. Only the marker says it is ours.
    let pool = server.state.store.sqlite_pool().expect("an embedded store");
    for sql in [
        "DELETE FROM leases WHERE id = $1",
        "DELETE FROM issued_users WHERE lease_id = $1",
    ] {
        sqlx::query(sql).bind(&lost).execute(pool).await.unwrap();
    }
    // A user of another Lessor installation, named like ours and with no lease here, and one
    // that is on our record yet carries the other installation's marker.
    let foreign = format!("v-{role}-other-installation");
    admin
        .batch_execute(&format!(
            "CREATE ROLE \"{foreign}\" LOGIN;
             COMMENT ON ROLE \"{foreign}\" IS 'lessor installation 11111111-2222-3333-4444-555555555555'"
        ))
        .await
        .unwrap();
    let (disputed, disputed_user, _) = server.creds(&role).await;
    server
        .state
        .store
        .mark_revoked(
            &disputed,
            chrono::Utc::now(),
            Some("forced for the test"),
            false,
        )
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "COMMENT ON ROLE \"{disputed_user}\" IS 'lessor installation 11111111-2222-3333-4444-555555555555'"
        ))
        .await
        .unwrap();

    let dry = sweep(&server, true).await;
    assert_eq!(outcomes(&dry, &lost_user), ["would_suspect"]);
    assert_eq!(outcomes(&dry, &foreign), ["foreign"]);
    assert_eq!(outcomes(&dry, &disputed_user), ["foreign"]);
    let first = sweep(&server, false).await;
    assert_eq!(outcomes(&first, &lost_user), ["suspect"]);
    assert!(
        pg_role_exists(&admin, &lost_user).await,
        "one sweep drops nothing"
    );
    let second = sweep(&server, false).await;
    assert_eq!(outcomes(&second, &lost_user), ["dropped"]);
    assert!(
        !pg_role_exists(&admin, &lost_user).await,
        "the marked orphan is gone"
    );
    for (user, what) in [
        (&foreign, "another installation's user"),
        (&disputed_user, "a user another installation marked"),
    ] {
        assert_eq!(outcomes(&second, user), ["foreign"], "{what}");
        assert!(
            pg_role_exists(&admin, user).await,
            "{what} is never dropped"
        );
    }
    let third = sweep(&server, false).await;
    assert!(
        outcomes(&third, &lost_user).is_empty(),
        "nothing left of it"
    );

    for user in [&foreign, &disputed_user] {
        admin
            .batch_execute(&format!("DROP ROLE \"{user}\""))
            .await
            .unwrap();
    }
    server.stop().await;
}
