//! Creating, renewing, looking up and revoking tokens (`auth/token/*`), and the shared issuing path
//! the JWT login uses.
//!
//! A child token may hold only policies its creator holds (a root creator may grant any), never
//! outlives its creator, and never lives past the server's maximum TTL or its own explicit max.
//!
//! Tokens form a tree, as in Vault. A token made by another is its child: revoking a token (by
//! itself, by accessor, by value, or by expiry in housekeeping) revokes its whole subtree, and
//! [`Auth::revoke_orphan`] revokes only the token, leaving its children as orphans. Orphans are
//! made only by root (`no_parent`) or by a sudo caller (`create-orphan`). Every revoking function
//! returns the accessors it removed, so the caller can revoke the leases those tokens obtained.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use lessor_plugin::Secret;
use serde_json::{Map, Value};

use super::policy::{check_policy_name, DEFAULT_POLICY, ROOT_POLICY};
use super::{generate_accessor, generate_token, Auth, Identity, TokenInfo};
use crate::error::{Error, Result};
use crate::store::{IdentityStore, Token};

/// What `auth/token/create` asks for.
#[derive(Debug, Default)]
pub struct TokenRequest {
    /// `None` inherits the creator's policies.
    pub policies: Option<Vec<String>>,
    pub ttl: Option<Duration>,
    pub explicit_max_ttl: Option<Duration>,
    pub renewable: Option<bool>,
    pub display_name: Option<String>,
    pub no_default_policy: bool,
    pub meta: Map<String, Value>,
}

/// Everything a new token is made from, whoever asked for it.
#[derive(Debug)]
pub struct NewToken {
    pub display_name: String,
    /// Final policy list (with `default` when it applies).
    pub policies: Vec<String>,
    pub ttl: Duration,
    /// Zero for none.
    pub explicit_max_ttl: Duration,
    pub renewable: bool,
    /// `None` makes the token its own entity.
    pub entity_id: Option<String>,
    pub path: String,
    pub meta: Map<String, Value>,
    pub parent_accessor: Option<String>,
    /// The creator's expiry, which the new token may not outlive.
    pub not_after: Option<chrono::DateTime<Utc>>,
}

/// A token as handed out once: Vault's `auth` block.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: Secret,
    pub accessor: String,
    pub policies: Vec<String>,
    pub lease_duration: Duration,
    pub renewable: bool,
    pub entity_id: String,
    pub meta: Map<String, Value>,
    /// Whether the token has no parent.
    pub orphan: bool,
}

impl IssuedToken {
    /// The `auth` object of Vault's login and create responses.
    pub fn auth_json(&self) -> Value {
        serde_json::json!({
            "client_token": self.token.expose(),
            "accessor": self.accessor,
            "policies": self.policies,
            "token_policies": self.policies,
            "identity_policies": null,
            "metadata": if self.meta.is_empty() { Value::Null } else { Value::Object(self.meta.clone()) },
            "lease_duration": self.lease_duration.as_secs(),
            "renewable": self.renewable,
            "entity_id": self.entity_id,
            "token_type": "service",
            "orphan": self.orphan,
            "mfa_requirement": null,
            "num_uses": 0,
        })
    }
}

/// Display names become part of database usernames and audit lines: keep them short and plain.
fn clean_display_name(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@'))
        .take(64)
        .collect()
}

/// `token-<name>`, or `token` without a name, as Vault shows a created token's display name.
fn token_display_name(requested: Option<&str>) -> String {
    match requested.map(clean_display_name) {
        Some(name) if !name.is_empty() => format!("token-{name}"),
        _ => "token".to_owned(),
    }
}

/// Adds `default` unless asked not to (or the token is root), sorts, and refuses an empty list.
fn finish_policies(policies: &mut Vec<String>, no_default_policy: bool) -> Result<()> {
    let only_root = policies.iter().any(|p| p == ROOT_POLICY);
    if !no_default_policy && !only_root && !policies.iter().any(|p| p == DEFAULT_POLICY) {
        policies.push(DEFAULT_POLICY.to_owned());
    }
    if no_default_policy {
        policies.retain(|p| p != DEFAULT_POLICY);
    }
    policies.sort();
    policies.dedup();
    if policies.is_empty() {
        return Err(Error::invalid(
            "policies: a token needs at least one policy",
        ));
    }
    Ok(())
}

fn chrono(duration: Duration) -> Result<chrono::Duration> {
    chrono::Duration::from_std(duration).map_err(|_| Error::invalid("ttl: too long"))
}

impl Auth {
    /// `auth/token/create`: a child of `parent` holding at most the parent's policies, revoked
    /// with it.
    pub async fn create_token(
        &self,
        parent: &Identity,
        request: TokenRequest,
    ) -> Result<IssuedToken> {
        self.create(parent, request, false).await
    }

    /// `auth/token/create-orphan`, or `auth/token/create` with `no_parent: true`; as in Vault,
    /// either needs a root creator or `creator_has_sudo` (the caller's ACL grants sudo on the path
    /// it called). The token has no parent, so revoking its creator leaves it working; its policies
    /// are still at most the creator's.
    pub async fn create_orphan_token(
        &self,
        creator: &Identity,
        creator_has_sudo: bool,
        request: TokenRequest,
    ) -> Result<IssuedToken> {
        if !creator.is_root() && !creator_has_sudo {
            return Err(Error::invalid(
                "no_parent: root or sudo privileges are required to create an orphan token",
            ));
        }
        self.create(creator, request, true).await
    }

    async fn create(
        &self,
        parent: &Identity,
        request: TokenRequest,
        orphan: bool,
    ) -> Result<IssuedToken> {
        let mut policies: Vec<String> = match request.policies {
            Some(names) => names
                .iter()
                .map(|n| check_policy_name(n))
                .collect::<Result<_>>()?,
            None => parent.policies.clone(),
        };
        if !parent.is_root() {
            let held: BTreeSet<&str> = parent.policies.iter().map(String::as_str).collect();
            let extra: Vec<&str> = policies
                .iter()
                .map(String::as_str)
                .filter(|p| *p != DEFAULT_POLICY && !held.contains(p))
                .collect();
            if !extra.is_empty() {
                return Err(Error::invalid(format!(
                    "child policies must be a subset of the parent's; not held: {}",
                    extra.join(", ")
                )));
            }
        }
        finish_policies(&mut policies, request.no_default_policy)?;
        let display_name = token_display_name(request.display_name.as_deref());
        self.issue_token(NewToken {
            display_name,
            policies,
            ttl: request
                .ttl
                .filter(|d| !d.is_zero())
                .unwrap_or(self.limits.default_ttl),
            explicit_max_ttl: request.explicit_max_ttl.unwrap_or_default(),
            renewable: request.renewable.unwrap_or(true),
            entity_id: None,
            path: if orphan {
                "auth/token/create-orphan".into()
            } else {
                "auth/token/create".into()
            },
            meta: request.meta,
            parent_accessor: (!orphan).then(|| parent.accessor.clone()),
            not_after: if orphan { None } else { parent.expires_at },
        })
        .await
    }

    /// `auth/token/create/:role`: a token whose policies, parent and lifetime follow the token
    /// role (see [`super::token_roles`]). An orphan role makes orphans without sudo, as in
    /// Vault: whoever wrote the role (with sudo) decided so.
    pub async fn create_token_from_role(
        &self,
        creator: &Identity,
        role_name: &str,
        request: TokenRequest,
    ) -> Result<IssuedToken> {
        let role = self.token_role(role_name).await.map_err(|e| match e {
            Error::NotFound { .. } => Error::invalid(format!("unknown token role {role_name}")),
            other => other,
        })?;
        let held = (!creator.is_root()).then_some(creator.policies.as_slice());
        let mut policies = role.grant(request.policies, held)?;
        finish_policies(&mut policies, request.no_default_policy)?;
        let requested_cap = request.explicit_max_ttl.filter(|d| !d.is_zero());
        let explicit_max_ttl = match (requested_cap, role.life_cap()) {
            (Some(asked), Some(cap)) => asked.min(cap),
            (asked, cap) => asked.or(cap).unwrap_or_default(),
        };
        let ttl = request
            .ttl
            .filter(|d| !d.is_zero())
            .or((!role.token_ttl.is_zero()).then_some(role.token_ttl))
            .unwrap_or(self.limits.default_ttl);
        self.issue_token(NewToken {
            display_name: token_display_name(request.display_name.as_deref()),
            policies,
            ttl,
            explicit_max_ttl,
            renewable: role.renewable && request.renewable.unwrap_or(true),
            entity_id: None,
            path: format!("auth/token/create/{}", role.name),
            meta: request.meta,
            parent_accessor: (!role.orphan).then(|| creator.accessor.clone()),
            not_after: if role.orphan {
                None
            } else {
                creator.expires_at
            },
        })
        .await
    }

    /// Stores a new token and returns it once. Its expiry is capped by the explicit max TTL, the
    /// server's maximum and its creator's expiry.
    pub async fn issue_token(&self, new: NewToken) -> Result<IssuedToken> {
        let now = Utc::now();
        let mut max_life = self.limits.max_ttl;
        if !new.explicit_max_ttl.is_zero() {
            max_life = max_life.min(new.explicit_max_ttl);
        }
        let mut max_expires_at = now + chrono(max_life)?;
        if let Some(limit) = new.not_after {
            max_expires_at = max_expires_at.min(limit);
        }
        let expires_at = (now + chrono(new.ttl)?).min(max_expires_at);
        let token = generate_token();
        let accessor = generate_accessor();
        let entity_id = new.entity_id.unwrap_or_else(|| accessor.clone());
        let orphan = new.parent_accessor.is_none();
        self.store
            .insert_token(&Token {
                token_hash: self.hash_token(&token),
                accessor: accessor.clone(),
                display_name: new.display_name,
                policies: new.policies.clone(),
                created_at: now,
                expires_at: Some(expires_at),
                entity_id: entity_id.clone(),
                renewable: new.renewable,
                ttl: new.ttl,
                explicit_max_ttl: new.explicit_max_ttl,
                max_expires_at: Some(max_expires_at),
                path: new.path,
                meta: new.meta.clone(),
                parent_accessor: new.parent_accessor,
            })
            .await?;
        Ok(IssuedToken {
            token,
            accessor,
            policies: new.policies,
            lease_duration: (expires_at - now).to_std().unwrap_or_default(),
            renewable: new.renewable,
            entity_id,
            meta: new.meta,
            orphan,
        })
    }

    /// `auth/token/renew-self`: moves the expiry to now + `increment` (or the creation TTL), never
    /// past the token's max. Returns the new TTL and a warning when it was capped.
    pub async fn renew_token(
        &self,
        identity: &Identity,
        increment: Option<Duration>,
    ) -> Result<(Duration, Vec<String>)> {
        let row = self
            .store
            .get_token_by_accessor(&identity.accessor)
            .await?
            .ok_or(Error::PermissionDenied)?;
        let Some(_) = row.expires_at else {
            return Ok((Duration::ZERO, vec![]));
        };
        if !row.renewable {
            return Err(Error::invalid("this token is not renewable"));
        }
        let now = Utc::now();
        let requested = increment.filter(|d| !d.is_zero()).unwrap_or(row.ttl);
        let wanted = now + chrono(requested)?;
        let limit = row.max_expires_at.unwrap_or(wanted);
        let new_expiry = wanted.min(limit);
        let mut warnings = Vec::new();
        if new_expiry < wanted {
            warnings.push(format!(
                "TTL of {}s exceeded the token's max TTL; TTL value is capped at {}s",
                requested.as_secs(),
                (new_expiry - now).num_seconds().max(0)
            ));
        }
        self.store.renew_token(&row.accessor, new_expiry).await?;
        Ok(((new_expiry - now).to_std().unwrap_or_default(), warnings))
    }

    /// Revokes the token with `accessor` and its whole subtree; revoking one that is gone
    /// succeeds. Kept for callers that do not revoke leases themselves; prefer [`Self::revoke_tree`].
    pub async fn revoke_accessor(&self, accessor: &str) -> Result<()> {
        self.revoke_tree(accessor).await.map(drop)
    }

    /// `revoke-self`, `revoke-accessor`: revokes the token with `accessor` and every token below it,
    /// in one statement. Returns the accessors removed (empty when the token was already gone), so
    /// the caller can revoke the leases they obtained.
    pub async fn revoke_tree(&self, accessor: &str) -> Result<Vec<String>> {
        let revoked = self.store.delete_token_tree(accessor).await?;
        if !revoked.is_empty() {
            tracing::info!(
                accessor = ?accessor,
                tokens = revoked.len(),
                "token revoked with its children"
            );
        }
        Ok(revoked)
    }

    /// `auth/token/revoke`: like [`Self::revoke_tree`] for the token given by value. An unknown
    /// token is revoked already (Vault answers 204 too).
    pub async fn revoke_token(&self, token: &Secret) -> Result<Vec<String>> {
        match self.store.get_token(&self.hash_token(token)).await? {
            Some(row) => self.revoke_tree(&row.accessor).await,
            None => Ok(vec![]),
        }
    }

    /// `auth/token/revoke-orphan` (Vault requires sudo or root for it): revokes only the token
    /// with `accessor`; its children become orphans and keep working. Returns the one accessor
    /// revoked (empty when it was gone already).
    pub async fn revoke_orphan(&self, accessor: &str) -> Result<Vec<String>> {
        let removed = self.store.delete_token_orphaning_children(accessor).await?;
        Ok(if removed {
            vec![accessor.to_owned()]
        } else {
            vec![]
        })
    }

    /// The accessor of a presented token, when it is stored (live or not), for `auth/token/revoke-orphan`
    /// given a token value.
    pub async fn accessor_of(&self, token: &Secret) -> Result<Option<String>> {
        Ok(self
            .store
            .get_token(&self.hash_token(token))
            .await?
            .map(|row| row.accessor))
    }

    /// `auth/token/lookup`: the token's properties (with its `id`) if it is live.
    pub async fn lookup_token(&self, token: &Secret) -> Result<TokenInfo> {
        let identity = self.authenticate(Some(token)).await.map_err(|e| match e {
            Error::PermissionDenied => Error::invalid("bad token"),
            other => other,
        })?;
        Ok(Self::describe(&identity, token))
    }

    /// `auth/token/lookup-accessor`: the token's properties without its `id`.
    pub async fn lookup_accessor(&self, accessor: &str) -> Result<TokenInfo> {
        let row = self
            .store
            .get_token_by_accessor(accessor)
            .await?
            .ok_or_else(|| Error::invalid("invalid accessor"))?;
        if !self.is_live(&row).await? {
            return Err(Error::invalid("invalid accessor"));
        }
        let identity = Identity::from_token(row);
        Ok(Self::describe(&identity, &Secret::new("")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_are_plain() {
        assert_eq!(
            clean_display_name("system:serviceaccount:ns:app"),
            "system:serviceaccount:ns:app"
        );
        assert_eq!(clean_display_name("a b\"c;'d"), "abcd");
        assert_eq!(clean_display_name(&"x".repeat(100)).len(), 64);
    }
}
