//! Rows and queries of static roles, their rotation history, and the admin (root) rotation state of
//! connections. Passwords arrive here already sealed.
//!
//! Every step of a rotation that changes credentials is one conditional `UPDATE` whose `WHERE`
//! names the pending value it expects, so a rotation that lost a race (another replica, a delete)
//! changes nothing instead of overwriting someone else's password.

use sqlx::FromRow;

use super::Store;
use crate::error::Result;

/// How many rotations of each static role the history keeps.
pub const ROTATION_HISTORY_LEN: i64 = 20;

/// A static role with its credential state. Password columns are sealed.
#[derive(Debug, Clone, FromRow)]
pub struct StaticRoleRow {
    pub name: String,
    pub db_name: String,
    pub username: String,
    /// The second user of the alternating strategy.
    pub alternate_username: Option<String>,
    pub rotation_period_secs: Option<i64>,
    pub rotation_schedule: Option<String>,
    pub rotation_window_secs: Option<i64>,
    /// JSON array of statement templates; empty means the engine's default.
    pub rotation_statements: String,
    pub skip_import_rotation: bool,
    /// The credentials handed to clients; `None` until Lessor knows a password.
    pub current_username: Option<String>,
    pub current_password_sealed: Option<String>,
    pub previous_username: Option<String>,
    pub previous_password_sealed: Option<String>,
    /// A rotation in flight, stored before the database is changed.
    pub pending_username: Option<String>,
    pub pending_password_sealed: Option<String>,
    pub pending_since: Option<i64>,
    pub last_rotated_at: Option<i64>,
    /// The schedule occurrence being served; the rotation window counts from here.
    pub scheduled_at: i64,
    /// When the rotator next looks at the role (schedule, retry, or a replica's claim).
    pub next_rotation_at: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One line of a static role's rotation history.
#[derive(Debug, Clone, FromRow)]
pub struct RotationRecordRow {
    pub at: i64,
    pub username: String,
    /// `import`, `schedule`, `manual` or `recovery`.
    pub cause: String,
    /// `rotated`, `failed` or `skipped`.
    pub outcome: String,
    pub error: Option<String>,
}

/// The fields an operator sets on a static role (not its credential state).
#[derive(Debug, Clone)]
pub struct StaticRoleConfig {
    pub name: String,
    pub db_name: String,
    pub username: String,
    pub alternate_username: Option<String>,
    pub rotation_period_secs: Option<i64>,
    pub rotation_schedule: Option<String>,
    pub rotation_window_secs: Option<i64>,
    pub rotation_statements: String,
    pub skip_import_rotation: bool,
    pub scheduled_at: i64,
    pub next_rotation_at: i64,
}

/// What a successful rotation writes when it promotes its pending password.
#[derive(Debug, Clone, Copy)]
pub struct Promotion<'a> {
    /// The sealed pending value this rotation wrote; the promotion happens only if it is still there.
    pub pending_sealed: &'a str,
    pub now: i64,
    pub scheduled_at: i64,
    pub next_rotation_at: i64,
}

impl Store {
    /// Creates a static role, or updates its configuration keeping its credential state.
    pub async fn upsert_static_role(&self, role: &StaticRoleConfig, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO static_roles (name, db_name, username, alternate_username, rotation_period_secs,
                 rotation_schedule, rotation_window_secs, rotation_statements, skip_import_rotation,
                 scheduled_at, next_rotation_at, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET rotation_period_secs = excluded.rotation_period_secs,
                 rotation_schedule = excluded.rotation_schedule, rotation_window_secs = excluded.rotation_window_secs,
                 rotation_statements = excluded.rotation_statements, skip_import_rotation = excluded.skip_import_rotation,
                 scheduled_at = excluded.scheduled_at, next_rotation_at = excluded.next_rotation_at,
                 updated_at = excluded.updated_at",
        )
        .bind(&role.name)
        .bind(&role.db_name)
        .bind(&role.username)
        .bind(&role.alternate_username)
        .bind(role.rotation_period_secs)
        .bind(&role.rotation_schedule)
        .bind(role.rotation_window_secs)
        .bind(&role.rotation_statements)
        .bind(role.skip_import_rotation)
        .bind(role.scheduled_at)
        .bind(role.next_rotation_at)
        .bind(now)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn get_static_role(&self, name: &str) -> Result<Option<StaticRoleRow>> {
        Ok(sqlx::query_as("SELECT * FROM static_roles WHERE name = ?")
            .bind(name)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn list_static_roles(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT name FROM static_roles ORDER BY name")
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Deletes a static role and its history; the database user is left as it is.
    pub async fn delete_static_role(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM static_roles WHERE name = ?")
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Sets the current credentials directly: the password an operator gave with
    /// `skip_import_rotation`, after Lessor checked that it logs in.
    pub async fn set_static_current(
        &self,
        name: &str,
        username: &str,
        sealed: &str,
        now: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE static_roles SET current_username = ?, current_password_sealed = ?, updated_at = ? WHERE name = ?",
        )
        .bind(username)
        .bind(sealed)
        .bind(now)
        .bind(name)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Phase one of a rotation: the new password, sealed, stored durably before the database changes.
    /// Refused (false) when another rotation's pending value is already there.
    ///
    /// The role also falls due at `resolve_by` at the latest, in the same write: whatever stops
    /// the rotation before it promotes or records a failure (a crash, a lost task), the rotator
    /// finds the pending password then and resolves it, instead of at the next period. Promotion
    /// and a recorded failure set the next time themselves.
    pub async fn set_static_pending(
        &self,
        name: &str,
        username: &str,
        sealed: &str,
        now: i64,
        resolve_by: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE static_roles SET pending_username = ?, pending_password_sealed = ?, pending_since = ?, updated_at = ?,
                 next_rotation_at = MIN(next_rotation_at, ?)
             WHERE name = ? AND pending_password_sealed IS NULL",
        )
        .bind(username)
        .bind(sealed)
        .bind(now)
        .bind(now)
        .bind(resolve_by)
        .bind(name)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Last phase: current becomes previous, pending becomes current, the schedule moves on.
    pub async fn promote_static_pending(
        &self,
        name: &str,
        promotion: Promotion<'_>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE static_roles SET previous_username = current_username, previous_password_sealed = current_password_sealed,
                 current_username = pending_username, current_password_sealed = pending_password_sealed,
                 pending_username = NULL, pending_password_sealed = NULL, pending_since = NULL,
                 last_rotated_at = ?, scheduled_at = ?, next_rotation_at = ?, attempts = 0, last_error = NULL, updated_at = ?
             WHERE name = ? AND pending_password_sealed = ?",
        )
        .bind(promotion.now)
        .bind(promotion.scheduled_at)
        .bind(promotion.next_rotation_at)
        .bind(promotion.now)
        .bind(name)
        .bind(promotion.pending_sealed)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Drops a pending password once it is proven that the database never took it.
    pub async fn discard_static_pending(&self, name: &str, pending_sealed: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE static_roles SET pending_username = NULL, pending_password_sealed = NULL, pending_since = NULL
             WHERE name = ? AND pending_password_sealed = ?",
        )
        .bind(name)
        .bind(pending_sealed)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records a failed rotation and when to retry; returns the attempt count.
    pub async fn record_static_failure(
        &self,
        name: &str,
        error: &str,
        retry_at: i64,
        now: i64,
    ) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "UPDATE static_roles SET attempts = attempts + 1, last_error = ?, next_rotation_at = ?, updated_at = ?
             WHERE name = ? RETURNING attempts",
        )
        .bind(error)
        .bind(retry_at)
        .bind(now)
        .bind(name)
        .fetch_optional(self.pool())
        .await?
        .unwrap_or(0))
    }

    /// Moves a role to a later schedule occurrence without rotating (its window passed).
    pub async fn reschedule_static_role(
        &self,
        name: &str,
        scheduled_at: i64,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE static_roles SET scheduled_at = ?, next_rotation_at = ?, attempts = 0, updated_at = ? WHERE name = ?",
        )
        .bind(scheduled_at)
        .bind(scheduled_at)
        .bind(now)
        .bind(name)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Claims a due role for this process until `until`, so that neither a second replica nor the
    /// next pass of this rotator starts the same rotation. False when it is no longer due.
    pub async fn claim_static_role(&self, name: &str, now: i64, until: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE static_roles SET next_rotation_at = ? WHERE name = ? AND next_rotation_at <= ?",
        )
        .bind(until)
        .bind(name)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Names of static roles due at `now`, earliest first.
    pub async fn due_static_roles(&self, now: i64, limit: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT name FROM static_roles WHERE next_rotation_at <= ? ORDER BY next_rotation_at LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    /// When the next static role falls due, if any.
    pub async fn next_static_rotation_at(&self) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT MIN(next_rotation_at) FROM static_roles")
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// Static roles with a rotation in flight (resolved when the rotator starts).
    pub async fn static_roles_with_pending(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT name FROM static_roles WHERE pending_password_sealed IS NOT NULL ORDER BY name",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// Appends to a role's history, keeping the last [`ROTATION_HISTORY_LEN`] entries.
    pub async fn insert_rotation_record(
        &self,
        name: &str,
        record: &RotationRecordRow,
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO static_role_rotations (role_name, at, username, cause, outcome, error)
             SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM static_roles WHERE name = ?)",
        )
        .bind(name)
        .bind(record.at)
        .bind(&record.username)
        .bind(&record.cause)
        .bind(&record.outcome)
        .bind(&record.error)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM static_role_rotations WHERE role_name = ?1 AND id NOT IN
                 (SELECT id FROM static_role_rotations WHERE role_name = ?1 ORDER BY id DESC LIMIT ?2)",
        )
        .bind(name)
        .bind(ROTATION_HISTORY_LEN)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A role's rotation history, newest first.
    pub async fn rotation_history(&self, name: &str) -> Result<Vec<RotationRecordRow>> {
        Ok(sqlx::query_as(
            "SELECT at, username, cause, outcome, error FROM static_role_rotations WHERE role_name = ?
             ORDER BY id DESC LIMIT ?",
        )
        .bind(name)
        .bind(ROTATION_HISTORY_LEN)
        .fetch_all(self.pool())
        .await?)
    }

    // ---- admin (root) rotation ------------------------------------------------------------------

    /// The sealed pending admin password of a connection, if a root rotation is in flight.
    pub async fn root_pending(&self, connection: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT root_pending_password_sealed FROM connections WHERE name = ?",
        )
        .bind(connection)
        .fetch_optional(self.pool())
        .await?
        .flatten())
    }

    /// Phase one of a root rotation; refused (false) when one is already in flight.
    pub async fn set_root_pending(&self, connection: &str, sealed: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE connections SET root_pending_password_sealed = ?, root_pending_since = ?
             WHERE name = ? AND root_pending_password_sealed IS NULL",
        )
        .bind(sealed)
        .bind(now)
        .bind(connection)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Makes the pending admin password the connection's password. The pending value is sealed under
    /// the password's own context, so it moves as it is.
    pub async fn promote_root_pending(
        &self,
        connection: &str,
        pending_sealed: &str,
        now: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE connections SET password_sealed = root_pending_password_sealed, root_pending_password_sealed = NULL,
                 root_pending_since = NULL, root_rotated_at = ?, updated_at = ?
             WHERE name = ? AND root_pending_password_sealed = ?",
        )
        .bind(now)
        .bind(now)
        .bind(connection)
        .bind(pending_sealed)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Drops a pending admin password once it is proven that the database never took it.
    pub async fn discard_root_pending(
        &self,
        connection: &str,
        pending_sealed: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE connections SET root_pending_password_sealed = NULL, root_pending_since = NULL
             WHERE name = ? AND root_pending_password_sealed = ?",
        )
        .bind(connection)
        .bind(pending_sealed)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Connections with a root rotation in flight.
    pub async fn connections_with_root_pending(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT name FROM connections WHERE root_pending_password_sealed IS NOT NULL ORDER BY name",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// Connections whose root rotation has been pending since before `cutoff`: interrupted ones
    /// (a failed settlement, a lost task) that the rotator resolves.
    pub async fn connections_with_root_pending_before(&self, cutoff: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT name FROM connections
             WHERE root_pending_password_sealed IS NOT NULL AND root_pending_since < ? ORDER BY name",
        )
        .bind(cutoff)
        .fetch_all(self.pool())
        .await?)
    }
}
