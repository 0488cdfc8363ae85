//! Harness of the rotation tests: an in-process Lessor on `127.0.0.1:0` whose store and seal key
//! live in a directory the test owns, so it can be stopped (gracefully: the rotator and reaper end
//! with it) and started again on the same files, which is how a test restarts Lessor after an
//! injected crash.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

/// The common harness's server, by the name the rotation tests use for it.
pub use crate::common::{Api, TestServer as Lessor};

/// Static-role calls of the rotation tests.
impl Api {
    /// The current credentials of a static role: (username, password).
    pub async fn static_creds(&self, role: &str) -> (String, String) {
        let (status, body) = self
            .call("GET", &format!("database/static-creds/{role}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "static-creds of {role}: {body}");
        (
            body["data"]["username"].as_str().unwrap().to_owned(),
            body["data"]["password"].as_str().unwrap().to_owned(),
        )
    }

    /// The static role as `database/static-roles/:name` shows it (the `data` part).
    pub async fn read_static(&self, role: &str) -> Value {
        let (status, body) = self
            .call("GET", &format!("database/static-roles/{role}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "read static role {role}: {body}");
        body["data"].clone()
    }

    /// Writes a static role and asserts it was accepted.
    pub async fn write_static(&self, role: &str, body: Value) {
        let (status, answer) = self
            .call("POST", &format!("database/static-roles/{role}"), Some(body))
            .await;
        assert!(
            status.is_success(),
            "static role {role} refused: {status} {answer}"
        );
    }

    /// Rotates a static role now and asserts it worked.
    pub async fn rotate(&self, role: &str) {
        let (status, body) = self
            .call("POST", &format!("database/rotate-role/{role}"), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "rotate-role {role}: {body}");
    }
}

/// Parses an RFC 3339 time from a response field.
pub fn time_of(value: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(
        value
            .as_str()
            .unwrap_or_else(|| panic!("not a time: {value}")),
    )
    .unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {value}"))
    .with_timezone(&chrono::Utc)
}

/// Waits up to `limit` for the static role's history to hold an entry matching `check`.
pub async fn wait_for_history(
    api: &Api,
    role: &str,
    limit: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let started = std::time::Instant::now();
    loop {
        let read = api.read_static(role).await;
        if read["rotation_history"]
            .as_array()
            .is_some_and(|h| h.iter().any(&check))
        {
            return read;
        }
        assert!(
            started.elapsed() < limit,
            "no matching rotation of {role} within {limit:?}: {read}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fails if any of `secrets` appears in the files of the store (database, WAL, shared memory).
pub fn assert_store_files_free_of(dir: &Path, secrets: &[&str], must_contain: &str) {
    let mut seen_marker = false;
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("lessor.db") {
            continue;
        }
        files += 1;
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            // The WAL and shared-memory files disappear when the last connection closes.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("cannot read {name}: {e}"),
        };
        for secret in secrets {
            assert!(!secret.is_empty());
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a password appears in plain text in {name}"
            );
        }
        seen_marker |= bytes
            .windows(must_contain.len())
            .any(|w| w == must_contain.as_bytes());
    }
    assert!(files > 0, "no store file found in {}", dir.display());
    assert!(
        seen_marker,
        "{must_contain:?} not found in the store files: the scan would prove nothing"
    );
}

/// What a client that kept logging in across rotations saw.
#[derive(Debug)]
pub struct LoginLoopOutcome {
    pub ok: usize,
    pub failed: usize,
    /// The usernames the client held, in turn.
    pub users: Vec<String>,
}

/// Keeps a client logging in as a static role's user every 40 ms (re-reading `static-creds` every
/// 700 ms, as an application refreshing its credentials would) while `rotations` rotations happen
/// 1.2 s apart; returns what it saw.
pub async fn log_in_across_rotations<F, Fut>(
    lessor: &Lessor,
    role: &str,
    rotations: usize,
    log_in: F,
) -> LoginLoopOutcome
where
    F: Fn(String, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (api, role, stop) = (lessor.api.clone(), role.to_owned(), stop.clone());
        tokio::spawn(async move {
            let mut outcome = LoginLoopOutcome {
                ok: 0,
                failed: 0,
                users: Vec::new(),
            };
            let mut held = api.static_creds(&role).await;
            outcome.users.push(held.0.clone());
            let mut refreshed = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                if refreshed.elapsed() > Duration::from_millis(700) {
                    held = api.static_creds(&role).await;
                    refreshed = Instant::now();
                    if outcome.users.last() != Some(&held.0) {
                        outcome.users.push(held.0.clone());
                    }
                }
                match log_in(held.0.clone(), held.1.clone()).await {
                    Ok(()) => outcome.ok += 1,
                    Err(e) => {
                        eprintln!("login as {} failed: {e}", held.0);
                        outcome.failed += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            outcome
        })
    };
    for _ in 0..rotations {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        lessor.rotate(role).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    let outcome = client.await.unwrap();
    eprintln!(
        "alternating: {} logins, {} failed, users in turn {:?}",
        outcome.ok, outcome.failed, outcome.users
    );
    outcome
}
