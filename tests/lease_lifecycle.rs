//! The lease lifecycle under the races and failures that once broke it (issue 8: F4, F8, F14, F16,
//! F18 and the lease side of F13), against the real PostgreSQL and MariaDB on this machine.
//!
//! Each test asserts what a user relies on: an issued login works while its lease lives, and once
//! the lease is revoked the login is refused and the database user is gone, whatever raced it.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use reqwest::StatusCode;
use serde_json::json;

const MY_READ_ALL: &str = "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT SELECT ON *.* TO '{{name}}'@'%';";
const PG_LOGIN: &str =
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';";

// ---- database helpers ---------------------------------------------------------------------------

fn mysql_opts() -> mysql_async::Opts {
    mysql_async::Opts::from_url(&mysql_url()).expect("LESSOR_TEST_MYSQL_URL is a mysql:// URL")
}

async fn mysql_admin() -> mysql_async::Conn {
    mysql_async::Conn::new(mysql_opts())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "MariaDB/MySQL at {} cannot be reached ({e}); start it with scripts/services.sh",
                mysql_url()
            )
        })
}

/// Logs in over TCP as `user` and runs a query.
async fn mysql_login(user: &str, password: &str) -> Result<(), mysql_async::Error> {
    let admin = mysql_opts();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(admin.ip_or_hostname().to_owned())
        .tcp_port(admin.tcp_port())
        .prefer_socket(false)
        .user(Some(user))
        .pass(Some(password));
    let mut conn = mysql_async::Conn::new(opts).await?;
    conn.query_drop("SELECT 1").await?;
    let _ = conn.disconnect().await;
    Ok(())
}

/// MariaDB users whose name starts with `prefix`.
async fn mysql_users_with_prefix(prefix: &str) -> Vec<String> {
    let mut admin = mysql_admin().await;
    let users: Vec<String> = admin
        .exec(
            "SELECT User FROM mysql.user WHERE LEFT(User, CHAR_LENGTH(?)) = ?",
            (prefix, prefix),
        )
        .await
        .unwrap();
    let _ = admin.disconnect().await;
    users
}

/// Drops every MariaDB user starting with `prefix`, so a failed test leaves nothing behind.
async fn mysql_drop_users_with_prefix(prefix: &str) {
    let users = mysql_users_with_prefix(prefix).await;
    let mut admin = mysql_admin().await;
    for user in users {
        let _ = admin
            .query_drop(format!("DROP USER IF EXISTS '{user}'@'%'"))
            .await;
    }
    let _ = admin.disconnect().await;
}

/// PostgreSQL roles whose name starts with `prefix`.
async fn pg_roles_with_prefix(prefix: &str) -> Vec<String> {
    let admin = pg_admin().await;
    admin
        .query(
            "SELECT rolname::text FROM pg_roles WHERE left(rolname, length($1)) = $1",
            &[&prefix],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

async fn pg_drop_roles_with_prefix(prefix: &str) {
    let admin = pg_admin().await;
    for role in pg_roles_with_prefix(prefix).await {
        let _ = admin
            .batch_execute(&format!("DROP ROLE IF EXISTS \"{role}\""))
            .await;
    }
}

#[derive(Clone, Copy, Debug)]
enum Engine {
    Postgres,
    Mysql,
}

impl Engine {
    async fn users_with_prefix(self, prefix: &str) -> Vec<String> {
        match self {
            Engine::Postgres => pg_roles_with_prefix(prefix).await,
            Engine::Mysql => mysql_users_with_prefix(prefix).await,
        }
    }

    async fn drop_users_with_prefix(self, prefix: &str) {
        match self {
            Engine::Postgres => pg_drop_roles_with_prefix(prefix).await,
            Engine::Mysql => mysql_drop_users_with_prefix(prefix).await,
        }
    }

    /// Whether `user` can log in with `password` right now.
    async fn login_works(self, user: &str, password: &str) -> bool {
        match self {
            Engine::Postgres => pg_login(user, password).await.is_ok(),
            Engine::Mysql => mysql_login(user, password).await.is_ok(),
        }
    }

    async fn add_connection(self, api: &Api, name: &str) {
        match self {
            Engine::Postgres => api.add_postgres(name).await,
            Engine::Mysql => api.add_mysql(name).await,
        }
    }

    fn creation(self) -> &'static str {
        match self {
            Engine::Postgres => PG_LOGIN,
            Engine::Mysql => MY_READ_ALL,
        }
    }
}

/// Drops leftover users with a prefix when the test ends, even by a panic, so no run leaves a
/// user behind; the assertions themselves check the users were gone before this runs.
struct Sweep {
    engine: Engine,
    prefix: String,
}

impl Drop for Sweep {
    fn drop(&mut self) {
        let (engine, prefix) = (self.engine, self.prefix.clone());
        // A fresh runtime on a fresh thread: Drop may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(engine.drop_users_with_prefix(&prefix))
        })
        .join();
    }
}

/// A server with one connection `db` on `engine` and a role on it; returns the server and a sweep
/// of the role's users.
async fn server_with_role(engine: Engine, role: &str) -> (TestServer, Sweep) {
    let server = TestServer::start().await;
    engine.add_connection(&server.api, "db").await;
    server
        .write_role(
            role,
            json!({ "db_name": "db", "creation_statements": [engine.creation()], "default_ttl": "1h", "max_ttl": "2h" }),
        )
        .await;
    let sweep = Sweep {
        engine,
        prefix: format!("v-{role}-"),
    };
    (server, sweep)
}

// ---- F4: revocation racing issuance ----------------------------------------------------------------

/// Many issuers on one role while revoke-prefix loops over it: whatever interleaving happens, no
/// user survives the final revoke-prefix and no login the API handed out still works.
async fn race_issuance_against_revoke_prefix(engine: Engine, tasks: usize, per_task: usize) {
    let role = unique("race");
    let (server, sweep) = server_with_role(engine, &role).await;
    let prefix_path = format!("sys/leases/revoke-prefix/database/creds/{role}");
    let started = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    // Several revokers, so that a revocation lands in every phase of some issuance.
    let revokers: Vec<_> = (0..4)
        .map(|_| {
            let (api, stop, path) = (server.api.clone(), stop.clone(), prefix_path.clone());
            tokio::spawn(async move {
                let mut rounds = 0usize;
                let mut server_errors = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = api.call("POST", &path, None).await;
                    if status.is_server_error() {
                        server_errors.push(format!("{status} {body}"));
                    }
                    rounds += 1;
                }
                (rounds, server_errors)
            })
        })
        .collect();

    let issued = Arc::new(Mutex::new(Vec::new()));
    let unexpected = Arc::new(Mutex::new(Vec::new()));
    let mut issuers = Vec::new();
    for _ in 0..tasks {
        let (api, role, issued, unexpected) = (
            server.api.clone(),
            role.clone(),
            issued.clone(),
            unexpected.clone(),
        );
        issuers.push(tokio::spawn(async move {
            for _ in 0..per_task {
                let (status, body) = api
                    .call("GET", &format!("database/creds/{role}"), None)
                    .await;
                match status {
                    StatusCode::OK => issued.lock().unwrap().push((
                        body["data"]["username"].as_str().unwrap().to_owned(),
                        body["data"]["password"].as_str().unwrap().to_owned(),
                    )),
                    // The lease was revoked while its user was being created: the issuer
                    // dropped the user and said so.
                    StatusCode::CONFLICT => {}
                    other => unexpected.lock().unwrap().push(format!("{other} {body}")),
                }
            }
        }));
    }
    for issuer in issuers {
        issuer.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (mut rounds, mut revoke_errors) = (0, Vec::new());
    for revoker in revokers {
        let (r, errors) = revoker.await.unwrap();
        rounds += r;
        revoke_errors.extend(errors);
    }
    let (status, body) = server.call("POST", &prefix_path, None).await;
    assert!(status.is_success(), "final revoke-prefix: {status} {body}");

    let issued = issued.lock().unwrap().clone();
    let left = engine.users_with_prefix(&sweep.prefix).await;
    let still_working: Vec<String> = futures::stream::iter(issued.iter())
        .map(|(user, password)| async move {
            engine
                .login_works(user, password)
                .await
                .then(|| user.clone())
        })
        .buffer_unordered(16)
        .filter_map(|working| async move { working })
        .collect()
        .await;
    let elapsed = started.elapsed();
    eprintln!(
        "{engine:?}: {} issued, {} refused with 409, {rounds} revoke-prefix rounds, {} users left, {} logins still working, {elapsed:?}",
        issued.len(),
        tasks * per_task - issued.len() - unexpected.lock().unwrap().len(),
        left.len(),
        still_working.len()
    );
    assert!(
        unexpected.lock().unwrap().is_empty(),
        "issuance answered neither 200 nor 409: {:?}",
        unexpected.lock().unwrap()
    );
    assert!(
        revoke_errors.is_empty(),
        "revoke-prefix answered 5xx: {revoke_errors:?}"
    );
    assert!(
        left.is_empty(),
        "{} users outlived revoke-prefix: {left:?}",
        left.len()
    );
    assert!(
        still_working.is_empty(),
        "logins still work after revoke-prefix: {still_working:?}"
    );
    assert!(rounds > 1, "revoke-prefix never raced issuance");
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
    server.stop().await;
    drop(sweep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f4_revoke_prefix_racing_mysql_issuance_leaves_no_user() {
    race_issuance_against_revoke_prefix(Engine::Mysql, 16, 25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f4_revoke_prefix_racing_postgres_issuance_leaves_no_user() {
    assert_postgres_checks_passwords().await;
    race_issuance_against_revoke_prefix(Engine::Postgres, 8, 25).await;
}
