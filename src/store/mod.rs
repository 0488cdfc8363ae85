//! The lease store: connections, roles, leases and tokens in SQLite (a file in WAL mode), through
//! sqlx with the migrations under `migrations/sqlite` run at start-up.
//!
//! Everything here is plain rows; sealing happens above (callers pass sealed strings), and no query
//! loads all leases: the reaper asks for what is due, in batches, through the `leases_due` index.

mod identity;
mod models;
mod static_roles;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub use identity::{AlertRow, AuditDeviceRow, PolicyRow, TokenRow};
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
                 verify_connection, max_open_connections, root_rotation_statements, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET plugin_name = excluded.plugin_name,
                 connection_url_sealed = excluded.connection_url_sealed, username = excluded.username,
                 password_sealed = excluded.password_sealed, allowed_roles = excluded.allowed_roles,
                 verify_connection = excluded.verify_connection, max_open_connections = excluded.max_open_connections,
                 root_rotation_statements = excluded.root_rotation_statements, updated_at = excluded.updated_at",
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

    pub async fn delete_connection(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM connections WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
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

    /// Writes a new lease. This is the one durable write on the credential hot path, and it happens
    /// before the user exists on the target.
    pub async fn insert_lease(&self, lease: &LeaseRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO leases (id, role_name, connection_name, username, revocation_statements, rollback_statements,
                 renew_statements, issued_at, last_renewed_at, expires_at, max_expires_at, state, next_action_at,
                 attempts, last_error, revoked_at, owner)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_lease(&self, id: &str) -> Result<Option<LeaseRow>> {
        Ok(sqlx::query_as("SELECT * FROM leases WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Ids of leases not yet revoked whose id starts with `prefix`, in id order.
    pub async fn live_lease_ids_with_prefix(
        &self,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM leases WHERE state IN ('active', 'revoking') AND substr(id, 1, length(?1)) = ?1
             ORDER BY id LIMIT ?2",
        )
        .bind(prefix)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Leases not yet revoked whose id starts with `prefix`, in id order (for revoke-prefix).
    pub async fn live_leases_with_prefix(&self, prefix: &str, limit: i64) -> Result<Vec<LeaseRow>> {
        Ok(sqlx::query_as(
            "SELECT * FROM leases WHERE state IN ('active', 'revoking') AND substr(id, 1, length(?1)) = ?1
             ORDER BY id LIMIT ?2",
        )
        .bind(prefix)
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

    /// Marks a live lease as being revoked, due for the reaper at `next_action_at` should this
    /// process die before it finishes.
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
            "UPDATE leases SET state = 'revoked', revoked_at = ?, last_error = COALESCE(?, last_error) WHERE id = ?",
        )
        .bind(now)
        .bind(note)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed revocation attempt and when to try again.
    pub async fn record_revocation_failure(
        &self,
        id: &str,
        error: &str,
        retry_at: i64,
    ) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "UPDATE leases SET state = 'revoking', attempts = attempts + 1, last_error = ?, next_action_at = ?
             WHERE id = ? AND state IN ('active', 'revoking') RETURNING attempts",
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
            "SELECT * FROM leases WHERE state IN ('active', 'revoking') AND next_action_at <= ?
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
            "SELECT MIN(next_action_at) FROM leases WHERE state IN ('active', 'revoking') AND next_action_at > ?",
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

    // ---- tokens -----------------------------------------------------------------------------

    pub async fn count_tokens(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
            .fetch_one(&self.pool)
            .await?)
    }
}
