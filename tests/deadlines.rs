//! Time limits on target databases (defect F9): a database that accepts TCP and never answers, or
//! stops answering in the middle of a session, costs a caller a 503 naming the connection within
//! the configured deadline, never a hung request or a pool slot held for ever; other connections
//! keep working meanwhile; a session abandoned at the deadline is closed rather than reused; and
//! the server itself aborts a statement that runs past the statement timeout.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;
use lessor_plugin::{
    ConnectionSettings, DatabasePlugin, DeleteUserRequest, NewUserRequest, RoleOptions, Secret,
};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The whole-operation deadline the tests configure.
const OPERATION: Duration = Duration::from_millis(1500);
/// Slack for scheduling on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(1500);

/// Starts Lessor with a short operation deadline and a connect timeout far above it, so that what
/// bounds a stalled call is the operation deadline, not the connect timeout.
async fn start() -> TestServer {
    TestServer::start_with(|settings| {
        settings.target_connect_timeout = Duration::from_secs(20);
        settings.target_operation_timeout = OPERATION;
    })
    .await
}

/// A TCP listener that accepts every connection and never sends a byte. Dropping the handle
/// closes it and every socket it holds.
struct SilentPeer {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl SilentPeer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Self { port, task }
    }
}

impl Drop for SilentPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP proxy to a real database that can be told to stall: while stalled, bytes in both
/// directions are swallowed (never delivered), as a database that stopped answering mid-session
/// would look to Lessor. Swallowing rather than holding means nothing sent while stalled ever
/// runs on the server.
struct StallingProxy {
    port: u16,
    stalled: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl StallingProxy {
    async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stalled = Arc::new(AtomicBool::new(false));
        let flag = stalled.clone();
        let task = tokio::spawn(async move {
            let mut pumps = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                pumps.spawn(pump(client_read, server_write, flag.clone()));
                pumps.spawn(pump(server_read, client_write, flag.clone()));
            }
        });
        Self {
            port,
            stalled,
            task,
        }
    }

    fn stall(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::SeqCst);
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every pump and closes the sockets.
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if stalled.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// Writes a dynamic role on `connection` with the engine's default statements.
async fn write_role(api: &Api, role: &str, connection: &str) {
    api.write_role(role, json!({ "db_name": connection, "default_ttl": "1h" }))
        .await;
}

/// Issues a credential on `role`, checks it logs in to the real PostgreSQL, revokes it; returns
/// how long the issue took.
async fn issue_log_in_and_revoke(api: &Api, role: &str) -> Duration {
    let started = Instant::now();
    let (lease_id, username, password) = api.creds(role).await;
    let took = started.elapsed();
    let login = pg_login(&username, &password).await;
    let (status, body) = api
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    assert!(
        login.is_ok(),
        "the issued credential logs in: {:?}",
        login.err()
    );
    assert_eq!(status, StatusCode::NO_CONTENT, "revoke: {body}");
    took
}

#[tokio::test]
async fn a_database_that_never_answers_costs_a_503_naming_it_while_others_keep_working() {
    let lessor = start().await;
    let peer = SilentPeer::start().await;
    let stalled = unique("stalled");
    lessor
        .add_connection(
            &stalled,
            json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": format!("postgresql://postgres@127.0.0.1:{}/postgres", peer.port),
                "allowed_roles": "*",
                "verify_connection": false,
                "max_open_connections": 1,
            }),
        )
        .await;
    let stalled_role = unique("on-stalled");
    write_role(&lessor, &stalled_role, &stalled).await;
    lessor.add_postgres("pg").await;
    let healthy_role = unique("on-pg");
    write_role(&lessor, &healthy_role, "pg").await;

    // A credential request on the stalled database, and meanwhile one on the healthy database.
    let api = lessor.api.clone();
    let path = format!("database/creds/{stalled_role}");
    let stalled_request = tokio::spawn(async move {
        let started = Instant::now();
        let answer = api.call("GET", &path, None).await;
        (answer, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let healthy_took = issue_log_in_and_revoke(&lessor, &healthy_role).await;
    let ((status, body), took) = tokio::time::timeout(Duration::from_secs(30), stalled_request)
        .await
        .expect("the request on the stalled database answered instead of hanging")
        .unwrap();

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let message = body["errors"][0].as_str().unwrap_or_default();
    assert!(
        message.contains(&stalled),
        "the error names the connection: {message}"
    );
    // The creation and its rollback (a revocation on the same database) are each bounded.
    assert!(
        took < OPERATION * 2 + SLACK,
        "answered after {took:?}, deadline {OPERATION:?}"
    );
    assert!(
        healthy_took < Duration::from_secs(1),
        "the healthy connection waited {healthy_took:?} behind the stalled one"
    );

    // No pool slot stays taken: with a pool of one, the next request is bounded the same way.
    let started = Instant::now();
    let (status, body) = lessor
        .call("GET", &format!("database/creds/{stalled_role}"), None)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(started.elapsed() < OPERATION * 2 + SLACK);

    // Verifying a connection against it is bounded too: a 400 saying so, not a hung write.
    let started = Instant::now();
    let (status, body) = lessor
        .call(
            "POST",
            &format!("database/config/{}", unique("verify-stalled")),
            Some(json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": format!("postgresql://postgres@127.0.0.1:{}/postgres", peer.port),
                "allowed_roles": "*",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("did not answer within"), "{body}");
    assert!(started.elapsed() < OPERATION + SLACK);
    lessor.stop().await;
}

/// The engine a stalled-session test runs against.
#[derive(Clone, Copy, Debug)]
enum Engine {
    Postgres,
    MariaDb,
}

impl Engine {
    fn port(self) -> u16 {
        match self {
            Self::Postgres => 5432,
            Self::MariaDb => 3306,
        }
    }

    fn connection(self, port: u16) -> serde_json::Value {
        match self {
            Self::Postgres => json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": format!("postgresql://postgres@127.0.0.1:{port}/postgres"),
            }),
            Self::MariaDb => json!({
                "plugin_name": "mysql-database-plugin",
                "connection_url": format!("mysql://root@127.0.0.1:{port}/"),
            }),
        }
    }

    /// A renewal statement that takes a second on the server.
    fn slow_renewal(self) -> &'static str {
        match self {
            Self::Postgres => "SELECT pg_sleep(1)",
            Self::MariaDb => "DO SLEEP(1)",
        }
    }

    async fn user_exists(self, user: &str) -> bool {
        match self {
            Self::Postgres => pg_role_exists(&pg_admin().await, user).await,
            Self::MariaDb => {
                use mysql_async::prelude::Queryable;
                let mut admin = mysql_admin().await;
                let count: Option<u64> = admin
                    .exec_first("SELECT COUNT(*) FROM mysql.user WHERE User = ?", (user,))
                    .await
                    .unwrap();
                let _ = admin.disconnect().await;
                count.unwrap_or(0) > 0
            }
        }
    }

    async fn drop_user(self, user: &str) {
        match self {
            Self::Postgres => {
                let _ = pg_admin()
                    .await
                    .batch_execute(&format!("DROP ROLE IF EXISTS \"{user}\""))
                    .await;
            }
            Self::MariaDb => {
                use mysql_async::prelude::Queryable;
                let mut admin = mysql_admin().await;
                let _ = admin
                    .query_drop(format!("DROP USER IF EXISTS '{user}'@'%'"))
                    .await;
                let _ = admin.disconnect().await;
            }
        }
    }
}

async fn mysql_admin() -> mysql_async::Conn {
    let opts = mysql_async::Opts::from_url(&mysql_url()).unwrap();
    mysql_async::Conn::new(mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false))
        .await
        .expect("MariaDB is reachable; start it with scripts/services.sh")
}

/// A renewal whose session stops answering mid-statement answers 503 at the deadline; once the
/// database answers again, the revocation gets a fresh session at once rather than the abandoned
/// one with its unanswered statement.
async fn a_stalled_session_is_closed_not_reused(engine: Engine) {
    let lessor = start().await;
    let proxy = StallingProxy::start(engine.port()).await;
    let proxied = unique("proxied");
    let mut connection = engine.connection(proxy.port);
    connection["allowed_roles"] = json!("*");
    // One pooled session, so a stalled one that went back to the pool would be the one the next
    // request gets.
    connection["max_open_connections"] = json!(1);
    lessor.add_connection(&proxied, connection).await;
    let role = unique("via-proxy");
    lessor
        .write_role(
            &role,
            json!({
                "db_name": proxied,
                "default_ttl": "1h",
                "renew_statements": [engine.slow_renewal()],
            }),
        )
        .await;
    let (lease_id, username, _) = lessor.creds(&role).await;
    let created = engine.user_exists(&username).await;

    let api = lessor.api.clone();
    let renewed = lease_id.clone();
    let renewal = tokio::spawn(async move {
        let started = Instant::now();
        let answer = api
            .call(
                "PUT",
                "sys/leases/renew",
                Some(json!({ "lease_id": renewed })),
            )
            .await;
        (answer, started.elapsed())
    });
    // Stalls while the slow statement runs on the server: its answer is never delivered.
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.stall(true);
    let renewal = tokio::time::timeout(Duration::from_secs(30), renewal).await;
    proxy.stall(false);

    let started = Instant::now();
    let (revoke_status, revoke_body) = tokio::time::timeout(
        Duration::from_secs(30),
        lessor.call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease_id })),
        ),
    )
    .await
    .expect("the revocation after the stall answered");
    let revoke_took = started.elapsed();
    let user_gone = !engine.user_exists(&username).await;
    lessor.stop().await;
    if !user_gone {
        engine.drop_user(&username).await;
    }

    assert!(created, "{engine:?}: the credential's user was created");
    let ((status, body), took) = renewal
        .expect("the renewal on the stalled session answered instead of hanging")
        .unwrap();
    eprintln!("{engine:?}: renewal {status} after {took:?}; revocation after {revoke_took:?}");
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{engine:?}: {body}"
    );
    assert!(
        took < OPERATION + SLACK,
        "{engine:?}: answered after {took:?}"
    );
    assert_eq!(
        revoke_status,
        StatusCode::NO_CONTENT,
        "{engine:?}: {revoke_body}"
    );
    assert!(
        revoke_took < OPERATION,
        "{engine:?}: revoked after {revoke_took:?}"
    );
    assert!(user_gone, "{engine:?}: the revocation dropped the user");
}

#[tokio::test]
async fn a_postgres_session_that_stalls_mid_way_is_closed_not_handed_to_the_next_request() {
    a_stalled_session_is_closed_not_reused(Engine::Postgres).await;
}

#[tokio::test]
async fn a_mariadb_session_that_stalls_mid_way_is_closed_not_handed_to_the_next_request() {
    a_stalled_session_is_closed_not_reused(Engine::MariaDb).await;
}

fn plugin_settings(url: &str, statement_timeout: Duration) -> ConnectionSettings {
    ConnectionSettings {
        connection_url: Secret::new(url),
        username: String::new(),
        password: Secret::default(),
        max_open_connections: 2,
        connect_timeout: Duration::from_secs(5),
        statement_timeout,
        tls: Default::default(),
        disable_escaping: false,
        password_authentication: Default::default(),
        user_marker: None,
    }
}

/// Runs `create_user` with a creation statement that sleeps for 5 s, under a 1 s statement
/// timeout, and returns how long it took and the error; then proves the plugin still works.
async fn slow_statement_is_aborted_by_the_server(
    plugin: &dyn DatabasePlugin,
    sleep: &str,
    create: &str,
    username: &str,
) -> (Duration, String) {
    let statements = vec![sleep.to_owned(), create.to_owned()];
    let options = RoleOptions::new();
    let password = lessor_plugin::generate_password(24);
    let started = Instant::now();
    let result = plugin
        .create_user(&NewUserRequest {
            username,
            password: &password,
            password_strength: lessor_plugin::PasswordStrength::Unguessable,
            expiration: Utc::now() + chrono::Duration::hours(1),
            statements: &statements,
            options: &options,
            database: None,
        })
        .await;
    let took = started.elapsed();
    let verified = plugin.verify().await;
    let leftover = plugin.list_users(username).await.unwrap();
    for user in &leftover {
        // Only if the statement was not aborted; dropped before the assertion fails.
        plugin
            .delete_user(&DeleteUserRequest::builtin(user))
            .await
            .unwrap();
    }
    assert!(leftover.is_empty(), "no user was left behind: {leftover:?}");
    assert!(verified.is_ok(), "the plugin works after: {verified:?}");
    let error = result.expect_err("the sleeping statement was aborted");
    (took, error.to_string())
}

#[tokio::test]
async fn postgres_aborts_a_statement_past_the_statement_timeout() {
    let plugin = lessor_postgres::connect(plugin_settings(&postgres_url(), Duration::from_secs(1)))
        .await
        .unwrap();
    let username = unique("v-deadline").replace('-', "_");
    let (took, error) = slow_statement_is_aborted_by_the_server(
        &plugin,
        "SELECT pg_sleep(5)",
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'",
        &username,
    )
    .await;
    plugin.close().await;
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(error.contains("statement timeout"), "{error}");
}

#[tokio::test]
async fn mariadb_aborts_a_statement_past_the_statement_timeout() {
    let plugin = lessor_mysql::connect(plugin_settings(&mysql_url(), Duration::from_secs(1)))
        .await
        .unwrap();
    let username = unique("v-deadline");
    let (took, error) = slow_statement_is_aborted_by_the_server(
        &plugin,
        "SELECT SLEEP(5)",
        "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'",
        &username,
    )
    .await;
    plugin.close().await;
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(error.contains("max_statement_time"), "{error}");
}
