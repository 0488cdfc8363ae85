//! Token roles (`auth/token/roles/:name`): plain rows, one per role. The SQL uses `$1`, `$2`...
//! placeholders and only syntax SQLite and PostgreSQL share (`ON CONFLICT .. DO UPDATE`,
//! `excluded.`), so it runs unchanged on both backends; the policy lists stay JSON text here and
//! are decoded by `auth::token_roles`, which owns their meaning.

use super::Store;
use crate::error::Result;

/// One token role as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenRoleRow {
    pub name: String,
    /// JSON array of policy names a token from this role may hold; empty: the creator's.
    pub allowed_policies: String,
    /// JSON array of policy names a token from this role may never hold.
    pub disallowed_policies: String,
    /// Tokens from this role have no parent.
    pub orphan: bool,
    /// Tokens from this role may be renewed.
    pub renewable: bool,
    /// Default TTL of its tokens in seconds; 0 for the server's default.
    pub token_ttl_secs: i64,
    /// Longest life of its tokens in seconds; 0 for the server's maximum.
    pub token_max_ttl_secs: i64,
    /// Hard cap on its tokens' life in seconds, kept apart from `token_max_ttl_secs` only so
    /// that a read shows what was written, as Vault does; 0 for none.
    pub token_explicit_max_ttl_secs: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Store {
    /// Creates or replaces a token role; `created_at` is kept on replacement.
    pub async fn upsert_token_role(&self, row: &TokenRoleRow) -> Result<()> {
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
        .bind(&row.name)
        .bind(&row.allowed_policies)
        .bind(&row.disallowed_policies)
        .bind(row.orphan)
        .bind(row.renewable)
        .bind(row.token_ttl_secs)
        .bind(row.token_max_ttl_secs)
        .bind(row.token_explicit_max_ttl_secs)
        .bind(row.created_at)
        .bind(row.updated_at)
        .execute(pool)
        .await?.rows_affected()
        });
        Ok(())
    }

    pub async fn get_token_role(&self, name: &str) -> Result<Option<TokenRoleRow>> {
        Ok(with_pool!(self, |pool| sqlx::query_as(
            "SELECT name, allowed_policies, disallowed_policies, orphan, renewable, token_ttl_secs,
                 token_max_ttl_secs, token_explicit_max_ttl_secs, created_at, updated_at
             FROM token_roles WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(pool)
        .await?))
    }

    pub async fn list_token_roles(&self) -> Result<Vec<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT name FROM token_roles ORDER BY name"
        )
        .fetch_all(pool)
        .await?))
    }

    /// Deletes a token role; false when there was none. Tokens made from it live on.
    pub async fn delete_token_role(&self, name: &str) -> Result<bool> {
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

    fn row(name: &str, orphan: bool) -> TokenRoleRow {
        TokenRoleRow {
            name: name.to_owned(),
            allowed_policies: r#"["app"]"#.to_owned(),
            disallowed_policies: "[]".to_owned(),
            orphan,
            renewable: false,
            token_ttl_secs: 60,
            token_max_ttl_secs: 120,
            token_explicit_max_ttl_secs: 0,
            created_at: 1,
            updated_at: 1,
        }
    }

    #[tokio::test]
    async fn token_roles_round_trip_and_replace_keeps_created_at() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("lessor.db").display().to_string())
            .await
            .unwrap();
        assert_eq!(store.get_token_role("a").await.unwrap(), None);
        store.upsert_token_role(&row("a", false)).await.unwrap();
        store.upsert_token_role(&row("b", true)).await.unwrap();
        assert_eq!(
            store.get_token_role("a").await.unwrap(),
            Some(row("a", false))
        );
        let mut changed = row("a", true);
        changed.created_at = 5;
        changed.updated_at = 5;
        store.upsert_token_role(&changed).await.unwrap();
        let stored = store.get_token_role("a").await.unwrap().unwrap();
        assert!(stored.orphan);
        assert_eq!((stored.created_at, stored.updated_at), (1, 5));
        assert_eq!(store.list_token_roles().await.unwrap(), vec!["a", "b"]);
        assert!(store.delete_token_role("a").await.unwrap());
        assert!(!store.delete_token_role("a").await.unwrap());
        assert_eq!(store.list_token_roles().await.unwrap(), vec!["b"]);
    }
}
