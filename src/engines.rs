//! The registry of engine plugins, fixed at compile time, and the cache of connected plugin
//! instances (one pool per configured connection).
//!
//! The registry is [`ENGINES`], one descriptor per engine crate; it is the only place the root
//! crate names an engine crate. Everything else asks a descriptor (to connect, for `lessor dev`'s
//! local target, for `lessor bench`'s baseline) or goes through the `DatabasePlugin` trait.
//!
//! It is also the one place where time limits on target databases are set, so every engine gets
//! them: the connect timeout and the server-side statement timeout travel in the
//! [`ConnectionSettings`], and every plugin instance is wrapped in [`Deadlined`], which bounds each
//! call as a whole. A database that accepts connections and then never answers costs a caller a
//! transient [`PluginError::Unavailable`] naming the connection (503 at the API), never a hung
//! request or a pool slot held for ever.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lessor_plugin::{
    ConnectionSettings, DatabasePlugin, DefaultStatements, DeleteUserRequest, EngineDescriptor,
    NewUserRequest, PasswordAuthentication, PluginError, RoleOptions, Secret, StatementKind,
    TlsMaterial, UpdateUserRequest, UserMarker,
};
use tokio::sync::RwLock;

use crate::error::{Error, Result};
use crate::revocation_group::{BatchRevoker, RevocationGroup};
use crate::seal::Sealer;
use crate::store::{CatalogStore, Connection, Store};

/// The engines Lessor is built with: each engine crate's descriptor, one line per engine. This
/// list is the only place the root crate names an engine crate.
pub static ENGINES: &[&EngineDescriptor] = &[
    &lessor_postgres::DESCRIPTOR,
    &lessor_mysql::DESCRIPTOR,
    &lessor_redis::DESCRIPTOR,
];

/// The engine a connection's `plugin_name` (Vault's name or a short alias) selects.
pub fn by_plugin_name(plugin_name: &str) -> Option<&'static EngineDescriptor> {
    ENGINES
        .iter()
        .copied()
        .find(|engine| engine.answers_to(plugin_name))
}

/// The engine of that short name (`postgres`, `mysql`), as `lessor bench --engines` names them.
pub fn by_name(name: &str) -> Option<&'static EngineDescriptor> {
    ENGINES.iter().copied().find(|engine| engine.name == name)
}

/// Every accepted plugin name, for error messages.
pub fn known_plugin_names() -> Vec<&'static str> {
    ENGINES
        .iter()
        .flat_map(|engine| engine.plugin_names.iter().copied())
        .collect()
}

/// Time limits on every target database (`target_connect_timeout`, `target_operation_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetDeadlines {
    /// Opening a connection, or waiting for a pooled one.
    pub connect: Duration,
    /// One whole plugin call (create, renew, revoke, set a password, check a login, list users);
    /// also each statement's server-side limit.
    pub operation: Duration,
}

impl Default for TargetDeadlines {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            operation: Duration::from_secs(30),
        }
    }
}

/// A plugin instance as the rest of Lessor sees it: every call bounded by the operation deadline,
/// and concurrent revocations with the built-in statements grouped into batches
/// ([`crate::revocation_group`]). The engines make their own sessions safe to abandon (a pooled
/// connection dropped mid-call is closed, not reused), so the timeout may drop a call at any point.
struct Deadlined {
    inner: Arc<dyn DatabasePlugin>,
    /// The connection's name, so that a timeout says which database stalled.
    connection: String,
    limit: Duration,
    revocations: RevocationGroup,
    /// `delete_users` on `inner` under the deadline, for the revocation group's batches.
    revoke_batch: BatchRevoker,
}

impl Deadlined {
    fn new(inner: Arc<dyn DatabasePlugin>, connection: &str, limit: Duration) -> Self {
        let revoke_batch: BatchRevoker = {
            let inner = inner.clone();
            let connection = connection.to_owned();
            Arc::new(move |usernames: Vec<String>| {
                let inner = inner.clone();
                let connection = connection.clone();
                Box::pin(async move {
                    let requests: Vec<DeleteUserRequest<'_>> = usernames
                        .iter()
                        .map(|username| DeleteUserRequest::builtin(username))
                        .collect();
                    delete_users_within(&*inner, &connection, limit, &requests).await
                })
            })
        };
        Self {
            inner,
            connection: connection.to_owned(),
            limit,
            revocations: RevocationGroup::default(),
            revoke_batch,
        }
    }

    async fn bounded<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, PluginError>>,
    ) -> Result<T, PluginError> {
        within(&self.connection, self.limit, operation, call).await
    }
}

/// `call` unless it takes longer than `limit`; then a transient error naming the connection.
async fn within<T>(
    connection: &str,
    limit: Duration,
    operation: &'static str,
    call: impl Future<Output = Result<T, PluginError>>,
) -> Result<T, PluginError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                connection = %connection,
                operation,
                limit_ms = limit.as_millis() as u64,
                "the target database did not answer in time"
            );
            Err(PluginError::Unavailable(format!(
                "connection {connection} did not answer within {} ({operation}); the database may be stalled or overloaded",
                humantime::format_duration(limit)
            )))
        }
    }
}

/// `delete_users` with the whole batch under one deadline: each of its steps is one round trip
/// for all users. A timeout fails every request of the batch.
async fn delete_users_within(
    plugin: &dyn DatabasePlugin,
    connection: &str,
    limit: Duration,
    requests: &[DeleteUserRequest<'_>],
) -> Vec<Result<(), PluginError>> {
    let all = async { Ok(plugin.delete_users(requests).await) };
    match within(connection, limit, "delete_users", all).await {
        Ok(outcomes) => outcomes,
        Err(timeout) => requests
            .iter()
            .map(|_| Err(PluginError::Unavailable(timeout.to_string())))
            .collect(),
    }
}

#[async_trait]
impl DatabasePlugin for Deadlined {
    fn engine(&self) -> &'static str {
        self.inner.engine()
    }

    fn max_username_len(&self) -> usize {
        self.inner.max_username_len()
    }

    fn enforces_expiration(&self) -> bool {
        self.inner.enforces_expiration()
    }

    fn default_statements(&self) -> DefaultStatements {
        self.inner.default_statements()
    }

    fn validate_role(
        &self,
        options: &RoleOptions,
        statements: &[&[String]],
    ) -> Result<(), PluginError> {
        self.inner.validate_role(options, statements)
    }

    fn validate_database_per_lease(&self, template: Option<&str>) -> Result<(), PluginError> {
        self.inner.validate_database_per_lease(template)
    }

    fn runs_statements(&self, kind: StatementKind) -> bool {
        self.inner.runs_statements(kind)
    }

    async fn verify(&self) -> Result<(), PluginError> {
        self.bounded("verify", self.inner.verify()).await
    }

    async fn create_user(&self, request: &NewUserRequest<'_>) -> Result<(), PluginError> {
        self.bounded("create_user", self.inner.create_user(request))
            .await
    }

    fn supports_warm_pool(&self) -> bool {
        self.inner.supports_warm_pool()
    }

    async fn create_pooled_user(&self, request: &NewUserRequest<'_>) -> Result<(), PluginError> {
        self.bounded("create_pooled_user", self.inner.create_pooled_user(request))
            .await
    }

    async fn activate_pooled_user(
        &self,
        username: &str,
        expiration: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), PluginError> {
        self.bounded(
            "activate_pooled_user",
            self.inner.activate_pooled_user(username, expiration),
        )
        .await
    }

    async fn update_user(&self, request: &UpdateUserRequest<'_>) -> Result<(), PluginError> {
        self.bounded("update_user", self.inner.update_user(request))
            .await
    }

    /// A revocation with the built-in statements joins the connection's next batch (see
    /// [`crate::revocation_group`]) where the engine batches; any other runs alone.
    async fn delete_user(&self, request: &DeleteUserRequest<'_>) -> Result<(), PluginError> {
        if self.inner.batches_deletes() && request.is_builtin() {
            // The caller's wait is bounded too, batches ahead of its own included; its batch,
            // on a task of its own, still runs to its end.
            return self
                .bounded(
                    "delete_user",
                    self.revocations
                        .revoke(request.username, &self.revoke_batch),
                )
                .await;
        }
        self.bounded("delete_user", self.inner.delete_user(request))
            .await
    }

    fn batches_deletes(&self) -> bool {
        self.inner.batches_deletes()
    }

    async fn delete_users(
        &self,
        requests: &[DeleteUserRequest<'_>],
    ) -> Vec<Result<(), PluginError>> {
        delete_users_within(&*self.inner, &self.connection, self.limit, requests).await
    }

    async fn check_login(&self, username: &str, password: &Secret) -> Result<(), PluginError> {
        self.bounded("check_login", self.inner.check_login(username, password))
            .await
    }

    async fn list_users(&self, prefix: &str) -> Result<Vec<String>, PluginError> {
        self.bounded("list_users", self.inner.list_users(prefix))
            .await
    }

    async fn marked_users(&self) -> Result<Option<HashMap<String, String>>, PluginError> {
        self.bounded("marked_users", self.inner.marked_users())
            .await
    }

    fn user_connection_url(&self, username: &str, database: Option<&str>) -> Option<String> {
        self.inner.user_connection_url(username, database)
    }

    async fn close(&self) {
        // Closing waits for nothing that matters; a stalled database must not hold up shutdown.
        let _ = self
            .bounded("close", async {
                self.inner.close().await;
                Ok(())
            })
            .await;
    }
}

/// The sealing contexts of a connection's secrets; a sealed value only opens under its own.
pub fn url_seal_context(connection: &str) -> String {
    format!("connection/{connection}/connection_url")
}

pub fn password_seal_context(connection: &str) -> String {
    format!("connection/{connection}/password")
}

/// The sealing context of one inline TLS field (`tls_ca`, `tls_certificate`, `private_key`,
/// `tls_certificate_key`), so a sealed key cannot be passed off as another field or connection's.
pub fn tls_seal_context(connection: &str, field: &str) -> String {
    format!("connection/{connection}/{field}")
}

/// Closes an instance taken out of the cache once no request holds it any more (at most a minute
/// later): closing it at once would fail the requests still using its pool.
fn retire(old: Arc<dyn DatabasePlugin>) {
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while Arc::strong_count(&old) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        old.close().await;
    });
}

/// Connected plugin instances by connection name, built on first use.
#[derive(Clone)]
pub struct Engines {
    store: Store,
    sealer: Sealer,
    /// The time limits every instance is built with.
    deadlines: TargetDeadlines,
    /// This installation's mark, left on every user an engine that can keep a note creates.
    user_marker: UserMarker,
    live: Arc<RwLock<HashMap<String, Arc<dyn DatabasePlugin>>>>,
}

impl Engines {
    pub fn new(
        store: Store,
        sealer: Sealer,
        deadlines: TargetDeadlines,
        user_marker: UserMarker,
    ) -> Self {
        Self {
            store,
            sealer,
            deadlines,
            user_marker,
            live: Arc::default(),
        }
    }

    /// This installation's marker (reconciliation compares users' marks with it).
    pub fn user_marker(&self) -> &UserMarker {
        &self.user_marker
    }

    /// Builds the instance for connection `name`, every call bounded by the operation deadline.
    /// The only way instances are made.
    pub async fn connect(
        &self,
        engine: &EngineDescriptor,
        name: &str,
        settings: ConnectionSettings,
    ) -> Result<Arc<dyn DatabasePlugin>, PluginError> {
        let inner = (engine.connect)(settings).await?;
        Ok(Arc::new(Deadlined::new(
            inner,
            name,
            self.deadlines.operation,
        )))
    }

    /// Settings for a connection being written (before it is stored): what the operator wrote,
    /// with Lessor's time limits for targets.
    pub fn new_settings(&self, written: ConnectionSettings) -> ConnectionSettings {
        ConnectionSettings {
            connect_timeout: self.deadlines.connect,
            statement_timeout: self.deadlines.operation,
            user_marker: Some(self.user_marker.clone()),
            ..written
        }
    }

    /// Unseals a stored connection into the settings a plugin needs.
    pub fn settings_for(&self, row: &Connection) -> Result<ConnectionSettings> {
        Ok(ConnectionSettings {
            connection_url: self
                .sealer
                .open(&url_seal_context(&row.name), &row.connection_url_sealed)?,
            username: row.username.clone(),
            password: self
                .sealer
                .open(&password_seal_context(&row.name), &row.password_sealed)?,
            max_open_connections: row.max_open_connections.clamp(1, 100),
            connect_timeout: self.deadlines.connect,
            statement_timeout: self.deadlines.operation,
            tls: self.tls_material(row)?,
            disable_escaping: row.disable_escaping,
            password_authentication: stored_password_authentication(row)?,
            user_marker: Some(self.user_marker.clone()),
        })
    }

    /// Unseals a stored connection's inline TLS material.
    pub fn tls_material(&self, row: &Connection) -> Result<TlsMaterial> {
        let open = |field: &str, sealed: &Option<String>| -> Result<Option<Secret>> {
            sealed
                .as_deref()
                .map(|sealed| {
                    self.sealer
                        .open(&tls_seal_context(&row.name, field), sealed)
                })
                .transpose()
        };
        let text = |secret: Option<Secret>| secret.map(|s| s.expose().to_owned());
        Ok(TlsMaterial {
            ca_pem: text(open("tls_ca", &row.tls_ca_sealed)?),
            certificate_pem: text(open("tls_certificate", &row.tls_certificate_sealed)?),
            private_key_pem: open("private_key", &row.private_key_sealed)?,
            certificate_key_pem: open("tls_certificate_key", &row.tls_certificate_key_sealed)?,
            server_name: row.tls_server_name.clone(),
            skip_verify: row.tls_skip_verify,
        })
    }

    /// The plugin for connection `name`, connecting on first use.
    pub async fn get(&self, name: &str) -> Result<Arc<dyn DatabasePlugin>> {
        if let Some(plugin) = self.live.read().await.get(name) {
            return Ok(plugin.clone());
        }
        let mut live = self.live.write().await;
        // Another task may have connected while this one waited for the lock.
        if let Some(plugin) = live.get(name) {
            return Ok(plugin.clone());
        }
        let row = self
            .store
            .get_connection(name)
            .await?
            .ok_or_else(|| Error::not_found("connection", name))?;
        let engine = by_plugin_name(&row.plugin_name).ok_or_else(|| {
            Error::Internal(format!(
                "connection {name} has unknown plugin {}",
                row.plugin_name
            ))
        })?;
        let plugin = self
            .connect(engine, name, self.settings_for(&row)?)
            .await
            .map_err(|e| Error::database(format!("cannot connect to {name}"), e))?;
        live.insert(name.to_owned(), plugin.clone());
        Ok(plugin)
    }

    /// Puts a freshly built instance in place of the old one (after a config write), closing the old.
    pub async fn replace(&self, name: &str, plugin: Arc<dyn DatabasePlugin>) {
        let old = self.live.write().await.insert(name.to_owned(), plugin);
        if let Some(old) = old {
            retire(old);
        }
    }

    /// Drops the cached instance so the next use reconnects with the stored settings.
    pub async fn invalidate(&self, name: &str) {
        let old = self.live.write().await.remove(name);
        if let Some(old) = old {
            retire(old);
        }
    }

    /// Drops every cached instance (another replica changed connections while this one could
    /// not hear of it); each is closed once the requests using it are done.
    pub async fn invalidate_all(&self) {
        let drained: Vec<_> = self.live.write().await.drain().map(|(_, p)| p).collect();
        for plugin in drained {
            retire(plugin);
        }
    }

    /// Closes every pool; used at shutdown.
    pub async fn close_all(&self) {
        let drained: Vec<_> = self.live.write().await.drain().map(|(_, p)| p).collect();
        for plugin in drained {
            plugin.close().await;
        }
    }
}

/// A stored connection's `password_authentication` and `scram_iterations`, checked when written,
/// so a failure here is corruption.
pub fn stored_password_authentication(row: &Connection) -> Result<PasswordAuthentication> {
    PasswordAuthentication::from_fields(&row.password_authentication, row.scram_iterations).map_err(
        |e| {
            Error::Internal(format!(
                "stored password authentication of connection {} is invalid: {e}",
                row.name
            ))
        },
    )
}
