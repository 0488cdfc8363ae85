//! Turning an operator's connection settings into a `tokio_postgres::Config`.
//!
//! The URL is a Vault-style template (`postgresql://{{username}}:{{password}}@host:5432/db`), a URL
//! with the credentials inline, or a URL without credentials whose user and password come from the
//! settings. Because the rendered URL may hold a password, it is never put in an error message or a
//! log line: errors name the problem and nothing of the URL's text.
//!
//! The admin credentials are written into the template by the rule of its form: percent-encoded in
//! the URL form (the driver decodes them), quoted in libpq's keyword/value form (which reads a
//! `%2D` as three characters), or as they are when the operator set `disable_escaping`.
//!
//! The TLS options of libpq (`sslmode` with all five values, `sslrootcert`, `sslcert`, `sslkey`)
//! are taken out of the text here, in both the URL and the keyword/value forms, because the
//! driver knows only part of them; [`crate::tls`] turns them and the inline material into a
//! connector.

use std::time::Duration;

use lessor_plugin::{
    percent_encode_credential, render_connection_url, ConnectionSettings, PluginError, Secret,
};

use crate::error::{redact, with_sources};
use crate::tls::{self, TlsSetup, UrlTlsOptions};

/// Used when the settings carry a zero connect timeout, which would otherwise make every
/// connection attempt fail at once.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses the settings into a driver configuration for the admin connection, and the TLS setup
/// every connection to this target uses.
pub(crate) fn admin_config(
    settings: &ConnectionSettings,
) -> Result<(tokio_postgres::Config, TlsSetup), PluginError> {
    let rendered = render_credentials(settings);
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

    let (text, url_tls) = take_tls_options(text);
    let mut config: tokio_postgres::Config =
        text.parse().map_err(|err: tokio_postgres::Error| {
            // The driver's parse errors name an option, not its value, but an unknown "option" is text
            // taken from the URL, so anything that could be a password is redacted all the same.
            let inline = inline_password(&text);
            PluginError::Config(format!(
                "connection_url is not a valid PostgreSQL URL: {}",
                redact(
                    &with_sources(&err),
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

    let tls = tls::resolve(&url_tls, &settings.tls)?;
    config.ssl_mode(tls.mode.driver_mode());

    let timeout = effective_timeout(settings.connect_timeout);
    config.connect_timeout(timeout);
    if config.get_application_name().is_none() {
        // Lets a DBA tell Lessor's sessions apart in pg_stat_activity.
        config.application_name("lessor");
    }
    Ok((config, tls))
}

/// The connection string with the admin credentials written in by the rule of its form.
fn render_credentials(settings: &ConnectionSettings) -> Secret {
    let template = settings.connection_url.expose();
    let url_form = is_url_form(template);
    let rule: &dyn Fn(&str) -> String = if url_form {
        &percent_encode_credential
    } else {
        &quote_keyword_value
    };
    // A placeholder the operator put in quotes, as libpq's documentation writes values, is taken
    // out of them when Lessor quotes the value itself: quotes inside quotes would end the value.
    let unquoted;
    let template = if url_form || settings.disable_escaping {
        template
    } else {
        unquoted = Secret::new(
            template
                .replace("'{{username}}'", "{{username}}")
                .replace("'{{password}}'", "{{password}}"),
        );
        unquoted.expose()
    };
    render_connection_url(
        template,
        &settings.username,
        &settings.password,
        settings.escaping(rule),
    )
}

/// Whether a connection string is in the URL form (`scheme://...`) rather than libpq's
/// keyword/value form. Any scheme counts, so that the check below can refuse a foreign one.
fn is_url_form(text: &str) -> bool {
    text.trim_start()
        .split_once("://")
        .is_some_and(|(scheme, _)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        })
}

/// A value of libpq's keyword/value form, quoted so that it may hold anything: in single quotes,
/// with `'` and `\` escaped by a backslash (libpq's rule, which tokio-postgres follows).
fn quote_keyword_value(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        if matches!(c, '\'' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}

/// Takes libpq's TLS options out of a connection string, in the URL form (`?sslmode=..&..`,
/// values percent-decoded) or the keyword/value form (`host=.. sslmode='..'`), and returns the
/// rest for the driver. Text this cannot read is returned unchanged, for the driver to refuse.
pub(crate) fn take_tls_options(text: &str) -> (String, UrlTlsOptions) {
    let mut options = UrlTlsOptions::default();
    if let Some(scheme_end) = text.find("://") {
        // The driver reads credentials up to the first '@', then host and path up to '?'.
        let after_scheme = scheme_end + 3;
        let authority_start = text[after_scheme..]
            .find('@')
            .map_or(after_scheme, |at| after_scheme + at + 1);
        let Some(query_start) = text[authority_start..]
            .find('?')
            .map(|q| authority_start + q)
        else {
            return (text.to_owned(), options);
        };
        let mut kept = Vec::new();
        for pair in text[query_start + 1..].split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
            if UrlTlsOptions::KEYS.contains(&key.as_ref()) {
                let value = percent_encoding::percent_decode_str(value)
                    .decode_utf8_lossy()
                    .into_owned();
                options.set(&key, value);
            } else {
                kept.push(pair);
            }
        }
        let mut rest = text[..query_start].to_owned();
        if !kept.is_empty() {
            rest.push('?');
            rest.push_str(&kept.join("&"));
        }
        return (rest, options);
    }
    match keyword_pairs(text) {
        Some(pairs) => {
            let mut rest = String::new();
            let mut last = 0;
            for (key, value, span) in pairs {
                if UrlTlsOptions::KEYS.contains(&key.as_str()) {
                    rest.push_str(&text[last..span.start]);
                    last = span.end;
                    options.set(&key, value);
                }
            }
            rest.push_str(&text[last..]);
            (rest.trim().to_owned(), options)
        }
        None => (text.to_owned(), options),
    }
}

/// The `key = value` pairs of a libpq keyword/value string with their byte spans, or `None` if
/// the text does not follow the syntax. Values may be single-quoted; a backslash escapes the
/// next character, as in libpq.
fn keyword_pairs(text: &str) -> Option<Vec<(String, String, std::ops::Range<usize>)>> {
    let bytes: Vec<(usize, char)> = text.char_indices().collect();
    let mut pairs = Vec::new();
    let mut i = 0;
    let skip_spaces = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].1.is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_spaces(&mut i);
        if i >= bytes.len() {
            return Some(pairs);
        }
        let start = bytes[i].0;
        let mut key = String::new();
        while i < bytes.len() && bytes[i].1 != '=' && !bytes[i].1.is_whitespace() {
            key.push(bytes[i].1);
            i += 1;
        }
        skip_spaces(&mut i);
        if i >= bytes.len() || bytes[i].1 != '=' || key.is_empty() {
            return None;
        }
        i += 1;
        skip_spaces(&mut i);
        let mut value = String::new();
        if i < bytes.len() && bytes[i].1 == '\'' {
            i += 1;
            loop {
                match bytes.get(i).map(|b| b.1) {
                    None => return None,
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        value.push(bytes.get(i + 1)?.1);
                        i += 2;
                    }
                    Some(c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < bytes.len() && !bytes[i].1.is_whitespace() {
                if bytes[i].1 == '\\' {
                    value.push(bytes.get(i + 1)?.1);
                    i += 2;
                } else {
                    value.push(bytes[i].1);
                    i += 1;
                }
            }
        }
        let end = bytes.get(i).map_or(text.len(), |b| b.0);
        pairs.push((key, value, start..end));
    }
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
            disable_escaping: false,
            password_authentication: Default::default(),
            user_marker: None,
        }
    }

    /// A password with every character one of the two forms reads specially.
    const HARD: &str = "Adm-_%'\\ @/x1";

    #[test]
    fn each_form_carries_any_password() {
        for url in [
            "host=127.0.0.1 user={{username}} password={{password}} dbname=postgres",
            "host=127.0.0.1 user='{{username}}' password = '{{password}}' dbname=postgres",
            "postgresql://{{username}}:{{password}}@127.0.0.1/postgres",
            "  postgres://{{username}}:{{password}}@127.0.0.1/postgres?sslmode=disable",
        ] {
            let config = admin_config(&settings(url, "ad'min \\x", HARD)).unwrap().0;
            assert_eq!(config.get_user(), Some("ad'min \\x"), "{url}");
            assert_eq!(config.get_password(), Some(HARD.as_bytes()), "{url}");
            assert_eq!(config.get_dbname(), Some("postgres"), "{url}");
        }
    }

    #[test]
    fn disable_escaping_puts_credentials_in_as_written() {
        let mut s = settings(
            "host=127.0.0.1 user={{username}} password={{password}}",
            "admin",
            "Plain-pass_1.~",
        );
        s.disable_escaping = true;
        let config = admin_config(&s).unwrap().0;
        assert_eq!(config.get_password(), Some(&b"Plain-pass_1.~"[..]));

        // The operator's own escaping reaches the driver untouched, in either form.
        let mut s = settings(
            "postgresql://{{username}}:{{password}}@127.0.0.1/postgres",
            "admin",
            "p%40ss",
        );
        s.disable_escaping = true;
        let config = admin_config(&s).unwrap().0;
        assert_eq!(config.get_password(), Some(&b"p@ss"[..]));
        let mut s = settings("host=db password='{{password}}'", "admin", "it\\'s");
        s.disable_escaping = true;
        let config = admin_config(&s).unwrap().0;
        assert_eq!(config.get_password(), Some(&b"it's"[..]));
    }

    #[test]
    fn vault_style_template_is_rendered() {
        let config = admin_config(&settings(
            "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres",
            "admin",
            "p@ss/word",
        ))
        .unwrap()
        .0;
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
        .unwrap()
        .0;
        assert_eq!(config.get_user(), Some("inline"));
        assert_eq!(config.get_password(), Some(&b"secret"[..]));

        let config = admin_config(&settings("postgres://db.example/app", "admin", "pw"))
            .unwrap()
            .0;
        assert_eq!(config.get_user(), Some("admin"));
        assert_eq!(config.get_password(), Some(&b"pw"[..]));

        // Trust authentication: no password anywhere is allowed.
        let config = admin_config(&settings("postgres://postgres@127.0.0.1/postgres", "", ""))
            .unwrap()
            .0;
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
                "postgres://admin:TopSecret123@127.0.0.1/db?sslmode=TopSecret123",
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
        let config = admin_config(&s).unwrap().0;
        assert_eq!(config.get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
    }

    #[test]
    fn tls_options_are_taken_out_of_both_url_forms() {
        let (rest, tls) = take_tls_options(
            "postgresql://u:p%3Fw@db:5432/app?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20dir%2Fca.pem&sslcert=/c.pem&sslkey=/k.pem",
        );
        assert_eq!(rest, "postgresql://u:p%3Fw@db:5432/app?application_name=x");
        assert_eq!(tls.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(tls.sslrootcert.as_deref(), Some("/etc/ca dir/ca.pem"));
        assert_eq!(tls.sslcert.as_deref(), Some("/c.pem"));
        assert_eq!(tls.sslkey.as_deref(), Some("/k.pem"));

        let (rest, tls) = take_tls_options("postgres://db/app?sslmode=require");
        assert_eq!(rest, "postgres://db/app");
        assert_eq!(tls.sslmode.as_deref(), Some("require"));

        let (rest, tls) = take_tls_options(
            "host=127.0.0.1 sslmode = verify-ca  user=admin sslrootcert='/tmp/my ca\\'s.pem' dbname=postgres",
        );
        assert_eq!(rest, "host=127.0.0.1   user=admin  dbname=postgres");
        assert_eq!(tls.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(tls.sslrootcert.as_deref(), Some("/tmp/my ca's.pem"));
        rest.parse::<tokio_postgres::Config>().unwrap();

        // Nothing to take: unchanged.
        let (rest, tls) = take_tls_options("postgres://db/app");
        assert_eq!(rest, "postgres://db/app");
        assert_eq!(tls, UrlTlsOptions::default());
    }

    #[test]
    fn sslmode_decides_the_driver_mode_and_needs_a_ca_to_verify() {
        let mode = |url: &str| {
            admin_config(&settings(url, "admin", "pw"))
                .map(|(config, tls)| (config.get_ssl_mode(), tls.mode))
        };
        use crate::tls::TlsMode;
        use tokio_postgres::config::SslMode;
        // No sslmode and no material: plain, as before.
        assert_eq!(
            mode("postgres://db/app").unwrap(),
            (SslMode::Disable, TlsMode::Disable)
        );
        assert_eq!(
            mode("postgres://db/app?sslmode=prefer").unwrap(),
            (SslMode::Prefer, TlsMode::Prefer)
        );
        assert_eq!(
            mode("postgres://db/app?sslmode=require").unwrap(),
            (SslMode::Require, TlsMode::Require)
        );
        assert_eq!(
            mode("host=db sslmode=require").unwrap(),
            (SslMode::Require, TlsMode::Require)
        );
        for url in [
            "postgres://db/app?sslmode=verify-ca",
            "host=db sslmode=verify-full",
        ] {
            match mode(url) {
                Err(PluginError::InvalidValue {
                    field: "tls_ca",
                    reason,
                }) => {
                    assert!(reason.contains("needs the CA"), "{reason}")
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        for url in [
            "postgres://db/app?sslmode=allow",
            "postgres://db/app?sslmode=verify",
        ] {
            assert!(matches!(mode(url), Err(PluginError::Config(_))), "{url}");
        }
    }

    #[test]
    fn tls_fields_postgres_has_no_use_for_are_refused_by_name() {
        use lessor_plugin::TlsMaterial;
        let cases: [(&str, TlsMaterial); 3] = [
            (
                "tls_certificate_key",
                TlsMaterial {
                    certificate_key_pem: Some(Secret::new("x")),
                    ..Default::default()
                },
            ),
            (
                "tls_server_name",
                TlsMaterial {
                    server_name: Some("db".into()),
                    ..Default::default()
                },
            ),
            (
                "tls_skip_verify",
                TlsMaterial {
                    skip_verify: true,
                    ..Default::default()
                },
            ),
        ];
        for (expected, material) in cases {
            let mut s = settings("postgres://db/app?sslmode=require", "admin", "pw");
            s.tls = material;
            match admin_config(&s) {
                Err(PluginError::InvalidValue { field, .. }) => assert_eq!(field, expected),
                other => panic!("{expected}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_tls_material_names_its_field_and_never_echoes_a_key() {
        use lessor_plugin::TlsMaterial;
        let key_text =
            "-----BEGIN PRIVATE KEY-----\nTopSecretKeyMaterial\n-----END PRIVATE KEY-----\n";
        let cases: Vec<(&str, &str, TlsMaterial)> = vec![
            (
                "postgres://db/app",
                "tls_ca",
                TlsMaterial {
                    ca_pem: Some("not pem".into()),
                    ..Default::default()
                },
            ),
            (
                "postgres://db/app?sslmode=disable",
                "tls_ca",
                TlsMaterial {
                    ca_pem: Some("x".into()),
                    ..Default::default()
                },
            ),
            (
                "postgres://db/app?sslmode=require&sslrootcert=/nonexistent/ca.pem",
                "sslrootcert",
                TlsMaterial::default(),
            ),
            (
                "postgres://db/app?sslmode=require&sslrootcert=/tmp/x",
                "tls_ca",
                TlsMaterial {
                    ca_pem: Some("x".into()),
                    ..Default::default()
                },
            ),
            (
                "postgres://db/app?sslmode=require",
                "private_key",
                TlsMaterial {
                    certificate_pem: Some("x".into()),
                    ..Default::default()
                },
            ),
            (
                "postgres://db/app?sslmode=require",
                "tls_certificate",
                TlsMaterial {
                    private_key_pem: Some(Secret::new(key_text)),
                    ..Default::default()
                },
            ),
        ];
        for (url, expected, material) in cases {
            let mut s = settings(url, "admin", "pw");
            s.tls = material;
            match admin_config(&s) {
                Err(err @ PluginError::InvalidValue { field, .. }) => {
                    assert_eq!(field, expected, "{url}: {err}");
                    assert!(!err.to_string().contains("TopSecretKeyMaterial"));
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }
}
