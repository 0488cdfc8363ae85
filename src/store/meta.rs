//! Store queries for meta keys: small named values of the installation (the sealed token-hash
//! key, the audit HMAC key, first-start claims, the JWT auth method's configuration).

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{codec, Store};
use crate::error::{Error, Result};

/// Meta keys: one value per key, text as the caller gives it, or JSON for a caller's own type.
// Only ever called on the concrete `Store`, so each future's `Send`-ness is known at the call.
#[allow(async_fn_in_trait)]
pub trait MetaStore {
    async fn meta_get(&self, key: &str) -> Result<Option<String>>;

    /// Stores `offered` under `key` unless a value is there already, and returns the value that
    /// is: of several processes starting together, all end up with the first one's.
    async fn meta_init(&self, key: &str, offered: &str) -> Result<String>;

    async fn meta_set(&self, key: &str, value: &str) -> Result<()>;

    /// The value under `key` decoded from JSON into the caller's type.
    async fn meta_get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>>;

    /// Stores `value` under `key` as JSON.
    async fn meta_set_json<T: Serialize + Sync>(&self, key: &str, value: &T) -> Result<()>;
}

impl MetaStore for Store {
    async fn meta_get(&self, key: &str) -> Result<Option<String>> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT value FROM meta WHERE key = $1"
        )
        .bind(key)
        .fetch_optional(pool)
        .await?))
    }

    async fn meta_init(&self, key: &str, offered: &str) -> Result<String> {
        with_pool!(self, |pool| sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING"
        )
        .bind(key)
        .bind(offered)
        .execute(pool)
        .await?
        .rows_affected());
        self.meta_get(key)
            .await?
            .ok_or_else(|| Error::Internal(format!("meta {key} vanished after it was stored")))
    }

    async fn meta_set(&self, key: &str, value: &str) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(pool)
            .await?.rows_affected()
        });
        Ok(())
    }

    async fn meta_get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.meta_get(key)
            .await?
            .map(|text| codec::decode("meta", key, &text))
            .transpose()
    }

    async fn meta_set_json<T: Serialize + Sync>(&self, key: &str, value: &T) -> Result<()> {
        let text = codec::encode("meta", key, value)?;
        self.meta_set(key, &text).await
    }
}
