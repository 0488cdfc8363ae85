//! Turning `mysql_async` errors into [`PluginError`]s: transient (retry later) or permanent.
//!
//! The reaper and the rotator retry transient errors, so misfiling a permanent one as transient
//! costs retries, and the reverse abandons work that would have succeeded. Server messages are
//! passed on (they name the problem), but never a rendered statement: it may hold a password.
//! Syntax errors quote the statement after `near '`, so that part is cut, and any remaining
//! occurrence of the password is replaced.

use lessor_plugin::{PluginError, Secret};
use mysql_async::{DriverError, Error};

/// MySQL/MariaDB server error codes this plugin treats specially.
pub(crate) mod code {
    /// ER_CON_COUNT_ERROR: too many connections.
    pub const TOO_MANY_CONNECTIONS: u16 = 1040;
    /// ER_ACCESS_DENIED_ERROR: wrong user or password.
    pub const ACCESS_DENIED: u16 = 1045;
    /// ER_SERVER_SHUTDOWN.
    pub const SERVER_SHUTDOWN: u16 = 1053;
    /// ER_PARSE_ERROR: its message quotes the statement.
    pub const PARSE_ERROR: u16 = 1064;
    /// ER_CANNOT_USER: "Operation ALTER USER failed" (the account does not exist).
    pub const CANNOT_USER: u16 = 1396;
    /// ER_NO_SUCH_THREAD: the connection to KILL has already gone.
    pub const NO_SUCH_THREAD: u16 = 1094;
    /// ER_NET_READ_ERROR .. ER_NET_WRITE_INTERRUPTED.
    pub const NET_ERRORS: std::ops::RangeInclusive<u16> = 1158..=1161;
    /// ER_TOO_MANY_USER_CONNECTIONS.
    pub const TOO_MANY_USER_CONNECTIONS: u16 = 1203;
    /// ER_LOCK_WAIT_TIMEOUT.
    pub const LOCK_WAIT_TIMEOUT: u16 = 1205;
    /// ER_LOCK_DEADLOCK.
    pub const DEADLOCK: u16 = 1213;
    /// ER_USER_LIMIT_REACHED: a per-user resource limit, reset hourly.
    pub const USER_LIMIT_REACHED: u16 = 1226;
    /// ER_OPTION_PREVENTS_STATEMENT: typically `--read-only` on a replica that was the primary a
    /// moment ago (failover), so it passes once the client reaches the new primary.
    pub const READ_ONLY: u16 = 1290;
    /// ER_QUERY_INTERRUPTED.
    pub const QUERY_INTERRUPTED: u16 = 1317;
    /// ER_MUST_CHANGE_PASSWORD_LOGIN: the password has expired.
    pub const PASSWORD_EXPIRED: u16 = 1862;
    /// ER_ACCESS_DENIED_NO_PASSWORD_ERROR: MariaDB answers this instead of 1045 at times, e.g.
    /// when the account has just been dropped.
    pub const ACCESS_DENIED_NO_PASSWORD: u16 = 1698;
    /// MariaDB ER_CONNECTION_KILLED.
    pub const CONNECTION_KILLED: u16 = 1927;
    /// MariaDB ER_STATEMENT_TIMEOUT.
    pub const STATEMENT_TIMEOUT: u16 = 1969;
    /// CR_SERVER_GONE_ERROR (client-side code, kept in case a proxy reports it).
    pub const SERVER_GONE: u16 = 2006;
    /// CR_SERVER_LOST (client-side code, kept in case a proxy reports it).
    pub const SERVER_LOST: u16 = 2013;
    /// MySQL ER_QUERY_TIMEOUT (max_execution_time).
    pub const QUERY_TIMEOUT: u16 = 3024;
    /// MySQL ER_ACCOUNT_HAS_BEEN_LOCKED.
    pub const MYSQL_ACCOUNT_LOCKED: u16 = 3118;
    /// MariaDB ER_ACCOUNT_HAS_BEEN_LOCKED.
    pub const MARIADB_ACCOUNT_LOCKED: u16 = 4151;
}

/// The server error code, if `err` is a server error.
pub(crate) fn server_code(err: &Error) -> Option<u16> {
    match err {
        Error::Server(server) => Some(server.code),
        _ => None,
    }
}

/// Whether the server refused a login with these credentials (as opposed to being unreachable).
pub(crate) fn is_login_refusal(code: u16) -> bool {
    matches!(
        code,
        code::ACCESS_DENIED
            | code::ACCESS_DENIED_NO_PASSWORD
            | code::PASSWORD_EXPIRED
            | code::MYSQL_ACCOUNT_LOCKED
            | code::MARIADB_ACCOUNT_LOCKED
    )
}

/// Classifies `err`, prefixing the message with `context` (what was being done, e.g.
/// "creation statement 2 of 3"; never the statement text). `secret` is replaced wherever the
/// server echoes it.
pub(crate) fn classify(err: &Error, context: &str, secret: Option<&Secret>) -> PluginError {
    // Before the I/O arm below: a refused certificate arrives as an I/O error, but retrying will
    // not help; the CA, the name or the certificate must change.
    if let Some(message) = crate::tls::handshake_failure(err) {
        return PluginError::Config(format!("{context}: {message}"));
    }
    match err {
        Error::Server(server) => {
            let message = scrub(server.code, &server.message, secret);
            let text = format!(
                "{context}: ERROR {} ({}): {message}",
                server.code, server.state
            );
            match server.code {
                code::TOO_MANY_CONNECTIONS
                | code::TOO_MANY_USER_CONNECTIONS
                | code::LOCK_WAIT_TIMEOUT
                | code::DEADLOCK
                | code::USER_LIMIT_REACHED
                | code::READ_ONLY
                | code::QUERY_INTERRUPTED
                | code::STATEMENT_TIMEOUT
                | code::QUERY_TIMEOUT => PluginError::Busy(text),
                code::SERVER_SHUTDOWN
                | code::CONNECTION_KILLED
                | code::SERVER_GONE
                | code::SERVER_LOST => PluginError::Unavailable(text),
                c if code::NET_ERRORS.contains(&c) => PluginError::Unavailable(text),
                _ => PluginError::Rejected(text),
            }
        }
        // A broken socket, a refused connection, DNS failure: all pass once the server is back.
        Error::Io(io) => PluginError::Unavailable(format!("{context}: {io}")),
        Error::Driver(driver) => match driver {
            DriverError::ConnectionClosed
            | DriverError::PoolDisconnected
            | DriverError::PacketOutOfOrder
            | DriverError::UnexpectedPacket { .. }
            | DriverError::BadCompressedPacketHeader => {
                PluginError::Unavailable(format!("{context}: {driver}"))
            }
            // The rest (unknown auth plugin, unconvertible value, ...) will not fix themselves.
            // The driver's messages for them name types and plugins, not statement text.
            other => PluginError::Rejected(format!("{context}: {other}")),
        },
        Error::Url(url) => PluginError::Config(format!("{context}: {url}")),
        Error::Other(other) => PluginError::Unavailable(format!("{context}: {other}")),
    }
}

/// Removes what a server message may quote of a statement: the text after `near '` (syntax
/// errors) and any occurrence of the password.
fn scrub(code: u16, message: &str, secret: Option<&Secret>) -> String {
    let mut out = if code == code::PARSE_ERROR || message.contains(" near '") {
        match message.find(" near '") {
            Some(at) => format!("{} (statement text withheld)", &message[..at]),
            None => message.to_owned(),
        }
    } else {
        message.to_owned()
    };
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        out = out.replace(secret.expose(), "<redacted>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::ServerError;

    fn server(code: u16, message: &str) -> Error {
        Error::Server(ServerError {
            code,
            message: message.to_owned(),
            state: "HY000".to_owned(),
        })
    }

    #[test]
    fn transient_server_errors_are_retryable() {
        for code in [1040, 1205, 1213, 1203, 2006, 2013, 1053, 1927] {
            assert!(
                classify(&server(code, "x"), "op", None).is_transient(),
                "{code}"
            );
        }
        for code in [1064, 1396, 1227, 1045] {
            assert!(
                matches!(
                    classify(&server(code, "x"), "op", None),
                    PluginError::Rejected(_)
                ),
                "{code}"
            );
        }
    }

    #[test]
    fn io_and_closed_connections_are_unavailable() {
        let io = Error::Io(mysql_async::IoError::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        )));
        assert!(matches!(
            classify(&io, "op", None),
            PluginError::Unavailable(_)
        ));
        let closed = Error::Driver(DriverError::ConnectionClosed);
        assert!(matches!(
            classify(&closed, "op", None),
            PluginError::Unavailable(_)
        ));
    }

    #[test]
    fn statement_text_and_password_are_withheld() {
        let password = Secret::new("Zq3-verysecret_Password");
        let syntax = server(
            1064,
            "You have an error in your SQL syntax; check the manual near 'IDENTIFIED BYY 'Zq3-verysecret_Password'' at line 1",
        );
        let message = classify(&syntax, "creation statement 1 of 2", Some(&password)).to_string();
        assert!(!message.contains("Zq3-verysecret"), "{message}");
        assert!(message.contains("creation statement 1 of 2"), "{message}");
        assert!(message.contains("withheld"), "{message}");

        let echo = server(1819, "Your password 'Zq3-verysecret_Password' is weak");
        let message = classify(&echo, "op", Some(&password)).to_string();
        assert!(!message.contains("Zq3-verysecret"), "{message}");
    }
}
