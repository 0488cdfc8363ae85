//! The server's own files (defects F6 and the file part of F10): the store (`lessor.db`, `-wal`,
//! `-shm`) and the seal key are the owner's only (0600, in a 0700 directory) whatever the umask,
//! and an audit device can never be pointed at them (directly, through a symlink, or as a new
//! file in their directory), nor at anything that is not a regular file on disk.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use reqwest::StatusCode;
use serde_json::json;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn store_and_key_files_are_the_owners_only_whatever_the_umask() {
    // The test process runs with the usual umask (022), under which SQLite creates 0644 files.
    let outer = tempfile::tempdir().unwrap();
    let data = outer.path().join("data");
    let server = TestServer::start_with(|settings| {
        settings.store_url = data.join("lessor.db").display().to_string();
        settings.seal_key_file = Some(data.join("seal.key"));
    })
    .await;
    // A write, so the WAL has content and the shared-memory file exists.
    let (status, body) = server
        .call(
            "PUT",
            "sys/policies/acl/files-test",
            Some(json!({ "policy": "path \"database/creds/x\" { capabilities = [\"read\"] }" })),
        )
        .await;
    assert!(status.is_success(), "{body}");

    let mut seen = Vec::new();
    for name in ["lessor.db", "lessor.db-wal", "lessor.db-shm", "seal.key"] {
        let path = data.join(name);
        assert!(path.exists(), "{name} exists while the server runs");
        seen.push((name, mode(&path)));
    }
    let dir_mode = mode(&data);
    server.stop().await;
    assert_eq!(dir_mode, 0o700, "the data directory is the owner's only");
    for (name, mode) in seen {
        assert_eq!(mode, 0o600, "{name} is created 0600, found {mode:o}");
    }
}

#[tokio::test]
async fn an_existing_store_readable_by_others_is_narrowed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let server = TestServer::start_in(dir.path()).await;
        server.stop().await;
    }
    let store = dir.path().join("lessor.db");
    let key = dir.path().join("seal.key");
    for path in [&store, &key] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let server = TestServer::start_in(dir.path()).await;
    let modes = (mode(&store), mode(&key));
    server.stop().await;
    assert_eq!(modes, (0o600, 0o600), "store and key narrowed to 0600");
}

/// Tries to enable a file audit device at `path`; returns the status and the error text.
async fn enable_audit(server: &TestServer, path: &Path) -> (StatusCode, String) {
    let (status, body) = server
        .call(
            "PUT",
            &format!("sys/audit/{}", unique("file")),
            Some(json!({ "type": "file", "options": { "file_path": path } })),
        )
        .await;
    (status, body.to_string())
}

#[tokio::test]
async fn audit_devices_cannot_write_into_the_servers_own_files() {
    let server = TestServer::start().await;
    let data_dir = server.store_path().parent().unwrap().to_path_buf();
    let store = server.store_path();
    let key = data_dir.join("seal.key");
    let elsewhere = tempfile::tempdir().unwrap();
    let link_to_key = elsewhere.path().join("innocent.log");
    std::os::unix::fs::symlink(&key, &link_to_key).unwrap();
    let link_to_dir = elsewhere.path().join("data-link");
    std::os::unix::fs::symlink(&data_dir, &link_to_dir).unwrap();
    let key_before = std::fs::read(&key).unwrap();

    let refused: Vec<(&str, PathBuf)> = vec![
        ("the seal key", key.clone()),
        ("the store", store.clone()),
        ("the store's WAL", data_dir.join("lessor.db-wal")),
        (
            "a new file in the data directory",
            data_dir.join("audit.log"),
        ),
        ("a symlink to the seal key", link_to_key.clone()),
        (
            "a new file through a symlink to the data directory",
            link_to_dir.join("audit.log"),
        ),
        ("process memory", PathBuf::from("/proc/self/mem")),
        ("a character device", PathBuf::from("/dev/null")),
        ("a directory", elsewhere.path().to_path_buf()),
        ("a relative path", PathBuf::from("audit.log")),
    ];
    let mut answers = Vec::new();
    for (what, path) in &refused {
        answers.push((*what, enable_audit(&server, path).await));
    }
    // A request, so that an enabled device would have written a line by now.
    let (status, _) = server.call("GET", "sys/audit", None).await;
    assert_eq!(status, StatusCode::OK);
    let key_after = std::fs::read(&key).unwrap();
    // What an audit line would have left in the store files.
    let marker = b"\"type\":\"request\"";
    let store_written: Vec<String> = ["lessor.db", "lessor.db-wal"]
        .iter()
        .filter(|name| {
            std::fs::read(data_dir.join(name))
                .unwrap_or_default()
                .windows(marker.len())
                .any(|w| w == marker)
        })
        .map(|name| name.to_string())
        .collect();

    let good = elsewhere.path().join("audit.log");
    let (good_status, good_body) = enable_audit(&server, &good).await;
    let (status, _) = server.call("GET", "sys/audit", None).await;
    assert_eq!(status, StatusCode::OK);
    let good_mode = std::fs::metadata(&good).map(|m| m.permissions().mode() & 0o777);
    let good_lines = std::fs::read_to_string(&good).unwrap_or_default();
    server.stop().await;

    for (what, (status, body)) in answers {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert!(body.contains("options.file_path"), "{what}: {body}");
    }
    assert_eq!(key_before, key_after, "the seal key is unchanged");
    assert!(
        store_written.is_empty(),
        "audit lines were written into {store_written:?}"
    );
    assert_eq!(good_status, StatusCode::NO_CONTENT, "{good_body}");
    assert_eq!(good_mode.unwrap(), 0o600, "the audit file is created 0600");
    assert!(
        good_lines.lines().count() >= 2,
        "the allowed device records requests: {good_lines}"
    );
}
