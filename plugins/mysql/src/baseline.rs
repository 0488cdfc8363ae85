//! The plugin's own SQL, issued directly on one plain connection, with no pool, no lease store and
//! no HTTP in front: the baseline `lessor bench` measures Lessor against. Creation and the
//! built-in revocation call the same functions `create_user` and `delete_user` do.

use async_trait::async_trait;
use lessor_plugin::{DirectSession, NewUserRequest, PluginError, Secret};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use crate::{create_on, error, render_creation, revoke_on, sql, user_hosts, CreationFailure};

/// Users whose names match a `LIKE` pattern made by [`lessor_plugin::like_prefix`].
const USERS_LIKE: &str =
    "SELECT DISTINCT User FROM mysql.user WHERE User LIKE ? ESCAPE '!' ORDER BY User";

/// [`USERS_LIKE`]' count. `mysql.user.User` has a binary collation (`utf8mb3_bin` on MariaDB
/// 10.11), so `LIKE` matches the exact prefix.
const COUNT_USERS_LIKE: &str =
    "SELECT COUNT(DISTINCT User) FROM mysql.user WHERE User LIKE ? ESCAPE '!'";

/// One admin connection used the way a hand-written script would.
pub struct MySqlDirect {
    conn: Conn,
}

impl MySqlDirect {
    /// Connects with a plain `mysql://` URL (credentials inline), over TCP.
    pub async fn connect(url: &Secret) -> Result<Self, PluginError> {
        let opts = Opts::from_url(url.expose()).map_err(|_| {
            PluginError::Config("the benchmark needs a mysql://user:pass@host:port/ URL".into())
        })?;
        let opts = OptsBuilder::from_opts(opts).prefer_socket(false);
        let conn = Conn::new(opts)
            .await
            .map_err(|e| error::classify(&e, "connecting for the benchmark", None))?;
        Ok(Self { conn })
    }
}

#[async_trait]
impl DirectSession for MySqlDirect {
    async fn server_version(&mut self) -> Result<String, PluginError> {
        let version: Option<String> = self
            .conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(|e| error::classify(&e, "asking the server version", None))?;
        Ok(version.unwrap_or_default())
    }

    async fn user_exists(&mut self, username: &str) -> Result<bool, PluginError> {
        Ok(!user_hosts(&mut self.conn, username).await?.is_empty())
    }

    /// `create_user`'s work: the existence check, then the creation statements.
    async fn create_user(&mut self, request: &NewUserRequest<'_>) -> Result<(), PluginError> {
        let rendered = render_creation(request)?;
        create_on(&mut self.conn, request, &rendered)
            .await
            .map_err(|failure| match failure {
                CreationFailure::Untouched(err) | CreationFailure::Partial(err) => err,
            })
    }

    /// The built-in revocation: the hosts, then `ACCOUNT LOCK`, `DROP USER` and the sessions in
    /// one query, then `KILL` of each session.
    async fn delete_user(&mut self, username: &str) -> Result<(), PluginError> {
        lessor_plugin::check_username(username)?;
        revoke_on(&mut self.conn, username, None, None).await
    }

    /// `DROP USER IF EXISTS` of the account at `'%'` alone.
    async fn drop_user(&mut self, username: &str) -> Result<(), PluginError> {
        lessor_plugin::check_username(username)?;
        self.conn
            .query_drop(format!(
                "DROP USER IF EXISTS {}",
                sql::account(username, sql::DEFAULT_HOST)
            ))
            .await
            .map_err(|e| error::classify(&e, "dropping the user", None))
    }

    async fn users_with_prefix(&mut self, prefix: &str) -> Result<Vec<String>, PluginError> {
        let mut users: Vec<String> = self
            .conn
            .exec(USERS_LIKE, (lessor_plugin::like_prefix(prefix),))
            .await
            .map_err(|e| error::classify(&e, "listing users", None))?;
        // LIKE follows the column's collation; the exact prefix test keeps the contract exact.
        users.retain(|user| user.starts_with(prefix));
        Ok(users)
    }

    async fn count_users_with_prefix(&mut self, prefix: &str) -> Result<usize, PluginError> {
        let count: Option<u64> = self
            .conn
            .exec_first(COUNT_USERS_LIKE, (lessor_plugin::like_prefix(prefix),))
            .await
            .map_err(|e| error::classify(&e, "counting users", None))?;
        Ok(usize::try_from(count.unwrap_or_default()).unwrap_or(usize::MAX))
    }
}
