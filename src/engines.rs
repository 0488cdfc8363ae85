//! The registry of engine plugins, fixed at compile time, and the cache of connected plugin
//! instances (one pool per configured connection).
//!
//! This is the only place the root crate names an engine crate; everything else goes through the
//! `DatabasePlugin` trait.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lessor_plugin::{ConnectionSettings, DatabasePlugin, PluginError, Secret};
use tokio::sync::RwLock;

use crate::error::{Error, Result};
use crate::seal::Sealer;
use crate::store::{ConnectionRow, Store};

/// The engines Lessor is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Postgres,
    MySql,
}

impl EngineKind {
    /// Resolves a Vault `plugin_name` (or a short alias) to an engine.
    pub fn from_plugin_name(name: &str) -> Option<Self> {
        if lessor_postgres::PLUGIN_NAMES.contains(&name) {
            Some(Self::Postgres)
        } else if lessor_mysql::PLUGIN_NAMES.contains(&name) {
            Some(Self::MySql)
        } else {
            None
        }
    }

    /// Every accepted plugin name, for error messages.
    pub fn known_plugin_names() -> Vec<&'static str> {
        lessor_postgres::PLUGIN_NAMES
            .iter()
            .chain(lessor_mysql::PLUGIN_NAMES)
            .copied()
            .collect()
    }

    /// Builds a plugin instance; pools are lazy, so this does not fail when the target is down.
    pub async fn connect(
        self,
        settings: ConnectionSettings,
    ) -> Result<Arc<dyn DatabasePlugin>, PluginError> {
        Ok(match self {
            Self::Postgres => Arc::new(lessor_postgres::connect(settings).await?),
            Self::MySql => Arc::new(lessor_mysql::connect(settings).await?),
        })
    }
}

/// The sealing contexts of a connection's secrets; a sealed value only opens under its own.
pub fn url_seal_context(connection: &str) -> String {
    format!("connection/{connection}/connection_url")
}

pub fn password_seal_context(connection: &str) -> String {
    format!("connection/{connection}/password")
}

/// Connected plugin instances by connection name, built on first use.
#[derive(Clone)]
pub struct Engines {
    store: Store,
    sealer: Sealer,
    live: Arc<RwLock<HashMap<String, Arc<dyn DatabasePlugin>>>>,
}

impl Engines {
    pub fn new(store: Store, sealer: Sealer) -> Self {
        Self {
            store,
            sealer,
            live: Arc::default(),
        }
    }

    /// Unseals a stored connection into the settings a plugin needs.
    pub fn settings_for(&self, row: &ConnectionRow) -> Result<ConnectionSettings> {
        Ok(ConnectionSettings {
            connection_url: self
                .sealer
                .open(&url_seal_context(&row.name), &row.connection_url_sealed)?,
            username: row.username.clone(),
            password: self
                .sealer
                .open(&password_seal_context(&row.name), &row.password_sealed)?,
            max_open_connections: row.max_open_connections.clamp(1, 100) as u32,
            connect_timeout: Duration::from_secs(5),
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
        let kind = EngineKind::from_plugin_name(&row.plugin_name).ok_or_else(|| {
            Error::Internal(format!(
                "connection {name} has unknown plugin {}",
                row.plugin_name
            ))
        })?;
        let plugin = kind
            .connect(self.settings_for(&row)?)
            .await
            .map_err(|e| Error::database(format!("cannot connect to {name}"), e))?;
        live.insert(name.to_owned(), plugin.clone());
        Ok(plugin)
    }

    /// Puts a freshly built instance in place of the old one (after a config write), closing the old.
    pub async fn replace(&self, name: &str, plugin: Arc<dyn DatabasePlugin>) {
        let old = self.live.write().await.insert(name.to_owned(), plugin);
        if let Some(old) = old {
            old.close().await;
        }
    }

    /// Drops the cached instance so the next use reconnects with the stored settings.
    pub async fn invalidate(&self, name: &str) {
        let old = self.live.write().await.remove(name);
        if let Some(old) = old {
            old.close().await;
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

/// Builds the settings for a connection being written (before it is stored).
pub fn new_settings(
    url: Secret,
    username: String,
    password: Secret,
    max_open_connections: u32,
) -> ConnectionSettings {
    ConnectionSettings {
        connection_url: url,
        username,
        password,
        max_open_connections,
        connect_timeout: Duration::from_secs(5),
    }
}
