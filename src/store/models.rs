//! Row types of the store, one per table. JSON columns (statement lists, option maps) are kept as
//! text here and decoded by the modules that own their meaning.

use sqlx::FromRow;

/// A configured target database.
#[derive(Debug, Clone, FromRow)]
pub struct ConnectionRow {
    pub name: String,
    pub plugin_name: String,
    /// Sealed, since operators sometimes inline the password in the URL.
    pub connection_url_sealed: String,
    pub username: String,
    pub password_sealed: String,
    /// JSON array of role names; `"*"` allows every role.
    pub allowed_roles: String,
    pub verify_connection: bool,
    pub max_open_connections: i64,
    pub root_rotation_statements: String,
    /// `tls_ca` (PEM), sealed; `None` when not set. Like the other TLS columns, written only
    /// through [`crate::store::Store::upsert_connection`] and opened by `engines::settings_for`.
    pub tls_ca_sealed: Option<String>,
    /// `tls_certificate` (PEM), sealed.
    pub tls_certificate_sealed: Option<String>,
    /// `private_key` (PEM), sealed: a secret.
    pub private_key_sealed: Option<String>,
    /// `tls_certificate_key` (PEM certificate and key), sealed: a secret.
    pub tls_certificate_key_sealed: Option<String>,
    /// `tls_server_name`, not secret.
    pub tls_server_name: Option<String>,
    /// `tls_skip_verify`.
    pub tls_skip_verify: bool,
    /// `disable_escaping`: the admin credentials go into the connection URL as they are.
    pub disable_escaping: bool,
    /// The password policy (`password_policies.name`) every generated password of this
    /// connection follows; `None` is the default generator.
    pub password_policy: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A template for dynamic credentials.
#[derive(Debug, Clone, FromRow)]
pub struct RoleRow {
    pub name: String,
    pub db_name: String,
    pub creation_statements: String,
    pub revocation_statements: String,
    pub rollback_statements: String,
    pub renew_statements: String,
    /// 0 means the system default.
    pub default_ttl_secs: i64,
    /// 0 means the system maximum.
    pub max_ttl_secs: i64,
    pub username_template: Option<String>,
    pub options: String,
    /// Each lease gets a database of its own, dropped with it.
    pub database_per_lease: bool,
    /// What those databases are copied from (PostgreSQL `TEMPLATE`).
    pub template_database: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Where a lease is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// The row is written and the user is being created (or the issuer died doing it). Only the
    /// issuer may move it to `active`; a revoke meeting it sets `revoke_requested` instead, and the
    /// reaper takes it only after the creation deadline.
    Creating,
    /// The credential is live and was handed out.
    Active,
    /// Revocation has begun and not yet succeeded; the reaper retries it.
    Revoking,
    /// The user is gone; the row stays as a tombstone for lookups and audit until tidied.
    Revoked,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Active => "active",
            Self::Revoking => "revoking",
            Self::Revoked => "revoked",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Creating, Self::Active, Self::Revoking, Self::Revoked]
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

// A lease state is stored as its name, in a TEXT column on either engine: these impls hand the
// column to `str` for each database, so one set serves SQLite and PostgreSQL alike.
impl<DB: sqlx::Database> sqlx::Type<DB> for LeaseState
where
    str: sqlx::Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <str as sqlx::Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <str as sqlx::Type<DB>>::compatible(ty)
    }
}

impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for LeaseState
where
    String: sqlx::Encode<'q, DB>,
{
    fn encode_by_ref(
        &self,
        buf: &mut <DB as sqlx::Database>::ArgumentBuffer<'q>,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        // An owned copy: SQLite's `&str` encoding would tie the buffer to the string's lifetime.
        self.as_str().to_owned().encode_by_ref(buf)
    }
}

impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for LeaseState
where
    &'r str: sqlx::Decode<'r, DB>,
{
    fn decode(
        value: <DB as sqlx::Database>::ValueRef<'r>,
    ) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&'r str as sqlx::Decode<'r, DB>>::decode(value)?;
        Self::parse(text).ok_or_else(|| format!("unknown lease state {text:?}").into())
    }
}

/// One issued credential.
#[derive(Debug, Clone, FromRow)]
pub struct LeaseRow {
    pub id: String,
    pub role_name: String,
    pub connection_name: String,
    pub username: String,
    /// The revocation statements the user was created under (JSON array), so revocation works
    /// after the role changed or was deleted.
    pub revocation_statements: String,
    pub rollback_statements: String,
    pub renew_statements: String,
    pub issued_at: i64,
    pub last_renewed_at: Option<i64>,
    pub expires_at: i64,
    pub max_expires_at: i64,
    pub state: LeaseState,
    pub next_action_at: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub revoked_at: Option<i64>,
    /// The entity (or token accessor) that owns the lease: who may look it up, renew or revoke it.
    pub owner: String,
    /// The owner's display name when the lease was issued (`token-ci`, `jwt-<subject>`), so an
    /// operator can find who holds credentials by the name they know.
    pub owner_display_name: String,
    /// A revoke met the lease while `creating`; the issuer drops the user instead of activating.
    pub revoke_requested: bool,
    /// The accessor of the token that obtained the lease; revoking that token revokes the lease.
    pub token_accessor: Option<String>,
    /// The replica working on the lease: its issuer while `creating`, its revoker while
    /// `revoking` (see [`crate::store::Claim`]).
    pub claimed_by: Option<String>,
    /// When that claim lapses.
    pub claim_until: Option<i64>,
    /// The lease's own database (a `database_per_lease` role), dropped at revocation.
    pub database_name: Option<String>,
}
