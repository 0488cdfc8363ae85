//! Token roles (`auth/token/roles/:name`): plain rows, one per role. The SQL uses `$1`, `$2`...
//! placeholders and only syntax SQLite and PostgreSQL share (`ON CONFLICT .. DO UPDATE`,
//! `excluded.`), so it runs unchanged on both backends; the policy lists are JSON text in the
//! row and lists here.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::codec::{self, encode_list};
use super::{from_millis, to_millis, Store};
use crate::error::{Error, Result};

/// One token role. Checking a write and applying the role to a new token is `auth::token_roles`'s
/// job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRole {
    pub name: String,
    /// Policy names a token from this role may hold; empty: the creator's.
    pub allowed_policies: Vec<String>,
    /// Policy names a token from this role may never hold.
    pub disallowed_policies: Vec<String>,
    /// Tokens from this role have no parent (no sudo needed: the role says so).
    pub orphan: bool,
    /// Tokens from this role may be renewed.
    pub renewable: bool,
    /// Default TTL of its tokens; zero: the server's default.
    pub token_ttl: Duration,
    /// Longest life of its tokens; zero: the server's maximum.
    pub token_max_ttl: Duration,
    /// Hard cap on its tokens' life, kept apart from `token_max_ttl` only so that a read shows
    /// what was written, as Vault does; zero: none.
    pub token_explicit_max_ttl: Duration,
    /// Kept as first written: replacing a role does not change it.
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A `token_roles` row as stored.
#[derive(sqlx::FromRow)]
struct TokenRoleRow {
    name: String,
    /// JSON arrays of policy names.
    allowed_policies: String,
    disallowed_policies: String,
    orphan: bool,
    renewable: bool,
    token_ttl_secs: i64,
    token_max_ttl_secs: i64,
    token_explicit_max_ttl_secs: i64,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<TokenRoleRow> for TokenRole {
    type Error = Error;

    fn try_from(row: TokenRoleRow) -> Result<Self> {
        const TABLE: &str = "token_roles";
        Ok(Self {
            allowed_policies: codec::decode(TABLE, "allowed_policies", &row.allowed_policies)?,
            disallowed_policies: codec::decode(
                TABLE,
                "disallowed_policies",
                &row.disallowed_policies,
            )?,
            token_ttl: codec::from_secs(row.token_ttl_secs),
            token_max_ttl: codec::from_secs(row.token_max_ttl_secs),
            token_explicit_max_ttl: codec::from_secs(row.token_explicit_max_ttl_secs),
            created_at: from_millis(row.created_at),
            updated_at: from_millis(row.updated_at),
            name: row.name,
            orphan: row.orphan,
            renewable: row.renewable,
        })
    }
}

/// Token roles: the templates `auth/token/create/:role` makes tokens from.
// Only ever called on the concrete `Store`, so each future's `Send`-ness is known at the call.
#[allow(async_fn_in_trait)]
pub trait TokenRoleStore {
    /// Creates or replaces a token role; `created_at` is kept on replacement.
    async fn upsert_token_role(&self, role: &TokenRole) -> Result<()>;
    async fn get_token_role(&self, name: &str) -> Result<Option<TokenRole>>;
    async fn list_token_roles(&self) -> Result<Vec<String>>;
    /// Deletes a token role; false when there was none. Tokens made from it live on.
    async fn delete_token_role(&self, name: &str) -> Result<bool>;
}

impl TokenRoleStore for Store {
    async fn upsert_token_role(&self, role: &TokenRole) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO token_roles (name, allowed_policies, disallowed_policies, orphan, renewable,
                 token_ttl_secs, token_max_ttl_secs, token_explicit_max_ttl_secs, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (name) DO UPDATE SET
                 allowed_policies = excluded.allowed_policies,
                 disallowed_policies = excluded.disallowed_policies,
                 orphan = excluded.orphan,
                 renewable = excluded.renewable,
                 token_ttl_secs = excluded.token_ttl_secs,
                 token_max_ttl_secs = excluded.token_max_ttl_secs,
                 token_explicit_max_ttl_secs = excluded.token_explicit_max_ttl_secs,
                 updated_at = excluded.updated_at",
        )
        .bind(&role.name)
        .bind(encode_list(&role.allowed_policies))
        .bind(encode_list(&role.disallowed_policies))
        .bind(role.orphan)
        .bind(role.renewable)
        .bind(codec::to_secs(role.token_ttl))
        .bind(codec::to_secs(role.token_max_ttl))
        .bind(codec::to_secs(role.token_explicit_max_ttl))
        .bind(to_millis(role.created_at))
        .bind(to_millis(role.updated_at))
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(())
    }

    async fn get_token_role(&self, name: &str) -> Result<Option<TokenRole>> {
        let row: Option<TokenRoleRow> = with_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT name, allowed_policies, disallowed_policies, orphan, renewable, token_ttl_secs,
                 token_max_ttl_secs, token_explicit_max_ttl_secs, created_at, updated_at
             FROM token_roles WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(pool)
        .await?
        });
        row.map(TokenRole::try_from).transpose()
    }

    async fn list_token_roles(&self) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT name FROM token_roles ORDER BY name"
        )
        .fetch_all(pool)
        .await?))
    }

    async fn delete_token_role(&self, name: &str) -> Result<bool> {
        let done = with_pool!(self, |pool| sqlx::query(
            "DELETE FROM token_roles WHERE name = $1"
        )
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, orphan: bool) -> TokenRole {
        TokenRole {
            name: name.to_owned(),
            allowed_policies: vec!["app".to_owned()],
            disallowed_policies: vec![],
            orphan,
            renewable: false,
            token_ttl: Duration::from_secs(60),
            token_max_ttl: Duration::from_secs(120),
            token_explicit_max_ttl: Duration::ZERO,
            created_at: from_millis(1),
            updated_at: from_millis(1),
        }
    }

    #[tokio::test]
    async fn token_roles_round_trip_and_replace_keeps_created_at() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("lessor.db").display().to_string())
            .await
            .unwrap();
        assert_eq!(store.get_token_role("a").await.unwrap(), None);
        store.upsert_token_role(&role("a", false)).await.unwrap();
        store.upsert_token_role(&role("b", true)).await.unwrap();
        assert_eq!(
            store.get_token_role("a").await.unwrap(),
            Some(role("a", false))
        );
        let mut changed = role("a", true);
        changed.created_at = from_millis(5);
        changed.updated_at = from_millis(5);
        store.upsert_token_role(&changed).await.unwrap();
        let stored = store.get_token_role("a").await.unwrap().unwrap();
        assert!(stored.orphan);
        assert_eq!(
            (stored.created_at, stored.updated_at),
            (from_millis(1), from_millis(5))
        );
        assert_eq!(store.list_token_roles().await.unwrap(), vec!["a", "b"]);
        assert!(store.delete_token_role("a").await.unwrap());
        assert!(!store.delete_token_role("a").await.unwrap());
        assert_eq!(store.list_token_roles().await.unwrap(), vec!["b"]);
    }
}
