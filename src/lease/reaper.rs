//! The reaper: the background task that revokes expired leases and retries failed revocations.
//!
//! It keeps no lease table in memory. Each pass claims what is due (in batches, through the
//! `leases_due` index; the claim also marks a live lease `revoking` and returns it whole, so it
//! is never read again) and hands the leases, a batch per connection, to tasks, with at most
//! [`PER_CONNECTION`] batches running at a time on any one connection: a database that hangs
//! holds up only its own leases, never the expiry of users on other databases. Then it sleeps until
//! the next due time or until woken, because a lease with an earlier deadline appeared or a
//! revocation finished (`select!` on a deadline, a `Notify` and the shutdown token). Start-up cost
//! does not grow with the number of leases.
//!
//! Every lease it takes is *claimed* in the store first (see [`crate::store::Claim`]): replicas
//! sharing a store split the due leases between them, none revokes a lease another is revoking,
//! and the leases of a replica that died are taken over once its heartbeat is stale.
//!
//! A lease still `creating` falls due at its creation deadline, when its issuer has finished, given
//! up or died; the reaper then drops the user (idempotent) and marks the lease revoked.
//!
//! When the store itself fails (a full disk, a read-only file), whether reading what is due or
//! recording a revocation, the reaper pauses instead of dispatching the same due leases again at
//! once: the pause doubles while the failures go on (capped), and each pause logs one ERROR line
//! with the number of failures, not one per lease.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::LeaseManager;
use crate::error::Error;
use crate::store::{DueLease, LeaseStore, StoreKind};

/// How many due leases one pass takes from the store (beyond those already being revoked).
pub const BATCH: i64 = 64;
/// Concurrent revocation batches on one connection, so the reaper cannot exhaust a target's connections.
pub const PER_CONNECTION: usize = 4;
/// Revocations handed out and not yet finished, across connections; past this the reaper waits.
const MAX_IN_FLIGHT: usize = 1024;
/// The longest the reaper sleeps without looking, a safety net for missed wake-ups.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// How long revoked leases stay as tombstones for lookups and audit.
const TOMBSTONE_RETENTION: chrono::Duration = chrono::Duration::hours(24);
/// First pause after the store itself failed, so a broken store does not spin the CPU; it doubles
/// while the store keeps failing, up to [`MAX_STORE_ERROR_PAUSE`].
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);
const MAX_STORE_ERROR_PAUSE: Duration = Duration::from_secs(16);

/// How revocation tasks fared with the store since the loop last looked.
#[derive(Default)]
struct StoreTrouble {
    /// Revocations that could not write the store.
    failures: usize,
    first: Option<String>,
    /// Revocations that wrote their outcome: the store works again.
    recorded: usize,
}

/// How the rest of the process wakes the reaper: at once ([`ReaperAlarm::wake`]: work that needs
/// it now, like a retry to schedule), or only when a new lease falls due before the time the
/// reaper already sleeps towards ([`ReaperAlarm::due_at`]). Issuing wakes it the second way: a
/// wake-up per credential cost a pass over the due leases (two claiming writes and a read on the
/// store) for nothing, since a new lease is rarely due sooner than the next pass.
pub struct ReaperAlarm {
    notify: Notify,
    /// When the sleeping reaper looks again, in milliseconds since the epoch; `i64::MAX` while it
    /// is awake, so that a lease written during a pass (which may have read the store before the
    /// lease was there) always wakes it once more.
    planned_ms: AtomicI64,
}

impl Default for ReaperAlarm {
    fn default() -> Self {
        Self {
            notify: Notify::new(),
            planned_ms: AtomicI64::new(i64::MAX),
        }
    }
}

impl ReaperAlarm {
    /// Wakes the reaper now (or its next sleep returns at once).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// A lease falls due at `at`: wakes the reaper if that is before its planned look.
    pub fn due_at(&self, at: DateTime<Utc>) {
        if at.timestamp_millis() < self.planned_ms.load(Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }

    /// Sleeps for `sleep_for` or until woken, whichever comes first; awake again on return.
    async fn sleep_until(&self, sleep_for: Duration) {
        let until = Utc::now() + chrono::Duration::from_std(sleep_for).unwrap_or_default();
        self.planned_ms
            .store(until.timestamp_millis(), Ordering::SeqCst);
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {}
            _ = self.notify.notified() => {}
        }
        self.planned_ms.store(i64::MAX, Ordering::SeqCst);
    }
}

/// The reaper's bookkeeping of revocations it has handed out.
struct Reaper {
    leases: LeaseManager,
    wake: Arc<ReaperAlarm>,
    shutdown: CancellationToken,
    /// Ids of leases handed to a task and not finished, so a later pass does not hand them out
    /// twice while they wait for their connection's turn or for a slow database.
    in_flight: Arc<Mutex<HashSet<String>>>,
    /// One semaphore per connection name.
    per_connection: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Store failures of revocation tasks, which make the loop pause rather than redispatch.
    trouble: Arc<Mutex<StoreTrouble>>,
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
        trouble: Arc::default(),
        tasks: TaskTracker::new(),
    };
    // On a shared store, another replica may die holding claims that no deadline here announces;
    // looking again within the stale limit takes its work over promptly.
    let max_sleep = match reaper.leases.store().kind() {
        StoreKind::Postgres => crate::replica::STALE_AFTER / 2,
        StoreKind::Sqlite => MAX_SLEEP,
    };
    tracing::info!(replica = %reaper.leases.replica().id(), "reaper started");
    let mut last_tidy = Instant::now() - Duration::from_secs(3600);
    let mut pause = STORE_ERROR_PAUSE;
    loop {
        // Revocation tasks that could not write the store: their leases are still due, and
        // dispatching them again at once would spin. Pause, and say so once.
        let trouble = std::mem::take(&mut *lock(&reaper.trouble));
        if trouble.recorded > 0 && trouble.failures == 0 {
            pause = STORE_ERROR_PAUSE;
        }
        if trouble.failures > 0 {
            tracing::error!(
                failures = trouble.failures,
                error = trouble.first.as_deref().unwrap_or_default(),
                pause_secs = pause.as_secs(),
                "reaper cannot write the lease store; pausing revocations"
            );
            if pause_or_stop(&shutdown, &mut pause).await {
                break;
            }
            continue;
        }
        let sleep_for = match reaper.dispatch_due().await {
            Ok(Dispatch::More) => continue,
            Ok(Dispatch::Done {
                queried_at,
                dispatched,
            }) => {
                if dispatched == 0 {
                    // Nothing was attempted, so nothing can spin: a later failure starts over.
                    pause = STORE_ERROR_PAUSE;
                }
                match reaper.leases.store().next_due_after(queried_at).await {
                    Ok(next) => next_sleep(next, Utc::now()).min(max_sleep),
                    Err(error) => {
                        tracing::error!(%error, pause_secs = pause.as_secs(), "reaper cannot read the next due time");
                        if pause_or_stop(&shutdown, &mut pause).await {
                            break;
                        }
                        continue;
                    }
                }
            }
            Err(error) => {
                // Claiming what is due writes the store, so this is the same trouble as a
                // revocation that cannot record its outcome, and said the same way.
                tracing::error!(%error, pause_secs = pause.as_secs(), "reaper cannot write the lease store (claiming due leases); pausing");
                if pause_or_stop(&shutdown, &mut pause).await {
                    break;
                }
                continue;
            }
        };
        if last_tidy.elapsed() > Duration::from_secs(600) {
            last_tidy = Instant::now();
            let before = Utc::now() - TOMBSTONE_RETENTION;
            match reaper.leases.store().tidy_revoked(before, 1000).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "tidied revoked lease tombstones"),
                Err(error) => tracing::warn!(%error, "cannot tidy revoked leases"),
            }
        }
        tokio::select! {
            _ = reaper.wake.sleep_until(sleep_for) => {}
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
    /// Everything due at `queried_at` is handed out, `dispatched` of it by this pass.
    Done {
        queried_at: DateTime<Utc>,
        dispatched: usize,
    },
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
        let queried_at = Utc::now();
        if in_flight >= MAX_IN_FLIGHT {
            // Finishing tasks wake the loop; until then there is nothing to add.
            return Ok(Dispatch::Done {
                queried_at,
                dispatched: 0,
            });
        }
        // Leases this process is revoking are claimed by it and never come back in a batch; only
        // one whose claim lapsed while it waited (a very slow database) could, and the in-flight
        // set skips it.
        let limit = BATCH;
        let claim = self.leases.replica().claim(queried_at);
        let due = self.leases.store().claim_due_leases(&claim, limit).await?;
        let fetched = due.len() as i64;
        let mut dispatched = 0;
        // Per connection, in batches: each batch, claimed above, is dropped and recorded in a
        // few round trips (`LeaseManager::revoke_due`).
        let mut by_connection: std::collections::BTreeMap<String, Vec<DueLease>> =
            std::collections::BTreeMap::new();
        for lease in due {
            if !lock(&self.in_flight).insert(lease.id.clone()) {
                continue;
            }
            dispatched += 1;
            by_connection
                .entry(lease.connection_name.clone())
                .or_default()
                .push(lease);
        }
        for (connection, leases) in by_connection {
            for batch in leases.chunks(super::REVOCATION_BATCH) {
                let batch = batch.to_vec();
                let semaphore = self.semaphore_for(&connection);
                let (leases, in_flight, wake, shutdown, trouble) = (
                    self.leases.clone(),
                    self.in_flight.clone(),
                    self.wake.clone(),
                    self.shutdown.clone(),
                    self.trouble.clone(),
                );
                self.tasks.spawn(async move {
                    let permit = tokio::select! {
                        permit = semaphore.acquire_owned() => permit.ok(),
                        _ = shutdown.cancelled() => None,
                    };
                    let ids: Vec<String> = batch.iter().map(|d| d.id.clone()).collect();
                    if permit.is_some() {
                        // revoke_due records database failures and schedules the retries
                        // itself, and logs each revocation it records; a store failure cannot
                        // be recorded, so it is the loop's to pause on.
                        let outcomes = leases.revoke_due(batch).await;
                        let mut trouble = lock(&trouble);
                        for outcome in outcomes {
                            match outcome {
                                Ok(()) => trouble.recorded += 1,
                                Err(error @ (Error::Store(_) | Error::StoreUnavailable(_))) => {
                                    trouble.failures += 1;
                                    trouble.first.get_or_insert_with(|| error.to_string());
                                }
                                // A database failure was recorded: the store works.
                                Err(_) => trouble.recorded += 1,
                            }
                        }
                    }
                    drop(permit);
                    let mut in_flight = lock(&in_flight);
                    for id in &ids {
                        in_flight.remove(id);
                    }
                    drop(in_flight);
                    wake.wake();
                });
            }
        }
        if fetched == limit && dispatched > 0 {
            Ok(Dispatch::More)
        } else {
            Ok(Dispatch::Done {
                queried_at,
                dispatched,
            })
        }
    }
}

/// Sleeps for `pause` (doubling it for next time, capped) unless shutdown comes first, which it
/// reports. Wake-ups are ignored: finishing tasks must not cut a pause short.
async fn pause_or_stop(shutdown: &CancellationToken, pause: &mut Duration) -> bool {
    let this = *pause;
    *pause = next_pause(this);
    tokio::select! {
        _ = tokio::time::sleep(this) => false,
        _ = shutdown.cancelled() => true,
    }
}

/// The pause after `pause`, while the store keeps failing.
fn next_pause(pause: Duration) -> Duration {
    (pause * 2).min(MAX_STORE_ERROR_PAUSE)
}

/// Time from `now` until `next` (the next lease due after the leases just handed out, whose tasks
/// wake the loop when they finish), at most [`MAX_SLEEP`].
fn next_sleep(next: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Duration {
    match next {
        // A time already past is no wait at all (`to_std` refuses negative spans).
        Some(at) => (at - now).to_std().unwrap_or_default().min(MAX_SLEEP),
        None => MAX_SLEEP,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issuing rings the alarm only for a lease due before the reaper's planned look, and always
    /// while the reaper is awake (its pass may have read the store before the lease was there).
    #[tokio::test]
    async fn the_alarm_rings_only_for_a_lease_due_before_the_planned_look() {
        let alarm = Arc::new(ReaperAlarm::default());
        alarm.due_at(Utc::now() + chrono::Duration::hours(1));
        tokio::time::timeout(
            Duration::from_secs(1),
            alarm.sleep_until(Duration::from_secs(60)),
        )
        .await
        .expect("a lease written while the reaper was awake makes its next sleep end at once");

        let sleeper = tokio::spawn({
            let alarm = alarm.clone();
            async move { alarm.sleep_until(Duration::from_secs(3600)).await }
        });
        while alarm.planned_ms.load(Ordering::SeqCst) == i64::MAX {
            tokio::task::yield_now().await;
        }
        alarm.due_at(Utc::now() + chrono::Duration::hours(2));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !sleeper.is_finished(),
            "a lease due after the planned look leaves the reaper asleep"
        );
        alarm.due_at(Utc::now() + chrono::Duration::minutes(1));
        tokio::time::timeout(Duration::from_secs(1), sleeper)
            .await
            .expect("a lease due before the planned look wakes the reaper")
            .unwrap();
        assert_eq!(alarm.planned_ms.load(Ordering::SeqCst), i64::MAX);
    }

    #[test]
    fn sleeps_until_the_next_due_time_at_most_max_sleep() {
        let at = |ms| DateTime::from_timestamp_millis(ms).unwrap();
        assert_eq!(next_sleep(None, at(1_000)), MAX_SLEEP);
        assert_eq!(
            next_sleep(Some(at(1_500)), at(1_000)),
            Duration::from_millis(500)
        );
        assert_eq!(next_sleep(Some(at(500)), at(1_000)), Duration::ZERO);
        assert_eq!(next_sleep(Some(DateTime::<Utc>::MAX_UTC), at(0)), MAX_SLEEP);
    }

    #[test]
    fn store_error_pauses_double_and_are_capped() {
        let mut pause = STORE_ERROR_PAUSE;
        let mut pauses = Vec::new();
        for _ in 0..7 {
            pauses.push(pause.as_secs());
            pause = next_pause(pause);
        }
        assert_eq!(pauses, [1, 2, 4, 8, 16, 16, 16]);
    }

    #[tokio::test]
    async fn a_pause_ends_at_shutdown() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let mut pause = MAX_STORE_ERROR_PAUSE;
        assert!(pause_or_stop(&shutdown, &mut pause).await);
    }
}
