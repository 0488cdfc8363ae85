//! Store queries for reconciliation and periodic jobs (migration 0011, [`ReconcileStore`]): the
//! record of every user this installation issued, which users on record have no live lease, and
//! the claims that let one replica at a time run a periodic job.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::{from_millis, to_millis, Claim, Store};
use crate::error::Result;

/// A user on record as issued by this installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedUser {
    pub connection_name: String,
    pub username: String,
    /// The lease it was issued under (its row may be gone after the tombstone period).
    pub lease_id: String,
    pub issued_at: DateTime<Utc>,
    /// Sweeps in a row that found the user on its database without a live lease.
    pub suspect_sweeps: i64,
    /// When the first of those sweeps ran.
    pub suspect_since: Option<DateTime<Utc>>,
}

/// A row of `issued_users`, times in milliseconds.
#[derive(FromRow)]
struct IssuedUserRow {
    connection_name: String,
    username: String,
    lease_id: String,
    issued_at: i64,
    suspect_sweeps: i64,
    suspect_since: Option<i64>,
}

impl From<IssuedUserRow> for IssuedUser {
    fn from(row: IssuedUserRow) -> Self {
        Self {
            connection_name: row.connection_name,
            username: row.username,
            lease_id: row.lease_id,
            issued_at: from_millis(row.issued_at),
            suspect_sweeps: row.suspect_sweeps,
            suspect_since: row.suspect_since.map(from_millis),
        }
    }
}

/// Reconciliation and periodic jobs: the users this installation issued (written with their
/// lease, see [`LeaseStore::insert_lease`](super::LeaseStore::insert_lease)), which of them no
/// live lease covers, and the claims on periodic jobs.
// Implemented and called inside this crate on concrete types only, so each call site knows
// whether the futures are `Send`.
#[allow(async_fn_in_trait)]
pub trait ReconcileStore {
    /// Users on record for `connection` that no live lease covers: those a reconciliation sweep
    /// looks for on the database. A user being created has a live (`creating`) lease, so it is
    /// never among them; nor is a user in a warm pool (see [`super::PoolStore`]). A live lease's
    /// user is on record pointing at that lease (written in the lease's own transaction; migration
    /// 0020, 0021 on PostgreSQL, made it so for older stores), so the test follows the record's
    /// lease id, the primary key, rather than an index of usernames every lease write would pay
    /// for.
    async fn orphan_candidates(&self, connection: &str) -> Result<Vec<IssuedUser>>;

    /// Which of `usernames` are on record as issued on `connection`.
    async fn issued_among(&self, connection: &str, usernames: &[String])
        -> Result<HashSet<String>>;

    /// Counts one more sweep (at `now`) that found `username` orphaned, unless a new lease took
    /// it up since `expected_lease`; returns the sweeps counted so far, 0 if the record moved on.
    async fn mark_suspect(
        &self,
        connection: &str,
        username: &str,
        expected_lease: &str,
        now: DateTime<Utc>,
    ) -> Result<i64>;

    /// Forgets the record of a user that is gone from its database (dropped, or never there).
    async fn forget_issued_user(
        &self,
        connection: &str,
        username: &str,
        expected_lease: &str,
    ) -> Result<bool>;

    /// Claims the periodic job `name` when its claim is free and it last ran at or before
    /// `ran_before` (so a job due every hour runs once an hour across all replicas).
    async fn claim_job(
        &self,
        name: &str,
        claim: &Claim<'_>,
        ran_before: DateTime<Utc>,
    ) -> Result<bool>;

    /// Records that `by` finished job `name` at `now`, giving up its claim.
    async fn finish_job(&self, name: &str, by: &str, now: DateTime<Utc>) -> Result<()>;
}

impl ReconcileStore for Store {
    async fn orphan_candidates(&self, connection: &str) -> Result<Vec<IssuedUser>> {
        let rows: Vec<IssuedUserRow> = with_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT i.* FROM issued_users i
             WHERE i.connection_name = $1
                 AND NOT EXISTS (SELECT 1 FROM leases l
                                 WHERE l.id = i.lease_id
                                     AND l.state IN ('creating', 'active', 'revoking'))
                 AND NOT EXISTS (SELECT 1 FROM pooled_users p
                                 WHERE p.connection_name = i.connection_name AND p.username = i.username)
             ORDER BY i.username"
        )
        .bind(connection)
        .fetch_all(pool)
        .await?
        });
        Ok(rows.into_iter().map(IssuedUser::from).collect())
    }

    async fn issued_among(
        &self,
        connection: &str,
        usernames: &[String],
    ) -> Result<HashSet<String>> {
        let mut known = HashSet::new();
        for chunk in usernames.chunks(500) {
            let found: Vec<String> = with_pool!(self, |pool| {
                let mut query = sqlx::QueryBuilder::new(
                    "SELECT username FROM issued_users WHERE connection_name = ",
                );
                query.push_bind(connection);
                query.push(" AND username IN (");
                let mut list = query.separated(", ");
                for username in chunk {
                    list.push_bind(username);
                }
                query.push(")");
                query.build_query_scalar().fetch_all(pool).await?
            });
            known.extend(found);
        }
        Ok(known)
    }

    async fn mark_suspect(
        &self,
        connection: &str,
        username: &str,
        expected_lease: &str,
        now: DateTime<Utc>,
    ) -> Result<i64> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "UPDATE issued_users SET suspect_sweeps = suspect_sweeps + 1,
                 suspect_since = COALESCE(suspect_since, $4)
             WHERE connection_name = $1 AND username = $2 AND lease_id = $3
             RETURNING suspect_sweeps"
        )
        .bind(connection)
        .bind(username)
        .bind(expected_lease)
        .bind(to_millis(now))
        .fetch_optional(pool)
        .await?
        .unwrap_or(0)))
    }

    async fn forget_issued_user(
        &self,
        connection: &str,
        username: &str,
        expected_lease: &str,
    ) -> Result<bool> {
        let done = with_pool!(self, |pool| {
            sqlx::query(super::leases::FORGET_ISSUED_USER)
                .bind(connection)
                .bind(username)
                .bind(expected_lease)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done > 0)
    }

    // ---- periodic jobs ----------------------------------------------------------------------

    async fn claim_job(
        &self,
        name: &str,
        claim: &Claim<'_>,
        ran_before: DateTime<Utc>,
    ) -> Result<bool> {
        with_pool!(self, |pool| sqlx::query(
            "INSERT INTO jobs (name) VALUES ($1) ON CONFLICT (name) DO NOTHING"
        )
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected());
        let sql = format!(
            "UPDATE jobs SET claimed_by = $1, claim_until = $3
             WHERE name = $5 AND {free} AND (last_run_at IS NULL OR last_run_at <= $6)",
            free = claim.free_sql("jobs")
        );
        let done = with_pool!(self, |pool| bind_claim!(sqlx::query(&sql), claim)
            .bind(name)
            .bind(to_millis(ran_before))
            .execute(pool)
            .await?
            .rows_affected());
        Ok(done > 0)
    }

    async fn finish_job(&self, name: &str, by: &str, now: DateTime<Utc>) -> Result<()> {
        with_pool!(self, |pool| sqlx::query(
            "UPDATE jobs SET claimed_by = NULL, claim_until = NULL, last_run_at = $3
             WHERE name = $1 AND claimed_by = $2"
        )
        .bind(name)
        .bind(by)
        .bind(to_millis(now))
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }
}

/// The lease id recorded for a user adopted by its marker: no lease row has an empty id.
pub const ADOPTED_WITHOUT_LEASE: &str = "";

impl Store {
    /// Records a user that carries this installation's marker but that the store has no record
    /// of (its record was lost, say with a store restored from an older backup), as counted by
    /// one sweep already, unless a live lease covers it. True when the record was made.
    ///
    /// A user with no record has no live lease unless the store broke that rule somehow, and
    /// dropping a live lease's user is the one mistake this must not make, so the live leases of
    /// the connection are searched for the name all the same. No index serves that search (see
    /// migration 0020): it reads the connection's live leases, which is fine for a user found
    /// once per lost record.
    pub async fn adopt_marked_user(
        &self,
        connection: &str,
        username: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let now = super::to_millis(now);
        let done = with_pool!(self, |pool| sqlx::query(
            "INSERT INTO issued_users
                 (connection_name, username, lease_id, issued_at, suspect_sweeps, suspect_since)
             SELECT $1, $2, $3, $4, 1, $4
             WHERE NOT EXISTS (SELECT 1 FROM leases l
                               WHERE l.connection_name = $1 AND l.username = $2
                                   AND l.state IN ('creating', 'active', 'revoking'))
                 AND NOT EXISTS (SELECT 1 FROM pooled_users p
                                 WHERE p.connection_name = $1 AND p.username = $2)
             ON CONFLICT (connection_name, username) DO NOTHING"
        )
        .bind(connection)
        .bind(username)
        .bind(ADOPTED_WITHOUT_LEASE)
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done > 0)
    }
}
