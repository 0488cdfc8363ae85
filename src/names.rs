//! Names parsed once, at the edge of the API, into types that cannot hold an unchecked value.
//!
//! A handler takes a [`RoleName`], a [`ConnectionName`] or a [`LeaseId`] instead of a `String`, so
//! the name it acts on has passed the same check the store and the plugins rely on (a strict
//! alphabet, a length limit, no `..`) before any of its code runs. The path the name comes from
//! was decoded exactly once by the API's canonicalization, and the policy gate checked that same
//! decoded path; nothing decodes it again.

use std::fmt;
use std::ops::Deref;

use crate::catalog::check_name;
use crate::error::Result;
use crate::lease::check_lease_path;

/// Declares a validated name type: `$check(kind, value)` decides what it may hold.
macro_rules! checked_name {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// What the name is called in error messages.
            pub const KIND: &'static str = $kind;

            /// Checks `value`; the error names the kind of name and what is allowed.
            pub fn parse(value: impl Into<String>) -> Result<Self> {
                let value = value.into();
                $check($kind, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_name!(
    /// A dynamic role (`database/roles/:name`, `database/creds/:name`).
    RoleName,
    "role name",
    check_name
);
checked_name!(
    /// A static role (`database/static-roles/:name`, `database/static-creds/:name`).
    StaticRoleName,
    "static role name",
    check_name
);
checked_name!(
    /// A configured target database (`database/config/:name`).
    ConnectionName,
    "connection name",
    check_name
);
checked_name!(
    /// A JWT auth role (`auth/jwt/role/:name`).
    JwtRoleName,
    "role name",
    check_name
);
checked_name!(
    /// A token role (`auth/token/roles/:name`, `auth/token/create/:name`).
    TokenRoleName,
    "token role name",
    check_name
);
checked_name!(
    /// An audit device (`sys/audit/:name`).
    AuditDeviceName,
    "audit device name",
    check_name
);
checked_name!(
    /// A lease id (`database/creds/<role>/<random>`).
    LeaseId,
    "lease_id",
    check_lease_path
);
checked_name!(
    /// A lease id prefix (`sys/leases/revoke-prefix/:prefix`, `LIST sys/leases/lookup/:prefix`).
    LeasePrefix,
    "prefix",
    check_lease_path
);

checked_name!(
    /// An ACL policy (`sys/policies/acl/:name`). Lower case only: Vault lower-cases policy names,
    /// and a handler acting on `foo` for a request the gate checked as `FOO` would walk past a
    /// `deny` on `sys/policies/acl/foo`; refusing upper case keeps the two one name.
    PolicyName,
    "policy name",
    check_policy_name
);

fn check_policy_name(kind: &str, name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if valid {
        Ok(())
    } else {
        Err(crate::Error::invalid(format!(
            "invalid {kind} {:?}: use 1 to 128 lower-case letters, digits, '-', '_' or '.'",
            name.chars().take(80).collect::<String>()
        )))
    }
}

/// Checks an `allowed_roles` entry: a role name, where `*` may stand for any run of characters
/// (`*`, `app-*`, `*-ro`), as Vault's glob allows.
pub fn check_role_glob(entry: &str) -> Result<()> {
    if entry == "*" {
        return Ok(());
    }
    let literal = entry.replace('*', "x");
    check_name("allowed_roles entry", &literal).map_err(|_| {
        crate::Error::invalid(format!(
            "allowed_roles: {:?} is not a role name or a glob of one ('*' for any characters)",
            entry.chars().take(80).collect::<String>()
        ))
    })
}

/// Whether `name` matches `pattern`, where each `*` stands for any run of characters.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = parts.collect();
    let Some((last, middle)) = pieces.split_last() else {
        // No `*` at all: the pattern is the whole name.
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_globs_match_as_vault_does() {
        for (pattern, name, expected) in [
            ("*", "anything", true),
            ("app-*", "app-ro", true),
            ("app-*", "app", false),
            ("*-ro", "billing-ro", true),
            ("*-ro", "billing-rw", false),
            ("a*b*c", "a-b-x-c", true),
            ("a*b*c", "a-c", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob_matches(pattern, name), expected, "{pattern} ~ {name}");
        }
        check_role_glob("app-*").unwrap();
        assert!(check_role_glob("app;*").is_err());
    }

    #[test]
    fn names_refuse_what_the_store_would_refuse() {
        assert_eq!(
            RoleName::parse("app-ro_1.v2").unwrap().as_str(),
            "app-ro_1.v2"
        );
        for bad in ["", "-x", "a b", "a/b", "a%62", "a'b", "ü", &"x".repeat(65)] {
            let error = RoleName::parse(bad).unwrap_err().to_string();
            assert!(error.contains("role name"), "{bad:?}: {error}");
        }
        LeaseId::parse("database/creds/app/AbC123").unwrap();
        for bad in ["", "database/../x", "a;b", "a%2Fb"] {
            assert!(LeaseId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
