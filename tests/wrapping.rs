//! Response wrapping (issue 12, item 2), against the real PostgreSQL: a wrapped
//! `database/creds/ROLE` answer carries no password, only a single-use wrapping token; unwrapping
//! it once gives a login that works; a second unwrap, an expired token, the losing side of a race
//! and a rewrapped-away token are refused with Vault's 400; the store and the audit log never hold
//! the password or the wrapping token; the credential keeps its lease and is revoked at the end.

mod common;

use std::time::Duration;

use common::*;
use lessor::store::LeaseStore;
use reqwest::StatusCode;
use serde_json::{json, Value};

const INVALID: &str = "wrapping token is not valid or does not exist";

/// Sends a request with `X-Vault-Wrap-TTL: ttl` (and the token, if any).
async fn call_wrapped(
    api: &Api,
    token: Option<&str>,
    method: &str,
    path: &str,
    ttl: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = api
        .http
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}/v1/{path}", api.base),
        )
        .header("X-Vault-Wrap-TTL", ttl);
    if let Some(token) = token {
        request = request.header("X-Vault-Token", token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A server with the local PostgreSQL as `pg` and a role `role` on it.
async fn server_with_role(role: &str) -> TestServer {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    server
        .write_role(role, json!({ "db_name": "pg", "default_ttl": "5m" }))
        .await;
    server
}

/// Asks for `role`'s credentials wrapped; checks the answer is Vault's wrap envelope without the
/// secret and returns its `wrap_info`.
async fn wrapped_creds(server: &TestServer, role: &str, ttl: &str) -> Value {
    let (status, body) = call_wrapped(
        server,
        Some(ROOT_TOKEN),
        "GET",
        &format!("database/creds/{role}"),
        ttl,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"],
        Value::Null,
        "no data in a wrapped answer: {body}"
    );
    assert_eq!(body["auth"], Value::Null, "{body}");
    assert_eq!(body["lease_id"], "", "the lease is inside the wrap: {body}");
    assert!(
        !body.to_string().contains("password"),
        "no password in a wrapped answer: {body}"
    );
    let info = body["wrap_info"].clone();
    assert!(
        info["token"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(
        info["accessor"].as_str().is_some_and(|a| !a.is_empty()),
        "{body}"
    );
    assert_eq!(info["creation_path"], format!("database/creds/{role}"));
    assert!(info["creation_time"].as_str().is_some(), "{body}");
    info
}

/// Unwraps with the wrapping token as the request's only token, as `vault unwrap` does.
async fn unwrap_as(server: &TestServer, wrapping_token: &str) -> (StatusCode, Value) {
    server
        .call_as(Some(wrapping_token), "POST", "sys/wrapping/unwrap", None)
        .await
}

fn assert_invalid(status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0], INVALID, "{body}");
}

async fn live_leases(server: &TestServer, role: &str) -> Vec<String> {
    server
        .state
        .store
        .live_lease_ids_with_prefix(&format!("database/creds/{role}/"), 100)
        .await
        .unwrap()
}

async fn wrapped_rows(server: &TestServer) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM wrapped_responses")
        .fetch_one(server.state.store.sqlite_pool().unwrap())
        .await
        .unwrap()
}

/// Every file of the store (database, WAL, shared memory) as bytes, to search for secrets.
fn store_bytes(server: &TestServer) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = server.store_path().into_os_string();
        name.push(suffix);
        if let Ok(bytes) = std::fs::read(&name) {
            all.extend(bytes);
        }
    }
    assert!(!all.is_empty(), "the store files were found");
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// Revokes `lease_id` and checks the user can no longer log in and is gone from PostgreSQL.
async fn revoke_and_check(server: &TestServer, lease_id: &str, username: &str, password: &str) {
    let (status, body) = server
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(pg_login(username, password).await.is_err(), "login refused");
    assert!(
        !pg_role_exists(&pg_admin().await, username).await,
        "user gone"
    );
}

#[tokio::test]
async fn a_wrapped_credential_is_unwrapped_once_and_its_login_works() {
    assert_postgres_checks_passwords().await;
    let role = unique("wrap");
    let server = server_with_role(&role).await;

    let info = wrapped_creds(&server, &role, "5m").await;
    assert_eq!(info["ttl"], 300, "{info}");
    let token = info["token"].as_str().unwrap().to_owned();
    // The credential was issued and keeps its lease while wrapped.
    assert_eq!(live_leases(&server, &role).await.len(), 1);

    // Lookup, with only the wrapping token (as the request's token, then in the body with no
    // token at all): where and when, never the secret; the token stays usable.
    for (header, body) in [
        (Some(token.as_str()), None),
        (None, Some(json!({ "token": token }))),
    ] {
        let (status, answer) = server
            .call_as(header, "POST", "sys/wrapping/lookup", body)
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(
            answer["data"]["creation_path"],
            format!("database/creds/{role}")
        );
        assert_eq!(answer["data"]["creation_ttl"], 300);
        assert!(answer["data"]["creation_time"].as_str().is_some());
        assert!(!answer.to_string().contains("password"), "{answer}");
    }

    // A wrapping token is not a client token.
    let (status, _) = server
        .call_as(Some(&token), "GET", "auth/token/lookup-self", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server
        .call_as(Some(&token), "GET", &format!("database/creds/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(live_leases(&server, &role).await.len(), 1);

    // Unwrap with nothing but the wrapping token: the whole original answer, lease included.
    let (status, answer) = unwrap_as(&server, &token).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let lease_id = answer["lease_id"].as_str().unwrap().to_owned();
    assert!(lease_id.starts_with(&format!("database/creds/{role}/")));
    assert_eq!(answer["lease_duration"], 300);
    let username = answer["data"]["username"].as_str().unwrap().to_owned();
    let password = answer["data"]["password"].as_str().unwrap().to_owned();
    pg_login(&username, &password)
        .await
        .expect("the unwrapped login works");

    // Single use: a second unwrap, and a lookup, are refused as Vault refuses them.
    let (status, body) = unwrap_as(&server, &token).await;
    assert_invalid(status, &body);
    let (status, body) = server
        .call(
            "POST",
            "sys/wrapping/unwrap",
            Some(json!({ "token": token })),
        )
        .await;
    assert_invalid(status, &body);
    let (status, body) = server
        .call(
            "POST",
            "sys/wrapping/lookup",
            Some(json!({ "token": token })),
        )
        .await;
    assert_invalid(status, &body);

    // Neither the password nor the wrapping token ever reached the store's files (the answer
    // was sealed there until unwrapped), nor the log.
    let stored = store_bytes(&server);
    assert!(
        !contains(&stored, &password),
        "the password is in the store files"
    );
    assert!(
        !contains(&stored, &token),
        "the wrapping token is in the store files"
    );
    server.assert_logs_free_of(&[&password, &token]);

    revoke_and_check(&server, &lease_id, &username, &password).await;
    assert!(live_leases(&server, &role).await.is_empty());
}

#[tokio::test]
async fn the_store_holds_the_wrapped_answer_sealed_until_it_is_unwrapped() {
    let role = unique("wrap-sealed");
    let server = server_with_role(&role).await;
    let info = wrapped_creds(&server, &role, "2m").await;
    let token = info["token"].as_str().unwrap().to_owned();
    // While wrapped: one sealed row, keyed by a hash, the token nowhere in the files.
    let (stored_hash, sealed): (String, String) =
        sqlx::query_as("SELECT token_hash, sealed_response FROM wrapped_responses")
            .fetch_one(server.state.store.sqlite_pool().unwrap())
            .await
            .unwrap();
    assert_eq!(
        stored_hash,
        server.state.auth.hash_token(&token.as_str().into())
    );
    assert!(sealed.starts_with("v1:"), "sealed: {}", &sealed[..8]);
    assert!(!sealed.contains("password") && !sealed.contains("username"));
    assert!(!contains(&store_bytes(&server), &token));

    let (status, answer) = unwrap_as(&server, &token).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let password = answer["data"]["password"].as_str().unwrap();
    assert!(!contains(&store_bytes(&server), password));
    assert_eq!(wrapped_rows(&server).await, 0, "unwrapped: the row is gone");
    revoke_and_check(
        &server,
        answer["lease_id"].as_str().unwrap(),
        answer["data"]["username"].as_str().unwrap(),
        password,
    )
    .await;
}

#[tokio::test]
async fn two_concurrent_unwraps_exactly_one_gets_the_secret() {
    let role = unique("wrap-race");
    let server = server_with_role(&role).await;
    for _ in 0..3 {
        let info = wrapped_creds(&server, &role, "5m").await;
        let token = info["token"].as_str().unwrap().to_owned();
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let api = server.api.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    api.call_as(Some(&token), "POST", "sys/wrapping/unwrap", None)
                        .await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for racer in racers {
            let (status, body) = racer.await.unwrap();
            if status == StatusCode::OK {
                winners.push(body);
            } else {
                assert_invalid(status, &body);
            }
        }
        assert_eq!(winners.len(), 1, "exactly one unwrap wins: {winners:?}");
        let answer = &winners[0];
        let username = answer["data"]["username"].as_str().unwrap();
        let password = answer["data"]["password"].as_str().unwrap();
        pg_login(username, password)
            .await
            .expect("the winner's login works");
        revoke_and_check(
            &server,
            answer["lease_id"].as_str().unwrap(),
            username,
            password,
        )
        .await;
    }
    assert!(live_leases(&server, &role).await.is_empty());
}

#[tokio::test]
async fn an_expired_wrapping_token_is_refused_and_its_answer_removed() {
    let role = unique("wrap-exp");
    let server = server_with_role(&role).await;
    let info = wrapped_creds(&server, &role, "1s").await;
    assert_eq!(info["ttl"], 1);
    let token = info["token"].as_str().unwrap().to_owned();
    // A second answer that nobody asks for again: purged when the next answer is wrapped.
    let (status, body) = call_wrapped(
        &server,
        Some(ROOT_TOKEN),
        "POST",
        "sys/wrapping/wrap",
        "1s",
        Some(json!({ "forgotten": "secret-never-unwrapped" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = server
        .call(
            "POST",
            "sys/wrapping/lookup",
            Some(json!({ "token": token })),
        )
        .await;
    assert_invalid(status, &body);
    let (status, body) = unwrap_as(&server, &token).await;
    assert_invalid(status, &body);
    assert_eq!(wrapped_rows(&server).await, 1, "the refused answer is gone");
    let (status, body) = call_wrapped(
        &server,
        Some(ROOT_TOKEN),
        "POST",
        "sys/wrapping/wrap",
        "1m",
        Some(json!({ "fresh": true })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        wrapped_rows(&server).await,
        1,
        "the forgotten expired answer was purged; only the fresh one is left"
    );

    // The credential inside was never delivered, but its lease is recorded like any other: it is
    // revoked (and the reaper would have expired it).
    let leases = live_leases(&server, &role).await;
    assert_eq!(leases.len(), 1);
    server.revoke_everything().await;
    assert!(live_leases(&server, &role).await.is_empty());
    let left: i64 = pg_admin()
        .await
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1",
            &[&format!("v-{role}-%")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "no user left behind");
}

#[tokio::test]
async fn arbitrary_objects_wrap_rewrap_and_unwrap_unchanged() {
    let server = TestServer::start().await;
    let object = json!({
        "api_key": "an-arbitrary-secret-7e1f",
        "nothing": null,
        "nested": { "list": [1, "two", false] },
    });
    let (status, body) = call_wrapped(
        &server,
        Some(ROOT_TOKEN),
        "POST",
        "sys/wrapping/wrap",
        "90s",
        Some(object.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"], Value::Null);
    assert!(!body.to_string().contains("an-arbitrary-secret"));
    let first = body["wrap_info"].clone();
    assert_eq!(first["creation_path"], "sys/wrapping/wrap");
    assert_eq!(first["ttl"], 90);
    let first_token = first["token"].as_str().unwrap().to_owned();

    // Rewrap: a new token for the same answer, the old one dead at once.
    let (status, body) = server
        .call(
            "POST",
            "sys/wrapping/rewrap",
            Some(json!({ "token": first_token })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = body["wrap_info"].clone();
    let second_token = second["token"].as_str().unwrap().to_owned();
    assert_ne!(second_token, first_token);
    assert_ne!(second["accessor"], first["accessor"]);
    assert_eq!(second["creation_path"], "sys/wrapping/wrap");
    assert_eq!(second["ttl"], 90);
    assert_eq!(body["data"], Value::Null);
    let (status, body) = unwrap_as(&server, &first_token).await;
    assert_invalid(status, &body);
    let (status, body) = server
        .call(
            "POST",
            "sys/wrapping/rewrap",
            Some(json!({ "token": first_token })),
        )
        .await;
    assert_invalid(status, &body);

    // Unwrap the hvac way: the client's token in the header, the wrapping token in the body.
    let (status, body) = server
        .call(
            "POST",
            "sys/wrapping/unwrap",
            Some(json!({ "token": second_token })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"], object,
        "the object comes back exactly as wrapped"
    );
    assert_eq!(wrapped_rows(&server).await, 0);
    server.assert_logs_free_of(&["an-arbitrary-secret-7e1f", &first_token, &second_token]);
}

#[tokio::test]
async fn bad_wrapping_requests_are_refused_by_name_and_nothing_is_stored() {
    let role = unique("wrap-bad");
    let server = server_with_role(&role).await;

    // Malformed, too short or unsupported wrapping headers: refused before anything runs.
    for (ttl, format, field) in [
        ("0", None, "x-vault-wrap-ttl"),
        ("soon", None, "x-vault-wrap-ttl"),
        ("60", Some("jwt"), "x-vault-wrap-format"),
    ] {
        let mut request = server
            .http
            .get(format!("{}/v1/database/creds/{role}", server.base))
            .header("X-Vault-Token", ROOT_TOKEN)
            .header("X-Vault-Wrap-TTL", ttl);
        if let Some(format) = format {
            request = request.header("X-Vault-Wrap-Format", format);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.unwrap();
        assert!(
            body["errors"][0].as_str().unwrap().starts_with(field),
            "{ttl}: {body}"
        );
    }
    assert!(
        live_leases(&server, &role).await.is_empty(),
        "nothing was issued"
    );

    // sys/wrapping/wrap without asking for wrapping would echo the secret back: refused.
    let (status, body) = server
        .call("POST", "sys/wrapping/wrap", Some(json!({ "a": "b" })))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["errors"][0]
        .as_str()
        .unwrap()
        .contains("x-vault-wrap-ttl"));

    // A TTL beyond the server's max is capped at it (24 h by default), as in Vault.
    let (status, body) = call_wrapped(
        &server,
        Some(ROOT_TOKEN),
        "POST",
        "sys/wrapping/wrap",
        "1000h",
        Some(json!({ "a": "b" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["wrap_info"]["ttl"], 24 * 3600);
    let token = body["wrap_info"]["token"].as_str().unwrap().to_owned();

    // Unwrap with no token anywhere; with a wrong client token beside the wrapping token (a bad
    // token is a 403 everywhere, and the answer is not consumed); with a made-up token.
    let (status, body) = server
        .call_as(None, "POST", "sys/wrapping/unwrap", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["errors"][0].as_str().unwrap().starts_with("token:"));
    let (status, _) = server
        .call_as(
            Some("not-a-token-at-all"),
            "POST",
            "sys/wrapping/unwrap",
            Some(json!({ "token": token })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = unwrap_as(&server, "hvs.made-up-wrapping-token").await;
    assert_invalid(status, &body);
    // A client token is not a wrapping token either.
    let (status, body) = unwrap_as(&server, ROOT_TOKEN).await;
    assert_invalid(status, &body);
    let (status, body) = server
        .call_as(
            None,
            "POST",
            "sys/wrapping/unwrap",
            Some(json!({ "token": token, "extra": 1 })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["errors"][0].as_str().unwrap().contains("extra"),
        "{body}"
    );
    // Refused requests consumed nothing: the answer is still there once.
    let (status, body) = unwrap_as(&server, &token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"], json!({ "a": "b" }));
}

#[tokio::test]
async fn a_wrapped_token_creation_names_the_token_inside_and_unwraps_to_a_working_token() {
    let server = TestServer::start().await;
    let (status, body) = call_wrapped(
        &server,
        Some(ROOT_TOKEN),
        "POST",
        "auth/token/create",
        "1m",
        Some(json!({ "policies": ["default"], "ttl": "10m" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["auth"], Value::Null, "{body}");
    let info = &body["wrap_info"];
    let wrapped_accessor = info["wrapped_accessor"].as_str().unwrap().to_owned();
    let (status, answer) = unwrap_as(&server, info["token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["auth"]["accessor"], wrapped_accessor);
    let client_token = answer["auth"]["client_token"].as_str().unwrap();
    let (status, me) = server
        .call_as(Some(client_token), "GET", "auth/token/lookup-self", None)
        .await;
    assert_eq!(status, StatusCode::OK, "the unwrapped token works: {me}");
    let (status, _) = server
        .call_as(Some(client_token), "POST", "auth/token/revoke-self", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn the_audit_log_shows_the_wrap_with_its_token_hmaced_and_never_the_secret() {
    let role = unique("wrap-audit");
    let server = server_with_role(&role).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let (status, body) = server
        .call(
            "PUT",
            "sys/audit/wrapfile",
            Some(json!({ "type": "file", "options": { "file_path": log.display().to_string() } })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let info = wrapped_creds(&server, &role, "5m").await;
    let token = info["token"].as_str().unwrap().to_owned();
    let (status, answer) = unwrap_as(&server, &token).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let password = answer["data"]["password"].as_str().unwrap().to_owned();
    let lease_id = answer["lease_id"].as_str().unwrap().to_owned();

    let (status, hashed) = server
        .call(
            "POST",
            "sys/audit-hash/wrapfile",
            Some(json!({ "input": token })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{hashed}");
    let token_hmac = hashed["data"]["hash"].as_str().unwrap().to_owned();

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(&password),
        "the password is in the audit log"
    );
    assert!(
        !text.contains(&token),
        "the wrapping token is in the audit log"
    );
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let wrap_line = lines
        .iter()
        .find(|l| l["type"] == "response" && l["path"] == format!("database/creds/{role}"))
        .expect("the wrapped answer is audited");
    let recorded = &wrap_line["response"]["wrap_info"];
    assert_eq!(recorded["token"], token_hmac.as_str(), "{wrap_line}");
    assert_eq!(recorded["accessor"], info["accessor"], "{wrap_line}");
    assert_eq!(recorded["ttl"], 300);
    assert_eq!(wrap_line["response"]["data"], Value::Null);
    assert_eq!(
        wrap_line["lease_id"],
        lease_id.as_str(),
        "the wrapped lease is named"
    );
    // The unwrap is audited too: who unwrapped (the wrapping token's HMAC) and the lease it got.
    let unwrap_line = lines
        .iter()
        .find(|l| l["type"] == "response" && l["path"] == "sys/wrapping/unwrap")
        .expect("the unwrap is audited");
    assert_eq!(unwrap_line["identity"]["client_token"], token_hmac.as_str());
    assert_eq!(unwrap_line["lease_id"], lease_id.as_str());
    assert_eq!(unwrap_line["status"], 200);

    revoke_and_check(
        &server,
        &lease_id,
        answer["data"]["username"].as_str().unwrap(),
        &password,
    )
    .await;
    let (status, _) = server.call("DELETE", "sys/audit/wrapfile", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

/// Fail closed still holds with wrapping: when the audit log cannot record the wrapped answer,
/// it is withheld, the credential inside is revoked and the wrap is discarded.
#[tokio::test]
async fn a_wrapped_answer_the_audit_log_cannot_record_is_withheld_and_undone() {
    let role = unique("wrap-withheld");
    let server = server_with_role(&role).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let (status, body) = server
        .call(
            "PUT",
            "sys/audit/wrapfile",
            Some(json!({ "type": "file", "options": { "file_path": log.display().to_string() } })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    server.state.audit.fail_next_response();
    let (status, body) = call_wrapped(
        &server,
        Some(ROOT_TOKEN),
        "GET",
        &format!("database/creds/{role}"),
        "5m",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(body.get("wrap_info").is_none(), "{body}");
    assert!(
        live_leases(&server, &role).await.is_empty(),
        "the lease was revoked"
    );
    assert_eq!(wrapped_rows(&server).await, 0, "the wrap was discarded");
    let left: i64 = pg_admin()
        .await
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1",
            &[&format!("v-{role}-%")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the withheld user was dropped");
    let (status, _) = server.call("DELETE", "sys/audit/wrapfile", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}
