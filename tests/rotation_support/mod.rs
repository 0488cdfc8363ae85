//! Harness of the rotation tests: an in-process Lessor on `127.0.0.1:0` whose store and seal key
//! live in a directory the test owns, so it can be stopped (gracefully: the rotator and reaper end
//! with it) and started again on the same files, which is how a test restarts Lessor after an
//! injected crash.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use lessor::config::Settings;
use lessor::AppState;
use lessor_plugin::Secret;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::common::{logs, ROOT_TOKEN};

/// A handle on the HTTP API, cheap to clone into a client task.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    /// Sends a request with the root token; returns the status and the parsed body (Null if none).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}/v1/{path}", self.base),
            )
            .header("X-Vault-Token", ROOT_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

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

    /// Registers a connection and asserts it was accepted.
    pub async fn add_connection(&self, name: &str, body: Value) {
        let (status, answer) = self
            .call("POST", &format!("database/config/{name}"), Some(body))
            .await;
        assert!(
            status.is_success(),
            "cannot register connection {name} ({status}: {answer}); run scripts/services.sh"
        );
    }

    pub async fn add_postgres(&self, name: &str) {
        self.add_connection(
            name,
            json!({ "plugin_name": "postgresql-database-plugin", "connection_url": crate::common::postgres_url(), "allowed_roles": "*" }),
        )
        .await;
    }

    pub async fn add_mysql(&self, name: &str) {
        self.add_connection(
            name,
            json!({ "plugin_name": "mysql-database-plugin", "connection_url": crate::common::mysql_url(), "allowed_roles": "*" }),
        )
        .await;
    }
}

/// A running Lessor whose files outlive it.
pub struct Lessor {
    pub api: Api,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::ops::Deref for Lessor {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Lessor {
    /// Starts Lessor on the store and seal key in `dir` (created on first start).
    pub async fn start(dir: &Path) -> Self {
        let _ = logs();
        let settings = Settings {
            store_url: dir.join("lessor.db").display().to_string(),
            seal_key_file: Some(dir.join("seal.key")),
            create_seal_key_file: true,
            ..Settings::default()
        };
        let state = AppState::open(&settings).await.expect("open state");
        state
            .auth
            .install_root_token(&Secret::new(ROOT_TOKEN))
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let serve_state = state.clone();
        let task = tokio::spawn(async move {
            lessor::serve(listener, serve_state, async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        });
        Self {
            api: Api {
                base,
                http: reqwest::Client::new(),
            },
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops serving and waits until the rotator and reaper have ended and pools are closed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("Lessor stops within 30 s")
                .expect("serve task");
        }
        // Closing the store checkpoints the WAL into the database file, as a clean exit does.
        self.state.store.pool().close().await;
    }
}

impl Drop for Lessor {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
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
