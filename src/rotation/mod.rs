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
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedMutexGuard};

pub use schedule::Schedule;
pub use static_roles::{RotationRecord, StaticCredentials, StaticRoleInput, StaticRoleView};

use crate::catalog::Catalog;
use crate::engines::Engines;
use crate::error::Result;
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
    /// Wakes the background rotator when a role's next rotation moved earlier than it sleeps to.
    wake: Arc<Notify>,
    /// One lock per static role or connection, so that a manual rotation, the scheduled one and a
    /// configuration write never interleave their phases in this process.
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    #[cfg(feature = "fault-injection")]
    fault: Arc<Mutex<Option<RotationFault>>>,
}

impl Rotator {
    pub fn new(store: Store, sealer: Sealer, engines: Engines, catalog: Catalog) -> Self {
        Self {
            store,
            sealer,
            engines,
            catalog,
            wake: Arc::new(Notify::new()),
            locks: Arc::default(),
            #[cfg(feature = "fault-injection")]
            fault: Arc::default(),
        }
    }

    /// The background rotator's wake-up signal.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serializes work on one static role or connection (`static/NAME`, `root/NAME`).
    async fn lock(&self, key: String) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(key).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Arms a fault for the next rotation that reaches `point` (test builds only).
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&self, point: Option<RotationFault>) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = point;
    }

    /// Fails, as if the process died here, when a test armed this point.
    #[cfg(feature = "fault-injection")]
    fn crash_point(&self, point: RotationFault) -> Result<()> {
        let mut armed = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        if *armed == Some(point) {
            *armed = None;
            return Err(crate::error::Error::Internal(format!(
                "injected fault at {point:?}"
            )));
        }
        Ok(())
    }

    #[cfg(not(feature = "fault-injection"))]
    fn crash_point(&self, _point: RotationFault) -> Result<()> {
        Ok(())
    }
}
