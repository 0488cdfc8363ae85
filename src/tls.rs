//! TLS on Lessor's own listener: what the HTTP layer learns of a client's certificate.
//!
//! The listener (when TLS is on) inserts [`ClientCertificates`] into every request of a
//! connection whose client presented a certificate chain the listener's `tls_client_ca_file`
//! verified; the certificate auth method (`auth/cert/login`) reads it. A request over plain HTTP,
//! or without a client certificate, carries none.

use std::sync::Arc;

/// The verified client certificate chain of a request's connection, leaf first, DER-encoded.
#[derive(Debug, Clone)]
pub struct ClientCertificates(pub Arc<Vec<Vec<u8>>>);
