//! The one error type of the `lessor` library. The API turns each variant into an HTTP status in a
//! single exhaustive `match` (`api::error`), so a new variant forces a decision about its status.

use lessor_plugin::PluginError;

/// Everything the broker's operations can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is missing or wrong; the message names the field.
    #[error("{0}")]
    InvalidInput(String),
    /// The named object (role, connection, lease) does not exist.
    #[error("{kind} not found: {name}")]
    NotFound { kind: &'static str, name: String },
    /// The caller may not do this.
    #[error("permission denied")]
    PermissionDenied,
    /// A login was refused (a JWT expired, wrongly signed, for another audience or issuer); the
    /// reason is safe to show and helps the workload's operator, and it never quotes the token.
    #[error("permission denied: {0}")]
    LoginRefused(String),
    /// An enabled audit device could not record the request, so it is refused (fail closed).
    #[error("audit log unavailable: {0}")]
    AuditFailed(String),
    /// The request conflicts with the current state (for example renewing a revoked lease).
    #[error("{0}")]
    Conflict(String),
    /// The target database failed; `context` says what Lessor was doing.
    #[error("{context}: {source}")]
    Database {
        context: String,
        #[source]
        source: PluginError,
    },
    /// A service Lessor depends on did not answer in time or at all (a JWKS endpoint); the
    /// message names it. Retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// The store could not be reached (refused connection, lost connection, no connection free in
    /// time): nothing was done, and retrying once the store is back will work. Answered 503.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// The store refused or failed a statement.
    #[error("store error: {0}")]
    Store(String),
    /// A migration of the store failed at start-up.
    #[error("store migration failed: {0}")]
    Migration(String),
    /// A sealed value could not be opened (wrong key, corrupt data) or the key is unusable.
    #[error("seal error: {0}")]
    Seal(String),
    /// The configuration is unusable; the message names the setting.
    #[error("configuration error: {0}")]
    Config(String),
    /// An invariant broke; opaque to API clients.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }

    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            name: name.into(),
        }
    }

    pub fn database(context: impl Into<String>, source: PluginError) -> Self {
        Self::Database {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
