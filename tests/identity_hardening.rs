//! Regression tests for issue 8's identity and parser defects, through the HTTP API of an
//! in-process Lessor (and its library calls where the API has no route yet):
//! - F3: a policy nested 3,000 levels deep is a 400 naming the limit, and the server lives on;
//! - F7: a JWT without `aud` (audiences bound) or without `iss` (issuer bound) is refused;
//! - F11: a JWT `sub` holding a newline and an ANSI escape cannot forge a log line;
//! - F15: a JWKS endpoint that never answers costs each login one 503 within the fetch timeout,
//!   concurrently, not 10, 20, 30 s in a queue;
//! - F10: token hashes are keyed (not SHA-256 of the token), and a store with old SHA-256 rows is
//!   converted at start without breaking their tokens;
//! - F13: tokens form a tree: revoking a parent revokes its children, revoke-orphan keeps them,
//!   a child of an expired parent is refused, orphans need root or sudo.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lessor::auth::tokens::TokenRequest;
use lessor_plugin::Secret;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const ISSUER: &str = "https://issuer.example";

// ---- F3: bounded policy parser ------------------------------------------------------------------

#[tokio::test]
async fn a_policy_nested_3000_deep_is_refused_and_the_server_keeps_answering() {
    let server = TestServer::start().await;
    // The red team's two crashers, ~24 KB each: `{ x = ` and `[` nested 3,000 times.
    let braces = format!("path \"a\" {}1{}", "{ x = ".repeat(3000), "}".repeat(3000));
    let brackets = format!(
        "path \"a\" {{ x = {}1{} }}",
        "[".repeat(3000),
        "]".repeat(3000)
    );
    let json_text = format!("{{\"path\": {}1{}}}", "[".repeat(3000), "]".repeat(3000));
    for policy in [&braces, &brackets, &json_text] {
        let (status, body) = server
            .call(
                "PUT",
                "sys/policies/acl/x",
                Some(json!({ "policy": policy })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            body["errors"][0],
            json!("policy: nesting deeper than 32 levels")
        );
        let (status, _) = server.call("GET", "sys/health", None).await;
        assert_eq!(status, StatusCode::OK, "the server still answers");
    }
    let (status, _) = server.call("GET", "sys/policies/acl/x", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");
}

// ---- JWT helpers ----------------------------------------------------------------------------------

/// An RSA key pair made by openssl: (private PKCS#8 PEM, public SPKI PEM).
fn rsa_key() -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let status = Command::new("openssl")
        .args(["genpkey", "-out"])
        .arg(&key)
        .args(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(status.success());
    let public = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(public.status.success());
    (
        std::fs::read_to_string(&key).unwrap(),
        String::from_utf8(public.stdout).unwrap(),
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims(sub: &str) -> Value {
    json!({ "iss": ISSUER, "aud": ["lessor"], "sub": sub, "iat": now(), "exp": now() + 600 })
}

fn sign(private_pem: &str, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).unwrap()
}

async fn login(server: &TestServer, jwt: &str) -> (StatusCode, Value) {
    server
        .call_as(
            None,
            "POST",
            "auth/jwt/login",
            Some(json!({ "role": "app", "jwt": jwt })),
        )
        .await
}

/// Configures the JWT method (`config`: keys or jwks_url) with a bound issuer, and role `app`
/// bound to audience `lessor`.
async fn jwt_setup(server: &TestServer, mut config: Value) {
    config["bound_issuer"] = json!(ISSUER);
    let (status, body) = server.call("POST", "auth/jwt/config", Some(config)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = server
        .call(
            "POST",
            "auth/jwt/role/app",
            Some(json!({ "role_type": "jwt", "bound_audiences": ["lessor"], "user_claim": "sub" })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

// ---- F7: required claims --------------------------------------------------------------------------

#[tokio::test]
async fn a_jwt_without_aud_or_iss_is_refused_when_they_are_bound() {
    let server = TestServer::start().await;
    let (private, public) = rsa_key();
    jwt_setup(&server, json!({ "jwt_validation_pubkeys": [public] })).await;

    let (status, body) = login(&server, &sign(&private, &claims("good"))).await;
    assert_eq!(status, StatusCode::OK, "the complete token logs in: {body}");

    for (missing, reason) in [("aud", "\"aud\" is missing"), ("iss", "\"iss\" is missing")] {
        let mut without = claims("someone");
        without.as_object_mut().unwrap().remove(missing);
        let (status, body) = login(&server, &sign(&private, &without)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "no {missing}: {body}");
        let message = body["errors"][0].as_str().unwrap();
        assert!(message.contains(reason), "no {missing}: {message}");
        // A null claim is no claim.
        let mut null = claims("someone");
        null[missing] = Value::Null;
        let (status, body) = login(&server, &sign(&private, &null)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "null {missing}: {body}");
    }
    // bound_subject and bound_claims refuse a token that lacks the claim.
    let (status, _) = server
        .call(
            "POST",
            "auth/jwt/role/app",
            Some(json!({ "bound_audiences": ["lessor"], "bound_subject": "good", "bound_claims": { "team": "a" } })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let mut no_sub = claims("good");
    no_sub["team"] = json!("a");
    no_sub.as_object_mut().unwrap().remove("sub");
    let (status, body) = login(&server, &sign(&private, &no_sub)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["errors"][0].as_str().unwrap().contains("\"sub\""),
        "{body}"
    );
    let (status, body) = login(&server, &sign(&private, &claims("good"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["errors"][0].as_str().unwrap().contains("\"team\""),
        "{body}"
    );
    let mut complete = claims("good");
    complete["team"] = json!("a");
    let (status, body) = login(&server, &sign(&private, &complete)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

// ---- F11: caller values are escaped in the log ----------------------------------------------------

#[tokio::test]
async fn a_user_claim_with_a_newline_and_an_escape_cannot_forge_a_log_line() {
    let server = TestServer::start().await;
    let (private, public) = rsa_key();
    jwt_setup(&server, json!({ "jwt_validation_pubkeys": [public] })).await;
    let marker = unique("forged");
    let sub = format!("{marker}\n\u{1b}[31mFAKE");
    let (status, body) = login(&server, &sign(&private, &claims(&sub))).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let text = server.logs.text();
    let line = text
        .lines()
        .find(|l| l.contains(&marker) && l.contains("JWT login accepted"))
        .expect("the login was logged");
    assert!(line.contains("\\n"), "the newline is escaped: {line}");
    assert!(
        !text.contains(&format!("{marker}\n")),
        "a raw newline followed the user claim"
    );
    assert!(!text.contains('\u{1b}'), "a raw escape reached the log");
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("[31mFAKE") || l.starts_with("FAKE")),
        "a forged line"
    );
}

// ---- F15: a stalled JWKS endpoint -----------------------------------------------------------------

#[tokio::test]
async fn a_jwks_endpoint_that_never_answers_gives_concurrent_logins_a_prompt_503() {
    let server = TestServer::start().await;
    // Accepts connections and never answers; the accepted sockets are kept open until the end.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            open.push(socket);
        }
    });
    jwt_setup(&server, json!({ "jwks_url": jwks_url })).await;
    let (private, _) = rsa_key();
    let jwt = sign(&private, &claims("stalled"));

    let started = Instant::now();
    let logins: Vec<_> = (0..3)
        .map(|_| {
            let api = server.api.clone();
            let jwt = jwt.clone();
            tokio::spawn(async move {
                let answer = api
                    .call_as(
                        None,
                        "POST",
                        "auth/jwt/login",
                        Some(json!({ "role": "app", "jwt": jwt })),
                    )
                    .await;
                (answer, started.elapsed())
            })
        })
        .collect();
    for login in logins {
        let ((status, body), took) = login.await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let message = body["errors"][0].as_str().unwrap();
        assert!(message.contains(&jwks_url), "names the endpoint: {message}");
        // One shared 5 s fetch, not 5 + 5 + 5 in a queue (nor the old 10, 20, 30 s).
        assert!(took < Duration::from_secs(8), "answered after {took:?}");
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one fetch served all three logins"
    );
    // A login right after is answered at once from the recorded failure, not another wait.
    let started = Instant::now();
    let (status, _) = login(&server, &jwt).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(1));
    let (status, _) = server.call("GET", "sys/health", None).await;
    assert_eq!(status, StatusCode::OK);
    hold.abort();
}

// ---- F10: keyed token hashes ----------------------------------------------------------------------

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

async fn stored_hashes(server: &TestServer) -> Vec<String> {
    sqlx::query_scalar("SELECT token_hash FROM tokens")
        .fetch_all(server.state.store.sqlite_pool().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn token_hashes_are_keyed_and_old_sha256_rows_still_log_in_after_conversion() {
    let dir = tempfile::tempdir().unwrap();
    // A store as an older Lessor left it: a token stored as plain SHA-256.
    let old_token = "hvs.OLDFORMATTOKEN0123456789";
    {
        let store = lessor::store::Store::open(&dir.path().join("lessor.db").display().to_string())
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO tokens (token_hash, accessor, display_name, policies, created_at, expires_at)
             VALUES (?, 'old-accessor', 'token', '[\"default\"]', 0, NULL)",
        )
        .bind(sha256_hex(old_token))
        .execute(store.sqlite_pool().unwrap())
        .await
        .unwrap();
        store.close().await;
    }
    let server = TestServer::start_in(dir.path()).await;
    let (status, me) = server
        .call_as(Some(old_token), "GET", "auth/token/lookup-self", None)
        .await;
    assert_eq!(status, StatusCode::OK, "the converted token logs in: {me}");
    assert_eq!(me["data"]["accessor"], json!("old-accessor"));

    let (status, created) = server
        .call(
            "POST",
            "auth/token/create",
            Some(json!({ "policies": ["default"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let new_token = created["auth"]["client_token"].as_str().unwrap().to_owned();
    let hashes = stored_hashes(&server).await;
    assert_eq!(hashes.len(), 3, "root, the old token and the new one");
    for token in [old_token, ROOT_TOKEN, new_token.as_str()] {
        assert!(
            !hashes.contains(&sha256_hex(token)),
            "a token is stored as its bare SHA-256"
        );
    }
    server.stop().await;

    // The conversion runs once: a restart leaves the hashes as they are and every token works.
    let server = TestServer::start_in(dir.path()).await;
    assert_eq!(stored_hashes(&server).await.len(), 3);
    for token in [old_token, ROOT_TOKEN, new_token.as_str()] {
        let (status, _) = server
            .call_as(Some(token), "GET", "auth/token/lookup-self", None)
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    server.stop().await;
}

// ---- F13: tokens as a tree ------------------------------------------------------------------------

/// Creates a token as `parent` (root when `None`); returns (token, accessor).
async fn child_of(server: &TestServer, parent: Option<&str>, extra: Value) -> (String, String) {
    let mut body = json!({ "policies": ["default"] });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, answer) = server
        .call_as(
            Some(parent.unwrap_or(ROOT_TOKEN)),
            "POST",
            "auth/token/create",
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    (
        answer["auth"]["client_token"].as_str().unwrap().to_owned(),
        answer["auth"]["accessor"].as_str().unwrap().to_owned(),
    )
}

async fn works(server: &TestServer, token: &str) -> bool {
    let (status, _) = server
        .call_as(Some(token), "GET", "auth/token/lookup-self", None)
        .await;
    match status {
        StatusCode::OK => true,
        StatusCode::FORBIDDEN => false,
        other => panic!("lookup-self answered {other}"),
    }
}

/// A policy `maker` that lets a token create child tokens (the default policy does not).
async fn allow_child_tokens(server: &TestServer) {
    let (status, body) = server
        .call(
            "PUT",
            "sys/policies/acl/maker",
            Some(json!({ "policy": "path \"auth/token/create\" { capabilities = [\"update\"] }" })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

#[tokio::test]
async fn revoking_a_token_revokes_its_subtree() {
    let server = TestServer::start().await;
    allow_child_tokens(&server).await;
    let maker = json!({ "policies": ["maker"] });
    let (parent, parent_accessor) = child_of(&server, None, maker.clone()).await;
    let (child, child_accessor) = child_of(&server, Some(&parent), maker.clone()).await;
    let (grandchild, grandchild_accessor) = child_of(&server, Some(&child), json!({})).await;
    let (sibling, _) = child_of(&server, None, json!({})).await;
    let (status, me) = server
        .call_as(Some(&child), "GET", "auth/token/lookup-self", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        me["data"]["orphan"],
        json!(false),
        "a created token has a parent"
    );

    // revoke-self on the parent: the whole subtree is refused at once, the sibling is untouched.
    let (status, _) = server
        .call_as(Some(&parent), "POST", "auth/token/revoke-self", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for token in [&parent, &child, &grandchild] {
        assert!(
            !works(&server, token).await,
            "a revoked subtree token still works"
        );
    }
    assert!(works(&server, &sibling).await);
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens WHERE accessor IN (?, ?, ?)")
        .bind(&parent_accessor)
        .bind(&child_accessor)
        .bind(&grandchild_accessor)
        .fetch_one(server.state.store.sqlite_pool().unwrap())
        .await
        .unwrap();
    assert_eq!(left, 0, "the subtree's rows are gone");

    // The library call the API uses returns every revoked accessor, for lease revocation.
    let (parent, parent_accessor) = child_of(&server, None, maker.clone()).await;
    let (_, child_accessor) = child_of(&server, Some(&parent), json!({})).await;
    let mut revoked = server
        .state
        .auth
        .revoke_tree(&parent_accessor)
        .await
        .unwrap();
    revoked.sort();
    let mut expected = vec![parent_accessor, child_accessor];
    expected.sort();
    assert_eq!(revoked, expected);
}

#[tokio::test]
async fn revoke_orphan_keeps_the_children_working() {
    let server = TestServer::start().await;
    allow_child_tokens(&server).await;
    let (parent, parent_accessor) = child_of(&server, None, json!({ "policies": ["maker"] })).await;
    let (child, _) = child_of(&server, Some(&parent), json!({})).await;
    let revoked = server
        .state
        .auth
        .revoke_orphan(&parent_accessor)
        .await
        .unwrap();
    assert_eq!(revoked, vec![parent_accessor]);
    assert!(!works(&server, &parent).await);
    assert!(
        works(&server, &child).await,
        "the child lives on as an orphan"
    );
    let (_, me) = server
        .call_as(Some(&child), "GET", "auth/token/lookup-self", None)
        .await;
    assert_eq!(me["data"]["orphan"], json!(true));
}

#[tokio::test]
async fn a_child_of_an_expired_parent_is_refused_and_tidied_with_it() {
    let server = TestServer::start().await;
    allow_child_tokens(&server).await;
    let (parent, parent_accessor) =
        child_of(&server, None, json!({ "policies": ["maker"], "ttl": "1h" })).await;
    let (child, child_accessor) = child_of(&server, Some(&parent), json!({})).await;
    assert!(works(&server, &child).await);
    // The parent expires (moved into the past rather than waited for), through the store so
    // that its read cache hears of it as it would of any renewal.
    use lessor::store::IdentityStore;
    server
        .state
        .store
        .renew_token(
            &parent_accessor,
            chrono::DateTime::from_timestamp_millis(1).unwrap(),
        )
        .await
        .unwrap();
    assert!(!works(&server, &parent).await);
    assert!(
        !works(&server, &child).await,
        "the child of an expired parent is refused"
    );
    let (status, _) = server
        .call(
            "POST",
            "auth/token/lookup-accessor",
            Some(json!({ "accessor": child_accessor })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "nor can it be looked up");
    // Housekeeping removes the expired token with its subtree and reports both accessors.
    let mut removed =
        lessor::audit::housekeeping::tidy(&server.state.store, &server.state.monitor).await;
    removed.sort();
    let mut expected = vec![parent_accessor, child_accessor];
    expected.sort();
    assert_eq!(removed, expected);
}

#[tokio::test]
async fn orphans_are_made_only_by_root_or_a_sudo_caller() {
    let server = TestServer::start().await;
    allow_child_tokens(&server).await;
    let (maker, maker_accessor) = child_of(&server, None, json!({ "policies": ["maker"] })).await;
    let identity = server
        .state
        .auth
        .authenticate(Some(&Secret::new(maker.clone())))
        .await
        .unwrap();
    let request = || TokenRequest {
        policies: Some(vec!["default".into()]),
        ..TokenRequest::default()
    };
    let err = server
        .state
        .auth
        .create_orphan_token(&identity, false, request())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no_parent"), "{err}");
    let orphan = server
        .state
        .auth
        .create_orphan_token(&identity, true, request())
        .await
        .unwrap();
    assert!(orphan.orphan);
    server
        .state
        .auth
        .revoke_tree(&maker_accessor)
        .await
        .unwrap();
    assert!(
        works(&server, orphan.token.expose()).await,
        "an orphan outlives its creator"
    );
    let root = server
        .state
        .auth
        .authenticate(Some(&Secret::new(ROOT_TOKEN)))
        .await
        .unwrap();
    assert!(server
        .state
        .auth
        .create_orphan_token(&root, false, request())
        .await
        .is_ok());
}
