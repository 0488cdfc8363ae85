//! The lease store: connections, roles, leases and tokens in SQLite (a file in WAL mode), through
//! sqlx with the migrations under `migrations/sqlite` run at start-up.
//!
//! Everything here is plain rows; sealing happens above (callers pass sealed strings), and no query
//! loads all leases: the reaper asks for what is due, in batches, through the `leases_due` index.

mod identity;
mod metrics;
mod models;
mod static_roles;
pub mod wrapping;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub use identity::{AlertRow, AuditDeviceRow, PolicyRow, TokenRow};
pub use metrics::LiveLeaseCount;
pub use models::{ConnectionRow, LeaseRow, LeaseState, RoleRow};
pub use static_roles::{
    Promotion, RotationRecordRow, StaticRoleConfig, StaticRoleRow, ROTATION_HISTORY_LEN,
};

use crate::error::{Error, Result};

/// Milliseconds since the epoch, the store's time unit.
pub fn to_millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// One page of live lease ids in an [`IdRange`]: a range scan of the primary key.
const LIVE_IDS_IN_RANGE: &str = "SELECT id FROM leases WHERE id >= ?1 AND id < ?2 AND id > ?3
         AND state IN ('creating', 'active', 'revoking')
     ORDER BY id LIMIT ?4";

/// What [`Store::delete_connection`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionDeletion {
    Deleted,
    NotFound,
    /// Refused: these still reference the connection.
    InUse {
        live_leases: i64,
        static_roles: Vec<String>,
    },
}

/// The lease ids under a path prefix, as a half-open range `[start, end)` of the primary key, so
/// that a prefix query is an index range scan, and matches whole path segments only:
/// `database/creds/app` covers `database/creds/app/...` and never `database/creds/app2/...`.
///
/// The prefix is normalized to end in `/`; every id starting with it sorts at or after it and
/// before the same text with that last `/` (0x2F) replaced by `0` (0x30), the next byte value, and
/// nothing else does (SQLite compares TEXT bytewise under its default BINARY collation). The empty
/// prefix covers every id: valid lease ids are ASCII below 0x7F (see `lease::check_lease_path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdRange {
    pub start: String,
    pub end: String,
}

impl IdRange {
    pub fn under(prefix: &str) -> Self {
        let trimmed = prefix.trim_matches('/');
        if trimmed.is_empty() {
            return Self {
                start: String::new(),
                end: "\u{7f}".to_owned(),
            };
        }
        Self {
            start: format!("{trimmed}/"),
            end: format!("{trimmed}0"),
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        id >= self.start.as_str() && id < self.end.as_str()
    }
}

/// Handle on the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

/// Connect options of a store URL (`sqlite:///path/lessor.db`, `sqlite::memory:` or a plain path).
fn store_options(url: &str) -> Result<SqliteConnectOptions> {
    Ok(if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url).map_err(|e| Error::Config(format!("store url: {e}")))?
    } else {
        SqliteConnectOptions::new().filename(Path::new(url))
    })
}

/// The file a store URL names, or `None` for an in-memory store.
pub fn file_path(url: &str) -> Result<Option<PathBuf>> {
    let options = store_options(url)?;
    let path = options.get_filename();
    if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" || url.contains("mode=memory")
    {
        return Ok(None);
    }
    Ok(Some(path.to_path_buf()))
}

/// Creates the store's directory (0700) and file (0600) if missing, and narrows the mode of the
/// existing database, WAL and shared-memory files to 0600.
fn make_private(path: &Path) -> Result<()> {
    let config = |what: &str, e: std::io::Error| {
        Error::Config(format!("store file {}: cannot {what}: {e}", path.display()))
    };
    if let Some(dir) = path.parent() {
        crate::seal::create_private_dir(dir).map_err(|e| config("create its directory", e))?;
    }
    let mut create = std::fs::OpenOptions::new();
    create.write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        create.mode(0o600);
    }
    create.open(path).map_err(|e| config("create it", e))?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = PathBuf::from(name);
        if file.exists() {
            crate::seal::restrict_to_owner(&file)
                .map_err(|e| config("restrict it to its owner", e))?;
        }
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the SQLite store at `url` (`sqlite:///path/lessor.db` or a plain
    /// path) and runs pending migrations.
    ///
    /// The store holds token hashes and sealed secrets, so its files are the owner's only,
    /// whatever the umask: a missing directory is created 0700, and the database file is created
    /// 0600 *before* SQLite opens it, because SQLite gives the `-wal` and `-shm` files it creates
    /// later the main file's mode. Existing files with a wider mode are narrowed to 0600.
    pub async fn open(url: &str) -> Result<Self> {
        let options = store_options(url)?;
        if let Some(path) = file_path(url)? {
            make_private(&path)?;
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL is durable across process crashes (what the lease lifecycle relies on);
            // only an OS crash can lose the last transactions.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    // ---- meta -------------------------------------------------------------------------------

    pub async fn meta_get(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn meta_set(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- connections ------------------------------------------------------------------------

    pub async fn upsert_connection(&self, row: &ConnectionRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO connections (name, plugin_name, connection_url_sealed, username, password_sealed, allowed_roles,
                 verify_connection, max_open_connections, root_rotation_statements,
                 tls_ca_sealed, tls_certificate_sealed, private_key_sealed, tls_certificate_key_sealed,
                 tls_server_name, tls_skip_verify, password_policy, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET plugin_name = excluded.plugin_name,
                 connection_url_sealed = excluded.connection_url_sealed, username = excluded.username,
                 password_sealed = excluded.password_sealed, allowed_roles = excluded.allowed_roles,
                 verify_connection = excluded.verify_connection, max_open_connections = excluded.max_open_connections,
                 root_rotation_statements = excluded.root_rotation_statements,
                 tls_ca_sealed = excluded.tls_ca_sealed, tls_certificate_sealed = excluded.tls_certificate_sealed,
                 private_key_sealed = excluded.private_key_sealed,
                 tls_certificate_key_sealed = excluded.tls_certificate_key_sealed,
                 tls_server_name = excluded.tls_server_name, tls_skip_verify = excluded.tls_skip_verify,
                 password_policy = excluded.password_policy, updated_at = excluded.updated_at",
        )
        .bind(&row.name)
        .bind(&row.plugin_name)
        .bind(&row.connection_url_sealed)
        .bind(&row.username)
        .bind(&row.password_sealed)
        .bind(&row.allowed_roles)
        .bind(row.verify_connection)
        .bind(row.max_open_connections)
        .bind(&row.root_rotation_statements)
        .bind(&row.tls_ca_sealed)
        .bind(&row.tls_certificate_sealed)
        .bind(&row.private_key_sealed)
        .bind(&row.tls_certificate_key_sealed)
        .bind(&row.tls_server_name)
        .bind(row.tls_skip_verify)
        .bind(&row.password_policy)
        .bind(row.created_at)
        .bind(row.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_connection(&self, name: &str) -> Result<Option<ConnectionRow>> {
        Ok(sqlx::query_as("SELECT * FROM connections WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn list_connections(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT name FROM connections ORDER BY name")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Deletes a connection unless it is in use: no live lease and no static role may reference
    /// it, or their users could never be revoked or rotated again. The check and the delete are
    /// one statement, so a lease written concurrently (see [`Store::insert_lease`]) either
    /// blocks the delete or is refused itself.
    pub async fn delete_connection(&self, name: &str) -> Result<ConnectionDeletion> {
        let done = sqlx::query(
            "DELETE FROM connections WHERE name = ?1
                 AND NOT EXISTS (SELECT 1 FROM leases
                                 WHERE connection_name = ?1 AND state IN ('creating', 'active', 'revoking'))
                 AND NOT EXISTS (SELECT 1 FROM static_roles WHERE db_name = ?1)",
        )
        .bind(name)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() > 0 {
            return Ok(ConnectionDeletion::Deleted);
        }
        if self.get_connection(name).await?.is_none() {
            return Ok(ConnectionDeletion::NotFound);
        }
        Ok(ConnectionDeletion::InUse {
            live_leases: self.count_live_leases_on_connection(name).await?,
            static_roles: self.static_roles_on_connection(name).await?,
        })
    }

    // ---- roles ------------------------------------------------------------------------------

    pub async fn upsert_role(&self, row: &RoleRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO roles (name, db_name, creation_statements, revocation_statements, rollback_statements,
                 renew_statements, default_ttl_secs, max_ttl_secs, username_template, options, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET db_name = excluded.db_name,
                 creation_statements = excluded.creation_statements, revocation_statements = excluded.revocation_statements,
                 rollback_statements = excluded.rollback_statements, renew_statements = excluded.renew_statements,
                 default_ttl_secs = excluded.default_ttl_secs, max_ttl_secs = excluded.max_ttl_secs,
                 username_template = excluded.username_template, options = excluded.options, updated_at = excluded.updated_at",
        )
        .bind(&row.name)
        .bind(&row.db_name)
        .bind(&row.creation_statements)
        .bind(&row.revocation_statements)
        .bind(&row.rollback_statements)
        .bind(&row.renew_statements)
        .bind(row.default_ttl_secs)
        .bind(row.max_ttl_secs)
        .bind(&row.username_template)
        .bind(&row.options)
        .bind(row.created_at)
        .bind(row.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_role(&self, name: &str) -> Result<Option<RoleRow>> {
        Ok(sqlx::query_as("SELECT * FROM roles WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn list_roles(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT name FROM roles ORDER BY name")
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn delete_role(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM roles WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    // ---- leases -----------------------------------------------------------------------------

    /// Writes a new lease, in state `creating`, before its user exists on the target. This is
    /// the one durable write on the credential hot path. It is refused (NotFound) if the lease's
    /// connection no longer exists: the check and the write are one statement, so a concurrent
    /// [`Store::delete_connection`] can never leave a lease whose connection is gone.
    pub async fn insert_lease(&self, lease: &LeaseRow) -> Result<()> {
        let done = sqlx::query(
            "INSERT INTO leases (id, role_name, connection_name, username, revocation_statements, rollback_statements,
                 renew_statements, issued_at, last_renewed_at, expires_at, max_expires_at, state, next_action_at,
                 attempts, last_error, revoked_at, owner, revoke_requested, token_accessor)
             SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
             WHERE EXISTS (SELECT 1 FROM connections WHERE name = ?)",
        )
        .bind(&lease.id)
        .bind(&lease.role_name)
        .bind(&lease.connection_name)
        .bind(&lease.username)
        .bind(&lease.revocation_statements)
        .bind(&lease.rollback_statements)
        .bind(&lease.renew_statements)
        .bind(lease.issued_at)
        .bind(lease.last_renewed_at)
        .bind(lease.expires_at)
        .bind(lease.max_expires_at)
        .bind(lease.state)
        .bind(lease.next_action_at)
        .bind(lease.attempts)
        .bind(&lease.last_error)
        .bind(lease.revoked_at)
        .bind(&lease.owner)
        .bind(lease.revoke_requested)
        .bind(&lease.token_accessor)
        .bind(&lease.connection_name)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("connection", &lease.connection_name));
        }
        Ok(())
    }

    pub async fn get_lease(&self, id: &str) -> Result<Option<LeaseRow>> {
        Ok(sqlx::query_as("SELECT * FROM leases WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Ids of live leases under the path `prefix` (see [`IdRange::under`]), in id order.
    pub async fn live_lease_ids_with_prefix(
        &self,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<String>> {
        self.live_lease_ids_in(&IdRange::under(prefix), "", limit)
            .await
    }

    /// Ids of live leases in `range` after `after` (exclusive; "" for the start), in id order, at
    /// most `limit`. A range scan of the primary key.
    pub async fn live_lease_ids_in(
        &self,
        range: &IdRange,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(LIVE_IDS_IN_RANGE)
            .bind(&range.start)
            .bind(&range.end)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Ids of live leases obtained by the token `accessor`, after `after` (exclusive), in id
    /// order, at most `limit` (through the `leases_token` index).
    pub async fn live_lease_ids_of_token(
        &self,
        accessor: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM leases WHERE token_accessor = ?1 AND id > ?2
                 AND state IN ('creating', 'active', 'revoking')
             ORDER BY id LIMIT ?3",
        )
        .bind(accessor)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Moves a lease's expiry after a renewal (only while it is active).
    pub async fn renew_lease(&self, id: &str, expires_at: i64, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE leases SET expires_at = ?, next_action_at = ?, last_renewed_at = ? WHERE id = ? AND state = 'active'",
        )
        .bind(expires_at)
        .bind(expires_at)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The issuer's step after creating the user: `creating -> active`, due at `next_action_at`
    /// (its expiry). False if a revocation was requested meanwhile or the reaper took the lease
    /// over: then the issuer must drop the user and must not hand out the credentials.
    pub async fn activate_lease(&self, id: &str, next_action_at: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE leases SET state = 'active', next_action_at = ?
             WHERE id = ? AND state = 'creating' AND revoke_requested = 0",
        )
        .bind(next_action_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A revoke met a `creating` lease: records the request for the issuer (or the reaper).
    /// False if the lease is no longer `creating` (the caller re-reads it and acts on its state).
    pub async fn request_revocation(&self, id: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE leases SET revoke_requested = 1 WHERE id = ? AND state = 'creating'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Takes a `creating` lease over for revocation (`creating -> revoking`, due for a retry at
    /// `next_action_at`). With `due_by`, only if its creation deadline has passed by then (the
    /// reaper, which must not race a live issuer); without, unconditionally (the issuer itself).
    pub async fn take_over_creating(
        &self,
        id: &str,
        next_action_at: i64,
        due_by: Option<i64>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE leases SET state = 'revoking', next_action_at = ?1
             WHERE id = ?2 AND state = 'creating' AND (?3 IS NULL OR next_action_at <= ?3)",
        )
        .bind(next_action_at)
        .bind(id)
        .bind(due_by)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Moves the reaper's deadline of a `creating` lease, for an issuer that gave up on it.
    pub async fn reschedule_creating(&self, id: &str, next_action_at: i64) -> Result<bool> {
        let done =
            sqlx::query("UPDATE leases SET next_action_at = ? WHERE id = ? AND state = 'creating'")
                .bind(next_action_at)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks a live lease as being revoked, due for the reaper at `next_action_at` should this
    /// process die before it finishes. Never a `creating` lease: that belongs to its issuer until
    /// [`Store::take_over_creating`].
    pub async fn mark_revoking(&self, id: &str, next_action_at: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE leases SET state = 'revoking', next_action_at = ? WHERE id = ? AND state IN ('active', 'revoking')",
        )
        .bind(next_action_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn mark_revoked(&self, id: &str, now: i64, note: Option<&str>) -> Result<()> {
        sqlx::query(
            "UPDATE leases SET state = 'revoked', revoked_at = ?, last_error = COALESCE(?, last_error)
             WHERE id = ? AND state != 'revoked'",
        )
        .bind(now)
        .bind(note)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed revocation (or rollback) attempt and when to try again.
    pub async fn record_revocation_failure(
        &self,
        id: &str,
        error: &str,
        retry_at: i64,
    ) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "UPDATE leases SET state = 'revoking', attempts = attempts + 1, last_error = ?, next_action_at = ?
             WHERE id = ? AND state IN ('creating', 'active', 'revoking') RETURNING attempts",
        )
        .bind(error)
        .bind(retry_at)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .unwrap_or(0))
    }

    /// Leases whose next action is due at `now`, oldest first, at most `limit`.
    pub async fn due_leases(&self, now: i64, limit: i64) -> Result<Vec<LeaseRow>> {
        Ok(sqlx::query_as(
            "SELECT * FROM leases WHERE state IN ('creating', 'active', 'revoking') AND next_action_at <= ?
             ORDER BY next_action_at LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// When the next lease falls due strictly after `after`, if any. The reaper asks this after
    /// handing out everything due at `after`, so leases it is still revoking do not count.
    pub async fn next_due_after(&self, after: i64) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(next_action_at) FROM leases
             WHERE state IN ('creating', 'active', 'revoking') AND next_action_at > ?",
        )
        .bind(after)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Deletes revocation tombstones older than `before`, at most `limit` at a time.
    pub async fn tidy_revoked(&self, before: i64, limit: i64) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM leases WHERE id IN (SELECT id FROM leases WHERE state = 'revoked' AND revoked_at < ? LIMIT ?)",
        )
        .bind(before)
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn count_leases(&self, state: LeaseState) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM leases WHERE state = ?")
                .bind(state)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Live (creating, active or revoking) leases on `connection`.
    pub async fn count_live_leases_on_connection(&self, connection: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM leases
             WHERE connection_name = ? AND state IN ('creating', 'active', 'revoking')",
        )
        .bind(connection)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Static roles whose user lives on `connection`.
    pub async fn static_roles_on_connection(&self, connection: &str) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT name FROM static_roles WHERE db_name = ? ORDER BY name")
                .bind(connection)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    // ---- tokens -----------------------------------------------------------------------------

    pub async fn count_tokens(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
            .fetch_one(&self.pool)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_ranges_cover_whole_path_segments_only() {
        let app = IdRange::under("database/creds/app");
        assert_eq!(app, IdRange::under("database/creds/app/"));
        for inside in [
            "database/creds/app/x",
            "database/creds/app/x/y",
            "database/creds/app/",
        ] {
            assert!(app.contains(inside), "{inside}");
        }
        for outside in [
            "database/creds/app",
            "database/creds/app2/x",
            "database/creds/app-admin/x",
            "database/creds/app.x/y",
            "database/creds/apple/x",
            "database/creds/ap/x",
        ] {
            assert!(!app.contains(outside), "{outside}");
        }
        let all = IdRange::under("");
        assert!(all.contains("database/creds/app/x") && all.contains("a"));
    }

    async fn store_with_leases(dir: &Path, ids: &[&str]) -> Store {
        let store = Store::open(&dir.join("lessor.db").display().to_string())
            .await
            .unwrap();
        store
            .upsert_connection(&ConnectionRow {
                name: "db".into(),
                plugin_name: "postgresql-database-plugin".into(),
                connection_url_sealed: String::new(),
                username: String::new(),
                password_sealed: String::new(),
                allowed_roles: "[]".into(),
                verify_connection: false,
                max_open_connections: 1,
                root_rotation_statements: "[]".into(),
                tls_ca_sealed: None,
                tls_certificate_sealed: None,
                private_key_sealed: None,
                tls_certificate_key_sealed: None,
                tls_server_name: None,
                tls_skip_verify: false,
                password_policy: None,
                created_at: 0,
                updated_at: 0,
            })
            .await
            .unwrap();
        for id in ids {
            store
                .insert_lease(&LeaseRow {
                    id: (*id).to_owned(),
                    role_name: "r".into(),
                    connection_name: "db".into(),
                    username: "u".into(),
                    revocation_statements: "[]".into(),
                    rollback_statements: "[]".into(),
                    renew_statements: "[]".into(),
                    issued_at: 0,
                    last_renewed_at: None,
                    expires_at: 1,
                    max_expires_at: 1,
                    state: LeaseState::Active,
                    next_action_at: 1,
                    attempts: 0,
                    last_error: None,
                    revoked_at: None,
                    owner: "o".into(),
                    revoke_requested: false,
                    token_accessor: None,
                })
                .await
                .unwrap();
        }
        store
    }

    #[tokio::test]
    async fn prefix_queries_match_path_segments_through_the_primary_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_leases(
            dir.path(),
            &[
                "database/creds/app/a",
                "database/creds/app/b",
                "database/creds/app/x/y",
                "database/creds/app2/c",
                "database/creds/app-admin/d",
                "database/creds/apple",
            ],
        )
        .await;
        for prefix in ["database/creds/app", "database/creds/app/"] {
            let ids = store
                .live_lease_ids_in(&IdRange::under(prefix), "", 100)
                .await
                .unwrap();
            assert_eq!(
                ids,
                [
                    "database/creds/app/a",
                    "database/creds/app/b",
                    "database/creds/app/x/y"
                ],
                "{prefix}"
            );
        }
        let page = store
            .live_lease_ids_in(
                &IdRange::under("database/creds/app"),
                "database/creds/app/a",
                1,
            )
            .await
            .unwrap();
        assert_eq!(
            page,
            ["database/creds/app/b"],
            "pages resume after the cursor"
        );

        // The plan's `detail` column names the index and the constraints it uses.
        use sqlx::Row;
        let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {LIVE_IDS_IN_RANGE}"))
            .bind("a/")
            .bind("a0")
            .bind("")
            .bind(10)
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect();
        let plan = plan.join("; ");
        assert!(
            plan.contains("sqlite_autoindex_leases_1") && plan.contains("id>? AND id<?"),
            "not a primary-key range scan: {plan}"
        );
        eprintln!("plan: {plan}");
        store.pool().close().await;
    }

    #[tokio::test]
    async fn a_connection_in_use_is_not_deleted_and_a_lease_needs_its_connection() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_leases(dir.path(), &["database/creds/r/a"]).await;
        assert_eq!(
            store.delete_connection("db").await.unwrap(),
            ConnectionDeletion::InUse {
                live_leases: 1,
                static_roles: vec![]
            }
        );
        store
            .mark_revoked("database/creds/r/a", 2, None)
            .await
            .unwrap();
        assert_eq!(
            store.delete_connection("db").await.unwrap(),
            ConnectionDeletion::Deleted
        );
        assert_eq!(
            store.delete_connection("db").await.unwrap(),
            ConnectionDeletion::NotFound
        );
        let mut lease = store
            .get_lease("database/creds/r/a")
            .await
            .unwrap()
            .unwrap();
        lease.id = "database/creds/r/b".into();
        assert!(matches!(
            store.insert_lease(&lease).await,
            Err(Error::NotFound {
                kind: "connection",
                ..
            })
        ));
        store.pool().close().await;
    }

    /// Migration 0004 rebuilds the leases table: a store written before it keeps its leases.
    #[tokio::test]
    async fn leases_survive_the_lifecycle_migration() {
        let dir = tempfile::tempdir().unwrap();
        let earlier = dir.path().join("earlier-migrations");
        std::fs::create_dir(&earlier).unwrap();
        let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        for entry in std::fs::read_dir(&all).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name.as_str() < "0004" {
                std::fs::copy(&path, earlier.join(&name)).unwrap();
            }
        }
        let file = dir.path().join("lessor.db");
        let options = SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        sqlx::migrate::Migrator::new(earlier.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO leases (id, role_name, connection_name, username, issued_at, expires_at,
                 max_expires_at, state, next_action_at, owner)
             VALUES ('database/creds/r/old', 'r', 'db', 'u', 1, 2, 3, 'revoking', 4, 'o')",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let store = Store::open(&file.display().to_string()).await.unwrap();
        let lease = store
            .get_lease("database/creds/r/old")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(lease.state, LeaseState::Revoking);
        assert_eq!((lease.expires_at, lease.next_action_at), (2, 4));
        assert!(!lease.revoke_requested && lease.token_accessor.is_none());
        assert_eq!(store.due_leases(10, 10).await.unwrap().len(), 1);
        store.pool().close().await;
    }
}
