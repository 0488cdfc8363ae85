//! The rotator: the background task that rotates static roles when they fall due.
//!
//! At start it resolves every rotation a crash left pending (static roles and admin passwords), then
//! loops: rotate what is due (rotations missed while Lessor was down are due at once), sleep until
//! the earliest `next_rotation_at` or until woken by a write that moved one earlier, or stop when
//! cancelled. Each due role is first *claimed* in the store (its `next_rotation_at` moved past the
//! rotation's timeout), so a second replica or the next pass never starts the same rotation; a
//! failing or hanging role only delays itself, never the others.
//!
//! Every rotation runs as a task tracked by the [`Rotator`], not inside this loop's future or a
//! request's: stopping the loop (shutdown) or giving up waiting on a slow rotation stops the
//! waiting, never the rotation, and shutdown waits for the tasks
//! ([`Rotator::wait_for_rotations`]). A pending password whatever interrupted its rotation is
//! found again soon: a static role falls due at `pending + claim_length()` at the latest (set with
//! the pending value), and each pass settles admin passwords pending for longer than
//! [`ROOT_PENDING_GRACE`].

use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::static_roles::ROTATION_TIMEOUT;
use super::{Outcome, Rotator};
use crate::store::{to_millis, StoreKind};

/// Roles looked at per pass.
const BATCH: i64 = 64;
/// Rotations run at most this many at a time.
const CONCURRENCY: usize = 4;
/// The longest the rotator sleeps without looking, a safety net for missed wake-ups.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// Pause after the store itself failed, so a broken store does not spin the CPU.
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// An admin password pending for longer than this, with no rotation of its connection running
/// here, was left by an interrupted or failed `rotate-root` and is settled by the next pass.
const ROOT_PENDING_GRACE: Duration = Duration::from_secs(30);

/// How far a claim pushes a role's next look: past the rotation timeout, so a rotation still
/// running is never started twice, and short enough that one lost to a crash is retried soon.
pub(super) fn claim_length() -> chrono::Duration {
    chrono::Duration::from_std(ROTATION_TIMEOUT + Duration::from_secs(30))
        .unwrap_or_else(|_| chrono::Duration::seconds(90))
}

/// Runs until `shutdown` is cancelled.
pub async fn run(rotator: Rotator, shutdown: CancellationToken) {
    tracing::info!("rotator started");
    tokio::select! {
        _ = recover(&rotator) => {}
        _ = shutdown.cancelled() => {
            tracing::info!("rotator stopped during recovery");
            return;
        }
    }
    let wake = rotator.wake();
    loop {
        settle_interrupted_roots(&rotator).await;
        let sleep_for = match rotate_due(&rotator).await {
            Ok(true) => continue,
            // On a shared store another replica may die mid-rotation with nothing due here to
            // announce it: look again within the stale limit.
            Ok(false) => match rotator.store().kind() {
                StoreKind::Postgres => next_sleep(&rotator)
                    .await
                    .min(crate::replica::STALE_AFTER / 2),
                StoreKind::Sqlite => next_sleep(&rotator).await,
            },
            Err(error) => {
                tracing::error!(%error, "rotator cannot read the store");
                STORE_ERROR_PAUSE
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {}
            _ = wake.notified() => {}
            _ = shutdown.cancelled() => break,
        }
    }
    tracing::info!("rotator stopped");
}

/// Resolves rotations left pending by a crash: promoted if the new password logs in, otherwise set
/// again (or, where the database provably never took it, replaced by a fresh rotation).
pub async fn recover(rotator: &Rotator) {
    let now = Utc::now();
    let claim = rotator.replica().claim_until(now, now + claim_length());
    match rotator.store().static_roles_with_pending(&claim).await {
        Ok(names) => {
            for name in names {
                // Claimed first, so no other replica resolves the same rotation meanwhile.
                match rotator.store().claim_static_role(&name, &claim).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(error) => {
                        tracing::error!(static_role = %name, %error, "cannot claim an interrupted rotation");
                        continue;
                    }
                }
                match rotator
                    .recover_static_role(&name, to_millis(claim.until()))
                    .await
                {
                    Ok(outcome) => {
                        tracing::info!(static_role = %name, ?outcome, "interrupted rotation resolved")
                    }
                    Err(error) => {
                        tracing::warn!(static_role = %name, %error, "interrupted rotation not resolved yet; retrying with backoff")
                    }
                }
            }
        }
        Err(error) => tracing::error!(%error, "cannot list static roles with a pending rotation"),
    }
    // On a shared store a pending admin password may be another replica's rotation in flight:
    // only those pending for longer than the grace are left over from a crash. An embedded
    // store's pending rotations all are.
    let cutoff = match rotator.store().kind() {
        StoreKind::Sqlite => to_millis(Utc::now()) + 1,
        StoreKind::Postgres => to_millis(
            Utc::now() - chrono::Duration::from_std(ROOT_PENDING_GRACE).unwrap_or_default(),
        ),
    };
    match rotator
        .store()
        .connections_with_root_pending_before(cutoff)
        .await
    {
        Ok(names) => {
            for name in names {
                if let Err(error) = rotator.recover_root(&name).await {
                    tracing::error!(connection = %name, %error, "interrupted admin password rotation not resolved; rotate-root retries it");
                }
            }
        }
        Err(error) => {
            tracing::error!(%error, "cannot list connections with a pending admin rotation")
        }
    }
}

/// Rotates one batch of due roles. Returns whether the batch was full.
async fn rotate_due(rotator: &Rotator) -> crate::error::Result<bool> {
    let now = Utc::now();
    let claim = rotator.replica().claim_until(now, now + claim_length());
    let due = rotator.store().due_static_roles(&claim, BATCH).await?;
    let full = due.len() as i64 == BATCH;
    let claim_until = to_millis(claim.until());
    let claim = &claim;
    futures::stream::iter(due)
        .for_each_concurrent(CONCURRENCY, |name| async move {
            match rotator.store().claim_static_role(&name, claim).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(error) => {
                    tracing::error!(static_role = %name, %error, "cannot claim a due static role");
                    return;
                }
            }
            // The timeout ends this pass's wait, not the rotation: it runs in its own task and
            // records its outcome, so one slow database does not hold a slot of this loop.
            match tokio::time::timeout(ROTATION_TIMEOUT, rotator.rotate_claimed(&name, claim_until)).await {
                Ok(Ok(Outcome::Rotated { .. } | Outcome::Skipped | Outcome::NotDue)) => {}
                // Failures are recorded (history, retry time) where they happen.
                Ok(Err(_)) => {}
                Err(_) => tracing::warn!(
                    static_role = %name,
                    "rotation still running after {ROTATION_TIMEOUT:?}; the rotator moves on and the rotation records its own outcome"
                ),
            }
        })
        .await;
    Ok(full)
}

/// Settles admin passwords left pending by an interrupted or failed `rotate-root`: promoted if
/// the database took them, dropped if it provably did not, set again otherwise.
async fn settle_interrupted_roots(rotator: &Rotator) {
    let cutoff = Utc::now()
        - chrono::Duration::from_std(ROOT_PENDING_GRACE)
            .unwrap_or_else(|_| chrono::Duration::zero());
    let names = match rotator
        .store()
        .connections_with_root_pending_before(to_millis(cutoff))
        .await
    {
        Ok(names) => names,
        Err(error) => {
            tracing::error!(%error, "cannot list connections with a pending admin rotation");
            return;
        }
    };
    futures::stream::iter(names)
        .for_each_concurrent(CONCURRENCY, |name| async move {
            match tokio::time::timeout(ROTATION_TIMEOUT, rotator.recover_root(&name)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(
                    connection = %name,
                    %error,
                    "pending admin password not settled yet; the rotator tries again"
                ),
                Err(_) => tracing::warn!(
                    connection = %name,
                    "settling a pending admin password is still running; the rotator moves on"
                ),
            }
        })
        .await;
}

/// Time until the next role falls due, at most [`MAX_SLEEP`].
async fn next_sleep(rotator: &Rotator) -> Duration {
    match rotator.store().next_static_rotation_at().await {
        Ok(Some(at)) => {
            Duration::from_millis((at - to_millis(Utc::now())).max(0) as u64).min(MAX_SLEEP)
        }
        Ok(None) => MAX_SLEEP,
        Err(error) => {
            tracing::error!(%error, "rotator cannot read the next due time");
            STORE_ERROR_PAUSE
        }
    }
}
