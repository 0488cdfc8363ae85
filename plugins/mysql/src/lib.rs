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
//! - Revocation locks the account first (no new logins), then kills its sessions, then drops it:
//!   `DROP USER` alone leaves open sessions working.
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
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lessor_plugin::{
    check_password, check_username, render_statements, split_statements, ConnectionSettings,
    DatabasePlugin, DefaultStatements, NewUser, PluginError, RoleOptions, Secret,
    StatementTemplate, TemplateValues,
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

/// Builds the pool for `settings` and asks the server its version to learn the username limit.
///
/// Fails only when the configuration is unusable (bad URL, bad option, TLS material that does not
/// parse or does not fit the TLS mode: [`PluginError::InvalidValue`] naming the field). An
/// unreachable server, a refused TLS handshake or a refused admin login is logged and left to
/// [`DatabasePlugin::verify`], which also retries the version detection; until then the limit is
/// the conservative 32.
#[tracing::instrument(skip_all, err)]
pub async fn connect(settings: ConnectionSettings) -> Result<MySqlPlugin, PluginError> {
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
    .pool_opts(
        PoolOpts::default()
            .with_constraints(constraints)
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

    /// Drops the account on every host, for cleaning up after a failed creation.
    async fn drop_everywhere(&self, username: &str) -> Result<(), PluginError> {
        let mut conn = self.conn().await?;
        let result = async {
            for host in user_hosts(&mut conn, username).await? {
                let account = sql::account(username, &host);
                conn.query_drop(format!("DROP USER IF EXISTS {account}"))
                    .await
                    .map_err(|e| error::classify(&e, "dropping the partly created user", None))?;
            }
            Ok(())
        }
        .await;
        conn.release();
        result
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

/// `revoke_user`'s work on one connection (also what `lessor bench` runs directly): lock every
/// account of the user, kill its sessions, then drop it (or run the lease's own statements).
async fn revoke_on(
    conn: &mut Conn,
    username: &str,
    custom: Option<&[Secret]>,
) -> Result<(), PluginError> {
    let hosts = user_hosts(conn, username).await?;
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

#[async_trait]
impl DatabasePlugin for MySqlPlugin {
    fn engine(&self) -> &'static str {
        "mysql"
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

    #[tracing::instrument(skip_all, fields(username = %user.username), err)]
    async fn create_user(&self, user: &NewUser<'_>) -> Result<(), PluginError> {
        check_username(user.username)?;
        check_password(user.password)?;
        let host = role_host(user.options)?;
        let templates = if uses_default(user.statements, &self.default_statements().creation) {
            vec![sql::default_creation(host)]
        } else {
            user.statements.to_vec()
        };
        // Everything is rendered before anything runs, so a template error touches nothing.
        let rendered = render_statements(
            &templates,
            &TemplateValues {
                username: user.username,
                password: Some(user.password),
                expiration: Some(user.expiration),
            },
        )?;

        let mut conn = self.conn().await?;
        // Outer error: nothing was created. Inner error: a creation statement failed.
        let created = async {
            // The cleanup below drops the account on every host; that must never hit an account
            // someone else made, so an existing name is refused up front.
            if !user_hosts(&mut conn, user.username).await?.is_empty() {
                return Err(PluginError::Rejected(format!(
                    "user {} already exists; refusing to take over an account Lessor did not create",
                    user.username
                )));
            }
            Ok(run_statements(&mut conn, &rendered, "creation", Some(user.password)).await)
        }
        .await;
        conn.release();
        if let Err(err) = created? {
            // DDL has auto-committed whatever ran, so undo by dropping the account. A fresh
            // connection, since the failure may have broken this one.
            match self.drop_everywhere(user.username).await {
                Ok(()) => tracing::info!(
                    "dropped the partly created user after a failed creation statement"
                ),
                Err(cleanup) => tracing::warn!(
                    error = %cleanup,
                    "could not drop the partly created user; revoking the lease will retry"
                ),
            }
            return Err(err);
        }
        tracing::info!(statements = rendered.len(), "created user");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(username = %username), err)]
    async fn renew_user(
        &self,
        username: &str,
        expires: DateTime<Utc>,
        statements: &[String],
    ) -> Result<(), PluginError> {
        check_username(username)?;
        if uses_default(statements, &[]) {
            return Ok(());
        }
        let rendered = render_statements(
            statements,
            &TemplateValues {
                username,
                password: None,
                expiration: Some(expires),
            },
        )?;
        let mut conn = self.conn().await?;
        let result = run_statements(&mut conn, &rendered, "renew", None).await;
        conn.release();
        result
    }

    #[tracing::instrument(skip_all, fields(username = %username), err)]
    async fn revoke_user(&self, username: &str, statements: &[String]) -> Result<(), PluginError> {
        check_username(username)?;
        let custom = if uses_default(statements, &[]) {
            None
        } else {
            Some(render_statements(
                statements,
                &TemplateValues {
                    username,
                    password: None,
                    expiration: None,
                },
            )?)
        };

        let mut conn = self.conn().await?;
        let result = revoke_on(&mut conn, username, custom.as_deref()).await;
        conn.release();
        result
    }

    #[tracing::instrument(skip_all, fields(username = %username), err)]
    async fn set_password(
        &self,
        username: &str,
        password: &Secret,
        statements: &[String],
    ) -> Result<(), PluginError> {
        check_username(username)?;
        check_password(password)?;
        let mut conn = self.conn().await?;
        let result = self
            .set_password_on(&mut conn, username, password, statements)
            .await;
        conn.release();
        result?;
        tracing::info!("password set");
        Ok(())
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
                (sql::like_prefix(prefix),),
            )
            .await;
        conn.release();
        let mut users = users.map_err(|e| error::classify(&e, "listing users", None))?;
        // LIKE follows the column's collation; the exact prefix test keeps the contract exact.
        users.retain(|u| u.starts_with(prefix));
        Ok(users)
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
    /// `set_password`'s work on one pooled connection.
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
                password: Some(password),
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
