//! The lease lifecycle under the races and failures that once broke it (issue 8: F4, F8, F14, F16,
//! F18 and the lease side of F13), against the real PostgreSQL and MariaDB on this machine.
//!
//! Each test asserts what a user relies on: an issued login works while its lease lives, and once
//! the lease is revoked the login is refused and the database user is gone, whatever raced it.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::*;
use futures::StreamExt;
use lessor::store::{Lease, LeaseState, LeaseStore};
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

// ---- F18: revoke-prefix and LIST match path segments ------------------------------------------------

/// A PostgreSQL server with roles `base`, `base2` and `base-admin` on connection `db`.
async fn server_with_sibling_roles(base: &str) -> (TestServer, Vec<Sweep>) {
    let (server, sweep) = server_with_role(Engine::Postgres, base).await;
    let mut sweeps = vec![sweep];
    for sibling in [format!("{base}2"), format!("{base}-admin")] {
        server
            .write_role(
                &sibling,
                json!({ "db_name": "db", "creation_statements": [PG_LOGIN], "default_ttl": "1h" }),
            )
            .await;
        sweeps.push(Sweep {
            engine: Engine::Postgres,
            prefix: format!("v-{sibling}-"),
        });
    }
    (server, sweeps)
}

async fn list_keys(api: &Api, prefix: &str) -> Vec<String> {
    let (status, body) = api
        .call("LIST", &format!("sys/leases/lookup/{prefix}"), None)
        .await;
    if status == StatusCode::NOT_FOUND {
        return Vec::new();
    }
    assert_eq!(status, StatusCode::OK, "LIST {prefix}: {body}");
    body["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn f18_revoke_prefix_and_list_stop_at_path_segments() {
    assert_postgres_checks_passwords().await;
    let base = unique("app");
    let (server, sweeps) = server_with_sibling_roles(&base).await;
    let app = server.creds(&base).await;
    let app2 = server.creds(&format!("{base}2")).await;
    let admin = server.creds(&format!("{base}-admin")).await;
    let key_of = |lease_id: &str| lease_id.rsplit('/').next().unwrap().to_owned();

    let mut roles = list_keys(&server.api, "database/creds/").await;
    roles.sort();
    let mut expected = vec![
        format!("{base}-admin/"),
        format!("{base}/"),
        format!("{base}2/"),
    ];
    expected.sort();
    assert_eq!(roles, expected, "LIST shows one key per role");
    for prefix in [
        format!("database/creds/{base}"),
        format!("database/creds/{base}/"),
    ] {
        assert_eq!(
            list_keys(&server.api, &prefix).await,
            [key_of(&app.0)],
            "LIST {prefix} shows only that role's lease"
        );
    }

    let (status, body) = server
        .call(
            "POST",
            &format!("sys/leases/revoke-prefix/database/creds/{base}"),
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    assert!(
        !Engine::Postgres.login_works(&app.1, &app.2).await,
        "the revoked role's login is refused"
    );
    for (lease_id, user, password) in [&app2, &admin] {
        assert!(
            Engine::Postgres.login_works(user, password).await,
            "revoke-prefix on {base} also revoked {lease_id}"
        );
        let (status, body) = server
            .call(
                "PUT",
                "sys/leases/lookup",
                Some(json!({ "lease_id": lease_id })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["state"], json!("active"));
    }
    assert!(list_keys(&server.api, &format!("database/creds/{base}"))
        .await
        .is_empty());

    // A revoked lease is gone for clients, as in Vault.
    let (status, body) = server
        .call(
            "PUT",
            "sys/leases/lookup",
            Some(json!({ "lease_id": app.0 })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("invalid lease"), "{body}");

    // revoke-prefix naming one lease id revokes that lease.
    let (status, body) = server
        .call(
            "POST",
            &format!("sys/leases/revoke-prefix/{}", app2.0),
            None,
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    assert!(!Engine::Postgres.login_works(&app2.1, &app2.2).await);
    assert!(Engine::Postgres.login_works(&admin.1, &admin.2).await);

    let (status, body) = server
        .call("POST", "sys/leases/revoke-prefix/database/creds", None)
        .await;
    assert!(status.is_success(), "{status} {body}");
    for sweep in &sweeps {
        assert!(Engine::Postgres
            .users_with_prefix(&sweep.prefix)
            .await
            .is_empty());
    }
    server.stop().await;
}

#[tokio::test]
async fn f18_list_returns_every_key_past_one_page() {
    let server = TestServer::start().await;
    server.add_postgres("db").await;
    // Rows only (no database users): LIST reads the store, and these are never revoked on a
    // database; they are marked revoked directly at the end.
    let role = unique("many");
    let count = 1234;
    let now = Utc::now();
    let in_an_hour = now + chrono::Duration::hours(1);
    for i in 0..count {
        server
            .state
            .store
            .insert_lease(&Lease {
                id: format!("database/creds/{role}/k{i:05}"),
                role_name: role.clone(),
                connection_name: "db".into(),
                username: format!("v-{role}-{i}"),
                revocation_statements: vec![],
                rollback_statements: vec![],
                renew_statements: vec![],
                issued_at: now,
                last_renewed_at: None,
                expires_at: in_an_hour,
                max_expires_at: in_an_hour,
                state: LeaseState::Active,
                next_action_at: in_an_hour,
                attempts: 0,
                last_error: None,
                revoked_at: None,
                owner: "test".into(),
                owner_display_name: String::new(),
                revoke_requested: false,
                token_accessor: None,
                claimed_by: None,
                claim_until: None,
                database_name: None,
            })
            .await
            .unwrap();
    }
    let keys = list_keys(&server.api, &format!("database/creds/{role}")).await;
    assert_eq!(keys.len(), count, "every key, not one page");
    assert_eq!(keys[0], "k00000");
    assert_eq!(keys[count - 1], format!("k{:05}", count - 1));
    assert_eq!(
        list_keys(&server.api, "database/creds/").await,
        [format!("{role}/")],
        "a level with many leases is one key"
    );

    // Paging as OpenBao does it: `after` a key of the previous page, at most `limit` keys; the
    // pages put together are the whole listing, in order, with nothing twice.
    let mut paged: Vec<String> = Vec::new();
    loop {
        let after = paged.last().cloned().unwrap_or_default();
        let (status, body) = server
            .call(
                "LIST",
                &format!("sys/leases/lookup/database/creds/{role}/?limit=500&after={after}"),
                None,
            )
            .await;
        if status == reqwest::StatusCode::NOT_FOUND {
            break;
        }
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        let page: Vec<String> = serde_json::from_value(body["data"]["keys"].clone()).unwrap();
        assert!(page.len() <= 500);
        paged.extend(page);
    }
    assert_eq!(paged, keys, "the pages make up the whole listing");
    // After a deeper level, the listing goes on past everything in it.
    let (status, body) = server
        .call(
            "LIST",
            &format!("sys/leases/lookup/database/creds/?after={role}/"),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "{body}");
    for bad in ["limit=0", "limit=abc", "after=a;b", "offset=3"] {
        let (status, body) = server
            .call(
                "LIST",
                &format!("sys/leases/lookup/database/creds/{role}/?{bad}"),
                None,
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    sqlx::query("UPDATE leases SET state = 'revoked', revoked_at = 1")
        .execute(server.state.store.sqlite_pool().unwrap())
        .await
        .unwrap();
    server.stop().await;
}

// ---- F16: a connection with live leases cannot be deleted -----------------------------------------

#[tokio::test]
async fn f16_deleting_a_connection_in_use_is_refused_until_its_leases_and_static_roles_are_gone() {
    let role = unique("conn");
    let (server, sweep) = server_with_role(Engine::Postgres, &role).await;
    let (lease_id, user, password) = server.creds(&role).await;

    let (status, body) = server.call("DELETE", "database/config/db", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let message = body.to_string();
    assert!(
        message.contains("connection db") && message.contains("1 live lease"),
        "{message}"
    );
    assert!(
        message.contains("revoke-prefix"),
        "says what to do: {message}"
    );
    assert!(
        Engine::Postgres.login_works(&user, &password).await,
        "the refused delete changed nothing"
    );

    // A static role on the connection also keeps it.
    let static_user = unique("lessor_static").replace('-', "_");
    let admin = pg_admin().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {static_user} LOGIN PASSWORD 'initial-password-123'"
        ))
        .await
        .unwrap();
    let static_role = unique("st");
    let (status, body) = server
        .call(
            "POST",
            &format!("database/static-roles/{static_role}"),
            Some(json!({ "db_name": "db", "username": static_user, "rotation_period": 86400 })),
        )
        .await;
    let static_created = status.is_success();

    let (status, body2) = server
        .call("POST", &format!("sys/leases/revoke/{lease_id}"), None)
        .await;
    assert!(status.is_success(), "{status} {body2}");
    assert!(!Engine::Postgres.login_works(&user, &password).await);

    if static_created {
        let (status, body) = server.call("DELETE", "database/config/db", None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(body.to_string().contains(&static_role), "{body}");
        let (status, body) = server
            .call(
                "DELETE",
                &format!("database/static-roles/{static_role}"),
                None,
            )
            .await;
        assert!(status.is_success(), "{status} {body}");
    }
    admin
        .batch_execute(&format!("DROP ROLE IF EXISTS {static_user}"))
        .await
        .unwrap();
    assert!(static_created, "static role refused: {body}");

    let (status, body) = server.call("DELETE", "database/config/db", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = server
        .call("GET", &format!("database/creds/{role}"), None)
        .await;
    assert!(status.is_client_error(), "no lease without a connection");
    assert!(Engine::Postgres
        .users_with_prefix(&sweep.prefix)
        .await
        .is_empty());
    server.stop().await;
}

// ---- F14: concurrent renew and revoke of one lease --------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f14_concurrent_renew_and_revoke_never_answer_5xx() {
    let role = unique("renew");
    let (server, sweep) = server_with_role(Engine::Postgres, &role).await;
    let rounds_per_task = 15;
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let (api, role) = (server.api.clone(), role.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for _ in 0..rounds_per_task {
                    let (status, body) = api
                        .call("GET", &format!("database/creds/{role}"), None)
                        .await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                    let lease_id = body["lease_id"].as_str().unwrap().to_owned();
                    let renew = |api: Api, lease_id: String| async move {
                        api.call(
                            "PUT",
                            "sys/leases/renew",
                            Some(json!({ "lease_id": lease_id, "increment": 1800 })),
                        )
                        .await
                    };
                    let revoke_path = format!("sys/leases/revoke/{lease_id}");
                    let (a, b, revoke, c) = tokio::join!(
                        renew(api.clone(), lease_id.clone()),
                        renew(api.clone(), lease_id.clone()),
                        api.call("PUT", &revoke_path, None),
                        renew(api.clone(), lease_id.clone()),
                    );
                    answers.push(("revoke", revoke));
                    answers.extend([("renew", a), ("renew", b), ("renew", c)]);
                }
                answers
            })
        })
        .collect();
    let mut renewed = 0;
    let mut refused = 0;
    for task in tasks {
        for (what, (status, body)) in task.await.unwrap() {
            match (what, status) {
                ("revoke", StatusCode::NO_CONTENT) => {}
                ("renew", StatusCode::OK) => renewed += 1,
                ("renew", StatusCode::BAD_REQUEST) => {
                    assert!(body.to_string().contains("revoked"), "{body}");
                    refused += 1;
                }
                _ => panic!("{what} answered {status}: {body}"),
            }
        }
    }
    eprintln!("{renewed} renewals before the revoke, {refused} refused after it");
    assert!(Engine::Postgres
        .users_with_prefix(&sweep.prefix)
        .await
        .is_empty());
    server.stop().await;
}

// ---- F13: revoking a token revokes the leases it obtained ------------------------------------------

#[tokio::test]
async fn f13_revoke_by_token_accessors_revokes_exactly_those_tokens_leases() {
    let role = unique("tok");
    let (server, sweep) = server_with_role(Engine::Postgres, &role).await;
    let requester = |token: Option<&str>| lessor::lease::Requester {
        accessor: "entity-1".into(),
        display_name: "token".into(),
        token_accessor: token.map(str::to_owned),
    };
    let leases = &server.state.leases;
    let mut of_a = Vec::new();
    for token in ["acc-a", "acc-a", "acc-b"] {
        of_a.push((
            token,
            leases.issue(&role, &requester(Some(token))).await.unwrap(),
        ));
    }
    let kept_c = leases
        .issue(&role, &requester(Some("acc-c")))
        .await
        .unwrap();
    let kept_none = leases.issue(&role, &requester(None)).await.unwrap();

    let revoked = leases
        .revoke_by_token_accessors(&["acc-a".to_owned(), "acc-b".to_owned()])
        .await
        .unwrap();
    assert_eq!(revoked, 3);
    for (token, issued) in &of_a {
        assert!(
            !Engine::Postgres
                .login_works(&issued.username, issued.password.expose())
                .await,
            "a lease of revoked token {token} still logs in"
        );
    }
    for kept in [&kept_c, &kept_none] {
        assert!(
            Engine::Postgres
                .login_works(&kept.username, kept.password.expose())
                .await,
            "another token's lease was revoked"
        );
    }
    assert_eq!(
        leases
            .revoke_by_token_accessors(&["acc-a".to_owned()])
            .await
            .unwrap(),
        0,
        "nothing left to revoke"
    );
    leases
        .revoke_prefix(&format!("database/creds/{role}"), false)
        .await
        .unwrap();
    assert!(Engine::Postgres
        .users_with_prefix(&sweep.prefix)
        .await
        .is_empty());
    server.stop().await;
}

// ---- F8: the reaper backs off when the store cannot be written ---------------------------------------

#[tokio::test]
async fn f8_reaper_pauses_when_the_store_cannot_be_written_and_recovers() {
    let role = unique("full");
    let server = TestServer::start().await;
    server.add_postgres("db").await;
    server
        .write_role(
            &role,
            json!({ "db_name": "db", "creation_statements": [PG_LOGIN], "default_ttl": "2s", "max_ttl": "1h" }),
        )
        .await;
    let sweep = Sweep {
        engine: Engine::Postgres,
        prefix: format!("v-{role}-"),
    };
    let mut issued = Vec::new();
    for _ in 0..3 {
        issued.push(server.creds(&role).await);
    }

    // As if the disk were full: every UPDATE of a lease fails, and each attempt is counted (a
    // FAIL keeps what the trigger did before it).
    let pool = server.state.store.sqlite_pool().unwrap();
    sqlx::query("CREATE TABLE test_lease_updates (at INTEGER)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER test_disk_full BEFORE UPDATE ON leases BEGIN
             INSERT INTO test_lease_updates VALUES (1);
             SELECT RAISE(FAIL, 'database or disk is full');
         END",
    )
    .execute(pool)
    .await
    .unwrap();
    let logged_before = server
        .logs
        .text()
        .matches("reaper cannot write the lease store")
        .count();

    // The leases expire 2 s after issue; watch the reaper for 6 s after that.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM test_lease_updates")
        .fetch_one(pool)
        .await
        .unwrap();
    let logged = server
        .logs
        .text()
        .matches("reaper cannot write the lease store")
        .count()
        - logged_before;
    eprintln!("{attempts} update attempts and {logged} ERROR lines in 6 s of failing store");
    assert!(attempts >= 3, "the reaper tried ({attempts})");
    assert!(
        attempts <= 30,
        "the reaper spins on a failing store: {attempts} attempts"
    );
    assert!(
        (1..=6).contains(&logged),
        "logged once per pause, not per lease: {logged} lines"
    );

    sqlx::query("DROP TRIGGER test_disk_full")
        .execute(pool)
        .await
        .unwrap();
    let recovered = eventually(Duration::from_secs(30), || async {
        Engine::Postgres
            .users_with_prefix(&sweep.prefix)
            .await
            .is_empty()
    })
    .await;
    assert!(
        recovered.is_some(),
        "the leases were revoked once the store worked again"
    );
    eprintln!("recovered in {recovered:?}");
    for (lease_id, user, password) in &issued {
        assert!(!Engine::Postgres.login_works(user, password).await);
        let state: String = sqlx::query_scalar("SELECT state FROM leases WHERE id = ?")
            .bind(lease_id)
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(state, "revoked");
    }
    server.stop().await;
}

// ---- F4: the reaper and a lease still being created ----------------------------------------------

/// A `creating` lease row for a user made directly on PostgreSQL, as a live (or dead) issuer
/// would leave it, with the reaper's deadline at `deadline`.
async fn creating_lease(
    server: &TestServer,
    role: &str,
    deadline: DateTime<Utc>,
) -> (String, String) {
    let user = format!("v-{role}-{}", unique("u").replace('-', ""));
    let password = "Creating-password-123";
    pg_admin()
        .await
        .batch_execute(&format!(
            "CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'"
        ))
        .await
        .unwrap();
    let now = Utc::now();
    let id = format!("database/creds/{role}/{}", unique("lease").replace('-', ""));
    server
        .state
        .store
        .insert_lease(&Lease {
            id: id.clone(),
            role_name: role.to_owned(),
            connection_name: "db".into(),
            username: user.clone(),
            revocation_statements: vec![],
            rollback_statements: vec![],
            renew_statements: vec![],
            // Already expired: an expiry never hands a creating lease to the reaper.
            issued_at: now - chrono::Duration::seconds(10),
            last_renewed_at: None,
            expires_at: now - chrono::Duration::seconds(5),
            max_expires_at: now - chrono::Duration::seconds(5),
            state: LeaseState::Creating,
            next_action_at: deadline,
            attempts: 0,
            last_error: None,
            revoked_at: None,
            owner: "test".into(),
            owner_display_name: String::new(),
            revoke_requested: false,
            token_accessor: None,
            claimed_by: None,
            claim_until: None,
            database_name: None,
        })
        .await
        .unwrap();
    (id, user)
}

#[tokio::test]
async fn f4_the_reaper_takes_a_creating_lease_only_after_its_creation_deadline() {
    assert_postgres_checks_passwords().await;
    let role = unique("dead");
    let (server, sweep) = server_with_role(Engine::Postgres, &role).await;
    let now = Utc::now();
    let (live_id, live_user) =
        creating_lease(&server, &role, now + chrono::Duration::seconds(60)).await;
    let (dead_id, dead_user) =
        creating_lease(&server, &role, now - chrono::Duration::milliseconds(1)).await;
    server.state.leases.reaper_wake().wake();

    // The issuer of `dead` is past its deadline: the reaper drops its user, then records the
    // lease revoked (a moment later: the two are waited for, not read in one go).
    let admin = pg_admin().await;
    eventually(Duration::from_secs(10), || async {
        !pg_role_exists(&admin, &dead_user).await
    })
    .await
    .expect("the reaper dropped the user of a creating lease past its deadline");
    let state = |id: String| {
        let store = server.state.store.clone();
        async move { store.get_lease(&id).await.unwrap().unwrap() }
    };
    eventually(Duration::from_secs(10), || async {
        state(dead_id.clone()).await.state.as_str() == "revoked"
    })
    .await
    .expect("the lease of the dropped user is recorded revoked");

    // The issuer of `live` may still be creating its user: neither the reaper nor a revoke
    // touches the user; the revoke is recorded for the issuer.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(pg_role_exists(&admin, &live_user).await);
    let (status, body) = server
        .call("PUT", &format!("sys/leases/revoke/{live_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let lease = state(live_id.clone()).await;
    assert_eq!(lease.state.as_str(), "creating");
    assert!(lease.revoke_requested);
    assert!(pg_role_exists(&admin, &live_user).await);
    // ...and the issuer cannot activate it any more: it must drop the user instead.
    assert!(!server
        .state
        .store
        .activate_lease(&live_id, now + chrono::Duration::hours(1))
        .await
        .unwrap());
    let (status, body) = server
        .call(
            "PUT",
            "sys/leases/renew",
            Some(json!({ "lease_id": live_id })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "not renewable: {body}");

    // Should the issuer die, the deadline hands the lease to the reaper.
    server
        .state
        .store
        .reschedule_creating(&live_id, Utc::now())
        .await
        .unwrap();
    server.state.leases.reaper_wake().wake();
    eventually(Duration::from_secs(10), || async {
        !pg_role_exists(&admin, &live_user).await
    })
    .await
    .expect("the reaper dropped the user at the deadline");
    eventually(Duration::from_secs(10), || async {
        state(live_id.clone()).await.state.as_str() == "revoked"
    })
    .await
    .expect("the lease of the dropped user is recorded revoked");
    assert!(Engine::Postgres
        .users_with_prefix(&sweep.prefix)
        .await
        .is_empty());
    server.stop().await;
}
