//! TLS to the server: what the connection URL asks for (`tls=` or `ssl-mode=`) combined with the
//! inline material of the connection (`tls_ca`, `tls_certificate_key`, `tls_server_name`,
//! `tls_skip_verify`) into one checked [`Tls`], which every connection of the plugin uses: the
//! admin pool (issuing, revoking, rotating) and the one-off login checks.
//!
//! # Modes (the Go MySQL driver's, which Vault uses)
//! - no TLS parameter and no TLS field: plain text, as before.
//! - `tls=true` (`ssl-mode=VERIFY_IDENTITY`): encrypted; the server's certificate must chain to
//!   `tls_ca` when given (and only to it), else to the operating system's CA certificates; and it
//!   must be valid for the host of the URL, or for `tls_server_name` when given.
//! - `tls=custom`: as `tls=true`, with the connection's `tls_ca` / `tls_certificate_key` (one of them
//!   is required); `tls_skip_verify` may turn the verification off, as in Vault.
//! - `tls=skip-verify` (`ssl-mode=REQUIRED`), or the field `tls_skip_verify`: encrypted, but the
//!   server is not verified at all. It keeps passwords from passive eavesdroppers, not from anyone
//!   who can intercept the connection, so it happens only when asked for by one of these names.
//! - Any TLS field without a TLS parameter turns TLS on, verified unless `tls_skip_verify` (Vault
//!   uses its registered TLS configuration whenever `tls_ca` or `tls_certificate_key` is given).
//! - `tls=false` (`ssl-mode=DISABLED`): plain text; a TLS field next to it is refused.
//!
//! Refused by name rather than approximated: `tls=preferred` and `ssl-mode=PREFERRED` (fall back to
//! plain text when the server offers no TLS: a silent downgrade), `ssl-mode=VERIFY_CA` (the driver
//! cannot check the chain without the name), the driver-specific `require_ssl`, `verify_ca`,
//! `verify_identity`, `built_in_roots`, and PostgreSQL's fields `tls_certificate` and `private_key`
//! (MySQL takes the certificate and its key together, in `tls_certificate_key`). So is anything
//! that would be silently unused: `tls_ca` or `tls_server_name` when nothing is verified.
//!
//! The material is checked when the plugin is built (PEM blocks present, the CA usable as a trust
//! anchor, the key matching the certificate), so a mistake is reported naming its field rather than
//! surfacing as a handshake failure later. The driver (`mysql_async` over rustls with ring) reads
//! client keys only in PKCS#1 form, so a PKCS#8 RSA key (what `openssl req -newkey` writes) is
//! unwrapped to PKCS#1 here; EC and Ed25519 client keys are refused with that reason.

use std::fmt;
use std::sync::Arc;

use lessor_plugin::{PluginError, TlsMaterial};
use mysql_async::{ClientIdentity, SslOpts};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, ServerName};

/// What the connection URL says about TLS, and under which parameter (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UrlTls {
    pub mode: UrlMode,
    /// The parameter as written (`tls`, `ssl-mode`), to name it in errors.
    pub param: &'static str,
}

impl UrlTls {
    /// The parameter as an operator would write it for this mode, for messages.
    fn spelled(self) -> &'static str {
        match (self.param, self.mode) {
            ("tls", UrlMode::Disabled) => "tls=false",
            ("tls", UrlMode::Verify) => "tls=true",
            ("tls", UrlMode::Custom) => "tls=custom",
            ("tls", UrlMode::SkipVerify) => "tls=skip-verify",
            (_, UrlMode::Disabled) => "ssl-mode=DISABLED",
            (_, UrlMode::SkipVerify) => "ssl-mode=REQUIRED",
            (_, _) => "ssl-mode=VERIFY_IDENTITY",
        }
    }
}

/// The TLS modes a connection URL can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UrlMode {
    /// `tls=false`, `ssl-mode=DISABLED`.
    Disabled,
    /// `tls=true`, `ssl-mode=VERIFY_IDENTITY`: verify the chain and the name.
    Verify,
    /// `tls=custom`: the connection's own `tls_ca` / `tls_certificate_key`.
    Custom,
    /// `tls=skip-verify`, `ssl-mode=REQUIRED`: encrypt, verify nothing.
    SkipVerify,
}

/// Reads `tls=<value>` with the Go driver's spellings. Values are not echoed (house rule for URL
/// parts), so the message lists the accepted ones instead.
pub(crate) fn parse_tls_param(value: &str) -> Result<UrlMode, PluginError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(UrlMode::Verify),
        "false" | "0" => Ok(UrlMode::Disabled),
        "skip-verify" => Ok(UrlMode::SkipVerify),
        "custom" => Ok(UrlMode::Custom),
        "preferred" => Err(PluginError::Config(
            "the connection URL parameter `tls=preferred` is not supported: it falls back to plain text when the server offers no TLS; use tls=true, or tls=skip-verify to encrypt without verifying".into(),
        )),
        _ => Err(PluginError::Config(
            "unknown value of the connection URL parameter `tls`; use true, skip-verify, custom or false".into(),
        )),
    }
}

/// Reads `ssl-mode=<value>` with the MySQL client's spellings (any case).
pub(crate) fn parse_ssl_mode_param(value: &str) -> Result<UrlMode, PluginError> {
    match value.to_ascii_uppercase().replace('-', "_").as_str() {
        "DISABLED" => Ok(UrlMode::Disabled),
        "REQUIRED" => Ok(UrlMode::SkipVerify),
        "VERIFY_IDENTITY" => Ok(UrlMode::Verify),
        "VERIFY_CA" => Err(PluginError::Config(
            "the connection URL parameter `ssl-mode=VERIFY_CA` is not supported (the driver cannot check the chain without the name); use VERIFY_IDENTITY, with tls_server_name if the certificate names another host".into(),
        )),
        "PREFERRED" => Err(PluginError::Config(
            "the connection URL parameter `ssl-mode=PREFERRED` is not supported: it falls back to plain text when the server offers no TLS; use VERIFY_IDENTITY, or REQUIRED to encrypt without verifying".into(),
        )),
        _ => Err(PluginError::Config(
            "unknown value of the connection URL parameter `ssl-mode`; use DISABLED, REQUIRED or VERIFY_IDENTITY".into(),
        )),
    }
}

/// The TLS every connection of one plugin uses: checked material, ready for the driver.
#[derive(Clone)]
pub(crate) struct Tls {
    ssl_opts: SslOpts,
    /// Whether the server's certificate is verified (false only when asked by name).
    verify: bool,
    /// Whether the trust anchors are `tls_ca` (true) or the system's (false).
    custom_ca: bool,
    client_certificate: bool,
    server_name: Option<String>,
}

impl fmt::Debug for Tls {
    // Hand-written: the driver options hold the client key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("verify", &self.verify)
            .field("custom_ca", &self.custom_ca)
            .field("client_certificate", &self.client_certificate)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl Tls {
    /// The driver's options, for [`mysql_async::OptsBuilder::ssl_opts`].
    pub fn ssl_opts(&self) -> SslOpts {
        self.ssl_opts.clone()
    }

    pub fn verifies(&self) -> bool {
        self.verify
    }
}

/// A field given as blank text counts as not given (an API client that sends `"tls_ca": ""`).
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.trim().is_empty())
}

/// Combines the URL's mode and the connection's material into the TLS to use, or `None` for
/// plain text. Every refusal names the field or parameter at fault and quotes no value.
pub(crate) fn resolve(
    url: Option<UrlTls>,
    material: &TlsMaterial,
) -> Result<Option<Tls>, PluginError> {
    if material.certificate_pem.is_some() {
        return Err(PluginError::invalid(
            "tls_certificate",
            "is PostgreSQL's field; for MySQL give the client certificate and its key together in tls_certificate_key",
        ));
    }
    if material.private_key_pem.is_some() {
        return Err(PluginError::invalid(
            "private_key",
            "is PostgreSQL's field; for MySQL give the client certificate and its key together in tls_certificate_key",
        ));
    }
    let ca = given(&material.ca_pem);
    let certificate_key = material
        .certificate_key_pem
        .as_ref()
        .filter(|s| !s.expose().trim().is_empty());
    let server_name = given(&material.server_name);
    let any_field =
        ca.is_some() || certificate_key.is_some() || server_name.is_some() || material.skip_verify;

    let mode = match url {
        None if !any_field => return Ok(None),
        None => UrlMode::Custom,
        Some(
            asked @ UrlTls {
                mode: UrlMode::Disabled,
                ..
            },
        ) => {
            if !any_field {
                return Ok(None);
            }
            let field = if ca.is_some() {
                "tls_ca"
            } else if certificate_key.is_some() {
                "tls_certificate_key"
            } else if server_name.is_some() {
                "tls_server_name"
            } else {
                "tls_skip_verify"
            };
            return Err(PluginError::invalid(
                field,
                format!(
                    "is given, but the connection URL turns TLS off (`{}`); remove one of them",
                    asked.spelled()
                ),
            ));
        }
        Some(UrlTls {
            mode: UrlMode::Custom,
            ..
        }) => {
            if ca.is_none() && certificate_key.is_none() {
                return Err(PluginError::Config(
                    "the connection URL asks for `tls=custom`, which needs tls_ca or tls_certificate_key on the connection".into(),
                ));
            }
            UrlMode::Custom
        }
        Some(
            asked @ UrlTls {
                mode: UrlMode::Verify,
                ..
            },
        ) => {
            if material.skip_verify {
                return Err(PluginError::invalid(
                    "tls_skip_verify",
                    format!(
                        "contradicts the connection URL's `{}`, which asks for a verified connection; use tls=skip-verify or drop tls_skip_verify",
                        asked.spelled()
                    ),
                ));
            }
            UrlMode::Verify
        }
        Some(UrlTls {
            mode: UrlMode::SkipVerify,
            ..
        }) => UrlMode::SkipVerify,
    };
    let verify = !(mode == UrlMode::SkipVerify || material.skip_verify);
    if !verify {
        // Nothing checks the server, so these would be silently unused.
        if ca.is_some() {
            return Err(PluginError::invalid(
                "tls_ca",
                "serves only to verify the server, and verification is turned off (tls=skip-verify or tls_skip_verify); remove one of them",
            ));
        }
        if server_name.is_some() {
            return Err(PluginError::invalid(
                "tls_server_name",
                "is the name verified in the server's certificate, and verification is turned off (tls=skip-verify or tls_skip_verify); remove one of them",
            ));
        }
    }

    let mut ssl_opts = SslOpts::default().with_danger_accept_invalid_certs(!verify);
    if verify {
        let roots = match ca {
            Some(ca) => {
                check_ca(ca)?;
                ca.as_bytes().to_vec()
            }
            None => system_roots()?,
        };
        // Only these roots: a CA given for a private server must not widen to the public ones.
        ssl_opts = ssl_opts
            .with_root_certs(vec![roots.into()])
            .with_disable_built_in_roots(true);
    }
    if let Some(name) = server_name {
        let name = name.trim();
        ServerName::try_from(name).map_err(|_| {
            PluginError::invalid("tls_server_name", "is not a valid DNS name or IP address")
        })?;
        ssl_opts = ssl_opts.with_danger_tls_hostname_override(Some(name.to_owned()));
    }
    if let Some(pem) = certificate_key {
        let (chain, key) = client_identity(pem.expose())?;
        ssl_opts =
            ssl_opts.with_client_identity(Some(ClientIdentity::new(chain.into(), key.into())));
    }
    Ok(Some(Tls {
        ssl_opts,
        verify,
        custom_ca: ca.is_some(),
        client_certificate: certificate_key.is_some(),
        server_name: server_name.map(|n| n.trim().to_owned()),
    }))
}

/// Checks that `tls_ca` holds at least one certificate usable as a trust anchor.
fn check_ca(pem: &str) -> Result<(), PluginError> {
    let certs = certificates(pem.as_bytes(), "tls_ca")?;
    let mut store = rustls::RootCertStore::empty();
    for (index, cert) in certs.into_iter().enumerate() {
        store.add(cert).map_err(|e| {
            PluginError::invalid(
                "tls_ca",
                format!("certificate {} is not usable as a CA: {e}", index + 1),
            )
        })?;
    }
    Ok(())
}

/// The PEM `CERTIFICATE` blocks of `pem`; at least one.
fn certificates(
    pem: &[u8],
    field: &'static str,
) -> Result<Vec<CertificateDer<'static>>, PluginError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PluginError::invalid(field, format!("is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(PluginError::invalid(
            field,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// The operating system's CA certificates as one PEM bundle, for `tls=true` without `tls_ca`.
/// None found (a minimal container image) is an error: verifying against nothing would refuse
/// every server with a message that hides the cause.
fn system_roots() -> Result<Vec<u8>, PluginError> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        return Err(PluginError::Config(format!(
            "TLS verification needs CA certificates: give tls_ca on the connection, or install the system's CA certificates (none could be read{})",
            found
                .errors
                .first()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )));
    }
    if !found.errors.is_empty() {
        tracing::debug!(
            errors = found.errors.len(),
            "some system CA certificates could not be read"
        );
    }
    let mut bundle = String::new();
    for cert in &found.certs {
        bundle.push_str(&pem::encode(&pem::Pem::new("CERTIFICATE", cert.as_ref())));
    }
    Ok(bundle.into_bytes())
}

/// Splits `tls_certificate_key` into the certificate chain (PEM) and the key (PKCS#1 DER, the
/// only form the driver reads), after checking that the key belongs to the certificate.
fn client_identity(pem: &str) -> Result<(Vec<u8>, Vec<u8>), PluginError> {
    const FIELD: &str = "tls_certificate_key";
    let chain = certificates(pem.as_bytes(), FIELD)?;
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
        PluginError::invalid(
            FIELD,
            format!("holds no usable private key after the certificate ({e}); give the certificate and its unencrypted key in one PEM"),
        )
    })?;
    let pkcs1 = match &key {
        PrivateKeyDer::Pkcs1(key) => key.secret_pkcs1_der().to_vec(),
        PrivateKeyDer::Pkcs8(key) => pkcs8_rsa_key(key.secret_pkcs8_der())
            .ok_or_else(|| {
                PluginError::invalid(
                    FIELD,
                    "holds a key the MySQL driver cannot use: only RSA client keys are supported",
                )
            })?
            .to_vec(),
        _ => {
            return Err(PluginError::invalid(
                FIELD,
                "holds a key the MySQL driver cannot use: only RSA client keys are supported",
            ))
        }
    };
    // The driver reads bytes that are not UTF-8 as DER and anything else as PEM; a DER sequence
    // of this size starts 0x30 0x82, never valid UTF-8, but a wrong guess must not go unnoticed.
    if std::str::from_utf8(&pkcs1).is_ok() {
        return Err(PluginError::invalid(
            FIELD,
            "holds an RSA key too small to use",
        ));
    }
    // The same check the handshake would make, now, naming the field.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PluginError::Config(format!("TLS set-up: {e}")))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(
            chain,
            PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(pkcs1.clone())),
        )
        .map_err(|e| {
            PluginError::invalid(
                FIELD,
                format!("the key and certificate are not usable together: {e}"),
            )
        })?;
    Ok((pem.as_bytes().to_vec(), pkcs1))
}

/// `rsaEncryption`, 1.2.840.113549.1.1.1, as DER object identifier contents.
const RSA_ENCRYPTION_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo`, or `None` when the key is not
/// RSA or the structure is malformed. PrivateKeyInfo ::= SEQUENCE { version INTEGER,
/// algorithm SEQUENCE { OID, parameters }, privateKey OCTET STRING, ... }.
fn pkcs8_rsa_key(der: &[u8]) -> Option<&[u8]> {
    let (0x30, info, _) = der_element(der)? else {
        return None;
    };
    let (0x02, _version, rest) = der_element(info)? else {
        return None;
    };
    let (0x30, algorithm, rest) = der_element(rest)? else {
        return None;
    };
    let (0x06, oid, _) = der_element(algorithm)? else {
        return None;
    };
    if oid != RSA_ENCRYPTION_OID {
        return None;
    }
    let (0x04, key, _) = der_element(rest)? else {
        return None;
    };
    Some(key)
}

/// One DER element: (tag, contents, what follows). Definite lengths only, as DER requires.
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
            .fold(0usize, |len, byte| (len << 8) | usize::from(*byte));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Makes ring the process's rustls provider if none is set yet. The driver builds its TLS
/// configuration with the process default, which rustls can only pick by itself when exactly one
/// provider is compiled in; another crate of the binary enabling aws-lc would otherwise make the
/// first TLS connection panic. Losing the race to another installer is fine: any provider works.
pub(crate) fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A message for a TLS failure during the handshake, when `err` is one: which check failed and
/// what to change. `None` for every other error.
pub(crate) fn handshake_failure(err: &mysql_async::Error) -> Option<String> {
    use mysql_async::{Error, IoError, TlsError};
    let rustls_error = match err {
        Error::Io(IoError::Tls(TlsError::Tls(e))) => e,
        Error::Io(IoError::Tls(other)) => return Some(format!("TLS set-up failed: {other}")),
        Error::Io(IoError::Io(io)) => io.get_ref()?.downcast_ref::<rustls::Error>()?,
        Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
            return Some(
                "TLS was asked for, but the server does not offer it (have_ssl is not YES)"
                    .to_owned(),
            )
        }
        _ => return None,
    };
    use rustls::CertificateError as C;
    let hint = match rustls_error {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "the server's certificate is not signed by a trusted CA (tls_ca when given, else the system's CA certificates)"
        }
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "the server's certificate is not valid for the name checked (the host of the connection URL, or tls_server_name when given)"
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the server's certificate has expired"
        }
        rustls::Error::InvalidCertificate(_) => "the server's certificate was refused",
        rustls::Error::AlertReceived(_) => {
            "the server refused the TLS handshake (a client certificate it does not accept, or no protocol in common)"
        }
        _ => "the TLS handshake failed",
    };
    Some(format!("{hint}: {rustls_error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lessor_plugin::Secret;

    fn url(mode: UrlMode) -> Option<UrlTls> {
        Some(UrlTls { mode, param: "tls" })
    }

    fn field_of(err: PluginError) -> &'static str {
        match err {
            PluginError::InvalidValue { field, .. } => field,
            other => panic!("expected InvalidValue, got {other:?}"),
        }
    }

    /// A throwaway self-signed CA made for these tests (not used anywhere else).
    const CA: &str = include_str!("../tests/data/test-ca.pem");
    /// A 2048-bit RSA key in PKCS#8 and the same key in PKCS#1, with a certificate for it.
    const KEY_PKCS8: &str = include_str!("../tests/data/client-pkcs8.key");
    const KEY_PKCS1: &str = include_str!("../tests/data/client-pkcs1.key");
    const CERT: &str = include_str!("../tests/data/client.pem");
    const EC_KEY: &str = include_str!("../tests/data/ec.key");

    #[test]
    fn url_values() {
        assert_eq!(parse_tls_param("true").unwrap(), UrlMode::Verify);
        assert_eq!(parse_tls_param("TRUE").unwrap(), UrlMode::Verify);
        assert_eq!(parse_tls_param("false").unwrap(), UrlMode::Disabled);
        assert_eq!(parse_tls_param("skip-verify").unwrap(), UrlMode::SkipVerify);
        assert_eq!(parse_tls_param("custom").unwrap(), UrlMode::Custom);
        let off = UrlTls {
            mode: UrlMode::Disabled,
            param: "ssl-mode",
        };
        let with_ca = TlsMaterial {
            ca_pem: Some(CA.to_owned()),
            ..Default::default()
        };
        let err = resolve(Some(off), &with_ca).unwrap_err().to_string();
        assert!(err.contains("ssl-mode=DISABLED"), "{err}");
        let err = parse_tls_param("preferred").unwrap_err().to_string();
        assert!(err.contains("tls=preferred"), "{err}");
        assert!(parse_tls_param("my-registered-config").is_err());
        assert_eq!(
            parse_ssl_mode_param("required").unwrap(),
            UrlMode::SkipVerify
        );
        assert_eq!(
            parse_ssl_mode_param("VERIFY_IDENTITY").unwrap(),
            UrlMode::Verify
        );
        assert_eq!(parse_ssl_mode_param("disabled").unwrap(), UrlMode::Disabled);
        let err = parse_ssl_mode_param("VERIFY_CA").unwrap_err().to_string();
        assert!(err.contains("VERIFY_CA"), "{err}");
        assert!(parse_ssl_mode_param("PREFERRED").is_err());
    }

    #[test]
    fn nothing_asked_means_plain_text() {
        assert!(resolve(None, &TlsMaterial::default()).unwrap().is_none());
        assert!(resolve(url(UrlMode::Disabled), &TlsMaterial::default())
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_ca_turns_verified_tls_on_with_only_that_ca() {
        let material = TlsMaterial {
            ca_pem: Some(CA.to_owned()),
            ..Default::default()
        };
        for mode in [None, url(UrlMode::Verify), url(UrlMode::Custom)] {
            let tls = resolve(mode, &material).unwrap().expect("TLS on");
            assert!(tls.verifies());
            let opts = tls.ssl_opts();
            assert!(opts.disable_built_in_roots());
            assert!(!opts.accept_invalid_certs());
            assert!(!opts.skip_domain_validation());
        }
    }

    #[test]
    fn skip_verify_only_when_asked_by_name() {
        let tls = resolve(url(UrlMode::SkipVerify), &TlsMaterial::default())
            .unwrap()
            .unwrap();
        assert!(!tls.verifies() && tls.ssl_opts().accept_invalid_certs());
        let material = TlsMaterial {
            skip_verify: true,
            ..Default::default()
        };
        let tls = resolve(None, &material).unwrap().unwrap();
        assert!(!tls.verifies());
        // tls=true says "verify": a field saying otherwise is a contradiction, not a choice.
        assert_eq!(
            field_of(resolve(url(UrlMode::Verify), &material).unwrap_err()),
            "tls_skip_verify"
        );
    }

    #[test]
    fn conflicts_and_unused_fields_are_refused_by_name() {
        let with_ca = TlsMaterial {
            ca_pem: Some(CA.to_owned()),
            ..Default::default()
        };
        assert_eq!(
            field_of(resolve(url(UrlMode::Disabled), &with_ca).unwrap_err()),
            "tls_ca"
        );
        assert_eq!(
            field_of(resolve(url(UrlMode::SkipVerify), &with_ca).unwrap_err()),
            "tls_ca"
        );
        let named = TlsMaterial {
            server_name: Some("db.example".into()),
            skip_verify: true,
            ..Default::default()
        };
        assert_eq!(
            field_of(resolve(None, &named).unwrap_err()),
            "tls_server_name"
        );
        let err = resolve(url(UrlMode::Custom), &TlsMaterial::default()).unwrap_err();
        assert!(matches!(err, PluginError::Config(_)), "{err:?}");
        assert!(err.to_string().contains("tls_ca"), "{err}");

        let postgres = TlsMaterial {
            certificate_pem: Some(CERT.to_owned()),
            ..Default::default()
        };
        assert_eq!(
            field_of(resolve(None, &postgres).unwrap_err()),
            "tls_certificate"
        );
        let postgres = TlsMaterial {
            private_key_pem: Some(Secret::new(KEY_PKCS8)),
            ..Default::default()
        };
        assert_eq!(
            field_of(resolve(None, &postgres).unwrap_err()),
            "private_key"
        );
    }

    #[test]
    fn bad_material_names_its_field() {
        let bad_ca = TlsMaterial {
            ca_pem: Some("not a certificate".into()),
            ..Default::default()
        };
        assert_eq!(field_of(resolve(None, &bad_ca).unwrap_err()), "tls_ca");
        let bad_name = TlsMaterial {
            ca_pem: Some(CA.to_owned()),
            server_name: Some("not a name!".into()),
            ..Default::default()
        };
        assert_eq!(
            field_of(resolve(None, &bad_name).unwrap_err()),
            "tls_server_name"
        );
        for pem in [
            CERT.to_owned(),            // no key
            KEY_PKCS8.to_owned(),       // no certificate
            format!("{CERT}{EC_KEY}"),  // not RSA
            format!("{CA}{KEY_PKCS8}"), // a key that is not the certificate's
        ] {
            let material = TlsMaterial {
                certificate_key_pem: Some(Secret::new(pem)),
                ..Default::default()
            };
            let err = resolve(url(UrlMode::SkipVerify), &material).unwrap_err();
            assert!(!err.to_string().contains("PRIVATE KEY-----\nMII"), "{err}");
            assert_eq!(field_of(err), "tls_certificate_key");
        }
    }

    #[test]
    fn pkcs8_rsa_keys_are_unwrapped_to_pkcs1() {
        let pkcs8 = PrivateKeyDer::from_pem_slice(KEY_PKCS8.as_bytes()).unwrap();
        let pkcs1 = PrivateKeyDer::from_pem_slice(KEY_PKCS1.as_bytes()).unwrap();
        let (PrivateKeyDer::Pkcs8(pkcs8), PrivateKeyDer::Pkcs1(pkcs1)) = (pkcs8, pkcs1) else {
            panic!("test keys are not in the expected forms");
        };
        assert_eq!(
            pkcs8_rsa_key(pkcs8.secret_pkcs8_der()),
            Some(pkcs1.secret_pkcs1_der())
        );
        let ec = PrivateKeyDer::from_pem_slice(EC_KEY.as_bytes()).unwrap();
        if let PrivateKeyDer::Pkcs8(ec) = ec {
            assert_eq!(pkcs8_rsa_key(ec.secret_pkcs8_der()), None);
        }
        // Truncated or garbled structures are refused, never read past their end.
        let der = pkcs8.secret_pkcs8_der();
        for cut in [0, 1, 2, 10, 30, der.len() - 1] {
            assert_eq!(pkcs8_rsa_key(&der[..cut]), None, "cut at {cut}");
        }
        assert_eq!(pkcs8_rsa_key(&[0x30, 0x85, 1, 2, 3, 4, 5]), None);

        for pem in [format!("{CERT}{KEY_PKCS8}"), format!("{KEY_PKCS1}{CERT}")] {
            let material = TlsMaterial {
                certificate_key_pem: Some(Secret::new(pem)),
                ..Default::default()
            };
            let tls = resolve(url(UrlMode::SkipVerify), &material)
                .unwrap()
                .unwrap();
            assert!(tls.ssl_opts().client_identity().is_some());
            assert!(!format!("{tls:?}").contains("MII"));
        }
    }
}
