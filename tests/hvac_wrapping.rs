//! Response wrapping through the unmodified Python client hvac 2.x: `client.read(path,
//! wrap_ttl=...)`, `client.sys.unwrap(token)` (in its three forms: the wrapping token in the body
//! beside the client's token, as the only token, and with no client token at all) and
//! `client.sys.wrap`. The unwrapped logins are checked on the real PostgreSQL, then revoked.
//!
//! The interpreter is `LESSOR_TEST_PYTHON`, else `.venv/bin/python` (made by `scripts/test.sh`);
//! a missing hvac fails the test with a message saying how to install it.

mod common;

use common::*;
use serde_json::{json, Value};

fn python() -> String {
    std::env::var("LESSOR_TEST_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_owned())
}

#[tokio::test]
async fn hvac_unwraps_unchanged() {
    let python = python();
    let probe = std::process::Command::new(&python)
        .args(["-c", "import hvac"])
        .output();
    match probe {
        Ok(output) if output.status.success() => {}
        _ => panic!("{python} cannot import hvac; run scripts/test.sh, or: python3 -m venv .venv && .venv/bin/pip install hvac"),
    }
    assert_postgres_checks_passwords().await;
    let server = TestServer::start().await;
    let role = unique("hvac-wrap");
    server.add_postgres("pg").await;
    server
        .write_role(&role, json!({ "db_name": "pg", "default_ttl": "5m" }))
        .await;

    let output = tokio::process::Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/hvac/wrapping_flow.py"
        ))
        .env("LESSOR_ADDR", &server.base)
        .env("LESSOR_TOKEN", ROOT_TOKEN)
        .env("ROLE", &role)
        .output()
        .await
        .unwrap();
    let report: Option<Value> = serde_json::from_slice(&output.stdout).ok();
    if !output.status.success() || report.is_none() {
        // Nothing issued may outlive the test, whatever happened.
        server.revoke_everything().await;
        panic!(
            "the hvac wrapping flow failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report = report.unwrap();
    let credentials: Vec<(String, String)> = ["first", "second"]
        .iter()
        .map(|which| {
            let credential = &report[which];
            assert!(
                credential["lease_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with(&format!("database/creds/{role}/"))),
                "{credential}"
            );
            (
                credential["username"].as_str().unwrap().to_owned(),
                credential["password"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut logins = Vec::new();
    for (username, password) in &credentials {
        logins.push(pg_login(username, password).await.map(drop));
    }
    server.revoke_everything().await;
    for ((username, _), login) in credentials.iter().zip(logins) {
        login.unwrap_or_else(|e| panic!("the login hvac unwrapped for {username} works: {e}"));
    }
    let admin = pg_admin().await;
    for (username, password) in &credentials {
        assert!(pg_login(username, password).await.is_err(), "revoked");
        assert!(!pg_role_exists(&admin, username).await, "user gone");
    }
    let secrets: Vec<&str> = credentials.iter().map(|(_, p)| p.as_str()).collect();
    server.assert_logs_free_of(&secrets);
}
