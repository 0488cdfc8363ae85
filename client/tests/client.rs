//! `lessor-client` against an in-process Lessor (the root crate's test harness) and the real
//! PostgreSQL: credentials log in, renewal moves the database's expiry, revocation ends the login
//! and drops the user, static credentials, wrapped credentials unwrapped once, errors with their
//! status, and HTTPS with a private CA.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;
use lessor_client::{Client, Error, Secret};
use serde_json::json;

const READONLY: &str = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE pg_read_all_data;";

/// A Lessor with the local PostgreSQL as connection `pg` and a read-only role `role`.
async fn server_with_role(role: &str, default_ttl: &str, max_ttl: &str) -> TestServer {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    server
        .write_role(
            role,
            json!({ "db_name": "pg", "creation_statements": [READONLY], "default_ttl": default_ttl, "max_ttl": max_ttl }),
        )
        .await;
    server
}

fn client_of(server: &TestServer) -> Client {
    Client::new(server.base.clone(), ROOT_TOKEN).unwrap()
}

/// The user's `VALID UNTIL`, in seconds since the epoch: what PostgreSQL enforces at login.
async fn valid_until(admin: &tokio_postgres::Client, user: &str) -> f64 {
    admin
        .query_one(
            "SELECT extract(epoch FROM rolvaliduntil)::float8 FROM pg_roles WHERE rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_machine_checks_postgres_passwords() {
    assert_postgres_checks_passwords().await;
}

#[tokio::test]
async fn creds_log_in_renew_moves_the_expiry_and_revoke_ends_the_login() {
    let role = unique("client");
    let server = server_with_role(&role, "1h", "3h").await;
    let client = client_of(&server);
    let admin = pg_admin().await;

    let credential = client.creds(&role).await.unwrap();
    assert!(credential
        .lease
        .id
        .starts_with(&format!("database/creds/{role}/")));
    assert_eq!(credential.lease.duration, Duration::from_secs(3600));
    assert!(credential.lease.renewable);
    assert!(!format!("{credential:?}").contains(credential.password.expose()));
    pg_login(&credential.username, credential.password.expose())
        .await
        .expect("the issued credential logs in");

    let before = valid_until(&admin, &credential.username).await;
    let renewed = client
        .renew(&credential.lease.id, Some(Duration::from_secs(2 * 3600)))
        .await
        .unwrap();
    assert_eq!(renewed.id, credential.lease.id);
    assert_eq!(renewed.duration, Duration::from_secs(2 * 3600));
    let after = valid_until(&admin, &credential.username).await;
    assert!(
        (after - before - 3600.0).abs() < 60.0,
        "renewing by 2h an 1h lease moves VALID UNTIL by about an hour: {before} -> {after}"
    );
    // Past the max TTL, the grant is capped and says so by being shorter than asked.
    let capped = client
        .renew(&credential.lease.id, Some(Duration::from_secs(10 * 3600)))
        .await
        .unwrap();
    assert!(
        capped.duration < Duration::from_secs(3 * 3600 + 1)
            && capped.duration > Duration::from_secs(2 * 3600),
        "{capped:?}"
    );

    client.revoke(&credential.lease.id).await.unwrap();
    assert!(
        pg_login(&credential.username, credential.password.expose())
            .await
            .is_err(),
        "a revoked credential is refused"
    );
    assert!(!pg_role_exists(&admin, &credential.username).await);
    // Revoking again succeeds (Lessor treats it as done); renewing it is refused with a 400.
    client.revoke(&credential.lease.id).await.unwrap();
    let error = client.renew(&credential.lease.id, None).await.unwrap_err();
    assert_eq!(error.status(), Some(400), "{error}");
    assert!(error.to_string().contains("revoked"), "{error}");

    server.assert_logs_free_of(&[credential.password.expose()]);
    server.revoke_everything().await;
}

#[tokio::test]
async fn errors_carry_the_status_and_lessors_errors_never_the_token() {
    let role = unique("client-err");
    let server = server_with_role(&role, "1h", "1h").await;

    let stranger = Client::new(server.base.clone(), "not-a-real-token-7f3a9c").unwrap();
    let error = stranger.creds(&role).await.unwrap_err();
    assert_eq!(error.status(), Some(403), "{error}");
    assert_eq!(error.errors(), ["permission denied"]);
    assert!(!error.to_string().contains("7f3a9c"), "{error}");
    assert!(!format!("{error:?}").contains("7f3a9c"), "{error:?}");
    assert!(!error.is_transient());

    let client = client_of(&server);
    let error = client.creds("no-such-role").await.unwrap_err();
    assert_eq!(error.status(), Some(404), "{error}");
    assert!(
        error.errors().iter().any(|e| e.contains("no-such-role")),
        "{error}"
    );
    let error = client
        .static_creds("no-such-static-role")
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404), "{error}");

    // A name that would leave its path segment never reaches Lessor.
    let error = client.creds("../sys/health").await.unwrap_err();
    assert!(
        matches!(error, Error::InvalidInput { field: "role", .. }),
        "{error}"
    );

    // Nothing listens there: a transport error, which a caller may retry.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = Client::new(format!("http://127.0.0.1:{port}"), ROOT_TOKEN).unwrap();
    let error = nowhere.creds(&role).await.unwrap_err();
    assert!(matches!(error, Error::Transport(_)), "{error}");
    assert!(error.is_transient());
    assert!(!error.to_string().contains(ROOT_TOKEN), "{error}");
}

#[tokio::test]
async fn static_creds_give_the_current_password() {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    let admin = pg_admin().await;
    let user = unique("lessor_client_static").replace('-', "_");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {user} LOGIN PASSWORD 'initial-password-123'"
        ))
        .await
        .unwrap();
    let name = unique("client-static");
    let (status, body) = server
        .call(
            "POST",
            &format!("database/static-roles/{name}"),
            Some(json!({ "db_name": "pg", "username": user, "rotation_period": "1h" })),
        )
        .await;
    let client = client_of(&server);
    let credential = client.static_creds(&name).await;
    let login = match &credential {
        Ok(credential) => pg_login(&user, credential.password.expose())
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Err(error) => Err(error.to_string()),
    };
    // Dropped before any assertion, so a failing one leaves no user behind.
    admin
        .batch_execute(&format!("DROP ROLE IF EXISTS {user}"))
        .await
        .unwrap();

    assert!(status.is_success(), "{status} {body}");
    let credential = credential.unwrap();
    login.expect("the static password logs in");
    assert_eq!(credential.username, user);
    assert!(
        credential.ttl > Duration::from_secs(3000) && credential.ttl <= Duration::from_secs(3600),
        "{credential:?}"
    );
    assert!(
        credential.extra.contains_key("last_vault_rotation"),
        "{credential:?}"
    );
    assert_ne!(credential.password.expose(), "initial-password-123");
    server.assert_logs_free_of(&[credential.password.expose()]);
}

#[tokio::test]
async fn wrapped_creds_unwrap_once_into_a_working_login() {
    let role = unique("client-wrap");
    let server = server_with_role(&role, "1h", "1h").await;
    let client = client_of(&server);

    let wrapped = client
        .creds_wrapped(&role, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(wrapped.creation_path, format!("database/creds/{role}"));
    assert_eq!(wrapped.ttl, Duration::from_secs(120));
    assert!(!format!("{wrapped:?}").contains(wrapped.token.expose()));

    let credential = client.unwrap_creds(&wrapped.token).await.unwrap();
    pg_login(&credential.username, credential.password.expose())
        .await
        .expect("the unwrapped credential logs in");
    let error = client.unwrap_creds(&wrapped.token).await.unwrap_err();
    assert_eq!(
        error.status(),
        Some(400),
        "a wrapping token works once: {error}"
    );
    let error = client
        .unwrap_creds(&Secret::new("never-issued-wrapping-token"))
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(400), "{error}");

    client.revoke(&credential.lease.id).await.unwrap();
    assert!(!pg_role_exists(&pg_admin().await, &credential.username).await);
    server.revoke_everything().await;
}

mod https {
    //! Lessor over HTTPS with a private CA, served the way `lessor server` serves it
    //! (`lessor::listener::serve_tls`).

    use super::*;
    use lessor::listener::{TlsFiles, TlsListener, TlsVersion};
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

    /// A CA's PEM, and a server certificate for 127.0.0.1 it signed, written to `dir`.
    fn certificates(dir: &std::path::Path) -> (String, TlsFiles) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "lessor-client test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key).unwrap();
        let cert_file = dir.join("server.pem");
        let key_file = dir.join("server-key.pem");
        std::fs::write(&cert_file, server_cert.pem()).unwrap();
        std::fs::write(&key_file, server_key.serialize_pem()).unwrap();
        (
            ca_cert.pem(),
            TlsFiles {
                cert_file,
                key_file,
                client_ca_file: None,
                min_version: TlsVersion::Tls12,
            },
        )
    }

    #[tokio::test]
    async fn a_client_trusting_the_ca_gets_creds_and_one_without_it_is_refused() {
        let role = unique("client-tls");
        // The plain-HTTP server configures the role; the same state is then served over HTTPS.
        let server = server_with_role(&role, "1h", "1h").await;
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, files) = certificates(dir.path());
        let tls = TlsListener::load(files).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("https://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(lessor::listener::serve_tls(
            listener,
            server.state.clone(),
            tls,
            async {
                let _ = stopped.await;
            },
        ));

        let client = Client::builder(addr.clone(), ROOT_TOKEN)
            .ca_certificate_pem(&ca_pem)
            .build()
            .unwrap();
        let credential = client.creds(&role).await.unwrap();
        pg_login(&credential.username, credential.password.expose())
            .await
            .expect("creds fetched over HTTPS log in");
        client.revoke(&credential.lease.id).await.unwrap();

        let untrusting = Client::new(addr, ROOT_TOKEN).unwrap();
        let error = untrusting.creds(&role).await.unwrap_err();
        assert!(matches!(error, Error::Transport(_)), "{error}");

        let _ = stop.send(());
        let _ = serving.await;
        server.revoke_everything().await;
    }
}
