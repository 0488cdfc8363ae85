//! The plugin's own commands, sent directly on one plain connection, with no lease store and no
//! HTTP in front: the baseline `lessor bench` measures Lessor against. Creation and the built-in
//! deletion call the same functions `create_user` and `delete_user` do.

use async_trait::async_trait;
use lessor_plugin::{DirectSession, NewUserRequest, PluginError, Secret};
use redis::aio::MultiplexedConnection;

use crate::{acl, creation_rules, error};

/// One admin connection used the way a hand-written script would.
pub struct RedisDirect {
    conn: MultiplexedConnection,
}

impl RedisDirect {
    /// Connects with a plain `redis://` URL (credentials inline, if any).
    pub async fn connect(url: &Secret) -> Result<Self, PluginError> {
        crate::target::install_default_provider();
        let client = redis::Client::open(url.expose()).map_err(|_| {
            PluginError::Config("the benchmark needs a redis://[user:pass@]host:port URL".into())
        })?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| error::classify(&e, "connecting for the benchmark", None))?;
        Ok(Self { conn })
    }
}

#[async_trait]
impl DirectSession for RedisDirect {
    async fn server_version(&mut self) -> Result<String, PluginError> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.conn)
            .await
            .map_err(|e| error::classify(&e, "asking the server version", None))?;
        Ok(info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .map(|version| format!("Redis {}", version.trim()))
            .unwrap_or_default())
    }

    async fn user_exists(&mut self, username: &str) -> Result<bool, PluginError> {
        acl::user_exists(&mut self.conn, username).await
    }

    /// `create_user`'s work: the existence check, then one `ACL SETUSER`.
    async fn create_user(&mut self, request: &NewUserRequest<'_>) -> Result<(), PluginError> {
        let rules = creation_rules(request)?;
        acl::create(&mut self.conn, request.username, request.password, &rules).await
    }

    /// The built-in deletion: `off`, `CLIENT KILL USER`, `ACL DELUSER` in one transaction.
    async fn delete_user(&mut self, username: &str) -> Result<(), PluginError> {
        lessor_plugin::check_username(username)?;
        acl::delete(&mut self.conn, username).await.map(drop)
    }

    /// `ACL DELUSER` alone (it answers 0 for a user that is not there).
    async fn drop_user(&mut self, username: &str) -> Result<(), PluginError> {
        lessor_plugin::check_username(username)?;
        let _deleted: i64 = redis::cmd("ACL")
            .arg("DELUSER")
            .arg(username)
            .query_async(&mut self.conn)
            .await
            .map_err(|e| error::classify(&e, "deleting the user", None))?;
        Ok(())
    }

    async fn users_with_prefix(&mut self, prefix: &str) -> Result<Vec<String>, PluginError> {
        acl::users_with_prefix(&mut self.conn, prefix).await
    }
}
