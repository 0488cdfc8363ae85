//! The plugin's own SQL, issued directly on one plain connection, with no pool, no lease store and
//! no HTTP in front: the baseline `lessor bench` measures Lessor against. The statements are the
//! ones `create_user` and the built-in `delete_user` run: both sides call the same functions.

use async_trait::async_trait;
use lessor_plugin::{
    DirectSession, NewUserRequest, PasswordAuthentication, PluginError, Secret, UserMarker,
};
use tokio_postgres::NoTls;

use crate::error::classify;
use crate::{
    create_on, quote_ident, revoke_on, statement_password, Login, LIST_USERS, LOCK_TIMEOUT,
    ROLE_EXISTS,
};

/// [`LIST_USERS`]' count.
const COUNT_USERS: &str = "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1 ESCAPE '!'";

/// One admin connection used the way a hand-written script would.
pub struct PostgresDirect {
    client: tokio_postgres::Client,
    /// Passwords or SCRAM verifiers in the statements, as the measured connection has it.
    password_authentication: PasswordAuthentication,
    /// The comment every created role gets, as the measured connection's plugin gives it.
    user_marker: Option<UserMarker>,
}

impl PostgresDirect {
    /// Connects with a plain `postgres://` URL (credentials inline, no templates).
    pub async fn connect(url: &Secret) -> Result<Self, PluginError> {
        let (client, connection) = tokio_postgres::connect(url.expose(), NoTls)
            .await
            .map_err(|e| classify(&e, &[]))?;
        tokio::spawn(connection);
        Ok(Self {
            client,
            password_authentication: PasswordAuthentication::Password,
            user_marker: None,
        })
    }
}

#[async_trait]
impl DirectSession for PostgresDirect {
    async fn server_version(&mut self) -> Result<String, PluginError> {
        let row = self
            .client
            .query_one("SHOW server_version", &[])
            .await
            .map_err(|e| classify(&e, &[]))?;
        Ok(row.get(0))
    }

    async fn user_exists(&mut self, username: &str) -> Result<bool, PluginError> {
        let row = self
            .client
            .query_one(ROLE_EXISTS, &[&username])
            .await
            .map_err(|e| classify(&e, &[]))?;
        Ok(row.get(0))
    }

    fn use_password_authentication(
        &mut self,
        mode: PasswordAuthentication,
    ) -> Result<(), PluginError> {
        self.password_authentication = mode;
        Ok(())
    }

    fn use_user_marker(&mut self, marker: Option<UserMarker>) {
        self.user_marker = marker;
    }

    /// `create_user`'s transaction: the creation statements (with the password or its verifier,
    /// computed the same way), then `VALID UNTIL` and the installation's marker.
    async fn create_user(&mut self, request: &NewUserRequest<'_>) -> Result<(), PluginError> {
        let password = statement_password(
            self.password_authentication,
            request.password,
            request.password_strength,
        )
        .await?;
        create_on(
            &mut self.client,
            &[LOCK_TIMEOUT],
            request,
            &password,
            self.user_marker.as_ref(),
            Login::Allowed,
        )
        .await
    }

    /// The built-in revocation: existence check, `NOLOGIN`, end sessions, `DROP ROLE`.
    async fn delete_user(&mut self, username: &str) -> Result<(), PluginError> {
        lessor_plugin::check_username(username)?;
        revoke_on(&mut self.client, &[LOCK_TIMEOUT], username, &[], None).await
    }

    /// `DROP ROLE IF EXISTS` alone, in its own implicit transaction.
    async fn drop_user(&mut self, username: &str) -> Result<(), PluginError> {
        lessor_plugin::check_username(username)?;
        self.client
            .batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(username)))
            .await
            .map_err(|e| classify(&e, &[]))
    }

    async fn users_with_prefix(&mut self, prefix: &str) -> Result<Vec<String>, PluginError> {
        let rows = self
            .client
            .query(LIST_USERS, &[&lessor_plugin::like_prefix(prefix)])
            .await
            .map_err(|e| classify(&e, &[]))?;
        Ok(rows.iter().map(|row| row.get::<_, String>(0)).collect())
    }

    async fn count_users_with_prefix(&mut self, prefix: &str) -> Result<usize, PluginError> {
        let row = self
            .client
            .query_one(COUNT_USERS, &[&lessor_plugin::like_prefix(prefix)])
            .await
            .map_err(|e| classify(&e, &[]))?;
        Ok(usize::try_from(row.get::<_, i64>(0)).unwrap_or_default())
    }
}
