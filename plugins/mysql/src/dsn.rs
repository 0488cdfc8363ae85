//! Connection URL parsing: the two forms operators write, reduced to one [`Target`].
//!
//! - Vault's (Go driver) form: `{{username}}:{{password}}@tcp(127.0.0.1:3306)/[db][?params]`.
//! - URL form: `mysql://{{username}}:{{password}}@127.0.0.1:3306/[db][?params]` (`mariadb://` too).
//!
//! Either may carry the placeholders (filled from the connection's admin credentials,
//! percent-encoded, since this plugin percent-decodes the user part of both forms; as they are
//! when the operator set `disable_escaping`) or inline credentials (which must then be
//! percent-encoded, as in any URL). Where the URL names no user or no password,
//! the connection's admin credentials are used.
//!
//! Error messages never quote the URL or any value from it: the URL holds the admin password.
//! Query parameters are checked against a short list, because silently ignoring one such as
//! `tls=true` would quietly downgrade a connection the operator meant to protect.
//!
//! TLS is asked for with `tls=true|skip-verify|custom|false` (the Go driver's, in either form) or
//! `ssl-mode=DISABLED|REQUIRED|VERIFY_IDENTITY` (the MySQL client's, in either form); the
//! [`crate::tls`] module combines that with the connection's TLS fields.

use std::fmt;

use lessor_plugin::{
    percent_encode_credential, render_connection_url, ConnectionSettings, PluginError, Secret,
};
use percent_encoding::percent_decode_str;

use crate::tls::{self, Tls, UrlTls};

/// The port MySQL and MariaDB listen on unless told otherwise.
const DEFAULT_PORT: u16 = 3306;

/// Query parameters of the Go MySQL driver (which Vault uses) that only shape how that driver
/// decodes results or times its I/O; this plugin has its own behaviour for each, so they are
/// accepted and ignored rather than refused, letting Vault connection URLs work unchanged.
const IGNORED_PARAMS: &[&str] = &[
    "charset",
    "collation",
    "loc",
    "parseTime",
    "timeout",
    "readTimeout",
    "writeTimeout",
    "allowNativePasswords",
    "interpolateParams",
    "multiStatements",
    "clientFoundRows",
    "columnsWithAlias",
    "maxAllowedPacket",
    "rejectReadOnly",
    "checkConnLiveness",
    "autocommit",
    "prefer_socket",
];

/// TLS parameters of other drivers (`mysql_async`'s own, PostgreSQL's). Refused by name rather
/// than ignored, since ignoring one would quietly downgrade a connection meant to be protected.
const FOREIGN_TLS_PARAMS: &[&str] = &[
    "sslmode",
    "ssl",
    "require_ssl",
    "verify_ca",
    "verify_identity",
    "built_in_roots",
    "sslrootcert",
    "sslcert",
    "sslkey",
];

/// Where and as whom the admin connection goes, parsed from the connection URL.
#[derive(Clone)]
pub(crate) struct Target {
    pub host: String,
    pub port: u16,
    pub db_name: Option<String>,
    pub user: String,
    pub password: Secret,
    /// `allowCleartextPasswords=true`: lets the server ask for the password in clear text
    /// (PAM/LDAP authentication, AWS IAM). Off by default since, without TLS, it crosses the
    /// network readable.
    pub cleartext_auth: bool,
    /// TLS for every connection (admin pool and login checks), or `None` for plain text.
    pub tls: Option<Tls>,
}

impl fmt::Debug for Target {
    // Hand-written so the password can never reach a log line through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db_name", &self.db_name)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("cleartext_auth", &self.cleartext_auth)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Parses the connection URL of `settings`, filling `{{username}}`/`{{password}}` and falling back
/// to the admin credentials where the URL names none.
pub(crate) fn parse(settings: &ConnectionSettings) -> Result<Target, PluginError> {
    let rendered = render_connection_url(
        settings.connection_url.expose(),
        &settings.username,
        &settings.password,
        settings.escaping(&percent_encode_credential),
    );
    let text = rendered.expose().trim();
    if text.is_empty() {
        return Err(PluginError::Config("the connection URL is empty".into()));
    }
    let parsed = match scheme_of(text) {
        Some(scheme) if scheme.eq_ignore_ascii_case("mysql") || scheme.eq_ignore_ascii_case("mariadb") => {
            parse_url(text)?
        }
        Some(_) => {
            return Err(PluginError::Config(
                "unsupported connection URL scheme; use mysql://user:pass@host:port/db or user:pass@tcp(host:port)/db"
                    .into(),
            ))
        }
        None => parse_go_dsn(text)?,
    };
    let user = match parsed.user {
        Some(user) if !user.is_empty() => user,
        _ => settings.username.clone(),
    };
    if user.is_empty() {
        return Err(PluginError::Config(
            "no admin username: neither the connection URL nor the connection's username names one"
                .into(),
        ));
    }
    let password = parsed.password.unwrap_or_else(|| settings.password.clone());
    let tls = tls::resolve(parsed.tls, &settings.tls)?;
    Ok(Target {
        host: parsed.host,
        port: parsed.port,
        db_name: parsed.db_name,
        user,
        password,
        cleartext_auth: parsed.cleartext_auth,
        tls,
    })
}

/// What a URL itself says, before falling back to the connection's credentials.
struct Parsed {
    host: String,
    port: u16,
    db_name: Option<String>,
    user: Option<String>,
    password: Option<Secret>,
    cleartext_auth: bool,
    tls: Option<UrlTls>,
}

/// The scheme when `text` starts with `letters://`. Checked by hand rather than by searching for
/// `://`, so an inline password that happens to contain `://` is not mistaken for a scheme.
fn scheme_of(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once("://")?;
    (!scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

fn parse_url(text: &str) -> Result<Parsed, PluginError> {
    // url's ParseError describes the problem without echoing the input, so it is safe to show.
    let url = url::Url::parse(text)
        .map_err(|e| PluginError::Config(format!("invalid connection URL: {e}")))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| PluginError::Config("the connection URL names no host".into()))?;
    // IPv6 hosts come bracketed from the url crate; the driver wants the bare address.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let user = match url.username() {
        "" => None,
        encoded => Some(decode(encoded, "username")?),
    };
    let password = url
        .password()
        .map(|encoded| decode(encoded, "password").map(Secret::new))
        .transpose()?;
    let db_name = match url.path().trim_start_matches('/') {
        "" => None,
        encoded => Some(decode(encoded, "database name")?),
    };
    let mut parsed = Parsed {
        host,
        port: url.port().unwrap_or(DEFAULT_PORT),
        db_name,
        user,
        password,
        cleartext_auth: false,
        tls: None,
    };
    for (name, value) in url.query_pairs() {
        apply_param(&mut parsed, &name, &value)?;
    }
    Ok(parsed)
}

/// Parses `[user[:password]@][tcp[(address)]]/[dbname][?params]` the way the Go MySQL driver does:
/// the last `/` ends the address, the last `@` before it ends the credentials, the first `:` in
/// them separates user from password.
fn parse_go_dsn(text: &str) -> Result<Parsed, PluginError> {
    let slash = text.rfind('/').ok_or_else(|| {
        PluginError::Config("invalid connection URL: expected user:pass@tcp(host:port)/ or mysql://user:pass@host:port/".into())
    })?;
    let (left, right) = (&text[..slash], &text[slash + 1..]);

    let (credentials, net_addr) = match left.rfind('@') {
        Some(at) => (Some(&left[..at]), &left[at + 1..]),
        None => (None, left),
    };
    let (user, password) = match credentials {
        None => (None, None),
        Some(creds) => match creds.split_once(':') {
            Some((user, pass)) => (
                Some(decode(user, "username")?),
                Some(Secret::new(decode(pass, "password")?)),
            ),
            None => (Some(decode(creds, "username")?), None),
        },
    };

    let (net, address) = match net_addr.find('(') {
        Some(open) => {
            let address = net_addr[open + 1..].strip_suffix(')').ok_or_else(|| {
                PluginError::Config("invalid connection URL: the address after tcp( is not closed with ')' before '/'".into())
            })?;
            (&net_addr[..open], Some(address))
        }
        None => (net_addr, None),
    };
    match net {
        // The Go driver reads an empty network as tcp to 127.0.0.1:3306.
        "" | "tcp" | "tcp4" | "tcp6" => {}
        "unix" => {
            return Err(PluginError::Config(
                "unix socket connection URLs are not supported; use tcp(host:port)".into(),
            ))
        }
        _ => {
            return Err(PluginError::Config(
                "invalid connection URL: the network before '(' must be tcp".into(),
            ))
        }
    }
    let (host, port) = match address {
        None | Some("") => ("127.0.0.1".to_owned(), DEFAULT_PORT),
        Some(address) => split_host_port(address)?,
    };

    let (db, query) = match right.split_once('?') {
        Some((db, query)) => (db, Some(query)),
        None => (right, None),
    };
    let db_name = match db {
        "" => None,
        encoded => Some(decode(encoded, "database name")?),
    };
    let mut parsed = Parsed {
        host,
        port,
        db_name,
        user,
        password,
        cleartext_auth: false,
        tls: None,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        // Go's url.QueryUnescape also reads '+' as a space.
        let value = decode(&value.replace('+', " "), "parameter value")?;
        apply_param(&mut parsed, name, &value)?;
    }
    Ok(parsed)
}

/// Splits `host:port`, `[v6]:port`, `host` or a bare IPv6 address.
fn split_host_port(address: &str) -> Result<(String, u16), PluginError> {
    let bad_port = || PluginError::Config("invalid port in the connection URL".into());
    if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| {
            PluginError::Config(
                "invalid connection URL: '[' of an IPv6 address is not closed".into(),
            )
        })?;
        let port = match after {
            "" => DEFAULT_PORT,
            p => p
                .strip_prefix(':')
                .ok_or_else(bad_port)?
                .parse()
                .map_err(|_| bad_port())?,
        };
        return Ok((host.to_owned(), port));
    }
    match address.matches(':').count() {
        0 => Ok((address.to_owned(), DEFAULT_PORT)),
        1 => {
            let (host, port) = address.split_once(':').ok_or_else(bad_port)?;
            let port = port.parse().map_err(|_| bad_port())?;
            let host = if host.is_empty() { "127.0.0.1" } else { host };
            Ok((host.to_owned(), port))
        }
        // More than one colon and no brackets: a bare IPv6 address without a port.
        _ => Ok((address.to_owned(), DEFAULT_PORT)),
    }
}

/// Percent-decodes one part of the URL; the message names the part, never its value.
fn decode(encoded: &str, what: &str) -> Result<String, PluginError> {
    percent_decode_str(encoded)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            PluginError::Config(format!(
                "the {what} in the connection URL is not valid UTF-8 once percent-decoded"
            ))
        })
}

/// Applies one query parameter. Names are safe to echo; values are not (an operator may have
/// pasted something secret into one), so messages never quote a value.
fn apply_param(parsed: &mut Parsed, name: &str, value: &str) -> Result<(), PluginError> {
    let tls_mode = match name {
        "tls" => Some(("tls", tls::parse_tls_param(value)?)),
        "ssl-mode" | "ssl_mode" | "sslMode" => {
            Some(("ssl-mode", tls::parse_ssl_mode_param(value)?))
        }
        _ => None,
    };
    if let Some((param, mode)) = tls_mode {
        // Two answers to one question: which wins would be a guess.
        if parsed.tls.is_some() {
            return Err(PluginError::Config(
                "the connection URL gives TLS more than once; give one `tls` or `ssl-mode` parameter".into(),
            ));
        }
        parsed.tls = Some(UrlTls { mode, param });
        return Ok(());
    }
    if FOREIGN_TLS_PARAMS.contains(&name) {
        return Err(PluginError::Config(format!(
            "the connection URL parameter `{name}` is not supported; ask for TLS with tls=true|skip-verify|custom|false or ssl-mode=DISABLED|REQUIRED|VERIFY_IDENTITY"
        )));
    }
    if name == "allowCleartextPasswords" || name == "enable_cleartext_plugin" {
        parsed.cleartext_auth = matches!(
            value.to_ascii_lowercase().as_str(),
            "true" | "1" | "on" | "yes"
        );
        return Ok(());
    }
    if IGNORED_PARAMS.contains(&name) {
        return Ok(());
    }
    Err(PluginError::Config(format!(
        "unknown connection URL parameter `{}`",
        name.chars().take(40).collect::<String>()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings(url: &str, username: &str, password: &str) -> ConnectionSettings {
        ConnectionSettings {
            connection_url: Secret::new(url),
            username: username.to_owned(),
            password: Secret::new(password),
            max_open_connections: 4,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::ZERO,
            tls: Default::default(),
            disable_escaping: false,
            password_authentication: Default::default(),
            user_marker: None,
        }
    }

    #[test]
    fn disable_escaping_leaves_the_operators_escaping_alone() {
        for url in [
            "mysql://{{username}}:{{password}}@127.0.0.1:3306/",
            "{{username}}:{{password}}@tcp(127.0.0.1:3306)/",
        ] {
            let mut s = settings(url, "admin", "p%40ss-1");
            assert_eq!(parse(&s).unwrap().password.expose(), "p%40ss-1", "{url}");
            s.disable_escaping = true;
            assert_eq!(parse(&s).unwrap().password.expose(), "p@ss-1", "{url}");
        }
    }

    #[test]
    fn vault_form_with_placeholders() {
        let t = parse(&settings(
            "{{username}}:{{password}}@tcp(db.example:3307)/app?parseTime=true",
            "admin",
            "p@ss/w:rd-_",
        ))
        .unwrap();
        assert_eq!((t.host.as_str(), t.port), ("db.example", 3307));
        assert_eq!(t.db_name.as_deref(), Some("app"));
        assert_eq!(t.user, "admin");
        assert_eq!(t.password.expose(), "p@ss/w:rd-_");
        assert!(!t.cleartext_auth);
    }

    #[test]
    fn vault_form_defaults_and_variants() {
        let t = parse(&settings(
            "{{username}}:{{password}}@tcp(127.0.0.1:3306)/",
            "root",
            "",
        ))
        .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.db_name),
            ("127.0.0.1", 3306, None)
        );
        assert_eq!(t.password.expose(), "");

        let t = parse(&settings(
            "root:inline@tcp(localhost)/",
            "ignored",
            "ignored",
        ))
        .unwrap();
        assert_eq!(
            (t.user.as_str(), t.password.expose(), t.port),
            ("root", "inline", 3306)
        );

        let t = parse(&settings("@/", "admin", "secret")).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 3306));
        assert_eq!((t.user.as_str(), t.password.expose()), ("admin", "secret"));

        let t = parse(&settings(
            "u:p@tcp([::1]:3310)/x?allowCleartextPasswords=true&tls=false",
            "",
            "",
        ))
        .unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 3310));
        assert!(t.cleartext_auth);
    }

    #[test]
    fn url_form_with_and_without_placeholders() {
        let t = parse(&settings(
            "mysql://{{username}}:{{password}}@127.0.0.1:3306/",
            "root",
            "a%b@c",
        ))
        .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.db_name.as_deref()),
            ("127.0.0.1", 3306, None)
        );
        assert_eq!((t.user.as_str(), t.password.expose()), ("root", "a%b@c"));

        let t = parse(&settings(
            "mysql://root@db.internal/inventory",
            "other",
            "fromsettings",
        ))
        .unwrap();
        assert_eq!((t.host.as_str(), t.port), ("db.internal", 3306));
        assert_eq!(t.db_name.as_deref(), Some("inventory"));
        assert_eq!(
            (t.user.as_str(), t.password.expose()),
            ("root", "fromsettings")
        );

        let t = parse(&settings("mariadb://adm:s%3Acret@[::1]:3307/", "", "")).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 3307));
        assert_eq!((t.user.as_str(), t.password.expose()), ("adm", "s:cret"));
    }

    #[test]
    fn bad_urls_are_config_errors_without_the_password() {
        let password = "Sup3rSecretPassw0rd";
        let cases = [
            format!("postgres://root:{password}@127.0.0.1:5432/"),
            format!("mysql://root:{password}@127.0.0.1:notaport/"),
            format!("root:{password}@tcp(127.0.0.1:3306/"),
            format!("root:{password}@tcp(127.0.0.1:99999)/"),
            format!("root:{password}@unix(/run/mysqld.sock)/"),
            format!("root:{password}@tcp(127.0.0.1)/?tls=preferred"),
            format!("root:{password}@tcp(127.0.0.1)/?tls={password}"),
            format!("mysql://root:{password}@127.0.0.1/?require_ssl=true"),
            format!("mysql://root:{password}@127.0.0.1/?ssl-mode=VERIFY_CA"),
            format!("root:{password}@tcp(127.0.0.1)/?tls=true&ssl-mode=REQUIRED"),
            format!("root:{password}@tcp(127.0.0.1)/?frobnicate={password}"),
            format!("root:{password}@udp(127.0.0.1)/"),
            format!("root:{password}-no-slash-at-all"),
            "mysql://{{username}}:{{password}}@/db".to_owned(),
            "mysql://:{{password}}@host/".to_owned(),
        ];
        for url in cases {
            let err = parse(&settings(&url, "", password)).unwrap_err();
            assert!(matches!(err, PluginError::Config(_)), "{err:?}");
            let message = err.to_string();
            assert!(!message.contains(password), "{message}");
        }
    }

    #[test]
    fn tls_parameters_in_both_forms() {
        use lessor_plugin::TlsMaterial;
        let ca = include_str!("../tests/data/test-ca.pem");
        let with_ca = |url: &str| {
            let mut s = settings(url, "admin", "pw");
            s.tls = TlsMaterial {
                ca_pem: Some(ca.to_owned()),
                ..Default::default()
            };
            parse(&s)
        };
        // No parameter and no field: plain text, as before.
        for url in [
            "admin@tcp(db:3306)/",
            "mysql://admin@db/",
            "admin@tcp(db)/?tls=false",
        ] {
            assert!(
                parse(&settings(url, "", "")).unwrap().tls.is_none(),
                "{url}"
            );
        }
        // Verified, by either spelling, in either form.
        for url in [
            "admin@tcp(db:3306)/?tls=true",
            "admin@tcp(db:3306)/?tls=custom",
            "admin@tcp(db:3306)/",
            "mysql://admin@db/?ssl-mode=VERIFY_IDENTITY",
            "mysql://admin@db/?tls=true",
            "admin@tcp(db)/?ssl_mode=verify_identity",
        ] {
            let tls = with_ca(url).unwrap().tls.expect(url);
            assert!(tls.verifies(), "{url}");
        }
        // Encrypted without verification only when asked by name.
        for url in [
            "admin@tcp(db:3306)/?tls=skip-verify",
            "mysql://admin@db/?ssl-mode=REQUIRED",
        ] {
            let tls = parse(&settings(url, "", "")).unwrap().tls.expect(url);
            assert!(!tls.verifies(), "{url}");
        }
        // A CA next to "no TLS" or "no verification" would be silently unused.
        for url in [
            "admin@tcp(db)/?tls=false",
            "mysql://admin@db/?ssl-mode=DISABLED",
            "admin@tcp(db)/?tls=skip-verify",
        ] {
            let err = with_ca(url).unwrap_err();
            assert!(
                matches!(
                    err,
                    PluginError::InvalidValue {
                        field: "tls_ca",
                        ..
                    }
                ),
                "{url}: {err:?}"
            );
        }
        let err = parse(&settings("admin@tcp(db)/?tls=custom", "", "")).unwrap_err();
        assert!(err.to_string().contains("tls=custom"), "{err}");
        let err = parse(&settings("mysql://admin@db/?sslmode=require", "", "")).unwrap_err();
        assert!(err.to_string().contains("`sslmode`"), "{err}");
    }

    #[test]
    fn target_debug_is_redacted() {
        let t = parse(&settings("mysql://root:hunter2secret@h/", "", "")).unwrap();
        assert!(!format!("{t:?}").contains("hunter2secret"));
    }
}
