//! The reaper: the background task that revokes expired leases and retries failed revocations.
//!
//! It keeps no lease table in memory. Each pass asks the store for what is due (in batches, through
//! the `leases_due` index) and hands each lease to its own task, with at most
//! [`PER_CONNECTION`] revocations running at a time on any one connection: a database that hangs
//! holds up only its own leases, never the expiry of users on other databases. Then it sleeps until
//! the next due time or until woken, because a lease with an earlier deadline appeared or a
//! revocation finished (`select!` on a deadline, a `Notify` and the shutdown token). Start-up cost
//! does not grow with the number of leases.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::LeaseManager;
use crate::store::{to_millis, LeaseState};

/// How many due leases one pass takes from the store (beyond those already being revoked).
const BATCH: i64 = 64;
/// Concurrent revocations on one connection, so the reaper cannot exhaust a target's connections.
pub const PER_CONNECTION: usize = 4;
/// Revocations handed out and not yet finished, across connections; past this the reaper waits.
const MAX_IN_FLIGHT: usize = 1024;
/// The longest the reaper sleeps without looking, a safety net for missed wake-ups.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// How long revoked leases stay as tombstones for lookups and audit.
const TOMBSTONE_RETENTION: chrono::Duration = chrono::Duration::hours(24);
/// Pause after the store itself failed, so a broken store does not spin the CPU.
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The reaper's bookkeeping of revocations it has handed out.
struct Reaper {
    leases: LeaseManager,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    /// Ids of leases handed to a task and not finished, so a later pass does not hand them out
    /// twice while they wait for their connection's turn or for a slow database.
    in_flight: Arc<Mutex<HashSet<String>>>,
    /// One semaphore per connection name.
    per_connection: Mutex<HashMap<String, Arc<Semaphore>>>,
    tasks: TaskTracker,
}

/// Locks a mutex, recovering the data if a task panicked while holding it (the sets stay valid).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs until `shutdown` is cancelled. Revocations in flight at shutdown finish first (their leases
/// are `revoking` in the store, so a crash instead would only delay them); queued ones are dropped
/// and picked up again at the next start.
pub async fn run(leases: LeaseManager, shutdown: CancellationToken) {
    let reaper = Reaper {
        wake: leases.reaper_wake(),
        leases,
        shutdown: shutdown.clone(),
        in_flight: Arc::default(),
        per_connection: Mutex::default(),
        tasks: TaskTracker::new(),
    };
    tracing::info!("reaper started");
    let mut last_tidy = Instant::now() - Duration::from_secs(3600);
    loop {
        let sleep_for = match reaper.dispatch_due().await {
            Ok(Dispatch::More) => continue,
            Ok(Dispatch::Done { queried_at }) => next_sleep(&reaper.leases, queried_at).await,
            Err(error) => {
                tracing::error!(%error, "reaper cannot read the lease store");
                STORE_ERROR_PAUSE
            }
        };
        if last_tidy.elapsed() > Duration::from_secs(600) {
            last_tidy = Instant::now();
            let before = to_millis(Utc::now() - TOMBSTONE_RETENTION);
            match reaper.leases.store().tidy_revoked(before, 1000).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "tidied revoked lease tombstones"),
                Err(error) => tracing::warn!(%error, "cannot tidy revoked leases"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {}
            _ = reaper.wake.notified() => {}
            _ = shutdown.cancelled() => break,
        }
    }
    reaper.tasks.close();
    reaper.tasks.wait().await;
    tracing::info!("reaper stopped");
}

/// What a pass did.
enum Dispatch {
    /// A full batch was handed out: more may be due right now.
    More,
    /// Everything due at `queried_at` is handed out.
    Done { queried_at: i64 },
}

impl Reaper {
    fn semaphore_for(&self, connection: &str) -> Arc<Semaphore> {
        lock(&self.per_connection)
            .entry(connection.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(PER_CONNECTION)))
            .clone()
    }

    /// Hands every due lease not already in flight to a task of its own.
    async fn dispatch_due(&self) -> crate::error::Result<Dispatch> {
        let in_flight = lock(&self.in_flight).len();
        let queried_at = to_millis(Utc::now());
        if in_flight >= MAX_IN_FLIGHT {
            // Finishing tasks wake the loop; until then there is nothing to add.
            return Ok(Dispatch::Done { queried_at });
        }
        let limit = BATCH + in_flight as i64;
        let due = self.leases.store().due_leases(queried_at, limit).await?;
        let fetched = due.len() as i64;
        let mut dispatched = 0;
        for lease in due {
            if !lock(&self.in_flight).insert(lease.id.clone()) {
                continue;
            }
            dispatched += 1;
            let semaphore = self.semaphore_for(&lease.connection_name);
            let (leases, in_flight, wake, shutdown) = (
                self.leases.clone(),
                self.in_flight.clone(),
                self.wake.clone(),
                self.shutdown.clone(),
            );
            self.tasks.spawn(async move {
                let id = lease.id.clone();
                let permit = tokio::select! {
                    permit = semaphore.acquire_owned() => permit.ok(),
                    _ = shutdown.cancelled() => None,
                };
                if permit.is_some() {
                    let expired = lease.state == LeaseState::Active;
                    // revoke_lease records failures and schedules the retry itself.
                    if leases.revoke_lease(lease, false).await.is_ok() && expired {
                        tracing::info!(lease_id = %id, "expired lease revoked");
                    }
                }
                drop(permit);
                lock(&in_flight).remove(&id);
                wake.notify_one();
            });
        }
        if fetched == limit && dispatched > 0 {
            Ok(Dispatch::More)
        } else {
            Ok(Dispatch::Done { queried_at })
        }
    }
}

/// Time until the next lease falls due after `queried_at` (leases due by then are handed out, and
/// their tasks wake the loop when they finish), at most [`MAX_SLEEP`].
async fn next_sleep(leases: &LeaseManager, queried_at: i64) -> Duration {
    match leases.store().next_due_after(queried_at).await {
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
