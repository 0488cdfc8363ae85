//! The pytest fixture of docs/clients.md works: client/tests/python runs under pytest with hvac
//! against an in-process Lessor, its user logs in to the real PostgreSQL during the test, and
//! afterwards every user the fixture handed out is gone, including the one of a failing test.
//!
//! The interpreter is `LESSOR_TEST_PYTHON`, else the workspace's `.venv/bin/python` (made by
//! `scripts/test.sh`, with hvac and pytest).

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
use lessor::store::LeaseStore;
use serde_json::{json, Value};

const READONLY: &str = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE pg_read_all_data;";

/// The directory of the fixture and of the tests that drive it.
const PYTHON_TESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python");

fn python() -> String {
    std::env::var("LESSOR_TEST_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pytest_fixture_hands_out_a_working_user_and_revokes_it_in_teardown() {
    let python = python();
    let probe = std::process::Command::new(&python)
        .args(["-c", "import hvac, pytest"])
        .output();
    match probe {
        Ok(output) if output.status.success() => {}
        _ => panic!(
            "{python} cannot import hvac and pytest; run scripts/test.sh, or: python3 -m venv .venv && .venv/bin/pip install hvac pytest"
        ),
    }
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    let role = unique("pytest");
    server
        .write_role(
            &role,
            json!({ "db_name": "pg", "creation_statements": [READONLY], "default_ttl": "1h" }),
        )
        .await;
    let scratch = tempfile::tempdir().unwrap();
    let report = scratch.path().join("report.jsonl");

    let output = tokio::process::Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", PYTHON_TESTS])
        .current_dir(scratch.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("LESSOR_ADDR", &server.base)
        .env("LESSOR_TOKEN", ROOT_TOKEN)
        .env("LESSOR_TEST_ROLE", &role)
        .env("LESSOR_FIXTURE_REPORT", &report)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", "5432")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pytest failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("1 passed, 1 xfailed"),
        "the login test passed and the failing one failed:\n{stdout}"
    );

    let issued: Vec<Value> = std::fs::read_to_string(&report)
        .expect("the tests recorded their credentials")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(issued.len(), 2, "one user per test: {issued:?}");
    let admin = pg_admin().await;
    for creds in &issued {
        let username = creds["username"].as_str().unwrap();
        let password = creds["password"].as_str().unwrap();
        assert!(
            !pg_role_exists(&admin, username).await,
            "the fixture's teardown dropped {username}"
        );
        assert!(pg_login(username, password).await.is_err());
    }
    let live = server
        .state
        .store
        .live_lease_ids_with_prefix(&format!("database/creds/{role}/"), 10)
        .await
        .unwrap();
    assert!(live.is_empty(), "no lease of the role is left: {live:?}");
    server.revoke_everything().await;
}

/// docs/clients.md shows the fixture this test runs, not a copy that could drift from it.
#[test]
fn the_documented_fixture_is_the_tested_one() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/clients.md"))
        .unwrap();
    let conftest = std::fs::read_to_string(format!("{PYTHON_TESTS}/conftest.py")).unwrap();
    let fixtures = conftest
        .split_once("\"\"\"\n\n")
        .map(|(_docstring, code)| code.trim())
        .expect("conftest.py opens with a docstring");
    assert!(
        docs.contains(fixtures),
        "docs/clients.md must show conftest.py verbatim, all but its docstring"
    );
}
