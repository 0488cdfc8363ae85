//! The lease manager: issuing dynamic credentials and renewing, looking up and revoking their leases.
//!
//! Issuing is crash-safe by construction: the lease row is written *before* the user is created, so
//! whatever happens next (an error, a crash, a lost response) the reaper will find the row at expiry
//! and drop the user, which is idempotent. The password is returned once and never stored.

pub mod reaper;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use lessor_plugin::credentials::DEFAULT_PASSWORD_LEN;
use lessor_plugin::{generate_password, NewUser, Secret, UsernameContext, UsernameTemplate};
use rand::Rng;
use serde::Serialize;
use tokio::sync::Notify;

use crate::catalog::{check_name, decode_list, encode, Catalog};
use crate::engines::Engines;
use crate::error::{Error, Result};
use crate::store::{from_millis, to_millis, LeaseRow, LeaseState, Store};

/// Revocations run at most this many at a time for bulk operations, so a revoke-prefix of
/// thousands of leases does not exhaust a target's connection limit.
const BULK_REVOCATION_CONCURRENCY: usize = 8;

/// After this many failed attempts a revocation is flagged at ERROR level (it is still retried).
pub const FLAG_AFTER_ATTEMPTS: i64 = 10;

/// Longest wait between two attempts to revoke the same lease.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// Where a test build can make issuing stop as if the process had crashed.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// After the lease row is written, before the user is created.
    AfterLeaseWrite,
    /// After the user is created, before the credentials are returned.
    AfterUserCreated,
}

/// The credentials handed out once to the caller.
#[derive(Debug)]
pub struct IssuedCredentials {
    pub lease_id: String,
    pub username: String,
    pub password: Secret,
    pub lease_duration: Duration,
}

/// A lease as `sys/leases/lookup` shows it.
#[derive(Debug, Serialize)]
pub struct LeaseInfo {
    pub id: String,
    pub issue_time: DateTime<Utc>,
    pub expire_time: Option<DateTime<Utc>>,
    pub last_renewal: Option<DateTime<Utc>>,
    pub renewable: bool,
    pub ttl: i64,
    pub state: &'static str,
    pub role: String,
    pub username: String,
    pub revocation_attempts: i64,
    pub last_error: Option<String>,
}

/// The outcome of a renewal.
#[derive(Debug)]
pub struct Renewed {
    pub lease_id: String,
    pub lease_duration: Duration,
    pub warnings: Vec<String>,
}

/// Who asked: recorded on the lease as its owner.
#[derive(Debug, Clone)]
pub struct Requester {
    pub accessor: String,
    pub display_name: String,
}

/// Issues, renews and revokes leases.
#[derive(Clone)]
pub struct LeaseManager {
    store: Store,
    engines: Engines,
    catalog: Catalog,
    /// Wakes the reaper when a lease with an earlier deadline than it is sleeping towards appears.
    reaper_wake: Arc<Notify>,
    #[cfg(feature = "fault-injection")]
    fault: Arc<std::sync::Mutex<Option<FaultPoint>>>,
}

/// Checks a lease id or prefix from a request: `database/creds/<role>/<random>` characters only.
pub fn check_lease_path(field: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 256 || value.contains("..") {
        return Err(Error::invalid(format!(
            "{field}: must be 1 to 256 characters without '..'"
        )));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
    {
        return Err(Error::invalid(format!(
            "{field}: only letters, digits, '_', '-', '.' and '/' are allowed"
        )));
    }
    Ok(())
}

/// Delay before retry number `attempts` (1-based): doubling from 1 s, capped at 5 minutes, with
/// ±20 % jitter so that many leases failing together do not retry in lockstep.
pub fn retry_delay(attempts: i64) -> Duration {
    let exponent = attempts.clamp(1, 20) as u32 - 1;
    let base = Duration::from_secs(1).saturating_mul(2u32.saturating_pow(exponent));
    let capped = base.min(MAX_RETRY_DELAY);
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    capped.mul_f64(jitter)
}

fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

impl LeaseManager {
    pub fn new(store: Store, engines: Engines, catalog: Catalog) -> Self {
        Self {
            store,
            engines,
            catalog,
            reaper_wake: Arc::new(Notify::new()),
            #[cfg(feature = "fault-injection")]
            fault: Arc::default(),
        }
    }

    /// The reaper's wake-up signal.
    pub fn reaper_wake(&self) -> Arc<Notify> {
        self.reaper_wake.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Arms a fault for the next issuance (test builds only).
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&self, point: Option<FaultPoint>) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = point;
    }

    #[cfg(feature = "fault-injection")]
    fn take_fault(&self, point: FaultPoint) -> Result<()> {
        let mut armed = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        if *armed == Some(point) {
            *armed = None;
            return Err(Error::Internal(format!("injected fault at {point:?}")));
        }
        Ok(())
    }

    /// Issues a credential for `role_name`: writes the lease, creates the user, returns the login.
    #[tracing::instrument(skip_all, fields(role = %role_name, lease_id), err)]
    pub async fn issue(&self, role_name: &str, requester: &Requester) -> Result<IssuedCredentials> {
        check_name("role name", role_name)?;
        let role = self.catalog.role(role_name).await?;
        self.catalog.check_allowed(&role.db_name, role_name).await?;
        let plugin = self.engines.get(&role.db_name).await?;

        let limits = self.catalog.limits();
        let max_ttl = if role.max_ttl.is_zero() {
            limits.max_ttl
        } else {
            role.max_ttl.min(limits.max_ttl)
        };
        let default_ttl = if role.default_ttl.is_zero() {
            limits.default_ttl
        } else {
            role.default_ttl
        };
        let ttl = default_ttl.min(max_ttl);

        let template = UsernameTemplate::parse(
            role.username_template
                .as_deref()
                .unwrap_or(lessor_plugin::credentials::DEFAULT_USERNAME_TEMPLATE),
        )
        .map_err(|e| Error::Internal(format!("stored username template is invalid: {e}")))?;
        let username = template
            .generate(
                plugin.max_username_len(),
                UsernameContext {
                    role: role_name,
                    display_name: &requester.display_name,
                },
            )
            .map_err(|e| Error::invalid(e.to_string()))?;
        let password = generate_password(DEFAULT_PASSWORD_LEN);

        let now = Utc::now();
        let expires_at =
            now + chrono::Duration::from_std(ttl).map_err(|e| Error::Internal(e.to_string()))?;
        let max_expires_at = now
            + chrono::Duration::from_std(max_ttl).map_err(|e| Error::Internal(e.to_string()))?;
        let lease_id = format!("database/creds/{role_name}/{}", random_suffix(24));
        tracing::Span::current().record("lease_id", lease_id.as_str());

        let lease = LeaseRow {
            id: lease_id.clone(),
            role_name: role_name.to_owned(),
            connection_name: role.db_name.clone(),
            username: username.clone(),
            revocation_statements: encode(&role.revocation_statements),
            rollback_statements: encode(&role.rollback_statements),
            renew_statements: encode(&role.renew_statements),
            issued_at: to_millis(now),
            last_renewed_at: None,
            expires_at: to_millis(expires_at),
            max_expires_at: to_millis(max_expires_at),
            state: LeaseState::Active,
            next_action_at: to_millis(expires_at),
            attempts: 0,
            last_error: None,
            revoked_at: None,
            owner: requester.accessor.clone(),
        };
        // The durable write comes first: from here on, the reaper owns this user's fate.
        self.store.insert_lease(&lease).await?;
        self.reaper_wake.notify_one();

        #[cfg(feature = "fault-injection")]
        self.take_fault(FaultPoint::AfterLeaseWrite)?;

        let created = plugin
            .create_user(&NewUser {
                username: &username,
                password: &password,
                expiration: expires_at,
                statements: &role.creation_statements,
                options: &role.options,
            })
            .await;
        if let Err(create_error) = created {
            self.roll_back(&lease).await;
            return Err(Error::database(
                format!("cannot create a user for role {role_name}"),
                create_error,
            ));
        }

        #[cfg(feature = "fault-injection")]
        self.take_fault(FaultPoint::AfterUserCreated)?;

        tracing::info!(username = %username, ttl_secs = ttl.as_secs(), "issued credential");
        crate::metrics::lease_issued();
        Ok(IssuedCredentials {
            lease_id,
            username,
            password,
            lease_duration: ttl,
        })
    }

    /// Undoes a failed creation: drops whatever part of the user exists and marks the lease
    /// revoked; if the drop fails too, the lease stays for the reaper to retry.
    async fn roll_back(&self, lease: &LeaseRow) {
        let statements = decode_list("rollback_statements", &lease.rollback_statements)
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| decode_list("revocation_statements", &lease.revocation_statements).ok())
            .unwrap_or_default();
        let outcome = match self.engines.get(&lease.connection_name).await {
            Ok(plugin) => plugin
                .revoke_user(&lease.username, &statements)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let now = Utc::now();
        let recorded = match outcome {
            Ok(()) => self
                .store
                .mark_revoked(
                    &lease.id,
                    to_millis(now),
                    Some("creation failed; rolled back"),
                )
                .await
                .map(|_| ()),
            Err(error) => {
                tracing::warn!(lease_id = %lease.id, %error, "rollback after failed creation failed; the reaper will retry");
                self.store
                    .record_revocation_failure(&lease.id, &error, to_millis(now + retry_delay(1)))
                    .await
                    .map(|_| ())
            }
        };
        if let Err(e) = recorded {
            tracing::error!(lease_id = %lease.id, error = %e, "cannot record rollback; the lease stays due at its expiry");
        }
        self.reaper_wake.notify_one();
    }

    async fn lease(&self, lease_id: &str) -> Result<LeaseRow> {
        check_lease_path("lease_id", lease_id)?;
        self.store
            .get_lease(lease_id)
            .await?
            .ok_or_else(|| Error::not_found("lease", lease_id))
    }

    pub async fn lookup(&self, lease_id: &str) -> Result<LeaseInfo> {
        let lease = self.lease(lease_id).await?;
        let now = Utc::now();
        let live = lease.state != LeaseState::Revoked;
        let expire = from_millis(lease.expires_at);
        Ok(LeaseInfo {
            issue_time: from_millis(lease.issued_at),
            expire_time: live.then_some(expire),
            last_renewal: lease.last_renewed_at.map(from_millis),
            renewable: lease.state == LeaseState::Active && lease.max_expires_at > to_millis(now),
            ttl: if live {
                (expire - now).num_seconds().max(0)
            } else {
                0
            },
            state: lease.state.as_str(),
            role: lease.role_name,
            username: lease.username,
            revocation_attempts: lease.attempts,
            last_error: lease.last_error,
            id: lease.id,
        })
    }

    /// The next path segment of every live lease under `prefix`, Vault's `LIST sys/leases/lookup`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = prefix.trim_start_matches('/');
        if !prefix.is_empty() {
            check_lease_path("prefix", prefix)?;
        }
        let mut normalized = prefix.to_owned();
        if !normalized.is_empty() && !normalized.ends_with('/') {
            normalized.push('/');
        }
        let ids = self
            .store
            .live_lease_ids_with_prefix(&normalized, 100_000)
            .await?;
        let mut keys: Vec<String> = ids
            .iter()
            .filter_map(|id| id.strip_prefix(&normalized))
            .map(|rest| match rest.find('/') {
                Some(slash) => rest[..=slash].to_owned(),
                None => rest.to_owned(),
            })
            .collect();
        keys.dedup();
        Ok(keys)
    }

    /// Renews a lease by `increment` (or the role's default TTL), never past its max TTL.
    #[tracing::instrument(skip_all, fields(lease_id = %lease_id), err)]
    pub async fn renew(&self, lease_id: &str, increment: Option<Duration>) -> Result<Renewed> {
        let lease = self.lease(lease_id).await?;
        if lease.state != LeaseState::Active {
            return Err(Error::invalid(format!(
                "lease {lease_id} is {} and cannot be renewed",
                lease.state.as_str()
            )));
        }
        let now = Utc::now();
        let now_ms = to_millis(now);
        if lease.expires_at <= now_ms {
            return Err(Error::invalid(format!(
                "lease {lease_id} has expired and cannot be renewed"
            )));
        }
        if lease.max_expires_at <= now_ms {
            return Err(Error::invalid(format!(
                "lease {lease_id} has reached its max_ttl and cannot be renewed"
            )));
        }
        let requested = match increment.filter(|d| !d.is_zero()) {
            Some(d) => d,
            None => match self.catalog.role(&lease.role_name).await {
                Ok(role) if !role.default_ttl.is_zero() => role.default_ttl,
                _ => self.catalog.limits().default_ttl,
            },
        };
        let wanted = now_ms.saturating_add(requested.as_millis().min(i64::MAX as u128) as i64);
        let new_expires = wanted.min(lease.max_expires_at);
        let mut warnings = Vec::new();
        if new_expires < wanted {
            let allowed = (new_expires - now_ms) / 1000;
            warnings.push(format!(
                "TTL of {}s exceeded the effective max_ttl of the lease; TTL value is capped at {allowed}s",
                requested.as_secs()
            ));
        }
        let plugin = self.engines.get(&lease.connection_name).await?;
        let statements = decode_list("renew_statements", &lease.renew_statements)?;
        plugin
            .renew_user(&lease.username, from_millis(new_expires), &statements)
            .await
            .map_err(|e| Error::database(format!("cannot renew lease {lease_id}"), e))?;
        if !self
            .store
            .renew_lease(lease_id, new_expires, now_ms)
            .await?
        {
            return Err(Error::Conflict(format!(
                "lease {lease_id} was revoked while it was being renewed"
            )));
        }
        self.reaper_wake.notify_one();
        crate::metrics::lease_renewed();
        Ok(Renewed {
            lease_id: lease_id.to_owned(),
            lease_duration: Duration::from_millis((new_expires - now_ms).max(0) as u64),
            warnings,
        })
    }

    /// Revokes one lease now. Revoking a lease that is already revoked succeeds.
    #[tracing::instrument(skip_all, fields(lease_id = %lease_id), err)]
    pub async fn revoke(&self, lease_id: &str) -> Result<()> {
        let lease = self.lease(lease_id).await?;
        self.revoke_lease(lease, false).await
    }

    /// Revokes a loaded lease. With `force`, a failed drop still marks the lease revoked (the
    /// operator's explicit choice, recorded in `last_error`).
    pub(crate) async fn revoke_lease(&self, lease: LeaseRow, force: bool) -> Result<()> {
        if lease.state == LeaseState::Revoked {
            return Ok(());
        }
        let now = Utc::now();
        // Should this process die mid-revocation, the reaper picks the lease up again shortly.
        if !self
            .store
            .mark_revoking(&lease.id, to_millis(now + retry_delay(1)))
            .await?
        {
            return Ok(());
        }
        let outcome = async {
            let statements = decode_list("revocation_statements", &lease.revocation_statements)?;
            let plugin = self.engines.get(&lease.connection_name).await?;
            plugin
                .revoke_user(&lease.username, &statements)
                .await
                .map_err(|e| Error::database(format!("cannot revoke lease {}", lease.id), e))
        }
        .await;
        match outcome {
            Ok(()) => {
                self.store
                    .mark_revoked(&lease.id, to_millis(Utc::now()), None)
                    .await?;
                tracing::info!(lease_id = %lease.id, username = %lease.username, "revoked");
                crate::metrics::lease_revoked();
                Ok(())
            }
            Err(error) if force => {
                let note = format!("force-revoked; the database user may remain: {error}");
                self.store
                    .mark_revoked(&lease.id, to_millis(Utc::now()), Some(&note))
                    .await?;
                tracing::warn!(lease_id = %lease.id, username = %lease.username, %error, "force-revoked despite failure");
                crate::metrics::lease_revoked();
                Ok(())
            }
            Err(error) => {
                let attempts = self
                    .store
                    .record_revocation_failure(
                        &lease.id,
                        &error.to_string(),
                        to_millis(Utc::now() + retry_delay(lease.attempts + 1)),
                    )
                    .await?;
                crate::metrics::revocation_failed();
                if attempts >= FLAG_AFTER_ATTEMPTS {
                    tracing::error!(lease_id = %lease.id, attempts, %error, "revocation keeps failing; still retrying");
                } else {
                    tracing::warn!(lease_id = %lease.id, attempts, %error, "revocation failed; will retry");
                }
                self.reaper_wake.notify_one();
                Err(error)
            }
        }
    }

    /// Revokes every live lease whose id starts with `prefix`. Returns how many were revoked;
    /// without `force`, any failure makes the whole call fail (the failed leases stay for retry).
    #[tracing::instrument(skip_all, fields(prefix = %prefix, force), err)]
    pub async fn revoke_prefix(&self, prefix: &str, force: bool) -> Result<usize> {
        check_lease_path("prefix", prefix)?;
        let mut revoked = 0;
        let mut failed = 0;
        let mut first_error = None;
        // Leases whose revocation failed stay live (kept for the reaper); skip them on later rounds.
        let mut after_failures: std::collections::HashSet<String> = Default::default();
        loop {
            let leases: Vec<LeaseRow> = self
                .store
                .live_leases_with_prefix(prefix, 500 + after_failures.len() as i64)
                .await?
                .into_iter()
                .filter(|lease| !after_failures.contains(&lease.id))
                .collect();
            if leases.is_empty() {
                break;
            }
            let results: Vec<(String, Result<()>)> =
                futures::stream::iter(leases)
                    .map(|lease| async move {
                        (lease.id.clone(), self.revoke_lease(lease, force).await)
                    })
                    .buffer_unordered(BULK_REVOCATION_CONCURRENCY)
                    .collect()
                    .await;
            for (id, outcome) in results {
                match outcome {
                    Ok(()) => revoked += 1,
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert(e);
                        after_failures.insert(id);
                    }
                }
            }
        }
        match first_error {
            Some(error) => Err(Error::Conflict(format!(
                "{failed} of {} leases under {prefix} could not be revoked and will be retried; first error: {error}",
                revoked + failed
            ))),
            None => Ok(revoked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        for _ in 0..50 {
            let first = retry_delay(1);
            assert!(
                first >= Duration::from_millis(800) && first <= Duration::from_millis(1200),
                "{first:?}"
            );
            let fourth = retry_delay(4);
            assert!(
                fourth >= Duration::from_millis(6400) && fourth <= Duration::from_millis(9600),
                "{fourth:?}"
            );
            assert!(retry_delay(60) <= MAX_RETRY_DELAY.mul_f64(1.2));
        }
    }

    #[test]
    fn lease_paths_reject_traversal_and_metacharacters() {
        check_lease_path("lease_id", "database/creds/app/AbC123").unwrap();
        for bad in ["", "database/../x", "a;b", "a b", "ü", "a'b"] {
            assert!(check_lease_path("lease_id", bad).is_err(), "{bad:?}");
        }
    }
}
