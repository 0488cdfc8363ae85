//! Who is asking: client tokens, ACL policies and workload identity.
//!
//! - Tokens are random, stored only as keyed hashes (HMAC-SHA256 under a per-install key sealed in
//!   the store, see [`TokenHasher`]), looked up on every request; an expired token stops working at
//!   once. The root token is made at first start (or given to `lessor dev --root-token`) and
//!   carries the `root` policy. A token is presented as `X-Vault-Token` or `Authorization: Bearer`.
//!   [`tokens`] creates, renews and revokes them.
//! - Tokens form a tree, as in Vault: a token made by another is its child, works only while
//!   every ancestor is live, and is revoked with it; orphans have no parent.
//! - [`policy`]: Vault ACL policies (HCL via [`hcl`], or JSON) and the per-request check.
//! - [`jwt`]: workload identity: a signed JWT (a Kubernetes service-account token) exchanged
//!   for a short-lived token.
//! - [`cert`]: workload identity by TLS client certificate (Vault's `cert` method).

pub mod cert;
pub mod hcl;
pub mod jwt;
pub mod policy;
pub mod token_roles;
pub mod tokens;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use lessor_plugin::Secret;
use rand::{Rng, RngCore};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::catalog::LeaseLimits;
use crate::error::{Error, Result};
use crate::seal::Sealer;
use crate::store::{IdentityStore, MetaStore, Store, Token};

/// Meta-table key of the sealed token-hash key, and its sealing context.
const HASH_KEY_META: &str = "token_hmac_key";
const HASH_KEY_CONTEXT: &str = "meta/token_hmac_key";
/// Meta-table key recording that stored hashes are keyed; set when the SHA-256 hashes of older
/// versions were converted (once per store).
const HASH_SCHEME_META: &str = "token_hash_scheme";
const HASH_SCHEME: &str = "hmac-sha256(sha256)";
/// The shortest root token `lessor dev --root-token` accepts. Generated tokens have 24 random
/// characters; a chosen one is for development, and with keyed hashes a stolen store alone no
/// longer allows guessing it offline (the seal key is needed too).
pub const MIN_ROOT_TOKEN_LEN: usize = 8;

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
    /// The token that made this one; `None` for an orphan (root, JWT logins, create-orphan).
    pub parent_accessor: Option<String>,
}

impl Identity {
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == ROOT_POLICY)
    }

    fn from_token(token: Token) -> Self {
        let entity_id = if token.entity_id.is_empty() {
            token.accessor.clone()
        } else {
            token.entity_id
        };
        Self {
            accessor: token.accessor,
            display_name: token.display_name,
            policies: token.policies,
            created_at: token.created_at,
            expires_at: token.expires_at,
            entity_id,
            renewable: token.renewable,
            creation_ttl: token.ttl.as_secs() as i64,
            explicit_max_ttl: token.explicit_max_ttl.as_secs() as i64,
            path: token.path,
            meta: token.meta,
            parent_accessor: token.parent_accessor,
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

/// Turns tokens into the only form in which they are stored: `hex(HMAC-SHA256(key,
/// SHA-256(token)))` under a per-install key. A stolen store alone no longer lets anyone test guesses
/// offline; the sealed key (and so the seal key) is needed too. Hashing the SHA-256 rather than the
/// token lets the SHA-256 hashes of older versions be converted without knowing the tokens.
#[derive(Clone)]
pub struct TokenHasher {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for TokenHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHasher(..)")
    }
}

/// Meta key claimed by the one process that makes the first root token of a store.
const BOOTSTRAP_META: &str = "root_token_bootstrap";

impl TokenHasher {
    /// Loads the install's key from the store's meta table, making and sealing one at first start.
    pub async fn open(store: &Store, sealer: &Sealer) -> Result<Self> {
        // Replicas starting together on an empty store each offer a key; the first one stored
        // wins and every replica uses that one.
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let offered = sealer.seal(HASH_KEY_CONTEXT, &Secret::new(hex::encode(bytes)))?;
        let sealed = store.meta_init(HASH_KEY_META, &offered).await?;
        let key = sealer.open(HASH_KEY_CONTEXT, &sealed)?;
        Self::from_key(key.expose().as_bytes())
    }

    fn from_key(key: &[u8]) -> Result<Self> {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .map_err(|e| Error::Internal(format!("token hash key: {e}")))?;
        Ok(Self { mac })
    }

    /// The stored form of `token`.
    pub fn hash(&self, token: &Secret) -> String {
        self.keyed(&Sha256::digest(token.expose().as_bytes()))
    }

    /// The stored form of a token an older version stored as `hex(SHA-256(token))`; `None` when
    /// `legacy` is not such a hash.
    pub fn convert_legacy(&self, legacy: &str) -> Option<String> {
        let digest = hex::decode(legacy).ok().filter(|d| d.len() == 32)?;
        Some(self.keyed(&digest))
    }

    fn keyed(&self, digest: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(digest);
        hex::encode(mac.finalize().into_bytes())
    }
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
    hasher: TokenHasher,
}

impl Auth {
    /// Loads the token-hash key and, once per store, converts the SHA-256 hashes older versions
    /// stored into keyed hashes, so their tokens keep working.
    pub async fn open(store: Store, sealer: &Sealer, limits: LeaseLimits) -> Result<Self> {
        let hasher = TokenHasher::open(&store, sealer).await?;
        let converted = store
            .convert_token_hashes(HASH_SCHEME_META, HASH_SCHEME, |legacy| {
                hasher.convert_legacy(legacy)
            })
            .await?;
        if let Some(count) = converted.filter(|n| *n > 0) {
            tracing::info!(
                tokens = count,
                "stored token hashes converted to keyed hashes"
            );
        }
        Ok(Self {
            store,
            limits,
            hasher,
        })
    }

    /// The stored form of `token`.
    pub fn hash_token(&self, token: &Secret) -> String {
        self.hasher.hash(token)
    }

    /// Stores `token` as a root token (no expiry). Storing the same token twice is harmless.
    pub async fn install_root_token(&self, token: &Secret) -> Result<()> {
        if token.expose().len() < MIN_ROOT_TOKEN_LEN {
            return Err(Error::Config(format!(
                "the root token must be at least {MIN_ROOT_TOKEN_LEN} characters"
            )));
        }
        self.store
            .insert_token(&Token {
                token_hash: self.hash_token(token),
                accessor: generate_accessor(),
                display_name: "root".into(),
                policies: vec![ROOT_POLICY.to_owned()],
                created_at: Utc::now(),
                expires_at: None,
                // Empty: the root token is its own entity (its accessor).
                entity_id: String::new(),
                renewable: false,
                ttl: std::time::Duration::ZERO,
                explicit_max_ttl: std::time::Duration::ZERO,
                max_expires_at: None,
                path: "auth/token/root".into(),
                meta: serde_json::Map::new(),
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
        // Replicas starting together on an empty store: only the first to claim the bootstrap
        // makes (and prints) a root token.
        let offered = hex::encode(rand::random::<[u8; 16]>());
        if self.store.meta_init(BOOTSTRAP_META, &offered).await? != offered {
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
            .get_token(&self.hash_token(token))
            .await?
            .ok_or(Error::PermissionDenied)?;
        if !self.is_live(&row).await? {
            return Err(Error::PermissionDenied);
        }
        Ok(Identity::from_token(row))
    }

    /// Whether `row` may be used now: unexpired, and (for a child) every ancestor present and
    /// unexpired. Revocation removes a whole subtree at once; this check also covers a parent that
    /// expired before housekeeping removed its children, and a child made while its parent was
    /// being revoked.
    async fn is_live(&self, row: &Token) -> Result<bool> {
        let now = Utc::now();
        if row.expires_at.is_some_and(|at| at <= now) {
            return Ok(false);
        }
        match &row.parent_accessor {
            None => Ok(true),
            Some(parent) => self.store.token_lineage_live(parent, now).await,
        }
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
            orphan: identity.parent_accessor.is_none(),
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
        let hasher = TokenHasher::from_key(b"install key").unwrap();
        let hash = hasher.hash(&a);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(a.expose()));
        assert_ne!(hash, hex::encode(Sha256::digest(a.expose().as_bytes())));
        // Another install's key gives another hash.
        let other = TokenHasher::from_key(b"another key").unwrap();
        assert_ne!(hash, other.hash(&a));
    }

    #[test]
    fn legacy_hashes_convert_to_the_keyed_hash_of_the_same_token() {
        let hasher = TokenHasher::from_key(b"install key").unwrap();
        let token = generate_token();
        let legacy = hex::encode(Sha256::digest(token.expose().as_bytes()));
        assert_eq!(hasher.convert_legacy(&legacy), Some(hasher.hash(&token)));
        assert_eq!(hasher.convert_legacy("not hex"), None);
    }
}
