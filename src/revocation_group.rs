//! Concurrent revocations on one connection, revoked together (issue 10, targets 1 and 7).
//!
//! An engine revokes many users in about the statements it takes to revoke one
//! (`DatabasePlugin::delete_users`): MariaDB takes its privilege lock once per `DROP USER`
//! however many accounts it names, and PostgreSQL drops a list of roles in one statement and one
//! commit. Revocation requests arrive one lease at a time, though, so under load each paid for
//! its own statements while the others queued for the same lock. Here, revocations that wait while
//! a batch runs on the same connection go together in the next one, the way a group commit shares
//! one flush: up to [`MAX_BATCH`] users in a batch and at most [`RUNNERS`] batches at once per
//! connection. A revocation that finds nothing running starts at once, as a batch of one, which
//! the engines run as a single `delete_user`; so a lone request waits for nobody.
//!
//! Each request still gets its own outcome, only after its user is gone: the engines fall back to
//! one user at a time when a batch fails, which names the user at fault. A batch runs on a task of
//! its own, so a caller that gives up (a client that disconnects mid-request) cannot abandon the
//! other callers' revocations half-way. Only requests with the engine's built-in revocation and no
//! database of their own are grouped; the engine decides, through
//! `DatabasePlugin::batches_deletes`, whether it gains anything from a batch at all.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use lessor_plugin::PluginError;
use tokio::sync::oneshot;

/// Users in one batch at most: the size of the batches the reaper and revoke-prefix hand the
/// engines.
const MAX_BATCH: usize = crate::lease::REVOCATION_BATCH;

/// Batches running at once on one connection. More than one, so that a batch being answered
/// does not leave the connection idle; not more than two, because a batch wins by holding
/// the others back: measured against four, two revoked faster on MariaDB at 8 and 32 workers
/// (docs/benchmarks.md, "Concurrent revocations as one batch").
const RUNNERS: usize = 2;

/// What revokes a batch: the engine's `delete_users` for these usernames, bounded by the
/// connection's deadline, one outcome per username in order.
pub type BatchRevoker = Arc<
    dyn Fn(Vec<String>) -> Pin<Box<dyn Future<Output = Vec<Result<(), PluginError>>> + Send>>
        + Send
        + Sync,
>;

/// The revocations of one connection's plugin instance: those waiting for a batch, and how many
/// batches run.
#[derive(Default)]
pub struct RevocationGroup {
    state: Arc<Mutex<Queue>>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    runners: usize,
}

struct Waiting {
    username: String,
    answer: oneshot::Sender<Result<(), PluginError>>,
}

impl RevocationGroup {
    /// Revokes `username` with the built-in revocation, in the next batch `revoke_batch` runs.
    pub async fn revoke(
        &self,
        username: &str,
        revoke_batch: &BatchRevoker,
    ) -> Result<(), PluginError> {
        let (answer, outcome) = oneshot::channel();
        let start_runner = {
            let mut queue = lock(&self.state);
            queue.waiting.push(Waiting {
                username: username.to_owned(),
                answer,
            });
            let start = queue.runners < RUNNERS;
            if start {
                queue.runners += 1;
            }
            start
        };
        if start_runner {
            tokio::spawn(run_batches(self.state.clone(), revoke_batch.clone()));
        }
        outcome.await.unwrap_or_else(|_| {
            // The runner answers every request it takes, so this is a runtime shutting down.
            Err(PluginError::Unavailable(format!(
                "the revocation of {username} ended without an outcome"
            )))
        })
    }
}

/// A runner: takes what waits, revokes it as one batch, answers each caller, and again, until
/// nothing waits. It leaves under the queue's lock, so a request pushed after it looked finds the
/// runner count already lowered and starts another.
async fn run_batches(state: Arc<Mutex<Queue>>, revoke_batch: BatchRevoker) {
    loop {
        let batch: Vec<Waiting> = {
            let mut queue = lock(&state);
            if queue.waiting.is_empty() {
                queue.runners -= 1;
                return;
            }
            let take = queue.waiting.len().min(MAX_BATCH);
            queue.waiting.drain(..take).collect()
        };
        if batch.len() > 1 {
            tracing::debug!(
                users = batch.len(),
                "concurrent revocations go as one batch"
            );
        }
        let usernames = batch.iter().map(|w| w.username.clone()).collect();
        // On a task of its own, so that a panic in an engine fails this batch's callers with an
        // error instead of taking the runner, and with it the whole queue, down.
        let mut outcomes = tokio::spawn(revoke_batch(usernames))
            .await
            .unwrap_or_default()
            .into_iter();
        for waiting in batch {
            let outcome = outcomes.next().unwrap_or_else(|| {
                Err(PluginError::Unavailable(format!(
                    "the revocation of {} failed inside the engine",
                    waiting.username
                )))
            });
            // A caller that gave up no longer listens; its user is revoked all the same.
            let _ = waiting.answer.send(outcome);
        }
    }
}

/// The queue's lock. Nothing panics while holding it, so a poisoned lock still holds a
/// consistent queue.
fn lock(state: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    //! The queueing alone, with a revoker that records its batches instead of a database; the
    //! engines' batches themselves are tested against the real servers (tests/postgres.rs,
    //! tests/mysql.rs).

    use super::*;
    use std::time::Duration;
    use tokio::sync::Semaphore;

    /// A revoker that records each batch and waits for a permit of `gate` before answering:
    /// `Err` for a username starting with `bad`, a panic for `panic`.
    fn recording(gate: Arc<Semaphore>) -> (BatchRevoker, Arc<Mutex<Vec<Vec<String>>>>) {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = batches.clone();
        let revoker: BatchRevoker = Arc::new(move |usernames: Vec<String>| {
            let seen = seen.clone();
            let gate = gate.clone();
            Box::pin(async move {
                seen.lock().unwrap().push(usernames.clone());
                gate.acquire().await.unwrap().forget();
                if usernames.iter().any(|u| u == "panic") {
                    panic!("an engine bug");
                }
                usernames
                    .iter()
                    .map(|u| {
                        if u.starts_with("bad") {
                            Err(PluginError::Rejected(format!("{u} refused")))
                        } else {
                            Ok(())
                        }
                    })
                    .collect()
            })
        });
        (revoker, batches)
    }

    async fn until_batches(batches: &Mutex<Vec<Vec<String>>>, count: usize) {
        for _ in 0..500 {
            if batches.lock().unwrap().len() >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("fewer than {count} batches started");
    }

    #[tokio::test]
    async fn a_lone_revocation_runs_at_once_as_a_batch_of_one() {
        let (revoker, batches) = recording(Arc::new(Semaphore::new(100)));
        let group = RevocationGroup::default();
        group.revoke("v-one", &revoker).await.unwrap();
        assert_eq!(*batches.lock().unwrap(), vec![vec!["v-one".to_owned()]]);
        assert_eq!(lock(&group.state).runners, 0, "the runner left");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn revocations_that_wait_behind_running_batches_go_as_one_with_their_own_outcomes() {
        let gate = Arc::new(Semaphore::new(0));
        let (revoker, batches) = recording(gate.clone());
        let group = Arc::new(RevocationGroup::default());
        let spawn = |name: &str| {
            let (group, revoker, name) = (group.clone(), revoker.clone(), name.to_owned());
            tokio::spawn(async move { group.revoke(&name, &revoker).await })
        };
        // Two runners, each held inside a batch of one.
        let mut first = Vec::new();
        for (started, name) in ["v-a", "v-b"].into_iter().enumerate() {
            first.push(spawn(name));
            until_batches(&batches, started + 1).await;
        }
        let waiting: Vec<_> = ["v-c", "bad-d", "v-e", "v-f"]
            .iter()
            .map(|name| spawn(name))
            .collect();
        while lock(&group.state).waiting.len() < 4 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        gate.add_permits(100);
        for handle in first {
            handle.await.unwrap().unwrap();
        }
        let outcomes: Vec<_> = futures::future::join_all(waiting)
            .await
            .into_iter()
            .map(|joined| joined.unwrap())
            .collect();
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok() && outcomes[3].is_ok());
        assert!(
            matches!(&outcomes[1], Err(PluginError::Rejected(m)) if m == "bad-d refused"),
            "{:?}",
            outcomes[1]
        );
        let mut batches = batches.lock().unwrap().clone();
        assert_eq!(batches.len(), RUNNERS + 1, "{batches:?}");
        // The four tasks joined the queue in whatever order the runtime ran them.
        batches[RUNNERS].sort();
        assert_eq!(batches[RUNNERS], ["bad-d", "v-c", "v-e", "v-f"]);
        assert_eq!(lock(&group.state).runners, 0);
    }

    #[tokio::test]
    async fn a_panicking_engine_fails_its_own_batch_and_the_group_goes_on() {
        let (revoker, _) = recording(Arc::new(Semaphore::new(100)));
        let group = RevocationGroup::default();
        let failed = group.revoke("panic", &revoker).await.unwrap_err();
        assert!(
            failed.to_string().contains("failed inside the engine"),
            "{failed}"
        );
        group.revoke("v-after", &revoker).await.unwrap();
        assert_eq!(lock(&group.state).runners, 0);
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_stop_its_batch() {
        let gate = Arc::new(Semaphore::new(0));
        let (revoker, batches) = recording(gate.clone());
        let group = RevocationGroup::default();
        let gave_up =
            tokio::time::timeout(Duration::from_millis(20), group.revoke("v-gone", &revoker)).await;
        assert!(gave_up.is_err(), "the caller timed out while its batch ran");
        gate.add_permits(1);
        for _ in 0..500 {
            if lock(&group.state).runners == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(lock(&group.state).runners, 0, "the batch finished alone");
        assert_eq!(gate.available_permits(), 0, "the revoker ran to its end");
        assert_eq!(*batches.lock().unwrap(), vec![vec!["v-gone".to_owned()]]);
    }
}
