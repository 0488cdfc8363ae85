//! This process as one replica among several sharing a store: its id, its heartbeat, and the
//! claims its background work is taken under (see [`crate::store::Claim`]).
//!
//! No replica leads. Each registers at start and beats every [`HEARTBEAT_EVERY`]; one whose beat is
//! older than [`STALE_AFTER`] is dead, and the leases and rotations it claimed are free for the
//! others at once. A claim also lapses on its own after its length, which covers a replica that is
//! alive but stuck; so the length is longer than any operation on a target may take.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::store::{Claim, ReplicaStore, Store, StoreKind};

/// How often a replica records that it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A replica silent for this long is dead: several missed beats, so a slow store write or a busy
/// moment does not make a live replica's work look abandoned.
pub const STALE_AFTER: Duration = Duration::from_secs(10);
/// Registrations dead for this long are removed by the others.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// What a claim lasts beyond the longest piece of work it covers: room for the store writes
/// around that work and for a moment's wait before it starts.
const CLAIM_MARGIN: Duration = Duration::from_secs(15);

/// This process's identity among the replicas. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Replica {
    id: Arc<str>,
    /// The longest one piece of claimed work may take (a connection to a target and one whole
    /// operation on it, each under its deadline).
    longest_work: Duration,
}

impl Replica {
    /// A fresh identity (host name and a random suffix, so a restarted process is a new replica
    /// and its previous incarnation's claims are recognisably another's), whose claims outlast
    /// `longest_work` by [`CLAIM_MARGIN`], so a live replica's claim never lapses while it is
    /// still at work.
    pub fn new(longest_work: Duration) -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "lessor".to_owned());
        let host: String = host
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
            .take(48)
            .collect();
        let suffix: u32 = rand::rngs::OsRng.gen();
        Self {
            id: format!("{host}-{suffix:08x}").into(),
            longest_work,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// How long a claim lasts unless finished or given up.
    pub fn claim_length(&self) -> Duration {
        self.longest_work + CLAIM_MARGIN
    }

    /// Whether a claim held until `until` still covers the longest piece of work started at
    /// `now`, with half the margin to spare. Work that waited after its claim was taken (the
    /// reaper's batches queue for their connection) asks before it starts, and claims again if
    /// not.
    pub fn claim_covers_work(&self, until: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        until - now >= chrono_duration(self.longest_work + CLAIM_MARGIN / 2)
    }

    /// A claim taken at `now` for the usual length.
    pub fn claim(&self, now: DateTime<Utc>) -> Claim<'_> {
        self.claim_until(now, now + chrono_duration(self.claim_length()))
    }

    /// A claim taken at `now` lasting until `until`.
    pub fn claim_until(&self, now: DateTime<Utc>, until: DateTime<Utc>) -> Claim<'_> {
        Claim::new(&self.id, now, until, now - chrono_duration(STALE_AFTER))
    }

    /// Registers this replica. On an embedded (SQLite) store this process is the only one, so
    /// earlier registrations are dead incarnations and are removed, freeing their claims.
    pub async fn register(&self, store: &Store, address: &str) -> Result<()> {
        let only = store.kind() == StoreKind::Sqlite;
        store
            .register_replica(&self.id, address, Utc::now(), only)
            .await
    }

    /// Beats until `shutdown`. A beat that finds the registration gone (removed as stale after a
    /// long store outage) registers again. Failed beats are logged; the store being away is
    /// reported elsewhere. The registration is removed by [`Replica::leave`], once the work this
    /// replica claimed has finished.
    pub async fn run_heartbeat(self, store: Store, address: String, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(HEARTBEAT_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            let now = Utc::now();
            let beat = match store.heartbeat_replica(&self.id, now).await {
                Ok(true) => Ok(()),
                Ok(false) => self.register(&store, &address).await,
                Err(error) => Err(error),
            };
            if let Err(error) = beat {
                tracing::warn!(replica = %self.id, %error, "cannot record this replica's heartbeat");
            }
        }
    }

    /// Removes this replica's registration (a clean stop), so its remaining claims are free at
    /// once, and registrations dead for long. Called after its revocations and rotations ended:
    /// while they run, its claims must keep holding.
    pub async fn leave(&self, store: &Store) {
        let forget_before = Utc::now() - chrono_duration(FORGET_AFTER);
        if let Err(error) = store.forget_replicas(&self.id, forget_before).await {
            tracing::warn!(replica = %self.id, %error, "cannot remove this replica's registration");
        }
    }
}

fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// Keeps what this replica holds in memory in step with the store when others change it: the
/// store's read cache (roles, connections, policies, tokens), a connection's pool, the audit
/// devices, the anomaly rules. Returns at once on an embedded store.
/// While the feed cannot be had (the store is away), it tries again each second; each time it
/// connects it reloads everything, since changes made before were not announced to it.
pub async fn follow_changes(state: crate::AppState, shutdown: CancellationToken) {
    loop {
        let feed = tokio::select! {
            feed = state.store.change_feed() => feed,
            _ = shutdown.cancelled() => return,
        };
        let mut feed = match feed {
            Ok(Some(feed)) => feed,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot follow the store's changes; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        // Changes made before the feed was (re)connected were not announced to it: what was
        // loaded before is reloaded once (cheap, and at start there is little to reload).
        apply(&state, crate::store::Change::Resync).await;
        loop {
            let change = tokio::select! {
                change = feed.next() => change,
                _ = shutdown.cancelled() => return,
            };
            match change {
                Ok(change) => apply(&state, change).await,
                Err(error) => {
                    tracing::warn!(%error, "lost the store's change feed; following it again");
                    break;
                }
            }
        }
    }
}

/// Drops or reloads what `change` made stale.
async fn apply(state: &crate::AppState, change: crate::store::Change) {
    use crate::store::Change;
    // First the store's read cache, so that what is reloaded below reads the new rows.
    state.store.forget_cached(&change);
    let (connections, audit, rules) = match &change {
        Change::Row { table, key } => match table.as_str() {
            "connections" => {
                state.engines.invalidate(key).await;
                (false, false, false)
            }
            "audit_devices" => (false, true, false),
            "meta" if key == crate::audit::anomaly::RULES_META => (false, false, true),
            _ => (false, false, false),
        },
        Change::Resync => (true, true, true),
    };
    if connections {
        state.engines.invalidate_all().await;
    }
    if audit {
        if let Err(error) = state.audit.reload().await {
            tracing::error!(%error, "cannot reload the audit devices another replica changed");
        }
    }
    if rules {
        if let Err(error) = state.monitor.reload_rules().await {
            tracing::error!(%error, "cannot reload the anomaly rules another replica changed");
        }
    }
    tracing::debug!(?change, "applied a change from the store");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_covers_work_until_half_its_margin_is_used_up() {
        let replica = Replica::new(Duration::from_secs(35));
        assert_eq!(replica.claim_length(), Duration::from_secs(50));
        let taken = DateTime::from_timestamp(1_000, 0).unwrap();
        let until = replica.claim(taken).until();
        let after = |secs: f64| taken + chrono::Duration::milliseconds((secs * 1000.0) as i64);
        assert!(replica.claim_covers_work(until, taken));
        assert!(replica.claim_covers_work(until, after(7.5)));
        assert!(!replica.claim_covers_work(until, after(7.6)));
        assert!(!replica.claim_covers_work(until, after(60.0)));
    }
}
