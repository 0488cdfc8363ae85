//! Vault's own clients, unmodified, against Lessor (issue 12, item 7): node-vault (npm) and
//! async-hvac (PyPI), installed by scripts/test.sh into tests/clients/node_modules and .venv. Each
//! flow prints what it was issued; this test checks it on the real PostgreSQL: revoked logins are
//! refused and their users gone, unwrapped logins work until revoked, revoked tokens are refused.
//!
//! Interpreters: `LESSOR_TEST_PYTHON` (else `.venv/bin/python`) and `node` on the PATH.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn python() -> String {
    std::env::var("LESSOR_TEST_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_owned())
}

/// Runs a client flow against a fresh server with a PostgreSQL role and returns (server, report).
async fn run_flow(program: &str, script: &str) -> (TestServer, String, Value) {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    let role = unique("client");
    server
        .write_role(
            &role,
            json!({ "db_name": "pg", "default_ttl": "10m", "max_ttl": "1h" }),
        )
        .await;
    let output = tokio::process::Command::new(program)
        .arg(format!(
            "{}/tests/clients/{script}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .env("LESSOR_ADDR", &server.base)
        .env("LESSOR_TOKEN", ROOT_TOKEN)
        .env("ROLE", &role)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}; run scripts/test.sh"));
    assert!(
        output.status.success(),
        "the {script} flow failed (run scripts/test.sh to install the clients):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("the flow prints JSON");
    (server, role, report)
}

/// What both flows share: their revoked logins are refused and gone, the unwrapped one works.
async fn check_logins(server: &TestServer, report: &Value) {
    let admin = pg_admin().await;
    let mut revoked = vec![report["renewed_and_revoked"].clone()];
    revoked.extend(report["prefix_revoked"].as_array().unwrap().iter().cloned());
    assert_eq!(revoked.len(), 4);
    for creds in &revoked {
        let user = creds["username"].as_str().unwrap();
        let password = creds["password"].as_str().unwrap();
        assert!(
            pg_login(user, password).await.is_err(),
            "{user} still logs in"
        );
        assert!(
            !pg_role_exists(&admin, user).await,
            "{user} was not dropped"
        );
    }
    assert_eq!(report["renewed_duration"], 1800);
    assert_eq!(
        report["wrapped_answer_has_data"], false,
        "a wrapped answer holds no secret"
    );
    let unwrapped = &report["unwrapped"];
    let user = unwrapped["username"].as_str().unwrap();
    pg_login(user, unwrapped["password"].as_str().unwrap())
        .await
        .expect("the unwrapped login works");
    server.revoke_everything().await;
    assert!(!pg_role_exists(&admin, user).await);
}

#[tokio::test]
async fn node_vault_drives_lessor_unchanged() {
    let (server, _role, report) = run_flow("node", "node_vault_flow.js").await;
    assert_eq!(report["sealed"], false);
    assert_eq!(report["database_mount"], "database");
    assert_eq!(report["orphan_is_orphan"], true);
    check_logins(&server, &report).await;
    let revoked = report["revoked_token"].as_str().unwrap();
    let (status, _) = server
        .call_as(Some(revoked), "GET", "auth/token/lookup-self", None)
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "tokenRevoke revoked the token"
    );
    let orphan = report["orphan_token"].as_str().unwrap();
    let (status, _) = server
        .call_as(Some(orphan), "GET", "auth/token/lookup-self", None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn async_hvac_drives_lessor_unchanged() {
    let (server, _role, report) = run_flow(&python(), "async_hvac_flow.py").await;
    check_logins(&server, &report).await;
    let created = report["created_token"].as_str().unwrap();
    let (status, _) = server
        .call_as(Some(created), "GET", "auth/token/lookup-self", None)
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "revoke_token revoked the token"
    );
}
