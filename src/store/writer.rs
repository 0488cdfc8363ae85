//! Grouped commits for the hot path's lease writes (issue 10, target 1).
//!
//! Issuing a credential writes its lease twice (the `creating` row before the user exists, then
//! `active`), and revoking it twice more (`revoking`, then `revoked`). Run one by one, each write
//! is a transaction of its own: on SQLite a `BEGIN`, the statements and a `COMMIT`, each a hop to
//! sqlx's worker thread, and writers on different connections queue for SQLite's one write lock;
//! on PostgreSQL a WAL flush per write. Under load most of a broker's store time went there.
//!
//! So these four writes go to one writer per store, which takes every write waiting when it comes
//! round (up to [`MAX_GROUP`]), runs them in one transaction and commits once: the commit, and
//! on PostgreSQL the flush, is shared by the whole group. On PostgreSQL the writer is a task on
//! the pool; on SQLite it is a thread with a connection of its own (see [`SqliteWriter`]), so a
//! group's statements run without a hop to another thread each. A write still answers only after the
//! commit that holds it, so it is as durable as before, and the lease row is still written before
//! the user is created. The writes of one caller keep their order (the caller waits for each).
//!
//! A group in which any statement fails is rolled back and its writes are run again one per
//! transaction, so one bad write (a duplicate id, say) fails alone and never takes the others'
//! work with it; every write here is a conditional statement that is safe to run again after a
//! rollback.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::leases::{
    encode_statements, insert_lease_in, LeaseRow, FORGET_ISSUED_USER, INSERT_LEASE,
    RECORD_ISSUED_USER,
};
use super::{to_millis, Claim, Lease};
use crate::error::{Error, Result};

/// Writes one group takes at most: enough to share a commit among every request a busy 2-core
/// machine has in flight, few enough that the first in the group does not wait long for the last.
const MAX_GROUP: usize = 64;

/// Writes waiting for the writer before callers wait to hand theirs over.
const QUEUE: usize = 1024;

/// A claim with owned fields, to travel to the writer (see [`Claim`]).
#[derive(Debug)]
pub(super) struct OwnedClaim {
    by: String,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    stale_before: DateTime<Utc>,
}

impl From<&Claim<'_>> for OwnedClaim {
    fn from(claim: &Claim<'_>) -> Self {
        Self {
            by: claim.by().to_owned(),
            now: claim.now(),
            until: claim.until(),
            stale_before: claim.stale_before(),
        }
    }
}

impl OwnedClaim {
    fn borrowed(&self) -> Claim<'_> {
        Claim::new(&self.by, self.now, self.until, self.stale_before)
    }
}

/// What a lease write answers once its group has committed.
#[derive(Debug, Default)]
pub(super) struct Written {
    /// The rows the write's main statement changed.
    pub rows: u64,
    /// For [`LeaseWrite::ClaimForRevocation`], the lease row as the claim left it.
    pub claimed: Option<Box<LeaseRow>>,
}

impl Written {
    fn rows(rows: u64) -> Self {
        Self {
            rows,
            claimed: None,
        }
    }

    fn claimed(row: Option<LeaseRow>) -> Self {
        Self {
            rows: u64::from(row.is_some()),
            claimed: row.map(Box::new),
        }
    }
}

/// One of the hot path's lease writes.
#[derive(Debug)]
pub(super) enum LeaseWrite {
    /// A new lease row and the record of its user (see `LeaseStore::insert_lease`); 0 rows when
    /// the lease's connection does not exist.
    Insert(Box<Lease>),
    /// `creating -> active` unless a revoke was requested meanwhile.
    Activate {
        id: String,
        next_action_at: DateTime<Utc>,
    },
    /// `active|revoking -> revoking` under `claim`, only while due by `due_by` if given.
    MarkRevoking {
        id: String,
        claim: OwnedClaim,
        due_by: Option<DateTime<Utc>>,
    },
    /// `active|revoking -> revoking` under `claim` for a client's revocation, answering the row
    /// as claimed; with `owner` (entity id, token accessor) only a lease owned by either.
    ClaimForRevocation {
        id: String,
        claim: OwnedClaim,
        owner: Option<(String, String)>,
    },
    /// `-> revoked`, forgetting the user's record when it was dropped.
    MarkRevoked {
        id: String,
        now: DateTime<Utc>,
        note: Option<String>,
        user_dropped: bool,
    },
}

struct Job {
    write: LeaseWrite,
    answer: oneshot::Sender<Result<Written>>,
}

/// What the writer is handed: a write, or the store's close (answered once the writer has let go
/// of its connection).
enum Message {
    Write(Job),
    Close(oneshot::Sender<()>),
}

/// The handle on a store's writer; cheap to clone. The writer ends when the store is closed or
/// the last handle goes.
#[derive(Clone, Debug)]
pub(super) struct GroupWriter {
    messages: mpsc::Sender<Message>,
    /// Transactions the writer committed: fewer than the writes when groups formed.
    commits: Arc<AtomicU64>,
}

impl GroupWriter {
    /// Starts the writer of the SQLite store in the file `path` (whose pool is `pool`): a thread
    /// of its own with a connection of its own (see [`SqliteWriter`]).
    pub(super) fn start_sqlite(pool: sqlx::SqlitePool, path: &Path) -> Result<Self> {
        let connection = SqliteWriter::open(path)?;
        let (messages, queue) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        tokio::spawn(checkpoint_in_background(pool, messages.downgrade()));
        let counted = commits.clone();
        std::thread::Builder::new()
            .name("lessor-store-writer".into())
            .spawn(move || run_on_thread(connection, queue, &counted))
            .map_err(|e| Error::Internal(format!("cannot start the store's writer thread: {e}")))?;
        Ok(Self { messages, commits })
    }

    /// Starts the writer task of the PostgreSQL store over `pool` (on the current Tokio runtime).
    pub(super) fn start_postgres(pool: sqlx::PgPool) -> Self {
        let (messages, queue) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        tokio::spawn(run_task(pool, queue, commits.clone()));
        Self { messages, commits }
    }

    /// Transactions committed so far.
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `write` in the next group and answers once that group has committed.
    pub(super) async fn write(&self, write: LeaseWrite) -> Result<Written> {
        let (answer, answered) = oneshot::channel();
        self.messages
            .send(Message::Write(Job { write, answer }))
            .await
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    /// Stops the writer once the writes already handed over are done; later writes fail as on
    /// a closed pool.
    pub(super) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.messages.send(Message::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

fn stopped() -> Error {
    Error::StoreUnavailable("the store's writer has stopped".into())
}

/// Commits groups of lease writes in one transaction each; what each write answers.
#[allow(async_fn_in_trait)] // implemented and called in this module only
trait GroupCommit {
    async fn commit(&mut self, writes: &[&LeaseWrite]) -> Result<Vec<Written>>;
}

/// Commits `jobs` as one group through `committer` and answers each. A group that fails is
/// rolled back and each write run again in a transaction of its own, so the failure stays with
/// the write that caused it.
async fn settle(committer: &mut impl GroupCommit, jobs: Vec<Job>, commits: &AtomicU64) {
    if jobs.is_empty() {
        return;
    }
    let writes: Vec<&LeaseWrite> = jobs.iter().map(|job| &job.write).collect();
    let outcome = committer.commit(&writes).await;
    drop(writes);
    match outcome {
        Ok(rows) => {
            commits.fetch_add(1, Ordering::Relaxed);
            for (job, rows) in jobs.into_iter().zip(rows) {
                let _ = job.answer.send(Ok(rows));
            }
        }
        Err(error) if jobs.len() == 1 => {
            if let Some(job) = jobs.into_iter().next() {
                let _ = job.answer.send(Err(error));
            }
        }
        Err(_) => {
            for job in jobs {
                let alone = committer.commit(&[&job.write]).await;
                if alone.is_ok() {
                    commits.fetch_add(1, Ordering::Relaxed);
                }
                let _ = job
                    .answer
                    .send(alone.map(|written| written.into_iter().next().unwrap_or_default()));
            }
        }
    }
}

/// Sorts `messages` into the writes of one group and, if the store is closing, the close.
fn group_of(messages: Vec<Message>) -> (Vec<Job>, Option<oneshot::Sender<()>>) {
    let mut jobs = Vec::with_capacity(messages.len());
    let mut close = None;
    for message in messages {
        match message {
            Message::Write(job) => jobs.push(job),
            Message::Close(done) => close = Some(done),
        }
    }
    (jobs, close)
}

/// The PostgreSQL writer: a task that takes every write waiting, up to [`MAX_GROUP`].
async fn run_task(pool: sqlx::PgPool, mut queue: mpsc::Receiver<Message>, commits: Arc<AtomicU64>) {
    let mut committer = PgGroups(pool);
    let mut messages = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut messages, MAX_GROUP).await > 0 {
        let (jobs, close) = group_of(std::mem::take(&mut messages));
        settle(&mut committer, jobs, &commits).await;
        if let Some(done) = close {
            let _ = done.send(());
            return;
        }
    }
}

/// The SQLite writer's thread: waits for a write, takes every other write waiting (up to
/// [`MAX_GROUP`]) and commits them together. Each group's statements run on this thread, with
/// no hop to another thread per statement; the futures `settle` makes here are ready at once.
fn run_on_thread(
    mut writer: SqliteWriter,
    mut queue: mpsc::Receiver<Message>,
    commits: &AtomicU64,
) {
    while let Some(first) = queue.blocking_recv() {
        let mut messages = vec![first];
        while messages.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(message) => messages.push(message),
                Err(_) => break,
            }
        }
        let (jobs, close) = group_of(messages);
        futures::executor::block_on(settle(&mut writer, jobs, commits));
        if let Some(done) = close {
            drop(writer);
            let _ = done.send(());
            return;
        }
    }
}

/// How often the SQLite store's WAL is copied back into the database file, off the hot path.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Checkpoints the SQLite store's WAL every [`CHECKPOINT_EVERY`] on a connection of the pool,
/// until the store is closed or dropped (the writer's last handle gone). SQLite's own automatic
/// checkpoint runs inside the commit that crosses its threshold (see `open_sqlite`), with an
/// `fsync` of the database file, so every write grouped into that commit waited for it; the
/// profile put a tenth of SQLite's time in checkpoints and syncs. A `PASSIVE` checkpoint never
/// blocks writers or readers, so running it here costs the hot path nothing.
async fn checkpoint_in_background(pool: sqlx::SqlitePool, writer: mpsc::WeakSender<Message>) {
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if writer.upgrade().is_none() || pool.is_closed() {
            return;
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            // The automatic checkpoint remains as a backstop, so a failure here only means the
            // WAL grows further before it is copied back.
            tracing::debug!(%error, "background WAL checkpoint failed");
        }
    }
}

/// `creating -> active` at `$1` for the lease `$2`, unless a revoke was requested meanwhile.
const ACTIVATE: &str =
    "UPDATE leases SET state = 'active', next_action_at = $1, claimed_by = NULL, claim_until = NULL
     WHERE id = $2 AND state = 'creating' AND revoke_requested = FALSE";

/// `-> revoked` at `$1` with the note `$2` for the lease `$3`; answers the lease's user.
const MARK_REVOKED: &str =
    "UPDATE leases SET state = 'revoked', revoked_at = $1, last_error = COALESCE($2, last_error),
         claimed_by = NULL, claim_until = NULL
     WHERE id = $3 AND state != 'revoked'
     RETURNING connection_name, username";

/// `active|revoking -> revoking` under the claim (`$1`-`$4`, see `bind_claim!`) for the lease
/// `$5`, where `condition` holds, followed by `tail`.
fn claim_revoking_sql(claim: &Claim<'_>, condition: &str, tail: &str) -> String {
    format!(
        "UPDATE leases SET state = 'revoking', next_action_at = $3, claimed_by = $1, claim_until = $3
         WHERE id = $5 AND state IN ('active', 'revoking') AND {free} AND {condition} {tail}",
        free = claim.free_sql("leases")
    )
}

/// [`claim_revoking_sql`] only while due by `$6` unless that is NULL.
fn mark_revoking_sql(claim: &Claim<'_>) -> String {
    claim_revoking_sql(claim, "($6 IS NULL OR next_action_at <= $6)", "")
}

/// [`claim_revoking_sql`] of a lease owned by `$6` or `$7` (unless `$6` is NULL), answering
/// the row.
fn claim_for_revocation_sql(claim: &Claim<'_>) -> String {
    claim_revoking_sql(
        claim,
        "($6 IS NULL OR owner = $6 OR owner = $7)",
        "RETURNING *",
    )
}

/// The PostgreSQL store's groups, on a connection of its pool.
struct PgGroups(sqlx::PgPool);

impl GroupCommit for PgGroups {
    async fn commit(&mut self, writes: &[&LeaseWrite]) -> Result<Vec<Written>> {
        let mut tx = self.0.begin().await?;
        let mut changed = Vec::with_capacity(writes.len());
        for write in writes {
            let written = match write {
                LeaseWrite::Insert(lease) => Written::rows(insert_lease_in!(&mut *tx, lease)),
                LeaseWrite::Activate { id, next_action_at } => Written::rows(
                    sqlx::query(ACTIVATE)
                        .bind(to_millis(*next_action_at))
                        .bind(id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected(),
                ),
                LeaseWrite::MarkRevoking { id, claim, due_by } => {
                    let claim = claim.borrowed();
                    let sql = mark_revoking_sql(&claim);
                    Written::rows(
                        bind_claim!(sqlx::query(&sql), claim)
                            .bind(id)
                            .bind(due_by.map(to_millis))
                            .execute(&mut *tx)
                            .await?
                            .rows_affected(),
                    )
                }
                LeaseWrite::ClaimForRevocation { id, claim, owner } => {
                    let claim = claim.borrowed();
                    let sql = claim_for_revocation_sql(&claim);
                    let (entity, accessor) = owner.clone().unzip();
                    let row: Option<LeaseRow> = bind_claim!(sqlx::query_as(&sql), claim)
                        .bind(id)
                        .bind(entity)
                        .bind(accessor)
                        .fetch_optional(&mut *tx)
                        .await?;
                    Written::claimed(row)
                }
                LeaseWrite::MarkRevoked {
                    id,
                    now,
                    note,
                    user_dropped,
                } => {
                    let gone: Option<(String, String)> = sqlx::query_as(MARK_REVOKED)
                        .bind(to_millis(*now))
                        .bind(note)
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let rows = u64::from(gone.is_some());
                    if let (Some((connection, username)), true) = (gone, *user_dropped) {
                        sqlx::query(FORGET_ISSUED_USER)
                            .bind(connection)
                            .bind(username)
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    Written::rows(rows)
                }
            };
            changed.push(written);
        }
        tx.commit().await?;
        Ok(changed)
    }
}

/// The SQLite store's writer: a connection of its own, driven by rusqlite on the writer's
/// thread. Through sqlx, every statement, `BEGIN` and `COMMIT` was a hop to sqlx's worker thread
/// and back (seven per issued credential, each two thread switches); the profile of issue 10
/// put a third of Lessor's CPU in those threads, half of it in the handing over. Here a group
/// costs one hand-over in and one answer out per write. The connection's page cache also
/// stays warm: no other connection writes the lease rows in between.
struct SqliteWriter(rusqlite::Connection);

impl SqliteWriter {
    /// Opens the store's file, already migrated, with the settings the pool's connections have
    /// (`open_sqlite`): WAL, `synchronous = NORMAL`, the same busy timeout and checkpoint
    /// backstop, foreign keys enforced.
    fn open(path: &Path) -> Result<Self> {
        let connection = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite_error)?;
        connection
            .busy_timeout(super::SQLITE_BUSY_TIMEOUT)
            .map_err(sqlite_error)?;
        for (pragma, value) in super::SQLITE_PRAGMAS {
            connection
                .pragma_update(None, pragma, value)
                .map_err(sqlite_error)?;
        }
        Ok(Self(connection))
    }
}

/// rusqlite's errors as the store's (see `impl From<sqlx::Error> for Error`): SQLite's messages
/// never quote bound values.
fn sqlite_error(error: rusqlite::Error) -> Error {
    Error::Store(error.to_string())
}

/// Prepares `sql` on `transaction` with `values` bound to `$1`, `$2`, ... (the numbered
/// placeholders the SQL texts share with PostgreSQL). SQLite numbers named parameters by first
/// appearance (`$22` may come after `$23`) and gives a repeated one a single index, so each index
/// is bound by the number in its name. Every value must have its placeholder and every
/// placeholder its value.
fn run_numbered<'t>(
    transaction: &'t rusqlite::Transaction<'_>,
    sql: &str,
    values: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<rusqlite::CachedStatement<'t>> {
    let mut statement = transaction.prepare_cached(sql)?;
    let count = statement.parameter_count();
    if count != values.len() {
        return Err(rusqlite::Error::InvalidParameterCount(values.len(), count));
    }
    for index in 1..=count {
        let name = statement.parameter_name(index).unwrap_or_default();
        let value = name
            .strip_prefix('$')
            .and_then(|number| number.parse::<usize>().ok())
            .and_then(|number| values.get(number.checked_sub(1)?))
            .ok_or_else(|| rusqlite::Error::InvalidParameterName(name.to_owned()))?;
        statement.raw_bind_parameter(index, value)?;
    }
    Ok(statement)
}

/// [`run_numbered`] for a statement without results: the rows it changed.
fn execute_numbered(
    transaction: &rusqlite::Transaction<'_>,
    sql: &str,
    values: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<u64> {
    Ok(run_numbered(transaction, sql, values)?.raw_execute()? as u64)
}

impl SqliteWriter {
    fn commit_group(&mut self, writes: &[&LeaseWrite]) -> rusqlite::Result<Vec<Written>> {
        // IMMEDIATE: the write lock is taken (or waited for) at the start, so no statement can
        // meet another connection's newer commit half way and fail with a stale snapshot.
        let transaction = self
            .0
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut changed = Vec::with_capacity(writes.len());
        for write in writes {
            let written = match write {
                LeaseWrite::Insert(lease) => {
                    let issued_at = to_millis(lease.issued_at);
                    let done = execute_numbered(
                        &transaction,
                        INSERT_LEASE,
                        &[
                            &lease.id,
                            &lease.role_name,
                            &lease.connection_name,
                            &lease.username,
                            &encode_statements(&lease.revocation_statements),
                            &encode_statements(&lease.rollback_statements),
                            &encode_statements(&lease.renew_statements),
                            &issued_at,
                            &lease.last_renewed_at.map(to_millis),
                            &to_millis(lease.expires_at),
                            &to_millis(lease.max_expires_at),
                            &lease.state.as_str(),
                            &to_millis(lease.next_action_at),
                            &lease.attempts,
                            &lease.last_error,
                            &lease.revoked_at.map(to_millis),
                            &lease.owner,
                            &lease.revoke_requested,
                            &lease.token_accessor,
                            &lease.claimed_by,
                            &lease.claim_until.map(to_millis),
                            &lease.connection_name,
                            &lease.database_name,
                            &lease.owner_display_name,
                        ],
                    )?;
                    if done > 0 {
                        execute_numbered(
                            &transaction,
                            RECORD_ISSUED_USER,
                            &[
                                &lease.connection_name,
                                &lease.username,
                                &lease.id,
                                &issued_at,
                            ],
                        )?;
                    }
                    Written::rows(done)
                }
                LeaseWrite::Activate { id, next_action_at } => Written::rows(execute_numbered(
                    &transaction,
                    ACTIVATE,
                    &[&to_millis(*next_action_at), id],
                )?),
                LeaseWrite::MarkRevoking { id, claim, due_by } => {
                    let claim = claim.borrowed();
                    Written::rows(execute_numbered(
                        &transaction,
                        &mark_revoking_sql(&claim),
                        &[
                            &claim.by(),
                            &to_millis(claim.now()),
                            &to_millis(claim.until()),
                            &to_millis(claim.stale_before()),
                            id,
                            &due_by.map(to_millis),
                        ],
                    )?)
                }
                LeaseWrite::ClaimForRevocation { id, claim, owner } => {
                    let claim = claim.borrowed();
                    let (entity, accessor) = owner.as_ref().map(|(e, a)| (e, a)).unzip();
                    let mut statement = run_numbered(
                        &transaction,
                        &claim_for_revocation_sql(&claim),
                        &[
                            &claim.by(),
                            &to_millis(claim.now()),
                            &to_millis(claim.until()),
                            &to_millis(claim.stale_before()),
                            id,
                            &entity,
                            &accessor,
                        ],
                    )?;
                    let mut rows = statement.raw_query();
                    Written::claimed(match rows.next()? {
                        Some(row) => Some(LeaseRow::from_rusqlite(row)?),
                        None => None,
                    })
                }
                LeaseWrite::MarkRevoked {
                    id,
                    now,
                    note,
                    user_dropped,
                } => {
                    let gone: Option<(String, String)> = {
                        let mut statement = run_numbered(
                            &transaction,
                            MARK_REVOKED,
                            &[&to_millis(*now), note, id],
                        )?;
                        let mut rows = statement.raw_query();
                        match rows.next()? {
                            Some(row) => Some((row.get(0)?, row.get(1)?)),
                            None => None,
                        }
                    };
                    let rows = u64::from(gone.is_some());
                    if let (Some((connection, username)), true) = (gone, *user_dropped) {
                        execute_numbered(
                            &transaction,
                            FORGET_ISSUED_USER,
                            &[&connection, &username, id],
                        )?;
                    }
                    Written::rows(rows)
                }
            };
            changed.push(written);
        }
        transaction.commit()?;
        Ok(changed)
    }
}

impl GroupCommit for SqliteWriter {
    async fn commit(&mut self, writes: &[&LeaseWrite]) -> Result<Vec<Written>> {
        // A failed group's transaction is rolled back when it is dropped.
        self.commit_group(writes).map_err(sqlite_error)
    }
}
