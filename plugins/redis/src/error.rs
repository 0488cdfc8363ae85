//! Turning redis-rs errors into [`PluginError`]s: transient (retry later) or permanent.
//!
//! The reaper and the rotator retry transient errors, so a refused rule filed as transient would
//! be retried for ever, and a lost connection filed as permanent would abandon a revocation that
//! would succeed a moment later. Server messages are passed on (they name the problem, such as an
//! unknown command in a rule), with any password the command carried cut out.

use lessor_plugin::{PluginError, Secret};
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Whether the error means the connection is gone or never came up (retry on a new one).
pub fn is_connection_failure(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
}

/// Classifies `err`, prefixing the message with `context` (what was being done, never the command
/// itself). `secret` is replaced wherever it appears in the message.
pub fn classify(err: &RedisError, context: &str, secret: Option<&Secret>) -> PluginError {
    let mut message = format!("{context}: {err}");
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        message = message.replace(secret.expose(), "<redacted>");
    }
    // Before the connection arm: a refused certificate or a server that does not speak TLS
    // arrives as an I/O error, but no retry helps; the CA, the host or `tls` must change.
    if let Some(tls) = tls_failure(err) {
        return PluginError::Config(format!("{context}: TLS handshake failed: {tls}"));
    }
    if is_connection_failure(err) {
        return PluginError::Unavailable(message);
    }
    match err.kind() {
        // Loading a dump, a failover under way, a replica that was the primary a moment ago.
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::ReadOnly,
        ) => PluginError::Busy(message),
        ErrorKind::InvalidClientConfig => PluginError::Config(message),
        // The admin's own login refused, a command the admin may not run (NOPERM), a rule the
        // server does not know: nothing passes by waiting.
        _ => PluginError::Rejected(message),
    }
}

/// The rustls error inside `err`, if the TLS handshake failed.
fn tls_failure(err: &RedisError) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        let inner = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if let Some(tls) = inner {
            return Some(tls.to_string());
        }
        current = error.source();
    }
    None
}

/// Whether a login was refused for its credentials (wrong password, unknown or disabled user),
/// as opposed to the server being out of reach.
pub fn is_login_refusal(err: &RedisError) -> bool {
    err.kind() == ErrorKind::AuthenticationFailed
        || matches!(err.code(), Some("WRONGPASS" | "NOAUTH"))
}

/// Whether the server refused a command for the user's ACL (NOPERM).
pub fn is_no_permission(err: &RedisError) -> bool {
    err.kind() == ErrorKind::Server(ServerErrorKind::NoPerm) || err.code() == Some("NOPERM")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_apart() {
        let io = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert!(classify(&io, "connecting", None).is_transient());
        let loading =
            RedisError::from((ErrorKind::Server(ServerErrorKind::BusyLoading), "loading"));
        assert!(matches!(
            classify(&loading, "x", None),
            PluginError::Busy(_)
        ));
        let rule = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "Error in ACL SETUSER modifier '+nosuch'",
        ));
        assert!(!classify(&rule, "x", None).is_transient());
        let auth = RedisError::from((ErrorKind::AuthenticationFailed, "bad"));
        assert!(is_login_refusal(&auth));
    }

    #[test]
    fn the_password_is_cut_out() {
        let err = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "echo",
            ">Sup3r-secret-pw".to_owned(),
        ));
        let classified = classify(&err, "creating", Some(&Secret::new("Sup3r-secret-pw")));
        assert!(!classified.to_string().contains("Sup3r"), "{classified}");
    }
}
