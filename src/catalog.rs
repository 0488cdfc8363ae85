//! Connections and roles: checking what an operator writes and keeping it in the store.
//!
//! Everything is validated here, before anything is stored or run: names against a strict alphabet,
//! statement templates and username templates through the engine's plugin, TTLs against the system
//! maximum. A connection is verified against its database before it is saved (unless
//! `verify_connection` is false), so a typo in a URL is a 400 at write time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lessor_plugin::{
    Address, ConnectionSettings, DatabasePlugin, EngineDescriptor, PasswordAuthentication,
    PluginError, RoleOptions, Secret, StatementKind, TlsMaterial, UsernameContext,
    UsernameTemplate, SCRAM_DEFAULT_ITERATIONS,
};
use serde::Serialize;

use crate::engines::{self, Engines};
use crate::error::{Error, Result};
use crate::seal::Sealer;
use crate::store::{CatalogStore, Connection, ConnectionDeletion, RotationStore, Store};

pub use crate::store::Role;

/// The longest name of a connection, role or static role.
const MAX_NAME_LEN: usize = 64;

/// Checks an object name (role, connection): 1 to 64 of `A-Z a-z 0-9 _ - .`, starting with a letter
/// or digit. Names end up in lease ids, usernames and log lines, so nothing else is let through.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    let valid_start = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if name.is_empty() || name.len() > MAX_NAME_LEN || !valid_start || !valid_chars {
        return Err(Error::invalid(format!(
            "invalid {kind} {:?}: use 1 to {MAX_NAME_LEN} letters, digits, '_', '-' or '.', starting with a letter or digit",
            name.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

/// What an operator may write to `database/config/:name`. `None` keeps the stored value on update.
#[derive(Debug, Default)]
pub struct ConnectionInput {
    pub plugin_name: Option<String>,
    pub connection_url: Option<Secret>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub allowed_roles: Option<Vec<String>>,
    pub verify_connection: Option<bool>,
    pub max_open_connections: Option<u32>,
    pub root_rotation_statements: Option<Vec<String>>,
    /// `password_policy`: the name of a stored password policy every generated password of this
    /// connection follows; an empty string clears it (back to the default generator).
    pub password_policy: Option<String>,
    /// Inline TLS material (Vault's field names).
    pub tls: TlsInput,
    /// `disable_escaping`: put the admin credentials into the connection URL as they are.
    pub disable_escaping: Option<bool>,
    /// `password_authentication`: `"password"` (the default; an empty string means it too) or
    /// `"scram-sha-256"` (Lessor computes the verifier the statements carry).
    pub password_authentication: Option<String>,
    /// `scram_iterations`: the verifier's iterations for unguessable generated passwords of
    /// dynamic users; only with `"scram-sha-256"`.
    pub scram_iterations: Option<u32>,
    /// Vault's address fields, for engines that take them instead of a `connection_url`.
    pub address: AddressInput,
}

/// Vault's `host`, `port`, `tls`, `insecure_tls` and `ca_cert` fields (its Redis plugin's), for
/// engines whose descriptor has an [`lessor_plugin::AddressForm`]: `host`, `port` and `tls` become
/// the stored connection URL, `insecure_tls` and `ca_cert` are these engines' names of
/// `tls_skip_verify` and `tls_ca`. Other engines refuse them, naming the field.
#[derive(Debug, Default)]
pub struct AddressInput {
    pub host: Option<String>,
    pub port: Option<u32>,
    pub tls: Option<bool>,
    pub insecure_tls: Option<bool>,
    pub ca_cert: Option<Secret>,
}

impl AddressInput {
    /// The first field given, for an engine that takes none of them.
    fn first_given(&self) -> Option<&'static str> {
        [
            ("host", self.host.is_some()),
            ("port", self.port.is_some()),
            ("tls", self.tls.is_some()),
            ("insecure_tls", self.insecure_tls.is_some()),
            ("ca_cert", self.ca_cert.is_some()),
        ]
        .into_iter()
        .find_map(|(field, given)| given.then_some(field))
    }
}

/// Folds Vault's address fields into what the engine reads: the connection URL (returned: the
/// given `connection_url`, or one made of `host`, `port` and `tls` merged over the stored URL's)
/// and the TLS fields. Giving both forms of one thing is refused, naming the field.
fn fold_address(
    engine: &EngineDescriptor,
    address: AddressInput,
    connection_url: Option<Secret>,
    stored_url: Option<&Secret>,
    tls: &mut TlsInput,
) -> Result<Option<Secret>> {
    let Some(form) = engine.address else {
        if let Some(field) = address.first_given() {
            return Err(Error::invalid(format!(
                "{field}: the {} plugin takes a connection_url (with tls_ca and tls_skip_verify), not host, port, tls, insecure_tls or ca_cert",
                engine.plugin_name()
            )));
        }
        return Ok(connection_url);
    };
    if let Some(ca) = address.ca_cert {
        // Checked under the name it was given by; it is stored as `tls_ca`.
        check_pem("ca_cert", &ca, PemContent::Certificates)?;
        if tls.tls_ca.is_some() {
            return Err(Error::invalid("ca_cert: give ca_cert or tls_ca, not both"));
        }
        tls.tls_ca = Some(ca);
    }
    if let Some(insecure) = address.insecure_tls {
        if tls.tls_skip_verify.is_some() {
            return Err(Error::invalid(
                "insecure_tls: give insecure_tls or tls_skip_verify, not both",
            ));
        }
        tls.tls_skip_verify = Some(insecure);
    }
    if address.host.is_none() && address.port.is_none() && address.tls.is_none() {
        return Ok(connection_url);
    }
    if connection_url.is_some() {
        return Err(Error::invalid(
            "connection_url: give either connection_url or host, port and tls, not both",
        ));
    }
    let stored = stored_url.and_then(|url| form.parse(url.expose()));
    let host = address
        .host
        .or_else(|| stored.as_ref().map(|s| s.host.clone()))
        .ok_or_else(|| Error::invalid("host: required with port or tls"))?;
    let port = match address.port {
        Some(port) => u16::try_from(port)
            .ok()
            .filter(|port| *port > 0)
            .ok_or_else(|| Error::invalid("port: must be between 1 and 65535"))?,
        None => stored.as_ref().map_or(form.default_port, |s| s.port),
    };
    let tls = address
        .tls
        .or_else(|| stored.as_ref().map(|s| s.tls))
        .unwrap_or(false);
    let url = form
        .url(&Address { host, port, tls })
        .map_err(|e| Error::invalid(e.to_string()))?;
    Ok(Some(Secret::new(url)))
}

/// Refuses statements of a kind the engine never runs, naming the field, rather than keep
/// statements that would be silently ignored.
pub fn check_statement_kind(
    plugin: &dyn DatabasePlugin,
    field: &str,
    kind: StatementKind,
    statements: &[String],
) -> Result<()> {
    if !plugin.runs_statements(kind) && statements.iter().any(|s| !s.trim().is_empty()) {
        return Err(Error::invalid(format!(
            "{field}: the {} engine runs no statements of this kind; leave {field} empty",
            plugin.engine()
        )));
    }
    Ok(())
}

/// The inline TLS fields of `database/config/:name`. As for the other fields, `None` (absent)
/// keeps the stored value; an empty string clears it. PEM texts travel as [`Secret`]s: a private
/// key must never reach a log line or an error, and a certificate is not worth telling apart.
#[derive(Debug, Default)]
pub struct TlsInput {
    /// `tls_ca`: PEM certificate(s) of the CA that signed the database server's certificate.
    pub tls_ca: Option<Secret>,
    /// `tls_certificate`: PEM client certificate (PostgreSQL), with `private_key`.
    pub tls_certificate: Option<Secret>,
    /// `private_key`: PEM key of `tls_certificate` (PostgreSQL).
    pub private_key: Option<Secret>,
    /// `tls_certificate_key`: PEM client certificate and key in one text (MySQL).
    pub tls_certificate_key: Option<Secret>,
    /// `tls_server_name`: the name to verify the server's certificate against (MySQL).
    pub tls_server_name: Option<String>,
    /// `tls_skip_verify`: encrypt without verifying the server (MySQL).
    pub tls_skip_verify: Option<bool>,
}

/// What a PEM field must hold.
#[derive(Debug, Clone, Copy)]
enum PemContent {
    /// One or more `CERTIFICATE` blocks.
    Certificates,
    /// One private key block.
    PrivateKey,
    /// Certificates and a private key.
    CertificatesAndKey,
}

/// Checks that a PEM field parses as what it must hold, so a pasted fragment is a 400 naming the
/// field at write time, whatever the engine. The parser's message is not quoted: for a key it may
/// echo a line of the key. Engines check more (a CA usable as a trust anchor, a key that belongs
/// to its certificate) when the connection is built.
fn check_pem(field: &str, text: &Secret, content: PemContent) -> Result<()> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bytes = text.expose().as_bytes();
    let certificates = || -> Result<()> {
        let parsed: std::result::Result<Vec<_>, _> =
            CertificateDer::pem_slice_iter(bytes).collect();
        match parsed {
            Ok(list) if !list.is_empty() => Ok(()),
            Ok(_) => Err(Error::invalid(format!(
                "{field}: no PEM certificate (-----BEGIN CERTIFICATE-----) found"
            ))),
            Err(_) => Err(Error::invalid(format!(
                "{field}: not valid PEM (a CERTIFICATE block does not decode)"
            ))),
        }
    };
    let key = || -> Result<()> {
        PrivateKeyDer::from_pem_slice(bytes).map(drop).map_err(|_| {
            Error::invalid(format!(
                "{field}: no valid PEM private key found (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
            ))
        })
    };
    match content {
        PemContent::Certificates => certificates(),
        PemContent::PrivateKey => key(),
        PemContent::CertificatesAndKey => certificates().and_then(|()| key()),
    }
}

/// The password authentication a write leaves on a connection: the given mode or the stored one,
/// and the given iteration count, the stored one (under `scram-sha-256`) or 4096. An iteration
/// count written without `scram-sha-256` is refused by name rather than kept for nothing; going
/// back to `"password"` puts the stored count back to 4096. Whether the engine can compute
/// verifiers is its own plugin's call, when the connection is built.
fn merge_password_authentication(
    mode: Option<String>,
    iterations: Option<u32>,
    existing: Option<&Connection>,
) -> Result<PasswordAuthentication> {
    let mode = mode
        .map(|name| {
            if name.is_empty() {
                PasswordAuthentication::PASSWORD.to_owned()
            } else {
                name
            }
        })
        .or_else(|| existing.map(|row| row.password_authentication.clone()))
        .unwrap_or_else(|| PasswordAuthentication::PASSWORD.to_owned());
    let scram = mode == PasswordAuthentication::SCRAM_SHA_256;
    let iterations = match iterations {
        Some(_) if !scram => {
            return Err(Error::invalid(
                "scram_iterations: only with password_authentication = \"scram-sha-256\" \
                 (with \"password\" the database hashes the password with its own count)",
            ))
        }
        Some(count) => count,
        None => existing
            .filter(|row| row.password_authentication == PasswordAuthentication::SCRAM_SHA_256)
            .map_or(SCRAM_DEFAULT_ITERATIONS, |row| row.scram_iterations),
    };
    PasswordAuthentication::from_fields(&mode, iterations)
        .map_err(|e| Error::invalid(e.to_string()))
}

/// The TLS material a write leaves on a connection: the stored material, changed by what the
/// write gives, each PEM checked.
fn merge_tls(input: TlsInput, old: TlsMaterial) -> Result<TlsMaterial> {
    fn pick(given: Option<Secret>, old: Option<Secret>) -> Option<Secret> {
        match given {
            None => old,
            Some(value) if value.expose().trim().is_empty() => None,
            Some(value) => Some(value),
        }
    }
    let checked = |field: &str, value: Option<Secret>, content: PemContent| -> Result<_> {
        if let Some(text) = &value {
            check_pem(field, text, content)?;
        }
        Ok(value)
    };
    let text = |secret: Option<Secret>| secret.map(|s| s.expose().to_owned());
    let ca = checked(
        "tls_ca",
        pick(input.tls_ca, old.ca_pem.map(Secret::new)),
        PemContent::Certificates,
    )?;
    let certificate = checked(
        "tls_certificate",
        pick(input.tls_certificate, old.certificate_pem.map(Secret::new)),
        PemContent::Certificates,
    )?;
    let private_key = checked(
        "private_key",
        pick(input.private_key, old.private_key_pem),
        PemContent::PrivateKey,
    )?;
    let certificate_key = checked(
        "tls_certificate_key",
        pick(input.tls_certificate_key, old.certificate_key_pem),
        PemContent::CertificatesAndKey,
    )?;
    let server_name = match input.tls_server_name {
        None => old.server_name,
        Some(name) if name.trim().is_empty() => None,
        Some(name) => {
            if name.len() > 253 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(Error::invalid(
                    "tls_server_name: must be a host name of at most 253 characters without spaces",
                ));
            }
            Some(name)
        }
    };
    Ok(TlsMaterial {
        ca_pem: text(ca),
        certificate_pem: text(certificate),
        private_key_pem: private_key,
        certificate_key_pem: certificate_key,
        server_name,
        skip_verify: input.tls_skip_verify.unwrap_or(old.skip_verify),
    })
}

/// A connection as the API shows it: never the password, and the URL only as a template.
#[derive(Debug, Serialize)]
pub struct ConnectionView {
    pub plugin_name: String,
    pub connection_details: ConnectionDetails,
    pub allowed_roles: Vec<String>,
    pub root_credentials_rotate_statements: Vec<String>,
    pub verify_connection: bool,
    pub password_policy: String,
    pub plugin_version: String,
    /// Whether the database answers now; only when the read asked for it (`?verify=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reachability: Option<Reachability>,
}

/// Whether a connection's database answered a check just now.
#[derive(Debug, Serialize)]
pub struct Reachability {
    pub reachable: bool,
    /// Why not, when it did not: the plugin's message (which never quotes a password) or the
    /// deadline that ran out.
    pub error: Option<String>,
    /// When the check started.
    pub checked_at: chrono::DateTime<Utc>,
    /// How long it took, so a slow database shows before it fails.
    pub elapsed_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct ConnectionDetails {
    pub connection_url: String,
    pub username: String,
    pub max_open_connections: u32,
    /// Whether each inline TLS PEM is set; their content is never shown.
    pub tls_ca_set: bool,
    pub tls_certificate_set: bool,
    pub private_key_set: bool,
    pub tls_certificate_key_set: bool,
    pub tls_server_name: String,
    pub tls_skip_verify: bool,
    /// Whether the admin credentials go into the URL unescaped (Vault shows it here too).
    pub disable_escaping: bool,
    /// `"password"` or `"scram-sha-256"` (Vault shows it here too).
    pub password_authentication: String,
    /// The SCRAM iterations of unguessable generated passwords (4096 unless `scram-sha-256`
    /// says otherwise).
    pub scram_iterations: u32,
    /// Vault's address fields, for engines that take them: read back from the stored URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// `tls_skip_verify` under its Vault name, for those engines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure_tls: Option<bool>,
    /// Whether `ca_cert` (`tls_ca`) is set, for those engines; its content is never shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert_set: Option<bool>,
}

/// The largest `warm_pool_size` a role may ask for: each pooled user is a real user on the
/// target and a password in this process's memory.
pub const MAX_WARM_POOL_SIZE: u32 = 1000;

/// What an operator may write to `database/roles/:name`. `None` keeps the stored value on update.
#[derive(Debug, Default)]
pub struct RoleInput {
    pub db_name: Option<String>,
    pub creation_statements: Option<Vec<String>>,
    pub revocation_statements: Option<Vec<String>>,
    pub rollback_statements: Option<Vec<String>>,
    pub renew_statements: Option<Vec<String>>,
    pub default_ttl: Option<Duration>,
    pub max_ttl: Option<Duration>,
    pub username_template: Option<String>,
    pub options: Option<RoleOptions>,
    /// Give each lease a database of its own (dropped with the lease).
    pub database_per_lease: Option<bool>,
    /// Copy those databases from this one; empty clears it.
    pub template_database: Option<String>,
    /// Users kept created ahead of demand (0: none), see [`crate::lease::pool`].
    pub warm_pool_size: Option<u32>,
}

/// A role as the API shows it.
#[derive(Debug, Serialize)]
pub struct RoleView {
    pub db_name: String,
    pub creation_statements: Vec<String>,
    pub revocation_statements: Vec<String>,
    pub rollback_statements: Vec<String>,
    pub renew_statements: Vec<String>,
    pub default_ttl: i64,
    pub max_ttl: i64,
    pub username_template: String,
    pub options: RoleOptions,
    pub credential_type: &'static str,
    pub database_per_lease: bool,
    pub template_database: String,
    pub warm_pool_size: u32,
    /// Users ready in this replica's pool (the API fills it in for a role with a pool).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_pool_ready: Option<usize>,
}

/// System-wide lease limits.
#[derive(Debug, Clone, Copy)]
pub struct LeaseLimits {
    /// TTL of a credential whose role sets none.
    pub default_ttl: Duration,
    /// Longest life of any credential, renewals included.
    pub max_ttl: Duration,
}

/// Connections and roles, with the checks that guard them.
#[derive(Clone)]
pub struct Catalog {
    store: Store,
    sealer: Sealer,
    engines: Engines,
    limits: LeaseLimits,
}

impl Catalog {
    pub fn new(store: Store, sealer: Sealer, engines: Engines, limits: LeaseLimits) -> Self {
        Self {
            store,
            sealer,
            engines,
            limits,
        }
    }

    pub fn limits(&self) -> LeaseLimits {
        self.limits
    }

    /// Creates or updates a connection; verifies it against the database first unless told not to.
    /// Returns warnings for the response.
    #[tracing::instrument(skip_all, fields(connection = %name), err)]
    pub async fn write_connection(
        &self,
        name: &str,
        input: ConnectionInput,
    ) -> Result<Vec<String>> {
        check_name("connection name", name)?;
        let existing = self.store.get_connection(name).await?;
        let old_settings = match &existing {
            Some(row) => Some(self.engines.settings_for(row)?),
            None => None,
        };
        let plugin_name = input
            .plugin_name
            .or_else(|| existing.as_ref().map(|r| r.plugin_name.clone()))
            .ok_or_else(|| Error::invalid("plugin_name: required when creating a connection"))?;
        let engine = engines::by_plugin_name(&plugin_name).ok_or_else(|| {
            Error::invalid(format!(
                "plugin_name: unknown plugin {:?}; known plugins are {}",
                plugin_name.chars().take(64).collect::<String>(),
                engines::known_plugin_names().join(", ")
            ))
        })?;
        let mut tls_input = input.tls;
        let connection_url = fold_address(
            engine,
            input.address,
            input.connection_url,
            old_settings.as_ref().map(|s| &s.connection_url),
            &mut tls_input,
        )?
        .or_else(|| old_settings.as_ref().map(|s| s.connection_url.clone()))
        .ok_or_else(|| Error::invalid("connection_url: required when creating a connection"))?;
        if connection_url.is_empty() {
            return Err(Error::invalid("connection_url: must not be empty"));
        }
        let username = input
            .username
            .or_else(|| existing.as_ref().map(|r| r.username.clone()))
            .unwrap_or_default();
        if username.chars().any(char::is_control) || username.len() > 128 {
            return Err(Error::invalid(
                "username: must be at most 128 characters without control characters",
            ));
        }
        let password = input
            .password
            .or_else(|| old_settings.as_ref().map(|s| s.password.clone()))
            .unwrap_or_default();
        let allowed_roles = match input.allowed_roles {
            Some(roles) => {
                for role in &roles {
                    crate::names::check_role_glob(role)?;
                }
                roles
            }
            None => existing
                .as_ref()
                .map(|row| row.allowed_roles.clone())
                .unwrap_or_default(),
        };
        let verify = input
            .verify_connection
            .or_else(|| existing.as_ref().map(|r| r.verify_connection))
            .unwrap_or(true);
        let max_open = input
            .max_open_connections
            .or_else(|| existing.as_ref().map(|r| r.max_open_connections))
            .unwrap_or(4);
        if !(1..=100).contains(&max_open) {
            return Err(Error::invalid(
                "max_open_connections: must be between 1 and 100",
            ));
        }
        let root_rotation_statements = match input.root_rotation_statements {
            Some(list) => list,
            None => existing
                .as_ref()
                .map(|row| row.root_rotation_statements.clone())
                .unwrap_or_default(),
        };

        let password_policy = match input.password_policy {
            Some(name) if name.is_empty() => None,
            Some(name) => {
                crate::names::PolicyName::parse(name.clone())
                    .map_err(|e| Error::invalid(format!("password_policy: {e}")))?;
                if self.store.get_password_policy(&name).await?.is_none() {
                    return Err(Error::invalid(format!(
                        "password_policy: no password policy named {name} (create it at sys/policies/password/{name})"
                    )));
                }
                Some(name)
            }
            None => existing.as_ref().and_then(|r| r.password_policy.clone()),
        };

        let tls = merge_tls(tls_input, old_settings.map(|s| s.tls).unwrap_or_default())?;
        let disable_escaping = input
            .disable_escaping
            .or_else(|| existing.as_ref().map(|r| r.disable_escaping))
            .unwrap_or(false);

        let password_authentication = merge_password_authentication(
            input.password_authentication,
            input.scram_iterations,
            existing.as_ref(),
        )?;

        let settings = self.engines.new_settings(ConnectionSettings {
            connection_url: connection_url.clone(),
            username: username.clone(),
            password: password.clone(),
            max_open_connections: max_open,
            tls: tls.clone(),
            disable_escaping,
            password_authentication,
            // The time limits are Lessor's, put in by `new_settings`.
            ..ConnectionSettings::default()
        });
        // A fresh instance on every write, so a changed URL or TLS field is in force at once.
        let plugin = self
            .engines
            .connect(engine, name, settings)
            .await
            .map_err(|e| match e {
                // Names its own field (tls_ca, sslrootcert, ...).
                PluginError::InvalidValue { .. } => Error::invalid(e.to_string()),
                other => Error::invalid(format!("connection_url: {other}")),
            })?;
        if verify {
            if let Err(e) = plugin.verify().await {
                plugin.close().await;
                return Err(Error::invalid(format!(
                    "error verifying connection {name}: {e}"
                )));
            }
        }
        plugin
            .validate_role(&RoleOptions::new(), &[&root_rotation_statements])
            .map_err(|e| Error::invalid(format!("root_rotation_statements: {e}")))?;
        check_statement_kind(
            plugin.as_ref(),
            "root_rotation_statements",
            StatementKind::Rotation,
            &root_rotation_statements,
        )?;

        let now = Utc::now();
        let row = Connection {
            name: name.to_owned(),
            plugin_name,
            connection_url_sealed: self
                .sealer
                .seal(&engines::url_seal_context(name), &connection_url)?,
            username,
            password_sealed: self
                .sealer
                .seal(&engines::password_seal_context(name), &password)?,
            allowed_roles: allowed_roles.clone(),
            verify_connection: verify,
            max_open_connections: max_open,
            root_rotation_statements,
            tls_ca_sealed: self.seal_tls(name, "tls_ca", tls.ca_pem.map(Secret::new))?,
            tls_certificate_sealed: self.seal_tls(
                name,
                "tls_certificate",
                tls.certificate_pem.map(Secret::new),
            )?,
            private_key_sealed: self.seal_tls(name, "private_key", tls.private_key_pem)?,
            tls_certificate_key_sealed: self.seal_tls(
                name,
                "tls_certificate_key",
                tls.certificate_key_pem,
            )?,
            tls_server_name: tls.server_name,
            tls_skip_verify: tls.skip_verify,
            disable_escaping,
            password_authentication: password_authentication.name().to_owned(),
            scram_iterations: password_authentication
                .generated_iterations()
                .unwrap_or(SCRAM_DEFAULT_ITERATIONS),
            password_policy,
            created_at: existing.as_ref().map_or(now, |r| r.created_at),
            updated_at: now,
        };
        self.store.upsert_connection(&row).await?;
        self.engines.replace(name, plugin).await;
        let mut warnings = Vec::new();
        if !verify {
            warnings.push(format!("connection {name} was saved without verifying it"));
        }
        if allowed_roles.is_empty() {
            warnings.push(format!(
                "connection {name} has no allowed_roles, so no role can issue credentials through it yet"
            ));
        }
        Ok(warnings)
    }

    /// Seals one inline TLS field under its own context.
    fn seal_tls(&self, name: &str, field: &str, value: Option<Secret>) -> Result<Option<String>> {
        value
            .map(|v| {
                self.sealer
                    .seal(&engines::tls_seal_context(name, field), &v)
            })
            .transpose()
    }

    pub async fn read_connection(&self, name: &str) -> Result<ConnectionView> {
        check_name("connection name", name)?;
        let row = self
            .store
            .get_connection(name)
            .await?
            .ok_or_else(|| Error::not_found("connection", name))?;
        // Only the URL is opened: the admin password is never needed to show a connection.
        let url = self.sealer.open(
            &engines::url_seal_context(&row.name),
            &row.connection_url_sealed,
        )?;
        let address_form = engines::by_plugin_name(&row.plugin_name).and_then(|e| e.address);
        let address = address_form.and_then(|form| form.parse(url.expose()));
        let for_address_engines = |value: bool| address_form.map(|_| value);
        Ok(ConnectionView {
            connection_details: ConnectionDetails {
                connection_url: redact_url(&url),
                username: row.username,
                max_open_connections: row.max_open_connections,
                tls_ca_set: row.tls_ca_sealed.is_some(),
                tls_certificate_set: row.tls_certificate_sealed.is_some(),
                private_key_set: row.private_key_sealed.is_some(),
                tls_certificate_key_set: row.tls_certificate_key_sealed.is_some(),
                tls_server_name: row.tls_server_name.unwrap_or_default(),
                tls_skip_verify: row.tls_skip_verify,
                disable_escaping: row.disable_escaping,
                password_authentication: row.password_authentication,
                scram_iterations: row.scram_iterations,
                host: address.as_ref().map(|a| a.host.clone()),
                port: address.as_ref().map(|a| a.port),
                tls: address.as_ref().map(|a| a.tls),
                insecure_tls: for_address_engines(row.tls_skip_verify),
                ca_cert_set: for_address_engines(row.tls_ca_sealed.is_some()),
            },
            plugin_name: row.plugin_name,
            allowed_roles: row.allowed_roles,
            root_credentials_rotate_statements: row.root_rotation_statements,
            verify_connection: row.verify_connection,
            password_policy: row.password_policy.unwrap_or_default(),
            plugin_version: String::new(),
            reachability: None,
        })
    }

    /// Asks the connection's database whether it answers, with the cached plugin's `verify`
    /// (a trivial query on a pooled connection), bounded by the connect and operation deadlines.
    /// Unlike [`Catalog::reset_connection`] it changes nothing: the pool in use stays, and a
    /// connection not used yet gets the pool its first use would have made. An unreachable
    /// database is an answer (`reachable: false` and why), not an error.
    #[tracing::instrument(skip_all, fields(connection = %name))]
    pub async fn check_reachable(&self, name: &str) -> Result<Reachability> {
        check_name("connection name", name)?;
        let checked_at = Utc::now();
        let started = std::time::Instant::now();
        let outcome = match self.engines.get(name).await {
            Ok(plugin) => plugin.verify().await.map_err(|e| e.to_string()),
            // Building the pool failed (bad TLS material, an unusable URL): not reachable.
            Err(Error::Database { source, .. }) => Err(source.to_string()),
            Err(other) => return Err(other),
        };
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Err(error) = &outcome {
            tracing::info!(%error, elapsed_ms, "connection check: unreachable");
        }
        Ok(Reachability {
            reachable: outcome.is_ok(),
            error: outcome.err(),
            checked_at,
            elapsed_ms,
        })
    }

    pub async fn list_connections(&self) -> Result<Vec<String>> {
        self.store.list_connections().await
    }

    /// Deletes a connection. Refused (Conflict) while live leases or static roles use it: their
    /// users could never be revoked or rotated without it. Deleting one that does not exist
    /// succeeds, as in Vault.
    pub async fn delete_connection(&self, name: &str) -> Result<()> {
        check_name("connection name", name)?;
        match self.store.delete_connection(name).await? {
            ConnectionDeletion::Deleted | ConnectionDeletion::NotFound => {}
            ConnectionDeletion::InUse {
                live_leases,
                static_roles,
            } => {
                let mut uses = Vec::new();
                if live_leases > 0 {
                    uses.push(format!(
                        "{live_leases} live lease(s) (revoke them first with sys/leases/revoke-prefix/database/creds/<role>, or sys/leases/revoke-force/<prefix> if the database is gone)"
                    ));
                }
                if !static_roles.is_empty() {
                    uses.push(format!(
                        "static role(s) {} (delete them first)",
                        static_roles.join(", ")
                    ));
                }
                if uses.is_empty() {
                    // Its last users went between the refused delete and the count.
                    uses.push("leases that were revoked just now (try again)".to_owned());
                }
                return Err(Error::Conflict(format!(
                    "connection {name} is still in use by {}",
                    uses.join(" and ")
                )));
            }
        }
        self.engines.invalidate(name).await;
        Ok(())
    }

    /// Closes and reopens the connection's pool with the stored settings (`database/reset`).
    pub async fn reset_connection(&self, name: &str) -> Result<()> {
        check_name("connection name", name)?;
        if self.store.get_connection(name).await?.is_none() {
            return Err(Error::not_found("connection", name));
        }
        self.engines.invalidate(name).await;
        self.engines.get(name).await?;
        Ok(())
    }

    /// Whether `role` may use `connection`, by the connection's `allowed_roles`. Returns the
    /// connection's row, so issuing reads it once (its password policy comes from the same row).
    pub async fn check_allowed(&self, connection: &str, role: &str) -> Result<Connection> {
        let row = self
            .store
            .get_connection(connection)
            .await?
            .ok_or_else(|| Error::not_found("connection", connection))?;
        if row
            .allowed_roles
            .iter()
            .any(|pattern| crate::names::glob_matches(pattern, role))
        {
            Ok(row)
        } else {
            Err(Error::invalid(format!(
                "role {role} is not in the allowed_roles of connection {connection}"
            )))
        }
    }

    /// Drops the cached instance of every connection whose plugin is `plugin_name`, so each
    /// reconnects with its stored settings on next use; returns their names.
    pub async fn reload_plugin(&self, plugin_name: &str) -> Result<Vec<String>> {
        let mut reloaded = Vec::new();
        for name in self.store.list_connections().await? {
            let Some(row) = self.store.get_connection(&name).await? else {
                continue;
            };
            if row.plugin_name == plugin_name {
                self.engines.invalidate(&name).await;
                reloaded.push(name);
            }
        }
        Ok(reloaded)
    }

    /// Creates or updates a role after checking its templates and TTLs against its connection.
    #[tracing::instrument(skip_all, fields(role = %name), err)]
    pub async fn write_role(&self, name: &str, input: RoleInput) -> Result<Vec<String>> {
        check_name("role name", name)?;
        // One name, one kind of role (as Vault): `creds/NAME` and `static-creds/NAME` must not be
        // two different things a policy on one name would cover.
        if self.store.get_static_role(name).await?.is_some() {
            return Err(Error::invalid(format!(
                "a static role named {name} exists; a dynamic role may not share its name"
            )));
        }
        let existing = self.store.get_role(name).await?;
        let db_name = input
            .db_name
            .or_else(|| existing.as_ref().map(|r| r.db_name.clone()))
            .ok_or_else(|| Error::invalid("db_name: required when creating a role"))?;
        check_name("db_name", &db_name)?;
        let pick = |given: Option<Vec<String>>, old: fn(&Role) -> &Vec<String>| {
            given
                .or_else(|| existing.as_ref().map(|r| old(r).clone()))
                .unwrap_or_default()
        };
        let creation = pick(input.creation_statements, |r| &r.creation_statements);
        let revocation = pick(input.revocation_statements, |r| &r.revocation_statements);
        let rollback = pick(input.rollback_statements, |r| &r.rollback_statements);
        let renew = pick(input.renew_statements, |r| &r.renew_statements);
        let default_ttl = input
            .default_ttl
            .or_else(|| existing.as_ref().map(|r| r.default_ttl))
            .unwrap_or_default();
        let max_ttl = input
            .max_ttl
            .or_else(|| existing.as_ref().map(|r| r.max_ttl))
            .unwrap_or_default();
        if max_ttl > self.limits.max_ttl {
            return Err(Error::invalid(format!(
                "max_ttl: {}s exceeds the system maximum of {}s",
                max_ttl.as_secs(),
                self.limits.max_ttl.as_secs()
            )));
        }
        if default_ttl > self.limits.max_ttl {
            return Err(Error::invalid(format!(
                "default_ttl: {}s exceeds the system maximum of {}s",
                default_ttl.as_secs(),
                self.limits.max_ttl.as_secs()
            )));
        }
        if !max_ttl.is_zero() && default_ttl > max_ttl {
            return Err(Error::invalid(format!(
                "default_ttl: {}s is longer than max_ttl {}s",
                default_ttl.as_secs(),
                max_ttl.as_secs()
            )));
        }
        let username_template = input
            .username_template
            .or_else(|| existing.as_ref().and_then(|r| r.username_template.clone()))
            .filter(|t| !t.trim().is_empty());
        let options = input
            .options
            .or_else(|| existing.as_ref().map(|r| r.options.clone()))
            .unwrap_or_default();

        // Statements and the username template are checked by the engine that will run them, so a
        // role that could never issue a credential is refused now.
        let plugin: Arc<dyn DatabasePlugin> =
            self.engines.get(&db_name).await.map_err(|e| match e {
                Error::NotFound { .. } => {
                    Error::invalid(format!("db_name: connection {db_name} does not exist"))
                }
                other => other,
            })?;
        for (field, list, kind) in [
            ("creation_statements", &creation, StatementKind::Creation),
            (
                "revocation_statements",
                &revocation,
                StatementKind::Revocation,
            ),
            ("rollback_statements", &rollback, StatementKind::Rollback),
            ("renew_statements", &renew, StatementKind::Renew),
        ] {
            plugin
                .validate_role(&RoleOptions::new(), &[list])
                .map_err(|e| Error::invalid(format!("{field}: {e}")))?;
            check_statement_kind(plugin.as_ref(), field, kind, list)?;
        }
        plugin
            .validate_role(&options, &[])
            .map_err(|e| Error::invalid(format!("options: {e}")))?;
        let database_per_lease = input
            .database_per_lease
            .or_else(|| existing.as_ref().map(|r| r.database_per_lease))
            .unwrap_or(false);
        let template_database = input
            .template_database
            .or_else(|| existing.as_ref().and_then(|r| r.template_database.clone()))
            .filter(|t| !t.is_empty());
        if template_database.is_some() && !database_per_lease {
            return Err(Error::invalid(
                "template_database: only a role with database_per_lease = true copies a database",
            ));
        }
        if database_per_lease {
            // The engine says whether it has databases, and checks the template's name.
            plugin
                .validate_database_per_lease(template_database.as_deref())
                .map_err(|e| Error::invalid(e.to_string()))?;
        }
        let warm_pool_size = input
            .warm_pool_size
            .or_else(|| existing.as_ref().map(|r| r.warm_pool_size))
            .unwrap_or(0);
        if warm_pool_size > MAX_WARM_POOL_SIZE {
            return Err(Error::invalid(format!(
                "warm_pool_size: at most {MAX_WARM_POOL_SIZE}, not {warm_pool_size}"
            )));
        }
        if warm_pool_size > 0 {
            if database_per_lease {
                return Err(Error::invalid(
                    "warm_pool_size: a role with database_per_lease cannot keep a warm pool \
                     (each lease's database is made for it at issue)",
                ));
            }
            if !plugin.supports_warm_pool() {
                return Err(Error::invalid(format!(
                    "warm_pool_size: the {} engine cannot keep a warm pool",
                    plugin.engine()
                )));
            }
        }
        let template = UsernameTemplate::parse(
            username_template
                .as_deref()
                .unwrap_or(lessor_plugin::credentials::DEFAULT_USERNAME_TEMPLATE),
        )
        .map_err(|e| Error::invalid(e.to_string()))?;
        if warm_pool_size > 0 && template.uses_display_name() {
            return Err(Error::invalid(
                "warm_pool_size: a pooled user is named before anybody asks for it, so the role's \
                 username_template cannot use the requester's display name ({{display_name}} or \
                 .DisplayName)",
            ));
        }
        template
            .check_fits(
                plugin.max_username_len(),
                UsernameContext {
                    role: name,
                    display_name: "token",
                },
            )
            .map_err(|e| Error::invalid(e.to_string()))?;

        let now = Utc::now();
        let role = Role {
            name: name.to_owned(),
            db_name: db_name.clone(),
            creation_statements: creation,
            revocation_statements: revocation,
            rollback_statements: rollback,
            renew_statements: renew,
            default_ttl,
            max_ttl,
            username_template,
            options,
            database_per_lease,
            template_database,
            warm_pool_size,
            created_at: now,
            updated_at: now,
        };
        self.store.upsert_role(&role).await?;
        let mut warnings = Vec::new();
        if self.check_allowed(&db_name, name).await.is_err() {
            warnings.push(format!(
                "role {name} is not in the allowed_roles of connection {db_name}; credentials will be refused until it is"
            ));
        }
        Ok(warnings)
    }

    pub async fn role(&self, name: &str) -> Result<Role> {
        check_name("role name", name)?;
        self.store
            .get_role(name)
            .await?
            .ok_or_else(|| Error::not_found("role", name))
    }

    pub async fn read_role(&self, name: &str) -> Result<RoleView> {
        let role = self.role(name).await?;
        Ok(RoleView {
            db_name: role.db_name,
            creation_statements: role.creation_statements,
            revocation_statements: role.revocation_statements,
            rollback_statements: role.rollback_statements,
            renew_statements: role.renew_statements,
            default_ttl: role.default_ttl.as_secs() as i64,
            max_ttl: role.max_ttl.as_secs() as i64,
            username_template: role.username_template.unwrap_or_default(),
            options: role.options,
            credential_type: "password",
            database_per_lease: role.database_per_lease,
            template_database: role.template_database.unwrap_or_default(),
            warm_pool_size: role.warm_pool_size,
            warm_pool_ready: None,
        })
    }

    pub async fn list_roles(&self) -> Result<Vec<String>> {
        self.store.list_roles().await
    }

    /// Deletes a role. Its live leases keep what they need and are revoked on schedule.
    pub async fn delete_role(&self, name: &str) -> Result<()> {
        check_name("role name", name)?;
        self.store.delete_role(name).await?;
        Ok(())
    }
}

/// Shows a connection URL without any inline password: a `{{password}}` template is shown as is,
/// `scheme://user:secret@host` becomes `scheme://user:*****@host`.
pub fn redact_url(url: &Secret) -> String {
    let text = url.expose();
    let Some(at) = text.rfind('@') else {
        return text.to_owned();
    };
    let (credentials, rest) = text.split_at(at);
    let scheme_end = credentials.find("://").map_or(0, |i| i + 3);
    let (scheme, userinfo) = credentials.split_at(scheme_end);
    match userinfo.split_once(':') {
        Some((user, pass)) if pass != "{{password}}" => format!("{scheme}{user}:*****{rest}"),
        _ => text.to_owned(),
    }
}

/// Role option maps arrive as JSON objects of strings.
pub fn options_from_json(value: &serde_json::Value) -> Result<RoleOptions> {
    let object = value
        .as_object()
        .ok_or_else(|| Error::invalid("options: expected an object of string values"))?;
    let mut options = BTreeMap::new();
    for (key, value) in object {
        let text = value
            .as_str()
            .ok_or_else(|| Error::invalid(format!("options.{key}: expected a string")))?;
        options.insert(key.clone(), text.to_owned());
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_sql_or_path_characters_are_refused() {
        for bad in [
            "",
            "a\"b",
            "a'b",
            "a;b",
            "a/b",
            "ünï",
            "-lead",
            "a b",
            &"x".repeat(65),
        ] {
            let err = check_name("role name", bad).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid role name"),
                "{bad:?}: {err}"
            );
        }
        check_name("role name", "app-ro_1.v2").unwrap();
    }

    #[test]
    fn redact_url_hides_inline_passwords_only() {
        let template =
            Secret::new("postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres");
        assert_eq!(redact_url(&template), template.expose());
        let inline = Secret::new("postgres://admin:hunter2@db:5432/app");
        assert_eq!(redact_url(&inline), "postgres://admin:*****@db:5432/app");
        let vault_mysql = Secret::new("root:pw@tcp(127.0.0.1:3306)/");
        assert_eq!(redact_url(&vault_mysql), "root:*****@tcp(127.0.0.1:3306)/");
    }
}
