//! Vault compatibility: the unmodified Python client hvac 2.x drives Lessor (configure, roles,
//! creds, lease lookup/renew/revoke/list, static roles), and the outcomes are checked on the real PostgreSQL.
//!
//! The interpreter is `LESSOR_TEST_PYTHON`, else `.venv/bin/python` (made by `scripts/test.sh`);
//! a missing hvac fails the test with a message saying how to install it.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn python() -> String {
    std::env::var("LESSOR_TEST_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_owned())
}

#[tokio::test]
async fn hvac_drives_the_database_engine_unchanged() {
    let python = python();
    let probe = std::process::Command::new(&python)
        .args(["-c", "import hvac"])
        .output();
    match probe {
        Ok(output) if output.status.success() => {}
        _ => panic!("{python} cannot import hvac; run scripts/test.sh, or: python3 -m venv .venv && .venv/bin/pip install hvac"),
    }
    let server = TestServer::start().await;
    let role = unique("hvac");
    // An existing user whose password the static role takes over.
    let admin = pg_admin().await;
    let static_user = unique("lessor_hvac_static").replace('-', "_");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {static_user} LOGIN PASSWORD 'initial-password-123'"
        ))
        .await
        .unwrap();
    let output = tokio::process::Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/hvac/vault_client_flow.py"
        ))
        .env("LESSOR_ADDR", &server.base)
        .env("LESSOR_TOKEN", ROOT_TOKEN)
        .env("PG_URL", postgres_url())
        .env("ROLE", &role)
        .env("STATIC_USER", &static_user)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "the hvac flow failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("the flow prints JSON");

    // The static role's passwords: the one before the on-demand rotation is refused, the new works.
    let before = report["static_before"].as_str().unwrap();
    let after = report["static_after"].as_str().unwrap();
    assert!(
        pg_login(&static_user, "initial-password-123")
            .await
            .is_err(),
        "import rotation replaced the DBA's password"
    );
    assert!(
        pg_login(&static_user, before).await.is_err(),
        "the rotated-away password is refused"
    );
    pg_login(&static_user, after)
        .await
        .expect("the password hvac read after rotation works");
    admin
        .batch_execute(&format!("DROP ROLE {static_user}"))
        .await
        .unwrap();

    let revoked_user = report["revoked"]["username"].as_str().unwrap();
    let revoked_password = report["revoked"]["password"].as_str().unwrap();
    assert!(
        pg_login(revoked_user, revoked_password).await.is_err(),
        "revoked through hvac: login refused"
    );
    assert!(
        !pg_role_exists(&admin, revoked_user).await,
        "revoked through hvac: role gone"
    );

    let live_user = report["live"]["username"].as_str().unwrap();
    let live_password = report["live"]["password"].as_str().unwrap();
    pg_login(live_user, live_password)
        .await
        .expect("the credential hvac received works");
    let (status, _) = server
        .call(
            "PUT",
            &format!("sys/leases/revoke-prefix/database/creds/{role}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!pg_role_exists(&admin, live_user).await);
    let (status, body) = server
        .call(
            "PUT",
            "sys/leases/lookup",
            Some(json!({ "lease_id": report["live_lease_id"] })),
        )
        .await;
    // A revoked lease answers "invalid lease" (400), as in Vault.
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    server.assert_logs_free_of(&[revoked_password, live_password, before, after]);
}
