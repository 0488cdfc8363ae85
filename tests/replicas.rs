//! Several replicas on one PostgreSQL store, under faults (issue 9). Each test is bounded in time
//! and runs against the real PostgreSQL: the store is a throwaway database on it, the targets are
//! real users on it. Replicas are either `lessor server` processes (killed with SIGKILL, as a
//! crashed pod would be) or in-process servers sharing the store, where no process needs to die.
//!
//! - a connection written on one replica is used by another within a second; a role deleted on
//!   one is refused on the other;
//! - the target database unreachable while leases expire: every expired user is dropped once it
//!   returns;
//! - the store unreachable: 503 with a clear error, no credential without its lease row, then
//!   recovery by itself with nothing lost;
//! - three replicas, one killed while 2,000 leases expire: every user dropped, each lease revoked
//!   exactly once (counted in the replicas' own logs, the killed one's included);
//! - a replica killed during 200 concurrent credential requests: after the reaper and a
//!   reconciliation, no user of the role exists without a live lease;
//! - a static rotation interrupted by SIGKILL between its phases is finished by another replica,
//!   and the stored password logs in.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    postgres_url, through_proxy, unique, CuttableProxy, StoreDatabase, TestServer, SHARED_SEAL_KEY,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

/// PostgreSQL users whose name starts with `prefix`.
async fn pg_users(prefix: &str) -> HashSet<String> {
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL is not reachable; run scripts/services.sh");
    tokio::spawn(connection);
    client
        .query(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)",
            &[&prefix],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// A direct connection to a store database, to read what the replicas recorded.
async fn store_pool(store: &StoreDatabase) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&store.url)
        .await
        .unwrap()
}

/// Polls `check` every 200 ms until it holds, failing with `what` after `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The username prefix of role `role` under Lessor's default template.
fn user_prefix(role: &str) -> String {
    format!("v-{role}-")
}

// ---- in-process replicas ---------------------------------------------------------------------

#[tokio::test]
async fn a_connection_written_on_one_replica_is_in_force_on_another_within_a_second() {
    let store = StoreDatabase::create().await;
    let a = TestServer::start_on(&store, |_| {}).await;
    let b = TestServer::start_on(&store, |_| {}).await;
    let (first, second) = (StoreDatabase::create().await, StoreDatabase::create().await);
    let role = unique("moved");
    let marker = |db: &StoreDatabase| {
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": db.url,
            "allowed_roles": "*",
        })
    };
    a.add_connection("moving", marker(&first)).await;
    // Each created user leaves its name in the database the connection points at.
    a.write_role(
        &role,
        json!({
            "db_name": "moving",
            "creation_statements": [
                "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
                "CREATE TABLE IF NOT EXISTS issued_here (name TEXT);",
                "INSERT INTO issued_here VALUES ('{{name}}');"
            ],
            "default_ttl": "10m",
        }),
    )
    .await;
    let (_, in_first, _) = b.creds(&role).await;
    assert!(
        issued_in(&first, &in_first).await,
        "b used the connection a wrote"
    );

    a.add_connection("moving", marker(&second)).await;
    let written = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, in_second, _) = b.creds(&role).await;
    assert!(
        issued_in(&second, &in_second).await,
        "b still used the old connection {:?} after a rewrote it",
        written.elapsed()
    );

    let (status, _) = a
        .call("DELETE", &format!("database/roles/{role}"), None)
        .await;
    assert!(status.is_success());
    // b cached the role; the deletion reaches it through the change feed, within a second.
    eventually(
        Duration::from_secs(1),
        "a role deleted on a is refused on b",
        || async {
            b.call("GET", &format!("database/creds/{role}"), None)
                .await
                .0
                == StatusCode::NOT_FOUND
        },
    )
    .await;

    b.revoke_everything().await;
    assert!(pg_users(&user_prefix(&role)).await.is_empty());
    a.stop().await;
    b.stop().await;
    for db in [first, second, store] {
        db.drop_now().await;
    }
}

// ---- the store's read cache -----------------------------------------------------------------

async fn write_policy(server: &TestServer, name: &str, text: &str) {
    let (status, body) = server
        .call(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": text })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "policy {name}: {body}");
}

/// A token with only `policy`, and its accessor.
async fn token_with(server: &TestServer, policy: &str) -> (String, String) {
    let (status, answer) = server
        .call(
            "POST",
            "auth/token/create",
            Some(json!({ "policies": [policy], "no_default_policy": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    (
        answer["auth"]["client_token"].as_str().unwrap().to_owned(),
        answer["auth"]["accessor"].as_str().unwrap().to_owned(),
    )
}

/// The status of `GET database/creds/<role>` with `token`, and the lease it got.
async fn creds_as(server: &TestServer, token: &str, role: &str) -> (StatusCode, Value) {
    server
        .call_as(Some(token), "GET", &format!("database/creds/{role}"), None)
        .await
}

fn reader_of(role: &str) -> String {
    format!("path \"database/creds/{role}\" {{ capabilities = [\"read\"] }}")
}

/// On one Lessor, a write is in force on its next request although every read it changes was
/// just cached: a role rewritten is issued with its new settings, a policy rewritten gives its
/// new decision, a revoked token is refused. Also reports how many store operations a warm
/// `GET database/creds/:role` costs (`--nocapture` shows it).
async fn writes_are_in_force_on_the_next_request(server: &TestServer) {
    let role = unique("cached");
    server.add_postgres("cachedb").await;
    let statements = json!([
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
    ]);
    server
        .write_role(
            &role,
            json!({ "db_name": "cachedb", "creation_statements": statements, "default_ttl": "10m" }),
        )
        .await;
    write_policy(server, "cached-reader", &reader_of(&role)).await;
    let (token, accessor) = token_with(server, "cached-reader").await;
    let (status, body) = creds_as(server, &token, &role).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["lease_duration"], json!(600));

    let mut costs = Vec::new();
    for _ in 0..3 {
        let before = server.state.store.operations_run();
        let (status, _) = creds_as(server, &token, &role).await;
        assert_eq!(status, StatusCode::OK);
        costs.push(server.state.store.operations_run() - before);
    }
    eprintln!(
        "store operations per warm GET database/creds/:role on {:?}: {costs:?}",
        server.state.store.kind()
    );

    server
        .write_role(
            &role,
            json!({ "db_name": "cachedb", "creation_statements": statements, "default_ttl": "2m" }),
        )
        .await;
    let (status, body) = creds_as(server, &token, &role).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["lease_duration"],
        json!(120),
        "the rewritten role is in force"
    );
    server
        .write_role(
            &role,
            json!({ "db_name": "cachedb", "creation_statements": ["SELECT no_such_function_here();"] }),
        )
        .await;
    let (status, body) = creds_as(server, &token, &role).await;
    assert!(
        !status.is_success(),
        "the new (broken) statements are used: {body}"
    );

    write_policy(server, "cached-reader", &reader_of("something-else")).await;
    let (status, body) = creds_as(server, &token, &role).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the rewritten policy is in force: {body}"
    );
    write_policy(server, "cached-reader", &reader_of(&role)).await;
    server
        .write_role(
            &role,
            json!({ "db_name": "cachedb", "creation_statements": statements, "default_ttl": "10m" }),
        )
        .await;
    let (status, body) = creds_as(server, &token, &role).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = server
        .call(
            "POST",
            "auth/token/revoke-accessor",
            Some(json!({ "accessor": accessor })),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (status, body) = creds_as(server, &token, &role).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the revoked token is refused: {body}"
    );
    server.revoke_everything().await;
    assert!(pg_users(&user_prefix(&role)).await.is_empty());
}

#[tokio::test]
async fn a_write_is_in_force_on_the_next_request_on_an_embedded_store() {
    let server = TestServer::start().await;
    writes_are_in_force_on_the_next_request(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_write_is_in_force_on_the_next_request_on_a_shared_store() {
    let store = StoreDatabase::create().await;
    let server = TestServer::start_on(&store, |_| {}).await;
    writes_are_in_force_on_the_next_request(&server).await;
    server.stop().await;
    store.drop_now().await;
}

#[tokio::test]
async fn a_policy_change_or_revocation_on_one_replica_is_in_force_on_another_within_a_second() {
    let store = StoreDatabase::create().await;
    let a = TestServer::start_on(&store, |_| {}).await;
    let b = TestServer::start_on(&store, |_| {}).await;
    let role = unique("replicated");
    a.add_postgres("shared").await;
    a.write_role(
        &role,
        json!({
            "db_name": "shared",
            "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"],
            "default_ttl": "10m",
        }),
    )
    .await;
    write_policy(&a, "replicated-reader", &reader_of(&role)).await;
    let (token, accessor) = token_with(&a, "replicated-reader").await;
    // b caches the token, its policy and the role.
    for _ in 0..2 {
        let (status, body) = creds_as(&b, &token, &role).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    write_policy(&a, "replicated-reader", &reader_of("something-else")).await;
    let written = Instant::now();
    eventually(
        Duration::from_secs(1),
        "the policy change reaches b",
        || async { creds_as(&b, &token, &role).await.0 == StatusCode::FORBIDDEN },
    )
    .await;
    eprintln!("policy change in force on b after {:?}", written.elapsed());

    write_policy(&a, "replicated-reader", &reader_of(&role)).await;
    eventually(
        Duration::from_secs(1),
        "the policy restored reaches b",
        || async { creds_as(&b, &token, &role).await.0 == StatusCode::OK },
    )
    .await;
    let (status, body) = a
        .call(
            "POST",
            "auth/token/revoke-accessor",
            Some(json!({ "accessor": accessor })),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let revoked = Instant::now();
    eventually(
        Duration::from_secs(1),
        "the revocation reaches b",
        || async { creds_as(&b, &token, &role).await.0 == StatusCode::FORBIDDEN },
    )
    .await;
    eprintln!("revocation in force on b after {:?}", revoked.elapsed());

    b.revoke_everything().await;
    assert!(pg_users(&user_prefix(&role)).await.is_empty());
    a.stop().await;
    b.stop().await;
    store.drop_now().await;
}

async fn issued_in(db: &StoreDatabase, username: &str) -> bool {
    let pool = store_pool(db).await;
    let found: Option<String> = sqlx::query_scalar("SELECT name FROM issued_here WHERE name = $1")
        .bind(username)
        .fetch_optional(&pool)
        .await
        .unwrap_or(None);
    pool.close().await;
    found.is_some()
}

#[tokio::test]
async fn anomaly_rules_and_their_counts_span_the_replicas() {
    let store = StoreDatabase::create().await;
    let a = TestServer::start_on(&store, |_| {}).await;
    let b = TestServer::start_on(&store, |_| {}).await;
    a.add_postgres("pg").await;
    let role = unique("bursty");
    a.write_role(&role, json!({ "db_name": "pg", "default_ttl": "10m" }))
        .await;
    // Rules changed on a are in force on b within a second.
    let (status, body) = a
        .call(
            "POST",
            "sys/monitor/rules",
            Some(json!({ "burst": { "threshold": 3, "window": "60s" } })),
        )
        .await;
    assert!(status.is_success(), "{body}");
    eventually(Duration::from_secs(1), "b applies a's rules", || async {
        let (_, rules) = b.call("GET", "sys/monitor/rules", None).await;
        rules["data"]["burst"]["threshold"] == 3
    })
    .await;
    // Two reads on each replica: four within the window, over a threshold of three, though
    // neither replica alone saw more than two.
    for server in [&a, &b, &a, &b] {
        server.creds(&role).await;
    }
    let (_, alerts) = b.call("GET", "sys/alerts", None).await;
    let bursts: Vec<&Value> = alerts["data"]["alerts"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|alert| alert["rule"] == "burst")
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(bursts.len(), 1, "one burst across the replicas: {alerts}");
    assert_eq!(bursts[0]["count"], 4);

    a.revoke_everything().await;
    assert!(pg_users(&user_prefix(&role)).await.is_empty());
    a.stop().await;
    b.stop().await;
    store.drop_now().await;
}

#[tokio::test]
async fn expired_users_are_dropped_once_their_unreachable_database_returns() {
    let store = StoreDatabase::create().await;
    let proxy = CuttableProxy::start(5432).await;
    let server = TestServer::start_on(&store, |settings| {
        settings.target_connect_timeout = Duration::from_secs(2);
        settings.target_operation_timeout = Duration::from_secs(5);
    })
    .await;
    server
        .add_connection(
            "flaky",
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": through_proxy(&postgres_url(), &proxy),
                "allowed_roles": "*",
            }),
        )
        .await;
    let role = unique("flaky");
    server
        .write_role(
            &role,
            json!({ "db_name": "flaky", "default_ttl": "3s", "max_ttl": "3s" }),
        )
        .await;
    let mut issued = Vec::new();
    for _ in 0..5 {
        issued.push(server.creds(&role).await);
    }
    assert_eq!(pg_users(&user_prefix(&role)).await.len(), 5);

    proxy.cut();
    // The leases expire and the reaper's attempts fail while the database is away.
    let pool = store_pool(&store).await;
    eventually(
        Duration::from_secs(60),
        "revocations fail while the database is away",
        || async {
            let failed: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM leases WHERE state = 'revoking' AND attempts >= 1",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            failed == 5
        },
    )
    .await;
    assert_eq!(
        pg_users(&user_prefix(&role)).await.len(),
        5,
        "nothing could drop them"
    );

    proxy.restore();
    eventually(
        Duration::from_secs(90),
        "every expired user dropped after the database returned",
        || async { pg_users(&user_prefix(&role)).await.is_empty() },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "every lease marked revoked",
        || async {
            let live: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM leases WHERE state <> 'revoked'")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            live == 0
        },
    )
    .await;
    pool.close().await;
    server.stop().await;
    store.drop_now().await;
}

#[tokio::test]
async fn an_unreachable_store_is_a_503_and_everything_recovers_when_it_returns() {
    let store = StoreDatabase::create().await;
    let proxy = CuttableProxy::start(5432).await;
    let via_proxy = StoreDatabase {
        name: store.name.clone(),
        url: through_proxy(&store.url, &proxy),
    };
    let server = TestServer::start_on(&via_proxy, |_| {}).await;
    std::mem::forget(via_proxy); // the same database as `store`, dropped through it
    server.add_postgres("pg").await;
    let role = unique("outage");
    server
        .write_role(&role, json!({ "db_name": "pg", "default_ttl": "10m" }))
        .await;
    let (before, username, _) = server.creds(&role).await;

    proxy.cut();
    let (status, body) = server
        .call("GET", &format!("database/creds/{role}"), None)
        .await;
    if status != StatusCode::SERVICE_UNAVAILABLE {
        let log = server.logs.text();
        let tail: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
        eprintln!("{}", tail.join("\n"));
    }
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let message = body["errors"][0].as_str().unwrap_or_default();
    assert!(
        message.contains("store unavailable"),
        "a clear error: {message}"
    );
    let (status, body) = server.call("GET", "sys/health", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["store"]["reachable"], false);
    assert_eq!(
        pg_users(&user_prefix(&role)).await,
        HashSet::from([username.clone()]),
        "no credential was issued without its lease row"
    );

    proxy.restore();
    eventually(Duration::from_secs(30), "the API answers again", || async {
        server.call("GET", "sys/health", None).await.0 == StatusCode::OK
    })
    .await;
    let (status, body) = server
        .call(
            "PUT",
            "sys/leases/lookup",
            Some(json!({ "lease_id": before })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the lease from before the outage is there: {body}"
    );
    let (_, after, _) = server.creds(&role).await;
    assert_ne!(after, before);
    server.revoke_everything().await;
    assert!(pg_users(&user_prefix(&role)).await.is_empty());
    server.stop().await;
    store.drop_now().await;
}

// ---- replica processes -----------------------------------------------------------------------

/// A `lessor server` process on the shared store, logging JSON to a file.
struct Replica {
    child: std::sync::Mutex<Option<tokio::process::Child>>,
    base: String,
    log: std::path::PathBuf,
    root_token: Option<String>,
    http: reqwest::Client,
}

impl Replica {
    async fn start(store: &StoreDatabase, dir: &std::path::Path, env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let log = dir.join(format!("replica-{port}.log"));
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_lessor"));
        command
            .args(["server", "--tls-disable", "--listen", &listen])
            .args([
                "--store-url",
                &store.url,
                "--log-format",
                "json",
                "--log-level",
                "info",
            ])
            .env("LESSOR_SEAL_KEY", SHARED_SEAL_KEY)
            .env("LESSOR_TARGET_CONNECT_TIMEOUT", "2s")
            .env("LESSOR_TARGET_OPERATION_TIMEOUT", "5s")
            .env("LESSOR_RECONCILE_INTERVAL", "0")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start lessor server");
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut replica = Self {
            child: std::sync::Mutex::new(Some(child)),
            base: format!("http://{listen}"),
            log,
            root_token: None,
            http: reqwest::Client::new(),
        };
        let started = Instant::now();
        loop {
            let line = tokio::time::timeout(Duration::from_millis(200), stdout.next_line()).await;
            if let Ok(Ok(Some(line))) = line {
                if let Some(token) = line
                    .split(": ")
                    .nth(1)
                    .filter(|_| line.starts_with("Root token"))
                {
                    replica.root_token = Some(token.trim().to_owned());
                }
            }
            if replica.health().await == Some(StatusCode::OK) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "a replica did not become healthy within 30 s; see {}",
                replica.log.display()
            );
        }
        // Keep reading so the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        replica
    }

    async fn health(&self) -> Option<StatusCode> {
        self.http
            .get(format!("{}/v1/sys/health", self.base))
            .send()
            .await
            .ok()
            .map(|r| r.status())
    }

    async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), reqwest::Error> {
        let mut request = self
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}/v1/{path}", self.base),
            )
            .header("X-Vault-Token", token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    async fn ok(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(token, method, path, body).await.expect("request");
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        body
    }

    /// SIGKILL: no shutdown, no claim given back, the heartbeat just stops.
    async fn kill(&self) {
        let child = self.child.lock().unwrap().take();
        if let Some(mut child) = child {
            child.kill().await.unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit.
    async fn stop(&self) {
        let child = self.child.lock().unwrap().take();
        if let Some(mut child) = child {
            let pid = child.id().unwrap().to_string();
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap();
            let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .expect("a replica stops within 30 s of SIGTERM")
                .unwrap();
            assert!(status.success(), "replica exited with {status}");
        }
    }

    /// Lease ids this replica logged as revoked (each line of its JSON log once).
    fn revoked_lease_ids(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| entry["message"] == "revoked")
            .filter_map(|entry| entry["lease_id"].as_str().map(str::to_owned))
            .collect()
    }
}

/// Starts three replicas on `store`; returns them and the root token the first one made.
async fn three_replicas(
    store: &StoreDatabase,
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (Vec<Replica>, String) {
    let first = Replica::start(store, dir, env).await;
    let token = first
        .root_token
        .clone()
        .expect("the first replica prints the root token");
    let mut replicas = vec![first];
    for _ in 0..2 {
        let replica = Replica::start(store, dir, env).await;
        assert!(
            replica.root_token.is_none(),
            "only one replica makes a root token"
        );
        replicas.push(replica);
    }
    (replicas, token)
}

#[tokio::test]
async fn three_replicas_revoke_each_of_2000_expiring_leases_exactly_once_though_one_is_killed() {
    let store = StoreDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let (replicas, token) = three_replicas(&store, dir.path(), &[]).await;
    let role = unique("expiring");
    replicas[0]
        .ok(
            &token,
            "POST",
            "database/config/pg",
            Some(json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": postgres_url(),
                "allowed_roles": "*",
                "max_open_connections": 8,
            })),
        )
        .await;
    replicas[1]
        .ok(
            &token,
            "POST",
            &format!("database/roles/{role}"),
            // Long enough that all 2,000 are issued before the first expires, even on a loaded
            // 2-core machine (issuing took 13 to 55 s here), so every user is counted alive.
            Some(json!({
                "db_name": "pg", "default_ttl": "90s", "max_ttl": "90s",
            })),
        )
        .await;

    use futures::StreamExt;
    let started = Instant::now();
    let issued: Vec<String> = futures::stream::iter(0..2000)
        .map(|i| {
            let (replica, token, role) = (&replicas[i % 3], &token, &role);
            async move {
                let body = replica
                    .ok(token, "GET", &format!("database/creds/{role}"), None)
                    .await;
                body["lease_id"].as_str().unwrap().to_owned()
            }
        })
        .buffer_unordered(24)
        .collect()
        .await;
    let issuing = started.elapsed();
    eprintln!("issued 2000 leases through three replicas in {issuing:?}");
    assert_eq!(pg_users(&user_prefix(&role)).await.len(), 2000);

    // Kill one replica once the first leases have expired and revocation is under way.
    let pool = store_pool(&store).await;
    eventually(
        Duration::from_secs(120),
        "revocations under way",
        || async {
            let revoked: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM leases WHERE state = 'revoked'")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            revoked >= 50
        },
    )
    .await;
    replicas[1].kill().await;

    eventually(Duration::from_secs(180), "every lease revoked", || async {
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM leases WHERE state <> 'revoked'")
            .fetch_one(&pool)
            .await
            .unwrap();
        left == 0
    })
    .await;
    assert!(
        pg_users(&user_prefix(&role)).await.is_empty(),
        "every user dropped"
    );
    let mut times: HashMap<String, usize> = HashMap::new();
    for replica in &replicas {
        for id in replica.revoked_lease_ids() {
            *times.entry(id).or_default() += 1;
        }
    }
    let issued: HashSet<String> = issued.into_iter().collect();
    assert_eq!(issued.len(), 2000);
    let revoked: HashSet<String> = times.keys().cloned().collect();
    // Every lease is revoked in the store and its user is gone (checked above). The logs count
    // who did it: a SIGKILL landing between a revocation batch's store write and its log lines
    // loses those lines, so the killed replica may leave its in-flight batches unlogged (at most
    // `PER_CONNECTION` batches on the one connection, each of at most one pass's `BATCH`
    // leases); every other lease is logged, and none twice.
    let in_flight_at_most =
        lessor::lease::reaper::PER_CONNECTION * lessor::lease::reaper::BATCH as usize;
    let unlogged: Vec<_> = issued.difference(&revoked).collect();
    eprintln!("leases revoked without a log line: {}", unlogged.len());
    assert!(
        unlogged.len() <= in_flight_at_most,
        "{} leases revoked without a log line (more than the killed replica's {in_flight_at_most} in flight), e.g. {:?}",
        unlogged.len(),
        unlogged.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        revoked.is_subset(&issued),
        "only issued leases were revoked"
    );
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "revoked more than once, for example: {twice:?}"
    );
    let by_killed = replicas[1].revoked_lease_ids().len();
    eprintln!("revocations by the killed replica before it died: {by_killed}");

    pool.close().await;
    for replica in [&replicas[0], &replicas[2]] {
        replica.stop().await;
    }
    store.drop_now().await;
}

#[tokio::test]
async fn after_a_replica_dies_mid_issue_no_user_is_left_without_a_live_lease() {
    let store = StoreDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let (replicas, token) = three_replicas(&store, dir.path(), &[]).await;
    let role = unique("midissue");
    replicas[0]
        .ok(
            &token,
            "POST",
            "database/config/pg",
            Some(json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": postgres_url(),
                "allowed_roles": "*",
            })),
        )
        .await;
    replicas[0]
        .ok(
            &token,
            "POST",
            &format!("database/roles/{role}"),
            Some(json!({ "db_name": "pg", "default_ttl": "1h" })),
        )
        .await;

    use futures::StreamExt;
    let requests = futures::stream::iter(0..200)
        .map(|i| {
            let (replica, token, role) = (&replicas[i % 3], &token, &role);
            async move {
                replica
                    .call(token, "GET", &format!("database/creds/{role}"), None)
                    .await
            }
        })
        .buffer_unordered(200);
    // The kill lands while the requests are in flight (200 of them take far longer than this).
    let killer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        replicas[1].kill().await;
    };
    let (outcomes, ()) = tokio::join!(requests.collect::<Vec<_>>(), killer);
    let failed = outcomes
        .iter()
        .filter(|o| !matches!(o, Ok((s, _)) if s.is_success()))
        .count();
    eprintln!("{failed} of 200 requests failed with the killed replica");

    // The dead replica's half-made leases are taken over once its heartbeat is stale.
    let pool = store_pool(&store).await;
    eventually(
        Duration::from_secs(60),
        "no lease left creating",
        || async {
            let creating: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM leases WHERE state = 'creating'")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            creating == 0
        },
    )
    .await;
    for _ in 0..2 {
        let body = replicas[0]
            .ok(&token, "PUT", "sys/leases/reconcile", Some(json!({})))
            .await;
        eprintln!("reconcile: {}", body["data"]["findings"]);
    }
    let live: HashSet<String> = sqlx::query_scalar(
        "SELECT username FROM leases WHERE state IN ('creating', 'active', 'revoking')",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let on_database = pg_users(&user_prefix(&role)).await;
    let without_lease: Vec<_> = on_database.difference(&live).collect();
    assert!(
        without_lease.is_empty(),
        "users without a live lease: {without_lease:?}"
    );
    assert!(!on_database.is_empty(), "some credentials were issued");

    replicas[0]
        .ok(
            &token,
            "PUT",
            "sys/leases/revoke-prefix/database/creds",
            None,
        )
        .await;
    assert!(pg_users(&user_prefix(&role)).await.is_empty());
    pool.close().await;
    for replica in [&replicas[0], &replicas[2]] {
        replica.stop().await;
    }
    store.drop_now().await;
}

#[tokio::test]
async fn a_rotation_killed_between_its_phases_is_finished_by_another_replica() {
    let store = StoreDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    // The first replica pauses every rotation once the database has the new password and before
    // it is checked and promoted: the most dangerous moment to die.
    let paused = Replica::start(
        &store,
        dir.path(),
        &[("FAULT_INJECTION_ROTATION_PAUSE_SECS", "120")],
    )
    .await;
    let token = paused.root_token.clone().expect("root token");
    let other = Replica::start(&store, dir.path(), &[]).await;
    other
        .ok(
            &token,
            "POST",
            "database/config/pg",
            Some(json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": postgres_url(),
                "allowed_roles": "*",
            })),
        )
        .await;
    let user = unique("lessor_st_replica").replace('-', "_");
    let initial = format!("Initial-{}-pass1", unique("x").replace('-', ""));
    common::pg_admin()
        .await
        .batch_execute(&format!("CREATE ROLE {user} LOGIN PASSWORD '{initial}'"))
        .await
        .unwrap();
    let role = unique("st-replica");
    other
        .ok(&token, "POST", &format!("database/static-roles/{role}"), Some(json!({
            "db_name": "pg", "username": user, "rotation_period": "1h", "skip_import_rotation": true,
        })))
        .await;

    // The rotation starts on the first replica, sets the new password on the database, pauses,
    // and the replica is killed there.
    let rotate_path = format!("database/rotate-role/{role}");
    let rotation = paused.call(&token, "POST", &rotate_path, None);
    let killer = async {
        let pool = store_pool(&store).await;
        eventually(
            Duration::from_secs(30),
            "the rotation's new password is pending",
            || async {
                let pending: Option<String> = sqlx::query_scalar(
                    "SELECT pending_password_sealed FROM static_roles WHERE name = $1",
                )
                .bind(&role)
                .fetch_one(&pool)
                .await
                .unwrap();
                pending.is_some()
            },
        )
        .await;
        // Past the pending write comes the database change, then the pause.
        eventually(
            Duration::from_secs(30),
            "the database has the new password",
            || async { common::pg_login(&user, &initial).await.is_err() },
        )
        .await;
        paused.kill().await;
        pool.close().await;
    };
    let (answer, ()) = tokio::join!(rotation, killer);
    assert!(answer.is_err(), "the killed replica never answered");

    // The other replica finds the rotation orphaned once the killed one's heartbeat is stale,
    // finishes it, and serves the password the database has.
    eventually(
        Duration::from_secs(60),
        "the other replica finished the rotation",
        || async {
            let (_, body) = other
                .call(
                    &token,
                    "GET",
                    &format!("database/static-creds/{role}"),
                    None,
                )
                .await
                .unwrap();
            match body["data"]["password"].as_str() {
                Some(password) if password != initial => {
                    common::pg_login(&user, password).await.is_ok()
                }
                _ => false,
            }
        },
    )
    .await;
    let history = other
        .ok(
            &token,
            "GET",
            &format!("database/static-roles/{role}"),
            None,
        )
        .await;
    eprintln!("after takeover: {}", history["data"]);

    other
        .ok(
            &token,
            "DELETE",
            &format!("database/static-roles/{role}"),
            None,
        )
        .await;
    common::pg_admin()
        .await
        .batch_execute(&format!("DROP ROLE IF EXISTS {user}"))
        .await
        .unwrap();
    other.stop().await;
    store.drop_now().await;
}
