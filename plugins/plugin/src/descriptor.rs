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
    /// Vault's discrete address fields (`host`, `port`, `tls`, with `insecure_tls` and `ca_cert`),
    /// for engines whose Vault plugin takes those instead of a `connection_url` (Redis); `None`
    /// where a connection is given by `connection_url` alone, and the fields are refused.
    pub address: Option<AddressForm>,
}

/// How Vault's `host`, `port` and `tls` fields become a connection URL, `scheme://host:port`,
/// which is what Lessor stores: the engine reads one form only, and a read of the connection shows
/// the fields again by parsing it back. The admin credentials stay in `username` and `password`.
/// `ca_cert` and `insecure_tls` are Vault's names, for these engines, of `tls_ca` and
/// `tls_skip_verify`.
#[derive(Debug, Clone, Copy)]
pub struct AddressForm {
    /// The URL scheme without TLS: `redis`.
    pub scheme: &'static str,
    /// The URL scheme with TLS: `rediss`.
    pub tls_scheme: &'static str,
    /// The port when `port` is not given.
    pub default_port: u16,
}

/// Vault's address fields of one connection, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// A host name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// The longest host name DNS allows.
const MAX_HOST_LEN: usize = 253;

impl AddressForm {
    /// The connection URL of `address`. The host is checked first (a name of letters, digits,
    /// `-` and `.`, or an IP address), so nothing else can reach the URL.
    pub fn url(&self, address: &Address) -> Result<String, PluginError> {
        let host = &address.host;
        let ip: Option<std::net::IpAddr> = host.parse().ok();
        let name_ok = !host.is_empty()
            && host.len() <= MAX_HOST_LEN
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
            && !host.starts_with(['-', '.']);
        let host = match ip {
            Some(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
            Some(std::net::IpAddr::V4(v4)) => v4.to_string(),
            None if name_ok => host.to_ascii_lowercase(),
            None => {
                return Err(PluginError::invalid(
                    "host",
                    "must be a host name (letters, digits, '-' and '.') or an IP address, without scheme, port or path",
                ))
            }
        };
        if address.port == 0 {
            return Err(PluginError::invalid("port", "must be between 1 and 65535"));
        }
        let scheme = if address.tls {
            self.tls_scheme
        } else {
            self.scheme
        };
        Ok(format!("{scheme}://{host}:{}", address.port))
    }

    /// The address fields of a stored connection URL, if it is of this form (a URL written as
    /// `connection_url` with credentials or a path inline is not).
    pub fn parse(&self, url: &str) -> Option<Address> {
        let (scheme, rest) = url.split_once("://")?;
        let tls = if scheme == self.tls_scheme {
            true
        } else if scheme == self.scheme {
            false
        } else {
            return None;
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['@', '/', '?', '#']) {
            return None;
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (host, port.parse().ok()?),
            _ => (rest, self.default_port),
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Some(Address {
            host: host.to_owned(),
            port,
            tls,
        })
    }
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

    /// Makes [`DirectSession::create_user`] mark users as a plugin with this
    /// [`ConnectionSettings::user_marker`](crate::ConnectionSettings) does, so both sides run the
    /// same SQL. Engines that keep no note on a user put no mark in their SQL either, so the
    /// default has nothing to do.
    fn use_user_marker(&mut self, _marker: Option<crate::UserMarker>) {}

    /// Whether the user exists (the benchmark polls it to time the reaper).
    async fn user_exists(&mut self, username: &str) -> Result<bool, PluginError>;

    /// What [`DatabasePlugin::create_user`] runs, on this session.
    async fn create_user(&mut self, request: &NewUserRequest<'_>) -> Result<(), PluginError>;

    /// The engine's built-in revocation, on this session.
    async fn delete_user(&mut self, username: &str) -> Result<(), PluginError>;

    /// The engine's plain drop statement and nothing else (PostgreSQL `DROP ROLE IF EXISTS`,
    /// MySQL/MariaDB `DROP USER IF EXISTS` of the account at `'%'`, where the `lessor dev`
    /// read-only role creates it; Redis `ACL DELUSER`): no existence check, no lock-out, no end
    /// of sessions. The floor `lessor bench --bulk` measures bulk revocation against.
    async fn drop_user(&mut self, username: &str) -> Result<(), PluginError>;

    /// The users whose names start with `prefix` (an exact prefix, no pattern), sorted.
    async fn users_with_prefix(&mut self, prefix: &str) -> Result<Vec<String>, PluginError>;

    /// How many users' names start with `prefix`: what `lessor bench --bulk` polls while a
    /// revocation drains. Engines that can count on the server answer without the names.
    async fn count_users_with_prefix(&mut self, prefix: &str) -> Result<usize, PluginError> {
        Ok(self.users_with_prefix(prefix).await?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: AddressForm = AddressForm {
        scheme: "redis",
        tls_scheme: "rediss",
        default_port: 6379,
    };

    fn address(host: &str, port: u16, tls: bool) -> Address {
        Address {
            host: host.into(),
            port,
            tls,
        }
    }

    #[test]
    fn address_fields_make_a_url_and_come_back() {
        for (given, url) in [
            (
                address("Cache.Example.com", 6380, true),
                "rediss://cache.example.com:6380",
            ),
            (address("127.0.0.1", 6379, false), "redis://127.0.0.1:6379"),
            (address("::1", 7000, false), "redis://[::1]:7000"),
        ] {
            assert_eq!(FORM.url(&given).unwrap(), url);
            let back = FORM.parse(url).unwrap();
            assert_eq!(back.port, given.port);
            assert_eq!(back.tls, given.tls);
            assert_eq!(FORM.url(&back).unwrap(), url);
        }
        assert_eq!(FORM.parse("redis://localhost").unwrap().port, 6379);
    }

    #[test]
    fn hosts_that_would_change_the_url_are_refused() {
        for bad in [
            "",
            "a b",
            "user@host",
            "host/path",
            "host:1",
            "localhost://127.0.0.1",
            "-x",
            "h?x",
        ] {
            let err = FORM.url(&address(bad, 6379, false)).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid host"),
                "{bad:?}: {err}"
            );
        }
        assert!(FORM.url(&address("h", 0, false)).is_err());
    }

    #[test]
    fn urls_of_another_form_are_not_read_as_fields() {
        for other in [
            "redis://admin:pw@127.0.0.1:6379",
            "redis://127.0.0.1:6379/2",
            "postgres://127.0.0.1:5432",
            "redis://{{username}}:{{password}}@h:1",
        ] {
            assert_eq!(FORM.parse(other), None, "{other}");
        }
    }
}
