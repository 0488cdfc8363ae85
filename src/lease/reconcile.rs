//! Reconciliation: finding database users this installation created that no live lease covers,
//! and dropping them, without ever touching a user it cannot prove it created.
//!
//! A name prefix is not proof (Vault's default template starts with `v-` too, and teams migrating
//! from Vault run both on one database). There are two proofs:
//! - the store's record of every issued user (`issued_users`), written with the lease before the
//!   user exists and kept until its drop succeeded: every engine has it;
//! - the installation's marker on the user itself (PostgreSQL: the role's comment, set in the
//!   transaction that creates it; see `lessor_plugin::UserMarker`), on engines that can keep a
//!   note on a user. It survives the record: a store restored from an older backup has no record
//!   of users issued since, and the marker still proves them ours.
//!
//! A marker of another installation vetoes: such a user is never dropped, whatever the record
//! says. A sweep, per connection, looks up the users on record without a live lease:
//! - gone from the database: the record is forgotten;
//! - still there: the first sweep marks it suspect, the next sweep that agrees drops it (a user
//!   being created always has a live lease, so it is never among them);
//! - users carrying this installation's marker with no record and no live lease are recorded
//!   (adopted) as counted by this sweep, so the next sweep that agrees drops them;
//! - users that look like Lessor's (a role's username prefix) but carry neither proof are
//!   reported as look-alikes and never dropped; users marked by another installation are
//!   reported as `foreign`.
//!
//! Sweeps run on demand (`PUT sys/leases/reconcile`, with a dry run that changes nothing) and
//! periodically, claimed as a job so one replica sweeps per period. Findings go to the answer, the
//! audit log (as `event` entries) and the `lessor_reconcile_findings_total` counter.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use lessor_plugin::DeleteUserRequest;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::store::{CatalogStore, LeaseStore, ReconcileStore, ADOPTED_WITHOUT_LEASE};
use crate::AppState;

/// Sweeps that must agree before an orphaned user is dropped.
const AGREEING_SWEEPS: i64 = 2;

/// What a sweep found about one user.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub connection: String,
    pub username: String,
    /// The lease the user was issued under; none for a look-alike.
    pub lease_id: Option<String>,
    /// `dropped`, `suspect` (first sweep; the next drops it), `gone` (record forgotten),
    /// `lookalike` (unproven: reported only), `foreign` (marked by another installation: reported
    /// only), `drop_failed`; in a dry run `would_drop`, `would_suspect`, `would_forget`.
    pub outcome: &'static str,
    pub error: Option<String>,
}

/// One sweep's findings.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub connections: Vec<String>,
    pub findings: Vec<Finding>,
}

/// Sweeps `only` (or every connection), changing nothing with `dry_run`.
pub async fn sweep(state: &AppState, only: Option<&str>, dry_run: bool) -> Result<Report> {
    let connections = match only {
        Some(name) => {
            state.catalog.read_connection(name).await?;
            vec![name.to_owned()]
        }
        None => state.store.list_connections().await?,
    };
    let mut findings = Vec::new();
    for connection in &connections {
        match sweep_connection(state, connection, dry_run).await {
            Ok(found) => findings.extend(found),
            Err(error) if only.is_none() => {
                // One unreachable database must not stop the others' sweep.
                tracing::warn!(%connection, %error, "reconciliation could not sweep this connection");
            }
            Err(error) => return Err(error),
        }
    }
    for finding in &findings {
        crate::metrics::reconcile_finding(finding.outcome);
        tracing::info!(connection = %finding.connection, username = %finding.username, outcome = finding.outcome, dry_run, "reconciliation finding");
    }
    if !findings.is_empty() {
        state
            .audit
            .write(crate::audit::EntryKind::Event, || {
                json!({
                    "type": "event",
                    "time": Utc::now().to_rfc3339(),
                    "event": "reconcile",
                    "replica": state.replica.id(),
                    "dry_run": dry_run,
                    "findings": findings,
                })
            })
            .await?;
    }
    Ok(Report {
        dry_run,
        connections,
        findings,
    })
}

async fn sweep_connection(
    state: &AppState,
    connection: &str,
    dry_run: bool,
) -> Result<Vec<Finding>> {
    let candidates = state.store.orphan_candidates(connection).await?;
    let prefixes = lessor_prefixes(state, connection).await?;
    let plugin = state.engines.get(connection).await?;
    let listing_failed =
        |e| crate::Error::database(format!("cannot list the users of {connection}"), e);
    // Who marked each marked user; empty where the engine keeps no note on a user.
    let marked: HashMap<String, String> = plugin
        .marked_users()
        .await
        .map_err(listing_failed)?
        .unwrap_or_default();
    if candidates.is_empty() && prefixes.is_empty() && marked.is_empty() {
        return Ok(Vec::new());
    }
    let ours = state.engines.user_marker().installation_id();
    let marked_by_another = |user: &str| marked.get(user).is_some_and(|id| id != ours);
    let on_database: HashSet<String> = plugin
        .list_users("")
        .await
        .map_err(listing_failed)?
        .into_iter()
        .collect();
    let mut findings = Vec::new();
    let finding =
        |username: &str, lease_id: Option<&str>, outcome, error: Option<String>| Finding {
            connection: connection.to_owned(),
            username: username.to_owned(),
            // A user adopted by its marker has no lease.
            lease_id: lease_id
                .filter(|id| *id != ADOPTED_WITHOUT_LEASE)
                .map(str::to_owned),
            outcome,
            error,
        };
    let now = Utc::now();
    for candidate in &candidates {
        let (user, lease) = (&candidate.username, candidate.lease_id.as_str());
        if on_database.contains(user) && marked_by_another(user) {
            // Our record and another installation's mark disagree: the user is not provably
            // ours, so it is left alone and its record kept for an operator to look at.
            findings.push(finding(user, Some(lease), "foreign", None));
            continue;
        }
        if !on_database.contains(user) {
            if dry_run {
                findings.push(finding(user, Some(lease), "would_forget", None));
            } else if state
                .store
                .forget_issued_user(connection, user, lease)
                .await?
            {
                findings.push(finding(user, Some(lease), "gone", None));
            }
            continue;
        }
        if dry_run {
            let outcome = if candidate.suspect_sweeps + 1 >= AGREEING_SWEEPS {
                "would_drop"
            } else {
                "would_suspect"
            };
            findings.push(finding(user, Some(lease), outcome, None));
            continue;
        }
        let sweeps = state
            .store
            .mark_suspect(connection, user, lease, now)
            .await?;
        if sweeps == 0 {
            continue; // issued again meanwhile: a live lease covers it now
        }
        if sweeps < AGREEING_SWEEPS {
            findings.push(finding(user, Some(lease), "suspect", None));
            continue;
        }
        // The lease's own revocation statements if its row is still there, else the engine's.
        // Its database too: only the lease row proves which database is the user's.
        let (statements, database) = match state.store.get_lease(lease).await? {
            Some(row) => (row.revocation_statements, row.database_name),
            None => (Vec::new(), None),
        };
        let request = DeleteUserRequest {
            username: user,
            statements: &statements,
            database: database.as_deref(),
        };
        match plugin.delete_user(&request).await {
            Ok(()) => {
                state
                    .store
                    .forget_issued_user(connection, user, lease)
                    .await?;
                findings.push(finding(user, Some(lease), "dropped", None));
            }
            Err(error) => findings.push(finding(
                user,
                Some(lease),
                "drop_failed",
                Some(error.to_string()),
            )),
        }
    }
    // Users with no record: named like this installation's (a role's fixed username prefix), or
    // carrying a marker. Ours by marker are adopted; the rest are reported, never dropped.
    let on_record: HashSet<&str> = candidates.iter().map(|c| c.username.as_str()).collect();
    let unrecorded: Vec<String> = on_database
        .iter()
        .filter(|user| !on_record.contains(user.as_str()))
        .filter(|user| {
            marked.contains_key(user.as_str())
                || prefixes
                    .iter()
                    .any(|prefix| user.starts_with(prefix.as_str()))
        })
        .cloned()
        .collect();
    let issued = state.store.issued_among(connection, &unrecorded).await?;
    let mut unrecorded: Vec<&String> = unrecorded.iter().filter(|u| !issued.contains(*u)).collect();
    unrecorded.sort();
    for user in unrecorded {
        match marked.get(user.as_str()) {
            Some(id) if id == ours => {
                if dry_run {
                    findings.push(finding(user, None, "would_suspect", None));
                } else if state
                    .store
                    .adopt_marked_user(connection, user, Utc::now())
                    .await?
                {
                    findings.push(finding(user, None, "suspect", None));
                }
            }
            Some(_) => findings.push(finding(user, None, "foreign", None)),
            None => findings.push(finding(user, None, "lookalike", None)),
        }
    }
    Ok(findings)
}

/// The fixed beginnings of the usernames the roles on `connection` generate (the text of each
/// template before its first placeholder), for spotting look-alikes.
async fn lessor_prefixes(state: &AppState, connection: &str) -> Result<Vec<String>> {
    let mut prefixes = Vec::new();
    for name in state.store.list_roles().await? {
        let Some(role) = state.store.get_role(&name).await? else {
            continue;
        };
        if role.db_name != connection {
            continue;
        }
        let template = role
            .username_template
            .as_deref()
            .unwrap_or(lessor_plugin::credentials::DEFAULT_USERNAME_TEMPLATE);
        let prefix = template.split("{{").next().unwrap_or_default();
        if prefix.len() >= 2 && !prefixes.iter().any(|p| p == prefix) {
            prefixes.push(prefix.to_owned());
        }
    }
    Ok(prefixes)
}

/// Sweeps every `interval` (0 disables), as a job one replica at a time claims.
pub async fn run(state: AppState, interval: Duration, shutdown: CancellationToken) {
    if interval.is_zero() {
        return;
    }
    let check_every = interval.min(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(check_every) => {}
            _ = shutdown.cancelled() => return,
        }
        let now = Utc::now();
        let ran_before = now - chrono::Duration::from_std(interval).unwrap_or_default();
        let claim = state.replica.claim(now);
        match state.store.claim_job("reconcile", &claim, ran_before).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                tracing::warn!(%error, "cannot claim the reconciliation sweep");
                continue;
            }
        }
        if let Err(error) = sweep(&state, None, false).await {
            tracing::warn!(%error, "reconciliation sweep failed");
        }
        if let Err(error) = state
            .store
            .finish_job("reconcile", state.replica.id(), Utc::now())
            .await
        {
            tracing::warn!(%error, "cannot record the reconciliation sweep");
        }
    }
}
