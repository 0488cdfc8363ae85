//! Store queries for several replicas on one store (migration 0011): the replica registry with its
//! heartbeats, the claim every piece of background work is taken under, the feed of changes other
//! replicas make, and the anomaly event windows all replicas count into ([`ReplicaStore`]).
//!
//! A claim is a row's `claimed_by` (a replica id) and an expiry; it is free to take when nobody
//! holds it, its holder is the one asking, it has lapsed, or its holder is dead (no heartbeat since
//! the stale limit). The expiry covers a holder that is alive but stuck; the heartbeat lets the
//! others take a killed replica's work at once instead of waiting for every claim to lapse.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::{from_millis, to_millis, Store};
use crate::error::Result;

/// Who claims, when, until when, and which heartbeats still count as alive. Bound as `$1`..`$4`
/// by `bind_claim!`, so every claiming query reads them the same way.
///
/// Its times are kept at the store's resolution (whole milliseconds), so a claim's `until` read
/// back from a row compares equal to the claim that wrote it.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    by: &'a str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    stale_before: DateTime<Utc>,
}

impl<'a> Claim<'a> {
    /// A claim by replica `by`, taken at `now`, lapsing at `until` unless its holder finishes or
    /// gives it up first, judging replicas whose last heartbeat is at or before `stale_before`
    /// dead. [`crate::replica::Replica::claim`] builds the usual one.
    pub fn new(
        by: &'a str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Self {
        Self {
            by,
            now: super::whole_millis(now),
            until: super::whole_millis(until),
            stale_before: super::whole_millis(stale_before),
        }
    }

    /// The claiming replica's id.
    pub fn by(&self) -> &'a str {
        self.by
    }

    /// When the claim is taken.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// When the claim lapses if its holder neither finishes nor gives it up.
    pub fn until(&self) -> DateTime<Utc> {
        self.until
    }

    /// Replicas whose last heartbeat is at or before this are dead.
    pub fn stale_before(&self) -> DateTime<Utc> {
        self.stale_before
    }
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

    /// SQL that holds when the holder of a row of `table`'s claim is dead: no registration, or
    /// no heartbeat since `$4`.
    ///
    /// A scalar subquery, not `NOT EXISTS`: PostgreSQL turns a `NOT EXISTS` standing alone in a
    /// WHERE clause into an anti-join, and when a claim's `FOR UPDATE` finds a row another replica
    /// claimed after this statement's snapshot, its re-check of the new row version does not
    /// re-run that join: a live replica's fresh claim still read as its dead predecessor's, and
    /// two replicas took the same lease (or static rotation, or pooled user). A subquery in an
    /// expression is evaluated again against the version it locks.
    pub(super) fn dead_sql(&self, table: &str) -> String {
        format!(
            "COALESCE((SELECT r.heartbeat_at FROM replicas r WHERE r.id = {table}.claimed_by), 0) <= $4"
        )
    }
}

/// One registered replica, as the registry records it (not to be confused with
/// [`crate::replica::Replica`], this process's own identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub id: String,
    /// The address it serves on, as it registered it.
    pub address: String,
    pub started_at: DateTime<Utc>,
    /// Its last sign of life: once older than the stale limit, its claims are free.
    pub heartbeat_at: DateTime<Utc>,
}

/// A row of `replicas`, times in milliseconds.
#[derive(FromRow)]
struct ReplicaRow {
    id: String,
    address: String,
    started_at: i64,
    heartbeat_at: i64,
}

impl From<ReplicaRow> for Replica {
    fn from(row: ReplicaRow) -> Self {
        Self {
            id: row.id,
            address: row.address,
            started_at: from_millis(row.started_at),
            heartbeat_at: from_millis(row.heartbeat_at),
        }
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

/// Several replicas on one store: the replica registry with its heartbeats, the feed of changes
/// other replicas make, and the windows of anomaly events every replica counts into (so a burst
/// spread over replicas is still one burst).
// Implemented and called inside this crate on concrete types only, so each call site knows
// whether the futures are `Send`.
#[allow(async_fn_in_trait)]
pub trait ReplicaStore {
    /// Registers replica `id` at `now`. With `only`, every other registration is removed first:
    /// an embedded store has one process, so whatever registered before is a dead incarnation
    /// whose claims are free at once.
    async fn register_replica(
        &self,
        id: &str,
        address: &str,
        now: DateTime<Utc>,
        only: bool,
    ) -> Result<()>;

    /// Records that replica `id` is alive at `now`; false if its registration is gone (another
    /// process removed it as stale), in which case the caller registers again.
    async fn heartbeat_replica(&self, id: &str, now: DateTime<Utc>) -> Result<bool>;

    /// Removes replica `id` (a clean shutdown), and registrations dead since before
    /// `forget_before`. Returns how many went.
    async fn forget_replicas(&self, id: &str, forget_before: DateTime<Utc>) -> Result<u64>;

    /// Every registered replica, newest heartbeat first.
    async fn replicas(&self) -> Result<Vec<Replica>>;

    /// The change feed of a shared (PostgreSQL) store; `None` for an embedded store, whose one
    /// process makes every change itself.
    async fn change_feed(&self) -> Result<Option<ChangeFeed>>;

    /// Records an anomaly event (`kind` for `subject` at `now`) and counts those after `since`,
    /// this one included, across every replica.
    async fn count_anomaly_event(
        &self,
        kind: &str,
        subject: &str,
        now: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> Result<i64>;

    /// Forgets anomaly events older than `before`. Returns how many went.
    async fn forget_anomaly_events(&self, before: DateTime<Utc>) -> Result<u64>;
}

impl ReplicaStore for Store {
    async fn register_replica(
        &self,
        id: &str,
        address: &str,
        now: DateTime<Utc>,
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
        .bind(to_millis(now))
        .execute(pool)
        .await?
        .rows_affected()
        });
        Ok(())
    }

    async fn heartbeat_replica(&self, id: &str, now: DateTime<Utc>) -> Result<bool> {
        let done = with_pool!(self, |pool| sqlx::query(
            "UPDATE replicas SET heartbeat_at = $2 WHERE id = $1"
        )
        .bind(id)
        .bind(to_millis(now))
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done > 0)
    }

    async fn forget_replicas(&self, id: &str, forget_before: DateTime<Utc>) -> Result<u64> {
        Ok(with_pool!(self, |pool| sqlx::query(
            "DELETE FROM replicas WHERE id = $1 OR heartbeat_at < $2"
        )
        .bind(id)
        .bind(to_millis(forget_before))
        .execute(pool)
        .await?
        .rows_affected()))
    }

    async fn replicas(&self) -> Result<Vec<Replica>> {
        let rows: Vec<ReplicaRow> = with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM replicas ORDER BY heartbeat_at DESC, id"
        )
        .fetch_all(pool)
        .await?);
        Ok(rows.into_iter().map(Replica::from).collect())
    }

    async fn change_feed(&self) -> Result<Option<ChangeFeed>> {
        let super::Backend::Postgres(pool) = &self.backend else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen("lessor_changes").await?;
        Ok(Some(ChangeFeed { listener }))
    }

    async fn count_anomaly_event(
        &self,
        kind: &str,
        subject: &str,
        now: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> Result<i64> {
        with_pool!(self, |pool| sqlx::query(
            "INSERT INTO anomaly_events (kind, subject, at) VALUES ($1, $2, $3)"
        )
        .bind(kind)
        .bind(subject)
        .bind(to_millis(now))
        .execute(pool)
        .await?
        .rows_affected());
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM anomaly_events WHERE kind = $1 AND subject = $2 AND at > $3"
        )
        .bind(kind)
        .bind(subject)
        .bind(to_millis(since))
        .fetch_one(pool)
        .await?))
    }

    async fn forget_anomaly_events(&self, before: DateTime<Utc>) -> Result<u64> {
        Ok(with_pool!(self, |pool| sqlx::query(
            "DELETE FROM anomaly_events WHERE at < $1"
        )
        .bind(to_millis(before))
        .execute(pool)
        .await?
        .rows_affected()))
    }
}
