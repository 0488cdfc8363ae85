//! Static roles: the catalogue (`database/static-roles`), the credentials clients read
//! (`database/static-creds`), and the two-phase rotation of one role (`database/rotate-role`, the
//! schedule, recovery).
//!
//! Strategies:
//! - **single user**: the role's `username` is rotated in place. A client holding the old password
//!   is refused from the moment the database takes the new one until it reads `static-creds` again.
//! - **alternating users** (`username` + `alternate_username`): the user *not* in use is rotated and
//!   then becomes current, so the previous credentials keep working until the rotation after.
//!
//! Import: a new role's password is rotated at once (so Lessor knows it), unless
//! `skip_import_rotation` is set. Then the role has no known password until its first rotation and
//! `static-creds` answers 409 saying so, or the operator passes the user's current `password` with
//! the create, which is checked by logging in before it is stored.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::FutureExt;
use lessor_plugin::{
    check_username, DatabasePlugin, PasswordChange, RoleOptions, Secret, UpdateUserRequest,
};
use serde::Serialize;

use super::{Cause, Outcome, RotationFault, Rotator, Schedule};
use crate::catalog::check_name;
use crate::error::{Error, Result};
use crate::metrics;
use crate::store::{self, CatalogStore, Promotion, RotationStore, StaticRole, StaticRoleConfig};

/// Longest a rotation waits before the rotator gives up on it (its pending stays and is resolved
/// at the next attempt): plugins time out on their own well before this.
pub(super) const ROTATION_TIMEOUT: Duration = Duration::from_secs(60);

/// What an operator may write to `database/static-roles/:name`. `None` keeps the stored value.
#[derive(Debug, Default)]
pub struct StaticRoleInput {
    pub db_name: Option<String>,
    pub username: Option<String>,
    /// The second user of the alternating strategy.
    pub alternate_username: Option<String>,
    pub rotation_period: Option<Duration>,
    pub rotation_schedule: Option<String>,
    pub rotation_window: Option<Duration>,
    pub rotation_statements: Option<Vec<String>>,
    pub skip_import_rotation: Option<bool>,
    /// With `skip_import_rotation` on create: the user's current password, so that `static-creds`
    /// works before the first rotation. Checked by logging in; stored sealed.
    pub password: Option<Secret>,
}

/// One rotation as the history shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RotationRecord {
    pub time: String,
    pub username: String,
    pub trigger: String,
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A static role as `database/static-roles/:name` shows it: Vault's fields plus the rotation state.
#[derive(Debug, Serialize)]
pub struct StaticRoleView {
    pub db_name: String,
    pub username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alternate_username: Option<String>,
    /// The user whose credentials `static-creds` hands out now.
    pub current_username: Option<String>,
    pub credential_type: &'static str,
    pub rotation_statements: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_period: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_schedule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_window: Option<u64>,
    pub skip_import_rotation: bool,
    pub last_vault_rotation: Option<String>,
    /// When the rotator will next rotate (or retry) this role.
    pub next_vault_rotation: String,
    /// Seconds until `next_vault_rotation`.
    pub ttl: i64,
    /// A rotation has stored its pending password and not yet promoted it.
    pub rotation_in_progress: bool,
    /// Failed attempts since the last successful rotation.
    pub rotation_attempts: i64,
    pub last_error: Option<String>,
    /// The last rotations, newest first.
    pub rotation_history: Vec<RotationRecord>,
}

/// What `database/static-creds/:name` returns.
#[derive(Debug)]
pub struct StaticCredentials {
    pub username: String,
    pub password: Secret,
    pub last_vault_rotation: Option<String>,
    pub rotation_period: Option<u64>,
    pub rotation_schedule: Option<String>,
    pub rotation_window: Option<u64>,
    /// Seconds until the next rotation.
    pub ttl: i64,
}

/// Why a rotation attempt stopped.
enum Stop {
    /// A real failure: recorded in the history and retried with backoff.
    Failed { username: String, error: Error },
    /// An injected crash: nothing more is written, as if the process had died.
    Crashed(Error),
}

/// What resolving a pending password came to.
enum Resolution {
    /// The pending password is the database's now, and current.
    Promoted { username: String },
    /// The database provably never took it; it is gone and a fresh rotation may start.
    Discarded,
}

/// The sealing context of a static role's password for one user: a sealed value copied to another
/// role or user does not open there.
fn password_context(role: &str, username: &str) -> String {
    format!("static-role/{role}/{username}/password")
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Whole seconds until `at`, zero once it has passed.
fn secs_until(at: DateTime<Utc>) -> i64 {
    (at - Utc::now()).num_seconds().max(0)
}

/// The schedule a stored role follows.
fn schedule_of(row: &StaticRole) -> Result<Schedule> {
    Schedule::from_fields(
        row.rotation_period,
        row.rotation_schedule.as_deref(),
        row.rotation_window,
    )
    .map_err(|e| {
        Error::Internal(format!(
            "stored schedule of static role {} is invalid: {e}",
            row.name
        ))
    })
}

/// The user the next rotation changes: the role's user, or under the alternating strategy the one
/// not in use.
fn rotation_target(row: &StaticRole) -> String {
    match &row.alternate_username {
        Some(alternate) if row.current_username.as_deref() == Some(row.username.as_str()) => {
            alternate.clone()
        }
        _ => row.username.clone(),
    }
}

impl Rotator {
    async fn static_row(&self, name: &str) -> Result<StaticRole> {
        self.store
            .get_static_role(name)
            .await?
            .ok_or_else(|| Error::not_found("static role", name))
    }

    /// Creates or updates a static role. On create the user's password is rotated at once unless
    /// `skip_import_rotation` is set. Returns warnings for the response.
    ///
    /// Runs as a task of the rotator: the import rotation, once started, finishes even if the
    /// caller stops waiting.
    pub async fn write_static_role(
        &self,
        name: &str,
        input: StaticRoleInput,
    ) -> Result<Vec<String>> {
        check_name("static role name", name)?;
        let rotator = self.clone();
        let name = name.to_owned();
        self.run_detached(async move { rotator.write_static_role_in_task(&name, input).await })
            .await
    }

    #[tracing::instrument(skip_all, fields(static_role = %name), err)]
    async fn write_static_role_in_task(
        &self,
        name: &str,
        input: StaticRoleInput,
    ) -> Result<Vec<String>> {
        let _guard = self.lock(format!("static/{name}")).await;
        if self.store.get_role(name).await?.is_some() {
            return Err(Error::invalid(format!(
                "a dynamic role named {name} exists; a static role may not share its name"
            )));
        }
        let existing = self.store.get_static_role(name).await?;
        let creating = existing.is_none();
        let mut warnings = Vec::new();

        let db_name = match (&existing, input.db_name) {
            (Some(row), Some(given)) if given != row.db_name => {
                return Err(Error::invalid(format!(
                "db_name: a static role cannot move to another connection (it is on {}); delete it and create it again",
                row.db_name
            )))
            }
            (Some(row), _) => row.db_name.clone(),
            (None, Some(given)) => given,
            (None, None) => return Err(Error::invalid("db_name: required when creating a static role")),
        };
        check_name("db_name", &db_name)?;
        let username = match (&existing, input.username) {
            (Some(row), Some(given)) if given != row.username => {
                return Err(Error::invalid(format!(
                    "username: a static role's user cannot change (it is {}); delete the role and create it again",
                    row.username
                )))
            }
            (Some(row), _) => row.username.clone(),
            (None, Some(given)) => given,
            (None, None) => return Err(Error::invalid("username: required when creating a static role")),
        };
        let alternate_username = match (&existing, input.alternate_username.filter(|a| !a.is_empty())) {
            (Some(row), Some(given)) if row.alternate_username.as_deref() != Some(given.as_str()) => {
                return Err(Error::invalid(
                    "alternate_username: the strategy of an existing static role cannot change; delete the role and create it again",
                ))
            }
            (Some(row), _) => row.alternate_username.clone(),
            (None, given) => given,
        };
        check_username(&username).map_err(|e| Error::invalid(e.to_string()))?;
        if let Some(alternate) = &alternate_username {
            check_username(alternate)
                .map_err(|e| Error::invalid(format!("alternate_username: {e}")))?;
            if *alternate == username {
                return Err(Error::invalid(
                    "alternate_username: must differ from username",
                ));
            }
        }

        // Schedule: given fields replace the stored kind; none given keeps it. A new cron pattern
        // keeps the stored window unless one is given (0 removes it).
        let (period, schedule_text, window) =
            if input.rotation_period.is_some() || input.rotation_schedule.is_some() {
                let kept_window = match &existing {
                    Some(row)
                        if input.rotation_schedule.is_some() && row.rotation_schedule.is_some() =>
                    {
                        row.rotation_window
                    }
                    _ => None,
                };
                (
                    input.rotation_period,
                    input.rotation_schedule.filter(|s| !s.trim().is_empty()),
                    input.rotation_window.or(kept_window),
                )
            } else if let Some(row) = &existing {
                (
                    row.rotation_period,
                    row.rotation_schedule.clone(),
                    input.rotation_window.or(row.rotation_window),
                )
            } else {
                (None, None, input.rotation_window)
            };
        let window = window.filter(|w| !w.is_zero());
        let schedule = Schedule::from_fields(period, schedule_text.as_deref(), window)?;

        let statements = match (input.rotation_statements, &existing) {
            (Some(list), _) => list,
            (None, Some(row)) => row.rotation_statements.clone(),
            (None, None) => Vec::new(),
        };
        let skip_import_rotation = input
            .skip_import_rotation
            .or(existing.as_ref().map(|r| r.skip_import_rotation))
            .unwrap_or(false);
        if input.password.is_some() && !(creating && skip_import_rotation) {
            return Err(Error::invalid(
                "password: only accepted when creating a static role with skip_import_rotation=true",
            ));
        }

        let plugin = self.engines.get(&db_name).await.map_err(|e| match e {
            Error::NotFound { .. } => {
                Error::invalid(format!("db_name: connection {db_name} does not exist"))
            }
            other => other,
        })?;
        plugin
            .validate_role(&RoleOptions::new(), &[&statements])
            .map_err(|e| Error::invalid(format!("rotation_statements: {e}")))?;
        crate::catalog::check_statement_kind(
            plugin.as_ref(),
            "rotation_statements",
            lessor_plugin::StatementKind::Rotation,
            &statements,
        )?;
        let limit = plugin.max_username_len();
        for (field, user) in [
            ("username", Some(&username)),
            ("alternate_username", alternate_username.as_ref()),
        ] {
            let Some(user) = user else { continue };
            if user.len() > limit {
                return Err(Error::invalid(format!(
                    "{field}: longer than the engine's {limit}-character limit"
                )));
            }
        }
        self.catalog.check_allowed(&db_name, name).await.map_err(|_| {
            Error::invalid(format!(
                "static role {name} is not in the allowed_roles of connection {db_name}; add it (or \"*\") there first"
            ))
        })?;
        if creating {
            for (field, user) in [
                ("username", Some(&username)),
                ("alternate_username", alternate_username.as_ref()),
            ] {
                let Some(user) = user else { continue };
                let found = plugin.list_users(user).await.map_err(|e| {
                    Error::database(format!("cannot look up user {user} on {db_name}"), e)
                })?;
                if !found.iter().any(|u| u == user) {
                    return Err(Error::invalid(format!(
                        "{field}: user {user} does not exist on connection {db_name}; a static role manages an existing user"
                    )));
                }
            }
        }
        let initial_password = match input.password {
            Some(password) => {
                plugin
                    .check_login(&username, &password)
                    .await
                    .map_err(|e| {
                        Error::invalid(format!("password: it does not log in as {username}: {e}"))
                    })?;
                Some(password)
            }
            None => None,
        };

        let now = Utc::now();
        let (scheduled_at, next_rotation_at) = match &existing {
            Some(row) => {
                // Periods are kept in whole seconds.
                let unchanged = row.rotation_period.map(|p| p.as_secs())
                    == schedule.period().map(|p| p.as_secs())
                    && row.rotation_schedule.as_deref() == schedule.cron_text();
                if unchanged {
                    (row.scheduled_at, row.next_rotation_at)
                } else {
                    // A new period counts from the last rotation (a due one runs at once); a new cron
                    // pattern from now. A pending retry keeps its earlier time.
                    let base = match (&schedule, row.last_rotated_at) {
                        (Schedule::Period(_), Some(last)) => last,
                        _ => now,
                    };
                    let scheduled = schedule.next_after(base)?;
                    let next = if row.attempts > 0 {
                        scheduled.min(row.next_rotation_at)
                    } else {
                        scheduled
                    };
                    (scheduled, next)
                }
            }
            None => {
                let scheduled = schedule.next_after(now)?;
                (scheduled, scheduled)
            }
        };
        let config = StaticRoleConfig {
            name: name.to_owned(),
            db_name: db_name.clone(),
            username: username.clone(),
            alternate_username,
            rotation_period: schedule.period(),
            rotation_schedule: schedule.cron_text().map(str::to_owned),
            rotation_window: schedule.window(),
            rotation_statements: statements,
            skip_import_rotation,
            scheduled_at,
            next_rotation_at,
        };
        self.store.upsert_static_role(&config, now).await?;
        if let Some(password) = initial_password {
            let sealed = self
                .sealer
                .seal(&password_context(name, &username), &password)?;
            self.store
                .set_static_current(name, &username, &sealed, now)
                .await?;
        }
        self.wake.notify_one();

        if creating && !skip_import_rotation {
            self.rotate_locked(name, Cause::Import, None).await.map_err(|error| match error {
                Error::Database { context, source } => Error::Database {
                    context: format!(
                        "static role {name} was saved, but its first rotation failed (Lessor retries it with backoff; see rotation_history): {context}"
                    ),
                    source,
                },
                other => other,
            })?;
        } else if creating
            && self
                .store
                .get_static_role(name)
                .await?
                .is_some_and(|r| r.current_password_sealed.is_none())
        {
            warnings.push(format!(
                "static role {name} has no known password until its first rotation (at {}); use rotate-role to rotate now",
                rfc3339(next_rotation_at)
            ));
        }
        Ok(warnings)
    }

    pub async fn read_static_role(&self, name: &str) -> Result<StaticRoleView> {
        check_name("static role name", name)?;
        let (row, history) = self
            .store
            .static_role_with_history(name)
            .await?
            .ok_or_else(|| Error::not_found("static role", name))?;
        let history = history
            .into_iter()
            .map(|r| RotationRecord {
                time: rfc3339(r.at),
                username: r.username,
                trigger: r.cause,
                outcome: r.outcome,
                error: r.error,
            })
            .collect();
        Ok(StaticRoleView {
            rotation_statements: row.rotation_statements,
            rotation_period: row.rotation_period.map(|p| p.as_secs()),
            rotation_schedule: row.rotation_schedule,
            rotation_window: row.rotation_window.map(|w| w.as_secs()),
            skip_import_rotation: row.skip_import_rotation,
            last_vault_rotation: row.last_rotated_at.map(rfc3339),
            next_vault_rotation: rfc3339(row.next_rotation_at),
            ttl: secs_until(row.next_rotation_at),
            rotation_in_progress: row.pending_password_sealed.is_some(),
            rotation_attempts: row.attempts,
            last_error: row.last_error,
            rotation_history: history,
            current_username: row.current_username,
            credential_type: "password",
            db_name: row.db_name,
            username: row.username,
            alternate_username: row.alternate_username,
        })
    }

    pub async fn list_static_roles(&self) -> Result<Vec<String>> {
        self.store.list_static_roles().await
    }

    /// Deletes a static role (waiting for a rotation in flight). The database user is not touched:
    /// it keeps its current password, which the operator can read before deleting.
    pub async fn delete_static_role(&self, name: &str) -> Result<()> {
        check_name("static role name", name)?;
        let _guard = self.lock(format!("static/{name}")).await;
        self.store.delete_static_role(name).await?;
        Ok(())
    }

    /// The current credentials of a static role.
    pub async fn static_credentials(&self, name: &str) -> Result<StaticCredentials> {
        check_name("static role name", name)?;
        let row = self.static_row(name).await?;
        self.catalog.check_allowed(&row.db_name, name).await?;
        let (Some(username), Some(sealed)) = (&row.current_username, &row.current_password_sealed)
        else {
            return Err(Error::Conflict(format!(
                "static role {name} has no known password yet: it was created with skip_import_rotation and has not been rotated; \
                 it gets one at its first rotation (at {}) or now with database/rotate-role/{name}",
                rfc3339(row.next_rotation_at)
            )));
        };
        let password = self
            .sealer
            .open(&password_context(name, username), sealed)?;
        Ok(StaticCredentials {
            username: username.clone(),
            password,
            last_vault_rotation: row.last_rotated_at.map(rfc3339),
            rotation_period: row.rotation_period.map(|p| p.as_secs()),
            rotation_schedule: row.rotation_schedule.clone(),
            rotation_window: row.rotation_window.map(|w| w.as_secs()),
            ttl: secs_until(row.next_rotation_at),
        })
    }

    /// Rotates a static role now (`database/rotate-role`). The rotation runs as a task of its own:
    /// a caller that stops waiting (a client that disconnects) cannot leave it half done.
    pub async fn rotate_static_role(&self, name: &str) -> Result<Outcome> {
        check_name("static role name", name)?;
        self.rotate_in_task(name.to_owned(), Cause::Manual, None)
            .await
    }

    /// Rotates a role the background rotator claimed until `claim`; does nothing if something else
    /// (a manual rotation) moved its schedule meanwhile.
    pub(super) async fn rotate_claimed(&self, name: &str, claim: DateTime<Utc>) -> Result<Outcome> {
        self.rotate_in_task(name.to_owned(), Cause::Schedule, Some(claim))
            .await
    }

    /// Resolves a rotation left pending by a crash (the rotator's start-up), which the caller
    /// claimed until `claim`.
    pub(super) async fn recover_static_role(
        &self,
        name: &str,
        claim: DateTime<Utc>,
    ) -> Result<Outcome> {
        self.rotate_in_task(name.to_owned(), Cause::Recovery, Some(claim))
            .await
    }

    /// Takes the role's lock and rotates it, in a tracked task that outlives the caller's wait.
    async fn rotate_in_task(
        &self,
        name: String,
        cause: Cause,
        claim: Option<DateTime<Utc>>,
    ) -> Result<Outcome> {
        let rotator = self.clone();
        self.run_detached(async move {
            let _guard = rotator.lock(format!("static/{name}")).await;
            rotator.rotate_locked(&name, cause, claim).await
        })
        .await
    }

    /// One rotation of `name`, with its lock held: failures are recorded and scheduled for retry.
    #[tracing::instrument(skip_all, fields(static_role = %name, cause = cause.as_str()), err(level = "warn"))]
    async fn rotate_locked(
        &self,
        name: &str,
        cause: Cause,
        claim: Option<DateTime<Utc>>,
    ) -> Result<Outcome> {
        let row = self.static_row(name).await?;
        if claim.is_some_and(|c| c != row.next_rotation_at) {
            return Ok(Outcome::NotDue);
        }
        if cause == Cause::Recovery && row.pending_password_sealed.is_none() {
            return Ok(Outcome::NotDue);
        }
        // A panic in a rotation is a failure like any other: recorded and retried with backoff,
        // never a pending password nobody comes back to.
        let started = std::time::Instant::now();
        let attempt = std::panic::AssertUnwindSafe(self.attempt(&row, cause)).catch_unwind();
        let attempted = attempt.await.unwrap_or_else(|_| {
            Err(Stop::Failed {
                username: rotation_target(&row),
                error: Error::Internal("the rotation panicked".into()),
            })
        });
        let outcome = match &attempted {
            Ok(Outcome::Rotated { .. }) => Some(metrics::Outcome::Success),
            Ok(Outcome::Skipped) => Some(metrics::Outcome::Skipped),
            Ok(Outcome::NotDue) => None,
            Err(_) => Some(metrics::Outcome::Failure),
        };
        if let (Some(outcome), Some(labels)) = (
            outcome,
            metrics::RotationLabels::checked_static(&row.name, &row.db_name),
        ) {
            metrics::rotation(&labels, outcome, started.elapsed());
        }
        match attempted {
            Ok(outcome) => Ok(outcome),
            Err(Stop::Crashed(error)) => Err(error),
            Err(Stop::Failed { username, error }) => {
                self.record_failure(&row, cause, &username, &error).await;
                Err(error)
            }
        }
    }

    async fn attempt(&self, row: &StaticRole, cause: Cause) -> Result<Outcome, Stop> {
        let name = row.name.as_str();
        let target = rotation_target(row);
        let failed = |username: &str| {
            let username = username.to_owned();
            move |error: Error| Stop::Failed { username, error }
        };
        let plugin = self
            .engines
            .get(&row.db_name)
            .await
            .map_err(failed(&target))?;
        let statements = &row.rotation_statements;
        let schedule = schedule_of(row).map_err(failed(&target))?;

        if row.pending_password_sealed.is_some() {
            match self
                .resolve_pending(row, plugin.as_ref(), statements, &schedule, cause)
                .await?
            {
                Resolution::Promoted { username } => return Ok(Outcome::Rotated { username }),
                Resolution::Discarded => {}
            }
        }

        let now = Utc::now();
        if cause == Cause::Schedule && !schedule.within_window(row.scheduled_at, now) {
            let next = schedule.next_after(now).map_err(failed(&target))?;
            self.store
                .reschedule_static_role(name, next, now)
                .await
                .map_err(failed(&target))?;
            let error = format!(
                "the rotation window of the occurrence at {} passed before the rotation could run; next at {}",
                rfc3339(row.scheduled_at),
                rfc3339(next)
            );
            tracing::warn!(username = %target, %error, "scheduled rotation skipped");
            self.record(name, &target, cause, "skipped", Some(error))
                .await;
            return Ok(Outcome::Skipped);
        }

        // Phase 1: the new password is durable (sealed) before the database hears of it.
        let password = crate::password_policy::generate_for_connection(&self.store, &row.db_name)
            .await
            .map_err(failed(&target))?;
        let sealed = self
            .sealer
            .seal(&password_context(name, &target), &password)
            .map_err(failed(&target))?;
        let resolve_by = now + super::rotator::claim_length();
        let stored = self
            .store
            .set_static_pending(name, &target, &sealed, now, resolve_by, self.replica.id())
            .await
            .map_err(failed(&target))?;
        if !stored {
            return Err(Stop::Failed {
                username: target,
                error: Error::Conflict(format!(
                    "another rotation of static role {name} is in flight"
                )),
            });
        }
        self.crash_point(RotationFault::AfterPendingStored)
            .map_err(Stop::Crashed)?;
        // Phases 2 and 3: set it, then prove it logs in.
        self.set_and_verify(name, plugin.as_ref(), &target, &password, statements)
            .await?;
        // Phase 4.
        self.promote(row, &target, &sealed, &schedule, cause)
            .await?;
        Ok(Outcome::Rotated { username: target })
    }

    /// Sets `password` for `username` on the database and logs in with it.
    async fn set_and_verify(
        &self,
        role: &str,
        plugin: &dyn DatabasePlugin,
        username: &str,
        password: &Secret,
        statements: &[String],
    ) -> Result<(), Stop> {
        let failed = |error: Error| Stop::Failed {
            username: username.to_owned(),
            error,
        };
        plugin
            .update_user(&UpdateUserRequest {
                username,
                password: Some(PasswordChange {
                    new_password: password,
                    statements,
                }),
                expiration: None,
            })
            .await
            .map_err(|e| {
                failed(Error::database(
                    format!("cannot set the password of {username} for static role {role}"),
                    e,
                ))
            })?;
        self.pause_point(RotationFault::AfterPasswordSet).await;
        self.crash_point(RotationFault::AfterPasswordSet)
            .map_err(Stop::Crashed)?;
        plugin.check_login(username, password).await.map_err(|e| {
            failed(Error::database(
                format!("the new password of {username} (static role {role}) was set but does not log in"),
                e,
            ))
        })?;
        self.crash_point(RotationFault::AfterLoginChecked)
            .map_err(Stop::Crashed)?;
        Ok(())
    }

    /// Makes the pending password current and moves the schedule on.
    async fn promote(
        &self,
        row: &StaticRole,
        username: &str,
        pending_sealed: &str,
        schedule: &Schedule,
        cause: Cause,
    ) -> Result<(), Stop> {
        let failed = |error: Error| Stop::Failed {
            username: username.to_owned(),
            error,
        };
        let now = Utc::now();
        let next = schedule.next_after(now).map_err(failed)?;
        let promoted = self
            .store
            .promote_static_pending(
                &row.name,
                Promotion {
                    pending_sealed,
                    now,
                    scheduled_at: next,
                    next_rotation_at: next,
                },
            )
            .await
            .map_err(failed)?;
        if !promoted {
            return Err(failed(Error::Conflict(format!(
                "static role {} changed during its rotation; the rotation was not recorded",
                row.name
            ))));
        }
        tracing::info!(username, next_rotation = %rfc3339(next), "static role password rotated");
        self.record(&row.name, username, cause, "rotated", None)
            .await;
        self.wake.notify_one();
        Ok(())
    }

    /// Settles a pending password left by a crash or a failed attempt, never discarding one the
    /// database might hold.
    async fn resolve_pending(
        &self,
        row: &StaticRole,
        plugin: &dyn DatabasePlugin,
        statements: &[String],
        schedule: &Schedule,
        cause: Cause,
    ) -> Result<Resolution, Stop> {
        let name = row.name.as_str();
        let (Some(username), Some(sealed)) = (&row.pending_username, &row.pending_password_sealed)
        else {
            return Ok(Resolution::Discarded);
        };
        let failed = |error: Error| Stop::Failed {
            username: username.clone(),
            error,
        };
        let pending = self
            .sealer
            .open(&password_context(name, username), sealed)
            .map_err(failed)?;
        match plugin.check_login(username, &pending).await {
            Ok(()) => {
                tracing::info!(%username, "the pending password logs in: completing the interrupted rotation");
                self.promote(row, username, sealed, schedule, cause).await?;
                return Ok(Resolution::Promoted {
                    username: username.clone(),
                });
            }
            Err(e) if e.is_transient() => {
                return Err(failed(Error::database(
                    format!("cannot check the pending password of {username} (static role {name})"),
                    e,
                )))
            }
            Err(_) => {}
        }
        // Refused. If another stored password of this user logs in, the database never took the
        // pending one, which can then go.
        let others = [
            (&row.current_username, &row.current_password_sealed),
            (&row.previous_username, &row.previous_password_sealed),
        ];
        for (other_user, other_sealed) in others {
            let (Some(other_user), Some(other_sealed)) = (other_user, other_sealed) else {
                continue;
            };
            if other_user != username {
                continue;
            }
            let Ok(other) = self
                .sealer
                .open(&password_context(name, other_user), other_sealed)
            else {
                continue;
            };
            if plugin.check_login(username, &other).await.is_ok() {
                self.store
                    .discard_static_pending(name, sealed)
                    .await
                    .map_err(failed)?;
                tracing::info!(%username, "the interrupted rotation never reached the database; its pending password was dropped");
                return Ok(Resolution::Discarded);
            }
        }
        // Nothing proves where the database stands: set the pending password again.
        tracing::info!(%username, "setting the pending password again");
        self.set_and_verify(name, plugin, username, &pending, statements)
            .await?;
        self.promote(row, username, sealed, schedule, cause).await?;
        Ok(Resolution::Promoted {
            username: username.clone(),
        })
    }

    /// Records a failed attempt and schedules the retry: capped exponential backoff with jitter,
    /// never longer than a period role's own period.
    async fn record_failure(&self, row: &StaticRole, cause: Cause, username: &str, error: &Error) {
        let now = Utc::now();
        let mut delay = self
            .retry
            .delay(row.attempts + 1, crate::lease::retry::is_transient(error));
        if let Some(period) = row.rotation_period {
            delay = delay.min(period);
        }
        let retry_at = now
            + chrono::Duration::from_std(delay).unwrap_or_else(|_| chrono::Duration::seconds(300));
        let message = error.to_string();
        match self
            .store
            .record_static_failure(&row.name, &message, retry_at, now)
            .await
        {
            Ok(attempts) => tracing::warn!(
                %username,
                attempts,
                retry_at = %rfc3339(retry_at),
                error = %message,
                "static role rotation failed; it will be retried"
            ),
            Err(store_error) => {
                tracing::error!(error = %store_error, "cannot record a failed static role rotation")
            }
        }
        self.record(&row.name, username, cause, "failed", Some(message))
            .await;
        self.wake.notify_one();
    }

    /// Appends to the rotation history; a failure to do so is logged, never fatal.
    async fn record(
        &self,
        name: &str,
        username: &str,
        cause: Cause,
        outcome: &str,
        error: Option<String>,
    ) {
        let record = store::RotationRecord {
            at: Utc::now(),
            username: username.to_owned(),
            cause: cause.as_str().to_owned(),
            outcome: outcome.to_owned(),
            error,
        };
        if let Err(e) = self.store.insert_rotation_record(name, &record).await {
            tracing::error!(error = %e, static_role = %name, "cannot record a rotation in the history");
        }
    }

    /// Every password the store holds for a static role, unsealed: current, previous and pending,
    /// with their users (test builds only, to prove one of them logs in after a crash).
    #[cfg(feature = "fault-injection")]
    pub async fn stored_static_passwords(
        &self,
        name: &str,
    ) -> Result<Vec<(&'static str, String, Secret)>> {
        let row = self.static_row(name).await?;
        let mut found = Vec::new();
        for (slot, user, sealed) in [
            (
                "current",
                &row.current_username,
                &row.current_password_sealed,
            ),
            (
                "previous",
                &row.previous_username,
                &row.previous_password_sealed,
            ),
            (
                "pending",
                &row.pending_username,
                &row.pending_password_sealed,
            ),
        ] {
            if let (Some(user), Some(sealed)) = (user, sealed) {
                found.push((
                    slot,
                    user.clone(),
                    self.sealer.open(&password_context(name, user), sealed)?,
                ));
            }
        }
        Ok(found)
    }
}
