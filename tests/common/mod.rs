//! Shared harness of the integration tests: an in-process Lessor on `127.0.0.1:0` with its own
//! temporary store, a captured log, an HTTP client, and admin connections to the real PostgreSQL and
//! MariaDB on this machine (never a mock). A database that cannot be reached fails the test with a
//! message saying how to start it.

#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lessor::config::{LogFormat, Settings};
use lessor::AppState;
use lessor_plugin::Secret;
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub const ROOT_TOKEN: &str = "test-root-token-0123456789";

pub fn postgres_url() -> String {
    std::env::var("LESSOR_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn mysql_url() -> String {
    std::env::var("LESSOR_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/".into())
}

/// Everything the server logged in this test process.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process-wide log capture, at debug level so that even debug lines are checked for secrets.
pub fn logs() -> CapturedLogs {
    static LOGS: OnceLock<CapturedLogs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = CapturedLogs::default();
        let writer = logs.clone();
        lessor::telemetry::init_with_writer(
            LogFormat::Text,
            "debug,sqlx=warn,hyper=info,tokio_postgres=info",
            move || writer.clone(),
        );
        logs
    })
    .clone()
}

/// A random lower-case suffix, so parallel tests never share a name.
pub fn unique(prefix: &str) -> String {
    let suffix: String = (0..8)
        .map(|_| (b'a' + rand::thread_rng().gen_range(0..26)) as char)
        .collect();
    format!("{prefix}-{suffix}")
}

/// A handle on the HTTP API with the root token, cheap to clone into a client task.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    /// Sends a request with the root token; returns the status and the parsed body (Null if none).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(Some(ROOT_TOKEN), method, path, body).await
    }

    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}/v1/{path}", self.base),
        );
        if let Some(token) = token {
            request = request.header("X-Vault-Token", token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// Registers a connection and asserts it was accepted.
    pub async fn add_connection(&self, name: &str, body: Value) {
        let (status, answer) = self
            .call("POST", &format!("database/config/{name}"), Some(body))
            .await;
        assert!(
            status.is_success(),
            "cannot register connection {name} ({status}: {answer}); is the database running? run scripts/services.sh"
        );
    }

    /// Registers the local PostgreSQL as `connection`, allowing every role.
    pub async fn add_postgres(&self, connection: &str) {
        self.add_connection(
            connection,
            json!({ "plugin_name": "postgresql-database-plugin", "connection_url": postgres_url(), "allowed_roles": "*" }),
        )
        .await;
    }

    /// Registers the local MariaDB/MySQL as `connection`, allowing every role.
    pub async fn add_mysql(&self, connection: &str) {
        self.add_connection(
            connection,
            json!({ "plugin_name": "mysql-database-plugin", "connection_url": mysql_url(), "allowed_roles": "*" }),
        )
        .await;
    }

    /// Writes the password policy `name` (its HCL `text`) and asserts it was accepted.
    pub async fn write_password_policy(&self, name: &str, text: &str) {
        let (status, answer) = self
            .call(
                "POST",
                &format!("sys/policies/password/{name}"),
                Some(json!({ "policy": text })),
            )
            .await;
        assert!(
            status.is_success(),
            "password policy {name} refused: {status} {answer}"
        );
    }

    /// Revokes the lease `lease_id` (`PUT sys/leases/revoke`) and asserts Vault's answer, 204.
    pub async fn revoke_lease(&self, lease_id: &str) {
        let (status, answer) = self
            .call(
                "PUT",
                "sys/leases/revoke",
                Some(json!({ "lease_id": lease_id })),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::NO_CONTENT,
            "revoking {lease_id}: {answer}"
        );
    }

    /// Writes a role and asserts it was accepted.
    pub async fn write_role(&self, name: &str, body: Value) {
        let (status, answer) = self
            .call("POST", &format!("database/roles/{name}"), Some(body))
            .await;
        assert!(
            status.is_success(),
            "role {name} refused: {status} {answer}"
        );
    }

    /// Asks for credentials and returns (lease_id, username, password).
    pub async fn creds(&self, role: &str) -> (String, String, String) {
        let (status, body) = self
            .call("GET", &format!("database/creds/{role}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "creds for {role}: {body}");
        (
            body["lease_id"].as_str().unwrap().to_owned(),
            body["data"]["username"].as_str().unwrap().to_owned(),
            body["data"]["password"].as_str().unwrap().to_owned(),
        )
    }
}

/// A running in-process Lessor. Its store and seal key live in a temporary directory, or in one
/// the test owns ([`TestServer::start_in`]) so that it can be stopped and started again on the
/// same files, which is how a test restarts Lessor after an injected crash.
pub struct TestServer {
    pub api: Api,
    pub state: AppState,
    pub logs: CapturedLogs,
    dir: std::path::PathBuf,
    _temporary: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::ops::Deref for TestServer {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with a temporary store, after `configure` adjusted the settings.
    pub async fn start_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let temporary = tempfile::tempdir().unwrap();
        let dir = temporary.path().to_path_buf();
        Self::launch(&dir, Some(temporary), configure).await
    }

    /// Starts on the store and seal key in `dir` (created on first start), which outlive it.
    pub async fn start_in(dir: &std::path::Path) -> Self {
        Self::launch(dir, None, |_| {}).await
    }

    async fn launch(
        dir: &std::path::Path,
        temporary: Option<tempfile::TempDir>,
        configure: impl FnOnce(&mut Settings),
    ) -> Self {
        let logs = logs();
        let mut settings = Settings {
            store_url: dir.join("lessor.db").display().to_string(),
            seal_key_file: Some(dir.join("seal.key")),
            create_seal_key_file: true,
            ..Settings::default()
        };
        configure(&mut settings);
        let state = AppState::open(&settings).await.expect("open state");
        state
            .auth
            .install_root_token(&Secret::new(ROOT_TOKEN))
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let serve_state = state.clone();
        let task = tokio::spawn(async move {
            lessor::serve(listener, serve_state, async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        });
        Self {
            api: Api {
                base,
                http: reqwest::Client::new(),
            },
            state,
            logs,
            dir: dir.to_path_buf(),
            _temporary: temporary,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn store_path(&self) -> std::path::PathBuf {
        self.dir.join("lessor.db")
    }

    /// Stops serving and waits until the rotator and reaper have ended and pools are closed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("Lessor stops within 30 s")
                .expect("serve task");
        }
        // Closing the store checkpoints the WAL into the database file, as a clean exit does.
        self.state.store.close().await;
    }

    /// Revokes every lease this server issued and checks it succeeded: the users are dropped on
    /// their databases. A test that issues credentials ends with this, so the suite leaves no
    /// user behind (scripts/leftovers.sh checks it after the run).
    pub async fn revoke_everything(&self) {
        let (status, body) = self
            .call("PUT", "sys/leases/revoke-prefix/database/creds", None)
            .await;
        assert!(
            status.is_success(),
            "revoking every lease failed: {status} {body}"
        );
    }

    /// Asks for `count` credentials of `role`, one after the other: (lease_id, username, password).
    pub async fn creds_many(&self, role: &str, count: usize) -> Vec<(String, String, String)> {
        let mut issued = Vec::with_capacity(count);
        for _ in 0..count {
            issued.push(self.creds(role).await);
        }
        issued
    }

    /// Revokes these leases all at once (every `PUT sys/leases/revoke` in flight together) and
    /// asserts each answered 204 and that some went to the database as one batch
    /// (src/revocation_group.rs).
    pub async fn revoke_all_at_once(&self, issued: &[(String, String, String)]) {
        let mut revocations = tokio::task::JoinSet::new();
        for (lease_id, _, _) in issued {
            let (api, body) = (self.api.clone(), json!({ "lease_id": lease_id }));
            revocations
                .spawn(async move { api.call("PUT", "sys/leases/revoke", Some(body)).await });
        }
        while let Some(answered) = revocations.join_next().await {
            let (status, answer) = answered.expect("a revocation task panicked");
            assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
        }
        assert!(
            self.logs
                .text()
                .contains("concurrent revocations go as one batch"),
            "{} revocations at once, two batches at a time: some went together",
            issued.len()
        );
    }

    /// Fails if any of `secrets` appears in the captured log.
    pub fn assert_logs_free_of(&self, secrets: &[&str]) {
        let text = self.logs.text();
        assert!(
            !text.is_empty(),
            "no log was captured; the check would prove nothing"
        );
        for secret in secrets {
            assert!(!text.contains(secret), "a secret appeared in the log");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Sends one request over a raw TCP connection, byte for byte as given (an HTTP client library would
/// normalize `/./`, `//` or the case of percent-escapes before Lessor saw them); returns the status
/// and the body text.
pub async fn raw_request(
    api: &Api,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = api.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 20 s")
        .unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// An admin connection to the real PostgreSQL.
pub async fn pg_admin() -> tokio_postgres::Client {
    let url = postgres_url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at {url} cannot be reached ({e}); start it with scripts/services.sh")
        });
    tokio::spawn(connection);
    client
}

/// Logs in to PostgreSQL as `user` over TCP (where the set-up requires a password) and runs a query.
pub async fn pg_login(
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let config = format!("host=127.0.0.1 port=5432 dbname=postgres user={user} password={password} connect_timeout=5");
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client.simple_query("SELECT 1").await?;
    Ok(client)
}

pub async fn pg_role_exists(admin: &tokio_postgres::Client, user: &str) -> bool {
    admin
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
        .await
        .unwrap()
        .is_some()
}

/// Waits up to `limit` for `condition` to hold, polling every 100 ms; returns the time it took.
pub async fn eventually<F, Fut>(limit: Duration, mut condition: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Proves the machine's PostgreSQL checks passwords for non-admin TCP logins, without which a test
/// of "login refused" would prove nothing.
pub async fn assert_postgres_checks_passwords() {
    let admin = pg_admin().await;
    let user = unique("lessor_pwcheck").replace('-', "_");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {user} LOGIN PASSWORD 'right-password-123'"
        ))
        .await
        .unwrap();
    let wrong = pg_login(&user, "wrong-password-456").await;
    let right = pg_login(&user, "right-password-123").await;
    admin
        .batch_execute(&format!("DROP ROLE {user}"))
        .await
        .unwrap();
    assert!(
        right.is_ok(),
        "the right password was refused: {:?}",
        right.err()
    );
    assert!(
        wrong.is_err(),
        "PostgreSQL accepted a wrong password: pg_hba.conf trusts TCP logins; run scripts/services.sh"
    );
}

/// A throwaway PostgreSQL database on the local server, for a Lessor store shared by replicas.
/// [`StoreDatabase::drop_now`] removes it (with every connection to it); a test calls it at its
/// end, and the leftovers check at the end of the suite catches one that forgot.
pub struct StoreDatabase {
    pub name: String,
    pub url: String,
}

/// A test that panics before [`StoreDatabase::drop_now`] still drops its database: on a thread
/// of its own (a runtime cannot block inside another), ending the sessions still on it.
impl Drop for StoreDatabase {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        if name.is_empty() {
            return;
        }
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let admin = admin_pool().await;
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&admin)
                    .await;
                admin.close().await;
            });
        })
        .join();
    }
}

impl StoreDatabase {
    pub async fn create() -> Self {
        let name = unique("lessor_store").replace('-', "_");
        let admin = admin_pool().await;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create the store database");
        admin.close().await;
        let base = postgres_url();
        let server = base
            .rsplit_once('/')
            .map(|(server, _)| server)
            .unwrap_or(&base);
        Self {
            url: format!("{server}/{name}"),
            name,
        }
    }

    /// Drops the database, ending any session still on it (a killed replica's included).
    pub async fn drop_now(mut self) {
        let name = std::mem::take(&mut self.name);
        let admin = admin_pool().await;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await
            .expect("drop the store database");
        admin.close().await;
    }
}

async fn admin_pool() -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&postgres_url())
        .await
        .expect("PostgreSQL is not reachable; run scripts/services.sh")
}

impl TestServer {
    /// Starts a replica on the shared PostgreSQL store `store` (created by the first replica that
    /// starts), with the seal key every replica of that store shares.
    pub async fn start_on(store: &StoreDatabase, configure: impl FnOnce(&mut Settings)) -> Self {
        let url = store.url.clone();
        Self::start_with(move |settings| {
            settings.store_url = url;
            settings.seal_key = Some(Secret::new(SHARED_SEAL_KEY));
            settings.seal_key_file = None;
            configure(settings);
        })
        .await
    }
}

/// The seal key of every replica started by [`TestServer::start_on`] (64 hex digits).
pub const SHARED_SEAL_KEY: &str =
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A TCP proxy in front of a real server that can be cut, as a network partition or a stopped
/// server would look: cutting closes every open connection and refuses new ones until restored.
/// Nothing is simulated on the far side; the server behind it is the real one.
pub struct CuttableProxy {
    pub port: u16,
    cut: Arc<std::sync::atomic::AtomicBool>,
    sessions: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    pub async fn start(upstream_port: u16) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sessions: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (flag, open) = (cut.clone(), sessions.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let session = tokio::spawn(async move {
                    if let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                open.lock().unwrap().push(session.abort_handle());
            }
        });
        Self {
            port,
            cut,
            sessions,
            task,
        }
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for session in self.sessions.lock().unwrap().drain(..) {
            session.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.task.abort();
        for session in self.sessions.lock().unwrap().drain(..) {
            session.abort();
        }
    }
}

/// `url` (a PostgreSQL URL on 127.0.0.1:5432) through `proxy` instead.
pub fn through_proxy(url: &str, proxy: &CuttableProxy) -> String {
    url.replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port), 1)
}
