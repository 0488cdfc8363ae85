//! Token roles (Vault's `auth/token/roles/:name`) and the rule a token made from one follows
//! (`auth/token/create/:name`).
//!
//! As in Vault, a role with `allowed_policies` lets its tokens hold any subset of that list,
//! whatever the creating token holds: the role, not the creator, is the limit, which is why
//! writing a role needs `sudo` (declared in the route table). Without `allowed_policies`, the
//! usual rule holds (a subset of the creator's policies). `disallowed_policies` are never granted:
//! asked for by name they are a 400, inherited from the creator they are dropped. Unlike Vault, a
//! role may not list `root` among its allowed policies: a role is a way to hand out narrower
//! tokens, and a root token from a role would be a second, unaudited way to mint root.

use std::time::Duration;

use chrono::Utc;

use super::policy::{check_policy_name, DEFAULT_POLICY, ROOT_POLICY};
use super::Auth;
use crate::error::{Error, Result};
pub use crate::store::TokenRole;
use crate::store::TokenRoleStore;

/// What a write of `auth/token/roles/:name` sets; `None` keeps the stored value (or the default
/// for a new role), as Vault's update does.
#[derive(Debug, Default)]
pub struct TokenRoleInput {
    pub allowed_policies: Option<Vec<String>>,
    pub disallowed_policies: Option<Vec<String>>,
    pub orphan: Option<bool>,
    pub renewable: Option<bool>,
    pub token_ttl: Option<Duration>,
    pub token_max_ttl: Option<Duration>,
    pub token_explicit_max_ttl: Option<Duration>,
}

impl TokenRole {
    /// The tightest nonzero cap on a token's life this role sets, if any.
    pub fn life_cap(&self) -> Option<Duration> {
        [self.token_max_ttl, self.token_explicit_max_ttl]
            .into_iter()
            .filter(|d| !d.is_zero())
            .min()
    }

    /// The policies a token from this role gets, before `default` is added: `requested` checked
    /// against the role (and, without `allowed_policies`, against the creator's `held`
    /// policies; `None` for a root creator, who holds all).
    pub fn grant(
        &self,
        requested: Option<Vec<String>>,
        held: Option<&[String]>,
    ) -> Result<Vec<String>> {
        let explicit = requested.is_some();
        let mut policies = match requested {
            Some(names) => names
                .iter()
                .map(|n| check_policy_name(n))
                .collect::<Result<Vec<_>>>()?,
            None if !self.allowed_policies.is_empty() => self.allowed_policies.clone(),
            None => held.map(<[String]>::to_vec).unwrap_or_default(),
        };
        if !self.allowed_policies.is_empty() {
            let extra: Vec<&str> = policies
                .iter()
                .map(String::as_str)
                .filter(|p| *p != DEFAULT_POLICY && !self.allowed_policies.iter().any(|a| a == p))
                .collect();
            if !extra.is_empty() {
                return Err(Error::invalid(format!(
                    "policies: token role {} does not allow {}",
                    self.name,
                    extra.join(", ")
                )));
            }
        } else if let Some(held) = held {
            let extra: Vec<&str> = policies
                .iter()
                .map(String::as_str)
                .filter(|p| *p != DEFAULT_POLICY && !held.iter().any(|h| h == p))
                .collect();
            if !extra.is_empty() {
                return Err(Error::invalid(format!(
                    "child policies must be a subset of the parent's; not held: {}",
                    extra.join(", ")
                )));
            }
        }
        let denied: Vec<String> = policies
            .iter()
            .filter(|p| self.disallowed_policies.contains(p))
            .cloned()
            .collect();
        if !denied.is_empty() {
            if explicit {
                return Err(Error::invalid(format!(
                    "policies: token role {} disallows {}",
                    self.name,
                    denied.join(", ")
                )));
            }
            policies.retain(|p| !denied.contains(p));
        }
        if policies.iter().any(|p| p == ROOT_POLICY) {
            return Err(Error::invalid(
                "policies: a token made from a role cannot hold root",
            ));
        }
        Ok(policies)
    }
}

/// Checks a policy list of a role: valid names, no duplicates kept, never `root`.
fn check_list(field: &str, names: Vec<String>) -> Result<Vec<String>> {
    let mut checked = Vec::with_capacity(names.len());
    for name in names {
        let name = check_policy_name(&name).map_err(|e| Error::invalid(format!("{field}: {e}")))?;
        if name == ROOT_POLICY && field == "allowed_policies" {
            return Err(Error::invalid(
                "allowed_policies: root cannot be granted through a token role",
            ));
        }
        if !checked.contains(&name) {
            checked.push(name);
        }
    }
    Ok(checked)
}

impl Auth {
    /// Creates or updates a token role. Fields left out keep their stored value.
    pub async fn write_token_role(&self, name: &str, input: TokenRoleInput) -> Result<()> {
        let existing = self.token_role_opt(name).await?;
        let keep =
            |new: Option<Vec<String>>, old: Option<Vec<String>>| new.or(old).unwrap_or_default();
        let allowed = check_list(
            "allowed_policies",
            keep(
                input.allowed_policies,
                existing.as_ref().map(|r| r.allowed_policies.clone()),
            ),
        )?;
        let disallowed = check_list(
            "disallowed_policies",
            keep(
                input.disallowed_policies,
                existing.as_ref().map(|r| r.disallowed_policies.clone()),
            ),
        )?;
        if let Some(both) = allowed.iter().find(|p| disallowed.contains(p)) {
            return Err(Error::invalid(format!(
                "allowed_policies: {both} is also in disallowed_policies"
            )));
        }
        let duration = |new: Option<Duration>, old: Option<Duration>, field: &str| {
            let value = new.or(old).unwrap_or_default();
            if value > self.limits.max_ttl {
                return Err(Error::invalid(format!(
                    "{field}: {}s exceeds the system maximum of {}s",
                    value.as_secs(),
                    self.limits.max_ttl.as_secs()
                )));
            }
            Ok(value)
        };
        let token_ttl = duration(
            input.token_ttl,
            existing.as_ref().map(|r| r.token_ttl),
            "token_ttl",
        )?;
        let token_max_ttl = duration(
            input.token_max_ttl,
            existing.as_ref().map(|r| r.token_max_ttl),
            "token_max_ttl",
        )?;
        let token_explicit_max_ttl = duration(
            input.token_explicit_max_ttl,
            existing.as_ref().map(|r| r.token_explicit_max_ttl),
            "token_explicit_max_ttl",
        )?;
        if !token_max_ttl.is_zero() && token_ttl > token_max_ttl {
            return Err(Error::invalid(format!(
                "token_ttl: {}s is longer than token_max_ttl {}s",
                token_ttl.as_secs(),
                token_max_ttl.as_secs()
            )));
        }
        let now = Utc::now();
        self.store
            .upsert_token_role(&TokenRole {
                name: name.to_owned(),
                allowed_policies: allowed,
                disallowed_policies: disallowed,
                orphan: input
                    .orphan
                    .or(existing.as_ref().map(|r| r.orphan))
                    .unwrap_or(false),
                renewable: input
                    .renewable
                    .or(existing.as_ref().map(|r| r.renewable))
                    .unwrap_or(true),
                token_ttl,
                token_max_ttl,
                token_explicit_max_ttl,
                created_at: now,
                updated_at: now,
            })
            .await
    }

    async fn token_role_opt(&self, name: &str) -> Result<Option<TokenRole>> {
        self.store.get_token_role(name).await
    }

    pub async fn token_role(&self, name: &str) -> Result<TokenRole> {
        self.token_role_opt(name)
            .await?
            .ok_or_else(|| Error::not_found("token role", name))
    }

    pub async fn list_token_roles(&self) -> Result<Vec<String>> {
        self.store.list_token_roles().await
    }

    pub async fn delete_token_role(&self, name: &str) -> Result<()> {
        self.store.delete_token_role(name).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(allowed: &[&str], disallowed: &[&str]) -> TokenRole {
        TokenRole {
            name: "r".into(),
            allowed_policies: allowed.iter().map(|s| s.to_string()).collect(),
            disallowed_policies: disallowed.iter().map(|s| s.to_string()).collect(),
            orphan: false,
            renewable: true,
            token_ttl: Duration::ZERO,
            token_max_ttl: Duration::ZERO,
            token_explicit_max_ttl: Duration::ZERO,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn allowed_policies_replace_the_creators_limit() {
        let r = role(&["app", "reports"], &[]);
        let held = list(&["ops"]);
        assert_eq!(
            r.grant(None, Some(&held)).unwrap(),
            list(&["app", "reports"])
        );
        assert_eq!(
            r.grant(Some(list(&["app", "default"])), Some(&held))
                .unwrap(),
            list(&["app", "default"])
        );
        let err = r
            .grant(Some(list(&["app", "ops"])), Some(&held))
            .unwrap_err();
        assert!(err.to_string().contains("does not allow ops"), "{err}");
    }

    #[test]
    fn without_allowed_policies_the_creators_policies_bound_the_token() {
        let r = role(&[], &["secret"]);
        let held = list(&["app", "secret"]);
        // Inherited: the disallowed one is dropped.
        assert_eq!(r.grant(None, Some(&held)).unwrap(), list(&["app"]));
        // Asked for by name: refused.
        let err = r.grant(Some(list(&["secret"])), Some(&held)).unwrap_err();
        assert!(err.to_string().contains("disallows secret"), "{err}");
        let err = r.grant(Some(list(&["other"])), Some(&held)).unwrap_err();
        assert!(err.to_string().contains("not held: other"), "{err}");
        // A root creator holds everything, but root itself never comes from a role.
        assert_eq!(
            r.grant(Some(list(&["other"])), None).unwrap(),
            list(&["other"])
        );
        assert!(r.grant(Some(list(&["root"])), None).is_err());
    }

    #[test]
    fn role_lists_are_checked() {
        assert!(check_list("allowed_policies", list(&["root"])).is_err());
        assert!(check_list("allowed_policies", list(&["a b"])).is_err());
        assert_eq!(
            check_list("disallowed_policies", list(&["x", "X", "root"])).unwrap(),
            list(&["x", "root"])
        );
    }
}
