//! The Redis engine of Lessor: creates, rotates and deletes ACL users (Redis 6 and newer) over
//! one multiplexed admin connection, with redis-rs.
//!
//! - `target`: the connection URL (`redis://`, `rediss://`), the admin login, TLS (`ca_cert`,
//!   `insecure_tls`), checked when the plugin is built.
//! - `rules`: a role's statements as ACL rules (`["~app:*", "+@read"]`), checked when the role is
//!   written.
//! - `acl`: the commands sent, shared with `lessor bench`'s baseline.
//! - `error`: redis-rs errors turned into transient or permanent [`PluginError`]s.
//!
//! # What the admin user needs
//! `ACL SETUSER`, `ACL DELUSER`, `ACL GETUSER`, `ACL USERS` and `CLIENT KILL`: in ACL terms
//! `+acl +client|kill` (the `default` user of a server without ACLs of its own has them).
//!
//! # Semantics worth knowing
//! - Redis has no expiry on an ACL user, so [`DatabasePlugin::enforces_expiration`] is false: a
//!   login stops working when Lessor's reaper revokes it. Renewing changes nothing on the server.
//! - Statements: creation statements are the user's ACL rules (default `["~*", "+@read"]`, Vault's
//!   default); rotation statements are rules applied with a new password (empty by default).
//!   Revocation, rollback and renew statements are refused when a role is written: deletion is
//!   always the built-in one, and there is nothing to renew.
//! - Creation is one `ACL SETUSER`, which Redis applies whole or not at all, so a refused rule
//!   leaves no user behind. Deletion switches the user off, kills its connections and deletes it in
//!   one `MULTI`/`EXEC`, so no session outlives it.
//! - One multiplexed connection carries every admin command (Redis answers in order on one
//!   connection, so a pool would add nothing); `max_open_connections` bounds the commands in
//!   flight on it. It is opened on first use and again after it breaks. An operation abandoned
//!   mid-way (its caller's deadline passed) leaves the connection in sync: redis-rs reads and drops
//!   the answers nobody waits for any more.
//! - Time limits: opening a connection and each answer are bounded by the settings' connect and
//!   statement timeouts; the caller bounds each whole operation.

#![forbid(unsafe_code)]

mod acl;
mod error;
mod rules;
mod target;

pub mod baseline;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lessor_plugin::{
    check_password, check_username, check_username_len, AddressForm, ConnectionSettings,
    DatabasePlugin, DefaultStatements, DeleteUserRequest, DirectSession, EngineDescriptor,
    LocalTarget, NewUserRequest, PluginError, RoleOptions, Secret, StatementKind,
    UpdateUserRequest,
};
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::Mutex;

pub use rules::DEFAULT_CREATION;

/// Plugin names under which connections may refer to this engine: Vault's, then the short form.
pub const PLUGIN_NAMES: &[&str] = &["redis-database-plugin", "redis"];

/// Longest username: Redis sets no limit of its own; this is the longest name
/// [`check_username`] lets through.
const USERNAME_LIMIT: usize = 128;

/// Used when the settings carry a zero timeout, which would fail every call.
const FALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// One Redis server, reached through one multiplexed admin connection.
pub struct RedisPlugin {
    target: target::Target,
    /// Logs in as the admin; makes the connection below.
    admin: redis::Client,
    /// Timeouts and the in-flight bound of every connection this plugin opens.
    config: AsyncConnectionConfig,
    connect_timeout: Duration,
    /// The admin connection, once opened; emptied when it breaks, so the next call reconnects.
    /// The lock is held while connecting, so concurrent callers wait for one attempt.
    connection: Mutex<Option<MultiplexedConnection>>,
}

impl fmt::Debug for RedisPlugin {
    // Hand-written: the client's connection info holds the admin password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPlugin")
            .field("target", &self.target)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// Builds the plugin for `settings`. Connects lazily: fails only when the configuration is
/// unusable ([`PluginError::InvalidValue`] naming the field); an unreachable server is
/// [`DatabasePlugin::verify`]'s to report.
#[tracing::instrument(skip_all, err)]
pub async fn connect(settings: ConnectionSettings) -> Result<RedisPlugin, PluginError> {
    let target = target::parse(&settings)?;
    target::install_default_provider();
    let admin = target.admin_client()?;
    let nonzero = |d: Duration| if d.is_zero() { FALLBACK_TIMEOUT } else { d };
    let connect_timeout = nonzero(settings.connect_timeout);
    let in_flight = usize::try_from(settings.max_open_connections).unwrap_or(usize::MAX);
    Ok(RedisPlugin {
        target,
        admin,
        config: target::connection_config(
            connect_timeout,
            nonzero(settings.statement_timeout),
            in_flight,
        ),
        connect_timeout,
        connection: Mutex::new(None),
    })
}

impl RedisPlugin {
    /// The admin connection, opened if need be; `Unavailable` after the connect timeout.
    async fn conn(&self) -> Result<MultiplexedConnection, PluginError> {
        let mut slot = self.connection.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let opened = tokio::time::timeout(
            self.connect_timeout,
            target::open(&self.admin, &self.config),
        )
        .await
        .map_err(|_| {
            PluginError::Unavailable(format!(
                "no connection to {} within {:?}",
                self.target.address(),
                self.connect_timeout
            ))
        })?
        .map_err(|e| {
            error::classify(
                &e,
                &format!("connecting to {} as the admin", self.target.address()),
                None,
            )
        })?;
        *slot = Some(opened.clone());
        Ok(opened)
    }

    /// Runs `operation` on the admin connection; a broken connection is dropped so that the
    /// next call opens a new one.
    async fn run<T, F>(&self, operation: F) -> Result<T, PluginError>
    where
        F: AsyncFnOnce(&mut MultiplexedConnection) -> Result<T, PluginError>,
    {
        let mut conn = self.conn().await?;
        let result = operation(&mut conn).await;
        if let Err(PluginError::Unavailable(_)) = &result {
            self.connection.lock().await.take();
        }
        result
    }
}

/// The rules a creation runs: the role's, or the default when it gives none.
fn creation_rules(request: &NewUserRequest<'_>) -> Result<Vec<String>, PluginError> {
    check_username(request.username)?;
    check_password(request.password)?;
    if request.database.is_some() {
        return Err(PluginError::invalid(
            "database_per_lease",
            "the redis engine has no databases to create",
        ));
    }
    if let Some(option) = request.options.keys().next() {
        return Err(unknown_option(option));
    }
    let rules = if rules::is_blank(request.statements) {
        rules::parse("creation_statements", &[DEFAULT_CREATION.to_owned()])?
    } else {
        rules::parse("creation_statements", request.statements)?
    };
    Ok(rules::render(&rules, request.username))
}

fn unknown_option(option: &str) -> PluginError {
    PluginError::invalid(
        "options",
        format!(
            "unknown option `{}`: the redis engine takes none",
            option.chars().take(40).collect::<String>()
        ),
    )
}

#[async_trait]
impl DatabasePlugin for RedisPlugin {
    fn engine(&self) -> &'static str {
        DESCRIPTOR.name
    }

    fn max_username_len(&self) -> usize {
        USERNAME_LIMIT
    }

    fn enforces_expiration(&self) -> bool {
        false
    }

    fn default_statements(&self) -> DefaultStatements {
        DefaultStatements {
            creation: vec![DEFAULT_CREATION.to_owned()],
            ..DefaultStatements::default()
        }
    }

    fn runs_statements(&self, kind: StatementKind) -> bool {
        matches!(kind, StatementKind::Creation | StatementKind::Rotation)
    }

    /// Every statement must be ACL rules (see the `rules` module); no options are known.
    fn validate_role(
        &self,
        options: &RoleOptions,
        statements: &[&[String]],
    ) -> Result<(), PluginError> {
        if let Some(option) = options.keys().next() {
            return Err(unknown_option(option));
        }
        for list in statements {
            rules::parse("statements", list)?;
        }
        Ok(())
    }

    /// Proves the server answers and that the admin may manage ACL users: `ACL GETUSER` of
    /// itself needs the same rights as the commands Lessor sends.
    #[tracing::instrument(skip_all, err)]
    async fn verify(&self) -> Result<(), PluginError> {
        self.run(async |conn: &mut MultiplexedConnection| {
            let whoami: String = redis::cmd("ACL")
                .arg("WHOAMI")
                .query_async(conn)
                .await
                .map_err(|e| {
                    error::classify(&e, "asking ACL WHOAMI (Redis 6 or newer is needed)", None)
                })?;
            acl::user_exists(conn, &whoami).await.map_err(|e| match e {
                PluginError::Rejected(message) => PluginError::Rejected(format!(
                    "{message} (the admin user {whoami} needs +acl and +client|kill)"
                )),
                other => other,
            })?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(username = %request.username), err)]
    async fn create_user(&self, request: &NewUserRequest<'_>) -> Result<(), PluginError> {
        check_username_len(request.username, USERNAME_LIMIT)?;
        let rules = creation_rules(request)?;
        self.run(async |conn: &mut MultiplexedConnection| {
            acl::create(conn, request.username, request.password, &rules).await
        })
        .await?;
        tracing::info!(rules = rules.len(), "created user");
        Ok(())
    }

    /// A password change sets the new password in place of every other, with the rotation's
    /// rules. An expiration change does nothing: Redis has no expiry to move, and renew statements
    /// are refused when a role is written.
    #[tracing::instrument(skip_all, fields(username = %request.username), err)]
    async fn update_user(&self, request: &UpdateUserRequest<'_>) -> Result<(), PluginError> {
        check_username(request.username)?;
        if let Some(change) = &request.expiration {
            if !rules::is_blank(change.statements) {
                return Err(PluginError::invalid(
                    "renew_statements",
                    "the redis engine runs no renew statements; Redis has no expiry to move",
                ));
            }
        }
        let Some(change) = &request.password else {
            return Ok(());
        };
        check_password(change.new_password)?;
        let rules = rules::render(
            &rules::parse("rotation_statements", change.statements)?,
            request.username,
        );
        self.run(async |conn: &mut MultiplexedConnection| {
            acl::set_password(conn, request.username, change.new_password, &rules).await
        })
        .await?;
        tracing::info!("password set");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(username = %request.username), err)]
    async fn delete_user(&self, request: &DeleteUserRequest<'_>) -> Result<(), PluginError> {
        check_username(request.username)?;
        if !rules::is_blank(request.statements) {
            // Refused when roles are written; a lease that carries some anyway (written by hand
            // into the store) must still lose its user, so the built-in deletion runs.
            tracing::warn!(
                "the redis engine runs no revocation statements; deleting the user the built-in way"
            );
        }
        if request.database.is_some() {
            return Err(PluginError::invalid(
                "database",
                "the redis engine has no databases",
            ));
        }
        let killed = self
            .run(async |conn: &mut MultiplexedConnection| acl::delete(conn, request.username).await)
            .await?;
        tracing::info!(killed, "deleted user");
        Ok(())
    }

    /// Each user is its own `ACL DELUSER` and session kill; nothing is shared.
    fn batches_deletes(&self) -> bool {
        false
    }

    /// One by one: each deletion is already one `MULTI`/`EXEC` round trip.
    async fn delete_users(
        &self,
        requests: &[DeleteUserRequest<'_>],
    ) -> Vec<Result<(), PluginError>> {
        lessor_plugin::delete_each(self, requests).await
    }

    /// A fresh connection that logs in as the user (`AUTH`) and sends `PING`. A user allowed no
    /// `PING` (a read-only one) has still logged in, which is what is checked.
    #[tracing::instrument(skip_all, fields(username = %username), err)]
    async fn check_login(&self, username: &str, password: &Secret) -> Result<(), PluginError> {
        check_username(username)?;
        let client = self.target.client(Some(username), password)?;
        let attempt = async {
            let mut conn = target::open(&client, &self.config).await?;
            redis::cmd("PING").query_async::<()>(&mut conn).await
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if error::is_no_permission(&e) => Ok(()),
            Ok(Err(e)) if error::is_login_refusal(&e) => Err(PluginError::LoginRefused {
                username: username.to_owned(),
                reason: "the server refused the username and password (WRONGPASS)".to_owned(),
            }),
            Ok(Err(e)) => Err(error::classify(
                &e,
                "logging in as the user",
                Some(password),
            )),
            Err(_) => Err(PluginError::Unavailable(format!(
                "no answer from {} within {:?} while logging in as the user",
                self.target.address(),
                self.connect_timeout
            ))),
        }
    }

    #[tracing::instrument(skip_all, fields(prefix = %prefix), err)]
    async fn list_users(&self, prefix: &str) -> Result<Vec<String>, PluginError> {
        self.run(async |conn: &mut MultiplexedConnection| {
            acl::users_with_prefix(conn, prefix).await
        })
        .await
    }

    /// Redis ACL users carry no note, so the store's record of issued users is the only proof
    /// of ownership.
    async fn marked_users(
        &self,
    ) -> Result<Option<std::collections::HashMap<String, String>>, PluginError> {
        Ok(None)
    }

    #[tracing::instrument(skip_all)]
    async fn close(&self) {
        // Dropping the last handle ends the connection's driver task, which closes the socket.
        self.connection.lock().await.take();
    }
}

/// What this crate offers Lessor's registry.
pub static DESCRIPTOR: EngineDescriptor = EngineDescriptor {
    name: "redis",
    label: "Redis",
    plugin_names: PLUGIN_NAMES,
    max_username_len: USERNAME_LIMIT,
    connect: |settings| {
        Box::pin(async move {
            let plugin: Arc<dyn DatabasePlugin> = Arc::new(connect(settings).await?);
            Ok(plugin)
        })
    },
    local: LocalTarget {
        admin_url: "redis://127.0.0.1:6379",
        url_env: "LESSOR_DEV_REDIS_URL",
        connection: "dev-redis",
        role: "redis-readonly",
        readonly_creation: &[DEFAULT_CREATION],
    },
    direct: Some(|url| {
        Box::pin(async move {
            let session: Box<dyn DirectSession> =
                Box::new(baseline::RedisDirect::connect(&url).await?);
            Ok(session)
        })
    }),
    address: Some(AddressForm {
        scheme: "redis",
        tls_scheme: "rediss",
        default_port: target::DEFAULT_PORT,
    }),
};
