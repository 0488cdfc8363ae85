//! End to end with the real binary: `lessor dev` is started as a process, driven over HTTP and
//! through its own client subcommands, and stopped with SIGTERM.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const TOKEN: &str = "e2e-root-token-abcdef";

/// A running `lessor dev`; SIGTERM on drop so a failing test leaves no process behind.
struct DevProcess {
    child: Option<Child>,
    addr: String,
    log_path: std::path::PathBuf,
    _log_dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl DevProcess {
    async fn start(data_dir: Option<&Path>) -> Self {
        let log_dir = tempfile::tempdir().unwrap();
        let log_path = log_dir.path().join("lessor.log");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut command = Command::new(env!("CARGO_BIN_EXE_lessor"));
        command
            .args([
                "dev",
                "--listen",
                &addr,
                "--root-token",
                TOKEN,
                "--log-level",
                "debug",
            ])
            .env("LESSOR_DEV_POSTGRES_URL", postgres_url())
            .env("LESSOR_DEV_MYSQL_URL", mysql_url())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap());
        if let Some(dir) = data_dir {
            command.arg("--data-dir").arg(dir);
        }
        let child = command.spawn().expect("start lessor dev");
        let process = Self {
            child: Some(child),
            addr: format!("http://{addr}"),
            log_path,
            _log_dir: log_dir,
        };
        let started = Instant::now();
        let http = reqwest::Client::new();
        loop {
            if let Ok(response) = http
                .get(format!("{}/v1/sys/health", process.addr))
                .send()
                .await
            {
                if response.status() == StatusCode::OK {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "lessor dev did not answer its health check within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        process
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = reqwest::Client::new()
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}/v1/{path}", self.addr),
            )
            .header("X-Vault-Token", TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Runs a client subcommand of the same binary against this server.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_lessor"))
            .args(args)
            .env("LESSOR_ADDR", &self.addr)
            .env("LESSOR_TOKEN", TOKEN)
            .output()
            .expect("run lessor client")
    }

    /// Sends SIGTERM and waits for a clean exit; returns the log.
    fn stop(&mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let started = Instant::now();
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(
                        status.success(),
                        "lessor dev exited with {status} after SIGTERM"
                    );
                    break;
                }
                if started.elapsed() > Duration::from_secs(15) {
                    let _ = child.kill();
                    panic!("lessor dev did not stop within 15 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn lessor_dev_issues_a_working_postgres_login_and_revokes_it() {
    let mut dev = DevProcess::start(None).await;
    let admin = pg_admin().await;

    // `lessor dev` registered the local PostgreSQL with the demo role `readonly`.
    let (status, roles) = dev.call("LIST", "database/roles", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        roles["data"]["keys"]
            .as_array()
            .unwrap()
            .contains(&json!("readonly")),
        "{roles}"
    );

    // Through the binary's own client subcommand.
    let output = dev.cli(&["creds", "readonly"]);
    assert!(
        output.status.success(),
        "lessor creds failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).expect("JSON from lessor creds");
    let username = answer["data"]["username"].as_str().unwrap().to_owned();
    let password = answer["data"]["password"].as_str().unwrap().to_owned();
    let lease_id = answer["lease_id"].as_str().unwrap().to_owned();
    let client = pg_login(&username, &password)
        .await
        .expect("issued login works");
    let rows = client
        .query("SELECT count(*) FROM pg_catalog.pg_class", &[])
        .await
        .unwrap();
    assert!(rows[0].get::<_, i64>(0) > 0);

    let output = dev.cli(&["lease", "lookup", &lease_id]);
    assert!(output.status.success());
    let lookup: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(lookup["data"]["state"], json!("active"));

    let output = dev.cli(&["lease", "revoke", &lease_id]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        pg_login(&username, &password).await.is_err(),
        "refused after revocation"
    );
    assert!(!pg_role_exists(&admin, &username).await, "role dropped");

    // A second credential over plain HTTP, left live for the shutdown.
    let (status, body) = dev.call("GET", "database/creds/readonly", None).await;
    assert_eq!(status, StatusCode::OK);
    let second_user = body["data"]["username"].as_str().unwrap().to_owned();
    let second_password = body["data"]["password"].as_str().unwrap().to_owned();
    assert!(pg_role_exists(&admin, &second_user).await);

    let log = dev.stop();
    // Its temporary store is gone with it, so the dev server revoked what it issued on the way out.
    assert!(
        !pg_role_exists(&admin, &second_user).await,
        "lessor dev left a user behind when it stopped"
    );
    assert!(log.contains("request"), "the log was captured: {log}");
    assert!(
        !log.contains(&password) && !log.contains(&second_password),
        "an issued password reached the log"
    );
    assert!(!log.contains(TOKEN), "the root token reached the log");
    assert!(
        log.contains("reaper stopped"),
        "the reaper shut down cleanly"
    );
}

#[tokio::test]
async fn data_dir_keeps_roles_and_leases_across_restarts() {
    let data = tempfile::tempdir().unwrap();
    let mut first = DevProcess::start(Some(data.path())).await;
    let (status, body) = first
        .call(
            "POST",
            "database/roles/e2e-kept",
            Some(json!({ "db_name": "dev-postgres", "default_ttl": "10m" })),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (_, creds) = first.call("GET", "database/creds/e2e-kept", None).await;
    let lease_id = creds["lease_id"].as_str().unwrap().to_owned();
    let username = creds["data"]["username"].as_str().unwrap().to_owned();
    first.stop();

    let mut second = DevProcess::start(Some(data.path())).await;
    let (status, role) = second.call("GET", "database/roles/e2e-kept", None).await;
    assert_eq!(status, StatusCode::OK, "{role}");
    assert_eq!(role["data"]["default_ttl"], json!(600));
    let (status, body) = second
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "the lease survived the restart: {body}"
    );
    assert!(!pg_role_exists(&pg_admin().await, &username).await);
    second.stop();
}
