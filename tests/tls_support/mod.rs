//! Shared by the TLS tests: certificates made on the spot with rcgen (a CA, server and client
//! certificates, expired ones), and an in-process Lessor served over HTTPS with
//! `lessor::listener::serve_tls`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lessor::config::Settings;
use lessor::listener::{TlsFiles, TlsListener, TlsVersion};
use lessor::AppState;
use lessor_plugin::Secret;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::sync::oneshot;

use crate::common::{Api, ROOT_TOKEN};

/// A throwaway certificate authority.
pub struct TestCa {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

/// A certificate and its key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// Both in one PEM, as `reqwest::Identity::from_pem` takes them.
    pub fn identity(&self) -> reqwest::Identity {
        reqwest::Identity::from_pem(format!("{}{}", self.cert_pem, self.key_pem).as_bytes())
            .expect("identity")
    }

    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

impl TestCa {
    pub fn new(common_name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for 127.0.0.1 and localhost; `common_name` tells reloads apart.
    pub fn server(&self, common_name: &str) -> Issued {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate with this CN and these DNS SANs, valid now.
    pub fn client(&self, common_name: &str, dns_sans: &[&str]) -> Issued {
        self.sign(client_params(common_name, dns_sans))
    }

    /// A client certificate whose validity ended in 2021.
    pub fn expired_client(&self, common_name: &str) -> Issued {
        let mut params = client_params(common_name, &[]);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn client_params(common_name: &str, dns_sans: &[&str]) -> CertificateParams {
    let mut params =
        CertificateParams::new(dns_sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

/// A running in-process Lessor on HTTPS; its CA, and an API handle that trusts it.
pub struct TlsServer {
    pub api: Api,
    pub state: AppState,
    pub ca: TestCa,
    pub tls: Arc<TlsListener>,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::ops::Deref for TlsServer {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TlsServer {
    /// Serves with a fresh CA's server certificate; with `client_ca`, the listener asks for
    /// client certificates and accepts those this PEM verifies.
    pub async fn start(client_ca: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            store_url: dir.path().join("lessor.db").display().to_string(),
            seal_key_file: Some(dir.path().join("seal.key")),
            create_seal_key_file: true,
            ..Settings::default()
        };
        let state = AppState::open(&settings).await.expect("open state");
        state
            .auth
            .install_root_token(&Secret::new(ROOT_TOKEN))
            .await
            .unwrap();
        let ca = TestCa::new("Lessor TLS test CA");
        let (cert_file, key_file) = ca.server("first").write(dir.path(), "server");
        let client_ca_file = client_ca.map(|pem| {
            let path = dir.path().join("client-ca.pem");
            std::fs::write(&path, pem).unwrap();
            path
        });
        let tls = TlsListener::load(TlsFiles {
            cert_file,
            key_file,
            client_ca_file,
            min_version: TlsVersion::Tls12,
        })
        .expect("load TLS files");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(lessor::listener::serve_tls(
            listener,
            state.clone(),
            tls.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        let task = tokio::spawn(async move {
            task.await.unwrap().expect("serve_tls");
        });
        let api = Api {
            base: base.clone(),
            http: client_trusting(&ca, None),
        };
        Self {
            api,
            state,
            ca,
            tls,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// An API handle that presents `identity` as its client certificate.
    pub fn with_identity(&self, identity: &Issued) -> Api {
        Api {
            base: self.api.base.clone(),
            http: client_trusting(&self.ca, Some(identity)),
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A client that trusts `ca` (only), optionally with a client certificate.
pub fn client_trusting(ca: &TestCa, identity: Option<&Issued>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap());
    if let Some(identity) = identity {
        builder = builder.identity(identity.identity());
    }
    builder.build().unwrap()
}

/// A free local port for a server process to bind.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Lessor process (`server` or `dev`); SIGTERM on drop so a failing test leaves none behind.
/// Its standard output is read line by line (the dev banner); its log goes to a file.
pub struct LessorProcess {
    pub child: tokio::process::Child,
    pub stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    pub log_path: PathBuf,
    pub _log_dir: tempfile::TempDir,
}

impl LessorProcess {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let log_dir = tempfile::tempdir().unwrap();
        let log_path = log_dir.path().join("lessor.log");
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_lessor"));
        command
            .args(args)
            .env_remove("LESSOR_CACERT")
            .env_remove("VAULT_CACERT")
            .env_remove("VAULT_SKIP_VERIFY")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log_path).unwrap());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start lessor");
        let stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdout,
            log_path,
            _log_dir: log_dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Reads standard output until a line contains `marker`; returns that line.
    pub async fn line_containing(&mut self, marker: &str) -> String {
        let deadline = std::time::Duration::from_secs(30);
        tokio::time::timeout(deadline, async {
            while let Some(line) = self.stdout.next_line().await.unwrap() {
                if line.contains(marker) {
                    return line;
                }
            }
            panic!(
                "lessor ended without printing {marker:?}; log:\n{}",
                self.log()
            );
        })
        .await
        .unwrap_or_else(|_| panic!("no {marker:?} within 30 s; log:\n{}", self.log()))
    }

    /// SIGTERM, then waits for the process to end (it revokes what `lessor dev` issued).
    pub async fn stop(mut self) -> String {
        self.signal("TERM");
        let status = tokio::time::timeout(std::time::Duration::from_secs(30), self.child.wait())
            .await
            .expect("lessor stops within 30 s of SIGTERM")
            .unwrap();
        assert!(
            status.success(),
            "lessor exited with {status}:\n{}",
            self.log()
        );
        let mut rest = String::new();
        while let Ok(Some(line)) = self.stdout.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    }
}

impl Drop for LessorProcess {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

/// Polls `GET sys/health` with `client` until it answers 200.
pub async fn wait_healthy(client: &reqwest::Client, base: &str, process: &LessorProcess) {
    let started = std::time::Instant::now();
    loop {
        if let Ok(response) = client.get(format!("{base}/v1/sys/health")).send().await {
            if response.status() == reqwest::StatusCode::OK {
                return;
            }
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "lessor did not answer its health check within 30 s; log:\n{}",
            process.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
