//! Periodic tidying of what identity and auditing accumulate: dead tokens (expired ones, every JWT
//! login leaves one, and tokens whose parent is gone) with their whole subtrees, source addresses
//! older than the new-address rule can use, and old alerts. Runs on the shared runtime and stops
//! with the server's cancellation token.
//!
//! Before dead tokens are deleted, their accessors go to a [`TokenLeaseRevoker`], so the leases
//! those tokens obtained end with them (as in Vault); if that fails, the tokens stay (they no
//! longer authenticate) and the next round tries again, so no accessor is forgotten.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::anomaly::Monitor;
use crate::store::{AuditStore, IdentityStore, ReplicaStore, Store};

/// How often to tidy.
const INTERVAL: Duration = Duration::from_secs(600);
/// How long alerts are kept for `sys/alerts`.
const ALERT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// Revokes the leases obtained by tokens that are being removed. The lease manager implements it
/// (`LeaseManager::revoke_by_token_accessors`); housekeeping knows nothing of leases.
#[async_trait]
pub trait TokenLeaseRevoker: Send + Sync {
    /// Revokes (or schedules the revocation of) every lease obtained by a token with one of
    /// `accessors`. An error keeps the tokens for the next round.
    async fn revoke_leases_of_tokens(&self, accessors: &[String]) -> crate::Result<()>;
}

/// For callers with no leases to revoke (and the tests of tidying alone).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLeases;

#[async_trait]
impl TokenLeaseRevoker for NoLeases {
    async fn revoke_leases_of_tokens(&self, _accessors: &[String]) -> crate::Result<()> {
        Ok(())
    }
}

/// Tidies once now and then every [`INTERVAL`] until `cancel` fires, without revoking leases of
/// removed tokens. Prefer [`run_with`].
pub async fn run(store: Store, monitor: Monitor, cancel: CancellationToken) {
    run_with(store, monitor, Arc::new(NoLeases), cancel).await
}

/// Tidies once now and then every [`INTERVAL`] until `cancel` fires; the leases of removed tokens
/// go to `leases`.
pub async fn run_with(
    store: Store,
    monitor: Monitor,
    leases: Arc<dyn TokenLeaseRevoker>,
    cancel: CancellationToken,
) {
    loop {
        tidy_with(&store, &monitor, leases.as_ref()).await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
}

/// One round of tidying without lease revocation; returns the accessors of the tokens removed.
pub async fn tidy(store: &Store, monitor: &Monitor) -> Vec<String> {
    tidy_with(store, monitor, &NoLeases).await
}

/// One round of tidying; failures are logged and retried next round. Returns the accessors of the
/// tokens removed (after their leases were handed to `leases`).
pub async fn tidy_with(
    store: &Store,
    monitor: &Monitor,
    leases: &dyn TokenLeaseRevoker,
) -> Vec<String> {
    let now = Utc::now();
    let ago = |d: Duration| now - chrono::Duration::from_std(d).unwrap_or_default();
    let removed = match remove_dead_tokens(store, leases, now).await {
        Ok(removed) => removed,
        Err(e) => {
            tracing::warn!(error = %e, "removing expired tokens failed; will retry");
            vec![]
        }
    };
    // Addresses are kept a little past the lookback so a rule change that lengthens it still
    // finds recent history.
    let lookback = monitor
        .rules()
        .new_address
        .lookback
        .max(Duration::from_secs(30 * 24 * 3600));
    let rules = monitor.rules();
    let longest_window = rules.burst.window.max(rules.denials.window);
    let outcome: crate::Result<(u64, u64)> = async {
        let addresses = store.forget_source_addresses(ago(lookback)).await?;
        let alerts = store.delete_alerts_before(ago(ALERT_RETENTION)).await?;
        // Events older than the longest window count for nothing.
        store.forget_anomaly_events(ago(longest_window)).await?;
        Ok((addresses, alerts))
    }
    .await;
    match outcome {
        Ok((addresses, alerts)) if removed.is_empty() && addresses == 0 && alerts == 0 => {}
        Ok((addresses, alerts)) => {
            tracing::debug!(
                tokens = removed.len(),
                addresses,
                alerts,
                "tidied expired tokens, old addresses and alerts"
            )
        }
        Err(e) => tracing::warn!(error = %e, "tidying addresses and alerts failed; will retry"),
    }
    removed
}

/// Finds dead token subtrees, hands their accessors to `leases`, then deletes them.
async fn remove_dead_tokens(
    store: &Store,
    leases: &dyn TokenLeaseRevoker,
    now: chrono::DateTime<Utc>,
) -> crate::Result<Vec<String>> {
    let dead = store.dead_token_trees(now).await?;
    if dead.is_empty() {
        return Ok(dead);
    }
    leases.revoke_leases_of_tokens(&dead).await?;
    store.delete_tokens(&dead).await?;
    Ok(dead)
}
