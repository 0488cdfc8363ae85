//! Identity end to end through the HTTP API against the real PostgreSQL: ACL policies (allowed and
//! denied paths, deny wins, sudo), tokens (create, lookup, renew, revoke, expiry, hashes only),
//! workload identity (JWT login with RS256, ES256 and a JWKS-served EdDSA key; expired, wrongly
//! signed, wrong-audience, wrong-issuer and wrong-claim tokens refused) and lease ownership.

mod common;

use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

const READONLY: &str = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE pg_read_all_data;";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

async fn server_with_roles(roles: &[&str]) -> TestServer {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    for role in roles {
        server
            .write_role(role, json!({ "db_name": "pg", "creation_statements": [READONLY], "default_ttl": "10m", "max_ttl": "1h" }))
            .await;
    }
    server
}

async fn write_policy(server: &TestServer, name: &str, text: &str) {
    let (status, body) = server
        .call(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": text })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "policy {name}: {body}");
}

/// A token with `policies`, made by root; returns (token, accessor).
async fn token_with(server: &TestServer, policies: &[&str], extra: Value) -> (String, String) {
    let mut body = json!({ "policies": policies });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, answer) = server.call("POST", "auth/token/create", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    (
        answer["auth"]["client_token"].as_str().unwrap().to_owned(),
        answer["auth"]["accessor"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn policies_allow_what_they_grant_and_nothing_else() {
    let app = unique("app");
    let admin = unique("admin");
    let server = server_with_roles(&[&app, &admin]).await;
    write_policy(
        &server,
        "app-reader",
        &format!(
            r#"
            # The app reads its own credentials and nothing else.
            path "database/creds/{app}" {{ capabilities = ["read"] }}
            path "auth/token/create" {{ capabilities = ["update"] }}
            path "sys/leases/revoke-prefix/*" {{ capabilities = ["update"] }}
            "#
        ),
    )
    .await;
    // JSON syntax works too.
    write_policy(
        &server,
        "roles-lister",
        r#"{"path": {"database/roles/": {"capabilities": ["list"]}}}"#,
    )
    .await;
    let (token, _) = token_with(&server, &["app-reader", "roles-lister"], json!({})).await;
    let t = Some(token.as_str());

    let (status, body) = server
        .call_as(t, "GET", &format!("database/creds/{app}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "granted path: {body}");
    for (method, path) in [
        ("GET", format!("database/creds/{admin}")),
        ("POST", "database/config/pg".to_owned()),
        ("GET", "database/config/pg".to_owned()),
        ("DELETE", format!("database/roles/{app}")),
        ("LIST", "sys/leases/lookup/database/creds/".to_owned()),
        ("GET", "sys/policies/acl/app-reader".to_owned()),
        ("PUT", "sys/audit/file".to_owned()),
    ] {
        let (status, body) = server.call_as(t, method, &path, Some(json!({}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        assert_eq!(body, json!({ "errors": ["permission denied"] }));
    }
    let (status, body) = server.call_as(t, "LIST", "database/roles", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "JSON policy grants the listing: {body}"
    );
    // The default policy lets every token look itself up.
    let (status, me) = server
        .call_as(t, "GET", "auth/token/lookup-self", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        me["data"]["policies"],
        json!(["app-reader", "default", "roles-lister"])
    );
    // A path that needs sudo is refused without it, even with the capability.
    let (status, _) = server
        .call_as(
            t,
            "PUT",
            &format!("sys/leases/revoke-prefix/database/creds/{app}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "revoke-prefix needs sudo");

    // A child token holds at most its parent's policies.
    let (status, body) = server
        .call_as(
            t,
            "POST",
            "auth/token/create",
            Some(json!({ "policies": ["root"] })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["errors"][0].as_str().unwrap().contains("subset"),
        "{body}"
    );
    let (status, child) = server
        .call_as(
            t,
            "POST",
            "auth/token/create",
            Some(json!({ "policies": ["app-reader"], "ttl": "5m" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{child}");
    assert_eq!(child["auth"]["policies"], json!(["app-reader", "default"]));

    // Deny wins over a grant from another policy, at once.
    write_policy(
        &server,
        "no-app",
        &format!(r#"path "database/creds/{app}" {{ capabilities = ["deny"] }}"#),
    )
    .await;
    let (denied, _) = token_with(&server, &["app-reader", "no-app"], json!({})).await;
    let (status, _) = server
        .call_as(Some(&denied), "GET", &format!("database/creds/{app}"), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "deny wins");

    // Policies are readable, listable and deletable; a deleted policy grants nothing any more.
    let (_, read) = server
        .call("GET", "sys/policies/acl/app-reader", None)
        .await;
    assert!(
        read["data"]["policy"]
            .as_str()
            .unwrap()
            .contains("database/creds/"),
        "{read}"
    );
    let (_, list) = server.call("LIST", "sys/policies/acl", None).await;
    for name in ["app-reader", "default", "no-app", "root", "roles-lister"] {
        assert!(
            list["data"]["keys"]
                .as_array()
                .unwrap()
                .contains(&json!(name)),
            "{list}"
        );
    }
    let (_, legacy) = server.call("GET", "sys/policy", None).await;
    assert!(
        legacy["policies"]
            .as_array()
            .unwrap()
            .contains(&json!("app-reader")),
        "{legacy}"
    );
    let (status, _) = server
        .call("DELETE", "sys/policies/acl/app-reader", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server
        .call_as(t, "GET", &format!("database/creds/{app}"), None)
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the deleted policy no longer grants"
    );

    // Bad policies are refused with the reason; root and default are protected.
    let (status, body) = server
        .call(
            "PUT",
            "sys/policies/acl/bad",
            Some(json!({ "policy": "path \"x\" { capabilities = [\"fly\"] }" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("unknown capability"),
        "{body}"
    );
    let (status, _) = server
        .call(
            "PUT",
            "sys/policies/acl/root",
            Some(json!({ "policy": "" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server
        .call("DELETE", "sys/policies/acl/default", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    server.revoke_everything().await;
}

#[tokio::test]
async fn sudo_and_allowed_roles_are_enforced() {
    let app = unique("app");
    let server = server_with_roles(&[&app]).await;
    write_policy(
        &server,
        "operator",
        r#"
        path "sys/leases/*" { capabilities = ["update", "list", "sudo"] }
        path "database/creds/*" { capabilities = ["read"] }
        "#,
    )
    .await;
    let (operator, _) = token_with(&server, &["operator"], json!({})).await;
    let (lease_id, _, _) = server.creds(&app).await;
    let (status, listed) = server
        .call_as(
            Some(&operator),
            "LIST",
            &format!("sys/leases/lookup/database/creds/{app}/"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let (status, _) = server
        .call_as(
            Some(&operator),
            "PUT",
            &format!("sys/leases/revoke-prefix/database/creds/{app}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "sudo allows revoke-prefix");
    // A revoked lease answers "invalid lease" (400), as in Vault.
    let (status, lookup) = server
        .call(
            "PUT",
            "sys/leases/lookup",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{lookup}");

    // A connection's allowed_roles still applies whatever the policies say.
    let other = unique("other");
    server
        .call(
            "POST",
            "database/config/pg-narrow",
            Some(json!({ "plugin_name": "postgresql-database-plugin", "connection_url": postgres_url(), "allowed_roles": ["only-this-one"] })),
        )
        .await;
    server
        .write_role(
            &other,
            json!({ "db_name": "pg-narrow", "creation_statements": [READONLY] }),
        )
        .await;
    let (status, body) = server
        .call_as(
            Some(&operator),
            "GET",
            &format!("database/creds/{other}"),
            None,
        )
        .await;
    assert!(status.is_client_error(), "{status} {body}");
    assert!(
        body["errors"][0].as_str().unwrap().contains("allowed"),
        "{body}"
    );
    server.revoke_everything().await;
}

#[tokio::test]
async fn tokens_are_created_renewed_revoked_and_stored_as_hashes() {
    let server = TestServer::start().await;
    write_policy(
        &server,
        "reader",
        r#"path "database/creds/*" { capabilities = ["read"] }"#,
    )
    .await;
    let (status, created) = server
        .call(
            "POST",
            "auth/token/create",
            Some(json!({ "policies": ["reader"], "ttl": "10m", "explicit_max_ttl": "15m", "display_name": "ci job", "meta": { "team": "payments" } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let token = created["auth"]["client_token"].as_str().unwrap().to_owned();
    let accessor = created["auth"]["accessor"].as_str().unwrap().to_owned();
    assert_eq!(created["auth"]["lease_duration"], json!(600));
    assert_eq!(created["auth"]["renewable"], json!(true));
    assert_eq!(created["auth"]["policies"], json!(["default", "reader"]));

    let (status, me) = server
        .call_as(Some(&token), "GET", "auth/token/lookup-self", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["data"]["display_name"], json!("token-cijob"));
    assert_eq!(me["data"]["accessor"], json!(accessor));
    assert_eq!(me["data"]["id"], json!(token));
    assert_eq!(me["data"]["meta"], json!({ "team": "payments" }));
    assert_eq!(me["data"]["explicit_max_ttl"], json!(900));
    assert!(me["data"]["ttl"].as_i64().unwrap() > 590);

    // Operators look tokens up by value or by accessor (without the value).
    let (status, by_token) = server
        .call("POST", "auth/token/lookup", Some(json!({ "token": token })))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_token["data"]["accessor"], json!(accessor));
    let (status, by_accessor) = server
        .call(
            "POST",
            "auth/token/lookup-accessor",
            Some(json!({ "accessor": accessor })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_accessor["data"]["id"], json!(""));
    assert_eq!(
        by_accessor["data"]["policies"],
        json!(["default", "reader"])
    );
    // ...which a plain token may not.
    let (status, _) = server
        .call_as(
            Some(&token),
            "POST",
            "auth/token/lookup-accessor",
            Some(json!({ "accessor": accessor })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Renewal is capped by the explicit max TTL.
    let (status, renewed) = server
        .call_as(
            Some(&token),
            "PUT",
            "auth/token/renew-self",
            Some(json!({ "increment": "1h" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    let ttl = renewed["auth"]["lease_duration"].as_u64().unwrap();
    assert!((890..=900).contains(&ttl), "{renewed}");
    assert!(
        renewed["warnings"][0].as_str().unwrap().contains("capped"),
        "{renewed}"
    );

    // Tokens are stored only as SHA-256 hashes.
    for suffix in ["", "-wal"] {
        let path = format!("{}{suffix}", server.store_path().display());
        if let Ok(bytes) = std::fs::read(&path) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(&token) && !text.contains(ROOT_TOKEN),
                "a token in clear in {path}"
            );
        }
    }

    // Revoke-self: the token stops working at once.
    let (status, _) = server
        .call_as(Some(&token), "POST", "auth/token/revoke-self", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server
        .call_as(Some(&token), "GET", "auth/token/lookup-self", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // An expired token stops working at once; a non-renewable one cannot be renewed.
    let (short, short_accessor) = token_with(
        &server,
        &["reader"],
        json!({ "ttl": 1, "renewable": false }),
    )
    .await;
    let (status, body) = server
        .call_as(Some(&short), "PUT", "auth/token/renew-self", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (status, _) = server
        .call_as(Some(&short), "GET", "auth/token/lookup-self", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "expired");
    let (status, _) = server
        .call(
            "POST",
            "auth/token/lookup-accessor",
            Some(json!({ "accessor": short_accessor })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an expired token is not found"
    );
    // Housekeeping removes expired tokens from the store.
    lessor::audit::housekeeping::tidy(&server.state.store, &server.state.monitor).await;
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens WHERE accessor = ?")
        .bind(&short_accessor)
        .fetch_one(server.state.store.sqlite_pool().unwrap())
        .await
        .unwrap();
    assert_eq!(left, 0, "the expired token was tidied away");

    // Revoke by accessor.
    let (other, other_accessor) = token_with(&server, &["reader"], json!({})).await;
    let (status, _) = server
        .call(
            "POST",
            "auth/token/revoke-accessor",
            Some(json!({ "accessor": other_accessor })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server
        .call_as(Some(&other), "GET", "auth/token/lookup-self", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    server.assert_logs_free_of(&[&token, &other]);
    server.revoke_everything().await;
}

// ---- JWT --------------------------------------------------------------------------------------

/// A key pair made by openssl, as PEM: (private PKCS#8, public SPKI).
fn openssl_key(args: &[&str]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let status = Command::new("openssl")
        .args(["genpkey", "-out"])
        .arg(&key)
        .args(args)
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

fn rsa_key() -> (String, String) {
    openssl_key(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
}

fn ec_key() -> (String, String) {
    openssl_key(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
}

/// An Ed25519 key: (private PEM, the JWK `x` of its public key).
fn ed_key() -> (String, String) {
    let (private, _) = openssl_key(&["-algorithm", "ED25519"]);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, &private).unwrap();
    let der = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(der.status.success());
    let raw = &der.stdout[der.stdout.len() - 32..];
    (private, URL_SAFE_NO_PAD.encode(raw))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Kubernetes-shaped service-account claims.
fn sa_claims(namespace: &str, name: &str) -> Value {
    json!({
        "iss": ISSUER,
        "aud": ["lessor"],
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "iat": now(),
        "nbf": now() - 5,
        "exp": now() + 600,
        "kubernetes.io": { "namespace": namespace, "serviceaccount": { "name": name, "uid": "1c6e" } },
    })
}

fn sign(alg: Algorithm, kid: Option<&str>, private_pem: &str, claims: &Value) -> String {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(private_pem.as_bytes()).unwrap(),
        Algorithm::HS256 => EncodingKey::from_secret(private_pem.as_bytes()),
        other => panic!("{other:?}"),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

async fn login(server: &TestServer, role: &str, jwt: &str) -> (StatusCode, Value) {
    server
        .call_as(
            None,
            "POST",
            "auth/jwt/login",
            Some(json!({ "role": role, "jwt": jwt })),
        )
        .await
}

async fn jwt_setup(server: &TestServer, app: &str, pubkeys: &[&str]) {
    let (status, body) = server
        .call(
            "POST",
            "auth/jwt/config",
            Some(json!({ "jwt_validation_pubkeys": pubkeys, "bound_issuer": ISSUER })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    write_policy(
        server,
        "billing",
        &format!(
            r#"path "database/creds/{app}" {{ capabilities = ["read"] }}
               path "sys/leases/revoke" {{ capabilities = ["update"] }}"#
        ),
    )
    .await;
    let (status, body) = server
        .call(
            "POST",
            "auth/jwt/role/billing",
            Some(json!({
                "role_type": "jwt",
                "bound_audiences": ["lessor"],
                "bound_claims": { "/kubernetes.io/namespace": ["apps", "apps-canary"] },
                "user_claim": "sub",
                "claim_mappings": { "/kubernetes.io/serviceaccount/name": "service_account" },
                "token_policies": ["billing"],
                "token_ttl": "10m",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

#[tokio::test]
async fn jwt_login_accepts_good_service_account_tokens_and_refuses_bad_ones() {
    let app = unique("app");
    let server = server_with_roles(&[&app]).await;
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_file = audit_dir.path().join("audit.log");
    let (status, _) = server
        .call(
            "PUT",
            "sys/audit/file",
            Some(json!({ "type": "file", "options": { "file_path": audit_file } })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (rsa_private, rsa_public) = rsa_key();
    let (ec_private, ec_public) = ec_key();
    jwt_setup(&server, &app, &[&rsa_public, &ec_public]).await;
    let (_, role) = server.call("GET", "auth/jwt/role/billing", None).await;
    assert_eq!(role["data"]["token_ttl"], json!(600));
    assert_eq!(role["data"]["bound_audiences"], json!(["lessor"]));

    // A good RS256 service-account token logs in and gets the role's policies.
    let good = sign(
        Algorithm::RS256,
        None,
        &rsa_private,
        &sa_claims("apps", "billing"),
    );
    let (status, body) = login(&server, "billing", &good).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let auth = &body["auth"];
    assert_eq!(auth["policies"], json!(["billing", "default"]));
    assert_eq!(auth["token_policies"], json!(["billing", "default"]));
    assert_eq!(auth["lease_duration"], json!(600));
    assert_eq!(auth["renewable"], json!(true));
    assert_eq!(
        auth["metadata"],
        json!({ "role": "billing", "service_account": "billing" })
    );
    let client_token = auth["client_token"].as_str().unwrap().to_owned();
    let (status, creds) = server
        .call_as(
            Some(&client_token),
            "GET",
            &format!("database/creds/{app}"),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the workload gets its credentials: {creds}"
    );
    let (status, _) = server
        .call_as(Some(&client_token), "GET", "database/config/pg", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "and nothing else");
    let (_, me) = server
        .call_as(Some(&client_token), "GET", "auth/token/lookup-self", None)
        .await;
    assert_eq!(
        me["data"]["display_name"],
        json!("jwt-system:serviceaccount:apps:billing")
    );
    assert_eq!(me["data"]["path"], json!("auth/jwt/login/billing"));

    // ES256 with the second configured key works too.
    let (status, body) = login(
        &server,
        "billing",
        &sign(
            Algorithm::ES256,
            None,
            &ec_private,
            &sa_claims("apps-canary", "billing"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Bad tokens are refused with 403 and a reason that never quotes the token.
    let (other_private, _) = rsa_key();
    let mut expired = sa_claims("apps", "billing");
    expired["exp"] = json!(now() - 3600);
    expired["iat"] = json!(now() - 7200);
    expired["nbf"] = json!(now() - 7200);
    let mut wrong_aud = sa_claims("apps", "billing");
    wrong_aud["aud"] = json!(["vault"]);
    let mut wrong_iss = sa_claims("apps", "billing");
    wrong_iss["iss"] = json!("https://evil.example");
    let mut no_exp = sa_claims("apps", "billing");
    no_exp.as_object_mut().unwrap().remove("exp");
    let cases = [
        (
            sign(Algorithm::RS256, None, &rsa_private, &expired),
            "expired",
        ),
        (
            sign(
                Algorithm::RS256,
                None,
                &other_private,
                &sa_claims("apps", "billing"),
            ),
            "signature",
        ),
        (
            sign(Algorithm::RS256, None, &rsa_private, &wrong_aud),
            "audience",
        ),
        (
            sign(Algorithm::RS256, None, &rsa_private, &wrong_iss),
            "issuer",
        ),
        (
            sign(
                Algorithm::RS256,
                None,
                &rsa_private,
                &sa_claims("kube-system", "billing"),
            ),
            "bound_claims",
        ),
        (sign(Algorithm::RS256, None, &rsa_private, &no_exp), "exp"),
        (
            sign(
                Algorithm::HS256,
                None,
                "shared-secret",
                &sa_claims("apps", "billing"),
            ),
            "symmetric",
        ),
        ("not.a.jwt".to_owned(), "malformed"),
    ];
    let mut refused_jwts = Vec::new();
    for (jwt, reason) in cases {
        let (status, body) = login(&server, "billing", &jwt).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{reason}: {body}");
        let message = body["errors"][0].as_str().unwrap();
        assert!(message.starts_with("permission denied"), "{message}");
        assert!(message.contains(reason), "{reason}: {message}");
        assert!(!message.contains(&jwt));
        refused_jwts.push(jwt);
    }
    let (status, body) = login(&server, "no-such-role", &good).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Every login, good or bad, is audited; no JWT or token appears in clear anywhere.
    let audit = std::fs::read_to_string(&audit_file).unwrap();
    let logins: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["path"] == json!("auth/jwt/login") && e["type"] == json!("response"))
        .collect();
    assert_eq!(
        logins.len(),
        11,
        "two good logins, eight refusals, one unknown role"
    );
    assert_eq!(
        logins.iter().filter(|e| e["status"] == json!(403)).count(),
        8
    );
    assert!(logins.iter().all(|e| e["role"].is_string()));
    let refusal = logins.iter().find(|e| e["status"] == json!(403)).unwrap();
    assert!(
        refusal["error"].as_str().unwrap().contains("expired"),
        "{refusal}"
    );
    assert!(
        refusal["data"]["jwt"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:"),
        "{refusal}"
    );
    for secret in refused_jwts.iter().chain([&good, &client_token]) {
        assert!(
            !audit.contains(secret.as_str()),
            "a JWT or token in clear in the audit log"
        );
    }
    server.assert_logs_free_of(&[&good, &client_token]);
    server.revoke_everything().await;
}

#[tokio::test]
async fn jwt_login_with_keys_from_a_jwks_url() {
    let server = TestServer::start().await;
    let (ed_private, x) = ed_key();
    let jwks = json!({ "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "alg": "EdDSA", "use": "sig" }] });
    // The JWKS is served on loopback, as a cluster's API server would serve its own.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/openid/v1/jwks", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/openid/v1/jwks",
        axum::routing::get(move || async move { axum::Json(jwks.clone()) }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (status, body) = server
        .call(
            "POST",
            "auth/jwt/config",
            Some(json!({ "jwks_url": jwks_url, "bound_issuer": ISSUER })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = server
        .call(
            "POST",
            "auth/jwt/role/k8s",
            Some(json!({ "role_type": "jwt", "bound_audiences": "lessor", "user_claim": "sub",
                         "bound_subject": "system:serviceaccount:apps:web", "token_policies": "default" })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = login(
        &server,
        "k8s",
        &sign(
            Algorithm::EdDSA,
            Some("k1"),
            &ed_private,
            &sa_claims("apps", "web"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = login(
        &server,
        "k8s",
        &sign(
            Algorithm::EdDSA,
            Some("k2"),
            &ed_private,
            &sa_claims("apps", "web"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "unknown key id: {body}");
    let (status, body) = login(
        &server,
        "k8s",
        &sign(
            Algorithm::EdDSA,
            Some("k1"),
            &ed_private,
            &sa_claims("apps", "db"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "bound_subject: {body}");
    assert!(
        body["errors"][0].as_str().unwrap().contains("subject"),
        "{body}"
    );

    // Configuration mistakes are refused when written, not at login.
    for (config, expected) in [
        (
            json!({ "jwt_validation_pubkeys": ["not a key"] }),
            "jwt_validation_pubkeys",
        ),
        (json!({}), "exactly one"),
        (
            json!({ "oidc_discovery_url": "https://accounts.example" }),
            "oidc_discovery_url",
        ),
    ] {
        let (status, body) = server.call("POST", "auth/jwt/config", Some(config)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["errors"][0].as_str().unwrap().contains(expected),
            "{body}"
        );
    }
    let (status, body) = server
        .call(
            "POST",
            "auth/jwt/role/x",
            Some(json!({ "role_type": "oidc" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (_, roles) = server.call("LIST", "auth/jwt/role", None).await;
    assert_eq!(roles["data"]["keys"], json!(["k8s"]));
}

#[tokio::test]
async fn an_identity_cannot_touch_another_identitys_leases() {
    let app = unique("app");
    let server = server_with_roles(&[&app]).await;
    write_policy(
        &server,
        "app",
        &format!(
            r#"path "database/creds/{app}" {{ capabilities = ["read"] }}
               path "sys/leases/revoke" {{ capabilities = ["update"] }}
               path "sys/leases/revoke/*" {{ capabilities = ["update"] }}"#
        ),
    )
    .await;
    write_policy(
        &server,
        "ops",
        r#"path "sys/leases/*" { capabilities = ["update", "sudo"] }"#,
    )
    .await;
    let (alice, _) = token_with(&server, &["app"], json!({})).await;
    let (bob, _) = token_with(&server, &["app"], json!({})).await;
    // Without `default`, whose exact `sys/leases/lookup` rule would govern that path (exact
    // beats glob, as in Vault) and grant no sudo there.
    let (ops, _) = token_with(&server, &["ops"], json!({ "no_default_policy": true })).await;
    let (status, issued) = server
        .call_as(Some(&alice), "GET", &format!("database/creds/{app}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let lease_id = issued["lease_id"].as_str().unwrap().to_owned();
    let lease = json!({ "lease_id": lease_id });

    // Bob may call these paths (policy) but not on Alice's lease (ownership).
    for (method, path, body) in [
        ("PUT", "sys/leases/lookup".to_owned(), Some(lease.clone())),
        ("PUT", "sys/leases/renew".to_owned(), Some(lease.clone())),
        ("PUT", "sys/leases/revoke".to_owned(), Some(lease.clone())),
        ("PUT", format!("sys/leases/revoke/{lease_id}"), None),
    ] {
        let (status, body) = server.call_as(Some(&bob), method, &path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
    }
    // Alice may look up and renew her own lease (the default policy) and revoke it.
    let (status, body) = server
        .call_as(
            Some(&alice),
            "PUT",
            "sys/leases/lookup",
            Some(lease.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .call_as(Some(&alice), "PUT", "sys/leases/renew", Some(lease.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // An operator with sudo may act on anyone's lease.
    let (status, body) = server
        .call_as(Some(&ops), "PUT", "sys/leases/lookup", Some(lease.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The owner check is made in the write that claims the lease for revocation: Alice
    // revoking her own leases costs the store no more than the operator (whose sudo skips the
    // check) revoking hers. The least of three each, as background work (heartbeats, checkpoints) only adds.
    let mut costs = [u64::MAX; 2];
    for _ in 0..3 {
        for (slot, token) in [&alice, &ops].into_iter().enumerate() {
            let (status, issued) = server
                .call_as(Some(&alice), "GET", &format!("database/creds/{app}"), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{issued}");
            let before = server.state.store.operations_run();
            let (status, body) = server
                .call_as(
                    Some(token),
                    "PUT",
                    "sys/leases/revoke",
                    Some(json!({ "lease_id": issued["lease_id"] })),
                )
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
            costs[slot] = costs[slot].min(server.state.store.operations_run() - before);
        }
    }
    // Two each: the claim, which reads the row as it takes it, and the record of the end.
    assert_eq!(
        costs,
        [2, 2],
        "store operations of a revocation, by its owner then by sudo"
    );
    let (status, _) = server
        .call_as(
            Some(&alice),
            "PUT",
            "sys/leases/revoke",
            Some(lease.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, issued) = server
        .call_as(Some(&bob), "GET", &format!("database/creds/{app}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let bobs = issued["lease_id"].as_str().unwrap().to_owned();
    let (status, _) = server
        .call_as(
            Some(&ops),
            "PUT",
            &format!("sys/leases/revoke/{bobs}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "sudo overrides ownership");

    // A workload keeps its leases across logins: ownership follows the JWT subject.
    let (rsa_private, rsa_public) = rsa_key();
    jwt_setup(&server, &app, &[&rsa_public]).await;
    let jwt = sign(
        Algorithm::RS256,
        None,
        &rsa_private,
        &sa_claims("apps", "billing"),
    );
    let (_, first) = login(&server, "billing", &jwt).await;
    let first = first["auth"]["client_token"].as_str().unwrap().to_owned();
    let (_, issued) = server
        .call_as(Some(&first), "GET", &format!("database/creds/{app}"), None)
        .await;
    let lease_id = issued["lease_id"].as_str().unwrap().to_owned();
    let (_, second) = login(&server, "billing", &jwt).await;
    let second = second["auth"]["client_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let (status, body) = server
        .call_as(
            Some(&second),
            "PUT",
            "sys/leases/renew",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the same workload renews after logging in again: {body}"
    );
    let other = sign(
        Algorithm::RS256,
        None,
        &rsa_private,
        &sa_claims("apps", "reports"),
    );
    let (_, third) = login(&server, "billing", &other).await;
    let third = third["auth"]["client_token"].as_str().unwrap().to_owned();
    let (status, _) = server
        .call_as(
            Some(&third),
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another workload may not");
    let (status, _) = server
        .call_as(
            Some(&second),
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    server.revoke_everything().await;
}
