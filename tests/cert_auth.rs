//! Certificate login (Vault's `cert` auth method, issue 11 item 4) over Lessor's own HTTPS
//! listener: a workload's client certificate is exchanged for a token whose policy issues real
//! PostgreSQL logins; an expired certificate, one from an unknown CA, one from a CA the role does
//! not trust, names a role does not allow, and no certificate at all are each a 403 naming why;
//! roles take Vault's fields and refuse the others by name; hvac's `client.auth.cert.login` works
//! against `lessor dev --tls`.

mod common;
mod tls_support;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tls_support::*;

const READONLY: &str = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE pg_read_all_data;";

/// A policy `name` that reads `role`'s credentials.
async fn reader_policy(api: &Api, name: &str, role: &str) {
    let policy = format!(r#"path "database/creds/{role}" {{ capabilities = ["read"] }}"#);
    let (status, body) = api
        .call(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": policy })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

async fn login(api: &Api, body: Value) -> (StatusCode, Value) {
    api.call_as(None, "POST", "auth/cert/login", Some(body))
        .await
}

#[tokio::test]
async fn a_client_certificate_logs_in_and_its_token_issues_postgres_logins() {
    let workloads = TestCa::new("workloads CA");
    let server = TlsServer::start(Some(&workloads.pem())).await;
    let role = unique("certro");
    let policy = unique("cert-reader");
    server.add_postgres("pg").await;
    server
        .write_role(
            &role,
            json!({ "db_name": "pg", "creation_statements": [READONLY], "default_ttl": "10m" }),
        )
        .await;
    reader_policy(&server, &policy, &role).await;
    let (status, body) = server
        .call(
            "POST",
            "auth/cert/certs/billing",
            Some(json!({
                "certificate": workloads.pem(),
                "allowed_common_names": "billing.*",
                "allowed_dns_sans": ["*.apps.internal"],
                "token_policies": [policy],
                "token_ttl": "10m",
                "display_name": "billing",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let workload = workloads.client("billing.prod", &["billing.apps.internal"]);
    let as_workload = server.with_identity(&workload);
    for body in [json!({}), json!({ "name": "billing" })] {
        let (status, answer) = login(&as_workload, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "login with {body}: {answer}");
        let auth = &answer["auth"];
        assert_eq!(auth["lease_duration"], json!(600), "{answer}");
        let policies: Vec<&str> = auth["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert!(
            policies.contains(&policy.as_str()) && policies.contains(&"default"),
            "{answer}"
        );
        assert_eq!(auth["metadata"]["common_name"], json!("billing.prod"));
        assert_eq!(auth["metadata"]["cert_name"], json!("billing"));
    }

    // The token does what its policy grants: a login that works on the real PostgreSQL.
    let (_, answer) = login(&as_workload, json!({})).await;
    let token = answer["auth"]["client_token"].as_str().unwrap().to_owned();
    let (status, creds) = as_workload
        .call_as(Some(&token), "GET", &format!("database/creds/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{creds}");
    let user = creds["data"]["username"].as_str().unwrap().to_owned();
    let password = creds["data"]["password"].as_str().unwrap().to_owned();
    pg_login(&user, &password)
        .await
        .expect("the credential issued to the certificate's token works");
    // ... and nothing beyond it.
    let (status, _) = as_workload
        .call_as(Some(&token), "GET", &format!("database/roles/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, _) = server
        .call(
            "PUT",
            &format!("sys/leases/revoke-prefix/database/creds/{role}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let admin = pg_admin().await;
    assert!(
        pg_login(&user, &password).await.is_err(),
        "revoked: refused"
    );
    assert!(!pg_role_exists(&admin, &user).await, "revoked: user gone");
    server.stop().await;
}

#[tokio::test]
async fn refused_certificates_get_403_with_the_reason() {
    let workloads = TestCa::new("workloads CA");
    // The listener accepts both CAs; the role trusts only the first.
    let sidecars = TestCa::new("sidecars CA");
    let strangers = TestCa::new("strangers CA");
    let server = TlsServer::start(Some(&format!("{}{}", workloads.pem(), sidecars.pem()))).await;
    let (status, body) = server
        .call(
            "POST",
            "auth/cert/certs/billing",
            Some(json!({
                "certificate": workloads.pem(),
                "allowed_common_names": ["billing.prod"],
                "allowed_dns_sans": "billing.apps.internal",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let cases = [
        (
            "expired certificate",
            Some(workloads.expired_client("billing.prod")),
            "expired",
        ),
        (
            "a CA the listener does not trust",
            Some(strangers.client("billing.prod", &["billing.apps.internal"])),
            "not accepted by the listener",
        ),
        (
            "a CA the listener trusts but the role does not",
            Some(sidecars.client("billing.prod", &["billing.apps.internal"])),
            "not signed by a trusted CA",
        ),
        (
            "a common name the role does not allow",
            Some(workloads.client("payroll.prod", &["billing.apps.internal"])),
            "allowed_common_names",
        ),
        (
            "no DNS SAN the role allows",
            Some(workloads.client("billing.prod", &["payroll.apps.internal"])),
            "allowed_dns_sans",
        ),
        ("no certificate", None, "no client certificate"),
    ];
    for (case, identity, reason) in cases {
        let api = match &identity {
            Some(identity) => server.with_identity(identity),
            None => server.api.clone(),
        };
        let (status, body) = login(&api, json!({})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{case}: {body}");
        let message = body["errors"][0].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{case}: {message}");
        // A client whose certificate was refused still reaches everything else with its token.
        let (status, _) = api.call("GET", "auth/cert/certs/billing", None).await;
        assert_eq!(status, StatusCode::OK, "{case}: token requests still work");
    }

    // A role named in the login that does not exist; a good certificate.
    let good = server.with_identity(&workloads.client("billing.prod", &["billing.apps.internal"]));
    let (status, body) = login(&good, json!({ "name": "nobody" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = login(&good, json!({})).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the good certificate logs in: {body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn cert_roles_take_vaults_fields_and_refuse_others_by_name() {
    let workloads = TestCa::new("workloads CA");
    let server = TlsServer::start(Some(&workloads.pem())).await;
    // What hvac's create_ca_certificate_role sends, unsupported fields empty.
    let hvac_body = json!({
        "name": "web", "certificate": workloads.pem(), "allowed_common_names": "web-*",
        "allowed_dns_sans": "", "allowed_email_sans": "", "allowed_uri_sans": "",
        "allowed_organizational_units": "", "required_extensions": "", "display_name": "",
        "token_ttl": 0, "token_max_ttl": "1h", "policies": "a,b", "token_bound_cidrs": [],
        "token_explicit_max_ttl": 0, "token_no_default_policy": false, "token_num_uses": 0,
        "token_period": 0, "token_type": ""
    });
    let (status, body) = server
        .call("POST", "auth/cert/certs/web", Some(hvac_body))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = server.call("GET", "auth/cert/certs/web", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["allowed_common_names"], json!(["web-*"]));
    assert_eq!(body["data"]["token_policies"], json!(["a", "b"]));
    assert_eq!(body["data"]["policies"], json!(["a", "b"]));
    assert_eq!(body["data"]["token_max_ttl"], json!(3600));
    let (status, body) = server.call("LIST", "auth/cert/certs", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["keys"], json!(["web"]));

    for (field, value) in [
        ("allowed_email_sans", json!("ops@example.com")),
        ("required_extensions", json!(["1.2.3:*"])),
        ("token_num_uses", json!(3)),
        ("ocsp_enabled", json!(true)),
        ("colour", json!("blue")),
    ] {
        let (status, body) = server
            .call("POST", "auth/cert/certs/web", Some(json!({ field: value })))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {body}");
        assert!(
            body["errors"][0].as_str().unwrap().contains(field),
            "{body}"
        );
    }
    let (status, body) = server
        .call(
            "POST",
            "auth/cert/certs/broken",
            Some(json!({ "certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["errors"][0].as_str().unwrap().contains("certificate"));
    let (status, _) = server
        .call("POST", "auth/cert/certs/nocert", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a role needs its CA");
    let (status, body) = server
        .call("POST", "auth/cert/certs/bad%20name", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, _) = server.call("DELETE", "auth/cert/certs/web", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server.call("GET", "auth/cert/certs/web", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

fn python() -> String {
    std::env::var("LESSOR_TEST_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_owned())
}

/// hvac, unmodified, against `lessor dev --tls` with the CA it prints: a database credential with
/// the root token, then `client.auth.cert.login` with a client certificate and a credential with
/// the token it returns; an expired certificate is Forbidden. Both credentials work on the real
/// PostgreSQL and are gone once `lessor dev` stops.
#[tokio::test]
async fn hvac_logs_in_with_a_client_certificate_against_dev_tls() {
    let python = python();
    let probe = std::process::Command::new(&python)
        .args(["-c", "import hvac"])
        .output();
    match probe {
        Ok(output) if output.status.success() => {}
        _ => panic!("{python} cannot import hvac; run scripts/test.sh, or: python3 -m venv .venv && .venv/bin/pip install hvac"),
    }
    let files = tempfile::tempdir().unwrap();
    let workloads = TestCa::new("workloads CA");
    let client_ca = files.path().join("workloads-ca.pem");
    std::fs::write(&client_ca, workloads.pem()).unwrap();
    let (client_cert, client_key) = workloads
        .client("billing.prod", &[])
        .write(files.path(), "client");
    let (expired_cert, expired_key) = workloads
        .expired_client("billing.prod")
        .write(files.path(), "expired");

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let token = "hvac-cert-root-token-abcdef";
    let mut dev = LessorProcess::spawn(
        &[
            "dev",
            "--tls",
            "--tls-client-ca-file",
            client_ca.to_str().unwrap(),
            "--listen",
            &listen,
            "--root-token",
            token,
        ],
        &[
            ("LESSOR_DEV_POSTGRES_URL", &postgres_url()),
            ("LESSOR_DEV_MYSQL_URL", &mysql_url()),
        ],
    );
    let line = dev.line_containing("VAULT_CACERT=").await;
    let cacert = line
        .split("VAULT_CACERT=")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    let addr = format!("https://{listen}");

    let output = tokio::process::Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/hvac/cert_tls_flow.py"
        ))
        .env("LESSOR_ADDR", &addr)
        .env("LESSOR_TOKEN", token)
        .env("VAULT_CACERT", &cacert)
        .env("CLIENT_CA", &client_ca)
        .env("CLIENT_CERT", &client_cert)
        .env("CLIENT_KEY", &client_key)
        .env("EXPIRED_CERT", &expired_cert)
        .env("EXPIRED_KEY", &expired_key)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "the hvac flow failed:\n{}\nlessor log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        dev.log()
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("the flow prints JSON");
    assert!(
        report["expired_error"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{report}"
    );
    let mut users = vec![];
    for key in ["root_creds", "cert_creds"] {
        let user = report[key]["username"].as_str().unwrap().to_owned();
        let password = report[key]["password"].as_str().unwrap();
        pg_login(&user, password)
            .await
            .unwrap_or_else(|e| panic!("{key}: the credential hvac received works: {e}"));
        users.push(user);
    }
    let banner = dev.stop().await;
    assert!(banner.contains("revoked its 2 live lease"), "{banner}");
    let admin = pg_admin().await;
    for user in users {
        assert!(!pg_role_exists(&admin, &user).await, "{user} left behind");
    }
}
