//! Store queries for response wrapping (migration 0008): wrapped answers, sealed, keyed by the
//! wrapping token's keyed hash.
//!
//! Single use is the store's job: [`WrappingStore::take_wrapped`] deletes the row in the same
//! statement that reads it (`DELETE .. RETURNING`), so of two concurrent unwraps exactly one gets
//! the row. Row formats (milliseconds, seconds) stay in this file.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use super::{codec, from_millis, to_millis, Store};
use crate::error::Result;

/// One wrapped answer as stored.
#[derive(Debug, Clone)]
pub struct WrappedResponse {
    /// The wrapping token's keyed hash (`Auth::hash_token`); the token itself is never stored.
    pub token_hash: String,
    /// Names the wrapping token without being it: shown in `wrap_info`, safe to audit.
    pub accessor: String,
    /// The whole original JSON answer, sealed with `wrapping/<accessor>` as associated data.
    pub sealed_response: String,
    /// The path whose answer was wrapped (`database/creds/app`, `sys/wrapping/wrap`).
    pub creation_path: String,
    pub created_at: DateTime<Utc>,
    /// The TTL the wrapping token was given, which a rewrap gives the new token again.
    pub ttl: Duration,
    pub expires_at: DateTime<Utc>,
    /// The accessor of the token inside, when the wrapped answer carries `auth`.
    pub wrapped_accessor: Option<String>,
}

/// A `wrapped_responses` row as stored.
#[derive(FromRow)]
struct WrappedRow {
    token_hash: String,
    accessor: String,
    sealed_response: String,
    creation_path: String,
    created_at: i64,
    ttl_secs: i64,
    expires_at: i64,
    wrapped_accessor: Option<String>,
}

impl From<WrappedRow> for WrappedResponse {
    fn from(row: WrappedRow) -> Self {
        Self {
            token_hash: row.token_hash,
            accessor: row.accessor,
            sealed_response: row.sealed_response,
            creation_path: row.creation_path,
            created_at: from_millis(row.created_at),
            ttl: codec::from_secs(row.ttl_secs),
            expires_at: from_millis(row.expires_at),
            wrapped_accessor: row.wrapped_accessor,
        }
    }
}

const INSERT: &str =
    "INSERT INTO wrapped_responses (token_hash, accessor, sealed_response, creation_path,
         created_at, ttl_secs, expires_at, wrapped_accessor)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Binds a wrapped answer's columns to [`INSERT`], for whichever engine the query is for.
macro_rules! bind_insert {
    ($query:expr, $wrapped:expr) => {
        $query
            .bind(&$wrapped.token_hash)
            .bind(&$wrapped.accessor)
            .bind(&$wrapped.sealed_response)
            .bind(&$wrapped.creation_path)
            .bind(to_millis($wrapped.created_at))
            .bind(codec::to_secs($wrapped.ttl))
            .bind(to_millis($wrapped.expires_at))
            .bind(&$wrapped.wrapped_accessor)
    };
}

/// Response wrapping: wrapped answers, each taken at most once.
// Only ever called on the concrete `Store`, so each future's `Send`-ness is known at the call.
#[allow(async_fn_in_trait)]
pub trait WrappingStore {
    /// Stores a wrapped answer.
    async fn insert_wrapped(&self, wrapped: &WrappedResponse) -> Result<()>;
    /// Removes the wrapped answer of `token_hash` and returns it, in one statement: whoever gets
    /// `Some` is the only one who ever will. Expired rows are removed and returned too; the caller
    /// decides that they are no longer valid.
    async fn take_wrapped(&self, token_hash: &str) -> Result<Option<WrappedResponse>>;
    /// Reads the wrapped answer of `token_hash` without consuming it (for `sys/wrapping/lookup`).
    async fn get_wrapped(&self, token_hash: &str) -> Result<Option<WrappedResponse>>;
    /// Replaces the wrapped answer of `old_hash` by the one `replace` makes of it, in one
    /// transaction: the old token stops working exactly when the new one starts. `None` (and
    /// nothing changed) when `old_hash` holds nothing, or `replace` refuses (then the old row is
    /// kept: an expired one is left to [`Self::purge_expired_wrapped`]).
    async fn replace_wrapped(
        &self,
        old_hash: &str,
        replace: impl FnOnce(WrappedResponse) -> Result<Option<WrappedResponse>>,
    ) -> Result<Option<WrappedResponse>>;
    /// Deletes the wrapped answer of `token_hash`; whether it was there.
    async fn delete_wrapped(&self, token_hash: &str) -> Result<bool>;
    /// Deletes every wrapped answer expired at `now`; how many.
    async fn purge_expired_wrapped(&self, now: DateTime<Utc>) -> Result<u64>;
}

impl WrappingStore for Store {
    async fn insert_wrapped(&self, wrapped: &WrappedResponse) -> Result<()> {
        with_pool!(self, |pool| bind_insert!(sqlx::query(INSERT), wrapped)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    async fn take_wrapped(&self, token_hash: &str) -> Result<Option<WrappedResponse>> {
        let row: Option<WrappedRow> = with_pool!(self, |pool| sqlx::query_as(
            "DELETE FROM wrapped_responses WHERE token_hash = $1 RETURNING *"
        )
        .bind(token_hash)
        .fetch_optional(pool)
        .await?);
        Ok(row.map(Into::into))
    }

    async fn get_wrapped(&self, token_hash: &str) -> Result<Option<WrappedResponse>> {
        let row: Option<WrappedRow> = with_pool!(self, |pool| sqlx::query_as(
            "SELECT * FROM wrapped_responses WHERE token_hash = $1"
        )
        .bind(token_hash)
        .fetch_optional(pool)
        .await?);
        Ok(row.map(Into::into))
    }

    async fn replace_wrapped(
        &self,
        old_hash: &str,
        replace: impl FnOnce(WrappedResponse) -> Result<Option<WrappedResponse>>,
    ) -> Result<Option<WrappedResponse>> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let old: Option<WrappedRow> =
                sqlx::query_as("DELETE FROM wrapped_responses WHERE token_hash = $1 RETURNING *")
                    .bind(old_hash)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(old) = old else {
                return Ok(None);
            };
            let Some(new) = replace(old.into())? else {
                return Ok(None);
            };
            bind_insert!(sqlx::query(INSERT), &new)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(new))
        })
    }

    async fn delete_wrapped(&self, token_hash: &str) -> Result<bool> {
        let done = with_pool!(self, |pool| sqlx::query(
            "DELETE FROM wrapped_responses WHERE token_hash = $1"
        )
        .bind(token_hash)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done > 0)
    }

    async fn purge_expired_wrapped(&self, now: DateTime<Utc>) -> Result<u64> {
        let done = with_pool!(self, |pool| sqlx::query(
            "DELETE FROM wrapped_responses WHERE expires_at <= $1"
        )
        .bind(to_millis(now))
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done)
    }
}
