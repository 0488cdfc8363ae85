//! HTTPS on Lessor's own listener: rustls (ring provider) in front of the same application
//! [`crate::serve`] runs over plain HTTP.
//!
//! [`TlsListener`] holds what new handshakes use: the server certificate and key, the minimum
//! protocol version, and the client CA (`tls_client_ca_file`). [`TlsListener::reload`] re-reads the
//! files and swaps the whole set at once; connections already open keep the configuration they
//! were made with, so a reload (on SIGHUP, see [`reload_on_sighup`]) drops nothing, and a bad new
//! file keeps the old set in force.
//!
//! With a client CA the listener *requests* a client certificate but does not require one (token
//! clients need none). A chain the CA does not verify does not fail the handshake either: it would
//! leave the workload with an opaque TLS alert, and Vault answers such a login with a 403. So the
//! handshake only checks that the client holds the certificate's key; the chain is checked
//! against the CA right after it, and each request of the connection carries either
//! [`ClientCertificates`] (verified) or [`RejectedClientCertificate`] (why not).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::error::{Error, Result};
use crate::tls::{
    certificates_from_pem, trust_anchors, verify_client_chain, ClientCertificates,
    RejectedClientCertificate,
};
use crate::AppState;

/// How long a client may take to finish its TLS handshake; a stalled one holds a task, not the
/// accept loop, and is dropped after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The oldest TLS version the listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    #[default]
    Tls12,
    Tls13,
}

impl TlsVersion {
    /// Parses `tls12` / `tls13` (Vault's spelling); `source` names the setting in the error.
    pub fn parse(source: &str, value: &str) -> Result<Self> {
        match value {
            "tls12" => Ok(Self::Tls12),
            "tls13" => Ok(Self::Tls13),
            other => Err(Error::Config(format!(
                "{source}: must be \"tls12\" or \"tls13\", not {other:?}"
            ))),
        }
    }
}

/// The files the listener's TLS is made of; re-read on every reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate chain (PEM, leaf first).
    pub cert_file: PathBuf,
    /// The server certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM) whose client certificates reach the certificate auth method; `None`
    /// asks clients for no certificate at all.
    pub client_ca_file: Option<PathBuf>,
    pub min_version: TlsVersion,
}

/// One loaded configuration: what a handshake uses, and how its client chain is then checked.
struct Loaded {
    acceptor: TlsAcceptor,
    /// The client CA as trust anchors; `None` when no client certificate is requested.
    client_anchors: Option<Arc<Vec<TrustAnchor<'static>>>>,
}

/// The listener's TLS configuration, swappable while serving.
pub struct TlsListener {
    files: TlsFiles,
    current: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Reads the files; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>> {
        let loaded = load(&files)?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(Arc::new(loaded)),
        }))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Re-reads the files for new handshakes. On an error the configuration in force stays, and
    /// the error says which file is wrong.
    pub fn reload(&self) -> Result<()> {
        let loaded = load(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
        Ok(())
    }

    fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn read_file(setting: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::Config(format!("{setting}: cannot read {}: {e}", path.display())))
}

fn load(files: &TlsFiles) -> Result<Loaded> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert_pem = read_file("tls_cert_file", &files.cert_file)?;
    let chain = certificates_from_pem(
        &format!("tls_cert_file {}", files.cert_file.display()),
        &String::from_utf8_lossy(&cert_pem),
    )
    .map_err(|e| Error::Config(e.to_string()))?;
    let key_pem = read_file("tls_key_file", &files.key_file)?;
    // The key's bytes never reach an error: only the file name and the parser's verdict.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        Error::Config(format!(
            "tls_key_file {}: no PEM private key (PKCS#8, PKCS#1 or SEC1) found",
            files.key_file.display()
        ))
    })?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match files.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| Error::Config(format!("tls_min_version: {e}")))?;
    let (builder, client_anchors) = match &files.client_ca_file {
        None => (builder.with_no_client_auth(), None),
        Some(path) => {
            let what = format!("tls_client_ca_file {}", path.display());
            let pem = read_file("tls_client_ca_file", path)?;
            let cas = certificates_from_pem(&what, &String::from_utf8_lossy(&pem))
                .map_err(|e| Error::Config(e.to_string()))?;
            let anchors = trust_anchors(&what, &cas).map_err(|e| Error::Config(e.to_string()))?;
            let verifier = RequestClientCertificate {
                hints: anchors
                    .iter()
                    .map(|a| DistinguishedName::in_sequence(&a.subject))
                    .collect(),
                provider: provider.clone(),
            };
            (
                builder.with_client_cert_verifier(Arc::new(verifier)),
                Some(Arc::new(anchors)),
            )
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        Error::Config(format!(
            "tls_cert_file {} and tls_key_file {} do not make a usable pair: {e}",
            files.cert_file.display(),
            files.key_file.display()
        ))
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Loaded {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        client_anchors,
    })
}

/// Asks for a client certificate (naming the client CA), requires none, and accepts any chain at
/// the handshake: the handshake still proves the client holds the certificate's key, and the
/// chain is checked against the CA afterwards (see the module doc for why not here).
#[derive(Debug)]
struct RequestClientCertificate {
    hints: Vec<DistinguishedName>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for RequestClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What the request extensions say of a connection's client certificate.
#[derive(Clone)]
enum ClientIdentity {
    None,
    Verified(ClientCertificates),
    Rejected(RejectedClientCertificate),
}

fn client_identity(loaded: &Loaded, connection: &rustls::ServerConnection) -> ClientIdentity {
    let (Some(anchors), Some(chain)) = (&loaded.client_anchors, connection.peer_certificates())
    else {
        return ClientIdentity::None;
    };
    match verify_client_chain(chain, anchors, UnixTime::now()) {
        Ok(()) => ClientIdentity::Verified(ClientCertificates(Arc::new(
            chain.iter().map(|c| c.as_ref().to_vec()).collect(),
        ))),
        Err(reason) => {
            tracing::info!(%reason, "client certificate not accepted by the listener");
            ClientIdentity::Rejected(RejectedClientCertificate(reason.into()))
        }
    }
}

/// Serves the API over HTTPS on `listener` with the same background work and graceful shutdown
/// as [`crate::serve`]: on `shutdown` it stops accepting, lets open connections finish their
/// requests, and stops the background tasks.
pub async fn serve_tls(
    listener: TcpListener,
    state: AppState,
    tls: Arc<TlsListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    crate::with_background_tasks(state.clone(), async move {
        accept_loop(listener, state, tls, shutdown).await;
        Ok(())
    })
    .await
}

async fn accept_loop(
    listener: TcpListener,
    state: AppState,
    tls: Arc<TlsListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = crate::app(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let loaded = tls.current();
        let app = app.clone();
        let builder = builder.clone();
        // Taken before the handshake, so shutdown also waits for connections mid-handshake.
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, loaded.acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let identity = client_identity(&loaded, stream.get_ref().1);
            let service = hyper::service::service_fn(move |mut request| {
                let extensions = request.extensions_mut();
                extensions.insert(ConnectInfo(peer));
                // The console marks its cookies Secure on requests that came over TLS.
                extensions.insert(crate::ui::OverTls);
                match &identity {
                    ClientIdentity::None => {}
                    ClientIdentity::Verified(chain) => {
                        extensions.insert(chain.clone());
                    }
                    ClientIdentity::Rejected(reason) => {
                        extensions.insert(reason.clone());
                    }
                }
                app.clone().oneshot(request)
            });
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Reloads `tls` on every SIGHUP until the process ends: a bad file is logged as an ERROR and
/// the configuration in force stays.
#[cfg(unix)]
pub async fn reload_on_sighup(tls: Arc<TlsListener>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGHUP; TLS certificates will not be reloaded");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!(
                cert_file = %tls.files().cert_file.display(),
                "SIGHUP: TLS certificate, key and client CA reloaded for new connections"
            ),
            Err(error) => tracing::error!(
                %error,
                "SIGHUP: TLS reload failed; the previous certificate stays in use"
            ),
        }
    }
}

/// Makes a throwaway CA and a server certificate for 127.0.0.1 and localhost in `dir` (for
/// `lessor dev --tls`): `ca.pem`, `server.pem`, `server-key.pem` (0600). Returns the listener
/// files and the CA's path, which clients pass as `VAULT_CACERT`.
pub fn make_dev_certificates(dir: &Path) -> Result<(TlsFiles, PathBuf)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let failed = |e: rcgen::Error| Error::Internal(format!("cannot make dev certificates: {e}"));
    let ca_key = KeyPair::generate().map_err(failed)?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Lessor dev CA (throwaway)");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).map_err(failed)?;

    let server_key = KeyPair::generate().map_err(failed)?;
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(failed)?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = server_params
        .signed_by(&server_key, &ca, &ca_key)
        .map_err(failed)?;

    let write = |name: &str, text: String, private: bool| -> Result<PathBuf> {
        let path = dir.join(name);
        let written = if private {
            write_private_file(&path, text.as_bytes())
        } else {
            std::fs::write(&path, text)
        };
        written.map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    };
    let ca_path = write("ca.pem", ca.pem(), false)?;
    let files = TlsFiles {
        cert_file: write("server.pem", server.pem(), false)?,
        key_file: write("server-key.pem", server_key.serialize_pem(), true)?,
        client_ca_file: None,
        min_version: TlsVersion::Tls12,
    };
    Ok((files, ca_path))
}

/// Writes `bytes` to `path` (replacing it), readable by its owner only from the first byte on.
fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The address clients use for `listen`, with the scheme the listener speaks.
pub fn client_address(local: SocketAddr, tls: bool) -> String {
    format!("{}://{local}", if tls { "https" } else { "http" })
}
