//! Warm pools: per role, optionally, `warm_pool_size` users created ahead of demand, unable to log
//! in (PostgreSQL `NOLOGIN`, MariaDB `ACCOUNT LOCK`) and with their password hashed at full
//! strength in the background; issuing one only activates it, which is far cheaper than creating
//! a user at full strength.
//!
//! Safety rests on three rules:
//! - A pooled user's password lives only in this process's memory ([`WarmPool`]); the store
//!   records the user without it (`pooled_users`, plus `issued_users` for reconciliation),
//!   *before* the user is created, claimed by this replica. So a crash leaves a row whose replica
//!   is dead, and whoever finds it (the survivors, or this store's next process at start) drops
//!   the user: no password is lost that anybody could still use.
//! - Only the replica that holds the row may issue it, and issuing moves the row into `leases` in
//!   one conditional transaction; anybody may take a row over to drop it (a role rewritten or
//!   deleted, a revoke-prefix, a dead holder), after which its old holder can only drop it too.
//! - Pooled users are not leases: lookups, listings, renewals and revocations by id never see
//!   them (an id that was never handed out is an unknown lease).
//!
//! A pool is keyed by role and made for one version of it (a fingerprint of everything that
//! shapes the user: connection, statements, options, username template). An issue finds only
//! users of the role's current version; the refill task drains users of an older one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use lessor_plugin::{
    DeleteUserRequest, NewUserRequest, PasswordStrength, Secret, UsernameContext, UsernameTemplate,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{new_lease_id, LeaseManager, CREATE_TIMEOUT};
use crate::catalog::Role;
use crate::error::{Error, Result};
use crate::store::{CatalogStore, IdRange, PoolStore, PooledSelection, PooledUser};

/// How often the refill task looks at every role's pool (and at the store's pooled users) when
/// nothing wakes it sooner: also how soon a role written on another replica is noticed here.
const TIDY_EVERY: Duration = Duration::from_secs(5);

/// Pooled users created at once by the refill task: enough to refill a pool drained by a burst
/// in seconds, few enough to leave most of the target's connections (4 by default) and CPU to
/// issuance.
const REFILL_CONCURRENCY: usize = 2;

/// After an issue took a pooled user, the refill waits until no issue came for this long (or
/// [`REFILL_MAX_DELAY`] passed): a creation running beside an issue slows it down (the target's
/// CPU hashing the password, the store's write lock), and the pool is there to make issues fast.
const REFILL_QUIET: Duration = Duration::from_millis(200);
const REFILL_MAX_DELAY: Duration = Duration::from_secs(2);

/// A pool with fewer ready users than this fraction of its size refills at once, quiet or not,
/// so that a long run of issues (a burst) finds users still being made.
const LOW_WATER_DIVISOR: usize = 4;

/// The display name a pooled user's name is made with: its requester is not known before it is
/// issued. A role whose username template uses the display name cannot keep a pool (refused
/// when it is written), so this reaches a name only for a role written before that check.
pub const POOL_DISPLAY_NAME: &str = "pool";

/// The in-memory half of every warm pool of this process: the passwords.
#[derive(Default)]
pub struct WarmPool {
    state: Mutex<PoolState>,
    /// Wakes the refill task: a user was taken, or a role was written.
    wake: Notify,
    /// Credentials issued from a pool since start (tests and `lessor bench` read it).
    issued: AtomicU64,
    /// A take found its row gone (another replica took the pool over): the next pass tidies at
    /// once rather than at its usual time, so the stale ready users go soon.
    tidy_soon: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct PoolState {
    roles: HashMap<String, RolePool>,
    /// Pooled users this process is working on outside a ready queue (being created, issued or
    /// dropped): the tidy pass leaves their rows alone.
    busy: HashSet<String>,
    /// Connections being rewritten or deleted, with how many such operations hold each: no
    /// pooled user is made through them meanwhile (see [`LeaseManager::pause_warm_pools_on`]).
    paused: HashMap<String, usize>,
}

#[derive(Default)]
struct RolePool {
    ready: VecDeque<Ready>,
    /// The role's `warm_pool_size` at the last refill pass.
    size: usize,
    /// The role's connection at the last refill pass (a metric label).
    connection: String,
    /// Bumped by every drain: a creation begun before it drops its user instead of queueing it.
    generation: u64,
    /// Creations in flight.
    creating: usize,
}

/// A pooled user ready to issue.
struct Ready {
    id: String,
    username: String,
    password: Secret,
    /// What drops it (the role's revocation statements when it was made).
    revocation_statements: Vec<String>,
    connection_name: String,
    /// The version of the role it was made for.
    fingerprint: u64,
}

/// A pooled user taken for issuing; its id stays busy until [`WarmPool::release`].
pub(crate) struct Taken {
    pub id: String,
    pub username: String,
    pub password: Secret,
}

/// The version of a role as far as its users are concerned: a user made under one version is
/// never issued under another.
pub(crate) fn fingerprint(role: &Role) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    role.db_name.hash(&mut hasher);
    role.creation_statements.hash(&mut hasher);
    role.revocation_statements.hash(&mut hasher);
    role.rollback_statements.hash(&mut hasher);
    role.renew_statements.hash(&mut hasher);
    role.username_template.hash(&mut hasher);
    role.options.hash(&mut hasher);
    role.database_per_lease.hash(&mut hasher);
    hasher.finish()
}

impl WarmPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a ready user of `role` made for its version `fingerprint`, if there is one, and
    /// wakes the refill task.
    pub(crate) fn take(&self, role: &str, fingerprint: u64) -> Option<Taken> {
        let taken = {
            let mut state = self.lock();
            let pool = state.roles.get_mut(role)?;
            match pool.ready.front() {
                Some(front) if front.fingerprint == fingerprint => pool.ready.pop_front(),
                // Made for an older version (the refill task drains those) or none left.
                _ => None,
            }
            .map(|ready| {
                state.busy.insert(ready.id.clone());
                Taken {
                    id: ready.id,
                    username: ready.username,
                    password: ready.password,
                }
            })
        };
        self.wake.notify_one();
        taken
    }

    /// Ends this process's work on a pooled user's row (issued, dropped or given up).
    pub(crate) fn release(&self, id: &str) {
        self.lock().busy.remove(id);
    }

    /// Notes that a pooled user's row was taken over while this process had it ready.
    pub(crate) fn row_lost(&self) {
        self.tidy_soon.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Counts a credential issued from a pool.
    pub(crate) fn count_issued(&self) {
        self.issued.fetch_add(1, Ordering::Relaxed);
    }

    /// Credentials issued from a pool by this process since it started.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    /// Whether a pool is below its low water mark (see [`LOW_WATER_DIVISOR`]).
    fn running_low(&self) -> bool {
        self.lock().roles.values().any(|pool| {
            pool.size > 0 && (pool.ready.len() + pool.creating) * LOW_WATER_DIVISOR < pool.size
        })
    }

    /// Every role's pool in this process with its size set, for the metrics.
    pub fn counts(&self) -> Vec<crate::metrics::WarmPoolCount> {
        self.lock()
            .roles
            .iter()
            .filter(|(_, pool)| pool.size > 0)
            .map(|(role, pool)| crate::metrics::WarmPoolCount {
                role_name: role.clone(),
                connection_name: pool.connection.clone(),
                ready: pool.ready.len() as i64,
            })
            .collect()
    }

    /// Whether no pooled user may be made through `connection` now.
    fn is_paused(&self, connection: &str) -> bool {
        self.lock().paused.contains_key(connection)
    }

    /// Pooled users being made through `connection` by this process right now.
    fn creating_on(&self, connection: &str) -> usize {
        self.lock()
            .roles
            .values()
            .filter(|pool| pool.connection == connection)
            .map(|pool| pool.creating)
            .sum()
    }

    /// Users of `role` ready to issue in this process.
    pub fn ready(&self, role: &str) -> usize {
        self.lock()
            .roles
            .get(role)
            .map_or(0, |pool| pool.ready.len())
    }

    /// Marks `id` busy unless this process already works on it or has it ready: true when the
    /// caller may drop it.
    fn claim_for_drop(&self, id: &str) -> bool {
        let mut state = self.lock();
        let ready = state
            .roles
            .values()
            .any(|pool| pool.ready.iter().any(|r| r.id == id));
        !ready && state.busy.insert(id.to_owned())
    }

    /// Removes the ready users `pick` selects (marked busy, for the caller to drop), bumping
    /// the generation of the roles `bump` selects.
    fn remove_ready(
        &self,
        mut pick: impl FnMut(&str, &Ready) -> bool,
        mut bump: impl FnMut(&str) -> bool,
    ) -> Vec<Ready> {
        let mut state = self.lock();
        let mut removed = Vec::new();
        for (role, pool) in state.roles.iter_mut() {
            if bump(role) {
                pool.generation += 1;
            }
            let (gone, kept): (VecDeque<Ready>, VecDeque<Ready>) =
                pool.ready.drain(..).partition(|ready| pick(role, ready));
            pool.ready = kept;
            removed.extend(gone);
        }
        for ready in &removed {
            state.busy.insert(ready.id.clone());
        }
        removed
    }
}

/// Holds the warm pools of one connection paused (see [`LeaseManager::pause_warm_pools_on`])
/// until dropped.
pub struct PausedPools {
    leases: LeaseManager,
    connection: String,
}

impl Drop for PausedPools {
    fn drop(&mut self) {
        let mut state = self.leases.pool.lock();
        if let Some(holders) = state.paused.get_mut(&self.connection) {
            *holders -= 1;
            if *holders == 0 {
                state.paused.remove(&self.connection);
            }
        }
        drop(state);
        self.leases.wake_warm_pool();
    }
}

impl LeaseManager {
    /// This process's warm pools.
    pub fn warm_pool(&self) -> &WarmPool {
        &self.pool
    }

    /// Stops this process making pooled users through `connection` until the guard is dropped,
    /// and waits (at most the creation deadline) for those it is making to finish: a connection
    /// about to be rewritten or deleted has its pools drained, and a user made between the drain
    /// and the write would be made through the old settings, or be left with no connection to
    /// drop it through. Another replica's refill is not paused; its users are found by the drain
    /// that follows its next look at the role.
    pub async fn pause_warm_pools_on(&self, connection: &str) -> PausedPools {
        *self
            .pool
            .lock()
            .paused
            .entry(connection.to_owned())
            .or_default() += 1;
        let guard = PausedPools {
            leases: self.clone(),
            connection: connection.to_owned(),
        };
        let deadline = tokio::time::Instant::now() + CREATE_TIMEOUT;
        while self.pool.creating_on(connection) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        guard
    }

    /// Wakes the refill task (a role was written: its pool may need filling or draining).
    pub fn wake_warm_pool(&self) {
        self.pool.wake.notify_one();
    }

    /// After `role` was written (its version before was `before`, if it existed): a role whose
    /// users would now be made differently, or that has no pool any more, is drained; otherwise
    /// its pool is only woken to fill to its size. A warning for the answer if the drain failed.
    pub async fn warm_pool_role_written(&self, role: &str, before: Option<u64>) -> Option<String> {
        let now = self.catalog.role(role).await.ok();
        let keep = match (&now, before) {
            (Some(now), Some(before)) => now.warm_pool_size > 0 && fingerprint(now) == before,
            // New: nothing pooled under the name can be of this role (leftovers of a deleted
            // role of the same name were drained at its deletion; drained again here).
            _ => false,
        };
        if keep {
            self.wake_warm_pool();
            return None;
        }
        match self.drain_warm_pool(role).await {
            Ok(_) => None,
            Err(error) => Some(format!(
                "the role's pooled users could not all be dropped yet; they are dropped later: {error}"
            )),
        }
    }

    /// Drops every pooled user of `role`, whichever replica holds it: the role was rewritten or
    /// deleted, so none may be issued with grants of an older version. Users of this process
    /// still being created drop themselves when done.
    #[tracing::instrument(skip_all, fields(role = %role), err)]
    pub async fn drain_warm_pool(&self, role: &str) -> Result<usize> {
        let removed = self.pool.remove_ready(|r, _| r == role, |r| r == role);
        let claim = self.replica.claim(Utc::now());
        let rows = self
            .store
            .take_over_pooled_users(&claim, PooledSelection::OfRole(role))
            .await;
        let dropped = self.drop_taken_over(removed, rows).await?;
        self.wake_warm_pool();
        Ok(dropped)
    }

    /// Drops every pooled user whose id is under `range` (a revoke-prefix), whichever replica
    /// holds it; the pools refill with new users.
    pub(crate) async fn drain_warm_pools_in(&self, range: &IdRange) -> Result<usize> {
        let removed = self
            .pool
            .remove_ready(|_, ready| range.contains(&ready.id), |_| false);
        let claim = self.replica.claim(Utc::now());
        let rows = self
            .store
            .take_over_pooled_users(&claim, PooledSelection::InRange(range))
            .await;
        let dropped = self.drop_taken_over(removed, rows).await?;
        self.wake_warm_pool();
        Ok(dropped)
    }

    /// Drops every pooled user this process holds: at a clean stop, so that none is left on a
    /// database for the next start (or another replica) to find.
    pub async fn drain_warm_pools_at_stop(&self) {
        let removed = self.pool.remove_ready(|_, _| true, |_| true);
        let rows = self.store.pooled_users_held_by(self.replica.id()).await;
        if let Err(error) = self.drop_taken_over(removed, rows).await {
            tracing::warn!(%error, "cannot drop the warm pools at stop; the next start drops them");
        }
    }

    /// Drops the ready users `removed` (already busy) and the rows `rows` now held by this
    /// replica, each once; rows another task of this process works on are left to it.
    async fn drop_taken_over(
        &self,
        removed: Vec<Ready>,
        rows: Result<Vec<PooledUser>>,
    ) -> Result<usize> {
        let mut removed: HashMap<String, Ready> =
            removed.into_iter().map(|r| (r.id.clone(), r)).collect();
        let rows = match rows {
            Ok(rows) => rows,
            Err(error) => {
                // Their rows stay with this replica, which no longer has them ready: the tidy
                // pass drops them once the store answers.
                for id in removed.keys() {
                    self.pool.release(id);
                }
                return Err(error);
            }
        };
        let mut work = Vec::new();
        for row in rows {
            if removed.remove(&row.id).is_some() || self.pool.claim_for_drop(&row.id) {
                work.push(row);
            }
        }
        // Ready here without a row of ours: its row went to another replica, which drops the
        // user too (dropping is idempotent).
        for (_, ready) in removed {
            self.drop_unrecorded(&ready).await;
            self.pool.release(&ready.id);
        }
        let dropped = futures::stream::iter(work)
            .map(|row| async move {
                let done = self.drop_pooled(&row).await;
                self.pool.release(&row.id);
                done
            })
            .buffer_unordered(super::BULK_REVOCATION_CONCURRENCY)
            .filter(|done| futures::future::ready(*done))
            .count()
            .await;
        Ok(dropped)
    }

    /// Drops a pooled user this process holds busy, if its row is still this replica's (an
    /// issue may have turned it into a lease since it was listed), then forgets the row. False
    /// if the drop failed (the row stays; a later tidy pass retries).
    async fn drop_pooled(&self, row: &PooledUser) -> bool {
        let outcome = async {
            let plugin = self.engines.get(&row.connection_name).await?;
            plugin
                .delete_user(&DeleteUserRequest {
                    username: &row.username,
                    statements: &row.revocation_statements,
                    database: None,
                })
                .await
                .map_err(|e| Error::database("cannot drop a pooled user", e))?;
            self.store
                .forget_pooled_user(&row.id, self.replica.id())
                .await
        };
        match self
            .store
            .holds_pooled_user(&row.id, self.replica.id())
            .await
        {
            Ok(true) => {}
            Ok(false) => return true,
            Err(error) => {
                tracing::warn!(%error, "cannot check a pooled user before dropping it; will retry");
                return false;
            }
        }
        match outcome.await {
            Ok(()) => {
                tracing::info!(role = %row.role_name, username = %row.username, "dropped a pooled user");
                true
            }
            Err(error) => {
                tracing::warn!(role = %row.role_name, username = %row.username, %error, "cannot drop a pooled user; will retry");
                false
            }
        }
    }

    /// Drops the user of a ready entry whose row is no longer this replica's.
    async fn drop_unrecorded(&self, ready: &Ready) {
        let dropped = async {
            let plugin = self.engines.get(&ready.connection_name).await?;
            plugin
                .delete_user(&DeleteUserRequest {
                    username: &ready.username,
                    statements: &ready.revocation_statements,
                    database: None,
                })
                .await
                .map_err(|e| Error::database("cannot drop a pooled user", e))
        }
        .await;
        if let Err(error) = dropped {
            tracing::warn!(username = %ready.username, %error, "cannot drop a pooled user taken over by another replica; that replica drops it");
        }
    }

    /// After a failed take (the row went to another replica while this one was issuing it):
    /// drops the user, which nobody may be issued now. Idempotent, so racing the other replica's
    /// own drop is harmless.
    pub(crate) async fn drop_lost_pooled_user(
        &self,
        connection: &str,
        username: &str,
        statements: &[String],
    ) {
        let dropped = async {
            let plugin = self.engines.get(connection).await?;
            plugin
                .delete_user(&DeleteUserRequest {
                    username,
                    statements,
                    database: None,
                })
                .await
                .map_err(|e| Error::database("cannot drop a pooled user", e))
        }
        .await;
        if let Err(error) = dropped {
            tracing::warn!(%username, %error, "cannot drop a pooled user taken over by another replica; that replica drops it");
        }
    }

    /// One pass of upkeep: drop the pooled users of dead replicas and the rows of this one that
    /// no pool holds (left by a failed drop or an abandoned creation), forget ready users whose
    /// rows went to another replica, then fill every pool to its role's size.
    async fn tend_pools(&self, cancel: &CancellationToken, tidy: bool) {
        if tidy {
            if let Err(error) = self.tidy_pools().await {
                tracing::warn!(%error, "cannot tidy the warm pools; will retry");
            }
        }
        if let Err(error) = self.refill_pools(cancel).await {
            tracing::warn!(%error, "cannot refill the warm pools; will retry");
        }
    }

    async fn tidy_pools(&self) -> Result<()> {
        let me = self.replica.id();
        // Ready before the store was read: each one's row was written before it became ready.
        let ready_before: Vec<String> = {
            let state = self.pool.lock();
            state
                .roles
                .values()
                .flat_map(|pool| pool.ready.iter().map(|r| r.id.clone()))
                .collect()
        };
        let held = self.store.pooled_users_held_by(me).await?;
        let held_ids: HashSet<&str> = held.iter().map(|r| r.id.as_str()).collect();
        let lost: HashSet<String> = ready_before
            .into_iter()
            .filter(|id| !held_ids.contains(id.as_str()))
            .collect();
        if !lost.is_empty() {
            let removed = self
                .pool
                .remove_ready(|_, r| lost.contains(&r.id), |_| false);
            for ready in removed {
                self.drop_unrecorded(&ready).await;
                self.pool.release(&ready.id);
            }
        }
        let orphans: Vec<PooledUser> = held
            .into_iter()
            .filter(|row| self.pool.claim_for_drop(&row.id))
            .collect();
        let claim = self.replica.claim(Utc::now());
        let dead = self
            .store
            .take_over_pooled_users(&claim, PooledSelection::OfDeadReplicas)
            .await?
            .into_iter()
            .filter(|row| self.pool.claim_for_drop(&row.id));
        let work: Vec<PooledUser> = orphans.into_iter().chain(dead).collect();
        if !work.is_empty() {
            tracing::info!(
                users = work.len(),
                "dropping pooled users no pool holds (left by a stopped replica or a failed drop)"
            );
        }
        futures::stream::iter(work)
            .for_each_concurrent(super::BULK_REVOCATION_CONCURRENCY, |row| async move {
                self.drop_pooled(&row).await;
                self.pool.release(&row.id);
            })
            .await;
        Ok(())
    }

    /// Fills every role's pool to its size, drains the users of older versions of a role and
    /// of roles gone or without a pool.
    async fn refill_pools(&self, cancel: &CancellationToken) -> Result<()> {
        let names = self.store.list_roles().await?;
        let mut wanted: Vec<(String, Role, u64, u64, usize)> = Vec::new();
        let mut live: HashSet<String> = HashSet::new();
        for name in names {
            let Some(role) = self.store.get_role(&name).await? else {
                continue;
            };
            if role.warm_pool_size == 0 {
                continue;
            }
            // A role its connection no longer allows (or whose connection is gone) cannot be
            // issued: its pool goes, and comes back when it is allowed again.
            if let Err(error) = self.catalog.check_allowed(&role.db_name, &name).await {
                tracing::debug!(role = %name, %error, "no warm pool for a role that cannot be issued");
                continue;
            }
            // Its connection is being rewritten or deleted (and its pools drained): nothing is
            // made through it until that is done.
            if self.pool.is_paused(&role.db_name) {
                live.insert(name.clone());
                continue;
            }
            let version = fingerprint(&role);
            live.insert(name.clone());
            // Ready users of an older version go; the rest is the deficit.
            let stale = self.pool.remove_ready(
                |r, ready| r == name && ready.fingerprint != version,
                |_| false,
            );
            self.drop_removed(stale).await;
            let (deficit, excess, generation) = {
                let mut state = self.pool.lock();
                let pool = state.roles.entry(name.clone()).or_default();
                let have = pool.ready.len() + pool.creating;
                let size = role.warm_pool_size as usize;
                pool.size = size;
                pool.connection.clone_from(&role.db_name);
                (
                    size.saturating_sub(have),
                    pool.ready.len().saturating_sub(size),
                    pool.generation,
                )
            };
            if excess > 0 {
                // The size went down: the oldest ready users go.
                let mut extra = excess;
                let removed = self.pool.remove_ready(
                    |r, _| {
                        if r == name && extra > 0 {
                            extra -= 1;
                            true
                        } else {
                            false
                        }
                    },
                    |_| false,
                );
                self.drop_removed(removed).await;
            }
            if deficit > 0 {
                wanted.push((name, role, version, generation, deficit));
            }
        }
        // Pools of roles gone or set to 0.
        for (name, pool) in self.pool.lock().roles.iter_mut() {
            if !live.contains(name) {
                pool.size = 0;
            }
        }
        let gone = self
            .pool
            .remove_ready(|r, _| !live.contains(r), |r| !live.contains(r));
        self.drop_removed(gone).await;

        let jobs: Vec<(String, Role, u64, u64)> = wanted
            .into_iter()
            .flat_map(|(name, role, version, generation, deficit)| {
                std::iter::repeat((name, role, version, generation)).take(deficit)
            })
            .collect();
        for (name, _, _, _) in &jobs {
            self.pool
                .lock()
                .roles
                .entry(name.clone())
                .or_default()
                .creating += 1;
        }
        let failures = futures::stream::iter(jobs)
            .map(|(name, role, version, generation)| async move {
                let drained = self
                    .pool
                    .lock()
                    .roles
                    .get(&name)
                    .map_or(true, |pool| pool.generation != generation)
                    || self.pool.is_paused(&role.db_name);
                let made = if cancel.is_cancelled() || drained {
                    // Stopping, or the pool was drained since this pass began.
                    Ok(())
                } else {
                    self.make_pooled_user(&name, &role, version, generation)
                        .await
                };
                if let Some(pool) = self.pool.lock().roles.get_mut(&name) {
                    pool.creating = pool.creating.saturating_sub(1);
                }
                made
            })
            .buffer_unordered(REFILL_CONCURRENCY)
            .filter_map(|made| futures::future::ready(made.err()))
            .collect::<Vec<Error>>()
            .await;
        match failures.into_iter().next() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Drops ready users removed from their pool (busy), recorded as this replica's.
    async fn drop_removed(&self, removed: Vec<Ready>) {
        for ready in removed {
            let row = PooledUser {
                id: ready.id.clone(),
                role_name: String::new(),
                connection_name: ready.connection_name.clone(),
                username: ready.username.clone(),
                revocation_statements: ready.revocation_statements.clone(),
                created_at: Utc::now(),
                claimed_by: self.replica.id().to_owned(),
            };
            self.drop_pooled(&row).await;
            self.pool.release(&ready.id);
        }
    }

    /// Creates one pooled user of `role` (version `version`, pool generation `generation`):
    /// records it, creates it unable to log in, then queues it, unless the pool was drained
    /// meanwhile (then drops it).
    async fn make_pooled_user(
        &self,
        role_name: &str,
        role: &Role,
        version: u64,
        generation: u64,
    ) -> Result<()> {
        let connection = self.catalog.check_allowed(&role.db_name, role_name).await?;
        let plugin = self.engines.get(&role.db_name).await?;
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
                    display_name: POOL_DISPLAY_NAME,
                },
            )
            .map_err(|e| Error::invalid(e.to_string()))?;
        let password = crate::password_policy::generate_for_row(&self.store, &connection)
            .await?
            .password;
        let row = PooledUser {
            id: new_lease_id(role_name, Utc::now()),
            role_name: role_name.to_owned(),
            connection_name: role.db_name.clone(),
            username,
            revocation_statements: role.revocation_statements.clone(),
            created_at: Utc::now(),
            claimed_by: self.replica.id().to_owned(),
        };
        self.pool.lock().busy.insert(row.id.clone());
        let made = self.create_recorded(&row, role, &password).await;
        let queued = made.is_ok() && {
            let mut state = self.pool.lock();
            match state.roles.get_mut(role_name) {
                Some(pool) if pool.generation == generation => {
                    pool.ready.push_back(Ready {
                        id: row.id.clone(),
                        username: row.username.clone(),
                        password,
                        revocation_statements: row.revocation_statements.clone(),
                        connection_name: row.connection_name.clone(),
                        fingerprint: version,
                    });
                    state.busy.remove(&row.id);
                    true
                }
                _ => false,
            }
        };
        if made.is_ok() && !queued {
            // Drained while it was being made: it must not be issued with the old grants.
            self.drop_pooled(&row).await;
            self.pool.release(&row.id);
        }
        made
    }

    /// Records `row` and creates its user; on a failure drops what was made. The row's id is
    /// busy throughout.
    async fn create_recorded(
        &self,
        row: &PooledUser,
        role: &Role,
        password: &Secret,
    ) -> Result<()> {
        let plugin = self.engines.get(&row.connection_name).await?;
        if let Err(error) = self.store.insert_pooled_user(row).await {
            self.pool.release(&row.id);
            return Err(error);
        }
        let created = tokio::time::timeout(
            CREATE_TIMEOUT,
            plugin.create_pooled_user(&NewUserRequest {
                username: &row.username,
                password,
                // Made ahead of demand, so the full stretch costs the hot path nothing: a pooled
                // user is hashed as a guessable password would be.
                password_strength: PasswordStrength::Guessable,
                // Already past: with NOLOGIN, a second reason it cannot log in before issue.
                expiration: Utc::now(),
                statements: &role.creation_statements,
                options: &role.options,
                database: None,
            }),
        )
        .await;
        match created {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                self.drop_pooled(row).await;
                self.pool.release(&row.id);
                Err(Error::database(
                    format!("cannot create a pooled user for role {}", row.role_name),
                    error,
                ))
            }
            Err(_elapsed) => {
                // The statement may still land: the row stays, and a later tidy pass (not before
                // the abandoned connection is gone) drops the user.
                self.pool.release(&row.id);
                Err(Error::Unavailable(format!(
                    "no answer within {} s creating a pooled user for role {}",
                    CREATE_TIMEOUT.as_secs(),
                    row.role_name
                )))
            }
        }
    }
}

/// The refill task: tends the pools at start, when woken (a user taken, a role written) and
/// every [`TIDY_EVERY`], until `cancel`. A pass that failed waits for the next tick rather than
/// retrying at once, so a target that is down is not hammered.
pub async fn run(leases: LeaseManager, cancel: CancellationToken) {
    // The tidy pass reads every row this replica holds, so it runs on the clock only, not at
    // every wake-up (a burst of issues wakes the task once per refill pass).
    let mut next_tidy = tokio::time::Instant::now();
    loop {
        let tidy = tokio::time::Instant::now() >= next_tidy
            || leases.pool.tidy_soon.swap(false, Ordering::Relaxed);
        if tidy {
            next_tidy = tokio::time::Instant::now() + TIDY_EVERY;
        }
        leases.tend_pools(&cancel, tidy).await;
        tokio::select! {
            _ = tokio::time::sleep(TIDY_EVERY) => {}
            _ = leases.pool.wake.notified() => {
                let deadline = tokio::time::Instant::now() + REFILL_MAX_DELAY;
                while !leases.pool.running_low() && tokio::time::Instant::now() < deadline {
                    tokio::select! {
                        _ = tokio::time::sleep(REFILL_QUIET) => break,
                        _ = leases.pool.wake.notified() => {}
                        _ = cancel.cancelled() => return,
                    }
                }
            }
            _ = cancel.cancelled() => return,
        }
    }
}
