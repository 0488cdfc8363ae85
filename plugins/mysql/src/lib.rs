//! The MySQL and MariaDB engine of Lessor: creates, rotates and drops database accounts through
//! a `mysql_async` connection pool.
//!
//! - `dsn`: the two connection URL forms (Vault's `user:pass@tcp(host:port)/` and `mysql://`).
//! - `tls`: the URL's TLS mode and the connection's TLS fields, checked and combined.
//! - `sql`: the SQL this plugin writes itself, and the alphabet checks that make it safe.
//! - `error`: server and driver errors turned into transient or permanent [`PluginError`]s.
//!
//! # What the admin account needs
//! `CREATE USER` (create, alter, drop accounts), `SELECT` on `mysql.user` (find an account's hosts),
//! `PROCESS` (see other accounts' sessions in `information_schema.PROCESSLIST`; without it a
//! revocation cannot see, and so cannot end, the sessions it must end), `CONNECTION ADMIN` or
//! `SUPER` (`KILL` them), plus `GRANT OPTION` on whatever the roles' creation statements grant.
//!
//! # Semantics worth knowing
//! - MySQL has no per-account expiry timestamp, so [`DatabasePlugin::enforces_expiration`] is false:
//!   a login stops working when Lessor's reaper revokes it, not before.
//! - DDL commits implicitly, so creation statements cannot share a transaction. Instead, when one
//!   fails, the account is dropped on every host before the error is returned.
//! - Revocation locks the account first (no new logins), drops it and kills its sessions:
//!   `DROP USER` alone leaves open sessions working. The lock, the drop and the list of sessions
//!   go as one multi-statement query, so a revocation without sessions takes two round trips
//!   (the account's hosts, then that query).
//! - A role's `host` option sets the host part of the accounts it creates (default `%`).
//! - TLS (rustls with ring; see the `tls` module for the modes): when asked for, every connection
//!   uses it, the admin pool and the login check as the user alike, and never falls back to plain
//!   text. A certificate the client cannot verify is a [`PluginError::Config`] saying which check
//!   failed (unknown CA, wrong name, expired), not a transient error to retry.
//! - Time limits: getting a connection and a login check are bounded by the connect timeout; on
//!   MariaDB each statement by `max_statement_time` (the settings' `statement_timeout`; MySQL has
//!   no equivalent for DDL, its `max_execution_time` covers only `SELECT`); the caller bounds each
//!   whole operation. A pooled connection abandoned mid-operation is disconnected, never reused.

#![forbid(unsafe_code)]

mod dsn;
mod error;
mod sql;
mod tls;

pub mod baseline;

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lessor_plugin::{
    check_password, check_username, render_statements, split_statements, ConnectionSettings,
    DatabasePlugin, DefaultStatements, DeleteUserRequest, DirectSession, EngineDescriptor,
    LocalTarget, NewUserRequest, PasswordAuthentication, PasswordValue, PluginError, RoleOptions,
    Secret, StatementTemplate, TemplateValues, UpdateUserRequest,
};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};

pub use sql::{DEFAULT_HOST, HOST_OPTION};

/// Plugin names under which connections may refer to this engine: Vault's MySQL plugin names (so
/// Vault configurations carry over) and the short forms.
pub const PLUGIN_NAMES: &[&str] = &[
    "mysql-database-plugin",
    "mysql",
    "mariadb",
    "mysql-aurora-database-plugin",
    "mysql-rds-database-plugin",
    "mysql-legacy-database-plugin",
];

/// Username limit assumed until the server has told its version: MySQL 8's, which MariaDB
/// (80) also accepts, so names generated under it work on either.
const CONSERVATIVE_USERNAME_LIMIT: usize = 32;

/// Seconds a statement of this plugin waits for a metadata or table lock before failing with
/// ER_LOCK_WAIT_TIMEOUT (a transient error, retried later). The server default is a year, so a
/// `GRANT` stuck behind a long application transaction would otherwise hang the caller.
const LOCK_WAIT_TIMEOUT_SECS: u32 = 30;

/// How long an idle admin connection stays in the pool before it is closed: long enough to
/// carry a pause between bursts of requests, short enough not to hold server sessions for an idle
/// broker.
const IDLE_CONNECTION_TTL: Duration = Duration::from_secs(60);

/// Used when the connection settings carry a zero connect timeout, which would fail every call.
const FALLBACK_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One MySQL or MariaDB server, reached through a pool of admin connections.
pub struct MySqlPlugin {
    pool: Pool,
    target: dsn::Target,
    connect_timeout: Duration,
    /// Longest username the server accepts; starts conservative and is raised once the server
    /// reports its version, so the synchronous [`DatabasePlugin::max_username_len`] can read it.
    username_limit: AtomicUsize,
}

impl fmt::Debug for MySqlPlugin {
    // Hand-written: the pool's own Debug prints its options, password included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlPlugin")
            .field("target", &self.target)
            .field("connect_timeout", &self.connect_timeout)
            .field(
                "username_limit",
                &self.username_limit.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

/// MySQL and MariaDB hash a password themselves (`IDENTIFIED BY`), and the verifiers Lessor can
/// compute are PostgreSQL's: `password_authentication = "scram-sha-256"` and its
/// `scram_iterations` are refused here, by name, rather than ignored.
fn refuse_password_verifiers(mode: PasswordAuthentication) -> Result<(), PluginError> {
    match mode {
        PasswordAuthentication::Password => Ok(()),
        PasswordAuthentication::ScramSha256 { .. } => Err(PluginError::invalid(
            "password_authentication",
            "MySQL and MariaDB take passwords as they are (\"password\"); \"scram-sha-256\" \
             and scram_iterations are for PostgreSQL connections",
        )),
    }
}

/// Builds the pool for `settings` and asks the server its version to learn the username limit.
///
/// Fails only when the configuration is unusable (bad URL, bad option, TLS material that does not
/// parse or does not fit the TLS mode: [`PluginError::InvalidValue`] naming the field). An
/// unreachable server, a refused TLS handshake or a refused admin login is logged and left to
/// [`DatabasePlugin::verify`], which also retries the version detection; until then the limit is
/// the conservative 32.
#[tracing::instrument(skip_all, err)]
pub async fn connect(settings: ConnectionSettings) -> Result<MySqlPlugin, PluginError> {
    refuse_password_verifiers(settings.password_authentication)?;
    let target = dsn::parse(&settings)?;
    if let Some(tls) = &target.tls {
        tls::install_default_provider();
        if !tls.verifies() {
            // Asked for by name, but worth a line in the log: this stops eavesdroppers only.
            tracing::warn!(
                host = %target.host,
                "TLS to the database without verifying its certificate (skip-verify): a machine in between can still read the passwords"
            );
        }
    }
    let max = usize::try_from(settings.max_open_connections)
        .unwrap_or(usize::MAX)
        .max(1);
    let constraints = PoolConstraints::new(0, max)
        .ok_or_else(|| PluginError::Config("max_open_connections must be at least 1".into()))?;
    let opts = base_opts(
        &target,
        target.db_name.clone(),
        &target.user,
        &target.password,
    )
    // `setup` rather than `init`, so the setting also holds should the pool ever reset a session.
    .setup(vec![session_limits(settings.statement_timeout)])
    // No COM_RESET_CONNECTION when a connection goes back to the pool: the reset runs in the
    // background, and a request arriving meanwhile (a revocation right after an issue) found no
    // idle connection and paid for a whole new login, which `lessor bench` measured at several
    // milliseconds per operation. The admin sessions set no state beyond `setup`'s, so there is
    // nothing to reset.
    //
    // An idle lifetime above zero: with none, mysql_async keeps at most the constraints' minimum
    // (0 here) of idle connections and disconnects every other one the moment it comes back,
    // so each operation logged in anew (issue 10's profile: a login per credential, a tenth of
    // the broker's CPU). Idle connections now stay, up to `max_open_connections`, for
    // `IDLE_CONNECTION_TTL`.
    .pool_opts(
        PoolOpts::default()
            .with_constraints(constraints)
            .with_inactive_connection_ttl(IDLE_CONNECTION_TTL)
            .with_reset_connection(false),
    );
    let connect_timeout = if settings.connect_timeout.is_zero() {
        FALLBACK_CONNECT_TIMEOUT
    } else {
        settings.connect_timeout
    };
    let plugin = MySqlPlugin {
        pool: Pool::new(Opts::from(opts)),
        target,
        connect_timeout,
        username_limit: AtomicUsize::new(CONSERVATIVE_USERNAME_LIMIT),
    };
    match plugin.detect_username_limit().await {
        Ok(limit) => {
            tracing::debug!(limit, host = %plugin.target.host, "detected the username limit")
        }
        Err(err) => tracing::warn!(
            error = %err,
            host = %plugin.target.host,
            port = plugin.target.port,
            "could not ask the server its version; assuming the 32-character username limit until verify()"
        ),
    }
    Ok(plugin)
}

/// The session settings of every admin connection: the lock wait timeout, and on MariaDB 10.1+ the
/// statement timeout. The latter sits in a `/*M!` comment, which only MariaDB executes, so the same
/// statement works on MySQL (where `max_statement_time` does not exist).
fn session_limits(statement_timeout: Duration) -> String {
    let mut sql = format!("SET SESSION lock_wait_timeout = {LOCK_WAIT_TIMEOUT_SECS}");
    if !statement_timeout.is_zero() {
        // MariaDB takes seconds with a fraction; below a millisecond would mean "no limit" (0).
        let secs = statement_timeout.as_secs_f64().max(0.001);
        sql.push_str(&format!(" /*M!100108 , max_statement_time = {secs:.3} */"));
    }
    sql
}

/// A pooled admin connection for one operation. It goes back to the pool only through
/// [`Session::release`], once the operation ran to its end (success or a database error). If the
/// operation is abandoned instead (its future dropped when the caller's deadline passed), the
/// connection is disconnected: the driver would otherwise return it to the pool with a statement
/// still in flight, and the next operation would inherit that.
struct Session(Option<Conn>);

impl Session {
    fn release(mut self) {
        // Dropping the connection returns it to the pool.
        drop(self.0.take());
    }
}

impl Deref for Session {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.0
            .as_ref()
            .expect("a session is used only before release")
    }
}

impl DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Conn {
        self.0
            .as_mut()
            .expect("a session is used only before release")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(conn) = self.0.take() else { return };
        tracing::warn!(
            "an operation was abandoned mid-way; its database connection is closed, not reused"
        );
        // `disconnect` marks the connection disconnected before it writes anything, so even if
        // the write stalls and the bounded task drops it, the pool discards it.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn.disconnect()).await;
                });
            }
            Err(_) => drop(conn),
        }
    }
}

/// Options shared by the admin pool and one-off login checks, TLS included. TCP only: the driver
/// would otherwise switch a loopback address to the Unix socket, where the server sees the client
/// as `localhost` rather than `127.0.0.1` and picks a different account (and where the driver
/// skips TLS without a word).
fn base_opts(
    target: &dsn::Target,
    db_name: Option<String>,
    user: &str,
    password: &Secret,
) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(target.host.clone())
        .tcp_port(target.port)
        .user(Some(user.to_owned()))
        // An empty password means "no password" to the server; sending an empty scramble instead
        // would be refused by some authentication plugins.
        .pass((!password.is_empty()).then(|| password.expose().to_owned()))
        .db_name(db_name)
        .prefer_socket(false)
        .enable_cleartext_plugin(target.cleartext_auth)
        .ssl_opts(target.tls.as_ref().map(tls::Tls::ssl_opts))
}

/// Whether a role's statement list means "use the engine's default": empty, only blank, or equal
/// to the defaults this plugin advertises (a caller that filled them in from
/// [`DatabasePlugin::default_statements`] must still get per-host behaviour).
fn uses_default(statements: &[String], default: &[String]) -> bool {
    statements.iter().all(|s| split_statements(s).is_empty()) || statements == default
}

/// The role's `host` option, checked.
fn role_host(options: &RoleOptions) -> Result<&str, PluginError> {
    let host = options
        .get(HOST_OPTION)
        .map_or(DEFAULT_HOST, String::as_str);
    sql::check_role_host(host)?;
    Ok(host)
}

impl MySqlPlugin {
    /// A pooled admin connection, or `Unavailable` after the connect timeout.
    async fn conn(&self) -> Result<Session, PluginError> {
        match tokio::time::timeout(self.connect_timeout, self.pool.get_conn()).await {
            Ok(Ok(conn)) => Ok(Session(Some(conn))),
            Ok(Err(err)) => Err(error::classify(
                &err,
                &format!("connecting to {}:{}", self.target.host, self.target.port),
                Some(&self.target.password),
            )),
            Err(_) => Err(PluginError::Unavailable(format!(
                "no connection to {}:{} within {:?} (server unreachable, or all pooled connections busy)",
                self.target.host, self.target.port, self.connect_timeout
            ))),
        }
    }

    /// Asks the server its version and stores the username limit that follows from it.
    async fn detect_username_limit(&self) -> Result<usize, PluginError> {
        let mut conn = self.conn().await?;
        let version: Result<Option<String>, _> = conn.query_first("SELECT VERSION()").await;
        conn.release();
        let version = version
            .map_err(|e| error::classify(&e, "asking the server version", None))?
            .ok_or_else(|| PluginError::Rejected("SELECT VERSION() returned no row".into()))?;
        let limit = sql::username_limit(&version);
        self.username_limit.store(limit, Ordering::Relaxed);
        Ok(limit)
    }
}

/// The host parts of every account named `username`, each checked to be safe to splice into SQL.
async fn user_hosts(conn: &mut Conn, username: &str) -> Result<Vec<String>, PluginError> {
    let hosts: Vec<String> = conn
        .exec("SELECT Host FROM mysql.user WHERE User = ?", (username,))
        .await
        .map_err(|e| error::classify(&e, "looking up the user's hosts in mysql.user", None))?;
    for host in &hosts {
        sql::check_server_host(host)?;
    }
    Ok(hosts)
}

/// Kills every session of `username`; returns how many were killed. A session that ends on its
/// own between the listing and the `KILL` is not an error.
async fn kill_sessions(conn: &mut Conn, username: &str) -> Result<usize, PluginError> {
    let ids: Vec<u64> = conn
        .exec(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?",
            (username,),
        )
        .await
        .map_err(|e| error::classify(&e, "listing the user's sessions", None))?;
    kill_connections(conn, &ids).await
}

/// `KILL CONNECTION` of each session in `ids`; how many were killed. One that ended on its own
/// since it was listed is not an error.
async fn kill_connections(conn: &mut Conn, ids: &[u64]) -> Result<usize, PluginError> {
    let mut killed = 0;
    for id in ids {
        // `id` is an integer the server gave us, so formatting it into the statement is safe.
        match conn.query_drop(format!("KILL CONNECTION {id}")).await {
            Ok(()) => killed += 1,
            Err(e) if error::server_code(&e) == Some(error::code::NO_SUCH_THREAD) => {}
            Err(e) => return Err(error::classify(&e, "killing a session of the user", None)),
        }
    }
    Ok(killed)
}

/// The built-in revocation of `usernames`, whose accounts are `accounts` (each `'user'@'host'`,
/// from [`sql::account`]), in one round trip: one multi-statement query locks every account, drops
/// it and lists the users' sessions, which the caller then kills (sessions outlive `DROP USER`;
/// none can start after the lock). The sessions are listed for every username, also one with no
/// account left, in case an earlier attempt dropped it before its sessions ended.
///
/// Every username passed `check_username` and every host `check_server_host`, so none holds a
/// quote and they are spliced as literals. An error here leaves nothing the step-by-step
/// revocation cannot finish: every statement is `IF EXISTS`.
async fn lock_drop_and_list(
    conn: &mut Conn,
    usernames: &[&str],
    accounts: &[String],
) -> Result<Vec<u64>, mysql_async::Error> {
    let names = usernames
        .iter()
        .map(|username| format!("'{username}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let list = format!("SELECT ID FROM information_schema.PROCESSLIST WHERE USER IN ({names})");
    let query = if accounts.is_empty() {
        list
    } else {
        let accounts = accounts.join(", ");
        format!(
            "ALTER USER IF EXISTS {accounts} ACCOUNT LOCK; DROP USER IF EXISTS {accounts}; {list}"
        )
    };
    let mut results = conn.query_iter(query).await?;
    let mut sessions = Vec::new();
    while !results.is_empty() {
        sessions.extend(results.collect::<u64>().await?);
    }
    Ok(sessions)
}

/// `delete_user`'s work on one connection (also what `lessor bench` runs directly): with the
/// built-in revocation, [`lock_drop_and_list`] and a kill of each session; otherwise (or should
/// that fail) step by step: lock every account of the user, kill its sessions, then drop it (or
/// run the lease's own statements).
async fn revoke_on(
    conn: &mut Conn,
    username: &str,
    custom: Option<&[Secret]>,
    database: Option<&str>,
) -> Result<(), PluginError> {
    let hosts = user_hosts(conn, username).await?;
    if custom.is_none() && database.is_none() && !hosts.is_empty() {
        let accounts: Vec<String> = hosts
            .iter()
            .map(|host| sql::account(username, host))
            .collect();
        match lock_drop_and_list(conn, &[username], &accounts).await {
            Ok(sessions) => {
                let killed = kill_connections(conn, &sessions).await?;
                tracing::info!(hosts = hosts.len(), killed, "revoked user in one query");
                return Ok(());
            }
            // An old server without `ACCOUNT LOCK` or `IF EXISTS`, or an account in a state
            // the statements refuse: the steps below name the problem, or work around it.
            Err(e) => tracing::debug!(
                code = error::server_code(&e),
                "revocation in one query failed; going step by step"
            ),
        }
    }
    // Lock before killing, so a killed client cannot simply log in again before the drop.
    for host in &hosts {
        let account = sql::account(username, host);
        match conn
            .query_drop(format!("ALTER USER {account} ACCOUNT LOCK"))
            .await
        {
            Ok(()) => {}
            // Gone since the listing: a concurrent revocation got there first.
            Err(e) if error::server_code(&e) == Some(error::code::CANNOT_USER) => {}
            // MySQL before 5.7.6 has no ACCOUNT LOCK; the kill and drop still end access.
            Err(e) if error::server_code(&e) == Some(error::code::PARSE_ERROR) => {
                tracing::warn!("the server does not support ACCOUNT LOCK; killing sessions and dropping without it");
            }
            Err(e) => return Err(error::classify(&e, "locking the user", None)),
        }
    }
    // Sessions survive DROP USER in MySQL, so they are killed explicitly. Done even when the
    // account is already gone, in case an earlier attempt dropped it before its sessions ended.
    let killed = kill_sessions(conn, username).await?;
    // The user's throwaway database goes once nothing of the user runs in it; also when the
    // account is gone, in case an earlier attempt dropped it before the database.
    if let Some(database) = database {
        conn.query_drop(format!("DROP DATABASE IF EXISTS {database}"))
            .await
            .map_err(|e| error::classify(&e, "dropping the user's database", None))?;
    }

    if hosts.is_empty() {
        // Custom statements are skipped too: they are written for an existing account, and
        // an earlier attempt already removed it.
        tracing::info!(killed, "user already gone");
        return Ok(());
    }
    match custom {
        Some(rendered) => run_statements(conn, rendered, "revocation", None).await?,
        None => {
            for host in &hosts {
                let account = sql::account(username, host);
                conn.query_drop(format!("DROP USER IF EXISTS {account}"))
                    .await
                    .map_err(|e| error::classify(&e, "dropping the user", None))?;
            }
        }
    }
    tracing::info!(hosts = hosts.len(), killed, "revoked user");
    Ok(())
}

/// `revoke_on` for many users with the default revocation and no database, in two round trips
/// whatever their count (plus a `KILL` per open session): their accounts in one `SELECT`, then
/// [`lock_drop_and_list`] for all of them. MariaDB takes its privilege lock once per statement,
/// so a hundred users cost about what one does. A statement fails whole when one account is a
/// problem, so the caller then revokes one by one, which names the culprit; every step here is
/// idempotent for that rerun. Every username passed `check_username` (the caller's batch test).
async fn revoke_batch_on(conn: &mut Conn, usernames: &[&str]) -> Result<(), PluginError> {
    let placeholders = vec!["?"; usernames.len()].join(", ");
    let params: Vec<mysql_async::Value> = usernames.iter().map(|u| (*u).into()).collect();
    let accounts: Vec<(String, String)> = conn
        .exec(
            format!("SELECT User, Host FROM mysql.user WHERE User IN ({placeholders})"),
            params,
        )
        .await
        .map_err(|e| error::classify(&e, "looking up the users' hosts in mysql.user", None))?;
    let mut spliced = Vec::with_capacity(accounts.len());
    for (username, host) in &accounts {
        // The names came back from the server: checked again before they are spliced.
        check_username(username)?;
        sql::check_server_host(host)?;
        spliced.push(sql::account(username, host));
    }
    let sessions = lock_drop_and_list(conn, usernames, &spliced)
        .await
        .map_err(|e| error::classify(&e, "locking, dropping and listing the users", None))?;
    let killed = kill_connections(conn, &sessions).await?;
    tracing::info!(
        users = usernames.len(),
        accounts = accounts.len(),
        killed,
        "revoked users"
    );
    Ok(())
}

/// The creation statements of a request, rendered before anything runs so that a template error
/// touches nothing. The engine's default creation is per host: the role's `host` option.
fn render_creation(request: &NewUserRequest<'_>) -> Result<Vec<Secret>, PluginError> {
    check_username(request.username)?;
    check_password(request.password)?;
    let host = role_host(request.options)?;
    let templates = if uses_default(request.statements, &[sql::default_creation(DEFAULT_HOST)]) {
        vec![sql::default_creation(host)]
    } else {
        request.statements.to_vec()
    };
    render_statements(
        &templates,
        &TemplateValues {
            username: request.username,
            password: Some(PasswordValue::Cleartext(request.password)),
            expiration: Some(request.expiration),
        },
    )
}

/// How a creation failed: before anything was made, or part-way (the caller drops what was made).
enum CreationFailure {
    Untouched(PluginError),
    Partial(PluginError),
}

/// `create_user`'s work on one connection (also what `lessor bench` runs directly): refuse an
/// existing name, run the rendered statements, then make the user's database and grant it.
async fn create_on(
    conn: &mut Conn,
    request: &NewUserRequest<'_>,
    rendered: &[Secret],
) -> Result<(), CreationFailure> {
    let database = request
        .database
        .map(|database| sql::database_ident(database.name))
        .transpose()
        .map_err(CreationFailure::Untouched)?;
    // The cleanup after a failure drops the account on every host; that must never hit an
    // account someone else made, so an existing name is refused up front.
    let existing = user_hosts(conn, request.username)
        .await
        .map_err(CreationFailure::Untouched)?;
    if !existing.is_empty() {
        return Err(CreationFailure::Untouched(PluginError::Rejected(format!(
            "user {} already exists; refusing to take over an account Lessor did not create",
            request.username
        ))));
    }
    run_statements(conn, rendered, "creation", Some(request.password))
        .await
        .map_err(CreationFailure::Partial)?;
    if let Some(database) = database {
        let host = role_host(request.options).map_err(CreationFailure::Partial)?;
        let account = sql::account(request.username, host);
        for statement in [
            format!("CREATE DATABASE {database}"),
            format!("GRANT ALL PRIVILEGES ON {database}.* TO {account}"),
        ] {
            conn.query_drop(statement).await.map_err(|e| {
                CreationFailure::Partial(error::classify(&e, "creating the user's database", None))
            })?;
        }
    }
    Ok(())
}

/// Runs rendered statements one by one; errors name the statement by position only.
async fn run_statements(
    conn: &mut Conn,
    statements: &[Secret],
    what: &str,
    password: Option<&Secret>,
) -> Result<(), PluginError> {
    let total = statements.len();
    for (index, statement) in statements.iter().enumerate() {
        conn.query_drop(statement.expose()).await.map_err(|e| {
            error::classify(
                &e,
                &format!("{what} statement {} of {total}", index + 1),
                password,
            )
        })?;
    }
    Ok(())
}

impl MySqlPlugin {
    /// `ACCOUNT LOCK` (or `UNLOCK`) on every host of `username`; an error if it has none.
    async fn set_account_lock(&self, username: &str, lock: bool) -> Result<(), PluginError> {
        check_username(username)?;
        let mut conn = self.conn().await?;
        let result = async {
            let hosts = user_hosts(&mut conn, username).await?;
            if hosts.is_empty() {
                return Err(PluginError::Rejected(format!(
                    "user {username} does not exist"
                )));
            }
            let what = if lock { "LOCK" } else { "UNLOCK" };
            for host in &hosts {
                let account = sql::account(username, host);
                conn.query_drop(format!("ALTER USER {account} ACCOUNT {what}"))
                    .await
                    .map_err(|e| error::classify(&e, "locking or unlocking the user", None))?;
            }
            Ok(())
        }
        .await;
        conn.release();
        result
    }
}

#[async_trait]
impl DatabasePlugin for MySqlPlugin {
    fn engine(&self) -> &'static str {
        DESCRIPTOR.name
    }

    fn max_username_len(&self) -> usize {
        self.username_limit.load(Ordering::Relaxed)
    }

    fn enforces_expiration(&self) -> bool {
        // MySQL and MariaDB can expire a password after N days, but not at an instant; the reaper
        // enforces the lease's expiry.
        false
    }

    /// Creation grants nothing beyond `USAGE` (log in); the actual host part comes from the
    /// role's `host` option at creation time, `%` shown here. Revocation is empty: the built-in
    /// lock, kill and drop on every host. Renew is empty: there is no expiry to move.
    fn default_statements(&self) -> DefaultStatements {
        DefaultStatements {
            creation: vec![sql::default_creation(DEFAULT_HOST)],
            renew: vec![],
            revocation: vec![],
            rollback: vec![],
            rotation: vec![sql::default_rotation(DEFAULT_HOST)],
        }
    }

    fn validate_database_per_lease(&self, template: Option<&str>) -> Result<(), PluginError> {
        match template {
            None => Ok(()),
            Some(_) => Err(PluginError::invalid(
                "template_database",
                "MySQL and MariaDB cannot copy a database; leave template_database unset",
            )),
        }
    }

    fn validate_role(
        &self,
        options: &RoleOptions,
        statements: &[&[String]],
    ) -> Result<(), PluginError> {
        if let Some(unknown) = options.keys().find(|k| k.as_str() != HOST_OPTION) {
            return Err(PluginError::invalid(
                "options",
                format!(
                    "unknown option `{}` for the mysql engine; known: `{HOST_OPTION}`",
                    unknown.chars().take(40).collect::<String>()
                ),
            ));
        }
        role_host(options)?;
        for list in statements {
            for statement in list.iter() {
                StatementTemplate::parse(statement)?;
            }
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, err)]
    async fn verify(&self) -> Result<(), PluginError> {
        let limit = self.detect_username_limit().await?;
        tracing::debug!(limit, "server reachable");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(username = %request.username), err)]
    async fn create_user(&self, request: &NewUserRequest<'_>) -> Result<(), PluginError> {
        lessor_plugin::check_username_len(request.username, self.max_username_len())?;
        let rendered = render_creation(request)?;
        let mut conn = self.conn().await?;
        let created = create_on(&mut conn, request, &rendered).await;
        conn.release();
        match created {
            Ok(()) => {
                tracing::info!(statements = rendered.len(), "created user");
                Ok(())
            }
            Err(CreationFailure::Untouched(err)) => Err(err),
            Err(CreationFailure::Partial(err)) => {
                // DDL has auto-committed whatever ran, so undo by dropping the account (and its
                // database). A fresh connection, since the failure may have broken this one.
                let cleanup = DeleteUserRequest {
                    username: request.username,
                    statements: &[],
                    database: request.database.map(|database| database.name),
                };
                match self.delete_user(&cleanup).await {
                    Ok(()) => tracing::info!(
                        "dropped the partly created user after a failed creation statement"
                    ),
                    Err(cleanup) => tracing::warn!(
                        error = %cleanup,
                        "could not drop the partly created user; revoking the lease will retry"
                    ),
                }
                Err(err)
            }
        }
    }

    fn supports_warm_pool(&self) -> bool {
        true
    }

    /// As `create_user`, then `ACCOUNT LOCK` on every host of the account. DDL is not
    /// transactional here, so the account exists unlocked between its creation and the lock;
    /// that is still safe: its password exists only in Lessor's memory (never stored, never
    /// returned), so nobody can log in during that moment. Should the lock fail, the account is
    /// dropped and the pool makes another.
    #[tracing::instrument(skip_all, fields(username = %request.username), err)]
    async fn create_pooled_user(&self, request: &NewUserRequest<'_>) -> Result<(), PluginError> {
        if request.database.is_some() {
            return Err(PluginError::invalid(
                "warm_pool_size",
                "a role with database_per_lease cannot keep a warm pool",
            ));
        }
        self.create_user(request).await?;
        let locked = self.set_account_lock(request.username, true).await;
        if let Err(error) = &locked {
            let cleanup = self
                .delete_user(&DeleteUserRequest::builtin(request.username))
                .await;
            if let Err(cleanup) = cleanup {
                tracing::warn!(error = %cleanup, "could not drop the pooled user whose lock failed; the pool retries");
            }
            tracing::warn!(%error, "could not lock a pooled user; dropped it");
        }
        locked
    }

    /// `ACCOUNT UNLOCK` on every host of the account. MySQL has no expiry to set: the reaper
    /// enforces it, as for any lease.
    #[tracing::instrument(skip_all, fields(username = %username), err)]
    async fn activate_pooled_user(
        &self,
        username: &str,
        expiration: DateTime<Utc>,
    ) -> Result<(), PluginError> {
        let _ = expiration;
        self.set_account_lock(username, false).await
    }

    /// MySQL has no expiry to move, so an expiration change runs only a role's own renew
    /// statements; a password change sets it on every host of the account.
    #[tracing::instrument(skip_all, fields(username = %request.username), err)]
    async fn update_user(&self, request: &UpdateUserRequest<'_>) -> Result<(), PluginError> {
        check_username(request.username)?;
        let renew = match &request.expiration {
            Some(change) if !uses_default(change.statements, &[]) => render_statements(
                change.statements,
                &TemplateValues {
                    username: request.username,
                    password: None,
                    expiration: Some(change.new_expiration),
                },
            )?,
            _ => Vec::new(),
        };
        if let Some(change) = &request.password {
            check_password(change.new_password)?;
        }
        if request.password.is_none() && renew.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let result = async {
            if let Some(change) = &request.password {
                self.set_password_on(
                    &mut conn,
                    request.username,
                    change.new_password,
                    change.statements,
                )
                .await?;
                tracing::info!("password set");
            }
            run_statements(&mut conn, &renew, "renew", None).await
        }
        .await;
        conn.release();
        result
    }

    #[tracing::instrument(skip_all, fields(username = %request.username), err)]
    async fn delete_user(&self, request: &DeleteUserRequest<'_>) -> Result<(), PluginError> {
        check_username(request.username)?;
        let database = request.database.map(sql::database_ident).transpose()?;
        let custom = if uses_default(request.statements, &[]) {
            None
        } else {
            Some(render_statements(
                request.statements,
                &TemplateValues {
                    username: request.username,
                    password: None,
                    expiration: None,
                },
            )?)
        };

        let mut conn = self.conn().await?;
        let result = revoke_on(
            &mut conn,
            request.username,
            custom.as_deref(),
            database.as_deref(),
        )
        .await;
        conn.release();
        result
    }

    /// One `ALTER USER`, one `DROP USER` for the whole batch: MariaDB takes its privilege lock once
    /// per statement.
    fn batches_deletes(&self) -> bool {
        true
    }

    /// The users with the default revocation and no database of their own in one batch
    /// ([`revoke_batch_on`]); the rest, and all of them should the batch fail, one by one, so that
    /// a failure is reported for the user it belongs to.
    async fn delete_users(
        &self,
        requests: &[DeleteUserRequest<'_>],
    ) -> Vec<Result<(), PluginError>> {
        let batchable = |request: &DeleteUserRequest<'_>| {
            uses_default(request.statements, &[])
                && request.database.is_none()
                && check_username(request.username).is_ok()
        };
        lessor_plugin::delete_batched(self, requests, batchable, |usernames| async move {
            let mut conn = self.conn().await?;
            let names: Vec<&str> = usernames.iter().map(String::as_str).collect();
            let result = revoke_batch_on(&mut conn, &names).await;
            conn.release();
            result
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(username = %username), err)]
    async fn check_login(&self, username: &str, password: &Secret) -> Result<(), PluginError> {
        self.check_login_now(username, password).await
    }

    #[tracing::instrument(skip_all, fields(prefix = %prefix), err)]
    async fn list_users(&self, prefix: &str) -> Result<Vec<String>, PluginError> {
        let mut conn = self.conn().await?;
        let users: Result<Vec<String>, _> = conn
            .exec(
                "SELECT DISTINCT User FROM mysql.user WHERE User LIKE ? ESCAPE '!' ORDER BY User",
                (lessor_plugin::like_prefix(prefix),),
            )
            .await;
        conn.release();
        let mut users = users.map_err(|e| error::classify(&e, "listing users", None))?;
        // LIKE follows the column's collation; the exact prefix test keeps the contract exact.
        users.retain(|u| u.starts_with(prefix));
        Ok(users)
    }

    /// MariaDB keeps no comment on a user (MySQL 8's `ATTRIBUTE` is not
    /// in MariaDB 10.11, the server tested here), so the store's record of issued users is the
    /// only proof of ownership.
    async fn marked_users(
        &self,
    ) -> Result<Option<std::collections::HashMap<String, String>>, PluginError> {
        Ok(None)
    }

    /// `mysql://user@host:port/database`: what a client needs besides the password.
    fn user_connection_url(&self, username: &str, database: Option<&str>) -> Option<String> {
        let host = if self.target.host.contains(':') {
            format!("[{}]", self.target.host)
        } else {
            self.target.host.clone()
        };
        Some(format!(
            "mysql://{}@{host}:{}/{}",
            lessor_plugin::percent_encode_credential(username),
            self.target.port,
            database
                .map(lessor_plugin::percent_encode_credential)
                .unwrap_or_default()
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn close(&self) {
        // Pool is a handle; disconnecting a clone closes the shared pool.
        if let Err(err) = self.pool.clone().disconnect().await {
            tracing::debug!(error = %err, "error while closing the pool");
        }
    }
}

impl MySqlPlugin {
    /// A password change's work on one pooled connection.
    async fn set_password_on(
        &self,
        conn: &mut Conn,
        username: &str,
        password: &Secret,
        statements: &[String],
    ) -> Result<(), PluginError> {
        let templates = if uses_default(statements, &self.default_statements().rotation) {
            // Built-in: every host of the account, since a password differing by client host
            // would make logins work from some places and not others.
            let hosts = user_hosts(conn, username).await?;
            if hosts.is_empty() {
                return Err(PluginError::Rejected(format!(
                    "user {username} does not exist"
                )));
            }
            hosts.iter().map(|h| sql::default_rotation(h)).collect()
        } else {
            statements.to_vec()
        };
        let rendered = render_statements(
            &templates,
            &TemplateValues {
                username,
                password: Some(PasswordValue::Cleartext(password)),
                expiration: None,
            },
        )?;
        run_statements(conn, &rendered, "rotation", Some(password)).await
    }

    /// `check_login`'s work: a fresh, unpooled connection as the user.
    async fn check_login_now(&self, username: &str, password: &Secret) -> Result<(), PluginError> {
        check_username(username)?;
        // A fresh, unpooled connection: the point is to prove the server accepts these
        // credentials now. No database is named, since the user may have no rights on the
        // admin's default database.
        let opts = Opts::from(base_opts(&self.target, None, username, password));
        let attempt = async {
            let mut conn = Conn::new(opts).await?;
            let result = conn.query_drop("SELECT 1").await;
            // A failed goodbye does not make the login less proven.
            let _ = conn.disconnect().await;
            result
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(mysql_async::Error::Server(server))) if error::is_login_refusal(server.code) => {
                Err(PluginError::LoginRefused {
                    username: username.to_owned(),
                    reason: format!("ERROR {}: {}", server.code, server.message),
                })
            }
            Ok(Err(e)) => Err(error::classify(
                &e,
                "logging in as the user",
                Some(password),
            )),
            Err(_) => Err(PluginError::Unavailable(format!(
                "no answer from {}:{} within {:?} while logging in as the user",
                self.target.host, self.target.port, self.connect_timeout
            ))),
        }
    }
}

/// What this crate offers Lessor's registry.
pub static DESCRIPTOR: EngineDescriptor = EngineDescriptor {
    name: "mysql",
    label: "MySQL/MariaDB",
    plugin_names: PLUGIN_NAMES,
    max_username_len: CONSERVATIVE_USERNAME_LIMIT,
    connect: |settings| {
        Box::pin(async move {
            let plugin: Arc<dyn DatabasePlugin> = Arc::new(connect(settings).await?);
            Ok(plugin)
        })
    },
    local: LocalTarget {
        admin_url: "mysql://root@127.0.0.1:3306/",
        url_env: "LESSOR_DEV_MYSQL_URL",
        connection: "dev-mysql",
        role: "mysql-readonly",
        readonly_creation: &[
            "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT SELECT ON *.* TO '{{name}}'@'%';",
        ],
    },
    direct: Some(|url| {
        Box::pin(async move {
            let session: Box<dyn DirectSession> =
                Box::new(baseline::MySqlDirect::connect(&url).await?);
            Ok(session)
        })
    }),
    // Vault's plugin for this engine takes a connection_url, not host/port fields.
    address: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_statement_detection() {
        let defaults = vec![sql::default_creation(DEFAULT_HOST)];
        assert!(uses_default(&[], &defaults));
        assert!(uses_default(&[" ; ".to_owned()], &defaults));
        assert!(uses_default(&defaults, &defaults));
        assert!(!uses_default(
            &["GRANT SELECT ON db.* TO '{{name}}'@'%'".to_owned()],
            &defaults
        ));
    }

    #[test]
    fn plugin_names_include_vaults() {
        assert!(PLUGIN_NAMES.contains(&"mysql-database-plugin"));
        assert!(PLUGIN_NAMES.contains(&"mariadb"));
    }
}
