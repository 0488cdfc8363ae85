//! The plugin's own SQL, issued directly on one plain connection, with no pool, no lease store and
//! no HTTP in front: the baseline `lessor bench` measures Lessor against. The statements are the
//! ones `create_user` and the built-in `revoke_user` run, in the same transactions.

use chrono::{DateTime, Utc};
use lessor_plugin::template::format_expiration;
use lessor_plugin::{render_statements, PluginError, Secret, TemplateValues};
use tokio_postgres::NoTls;

use crate::error::classify;
use crate::{quote_ident, HAS_DEPENDENCIES, LOCK_TIMEOUT, ROLE_EXISTS, TERMINATE_SESSIONS};

/// One admin connection used the way a hand-written script would.
pub struct DirectSession {
    client: tokio_postgres::Client,
}

impl DirectSession {
    /// Connects with a plain `postgres://` URL (credentials inline, no templates).
    pub async fn connect(url: &Secret) -> Result<Self, PluginError> {
        let (client, connection) = tokio_postgres::connect(url.expose(), NoTls)
            .await
            .map_err(|e| classify(&e, &[]))?;
        tokio::spawn(connection);
        Ok(Self { client })
    }

    /// The server's version string, for the report.
    pub async fn server_version(&self) -> Result<String, PluginError> {
        let row = self
            .client
            .query_one("SHOW server_version", &[])
            .await
            .map_err(|e| classify(&e, &[]))?;
        Ok(row.get(0))
    }

    /// Whether a role of that name exists (the bench polls it to time the reaper).
    pub async fn role_exists(&self, username: &str) -> Result<bool, PluginError> {
        let row = self
            .client
            .query_one(ROLE_EXISTS, &[&username])
            .await
            .map_err(|e| classify(&e, &[]))?;
        Ok(row.get(0))
    }

    /// `create_user`'s transaction: the creation statements, then `VALID UNTIL`.
    pub async fn create_user(
        &mut self,
        username: &str,
        password: &Secret,
        expiration: DateTime<Utc>,
        statements: &[String],
    ) -> Result<(), PluginError> {
        let rendered = render_statements(
            statements,
            &TemplateValues {
                username,
                password: Some(password),
                expiration: Some(expiration),
            },
        )?;
        let secrets = [password.expose()];
        let tx = self
            .client
            .transaction()
            .await
            .map_err(|e| classify(&e, &secrets))?;
        tx.batch_execute(LOCK_TIMEOUT)
            .await
            .map_err(|e| classify(&e, &secrets))?;
        for statement in &rendered {
            tx.batch_execute(statement.expose())
                .await
                .map_err(|e| classify(&e, &secrets))?;
        }
        tx.batch_execute(&format!(
            "ALTER ROLE {} VALID UNTIL '{}'",
            quote_ident(username),
            format_expiration(expiration)
        ))
        .await
        .map_err(|e| classify(&e, &secrets))?;
        tx.commit().await.map_err(|e| classify(&e, &secrets))
    }

    /// The built-in revocation: existence check, `NOLOGIN`, end sessions, `DROP ROLE`.
    pub async fn revoke_user(&mut self, username: &str) -> Result<(), PluginError> {
        lessor_plugin::check_username(username)?;
        let ident = quote_ident(username);
        let run = async {
            let exists: bool = self
                .client
                .query_one(ROLE_EXISTS, &[&username])
                .await?
                .get(0);
            if !exists {
                return Ok(());
            }
            let tx = self.client.transaction().await?;
            tx.batch_execute(LOCK_TIMEOUT).await?;
            tx.batch_execute(&format!("ALTER ROLE {ident} NOLOGIN"))
                .await?;
            tx.commit().await?;
            self.client
                .execute(TERMINATE_SESSIONS, &[&username])
                .await?;
            let tx = self.client.transaction().await?;
            tx.batch_execute(LOCK_TIMEOUT).await?;
            let owns: bool = tx.query_one(HAS_DEPENDENCIES, &[&username]).await?.get(0);
            if owns {
                tx.batch_execute(&format!(
                    "REASSIGN OWNED BY {ident} TO CURRENT_USER; DROP OWNED BY {ident}"
                ))
                .await?;
            }
            tx.batch_execute(&format!("DROP ROLE IF EXISTS {ident}"))
                .await?;
            tx.commit().await
        };
        run.await
            .map_err(|e: tokio_postgres::Error| classify(&e, &[]))
    }
}
