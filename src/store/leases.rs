//! Store queries for leases ([`LeaseStore`]): issuing, renewing and revoking them, the reaper's
//! claims on due leases, prefix listings through the primary key, and the counts the API and
//! metrics report. Callers see [`Lease`], with times and statement lists; the row it is stored as
//! (milliseconds since the epoch, JSON text) never leaves this module.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::writer::LeaseWrite;
use super::{from_millis, to_millis, Claim, Store, StoreKind};
use crate::error::{Error, Result};

/// Lease ids bound in one statement by the batch methods: far under SQLite's and PostgreSQL's
/// limits on bound values.
const BATCH_BINDS: usize = 500;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `database/creds/<role>/<random>`: the path clients renew, look up and revoke it by.
    pub id: String,
    /// The role it was issued under (which may have been deleted since).
    pub role_name: String,
    /// The connection its user was created on.
    pub connection_name: String,
    pub username: String,
    /// The revocation statements the user was created under, so revocation works after the role
    /// changed or was deleted. Empty means the engine's default.
    pub revocation_statements: Vec<String>,
    /// What undoes a half-done creation; empty means the revocation statements.
    pub rollback_statements: Vec<String>,
    /// What a renewal runs; empty means the engine's default.
    pub renew_statements: Vec<String>,
    pub issued_at: DateTime<Utc>,
    pub last_renewed_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    /// No renewal moves the expiry past this (the role's max TTL from issue).
    pub max_expires_at: DateTime<Utc>,
    pub state: LeaseState,
    /// When the reaper next acts on the lease: its expiry while `active`, the creation deadline
    /// while `creating`, the next retry while `revoking`.
    pub next_action_at: DateTime<Utc>,
    /// Failed revocation attempts so far.
    pub attempts: i64,
    /// The last failed attempt's error, or the note of a forced or rolled-back revocation.
    pub last_error: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
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
    pub claim_until: Option<DateTime<Utc>>,
    /// The lease's own database (a `database_per_lease` role), dropped at revocation.
    pub database_name: Option<String>,
}

/// A lease the reaper claimed. A live one is `revoking` under the reaper's claim from the claim
/// on, and comes with the whole lease, so its user is dropped without another read or write;
/// a `creating` one is taken over from its issuer by the revocation, which reads it again. A row
/// whose statement lists cannot be decoded comes without `lease` and fails its own revocation,
/// never the claim of the batch it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueLease {
    pub id: String,
    /// Revocations are limited per connection.
    pub connection_name: String,
    /// The state after the claim: `revoking`, or `creating`.
    pub state: LeaseState,
    /// The lease as the claim left it, when its row decoded.
    pub lease: Option<Lease>,
}

/// A row of `leases`: times in milliseconds since the epoch, statement lists as JSON text.
#[derive(Debug, FromRow)]
pub(super) struct LeaseRow {
    id: String,
    role_name: String,
    connection_name: String,
    username: String,
    revocation_statements: String,
    rollback_statements: String,
    renew_statements: String,
    issued_at: i64,
    last_renewed_at: Option<i64>,
    expires_at: i64,
    max_expires_at: i64,
    state: LeaseState,
    next_action_at: i64,
    attempts: i64,
    last_error: Option<String>,
    revoked_at: Option<i64>,
    owner: String,
    owner_display_name: String,
    revoke_requested: bool,
    token_accessor: Option<String>,
    claimed_by: Option<String>,
    claim_until: Option<i64>,
    database_name: Option<String>,
}

impl LeaseRow {
    /// The row as the SQLite lease writer's connection returns it (`RETURNING *`): the columns
    /// sqlx's `FromRow` reads, by the same names.
    pub(super) fn from_rusqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        let state: String = row.get("state")?;
        let state = LeaseState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                row.as_ref().column_index("state").unwrap_or_default(),
                rusqlite::types::Type::Text,
                format!("leases.state: not a lease state: {state:?}").into(),
            )
        })?;
        Ok(Self {
            id: row.get("id")?,
            role_name: row.get("role_name")?,
            connection_name: row.get("connection_name")?,
            username: row.get("username")?,
            revocation_statements: row.get("revocation_statements")?,
            rollback_statements: row.get("rollback_statements")?,
            renew_statements: row.get("renew_statements")?,
            issued_at: row.get("issued_at")?,
            last_renewed_at: row.get("last_renewed_at")?,
            expires_at: row.get("expires_at")?,
            max_expires_at: row.get("max_expires_at")?,
            state,
            next_action_at: row.get("next_action_at")?,
            attempts: row.get("attempts")?,
            last_error: row.get("last_error")?,
            revoked_at: row.get("revoked_at")?,
            owner: row.get("owner")?,
            owner_display_name: row.get("owner_display_name")?,
            revoke_requested: row.get("revoke_requested")?,
            token_accessor: row.get("token_accessor")?,
            claimed_by: row.get("claimed_by")?,
            claim_until: row.get("claim_until")?,
            database_name: row.get("database_name")?,
        })
    }
}

/// A statement list as the `leases` table holds it (a JSON array of strings).
pub(super) fn encode_statements(statements: &[String]) -> String {
    // A list of strings always serializes.
    serde_json::to_string(statements).unwrap_or_else(|_| "[]".to_owned())
}

/// A statement list of lease `id` read back from `column`; text that is not a JSON list of
/// strings is an internal error naming the lease and the column.
fn decode_statements(id: &str, column: &str, text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| {
        Error::Internal(format!(
            "leases.{column} of lease {id} is not a JSON list of strings: {e}"
        ))
    })
}

impl TryFrom<LeaseRow> for Lease {
    type Error = Error;

    fn try_from(row: LeaseRow) -> Result<Self> {
        Ok(Self {
            revocation_statements: decode_statements(
                &row.id,
                "revocation_statements",
                &row.revocation_statements,
            )?,
            rollback_statements: decode_statements(
                &row.id,
                "rollback_statements",
                &row.rollback_statements,
            )?,
            renew_statements: decode_statements(
                &row.id,
                "renew_statements",
                &row.renew_statements,
            )?,
            id: row.id,
            role_name: row.role_name,
            connection_name: row.connection_name,
            username: row.username,
            issued_at: from_millis(row.issued_at),
            last_renewed_at: row.last_renewed_at.map(from_millis),
            expires_at: from_millis(row.expires_at),
            max_expires_at: from_millis(row.max_expires_at),
            state: row.state,
            next_action_at: from_millis(row.next_action_at),
            attempts: row.attempts,
            last_error: row.last_error,
            revoked_at: row.revoked_at.map(from_millis),
            owner: row.owner,
            owner_display_name: row.owner_display_name,
            revoke_requested: row.revoke_requested,
            token_accessor: row.token_accessor,
            claimed_by: row.claimed_by,
            claim_until: row.claim_until.map(from_millis),
            database_name: row.database_name,
        })
    }
}

impl From<LeaseRow> for DueLease {
    fn from(row: LeaseRow) -> Self {
        let (id, connection_name, state) = (row.id.clone(), row.connection_name.clone(), row.state);
        let lease = Lease::try_from(row)
            .map_err(|error| tracing::warn!(lease_id = %id, %error, "a due lease's row cannot be decoded; it is revoked on its own"))
            .ok();
        Self {
            id,
            connection_name,
            state,
            lease,
        }
    }
}

/// One page of live lease ids in an [`IdRange`]: a range scan of the primary key.
const LIVE_IDS_IN_RANGE: &str = "SELECT id FROM leases WHERE id >= $1 AND id < $2 AND id > $3
         AND state IN ('creating', 'active', 'revoking')
     ORDER BY id LIMIT $4";

/// As [`LIVE_IDS_IN_RANGE`], only the leases of one owner display name (`$5`), through the
/// `leases_owner_display_name` index.
const LIVE_IDS_OF_OWNER_IN_RANGE: &str = "SELECT id FROM leases WHERE owner_display_name = $5
         AND id >= $1 AND id < $2 AND id > $3 AND state IN ('creating', 'active', 'revoking')
     ORDER BY id LIMIT $4";

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

/// `$1` made the user `$2` on the connection for the lease (or pooled user's row) `$3` at `$4`
/// (see `record_issued_user!`).
pub(super) const RECORD_ISSUED_USER: &str =
    "INSERT INTO issued_users (connection_name, username, lease_id, issued_at)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (connection_name, username) DO UPDATE SET lease_id = excluded.lease_id,
         issued_at = excluded.issued_at, suspect_sweeps = 0, suspect_since = NULL";

/// Forgets the record of the user `$2` on the connection `$1` if it is still the lease `$3`'s.
pub(super) const FORGET_ISSUED_USER: &str =
    "DELETE FROM issued_users WHERE connection_name = $1 AND username = $2 AND lease_id = $3";

/// A new lease row, its columns bound `$1` to `$24` in the order `insert_lease_in!` and the
/// SQLite writer (`writer.rs`) bind them, written only while its connection (`$22`) exists.
pub(super) const INSERT_LEASE: &str =
    "INSERT INTO leases (id, role_name, connection_name, username, revocation_statements, rollback_statements,
         renew_statements, issued_at, last_renewed_at, expires_at, max_expires_at, state, next_action_at,
         attempts, last_error, revoked_at, owner, revoke_requested, token_accessor, claimed_by, claim_until,
         database_name, owner_display_name)
     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $23, $24
     WHERE EXISTS (SELECT 1 FROM connections WHERE name = $22)";

/// Records in `issued_users`, inside the transaction `$tx`, that this installation made the user
/// `$username` on `$connection` for `$lease_id` (a lease, or a pooled user's row): the proof
/// reconciliation relies on, written before the user exists.
macro_rules! record_issued_user {
    ($tx:expr, $connection:expr, $username:expr, $lease_id:expr, $issued_at:expr) => {
        sqlx::query($crate::store::leases::RECORD_ISSUED_USER)
            .bind($connection)
            .bind($username)
            .bind($lease_id)
            .bind($issued_at)
            .execute($tx)
            .await?
    };
}
pub(super) use record_issued_user;

/// Writes `$lease` in the transaction `$tx` with the record that this installation issued its
/// user, unless its connection is gone; evaluates to the lease rows written (0 or 1). Shared by
/// [`LeaseStore::insert_lease`] and the warm pool's take
/// ([`PoolStore::take_pooled_user`](super::PoolStore::take_pooled_user)), which moves a pooled
/// user into `leases`.
macro_rules! insert_lease_in {
    ($tx:expr, $lease:expr) => {{
        let lease: &$crate::store::Lease = $lease;
        // Bound straight from the lease, converted on the way: this is the hot path's write.
        let issued_at = $crate::store::to_millis(lease.issued_at);
        let done = sqlx::query($crate::store::leases::INSERT_LEASE)
            .bind(&lease.id)
            .bind(&lease.role_name)
            .bind(&lease.connection_name)
            .bind(&lease.username)
            .bind($crate::store::leases::encode_statements(
                &lease.revocation_statements,
            ))
            .bind($crate::store::leases::encode_statements(
                &lease.rollback_statements,
            ))
            .bind($crate::store::leases::encode_statements(
                &lease.renew_statements,
            ))
            .bind(issued_at)
            .bind(lease.last_renewed_at.map($crate::store::to_millis))
            .bind($crate::store::to_millis(lease.expires_at))
            .bind($crate::store::to_millis(lease.max_expires_at))
            .bind(lease.state)
            .bind($crate::store::to_millis(lease.next_action_at))
            .bind(lease.attempts)
            .bind(&lease.last_error)
            .bind(lease.revoked_at.map($crate::store::to_millis))
            .bind(&lease.owner)
            .bind(lease.revoke_requested)
            .bind(&lease.token_accessor)
            .bind(&lease.claimed_by)
            .bind(lease.claim_until.map($crate::store::to_millis))
            .bind(&lease.connection_name)
            .bind(&lease.database_name)
            .bind(&lease.owner_display_name)
            .execute($tx)
            .await?
            .rows_affected();
        if done > 0 {
            // The proof that this installation made the user, durable before the user exists.
            $crate::store::leases::record_issued_user!(
                $tx,
                &lease.connection_name,
                &lease.username,
                &lease.id,
                issued_at
            );
        }
        done
    }};
}
pub(super) use insert_lease_in;

/// Leases: issuing, renewing and revoking them, the reaper's claims on due leases, prefix and
/// owner listings through the primary key, tidying tombstones, and counts.
// Implemented and called inside this crate on concrete types only, so each call site knows
// whether the futures are `Send`.
#[allow(async_fn_in_trait)]
pub trait LeaseStore {
    /// Writes a new lease, in state `creating`, before its user exists on the target, with the
    /// record that this installation issued the user (see
    /// [`ReconcileStore::orphan_candidates`](super::ReconcileStore::orphan_candidates)). This is
    /// the one durable write on the credential hot path. It is refused (NotFound) if the lease's
    /// connection no longer exists: the check and the write are one statement, so a concurrent
    /// [`Store::delete_connection`] can never leave a lease whose connection is gone.
    async fn insert_lease(&self, lease: &Lease) -> Result<()>;

    /// The lease `id`, whatever its state; an internal error if its statement lists cannot be
    /// decoded.
    async fn get_lease(&self, id: &str) -> Result<Option<Lease>>;

    /// Ids of live leases under the path `prefix` (see [`IdRange::under`]), in id order.
    async fn live_lease_ids_with_prefix(&self, prefix: &str, limit: i64) -> Result<Vec<String>>;

    /// Ids of live leases in `range` after `after` (exclusive; "" for the start), in id order, at
    /// most `limit`. A range scan of the primary key.
    async fn live_lease_ids_in(
        &self,
        range: &IdRange,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>>;

    /// As [`LeaseStore::live_lease_ids_in`], only the leases whose owner had the display name
    /// `owner_display_name` when they were issued.
    async fn live_lease_ids_of_owner_in(
        &self,
        range: &IdRange,
        after: &str,
        limit: i64,
        owner_display_name: &str,
    ) -> Result<Vec<String>>;

    /// Ids of live leases obtained by the token `accessor`, after `after` (exclusive), in id
    /// order, at most `limit` (through the `leases_token` index).
    async fn live_lease_ids_of_token(
        &self,
        accessor: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>>;

    /// Moves a lease's expiry (and the reaper's next look) to `expires_at` after a renewal at
    /// `now`, only while it is active. False otherwise.
    async fn renew_lease(
        &self,
        id: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool>;

    /// The issuer's step after creating the user: `creating -> active`, due at `next_action_at`
    /// (its expiry). False if a revocation was requested meanwhile or the reaper took the lease
    /// over: then the issuer must drop the user and must not hand out the credentials.
    async fn activate_lease(&self, id: &str, next_action_at: DateTime<Utc>) -> Result<bool>;

    /// A revoke met a `creating` lease: records the request for the issuer (or the reaper).
    /// False if the lease is no longer `creating` (the caller re-reads it and acts on its state).
    async fn request_revocation(&self, id: &str) -> Result<bool>;

    /// Takes a `creating` lease over for revocation (`creating -> revoking`), claimed as
    /// `claim` says. The issuer (`issuer: true`) takes its own lease unconditionally; anyone else
    /// only a lease whose issuer's claim is free (see [`Claim`]): its creation deadline passed or
    /// its issuer is dead.
    async fn take_over_creating(&self, id: &str, claim: &Claim<'_>, issuer: bool) -> Result<bool>;

    /// Moves the reaper's deadline of a `creating` lease, for an issuer that gave up on it.
    async fn reschedule_creating(&self, id: &str, next_action_at: DateTime<Utc>) -> Result<bool>;

    /// Claims a live lease for revocation (`active|revoking -> revoking`) until `claim.until()`,
    /// which is also when the reaper looks again should the claimant die first. False when another
    /// live replica holds it, or (with `due_by`, the reaper's case) when it is no longer due.
    /// Never a `creating` lease: that belongs to its issuer until
    /// [`LeaseStore::take_over_creating`].
    async fn mark_revoking(
        &self,
        id: &str,
        claim: &Claim<'_>,
        due_by: Option<DateTime<Utc>>,
    ) -> Result<bool>;

    /// [`LeaseStore::mark_revoking`] without a due time, for a client's revocation of one lease:
    /// returns the lease as claimed, so the revocation needs no read of its own. With `owner`
    /// (an entity id and a token accessor), only a lease owned by either. `None` when the lease
    /// is missing, not live, being created, held by another live replica or someone else's;
    /// the caller then reads it to tell those cases apart.
    async fn claim_for_revocation(
        &self,
        id: &str,
        claim: &Claim<'_>,
        owner: Option<(&str, &str)>,
    ) -> Result<Option<Lease>>;

    /// [`LeaseStore::mark_revoking`] without a due time, for several leases in one statement
    /// (a client's bulk revocation; the reaper's claim marks its leases itself): returns the
    /// leases claimed, as they are now. The others are left for [`LeaseStore::mark_revoking`] one
    /// by one, which tells their cases apart.
    async fn mark_revoking_many(&self, ids: &[String], claim: &Claim<'_>) -> Result<Vec<Lease>>;

    /// [`LeaseStore::mark_revoked`] of several leases whose users `claimant` dropped, in one
    /// transaction, and only while `claimant` still holds them: a lease another replica took
    /// over meanwhile (this one's claim lapsed, or it was judged dead) is that replica's to
    /// record. Returns the ids this call marked.
    async fn mark_revoked_many(
        &self,
        ids: &[String],
        claimant: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>>;

    /// Gives up `claimant`'s claim on a lease it decided not to act on (renewed since), so a
    /// revoke elsewhere need not wait for the claim to lapse.
    async fn release_lease_claim(&self, id: &str, claimant: &str) -> Result<()>;

    /// Marks a lease revoked at `now`. With `user_dropped` (the drop succeeded, so the user is
    /// gone) the record of its user goes too; a forced revocation keeps it, so reconciliation
    /// drops the user later should it still exist.
    async fn mark_revoked(
        &self,
        id: &str,
        now: DateTime<Utc>,
        note: Option<&str>,
        user_dropped: bool,
    ) -> Result<()>;

    /// Records a failed revocation (or rollback) attempt and when to try again, giving up the
    /// claim. Returns the attempts so far (0 if the lease is no longer live).
    async fn record_revocation_failure(
        &self,
        id: &str,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<i64>;

    /// Claims the leases due at `claim.now()` that nobody holds, oldest first, at most `limit`,
    /// and returns them: live leases whose next action is due, and `creating` leases whose
    /// issuer's claim is free (creation deadline passed, or the issuer is dead). A live lease is
    /// marked `revoking` in the same statement, its next look moved to `claim.until()`, as
    /// [`LeaseStore::mark_revoking`] would: the claimed leases leave the due range at once, so
    /// the next pass does not walk over them, and the reaper drops their users from what this
    /// returns. Leases the claimant already holds (being revoked by it right now) are not
    /// returned again, so a reaper never re-reads what it has dispatched. On PostgreSQL the rows
    /// are taken `FOR UPDATE SKIP LOCKED`, so replicas sweeping together split the work instead
    /// of queueing on each other's rows; SQLite has one writer at a time anyway.
    async fn claim_due_leases(&self, claim: &Claim<'_>, limit: i64) -> Result<Vec<DueLease>>;

    /// Leases still being revoked after at least `min_attempts` failed attempts, by id.
    async fn irrevocable_leases(&self, min_attempts: i64, limit: i64) -> Result<Vec<Lease>>;

    /// When the next lease falls due strictly after `after`, if any. The reaper asks this after
    /// handing out everything due at `after`, so leases it is still revoking do not count.
    async fn next_due_after(&self, after: DateTime<Utc>) -> Result<Option<DateTime<Utc>>>;

    /// Deletes revocation tombstones older than `before`, at most `limit` at a time.
    async fn tidy_revoked(&self, before: DateTime<Utc>, limit: i64) -> Result<u64>;

    /// Leases in `state`.
    async fn count_leases(&self, state: LeaseState) -> Result<i64>;
}

impl LeaseStore for Store {
    async fn insert_lease(&self, lease: &Lease) -> Result<()> {
        // The hot path's first write, grouped with others waiting (see `writer.rs`).
        let inserted = self
            .write_lease(LeaseWrite::Insert(Box::new(lease.clone())))
            .await?;
        if inserted.rows == 0 {
            return Err(Error::not_found("connection", &lease.connection_name));
        }
        Ok(())
    }

    async fn get_lease(&self, id: &str) -> Result<Option<Lease>> {
        let row: Option<LeaseRow> = with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM leases WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(pool)
        .await?);
        row.map(Lease::try_from).transpose()
    }

    async fn live_lease_ids_with_prefix(&self, prefix: &str, limit: i64) -> Result<Vec<String>> {
        self.live_lease_ids_in(&IdRange::under(prefix), "", limit)
            .await
    }

    async fn live_lease_ids_in(
        &self,
        range: &IdRange,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            LIVE_IDS_IN_RANGE
        )
        .bind(&range.start)
        .bind(&range.end)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }

    async fn live_lease_ids_of_owner_in(
        &self,
        range: &IdRange,
        after: &str,
        limit: i64,
        owner_display_name: &str,
    ) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            LIVE_IDS_OF_OWNER_IN_RANGE
        )
        .bind(&range.start)
        .bind(&range.end)
        .bind(after)
        .bind(limit)
        .bind(owner_display_name)
        .fetch_all(pool)
        .await?))
    }

    async fn live_lease_ids_of_token(
        &self,
        accessor: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT id FROM leases WHERE token_accessor = $1 AND id > $2
                 AND state IN ('creating', 'active', 'revoking')
             ORDER BY id LIMIT $3",
        )
        .bind(accessor)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }

    async fn renew_lease(
        &self,
        id: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let expires_at = to_millis(expires_at);
        let done = with_pool!(self, |pool| {
            sqlx::query(
            "UPDATE leases SET expires_at = $1, next_action_at = $2, last_renewed_at = $3 WHERE id = $4 AND state = 'active'",
        )
        .bind(expires_at)
        .bind(expires_at)
        .bind(to_millis(now))
        .bind(id)
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(done > 0)
    }

    async fn activate_lease(&self, id: &str, next_action_at: DateTime<Utc>) -> Result<bool> {
        let write = LeaseWrite::Activate {
            id: id.to_owned(),
            next_action_at,
        };
        Ok(self.write_lease(write).await?.rows > 0)
    }

    async fn request_revocation(&self, id: &str) -> Result<bool> {
        let done = with_pool!(self, |pool| sqlx::query(
            "UPDATE leases SET revoke_requested = TRUE WHERE id = $1 AND state = 'creating'",
        )
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done > 0)
    }

    async fn take_over_creating(&self, id: &str, claim: &Claim<'_>, issuer: bool) -> Result<bool> {
        let sql = format!(
            "UPDATE leases SET state = 'revoking', next_action_at = $3, claimed_by = $1, claim_until = $3
             WHERE id = $5 AND state = 'creating' AND ($6 OR {free})",
            free = claim.free_sql("leases")
        );
        Ok(
            with_pool!(self, |pool| bind_claim!(sqlx::query(&sql), claim)
                .bind(id)
                .bind(issuer)
                .execute(pool)
                .await?
                .rows_affected())
                > 0,
        )
    }

    async fn reschedule_creating(&self, id: &str, next_action_at: DateTime<Utc>) -> Result<bool> {
        let done = with_pool!(self, |pool| {
            sqlx::query(
            "UPDATE leases SET next_action_at = $1, claim_until = $1 WHERE id = $2 AND state = 'creating'"
        )
        .bind(to_millis(next_action_at))
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected()
        });
        Ok(done > 0)
    }

    async fn mark_revoking(
        &self,
        id: &str,
        claim: &Claim<'_>,
        due_by: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let write = LeaseWrite::MarkRevoking {
            id: id.to_owned(),
            claim: claim.into(),
            due_by,
        };
        Ok(self.write_lease(write).await?.rows > 0)
    }

    async fn claim_for_revocation(
        &self,
        id: &str,
        claim: &Claim<'_>,
        owner: Option<(&str, &str)>,
    ) -> Result<Option<Lease>> {
        let write = LeaseWrite::ClaimForRevocation {
            id: id.to_owned(),
            claim: claim.into(),
            owner: owner.map(|(entity, accessor)| (entity.to_owned(), accessor.to_owned())),
        };
        self.write_lease(write)
            .await?
            .claimed
            .map(|row| Lease::try_from(*row))
            .transpose()
    }

    async fn mark_revoking_many(&self, ids: &[String], claim: &Claim<'_>) -> Result<Vec<Lease>> {
        let mut claimed = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH_BINDS) {
            // $1-$4 are the claim's, then the ids.
            let sql = format!(
                "UPDATE leases SET state = 'revoking', next_action_at = $3, claimed_by = $1, claim_until = $3
                 WHERE id IN ({ids}) AND state IN ('active', 'revoking') AND {free}
                 RETURNING *",
                ids = placeholders(chunk.len(), 5),
                free = claim.free_sql("leases")
            );
            let rows: Vec<LeaseRow> = with_pool!(self, |pool| {
                let mut query = bind_claim!(sqlx::query_as(&sql), claim);
                for id in chunk {
                    query = query.bind(id);
                }
                query.fetch_all(pool).await?
            });
            for row in rows {
                claimed.push(Lease::try_from(row)?);
            }
        }
        Ok(claimed)
    }

    async fn mark_revoked_many(
        &self,
        ids: &[String],
        claimant: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let now = to_millis(now);
        let mut revoked = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH_BINDS) {
            let revoke = format!(
                "UPDATE leases SET state = 'revoked', revoked_at = $1, claimed_by = NULL, claim_until = NULL
                 WHERE id IN ({}) AND state = 'revoking' AND claimed_by = $2
                 RETURNING id",
                placeholders(chunk.len(), 3)
            );
            let marked: Vec<String> = with_pool!(self, |pool| {
                let mut tx = pool.begin().await?;
                let mut query = sqlx::query_scalar(&revoke).bind(now).bind(claimant);
                for id in chunk {
                    query = query.bind(id);
                }
                let marked: Vec<String> = query.fetch_all(&mut *tx).await?;
                if !marked.is_empty() {
                    // The record of each user goes with its lease, as in `mark_revoked`.
                    let forget = forget_issued_users_sql(&placeholders(marked.len(), 1));
                    let mut query = sqlx::query(&forget);
                    for id in &marked {
                        query = query.bind(id);
                    }
                    query.execute(&mut *tx).await?;
                }
                tx.commit().await?;
                marked
            });
            revoked.extend(marked);
        }
        Ok(revoked)
    }

    async fn release_lease_claim(&self, id: &str, claimant: &str) -> Result<()> {
        with_pool!(self, |pool| sqlx::query(
            "UPDATE leases SET claimed_by = NULL, claim_until = NULL
             WHERE id = $1 AND claimed_by = $2 AND state IN ('active', 'revoking')"
        )
        .bind(id)
        .bind(claimant)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    async fn mark_revoked(
        &self,
        id: &str,
        now: DateTime<Utc>,
        note: Option<&str>,
        user_dropped: bool,
    ) -> Result<()> {
        let write = LeaseWrite::MarkRevoked {
            id: id.to_owned(),
            now,
            note: note.map(str::to_owned),
            user_dropped,
        };
        self.write_lease(write).await?;
        Ok(())
    }

    async fn record_revocation_failure(
        &self,
        id: &str,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<i64> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "UPDATE leases SET state = 'revoking', attempts = attempts + 1, last_error = $1, next_action_at = $2,
                 claimed_by = NULL, claim_until = NULL
             WHERE id = $3 AND state IN ('creating', 'active', 'revoking') RETURNING attempts",
        )
        .bind(error)
        .bind(to_millis(retry_at))
        .bind(id)
        .fetch_optional(pool)
        .await?)
        .unwrap_or(0))
    }

    async fn claim_due_leases(&self, claim: &Claim<'_>, limit: i64) -> Result<Vec<DueLease>> {
        let skip_locked = match self.kind() {
            StoreKind::Postgres => "FOR UPDATE SKIP LOCKED",
            StoreKind::Sqlite => "",
        };
        // Two queries, not one with an OR: each is a range of its own index (`leases_due` up to
        // now, `leases_in_flight`), where the OR made both engines walk the whole due index
        // (0.55 s at 1,000,000 leases, with SQLite's write lock held).
        // A `creating` lease keeps its state and deadline: its issuer may still be at work, and
        // taking it over is the revocation's step (`take_over_creating`).
        let claimed = "claimed_by = $1, claim_until = $3,
             state = CASE WHEN state = 'creating' THEN state ELSE 'revoking' END,
             next_action_at = CASE WHEN state = 'creating' THEN next_action_at ELSE $3 END";
        let due = format!(
            "UPDATE leases SET {claimed}
             WHERE id IN (
                 SELECT id FROM leases
                 WHERE state IN ('creating', 'active', 'revoking') AND next_action_at <= $2
                     AND {unclaimed}
                 ORDER BY next_action_at LIMIT $5 {skip_locked}
             )
             RETURNING *",
            unclaimed = claim.unclaimed_sql("leases"),
        );
        // In flight on a dead replica, whatever their next action's time: taken over at once.
        let orphaned = format!(
            "UPDATE leases SET {claimed}
             WHERE id IN (
                 SELECT id FROM leases
                 WHERE state IN ('creating', 'revoking') AND claimed_by IS NOT NULL
                     AND claimed_by <> $1 AND {dead}
                 ORDER BY next_action_at LIMIT $5 {skip_locked}
             )
             RETURNING *",
            dead = claim.dead_sql("leases"),
        );
        let mut rows: Vec<LeaseRow> =
            with_pool!(self, |pool| bind_claim!(sqlx::query_as(&orphaned), claim)
                .bind(limit)
                .fetch_all(pool)
                .await?);
        let room = limit - rows.len() as i64;
        if room > 0 {
            let more: Vec<LeaseRow> =
                with_pool!(self, |pool| bind_claim!(sqlx::query_as(&due), claim)
                    .bind(room)
                    .fetch_all(pool)
                    .await?);
            rows.extend(more);
        }
        Ok(rows.into_iter().map(DueLease::from).collect())
    }

    async fn irrevocable_leases(&self, min_attempts: i64, limit: i64) -> Result<Vec<Lease>> {
        let rows: Vec<LeaseRow> = with_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT * FROM leases WHERE state = 'revoking' AND attempts >= $1 ORDER BY id LIMIT $2"
        )
        .bind(min_attempts)
        .bind(limit)
        .fetch_all(pool)
        .await?
        });
        rows.into_iter().map(Lease::try_from).collect()
    }

    async fn next_due_after(&self, after: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        let next: Option<i64> = with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT MIN(next_action_at) FROM leases
             WHERE state IN ('creating', 'active', 'revoking') AND next_action_at > $1",
        )
        .bind(to_millis(after))
        .fetch_one(pool)
        .await?);
        Ok(next.map(from_millis))
    }

    async fn tidy_revoked(&self, before: DateTime<Utc>, limit: i64) -> Result<u64> {
        let done = with_pool!(self, |pool| {
            sqlx::query(
            "DELETE FROM leases WHERE id IN (SELECT id FROM leases WHERE state = 'revoked' AND revoked_at < $1 LIMIT $2)",
        )
        .bind(to_millis(before))
        .bind(limit)
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(done)
    }

    async fn count_leases(&self, state: LeaseState) -> Result<i64> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM leases WHERE state = $1"
        )
        .bind(state)
        .fetch_one(pool)
        .await?))
    }
}

/// What the catalog's connection deletion asks about leases, and two queries of other areas (static
/// roles on a connection, the token count) that the split of this file left here: inherent
/// methods, so their callers need no trait.
impl Store {
    /// Live (creating, active or revoking) leases on `connection`.
    pub async fn count_live_leases_on_connection(&self, connection: &str) -> Result<i64> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            COUNT_LIVE_LEASES_ON_CONNECTION
        )
        .bind(connection)
        .fetch_one(pool)
        .await?))
    }

    /// Static roles whose user lives on `connection`.
    pub async fn static_roles_on_connection(&self, connection: &str) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT name FROM static_roles WHERE db_name = $1 ORDER BY name"
        )
        .bind(connection)
        .fetch_all(pool)
        .await?))
    }

    // ---- tokens -----------------------------------------------------------------------------

    pub async fn count_tokens(&self) -> Result<i64> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM tokens"
        )
        .fetch_one(pool)
        .await?))
    }
}

/// `count` bound parameters from `$first` on, as an `IN (...)` list takes them.
fn placeholders(count: usize, first: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// [`Store::count_live_leases_on_connection`]'s query, through `leases_connection`.
const COUNT_LIVE_LEASES_ON_CONNECTION: &str = "SELECT COUNT(*) FROM leases
     WHERE connection_name = $1 AND state IN ('creating', 'active', 'revoking')";

/// Rows per `INSERT` of [`Store::seed_leases`]: 23 bound values each, well under SQLite's 32,766
/// and PostgreSQL's 65,535 parameters per statement.
const SEED_ROWS_PER_STATEMENT: usize = 500;

impl Store {
    /// Writes `leases` exactly as given, in one transaction, a few hundred rows per statement:
    /// for filling a store with leases whose users do not exist (`lessor bench --leases N`
    /// measures the API with a large store this way). Unlike [`Store::insert_lease`] it checks
    /// no connection and records no issued user: nothing was created on a database, so
    /// reconciliation has nothing to find, and the caller gives the leases an expiry it will not
    /// reach if the reaper is to leave them alone.
    pub async fn seed_leases(&self, leases: &[Lease]) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            for chunk in leases.chunks(SEED_ROWS_PER_STATEMENT) {
                let mut query = sqlx::QueryBuilder::new(
                    "INSERT INTO leases (id, role_name, connection_name, username, revocation_statements,
                         rollback_statements, renew_statements, issued_at, last_renewed_at, expires_at,
                         max_expires_at, state, next_action_at, attempts, last_error, revoked_at, owner,
                         revoke_requested, token_accessor, claimed_by, claim_until, database_name,
                         owner_display_name) ",
                );
                query.push_values(chunk, |mut row, lease| {
                    row.push_bind(&lease.id)
                        .push_bind(&lease.role_name)
                        .push_bind(&lease.connection_name)
                        .push_bind(&lease.username)
                        .push_bind(encode_statements(&lease.revocation_statements))
                        .push_bind(encode_statements(&lease.rollback_statements))
                        .push_bind(encode_statements(&lease.renew_statements))
                        .push_bind(to_millis(lease.issued_at))
                        .push_bind(lease.last_renewed_at.map(to_millis))
                        .push_bind(to_millis(lease.expires_at))
                        .push_bind(to_millis(lease.max_expires_at))
                        .push_bind(lease.state)
                        .push_bind(to_millis(lease.next_action_at))
                        .push_bind(lease.attempts)
                        .push_bind(&lease.last_error)
                        .push_bind(lease.revoked_at.map(to_millis))
                        .push_bind(&lease.owner)
                        .push_bind(lease.revoke_requested)
                        .push_bind(&lease.token_accessor)
                        .push_bind(&lease.claimed_by)
                        .push_bind(lease.claim_until.map(to_millis))
                        .push_bind(&lease.database_name)
                        .push_bind(&lease.owner_display_name);
                });
                query.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Makes every active lease of `role` fall due at `at`, in one statement, and returns how
    /// many it moved: `lessor bench` builds its reaper backlog this way, so that the whole backlog
    /// is due at one moment instead of spread over the seconds its issuing took (a lease's TTL
    /// counts from its own issue, in whole seconds). It scans the table: no index is kept by role
    /// for this alone, since every lease write would pay for it (migration 0019).
    pub async fn expire_role_leases_at(&self, role: &str, at: DateTime<Utc>) -> Result<u64> {
        let at = to_millis(at);
        Ok(with_pool!(self, |pool| {
            sqlx::query(
            "UPDATE leases SET expires_at = $1, next_action_at = $1 WHERE role_name = $2 AND state = 'active'",
        )
        .bind(at)
        .bind(role)
        .execute(pool)
        .await?
        .rows_affected()
        }))
    }
}

/// Deletes the records of the users of the leases whose ids are the placeholders `ids` (see
/// [`LeaseStore::mark_revoked_many`]). Found through the leases' primary key and then the
/// records' own, (connection, user): with `lease_id IN (...)` as the test, both engines read
/// every record in the table for each batch (`issued_users` has no index on `lease_id`), so the
/// cost of a bulk revocation grew with the number of users on record.
fn forget_issued_users_sql(ids: &str) -> String {
    format!(
        "DELETE FROM issued_users WHERE (connection_name, username, lease_id) IN
             (SELECT connection_name, username, id FROM leases WHERE id IN ({ids}))"
    )
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::SqlitePool;

    use super::*;
    use crate::store::{CatalogStore, Connection};

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
            .upsert_connection(&Connection {
                name: "db".into(),
                plugin_name: "postgresql-database-plugin".into(),
                connection_url_sealed: String::new(),
                username: String::new(),
                password_sealed: String::new(),
                allowed_roles: vec![],
                verify_connection: false,
                max_open_connections: 1,
                root_rotation_statements: vec![],
                tls_ca_sealed: None,
                tls_certificate_sealed: None,
                private_key_sealed: None,
                tls_certificate_key_sealed: None,
                tls_server_name: None,
                tls_skip_verify: false,
                disable_escaping: false,
                password_authentication: "password".into(),
                scram_iterations: 4096,
                password_policy: None,
                created_at: chrono::DateTime::UNIX_EPOCH,
                updated_at: chrono::DateTime::UNIX_EPOCH,
            })
            .await
            .unwrap();
        for id in ids {
            store
                .insert_lease(&Lease {
                    id: (*id).to_owned(),
                    role_name: "r".into(),
                    connection_name: "db".into(),
                    username: format!("u-{}", id.replace('/', "-")),
                    revocation_statements: vec![],
                    rollback_statements: vec![],
                    renew_statements: vec![],
                    issued_at: from_millis(0),
                    last_renewed_at: None,
                    expires_at: from_millis(1),
                    max_expires_at: from_millis(1),
                    state: LeaseState::Active,
                    next_action_at: from_millis(1),
                    attempts: 0,
                    last_error: None,
                    revoked_at: None,
                    owner: "o".into(),
                    owner_display_name: format!("name-of-{}", &id[id.len() - 1..]),
                    revoke_requested: false,
                    token_accessor: None,
                    claimed_by: None,
                    claim_until: None,
                    database_name: None,
                })
                .await
                .unwrap();
        }
        store
    }

    /// SQLite's plan for `sql` with `values` bound: the `detail` of each step (the index and the
    /// constraints it uses), joined with "; ".
    async fn query_plan(store: &Store, sql: &str, values: &[&str]) -> String {
        use sqlx::Row;
        let sql = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query(&sql);
        for value in values {
            query = query.bind(*value);
        }
        let steps: Vec<String> = query
            .fetch_all(store.sqlite_pool().unwrap())
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect();
        steps.join("; ")
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
        // One owner's leases only (each test lease is owned by `name-of-<its last letter>`).
        let owned = store
            .live_lease_ids_of_owner_in(&IdRange::under("database/creds/app"), "", 100, "name-of-b")
            .await
            .unwrap();
        assert_eq!(owned, ["database/creds/app/b"]);
        let elsewhere = store
            .live_lease_ids_of_owner_in(
                &IdRange::under("database/creds/app2"),
                "",
                100,
                "name-of-b",
            )
            .await
            .unwrap();
        assert!(elsewhere.is_empty(), "{elsewhere:?}");

        let plan = query_plan(&store, LIVE_IDS_IN_RANGE, &["a/", "a0", "", "10"]).await;
        assert!(
            plan.contains("sqlite_autoindex_leases_1") && plan.contains("id>? AND id<?"),
            "not a primary-key range scan: {plan}"
        );
        eprintln!("plan: {plan}");
        // One owner's leases come from the owner index, not a scan of every lease in the range.
        let plan = query_plan(
            &store,
            LIVE_IDS_OF_OWNER_IN_RANGE,
            &["a/", "a0", "", "10", "someone"],
        )
        .await;
        assert!(
            plan.contains("leases_owner_display_name"),
            "not through the owner index: {plan}"
        );
        store.close().await;
    }

    /// A bulk revocation records only the leases its claimant still holds, once, forgets the
    /// records of those leases' users and no others, finding them by primary key rather than
    /// reading every record.
    #[tokio::test]
    async fn bulk_revocation_forgets_its_users_records_through_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let ids = [
            "database/creds/r/a",
            "database/creds/r/b",
            "database/creds/r/c",
        ];
        let store = store_with_leases(dir.path(), &ids).await;
        let recorded = || async {
            let mut users: Vec<String> = sqlx::query_scalar("SELECT username FROM issued_users")
                .fetch_all(store.sqlite_pool().unwrap())
                .await
                .unwrap();
            users.sort();
            users
        };
        assert_eq!(
            recorded().await,
            [
                "u-database-creds-r-a",
                "u-database-creds-r-b",
                "u-database-creds-r-c"
            ]
        );
        let claim = Claim::new("me", from_millis(1), from_millis(30_000), from_millis(0));
        let both = [ids[0].to_owned(), ids[2].to_owned()];
        assert_eq!(
            store.mark_revoking_many(&both, &claim).await.unwrap().len(),
            2
        );
        // Marked only under the claimant's own claim.
        let elsewhere = store
            .mark_revoked_many(&both, "someone else", from_millis(5))
            .await
            .unwrap();
        assert!(elsewhere.is_empty(), "{elsewhere:?}");
        assert_eq!(recorded().await.len(), 3);
        let mut marked = store
            .mark_revoked_many(&both, "me", from_millis(5))
            .await
            .unwrap();
        marked.sort();
        assert_eq!(marked, both);
        assert_eq!(recorded().await, ["u-database-creds-r-b"]);
        let again = store
            .mark_revoked_many(&both, "me", from_millis(6))
            .await
            .unwrap();
        assert!(again.is_empty(), "marked twice: {again:?}");
        for id in ids {
            let state = store.get_lease(id).await.unwrap().unwrap().state;
            let expected = if id == ids[1] {
                LeaseState::Active
            } else {
                LeaseState::Revoked
            };
            assert_eq!(state, expected, "{id}");
        }

        let plan = query_plan(&store, &forget_issued_users_sql("$1, $2"), &ids[..2]).await;
        assert!(
            plan.contains("SEARCH issued_users USING PRIMARY KEY") && !plan.contains("SCAN"),
            "the records are not found by their key: {plan}"
        );
        store.close().await;
    }

    /// A statement list that is not JSON fails the read of its own lease, naming the table and
    /// column, and nothing else: the reaper still claims the lease with the others due.
    #[tokio::test]
    async fn a_malformed_statement_list_fails_its_own_lease_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_leases(
            dir.path(),
            &["database/creds/r/bad", "database/creds/r/good"],
        )
        .await;
        sqlx::query("UPDATE leases SET renew_statements = 'not json' WHERE id = $1")
            .bind("database/creds/r/bad")
            .execute(store.sqlite_pool().unwrap())
            .await
            .unwrap();
        let error = store.get_lease("database/creds/r/bad").await.unwrap_err();
        assert!(
            matches!(&error, Error::Internal(message)
                if message.contains("leases.renew_statements")
                    && message.contains("database/creds/r/bad")),
            "{error:?}"
        );
        assert!(store
            .get_lease("database/creds/r/good")
            .await
            .unwrap()
            .is_some());
        let claim = Claim::new("r", from_millis(10), from_millis(20), from_millis(0));
        let mut due: Vec<String> = store
            .claim_due_leases(&claim, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|lease| lease.id)
            .collect();
        due.sort();
        assert_eq!(due, ["database/creds/r/bad", "database/creds/r/good"]);
        store.close().await;
    }

    /// A store file in `dir` with only the SQLite migrations whose names sort before `first_left_out`:
    /// what an earlier release left behind, for `Store::open` to migrate the rest of the way.
    async fn store_migrated_before(dir: &Path, first_left_out: &str) -> (SqlitePool, PathBuf) {
        let earlier = dir.join("earlier-migrations");
        std::fs::create_dir(&earlier).unwrap();
        let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        for entry in std::fs::read_dir(&all).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name.as_str() < first_left_out {
                std::fs::copy(&path, earlier.join(&name)).unwrap();
            }
        }
        let file = dir.join("lessor.db");
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
        (pool, file)
    }

    /// Closes the pool of a store [`store_migrated_before`] made, and opens the store as Lessor
    /// does, which runs the migrations left out.
    async fn open_after_the_rest(pool: SqlitePool, file: &Path) -> Store {
        pool.close().await;
        Store::open(&file.display().to_string()).await.unwrap()
    }

    /// Migration 0004 rebuilds the leases table: a store written before it keeps its leases.
    #[tokio::test]
    async fn leases_survive_the_lifecycle_migration() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, file) = store_migrated_before(dir.path(), "0004").await;
        sqlx::query(
            "INSERT INTO leases (id, role_name, connection_name, username, issued_at, expires_at,
                 max_expires_at, state, next_action_at, owner)
             VALUES ('database/creds/r/old', 'r', 'db', 'u', 1, 2, 3, 'revoking', 4, 'o')",
        )
        .execute(&pool)
        .await
        .unwrap();
        let store = open_after_the_rest(pool, &file).await;
        let lease = store
            .get_lease("database/creds/r/old")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(lease.state, LeaseState::Revoking);
        assert_eq!(
            (lease.expires_at, lease.next_action_at),
            (from_millis(2), from_millis(4))
        );
        assert!(!lease.revoke_requested && lease.token_accessor.is_none());
        assert!(
            lease.revocation_statements.is_empty(),
            "the column's default is an empty list"
        );
        let claim = Claim::new("r", from_millis(10), from_millis(20), from_millis(0));
        assert_eq!(store.claim_due_leases(&claim, 10).await.unwrap().len(), 1);
        store.close().await;
    }

    /// Migration 0019 drops `leases_role`, which every state change of a lease rewrote and no
    /// request's query used; a store written before keeps its leases, and the one search by
    /// role (the benchmark's backlog, `expire_role_leases_at`) still finds exactly that role's.
    #[tokio::test]
    async fn no_lease_index_is_rewritten_by_a_state_change_for_the_role() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, file) = store_migrated_before(dir.path(), "0019").await;
        for (id, role) in [("database/creds/r/a", "r"), ("database/creds/s/b", "s")] {
            sqlx::query(
                "INSERT INTO leases (id, role_name, connection_name, username, issued_at,
                     expires_at, max_expires_at, state, next_action_at, owner)
                 VALUES ($1, $2, 'db', $1, 1, 2, 3, 'active', 2, 'o')",
            )
            .bind(id)
            .bind(role)
            .execute(&pool)
            .await
            .unwrap();
        }
        let store = open_after_the_rest(pool, &file).await;
        let indexes: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_index_list('leases')")
                .fetch_all(store.sqlite_pool().unwrap())
                .await
                .unwrap();
        assert!(
            !indexes.iter().any(|name| name == "leases_role"),
            "{indexes:?}"
        );
        assert!(
            indexes.iter().any(|name| name == "leases_due"),
            "{indexes:?}"
        );
        let at = from_millis(1_000);
        assert_eq!(store.expire_role_leases_at("r", at).await.unwrap(), 1);
        let moved = store
            .get_lease("database/creds/r/a")
            .await
            .unwrap()
            .unwrap();
        let kept = store
            .get_lease("database/creds/s/b")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((moved.expires_at, kept.expires_at), (at, from_millis(2)));
        store.close().await;
    }

    /// Migration 0018 drops two indexes every lease write paid for and no query needed, and keeps
    /// `issued_users` as its primary key alone; a new store has 2,048-byte pages. Searches by
    /// connection still go through an index, and a store written before keeps its user records.
    #[tokio::test]
    async fn lease_writes_touch_fewer_pages_and_searches_keep_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, file) = store_migrated_before(dir.path(), "0018").await;
        sqlx::query(
            "INSERT INTO issued_users (connection_name, username, lease_id, issued_at, suspect_sweeps)
             VALUES ('db', 'v-kept', 'database/creds/r/kept', 7, 1)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let store = open_after_the_rest(pool, &file).await;
        let sqlite = store.sqlite_pool().unwrap();
        let kept: (String, String, i64, i64) = sqlx::query_as(
            "SELECT username, lease_id, issued_at, suspect_sweeps FROM issued_users
             WHERE connection_name = 'db'",
        )
        .fetch_one(sqlite)
        .await
        .unwrap();
        assert_eq!(
            kept,
            ("v-kept".into(), "database/creds/r/kept".into(), 7, 1)
        );
        let without_rowid: i64 =
            sqlx::query_scalar("SELECT wr FROM pragma_table_list WHERE name = 'issued_users'")
                .fetch_one(sqlite)
                .await
                .unwrap();
        assert_eq!(without_rowid, 1, "issued_users still has a rowid b-tree");
        // (0020 brings `leases_connection` back, as the only index by connection.)
        let dropped: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'leases_creating'",
        )
        .fetch_one(sqlite)
        .await
        .unwrap();
        assert_eq!(dropped, 0);
        let plan = query_plan(&store, COUNT_LIVE_LEASES_ON_CONNECTION, &["db"]).await;
        assert!(
            plan.contains("USING INDEX leases_") && !plan.contains("SCAN"),
            "live leases by connection are not found through an index: {plan}"
        );
        // The store written before keeps its 4,096-byte pages (WAL mode cannot change them).
        let old_page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(sqlite)
            .await
            .unwrap();
        assert_eq!(old_page_size, 4096);
        store.close().await;

        let fresh = store_with_leases(dir.path().join("fresh").as_path(), &[]).await;
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(fresh.sqlite_pool().unwrap())
            .await
            .unwrap();
        assert_eq!(page_size, i64::from(crate::store::SQLITE_PAGE_SIZE));
        fresh.close().await;
    }

    /// Migration 0020 drops the index of usernames every lease write paid for: a store written
    /// before gets a record, pointing at the lease, for each live lease's user, so reconciliation
    /// (which now follows the record's lease id) still sees every user a live lease covers, and
    /// still sees the user of a revoked lease as a candidate.
    #[tokio::test]
    async fn live_leases_users_stay_on_record_without_the_username_index() {
        use crate::store::ReconcileStore;
        let dir = tempfile::tempdir().unwrap();
        let (pool, file) = store_migrated_before(dir.path(), "0020").await;
        for (id, username, state) in [
            ("database/creds/r/unrecorded", "v-unrecorded", "active"),
            ("database/creds/r/elsewhere", "v-elsewhere", "creating"),
            ("database/creds/r/revoked", "v-revoked", "revoked"),
        ] {
            sqlx::query(
                "INSERT INTO leases (id, role_name, connection_name, username, issued_at,
                     expires_at, max_expires_at, state, next_action_at, owner)
                 VALUES ($1, 'r', 'db', $2, 5, 6, 7, $3, 6, 'o')",
            )
            .bind(id)
            .bind(username)
            .bind(state)
            .execute(&pool)
            .await
            .unwrap();
        }
        // One live lease's user on record for another lease, counted suspect once; the revoked
        // lease's user on record for it.
        sqlx::query(
            "INSERT INTO issued_users (connection_name, username, lease_id, issued_at, suspect_sweeps, suspect_since)
             VALUES ('db', 'v-elsewhere', 'database/creds/r/older', 1, 1, 2),
                    ('db', 'v-revoked', 'database/creds/r/revoked', 5, 0, NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let store = open_after_the_rest(pool, &file).await;
        let sqlite = store.sqlite_pool().unwrap();
        let records: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT username, lease_id, issued_at, suspect_sweeps FROM issued_users ORDER BY username",
        )
        .fetch_all(sqlite)
        .await
        .unwrap();
        assert_eq!(
            records,
            vec![
                (
                    "v-elsewhere".into(),
                    "database/creds/r/elsewhere".into(),
                    5,
                    0
                ),
                ("v-revoked".into(), "database/creds/r/revoked".into(), 5, 0),
                (
                    "v-unrecorded".into(),
                    "database/creds/r/unrecorded".into(),
                    5,
                    0
                ),
            ]
        );
        let candidates: Vec<String> = store
            .orphan_candidates("db")
            .await
            .unwrap()
            .into_iter()
            .map(|user| user.username)
            .collect();
        assert_eq!(candidates, vec!["v-revoked".to_owned()]);
        let indexes: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_index_list('leases')")
                .fetch_all(sqlite)
                .await
                .unwrap();
        assert!(
            !indexes.iter().any(|name| name == "leases_user"),
            "{indexes:?}"
        );
        let plan = query_plan(&store, COUNT_LIVE_LEASES_ON_CONNECTION, &["db"]).await;
        assert!(
            plan.contains("USING INDEX leases_connection") && !plan.contains("SCAN"),
            "live leases by connection are not found through an index: {plan}"
        );
        assert_eq!(
            store.count_live_leases_on_connection("db").await.unwrap(),
            2
        );
        store.close().await;
    }
}
