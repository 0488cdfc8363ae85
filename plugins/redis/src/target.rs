//! Where the Redis server is and how to reach it: the connection URL (`redis://` or `rediss://`,
//! written by the operator or made by Lessor from Vault's `host`, `port` and `tls` fields), the
//! admin credentials, and the TLS material (`ca_cert`, `insecure_tls`).
//!
//! Checked once, when the plugin is built, so that a bad field is a 400 naming it when the
//! connection is written. TLS is rustls with the ring provider (installed as the process default,
//! which redis-rs uses); with TLS on, every connection uses it, the admin's and each login check
//! alike, and never falls back to plain text.

use std::fmt;
use std::time::Duration;

use lessor_plugin::{ConnectionSettings, PasswordAuthentication, PluginError, Secret};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

/// Redis's own port, when a URL names none.
pub const DEFAULT_PORT: u16 = 6379;

/// One Redis server and the admin login to it.
pub struct Target {
    pub host: String,
    pub port: u16,
    /// Database number from the URL path (`redis://host/2`); 0 by default.
    db: i64,
    tls: Option<Tls>,
    /// The admin user; `None` logs in as Redis's `default` user (a `requirepass` server, or none).
    admin_user: Option<String>,
    admin_password: Secret,
}

/// TLS settings of a `rediss://` target.
struct Tls {
    /// `insecure_tls`: encrypt without checking the server's certificate.
    insecure: bool,
    /// `ca_cert`: PEM of the CA the server's certificate must chain to; without it, the operating
    /// system's CAs.
    ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for Target {
    // Hand-written: the password must never appear, nor the CA's bulk.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("tls", &self.tls.is_some())
            .field(
                "insecure_tls",
                &self.tls.as_ref().is_some_and(|tls| tls.insecure),
            )
            .field("admin_user", &self.admin_user)
            .finish_non_exhaustive()
    }
}

/// Reads and checks the connection settings. Errors name the field and never quote the URL,
/// which may hold the password.
pub fn parse(settings: &ConnectionSettings) -> Result<Target, PluginError> {
    let tls_material = &settings.tls;
    for (given, field, why) in [
        (
            tls_material.certificate_pem.is_some(),
            "tls_certificate",
            "the redis engine does not log in with a client certificate",
        ),
        (
            tls_material.private_key_pem.is_some(),
            "private_key",
            "the redis engine does not log in with a client certificate",
        ),
        (
            tls_material.certificate_key_pem.is_some(),
            "tls_certificate_key",
            "the redis engine does not log in with a client certificate",
        ),
        (
            tls_material.server_name.is_some(),
            "tls_server_name",
            "the redis engine checks the certificate against the host it connects to",
        ),
        (
            settings.password_authentication != PasswordAuthentication::Password,
            "password_authentication",
            "the redis engine gives Redis passwords as they are (ACL SETUSER); \"scram-sha-256\" \
             and scram_iterations are for PostgreSQL connections",
        ),
    ] {
        if given {
            return Err(PluginError::invalid(field, why));
        }
    }

    let rendered = lessor_plugin::render_connection_url(
        settings.connection_url.expose(),
        &settings.username,
        &settings.password,
        settings.escaping(&lessor_plugin::percent_encode_credential),
    );
    let url = url::Url::parse(rendered.expose()).map_err(|e| {
        PluginError::invalid(
            "connection_url",
            format!("not a URL ({e}); expected redis://host:port or rediss://host:port"),
        )
    })?;
    let tls = match url.scheme() {
        "redis" => false,
        "rediss" => true,
        other => {
            return Err(PluginError::invalid(
                "connection_url",
                format!(
                    "the scheme must be redis:// or rediss:// (TLS), not {:?}",
                    other.chars().take(20).collect::<String>()
                ),
            ))
        }
    };
    let host = match url.host() {
        Some(url::Host::Domain(name)) if !name.is_empty() => name.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => {
            return Err(PluginError::invalid(
                "connection_url",
                "names no host; expected redis://host:port",
            ))
        }
    };
    if url.query().is_some() || url.fragment().is_some() {
        return Err(PluginError::invalid(
            "connection_url",
            "takes no query or fragment (for TLS without verification, use insecure_tls)",
        ));
    }
    let db = match url.path().trim_start_matches('/') {
        "" => 0,
        number => number
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                PluginError::invalid(
                    "connection_url",
                    "the path may only be a database number, such as redis://host:6379/0",
                )
            })?,
    };
    // Credentials inline in the URL win (as in any Redis URL); otherwise the connection's
    // `username` and `password` fields.
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| {
                PluginError::invalid("connection_url", "the credentials in the URL are not UTF-8")
            })
    };
    let (admin_user, admin_password) = if url.password().is_some() || !url.username().is_empty() {
        (
            decode(url.username())?,
            Secret::new(decode(url.password().unwrap_or_default())?),
        )
    } else {
        (settings.username.clone(), settings.password.clone())
    };

    let tls = if tls {
        Some(Tls {
            insecure: tls_material.skip_verify,
            ca_pem: tls_material.ca_pem.as_deref().map(check_ca).transpose()?,
        })
    } else {
        if tls_material.ca_pem.is_some() {
            return Err(PluginError::invalid(
                "ca_cert",
                "is given but TLS is off; set tls to true (or use a rediss:// URL)",
            ));
        }
        if tls_material.skip_verify {
            return Err(PluginError::invalid(
                "insecure_tls",
                "is set but TLS is off; set tls to true (or use a rediss:// URL)",
            ));
        }
        None
    };
    if let Some(Tls {
        insecure: true,
        ca_pem: Some(_),
    }) = &tls
    {
        return Err(PluginError::invalid(
            "insecure_tls",
            "turns certificate checks off, so ca_cert would never be used; give one or the other",
        ));
    }
    Ok(Target {
        host,
        port: url.port().unwrap_or(DEFAULT_PORT),
        db,
        tls,
        admin_user: (!admin_user.is_empty()).then_some(admin_user),
        admin_password,
    })
}

/// Checks that `ca_cert` holds at least one certificate rustls can trust, and returns its PEM.
fn check_ca(pem: &str) -> Result<Vec<u8>, PluginError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| PluginError::invalid("ca_cert", "is not valid PEM"))?;
    if certificates.is_empty() {
        return Err(PluginError::invalid(
            "ca_cert",
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    let (_, unusable) = roots.add_parsable_certificates(certificates);
    if unusable > 0 || roots.is_empty() {
        return Err(PluginError::invalid(
            "ca_cert",
            "holds a certificate that cannot serve as a trust anchor",
        ));
    }
    Ok(pem.as_bytes().to_vec())
}

/// Installs ring as the process's rustls provider, once; redis-rs takes the process default.
pub fn install_default_provider() {
    // An error means a provider is installed already (this one, or the host program's).
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Target {
    /// A client that logs in as the admin.
    pub fn admin_client(&self) -> Result<redis::Client, PluginError> {
        self.client(self.admin_user.as_deref(), &self.admin_password)
    }

    /// A client that logs in as `username` with `password`: a login check.
    pub fn client(
        &self,
        username: Option<&str>,
        password: &Secret,
    ) -> Result<redis::Client, PluginError> {
        let address = match &self.tls {
            None => ConnectionAddr::Tcp(self.host.clone(), self.port),
            Some(tls) => ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: tls.insecure,
                tls_params: None,
            },
        };
        let mut login = RedisConnectionInfo::default()
            .set_db(self.db)
            // `CLIENT SETINFO` is not worth a round trip, and a restricted user may not run it.
            .set_skip_set_lib_name();
        if let Some(username) = username {
            login = login.set_username(username);
        }
        if !password.is_empty() {
            login = login.set_password(password.expose());
        }
        let info = address
            .into_connection_info()
            .map_err(|e| PluginError::Config(format!("connection_url: {e}")))?
            .set_redis_settings(login);
        let client = match self.tls.as_ref().and_then(|tls| tls.ca_pem.clone()) {
            Some(ca) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca),
                },
            ),
            None => redis::Client::open(info),
        };
        client.map_err(|e| PluginError::invalid("ca_cert", format!("unusable: {e}")))
    }

    /// Where the target is, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The settings of every connection to the target: bounded connect and response times, and at
/// most `in_flight` commands at once.
pub fn connection_config(
    connect_timeout: Duration,
    response_timeout: Duration,
    in_flight: usize,
) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(response_timeout))
        .set_concurrency_limit(in_flight.max(1))
}

/// Opens one connection with `client`, within the configured timeouts.
pub async fn open(
    client: &redis::Client,
    config: &AsyncConnectionConfig,
) -> Result<MultiplexedConnection, redis::RedisError> {
    client
        .get_multiplexed_async_connection_with_config(config)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use lessor_plugin::TlsMaterial;

    fn settings(url: &str) -> ConnectionSettings {
        ConnectionSettings {
            connection_url: Secret::new(url),
            username: "admin".into(),
            password: Secret::new("pa:ss@word"),
            max_open_connections: 4,
            connect_timeout: Duration::from_secs(1),
            statement_timeout: Duration::ZERO,
            tls: TlsMaterial::default(),
            disable_escaping: false,
            password_authentication: Default::default(),
            user_marker: None,
        }
    }

    fn field_of(err: PluginError) -> &'static str {
        match err {
            PluginError::InvalidValue { field, .. } => field,
            other => panic!("not an invalid value: {other:?}"),
        }
    }

    #[test]
    fn url_forms() {
        let target = parse(&settings("redis://127.0.0.1:6379")).unwrap();
        assert_eq!(target.address(), "127.0.0.1:6379");
        assert_eq!(target.admin_user.as_deref(), Some("admin"));
        assert_eq!(target.admin_password.expose(), "pa:ss@word");
        assert!(target.tls.is_none());

        let target = parse(&settings(
            "rediss://{{username}}:{{password}}@cache.example:7000/3",
        ))
        .unwrap();
        assert_eq!(target.address(), "cache.example:7000");
        assert_eq!(target.db, 3);
        assert_eq!(target.admin_password.expose(), "pa:ss@word");
        assert!(target.tls.is_some());

        let target = parse(&settings("redis://other:inline@[::1]")).unwrap();
        assert_eq!(target.address(), "::1:6379");
        assert_eq!(target.admin_user.as_deref(), Some("other"));
        assert_eq!(target.admin_password.expose(), "inline");

        let mut nobody = settings("redis://127.0.0.1");
        nobody.username.clear();
        assert_eq!(parse(&nobody).unwrap().admin_user, None);
    }

    #[test]
    fn bad_urls_name_the_field_and_hide_the_password() {
        for bad in [
            "http://h:1",
            "redis://",
            "redis://h:1/x",
            "redis://h:1/?protocol=resp3",
            "rediss://h:1/#insecure",
            "not a url with hunter2",
        ] {
            let err = parse(&settings(bad)).unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert_eq!(field_of(err), "connection_url", "{bad}");
        }
    }

    #[test]
    fn tls_fields_fit_the_scheme() {
        let mut plain = settings("redis://h:1");
        plain.tls.skip_verify = true;
        assert_eq!(field_of(parse(&plain).unwrap_err()), "insecure_tls");
        plain.tls.skip_verify = false;
        plain.tls.ca_pem = Some("-----BEGIN CERTIFICATE-----".into());
        assert_eq!(field_of(parse(&plain).unwrap_err()), "ca_cert");

        let mut tls = settings("rediss://h:1");
        tls.tls.ca_pem = Some("not pem at all".into());
        assert_eq!(field_of(parse(&tls).unwrap_err()), "ca_cert");
        tls.tls.ca_pem = None;
        tls.tls.skip_verify = true;
        let target = parse(&tls).unwrap();
        assert!(target.tls.as_ref().unwrap().insecure);

        for (field, set) in [
            ("tls_certificate", 0),
            ("private_key", 1),
            ("tls_certificate_key", 2),
            ("tls_server_name", 3),
            ("password_authentication", 4),
        ] {
            let mut given = settings("rediss://h:1");
            match set {
                0 => given.tls.certificate_pem = Some("x".into()),
                1 => given.tls.private_key_pem = Some(Secret::new("x")),
                2 => given.tls.certificate_key_pem = Some(Secret::new("x")),
                3 => given.tls.server_name = Some("x".into()),
                _ => {
                    given.password_authentication =
                        PasswordAuthentication::from_fields("scram-sha-256", 1).unwrap()
                }
            }
            assert_eq!(field_of(parse(&given).unwrap_err()), field);
        }
    }

    #[test]
    fn debug_holds_no_password() {
        let target = parse(&settings("redis://h:1")).unwrap();
        let shown = format!("{target:?}");
        assert!(!shown.contains("pa:ss"), "{shown}");
    }
}
