//! The SQL this plugin writes itself, and the checks that make writing it by string safe.
//!
//! Account names cannot be bound as parameters in `CREATE USER`/`ALTER USER`/`DROP USER`, so they
//! are spliced into the text. That is safe only because every spliced value passed a strict
//! alphabet first: usernames through [`lessor_plugin::check_username`], passwords through
//! [`lessor_plugin::check_password`], and hosts through [`check_role_host`] (role options) or
//! [`check_server_host`] (host values read back from `mysql.user`). None of the alphabets holds a
//! quote or a backslash, so no escaping (and no dependence on `NO_BACKSLASH_ESCAPES`) is needed.

use lessor_plugin::PluginError;

/// The role option naming the host part of accounts made by the default creation statement
/// (a role with its own creation statements writes the host into them itself).
pub const HOST_OPTION: &str = "host";

/// The host part used when a role does not set the `host` option: any host.
pub const DEFAULT_HOST: &str = "%";

/// Longest host part MySQL 8 and MariaDB store (`mysql.user.Host` is `char(255)`).
const MAX_HOST_LEN: usize = 255;

/// Default creation statement, with `<host>` replaced by the role's host option.
const CREATION_TEMPLATE: &str = "CREATE USER '{{name}}'@'<host>' IDENTIFIED BY '{{password}}'";

/// Default rotation statement, with `<host>` replaced by the account's host.
const ROTATION_TEMPLATE: &str = "ALTER USER '{{name}}'@'<host>' IDENTIFIED BY '{{password}}'";

/// The default creation statement for accounts on `host`. It grants nothing beyond `USAGE`
/// (the right to log in): a role that needs access names its grants in its own statements,
/// preferably `GRANT some_role TO ...` plus `SET DEFAULT ROLE`, rather than per-table grants.
pub fn default_creation(host: &str) -> String {
    CREATION_TEMPLATE.replace("<host>", host)
}

/// The default rotation statement for accounts on `host`.
pub fn default_rotation(host: &str) -> String {
    ROTATION_TEMPLATE.replace("<host>", host)
}

/// Checks a role's `host` option: 1 to 255 characters of letters, digits, `.`, `%`, `_`, `-`, `:`
/// (host names, IPv4/IPv6 addresses and MySQL's `%`/`_` wildcards).
pub fn check_role_host(host: &str) -> Result<(), PluginError> {
    if host.is_empty() {
        return Err(PluginError::invalid(
            "host",
            "must not be empty; use '%' for any host",
        ));
    }
    if host.len() > MAX_HOST_LEN {
        return Err(PluginError::invalid(
            "host",
            format!("is longer than {MAX_HOST_LEN} characters"),
        ));
    }
    if let Some(bad) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '%' | '_' | '-' | ':')))
    {
        return Err(PluginError::invalid(
            "host",
            format!(
                "contains {bad:?}; only letters, digits, '.', '%', '_', '-' and ':' are allowed"
            ),
        ));
    }
    Ok(())
}

/// Checks a host value read from `mysql.user` before it is spliced into `ALTER`/`DROP USER`.
/// Wider than [`check_role_host`] by `/` (netmask hosts such as `10.0.0.0/255.0.0.0`) and the
/// empty host (which MySQL treats as `%`), since accounts Lessor did not create may use them.
pub fn check_server_host(host: &str) -> Result<(), PluginError> {
    if host.len() <= MAX_HOST_LEN
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '%' | '_' | '-' | ':' | '/'))
    {
        Ok(())
    } else {
        Err(PluginError::Rejected(
            "the user has a host entry with characters this plugin will not splice into SQL; drop it by hand".into(),
        ))
    }
}

/// `'user'@'host'`, from values that already passed their alphabet checks.
pub fn account(username: &str, host: &str) -> String {
    format!("'{username}'@'{host}'")
}

/// A throwaway database's name as a quoted identifier. The name must pass the username alphabet
/// (letters, digits, `_`, `-`, `.`: no backtick possible) and MySQL's 64-character limit.
pub fn database_ident(name: &str) -> Result<String, PluginError> {
    lessor_plugin::check_username(name).map_err(|_| {
        PluginError::invalid("database", "must be letters, digits, '_', '-' and '.' only")
    })?;
    if name.len() > 64 {
        return Err(PluginError::invalid(
            "database",
            "is longer than MySQL's 64 characters",
        ));
    }
    Ok(format!("`{name}`"))
}

/// The longest username the server accepts, from its `VERSION()` string: 80 on MariaDB (10.0
/// and later), 32 on MySQL 5.7 and later (and servers that claim MySQL compatibility, such as
/// Aurora), 16 on older MySQL.
pub fn username_limit(version: &str) -> usize {
    if version.to_ascii_lowercase().contains("mariadb") {
        return 80;
    }
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if (major, minor) >= (5, 7) || major == 0 {
        // An unparsable version is more likely a modern fork than an ancient MySQL.
        32
    } else {
        16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_host_alphabet() {
        for good in [
            "%",
            "127.0.0.1",
            "10.0.%",
            "app-1.example.com",
            "::1",
            "fe80::1",
            "host_name",
        ] {
            check_role_host(good).unwrap();
        }
        for bad in [
            "",
            "a'b",
            "a b",
            "x\\y",
            "10.0.0.0/255.0.0.0",
            "h;DROP",
            "h@x",
            &"a".repeat(256),
        ] {
            assert!(check_role_host(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn server_host_alphabet() {
        for good in ["", "%", "localhost", "10.0.0.0/255.0.0.0", "::1"] {
            check_server_host(good).unwrap();
        }
        for bad in ["a'b", "a\\b", "a b"] {
            assert!(check_server_host(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn username_limits_by_version() {
        assert_eq!(username_limit("10.11.19-MariaDB-0+deb12u1"), 80);
        assert_eq!(username_limit("5.5.5-10.6.12-MariaDB-log"), 80);
        assert_eq!(username_limit("8.0.36"), 32);
        assert_eq!(username_limit("5.7.44-log"), 32);
        assert_eq!(username_limit("8.0.mysql_aurora.3.05.2"), 32);
        assert_eq!(username_limit("5.6.10"), 16);
        assert_eq!(username_limit("weird"), 32);
    }

    #[test]
    fn default_statements_use_the_host() {
        assert_eq!(
            default_creation("127.0.0.1"),
            "CREATE USER '{{name}}'@'127.0.0.1' IDENTIFIED BY '{{password}}'"
        );
        assert_eq!(
            default_rotation("%"),
            "ALTER USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'"
        );
    }
}
