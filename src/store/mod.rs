//! The store: connections, roles, leases, tokens and the rest of Lessor's state, in SQLite (a file
//! in WAL mode, the embedded default for one process) or in PostgreSQL (shared by any number of
//! replicas), through sqlx with the migrations under `migrations/sqlite` or `migrations/postgres`
//! run at start-up.
//!
//! The interface is one trait per area, each in its own file and implemented for [`Store`], each
//! speaking domain types (times as `DateTime<Utc>`, durations as `Duration`, lists as
//! `Vec<String>`, JSON objects decoded):
//! - [`CatalogStore`] (`catalog.rs`): connections, roles and password policies.
//! - [`IdentityStore`] (`identity.rs`): tokens and their tree, ACL policies, JWT and
//!   certificate roles; [`TokenRoleStore`] (`token_roles.rs`): token roles; [`WrappingStore`]
//!   (`wrapping.rs`): wrapped answers.
//! - [`AuditStore`] (`audit.rs`): audit devices, source addresses, anomaly alerts.
//! - [`RotationStore`] (`static_roles.rs`): static roles, their claims and history, and the
//!   pending admin passwords of connections.
//! - [`MetaStore`] (`meta.rs`): named values of the installation.
//! - [`LeaseStore`] (`leases.rs`): leases; [`ReconcileStore`] (`reconcile.rs`): the users issued
//!   and periodic jobs; [`ReplicaStore`] (`replicas.rs`): the replica registry, the change feed,
//!   anomaly event windows; [`MetricsStore`] (`metrics.rs`): the lease gauges.
//!
//! Callers bring the traits they use into scope (`use crate::store::{CatalogStore, ...}`). Row
//! formats never leave this module: each table's `*Row` struct is private to its file and
//! converted to the domain type there; times are milliseconds since the epoch in the rows,
//! durations whole seconds, lists and objects JSON text (`codec.rs`), and a column that does not
//! decode is an internal error naming its table and column.
//!
//! There are two implementations, SQLite and PostgreSQL, and they are one text: every query is
//! written once, in SQL both engines run (`$1` placeholders, `ON CONFLICT`, `RETURNING`,
//! `TRUE`/`FALSE`), and [`with_pool!`] compiles it for each. The engines differ only where the
//! SQL must (claims take `FOR UPDATE SKIP LOCKED` on PostgreSQL), and one test suite
//! (`tests/store_suite.rs`) runs against both. One part runs the shared texts another way: on
//! SQLite, the hot path's lease writes are bound through rusqlite on a thread of their own
//! (`writer.rs`).
//!
//! Sealing happens above (callers pass sealed strings, in fields named `*_sealed`), and no query
//! loads all leases: the reaper asks for what is due, in batches, through the `leases_due` index.

/// Runs `$body` with `$pool` bound to the store's connection pool, whichever engine holds it: the
/// same query text and binds are compiled once per engine, so the two cannot drift apart.
/// Each use is counted as one store operation ([`Store::operations_run`]).
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {{
        $store.count_operation();
        match &$store.backend {
            $crate::store::Backend::Sqlite($pool) => $body,
            $crate::store::Backend::Postgres($pool) => $body,
        }
    }};
}

/// Binds a [`Claim`]'s values to `$1` (claimant), `$2` (now), `$3` (until), `$4` (stale before),
/// its times in the store's milliseconds.
macro_rules! bind_claim {
    ($query:expr, $claim:expr) => {
        $query
            .bind($claim.by())
            .bind($crate::store::to_millis($claim.now()))
            .bind($crate::store::to_millis($claim.until()))
            .bind($crate::store::to_millis($claim.stale_before()))
    };
}

mod audit;
mod cache;
mod catalog;
mod codec;
mod identity;
mod leases;
mod meta;
mod metrics;
mod pool;
mod reconcile;
mod replicas;
mod static_roles;
mod token_roles;
mod wrapping;
mod writer;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::SqlitePool;

pub use audit::{Alert, AuditDevice, AuditStore};
pub use catalog::{CatalogStore, Connection, ConnectionDeletion, Role};
pub use identity::{IdentityStore, Policy, Token};
pub use leases::{DueLease, IdRange, Lease, LeaseState, LeaseStore};
pub use meta::MetaStore;
pub use metrics::{LiveLeaseCount, MetricsStore};
pub use pool::{PoolStore, PooledSelection, PooledUser};
pub use reconcile::{IssuedUser, ReconcileStore, ADOPTED_WITHOUT_LEASE};
pub use replicas::{Change, ChangeFeed, Claim, Replica, ReplicaStore};
pub use static_roles::{
    Promotion, RotationRecord, RotationStore, StaticRole, StaticRoleConfig, ROTATION_HISTORY_LEN,
};
pub use token_roles::{TokenRole, TokenRoleStore};
pub use wrapping::{WrappedResponse, WrappingStore};

use crate::error::{Error, Result};

/// Store errors keep their driver out of the library's error type: an unreachable store becomes
/// [`Error::StoreUnavailable`] (the API's 503, the reaper's "try again later"), anything else
/// [`Error::Store`]. Driver messages never carry bound values, so no secret is quoted.
impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        let unreachable = match &error {
            // A connection that breaks while it is being made (closed before the server's
            // answer) surfaces as a protocol error: the store is not reachable either way.
            sqlx::Error::Io(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // SQLSTATE class 08 is "connection exception"; 57P01-57P03 are a server shutting down
            // or starting up.
            sqlx::Error::Database(e) => e
                .code()
                .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
            _ => false,
        };
        if unreachable {
            Error::StoreUnavailable(error.to_string())
        } else {
            Error::Store(error.to_string())
        }
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        match error {
            sqlx::migrate::MigrateError::Execute(e) => match Error::from(e) {
                unavailable @ Error::StoreUnavailable(_) => unavailable,
                other => Error::Migration(other.to_string()),
            },
            other => Error::Migration(other.to_string()),
        }
    }
}

/// Milliseconds since the epoch, the store's time unit.
pub(crate) fn to_millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// `at` cut to the store's resolution (whole milliseconds, rounded down as [`to_millis`] does),
/// so a time handed in compares equal to the same time read back.
fn whole_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    from_millis(to_millis(at))
}

/// Which engine holds the store, with its connection pool.
#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which engine a store URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

impl StoreKind {
    /// The engine's name as `sys/health` and `sys/seal-status` report it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgresql",
        }
    }

    /// `postgres://` and `postgresql://` URLs name a PostgreSQL store; anything else is SQLite
    /// (`sqlite://...`, `sqlite::memory:` or a plain path).
    pub fn of(url: &str) -> Self {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::Postgres
        } else {
            Self::Sqlite
        }
    }
}

/// How long a request waits for a store connection before it is answered 503: long enough to
/// ride out a busy moment, short enough that an unreachable store is reported, not hidden.
const STORE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Handle on the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
    /// The hot path's catalog and identity reads, shared by every clone (see `cache.rs`).
    cache: Arc<cache::ReadCache>,
    /// Store operations run, shared by every clone: what a request costs, for tests and tuning.
    operations: Arc<AtomicU64>,
    /// The task that commits the hot path's lease writes in groups (see `writer.rs`).
    writer: writer::GroupWriter,
}

/// How long a SQLite store connection waits for another's write lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The page size of a new SQLite store file. A commit puts every page it changed into the WAL
/// whole: the row's table page and a page of each index the write touches. The four writes of an
/// issued and revoked credential change about 33 pages, so at SQLite's default of 4,096 bytes
/// they wrote about 130 KiB of WAL, and the copies and checksums of those pages were most of the
/// lease writer's CPU (issue 10's profile). At 2,048 bytes it is half. A lease row, a few hundred
/// bytes, still fits a page several times over. A store created with another page size keeps
/// it: SQLite cannot change it in WAL mode.
const SQLITE_PAGE_SIZE: u32 = 2048;

/// The settings of every SQLite store connection, the pool's and the lease writer's alike.
const SQLITE_PRAGMAS: [(&str, &str); 3] = [
    // WAL + NORMAL is durable across process crashes (what the lease lifecycle relies on); only
    // an OS crash can lose the last transactions.
    ("synchronous", "NORMAL"),
    // Checkpoints run in the background every second (`writer.rs`); SQLite's automatic one,
    // inside whichever commit crosses the threshold, stays as a backstop at 16,384 pages (64 MiB
    // of WAL) rather than its default 1,000.
    ("wal_autocheckpoint", "16384"),
    ("foreign_keys", "ON"),
];

/// Connect options of a store URL (`sqlite:///path/lessor.db`, `sqlite::memory:` or a plain path).
fn store_options(url: &str) -> Result<SqliteConnectOptions> {
    Ok(if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url).map_err(|e| Error::Config(format!("store url: {e}")))?
    } else {
        SqliteConnectOptions::new().filename(Path::new(url))
    })
}

/// The file a store URL names, or `None` for an in-memory or PostgreSQL store.
pub fn file_path(url: &str) -> Result<Option<PathBuf>> {
    if StoreKind::of(url) == StoreKind::Postgres {
        return Ok(None);
    }
    let options = store_options(url)?;
    let path = options.get_filename();
    // sqlx names an in-memory database `file:sqlx-in-memory-N`, so the URL is what tells.
    if path.as_os_str().is_empty() || url.contains(":memory:") || url.contains("mode=memory") {
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
    /// Opens the store a URL names (see [`StoreKind::of`]) and runs its pending migrations.
    pub async fn open(url: &str) -> Result<Self> {
        match StoreKind::of(url) {
            StoreKind::Sqlite => Self::open_sqlite(url).await,
            StoreKind::Postgres => Self::open_postgres(url).await,
        }
    }

    /// Opens (creating if needed) the SQLite store at `url` (`sqlite:///path/lessor.db` or a plain
    /// path) and runs pending migrations.
    ///
    /// The store holds token hashes and sealed secrets, so its files are the owner's only,
    /// whatever the umask: a missing directory is created 0700, and the database file is created
    /// 0600 *before* SQLite opens it, because SQLite gives the `-wal` and `-shm` files it creates
    /// later the main file's mode. Existing files with a wider mode are narrowed to 0600.
    async fn open_sqlite(url: &str) -> Result<Self> {
        let options = store_options(url)?;
        // The lease writer has a connection of its own (`writer.rs`), which an in-memory
        // database could not share; and a store that forgets its leases at exit would leave
        // every user it issued behind.
        let path = file_path(url)?.ok_or_else(|| {
            Error::Config(
                "store_url: an in-memory SQLite store is not supported (its leases, and so its \
                 users, would be forgotten at exit); give a file"
                    .into(),
            )
        })?;
        make_private(&path)?;
        let mut options = options
            .create_if_missing(true)
            .page_size(SQLITE_PAGE_SIZE)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(SQLITE_BUSY_TIMEOUT);
        for (pragma, value) in SQLITE_PRAGMAS {
            options = options.pragma(pragma, value);
        }
        // No ping before each use: a SQLite connection is a file handle that does not go stale,
        // and the ping was a measurable share of the hot path (issue 10's profile).
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .acquire_timeout(STORE_ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let writer = writer::GroupWriter::start_sqlite(pool.clone(), &path)?;
        Ok(Self::over(Backend::Sqlite(pool), writer))
    }

    /// Connects to the PostgreSQL store at `url` and runs pending migrations. sqlx's migrator
    /// holds a PostgreSQL advisory lock while it runs, so replicas starting together migrate
    /// once, one after the other. The URL takes libpq's TLS parameters (`sslmode=verify-full`,
    /// `sslrootcert=...`, `sslcert`, `sslkey`).
    async fn open_postgres(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("store_url: not a PostgreSQL URL: {e}")))?
            .application_name("lessor");
        // Each replica holds at most this many connections on the store: a handful of replicas
        // stays well under PostgreSQL's default limit of 100.
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(STORE_ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let writer = writer::GroupWriter::start_postgres(pool.clone());
        Ok(Self::over(Backend::Postgres(pool), writer))
    }

    /// A store over `backend` with an empty read cache, and its lease writer.
    fn over(backend: Backend, writer: writer::GroupWriter) -> Self {
        Self {
            writer,
            backend,
            cache: Arc::default(),
            operations: Arc::default(),
        }
    }

    /// Transactions the lease writer has committed (see `writer.rs`): fewer than the lease writes
    /// it ran when they came together and shared a commit.
    pub fn lease_write_commits(&self) -> u64 {
        self.writer.commits()
    }

    /// Runs one of the hot path's lease writes in the writer's next group (see `writer.rs`);
    /// the rows its main statement changed. Counted as one store operation.
    async fn write_lease(&self, write: writer::LeaseWrite) -> Result<writer::Written> {
        self.count_operation();
        self.writer.write(write).await
    }

    /// Which engine holds this store.
    pub fn kind(&self) -> StoreKind {
        match self.backend {
            Backend::Sqlite(_) => StoreKind::Sqlite,
            Backend::Postgres(_) => StoreKind::Postgres,
        }
    }

    /// The SQLite pool of an embedded store (tests reach under the API through it); `None` on
    /// PostgreSQL.
    pub fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match &self.backend {
            Backend::Sqlite(pool) => Some(pool),
            Backend::Postgres(_) => None,
        }
    }

    /// Answers whether the store can be reached, waiting at most `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<()> {
        let query = async {
            with_pool!(self, |pool| sqlx::query_scalar::<_, i64>(
                "SELECT CAST(1 AS BIGINT)"
            )
            .fetch_one(pool)
            .await?);
            Ok(())
        };
        tokio::time::timeout(timeout, query)
            .await
            .unwrap_or_else(|_| {
                Err(Error::StoreUnavailable(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                )))
            })
    }

    /// Closes every connection of the pool (a test's last step, or shutdown).
    pub async fn close(&self) {
        self.writer.close().await;
        with_pool!(self, |pool| pool.close().await)
    }
}
