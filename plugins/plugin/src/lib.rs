//! The interface between Lessor and the database engines it manages.
//!
//! Lessor's core (leases, the reaper, rotation, the API) knows databases only through the
//! [`DatabasePlugin`] trait defined here; each engine lives in its own crate
//! (`lessor-postgres`, `lessor-mysql`) and knows nothing of the store, the API or the other engines.
//!
//! - [`template`]: statement templates (`{{name}}`, `{{password}}`, `{{expiration}}`), checked when a
//!   role is written so that an unknown placeholder never reaches credential issuance.
//! - [`credentials`]: username and password generation from OS randomness over alphabets that are
//!   safe in SQL literals, URLs, `.pgpass` and MySQL option files.
//! - [`vault_template`]: Vault's username template language (`{{.RoleName | truncate 10}}`), parsed
//!   by hand with a depth limit, beside Lessor's own `v-{{role}}-{{random}}`.
//! - [`Secret`]: the wrapper every password travels in, whose `Debug` and `Display` never print it.
//! - [`PluginError`]: one error type that tells a transient failure (retry later) from a permanent one.
//! - `conformance` (feature `testing`): the scenarios every engine must pass, for its own tests.
//! - [`descriptor`]: what each engine crate exports so that Lessor can list it: names, how to
//!   connect, its local defaults and its direct-SQL baseline. Adding an engine is a crate plus one
//!   line in Lessor's registry (`src/engines.rs`).

#![forbid(unsafe_code)]

#[cfg(feature = "testing")]
pub mod conformance;
pub mod credentials;
pub mod descriptor;
mod marker;
pub mod template;
pub mod vault_template;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use credentials::{
    check_password, check_username, generate_password, generate_username, UsernameContext,
    UsernameTemplate,
};
pub use descriptor::{Address, AddressForm, DirectSession, EngineDescriptor, LocalTarget};
pub use marker::UserMarker;
pub use template::{
    render_statements, split_statements, PasswordValue, StatementTemplate, TemplateValues,
};

/// A secret string (password, token, password-bearing URL) that redacts itself in `Debug` and
/// `Display`, so that a stray `{:?}` in a log line or an error message cannot leak it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call sites are few and greppable: each one hands the value to a
    /// database driver, a sealing routine or the one response that returns it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// Every way an engine operation can fail. [`PluginError::is_transient`] tells the reaper and the
/// rotator whether to retry later or to record a permanent failure.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The database could not be reached or the connection broke: retry later.
    #[error("cannot reach the database: {0}")]
    Unavailable(String),
    /// The database refused for a reason that may pass (lock timeout, too many connections, shutdown).
    #[error("the database is busy: {0}")]
    Busy(String),
    /// The database rejected a statement (syntax, permission, missing object).
    #[error("the database rejected a statement: {0}")]
    Rejected(String),
    /// The connection configuration is unusable (bad URL, unknown option).
    #[error("invalid connection configuration: {0}")]
    Config(String),
    /// A value that would be substituted into SQL failed the strict alphabet check.
    #[error("invalid {field}: {reason}")]
    InvalidValue { field: &'static str, reason: String },
    /// A statement template uses a placeholder the engine does not know, or is malformed.
    #[error("invalid statement template: {0}")]
    Template(String),
    /// A login with the given credentials was refused (used to test a rotated password).
    #[error("login refused for {username}: {reason}")]
    LoginRefused { username: String, reason: String },
}

impl PluginError {
    /// Whether the same operation may succeed if tried again later without any change.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Busy(_))
    }

    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidValue {
            field,
            reason: reason.into(),
        }
    }
}

/// How to reach a target database, as an operator configured it.
#[derive(Debug, Clone, Default)]
pub struct ConnectionSettings {
    /// Vault-style URL template with `{{username}}` and `{{password}}` placeholders, or a URL with
    /// the credentials inline. Kept as a [`Secret`] because operators sometimes inline the password.
    pub connection_url: Secret,
    /// The admin user Lessor connects as.
    pub username: String,
    /// The admin password, unsealed only in memory.
    pub password: Secret,
    /// Upper bound on pooled connections to this target.
    pub max_open_connections: u32,
    /// How long to wait for a connection before calling the target unavailable.
    pub connect_timeout: std::time::Duration,
    /// How long the server lets one statement run before it aborts it (PostgreSQL
    /// `statement_timeout`, MariaDB `max_statement_time`); zero leaves the server's own setting.
    /// The caller also bounds each whole operation on its side; this limit makes the server stop
    /// work nobody waits for any more.
    pub statement_timeout: std::time::Duration,
    /// TLS material given inline on the connection (Vault's field names), unsealed only in memory.
    /// TLS *modes* (PostgreSQL `sslmode`, MySQL `tls=`) live in the connection URL; these are the
    /// certificates and keys, and each engine refuses the fields it has no use for.
    pub tls: TlsMaterial,
    /// `disable_escaping`: put the admin credentials into `{{username}}` and `{{password}}` exactly
    /// as they are, neither percent-encoded nor quoted (Vault's field, for connection string forms
    /// the engine's own escaping does not fit). The operator's choice: the credentials must then
    /// hold nothing the string form would read specially.
    pub disable_escaping: bool,
    /// `password_authentication`: whether `{{password}}` in creation and rotation statements is
    /// the password itself (the server hashes it) or a verifier Lessor computed (PostgreSQL's
    /// SCRAM-SHA-256), and with how many iterations. Engines that hash nothing themselves refuse
    /// anything but [`PasswordAuthentication::Password`].
    pub password_authentication: PasswordAuthentication,
    /// The installation whose mark every created user carries, on engines that can keep a note
    /// on a user ([`DatabasePlugin::marked_users`]); `None` leaves users unmarked.
    pub user_marker: Option<UserMarker>,
}

/// PostgreSQL's own SCRAM-SHA-256 iteration count (`scram_iterations`' default): what every
/// password gets unless it is an unguessable generated one on a connection that says otherwise.
pub const SCRAM_DEFAULT_ITERATIONS: u32 = 4096;

/// Entropy, in bits, from which a password cannot be guessed whatever its hash costs: at 2^128
/// candidates, making each guess 4,096 times dearer (12 bits) changes nothing that matters.
pub const UNGUESSABLE_ENTROPY_BITS: f64 = 128.0;

/// How passwords reach the target in creation and rotation statements (Vault's connection field
/// `password_authentication`, plus Lessor's iteration count for generated passwords).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PasswordAuthentication {
    /// `"password"`: the statements carry the password itself and the server hashes it (Vault's
    /// default).
    #[default]
    Password,
    /// `"scram-sha-256"`: Lessor computes the SCRAM-SHA-256 verifier and the statements carry
    /// that, so the password itself never reaches the server (nor its statement log).
    ScramSha256 {
        /// `scram_iterations`: PBKDF2 iterations for [`PasswordStrength::Unguessable`] passwords
        /// of dynamic users (1 to [`SCRAM_DEFAULT_ITERATIONS`]). Every other password (static
        /// roles, root rotation, weak password policies) gets [`SCRAM_DEFAULT_ITERATIONS`].
        generated_iterations: std::num::NonZeroU32,
    },
}

impl PasswordAuthentication {
    /// Vault's name for [`PasswordAuthentication::Password`].
    pub const PASSWORD: &'static str = "password";
    /// Vault's name for [`PasswordAuthentication::ScramSha256`].
    pub const SCRAM_SHA_256: &'static str = "scram-sha-256";

    /// Vault's name for the mode: `"password"` or `"scram-sha-256"`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Password => Self::PASSWORD,
            Self::ScramSha256 { .. } => Self::SCRAM_SHA_256,
        }
    }

    /// The iterations for unguessable generated passwords, where the mode has any.
    pub fn generated_iterations(&self) -> Option<u32> {
        match self {
            Self::Password => None,
            Self::ScramSha256 {
                generated_iterations,
            } => Some(generated_iterations.get()),
        }
    }

    /// Reads the two connection fields, `password_authentication` and `scram_iterations`;
    /// an error names the field at fault.
    pub fn from_fields(name: &str, scram_iterations: u32) -> Result<Self, PluginError> {
        match name {
            Self::PASSWORD => Ok(Self::Password),
            Self::SCRAM_SHA_256 => {
                if !(1..=SCRAM_DEFAULT_ITERATIONS).contains(&scram_iterations) {
                    return Err(PluginError::invalid(
                        "scram_iterations",
                        format!(
                            "must be between 1 and {SCRAM_DEFAULT_ITERATIONS}, not {scram_iterations} \
                             (more stretching adds nothing to a generated password and costs CPU on \
                             Lessor and on the database at every issue)"
                        ),
                    ));
                }
                Ok(Self::ScramSha256 {
                    generated_iterations: std::num::NonZeroU32::new(scram_iterations)
                        .unwrap_or(std::num::NonZeroU32::MIN),
                })
            }
            other => Err(PluginError::invalid(
                "password_authentication",
                format!(
                    "must be \"password\" or \"scram-sha-256\", not {:?}",
                    other.chars().take(40).collect::<String>()
                ),
            )),
        }
    }
}

/// How hard a password is to guess, which tells an engine that hashes passwords itself how much
/// stretching the hash needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordStrength {
    /// Drawn from the OS random source with at least [`UNGUESSABLE_ENTROPY_BITS`] of entropy (the
    /// default generator's 32 characters carry 192): key stretching adds nothing to it.
    Unguessable,
    /// Anything else: a weak password policy, or a password a person may have chosen. Gets the
    /// full iteration count.
    Guessable,
}

impl PasswordStrength {
    /// The strength of a generator whose output has at least `bits` of min-entropy.
    pub fn of_entropy(bits: f64) -> Self {
        if bits >= UNGUESSABLE_ENTROPY_BITS {
            Self::Unguessable
        } else {
            Self::Guessable
        }
    }
}

/// Inline TLS material for a target connection, as an operator gave it (PEM text). Every field is
/// optional; an engine refuses (with [`PluginError::InvalidValue`] naming the field) the ones it
/// does not use, so nothing given is silently ignored.
#[derive(Clone, Default)]
pub struct TlsMaterial {
    /// `tls_ca`: the CA certificate(s) that must have signed the server's certificate.
    pub ca_pem: Option<String>,
    /// `tls_certificate`: the client certificate (PostgreSQL), with `private_key`.
    pub certificate_pem: Option<String>,
    /// `private_key`: the client certificate's key (PostgreSQL).
    pub private_key_pem: Option<Secret>,
    /// `tls_certificate_key`: the client certificate and its key in one PEM (MySQL).
    pub certificate_key_pem: Option<Secret>,
    /// `tls_server_name`: the name to verify the server's certificate against (MySQL).
    pub server_name: Option<String>,
    /// `tls_skip_verify`: encrypt without verifying the server (MySQL); only when asked by name.
    pub skip_verify: bool,
}

impl TlsMaterial {
    /// Whether any field was given.
    pub fn is_empty(&self) -> bool {
        self.ca_pem.is_none()
            && self.certificate_pem.is_none()
            && self.private_key_pem.is_none()
            && self.certificate_key_pem.is_none()
            && self.server_name.is_none()
            && !self.skip_verify
    }
}

impl std::fmt::Debug for TlsMaterial {
    /// Keys are secrets; certificates are not, but are long: say only what is present.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem", &self.ca_pem.is_some())
            .field("certificate_pem", &self.certificate_pem.is_some())
            .field("private_key_pem", &self.private_key_pem.is_some())
            .field("certificate_key_pem", &self.certificate_key_pem.is_some())
            .field("server_name", &self.server_name)
            .field("skip_verify", &self.skip_verify)
            .finish()
    }
}

/// Engine-specific role options (for example the MySQL host part); validated by the plugin when the
/// role is written.
pub type RoleOptions = BTreeMap<String, String>;

/// The statements an engine uses where a role leaves a list empty. Each entry is a template.
#[derive(Debug, Clone, Default)]
pub struct DefaultStatements {
    pub creation: Vec<String>,
    pub renew: Vec<String>,
    pub revocation: Vec<String>,
    pub rollback: Vec<String>,
    pub rotation: Vec<String>,
}

/// A user to create on the target (Vault dbplugin v5's `NewUserRequest`).
#[derive(Debug)]
pub struct NewUserRequest<'a> {
    /// Already generated and checked against the username alphabet.
    pub username: &'a str,
    pub password: &'a Secret,
    /// How the password was made: an engine that hashes it itself (PostgreSQL with
    /// `password_authentication = "scram-sha-256"`) stretches only a guessable one fully.
    pub password_strength: PasswordStrength,
    /// When the login must stop working; engines that can enforce it themselves do.
    pub expiration: DateTime<Utc>,
    /// Creation statement templates; empty means the engine's default.
    pub statements: &'a [String],
    /// Engine-specific role options, already validated by [`DatabasePlugin::validate_role`].
    pub options: &'a RoleOptions,
    /// A database to create for this user alone (a role's `database_per_lease`), owned by it or
    /// granted to it in full; made after the user, and dropped with it by
    /// [`DatabasePlugin::delete_user`]. Engines without databases refuse it when the role is
    /// written ([`DatabasePlugin::validate_role`] sees `database_per_lease` among the options).
    pub database: Option<NewDatabase<'a>>,
}

/// The throwaway database of a [`NewUserRequest`].
#[derive(Debug, Clone, Copy)]
pub struct NewDatabase<'a> {
    /// Already generated and checked against the username alphabet (it is the lease's username
    /// or derived from it), so it is safe as a quoted identifier.
    pub name: &'a str,
    /// A database to copy (PostgreSQL `TEMPLATE`), already checked by the engine at role write.
    pub template: Option<&'a str>,
}

/// A change to an existing user (Vault dbplugin v5's `UpdateUserRequest`): a new password, a new
/// expiry, or both. A request with neither does nothing.
#[derive(Debug)]
pub struct UpdateUserRequest<'a> {
    pub username: &'a str,
    pub password: Option<PasswordChange<'a>>,
    pub expiration: Option<ExpirationChange<'a>>,
}

/// A new password and the statements that set it (empty: the engine's rotation statements).
#[derive(Debug, Clone, Copy)]
pub struct PasswordChange<'a> {
    pub new_password: &'a Secret,
    pub statements: &'a [String],
}

/// A new expiry and the statements that move it (empty: the engine's renew statements).
#[derive(Debug, Clone, Copy)]
pub struct ExpirationChange<'a> {
    pub new_expiration: DateTime<Utc>,
    pub statements: &'a [String],
}

/// A user to remove (Vault dbplugin v5's `DeleteUserRequest`), with its sessions and, for a
/// `database_per_lease` role, its database.
#[derive(Debug, Clone, Copy)]
pub struct DeleteUserRequest<'a> {
    pub username: &'a str,
    /// Revocation statement templates; empty means the engine's built-in revocation.
    pub statements: &'a [String],
    /// The user's throwaway database, dropped after its sessions are ended.
    pub database: Option<&'a str>,
}

impl<'a> DeleteUserRequest<'a> {
    /// The common case: the engine's built-in revocation, no database.
    pub fn builtin(username: &'a str) -> Self {
        Self {
            username,
            statements: &[],
            database: None,
        }
    }

    /// Whether this is [`DeleteUserRequest::builtin`]'s kind of request: no statements of its
    /// own and no database, so the engine may revoke it in a batch with others.
    pub fn is_builtin(&self) -> bool {
        self.statements.is_empty() && self.database.is_none()
    }
}

/// The kinds of statement list a role, a static role or a connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    Creation,
    Revocation,
    Rollback,
    Renew,
    Rotation,
}

/// One database engine, connected to one target. Implementations hold their own connection pool.
#[async_trait]
pub trait DatabasePlugin: Send + Sync {
    /// Short engine name: `"postgres"`, `"mysql"`; the descriptor's [`EngineDescriptor::name`].
    fn engine(&self) -> &'static str;

    /// Longest username the target accepts.
    fn max_username_len(&self) -> usize;

    /// Whether the engine itself refuses a login after the expiration given at creation (PostgreSQL
    /// `VALID UNTIL`), or only Lessor's reaper enforces it.
    fn enforces_expiration(&self) -> bool;

    fn default_statements(&self) -> DefaultStatements;

    /// Checks a role's engine-specific options and statement templates when the role is written, so
    /// that nothing invalid is found later when credentials are asked for.
    fn validate_role(
        &self,
        options: &RoleOptions,
        statements: &[&[String]],
    ) -> Result<(), PluginError> {
        let _ = options;
        for list in statements {
            for stmt in list.iter() {
                StatementTemplate::parse(stmt)?;
            }
        }
        Ok(())
    }

    /// Whether the engine runs statements of this kind. A list of a kind it does not run must
    /// stay empty: Lessor refuses it when the role is written, naming the field, rather than keep
    /// statements that would never run. Every kind, unless the engine says otherwise.
    fn runs_statements(&self, kind: StatementKind) -> bool {
        let _ = kind;
        true
    }

    /// Checks, when a role is written, that the engine can give each lease its own database
    /// (`database_per_lease`), copied from `template` if one is named.
    fn validate_database_per_lease(&self, template: Option<&str>) -> Result<(), PluginError> {
        let _ = template;
        Err(PluginError::invalid(
            "database_per_lease",
            format!("the {} engine has no databases to create", self.engine()),
        ))
    }

    /// Connects and runs a trivial query.
    async fn verify(&self) -> Result<(), PluginError>;

    /// Creates the user (and its database, if asked); all creation statements run in one
    /// transaction where the engine allows, and a failed creation leaves nothing behind.
    async fn create_user(&self, request: &NewUserRequest<'_>) -> Result<(), PluginError>;

    /// Whether the engine can keep users created ahead of demand that cannot log in until
    /// activated: a role's `warm_pool_size` is refused, naming the field, where it cannot.
    fn supports_warm_pool(&self) -> bool {
        false
    }

    /// Creates a user for a role's warm pool as [`DatabasePlugin::create_user`] does (same
    /// statements, same marker), except that it cannot log in until
    /// [`DatabasePlugin::activate_pooled_user`]; [`DatabasePlugin::delete_user`] removes it. The
    /// request's `database` is never set (`database_per_lease` roles have no pool).
    async fn create_pooled_user(&self, request: &NewUserRequest<'_>) -> Result<(), PluginError> {
        let _ = request;
        Err(PluginError::Config(format!(
            "the {} engine has no warm pool",
            self.engine()
        )))
    }

    /// Lets a pooled user log in until `expiration` (enforced by the engine where it can be).
    async fn activate_pooled_user(
        &self,
        username: &str,
        expiration: DateTime<Utc>,
    ) -> Result<(), PluginError> {
        let _ = (username, expiration);
        Err(PluginError::Config(format!(
            "the {} engine has no warm pool",
            self.engine()
        )))
    }

    /// Sets a new password and/or moves the expiry (where the engine enforces one) of an
    /// existing user: static roles, admin rotation, renewals.
    async fn update_user(&self, request: &UpdateUserRequest<'_>) -> Result<(), PluginError>;

    /// Removes the user (and its database) and ends its sessions. Idempotent: deleting a user
    /// that does not exist succeeds.
    async fn delete_user(&self, request: &DeleteUserRequest<'_>) -> Result<(), PluginError>;

    /// Whether [`DatabasePlugin::delete_users`] revokes users with the built-in revocation in
    /// fewer statements than one by one, so that concurrent revocations gain by waiting for each
    /// other and going as one batch. No default, so each engine says.
    fn batches_deletes(&self) -> bool;

    /// Deletes several users as [`DatabasePlugin::delete_user`] deletes each, in as few round
    /// trips as the engine can (bulk revocation and the reaper hand over batches); one outcome
    /// per request, in order. No default: an engine says how it batches, or that it does not
    /// (then it deletes them one by one).
    async fn delete_users(
        &self,
        requests: &[DeleteUserRequest<'_>],
    ) -> Vec<Result<(), PluginError>>;

    /// Opens a fresh connection as `username` and runs a trivial query; used to prove a rotated
    /// password works before it is promoted.
    async fn check_login(&self, username: &str, password: &Secret) -> Result<(), PluginError>;

    /// Users whose name starts with `prefix`, for reconciliation.
    async fn list_users(&self, prefix: &str) -> Result<Vec<String>, PluginError>;

    /// The users that carry a Lessor installation's marker, with the installation id each
    /// names, for reconciliation's proof of ownership; `None` where the engine keeps no note on
    /// a user (then the store's record of issued users is the only proof). No default: a
    /// wrapper that forgot to pass it on would hide every marker.
    async fn marked_users(
        &self,
    ) -> Result<Option<std::collections::HashMap<String, String>>, PluginError>;

    /// How the user reaches its database (a `database_per_lease` credential's
    /// `connection_url`), without the password; `None` where the engine has no such form.
    fn user_connection_url(&self, username: &str, database: Option<&str>) -> Option<String> {
        let _ = (username, database);
        None
    }

    /// Closes pooled connections; called when the connection is reset, rewritten or deleted.
    async fn close(&self);
}

/// Characters left as they are in a percent-encoded credential: letters, digits and RFC 3986's
/// other unreserved characters, which mean nothing special anywhere in a URL.
const URL_CREDENTIAL: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// [`DatabasePlugin::delete_users`] for an engine that does not batch: each request through
/// [`DatabasePlugin::delete_user`], in order.
pub async fn delete_each(
    plugin: &(impl DatabasePlugin + ?Sized),
    requests: &[DeleteUserRequest<'_>],
) -> Vec<Result<(), PluginError>> {
    let mut outcomes = Vec::with_capacity(requests.len());
    for request in requests {
        outcomes.push(plugin.delete_user(request).await);
    }
    outcomes
}

/// [`DatabasePlugin::delete_users`] for an engine that revokes many users in a fixed number of
/// statements: the requests `batchable` accepts (two or more) go to `revoke_batch` together; the
/// others, and all of them should the batch fail, through [`DatabasePlugin::delete_user`] one by
/// one, so that a failure is reported for the user it belongs to. The batch's steps must be
/// idempotent, since its users may be revoked again after it failed half way.
pub async fn delete_batched<P, B, F>(
    plugin: &P,
    requests: &[DeleteUserRequest<'_>],
    batchable: impl Fn(&DeleteUserRequest<'_>) -> bool,
    revoke_batch: B,
) -> Vec<Result<(), PluginError>>
where
    P: DatabasePlugin + ?Sized,
    B: FnOnce(Vec<String>) -> F,
    F: std::future::Future<Output = Result<(), PluginError>>,
{
    let batch: Vec<String> = requests
        .iter()
        .filter(|r| batchable(r))
        .map(|r| r.username.to_owned())
        .collect();
    let batch_done = batch.len() > 1
        && match revoke_batch(batch).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "batch revocation failed; revoking one by one");
                false
            }
        };
    let mut outcomes = Vec::with_capacity(requests.len());
    for request in requests {
        outcomes.push(if batch_done && batchable(request) {
            Ok(())
        } else {
            plugin.delete_user(request).await
        });
    }
    outcomes
}

/// Refuses a username longer than the engine's limit, before anything reaches the server: some
/// engines silently cut a long name (PostgreSQL at 63 bytes), and the user dropped at revocation
/// would then not be the one created.
pub fn check_username_len(username: &str, limit: usize) -> Result<(), PluginError> {
    if username.len() > limit {
        return Err(PluginError::invalid(
            "username",
            format!(
                "is {} characters long; this engine allows at most {limit}",
                username.len()
            ),
        ));
    }
    Ok(())
}

/// The pattern for `LIKE ... ESCAPE '!'` that matches the names starting with `prefix`: `%`, `_`
/// and `!` itself escaped, then `%`. `!` rather than `\` so that the pattern means the same
/// under MySQL's `NO_BACKSLASH_ESCAPES`. On PostgreSQL a prefix `LIKE`, unlike `starts_with`,
/// reads a range of the role name index, so a role catalog grown large by churn is not read whole
/// (MySQL's user table is keyed by host first, so there it filters either way).
pub fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '!' | '%' | '_') {
            out.push('!');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Percent-encodes a username or password for the user part of a URL, so that a password with
/// `@`, `:` or `/` cannot change what the URL means. The rule of URL-form connection strings;
/// engines whose drivers read other forms have their own rules.
pub fn percent_encode_credential(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, URL_CREDENTIAL).to_string()
}

/// Substitutes the admin credentials into a Vault-style connection string template, in one pass
/// (so a username that happens to contain `{{password}}` is not substituted again). Each value is
/// written by `escape`, the engine's rule for the form of string the template is in: only the
/// engine knows its forms (PostgreSQL reads a URL, percent-encoded, and libpq's keyword/value
/// string, quoted). An engine passes `escape` through [`ConnectionSettings::escaping`] so that
/// `disable_escaping` is honoured by every engine alike.
pub fn render_connection_url(
    template: &str,
    username: &str,
    password: &Secret,
    escape: impl Fn(&str) -> String,
) -> Secret {
    let mut rendered = String::with_capacity(template.len() + password.expose().len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let (value, placeholder) = if rest[start..].starts_with("{{username}}") {
            (username, "{{username}}")
        } else if rest[start..].starts_with("{{password}}") {
            (password.expose(), "{{password}}")
        } else {
            // Not a placeholder: keep one brace and look again from the next character, so
            // `{{{password}}` still finds its placeholder.
            rendered.push_str(&rest[..=start]);
            rest = &rest[start + 1..];
            continue;
        };
        rendered.push_str(&rest[..start]);
        rendered.push_str(&escape(value));
        rest = &rest[start + placeholder.len()..];
    }
    rendered.push_str(rest);
    Secret::new(rendered)
}

impl ConnectionSettings {
    /// The escaping an engine's rendering must use: its own rule `engine_rule`, or none at all
    /// when the operator set `disable_escaping`.
    pub fn escaping<'a>(
        &self,
        engine_rule: &'a dyn Fn(&str) -> String,
    ) -> &'a dyn Fn(&str) -> String {
        if self.disable_escaping {
            &verbatim
        } else {
            engine_rule
        }
    }
}

/// The escaping `disable_escaping` asks for: none.
fn verbatim(value: &str) -> String {
    value.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_prefix_escapes_wildcards() {
        assert_eq!(like_prefix("v-app_"), "v-app!_%");
        assert_eq!(like_prefix("50%!"), "50!%!!%");
        assert_eq!(like_prefix(""), "%");
    }

    #[test]
    fn secret_debug_and_display_are_redacted() {
        let secret = Secret::new("hunter2-very-secret");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(!format!("{secret}").contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2-very-secret");
    }

    #[test]
    fn connection_url_encodes_credentials() {
        let url = render_connection_url(
            "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres",
            "admin",
            &Secret::new("p@ss/word-_.~%:"),
            percent_encode_credential,
        );
        assert_eq!(
            url.expose(),
            "postgresql://admin:p%40ss%2Fword-_.~%25%3A@127.0.0.1:5432/postgres"
        );
    }

    #[test]
    fn placeholders_are_substituted_once_each() {
        let upper = |v: &str| v.to_uppercase();
        let url = render_connection_url(
            "{{{username}}:{{password}}/{{password}}{{nope}}",
            "a{{password}}",
            &Secret::new("pw"),
            upper,
        );
        assert_eq!(url.expose(), "{A{{PASSWORD}}:PW/PW{{nope}}");
    }

    #[test]
    fn disable_escaping_turns_every_rule_off() {
        let mut settings = ConnectionSettings {
            connection_url: Secret::new("u={{username}} p={{password}}"),
            username: "ad min".into(),
            password: Secret::new("p@ss'"),
            max_open_connections: 1,
            connect_timeout: std::time::Duration::from_secs(1),
            statement_timeout: std::time::Duration::ZERO,
            tls: TlsMaterial::default(),
            disable_escaping: false,
            password_authentication: PasswordAuthentication::Password,
            user_marker: None,
        };
        let render = |s: &ConnectionSettings| {
            render_connection_url(
                s.connection_url.expose(),
                &s.username,
                &s.password,
                s.escaping(&percent_encode_credential),
            )
        };
        assert_eq!(render(&settings).expose(), "u=ad%20min p=p%40ss%27");
        settings.disable_escaping = true;
        assert_eq!(render(&settings).expose(), "u=ad min p=p@ss'");
    }

    #[test]
    fn password_authentication_fields_are_checked_by_name() {
        assert_eq!(
            PasswordAuthentication::from_fields("password", 4096).unwrap(),
            PasswordAuthentication::Password
        );
        let scram = PasswordAuthentication::from_fields("scram-sha-256", 1).unwrap();
        assert_eq!(scram.name(), "scram-sha-256");
        assert_eq!(scram.generated_iterations(), Some(1));
        for (mode, iterations, field) in [
            ("md5", 4096, "password_authentication"),
            ("scram-sha-256", 0, "scram_iterations"),
            ("scram-sha-256", 4097, "scram_iterations"),
        ] {
            let err = PasswordAuthentication::from_fields(mode, iterations).unwrap_err();
            assert!(
                matches!(err, PluginError::InvalidValue { field: f, .. } if f == field),
                "{mode} {iterations}: {err}"
            );
        }
    }

    #[test]
    fn only_128_bits_and_more_are_unguessable() {
        assert_eq!(
            PasswordStrength::of_entropy(128.0),
            PasswordStrength::Unguessable
        );
        assert_eq!(
            PasswordStrength::of_entropy(127.9),
            PasswordStrength::Guessable
        );
    }

    #[test]
    fn transient_errors_are_told_apart() {
        assert!(PluginError::Unavailable("refused".into()).is_transient());
        assert!(PluginError::Busy("lock".into()).is_transient());
        assert!(!PluginError::Rejected("syntax".into()).is_transient());
    }
}
