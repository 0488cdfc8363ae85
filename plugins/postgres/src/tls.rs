//! TLS to PostgreSQL targets over rustls (the `ring` provider; no OpenSSL, no aws-lc).
//!
//! libpq's `sslmode` semantics, which operators already know, decide what is checked:
//!
//! | sslmode | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | never | no |
//! | `prefer` | if the server offers TLS, else plain | chain, if a CA is given |
//! | `require` | always | chain, if a CA is given (as libpq does with a root certificate) |
//! | `verify-ca` | always | chain against the CA |
//! | `verify-full` | always | chain and the host name of the URL |
//!
//! With no `sslmode`, a connection without TLS material stays plain (what Lessor always did),
//! and one with TLS material is `verify-full`: giving a CA means wanting it checked.
//!
//! Where libpq reads files (`sslrootcert`, `sslcert`, `sslkey`), Lessor also takes the PEM text
//! inline (`tls_ca`, `tls_certificate`, `private_key`), so that nothing has to be staged on the
//! server. Either is read once, when the plugin instance is built (a connection write or
//! `database/reset`), so a bad file is an error at write time, not at the first credential.
//! Unlike libpq, Lessor never looks for `~/.postgresql/root.crt` on its own, and never falls back
//! to plain text after a failed certificate check under `prefer`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use lessor_plugin::{PluginError, TlsMaterial};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// libpq's `sslmode` values that Lessor accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl TlsMode {
    /// Parses an `sslmode` value. `allow` (plain first, TLS only if the server insists) is refused:
    /// it would send the admin password in clear to any server that accepts it.
    pub fn parse(value: &str) -> Result<Self, PluginError> {
        match value {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            "allow" => Err(PluginError::Config(
                "sslmode=allow is not supported: use disable, prefer, require, verify-ca or verify-full".into(),
            )),
            // The value is not quoted: it is text from a URL that may hold a password.
            _ => Err(PluginError::Config(
                "sslmode must be one of disable, prefer, require, verify-ca, verify-full".into(),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// What the driver is told: it knows only whether TLS is off, optional or required; what is
    /// verified is the connector's business.
    pub(crate) fn driver_mode(self) -> SslMode {
        match self {
            Self::Disable => SslMode::Disable,
            Self::Prefer => SslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => SslMode::Require,
        }
    }
}

/// The libpq TLS options found in the connection URL (`sslmode`, and file paths).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct UrlTlsOptions {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
}

impl UrlTlsOptions {
    /// The option names this module takes out of the URL before the driver parses it.
    pub const KEYS: [&'static str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

    pub fn set(&mut self, key: &str, value: String) {
        match key {
            "sslmode" => self.sslmode = Some(value),
            "sslrootcert" => self.sslrootcert = Some(value),
            "sslcert" => self.sslcert = Some(value),
            "sslkey" => self.sslkey = Some(value),
            _ => {}
        }
    }
}

/// Where one piece of TLS material came from, so an error names the field the operator wrote.
enum Source<'a> {
    Inline { field: &'static str, pem: &'a str },
    File { field: &'static str, path: &'a str },
}

impl Source<'_> {
    fn field(&self) -> &'static str {
        match self {
            Self::Inline { field, .. } | Self::File { field, .. } => field,
        }
    }

    fn bytes(&self) -> Result<Vec<u8>, PluginError> {
        match self {
            Self::Inline { pem, .. } => Ok(pem.as_bytes().to_vec()),
            Self::File { field, path } => std::fs::read(path)
                .map_err(|err| PluginError::invalid(field, format!("cannot read {path:?}: {err}"))),
        }
    }
}

/// Picks the inline value or the URL's path; both at once is refused rather than one silently
/// winning.
fn one_source<'a>(
    inline: Option<(&'static str, &'a str)>,
    path: Option<(&'static str, &'a str)>,
) -> Result<Option<Source<'a>>, PluginError> {
    match (inline, path) {
        (Some((field, _)), Some((other, _))) => Err(PluginError::invalid(
            field,
            format!("given both inline and as {other} in connection_url; give it once"),
        )),
        (Some((field, pem)), None) => Ok(Some(Source::Inline { field, pem })),
        (None, Some((field, path))) => Ok(Some(Source::File { field, path })),
        (None, None) => Ok(None),
    }
}

/// The certificates of a PEM text (one or more `CERTIFICATE` blocks).
fn certificates(source: &Source<'_>) -> Result<Vec<CertificateDer<'static>>, PluginError> {
    let field = source.field();
    let bytes = source.bytes()?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| PluginError::invalid(field, format!("not valid PEM: {err}")))?;
    if certs.is_empty() {
        return Err(PluginError::invalid(
            field,
            "no PEM certificate (-----BEGIN CERTIFICATE-----) found",
        ));
    }
    Ok(certs)
}

/// The private key of a PEM text. The parser's own error is not quoted: it may echo a line of
/// the key.
fn private_key(source: &Source<'_>) -> Result<PrivateKeyDer<'static>, PluginError> {
    let bytes = source.bytes()?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| {
        PluginError::invalid(
            source.field(),
            "no PEM private key found (PKCS#8 PRIVATE KEY, PKCS#1 RSA PRIVATE KEY or SEC1 EC PRIVATE KEY)",
        )
    })
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Encrypt only (`require`/`prefer` without a CA): protects against eavesdropping, not against
    /// an active man in the middle.
    Nothing,
    /// The chain must lead to the given CA (`verify-ca`, or `require`/`prefer` with a CA).
    Chain,
    /// The chain, and the certificate must name the host Lessor connects to (`verify-full`).
    ChainAndName,
}

/// The TLS side of a PostgreSQL connection, resolved from the URL's options and the inline
/// material: what the driver is told, and the connector that does the handshakes.
#[derive(Clone)]
pub struct TlsSetup {
    pub mode: TlsMode,
    pub connector: RustlsConnect,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("mode", &self.mode)
            .field("client_certificate", &self.connector.client_certificate)
            .finish()
    }
}

/// Resolves the TLS setup of a connection. Every given field is used or refused by name, so
/// nothing an operator wrote is silently ignored.
pub(crate) fn resolve(
    url: &UrlTlsOptions,
    material: &TlsMaterial,
) -> Result<TlsSetup, PluginError> {
    if material.certificate_key_pem.is_some() {
        return Err(PluginError::invalid(
            "tls_certificate_key",
            "PostgreSQL connections take the client certificate and its key apart: use tls_certificate and private_key",
        ));
    }
    if material.server_name.is_some() {
        return Err(PluginError::invalid(
            "tls_server_name",
            "PostgreSQL connections verify the host named in connection_url; to connect by address while verifying a name, put the name as the host and add hostaddr=<address>",
        ));
    }
    if material.skip_verify {
        return Err(PluginError::invalid(
            "tls_skip_verify",
            "PostgreSQL connections say this with sslmode=require in connection_url (encrypted, server not verified)",
        ));
    }

    let ca = one_source(
        material.ca_pem.as_deref().map(|pem| ("tls_ca", pem)),
        url.sslrootcert.as_deref().map(|p| ("sslrootcert", p)),
    )?;
    let cert = one_source(
        material
            .certificate_pem
            .as_deref()
            .map(|pem| ("tls_certificate", pem)),
        url.sslcert.as_deref().map(|p| ("sslcert", p)),
    )?;
    let key = one_source(
        material
            .private_key_pem
            .as_ref()
            .map(|pem| ("private_key", pem.expose())),
        url.sslkey.as_deref().map(|p| ("sslkey", p)),
    )?;
    if let Some(Source::File { field, path }) = &ca {
        if *path == "system" {
            return Err(PluginError::invalid(
                field,
                "sslrootcert=system is not supported: give the CA that signed the server's certificate",
            ));
        }
    }

    let given: Vec<&'static str> = [&ca, &cert, &key]
        .into_iter()
        .flatten()
        .map(Source::field)
        .collect();
    let mode = match url.sslmode.as_deref() {
        Some(value) => TlsMode::parse(value)?,
        // Plain as before, unless TLS material says the operator wants TLS; then the strictest.
        None if given.is_empty() => TlsMode::Disable,
        None => TlsMode::VerifyFull,
    };

    if mode == TlsMode::Disable {
        if let Some(field) = given.first() {
            return Err(PluginError::invalid(
                field,
                "given with sslmode=disable, which never uses TLS; remove it or choose another sslmode",
            ));
        }
        return Ok(TlsSetup {
            mode,
            connector: RustlsConnect::disabled(),
        });
    }

    let check = match (mode, &ca) {
        (TlsMode::VerifyCa | TlsMode::VerifyFull, None) => {
            return Err(PluginError::invalid(
                "tls_ca",
                format!(
                    "sslmode={} needs the CA that signed the server's certificate: set tls_ca (PEM) or sslrootcert (a path) in connection_url",
                    mode.as_str()
                ),
            ))
        }
        (TlsMode::VerifyFull, Some(_)) => Check::ChainAndName,
        // libpq verifies the chain whenever it has a root certificate, whatever the mode.
        (_, Some(_)) => Check::Chain,
        (_, None) => Check::Nothing,
    };

    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| PluginError::Config(format!("TLS setup failed: {err}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match &ca {
        None => Arc::new(Unverified(provider.clone())),
        Some(source) => {
            let mut roots = RootCertStore::empty();
            for der in certificates(source)? {
                roots.add(der).map_err(|err| {
                    PluginError::invalid(
                        source.field(),
                        format!("not a usable CA certificate: {err}"),
                    )
                })?;
            }
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|err| PluginError::invalid(source.field(), err.to_string()))?;
            if check == Check::ChainAndName {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let client_certificate = cert.is_some();
    let config = match (cert, key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), None) => {
            return Err(PluginError::invalid(
                "private_key",
                format!(
                    "{} is given without its key: set private_key (PEM) or sslkey (a path) in connection_url",
                    cert.field()
                ),
            ))
        }
        (None, Some(key)) => {
            return Err(PluginError::invalid(
                "tls_certificate",
                format!(
                    "{} is given without its certificate: set tls_certificate (PEM) or sslcert (a path) in connection_url",
                    key.field()
                ),
            ))
        }
        (Some(cert), Some(key)) => {
            let chain = certificates(&cert)?;
            let der = private_key(&key)?;
            builder.with_client_auth_cert(chain, der).map_err(|err| {
                let reason = match err {
                    rustls::Error::InconsistentKeys(_) => format!(
                        "does not belong to the certificate in {}",
                        cert.field()
                    ),
                    other => format!("cannot be used: {other}"),
                };
                PluginError::invalid(key.field(), reason)
            })?
        }
    };
    Ok(TlsSetup {
        mode,
        connector: RustlsConnect {
            config: Some(Arc::new(config)),
            client_certificate,
        },
    })
}

/// Accepts the chain when only the host name does not match (`verify-ca`). The WebPKI verifier
/// checks the chain first and the name last, so a name error means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Accepts any server certificate (`require`/`prefer` without a CA, asked for by name), but still
/// checks the handshake signatures, so the session is encrypted to whoever holds that
/// certificate's key.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// tokio-postgres's TLS hook over rustls. One value serves the admin pool and the fresh
/// connections of `check_login`, so every use of a connection has the same TLS settings.
#[derive(Clone)]
pub struct RustlsConnect {
    /// `None` under `sslmode=disable`, where the driver never asks for a handshake.
    config: Option<Arc<ClientConfig>>,
    /// Whether a client certificate is presented, for Debug output.
    client_certificate: bool,
}

impl RustlsConnect {
    fn disabled() -> Self {
        Self {
            config: None,
            client_certificate: false,
        }
    }
}

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsHandshake;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> io::Result<RustlsHandshake> {
        // A host that is neither a DNS name nor an address can only be checked under
        // verify-full, where it fails; the other modes do not check names, so any name serves
        // (an address sends no SNI).
        let name = ServerName::try_from(host.to_owned()).unwrap_or(ServerName::IpAddress(
            std::net::IpAddr::from([127, 0, 0, 1]).into(),
        ));
        // The driver asks for a connector even under sslmode=disable, and then does not use it.
        Ok(RustlsHandshake {
            config: self.config.clone(),
            name,
        })
    }
}

/// One handshake, to one host.
pub struct RustlsHandshake {
    config: Option<Arc<ClientConfig>>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsHandshake
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let config = self.config.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "TLS is disabled (sslmode=disable)",
                )
            })?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(self.name, stream)
                .await?;
            Ok(RustlsStream(stream))
        })
    }
}

/// A TLS session to the server.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> tokio_postgres::tls::TlsStream for RustlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// `tls-server-end-point` (RFC 5929): the hash of the server's certificate, which SCRAM
    /// mixes into the login (`SCRAM-SHA-256-PLUS`), so a man in the middle holding another
    /// certificate cannot relay the admin's authentication, even under `sslmode=require`. For a
    /// certificate whose hash cannot be told (Ed25519, RSA-PSS), SCRAM falls back to its unbound
    /// form, as the driver's default `channel_binding=prefer` allows.
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| {
                let algorithm = signature_hash(leaf.as_ref())?;
                Some(ChannelBinding::tls_server_end_point(
                    ::ring::digest::digest(algorithm, leaf.as_ref())
                        .as_ref()
                        .to_vec(),
                ))
            })
            .unwrap_or_else(ChannelBinding::none)
    }
}

/// The hash of `tls-server-end-point` for a certificate: the one of its signature algorithm,
/// with MD5 and SHA-1 raised to SHA-256 (RFC 5929 section 4.1). `None` where the algorithm names
/// no single hash.
fn signature_hash(certificate: &[u8]) -> Option<&'static ::ring::digest::Algorithm> {
    use ::ring::digest::{SHA256, SHA384, SHA512};
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm SEQUENCE { OID, .. }, .. }
    let (0x30, certificate, _) = der_element(certificate)? else {
        return None;
    };
    let (_, _tbs, rest) = der_element(certificate)?;
    let (0x30, algorithm, _) = der_element(rest)? else {
        return None;
    };
    let (0x06, oid, _) = der_element(algorithm)? else {
        return None;
    };
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    match oid {
        // md5WithRSA, sha1WithRSA, sha256WithRSA
        [rsa @ .., 0x04 | 0x05 | 0x0b] if rsa == RSA => Some(&SHA256),
        [rsa @ .., 0x0c] if rsa == RSA => Some(&SHA384),
        [rsa @ .., 0x0d] if rsa == RSA => Some(&SHA512),
        // ecdsa-with-SHA1, ecdsa-with-SHA256/384/512
        [ec @ .., 0x01] if ec == ECDSA => Some(&SHA256),
        [ec @ .., 0x03, 0x02] if ec == ECDSA => Some(&SHA256),
        [ec @ .., 0x03, 0x03] if ec == ECDSA => Some(&SHA384),
        [ec @ .., 0x03, 0x04] if ec == ECDSA => Some(&SHA512),
        _ => None,
    }
}

/// One DER element at the start of `input`: (tag, contents, what follows).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, byte| (acc << 8) | usize::from(*byte));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate skeleton with the given signature algorithm OID.
    fn skeleton(oid: &[u8]) -> Vec<u8> {
        let tbs = [0x30, 0x03, 0x02, 0x01, 0x01];
        let mut algorithm = vec![0x30, (oid.len() + 2) as u8, 0x06, oid.len() as u8];
        algorithm.extend_from_slice(oid);
        let body: Vec<u8> = tbs.iter().chain(&algorithm).copied().collect();
        let mut der = vec![0x30, body.len() as u8];
        der.extend(body);
        der
    }

    #[test]
    fn channel_binding_hash_follows_the_signature_algorithm() {
        use ::ring::digest::{SHA256, SHA384, SHA512};
        let rsa = |last: u8| skeleton(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, last]);
        let ecdsa = |tail: &[u8]| {
            let mut oid = vec![0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
            oid.extend_from_slice(tail);
            skeleton(&oid)
        };
        let hash = |der: Vec<u8>| signature_hash(&der).map(|a| a.output_len());
        assert_eq!(hash(rsa(0x0b)), Some(SHA256.output_len()));
        assert_eq!(
            hash(rsa(0x05)),
            Some(SHA256.output_len()),
            "SHA-1 is raised to SHA-256"
        );
        assert_eq!(hash(rsa(0x0c)), Some(SHA384.output_len()));
        assert_eq!(hash(rsa(0x0d)), Some(SHA512.output_len()));
        assert_eq!(hash(ecdsa(&[0x03, 0x02])), Some(SHA256.output_len()));
        assert_eq!(hash(ecdsa(&[0x03, 0x03])), Some(SHA384.output_len()));
        // RSA-PSS carries its hash in parameters, Ed25519 has none: no binding.
        assert_eq!(hash(rsa(0x0a)), None);
        assert_eq!(hash(skeleton(&[0x2b, 0x65, 0x70])), None);
        assert_eq!(signature_hash(&[0x30, 0x82, 0xff]), None, "truncated");
    }
}
