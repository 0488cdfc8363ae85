//! Store queries for several replicas on one store (migration 0011): the replica registry with its
//! heartbeats, and the claim every piece of background work is taken under.
//!
//! A claim is a row's `claimed_by` (a replica id) and an expiry; it is free to take when nobody
//! holds it, its holder is the one asking, it has lapsed, or its holder is dead (no heartbeat since
//! the stale limit). The expiry covers a holder that is alive but stuck; the heartbeat lets the
//! others take a killed replica's work at once instead of waiting for every claim to lapse.

use sqlx::FromRow;

use super::Store;
use crate::error::Result;

/// Who claims, when, until when, and which heartbeats still count as alive. Bound as `$1`..`$4`
/// by `bind_claim!`, so every claiming query reads them the same way.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The claiming replica's id.
    pub by: &'a str,
    /// Milliseconds since the epoch.
    pub now: i64,
    /// When the claim lapses if its holder neither finishes nor gives it up.
    pub until: i64,
    /// Replicas whose last heartbeat is at or before this are dead.
    pub stale_before: i64,
}

impl Claim<'_> {
    /// SQL that holds when the claim on a row of `table` is free for `$1` at `$2`: unclaimed,
    /// or already `$1`'s.
    pub(super) fn free_sql(&self, table: &str) -> String {
        format!(
            "({table}.claimed_by = $1 OR {unclaimed})",
            unclaimed = self.unclaimed_sql(table)
        )
    }

    /// SQL that holds when nobody holds the claim on a row of `table` at `$2`: never claimed,
    /// lapsed, or its holder is dead.
    pub(super) fn unclaimed_sql(&self, table: &str) -> String {
        format!(
            "({table}.claimed_by IS NULL OR {table}.claim_until <= $2 OR {dead})",
            dead = self.dead_sql(table)
        )
    }

    /// SQL that holds when the holder of a row of `table`'s claim is dead.
    pub(super) fn dead_sql(&self, table: &str) -> String {
        format!(
            "NOT EXISTS (SELECT 1 FROM replicas r WHERE r.id = {table}.claimed_by AND r.heartbeat_at > $4)"
        )
    }
}

/// One registered replica.
#[derive(Debug, Clone, FromRow)]
pub struct ReplicaRow {
    pub id: String,
    pub address: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
}

impl Store {
    /// Registers replica `id`. With `only`, every other registration is removed first: an
    /// embedded store has one process, so whatever registered before is a dead incarnation whose
    /// claims are free at once.
    pub async fn register_replica(
        &self,
        id: &str,
        address: &str,
        now: i64,
        only: bool,
    ) -> Result<()> {
        if only {
            with_pool!(self, |pool| sqlx::query(
                "DELETE FROM replicas WHERE id <> $1"
            )
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
        }
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO replicas (id, address, started_at, heartbeat_at) VALUES ($1, $2, $3, $3)
             ON CONFLICT (id) DO UPDATE SET address = excluded.address, heartbeat_at = excluded.heartbeat_at"
        )
        .bind(id)
        .bind(address)
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected()
        });
        Ok(())
    }

    /// Records that replica `id` is alive at `now`; false if its registration is gone (another
    /// process removed it as stale), in which case the caller registers again.
    pub async fn heartbeat_replica(&self, id: &str, now: i64) -> Result<bool> {
        let done = with_pool!(self, |pool| sqlx::query(
            "UPDATE replicas SET heartbeat_at = $2 WHERE id = $1"
        )
        .bind(id)
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done > 0)
    }

    /// Removes replica `id` (a clean shutdown), and registrations dead since before
    /// `forget_before`.
    pub async fn forget_replicas(&self, id: &str, forget_before: i64) -> Result<u64> {
        Ok(with_pool!(self, |pool| sqlx::query(
            "DELETE FROM replicas WHERE id = $1 OR heartbeat_at < $2"
        )
        .bind(id)
        .bind(forget_before)
        .execute(pool)
        .await?
        .rows_affected()))
    }

    /// Every registered replica, newest heartbeat first.
    pub async fn replicas(&self) -> Result<Vec<ReplicaRow>> {
        Ok(with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM replicas ORDER BY heartbeat_at DESC, id"
        )
        .fetch_all(pool)
        .await?))
    }
}

/// One change another replica made to rows this one keeps in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A row of `table` with this name (or meta key) was written or deleted.
    Row { table: String, key: String },
    /// Changes may have been missed (the feed's connection was lost and made again): drop
    /// everything held in memory.
    Resync,
}

/// The feed of [`Change`]s on a PostgreSQL store (`LISTEN lessor_changes`, fed by triggers, so a
/// change is announced exactly when it commits).
pub struct ChangeFeed {
    listener: sqlx::postgres::PgListener,
}

impl ChangeFeed {
    /// The next change. A lost connection is made again by the next call and reported as
    /// [`Change::Resync`]; an error means the store cannot be reached right now.
    pub async fn next(&mut self) -> Result<Change> {
        Ok(match self.listener.try_recv().await? {
            Some(notification) => {
                let (table, key) = notification
                    .payload()
                    .split_once(':')
                    .unwrap_or((notification.payload(), ""));
                Change::Row {
                    table: table.to_owned(),
                    key: key.to_owned(),
                }
            }
            None => Change::Resync,
        })
    }
}

impl Store {
    /// The change feed of a shared (PostgreSQL) store; `None` for an embedded store, whose one
    /// process makes every change itself.
    pub async fn change_feed(&self) -> Result<Option<ChangeFeed>> {
        let super::Backend::Postgres(pool) = &self.backend else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen("lessor_changes").await?;
        Ok(Some(ChangeFeed { listener }))
    }

    /// Records an anomaly event (`kind` for `subject` at `now`) and counts those since `since`,
    /// this one included, across every replica.
    pub async fn count_anomaly_event(
        &self,
        kind: &str,
        subject: &str,
        now: i64,
        since: i64,
    ) -> Result<i64> {
        with_pool!(self, |pool| sqlx::query(
            "INSERT INTO anomaly_events (kind, subject, at) VALUES ($1, $2, $3)"
        )
        .bind(kind)
        .bind(subject)
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM anomaly_events WHERE kind = $1 AND subject = $2 AND at > $3"
        )
        .bind(kind)
        .bind(subject)
        .bind(since)
        .fetch_one(pool)
        .await?))
    }

    /// Forgets anomaly events older than `before`.
    pub async fn forget_anomaly_events(&self, before: i64) -> Result<u64> {
        Ok(with_pool!(self, |pool| sqlx::query(
            "DELETE FROM anomaly_events WHERE at < $1"
        )
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected()))
    }
}
