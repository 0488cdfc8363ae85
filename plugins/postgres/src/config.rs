//! Turning an operator's connection settings into a `tokio_postgres::Config`.
//!
//! The URL is a Vault-style template (`postgresql://{{username}}:{{password}}@host:5432/db`), a URL
//! with the credentials inline, or a URL without credentials whose user and password come from the
//! settings. Because the rendered URL may hold a password, it is never put in an error message or a
//! log line: errors name the problem and nothing of the URL's text.

use std::time::Duration;

use lessor_plugin::{render_connection_url, ConnectionSettings, PluginError, Secret};
use tokio_postgres::config::SslMode;

use crate::error::redact;

/// Used when the settings carry a zero connect timeout, which would otherwise make every
/// connection attempt fail at once.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses the settings into a driver configuration for the admin connection.
pub(crate) fn admin_config(
    settings: &ConnectionSettings,
) -> Result<tokio_postgres::Config, PluginError> {
    let rendered = render_connection_url(
        &settings.connection_url,
        &settings.username,
        &settings.password,
    );
    let text = rendered.expose().trim();

    // tokio-postgres would read any other text as a `key=value` string and fail with a puzzling
    // message; an explicit scheme check says what is expected.
    if let Some((scheme, _)) = text.split_once("://") {
        if scheme != "postgresql" && scheme != "postgres" {
            return Err(PluginError::Config(format!(
                "connection_url must start with postgresql:// or postgres://, not {}://",
                scheme
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '+')
                    .take(20)
                    .collect::<String>()
            )));
        }
    }

    let mut config: tokio_postgres::Config =
        text.parse().map_err(|err: tokio_postgres::Error| {
            // The driver's parse errors name an option, not its value, but an unknown "option" is text
            // taken from the URL, so anything that could be a password is redacted all the same.
            let inline = inline_password(text);
            PluginError::Config(format!(
                "connection_url is not a valid PostgreSQL URL: {}",
                redact(
                    &err.to_string(),
                    &[settings.password.expose(), inline.expose()]
                )
            ))
        })?;

    if config.get_hosts().is_empty() {
        return Err(PluginError::Config("connection_url names no host".into()));
    }

    // Credentials written into the URL win; otherwise the settings supply them.
    if config.get_user().map_or(true, str::is_empty) {
        if settings.username.is_empty() {
            return Err(PluginError::Config(
                "no admin username: set `username` or put it in connection_url".into(),
            ));
        }
        config.user(&settings.username);
    }
    if config.get_password().map_or(true, <[u8]>::is_empty) && !settings.password.is_empty() {
        config.password(settings.password.expose());
    }

    // This build has no TLS connector: `prefer` (the default) falls back to plain TCP as libpq does
    // when TLS is unavailable, but `require` would fail at every connection with a vague error, so
    // it is refused here where the operator sees why.
    if matches!(config.get_ssl_mode(), SslMode::Require) {
        return Err(PluginError::Config(
            "sslmode=require is not supported: the PostgreSQL plugin has no TLS support yet; use sslmode=disable or prefer".into(),
        ));
    }

    let timeout = effective_timeout(settings.connect_timeout);
    config.connect_timeout(timeout);
    if config.get_application_name().is_none() {
        // Lets a DBA tell Lessor's sessions apart in pg_stat_activity.
        config.application_name("lessor");
    }
    Ok(config)
}

/// The connect timeout actually used (zero means "not set").
pub(crate) fn effective_timeout(timeout: Duration) -> Duration {
    if timeout.is_zero() {
        DEFAULT_CONNECT_TIMEOUT
    } else {
        timeout
    }
}

/// The password part of `scheme://user:password@host`, if any, for redaction only.
fn inline_password(url: &str) -> Secret {
    let Some((_, rest)) = url.split_once("://") else {
        return Secret::default();
    };
    let Some((credentials, _)) = rest.split_once('@') else {
        return Secret::default();
    };
    match credentials.split_once(':') {
        Some((_, password)) => Secret::new(password),
        None => Secret::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, username: &str, password: &str) -> ConnectionSettings {
        ConnectionSettings {
            connection_url: Secret::new(url),
            username: username.into(),
            password: Secret::new(password),
            max_open_connections: 4,
            connect_timeout: Duration::from_secs(3),
            statement_timeout: Duration::ZERO,
            tls: Default::default(),
        }
    }

    #[test]
    fn vault_style_template_is_rendered() {
        let config = admin_config(&settings(
            "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres",
            "admin",
            "p@ss/word",
        ))
        .unwrap();
        assert_eq!(config.get_user(), Some("admin"));
        assert_eq!(config.get_password(), Some(&b"p@ss/word"[..]));
        assert_eq!(config.get_dbname(), Some("postgres"));
        assert_eq!(config.get_ports(), &[5432]);
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(3)));
    }

    #[test]
    fn inline_credentials_win_and_missing_ones_come_from_settings() {
        let config = admin_config(&settings(
            "postgres://inline:secret@db.example:6543/app",
            "other",
            "x",
        ))
        .unwrap();
        assert_eq!(config.get_user(), Some("inline"));
        assert_eq!(config.get_password(), Some(&b"secret"[..]));

        let config = admin_config(&settings("postgres://db.example/app", "admin", "pw")).unwrap();
        assert_eq!(config.get_user(), Some("admin"));
        assert_eq!(config.get_password(), Some(&b"pw"[..]));

        // Trust authentication: no password anywhere is allowed.
        let config =
            admin_config(&settings("postgres://postgres@127.0.0.1/postgres", "", "")).unwrap();
        assert_eq!(config.get_user(), Some("postgres"));
        assert_eq!(config.get_password(), None);
    }

    #[test]
    fn bad_urls_are_config_errors_without_the_password() {
        let cases = [
            (
                "postgresql://{{username}}:{{password}}@127.0.0.1:notaport/postgres",
                "admin",
                "TopSecret123",
            ),
            (
                "mysql://{{username}}:{{password}}@127.0.0.1/x",
                "admin",
                "TopSecret123",
            ),
            (
                "postgres://admin:TopSecret123@127.0.0.1/db?TopSecret123=1",
                "",
                "",
            ),
            ("postgresql://{{password}}@127.0.0.1/db", "", "TopSecret123"),
            ("postgres:///db", "admin", "TopSecret123"),
            ("postgres://127.0.0.1/db", "", "TopSecret123"),
            (
                "postgres://admin:TopSecret123@127.0.0.1/db?sslmode=require",
                "",
                "",
            ),
        ];
        for (url, user, password) in cases {
            match admin_config(&settings(url, user, password)) {
                Err(PluginError::Config(message)) => {
                    assert!(!message.contains("TopSecret123"), "{url}: {message}");
                }
                Err(other) => panic!("{url}: expected a config error, got {other:?}"),
                Ok(_) => {
                    // `{{password}}@host` renders the password as the *user*; that is a valid URL
                    // (and would fail at login), so it is the one case allowed to parse.
                    assert_eq!(url, "postgresql://{{password}}@127.0.0.1/db");
                }
            }
        }
    }

    #[test]
    fn zero_timeout_falls_back_to_the_default() {
        let mut s = settings("postgres://postgres@127.0.0.1/postgres", "", "");
        s.connect_timeout = Duration::ZERO;
        let config = admin_config(&s).unwrap();
        assert_eq!(config.get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
    }
}
