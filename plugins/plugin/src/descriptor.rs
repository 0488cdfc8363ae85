//! What an engine crate exports so that Lessor can offer it: one [`EngineDescriptor`] per crate.
//!
//! Lessor's registry (`src/engines.rs`) is a list of these, and everything that used to match on
//! an engine (resolving a connection's `plugin_name`, connecting, `lessor dev`'s local
//! registrations, `lessor bench`'s direct baseline) asks the descriptor instead. So a new engine is
//! a new crate exporting a descriptor, plus one line in that list.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    ConnectionSettings, DatabasePlugin, NewUserRequest, PasswordAuthentication, PluginError, Secret,
};

/// A boxed future, as the descriptor's function pointers return them (a plain `fn` cannot be
/// `async`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Builds a plugin instance for one target; pools are lazy, so this succeeds while the target is
/// down.
pub type ConnectFn =
    fn(ConnectionSettings) -> BoxFuture<'static, Result<Arc<dyn DatabasePlugin>, PluginError>>;

/// Opens one plain admin session for `lessor bench`'s direct baseline.
pub type DirectConnectFn =
    fn(Secret) -> BoxFuture<'static, Result<Box<dyn DirectSession>, PluginError>>;

/// One engine, as its crate describes it.
#[derive(Debug)]
pub struct EngineDescriptor {
    /// Short name: `lessor bench --engines`, metrics labels, `DatabasePlugin::engine`.
    pub name: &'static str,
    /// How people call it, for reports and the console: "PostgreSQL".
    pub label: &'static str,
    /// The connection `plugin_name` values it answers to: Vault's name first, then aliases.
    pub plugin_names: &'static [&'static str],
    /// The longest username the engine accepts in its most restrictive supported version (the
    /// connected instance may know better: [`DatabasePlugin::max_username_len`]).
    pub max_username_len: usize,
    pub connect: ConnectFn,
    /// The engine's server on a developer machine, registered by `lessor dev` and measured by
    /// `lessor bench`.
    pub local: LocalTarget,
    /// The same SQL run directly, for `lessor bench`; `None` where the engine offers no baseline.
    pub direct: Option<DirectConnectFn>,
}

impl EngineDescriptor {
    /// Whether a connection's `plugin_name` selects this engine.
    pub fn answers_to(&self, plugin_name: &str) -> bool {
        self.plugin_names.contains(&plugin_name)
    }

    /// Vault's plugin name (the first of [`EngineDescriptor::plugin_names`]).
    pub fn plugin_name(&self) -> &'static str {
        self.plugin_names[0]
    }
}

impl std::fmt::Debug for LocalTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTarget")
            .field("connection", &self.connection)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Where the engine's server is on a developer machine, and the read-only role `lessor dev`
/// offers on it.
pub struct LocalTarget {
    /// Admin URL of the local server, with its credentials inline (none on a dev machine).
    pub admin_url: &'static str,
    /// The environment variable that overrides [`LocalTarget::admin_url`] for `lessor dev`
    /// (`LESSOR_DEV_POSTGRES_URL`); `lessor bench` reads `LESSOR_BENCH_<NAME>_URL`.
    pub url_env: &'static str,
    /// The connection name `lessor dev` registers: `dev-postgres`.
    pub connection: &'static str,
    /// The role `lessor dev` registers on it: `readonly`.
    pub role: &'static str,
    /// Creation statements of that role: a user that can read everything and change nothing.
    /// `lessor bench` runs the same statements on both sides.
    pub readonly_creation: &'static [&'static str],
}

/// The engine's own creation and revocation run on one plain admin session, with no pool, no
/// store and no HTTP in front: the baseline `lessor bench` measures Lessor against. Implementations
/// call the same functions their plugin does, so both sides run the same SQL.
#[async_trait]
pub trait DirectSession: Send {
    /// The server's version string, for the report.
    async fn server_version(&mut self) -> Result<String, PluginError>;

    /// Makes [`DirectSession::create_user`] put passwords into the statements the way a
    /// connection with this `password_authentication` does. Engines that hash nothing themselves
    /// keep the default, which accepts only [`PasswordAuthentication::Password`].
    fn use_password_authentication(
        &mut self,
        mode: PasswordAuthentication,
    ) -> Result<(), PluginError> {
        match mode {
            PasswordAuthentication::Password => Ok(()),
            other => Err(PluginError::invalid(
                "password_authentication",
                format!(
                    "this engine's baseline sends passwords as they are, not as {}",
                    other.name()
                ),
            )),
        }
    }

    /// Whether the user exists (the benchmark polls it to time the reaper).
    async fn user_exists(&mut self, username: &str) -> Result<bool, PluginError>;

    /// What [`DatabasePlugin::create_user`] runs, on this session.
    async fn create_user(&mut self, request: &NewUserRequest<'_>) -> Result<(), PluginError>;

    /// The engine's built-in revocation, on this session.
    async fn delete_user(&mut self, username: &str) -> Result<(), PluginError>;
}
