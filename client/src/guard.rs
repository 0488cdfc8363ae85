//! [`LeaseGuard`]: a lease that renews itself in the background while the guard lives, and is
//! revoked when the guard is dropped, including when a test panics and unwinds. Its docs say how,
//! and what no guard can cover.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::{Client, Lease};

/// The longest wait between two attempts at a renewal that failed for a passing reason.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// The first wait after such a failure; it doubles with each failure in a row.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);

/// Where a guard's background renewal stands.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Renewal {
    /// Renewing; unless renewed again, the lease ends at `expires_at`.
    Active { expires_at: Instant },
    /// Lessor issued the lease as not renewable (or with no time at all); it ends at `expires_at`.
    NotRenewable { expires_at: Instant },
    /// The role's max TTL caps the lease, so renewing cannot extend it: renewal stopped and the
    /// lease ends at `expires_at`.
    MaxTtlReached { expires_at: Instant },
    /// Renewal stopped: Lessor refused a renewal (the lease was revoked, the token lost the
    /// right, the lease is unknown), or could not be reached before the lease ran out.
    Failed {
        error: Arc<Error>,
        expires_at: Instant,
    },
}

impl Renewal {
    /// Whether the background task is still renewing.
    pub fn is_active(&self) -> bool {
        matches!(self, Self::Active { .. })
    }

    /// When the lease ends unless renewed again (reckoned from when its last answer arrived).
    pub fn expires_at(&self) -> Instant {
        match self {
            Self::Active { expires_at }
            | Self::NotRenewable { expires_at }
            | Self::MaxTtlReached { expires_at }
            | Self::Failed { expires_at, .. } => *expires_at,
        }
    }
}

/// Owns a lease: renews it in the background at about two thirds of its duration, and revokes it
/// when dropped. [`LeaseGuard::revoke`] revokes explicitly and reports the outcome.
///
/// # Revocation on drop
///
/// A task spawned from `Drop` onto the caller's runtime would not be enough: a `#[tokio::test]`
/// body that panics, or simply returns, drops its runtime right after, and the runtime cancels
/// the task before its request is sent. So a guard dropped without [`LeaseGuard::revoke`]
/// revokes on a thread of its own, with its own runtime and connections, and waits for Lessor's
/// answer (at most the client's timeout). In a task of a multi-thread runtime the wait goes
/// through [`tokio::task::block_in_place`], so the runtime's other tasks keep running meanwhile.
/// A failure is printed on standard error (a destructor has no caller to return it to).
///
/// # What no guard can cover
///
/// A process that ends without unwinding (`panic = "abort"`, `std::process::exit`, SIGKILL, a
/// test harness killing a test on timeout) runs no destructor, and neither does
/// [`std::mem::forget`]. Lessor ending the lease at the end of its TTL is the backstop there:
/// keep the TTL of test roles short, since the guard renews the lease for as long as it lives
/// anyway. And a drop on a current-thread runtime that also serves the Lessor it talks to (an
/// in-process server in the same test runtime) cannot be answered while the thread waits; such
/// a test revokes with [`LeaseGuard::revoke`] or runs on a multi-thread runtime.
///
/// ```no_run
/// # async fn example() -> Result<(), lessor_client::Error> {
/// use lessor_client::{Client, LeaseGuard};
///
/// let client = Client::from_env()?;
/// let credential = client.creds("app-readonly").await?;
/// let guard = LeaseGuard::new(&client, &credential.lease);
/// // ... use credential.username and credential.password.expose() for as long as needed:
/// // the lease is renewed meanwhile.
/// assert!(guard.renewal().is_active());
/// guard.revoke().await?; // or let it drop
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct LeaseGuard {
    /// Revokes the lease on drop; also what the renewal task renews with.
    client: Client,
    lease_id: String,
    renewal: watch::Receiver<Renewal>,
    /// The renewal task, stopped before the lease is revoked so it cannot renew a dying lease.
    renewer: Option<JoinHandle<()>>,
    /// Whether dropping the guard still has to revoke the lease.
    armed: bool,
}

impl LeaseGuard {
    /// Takes charge of `lease`. The renewal runs on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, like [`tokio::spawn`].
    pub fn new(client: &Client, lease: &Lease) -> Self {
        let expires_at = Instant::now() + lease.duration;
        let renewable = lease.renewable && !lease.duration.is_zero();
        let initial = if renewable {
            Renewal::Active { expires_at }
        } else {
            Renewal::NotRenewable { expires_at }
        };
        let (report, renewal) = watch::channel(initial);
        let renewer = renewable.then(|| {
            tokio::spawn(keep_renewed(
                client.clone(),
                lease.id.clone(),
                lease.duration,
                report,
            ))
        });
        Self {
            client: client.clone(),
            lease_id: lease.id.clone(),
            renewal,
            renewer,
            armed: true,
        }
    }

    pub fn lease_id(&self) -> &str {
        &self.lease_id
    }

    /// Where the renewal stands now.
    pub fn renewal(&self) -> Renewal {
        self.renewal.borrow().clone()
    }

    /// Waits until the renewal stops (max TTL reached, renewal refused, not renewable) and says
    /// why. The lease itself lives on until it expires or the guard revokes it.
    pub async fn renewal_stopped(&self) -> Renewal {
        let mut renewal = self.renewal.clone();
        // An error means the task is gone (its runtime ended); its last word stands.
        let _ = renewal.wait_for(|state| !state.is_active()).await;
        let last = renewal.borrow().clone();
        last
    }

    /// Stops renewing and revokes the lease now: when this returns `Ok`, Lessor has dropped the
    /// database user. On error the lease is left to its TTL (the guard does not try again on drop).
    pub async fn revoke(mut self) -> Result<()> {
        self.stop_renewing();
        self.armed = false;
        self.client.revoke(&self.lease_id).await
    }

    fn stop_renewing(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.stop_renewing();
        if !std::mem::take(&mut self.armed) {
            return;
        }
        if let Err(error) = revoke_and_wait(&self.client, &self.lease_id) {
            // A destructor has no caller to hand the error to; a test's output is where the
            // developer looks. The lease still ends at its TTL.
            eprintln!("lessor-client: {error}; the lease ends at its TTL instead");
        }
    }
}

/// Revokes `lease_id` on a thread of its own and waits for the answer (see [`LeaseGuard`]).
fn revoke_and_wait(client: &Client, lease_id: &str) -> Result<()> {
    let drop_failed = |reason: String| Error::DropRevocation {
        lease_id: lease_id.to_owned(),
        reason,
    };
    // The caller's connections belong to the caller's runtime, which is blocked or gone.
    let client = client.with_own_connections()?;
    let id = lease_id.to_owned();
    let revoke = move || {
        std::thread::Builder::new()
            .name("lessor-client-revoke".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start a runtime: {e}"))?;
                runtime
                    .block_on(client.revoke(&id))
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?
            .join()
            .map_err(|_| "the revoking thread panicked".to_owned())?
    };
    // Inside a task of a multi-thread runtime, this thread is one of its workers: hand its other
    // tasks to another worker while it waits. Anywhere else (a `block_on` thread, a
    // current-thread runtime, no runtime) waiting holds up nothing a worker would run, and
    // `block_in_place` would panic on a current-thread runtime.
    let on_worker = matches!(
        Handle::try_current().map(|handle| handle.runtime_flavor()),
        Ok(RuntimeFlavor::MultiThread)
    ) && tokio::task::try_id().is_some();
    let outcome = if on_worker {
        tokio::task::block_in_place(revoke)
    } else {
        revoke()
    };
    outcome.map_err(drop_failed)
}

/// What a renewal's answer means for the next one.
#[derive(Debug, PartialEq, Eq)]
enum AfterRenewal {
    /// Renew again at this time.
    RenewAt(Instant),
    /// The grant was shorter than asked (or not renewable): the max TTL caps the lease.
    MaxTtlReached,
}

/// Two thirds into what a renewal granted, unless the grant was capped.
fn after_renewal(answered_at: Instant, requested: Duration, granted: &Lease) -> AfterRenewal {
    if !granted.renewable || granted.duration < requested || granted.duration.is_zero() {
        AfterRenewal::MaxTtlReached
    } else {
        AfterRenewal::RenewAt(answered_at + granted.duration * 2 / 3)
    }
}

/// The wait before retrying a renewal after `failures` passing failures in a row, or `None` when
/// the lease would be over before the retry: doubling from half a second, at most 30 s, and
/// never more than half of what the lease has left.
fn retry_delay(failures: u32, left: Duration) -> Option<Duration> {
    let doubling = FIRST_RETRY_DELAY.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let delay = doubling.min(MAX_RETRY_DELAY).min(left / 2);
    (delay >= Duration::from_millis(50)).then_some(delay)
}

/// The renewal task: renews `lease_id` by its original duration, two thirds into each grant,
/// until a grant is capped or a renewal fails for good; reports each step on `report`.
async fn keep_renewed(
    client: Client,
    lease_id: String,
    duration: Duration,
    report: watch::Sender<Renewal>,
) {
    let mut expires_at = Instant::now() + duration;
    let mut next = Instant::now() + duration * 2 / 3;
    let mut failures = 0;
    loop {
        tokio::time::sleep_until(next.into()).await;
        match client.renew(&lease_id, Some(duration)).await {
            Ok(granted) => {
                failures = 0;
                let answered_at = Instant::now();
                expires_at = answered_at + granted.duration;
                match after_renewal(answered_at, duration, &granted) {
                    AfterRenewal::RenewAt(at) => {
                        next = at;
                        report.send_replace(Renewal::Active { expires_at });
                    }
                    AfterRenewal::MaxTtlReached => {
                        report.send_replace(Renewal::MaxTtlReached { expires_at });
                        return;
                    }
                }
            }
            Err(error) => {
                failures += 1;
                let left = expires_at.saturating_duration_since(Instant::now());
                match retry_delay(failures, left).filter(|_| error.is_transient()) {
                    Some(delay) => next = Instant::now() + delay,
                    None => {
                        report.send_replace(Renewal::Failed {
                            error: Arc::new(error),
                            expires_at,
                        });
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(seconds: u64, renewable: bool) -> Lease {
        Lease {
            id: "database/creds/app/x".into(),
            duration: Duration::from_secs(seconds),
            renewable,
        }
    }

    #[test]
    fn a_full_grant_is_renewed_two_thirds_in_and_a_capped_one_stops_renewal() {
        let now = Instant::now();
        let hour = Duration::from_secs(3600);
        assert_eq!(
            after_renewal(now, hour, &lease(3600, true)),
            AfterRenewal::RenewAt(now + Duration::from_secs(2400))
        );
        assert_eq!(
            after_renewal(now, hour, &lease(1200, true)),
            AfterRenewal::MaxTtlReached
        );
        assert_eq!(
            after_renewal(now, hour, &lease(3600, false)),
            AfterRenewal::MaxTtlReached
        );
    }

    #[test]
    fn retries_double_up_to_a_cap_and_never_outlast_the_lease() {
        let plenty = Duration::from_secs(3600);
        assert_eq!(retry_delay(1, plenty), Some(Duration::from_millis(500)));
        assert_eq!(retry_delay(2, plenty), Some(Duration::from_secs(1)));
        assert_eq!(retry_delay(3, plenty), Some(Duration::from_secs(2)));
        assert_eq!(retry_delay(40, plenty), Some(MAX_RETRY_DELAY));
        assert_eq!(
            retry_delay(5, Duration::from_secs(4)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(retry_delay(1, Duration::from_millis(60)), None);
    }
}
