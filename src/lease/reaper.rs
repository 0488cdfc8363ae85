//! The reaper: the background task that revokes expired leases and retries failed revocations.
//!
//! It keeps no lease table in memory. Each pass asks the store for what is due (in batches, through
//! the `leases_due` index), revokes it with bounded concurrency, then sleeps until the next due time
//! or until woken because a lease with an earlier deadline appeared (`select!` on a deadline, a
//! `Notify` and the shutdown token). Start-up cost does not grow with the number of leases.

use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::LeaseManager;
use crate::store::{to_millis, LeaseState};

/// How many due leases one pass takes from the store.
const BATCH: i64 = 64;
/// Concurrent revocations within a pass.
const CONCURRENCY: usize = 8;
/// The longest the reaper sleeps without looking, a safety net for missed wake-ups.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// How long revoked leases stay as tombstones for lookups and audit.
const TOMBSTONE_RETENTION: chrono::Duration = chrono::Duration::hours(24);
/// Pause after the store itself failed, so a broken store does not spin the CPU.
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Runs until `shutdown` is cancelled. A revocation in flight at shutdown finishes first (its lease
/// is `revoking` in the store, so a crash instead would only delay it).
pub async fn run(leases: LeaseManager, shutdown: CancellationToken) {
    let wake = leases.reaper_wake();
    tracing::info!("reaper started");
    let mut last_tidy = Instant::now() - Duration::from_secs(3600);
    loop {
        let sleep_for = match reap_due(&leases).await {
            Ok(true) => continue, // a full batch: more may be due right now
            Ok(false) => next_sleep(&leases).await,
            Err(error) => {
                tracing::error!(%error, "reaper cannot read the lease store");
                STORE_ERROR_PAUSE
            }
        };
        if last_tidy.elapsed() > Duration::from_secs(600) {
            last_tidy = Instant::now();
            let before = to_millis(Utc::now() - TOMBSTONE_RETENTION);
            match leases.store().tidy_revoked(before, 1000).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "tidied revoked lease tombstones"),
                Err(error) => tracing::warn!(%error, "cannot tidy revoked leases"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {}
            _ = wake.notified() => {}
            _ = shutdown.cancelled() => break,
        }
    }
    tracing::info!("reaper stopped");
}

/// Revokes one batch of due leases. Returns whether the batch was full.
async fn reap_due(leases: &LeaseManager) -> crate::error::Result<bool> {
    let due = leases
        .store()
        .due_leases(to_millis(Utc::now()), BATCH)
        .await?;
    let full = due.len() as i64 == BATCH;
    futures::stream::iter(due)
        .for_each_concurrent(CONCURRENCY, |lease| async move {
            let id = lease.id.clone();
            let expired = lease.state == LeaseState::Active;
            // revoke_lease records failures and schedules the retry itself.
            if leases.revoke_lease(lease, false).await.is_ok() && expired {
                tracing::info!(lease_id = %id, "expired lease revoked");
            }
        })
        .await;
    Ok(full)
}

/// Time until the next lease falls due, at most [`MAX_SLEEP`].
async fn next_sleep(leases: &LeaseManager) -> Duration {
    match leases.store().next_due_at().await {
        Ok(Some(at)) => {
            let wait = at - to_millis(Utc::now());
            Duration::from_millis(wait.max(0) as u64).min(MAX_SLEEP)
        }
        Ok(None) => MAX_SLEEP,
        Err(error) => {
            tracing::error!(%error, "reaper cannot read the next due time");
            STORE_ERROR_PAUSE
        }
    }
}
