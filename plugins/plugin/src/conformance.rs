//! The conformance kit (feature `testing`): the scenarios every engine must pass, run against a
//! real server through a [`Harness`] the engine's tests provide.
//!
//! An engine's test suite calls [`run`] once. The harness hands over the connected plugin and
//! ways to look at the server *without* the plugin (its own driver: log in as a user, ask whether
//! a user or a database exists), so that the kit checks what a user of the credentials relies on,
//! not what the plugin says about itself. Every scenario runs even when an earlier one fails; every
//! user (and database) a scenario made is deleted afterwards, and found gone, whatever happened;
//! then [`run`] panics with the list of failures, if any.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;

use crate::{
    generate_password, DatabasePlugin, DeleteUserRequest, ExpirationChange, NewDatabase,
    NewUserRequest, PasswordChange, PasswordStrength, PluginError, RoleOptions, Secret,
    UpdateUserRequest,
};

/// What the kit needs from an engine's tests.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The plugin under test, connected as the admin.
    fn plugin(&self) -> &dyn DatabasePlugin;

    /// Opens a session as `username` with the engine's own driver (never through the plugin), in
    /// `database` if given. `Err` says why the server refused or failed.
    async fn login(
        &self,
        username: &str,
        password: &Secret,
        database: Option<&str>,
    ) -> Result<Box<dyn UserSession>, String>;

    /// Whether a user of that name exists, asked with the engine's own driver.
    async fn user_exists(&self, username: &str) -> bool;

    /// Whether a database of that name exists; `None` where the engine has no databases (the
    /// throwaway-database scenario is then skipped, and the kit checks the plugin refuses it).
    async fn database_exists(&self, name: &str) -> Option<bool>;

    /// Creation statements whose first makes the user and a later one the server refuses: what a
    /// role with a typo in its second statement runs.
    fn half_failing_creation(&self) -> Vec<String>;
}

/// An open session as an issued user.
#[async_trait]
pub trait UserSession: Send {
    /// A trivial request; `Err` once the server has ended the session.
    async fn ping(&mut self) -> Result<(), String>;

    /// Creates something in the session's database (a table, a key), as a migration would; used
    /// to show a throwaway database belongs to its user.
    async fn write(&mut self) -> Result<(), String>;
}

/// One scenario's outcome.
type Outcome = Result<(), String>;

/// Runs every scenario against the harness's server; panics with every failure at the end.
/// Returns the names of the scenarios that ran, so a test can say how many passed.
pub async fn run(harness: &dyn Harness) -> Vec<&'static str> {
    let kit = Kit {
        harness,
        made: Mutex::default(),
    };
    let mut ran = Vec::new();
    let mut failures = Vec::new();
    macro_rules! scenario {
        ($name:literal, $call:expr) => {{
            let outcome: Outcome = $call.await;
            let cleanup = kit.clean_up().await;
            ran.push($name);
            if let Err(message) = outcome.and(cleanup) {
                failures.push(format!("{}: {message}", $name));
            }
        }};
    }
    scenario!("passwords are checked", kit.passwords_are_checked());
    scenario!("create, log in, delete, delete again", kit.lifecycle());
    scenario!("sessions are ended on delete", kit.sessions_end());
    scenario!("delete several at once", kit.delete_several());
    scenario!("renew", kit.renew());
    scenario!("set password", kit.set_password());
    scenario!("list users by prefix", kit.list_users());
    scenario!("bad statements are refused", kit.bad_statements());
    scenario!("rollback after a failed creation", kit.rollback());
    scenario!("username limits", kit.username_limits());
    scenario!("throwaway database", kit.throwaway_database());
    scenario!("warm pool", kit.warm_pool());
    assert!(
        failures.is_empty(),
        "{} engine failed {} of {} conformance scenarios:\n{}",
        harness.plugin().engine(),
        failures.len(),
        ran.len(),
        failures.join("\n")
    );
    ran
}

/// A user (and database) a scenario made, to delete afterwards.
struct Made {
    username: String,
    database: Option<String>,
}

struct Kit<'a> {
    harness: &'a dyn Harness,
    made: Mutex<Vec<Made>>,
}

/// `check` as an outcome: `Err(message)` when false.
fn ensure(check: bool, message: impl FnOnce() -> String) -> Outcome {
    if check {
        Ok(())
    } else {
        Err(message())
    }
}

fn in_one_hour() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::hours(1)
}

impl Kit<'_> {
    fn plugin(&self) -> &dyn DatabasePlugin {
        self.harness.plugin()
    }

    /// A fresh username (`lct-` and 12 random hex digits, 16 characters: within every engine's
    /// limit), remembered for clean-up.
    fn name(&self) -> String {
        let name = random_name();
        self.remember(&name, None);
        name
    }

    fn remember(&self, username: &str, database: Option<&str>) {
        self.made.lock().expect("not poisoned").push(Made {
            username: username.to_owned(),
            database: database.map(str::to_owned),
        });
    }

    /// Creates a user with the engine's default statements (or `statements`).
    async fn create(
        &self,
        username: &str,
        password: &Secret,
        expiration: DateTime<Utc>,
        statements: &[String],
        database: Option<NewDatabase<'_>>,
    ) -> Result<(), PluginError> {
        self.plugin()
            .create_user(&NewUserRequest {
                username,
                password,
                // Every scenario's password comes from `generate_password(32)`.
                password_strength: PasswordStrength::Unguessable,
                expiration,
                statements,
                options: &RoleOptions::new(),
                database,
            })
            .await
    }

    async fn delete(&self, username: &str) -> Result<(), PluginError> {
        self.plugin()
            .delete_user(&DeleteUserRequest::builtin(username))
            .await
    }

    async fn logs_in(&self, username: &str, password: &Secret) -> bool {
        self.harness.login(username, password, None).await.is_ok()
    }

    /// Deletes whatever the last scenario made and checks it is gone.
    async fn clean_up(&self) -> Outcome {
        let made = std::mem::take(&mut *self.made.lock().expect("not poisoned"));
        let mut problems = Vec::new();
        for item in made {
            let request = DeleteUserRequest {
                username: &item.username,
                statements: &[],
                database: item.database.as_deref(),
            };
            if let Err(err) = self.plugin().delete_user(&request).await {
                problems.push(format!("clean-up of {} failed: {err}", item.username));
            }
            if self.harness.user_exists(&item.username).await {
                problems.push(format!("{} is still there after clean-up", item.username));
            }
            if let Some(database) = &item.database {
                if self.harness.database_exists(database).await == Some(true) {
                    problems.push(format!("database {database} is still there after clean-up"));
                }
            }
        }
        ensure(problems.is_empty(), || problems.join("; "))
    }

    /// Without password checks on the server, none of the refusals below would mean anything.
    async fn passwords_are_checked(&self) -> Outcome {
        let nobody = random_name();
        ensure(
            !self.logs_in(&nobody, &Secret::new("whatever-1")).await,
            || {
                "the server let a user that does not exist log in: it does not check passwords"
                    .into()
            },
        )
    }

    async fn lifecycle(&self) -> Outcome {
        let name = self.name();
        let password = generate_password(32);
        self.create(&name, &password, in_one_hour(), &[], None)
            .await
            .map_err(|e| format!("create_user: {e}"))?;
        ensure(self.harness.user_exists(&name).await, || {
            "the user does not exist after create_user".into()
        })?;
        let mut session = self
            .harness
            .login(&name, &password, None)
            .await
            .map_err(|e| format!("the new user cannot log in: {e}"))?;
        session
            .ping()
            .await
            .map_err(|e| format!("query as the new user: {e}"))?;
        drop(session);
        ensure(
            !self.logs_in(&name, &Secret::new("Wrong-password-1")).await,
            || "a wrong password logs in".into(),
        )?;
        self.plugin()
            .check_login(&name, &password)
            .await
            .map_err(|e| format!("check_login with the right password: {e}"))?;

        self.delete(&name)
            .await
            .map_err(|e| format!("delete_user: {e}"))?;
        ensure(!self.logs_in(&name, &password).await, || {
            "the user still logs in after delete_user".into()
        })?;
        ensure(!self.harness.user_exists(&name).await, || {
            "the user still exists after delete_user".into()
        })?;
        match self.plugin().check_login(&name, &password).await {
            Err(PluginError::LoginRefused { .. }) => {}
            other => return Err(format!("check_login after delete: {other:?}")),
        }
        self.delete(&name)
            .await
            .map_err(|e| format!("deleting again must succeed: {e}"))?;
        self.delete(&random_name())
            .await
            .map_err(|e| format!("deleting a user that never existed must succeed: {e}"))
    }

    async fn sessions_end(&self) -> Outcome {
        let name = self.name();
        let password = generate_password(32);
        self.create(&name, &password, in_one_hour(), &[], None)
            .await
            .map_err(|e| format!("create_user: {e}"))?;
        let mut held = self
            .harness
            .login(&name, &password, None)
            .await
            .map_err(|e| format!("login: {e}"))?;
        held.ping()
            .await
            .map_err(|e| format!("query before delete: {e}"))?;
        self.delete(&name)
            .await
            .map_err(|e| format!("delete_user: {e}"))?;
        // The server ends the session on its own schedule; allow it a moment, never race it.
        for _ in 0..50 {
            if held.ping().await.is_err() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("a session open at delete_user still answers 5 s later".into())
    }

    /// `delete_users` with users that exist (one with a session open), one that never did, and
    /// the same user twice: every outcome is success, in order, and every user and session is
    /// gone.
    async fn delete_several(&self) -> Outcome {
        let names: Vec<String> = (0..3).map(|_| self.name()).collect();
        let password = generate_password(32);
        for name in &names {
            self.create(name, &password, in_one_hour(), &[], None)
                .await
                .map_err(|e| format!("create_user: {e}"))?;
        }
        let mut held = self
            .harness
            .login(&names[0], &password, None)
            .await
            .map_err(|e| format!("login: {e}"))?;
        held.ping()
            .await
            .map_err(|e| format!("query before delete: {e}"))?;
        let never = random_name();
        let mut usernames: Vec<&str> = names.iter().map(String::as_str).collect();
        usernames.push(&never);
        usernames.push(&names[1]);
        let requests: Vec<DeleteUserRequest<'_>> = usernames
            .iter()
            .map(|name| DeleteUserRequest::builtin(name))
            .collect();
        let outcomes = self.plugin().delete_users(&requests).await;
        ensure(outcomes.len() == requests.len(), || {
            format!(
                "{} outcomes for {} requests",
                outcomes.len(),
                requests.len()
            )
        })?;
        for (name, outcome) in usernames.iter().zip(&outcomes) {
            if let Err(e) = outcome {
                return Err(format!("delete_users failed for {name}: {e}"));
            }
        }
        for name in &names {
            ensure(!self.harness.user_exists(name).await, || {
                format!("{name} still exists after delete_users")
            })?;
            ensure(!self.logs_in(name, &password).await, || {
                format!("{name} still logs in after delete_users")
            })?;
        }
        for _ in 0..50 {
            if held.ping().await.is_err() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("a session open at delete_users still answers 5 s later".into())
    }

    /// An engine that enforces expiry refuses a user created already expired, and lets it in
    /// again once renewed; every engine accepts a renewal and keeps the login working.
    async fn renew(&self) -> Outcome {
        let name = self.name();
        let password = generate_password(32);
        let enforces = self.plugin().enforces_expiration();
        let first_expiry = if enforces {
            Utc::now() - chrono::Duration::minutes(1)
        } else {
            in_one_hour()
        };
        self.create(&name, &password, first_expiry, &[], None)
            .await
            .map_err(|e| format!("create_user: {e}"))?;
        if enforces {
            ensure(!self.logs_in(&name, &password).await, || {
                "the engine says it enforces expiry, but a user created expired logs in".into()
            })?;
        }
        self.plugin()
            .update_user(&UpdateUserRequest {
                username: &name,
                password: None,
                expiration: Some(ExpirationChange {
                    new_expiration: in_one_hour(),
                    statements: &[],
                }),
            })
            .await
            .map_err(|e| format!("update_user (expiration): {e}"))?;
        ensure(self.logs_in(&name, &password).await, || {
            "the user cannot log in after renewal".into()
        })?;
        // A request with no change does nothing, and fails nothing.
        self.plugin()
            .update_user(&UpdateUserRequest {
                username: &name,
                password: None,
                expiration: None,
            })
            .await
            .map_err(|e| format!("update_user with no change: {e}"))?;
        ensure(self.logs_in(&name, &password).await, || {
            "an update with no change broke the login".into()
        })
    }

    async fn set_password(&self) -> Outcome {
        let name = self.name();
        let old = generate_password(32);
        self.create(&name, &old, in_one_hour(), &[], None)
            .await
            .map_err(|e| format!("create_user: {e}"))?;
        let new = generate_password(32);
        self.plugin()
            .update_user(&UpdateUserRequest {
                username: &name,
                password: Some(PasswordChange {
                    new_password: &new,
                    statements: &[],
                }),
                expiration: None,
            })
            .await
            .map_err(|e| format!("update_user (password): {e}"))?;
        ensure(self.logs_in(&name, &new).await, || {
            "the new password does not log in".into()
        })?;
        ensure(!self.logs_in(&name, &old).await, || {
            "the old password still logs in".into()
        })?;
        match self.plugin().check_login(&name, &old).await {
            Err(PluginError::LoginRefused { reason, .. }) => ensure(
                !reason.contains(old.expose()) && !reason.contains(new.expose()),
                || "a refused login's reason holds a password".into(),
            )?,
            other => return Err(format!("check_login with the old password: {other:?}")),
        }
        // A user that is not there cannot be given a password: an error, never a silent success.
        let missing = random_name();
        let result = self
            .plugin()
            .update_user(&UpdateUserRequest {
                username: &missing,
                password: Some(PasswordChange {
                    new_password: &new,
                    statements: &[],
                }),
                expiration: None,
            })
            .await;
        ensure(result.is_err(), || {
            "setting the password of a user that does not exist succeeded".into()
        })
    }

    async fn list_users(&self) -> Outcome {
        let prefix = format!("{}-", random_name());
        let names = [format!("{prefix}a"), format!("{prefix}b")];
        for name in &names {
            self.remember(name, None);
            self.create(name, &generate_password(32), in_one_hour(), &[], None)
                .await
                .map_err(|e| format!("create_user: {e}"))?;
        }
        let mut found = self
            .plugin()
            .list_users(&prefix)
            .await
            .map_err(|e| format!("list_users: {e}"))?;
        found.sort();
        ensure(found == names, || {
            format!("list_users({prefix}) gave {found:?}")
        })?;
        // `_` and `%` are no wildcards: a prefix differing only there matches nothing.
        for lookalike in [prefix.replace('-', "_"), prefix.replace('-', "%")] {
            let found = self
                .plugin()
                .list_users(&lookalike)
                .await
                .map_err(|e| format!("list_users: {e}"))?;
            ensure(found.is_empty(), || {
                format!("list_users({lookalike}) matched {found:?}")
            })?;
        }
        for name in &names {
            self.delete(name)
                .await
                .map_err(|e| format!("delete_user: {e}"))?;
        }
        let found = self
            .plugin()
            .list_users(&prefix)
            .await
            .map_err(|e| format!("list_users: {e}"))?;
        ensure(found.is_empty(), || {
            format!("list_users after delete gave {found:?}")
        })
    }

    /// Templates with unknown placeholders are refused when the role is written; a statement
    /// the server refuses fails the creation with a permanent error that does not echo the
    /// password.
    async fn bad_statements(&self) -> Outcome {
        let typo = vec!["{{nmae}} {{password}}".to_owned()];
        ensure(
            self.plugin()
                .validate_role(&RoleOptions::new(), &[&typo])
                .is_err(),
            || "validate_role accepted the unknown placeholder {{nmae}}".into(),
        )?;
        let defaults = self.plugin().default_statements();
        self.plugin()
            .validate_role(
                &RoleOptions::new(),
                &[&defaults.creation, &defaults.renew, &defaults.rotation],
            )
            .map_err(|e| format!("validate_role refused the engine's own defaults: {e}"))?;
        let name = self.name();
        let password = generate_password(32);
        let err = match self
            .create(
                &name,
                &password,
                in_one_hour(),
                &self.harness.half_failing_creation(),
                None,
            )
            .await
        {
            Ok(()) => return Err("a statement the server refuses did not fail create_user".into()),
            Err(err) => err,
        };
        ensure(!err.is_transient(), || {
            format!("a refused statement is not transient: {err:?}")
        })?;
        ensure(!err.to_string().contains(password.expose()), || {
            "the creation error holds the password".into()
        })
    }

    async fn rollback(&self) -> Outcome {
        let name = self.name();
        let password = generate_password(32);
        let created = self
            .create(
                &name,
                &password,
                in_one_hour(),
                &self.harness.half_failing_creation(),
                None,
            )
            .await;
        ensure(created.is_err(), || {
            "the half-failing creation succeeded".into()
        })?;
        ensure(!self.harness.user_exists(&name).await, || {
            "a failed creation left its user behind".into()
        })?;
        ensure(!self.logs_in(&name, &password).await, || {
            "a failed creation left a working login".into()
        })
    }

    /// A name over the engine's limit or outside the safe alphabet is refused before anything
    /// runs; a name of exactly the limit works.
    async fn username_limits(&self) -> Outcome {
        let limit = self.plugin().max_username_len().min(128);
        let password = generate_password(32);
        let base = random_name();
        let longest: String = base
            .chars()
            .chain(std::iter::repeat('x'))
            .take(limit)
            .collect();
        let too_long = format!("{longest}y");
        match self
            .create(&too_long, &password, in_one_hour(), &[], None)
            .await
        {
            Err(PluginError::InvalidValue { .. }) => {}
            other => return Err(format!("a username of {} characters: {other:?}", limit + 1)),
        }
        // An engine that cuts long names would have made `longest`: look for both.
        ensure(
            !self.harness.user_exists(&too_long).await && !self.harness.user_exists(&longest).await,
            || "a refused long name was created anyway".into(),
        )?;
        let quoted = format!("{}'x", &base[..base.len() - 2]);
        match self
            .create(&quoted, &password, in_one_hour(), &[], None)
            .await
        {
            Err(PluginError::InvalidValue { .. }) => {}
            other => return Err(format!("a username with a quote: {other:?}")),
        }
        self.remember(&longest, None);
        self.create(&longest, &password, in_one_hour(), &[], None)
            .await
            .map_err(|e| format!("a username of exactly {limit} characters: {e}"))?;
        ensure(self.logs_in(&longest, &password).await, || {
            format!("a user with a name of {limit} characters cannot log in")
        })
    }

    /// `database_per_lease`: a database made with the user, usable by it, and gone with it.
    /// A pooled user cannot log in with its password until activated, then can (until deleted);
    /// an engine without a pool refuses both halves.
    async fn warm_pool(&self) -> Outcome {
        let name = self.name();
        let password = generate_password(32);
        let request = NewUserRequest {
            username: &name,
            password: &password,
            password_strength: PasswordStrength::Guessable,
            // In the past: the pool's users are not meant to log in before they are issued.
            expiration: Utc::now() - chrono::Duration::hours(1),
            statements: &[],
            options: &RoleOptions::new(),
            database: None,
        };
        if !self.plugin().supports_warm_pool() {
            ensure(
                self.plugin().create_pooled_user(&request).await.is_err(),
                || "an engine without a warm pool created a pooled user".into(),
            )?;
            return ensure(!self.harness.user_exists(&name).await, || {
                "a refused pooled creation left a user".into()
            });
        }
        self.plugin()
            .create_pooled_user(&request)
            .await
            .map_err(|e| format!("create_pooled_user: {e}"))?;
        ensure(self.harness.user_exists(&name).await, || {
            "the user does not exist after create_pooled_user".into()
        })?;
        ensure(!self.logs_in(&name, &password).await, || {
            "a pooled user logs in before it is activated".into()
        })?;
        self.plugin()
            .activate_pooled_user(&name, in_one_hour())
            .await
            .map_err(|e| format!("activate_pooled_user: {e}"))?;
        let mut session = self
            .harness
            .login(&name, &password, None)
            .await
            .map_err(|e| format!("the activated user cannot log in: {e}"))?;
        session
            .ping()
            .await
            .map_err(|e| format!("query as the activated user: {e}"))?;
        drop(session);
        self.delete(&name)
            .await
            .map_err(|e| format!("delete_user of an activated pooled user: {e}"))?;
        ensure(!self.logs_in(&name, &password).await, || {
            "the activated user still logs in after delete_user".into()
        })?;
        // A pooled user never issued goes the same way.
        let unused = self.name();
        self.plugin()
            .create_pooled_user(&NewUserRequest {
                username: &unused,
                ..request
            })
            .await
            .map_err(|e| format!("create_pooled_user: {e}"))?;
        self.delete(&unused)
            .await
            .map_err(|e| format!("delete_user of a pooled user: {e}"))?;
        ensure(!self.harness.user_exists(&unused).await, || {
            "a pooled user still exists after delete_user".into()
        })?;
        let activate_missing = self
            .plugin()
            .activate_pooled_user(&random_name(), in_one_hour())
            .await;
        ensure(activate_missing.is_err(), || {
            "activating a user that does not exist succeeded".into()
        })
    }

    async fn throwaway_database(&self) -> Outcome {
        let probe = random_name();
        if self.harness.database_exists(&probe).await.is_none() {
            return ensure(
                self.plugin().validate_database_per_lease(None).is_err(),
                || "an engine without databases accepts database_per_lease".into(),
            );
        }
        self.plugin()
            .validate_database_per_lease(None)
            .map_err(|e| format!("validate_database_per_lease: {e}"))?;
        let name = random_name();
        let database = format!("{name}-db");
        self.remember(&name, Some(&database));
        let password = generate_password(32);
        self.create(
            &name,
            &password,
            in_one_hour(),
            &[],
            Some(NewDatabase {
                name: &database,
                template: None,
            }),
        )
        .await
        .map_err(|e| format!("create_user with a database: {e}"))?;
        ensure(
            self.harness.database_exists(&database).await == Some(true),
            || "the database was not made".into(),
        )?;
        let mut session = self
            .harness
            .login(&name, &password, Some(&database))
            .await
            .map_err(|e| format!("the user cannot log in to its database: {e}"))?;
        session
            .write()
            .await
            .map_err(|e| format!("the user cannot write in its database: {e}"))?;
        let url = self.plugin().user_connection_url(&name, Some(&database));
        ensure(
            url.as_deref()
                .is_some_and(|url| url.contains(&name) && url.contains(&database)),
            || format!("user_connection_url names neither user nor database: {url:?}"),
        )?;
        // Deleted while the session is still open: the session ends and the database goes.
        self.plugin()
            .delete_user(&DeleteUserRequest {
                username: &name,
                statements: &[],
                database: Some(&database),
            })
            .await
            .map_err(|e| format!("delete_user with its database: {e}"))?;
        ensure(
            self.harness.database_exists(&database).await == Some(false),
            || "the database is still there after delete_user".into(),
        )?;
        ensure(!self.harness.user_exists(&name).await, || {
            "the user is still there after delete_user".into()
        })
    }
}

/// `lct-` and 12 random hex digits.
fn random_name() -> String {
    let mut rng = rand::thread_rng();
    let suffix: String = (0..12)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).expect("a hex digit"))
        .collect();
    format!("lct-{suffix}")
}
