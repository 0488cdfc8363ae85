//! HTTPS on Lessor's own listener (issue 11 item 1): a client with the CA is served and one
//! without it refuses the server; the gate still learns each client's address; `lessor server`
//! refuses plain HTTP unless asked for it by name; SIGHUP swaps the certificate for new
//! connections while an open keep-alive connection keeps working, and a bad new file keeps the
//! old one; `lessor dev --tls` prints VAULT_CACERT and the CLI works with it (and with
//! VAULT_SKIP_VERIFY, with a warning), issuing logins that work on the real PostgreSQL and are
//! gone at the end.

mod common;
mod tls_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tls_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn https_with_the_ca_works_and_without_it_the_client_refuses() {
    let server = TlsServer::start(None).await;
    let (status, body) = server.call("GET", "sys/health", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The system's CAs do not know the server: the client refuses it.
    let stranger = reqwest::Client::new();
    let error = stranger
        .get(format!("{}/v1/sys/health", server.base))
        .send()
        .await
        .expect_err("a client without the CA refuses the server");
    let chain = format!("{error:?}");
    assert!(
        chain.contains("UnknownIssuer") || chain.contains("certificate"),
        "{chain}"
    );
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!(
            "{}/v1/sys/health",
            server.base.replace("https", "http")
        ))
        .send()
        .await;
    assert!(
        plain.map(|r| !r.status().is_success()).unwrap_or(true),
        "plain HTTP is not served on the TLS port"
    );

    // Each request still carries the client's address to the gate: the audit log records it.
    let audit_dir = tempfile::tempdir().unwrap();
    let audit = audit_dir.path().join("audit.log");
    let (status, body) = server
        .call(
            "PUT",
            "sys/audit/file",
            Some(json!({ "type": "file", "options": { "file_path": audit } })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = server.call("GET", "sys/audit", None).await;
    assert_eq!(status, StatusCode::OK);
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(
        log.contains("\"remote_address\":\"127.0.0.1\""),
        "the audit log names the client's address:\n{log}"
    );
    server.stop().await;
}

#[tokio::test]
async fn lessor_server_refuses_plain_http_unless_asked_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let seal_key = "ab".repeat(32);
    let store = dir.path().join("lessor.db").display().to_string();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_lessor"))
        .args(["server", "--listen", &listen, "--store-url", &store])
        .env("LESSOR_SEAL_KEY", &seal_key)
        .env_remove("LESSOR_TLS_DISABLE")
        .output()
        .await
        .unwrap();
    assert!(
        !output.status.success(),
        "no TLS and no tls_disable: refused"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tls_disable") && stderr.contains("tls_cert_file"),
        "the error says how to proceed: {stderr}"
    );
    assert!(
        !dir.path().join("lessor.db").exists(),
        "nothing is created before the listener is decided"
    );

    // Asked for by name, plain HTTP is served.
    let process = LessorProcess::spawn(
        &["server", "--listen", &listen, "--store-url", &store],
        &[
            ("LESSOR_SEAL_KEY", &seal_key),
            ("LESSOR_TLS_DISABLE", "true"),
        ],
    );
    wait_healthy(
        &reqwest::Client::new(),
        &format!("http://{listen}"),
        &process,
    )
    .await;
    assert!(process.log().contains("plain HTTP"), "{}", process.log());
    process.stop().await;
}

/// A raw TLS connection trusting `ca`, kept open across requests (HTTP/1.1 keep-alive).
async fn connect(ca: &TestCa, port: u16) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            ca.cert.der().to_vec(),
        ))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    connector
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .expect("TLS handshake")
}

/// The Common Name of the certificate the server presented on `stream`.
fn served_common_name(stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    let chain = stream.get_ref().1.peer_certificates().unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref()).unwrap();
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    common_name
}

/// `GET /v1/sys/health` on an open connection; the status code.
async fn health_on(stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> u16 {
    stream
        .write_all(b"GET /v1/sys/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(read > 0, "the connection was closed");
        buffer.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&buffer).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if buffer.len() >= end + 4 + length {
                return text[9..12].parse().unwrap();
            }
        }
    }
}

#[tokio::test]
async fn sighup_swaps_the_certificate_for_new_connections_and_drops_none() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("reload CA");
    let (cert_file, key_file) = ca.server("first").write(dir.path(), "server");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let store = dir.path().join("lessor.db").display().to_string();
    let seal_key = "cd".repeat(32);
    let process = LessorProcess::spawn(
        &[
            "server",
            "--listen",
            &listen,
            "--store-url",
            &store,
            "--tls-cert-file",
            cert_file.to_str().unwrap(),
            "--tls-key-file",
            key_file.to_str().unwrap(),
        ],
        &[("LESSOR_SEAL_KEY", &seal_key)],
    );
    let base = format!("https://{listen}");
    wait_healthy(&client_trusting(&ca, None), &base, &process).await;

    let mut kept = connect(&ca, port).await;
    assert_eq!(served_common_name(&kept), "first");
    assert_eq!(health_on(&mut kept).await, 200);

    // A broken key: the reload fails with an ERROR and the old certificate stays in force.
    std::fs::write(&key_file, "-----BEGIN PRIVATE KEY-----\nnot a key\n").unwrap();
    process.signal("HUP");
    let logged = eventually(Duration::from_secs(10), || async {
        process.log().contains("TLS reload failed")
    })
    .await;
    assert!(
        logged.is_some(),
        "a failed reload is logged:\n{}",
        process.log()
    );
    assert!(
        process
            .log()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("TLS reload failed")),
        "{}",
        process.log()
    );
    let mut fresh = connect(&ca, port).await;
    assert_eq!(served_common_name(&fresh), "first", "the old pair stays");
    assert_eq!(health_on(&mut fresh).await, 200);

    // A good new pair: new connections get it after SIGHUP.
    let second = ca.server("second");
    std::fs::write(&cert_file, &second.cert_pem).unwrap();
    std::fs::write(&key_file, &second.key_pem).unwrap();
    process.signal("HUP");
    let started = Instant::now();
    loop {
        let stream = connect(&ca, port).await;
        if served_common_name(&stream) == "second" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new certificate is served within 10 s of SIGHUP:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection opened before both reloads still works, with the certificate it began with.
    assert_eq!(health_on(&mut kept).await, 200);
    assert_eq!(served_common_name(&kept), "first");
    assert_eq!(health_on(&mut fresh).await, 200);
    drop(kept);
    drop(fresh);
    process.stop().await;
}

/// Runs the `lessor` CLI with `env`; (success, stdout, stderr).
async fn cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_lessor"));
    command
        .args(args)
        .env_remove("LESSOR_CACERT")
        .env_remove("VAULT_CACERT")
        .env_remove("VAULT_SKIP_VERIFY")
        .env_remove("LESSOR_SKIP_VERIFY")
        .env_remove("LESSOR_ADDR")
        .env_remove("LESSOR_TOKEN");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().await.unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn dev_tls_prints_its_ca_and_the_cli_uses_it() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let token = "dev-tls-root-token-abcdef";
    let mut dev = LessorProcess::spawn(
        &["dev", "--tls", "--listen", &listen, "--root-token", token],
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
    assert!(std::path::Path::new(&cacert).is_file(), "{line}");
    let addr = format!("https://{listen}");
    let address_line = dev.line_containing("LESSOR_CACERT=").await;
    assert!(address_line.ends_with(&cacert), "{address_line}");

    // With the printed CA (VAULT_CACERT, as `vault server -dev-tls` users do): a credential.
    let (ok, stdout, stderr) = cli(
        &["creds", "readonly"],
        &[
            ("VAULT_ADDR", &addr),
            ("VAULT_TOKEN", token),
            ("VAULT_CACERT", &cacert),
        ],
    )
    .await;
    assert!(ok, "creds with VAULT_CACERT: {stderr}");
    let first: Value = serde_json::from_str(&stdout).unwrap();
    let first_user = first["data"]["username"].as_str().unwrap().to_owned();
    pg_login(&first_user, first["data"]["password"].as_str().unwrap())
        .await
        .expect("the credential works on PostgreSQL");

    // Without it the CLI refuses the server and says it could not reach it.
    let (ok, _, stderr) = cli(
        &["creds", "readonly", "--addr", &addr, "--token", token],
        &[],
    )
    .await;
    assert!(!ok, "no CA: refused");
    assert!(stderr.contains("cannot reach"), "{stderr}");

    // VAULT_SKIP_VERIFY works and warns on stderr.
    let (ok, stdout, stderr) = cli(
        &["creds", "readonly", "--addr", &addr, "--token", token],
        &[("VAULT_SKIP_VERIFY", "true")],
    )
    .await;
    assert!(ok, "skip verify: {stderr}");
    assert!(stderr.contains("warning: not verifying"), "{stderr}");
    let second: Value = serde_json::from_str(&stdout).unwrap();
    let second_user = second["data"]["username"].as_str().unwrap().to_owned();

    // --ca-cert (and LESSOR_ADDR/LESSOR_TOKEN): revoke the first lease through the CLI.
    let lease = first["lease_id"].as_str().unwrap();
    let (ok, _, stderr) = cli(
        &["lease", "revoke", lease, "--ca-cert", &cacert],
        &[("LESSOR_ADDR", &addr), ("LESSOR_TOKEN", token)],
    )
    .await;
    assert!(ok, "lease revoke with --ca-cert: {stderr}");
    let admin = pg_admin().await;
    assert!(!pg_role_exists(&admin, &first_user).await, "revoked: gone");

    // An address that is neither http nor https is refused by name.
    let (ok, _, stderr) = cli(
        &[
            "creds",
            "readonly",
            "--addr",
            "ftp://127.0.0.1:1",
            "--token",
            token,
        ],
        &[],
    )
    .await;
    assert!(!ok && stderr.contains("--addr"), "{stderr}");

    // Stopping the dev server revokes what it issued.
    let banner = dev.stop().await;
    assert!(banner.contains("revoked its 1 live lease"), "{banner}");
    assert!(
        !pg_role_exists(&admin, &second_user).await,
        "{second_user} left behind"
    );
}

#[tokio::test]
async fn tls_min_version_tls13_refuses_a_tls12_client() {
    let dir = tempfile::tempdir().unwrap();
    let settings = lessor::config::Settings {
        store_url: dir.path().join("lessor.db").display().to_string(),
        seal_key_file: Some(dir.path().join("seal.key")),
        create_seal_key_file: true,
        ..Default::default()
    };
    let state = lessor::AppState::open(&settings).await.unwrap();
    let ca = TestCa::new("version CA");
    let (cert_file, key_file) = ca.server("v13").write(dir.path(), "server");
    let tls = lessor::listener::TlsListener::load(lessor::listener::TlsFiles {
        cert_file,
        key_file,
        client_ca_file: None,
        min_version: lessor::listener::TlsVersion::Tls13,
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(lessor::listener::serve_tls(listener, state, tls, async {
        let _ = stopped.await;
    }));

    let client = |versions: &[&'static rustls::SupportedProtocolVersion]| {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(
                ca.cert.der().to_vec(),
            ))
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    };
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let refused = client(&[&rustls::version::TLS12])
        .connect(name.clone(), tcp)
        .await;
    assert!(refused.is_err(), "a TLS 1.2 client is refused");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut stream = client(&[&rustls::version::TLS13])
        .connect(name, tcp)
        .await
        .expect("TLS 1.3 is served");
    assert_eq!(health_on(&mut stream).await, 200);
    drop(stream);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
