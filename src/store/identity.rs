//! Store queries for identity: tokens, ACL policies, JWT roles and certificate roles
//! (migrations 0003 and 0007). Token roles are in `token_roles.rs`, wrapped answers in
//! `wrapping.rs`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::FromRow;

use super::codec::{self, encode_list};
use super::{from_millis, to_millis, Store};
use crate::error::{Error, Result};

/// A client token with everything its lifetime rules need; only its keyed hash is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub token_hash: String,
    pub accessor: String,
    pub display_name: String,
    /// Policy names.
    pub policies: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// `None`: the token never expires (a root token).
    pub expires_at: Option<DateTime<Utc>>,
    /// The workload this token stands for; leases are owned by it, so a workload that logs in
    /// again keeps control of its leases. Empty means the accessor.
    pub entity_id: String,
    pub renewable: bool,
    /// The TTL the token was created with, reused by `renew-self` without an increment; zero for
    /// a token without one.
    pub ttl: Duration,
    /// Zero: none.
    pub explicit_max_ttl: Duration,
    /// No renewal moves `expires_at` past this.
    pub max_expires_at: Option<DateTime<Utc>>,
    /// The auth path that made the token (`auth/token/create`, `auth/jwt/login/<role>`).
    pub path: String,
    /// Metadata (JWT role, claim mappings).
    pub meta: Map<String, Value>,
    pub parent_accessor: Option<String>,
}

/// One ACL policy as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub text: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A `tokens` row as stored.
#[derive(FromRow)]
struct TokenRow {
    token_hash: String,
    accessor: String,
    display_name: String,
    /// JSON array.
    policies: String,
    created_at: i64,
    expires_at: Option<i64>,
    entity_id: String,
    renewable: bool,
    ttl_secs: i64,
    explicit_max_ttl_secs: i64,
    max_expires_at: Option<i64>,
    path: String,
    /// JSON object.
    meta: String,
    parent_accessor: Option<String>,
}

impl TryFrom<TokenRow> for Token {
    type Error = Error;

    fn try_from(row: TokenRow) -> Result<Self> {
        Ok(Self {
            policies: codec::decode("tokens", "policies", &row.policies)?,
            meta: codec::decode("tokens", "meta", &row.meta)?,
            created_at: from_millis(row.created_at),
            expires_at: row.expires_at.map(from_millis),
            ttl: codec::from_secs(row.ttl_secs),
            explicit_max_ttl: codec::from_secs(row.explicit_max_ttl_secs),
            max_expires_at: row.max_expires_at.map(from_millis),
            token_hash: row.token_hash,
            accessor: row.accessor,
            display_name: row.display_name,
            entity_id: row.entity_id,
            renewable: row.renewable,
            path: row.path,
            parent_accessor: row.parent_accessor,
        })
    }
}

/// A `policies` row as stored.
#[derive(FromRow)]
struct PolicyRow {
    name: String,
    text: String,
    created_at: i64,
    updated_at: i64,
}

impl From<PolicyRow> for Policy {
    fn from(row: PolicyRow) -> Self {
        Self {
            name: row.name,
            text: row.text,
            created_at: from_millis(row.created_at),
            updated_at: from_millis(row.updated_at),
        }
    }
}

/// Identity: client tokens and their tree, ACL policies, and the roles of the JWT and
/// certificate auth methods (each kept as its owning module's type, JSON in the store).
// Only ever called on the concrete `Store`, so each future's `Send`-ness is known at the call.
#[allow(async_fn_in_trait)]
pub trait IdentityStore {
    // ---- tokens -----------------------------------------------------------------------------

    /// Stores a token. Storing a token whose hash is already there changes nothing, so
    /// installing the same root token at every `lessor dev --root-token` start is harmless.
    async fn insert_token(&self, token: &Token) -> Result<()>;
    async fn get_token(&self, token_hash: &str) -> Result<Option<Token>>;
    async fn get_token_by_accessor(&self, accessor: &str) -> Result<Option<Token>>;
    /// Moves a token's expiry after a renewal.
    async fn renew_token(&self, accessor: &str, expires_at: DateTime<Utc>) -> Result<bool>;
    /// Deletes the token with `accessor` and every token below it in one statement, so no child
    /// survives a crash halfway; returns the accessors deleted.
    async fn delete_token_tree(&self, accessor: &str) -> Result<Vec<String>>;
    /// Deletes only the token with `accessor`; its children become orphans. One transaction whose
    /// first statement writes, so SQLite takes the write lock at once.
    async fn delete_token_orphaning_children(&self, accessor: &str) -> Result<bool>;
    /// Whether the token with `accessor` and all its ancestors exist and have not expired at
    /// `now`. The walk is bounded, as a tree deeper than that is not one Lessor made.
    async fn token_lineage_live(&self, accessor: &str, now: DateTime<Utc>) -> Result<bool>;
    /// Converts every stored token hash with `convert`, once per store: the first statement claims
    /// the conversion by recording `scheme` under `meta_key`, in the same transaction, so it runs
    /// at most once even if two processes start together. Returns `None` when it had already run,
    /// or the number of rows converted. Rows `convert` does not recognise are left alone.
    async fn convert_token_hashes(
        &self,
        meta_key: &str,
        scheme: &str,
        convert: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<u64>>;
    /// The accessors of tokens that are dead at `now` (expired, or whose parent is gone) and of
    /// every token below them: what housekeeping removes. Every JWT login leaves one behind.
    async fn dead_token_trees(&self, now: DateTime<Utc>) -> Result<Vec<String>>;
    /// Deletes the tokens with these accessors; returns how many were still there. The list goes
    /// in chunks of bound parameters, well under either engine's limit on their number.
    async fn delete_tokens(&self, accessors: &[String]) -> Result<u64>;

    // ---- ACL policies -----------------------------------------------------------------------

    async fn upsert_policy(&self, name: &str, text: &str, now: DateTime<Utc>) -> Result<()>;
    /// Stores a policy only if none of that name exists (the built-in `default` at first start).
    async fn insert_policy_if_absent(
        &self,
        name: &str,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;
    async fn get_policy(&self, name: &str) -> Result<Option<Policy>>;
    async fn list_policies(&self) -> Result<Vec<String>>;
    async fn delete_policy(&self, name: &str) -> Result<bool>;

    // ---- JWT and certificate roles ----------------------------------------------------------

    /// Creates or replaces a JWT role; `config` is the auth module's role type.
    async fn upsert_jwt_role<R: Serialize + Sync>(
        &self,
        name: &str,
        config: &R,
        now: DateTime<Utc>,
    ) -> Result<()>;
    async fn get_jwt_role<R: DeserializeOwned>(&self, name: &str) -> Result<Option<R>>;
    async fn list_jwt_roles(&self) -> Result<Vec<String>>;
    async fn delete_jwt_role(&self, name: &str) -> Result<bool>;

    /// Creates or replaces a certificate role; `config` is the auth module's role type.
    async fn upsert_cert_role<R: Serialize + Sync>(
        &self,
        name: &str,
        config: &R,
        now: DateTime<Utc>,
    ) -> Result<()>;
    async fn get_cert_role<R: DeserializeOwned>(&self, name: &str) -> Result<Option<R>>;
    async fn list_cert_roles(&self) -> Result<Vec<String>>;
    /// Every role with its body, by name: a login without a role name tries them all.
    async fn all_cert_roles<R: DeserializeOwned>(&self) -> Result<Vec<(String, R)>>;
    async fn delete_cert_role(&self, name: &str) -> Result<bool>;
}

impl IdentityStore for Store {
    // ---- tokens -----------------------------------------------------------------------------

    async fn insert_token(&self, token: &Token) -> Result<()> {
        let policies = encode_list(&token.policies);
        let meta = codec::encode("tokens", "meta", &token.meta)?;
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO tokens (token_hash, accessor, display_name, policies, created_at, expires_at, entity_id,
                 renewable, ttl_secs, explicit_max_ttl_secs, max_expires_at, path, meta, parent_accessor)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT (token_hash) DO NOTHING",
        )
        .bind(&token.token_hash)
        .bind(&token.accessor)
        .bind(&token.display_name)
        .bind(&policies)
        .bind(to_millis(token.created_at))
        .bind(token.expires_at.map(to_millis))
        .bind(&token.entity_id)
        .bind(token.renewable)
        .bind(codec::to_secs(token.ttl))
        .bind(codec::to_secs(token.explicit_max_ttl))
        .bind(token.max_expires_at.map(to_millis))
        .bind(&token.path)
        .bind(&meta)
        .bind(&token.parent_accessor)
        .execute(pool)
        .await?.rows_affected()
        });
        // Nothing cached can be stale (no negative caching, and an insert changes no existing
        // token's lineage); the hash's entry is dropped all the same, in case it was there.
        self.cache.tokens.forget(&token.token_hash);
        Ok(())
    }

    async fn get_token(&self, token_hash: &str) -> Result<Option<Token>> {
        if let Some(cached) = self.cache.tokens.get(token_hash) {
            return Ok(Some(cached));
        }
        let generation = self.cache.tokens.generation();
        let row: Option<TokenRow> = with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM tokens WHERE token_hash = $1"
        )
        .bind(token_hash)
        .fetch_optional(pool)
        .await?);
        let token = row.map(Token::try_from).transpose()?;
        if let Some(token) = &token {
            self.cache.tokens.put(generation, token_hash, token.clone());
        }
        Ok(token)
    }

    async fn get_token_by_accessor(&self, accessor: &str) -> Result<Option<Token>> {
        let row: Option<TokenRow> = with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM tokens WHERE accessor = $1"
        )
        .bind(accessor)
        .fetch_optional(pool)
        .await?);
        row.map(Token::try_from).transpose()
    }

    async fn renew_token(&self, accessor: &str, expires_at: DateTime<Utc>) -> Result<bool> {
        let _forget = ForgetTokensOnReturn(self);
        let done = with_pool!(self, |pool| sqlx::query(
            "UPDATE tokens SET expires_at = $1 WHERE accessor = $2"
        )
        .bind(to_millis(expires_at))
        .bind(accessor)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done > 0)
    }

    async fn delete_token_tree(&self, accessor: &str) -> Result<Vec<String>> {
        let _forget = ForgetTokensOnReturn(self);
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "DELETE FROM tokens WHERE accessor IN (
                 WITH RECURSIVE tree(accessor) AS (
                     SELECT $1
                     UNION
                     SELECT t.accessor FROM tokens t JOIN tree ON t.parent_accessor = tree.accessor
                 )
                 SELECT accessor FROM tree
             ) RETURNING accessor",
        )
        .bind(accessor)
        .fetch_all(pool)
        .await?))
    }

    async fn delete_token_orphaning_children(&self, accessor: &str) -> Result<bool> {
        let _forget = ForgetTokensOnReturn(self);
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE tokens SET parent_accessor = NULL WHERE parent_accessor = $1")
                .bind(accessor)
                .execute(&mut *tx)
                .await?;
            let done = sqlx::query("DELETE FROM tokens WHERE accessor = $1")
                .bind(accessor)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(done.rows_affected() > 0)
        })
    }

    async fn token_lineage_live(&self, accessor: &str, now: DateTime<Utc>) -> Result<bool> {
        let cached = self.cache.lineages.get(accessor);
        let generation = self.cache.lineages.generation();
        let chain: Vec<(Option<String>, Option<i64>)> = match cached {
            Some(chain) => chain,
            None => with_pool!(self, |pool| sqlx::query_as(
                "WITH RECURSIVE up(accessor, parent_accessor, expires_at, depth) AS (
                 SELECT accessor, parent_accessor, expires_at, 0 FROM tokens WHERE accessor = $1
                 UNION ALL
                 SELECT t.accessor, t.parent_accessor, t.expires_at, up.depth + 1
                 FROM tokens t JOIN up ON t.accessor = up.parent_accessor
                 WHERE up.depth < 1000
             )
             SELECT parent_accessor, expires_at FROM up ORDER BY depth",
            )
            .bind(accessor)
            .fetch_all(pool)
            .await?),
        };
        let now = to_millis(now);
        // Live when the chain ends at a root (no parent) and nothing on it has expired; a chain
        // that ends at a parent that is gone is dead (and not kept: no negative caching). The
        // expiries are checked here, against `now`, whether the chain was cached or not.
        let reaches_root = chain.last().is_some_and(|(parent, _)| parent.is_none());
        if reaches_root {
            self.cache.lineages.put(generation, accessor, chain.clone());
        }
        let unexpired = chain
            .iter()
            .all(|(_, expires)| expires.map_or(true, |at| at > now));
        Ok(reaches_root && unexpired)
    }

    async fn convert_token_hashes(
        &self,
        meta_key: &str,
        scheme: &str,
        convert: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<u64>> {
        let _forget = ForgetTokensOnReturn(self);
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let claimed = sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(meta_key)
            .bind(scheme)
            .execute(&mut *tx)
            .await?;
            if claimed.rows_affected() == 0 {
                return Ok(None);
            }
            let hashes: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM tokens")
                .fetch_all(&mut *tx)
                .await?;
            let mut converted = 0;
            for old in hashes {
                if let Some(new) = convert(&old) {
                    sqlx::query("UPDATE tokens SET token_hash = $1 WHERE token_hash = $2")
                        .bind(new)
                        .bind(&old)
                        .execute(&mut *tx)
                        .await?;
                    converted += 1;
                }
            }
            tx.commit().await?;
            Ok(Some(converted))
        })
    }

    // ---- policies ---------------------------------------------------------------------------

    async fn upsert_policy(&self, name: &str, text: &str, now: DateTime<Utc>) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO policies (name, text, created_at, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET text = excluded.text, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(text)
        .bind(to_millis(now))
        .bind(to_millis(now))
        .execute(pool)
        .await?.rows_affected()
        });
        self.cache.policies.forget(name);
        Ok(())
    }

    async fn insert_policy_if_absent(
        &self,
        name: &str,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO policies (name, text, created_at, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(text)
        .bind(to_millis(now))
        .bind(to_millis(now))
        .execute(pool)
        .await?.rows_affected()
        });
        self.cache.policies.forget(name);
        Ok(())
    }

    async fn get_policy(&self, name: &str) -> Result<Option<Policy>> {
        if let Some(cached) = self.cache.policies.get(name) {
            return Ok(Some(cached));
        }
        let generation = self.cache.policies.generation();
        let row: Option<PolicyRow> = with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM policies WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await?);
        let policy = row.map(Policy::from);
        if let Some(policy) = &policy {
            self.cache.policies.put(generation, name, policy.clone());
        }
        Ok(policy)
    }

    async fn list_policies(&self) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT name FROM policies ORDER BY name"
        )
        .fetch_all(pool)
        .await?))
    }

    async fn delete_policy(&self, name: &str) -> Result<bool> {
        let done = with_pool!(self, |pool| sqlx::query(
            "DELETE FROM policies WHERE name = $1"
        )
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected());
        self.cache.policies.forget(name);
        Ok(done > 0)
    }

    // ---- JWT roles --------------------------------------------------------------------------

    async fn upsert_jwt_role<R: Serialize + Sync>(
        &self,
        name: &str,
        config: &R,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let config = codec::encode("jwt_roles", "config", config)?;
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO jwt_roles (name, config, created_at, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(config)
        .bind(to_millis(now))
        .bind(to_millis(now))
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(())
    }

    async fn get_jwt_role<R: DeserializeOwned>(&self, name: &str) -> Result<Option<R>> {
        let config: Option<String> = with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT config FROM jwt_roles WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await?);
        config
            .map(|text| codec::decode("jwt_roles", "config", &text))
            .transpose()
    }

    async fn list_jwt_roles(&self) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT name FROM jwt_roles ORDER BY name"
        )
        .fetch_all(pool)
        .await?))
    }

    async fn delete_jwt_role(&self, name: &str) -> Result<bool> {
        let done = with_pool!(self, |pool| sqlx::query(
            "DELETE FROM jwt_roles WHERE name = $1"
        )
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done > 0)
    }

    // ---- housekeeping -----------------------------------------------------------------------

    async fn dead_token_trees(&self, now: DateTime<Utc>) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(
            "WITH RECURSIVE tree(accessor) AS (
                 SELECT t.accessor FROM tokens t
                 WHERE (t.expires_at IS NOT NULL AND t.expires_at <= $1)
                    OR (t.parent_accessor IS NOT NULL
                        AND NOT EXISTS (SELECT 1 FROM tokens p WHERE p.accessor = t.parent_accessor))
                 UNION
                 SELECT t.accessor FROM tokens t JOIN tree ON t.parent_accessor = tree.accessor
             )
             SELECT accessor FROM tree",
        )
        .bind(to_millis(now))
        .fetch_all(pool)
        .await?
        }))
    }

    async fn delete_tokens(&self, accessors: &[String]) -> Result<u64> {
        let _forget = ForgetTokensOnReturn(self);
        let mut deleted = 0;
        for chunk in accessors.chunks(500) {
            deleted += with_pool!(self, |pool| {
                let mut query = sqlx::QueryBuilder::new("DELETE FROM tokens WHERE accessor IN (");
                let mut list = query.separated(", ");
                for accessor in chunk {
                    list.push_bind(accessor);
                }
                query.push(")");
                query.build().execute(pool).await?.rows_affected()
            });
        }
        Ok(deleted)
    }

    // ---- certificate auth roles (migration 0007) ----------------------------------------------

    async fn upsert_cert_role<R: Serialize + Sync>(
        &self,
        name: &str,
        config: &R,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let config = codec::encode("cert_roles", "config", config)?;
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO cert_roles (name, config, created_at, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(config)
        .bind(to_millis(now))
        .bind(to_millis(now))
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(())
    }

    async fn get_cert_role<R: DeserializeOwned>(&self, name: &str) -> Result<Option<R>> {
        let config: Option<String> = with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT config FROM cert_roles WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(pool)
        .await?);
        config
            .map(|text| codec::decode("cert_roles", "config", &text))
            .transpose()
    }

    async fn list_cert_roles(&self) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT name FROM cert_roles ORDER BY name"
        )
        .fetch_all(pool)
        .await?))
    }

    async fn all_cert_roles<R: DeserializeOwned>(&self) -> Result<Vec<(String, R)>> {
        let rows: Vec<(String, String)> = with_pool!(self, |pool| sqlx::query_as(
            "SELECT name, config FROM cert_roles ORDER BY name"
        )
        .fetch_all(pool)
        .await?);
        rows.into_iter()
            .map(|(name, text)| Ok((name, codec::decode("cert_roles", "config", &text)?)))
            .collect()
    }

    async fn delete_cert_role(&self, name: &str) -> Result<bool> {
        let done = with_pool!(self, |pool| sqlx::query(
            "DELETE FROM cert_roles WHERE name = $1"
        )
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done > 0)
    }
}

/// Forgets every cached token and lineage when dropped: held by each token write but an insert,
/// so the cache is cleared on every way out of it (an error included, as the write may have
/// committed before it), and before the caller sees the result.
struct ForgetTokensOnReturn<'a>(&'a Store);

impl Drop for ForgetTokensOnReturn<'_> {
    fn drop(&mut self) {
        self.0.cache.forget_tokens();
    }
}
