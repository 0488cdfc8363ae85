//! Who is asking: client tokens, ACL policies and workload identity.
//!
//! - Tokens are random, stored only as SHA-256 hashes, looked up on every request; an expired
//!   token stops working at once. The root token is made at first start (or given to
//!   `lessor dev --root-token`) and carries the `root` policy. A token is presented as
//!   `X-Vault-Token` or `Authorization: Bearer`. [`tokens`] creates, renews and revokes them.
//! - [`policy`]: Vault ACL policies (HCL via [`hcl`], or JSON) and the per-request check.
//! - [`jwt`]: workload identity: a signed JWT (a Kubernetes service-account token) exchanged
//!   for a short-lived token.

pub mod hcl;
pub mod jwt;
pub mod policy;
pub mod tokens;

use chrono::{DateTime, Utc};
use lessor_plugin::Secret;
use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::catalog::LeaseLimits;
use crate::error::{Error, Result};
use crate::store::{from_millis, to_millis, Store, TokenRow};

pub use policy::ROOT_POLICY;

/// The identity behind a request, as resolved from its token.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Names the token without being it: safe to log, audit and show to operators.
    pub accessor: String,
    pub display_name: String,
    pub policies: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The workload the token stands for: owner of its leases and the subject of anomaly rules,
    /// the same across the tokens one workload gets by logging in again.
    pub entity_id: String,
    pub renewable: bool,
    /// The TTL the token was created with, in seconds.
    pub creation_ttl: i64,
    pub explicit_max_ttl: i64,
    /// The auth path that made the token.
    pub path: String,
    /// Metadata set at login (the JWT role, mapped claims).
    pub meta: serde_json::Map<String, serde_json::Value>,
}

impl Identity {
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == ROOT_POLICY)
    }

    fn from_row(row: TokenRow) -> Self {
        let entity_id = if row.entity_id.is_empty() {
            row.accessor.clone()
        } else {
            row.entity_id
        };
        Self {
            accessor: row.accessor,
            display_name: row.display_name,
            policies: serde_json::from_str(&row.policies).unwrap_or_default(),
            created_at: from_millis(row.created_at),
            expires_at: row.expires_at.map(from_millis),
            entity_id,
            renewable: row.renewable,
            creation_ttl: row.ttl_secs,
            explicit_max_ttl: row.explicit_max_ttl_secs,
            path: row.path,
            meta: serde_json::from_str(&row.meta).unwrap_or_default(),
        }
    }
}

/// What `auth/token/lookup-self` shows.
#[derive(Debug, Serialize)]
pub struct TokenInfo {
    pub accessor: String,
    pub creation_time: i64,
    pub creation_ttl: i64,
    pub display_name: String,
    pub entity_id: String,
    pub expire_time: Option<DateTime<Utc>>,
    pub explicit_max_ttl: i64,
    pub id: String,
    pub issue_time: DateTime<Utc>,
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
    pub num_uses: i64,
    pub orphan: bool,
    pub path: String,
    pub policies: Vec<String>,
    pub renewable: bool,
    pub ttl: i64,
    #[serde(rename = "type")]
    pub token_type: &'static str,
}

/// SHA-256 of a token, hex; the only form in which tokens are stored.
pub fn hash_token(token: &Secret) -> String {
    hex::encode(Sha256::digest(token.expose().as_bytes()))
}

/// A new random token in Vault's service-token shape (`hvs.` + 24 random characters).
pub fn generate_token() -> Secret {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    let body: String = (0..32)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    Secret::new(format!("hvs.{body}"))
}

pub(crate) fn generate_accessor() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    (0..24)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Token issuing and checking.
#[derive(Clone, Debug)]
pub struct Auth {
    store: Store,
    /// Default and longest TTL of tokens, the server's lease limits as in Vault.
    limits: LeaseLimits,
}

impl Auth {
    pub fn new(store: Store, limits: LeaseLimits) -> Self {
        Self { store, limits }
    }

    /// Stores `token` as a root token (no expiry). Storing the same token twice is harmless.
    pub async fn install_root_token(&self, token: &Secret) -> Result<()> {
        if token.expose().len() < 8 {
            return Err(Error::Config(
                "the root token must be at least 8 characters".into(),
            ));
        }
        self.store
            .insert_token(&TokenRow {
                token_hash: hash_token(token),
                accessor: generate_accessor(),
                display_name: "root".into(),
                policies: serde_json::to_string(&[ROOT_POLICY]).unwrap_or_default(),
                created_at: to_millis(Utc::now()),
                expires_at: None,
                // Empty: the root token is its own entity (its accessor).
                entity_id: String::new(),
                renewable: false,
                ttl_secs: 0,
                explicit_max_ttl_secs: 0,
                max_expires_at: None,
                path: "auth/token/root".into(),
                meta: "{}".into(),
                parent_accessor: None,
            })
            .await
    }

    /// At first start (no token stored yet), makes a root token and returns it so it can be shown
    /// once; afterwards returns `None`.
    pub async fn bootstrap_root_token(&self) -> Result<Option<Secret>> {
        if self.store.count_tokens().await? > 0 {
            return Ok(None);
        }
        let token = generate_token();
        self.install_root_token(&token).await?;
        Ok(Some(token))
    }

    /// Resolves a presented token; a missing, unknown or expired token is `PermissionDenied`.
    pub async fn authenticate(&self, token: Option<&Secret>) -> Result<Identity> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(Error::PermissionDenied)?;
        let row = self
            .store
            .get_token(&hash_token(token))
            .await?
            .ok_or(Error::PermissionDenied)?;
        let identity = Identity::from_row(row);
        if identity.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(Error::PermissionDenied);
        }
        Ok(identity)
    }

    /// The `lookup-self` view of an identity; `id` echoes the token the caller presented.
    pub fn describe(identity: &Identity, presented: &Secret) -> TokenInfo {
        let ttl = identity
            .expires_at
            .map_or(0, |at| (at - Utc::now()).num_seconds().max(0));
        TokenInfo {
            accessor: identity.accessor.clone(),
            creation_time: identity.created_at.timestamp(),
            creation_ttl: identity.creation_ttl,
            display_name: identity.display_name.clone(),
            entity_id: identity.entity_id.clone(),
            expire_time: identity.expires_at,
            explicit_max_ttl: identity.explicit_max_ttl,
            id: presented.expose().to_owned(),
            issue_time: identity.created_at,
            meta: (!identity.meta.is_empty()).then(|| identity.meta.clone()),
            num_uses: 0,
            orphan: true,
            path: identity.path.clone(),
            policies: identity.policies.clone(),
            renewable: identity.renewable,
            ttl,
            token_type: "service",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert!(a.expose().starts_with("hvs.") && a.expose().len() == 36);
        let hash = hash_token(&a);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(a.expose()));
    }
}
