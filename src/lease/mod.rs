//! The lease manager: issuing dynamic credentials and renewing, looking up and revoking their leases.
//!
//! Issuing is crash-safe and race-free by construction. The lease row is written in state
//! `creating` *before* the user is created, so whatever happens next (an error, a crash, a lost
//! response) the reaper finds the row and drops the user, which is idempotent. Only the issuer moves
//! it to `active`, with a conditional update that fails if a revocation was requested meanwhile; a
//! revoke that meets a `creating` lease records that request and leaves the drop to the issuer
//! (which drops the user before answering) or, should the issuer die, to the reaper after the
//! creation deadline. So a revocation can never be marked done before the user it should drop
//! exists. The password is returned once and never stored.
//!
//! A role with a warm pool ([`pool`]) issues a user created ahead of demand when one is ready:
//! its row becomes the lease (`creating`) in one transaction, the user is activated, and the
//! lease moves to `active` as above; anything failing on that path falls back to creating a user.
//!
//! Operations on one lease (renew, revoke, the reaper's revocation) are serialized inside this
//! process by a striped set of async mutexes and re-read the lease after taking it, so a renewal
//! cannot interleave with a drop on the target (PostgreSQL answers that with "tuple concurrently
//! updated").

pub mod pool;
pub mod reaper;
pub mod reconcile;
pub mod retry;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use lessor_plugin::{
    DeleteUserRequest, ExpirationChange, NewDatabase, NewUserRequest, Secret, UpdateUserRequest,
    UsernameContext, UsernameTemplate,
};
use rand::Rng;
use serde::Serialize;

use crate::catalog::{check_name, Catalog};
use crate::engines::Engines;
use crate::error::{Error, Result};
use crate::replica::Replica;
use crate::store::{IdRange, Lease, LeaseState, LeaseStore, PoolStore, Store};
use retry::RetryPolicy;

/// Revocations run at most this many at a time for bulk operations, so a revoke-prefix of
/// thousands of leases does not exhaust a target's connection limit.
const BULK_REVOCATION_CONCURRENCY: usize = 8;

/// Lease ids read per query by bulk revocations and LIST, which page through ranges of the
/// primary key rather than loading every id at once.
const PAGE: i64 = 500;

/// Leases revoked together by [`LeaseManager::revoke_batch`]: one store statement to claim
/// them, one `delete_users` per connection, one transaction to record them.
pub(crate) const REVOCATION_BATCH: usize = 100;

/// The longest the issuer waits for `create_user`. Past it the issuer gives up and answers an
/// error, leaving the `creating` lease to the reaper at the creation deadline.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long after its write a `creating` lease becomes the reaper's. Longer than
/// [`CREATE_TIMEOUT`] so the reaper never races a live issuer: by then the issuer has activated the
/// lease, dropped the user, given up or died. The 30 s margin covers the issuer's store writes after
/// a creation that took nearly the whole timeout (SQLite waits up to 5 s for a busy lock), and lets
/// a statement the issuer abandoned at its timeout end on the server (its connection is dropped, so
/// an uncommitted creation rolls back) before the reaper drops whatever was created.
pub const CREATION_DEADLINE: Duration = Duration::from_secs(90);

/// How often a revoke waiting on another replica's claim looks at the lease again.
const CLAIM_POLL: Duration = Duration::from_millis(100);

/// Striped locks serializing operations on one lease; more stripes than bulk concurrency so that
/// unrelated leases rarely wait for each other.
const LOCK_STRIPES: usize = 256;

/// Who is revoking, which decides what a `creating` lease means to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Revoker {
    /// A client's revoke, revoke-prefix or revoke-force (or a revoked token): a `creating` lease
    /// only gets `revoke_requested`, its issuer drops the user.
    Request { force: bool },
    /// The reaper: acts only on leases still due after it took the lease's lock (a renewal may
    /// have moved the expiry), and on a `creating` lease only past its creation deadline.
    Reaper,
    /// The issuer whose activation failed: drops the user it just created.
    Issuer,
}

/// How one try at issuing ended (see [`LeaseManager::issue_attempt`]).
enum Attempt {
    Issued(IssuedCredentials),
    /// The pooled user could not be issued (and is being dropped): create one instead.
    PoolFailed,
}

/// After this many failed attempts a lease is listed as irrevocable (`sys/leases?type=irrevocable`):
/// a few backed-off tries, so a brief outage does not list it, while the reaper keeps retrying.
pub const IRREVOCABLE_AFTER_ATTEMPTS: i64 = 3;

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
    /// The lease's own database, for a `database_per_lease` role.
    pub database: Option<String>,
    /// How to reach that database as the user, without the password.
    pub connection_url: Option<String>,
}

/// Which keys of a listing to answer (`LIST ...?after=KEY&limit=N`, as OpenBao pages lists).
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Only keys sorting after this one (a key of an earlier page).
    pub after: Option<String>,
    /// At most this many keys; none means all.
    pub limit: Option<usize>,
    /// Only the leases whose owner had this display name when they were issued (a deeper level
    /// is listed only if it holds one of them).
    pub owner_display_name: Option<String>,
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
    /// The connection the user was created on.
    pub connection: String,
    /// The entity (or token accessor) that obtained the lease: who may renew or revoke it.
    pub owner: String,
    /// The owner's display name when the lease was issued (`token-ci`, `jwt-<subject>`); empty
    /// for leases issued before Lessor recorded it whose token is gone.
    pub owner_display_name: String,
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
    /// The owner recorded on the lease (the caller's entity): who may look it up, renew or revoke it.
    pub accessor: String,
    pub display_name: String,
    /// The accessor of the caller's token, so that revoking the token revokes the lease
    /// ([`LeaseManager::revoke_by_token_accessors`]). None for leases no token obtained.
    pub token_accessor: Option<String>,
}

/// Whose leases a request may look up, renew or revoke. Checked on the lease row the operation
/// itself acts on (the read of a lookup or renewal; for a revocation, the write that claims the
/// lease, or the read after it): the owner check and the operation are one decision on one row,
/// and the check costs no store operation of its own.
#[derive(Debug, Clone, Copy)]
pub enum Holder<'a> {
    /// Any lease: the caller holds `sudo` on the path, or Lessor acts for itself.
    Anyone,
    /// Only the leases this identity obtained: a lease whose owner is the caller's entity or,
    /// for leases of a token without one, the token's accessor.
    Identity {
        entity_id: &'a str,
        accessor: &'a str,
    },
}

impl<'a> Holder<'a> {
    /// The owners whose leases the holder may act on (entity id, token accessor); `None` for
    /// anyone's.
    fn owner(&self) -> Option<(&'a str, &'a str)> {
        match *self {
            Holder::Anyone => None,
            Holder::Identity {
                entity_id,
                accessor,
            } => Some((entity_id, accessor)),
        }
    }

    /// Refuses `lease` unless it is the holder's.
    fn check(&self, lease: &Lease) -> Result<()> {
        match self.owner() {
            Some((entity_id, accessor)) if lease.owner != entity_id && lease.owner != accessor => {
                tracing::info!(lease_id = %lease.id, %accessor, "refused: the lease belongs to another identity");
                Err(Error::PermissionDenied)
            }
            _ => Ok(()),
        }
    }
}

/// Issues, renews and revokes leases.
#[derive(Clone)]
pub struct LeaseManager {
    store: Store,
    engines: Engines,
    catalog: Catalog,
    /// Wakes the reaper when a lease with an earlier deadline than it is sleeping towards appears.
    reaper_wake: Arc<reaper::ReaperAlarm>,
    /// Serializes renew and revoke of one lease within this process (see the module
    /// documentation); across replicas, the lease's claim in the store does.
    locks: Arc<[tokio::sync::Mutex<()>]>,
    /// This process among the replicas: the claims it takes on leases.
    replica: Replica,
    /// How failed revocations are retried and when they are flagged.
    retry: RetryPolicy,
    /// The warm pools' users ready to issue, with their passwords (see [`pool`]).
    pool: Arc<pool::WarmPool>,
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

/// The characters of a lease id's last segment, in ASCII order, so that its time part sorts as
/// text the way the times it encodes do.
const LEASE_ID_ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Characters of the last segment that encode the issue time: milliseconds since 1970 in base
/// 62, enough for the next 6,900 years.
const LEASE_ID_TIME_CHARS: usize = 8;

/// Random characters after the time: about 95 bits, so ids issued in the same millisecond never
/// meet and no id can be guessed from another.
const LEASE_ID_RANDOM_CHARS: usize = 16;

/// A new lease id, `database/creds/<role>/` and 24 characters: the time `now`, then random ones.
///
/// Later ids of a role sort after earlier ones. The store's indexes keyed by the id (the primary
/// key, the owner's and the token's lease lists) then take a new lease next to the last ones
/// instead of at a random page, so the lease writes that share a commit share those pages too:
/// in a model of the four writes of a credential, eight at a time as the lease writer groups
/// them at eight workers, the SQLite WAL written per credential fell from 14.3 to 9.3 KiB.
pub(crate) fn new_lease_id(role_name: &str, now: DateTime<Utc>) -> String {
    let base = LEASE_ID_ALPHABET.len() as u64;
    let mut millis = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    let mut time = [b'0'; LEASE_ID_TIME_CHARS];
    for digit in time.iter_mut().rev() {
        *digit = LEASE_ID_ALPHABET[(millis % base) as usize];
        millis /= base;
    }
    let mut rng = rand::rngs::OsRng;
    let random = (0..LEASE_ID_RANDOM_CHARS)
        .map(|_| LEASE_ID_ALPHABET[rng.gen_range(0..LEASE_ID_ALPHABET.len())] as char);
    let mut id = format!("database/creds/{role_name}/");
    id.extend(time.iter().map(|&c| c as char));
    id.extend(random);
    id
}

impl LeaseManager {
    pub fn new(
        store: Store,
        engines: Engines,
        catalog: Catalog,
        replica: Replica,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            store,
            engines,
            catalog,
            replica,
            retry,
            reaper_wake: Arc::default(),
            pool: Arc::default(),
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            #[cfg(feature = "fault-injection")]
            fault: Arc::default(),
        }
    }

    /// The lock that serializes operations on `lease_id`. `DefaultHasher::new()` has fixed keys,
    /// which is fine: ids are random and this only spreads them over stripes.
    fn lock_for(&self, lease_id: &str) -> &tokio::sync::Mutex<()> {
        &self.locks[self.stripe_of(lease_id)]
    }

    /// Which of the lock stripes `lease_id` falls in.
    fn stripe_of(&self, lease_id: &str) -> usize {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        lease_id.hash(&mut hasher);
        (hasher.finish() % self.locks.len() as u64) as usize
    }

    /// This process among the replicas.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The reaper's wake-up signal.
    pub fn reaper_wake(&self) -> Arc<reaper::ReaperAlarm> {
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

    /// Fails at `point` if armed, as if the process died there. A dead issuer's `creating` lease
    /// falls to the reaper; since this process lives on, the lease is made due at its expiry
    /// rather than at the creation deadline, so that tests need not wait for the deadline.
    #[cfg(feature = "fault-injection")]
    async fn take_fault(&self, point: FaultPoint, lease: &Lease) -> Result<()> {
        let hit = {
            let mut armed = self.fault.lock().unwrap_or_else(|p| p.into_inner());
            let hit = *armed == Some(point);
            if hit {
                *armed = None;
            }
            hit
        };
        if hit {
            self.store
                .reschedule_creating(&lease.id, lease.expires_at)
                .await?;
            self.reaper_wake.wake();
            return Err(Error::Internal(format!("injected fault at {point:?}")));
        }
        Ok(())
    }

    /// Issues a credential for `role_name`: writes the lease, creates the user, returns the login.
    #[tracing::instrument(skip_all, fields(role = %role_name, lease_id), err)]
    pub async fn issue(&self, role_name: &str, requester: &Requester) -> Result<IssuedCredentials> {
        check_name("role name", role_name)?;
        let role = self.catalog.role(role_name).await?;
        // Counted only from here on, once the role is known to be configured: a request for a
        // made-up role name must not create a metric series.
        let labels = crate::metrics::LeaseLabels::checked(role_name, &role.db_name);
        let started = std::time::Instant::now();
        let issued = self.issue_for(role_name, role, requester).await;
        if let Some(labels) = &labels {
            let outcome = crate::metrics::Outcome::of(&issued);
            crate::metrics::lease_issue(labels, outcome, started.elapsed());
        }
        issued
    }

    /// [`Self::issue`] once the role is loaded.
    async fn issue_for(
        &self,
        role_name: &str,
        role: crate::catalog::Role,
        requester: &Requester,
    ) -> Result<IssuedCredentials> {
        let connection = self.catalog.check_allowed(&role.db_name, role_name).await?;
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

        // A warm pool's user first, if the role has one ready of its current version; if
        // issuing it fails for any reason, a user is created as usual.
        let version = (role.warm_pool_size > 0).then(|| pool::fingerprint(&role));
        let mut from_pool = version.and_then(|version| self.pool.take(role_name, version));
        loop {
            let pooled = from_pool.take();
            let pooled_id = pooled.as_ref().map(|taken| taken.id.clone());
            let attempt = self
                .issue_attempt(
                    role_name,
                    &role,
                    &connection,
                    plugin.as_ref(),
                    requester,
                    ttl,
                    max_ttl,
                    pooled,
                )
                .await;
            if let Some(id) = &pooled_id {
                // Whatever happened, this task is done with the pooled row.
                self.pool.release(id);
            }
            match attempt? {
                Attempt::Issued(credentials) => return Ok(credentials),
                Attempt::PoolFailed => continue,
            }
        }
    }

    /// One try at issuing: with a pooled user if given (answering [`Attempt::PoolFailed`] when
    /// it cannot be issued, after seeing to its drop), otherwise with a user created now.
    #[allow(clippy::too_many_arguments)]
    async fn issue_attempt(
        &self,
        role_name: &str,
        role: &crate::catalog::Role,
        connection: &crate::store::Connection,
        plugin: &dyn lessor_plugin::DatabasePlugin,
        requester: &Requester,
        ttl: Duration,
        max_ttl: Duration,
        pooled: Option<pool::Taken>,
    ) -> Result<Attempt> {
        let from_pool = pooled.is_some();
        // One moment for the lease: its issue time, and the time a new user's lease id carries
        // (a pooled row got its id when the pool made it).
        let now = Utc::now();
        let (lease_id, username, password, password_strength) = match pooled {
            Some(taken) => (
                taken.id,
                taken.username,
                taken.password,
                lessor_plugin::PasswordStrength::Guessable,
            ),
            None => {
                let template = UsernameTemplate::parse(
                    role.username_template
                        .as_deref()
                        .unwrap_or(lessor_plugin::credentials::DEFAULT_USERNAME_TEMPLATE),
                )
                .map_err(|e| {
                    Error::Internal(format!("stored username template is invalid: {e}"))
                })?;
                let username = template
                    .generate(
                        plugin.max_username_len(),
                        UsernameContext {
                            role: role_name,
                            display_name: &requester.display_name,
                        },
                    )
                    .map_err(|e| Error::invalid(e.to_string()))?;
                let crate::password_policy::GeneratedPassword { password, strength } =
                    crate::password_policy::generate_for_row(&self.store, connection).await?;
                (new_lease_id(role_name, now), username, password, strength)
            }
        };

        let expires_at =
            now + chrono::Duration::from_std(ttl).map_err(|e| Error::Internal(e.to_string()))?;
        let max_expires_at = now
            + chrono::Duration::from_std(max_ttl).map_err(|e| Error::Internal(e.to_string()))?;
        let creation_deadline = now + chrono::Duration::seconds(CREATION_DEADLINE.as_secs() as i64);
        tracing::Span::current().record("lease_id", lease_id.as_str());

        let lease = Lease {
            id: lease_id.clone(),
            role_name: role_name.to_owned(),
            connection_name: role.db_name.clone(),
            username: username.clone(),
            revocation_statements: role.revocation_statements.clone(),
            rollback_statements: role.rollback_statements.clone(),
            renew_statements: role.renew_statements.clone(),
            issued_at: now,
            last_renewed_at: None,
            expires_at,
            max_expires_at,
            state: LeaseState::Creating,
            next_action_at: creation_deadline,
            attempts: 0,
            last_error: None,
            revoked_at: None,
            owner: requester.accessor.clone(),
            owner_display_name: requester.display_name.clone(),
            revoke_requested: false,
            token_accessor: requester.token_accessor.clone(),
            // The issuer's claim: no other replica touches the lease before the creation
            // deadline unless this one dies first.
            claimed_by: Some(self.replica.id().to_owned()),
            claim_until: Some(creation_deadline),
            // The user's own database is named after it: unique, and already checked to be a
            // safe identifier.
            database_name: role.database_per_lease.then(|| username.clone()),
        };

        if from_pool {
            // The pooled row becomes the lease in one transaction, only while this replica
            // still holds it; from then on the user's fate is the lease's, as for a new user.
            let taken = self.store.take_pooled_user(self.replica.id(), &lease).await;
            self.pool.release(&lease_id);
            if !taken? {
                // Taken over meanwhile (the role was rewritten, a revoke-prefix, ...): it must
                // not be issued.
                self.pool.row_lost();
                self.drop_lost_pooled_user(
                    &lease.connection_name,
                    &username,
                    &lease.revocation_statements,
                )
                .await;
                return Ok(Attempt::PoolFailed);
            }
            let activated = tokio::time::timeout(
                CREATE_TIMEOUT,
                plugin.activate_pooled_user(&username, expires_at),
            )
            .await;
            match activated {
                Ok(Ok(())) => self.pool.count_issued(),
                Ok(Err(error)) => {
                    tracing::warn!(username = %username, %error, "cannot activate a pooled user; dropping it and creating a user instead");
                    self.roll_back(&lease).await;
                    return Ok(Attempt::PoolFailed);
                }
                Err(_elapsed) => {
                    // As for a creation that timed out: the reaper drops it at the deadline.
                    tracing::error!(username = %username, "activating a pooled user timed out; creating a user instead");
                    return Ok(Attempt::PoolFailed);
                }
            }
        } else {
            // The durable write comes first: from here on, the user's fate is recorded. The
            // reaper needs no wake-up: the creation deadline is further than its longest sleep.
            self.store.insert_lease(&lease).await?;

            #[cfg(feature = "fault-injection")]
            self.take_fault(FaultPoint::AfterLeaseWrite, &lease).await?;

            let created = tokio::time::timeout(
                CREATE_TIMEOUT,
                plugin.create_user(&NewUserRequest {
                    username: &username,
                    password: &password,
                    password_strength,
                    expiration: expires_at,
                    statements: &role.creation_statements,
                    options: &role.options,
                    database: lease.database_name.as_deref().map(|name| NewDatabase {
                        name,
                        template: role.template_database.as_deref(),
                    }),
                }),
            )
            .await;
            match created {
                Ok(Ok(())) => {}
                Ok(Err(create_error)) => {
                    self.roll_back(&lease).await;
                    return Err(Error::database(
                        format!("cannot create a user for role {role_name}"),
                        create_error,
                    ));
                }
                Err(_elapsed) => {
                    // The statement may still land on the server, so dropping the user now could
                    // come too early: the lease stays `creating` for the reaper's deadline.
                    tracing::error!(username = %username, timeout_secs = CREATE_TIMEOUT.as_secs(), "user creation timed out; the reaper drops the user at the creation deadline");
                    return Err(Error::database(
                        format!("cannot create a user for role {role_name}"),
                        lessor_plugin::PluginError::Unavailable(format!(
                            "no answer within {} s",
                            CREATE_TIMEOUT.as_secs()
                        )),
                    ));
                }
            }
        }

        #[cfg(feature = "fault-injection")]
        self.take_fault(FaultPoint::AfterUserCreated, &lease)
            .await?;

        if !self.store.activate_lease(&lease_id, expires_at).await? {
            // A revoke met the lease while the user was being created (or the reaper took it
            // over): the credentials must not leave this process, and the user must go.
            let dropped = self.revoke_lease(&lease_id, Revoker::Issuer).await;
            tracing::info!(username = %username, dropped = dropped.is_ok(), "lease revoked during creation; credentials withheld");
            return Err(Error::Conflict(match dropped {
                Ok(()) => format!(
                    "lease {lease_id} was revoked while its user was being created; the user was dropped"
                ),
                Err(e) => format!(
                    "lease {lease_id} was revoked while its user was being created; dropping the user failed and will be retried: {e}"
                ),
            }));
        }
        // The expiry may be earlier than what the reaper sleeps towards.
        self.reaper_wake.due_at(expires_at);

        tracing::info!(username = %username, ttl_secs = ttl.as_secs(), "issued credential");
        let connection_url = lease
            .database_name
            .as_deref()
            .and_then(|database| plugin.user_connection_url(&username, Some(database)));
        Ok(Attempt::Issued(IssuedCredentials {
            lease_id,
            username,
            password,
            lease_duration: ttl,
            database: lease.database_name,
            connection_url,
        }))
    }

    /// Undoes a failed creation: drops whatever part of the user exists and marks the lease
    /// revoked; if the drop fails too, the lease stays for the reaper to retry.
    async fn roll_back(&self, lease: &Lease) {
        let statements = if lease.rollback_statements.is_empty() {
            &lease.revocation_statements
        } else {
            &lease.rollback_statements
        };
        let outcome = match self.engines.get(&lease.connection_name).await {
            Ok(plugin) => plugin
                .delete_user(&DeleteUserRequest {
                    username: &lease.username,
                    statements,
                    database: lease.database_name.as_deref(),
                })
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let now = Utc::now();
        let recorded = match outcome {
            Ok(()) => self
                .store
                .mark_revoked(&lease.id, now, Some("creation failed; rolled back"), true)
                .await
                .map(|_| ()),
            Err(error) => {
                tracing::warn!(lease_id = %lease.id, %error, "rollback after failed creation failed; the reaper will retry");
                self.store
                    .record_revocation_failure(&lease.id, &error, now + self.retry.delay(1, true))
                    .await
                    .map(|_| ())
            }
        };
        if let Err(e) = recorded {
            tracing::error!(lease_id = %lease.id, error = %e, "cannot record rollback; the lease stays due at its expiry");
        }
        self.reaper_wake.wake();
    }

    async fn lease(&self, lease_id: &str, holder: Holder<'_>) -> Result<Lease> {
        check_lease_path("lease_id", lease_id)?;
        let lease = self
            .store
            .get_lease(lease_id)
            .await?
            .ok_or_else(|| Error::not_found("lease", lease_id))?;
        holder.check(&lease)?;
        Ok(lease)
    }

    /// A lease as `sys/leases/lookup` shows it. A revoked lease answers "invalid lease" (400),
    /// as Vault does: it no longer exists as far as clients are concerned.
    pub async fn lookup(&self, lease_id: &str, holder: Holder<'_>) -> Result<LeaseInfo> {
        let lease = self.lease(lease_id, holder).await?;
        if lease.state == LeaseState::Revoked {
            return Err(Error::invalid("invalid lease"));
        }
        let now = Utc::now();
        Ok(LeaseInfo {
            issue_time: lease.issued_at,
            expire_time: Some(lease.expires_at),
            last_renewal: lease.last_renewed_at,
            renewable: lease.state == LeaseState::Active && lease.max_expires_at > now,
            ttl: (lease.expires_at - now).num_seconds().max(0),
            state: lease.state.as_str(),
            role: lease.role_name,
            username: lease.username,
            revocation_attempts: lease.attempts,
            last_error: lease.last_error,
            connection: lease.connection_name,
            owner: lease.owner,
            owner_display_name: lease.owner_display_name,
            id: lease.id,
        })
    }

    /// The next path segment of every live lease under `prefix`, Vault's `LIST sys/leases/lookup`:
    /// a lease id as a key, a deeper level as `segment/`. `prefix` is a path (`database/creds/app`
    /// lists `database/creds/app/...`, never `database/creds/app2/...`). The ids are read page by
    /// page, and each deeper level costs one query however many leases it holds, so no more than a
    /// page of ids is in memory besides the keys.
    ///
    /// `page` pages the keys as OpenBao does: only keys sorting after `page.after` (a key of an
    /// earlier answer), at most `page.limit` of them; without a limit every key is returned.
    /// With `page.owner_display_name`, only that owner's leases count, so a deeper level is
    /// listed only when it holds one of them.
    pub async fn list(&self, prefix: &str, page: &ListPage) -> Result<Vec<String>> {
        let prefix = prefix.trim_start_matches('/');
        if !prefix.is_empty() {
            check_lease_path("prefix", prefix)?;
        }
        let range = IdRange::under(prefix);
        let base_len = range.start.len();
        let limit = page.limit.unwrap_or(usize::MAX);
        let mut keys: Vec<String> = Vec::new();
        // The cursor is an id: everything after it is listed. Past a deeper level `seg/`, every id
        // in it sorts below `seg/` followed by 0x7F (ids are ASCII below 0x7F), every later id above.
        let mut after = match page.after.as_deref() {
            None | Some("") => String::new(),
            Some(key) => match key.strip_suffix('/') {
                Some(level) => format!("{}{level}/\u{7f}", range.start),
                None => format!("{}{key}", range.start),
            },
        };
        'pages: while keys.len() < limit {
            let ids = match page.owner_display_name.as_deref() {
                Some(owner) => {
                    self.store
                        .live_lease_ids_of_owner_in(&range, &after, PAGE, owner)
                        .await?
                }
                None => self.store.live_lease_ids_in(&range, &after, PAGE).await?,
            };
            let Some(last) = ids.last() else { break };
            let last = last.clone();
            for id in ids {
                if keys.len() == limit {
                    break 'pages;
                }
                let rest = &id[base_len..];
                match rest.find('/') {
                    Some(slash) => {
                        let level = &rest[..=slash];
                        keys.push(level.to_owned());
                        after = format!("{}{level}\u{7f}", range.start);
                        continue 'pages;
                    }
                    None => keys.push(rest.to_owned()),
                }
            }
            after = last;
        }
        Ok(keys)
    }

    /// Renews a lease by `increment` (or the role's default TTL), never past its max TTL.
    #[tracing::instrument(skip_all, fields(lease_id = %lease_id), err)]
    pub async fn renew(
        &self,
        lease_id: &str,
        increment: Option<Duration>,
        holder: Holder<'_>,
    ) -> Result<Renewed> {
        check_lease_path("lease_id", lease_id)?;
        // Taken before reading, so a revocation in progress finishes first and is seen.
        let _serial = self.lock_for(lease_id).lock().await;
        let lease = self.lease(lease_id, holder).await?;
        let renewed = self.renew_loaded(lease_id, &lease, increment).await;
        if let Some(labels) =
            crate::metrics::LeaseLabels::checked(&lease.role_name, &lease.connection_name)
        {
            crate::metrics::lease_renewal(&labels, crate::metrics::Outcome::of(&renewed));
        }
        renewed
    }

    /// [`Self::renew`] with the lease's lock held and its row read.
    async fn renew_loaded(
        &self,
        lease_id: &str,
        lease: &Lease,
        increment: Option<Duration>,
    ) -> Result<Renewed> {
        match lease.state {
            LeaseState::Active => {}
            LeaseState::Revoked | LeaseState::Revoking => {
                return Err(Error::invalid(format!(
                    "lease is revoked and cannot be renewed: {lease_id}"
                )))
            }
            LeaseState::Creating => {
                return Err(Error::invalid(format!(
                    "lease {lease_id} is still being created and cannot be renewed"
                )))
            }
        }
        let now = Utc::now();
        if lease.expires_at <= now {
            return Err(Error::invalid(format!(
                "lease {lease_id} has expired and cannot be renewed"
            )));
        }
        if lease.max_expires_at <= now {
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
        // Past the end of time is "as long as allowed": the cap applies.
        let wanted = chrono::Duration::from_std(requested)
            .ok()
            .and_then(|requested| now.checked_add_signed(requested))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let new_expires = wanted.min(lease.max_expires_at);
        let mut warnings = Vec::new();
        if new_expires < wanted {
            let allowed = (new_expires - now).num_seconds();
            warnings.push(format!(
                "TTL of {}s exceeded the effective max_ttl of the lease; TTL value is capped at {allowed}s",
                requested.as_secs()
            ));
        }
        let plugin = self.engines.get(&lease.connection_name).await?;
        plugin
            .update_user(&UpdateUserRequest {
                username: &lease.username,
                password: None,
                expiration: Some(ExpirationChange {
                    new_expiration: new_expires,
                    statements: &lease.renew_statements,
                }),
            })
            .await
            .map_err(|e| Error::database(format!("cannot renew lease {lease_id}"), e))?;
        if !self.store.renew_lease(lease_id, new_expires, now).await? {
            // Another replica revoked it: only this process's operations are serialized.
            return Err(Error::invalid(format!(
                "lease is revoked and cannot be renewed: {lease_id}"
            )));
        }
        self.reaper_wake.wake();
        Ok(Renewed {
            lease_id: lease_id.to_owned(),
            lease_duration: (new_expires - now).to_std().unwrap_or_default(),
            warnings,
        })
    }

    /// Revokes one lease now. Revoking a lease that is already revoked succeeds; revoking one
    /// whose user is still being created succeeds too: its issuer drops the user.
    #[tracing::instrument(skip_all, fields(lease_id = %lease_id), err)]
    pub async fn revoke(&self, lease_id: &str, holder: Holder<'_>) -> Result<()> {
        check_lease_path("lease_id", lease_id)?;
        // The claim that reads the row (or, when it takes nothing, one read) decides "no such
        // lease", whose it is and what to do with it.
        if self
            .revoke_found(lease_id, Revoker::Request { force: false }, holder)
            .await?
        {
            Ok(())
        } else {
            Err(Error::not_found("lease", lease_id))
        }
    }

    /// Revokes the lease `lease_id` as `revoker` (see [`Revoker`]), under the lease's lock (this
    /// process) and its claim in the store (every replica), from a fresh read of its row. A
    /// missing lease counts as revoked. A client's revoke that finds another replica revoking the
    /// lease waits for that replica to finish (or its claim to end), so it answers only once the
    /// user is gone or the revocation failed.
    pub(crate) async fn revoke_lease(&self, lease_id: &str, revoker: Revoker) -> Result<()> {
        self.revoke_found(lease_id, revoker, Holder::Anyone)
            .await
            .map(|_found| ())
    }

    /// [`Self::revoke_lease`], answering whether the lease existed when first read, for a lease
    /// of `holder`'s (checked on that first read: a lease's owner never changes).
    async fn revoke_found(
        &self,
        lease_id: &str,
        revoker: Revoker,
        holder: Holder<'_>,
    ) -> Result<bool> {
        let _serial = self.lock_for(lease_id).lock().await;
        // A client's revocation of a live lease of the holder's: claimed and read in one write.
        // Every other case (no such lease, being created, revoked, someone else's, held by
        // another replica) is told apart by the read below.
        if let Revoker::Request { force } = revoker {
            let claim = self.replica.claim(Utc::now());
            if let Some(lease) = self
                .store
                .claim_for_revocation(lease_id, &claim, holder.owner())
                .await?
            {
                return self.drop_user(lease, force).await.map(|()| true);
            }
        }
        let give_up_at =
            tokio::time::Instant::now() + self.replica.claim_length() + crate::replica::STALE_AFTER;
        let mut first_read = true;
        loop {
            let Some(lease) = self.store.get_lease(lease_id).await? else {
                return Ok(!first_read);
            };
            if first_read {
                holder.check(&lease)?;
            }
            first_read = false;
            let now = Utc::now();
            if revoker == Revoker::Reaper
                && lease.state == LeaseState::Active
                && lease.next_action_at > now
            {
                // Renewed since the reaper claimed it: give the claim back.
                self.store
                    .release_lease_claim(lease_id, self.replica.id())
                    .await?;
                return Ok(true);
            }
            let claim = self.replica.claim(now);
            let claimed = match (lease.state, revoker) {
                (LeaseState::Revoked, _) => return Ok(true),
                (LeaseState::Creating, Revoker::Request { .. }) => {
                    if self.store.request_revocation(lease_id).await? {
                        tracing::info!(username = %lease.username, "revocation requested while the user is being created; its issuer drops it");
                        return Ok(true);
                    }
                    false
                }
                (LeaseState::Creating, Revoker::Reaper) => {
                    self.store
                        .take_over_creating(lease_id, &claim, false)
                        .await?
                }
                (LeaseState::Creating, Revoker::Issuer) => {
                    self.store
                        .take_over_creating(lease_id, &claim, true)
                        .await?
                }
                // The reaper acts on an active lease only while it is still due: a renewal on
                // another replica may have moved it since the reaper read it.
                (LeaseState::Active, Revoker::Reaper) => {
                    self.store
                        .mark_revoking(lease_id, &claim, Some(now))
                        .await?
                }
                (LeaseState::Active | LeaseState::Revoking, _) => {
                    self.store.mark_revoking(lease_id, &claim, None).await?
                }
            };
            if claimed {
                let force = matches!(revoker, Revoker::Request { force: true });
                return self.drop_user(lease, force).await.map(|()| true);
            }
            // The lease moved on, or another replica holds it. The reaper leaves it to that
            // replica (or to a later pass); the others look again until that claim ends.
            if revoker == Revoker::Reaper {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= give_up_at {
                return Err(Error::Unavailable(format!(
                    "lease {lease_id} is being revoked by replica {}, which has not finished; try again",
                    lease.claimed_by.as_deref().unwrap_or("unknown")
                )));
            }
            tokio::time::sleep(CLAIM_POLL).await;
        }
    }

    /// Drops the user of a lease marked `revoking` and records the outcome. With `force`, a
    /// failed drop still marks the lease revoked (the operator's explicit choice, recorded in
    /// `last_error`).
    async fn drop_user(&self, lease: Lease, force: bool) -> Result<()> {
        let labels = crate::metrics::LeaseLabels::checked(&lease.role_name, &lease.connection_name);
        let started = std::time::Instant::now();
        let record = |outcome| {
            if let Some(labels) = &labels {
                crate::metrics::lease_revocation(labels, outcome, started.elapsed());
            }
        };
        let outcome = async {
            let plugin = self.engines.get(&lease.connection_name).await?;
            plugin
                .delete_user(&DeleteUserRequest {
                    username: &lease.username,
                    statements: &lease.revocation_statements,
                    database: lease.database_name.as_deref(),
                })
                .await
                .map_err(|e| Error::database(format!("cannot revoke lease {}", lease.id), e))
        }
        .await;
        match outcome {
            Ok(()) => {
                let now = Utc::now();
                self.store.mark_revoked(&lease.id, now, None, true).await?;
                log_revoked(&lease, now);
                record(crate::metrics::Outcome::Success);
                Ok(())
            }
            Err(error) => {
                record(if force {
                    crate::metrics::Outcome::Forced
                } else {
                    crate::metrics::Outcome::Failure
                });
                self.record_drop_failure(&lease, error, force).await
            }
        }
    }

    /// What a failed drop leaves: with `force`, the lease marked revoked anyway (the operator's
    /// explicit choice, recorded in `last_error`, the user kept on record for reconciliation);
    /// otherwise the failure recorded and the retry scheduled by the retry policy.
    async fn record_drop_failure(&self, lease: &Lease, error: Error, force: bool) -> Result<()> {
        if force {
            let note = format!("force-revoked; the database user may remain: {error}");
            self.store
                .mark_revoked(&lease.id, Utc::now(), Some(&note), false)
                .await?;
            tracing::warn!(lease_id = %lease.id, username = %lease.username, %error, "force-revoked despite failure");
            return Ok(());
        }
        let transient = retry::is_transient(&error);
        let attempts = self
            .store
            .record_revocation_failure(
                &lease.id,
                &error.to_string(),
                Utc::now() + self.retry.delay(lease.attempts + 1, transient),
            )
            .await?;
        if self.retry.flag(attempts, transient) {
            tracing::error!(lease_id = %lease.id, attempts, transient, %error, "revocation keeps failing, or cannot succeed until something changes; still retrying");
        } else {
            tracing::warn!(lease_id = %lease.id, attempts, %error, "revocation failed; will retry");
        }
        self.reaper_wake.wake();
        Err(error)
    }

    /// Revokes every live lease under the path `prefix` (`database/creds/app` means
    /// `database/creds/app/` and below, never `database/creds/app2`); a prefix without a trailing
    /// `/` that is itself a lease id revokes that lease, as in Vault. Returns how many were revoked
    /// (a lease still being created counts: its issuer drops the user). Without `force`, any
    /// failure makes the whole call fail (the failed leases stay for the reaper to retry).
    #[tracing::instrument(skip_all, fields(prefix = %prefix, force), err)]
    pub async fn revoke_prefix(&self, prefix: &str, force: bool) -> Result<usize> {
        check_lease_path("prefix", prefix)?;
        if !prefix.ends_with('/') {
            if let Some(lease) = self.store.get_lease(prefix).await? {
                if lease.state == LeaseState::Revoked {
                    return Ok(0);
                }
                self.revoke_lease(prefix, Revoker::Request { force })
                    .await?;
                return Ok(1);
            }
        }
        let range = IdRange::under(prefix);
        // The warm pools' users under the prefix go too (a leak response must not leave users
        // made before it): they are not leases, so they are not counted.
        if let Err(error) = self.drain_warm_pools_in(&range).await {
            tracing::warn!(%error, "cannot drop the pooled users under the prefix; they are dropped later");
        }
        let store = &self.store;
        let tally = self
            .revoke_pages(
                |after| {
                    let range = &range;
                    async move { store.live_lease_ids_in(range, &after, PAGE).await }
                },
                force,
            )
            .await?;
        tally.into_result(&format!("under {prefix}"))
    }

    /// Revokes every live lease obtained by the tokens with these accessors (a revoked token's
    /// leases go with it), with the same bounded concurrency and race rules as revoke-prefix.
    /// Returns how many were revoked; any failure makes the call fail after trying them all (the
    /// failed leases stay for the reaper to retry).
    #[tracing::instrument(skip_all, fields(tokens = accessors.len()), err)]
    pub async fn revoke_by_token_accessors(&self, accessors: &[String]) -> Result<usize> {
        let mut total = Tally::default();
        for accessor in accessors {
            let store = &self.store;
            let tally = self
                .revoke_pages(
                    |after| async move {
                        store
                            .live_lease_ids_of_token(accessor, &after, PAGE)
                            .await
                    },
                    false,
                )
                .await?;
            total.add(tally);
        }
        total.into_result("obtained by the revoked tokens")
    }

    /// Revokes the leases `ids` for a client's bulk request (`force` as in `revoke-force`), as
    /// [`Self::revoke_lease`] revokes each, with one outcome per id, in order; but the common case
    /// in few round trips: the leases that can be claimed at once are claimed in one store
    /// statement, their users dropped by one `delete_users` per connection, and their end
    /// recorded in one transaction. The rest (still being created, held by another replica,
    /// already revoked) go through [`Self::revoke_lease`], which tells those cases apart. The
    /// leases' locks are held throughout, in stripe order, so a renew or a single revoke in this
    /// process waits as it would for [`Self::revoke_lease`]. (The reaper's batches go through
    /// [`Self::revoke_due`].)
    pub(crate) async fn revoke_batch(&self, ids: &[String], force: bool) -> Vec<Result<()>> {
        let guards = self.lock_all(ids).await;
        let claim = self.replica.claim(Utc::now());
        let claimed = match self.store.mark_revoking_many(ids, &claim).await {
            Ok(claimed) => claimed,
            Err(error) => {
                drop(guards);
                let message = error.to_string();
                return ids
                    .iter()
                    .map(|_| Err(Error::Store(message.clone())))
                    .collect();
            }
        };
        let claimed_ids: HashSet<String> = claimed.iter().map(|l| l.id.clone()).collect();
        let mut outcomes: HashMap<String, Result<()>> = self.drop_users(claimed, force).await;
        drop(guards);
        for id in ids.iter().filter(|id| !claimed_ids.contains(*id)) {
            outcomes.insert(
                id.clone(),
                self.revoke_lease(id, Revoker::Request { force }).await,
            );
        }
        ids.iter()
            .map(|id| {
                outcomes.remove(id).unwrap_or(Ok(())) // a duplicate id: done with its first
            })
            .collect()
    }

    /// The locks of every lease in `ids`, taken in stripe order so that two batches sharing
    /// stripes cannot deadlock.
    async fn lock_all(&self, ids: &[String]) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = ids.iter().map(|id| self.stripe_of(id)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            guards.push(self.locks[stripe].lock().await);
        }
        guards
    }

    /// The reaper's revocation of leases [`LeaseStore::claim_due_leases`] claimed: a live one is
    /// already `revoking` under this replica's claim, so its user is dropped at once from the
    /// lease the claim returned (no read; claimed again only if the batch waited so long that
    /// the claim would not outlast the drop); a `creating` one, or one whose row did not decode,
    /// goes through [`Self::revoke_lease`], which takes it over from its issuer. Outcomes in the
    /// order of `due`.
    pub(crate) async fn revoke_due(&self, due: Vec<crate::store::DueLease>) -> Vec<Result<()>> {
        let ids: Vec<String> = due.iter().map(|d| d.id.clone()).collect();
        let guards = self.lock_all(&ids).await;
        let (claimed, others): (Vec<_>, Vec<_>) = due
            .into_iter()
            .partition(|d| d.state == LeaseState::Revoking && d.lease.is_some());
        let claimed: Vec<Lease> = claimed.into_iter().filter_map(|d| d.lease).collect();
        // A batch may have waited for its connection's turn since the claim: if what is left of
        // the claim no longer covers a whole drop, claim again first, so the claim cannot lapse
        // mid-drop and hand the lease to another replica. What is no longer this replica's (its
        // claim lapsed and another took the lease, or revoked it) is left to its new holder.
        let now = Utc::now();
        let (mut claimed, lapsing): (Vec<Lease>, Vec<Lease>) =
            claimed.into_iter().partition(|lease| {
                lease
                    .claim_until
                    .is_some_and(|until| self.replica.claim_covers_work(until, now))
            });
        let mut outcomes = HashMap::new();
        if !lapsing.is_empty() {
            let lapsing: Vec<String> = lapsing.into_iter().map(|lease| lease.id).collect();
            match self
                .store
                .mark_revoking_many(&lapsing, &self.replica.claim(now))
                .await
            {
                Ok(still_ours) => claimed.extend(still_ours),
                Err(error) => {
                    let message = error.to_string();
                    for id in lapsing {
                        outcomes.insert(id, Err(Error::Store(message.clone())));
                    }
                }
            }
        }
        outcomes.extend(self.drop_users(claimed, false).await);
        drop(guards);
        for other in others {
            let outcome = self.revoke_lease(&other.id, Revoker::Reaper).await;
            outcomes.insert(other.id, outcome);
        }
        ids.iter()
            .map(|id| outcomes.remove(id).unwrap_or(Ok(())))
            .collect()
    }

    /// Drops the users of leases marked `revoking` by this replica, one `delete_users` per
    /// connection, then records the successes in one transaction and each failure as
    /// [`Self::drop_user`] does.
    async fn drop_users(&self, leases: Vec<Lease>, force: bool) -> HashMap<String, Result<()>> {
        let mut by_connection: HashMap<String, Vec<Lease>> = HashMap::new();
        for lease in leases {
            by_connection
                .entry(lease.connection_name.clone())
                .or_default()
                .push(lease);
        }
        let mut outcomes = HashMap::new();
        let mut dropped: Vec<Lease> = Vec::new();
        let mut failed: Vec<(Lease, Error)> = Vec::new();
        for (connection, leases) in by_connection {
            let started = std::time::Instant::now();
            let plugin = match self.engines.get(&connection).await {
                Ok(plugin) => plugin,
                Err(error) => {
                    let message = error.to_string();
                    failed.extend(
                        leases
                            .into_iter()
                            .map(|l| (l, Error::Unavailable(message.clone()))),
                    );
                    continue;
                }
            };
            let requests: Vec<DeleteUserRequest<'_>> = leases
                .iter()
                .map(|lease| DeleteUserRequest {
                    username: &lease.username,
                    statements: &lease.revocation_statements,
                    database: lease.database_name.as_deref(),
                })
                .collect();
            let results = plugin.delete_users(&requests).await;
            drop(requests);
            let elapsed = started.elapsed() / leases.len().max(1) as u32;
            for (lease, result) in leases.into_iter().zip(results) {
                if let Some(labels) =
                    crate::metrics::LeaseLabels::checked(&lease.role_name, &lease.connection_name)
                {
                    let outcome = match (&result, force) {
                        (Ok(()), _) => crate::metrics::Outcome::Success,
                        (Err(_), true) => crate::metrics::Outcome::Forced,
                        (Err(_), false) => crate::metrics::Outcome::Failure,
                    };
                    crate::metrics::lease_revocation(&labels, outcome, elapsed);
                }
                match result {
                    Ok(()) => dropped.push(lease),
                    Err(e) => {
                        let error = Error::database(format!("cannot revoke lease {}", lease.id), e);
                        failed.push((lease, error));
                    }
                }
            }
        }
        if !dropped.is_empty() {
            let ids: Vec<String> = dropped.iter().map(|l| l.id.clone()).collect();
            let now = Utc::now();
            match self
                .store
                .mark_revoked_many(&ids, self.replica.id(), now)
                .await
            {
                Ok(marked) => {
                    let marked: HashSet<String> = marked.into_iter().collect();
                    for lease in &dropped {
                        if marked.contains(&lease.id) {
                            log_revoked(lease, now);
                        } else {
                            // Another replica took the lease over while this one dropped the
                            // user (the drop outlasted the claim, or this replica's heartbeat
                            // went stale): it drops the user again, which finds it gone, and
                            // records the revocation itself.
                            tracing::warn!(lease_id = %lease.id, username = %lease.username, "user dropped, but another replica took the lease over meanwhile and records its revocation");
                        }
                        outcomes.insert(lease.id.clone(), Ok(()));
                    }
                }
                Err(error) => {
                    // The users are gone; the leases stay `revoking` under this replica's claim
                    // and the reaper finishes them (dropping a missing user succeeds).
                    let message = error.to_string();
                    for lease in &dropped {
                        outcomes.insert(lease.id.clone(), Err(Error::Store(message.clone())));
                    }
                }
            }
        }
        for (lease, error) in failed {
            let id = lease.id.clone();
            let outcome = self.record_drop_failure(&lease, error, force).await;
            outcomes.insert(id, outcome);
        }
        outcomes
    }

    /// Revokes page after page of lease ids, `BULK_REVOCATION_CONCURRENCY` at a time. `page`
    /// gives the ids after its argument (exclusive), in id order; each lease is visited once, so
    /// leases issued meanwhile with lower ids, and failures, are left (to the reaper) rather than
    /// looping for as long as issuers keep writing.
    async fn revoke_pages<F, Fut>(&self, mut page: F, force: bool) -> Result<Tally>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<String>>>,
    {
        let mut tally = Tally::default();
        let mut after = String::new();
        loop {
            let ids = page(after.clone()).await?;
            let Some(last) = ids.last() else { break };
            after = last.clone();
            let batches: Vec<Vec<String>> = ids
                .chunks(REVOCATION_BATCH)
                .map(<[String]>::to_vec)
                .collect();
            let results: Vec<Result<()>> = futures::stream::iter(batches)
                .map(|batch| async move { self.revoke_batch(&batch, force).await })
                .buffer_unordered(BULK_REVOCATION_CONCURRENCY)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .flatten()
                .collect();
            for outcome in results {
                match outcome {
                    Ok(()) => tally.revoked += 1,
                    Err(e) => {
                        tally.failed += 1;
                        tally.first_error.get_or_insert(e);
                    }
                }
            }
        }
        Ok(tally)
    }
}

/// The one log line of a recorded revocation, written by whoever recorded it: `expired` when
/// the lease had reached its end (the reaper's usual work) rather than being revoked early.
fn log_revoked(lease: &Lease, now: DateTime<Utc>) {
    let expired = lease.expires_at <= now;
    tracing::info!(lease_id = %lease.id, username = %lease.username, expired, "revoked");
}

/// The outcome of a bulk revocation.
#[derive(Default)]
struct Tally {
    revoked: usize,
    failed: usize,
    first_error: Option<Error>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.revoked += other.revoked;
        self.failed += other.failed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn into_result(self, what: &str) -> Result<usize> {
        match self.first_error {
            Some(error) => Err(Error::Conflict(format!(
                "{} of {} leases {what} could not be revoked and will be retried; first error: {error}",
                self.failed,
                self.revoked + self.failed
            ))),
            None => Ok(self.revoked),
        }
    }
}

/// Housekeeping removes expired tokens (and the subtrees of removed parents) and hands their
/// accessors here first: their leases go with them, as in Vault.
#[async_trait::async_trait]
impl crate::audit::housekeeping::TokenLeaseRevoker for LeaseManager {
    async fn revoke_leases_of_tokens(&self, accessors: &[String]) -> Result<()> {
        self.revoke_by_token_accessors(accessors).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_paths_reject_traversal_and_metacharacters() {
        check_lease_path("lease_id", "database/creds/app/AbC123").unwrap();
        for bad in ["", "database/../x", "a;b", "a b", "ü", "a'b"] {
            assert!(check_lease_path("lease_id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lease_ids_sort_by_issue_time_and_differ_within_a_millisecond() {
        let at = |millis: i64| DateTime::<Utc>::from_timestamp_millis(millis).unwrap();
        let times = [
            0,
            1,
            61,
            62,
            1_000,
            1_764_000_000_000,
            1_764_000_000_001,
            1_764_000_060_000,
            4_102_444_800_000,
        ];
        let ids: Vec<String> = times.iter().map(|&t| new_lease_id("app", at(t))).collect();
        for id in &ids {
            check_lease_path("lease_id", id).unwrap();
            let last = id.strip_prefix("database/creds/app/").unwrap();
            assert_eq!(
                last.len(),
                LEASE_ID_TIME_CHARS + LEASE_ID_RANDOM_CHARS,
                "{id}"
            );
        }
        assert!(
            ids.windows(2).all(|pair| pair[0] < pair[1]),
            "ids out of time order: {ids:?}"
        );
        assert_eq!(&ids[0]["database/creds/app/".len()..][..8], "00000000");
        assert_eq!(&ids[3]["database/creds/app/".len()..][..8], "00000010");

        let same_moment: HashSet<String> = (0..1000)
            .map(|_| new_lease_id("app", at(1_764_000_000_000)))
            .collect();
        assert_eq!(same_moment.len(), 1000);
    }
}
