//! PostgreSQL engine plugin for Lessor.
//!
//! [`PostgresPlugin`] implements [`DatabasePlugin`] over a lazily filled `deadpool-postgres` pool
//! of admin connections, so a target that is down when Lessor starts does not stop Lessor:
//! [`DatabasePlugin::verify`] is what checks that the target answers.
//!
//! What PostgreSQL gives us and this plugin relies on:
//! - DDL is transactional, so a role's creation statements run in one transaction and a failing
//!   statement leaves no half-made role behind.
//! - `VALID UNTIL` makes the server refuse a login after the lease's expiry even while Lessor is
//!   down; [`DatabasePlugin::create_user`] and [`DatabasePlugin::update_user`] always set it.
//! - Revocation first commits `NOLOGIN`, then terminates the role's sessions, then drops it, so no
//!   session survives and no new one starts in between.
//!
//! - Time limits: connecting (and waiting for a pooled connection) is bounded by the connect
//!   timeout; every statement Lessor runs in a transaction carries `SET LOCAL statement_timeout`
//!   (the settings' `statement_timeout`) and a `lock_timeout`; the caller bounds each whole
//!   operation. A pooled connection abandoned mid-operation (the caller's deadline passed) is
//!   closed, never handed to the next operation: its session may be stuck in a statement or an
//!   open transaction.
//!
//! - TLS: `sslmode` (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`) and the CA,
//!   client certificate and key, as paths in the URL or inline PEM in the settings, apply to the
//!   admin pool and to the fresh connections of [`DatabasePlugin::check_login`] alike: see [`tls`].
//!
//! - Passwords: with `password_authentication = "scram-sha-256"` the statements carry a
//!   SCRAM-SHA-256 verifier computed here ([`scram`]) instead of the password: unguessable
//!   generated passwords of dynamic users get the connection's iteration count, every other
//!   password (static roles, root rotation, weak password policies) PostgreSQL's 4,096.
//!
//! Modules: `config` parses connection settings, `tls` does the handshakes, `error` maps driver
//! failures onto [`PluginError`], `scram` computes verifiers.

#![forbid(unsafe_code)]

mod config;
mod error;
pub mod scram;
pub mod tls;

pub mod baseline;

use std::fmt;
use std::num::NonZeroU32;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use lessor_plugin::template::format_expiration;
use lessor_plugin::{
    check_username, render_statements, ConnectionSettings, DatabasePlugin, DefaultStatements,
    DeleteUserRequest, DirectSession, EngineDescriptor, LocalTarget, NewDatabase, NewUserRequest,
    PasswordAuthentication, PasswordStrength, PasswordValue, PluginError, RoleOptions, Secret,
    StatementTemplate, TemplateValues, UpdateUserRequest, UserMarker, SCRAM_DEFAULT_ITERATIONS,
};
use std::collections::HashMap;
use tokio_postgres::error::SqlState;

use crate::error::{classify, is_undefined_object, login_error, pool_error};

/// Names under which the plugin is registered; `postgresql-database-plugin` is Vault's, so Vault
/// connection configs work unchanged.
pub const PLUGIN_NAMES: &[&str] = &["postgresql-database-plugin", "postgres", "postgresql"];

/// PostgreSQL limits identifiers to 63 bytes (NAMEDATALEN - 1); longer names are silently cut,
/// which would make the role Lessor revokes differ from the one it created.
const MAX_USERNAME_LEN: usize = 63;

/// How long a statement waits for a lock before giving up with SQLSTATE 55P03 (mapped to
/// [`PluginError::Busy`], so the reaper retries later). Without it, `DROP OWNED` queued behind a
/// long-running query on one of the role's tables would hold a reaper task and a pooled connection
/// indefinitely. Set per transaction (`SET LOCAL`) rather than as a startup option, because
/// poolers such as PgBouncer refuse the `options` startup parameter.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '10s'";

const DEFAULT_CREATION: &str =
    r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"#;
const DEFAULT_RENEW: &str = r#"ALTER ROLE "{{name}}" VALID UNTIL '{{expiration}}';"#;
const DEFAULT_ROTATION: &str = r#"ALTER ROLE "{{name}}" WITH PASSWORD '{{password}}';"#;

const ROLE_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)";

/// Which of the roles `$1` exist.
const ROLES_PRESENT: &str = "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)";

/// As [`HAS_DEPENDENCIES`], for the roles `$1`: those that have any.
const WITH_DEPENDENCIES: &str = "SELECT r.rolname::text FROM pg_roles r
    WHERE r.rolname = ANY($1) AND EXISTS (
        SELECT 1 FROM pg_shdepend d
        WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = r.oid
          AND d.dbid IN (0, (SELECT oid FROM pg_database WHERE datname = current_database())))";

/// Whether the role owns objects or holds privileges in this database or on shared objects
/// (databases, tablespaces). Only then are `REASSIGN OWNED`/`DROP OWNED` needed; skipping them
/// otherwise matters because on PostgreSQL 16+ they need the privileges *of* the role, which a
/// non-superuser CREATEROLE admin does not have by default, while a plain `DROP ROLE` works.
/// Role memberships (`IN ROLE app_readonly`) live in pg_auth_members and are dropped with the role.
const HAS_DEPENDENCIES: &str = "SELECT EXISTS (
    SELECT 1 FROM pg_shdepend d
    WHERE d.refclassid = 'pg_authid'::regclass
      AND d.refobjid = (SELECT oid FROM pg_roles WHERE rolname = $1)
      AND d.dbid IN (0, (SELECT oid FROM pg_database WHERE datname = current_database())))";

/// Lists roles for reconciliation; `$1` is [`lessor_plugin::like_prefix`]'s pattern, so the `_`
/// and `%` of generated usernames are literal. A prefix `LIKE` reads a range of the rolname index
/// (`name` compares bytewise), where `starts_with` read all of `pg_authid`: a catalog that
/// churning users had grown to 84 MB, with autovacuum off, took 23 ms per look.
pub const LIST_USERS: &str =
    "SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1 ESCAPE '!' ORDER BY rolname";

/// Roles whose comment is a Lessor marker (`$1` is [`UserMarker::like_pattern`]), with it.
const MARKED_USERS: &str = "SELECT rolname::text, shobj_description(oid, 'pg_authid')
    FROM pg_roles WHERE shobj_description(oid, 'pg_authid') LIKE $1";

/// One PostgreSQL target: a pool of admin connections plus what is needed to open a separate
/// connection as another user ([`DatabasePlugin::check_login`]).
pub struct PostgresPlugin {
    pool: Pool,
    /// The admin connection configuration; cloned with other credentials for `check_login`.
    config: tokio_postgres::Config,
    /// The TLS connector of every connection to this target, the pool's and `check_login`'s.
    tls: tls::TlsSetup,
    max_size: usize,
    timeout: Duration,
    /// `SET LOCAL statement_timeout` run first in each transaction, if the settings carry one.
    statement_timeout: Option<String>,
    /// Whether statements carry passwords or SCRAM verifiers computed here.
    password_authentication: PasswordAuthentication,
    /// The installation's mark, put on every created role as its comment.
    user_marker: Option<UserMarker>,
}

impl fmt::Debug for PostgresPlugin {
    // Written by hand so that nothing derived from the connection URL (which may hold the admin
    // password) can reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresPlugin")
            .field("user", &self.config.get_user())
            .field("dbname", &self.config.get_dbname())
            .field("ports", &self.config.get_ports())
            .field("sslmode", &self.tls.mode.as_str())
            .field("max_size", &self.max_size)
            .field("password_authentication", &self.password_authentication)
            .finish_non_exhaustive()
    }
}

/// Builds the plugin for one target. Connections are opened lazily, so this succeeds while the
/// database is down; call [`DatabasePlugin::verify`] to check connectivity.
///
/// The URL is `render_connection_url(connection_url, username, password)`; `postgresql://` and
/// `postgres://` URLs are accepted, with credentials from the template, inline, or from the
/// settings. An unusable URL is a [`PluginError::Config`] whose message never contains the URL.
pub async fn connect(settings: ConnectionSettings) -> Result<PostgresPlugin, PluginError> {
    let (pg_config, tls) = config::admin_config(&settings)?;
    let timeout = config::effective_timeout(settings.connect_timeout);
    // A pool of zero would make every operation wait for a slot that never frees.
    let max_size = usize::try_from(settings.max_open_connections.max(1)).unwrap_or(usize::MAX);
    // `Fast` hands out a pooled connection after checking only that its connection task is still
    // running, without a query: `Verified` ran an empty query first, one more round trip on every
    // issue and revocation (issue 10). A server that restarts or ends a session closes the
    // socket, which ends that task, so such a connection is still discarded rather than used;
    // only a connection that died silently (a network cut) fails its next operation, which the
    // reaper retries and a client sees as 503.
    let manager = Manager::from_config(
        pg_config.clone(),
        tls.connector.clone(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|err| PluginError::Config(format!("cannot build the connection pool: {err}")))?;
    Ok(PostgresPlugin {
        pool,
        config: pg_config,
        tls,
        max_size,
        timeout,
        statement_timeout: statement_timeout_sql(settings.statement_timeout),
        password_authentication: settings.password_authentication,
        user_marker: settings.user_marker.clone(),
    })
}

/// PostgreSQL's own iteration count, for every password that is not an unguessable generated one.
const FULL_ITERATIONS: NonZeroU32 = match NonZeroU32::new(SCRAM_DEFAULT_ITERATIONS) {
    Some(count) => count,
    None => panic!("SCRAM_DEFAULT_ITERATIONS is not zero"),
};

/// What `{{password}}` becomes under `mode`: the password itself, or its SCRAM verifier with
/// the connection's iteration count for an unguessable password and 4,096 for any other.
pub(crate) async fn statement_password(
    mode: PasswordAuthentication,
    password: &Secret,
    strength: PasswordStrength,
) -> Result<StatementPassword, PluginError> {
    match mode {
        PasswordAuthentication::Password => Ok(StatementPassword::Cleartext(password.clone())),
        PasswordAuthentication::ScramSha256 {
            generated_iterations,
        } => {
            let iterations = match strength {
                PasswordStrength::Unguessable => generated_iterations,
                PasswordStrength::Guessable => FULL_ITERATIONS,
            };
            Ok(StatementPassword::Verifier(
                scram::verifier_off_thread(password, iterations).await?,
            ))
        }
    }
}

/// The owned form of [`PasswordValue`], computed before rendering.
pub(crate) enum StatementPassword {
    Cleartext(Secret),
    Verifier(Secret),
}

impl StatementPassword {
    fn value(&self) -> PasswordValue<'_> {
        match self {
            Self::Cleartext(password) => PasswordValue::Cleartext(password),
            Self::Verifier(verifier) => PasswordValue::Verifier(verifier),
        }
    }

    /// What must never appear in a server message passed on: the rendered value.
    fn secret(&self) -> &str {
        match self {
            Self::Cleartext(secret) | Self::Verifier(secret) => secret.expose(),
        }
    }
}

/// The statement that bounds each statement of a transaction on the server, or none for zero.
/// Per transaction (`SET LOCAL`), like the lock timeout, because poolers such as PgBouncer refuse
/// startup options and would carry a session `SET` over to other clients.
fn statement_timeout_sql(limit: Duration) -> Option<String> {
    (!limit.is_zero()).then(|| {
        format!(
            "SET LOCAL statement_timeout = {}",
            limit.as_millis().clamp(1, i32::MAX as u128)
        )
    })
}

/// A pooled admin connection for one operation. It goes back to the pool only through
/// [`Session::release`], once the operation ran to its end (success or a database error). If the
/// operation is abandoned instead (its future dropped when the caller's deadline passed), the
/// connection is taken out of the pool and closed: the server may still be running its statement
/// or holding its transaction open, and the next operation must not inherit that.
struct Session(Option<deadpool_postgres::Object>);

impl Session {
    fn release(mut self) {
        // Dropping the object returns it to the pool.
        drop(self.0.take());
    }
}

impl Deref for Session {
    type Target = deadpool_postgres::Object;
    fn deref(&self) -> &Self::Target {
        self.0
            .as_ref()
            .expect("a session is used only before release")
    }
}

impl DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0
            .as_mut()
            .expect("a session is used only before release")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            tracing::warn!(
                "an operation was abandoned mid-way; its database connection is closed, not reused"
            );
            // Detached from the pool; dropping the wrapper aborts its connection task, which
            // closes the socket.
            drop(deadpool_postgres::Object::take(object));
        }
    }
}

/// Quotes an identifier. Usernames have passed [`check_username`] (no quotes possible), so the
/// doubling is defence in depth, not the safety mechanism.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal (standard_conforming_strings, on since PostgreSQL 9.1). Only marker
/// texts come here, which [`UserMarker`] keeps to letters, digits, spaces and `-`.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl PostgresPlugin {
    async fn client(&self) -> Result<Session, PluginError> {
        self.pool
            .get()
            .await
            .map(|object| Session(Some(object)))
            .map_err(|err| pool_error(err, self.max_size, self.timeout))
    }

    /// The session settings each transaction starts with.
    fn limits(&self) -> Vec<&str> {
        let mut limits = vec![LOCK_TIMEOUT];
        limits.extend(self.statement_timeout.as_deref());
        limits
    }
}

/// Runs `parts` after `limits` (lock and statement timeouts) as one simple query, so in one
/// round trip and one transaction: the server runs the statements of one query as one implicit
/// transaction, in which `SET LOCAL` holds until its end and a failing statement rolls all of it
/// back and leaves the session idle. Nothing is left to undo, even when this future is dropped
/// half-way. Run a statement at a time, with `BEGIN` and `COMMIT`, the same work took a round
/// trip each (five or six to create a user), each a wake-up of both sides on the same cores.
/// Each `;` between the parts stands on a line of its own, so a part that ends in a `--` comment
/// cannot swallow it, and the next part with it.
async fn run_as_one_query<'a>(
    client: &tokio_postgres::Client,
    limits: &[&'a str],
    parts: impl IntoIterator<Item = &'a str>,
) -> Result<(), tokio_postgres::Error> {
    let parts: Vec<&str> = limits.iter().copied().chain(parts).collect();
    // It may hold rendered statements, passwords and all.
    let script = Secret::new(parts.join("\n;\n"));
    client.batch_execute(script.expose()).await
}

/// Runs `statements` and then `trailer` (if any) in one transaction that starts with `limits`
/// ([`run_as_one_query`]). `secrets` are redacted from any server message.
async fn run_in_transaction(
    client: &mut tokio_postgres::Client,
    limits: &[&str],
    statements: &[Secret],
    trailer: Option<&str>,
    secrets: &[&str],
) -> Result<(), PluginError> {
    let parts = statements.iter().map(Secret::expose).chain(trailer);
    run_as_one_query(client, limits, parts)
        .await
        .map_err(|error| classify(&error, secrets))
}

/// The statement that sets a role's expiry in the database itself.
fn valid_until(username: &str, at: DateTime<Utc>) -> String {
    format!(
        "ALTER ROLE {} VALID UNTIL '{}'",
        quote_ident(username),
        format_expiration(at)
    )
}

/// Whether a user being created may log in: a warm pool's users may not until activated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Login {
    Allowed,
    /// `NOLOGIN` in the creating transaction itself, so the role never exists able to log in.
    Refused,
}

/// `create_user`'s work on one connection: the rendered creation statements, then `VALID UNTIL`,
/// in one transaction; then the user's own database, if asked for. Also what `lessor bench` runs
/// directly, so both sides run the same SQL. Empty `statements` mean the default creation.
///
/// `password` is what `{{password}}` stands for ([`statement_password`]), computed by the caller
/// before it holds a connection: a 4,096-iteration verifier takes a millisecond of CPU.
async fn create_on(
    client: &mut tokio_postgres::Client,
    limits: &[&str],
    request: &NewUserRequest<'_>,
    password: &StatementPassword,
    marker: Option<&UserMarker>,
    login: Login,
) -> Result<(), PluginError> {
    let username = request.username;
    lessor_plugin::check_username_len(username, MAX_USERNAME_LEN)?;
    let defaults = [DEFAULT_CREATION.to_owned()];
    let templates = if request.statements.is_empty() {
        &defaults[..]
    } else {
        request.statements
    };
    // Rendering checks the username and password (or verifier) alphabets, before anything
    // reaches SQL.
    let statements = render_statements(
        templates,
        &TemplateValues {
            username,
            password: Some(password.value()),
            expiration: Some(request.expiration),
        },
    )?;
    let database = request
        .database
        .map(|database| create_database_sql(username, &database))
        .transpose()?;
    // Always set, so the server refuses the login after expiry even if the role's own
    // statements forgot VALID UNTIL and Lessor is down when the lease ends. The marker goes in
    // the same transaction: a role of ours never exists unmarked, even for a moment.
    let mut trailer = valid_until(username, request.expiration);
    if let Some(marker) = marker {
        trailer.push_str(&format!(
            "; COMMENT ON ROLE {} IS {}",
            quote_ident(username),
            quote_literal(&marker.text())
        ));
    }
    if login == Login::Refused {
        // After the role's own statements, which usually say LOGIN, and before the commit: no
        // session can ever see this role able to log in.
        trailer.push_str(&format!("; ALTER ROLE {} NOLOGIN", quote_ident(username)));
    }
    run_in_transaction(
        client,
        limits,
        &statements,
        Some(&trailer),
        &[request.password.expose(), password.secret()],
    )
    .await?;
    let Some(create_database) = database else {
        return Ok(());
    };
    // CREATE DATABASE cannot run inside a transaction, so it follows the role's; if it fails, the
    // role goes too, so a failed creation leaves nothing behind.
    if let Err(err) = client.batch_execute(&create_database).await {
        let err = classify(&err, &[]);
        if let Err(cleanup) = revoke_on(client, limits, username, &[], None).await {
            tracing::warn!(error = %cleanup, "could not drop the role after its database failed; revoking the lease will retry");
        }
        return Err(err);
    }
    Ok(())
}

/// `CREATE DATABASE` for a user's throwaway database, owned by the user so that it can do
/// anything inside it (migrations included) and nothing outside.
fn create_database_sql(owner: &str, database: &NewDatabase<'_>) -> Result<String, PluginError> {
    check_database_name("database", database.name)?;
    let mut sql = format!(
        "CREATE DATABASE {} OWNER {}",
        quote_ident(database.name),
        quote_ident(owner)
    );
    if let Some(template) = database.template {
        check_database_name("template_database", template)?;
        sql.push_str(&format!(" TEMPLATE {}", quote_ident(template)));
    }
    Ok(sql)
}

/// Database names are quoted identifiers here; they must also fit PostgreSQL's 63 bytes (a longer
/// one is silently cut, and then dropping it by its full name would miss it).
fn check_database_name(field: &'static str, name: &str) -> Result<(), PluginError> {
    check_username(name).map_err(|_| {
        PluginError::invalid(
            field,
            "must be letters, digits, '_', '-' and '.' only".to_owned(),
        )
    })?;
    if name.len() > MAX_USERNAME_LEN {
        return Err(PluginError::invalid(
            field,
            format!("is longer than PostgreSQL's {MAX_USERNAME_LEN} bytes"),
        ));
    }
    Ok(())
}

async fn role_exists(client: &tokio_postgres::Client, username: &str) -> Result<bool, PluginError> {
    let row = client
        .query_one(ROLE_EXISTS, &[&username])
        .await
        .map_err(|e| classify(&e, &[]))?;
    Ok(row.get(0))
}

/// `delete_user`'s work on one connection (also what `lessor bench` runs directly): nothing if the
/// role is gone, else the revocation, treating a concurrent drop as done.
async fn revoke_on(
    client: &mut tokio_postgres::Client,
    limits: &[&str],
    username: &str,
    custom: &[Secret],
    database: Option<&str>,
) -> Result<(), PluginError> {
    if let Some(database) = database {
        check_database_name("database", database)?;
    }
    // No existence check first: `ALTER ROLE ... NOLOGIN`, the first step, fails with "undefined
    // object" when the role is missing, and only then is its existence asked.
    match revoke_existing(client, limits, username, custom, database).await {
        Ok(()) => Ok(()),
        Err(err) if is_undefined_object(&err) => {
            // Gone already (an earlier attempt, or a concurrent revocation dropped it under us),
            // if it is really gone; a custom statement may name some other missing object.
            if role_exists(client, username).await? {
                return Err(classify(&err, &[]));
            }
            // The role may have gone in an earlier attempt that failed before its database did.
            if let Some(database) = database {
                drop_database(client, database).await?;
            }
            Ok(())
        }
        Err(err) => Err(classify(&err, &[])),
    }
}

/// The revocation proper. A missing role, or a concurrent revocation (another replica, an
/// operator) dropping it half-way, surfaces as "undefined object", which the caller treats as
/// done once it has checked the role is gone.
async fn revoke_existing(
    client: &mut tokio_postgres::Client,
    limits: &[&str],
    username: &str,
    custom: &[Secret],
    database: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    let ident = quote_ident(username);
    let drop_role = format!("DROP ROLE IF EXISTS {ident}");

    if custom.is_empty() && database.is_none() {
        // The common case, in two round trips.
        let refused = match revoke_builtin(client, limits, &[username]).await {
            Err(error) if error.code() == Some(&SqlState::DEPENDENT_OBJECTS_STILL_EXIST) => error,
            done => return done,
        };
        return drop_with_dependencies(client, limits, username, &drop_role, refused).await;
    }

    lock_out(client, limits, &[username]).await?;
    run_as_one_query(client, limits, [end_sessions(&[username]).as_str()]).await?;

    // The role owns its throwaway database, so the database goes first (DROP ROLE would refuse).
    if let Some(database) = database {
        drop_database_raw(client, database).await?;
    }

    if !custom.is_empty() {
        return run_as_one_query(client, limits, custom.iter().map(Secret::expose)).await;
    }
    let refused = match run_as_one_query(client, limits, [drop_role.as_str()]).await {
        Err(error) if error.code() == Some(&SqlState::DEPENDENT_OBJECTS_STILL_EXIST) => error,
        done => return done,
    };
    drop_with_dependencies(client, limits, username, &drop_role, refused).await
}

/// The built-in revocation of `usernames` (one role, or a batch) in two round trips:
/// [`lock_out`], then the roles' sessions ended ([`end_sessions`]) and the roles dropped in a
/// second transaction, one simple query. A missing role fails its `ALTER ROLE` ("undefined
/// object"), and nothing else runs.
async fn revoke_builtin(
    client: &tokio_postgres::Client,
    limits: &[&str],
    usernames: &[&str],
) -> Result<(), tokio_postgres::Error> {
    lock_out(client, limits, usernames).await?;
    let idents: Vec<String> = usernames.iter().map(|name| quote_ident(name)).collect();
    let drop_roles = format!("DROP ROLE IF EXISTS {}", idents.join(", "));
    run_as_one_query(
        client,
        limits,
        [end_sessions(usernames).as_str(), drop_roles.as_str()],
    )
    .await
}

/// `NOLOGIN` for `usernames`, committed in a transaction of its own before anything else, so that
/// no session can start again once their sessions are ended.
async fn lock_out(
    client: &tokio_postgres::Client,
    limits: &[&str],
    usernames: &[&str],
) -> Result<(), tokio_postgres::Error> {
    let nologin: Vec<String> = usernames
        .iter()
        .map(|name| format!("ALTER ROLE {} NOLOGIN", quote_ident(name)))
        .collect();
    run_as_one_query(client, limits, nologin.iter().map(String::as_str)).await
}

/// The statement that ends every session of `usernames` except our own (in case an operator
/// revokes the admin itself). The usernames go in as literals, not bound parameters, so that it
/// can share a simple query with other statements: a query with parameters costs two round trips
/// of its own (tokio-postgres prepares a statement given as text, then runs it). They have passed
/// [`check_username`], so they hold nothing a literal could be broken out of.
fn end_sessions(usernames: &[&str]) -> String {
    let literals: Vec<String> = usernames.iter().map(|name| quote_literal(name)).collect();
    format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename IN ({}) AND pid <> pg_backend_pid()",
        literals.join(", ")
    )
}

/// After `DROP ROLE` refused (`refused`): the role owns objects or holds privileges somewhere.
/// REASSIGN OWNED and DROP OWNED act only in the database this connection is in (plus shared
/// objects), so they are run only when that is where the dependencies are; objects or privileges
/// in *other* databases keep the server's refusal (Rejected, its detail naming the database):
/// such roles need custom revocation statements or an operator.
async fn drop_with_dependencies(
    client: &mut tokio_postgres::Client,
    limits: &[&str],
    username: &str,
    drop_role: &str,
    refused: tokio_postgres::Error,
) -> Result<(), tokio_postgres::Error> {
    let here = client.query_one(HAS_DEPENDENCIES, &[&username]).await?;
    if !here.get::<_, bool>(0) {
        return Err(refused);
    }
    let ident = quote_ident(username);
    let reassign = format!("REASSIGN OWNED BY {ident} TO CURRENT_USER");
    let drop_owned = format!("DROP OWNED BY {ident}");
    run_as_one_query(
        client,
        limits,
        [reassign.as_str(), drop_owned.as_str(), drop_role],
    )
    .await
}

/// The built-in revocation of several roles at once, in the same steps as [`revoke_existing`]
/// takes for one: the roles present, then [`revoke_builtin`] for all of them. Only if `DROP
/// ROLE` refuses are the roles' dependencies in this database reassigned and dropped, and the
/// roles dropped again. Usernames are checked by the caller. An error leaves the caller to retry
/// each role alone: every step is safe to repeat.
async fn revoke_batch_on(
    client: &mut tokio_postgres::Client,
    limits: &[&str],
    usernames: &[&str],
) -> Result<(), tokio_postgres::Error> {
    let present: Vec<String> = client
        .query(ROLES_PRESENT, &[&usernames])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = present.iter().map(String::as_str).collect();
    match revoke_builtin(client, limits, &names).await {
        Err(error) if error.code() == Some(&SqlState::DEPENDENT_OBJECTS_STILL_EXIST) => {}
        done => return done,
    }

    // A dependency that appears between this look and the drop makes the drop fail, and the
    // caller then revokes each role alone, which looks again.
    let dependent: Vec<String> = client
        .query(WITH_DEPENDENCIES, &[&present])
        .await?
        .iter()
        .map(|row| quote_ident(&row.get::<_, String>(0)))
        .collect();
    let idents: Vec<String> = present.iter().map(|name| quote_ident(name)).collect();
    let mut steps = Vec::with_capacity(3);
    if !dependent.is_empty() {
        let owners = dependent.join(", ");
        steps.push(format!("REASSIGN OWNED BY {owners} TO CURRENT_USER"));
        steps.push(format!("DROP OWNED BY {owners}"));
    }
    steps.push(format!("DROP ROLE IF EXISTS {}", idents.join(", ")));
    run_as_one_query(client, limits, steps.iter().map(String::as_str)).await
}

/// Drops a user's throwaway database, ending any session still in it (`WITH (FORCE)`,
/// PostgreSQL 13+). Outside a transaction: `DROP DATABASE` cannot run in one.
async fn drop_database_raw(
    client: &tokio_postgres::Client,
    database: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(database)
        ))
        .await
}

async fn drop_database(client: &tokio_postgres::Client, database: &str) -> Result<(), PluginError> {
    drop_database_raw(client, database)
        .await
        .map_err(|e| classify(&e, &[]))
}

/// Gives a database copied from a template to its user: the copy's objects belong to whoever
/// owned them in the template (the admin), and a test that wants a pre-migrated database must be
/// able to migrate it further. Runs in the copy, on a connection of its own: ownership is per
/// database. Only objects the admin owns change hands, outside the system schemas.
const HAND_OVER_COPY: &str = r#"
DO $hand_over$
DECLARE
    new_owner text := current_setting('lessor.new_owner');
    item record;
BEGIN
    FOR item IN
        SELECT format('ALTER SCHEMA %I OWNER TO %I', nspname, new_owner) AS ddl
        FROM pg_namespace
        WHERE nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
          AND nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema'
        UNION ALL
        SELECT format('ALTER %s %s OWNER TO %I',
                      CASE c.relkind WHEN 'r' THEN 'TABLE' WHEN 'p' THEN 'TABLE' WHEN 'v' THEN 'VIEW'
                                     WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                                     WHEN 'f' THEN 'FOREIGN TABLE' END,
                      c.oid::regclass, new_owner)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
          AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
          AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
          -- A sequence owned by a column moves with its table.
          AND NOT (c.relkind = 'S' AND EXISTS (
              SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))
        UNION ALL
        SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, new_owner)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE p.proowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
          AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
    LOOP
        EXECUTE item.ddl;
    END LOOP;
END
$hand_over$"#;

impl PostgresPlugin {
    /// Runs [`HAND_OVER_COPY`] in `database` for `username` (both checked names; the username
    /// travels as a setting, never spliced into the block).
    async fn hand_over_copy(&self, username: &str, database: &str) -> Result<(), PluginError> {
        check_username(username)?;
        check_database_name("database", database)?;
        let mut config = self.config.clone();
        config.dbname(database);
        let (mut client, connection) = config
            .connect(self.tls.connector.clone())
            .await
            .map_err(|e| classify(&e, &[]))?;
        let work = async move {
            let tx = client.transaction().await.map_err(|e| classify(&e, &[]))?;
            for limit in self.limits() {
                tx.batch_execute(limit)
                    .await
                    .map_err(|e| classify(&e, &[]))?;
            }
            tx.execute(
                "SELECT set_config('lessor.new_owner', $1, true)",
                &[&username],
            )
            .await
            .map_err(|e| classify(&e, &[]))?;
            tx.batch_execute(HAND_OVER_COPY)
                .await
                .map_err(|e| classify(&e, &[]))?;
            tx.commit().await.map_err(|e| classify(&e, &[]))
            // The client drops here, which sends Terminate and ends the connection future.
        };
        // Driven here, as in check_login, so an abandoned call closes the socket.
        let (result, _) = tokio::join!(work, connection);
        result
    }
}

/// The statements of an [`UpdateUserRequest`], rendered: the password change's, then the
/// expiration change's, each falling back to the engine's defaults.
///
/// A new password here belongs to a static role or to the admin (root rotation): either may be one
/// a person chose (a static role's imported password, a policy of the operator's), and either
/// lives for months, so under `scram-sha-256` its verifier always gets the full 4,096 iterations.
async fn render_update(
    mode: PasswordAuthentication,
    request: &UpdateUserRequest<'_>,
) -> Result<(Vec<Secret>, Option<StatementPassword>), PluginError> {
    let mut statements = Vec::new();
    let mut rendered_password = None;
    if let Some(change) = &request.password {
        let defaults = [DEFAULT_ROTATION.to_owned()];
        let templates = if change.statements.is_empty() {
            &defaults[..]
        } else {
            change.statements
        };
        let password =
            statement_password(mode, change.new_password, PasswordStrength::Guessable).await?;
        statements.extend(render_statements(
            templates,
            &TemplateValues {
                username: request.username,
                password: Some(password.value()),
                expiration: None,
            },
        )?);
        rendered_password = Some(password);
    }
    if let Some(change) = &request.expiration {
        let defaults = [DEFAULT_RENEW.to_owned()];
        let templates = if change.statements.is_empty() {
            &defaults[..]
        } else {
            change.statements
        };
        statements.extend(render_statements(
            templates,
            &TemplateValues {
                username: request.username,
                password: None,
                expiration: Some(change.new_expiration),
            },
        )?);
    }
    Ok((statements, rendered_password))
}

#[async_trait]
impl DatabasePlugin for PostgresPlugin {
    fn engine(&self) -> &'static str {
        DESCRIPTOR.name
    }

    fn max_username_len(&self) -> usize {
        MAX_USERNAME_LEN
    }

    fn enforces_expiration(&self) -> bool {
        true
    }

    fn default_statements(&self) -> DefaultStatements {
        DefaultStatements {
            creation: vec![DEFAULT_CREATION.to_owned()],
            renew: vec![DEFAULT_RENEW.to_owned()],
            // Empty: the built-in revocation (NOLOGIN, terminate sessions, REASSIGN/DROP OWNED,
            // DROP ROLE) cannot be written as templates, because it needs the existence check and
            // a commit between steps.
            revocation: Vec::new(),
            rollback: Vec::new(),
            rotation: vec![DEFAULT_ROTATION.to_owned()],
        }
    }

    /// PostgreSQL roles take no engine options, so any option is a mistake (probably one meant for
    /// another engine) and is refused when the role is written.
    fn validate_role(
        &self,
        options: &RoleOptions,
        statements: &[&[String]],
    ) -> Result<(), PluginError> {
        if let Some(name) = options.keys().next() {
            return Err(PluginError::invalid(
                "options",
                format!(
                    "the PostgreSQL plugin takes no role options, got '{}'",
                    name.chars().take(40).collect::<String>()
                ),
            ));
        }
        for list in statements {
            for text in list.iter() {
                for statement in lessor_plugin::split_statements(text) {
                    StatementTemplate::parse(&statement)?;
                }
            }
        }
        Ok(())
    }

    fn validate_database_per_lease(&self, template: Option<&str>) -> Result<(), PluginError> {
        template.map_or(Ok(()), |template| {
            check_database_name("template_database", template)
        })
    }

    #[tracing::instrument(skip_all, fields(engine = "postgres"), err)]
    async fn verify(&self) -> Result<(), PluginError> {
        let client = self.client().await?;
        let result = client
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|e| classify(&e, &[]));
        client.release();
        result
    }

    #[tracing::instrument(skip_all, fields(engine = "postgres", username = %request.username), err)]
    async fn create_user(&self, request: &NewUserRequest<'_>) -> Result<(), PluginError> {
        let password = statement_password(
            self.password_authentication,
            request.password,
            request.password_strength,
        )
        .await?;
        let mut client = self.client().await?;
        let mut result = create_on(
            &mut client,
            &self.limits(),
            request,
            &password,
            self.user_marker.as_ref(),
            Login::Allowed,
        )
        .await;
        if let (Ok(()), Some(database)) = (&result, request.database) {
            if database.template.is_some() {
                result = self.hand_over_copy(request.username, database.name).await;
                if result.is_err() {
                    let undo = revoke_on(
                        &mut client,
                        &self.limits(),
                        request.username,
                        &[],
                        Some(database.name),
                    )
                    .await;
                    if let Err(cleanup) = undo {
                        tracing::warn!(error = %cleanup, "could not drop the user after its database failed; revoking the lease will retry");
                    }
                }
            }
        }
        client.release();
        result
    }

    fn supports_warm_pool(&self) -> bool {
        true
    }

    /// As `create_user`, with `NOLOGIN` in the same transaction (and the expiry the request
    /// gives, which the pool sets in the past). No database: pooling roles have none.
    #[tracing::instrument(skip_all, fields(engine = "postgres", username = %request.username), err)]
    async fn create_pooled_user(&self, request: &NewUserRequest<'_>) -> Result<(), PluginError> {
        if request.database.is_some() {
            return Err(PluginError::invalid(
                "warm_pool_size",
                "a role with database_per_lease cannot keep a warm pool",
            ));
        }
        let password = statement_password(
            self.password_authentication,
            request.password,
            request.password_strength,
        )
        .await?;
        let mut client = self.client().await?;
        let result = create_on(
            &mut client,
            &self.limits(),
            request,
            &password,
            self.user_marker.as_ref(),
            Login::Refused,
        )
        .await;
        client.release();
        result
    }

    /// `ALTER ROLE .. LOGIN VALID UNTIL ..`: one statement, so one round trip on the hot path
    /// (its implicit transaction needs no lock timeout of its own: it takes only the role's row).
    #[tracing::instrument(skip_all, fields(engine = "postgres", username = %username), err)]
    async fn activate_pooled_user(
        &self,
        username: &str,
        expiration: DateTime<Utc>,
    ) -> Result<(), PluginError> {
        check_username(username)?;
        let statement = format!(
            "ALTER ROLE {} LOGIN VALID UNTIL '{}'",
            quote_ident(username),
            format_expiration(expiration)
        );
        let client = self.client().await?;
        let result = client
            .batch_execute(&statement)
            .await
            .map_err(|e| classify(&e, &[]));
        client.release();
        result
    }

    #[tracing::instrument(skip_all, fields(engine = "postgres", username = %request.username), err)]
    async fn update_user(&self, request: &UpdateUserRequest<'_>) -> Result<(), PluginError> {
        check_username(request.username)?;
        if request.password.is_none() && request.expiration.is_none() {
            return Ok(());
        }
        let (statements, rendered_password) =
            render_update(self.password_authentication, request).await?;
        // As at creation: custom renew statements that forget VALID UNTIL would otherwise let the
        // server lock the user out at the old expiry while the lease says it is still valid.
        let trailer = request
            .expiration
            .map(|change| valid_until(request.username, change.new_expiration));
        let secrets: Vec<&str> = request
            .password
            .iter()
            .map(|change| change.new_password.expose())
            .chain(rendered_password.iter().map(StatementPassword::secret))
            .collect();
        let mut client = self.client().await?;
        let result = run_in_transaction(
            &mut client,
            &self.limits(),
            &statements,
            trailer.as_deref(),
            &secrets,
        )
        .await;
        client.release();
        result
    }

    #[tracing::instrument(skip_all, fields(engine = "postgres", username = %request.username), err)]
    async fn delete_user(&self, request: &DeleteUserRequest<'_>) -> Result<(), PluginError> {
        // Our own statements format the name as an identifier, so it is checked here too.
        check_username(request.username)?;
        lessor_plugin::check_username_len(request.username, MAX_USERNAME_LEN)?;
        // Rendered before anything changes, so a broken template cannot leave a half-revoked role.
        let custom = render_statements(
            request.statements,
            &TemplateValues {
                username: request.username,
                password: None,
                expiration: None,
            },
        )?;
        let mut client = self.client().await?;
        let result = revoke_on(
            &mut client,
            &self.limits(),
            request.username,
            &custom,
            request.database,
        )
        .await;
        client.release();
        result
    }

    /// The roles present, then two round trips and one `DROP ROLE` for the whole batch, against
    /// two round trips a role.
    fn batches_deletes(&self) -> bool {
        true
    }

    /// Requests with the built-in revocation (no custom statements, no database) go in one batch
    /// ([`revoke_batch_on`]); the others, and all of a batch that failed, one by one.
    #[tracing::instrument(skip_all, fields(engine = "postgres", users = requests.len()))]
    async fn delete_users(
        &self,
        requests: &[DeleteUserRequest<'_>],
    ) -> Vec<Result<(), PluginError>> {
        let batchable = |request: &DeleteUserRequest<'_>| {
            request.is_builtin()
                && check_username(request.username).is_ok()
                && lessor_plugin::check_username_len(request.username, MAX_USERNAME_LEN).is_ok()
        };
        lessor_plugin::delete_batched(self, requests, batchable, |usernames| async move {
            let mut client = self.client().await?;
            let names: Vec<&str> = usernames.iter().map(String::as_str).collect();
            let result = revoke_batch_on(&mut client, &self.limits(), &names).await;
            client.release();
            result.map_err(|error| classify(&error, &[]))
        })
        .await
    }

    // A refused login is an expected answer (resolving a pending rotation), hence warn, not error.
    #[tracing::instrument(skip_all, fields(engine = "postgres", username = %username), err(level = "warn"))]
    async fn check_login(&self, username: &str, password: &Secret) -> Result<(), PluginError> {
        // A fresh connection, not a pooled one: the point is to prove these credentials open a
        // session now. Same host, port, database, options and TLS as the admin connection.
        let mut config = self.config.clone();
        config.user(username).password(password.expose());
        let secrets = [password.expose()];
        let (client, connection) = config
            .connect(self.tls.connector.clone())
            .await
            .map_err(|e| login_error(username, &e, &secrets))?;
        let query = async move {
            let result = client
                .simple_query("SELECT 1")
                .await
                .map(|_| ())
                .map_err(|e| login_error(username, &e, &secrets));
            // Dropping the client sends Terminate, after which the connection future ends.
            drop(client);
            result
        };
        // The connection is driven here rather than in a spawned task, so that a caller giving
        // up (its deadline passed) drops it and closes the socket. Its own result adds nothing.
        let (result, _) = tokio::join!(query, connection);
        result
    }

    #[tracing::instrument(skip_all, fields(engine = "postgres", prefix = %prefix), err)]
    async fn list_users(&self, prefix: &str) -> Result<Vec<String>, PluginError> {
        let client = self.client().await?;
        let rows = client
            .query(LIST_USERS, &[&lessor_plugin::like_prefix(prefix)])
            .await
            .map_err(|e| classify(&e, &[]));
        client.release();
        Ok(rows?.iter().map(|row| row.get::<_, String>(0)).collect())
    }

    async fn marked_users(&self) -> Result<Option<HashMap<String, String>>, PluginError> {
        let client = self.client().await?;
        let rows = client
            .query(MARKED_USERS, &[&UserMarker::like_pattern()])
            .await
            .map_err(|e| classify(&e, &[]));
        client.release();
        Ok(Some(
            rows?
                .iter()
                .filter_map(|row| {
                    let note: String = row.get(1);
                    let installation = UserMarker::installation_in(&note)?.to_owned();
                    Some((row.get::<_, String>(0), installation))
                })
                .collect(),
        ))
    }

    /// `postgresql://user@host:port/database`, with the admin connection's `sslmode`: what a
    /// client needs besides the password.
    fn user_connection_url(&self, username: &str, database: Option<&str>) -> Option<String> {
        let host = match self.config.get_hosts().first()? {
            tokio_postgres::config::Host::Tcp(host) if host.contains(':') => format!("[{host}]"),
            tokio_postgres::config::Host::Tcp(host) => host.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => return None,
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let database = database.or(self.config.get_dbname()).unwrap_or("postgres");
        Some(format!(
            "postgresql://{}@{host}:{port}/{}?sslmode={}",
            lessor_plugin::percent_encode_credential(username),
            lessor_plugin::percent_encode_credential(database),
            self.tls.mode.as_str()
        ))
    }

    async fn close(&self) {
        // Idle connections are dropped now; ones in use are dropped when returned.
        self.pool.close();
    }
}

/// What this crate offers Lessor's registry.
pub static DESCRIPTOR: EngineDescriptor = EngineDescriptor {
    name: "postgres",
    label: "PostgreSQL",
    plugin_names: PLUGIN_NAMES,
    max_username_len: MAX_USERNAME_LEN,
    connect: |settings| {
        Box::pin(async move {
            let plugin: Arc<dyn DatabasePlugin> = Arc::new(connect(settings).await?);
            Ok(plugin)
        })
    },
    local: LocalTarget {
        admin_url: "postgres://postgres@127.0.0.1:5432/postgres",
        url_env: "LESSOR_DEV_POSTGRES_URL",
        connection: "dev-postgres",
        role: "readonly",
        // Membership in pg_read_all_data, never per-user table grants (which overflow
        // pg_class.relacl after a few thousand live users).
        readonly_creation: &[
            r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE pg_read_all_data;"#,
        ],
    },
    direct: Some(|url| {
        Box::pin(async move {
            let session: Box<dyn DirectSession> =
                Box::new(baseline::PostgresDirect::connect(&url).await?);
            Ok(session)
        })
    }),
    // Vault's plugin for this engine takes a connection_url, not host/port fields.
    address: None,
};
