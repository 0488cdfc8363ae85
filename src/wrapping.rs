//! Response wrapping, Vault's way: instead of a secret, the caller gets a single-use wrapping
//! token, and whoever holds the token can unwrap the secret exactly once before the token expires.
//!
//! - [`Wrapping::wrap`] stores a whole JSON answer sealed at rest ([`crate::seal`], with the row's
//!   accessor as associated data), keyed by the wrapping token's keyed hash ([`Auth::hash_token`],
//!   the same install key as client tokens), never by the token. The token is shown once, in
//!   [`WrapInfo`].
//! - [`Wrapping::unwrap`] deletes the stored answer in the statement that reads it, so two
//!   concurrent unwraps cannot both succeed; past its TTL an answer is refused and removed.
//! - [`Wrapping::lookup`] tells when and where a token was made and for how long, never the
//!   secret; [`Wrapping::rewrap`] moves the answer to a new token, and the old one dies with it.
//!
//! A wrapping token is not a client token: it is not in the token table, so it authenticates
//! nothing but the wrapping endpoints that take it (see `api::gate`). What wrapping hides is only
//! the answer: a wrapped credential keeps its lease, recorded, revocable and reaped as any other.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use lessor_plugin::Secret;
use serde::Serialize;
use serde_json::{json, Value};

use crate::auth::{generate_accessor, generate_token, Auth};
use crate::error::{Error, Result};
use crate::seal::Sealer;
use crate::store::{Store, WrappedResponse, WrappingStore};

/// The shortest wrapping TTL, as in Vault: a shorter one would expire before a client could use it.
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// Vault's words for a token that was never issued, was unwrapped already, or expired; the three
/// are one answer so that the error tells an attacker nothing.
pub const INVALID_TOKEN: &str = "wrapping token is not valid or does not exist";

fn invalid() -> Error {
    Error::invalid(INVALID_TOKEN)
}

/// The sealing context of a stored answer: a sealed answer copied into another row does not open.
fn context(accessor: &str) -> String {
    format!("wrapping/{accessor}")
}

/// Wraps, unwraps, looks up and rewraps answers. Cheap to clone.
#[derive(Clone)]
pub struct Wrapping {
    store: Store,
    sealer: Sealer,
    /// Only for [`Auth::hash_token`]: wrapping tokens are hashed under the install's token key.
    auth: Auth,
    /// The server's longest lease TTL, which caps every wrapping TTL (as Vault caps it at the
    /// system's max TTL).
    max_ttl: Duration,
}

impl std::fmt::Debug for Wrapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wrapping")
            .field("max_ttl", &self.max_ttl)
            .finish_non_exhaustive()
    }
}

/// A new wrapping token and what Vault's `wrap_info` says of it. The token is shown once, in the
/// answer; `Debug` redacts it.
#[derive(Debug)]
pub struct WrapInfo {
    pub token: Secret,
    pub accessor: String,
    pub ttl: Duration,
    pub creation_time: DateTime<Utc>,
    pub creation_path: String,
    /// The accessor of the token inside, when the wrapped answer is a login or a token creation.
    pub wrapped_accessor: Option<String>,
}

impl WrapInfo {
    /// Vault's `wrap_info` object.
    pub fn json(&self) -> Value {
        let mut info = json!({
            "token": self.token.expose(),
            "accessor": self.accessor,
            "ttl": self.ttl.as_secs(),
            "creation_time": self.creation_time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            "creation_path": self.creation_path,
        });
        if let Some(accessor) = &self.wrapped_accessor {
            info["wrapped_accessor"] = json!(accessor);
        }
        info
    }

    /// The whole answer that stands in for the wrapped one: Vault's envelope with no `data`, no
    /// `auth` and no lease, only `wrap_info`.
    pub fn envelope(&self, request_id: &str) -> Value {
        json!({
            "request_id": request_id,
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": null,
            "wrap_info": self.json(),
            "warnings": null,
            "auth": null,
            "mount_type": "",
        })
    }
}

/// What `sys/wrapping/lookup` shows of a wrapping token: never the secret.
#[derive(Debug, Serialize)]
pub struct WrapLookup {
    pub creation_path: String,
    pub creation_time: String,
    /// Seconds.
    pub creation_ttl: u64,
}

/// Whether an answer is one Vault would wrap: it carries `data` or `auth`.
pub fn is_wrappable(answer: &Value) -> bool {
    ["data", "auth"]
        .iter()
        .any(|field| answer.get(field).is_some_and(|v| !v.is_null()))
}

impl Wrapping {
    pub fn new(store: Store, sealer: Sealer, auth: Auth, max_ttl: Duration) -> Self {
        Self {
            store,
            sealer,
            auth,
            max_ttl,
        }
    }

    /// The TTL a wrapping token gets when `requested` is asked for: at least [`MIN_TTL`]
    /// (shorter is refused), at most the server's max TTL (longer is capped).
    pub fn effective_ttl(&self, requested: Duration) -> Result<Duration> {
        if requested < MIN_TTL {
            return Err(Error::invalid(
                "wrap TTL: must be at least 1 second (a shorter one expires before use)",
            ));
        }
        Ok(requested.min(self.max_ttl).max(MIN_TTL))
    }

    /// Stores `answer` (a whole JSON answer) sealed under a new wrapping token that lives `ttl`
    /// (see [`Self::effective_ttl`]); returns the token and its `wrap_info`.
    #[tracing::instrument(skip_all, fields(path = %creation_path), err)]
    pub async fn wrap(
        &self,
        answer: &Value,
        creation_path: &str,
        ttl: Duration,
    ) -> Result<WrapInfo> {
        let ttl = self.effective_ttl(ttl)?;
        // Expired answers go whenever a new one comes, so the table holds little but live ones
        // even without a housekeeping round.
        self.purge_expired().await?;
        let now = Utc::now();
        let info = WrapInfo {
            token: generate_token(),
            accessor: generate_accessor(),
            ttl,
            creation_time: now,
            creation_path: creation_path.to_owned(),
            wrapped_accessor: answer
                .pointer("/auth/accessor")
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        let plaintext =
            Secret::new(serde_json::to_string(answer).map_err(|e| Error::Internal(e.to_string()))?);
        self.store
            .insert_wrapped(&WrappedResponse {
                token_hash: self.auth.hash_token(&info.token),
                accessor: info.accessor.clone(),
                sealed_response: self.sealer.seal(&context(&info.accessor), &plaintext)?,
                creation_path: info.creation_path.clone(),
                created_at: now,
                ttl,
                expires_at: now + chrono_duration(ttl)?,
                wrapped_accessor: info.wrapped_accessor.clone(),
            })
            .await?;
        tracing::info!(accessor = %info.accessor, ttl_secs = ttl.as_secs(), "answer wrapped");
        Ok(info)
    }

    /// The wrapped answer of `token`, removed as it is read: a second unwrap, or one past the
    /// TTL, is refused with [`INVALID_TOKEN`].
    #[tracing::instrument(skip_all, err)]
    pub async fn unwrap(&self, token: &Secret) -> Result<Value> {
        let wrapped = self
            .store
            .take_wrapped(&self.auth.hash_token(token))
            .await?
            .filter(|w| w.expires_at > Utc::now())
            .ok_or_else(invalid)?;
        tracing::info!(accessor = %wrapped.accessor, "answer unwrapped");
        self.open(&wrapped)
    }

    /// When and where `token` was made and its TTL; the token stays usable.
    pub async fn lookup(&self, token: &Secret) -> Result<WrapLookup> {
        let hash = self.auth.hash_token(token);
        let wrapped = self.store.get_wrapped(&hash).await?.ok_or_else(invalid)?;
        if wrapped.expires_at <= Utc::now() {
            self.store.delete_wrapped(&hash).await?;
            return Err(invalid());
        }
        Ok(WrapLookup {
            creation_path: wrapped.creation_path,
            creation_time: wrapped
                .created_at
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
            creation_ttl: wrapped.ttl.as_secs(),
        })
    }

    /// Moves the answer of `token` to a new wrapping token with the same creation path and TTL
    /// (counted from now, capped at the server's max); `token` stops working in the same
    /// transaction.
    #[tracing::instrument(skip_all, err)]
    pub async fn rewrap(&self, token: &Secret) -> Result<WrapInfo> {
        let now = Utc::now();
        let new_token = generate_token();
        let new_hash = self.auth.hash_token(&new_token);
        let new_accessor = generate_accessor();
        let replaced = self
            .store
            .replace_wrapped(&self.auth.hash_token(token), |old| {
                if old.expires_at <= now {
                    return Ok(None);
                }
                let ttl = old.ttl.min(self.max_ttl).max(MIN_TTL);
                let answer = self
                    .sealer
                    .open(&context(&old.accessor), &old.sealed_response)?;
                Ok(Some(WrappedResponse {
                    token_hash: new_hash,
                    accessor: new_accessor.clone(),
                    sealed_response: self.sealer.seal(&context(&new_accessor), &answer)?,
                    creation_path: old.creation_path,
                    created_at: now,
                    ttl,
                    expires_at: now + chrono_duration(ttl)?,
                    wrapped_accessor: old.wrapped_accessor,
                }))
            })
            .await?;
        let Some(new) = replaced else {
            // Unknown, or expired (then gone with the purge).
            self.purge_expired().await?;
            return Err(invalid());
        };
        tracing::info!(accessor = %new.accessor, "answer rewrapped under a new token");
        Ok(WrapInfo {
            token: new_token,
            accessor: new.accessor,
            ttl: new.ttl,
            creation_time: new.created_at,
            creation_path: new.creation_path,
            wrapped_accessor: new.wrapped_accessor,
        })
    }

    /// Deletes the answer of `token` unread: for a wrapped answer that was withheld because the
    /// audit log could not record it. Whether it was still there.
    pub async fn discard(&self, token: &Secret) -> Result<bool> {
        self.store
            .delete_wrapped(&self.auth.hash_token(token))
            .await
    }

    /// Deletes every expired answer; how many. Called on every wrap; housekeeping may call it too.
    pub async fn purge_expired(&self) -> Result<u64> {
        let purged = self.store.purge_expired_wrapped(Utc::now()).await?;
        if purged > 0 {
            tracing::debug!(purged, "expired wrapped answers removed");
        }
        Ok(purged)
    }

    fn open(&self, wrapped: &WrappedResponse) -> Result<Value> {
        let plaintext = self
            .sealer
            .open(&context(&wrapped.accessor), &wrapped.sealed_response)?;
        serde_json::from_str(plaintext.expose())
            .map_err(|_| Error::Internal("a wrapped answer is not JSON".into()))
    }
}

fn chrono_duration(ttl: Duration) -> Result<chrono::Duration> {
    chrono::Duration::from_std(ttl).map_err(|_| Error::invalid("wrap TTL: too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_answers_with_data_or_auth_are_wrapped() {
        assert!(is_wrappable(&json!({"data": {"a": 1}, "auth": null})));
        assert!(is_wrappable(
            &json!({"data": null, "auth": {"client_token": "x"}})
        ));
        assert!(!is_wrappable(&json!({"data": null, "auth": null})));
        assert!(!is_wrappable(&json!({"errors": ["no"]})));
        assert!(!is_wrappable(&Value::Null));
    }

    #[test]
    fn wrap_info_redacts_its_token_in_debug_and_omits_an_absent_wrapped_accessor() {
        let info = WrapInfo {
            token: Secret::new("hvs.secret-wrapping-token"),
            accessor: "acc".into(),
            ttl: Duration::from_secs(60),
            creation_time: Utc::now(),
            creation_path: "database/creds/app".into(),
            wrapped_accessor: None,
        };
        assert!(!format!("{info:?}").contains("secret-wrapping-token"));
        let envelope = info.envelope("req");
        assert_eq!(envelope["data"], Value::Null);
        assert_eq!(envelope["wrap_info"]["ttl"], 60);
        assert!(envelope["wrap_info"].get("wrapped_accessor").is_none());
    }
}
