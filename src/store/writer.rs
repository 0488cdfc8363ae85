//! Grouped commits for the hot path's lease writes (issue 10, target 1).
//!
//! Issuing a credential writes its lease twice (the `creating` row before the user exists, then
//! `active`), and revoking it twice more (`revoking`, then `revoked`). Run one by one, each write
//! is a transaction of its own: on SQLite a `BEGIN`, the statements and a `COMMIT`, each a hop to
//! sqlx's worker thread, and writers on different connections queue for SQLite's one write lock;
//! on PostgreSQL a WAL flush per write. Under load most of a broker's store time went there.
//!
//! So these four writes go to one task per store, which takes every write waiting when it comes
//! round (up to [`MAX_GROUP`]), runs them in one transaction and commits once: the commit, and
//! on PostgreSQL the flush, is shared by the whole group. A write still answers only after the
//! commit that holds it, so it is as durable as before, and the lease row is still written before
//! the user is created. The writes of one caller keep their order (the caller waits for each).
//!
//! A group in which any statement fails is rolled back and its writes are run again one per
//! transaction, so one bad write (a duplicate id, say) fails alone and never takes the others'
//! work with it; every write here is a conditional statement that is safe to run again after a
//! rollback.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::leases::insert_lease_in;
use super::{to_millis, Backend, Claim, Lease};
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

/// One of the hot path's lease writes; each answers the rows its main statement changed.
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
    answer: oneshot::Sender<Result<u64>>,
}

/// The handle on a store's writer task; cheap to clone. The task ends when the last handle goes.
#[derive(Clone, Debug)]
pub(super) struct GroupWriter {
    jobs: mpsc::Sender<Job>,
    /// Transactions the writer committed: fewer than the writes when groups formed.
    commits: Arc<AtomicU64>,
}

impl GroupWriter {
    /// Starts the writer task of the store over `backend` (on the current Tokio runtime).
    pub(super) fn start(backend: Backend) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        if let Backend::Sqlite(pool) = &backend {
            tokio::spawn(checkpoint_in_background(pool.clone(), jobs.downgrade()));
        }
        tokio::spawn(run(backend, queue, commits.clone()));
        Self { jobs, commits }
    }

    /// Transactions committed so far.
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `write` in the next group and answers once that group has committed.
    pub(super) async fn write(&self, write: LeaseWrite) -> Result<u64> {
        let (answer, answered) = oneshot::channel();
        let gone = || Error::StoreUnavailable("the store's writer has stopped".into());
        self.jobs
            .send(Job { write, answer })
            .await
            .map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
    }
}

async fn run(backend: Backend, mut queue: mpsc::Receiver<Job>, commits: Arc<AtomicU64>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
        let jobs = std::mem::take(&mut group);
        let writes: Vec<&LeaseWrite> = jobs.iter().map(|job| &job.write).collect();
        match commit(&backend, &writes, &commits).await {
            Ok(rows) => {
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
                // Rolled back: each write again in a transaction of its own, so the failure
                // stays with the write that caused it.
                for job in jobs {
                    let alone = commit(&backend, &[&job.write], &commits).await;
                    let _ = job.answer.send(alone.map(|rows| rows[0]));
                }
            }
        }
        group = Vec::with_capacity(MAX_GROUP);
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
async fn checkpoint_in_background(pool: sqlx::SqlitePool, writer: mpsc::WeakSender<Job>) {
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

/// The body of [`commit`], compiled once per engine as `with_pool!` does: one SQL text for both.
macro_rules! run_group {
    ($pool:expr, $writes:expr) => {{
        let mut tx = $pool.begin().await?;
        let mut changed = Vec::with_capacity($writes.len());
        for write in $writes {
            let rows = match write {
                LeaseWrite::Insert(lease) => insert_lease_in!(&mut *tx, lease),
                LeaseWrite::Activate { id, next_action_at } => sqlx::query(
                    "UPDATE leases SET state = 'active', next_action_at = $1, claimed_by = NULL, claim_until = NULL
                     WHERE id = $2 AND state = 'creating' AND revoke_requested = FALSE",
                )
                .bind(to_millis(*next_action_at))
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                LeaseWrite::MarkRevoking { id, claim, due_by } => {
                    let claim = claim.borrowed();
                    let sql = format!(
                        "UPDATE leases SET state = 'revoking', next_action_at = $3, claimed_by = $1, claim_until = $3
                         WHERE id = $5 AND state IN ('active', 'revoking') AND {free}
                             AND ($6 IS NULL OR next_action_at <= $6)",
                        free = claim.free_sql("leases")
                    );
                    bind_claim!(sqlx::query(&sql), claim)
                        .bind(id)
                        .bind(due_by.map(to_millis))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                }
                LeaseWrite::MarkRevoked {
                    id,
                    now,
                    note,
                    user_dropped,
                } => {
                    let gone: Option<(String, String)> = sqlx::query_as(
                        "UPDATE leases SET state = 'revoked', revoked_at = $1, last_error = COALESCE($2, last_error),
                             claimed_by = NULL, claim_until = NULL
                         WHERE id = $3 AND state != 'revoked'
                         RETURNING connection_name, username",
                    )
                    .bind(to_millis(*now))
                    .bind(note)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let rows = u64::from(gone.is_some());
                    if let (Some((connection, username)), true) = (gone, *user_dropped) {
                        sqlx::query(
                            "DELETE FROM issued_users WHERE connection_name = $1 AND username = $2 AND lease_id = $3",
                        )
                        .bind(connection)
                        .bind(username)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    rows
                }
            };
            changed.push(rows);
        }
        tx.commit().await?;
        Ok::<_, Error>(changed)
    }};
}

/// Runs `writes` in one transaction, in order, and commits; the rows each changed.
async fn commit(
    backend: &Backend,
    writes: &[&LeaseWrite],
    commits: &AtomicU64,
) -> Result<Vec<u64>> {
    let changed = match backend {
        Backend::Sqlite(pool) => run_group!(pool, writes),
        Backend::Postgres(pool) => run_group!(pool, writes),
    }?;
    commits.fetch_add(1, Ordering::Relaxed);
    Ok(changed)
}
