//! Audit devices, anomaly alerts and metrics end to end through the HTTP API against the real
//! PostgreSQL: every request leaves a request and a response line with no secret in clear, the
//! audit log fails closed (nothing is issued unrecorded, a withheld credential is revoked), each
//! anomaly rule fires when it should and stays quiet when it should, alerts reach the log, the
//! metrics, `sys/alerts` and a webhook, and `sys/metrics` exposes Prometheus text.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use lessor::store::LeaseStore;
use reqwest::StatusCode;
use serde_json::{json, Value};

const READONLY: &str = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE pg_read_all_data;";

async fn server_with_role(role: &str) -> TestServer {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    server
        .write_role(role, json!({ "db_name": "pg", "creation_statements": [READONLY], "default_ttl": "10m", "max_ttl": "1h" }))
        .await;
    server
}

async fn enable_file_audit(server: &TestServer, name: &str, path: &std::path::Path) {
    let (status, body) = server
        .call(
            "PUT",
            &format!("sys/audit/{name}"),
            Some(json!({ "type": "file", "description": "", "options": { "file_path": path }, "local": false })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

fn audit_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("every audit line is JSON"))
        .collect()
}

/// A token whose policy reads `role`'s credentials.
async fn reader_token(server: &TestServer, role: &str) -> String {
    let policy = format!(r#"path "database/creds/{role}" {{ capabilities = ["read"] }}"#);
    let (status, _) = server
        .call(
            "PUT",
            "sys/policies/acl/reader",
            Some(json!({ "policy": policy })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, created) = server
        .call(
            "POST",
            "auth/token/create",
            Some(json!({ "policies": ["reader"] })),
        )
        .await;
    created["auth"]["client_token"].as_str().unwrap().to_owned()
}

async fn pg_roles_like(prefix: &str) -> i64 {
    pg_admin()
        .await
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1",
            &[&format!("v-{prefix}-%")],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn every_request_and_response_is_audited_with_secrets_hashed() {
    let role = unique("audited");
    let server = server_with_role(&role).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    enable_file_audit(&server, "file", &path).await;
    let (status, devices) = server.call("GET", "sys/audit", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(devices["file/"]["type"], json!("file"));
    assert_eq!(
        devices["data"]["file/"]["options"]["file_path"],
        json!(path)
    );

    let token = reader_token(&server, &role).await;
    let (status, issued) = server
        .call_as(Some(&token), "GET", &format!("database/creds/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let password = issued["data"]["password"].as_str().unwrap().to_owned();
    let lease_id = issued["lease_id"].as_str().unwrap().to_owned();
    let request_id = issued["request_id"].as_str().unwrap().to_owned();
    let (status, _) = server
        .call_as(
            Some("not-a-token"),
            "GET",
            &format!("database/creds/{role}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let lines = audit_lines(&path);
    // Every exchange since the device was enabled has a request and a response line (the enabling
    // request itself predates the device, so only its response is there).
    let requests: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == json!("request"))
        .collect();
    let responses: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == json!("response"))
        .collect();
    assert_eq!(responses[0]["path"], json!("sys/audit/file"));
    assert_eq!(requests.len() + 1, responses.len(), "{lines:#?}");
    for (request, response) in requests.iter().zip(&responses[1..]) {
        assert_eq!(request["request_id"], response["request_id"]);
    }
    assert!(
        requests.len() >= 6,
        "GET sys/audit, policy, token, creds, refused creds, revoke"
    );

    // The credential read: who, from where, what, which role and lease, the outcome.
    let read: Vec<&Value> = lines
        .iter()
        .filter(|l| l["request_id"] == json!(request_id))
        .collect();
    assert_eq!(read.len(), 2, "the envelope's request_id names both lines");
    let response = read
        .iter()
        .find(|l| l["type"] == json!("response"))
        .unwrap();
    for line in &read {
        assert_eq!(line["path"], json!(format!("database/creds/{role}")));
        assert_eq!(line["operation"], json!("read"));
        assert_eq!(line["role"], json!(role));
        assert_eq!(line["remote_address"], json!("127.0.0.1"));
        assert_eq!(line["identity"]["policies"], json!(["default", "reader"]));
        assert!(line["identity"]["accessor"].as_str().unwrap().len() >= 20);
        assert!(line["identity"]["display_name"]
            .as_str()
            .unwrap()
            .starts_with("token"));
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(response["status"], json!(200));
    assert_eq!(response["lease_id"], json!(lease_id));
    assert_eq!(response["error"], json!(null));
    let hashed_password = response["response"]["data"]["password"].as_str().unwrap();
    assert!(hashed_password.starts_with("hmac-sha256:"));
    assert!(
        response["response"]["data"]["username"]
            .as_str()
            .unwrap()
            .starts_with("v-"),
        "usernames stay readable"
    );

    // sys/audit-hash tells an operator what a known secret looks like in the log.
    let (status, hashed) = server
        .call(
            "POST",
            "sys/audit-hash/file",
            Some(json!({ "input": password })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hashed["data"]["hash"], json!(hashed_password));
    let (_, token_hash) = server
        .call(
            "POST",
            "sys/audit-hash/file",
            Some(json!({ "input": token })),
        )
        .await;
    assert_eq!(
        response["identity"]["client_token"],
        token_hash["data"]["hash"]
    );

    // The refusal is recorded with its error and no identity.
    let refused = lines
        .iter()
        .find(|l| l["type"] == json!("response") && l["status"] == json!(403))
        .expect("the refused request is audited");
    assert_eq!(refused["error"], json!("permission denied"));
    assert!(refused["identity"].get("accessor").is_none());
    assert!(refused["identity"]["client_token"]
        .as_str()
        .unwrap()
        .starts_with("hmac-sha256:"));
    // The revocation names the lease.
    assert!(lines
        .iter()
        .any(|l| l["path"] == json!("sys/leases/revoke") && l["lease_id"] == json!(lease_id)));

    // No secret in clear: the password, the new token, the root token, the refused token.
    let text = std::fs::read_to_string(&path).unwrap();
    for secret in [password.as_str(), token.as_str(), ROOT_TOKEN, "not-a-token"] {
        assert!(!text.contains(secret), "a secret in clear in the audit log");
    }
    server.assert_logs_free_of(&[&password, &token]);

    // Disabled devices record nothing more; the hash endpoint needs a device.
    let (status, _) = server.call("DELETE", "sys/audit/file", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let before = audit_lines(&path).len();
    server.call("GET", "sys/audit", None).await;
    assert_eq!(audit_lines(&path).len(), before);
    let (status, _) = server
        .call("POST", "sys/audit-hash/file", Some(json!({ "input": "x" })))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    server.revoke_everything().await;
}

#[tokio::test]
async fn the_audit_log_fails_closed() {
    let role = unique("closed");
    let server = server_with_role(&role).await;
    let dir = tempfile::tempdir().unwrap();

    // A path that cannot be written is refused when the device is enabled (as root, permissions
    // do not stop us: a parent that is a file does).
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "x").unwrap();
    let (status, body) = server
        .call(
            "PUT",
            "sys/audit/bad",
            Some(json!({ "type": "file", "options": { "file_path": blocker.join("audit.log") } })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = server
        .call(
            "PUT",
            "sys/audit/nopath",
            Some(json!({ "type": "file", "options": {} })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The device works, then its directory disappears: requests are refused, and nothing is
    // issued: no lease, no database user.
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    enable_file_audit(&server, "file", &logs.join("audit.log")).await;
    let (status, _) = server.call("GET", "auth/token/lookup-self", None).await;
    assert_eq!(status, StatusCode::OK);
    std::fs::remove_dir_all(&logs).unwrap();
    let (status, body) = server
        .call("GET", &format!("database/creds/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        body["errors"][0].as_str().unwrap().contains("audit"),
        "{body}"
    );
    let (status, _) = server.call("GET", "auth/token/lookup-self", None).await;
    assert_eq!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "every request fails closed"
    );
    let leases = server
        .state
        .store
        .live_lease_ids_with_prefix(&format!("database/creds/{role}/"), 10)
        .await
        .unwrap();
    assert!(leases.is_empty(), "no lease was written: {leases:?}");
    assert_eq!(pg_roles_like(&role).await, 0, "no user was created");

    std::fs::create_dir(&logs).unwrap();
    let (status, _) = server.call("GET", "auth/token/lookup-self", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the device recovers once its directory is back"
    );

    // One device that writes is enough (Vault's rule): with a stdout device beside the broken
    // file, requests go on.
    let (status, _) = server
        .call("PUT", "sys/audit/out", Some(json!({ "type": "stdout" })))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    std::fs::remove_dir_all(&logs).unwrap();
    let (status, _) = server.call("GET", "auth/token/lookup-self", None).await;
    assert_eq!(status, StatusCode::OK);
    std::fs::create_dir(&logs).unwrap();

    // If the response cannot be recorded after the credential was made, the response is withheld
    // and the credential revoked: the caller never holds an unaudited password.
    server.state.audit.fail_next_response();
    let (status, body) = server
        .call("GET", &format!("database/creds/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        body.get("data").is_none(),
        "no credential in the answer: {body}"
    );
    let admin = pg_admin().await;
    let leases = server
        .state
        .store
        .live_lease_ids_with_prefix(&format!("database/creds/{role}/"), 10)
        .await
        .unwrap();
    assert!(
        leases.is_empty(),
        "the withheld lease was revoked: {leases:?}"
    );
    let left: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1",
            &[&format!("v-{role}-%")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the withheld user was dropped");
    let lines = audit_lines(&logs.join("audit.log"));
    let withheld = lines
        .iter()
        .filter(|l| l["path"] == json!(format!("database/creds/{role}")))
        .count();
    assert_eq!(
        withheld, 1,
        "the request line was written before the credential was made"
    );
}

/// A loopback webhook receiver that fails its first call, to prove retries.
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>, Arc<Mutex<u32>>) {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let calls: Arc<Mutex<u32>> = Arc::default();
    let (r, c) = (received.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let (r, c) = (r.clone(), c.clone());
            async move {
                let mut calls = c.lock().unwrap();
                *calls += 1;
                if *calls == 1 {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                r.lock().unwrap().push(body);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received, calls)
}

async fn alerts(server: &TestServer) -> Vec<Value> {
    let (status, body) = server.call("GET", "sys/alerts", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]["alerts"].as_array().unwrap().clone()
}

async fn set_rules(server: &TestServer, rules: Value) -> Value {
    let (status, body) = server.call("POST", "sys/monitor/rules", Some(rules)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].clone()
}

#[tokio::test]
async fn burst_rule_fires_past_its_threshold_once_and_calls_the_webhook() {
    let role = unique("burst");
    let server = server_with_role(&role).await;
    let (url, received, calls) = webhook().await;
    let rules = set_rules(
        &server,
        json!({ "burst": { "threshold": 3, "window": "60s" }, "webhook": { "url": url, "attempts": 3 } }),
    )
    .await;
    assert_eq!(rules["burst"]["threshold"], json!(3));
    assert_eq!(
        rules["denials"]["threshold"],
        json!(10),
        "untouched rules keep their defaults"
    );
    let (_, read) = server.call("GET", "sys/monitor/rules", None).await;
    assert_eq!(read["data"], rules);

    let token = reader_token(&server, &role).await;
    for _ in 0..3 {
        let (status, _) = server
            .call_as(Some(&token), "GET", &format!("database/creds/{role}"), None)
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    assert!(
        alerts(&server)
            .await
            .iter()
            .all(|a| a["rule"] != json!("burst")),
        "3 reads are not a burst"
    );
    for _ in 0..2 {
        server
            .call_as(Some(&token), "GET", &format!("database/creds/{role}"), None)
            .await;
    }
    let bursts: Vec<Value> = alerts(&server)
        .await
        .into_iter()
        .filter(|a| a["rule"] == json!("burst"))
        .collect();
    assert_eq!(
        bursts.len(),
        1,
        "a sustained burst is one alert: {bursts:#?}"
    );
    assert_eq!(bursts[0]["count"], json!(5));
    assert!(bursts[0]["display_name"]
        .as_str()
        .unwrap()
        .starts_with("token"));
    assert!(bursts[0]["first_seen"].as_str().unwrap() <= bursts[0]["last_seen"].as_str().unwrap());
    // The root token's reads are another identity: no burst for it.
    server.creds(&role).await;
    assert_eq!(
        alerts(&server)
            .await
            .iter()
            .filter(|a| a["rule"] == json!("burst"))
            .count(),
        1
    );

    // The webhook got the alert on its second try.
    eventually(Duration::from_secs(5), || async {
        !received.lock().unwrap().is_empty()
    })
    .await
    .expect("the webhook received the alert");
    assert_eq!(*calls.lock().unwrap(), 2, "one failure, one retry");
    let sent = received.lock().unwrap()[0].clone();
    assert_eq!(sent["rule"], json!("burst"));
    assert_eq!(sent["count"], json!(4), "sent when raised");
    assert!(
        server.logs.text().contains("anomaly alert"),
        "logged at WARN"
    );

    let (_, metrics) = server
        .call("GET", "sys/metrics?format=prometheus", None)
        .await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("lessor_alerts_total{rule=\"burst\"}"),
        "{metrics}"
    );
    server.revoke_everything().await;
}

#[tokio::test]
async fn denial_rule_fires_on_repeated_refusals_from_one_address() {
    let server = TestServer::start().await;
    set_rules(
        &server,
        json!({ "denials": { "threshold": 2, "window": 60 } }),
    )
    .await;
    for _ in 0..2 {
        let (status, _) = server
            .call_as(Some("guessed-token"), "GET", "database/config/pg", None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    assert!(
        alerts(&server).await.is_empty(),
        "two refusals are under the threshold"
    );
    let (status, _) = server
        .call_as(None, "GET", "sys/policies/acl/default", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let all = alerts(&server).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["rule"], json!("denials"));
    assert_eq!(all[0]["address"], json!("127.0.0.1"));
    assert_eq!(all[0]["count"], json!(3));
    assert_eq!(all[0]["identity"], json!(null));
}

/// Sends a creds request from a chosen loopback source address.
async fn creds_from(server: &TestServer, source: Ipv4Addr, token: &str, role: &str) -> StatusCode {
    let client = reqwest::Client::builder()
        .local_address(IpAddr::V4(source))
        .build()
        .unwrap();
    client
        .get(format!("{}/v1/database/creds/{role}", server.base))
        .header("X-Vault-Token", token)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn new_address_rule_fires_for_an_unseen_source_only() {
    let role = unique("addr");
    let server = server_with_role(&role).await;
    let token = reader_token(&server, &role).await;
    let home = Ipv4Addr::new(127, 0, 0, 1);
    assert_eq!(
        creds_from(&server, home, &token, &role).await,
        StatusCode::OK
    );
    assert_eq!(
        creds_from(&server, home, &token, &role).await,
        StatusCode::OK
    );
    assert!(
        alerts(&server).await.is_empty(),
        "a first read and a repeat from the same address are normal"
    );
    let elsewhere = Ipv4Addr::new(127, 0, 0, 2);
    assert_eq!(
        creds_from(&server, elsewhere, &token, &role).await,
        StatusCode::OK
    );
    let all = alerts(&server).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["rule"], json!("new_address"));
    assert_eq!(all[0]["address"], json!("127.0.0.2"));
    assert_eq!(all[0]["role"], json!(role));
    // Seen now: reading from there again is quiet, and so is going back home.
    creds_from(&server, elsewhere, &token, &role).await;
    creds_from(&server, home, &token, &role).await;
    assert_eq!(alerts(&server).await.len(), 1);
    // The seen addresses are in the store, so the rule survives a restart.
    let remembered: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM source_addresses")
        .fetch_one(server.state.store.sqlite_pool().unwrap())
        .await
        .unwrap();
    assert_eq!(remembered, 2, "the token's two addresses");
    // A known address is written at most once a minute, not on every read (issue 10).
    let last_seen = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT last_seen FROM source_addresses WHERE address = '127.0.0.1'",
        )
        .fetch_one(server.state.store.sqlite_pool().unwrap())
        .await
        .unwrap()
    };
    let written = last_seen().await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    creds_from(&server, home, &token, &role).await;
    assert_eq!(
        last_seen().await,
        written,
        "a repeat read within a minute writes nothing"
    );
    assert_eq!(alerts(&server).await.len(), 1);
    server.revoke_everything().await;
}

#[tokio::test]
async fn outside_hours_rule_fires_only_for_roles_read_outside_their_window() {
    let night = unique("night");
    let day = unique("day");
    let server = server_with_role(&night).await;
    server
        .write_role(
            &day,
            json!({ "db_name": "pg", "creation_statements": [READONLY], "default_ttl": "10m" }),
        )
        .await;
    let hour = |offset: i64| {
        (chrono::Utc::now() + chrono::Duration::hours(offset))
            .format("%H:00")
            .to_string()
    };
    // `night` is allowed only in a window that starts two hours from now; `day` around now.
    set_rules(
        &server,
        json!({ "outside_hours": { "roles": {
            night.clone(): format!("{}-{}", hour(2), hour(3)),
            day.clone(): format!("{}-{}", hour(-1), hour(2)),
        } } }),
    )
    .await;
    server.creds(&day).await;
    assert!(
        alerts(&server).await.is_empty(),
        "a read inside the window is quiet"
    );
    server.creds(&night).await;
    server.creds(&night).await;
    let all = alerts(&server).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["rule"], json!("outside_hours"));
    assert_eq!(all[0]["role"], json!(night));
    assert_eq!(all[0]["count"], json!(2), "repeats update the open alert");

    // Bad rules are refused with the setting named.
    let (status, body) = server
        .call(
            "POST",
            "sys/monitor/rules",
            Some(json!({ "outside_hours": { "roles": { "x": "9 to 5" } } })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("outside_hours.roles.x"),
        "{body}"
    );
    server.revoke_everything().await;
}

#[tokio::test]
async fn rules_come_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lessor.toml");
    std::fs::write(
        &file,
        r#"
[monitor.burst]
threshold = 5
window = "2m"
[monitor.outside_hours.roles]
reporting = "22:00-06:00"
[monitor.webhook]
url = "http://127.0.0.1:9/alerts"
"#,
    )
    .unwrap();
    let settings = lessor::config::load(Some(&file), &[], &Default::default()).unwrap();
    assert_eq!(settings.monitor.burst.threshold, 5);
    assert_eq!(settings.monitor.burst.window, Duration::from_secs(120));
    assert_eq!(settings.monitor.denials.threshold, 10);
    let monitor = settings.monitor.clone();
    let server = TestServer::start_with(move |s| s.monitor = monitor).await;
    let (_, rules) = server.call("GET", "sys/monitor/rules", None).await;
    assert_eq!(rules["data"]["burst"]["window"], json!(120));
    assert_eq!(
        rules["data"]["outside_hours"]["roles"]["reporting"],
        json!("22:00-06:00")
    );

    std::fs::write(&file, "[monitor.burst]\nthreshold = 0\n").unwrap();
    let err = lessor::config::load(Some(&file), &[], &Default::default()).unwrap_err();
    assert!(err.to_string().contains("burst"), "{err}");
}

#[tokio::test]
async fn metrics_expose_leases_requests_and_latency() {
    let role = unique("metrics");
    let server = server_with_role(&role).await;
    let (lease_id, _, _) = server.creds(&role).await;
    server
        .call(
            "PUT",
            "sys/leases/renew",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    let (second, _, _) = server.creds(&role).await;
    server
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": second })),
        )
        .await;

    let response = server
        .http
        .get(format!("{}/v1/sys/metrics?format=prometheus", server.base))
        .header("X-Vault-Token", ROOT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    // The series of this test's role (a unique name), as `sum(name{role="..."})` reads them.
    let value = |name: &str| -> f64 {
        let prefix = format!("{name}{{role=\"{role}\"");
        text.lines()
            .filter(|l| l.starts_with(&prefix))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(value("lessor_leases_active"), 1.0, "{text}");
    assert_eq!(value("lessor_lease_issues_total"), 2.0, "{text}");
    assert_eq!(value("lessor_lease_renewals_total"), 1.0, "{text}");
    assert_eq!(value("lessor_lease_revocations_total"), 1.0, "{text}");
    assert!(text.contains("# TYPE lessor_lease_revocations_total counter"));
    assert!(text.contains("# TYPE lessor_request_duration_seconds histogram"));
    assert!(
        text.contains("lessor_request_duration_seconds_count{route=\"/v1/database/creds/{name}\",method=\"GET\"}"),
        "latency by route template, not raw path:\n{text}"
    );
    assert!(
        !text.contains(&format!("database/creds/{role}")),
        "raw paths never become labels"
    );

    let (status, _) = server
        .call_as(Some("nobody"), "GET", "sys/metrics?format=prometheus", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server.call("GET", "sys/metrics", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    server.revoke_everything().await;
}
