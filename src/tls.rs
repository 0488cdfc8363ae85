//! TLS on Lessor's own listener: what the HTTP layer learns of a client's certificate, and the
//! certificate checks shared by the listener ([`crate::listener`]) and the certificate auth method
//! ([`crate::auth::cert`]).
//!
//! The listener (when TLS is on) inserts [`ClientCertificates`] into every request of a
//! connection whose client presented a certificate chain the listener's `tls_client_ca_file`
//! verified; the certificate auth method (`auth/cert/login`) reads it. A chain the listener did
//! not accept is not a handshake failure (a token client that happens to send a certificate must
//! keep working, and a workload is owed a reason): the request carries a
//! [`RejectedClientCertificate`] saying why instead. A request over plain HTTP, or without a client
//! certificate, carries neither.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};

use crate::error::{Error, Result};

/// The verified client certificate chain of a request's connection, leaf first, DER-encoded.
#[derive(Debug, Clone)]
pub struct ClientCertificates(pub Arc<Vec<Vec<u8>>>);

/// A client certificate chain the listener did not accept, and why (safe to show the client: it
/// names the check that failed, never key material).
#[derive(Debug, Clone)]
pub struct RejectedClientCertificate(pub Arc<str>);

/// Reads every certificate of a PEM text; `what` names the field or file in the error.
pub fn certificates_from_pem(what: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(format!("{what}: not a PEM certificate: {e}")))?;
    if certificates.is_empty() {
        return Err(Error::invalid(format!(
            "{what}: no PEM certificate (-----BEGIN CERTIFICATE-----) found"
        )));
    }
    Ok(certificates)
}

/// Trust anchors made of CA certificates; `what` names the field or file in the error.
pub fn trust_anchors(
    what: &str,
    certificates: &[CertificateDer<'_>],
) -> Result<Vec<TrustAnchor<'static>>> {
    certificates
        .iter()
        .map(|cert| {
            webpki::anchor_from_trusted_cert(cert)
                .map(|anchor| anchor.to_owned())
                .map_err(|e| Error::invalid(format!("{what}: not a usable CA certificate: {e}")))
        })
        .collect()
}

/// Checks a client chain (leaf first, then any intermediates) against `anchors` at `now`: the
/// signatures up to one anchor, every validity period, and that the leaf may be used for client
/// authentication. The error is a reason fit for a 403.
pub fn verify_client_chain(
    chain: &[CertificateDer<'_>],
    anchors: &[TrustAnchor<'_>],
    now: UnixTime,
) -> std::result::Result<(), String> {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err("no client certificate was presented".into());
    };
    let leaf = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("the client certificate cannot be parsed: {e}"))?;
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        anchors,
        intermediates,
        now,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } => {
            "the client certificate (or one of its issuers) has expired".to_owned()
        }
        webpki::Error::CertNotValidYet { .. } => {
            "the client certificate (or one of its issuers) is not valid yet".to_owned()
        }
        webpki::Error::UnknownIssuer => {
            "the client certificate is not signed by a trusted CA".to_owned()
        }
        webpki::Error::RequiredEkuNotFoundContext(_) => {
            "the client certificate is not meant for client authentication (extended key usage)"
                .to_owned()
        }
        other => format!("the client certificate chain is not valid: {other}"),
    })
}

/// The current time as webpki wants it.
pub fn now() -> UnixTime {
    UnixTime::now()
}
