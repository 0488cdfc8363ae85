//! Rows and queries of static roles, their rotation history, and the admin (root) rotation state of
//! connections. Passwords arrive here already sealed.
//!
//! Every step of a rotation that changes credentials is one conditional `UPDATE` whose `WHERE`
//! names the pending value it expects, so a rotation that lost a race (another replica, a delete)
//! changes nothing instead of overwriting someone else's password.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::codec::{self, encode_list};
use super::{from_millis, to_millis, Backend, Claim, Store};
use crate::error::{Error, Result};

/// How many rotations of each static role the history keeps.
pub const ROTATION_HISTORY_LEN: i64 = 20;

/// A static role with its credential state. Password fields are sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRole {
    pub name: String,
    pub db_name: String,
    pub username: String,
    /// The second user of the alternating strategy.
    pub alternate_username: Option<String>,
    /// Rotate this long after the last rotation (whole seconds); `None` with a cron schedule.
    pub rotation_period: Option<Duration>,
    /// A cron pattern; `None` with a period.
    pub rotation_schedule: Option<String>,
    /// How long after a schedule occurrence a rotation may still run (whole seconds).
    pub rotation_window: Option<Duration>,
    /// Statement templates; empty means the engine's default.
    pub rotation_statements: Vec<String>,
    pub skip_import_rotation: bool,
    /// The credentials handed to clients; `None` until Lessor knows a password.
    pub current_username: Option<String>,
    pub current_password_sealed: Option<String>,
    pub previous_username: Option<String>,
    pub previous_password_sealed: Option<String>,
    /// A rotation in flight, stored before the database is changed.
    pub pending_username: Option<String>,
    pub pending_password_sealed: Option<String>,
    pub pending_since: Option<DateTime<Utc>>,
    pub last_rotated_at: Option<DateTime<Utc>>,
    /// The schedule occurrence being served; the rotation window counts from here.
    pub scheduled_at: DateTime<Utc>,
    /// When the rotator next looks at the role (schedule, retry, or a replica's claim). Kept to
    /// the millisecond, so it compares equal to the claim's `until` that set it.
    pub next_rotation_at: DateTime<Utc>,
    /// Failed attempts since the last successful rotation.
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One line of a static role's rotation history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationRecord {
    pub at: DateTime<Utc>,
    pub username: String,
    /// `import`, `schedule`, `manual` or `recovery`.
    pub cause: String,
    /// `rotated`, `failed` or `skipped`.
    pub outcome: String,
    pub error: Option<String>,
}

/// The fields an operator sets on a static role (not its credential state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoleConfig {
    pub name: String,
    pub db_name: String,
    pub username: String,
    pub alternate_username: Option<String>,
    /// Stored in whole seconds.
    pub rotation_period: Option<Duration>,
    pub rotation_schedule: Option<String>,
    /// Stored in whole seconds.
    pub rotation_window: Option<Duration>,
    pub rotation_statements: Vec<String>,
    pub skip_import_rotation: bool,
    pub scheduled_at: DateTime<Utc>,
    pub next_rotation_at: DateTime<Utc>,
}

/// What a successful rotation writes when it promotes its pending password.
#[derive(Debug, Clone, Copy)]
pub struct Promotion<'a> {
    /// The sealed pending value this rotation wrote; the promotion happens only if it is still there.
    pub pending_sealed: &'a str,
    pub now: DateTime<Utc>,
    pub scheduled_at: DateTime<Utc>,
    pub next_rotation_at: DateTime<Utc>,
}

/// A `static_roles` row as stored (the columns [`StaticRole`] has).
#[derive(FromRow)]
struct StaticRoleRow {
    name: String,
    db_name: String,
    username: String,
    alternate_username: Option<String>,
    rotation_period_secs: Option<i64>,
    rotation_schedule: Option<String>,
    rotation_window_secs: Option<i64>,
    /// JSON array.
    rotation_statements: String,
    skip_import_rotation: bool,
    current_username: Option<String>,
    current_password_sealed: Option<String>,
    previous_username: Option<String>,
    previous_password_sealed: Option<String>,
    pending_username: Option<String>,
    pending_password_sealed: Option<String>,
    pending_since: Option<i64>,
    last_rotated_at: Option<i64>,
    scheduled_at: i64,
    next_rotation_at: i64,
    attempts: i64,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<StaticRoleRow> for StaticRole {
    type Error = Error;

    fn try_from(row: StaticRoleRow) -> Result<Self> {
        Ok(Self {
            rotation_period: row.rotation_period_secs.map(codec::from_secs),
            rotation_window: row.rotation_window_secs.map(codec::from_secs),
            rotation_statements: codec::decode(
                "static_roles",
                "rotation_statements",
                &row.rotation_statements,
            )?,
            pending_since: row.pending_since.map(from_millis),
            last_rotated_at: row.last_rotated_at.map(from_millis),
            scheduled_at: from_millis(row.scheduled_at),
            next_rotation_at: from_millis(row.next_rotation_at),
            created_at: from_millis(row.created_at),
            updated_at: from_millis(row.updated_at),
            name: row.name,
            db_name: row.db_name,
            username: row.username,
            alternate_username: row.alternate_username,
            rotation_schedule: row.rotation_schedule,
            skip_import_rotation: row.skip_import_rotation,
            current_username: row.current_username,
            current_password_sealed: row.current_password_sealed,
            previous_username: row.previous_username,
            previous_password_sealed: row.previous_password_sealed,
            pending_username: row.pending_username,
            pending_password_sealed: row.pending_password_sealed,
            attempts: row.attempts,
            last_error: row.last_error,
        })
    }
}

/// A `static_role_rotations` row as stored.
#[derive(FromRow)]
struct RotationRecordRow {
    at: i64,
    username: String,
    cause: String,
    outcome: String,
    error: Option<String>,
}

impl From<RotationRecordRow> for RotationRecord {
    fn from(row: RotationRecordRow) -> Self {
        Self {
            at: from_millis(row.at),
            username: row.username,
            cause: row.cause,
            outcome: row.outcome,
            error: row.error,
        }
    }
}

/// SQL that holds for a static role whose pending rotation was started by a replica that is now
/// dead (or by a version that did not record who), so another may finish it.
fn orphaned_rotation_sql(claim: &Claim<'_>) -> String {
    format!(
        "(pending_password_sealed IS NOT NULL AND (claimed_by IS NULL OR (claimed_by <> $1 AND {dead})))",
        dead = claim.dead_sql("static_roles")
    )
}

/// Rotation: static roles with their two-phase credential state, claims and history, and the
/// pending admin (root) password of connections.
// Only ever called on the concrete `Store`, so each future's `Send`-ness is known at the call.
#[allow(async_fn_in_trait)]
pub trait RotationStore {
    // ---- static roles -----------------------------------------------------------------------

    /// Creates a static role, or updates its configuration keeping its credential state.
    async fn upsert_static_role(&self, role: &StaticRoleConfig, now: DateTime<Utc>) -> Result<()>;
    async fn get_static_role(&self, name: &str) -> Result<Option<StaticRole>>;
    async fn list_static_roles(&self) -> Result<Vec<String>>;
    /// Deletes a static role and its history; the database user is left as it is.
    async fn delete_static_role(&self, name: &str) -> Result<bool>;
    /// Sets the current credentials directly: the password an operator gave with
    /// `skip_import_rotation`, after Lessor checked that it logs in.
    async fn set_static_current(
        &self,
        name: &str,
        username: &str,
        sealed: &str,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Phase one of a rotation: the new password, sealed, stored durably before the database changes.
    /// Refused (false) when another rotation's pending value is already there.
    ///
    /// The role also falls due at `resolve_by` at the latest, in the same write: whatever stops
    /// the rotation before it promotes or records a failure (a crash, a lost task), the rotator
    /// finds the pending password then and resolves it, instead of at the next period. Promotion
    /// and a recorded failure set the next time themselves.
    async fn set_static_pending(
        &self,
        name: &str,
        username: &str,
        sealed: &str,
        now: DateTime<Utc>,
        resolve_by: DateTime<Utc>,
        replica: &str,
    ) -> Result<bool>;
    /// Last phase: current becomes previous, pending becomes current, the schedule moves on.
    async fn promote_static_pending(&self, name: &str, promotion: Promotion<'_>) -> Result<bool>;
    /// Drops a pending password once it is proven that the database never took it.
    async fn discard_static_pending(&self, name: &str, pending_sealed: &str) -> Result<bool>;
    /// Records a failed rotation and when to retry; returns the attempt count.
    async fn record_static_failure(
        &self,
        name: &str,
        error: &str,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<i64>;
    /// Moves a role to a later schedule occurrence without rotating (its window passed).
    async fn reschedule_static_role(
        &self,
        name: &str,
        scheduled_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()>;
    /// Claims the rotation of `name` until `claim.until` (its next look moves there): when it is
    /// due, or when a rotation is pending and whoever started it is dead. False when another
    /// replica has it.
    async fn claim_static_role(&self, name: &str, claim: &Claim<'_>) -> Result<bool>;
    /// Names of static roles due at `claim.now`, or with a rotation whose starter is dead
    /// (see [`RotationStore::claim_static_role`]), earliest first.
    async fn due_static_roles(&self, claim: &Claim<'_>, limit: i64) -> Result<Vec<String>>;
    /// When the next static role falls due, if any.
    async fn next_static_rotation_at(&self) -> Result<Option<DateTime<Utc>>>;
    /// Static roles with a rotation in flight that no live replica is running (resolved when the
    /// rotator starts): its starter is dead, or it is this replica's own, or its claim lapsed.
    async fn static_roles_with_pending(&self, claim: &Claim<'_>) -> Result<Vec<String>>;
    /// Appends to a role's history, keeping the last [`ROTATION_HISTORY_LEN`] entries.
    async fn insert_rotation_record(&self, name: &str, record: &RotationRecord) -> Result<()>;
    /// A role and its rotation history (newest first), read from one snapshot of the store: a
    /// rotation that lands between the two reads cannot show its history entry beside the
    /// schedule it replaced.
    async fn static_role_with_history(
        &self,
        name: &str,
    ) -> Result<Option<(StaticRole, Vec<RotationRecord>)>>;

    // ---- admin (root) rotation --------------------------------------------------------------

    /// The sealed pending admin password of a connection, if a root rotation is in flight.
    async fn root_pending(&self, connection: &str) -> Result<Option<String>>;
    /// Phase one of a root rotation; refused (false) when one is already in flight.
    async fn set_root_pending(
        &self,
        connection: &str,
        sealed: &str,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Makes the pending admin password the connection's password. The pending value is sealed under
    /// the password's own context, so it moves as it is.
    async fn promote_root_pending(
        &self,
        connection: &str,
        pending_sealed: &str,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Drops a pending admin password once it is proven that the database never took it.
    async fn discard_root_pending(&self, connection: &str, pending_sealed: &str) -> Result<bool>;
    /// Connections with a root rotation in flight.
    async fn connections_with_root_pending(&self) -> Result<Vec<String>>;
    /// Connections whose root rotation has been pending since before `cutoff`: interrupted ones
    /// (a failed settlement, a lost task) that the rotator resolves.
    async fn connections_with_root_pending_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<String>>;
}

impl RotationStore for Store {
    async fn upsert_static_role(&self, role: &StaticRoleConfig, now: DateTime<Utc>) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO static_roles (name, db_name, username, alternate_username, rotation_period_secs,
                 rotation_schedule, rotation_window_secs, rotation_statements, skip_import_rotation,
                 scheduled_at, next_rotation_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
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
        .bind(role.rotation_period.map(codec::to_secs))
        .bind(&role.rotation_schedule)
        .bind(role.rotation_window.map(codec::to_secs))
        .bind(encode_list(&role.rotation_statements))
        .bind(role.skip_import_rotation)
        .bind(to_millis(role.scheduled_at))
        .bind(to_millis(role.next_rotation_at))
        .bind(to_millis(now))
        .bind(to_millis(now))
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(())
    }

    async fn get_static_role(&self, name: &str) -> Result<Option<StaticRole>> {
        let row: Option<StaticRoleRow> = with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM static_roles WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await?);
        row.map(StaticRole::try_from).transpose()
    }

    async fn list_static_roles(&self) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT name FROM static_roles ORDER BY name"
        )
        .fetch_all(pool)
        .await?))
    }

    async fn delete_static_role(&self, name: &str) -> Result<bool> {
        let done = with_pool!(self, |pool| sqlx::query(
            "DELETE FROM static_roles WHERE name = $1"
        )
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done > 0)
    }

    async fn set_static_current(
        &self,
        name: &str,
        username: &str,
        sealed: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = with_pool!(self, |pool| {
            sqlx::query(
            "UPDATE static_roles SET current_username = $1, current_password_sealed = $2, updated_at = $3 WHERE name = $4",
        )
        .bind(username)
        .bind(sealed)
        .bind(to_millis(now))
        .bind(name)
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(done > 0)
    }

    async fn set_static_pending(
        &self,
        name: &str,
        username: &str,
        sealed: &str,
        now: DateTime<Utc>,
        resolve_by: DateTime<Utc>,
        replica: &str,
    ) -> Result<bool> {
        let done = with_pool!(self, |pool| {
            sqlx::query(
            "UPDATE static_roles SET pending_username = $1, pending_password_sealed = $2, pending_since = $3, updated_at = $4,
                 next_rotation_at = CASE WHEN next_rotation_at < $5 THEN next_rotation_at ELSE $5 END,
                 claimed_by = $7
             WHERE name = $6 AND pending_password_sealed IS NULL",
        )
        .bind(username)
        .bind(sealed)
        .bind(to_millis(now))
        .bind(to_millis(now))
        .bind(to_millis(resolve_by))
        .bind(name)
        .bind(replica)
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(done > 0)
    }

    async fn promote_static_pending(&self, name: &str, promotion: Promotion<'_>) -> Result<bool> {
        let done = with_pool!(self, |pool| {
            sqlx::query(
            "UPDATE static_roles SET previous_username = current_username, previous_password_sealed = current_password_sealed,
                 current_username = pending_username, current_password_sealed = pending_password_sealed,
                 pending_username = NULL, pending_password_sealed = NULL, pending_since = NULL,
                 last_rotated_at = $1, scheduled_at = $2, next_rotation_at = $3, attempts = 0, last_error = NULL, updated_at = $4
             WHERE name = $5 AND pending_password_sealed = $6",
        )
        .bind(to_millis(promotion.now))
        .bind(to_millis(promotion.scheduled_at))
        .bind(to_millis(promotion.next_rotation_at))
        .bind(to_millis(promotion.now))
        .bind(name)
        .bind(promotion.pending_sealed)
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(done > 0)
    }

    async fn discard_static_pending(&self, name: &str, pending_sealed: &str) -> Result<bool> {
        let done = with_pool!(self, |pool| {
            sqlx::query(
            "UPDATE static_roles SET pending_username = NULL, pending_password_sealed = NULL, pending_since = NULL
             WHERE name = $1 AND pending_password_sealed = $2",
        )
        .bind(name)
        .bind(pending_sealed)
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(done > 0)
    }

    async fn record_static_failure(
        &self,
        name: &str,
        error: &str,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<i64> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "UPDATE static_roles SET attempts = attempts + 1, last_error = $1, next_rotation_at = $2, updated_at = $3
             WHERE name = $4 RETURNING attempts",
        )
        .bind(error)
        .bind(to_millis(retry_at))
        .bind(to_millis(now))
        .bind(name)
        .fetch_optional(pool)
        .await?)
        .unwrap_or(0))
    }

    async fn reschedule_static_role(
        &self,
        name: &str,
        scheduled_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
            "UPDATE static_roles SET scheduled_at = $1, next_rotation_at = $2, attempts = 0, updated_at = $3 WHERE name = $4",
        )
        .bind(to_millis(scheduled_at))
        .bind(to_millis(scheduled_at))
        .bind(to_millis(now))
        .bind(name)
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(())
    }

    async fn claim_static_role(&self, name: &str, claim: &Claim<'_>) -> Result<bool> {
        let sql = format!(
            "UPDATE static_roles SET next_rotation_at = $3, claimed_by = $1
             WHERE name = $5 AND (next_rotation_at <= $2 OR {orphaned})",
            orphaned = orphaned_rotation_sql(claim)
        );
        let done = with_pool!(self, |pool| bind_claim!(sqlx::query(&sql), claim)
            .bind(name)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(done > 0)
    }

    async fn due_static_roles(&self, claim: &Claim<'_>, limit: i64) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT name FROM static_roles
             WHERE next_rotation_at <= $2 OR ({orphaned} AND $3 = $3)
             ORDER BY next_rotation_at LIMIT $5",
            orphaned = orphaned_rotation_sql(claim)
        );
        Ok(with_pool!(self, |pool| bind_claim!(
            sqlx::query_scalar(&sql),
            claim
        )
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }

    async fn next_static_rotation_at(&self) -> Result<Option<DateTime<Utc>>> {
        let at: Option<i64> = with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT MIN(next_rotation_at) FROM static_roles"
        )
        .fetch_one(pool)
        .await?);
        Ok(at.map(from_millis))
    }

    async fn static_roles_with_pending(&self, claim: &Claim<'_>) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT name FROM static_roles
             WHERE pending_password_sealed IS NOT NULL
                 AND (claimed_by = $1 OR next_rotation_at <= $2 OR {orphaned}) AND $3 = $3
             ORDER BY name",
            orphaned = orphaned_rotation_sql(claim)
        );
        Ok(with_pool!(self, |pool| bind_claim!(
            sqlx::query_scalar(&sql),
            claim
        )
        .fetch_all(pool)
        .await?))
    }

    async fn insert_rotation_record(&self, name: &str, record: &RotationRecord) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(
            "INSERT INTO static_role_rotations (role_name, at, username, cause, outcome, error)
             SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM static_roles WHERE name = $7)",
        )
        .bind(name)
        .bind(to_millis(record.at))
        .bind(&record.username)
        .bind(&record.cause)
        .bind(&record.outcome)
        .bind(&record.error)
        .bind(name)
        .execute(&mut *tx)
        .await?;
            sqlx::query(
            "DELETE FROM static_role_rotations WHERE role_name = $1 AND id NOT IN
                 (SELECT id FROM static_role_rotations WHERE role_name = $1 ORDER BY id DESC LIMIT $2)",
        )
        .bind(name)
        .bind(ROTATION_HISTORY_LEN)
        .execute(&mut *tx)
        .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    async fn static_role_with_history(
        &self,
        name: &str,
    ) -> Result<Option<(StaticRole, Vec<RotationRecord>)>> {
        const ROLE: &str = "SELECT * FROM static_roles WHERE name = $1";
        const HISTORY: &str =
            "SELECT at, username, cause, outcome, error FROM static_role_rotations
             WHERE role_name = $1 ORDER BY id DESC LIMIT $2";
        // SQLite's deferred transaction reads from one snapshot from its first read on;
        // PostgreSQL's default (read committed) takes one per statement, so it is asked for a
        // repeatable read.
        let repeatable_read = matches!(self.backend, Backend::Postgres(_));
        let (row, history): (Option<StaticRoleRow>, Vec<RotationRecordRow>) =
            with_pool!(self, |pool| {
                let mut tx = pool.begin().await?;
                if repeatable_read {
                    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                        .execute(&mut *tx)
                        .await?;
                }
                let row = sqlx::query_as(ROLE)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
                let history = sqlx::query_as(HISTORY)
                    .bind(name)
                    .bind(ROTATION_HISTORY_LEN)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                (row, history)
            });
        let Some(row) = row else { return Ok(None) };
        Ok(Some((
            StaticRole::try_from(row)?,
            history.into_iter().map(RotationRecord::from).collect(),
        )))
    }

    // ---- admin (root) rotation ------------------------------------------------------------------

    async fn root_pending(&self, connection: &str) -> Result<Option<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT root_pending_password_sealed FROM connections WHERE name = $1",
        )
        .bind(connection)
        .fetch_optional(pool)
        .await?)
        .flatten())
    }

    async fn set_root_pending(
        &self,
        connection: &str,
        sealed: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = with_pool!(self, |pool| sqlx::query(
            "UPDATE connections SET root_pending_password_sealed = $1, root_pending_since = $2
             WHERE name = $3 AND root_pending_password_sealed IS NULL",
        )
        .bind(sealed)
        .bind(to_millis(now))
        .bind(connection)
        .execute(pool)
        .await?
        .rows_affected());
        // The cached row has no pending column, but a connection row that changed is forgotten
        // whatever changed in it, so no later column can be missed.
        self.cache.connections.forget(connection);
        Ok(done > 0)
    }

    async fn promote_root_pending(
        &self,
        connection: &str,
        pending_sealed: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = with_pool!(self, |pool| {
            sqlx::query(
            "UPDATE connections SET password_sealed = root_pending_password_sealed, root_pending_password_sealed = NULL,
                 root_pending_since = NULL, root_rotated_at = $1, updated_at = $2
             WHERE name = $3 AND root_pending_password_sealed = $4",
        )
        .bind(to_millis(now))
        .bind(to_millis(now))
        .bind(connection)
        .bind(pending_sealed)
        .execute(pool)
        .await?.rows_affected()
        });
        self.cache.connections.forget(connection);
        Ok(done > 0)
    }

    async fn discard_root_pending(&self, connection: &str, pending_sealed: &str) -> Result<bool> {
        let done = with_pool!(self, |pool| {
            sqlx::query(
            "UPDATE connections SET root_pending_password_sealed = NULL, root_pending_since = NULL
             WHERE name = $1 AND root_pending_password_sealed = $2",
        )
        .bind(connection)
        .bind(pending_sealed)
        .execute(pool)
        .await?.rows_affected()
        });
        self.cache.connections.forget(connection);
        Ok(done > 0)
    }

    async fn connections_with_root_pending(&self) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(
            "SELECT name FROM connections WHERE root_pending_password_sealed IS NOT NULL ORDER BY name",
        )
        .fetch_all(pool)
        .await?
        }))
    }

    async fn connections_with_root_pending_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(
            "SELECT name FROM connections
             WHERE root_pending_password_sealed IS NOT NULL AND root_pending_since < $1 ORDER BY name",
        )
        .bind(to_millis(cutoff))
        .fetch_all(pool)
        .await?
        }))
    }
}
