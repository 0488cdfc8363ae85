//! `database/rotate-root/:connection`: the connection's admin password, rotated with the same
//! two-phase protocol as a static role, so that no person needs to know it afterwards.
//!
//! The pending password is sealed into the connection's row under the admin password's own
//! context, then set on the database (with `root_rotation_statements` when the operator gave
//! some), tested by logging in as the admin, promoted, and the connection's pool is rebuilt so new
//! connections use it. Rotation needs a `connection_url` that takes the password from the
//! `{{password}}` placeholder: a password written into the URL itself could not be replaced.

use chrono::Utc;
use lessor_plugin::{DatabasePlugin, PasswordChange, Secret, UpdateUserRequest};

use super::{RotationFault, Rotator};
use crate::catalog::check_name;
use crate::engines::password_seal_context;
use crate::error::{Error, Result};
use crate::store::{CatalogStore, Connection, RotationStore};

/// What resolving a pending admin password came to.
#[derive(Debug, PartialEq, Eq)]
enum RootResolution {
    Promoted,
    Discarded,
}

impl Rotator {
    /// Rotates the admin password of `connection` now. The rotation runs as a task of its own: a
    /// caller that stops waiting (a client that disconnects) cannot leave it half done.
    pub async fn rotate_root(&self, connection: &str) -> Result<()> {
        check_name("connection name", connection)?;
        let rotator = self.clone();
        let connection = connection.to_owned();
        self.run_detached(async move { rotator.rotate_root_in_task(&connection).await })
            .await
    }

    #[tracing::instrument(skip_all, fields(connection = %connection), err)]
    async fn rotate_root_in_task(&self, connection: &str) -> Result<()> {
        let _guard = self.lock(format!("root/{connection}")).await;
        let row = self.connection_row(connection).await?;
        // Counted once the connection is known to exist, so a made-up name makes no series.
        let started = std::time::Instant::now();
        let rotated = self.rotate_root_row(connection, &row).await;
        if let Some(labels) = crate::metrics::RotationLabels::checked_root(connection) {
            let outcome = crate::metrics::Outcome::of(&rotated);
            crate::metrics::rotation(&labels, outcome, started.elapsed());
        }
        rotated
    }

    /// [`Self::rotate_root_in_task`] with the lock held and the connection's row read.
    async fn rotate_root_row(&self, connection: &str, row: &Connection) -> Result<()> {
        let admin = rotatable_admin(row, &self.engines.settings_for(row)?.connection_url)?;
        let statements = &row.root_rotation_statements;

        // A rotation interrupted earlier is settled first, so its password is never lost.
        if let Some(pending) = self.store.root_pending(connection).await? {
            self.resolve_root(row, &pending, statements).await?;
        }
        let plugin = self.engines.get(connection).await?;

        let password =
            crate::password_policy::generate_for_connection(&self.store, connection).await?;
        let sealed = self
            .sealer
            .seal(&password_seal_context(connection), &password)?;
        if !self
            .store
            .set_root_pending(connection, &sealed, Utc::now())
            .await?
        {
            return Err(Error::Conflict(format!(
                "another admin password rotation of connection {connection} is in flight"
            )));
        }
        self.crash_point(RotationFault::AfterPendingStored)?;
        let applied = self
            .set_and_verify_root(connection, plugin.as_ref(), &admin, &password, statements)
            .await;
        if let Err(error) = applied {
            if !is_injected(&error) {
                // Settle now where the database allows, so Lessor keeps a working admin password
                // without waiting for a restart; the error is what the caller hears either way.
                let row = self.connection_row(connection).await?;
                if let Err(settle) = self.resolve_root(&row, &sealed, statements).await {
                    tracing::warn!(error = %settle, "the failed admin rotation stays pending until the next rotate-root or restart");
                }
            }
            return Err(error);
        }
        if !self
            .store
            .promote_root_pending(connection, &sealed, Utc::now())
            .await?
        {
            return Err(Error::Conflict(format!(
                "connection {connection} changed during its admin password rotation"
            )));
        }
        // The pool still holds sessions opened with the old password; new ones need the new one.
        self.engines.invalidate(connection).await;
        tracing::info!(username = %admin, "admin password rotated");
        Ok(())
    }

    /// Settles an admin rotation interrupted by a crash (the rotator's start-up) or left pending
    /// by a failed one (the rotator's passes), in a tracked task. Does nothing while a rotation of
    /// the connection is in flight in this process: that one settles its own.
    pub(super) async fn recover_root(&self, connection: &str) -> Result<()> {
        let Some(guard) = self.try_lock(format!("root/{connection}")) else {
            return Ok(());
        };
        let rotator = self.clone();
        let connection = connection.to_owned();
        self.run_detached(async move {
            let _guard = guard;
            rotator.recover_root_locked(&connection).await
        })
        .await
    }

    async fn recover_root_locked(&self, connection: &str) -> Result<()> {
        let row = self.connection_row(connection).await?;
        let Some(pending) = self.store.root_pending(connection).await? else {
            return Ok(());
        };
        let resolution = self
            .resolve_root(&row, &pending, &row.root_rotation_statements)
            .await?;
        tracing::info!(
            connection,
            ?resolution,
            "interrupted admin password rotation resolved"
        );
        Ok(())
    }

    async fn connection_row(&self, connection: &str) -> Result<Connection> {
        self.store
            .get_connection(connection)
            .await?
            .ok_or_else(|| Error::not_found("connection", connection))
    }

    async fn set_and_verify_root(
        &self,
        connection: &str,
        plugin: &dyn DatabasePlugin,
        admin: &str,
        password: &Secret,
        statements: &[String],
    ) -> Result<()> {
        plugin
            .update_user(&UpdateUserRequest {
                username: admin,
                password: Some(PasswordChange {
                    new_password: password,
                    statements,
                }),
                expiration: None,
            })
            .await
            .map_err(|e| {
                Error::database(
                    format!("cannot set the new admin password of connection {connection}"),
                    e,
                )
            })?;
        self.pause_point(RotationFault::AfterPasswordSet).await;
        self.crash_point(RotationFault::AfterPasswordSet)?;
        plugin.check_login(admin, password).await.map_err(|e| {
            Error::database(
                format!(
                    "the new admin password of connection {connection} was set but does not log in"
                ),
                e,
            )
        })?;
        self.crash_point(RotationFault::AfterLoginChecked)?;
        Ok(())
    }

    /// Settles a pending admin password: promoted if it logs in, dropped if the stored one still
    /// does (the database never took it), otherwise set again through the pool.
    async fn resolve_root(
        &self,
        row: &Connection,
        pending_sealed: &str,
        statements: &[String],
    ) -> Result<RootResolution> {
        let connection = row.name.as_str();
        let pending = self
            .sealer
            .open(&password_seal_context(connection), pending_sealed)?;
        let current = self.engines.settings_for(row)?.password;
        let plugin = self.engines.get(connection).await?;
        let admin = row.username.as_str();
        match plugin.check_login(admin, &pending).await {
            Ok(()) => {
                self.promote_root(connection, pending_sealed).await?;
                return Ok(RootResolution::Promoted);
            }
            Err(e) if e.is_transient() => {
                return Err(Error::database(
                    format!("cannot check the pending admin password of connection {connection}"),
                    e,
                ))
            }
            Err(_) => {}
        }
        if plugin.check_login(admin, &current).await.is_ok() {
            self.store
                .discard_root_pending(connection, pending_sealed)
                .await?;
            return Ok(RootResolution::Discarded);
        }
        self.set_and_verify_root(connection, plugin.as_ref(), admin, &pending, statements)
            .await?;
        self.promote_root(connection, pending_sealed).await?;
        Ok(RootResolution::Promoted)
    }

    async fn promote_root(&self, connection: &str, pending_sealed: &str) -> Result<()> {
        if !self
            .store
            .promote_root_pending(connection, pending_sealed, Utc::now())
            .await?
        {
            return Err(Error::Conflict(format!(
                "connection {connection} changed during its admin password rotation"
            )));
        }
        self.engines.invalidate(connection).await;
        Ok(())
    }

    /// Every admin password the store holds for a connection: current and pending (test builds
    /// only, to prove one of them logs in after a crash).
    #[cfg(feature = "fault-injection")]
    pub async fn stored_root_passwords(
        &self,
        connection: &str,
    ) -> Result<Vec<(&'static str, Secret)>> {
        let row = self.connection_row(connection).await?;
        let mut found = vec![("current", self.engines.settings_for(&row)?.password)];
        if let Some(pending) = self.store.root_pending(connection).await? {
            found.push((
                "pending",
                self.sealer
                    .open(&password_seal_context(connection), &pending)?,
            ));
        }
        Ok(found)
    }
}

/// The admin user of a connection whose password Lessor can rotate, or a 400 saying why not.
fn rotatable_admin(row: &Connection, url: &Secret) -> Result<String> {
    if !url.expose().contains("{{password}}") {
        return Err(Error::invalid(format!(
            "connection {}: rotate-root needs a connection_url that takes the password from the {{{{password}}}} \
             placeholder (for example postgresql://{{{{username}}}}:{{{{password}}}}@host:5432/db) with username and \
             password set on the connection; a password written into the URL cannot be rotated",
            row.name
        )));
    }
    if row.username.trim().is_empty() {
        return Err(Error::invalid(format!(
            "connection {}: rotate-root needs the connection's username (the admin user whose password is rotated)",
            row.name
        )));
    }
    lessor_plugin::check_username(&row.username)
        .map_err(|e| Error::invalid(format!("connection {}: {e}", row.name)))?;
    Ok(row.username.clone())
}

/// Whether an error is an injected crash (test builds), after which nothing more may be written.
fn is_injected(error: &Error) -> bool {
    matches!(error, Error::Internal(message) if message.starts_with("injected fault"))
}
