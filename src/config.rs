//! Server configuration, layered: built-in defaults < TOML file < `LESSOR_*` environment variables <
//! command-line flags. Unknown `LESSOR_*` variables are warned about, since a typo there would
//! otherwise silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lessor_plugin::Secret;
use serde::Deserialize;

use crate::catalog::LeaseLimits;
use crate::engines::TargetDeadlines;
use crate::error::{Error, Result};
use crate::listener::{TlsFiles, TlsVersion};
use crate::ttl::parse_duration_value;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Everything a server needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Where the store lives: `sqlite:///path/lessor.db` or a plain file path.
    pub store_url: String,
    /// The seal key itself (64 hex digits or base64 of 32 bytes); wins over `seal_key_file`.
    pub seal_key: Option<Secret>,
    /// A file holding the seal key.
    pub seal_key_file: Option<PathBuf>,
    /// Create `seal_key_file` with a fresh key when it is missing (dev mode only: a server that
    /// silently made a new key would fail to open its existing secrets).
    pub create_seal_key_file: bool,
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `lessor=debug,info`.
    pub log_level: String,
    /// TTL of credentials whose role sets none.
    pub default_lease_ttl: Duration,
    /// Longest life of any credential.
    pub max_lease_ttl: Duration,
    /// Anomaly rules (`[monitor]`); `sys/monitor/rules` changes them at run time.
    pub monitor: crate::audit::anomaly::MonitorRules,
    /// How the reaper retries failed revocations (`[revocation_retry]`).
    pub revocation_retry: crate::lease::retry::RetryPolicy,
    /// How the rotator retries failed rotations (`[rotation_retry]`).
    pub rotation_retry: crate::lease::retry::RetryPolicy,
    /// Longest wait to open a connection to a target database (or for a pooled one).
    pub target_connect_timeout: Duration,
    /// Longest one operation on a target database may take as a whole (create, renew, revoke,
    /// set a password, check a login); also each statement's server-side limit.
    pub target_operation_timeout: Duration,
    /// How often one replica sweeps every connection for users this installation created that
    /// no live lease covers (`lease::reconcile`); zero turns the periodic sweep off (the on-demand
    /// `sys/leases/reconcile` stays).
    pub reconcile_interval: Duration,
    /// The listener's certificate chain (PEM); with `tls_key_file`, the listener speaks HTTPS.
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of `tls_cert_file` (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// CAs whose client certificates reach the certificate auth method (`auth/cert/login`).
    pub tls_client_ca_file: Option<PathBuf>,
    pub tls_min_version: TlsVersion,
    /// Serve plain HTTP: tokens and credentials then cross the network in clear, so a server
    /// does it only when asked by name (Vault's `tls_disable`).
    pub tls_disable: bool,
}

/// What the listener speaks, decided from the settings by [`Settings::listener_security`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerSecurity {
    /// Plain HTTP, asked for with `tls_disable`.
    Plain,
    Tls(TlsFiles),
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8200)),
            store_url: "lessor.db".into(),
            seal_key: None,
            seal_key_file: None,
            create_seal_key_file: false,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            default_lease_ttl: Duration::from_secs(3600),
            max_lease_ttl: Duration::from_secs(24 * 3600),
            monitor: Default::default(),
            revocation_retry: Default::default(),
            rotation_retry: Default::default(),
            target_connect_timeout: TargetDeadlines::default().connect,
            target_operation_timeout: TargetDeadlines::default().operation,
            reconcile_interval: Duration::from_secs(3600),
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            tls_min_version: TlsVersion::Tls12,
            tls_disable: false,
        }
    }
}

impl Settings {
    /// The time limits on target databases.
    pub fn target_deadlines(&self) -> TargetDeadlines {
        TargetDeadlines {
            connect: self.target_connect_timeout,
            operation: self.target_operation_timeout,
        }
    }

    /// HTTPS with the configured files, or plain HTTP when `tls_disable` asks for it; anything else
    /// (no certificate and no `tls_disable`, half a pair, both at once) is an error saying what
    /// to set.
    pub fn listener_security(&self) -> Result<ListenerSecurity> {
        match (&self.tls_cert_file, &self.tls_key_file, self.tls_disable) {
            (None, None, true) => {
                if self.tls_client_ca_file.is_some() {
                    return Err(Error::Config(
                        "tls_client_ca_file needs TLS, but tls_disable is set".into(),
                    ));
                }
                Ok(ListenerSecurity::Plain)
            }
            (Some(_), _, true) | (_, Some(_), true) => Err(Error::Config(
                "tls_disable is set together with tls_cert_file/tls_key_file; choose one".into(),
            )),
            (Some(cert), Some(key), false) => Ok(ListenerSecurity::Tls(TlsFiles {
                cert_file: cert.clone(),
                key_file: key.clone(),
                client_ca_file: self.tls_client_ca_file.clone(),
                min_version: self.tls_min_version,
            })),
            (Some(_), None, false) => Err(Error::Config(
                "tls_cert_file is set but tls_key_file is not".into(),
            )),
            (None, Some(_), false) => Err(Error::Config(
                "tls_key_file is set but tls_cert_file is not".into(),
            )),
            (None, None, false) => Err(Error::Config(
                "TLS is not configured: set tls_cert_file and tls_key_file (LESSOR_TLS_CERT_FILE, \
                 LESSOR_TLS_KEY_FILE, --tls-cert-file, --tls-key-file), or serve plain HTTP by \
                 asking for it explicitly with tls_disable = true (LESSOR_TLS_DISABLE=true, \
                 --tls-disable); tokens and credentials then cross the network in clear"
                    .into(),
            )),
        }
    }

    pub fn lease_limits(&self) -> LeaseLimits {
        LeaseLimits {
            default_ttl: self.default_lease_ttl,
            max_ttl: self.max_lease_ttl,
        }
    }
}

/// The TOML file's shape; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    store_url: Option<String>,
    seal_key: Option<String>,
    seal_key_file: Option<PathBuf>,
    log_format: Option<String>,
    log_level: Option<String>,
    default_lease_ttl: Option<serde_json::Value>,
    max_lease_ttl: Option<serde_json::Value>,
    monitor: Option<crate::audit::anomaly::MonitorRules>,
    revocation_retry: Option<crate::lease::retry::RetryPolicy>,
    rotation_retry: Option<crate::lease::retry::RetryPolicy>,
    target_connect_timeout: Option<serde_json::Value>,
    target_operation_timeout: Option<serde_json::Value>,
    reconcile_interval: Option<serde_json::Value>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_client_ca_file: Option<PathBuf>,
    tls_min_version: Option<String>,
    tls_disable: Option<bool>,
}

/// Flags given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub store_url: Option<String>,
    pub seal_key_file: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_client_ca_file: Option<PathBuf>,
    pub tls_min_version: Option<TlsVersion>,
    /// `--tls-disable`: only ever turns plain HTTP on.
    pub tls_disable: bool,
}

/// Environment variables Lessor reads (server and client); others with the prefix get a warning.
pub const KNOWN_ENV: &[&str] = &[
    "LESSOR_LISTEN",
    "LESSOR_STORE_URL",
    "LESSOR_SEAL_KEY",
    "LESSOR_SEAL_KEY_FILE",
    "LESSOR_LOG_FORMAT",
    "LESSOR_LOG_LEVEL",
    "LESSOR_DEFAULT_LEASE_TTL",
    "LESSOR_MAX_LEASE_TTL",
    "LESSOR_TARGET_CONNECT_TIMEOUT",
    "LESSOR_TARGET_OPERATION_TIMEOUT",
    "LESSOR_RECONCILE_INTERVAL",
    "LESSOR_TLS_CERT_FILE",
    "LESSOR_TLS_KEY_FILE",
    "LESSOR_TLS_CLIENT_CA_FILE",
    "LESSOR_TLS_MIN_VERSION",
    "LESSOR_TLS_DISABLE",
    "LESSOR_ADDR",
    "LESSOR_CACERT",
    "LESSOR_SKIP_VERIFY",
    "LESSOR_TOKEN",
    "LESSOR_CONNECTION_PASSWORD",
    "LESSOR_BENCH_STORE_ADMIN_URL",
];

/// Whether Lessor reads this environment variable: one of [`KNOWN_ENV`], or an engine's own
/// (`LESSOR_DEV_<ENGINE>_URL`, `LESSOR_BENCH_<ENGINE>_URL`, `LESSOR_TEST_<ENGINE>_URL`), asked of
/// the engine registry so that a new engine needs no line here.
pub fn is_known_env(name: &str) -> bool {
    KNOWN_ENV.contains(&name)
        || crate::engines::ENGINES.iter().any(|engine| {
            let upper = engine.name.to_uppercase();
            name == engine.local.url_env
                || name == format!("LESSOR_BENCH_{upper}_URL")
                || name == format!("LESSOR_TEST_{upper}_URL")
        })
}

fn parse_log_format(source: &str, value: &str) -> Result<LogFormat> {
    match value {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(Error::Config(format!(
            "{source}: log format must be \"text\" or \"json\", not {other:?}"
        ))),
    }
}

fn parse_listen(source: &str, value: &str) -> Result<SocketAddr> {
    value.parse().map_err(|_| {
        Error::Config(format!(
            "{source}: {value:?} is not an address such as 127.0.0.1:8200"
        ))
    })
}

fn parse_bool(source: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        other => Err(Error::Config(format!(
            "{source}: expected true or false, not {other:?}"
        ))),
    }
}

fn parse_ttl(source: &str, value: &serde_json::Value) -> Result<Duration> {
    parse_duration_value(source, value).map_err(|e| Error::Config(e.to_string()))
}

/// Builds settings from the layers. `env` is passed in so tests need not touch the process
/// environment.
pub fn load(
    file: Option<&Path>,
    env: &[(String, String)],
    overrides: &Overrides,
) -> Result<Settings> {
    let mut settings = Settings::default();

    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let parsed: FileConfig =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let source = path.display().to_string();
        if let Some(v) = parsed.listen {
            settings.listen = parse_listen(&format!("{source}: listen"), &v)?;
        }
        if let Some(v) = parsed.store_url {
            settings.store_url = v;
        }
        if let Some(v) = parsed.seal_key {
            settings.seal_key = Some(Secret::new(v));
        }
        if let Some(v) = parsed.seal_key_file {
            settings.seal_key_file = Some(v);
        }
        if let Some(v) = parsed.log_format {
            settings.log_format = parse_log_format(&format!("{source}: log_format"), &v)?;
        }
        if let Some(v) = parsed.log_level {
            settings.log_level = v;
        }
        if let Some(v) = parsed.default_lease_ttl {
            settings.default_lease_ttl = parse_ttl("default_lease_ttl", &v)?;
        }
        if let Some(v) = parsed.max_lease_ttl {
            settings.max_lease_ttl = parse_ttl("max_lease_ttl", &v)?;
        }
        if let Some(v) = parsed.target_connect_timeout {
            settings.target_connect_timeout = parse_ttl("target_connect_timeout", &v)?;
        }
        if let Some(v) = parsed.target_operation_timeout {
            settings.target_operation_timeout = parse_ttl("target_operation_timeout", &v)?;
        }
        if let Some(v) = parsed.reconcile_interval {
            settings.reconcile_interval = parse_ttl("reconcile_interval", &v)?;
        }
        if let Some(v) = parsed.tls_cert_file {
            settings.tls_cert_file = Some(v);
        }
        if let Some(v) = parsed.tls_key_file {
            settings.tls_key_file = Some(v);
        }
        if let Some(v) = parsed.tls_client_ca_file {
            settings.tls_client_ca_file = Some(v);
        }
        if let Some(v) = parsed.tls_min_version {
            settings.tls_min_version =
                TlsVersion::parse(&format!("{source}: tls_min_version"), &v)?;
        }
        if let Some(v) = parsed.tls_disable {
            settings.tls_disable = v;
        }
        for (table, policy, target) in [
            (
                "revocation_retry",
                parsed.revocation_retry,
                &mut settings.revocation_retry,
            ),
            (
                "rotation_retry",
                parsed.rotation_retry,
                &mut settings.rotation_retry,
            ),
        ] {
            if let Some(policy) = policy {
                policy
                    .validate(table)
                    .map_err(|message| Error::Config(format!("{source}: {message}")))?;
                *target = policy;
            }
        }
        if let Some(v) = parsed.monitor {
            v.validate()
                .map_err(|e| Error::Config(format!("{source}: [monitor]: {e}")))?;
            settings.monitor = v;
        }
    }

    for (key, value) in env {
        match key.as_str() {
            "LESSOR_LISTEN" => settings.listen = parse_listen(key, value)?,
            "LESSOR_STORE_URL" => settings.store_url = value.clone(),
            "LESSOR_SEAL_KEY" => settings.seal_key = Some(Secret::new(value.clone())),
            "LESSOR_SEAL_KEY_FILE" => settings.seal_key_file = Some(PathBuf::from(value)),
            "LESSOR_LOG_FORMAT" => settings.log_format = parse_log_format(key, value)?,
            "LESSOR_LOG_LEVEL" => settings.log_level = value.clone(),
            "LESSOR_DEFAULT_LEASE_TTL" => {
                settings.default_lease_ttl =
                    parse_ttl(key, &serde_json::Value::String(value.clone()))?
            }
            "LESSOR_MAX_LEASE_TTL" => {
                settings.max_lease_ttl = parse_ttl(key, &serde_json::Value::String(value.clone()))?
            }
            "LESSOR_TARGET_CONNECT_TIMEOUT" => {
                settings.target_connect_timeout =
                    parse_ttl(key, &serde_json::Value::String(value.clone()))?
            }
            "LESSOR_TARGET_OPERATION_TIMEOUT" => {
                settings.target_operation_timeout =
                    parse_ttl(key, &serde_json::Value::String(value.clone()))?
            }
            "LESSOR_RECONCILE_INTERVAL" => {
                settings.reconcile_interval =
                    parse_ttl(key, &serde_json::Value::String(value.clone()))?
            }
            "LESSOR_TLS_CERT_FILE" => settings.tls_cert_file = Some(PathBuf::from(value)),
            "LESSOR_TLS_KEY_FILE" => settings.tls_key_file = Some(PathBuf::from(value)),
            "LESSOR_TLS_CLIENT_CA_FILE" => settings.tls_client_ca_file = Some(PathBuf::from(value)),
            "LESSOR_TLS_MIN_VERSION" => settings.tls_min_version = TlsVersion::parse(key, value)?,
            "LESSOR_TLS_DISABLE" => settings.tls_disable = parse_bool(key, value)?,
            other if other.starts_with("LESSOR_") && !is_known_env(other) => {
                eprintln!("warning: ignoring unknown environment variable {other}");
            }
            _ => {}
        }
    }

    if let Some(v) = overrides.listen {
        settings.listen = v;
    }
    if let Some(v) = &overrides.store_url {
        settings.store_url = v.clone();
    }
    if let Some(v) = &overrides.seal_key_file {
        settings.seal_key_file = Some(v.clone());
    }
    if let Some(v) = overrides.log_format {
        settings.log_format = v;
    }
    if let Some(v) = &overrides.log_level {
        settings.log_level = v.clone();
    }
    if let Some(v) = &overrides.tls_cert_file {
        settings.tls_cert_file = Some(v.clone());
    }
    if let Some(v) = &overrides.tls_key_file {
        settings.tls_key_file = Some(v.clone());
    }
    if let Some(v) = &overrides.tls_client_ca_file {
        settings.tls_client_ca_file = Some(v.clone());
    }
    if let Some(v) = overrides.tls_min_version {
        settings.tls_min_version = v;
    }
    if overrides.tls_disable {
        settings.tls_disable = true;
    }

    if settings.max_lease_ttl.is_zero() {
        return Err(Error::Config(
            "max_lease_ttl must be greater than zero".into(),
        ));
    }
    for (name, value) in [
        ("target_connect_timeout", settings.target_connect_timeout),
        (
            "target_operation_timeout",
            settings.target_operation_timeout,
        ),
    ] {
        // Zero would fail every call at once; a day is far beyond any database operation and
        // most likely a unit mistake.
        if value.is_zero() || value > Duration::from_secs(24 * 3600) {
            return Err(Error::Config(format!(
                "{name} must be greater than zero and at most 24h"
            )));
        }
    }
    if settings.default_lease_ttl.is_zero() || settings.default_lease_ttl > settings.max_lease_ttl {
        return Err(Error::Config(
            "default_lease_ttl must be greater than zero and at most max_lease_ttl".into(),
        ));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lessor.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nstore_url = \"/tmp/a.db\"\ndefault_lease_ttl = \"30m\"\nmax_lease_ttl = 7200\n",
        )
        .unwrap();
        let env = vec![("LESSOR_STORE_URL".to_owned(), "/tmp/b.db".to_owned())];
        let overrides = Overrides {
            listen: Some("127.0.0.1:9100".parse().unwrap()),
            ..Default::default()
        };
        let settings = load(Some(&path), &env, &overrides).unwrap();
        assert_eq!(settings.listen.port(), 9100, "flag beats file");
        assert_eq!(settings.store_url, "/tmp/b.db", "env beats file");
        assert_eq!(settings.default_lease_ttl, Duration::from_secs(1800));
        assert_eq!(settings.max_lease_ttl, Duration::from_secs(7200));
    }

    #[test]
    fn target_timeouts_default_and_layer() {
        let settings = load(None, &[], &Overrides::default()).unwrap();
        assert_eq!(settings.target_connect_timeout, Duration::from_secs(5));
        assert_eq!(settings.target_operation_timeout, Duration::from_secs(30));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lessor.toml");
        std::fs::write(
            &path,
            "target_connect_timeout = \"2s\"\ntarget_operation_timeout = 10\n",
        )
        .unwrap();
        let env = vec![(
            "LESSOR_TARGET_OPERATION_TIMEOUT".to_owned(),
            "1m".to_owned(),
        )];
        let settings = load(Some(&path), &env, &Overrides::default()).unwrap();
        assert_eq!(settings.target_connect_timeout, Duration::from_secs(2));
        assert_eq!(
            settings.target_operation_timeout,
            Duration::from_secs(60),
            "env beats file"
        );

        let env = vec![("LESSOR_TARGET_CONNECT_TIMEOUT".to_owned(), "0s".to_owned())];
        let err = load(None, &env, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("target_connect_timeout"), "{err}");
    }

    #[test]
    fn retry_policies_and_the_reconcile_interval_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lessor.toml");
        std::fs::write(
            &path,
            "reconcile_interval = \"15m\"\n[revocation_retry]\ninitial = \"2s\"\nmax = \"1m\"\nflag_after = 4\n\n[rotation_retry]\njitter = 0\n",
        )
        .unwrap();
        let settings = load(Some(&path), &[], &Overrides::default()).unwrap();
        assert_eq!(settings.reconcile_interval, Duration::from_secs(900));
        assert_eq!(settings.revocation_retry.initial, Duration::from_secs(2));
        assert_eq!(settings.revocation_retry.max, Duration::from_secs(60));
        assert_eq!(settings.revocation_retry.flag_after, 4);
        assert_eq!(settings.rotation_retry.jitter, 0.0);
        assert_eq!(
            settings.rotation_retry.max,
            Duration::from_secs(300),
            "unset keys keep their default"
        );

        std::fs::write(
            &path,
            "[revocation_retry]\ninitial = \"10m\"\nmax = \"1m\"\n",
        )
        .unwrap();
        let error = load(Some(&path), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("[revocation_retry]: initial"), "{error}");
        std::fs::write(&path, "[rotation_retry]\nbackoff = 2\n").unwrap();
        let error = load(Some(&path), &[], &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("backoff"), "unknown keys are named: {error}");
    }

    #[test]
    fn tls_settings_layer_and_plain_http_needs_asking() {
        let settings = load(None, &[], &Overrides::default()).unwrap();
        let error = settings.listener_security().unwrap_err().to_string();
        assert!(
            error.contains("tls_disable") && error.contains("tls_cert_file"),
            "{error}"
        );

        let env = vec![("LESSOR_TLS_DISABLE".to_owned(), "true".to_owned())];
        let settings = load(None, &env, &Overrides::default()).unwrap();
        assert_eq!(
            settings.listener_security().unwrap(),
            ListenerSecurity::Plain
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lessor.toml");
        std::fs::write(
            &path,
            "tls_cert_file = \"/etc/a.pem\"\ntls_key_file = \"/etc/a.key\"\ntls_min_version = \"tls13\"\n",
        )
        .unwrap();
        let env = vec![(
            "LESSOR_TLS_CLIENT_CA_FILE".to_owned(),
            "/etc/ca.pem".to_owned(),
        )];
        let overrides = Overrides {
            tls_key_file: Some("/etc/b.key".into()),
            ..Default::default()
        };
        let settings = load(Some(&path), &env, &overrides).unwrap();
        assert_eq!(
            settings.listener_security().unwrap(),
            ListenerSecurity::Tls(TlsFiles {
                cert_file: "/etc/a.pem".into(),
                key_file: "/etc/b.key".into(),
                client_ca_file: Some("/etc/ca.pem".into()),
                min_version: TlsVersion::Tls13,
            })
        );

        let overrides = Overrides {
            tls_disable: true,
            ..Default::default()
        };
        let settings = load(Some(&path), &[], &overrides).unwrap();
        assert!(settings.listener_security().is_err(), "both at once");

        let env = vec![("LESSOR_TLS_MIN_VERSION".to_owned(), "tls10".to_owned())];
        let error = load(None, &env, &Overrides::default()).unwrap_err();
        assert!(
            error.to_string().contains("LESSOR_TLS_MIN_VERSION"),
            "{error}"
        );
        let env = vec![("LESSOR_TLS_CERT_FILE".to_owned(), "/etc/a.pem".to_owned())];
        let error = load(None, &env, &Overrides::default())
            .unwrap()
            .listener_security()
            .unwrap_err();
        assert!(error.to_string().contains("tls_key_file"), "{error}");
    }

    #[test]
    fn bad_values_name_their_setting() {
        let env = vec![("LESSOR_LOG_FORMAT".to_owned(), "xml".to_owned())];
        let err = load(None, &env, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("LESSOR_LOG_FORMAT"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lessor.toml");
        std::fs::write(&path, "listn = \"x\"\n").unwrap();
        let err = load(Some(&path), &[], &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
    }
}
