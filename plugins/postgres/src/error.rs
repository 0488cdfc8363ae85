//! Mapping driver and pool failures onto [`PluginError`], which tells the reaper and the rotator
//! whether to retry later (transient) or to record a permanent failure.
//!
//! A rendered statement may hold a password, so no message built here ever quotes a statement.
//! The server's own message is kept because it is what an operator needs ("permission denied to
//! create role"), but PostgreSQL sometimes quotes a token of the statement back (`syntax error at
//! or near "'...'"`), so every secret the operation handled is redacted from it.

use deadpool_postgres::{PoolError, TimeoutType};
use lessor_plugin::PluginError;
use tokio_postgres::error::DbError;

/// Replaces every occurrence of each non-empty secret in `message`.
pub(crate) fn redact(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret, "<redacted>");
    }
    out
}

/// An error's message followed by its causes (`a: b: c`). The driver's own messages are generic
/// ("error performing TLS handshake"); the cause is what says which certificate check failed.
pub(crate) fn with_sources(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        // Some errors repeat their cause in their own message.
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// What an operator should know about a refused server certificate, in words rather than
/// rustls's variant names.
fn certificate_hint(err: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    use rustls::CertificateError as E;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = cause {
        // tokio-rustls reports through io::Error, whose source() skips the error it wraps.
        let inner = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        for candidate in [Some(current), inner].into_iter().flatten() {
            if let Some(rustls::Error::InvalidCertificate(problem)) =
                candidate.downcast_ref::<rustls::Error>()
            {
                return Some(match problem {
                    E::UnknownIssuer => "the server's certificate is not signed by the CA given in tls_ca or sslrootcert",
                    E::NotValidForName | E::NotValidForNameContext { .. } => "the server's certificate does not name the host of connection_url; connect by a name it holds, or use sslmode=verify-ca to check the chain only",
                    E::Expired | E::ExpiredContext { .. } => "the server's certificate has expired",
                    E::NotValidYet | E::NotValidYetContext { .. } => "the server's certificate is not valid yet; check the clocks",
                    _ => "the server's certificate was refused",
                });
            }
        }
        cause = current.source();
    }
    None
}

/// The server's message with its SQLSTATE, detail and hint, but not its context (which for
/// PL/pgSQL quotes the statement), with `secrets` redacted.
fn describe(db: &DbError, secrets: &[&str]) -> String {
    let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
    if let Some(detail) = db.detail() {
        text.push_str("; detail: ");
        text.push_str(detail);
    }
    if let Some(hint) = db.hint() {
        text.push_str("; hint: ");
        text.push_str(hint);
    }
    redact(&text, secrets)
}

/// How a SQLSTATE should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The connection is gone or the server is not accepting work: retry later.
    Unavailable,
    /// The server refused for now (locks, resources, deadlock, cancellation): retry later.
    Busy,
    /// The server rejected the statement; retrying unchanged will fail again.
    Rejected,
}

/// Classifies a SQLSTATE code.
pub(crate) fn class_of(code: &str) -> Class {
    match code {
        // admin_shutdown, crash_shutdown, cannot_connect_now: the server is going or not yet up.
        "57P01" | "57P02" | "57P03" => Class::Unavailable,
        // lock_not_available: `lock_timeout` fired while waiting behind another transaction.
        "55P03" => Class::Busy,
        _ if code.starts_with("08") => Class::Unavailable,
        // 53 insufficient resources (too many connections, disk full), 40 serialization failure
        // or deadlock, 57 other operator intervention (query_canceled by statement_timeout).
        _ if code.starts_with("53") || code.starts_with("40") || code.starts_with("57") => {
            Class::Busy
        }
        _ => Class::Rejected,
    }
}

/// Maps a driver error, redacting `secrets` from the server's message.
pub(crate) fn classify(err: &tokio_postgres::Error, secrets: &[&str]) -> PluginError {
    match err.as_db_error() {
        Some(db) => {
            let message = describe(db, secrets);
            match class_of(db.code().code()) {
                Class::Unavailable => PluginError::Unavailable(message),
                Class::Busy => PluginError::Busy(message),
                Class::Rejected => PluginError::Rejected(message),
            }
        }
        // I/O errors, a closed connection, a connect timeout, a refused TLS handshake: nothing
        // the statement caused.
        None => {
            let mut message = with_sources(err);
            if let Some(hint) = certificate_hint(err) {
                message.push_str(" (");
                message.push_str(hint);
                message.push(')');
            }
            PluginError::Unavailable(redact(&message, secrets))
        }
    }
}

/// Whether the server said the object (here: the role) does not exist, which a concurrent
/// revocation by another replica can cause between our existence check and our statement.
pub(crate) fn is_undefined_object(err: &tokio_postgres::Error) -> bool {
    err.as_db_error()
        .is_some_and(|db| db.code().code() == "42704")
}

/// Maps a failure to log in as `username` (used by `check_login`): an authentication or
/// authorization refusal (SQLSTATE class 28) is a [`PluginError::LoginRefused`]; anything else is
/// classified as usual.
pub(crate) fn login_error(
    username: &str,
    err: &tokio_postgres::Error,
    secrets: &[&str],
) -> PluginError {
    match err.as_db_error() {
        Some(db) if db.code().code().starts_with("28") => PluginError::LoginRefused {
            username: username.to_owned(),
            reason: describe(db, secrets),
        },
        _ => classify(err, secrets),
    }
}

/// Maps a failure to get a pooled admin connection.
pub(crate) fn pool_error(
    err: PoolError,
    max_size: usize,
    timeout: std::time::Duration,
) -> PluginError {
    match err {
        PoolError::Backend(err) => classify(&err, &[]),
        // The target is fine, Lessor itself is using every pooled connection.
        PoolError::Timeout(TimeoutType::Wait) => PluginError::Busy(format!(
            "all {max_size} pooled connections stayed in use for {}s",
            timeout.as_secs_f32()
        )),
        PoolError::Timeout(TimeoutType::Create) => PluginError::Unavailable(format!(
            "no connection could be opened within {}s",
            timeout.as_secs_f32()
        )),
        PoolError::Timeout(TimeoutType::Recycle) => PluginError::Unavailable(format!(
            "a pooled connection did not answer within {}s",
            timeout.as_secs_f32()
        )),
        PoolError::Closed => PluginError::Unavailable("the connection pool has been closed".into()),
        PoolError::NoRuntimeSpecified => {
            PluginError::Config("the connection pool has no async runtime".into())
        }
        PoolError::PostCreateHook(err) => PluginError::Unavailable(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified() {
        assert_eq!(class_of("08006"), Class::Unavailable);
        assert_eq!(class_of("57P01"), Class::Unavailable);
        assert_eq!(class_of("53300"), Class::Busy);
        assert_eq!(class_of("40P01"), Class::Busy);
        assert_eq!(class_of("40001"), Class::Busy);
        assert_eq!(class_of("55P03"), Class::Busy);
        assert_eq!(class_of("57014"), Class::Busy);
        assert_eq!(class_of("42601"), Class::Rejected);
        assert_eq!(class_of("42501"), Class::Rejected);
        assert_eq!(class_of("55000"), Class::Rejected);
    }

    #[test]
    fn redaction_removes_every_secret() {
        let text = redact(
            "syntax error at or near \"'Hunter2abc'\" and Hunter2abc",
            &["Hunter2abc", ""],
        );
        assert_eq!(
            text,
            "syntax error at or near \"'<redacted>'\" and <redacted>"
        );
    }
}
