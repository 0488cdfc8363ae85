//! Store queries for warm pools (migration sqlite 0017 / postgres 0018, [`PoolStore`]): the users
//! created ahead of demand that cannot log in until issued. Each has a `pooled_users` row, written
//! before the user exists and claimed by the replica holding its password in memory; issuing moves
//! the row into `leases` under the same id, in one transaction, only while that replica still
//! holds it. Any replica may take a row over (a drain, a revoke-prefix, a dead holder), after
//! which its holder can no longer issue it.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::leases::{encode_statements, insert_lease_in, record_issued_user};
use super::{from_millis, to_millis, Claim, IdRange, Lease, Store};
use crate::error::{Error, Result};

/// A pooled user as the store records it (never its password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PooledUser {
    /// The lease id it will be issued under (`database/creds/<role>/<random>`).
    pub id: String,
    pub role_name: String,
    pub connection_name: String,
    pub username: String,
    /// What drops it, from the role it was made for (empty: the engine's default).
    pub revocation_statements: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// The replica that holds its password: the only one that may issue it.
    pub claimed_by: String,
}

/// A row of `pooled_users`.
#[derive(FromRow)]
struct PooledUserRow {
    id: String,
    role_name: String,
    connection_name: String,
    username: String,
    revocation_statements: String,
    created_at: i64,
    claimed_by: String,
}

impl TryFrom<PooledUserRow> for PooledUser {
    type Error = Error;

    fn try_from(row: PooledUserRow) -> Result<Self> {
        Ok(Self {
            revocation_statements: super::codec::decode(
                "pooled_users",
                "revocation_statements",
                &row.revocation_statements,
            )?,
            id: row.id,
            role_name: row.role_name,
            connection_name: row.connection_name,
            username: row.username,
            created_at: from_millis(row.created_at),
            claimed_by: row.claimed_by,
        })
    }
}

/// Which pooled users [`PoolStore::take_over_pooled_users`] takes.
#[derive(Debug, Clone)]
pub enum PooledSelection<'a> {
    /// Those whose holder is dead (per the claim's stale limit): their passwords are lost.
    OfDeadReplicas,
    /// Those of a role, whoever holds them (the role changed or went).
    OfRole(&'a str),
    /// Those whose id is in a range (a revoke-prefix), whoever holds them.
    InRange(&'a IdRange),
}

/// Warm pools: recording pooled users, issuing one as a lease, taking them over and forgetting
/// them once dropped.
// Implemented and called inside this crate on concrete types only, so each call site knows
// whether the futures are `Send`.
#[allow(async_fn_in_trait)]
pub trait PoolStore {
    /// Records a pooled user (and that this installation issued it) before it is created on its
    /// database. Refused (NotFound) if its connection is gone.
    async fn insert_pooled_user(&self, user: &PooledUser) -> Result<()>;

    /// Issues the pooled user `lease.id`: in one transaction, removes its row, only while
    /// `claimant` holds it, and writes `lease` (state `creating`, the pooled user's username).
    /// False if another replica took the row over (the caller must not activate the user).
    async fn take_pooled_user(&self, claimant: &str, lease: &Lease) -> Result<bool>;

    /// Whether `claimant` holds the pooled user `id` (it may have been issued or taken over).
    async fn holds_pooled_user(&self, id: &str, claimant: &str) -> Result<bool>;

    /// The pooled users `claimant` holds.
    async fn pooled_users_held_by(&self, claimant: &str) -> Result<Vec<PooledUser>>;

    /// Moves the selected pooled users to `claim.by()` and returns them: their previous holder
    /// can no longer issue them, and the caller drops them.
    async fn take_over_pooled_users(
        &self,
        claim: &Claim<'_>,
        selection: PooledSelection<'_>,
    ) -> Result<Vec<PooledUser>>;

    /// Forgets a pooled user whose database user is gone (and its record as issued), if
    /// `claimant` still holds it.
    async fn forget_pooled_user(&self, id: &str, claimant: &str) -> Result<()>;

    /// Pooled users on record, all replicas together.
    async fn count_pooled_users(&self) -> Result<i64>;
}

impl PoolStore for Store {
    async fn insert_pooled_user(&self, user: &PooledUser) -> Result<()> {
        let created_at = to_millis(user.created_at);
        let done = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "INSERT INTO pooled_users (id, role_name, connection_name, username,
                     revocation_statements, created_at, claimed_by)
                 SELECT $1, $2, $3, $4, $5, $6, $7
                 WHERE EXISTS (SELECT 1 FROM connections WHERE name = $3)",
            )
            .bind(&user.id)
            .bind(&user.role_name)
            .bind(&user.connection_name)
            .bind(&user.username)
            .bind(encode_statements(&user.revocation_statements))
            .bind(created_at)
            .bind(&user.claimed_by)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if done > 0 {
                // As for a lease: the proof this installation made the user, before it exists.
                record_issued_user!(
                    &mut *tx,
                    &user.connection_name,
                    &user.username,
                    &user.id,
                    created_at
                );
                tx.commit().await?;
            }
            done
        });
        if done == 0 {
            return Err(Error::not_found("connection", &user.connection_name));
        }
        Ok(())
    }

    async fn take_pooled_user(&self, claimant: &str, lease: &Lease) -> Result<bool> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let taken = sqlx::query("DELETE FROM pooled_users WHERE id = $1 AND claimed_by = $2")
                .bind(&lease.id)
                .bind(claimant)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if taken == 0 {
                return Ok(false);
            }
            if insert_lease_in!(&mut *tx, lease) == 0 {
                return Err(Error::not_found("connection", &lease.connection_name));
            }
            tx.commit().await?;
        });
        Ok(true)
    }

    async fn holds_pooled_user(&self, id: &str, claimant: &str) -> Result<bool> {
        let found: Option<String> = with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT id FROM pooled_users WHERE id = $1 AND claimed_by = $2"
        )
        .bind(id)
        .bind(claimant)
        .fetch_optional(pool)
        .await?);
        Ok(found.is_some())
    }

    async fn pooled_users_held_by(&self, claimant: &str) -> Result<Vec<PooledUser>> {
        let rows: Vec<PooledUserRow> = with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM pooled_users WHERE claimed_by = $1 ORDER BY id"
        )
        .bind(claimant)
        .fetch_all(pool)
        .await?);
        rows.into_iter().map(PooledUser::try_from).collect()
    }

    async fn take_over_pooled_users(
        &self,
        claim: &Claim<'_>,
        selection: PooledSelection<'_>,
    ) -> Result<Vec<PooledUser>> {
        // $1-$4 are the claim's; $5 and $6 the selection's.
        let (condition, first, second) = match &selection {
            PooledSelection::OfDeadReplicas => (
                format!("claimed_by <> $1 AND {}", claim.dead_sql("pooled_users")),
                None,
                None,
            ),
            PooledSelection::OfRole(role) => {
                ("role_name = $5".to_owned(), Some((*role).to_owned()), None)
            }
            PooledSelection::InRange(range) => (
                "id >= $5 AND id < $6".to_owned(),
                Some(range.start.clone()),
                Some(range.end.clone()),
            ),
        };
        // Every claim value is referenced, so that both engines know each bound parameter.
        let sql = format!(
            "UPDATE pooled_users SET claimed_by = $1
             WHERE {condition} AND $2 = $2 AND $3 = $3 AND $4 = $4
             RETURNING *"
        );
        let rows: Vec<PooledUserRow> = with_pool!(self, |pool| {
            let mut query = bind_claim!(sqlx::query_as(&sql), claim);
            if let Some(first) = &first {
                query = query.bind(first);
            }
            if let Some(second) = &second {
                query = query.bind(second);
            }
            query.fetch_all(pool).await?
        });
        rows.into_iter().map(PooledUser::try_from).collect()
    }

    async fn forget_pooled_user(&self, id: &str, claimant: &str) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let forgotten: Option<(String, String)> = sqlx::query_as(
                "DELETE FROM pooled_users WHERE id = $1 AND claimed_by = $2
                 RETURNING connection_name, username",
            )
            .bind(id)
            .bind(claimant)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((connection, username)) = forgotten {
                sqlx::query(super::leases::FORGET_ISSUED_USER)
                    .bind(&connection)
                    .bind(&username)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn count_pooled_users(&self) -> Result<i64> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM pooled_users"
        )
        .fetch_one(pool)
        .await?))
    }
}
