//! The plugin's own SQL, issued directly on one plain connection, with no pool, no lease store and
//! no HTTP in front: the baseline `lessor bench` measures Lessor against. The statements are the
//! ones `create_user` and the built-in `revoke_user` run, through the same functions.

use lessor_plugin::{render_statements, PluginError, Secret, TemplateValues};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

use crate::{error, revoke_on, run_statements, user_hosts};

/// One admin connection used the way a hand-written script would.
pub struct DirectSession {
    conn: Conn,
}

impl DirectSession {
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

    /// The server's version string, for the report.
    pub async fn server_version(&mut self) -> Result<String, PluginError> {
        let version: Option<String> = self
            .conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(|e| error::classify(&e, "asking the server version", None))?;
        Ok(version.unwrap_or_default())
    }

    /// Whether an account of that name exists (the bench polls it to time the reaper).
    pub async fn user_exists(&mut self, username: &str) -> Result<bool, PluginError> {
        Ok(!user_hosts(&mut self.conn, username).await?.is_empty())
    }

    /// `create_user`'s work: the existence check, then the creation statements.
    pub async fn create_user(
        &mut self,
        username: &str,
        password: &Secret,
        statements: &[String],
    ) -> Result<(), PluginError> {
        let rendered = render_statements(
            statements,
            &TemplateValues {
                username,
                password: Some(password),
                expiration: None,
            },
        )?;
        if !user_hosts(&mut self.conn, username).await?.is_empty() {
            return Err(PluginError::Rejected(format!(
                "user {username} already exists"
            )));
        }
        run_statements(&mut self.conn, &rendered, "creation", Some(password)).await
    }

    /// The built-in revocation: hosts, `ACCOUNT LOCK`, `KILL` sessions, `DROP USER`.
    pub async fn revoke_user(&mut self, username: &str) -> Result<(), PluginError> {
        lessor_plugin::check_username(username)?;
        revoke_on(&mut self.conn, username, None).await
    }
}
