//! Static roles and admin (root) credential rotation: passwords Lessor owns and changes on a
//! schedule, without ever losing one.
//!
//! Every rotation, of a static role's user or of a connection's admin, runs the same two phases:
//!
//! 1. generate the new password and store it **sealed, as pending, durably**, before the database
//!    is touched;
//! 2. `set_password` on the database;
//! 3. log in as the user with the new password;
//! 4. promote: current becomes previous, pending becomes current, the schedule moves on.
//!
//! So at every instant the database's password is one the store holds (current or pending). A
//! pending password found later (after a crash or a failure) is *resolved*: if it logs in, the
//! rotation completed and is promoted; if it provably never reached the database (another stored
//! password of the user logs in) it is discarded and a fresh rotation runs; otherwise it is set
//! again. Nothing is discarded on a guess.
//!
//! Modules:
//! - [`schedule`]: `rotation_period`, cron `rotation_schedule` and `rotation_window`.
//! - `static_roles`: the static role catalogue, `static-creds`, and the rotation of one role.
//! - `root`: `rotate-root` for a connection's admin password.
//! - [`rotator`]: the background task that resolves pending rotations at start and rotates due roles.

mod root;
pub mod rotator;
pub mod schedule;
mod static_roles;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedMutexGuard};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use schedule::Schedule;
pub use static_roles::{RotationRecord, StaticCredentials, StaticRoleInput, StaticRoleView};

use crate::catalog::Catalog;
use crate::engines::Engines;
use crate::error::{Error, Result};
use crate::lease::retry::RetryPolicy;
use crate::replica::Replica;
use crate::seal::Sealer;
use crate::store::Store;

/// Where a test build can stop a rotation as if the process had crashed there. Outside test
/// builds nothing ever arms one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationFault {
    /// The pending password is stored; the database is not yet changed.
    AfterPendingStored,
    /// The database has the new password; it is not yet tested.
    AfterPasswordSet,
    /// The new password logged in; it is not yet promoted.
    AfterLoginChecked,
}

/// Why a rotation ran; kept in the rotation history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The first rotation of a newly created static role.
    Import,
    /// The role's schedule (or a retry after a failure) fell due.
    Schedule,
    /// An operator asked (`rotate-role`).
    Manual,
    /// Resolving a rotation interrupted by a crash, at the rotator's start.
    Recovery,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Import => "import",
            Self::Schedule => "schedule",
            Self::Manual => "manual",
            Self::Recovery => "recovery",
        }
    }
}

/// What a rotation request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new password is current for `username`.
    Rotated { username: String },
    /// The schedule's rotation window had passed; the role waits for the next occurrence.
    Skipped,
    /// Nothing to do: another rotation already handled it.
    NotDue,
}

/// Rotates static roles and admin credentials. Cheap to clone; the clones share their locks.
#[derive(Clone)]
pub struct Rotator {
    store: Store,
    sealer: Sealer,
    engines: Engines,
    catalog: Catalog,
    /// This process among the replicas: the claims it takes on rotations.
    replica: Replica,
    /// How failed rotations are retried.
    retry: RetryPolicy,
    /// Wakes the background rotator when a role's next rotation moved earlier than it sleeps to.
    wake: Arc<Notify>,
    /// One lock per static role or connection, so that a manual rotation, the scheduled one and a
    /// configuration write never interleave their phases in this process.
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Every rotation runs as a task tracked here, never inside the future of the request that
    /// asked for it: a client that disconnects drops its wait, not the rotation. Shutdown waits
    /// for them ([`Rotator::wait_for_rotations`]) before the pools close.
    tasks: TaskTracker,
    #[cfg(feature = "fault-injection")]
    fault: Arc<Mutex<Option<RotationFault>>>,
    /// A pause armed at a point of the next rotation that reaches it (test builds only).
    #[cfg(feature = "fault-injection")]
    pause: Arc<Mutex<Option<(RotationFault, std::time::Duration)>>>,
}

impl Rotator {
    pub fn new(
        store: Store,
        sealer: Sealer,
        engines: Engines,
        catalog: Catalog,
        replica: Replica,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            store,
            sealer,
            engines,
            catalog,
            replica,
            retry,
            wake: Arc::new(Notify::new()),
            locks: Arc::default(),
            tasks: TaskTracker::new(),
            #[cfg(feature = "fault-injection")]
            fault: Arc::default(),
            #[cfg(feature = "fault-injection")]
            pause: Arc::default(),
        }
    }

    /// Runs `work` as a task of its own and waits for its outcome. Dropping the returned future
    /// (a client disconnected, a caller timed out) stops the waiting, never the work, which
    /// finishes and records its own outcome (promotion, or failure and retry).
    async fn run_detached<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        // The task keeps the caller's span, so its log lines still say which request began it.
        self.tasks
            .spawn(work.in_current_span())
            .await
            .map_err(|e| Error::Internal(format!("rotation task failed: {e}")))?
    }

    /// Waits until every rotation started so far has finished; called at shutdown, before the
    /// database pools close. Rotations started later are still tracked.
    pub async fn wait_for_rotations(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }

    /// The background rotator's wake-up signal.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This process among the replicas.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The lock of one static role or connection (`static/NAME`, `root/NAME`).
    fn lock_of(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key).or_default().clone()
    }

    /// Serializes work on one static role or connection (`static/NAME`, `root/NAME`).
    async fn lock(&self, key: String) -> OwnedMutexGuard<()> {
        self.lock_of(key).lock_owned().await
    }

    /// The lock, if nothing in this process holds it: a rotation in flight is left alone.
    fn try_lock(&self, key: String) -> Option<OwnedMutexGuard<()>> {
        self.lock_of(key).try_lock_owned().ok()
    }

    /// Arms a fault for the next rotation that reaches `point` (test builds only).
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&self, point: Option<RotationFault>) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = point;
    }

    /// Arms a pause of `length` at `point` of the next rotation that reaches it (test builds only),
    /// so a test can disconnect its client while a rotation is half done.
    #[cfg(feature = "fault-injection")]
    pub fn inject_pause(&self, point: RotationFault, length: std::time::Duration) {
        *self.pause.lock().unwrap_or_else(|p| p.into_inner()) = Some((point, length));
    }

    /// Waits here when a test armed a pause at this point.
    #[cfg(feature = "fault-injection")]
    async fn pause_point(&self, point: RotationFault) {
        let length = {
            let mut armed = self.pause.lock().unwrap_or_else(|p| p.into_inner());
            match *armed {
                Some((at, length)) if at == point => {
                    *armed = None;
                    Some(length)
                }
                _ => None,
            }
        };
        if let Some(length) = length {
            tokio::time::sleep(length).await;
        }
    }

    #[cfg(not(feature = "fault-injection"))]
    async fn pause_point(&self, _point: RotationFault) {}

    /// Fails, as if the process died here, when a test armed this point.
    #[cfg(feature = "fault-injection")]
    fn crash_point(&self, point: RotationFault) -> Result<()> {
        let mut armed = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        if *armed == Some(point) {
            *armed = None;
            return Err(Error::Internal(format!("injected fault at {point:?}")));
        }
        Ok(())
    }

    #[cfg(not(feature = "fault-injection"))]
    fn crash_point(&self, _point: RotationFault) -> Result<()> {
        Ok(())
    }
}
