//! `lessor bench`: what Lessor costs over the same SQL run directly on the database, in one run.
//!
//! Three measurements per engine (PostgreSQL, and MySQL/MariaDB when a URL is given):
//! 1. Latency of issuing and of revoking one credential, through Lessor's HTTP API (token check,
//!    lease write, pool, plugin) and directly (the plugin's own statements on one plain connection,
//!    from the engine crate's `baseline` module), interleaved iteration by iteration so drift in
//!    the database affects both alike.
//! 2. Throughput of issue-then-revoke pairs with several workers, both ways.
//! 3. Reaper promptness: how long after its expiry an expired lease's role is gone.
//! 4. With `--password-authentication scram-sha-256` (PostgreSQL), issuance throughput against the
//!    floor at each concurrency level: Lessor issuing with verifiers it computes, Lessor on a twin
//!    connection that sends the password, the same SQL run directly, and the default-iterations
//!    floor (the password itself in `CREATE ROLE`, hashed by the server with its 4,096
//!    iterations), in interleaved rounds. Every other measurement then runs with the verifiers on
//!    both sides too.
//!
//! The report is Markdown, with ratios Lessor / direct, for `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::Utc;
use lessor_plugin::credentials::DEFAULT_PASSWORD_LEN;
use lessor_plugin::{
    generate_password, generate_username, DirectSession, EngineDescriptor, NewUserRequest,
    PasswordAuthentication, PasswordStrength, RoleOptions, Secret, UserMarker, UsernameContext,
};
use serde_json::{json, Value};

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::AppState;

/// One engine under measurement: its descriptor, and the benchmark's names on it.
#[derive(Clone, Copy)]
struct Engine(&'static EngineDescriptor);

impl Engine {
    fn label(self) -> &'static str {
        self.0.label
    }

    /// The statements both sides run: the engine's `lessor dev` read-only role.
    fn creation(self) -> Vec<String> {
        self.0
            .local
            .readonly_creation
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }

    /// Connection and role names in the benchmark's Lessor.
    fn slug(self) -> String {
        format!("bench-{}", self.0.name)
    }
}

/// The installation id the direct side marks its users with (see [`Direct::connect`]).
const DIRECT_SIDE_INSTALLATION: &str = "00000000-0000-0000-0000-00000bench000";

/// The engine crate's direct-SQL session.
struct Direct(Box<dyn DirectSession>);

impl Direct {
    /// A session whose statements carry passwords the way `mode` says, as the measured
    /// connection's do.
    async fn connect(engine: Engine, url: &Secret, mode: PasswordAuthentication) -> Result<Self> {
        let connect = engine.0.direct.ok_or_else(|| {
            bench_error(
                "connect",
                format!("the {} engine has no direct baseline", engine.0.name),
            )
        })?;
        let mut session = connect(url.clone())
            .await
            .map_err(|e| bench_error(&format!("connect to {}", engine.label()), e))?;
        session
            .use_password_authentication(mode)
            .map_err(|e| bench_error(&format!("{} baseline", engine.label()), e))?;
        // The same marking statement Lessor's plugin runs, with an id of a UUID's length that no
        // installation has: the direct side's users are dropped by the benchmark itself.
        let marker = UserMarker::for_installation(DIRECT_SIDE_INSTALLATION)
            .map_err(|e| bench_error("direct side's user marker", e))?;
        session.use_user_marker(Some(marker));
        Ok(Self(session))
    }

    async fn server_version(&mut self) -> Result<String> {
        self.0
            .server_version()
            .await
            .map_err(|e| bench_error("server version", e))
    }

    async fn user_exists(&mut self, username: &str) -> Result<bool> {
        self.0
            .user_exists(username)
            .await
            .map_err(|e| bench_error("poll", e))
    }

    /// Creates then drops one user; returns both durations.
    async fn pair(
        &mut self,
        engine: Engine,
        statements: &[String],
    ) -> Result<(Duration, Duration)> {
        let started = Instant::now();
        let username = self.create(engine, statements).await?;
        let created = started.elapsed();
        let started = Instant::now();
        self.delete(&username).await?;
        Ok((created, started.elapsed()))
    }

    /// Creates one user with a generated name and password, as Lessor would; returns its name.
    async fn create(&mut self, engine: Engine, statements: &[String]) -> Result<String> {
        let username = generate_username(
            None,
            engine.0.max_username_len,
            UsernameContext {
                role: "bench",
                display_name: "direct",
            },
        )
        .map_err(|e| bench_error("username", e))?;
        let password = generate_password(DEFAULT_PASSWORD_LEN);
        let options = RoleOptions::new();
        self.0
            .create_user(&NewUserRequest {
                username: &username,
                password: &password,
                password_strength: PasswordStrength::Unguessable,
                expiration: Utc::now() + chrono::Duration::hours(1),
                statements,
                options: &options,
                database: None,
            })
            .await
            .map_err(|e| bench_error("direct create", e))?;
        Ok(username)
    }

    async fn delete(&mut self, username: &str) -> Result<()> {
        self.0
            .delete_user(username)
            .await
            .map_err(|e| bench_error("direct revoke", e))
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Sequential issue/revoke iterations per side.
    pub iterations: usize,
    /// Worker counts for the throughput measurement, one run per level; each side uses as many
    /// database connections as workers.
    pub concurrency: Vec<usize>,
    /// Issue/revoke pairs per worker in the throughput measurement.
    pub pairs_per_worker: usize,
    /// Leases used to measure reaper promptness.
    pub expiring_leases: usize,
    /// The engines to measure (their `name`s, see `engines::ENGINES`), each with the admin URL
    /// of the server to measure against.
    pub targets: Vec<(String, String)>,
    /// Where Lessor keeps its state while measured.
    pub store: BenchStore,
    /// Lessor replicas sharing the store; workers spread their requests over them. More than
    /// one needs the PostgreSQL store.
    pub replicas: usize,
    /// The measured connections' `password_authentication` (and `scram_iterations`), which the
    /// direct side follows too. Anything but `Password` also measures issuance against the
    /// default-iterations floor; engines that compute no verifiers refuse it.
    pub password_authentication: PasswordAuthentication,
}

/// Rounds of the floor comparison, each running its blocks one after the other, so drift in the
/// machine shows as spread across rounds rather than as a bias against one side.
const FLOOR_ROUNDS: usize = 3;

/// The store the measured Lessor runs on.
#[derive(Debug, Clone)]
pub enum BenchStore {
    /// A SQLite file in a temporary directory (the embedded default).
    Sqlite,
    /// A throwaway database made (and dropped at the end) on the PostgreSQL this admin URL
    /// reaches.
    Postgres { admin_url: String },
}

/// Latency summary of one series.
#[derive(Debug, Clone, Copy)]
struct Summary {
    p50: Duration,
    p95: Duration,
    p99: Duration,
    mean: Duration,
}

fn summarize(samples: &mut [Duration]) -> Summary {
    if samples.is_empty() {
        return Summary {
            p50: Duration::ZERO,
            p95: Duration::ZERO,
            p99: Duration::ZERO,
            mean: Duration::ZERO,
        };
    }
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    let total: Duration = samples.iter().sum();
    Summary {
        p50: pick(0.50),
        p95: pick(0.95),
        p99: pick(0.99),
        mean: total / samples.len() as u32,
    }
}

/// One side's run at one concurrency level: pairs per second, and each operation's latency as
/// the workers saw it.
struct LoadResult {
    pairs_per_sec: f64,
    issue: Summary,
    revoke: Summary,
}

/// A load worker: the (issue, revoke) durations of each pair it ran.
type LoadWorker = tokio::task::JoinHandle<Result<Vec<(Duration, Duration)>>>;

/// Gathers the workers' latencies into a [`LoadResult`].
async fn collect_load(
    started: Instant,
    pairs: usize,
    workers: Vec<LoadWorker>,
) -> Result<LoadResult> {
    let (mut issue, mut revoke) = (Vec::new(), Vec::new());
    for worker in workers {
        for (created, dropped) in worker.await.map_err(|e| bench_error("worker", e))?? {
            issue.push(created);
            revoke.push(dropped);
        }
    }
    Ok(LoadResult {
        pairs_per_sec: pairs as f64 / started.elapsed().as_secs_f64(),
        issue: summarize(&mut issue),
        revoke: summarize(&mut revoke),
    })
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn ratio(lessor: Duration, direct: Duration) -> String {
    format!(
        "{:.2}x",
        lessor.as_secs_f64() / direct.as_secs_f64().max(1e-9)
    )
}

fn bench_error(context: &str, detail: impl std::fmt::Display) -> Error {
    Error::Internal(format!("bench: {context}: {detail}"))
}

/// Lessor on loopback with a throwaway store, driven over HTTP: one replica, or several sharing
/// a PostgreSQL store (`base` is the first; `bases` all of them).
struct Target {
    base: String,
    bases: Vec<String>,
    http: reqwest::Client,
    token: Secret,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    /// The throwaway store database and the admin URL that drops it.
    store_database: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Target {
    async fn start(options: &BenchOptions) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(|e| bench_error("temporary directory", e))?;
        let mut settings = Settings {
            store_url: dir.path().join("bench.db").display().to_string(),
            seal_key_file: Some(dir.path().join("seal.key")),
            create_seal_key_file: true,
            ..Settings::default()
        };
        let mut store_database = None;
        if let BenchStore::Postgres { admin_url } = &options.store {
            let name = format!("lessor_bench_{:08x}", rand::random::<u32>());
            let admin = sqlx::PgPool::connect(admin_url)
                .await
                .map_err(|e| bench_error("store admin connection", e))?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin)
                .await
                .map_err(|e| bench_error("create the store database", e))?;
            admin.close().await;
            let server = admin_url
                .rsplit_once('/')
                .map_or(admin_url.as_str(), |(s, _)| s);
            settings.store_url = format!("{server}/{name}");
            // Replicas share one seal key.
            settings.seal_key = Some(Secret::new(hex::encode(rand::random::<[u8; 32]>())));
            settings.seal_key_file = None;
            store_database = Some((admin_url.clone(), name));
        } else if options.replicas > 1 {
            return Err(Error::Config(
                "bench: several replicas need the PostgreSQL store (--store postgres)".into(),
            ));
        }
        let token = crate::auth::generate_token();
        let (mut bases, mut stops) = (Vec::new(), Vec::new());
        for replica in 0..options.replicas.max(1) {
            let state = AppState::open(&settings).await?;
            if replica == 0 {
                state.auth.install_root_token(&token).await?;
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| bench_error("listen", e))?;
            bases.push(format!(
                "http://{}",
                listener
                    .local_addr()
                    .map_err(|e| bench_error("listen", e))?
            ));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(crate::serve(listener, state, async {
                let _ = stopped.await;
            }));
            stops.push(stop);
        }
        Ok(Self {
            base: bases[0].clone(),
            bases,
            http: reqwest::Client::new(),
            token,
            stops,
            store_database,
            _dir: dir,
        })
    }

    /// Stops the replicas and drops the throwaway store database, if any.
    async fn finish(mut self) -> Result<()> {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        if let Some((admin_url, name)) = self.store_database.take() {
            // The replicas close their pools as they stop; FORCE ends what is left.
            let admin = sqlx::PgPool::connect(&admin_url)
                .await
                .map_err(|e| bench_error("store admin connection", e))?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&admin)
                .await
                .map_err(|e| bench_error("drop the store database", e))?;
            admin.close().await;
        }
        Ok(())
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}/v1/{path}", self.base))
            .header("X-Vault-Token", self.token.expose());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| bench_error(path, e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| bench_error(path, e))?;
        if !status.is_success() {
            return Err(bench_error(path, format!("{status}: {text}")));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn issue(&self, role: &str) -> Result<(String, String)> {
        let answer = self
            .call(
                reqwest::Method::GET,
                &format!("database/creds/{role}"),
                None,
            )
            .await?;
        let lease = answer["lease_id"].as_str().unwrap_or_default().to_owned();
        let username = answer["data"]["username"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok((lease, username))
    }

    async fn revoke(&self, lease_id: &str) -> Result<()> {
        self.call(
            reqwest::Method::PUT,
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease_id })),
        )
        .await
        .map(|_| ())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

async fn lessor_pair(target: &Target, role: &str) -> Result<(Duration, Duration)> {
    let started = Instant::now();
    let (lease, _) = target.issue(role).await?;
    let issued = started.elapsed();
    let started = Instant::now();
    target.revoke(&lease).await?;
    Ok((issued, started.elapsed()))
}

/// Runs every measurement for every engine with a URL and returns the Markdown report.
pub async fn run(options: &BenchOptions) -> Result<String> {
    let target = Target::start(options).await?;
    let mut report = String::new();
    let _ = writeln!(
        report,
        "## Run of {} UTC\n",
        Utc::now().format("%Y-%m-%d %H:%M")
    );
    let _ = writeln!(
        report,
        "{} cores; {} sequential iterations per side (interleaved), {:?} workers x {} pairs for throughput \
         (as many database connections as workers on each side), {} expiring leases. Lessor: release \
         build={}, {}, no audit device; password_authentication = {}{}.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        options.iterations,
        options.concurrency,
        options.pairs_per_worker,
        options.expiring_leases,
        !cfg!(debug_assertions),
        match (&options.store, options.replicas) {
            (BenchStore::Sqlite, _) => "SQLite store in a temporary directory".to_owned(),
            (BenchStore::Postgres { .. }, n) => format!(
                "PostgreSQL store (a throwaway database on the local server), {n} replica(s) sharing it, \
                 workers spread over them"
            ),
        },
        options.password_authentication.name(),
        options
            .password_authentication
            .generated_iterations()
            .map(|n| format!(", scram_iterations = {n}"))
            .unwrap_or_default(),
    );
    for (name, url) in &options.targets {
        let Some(engine) = crate::engines::by_name(name) else {
            target.finish().await?;
            return Err(bench_error("engines", format!("unknown engine {name:?}")));
        };
        match run_engine(&target, Engine(engine), url, options).await {
            Ok(section) => report.push_str(&section),
            Err(error) => {
                target.finish().await?;
                return Err(error);
            }
        }
    }
    target.finish().await?;
    Ok(report)
}

/// The three measurements for one engine, as a Markdown section.
async fn run_engine(
    target: &Target,
    engine: Engine,
    url: &str,
    options: &BenchOptions,
) -> Result<String> {
    let slug = engine.slug();
    let slug = slug.as_str();
    let expiring = format!("{slug}-expiring");
    let url_secret = Secret::new(url.to_owned());
    let mode = options.password_authentication;
    let mut connection = json!({
        "plugin_name": engine.0.plugin_name(),
        "connection_url": url,
        "allowed_roles": "*",
        "max_open_connections": options.concurrency.iter().copied().max().unwrap_or(4),
    });
    if let Some(iterations) = mode.generated_iterations() {
        connection["password_authentication"] = json!(mode.name());
        connection["scram_iterations"] = json!(iterations);
    }
    target
        .call(
            reqwest::Method::POST,
            &format!("database/config/{slug}"),
            Some(connection),
        )
        .await?;
    for (role, ttl) in [(slug, json!("1h")), (expiring.as_str(), json!(1))] {
        target
            .call(
                reqwest::Method::POST,
                &format!("database/roles/{role}"),
                Some(json!({ "db_name": slug, "creation_statements": engine.creation(), "default_ttl": ttl, "max_ttl": ttl })),
            )
            .await?;
    }
    let statements = engine.creation();
    let mut direct = Direct::connect(engine, &url_secret, mode).await?;
    let server_version = direct.server_version().await?;

    // Warm both paths (pools, catalog caches) before measuring.
    for _ in 0..10 {
        lessor_pair(target, slug).await?;
        direct.pair(engine, &statements).await?;
    }

    let (mut lessor_issue, mut lessor_revoke, mut direct_create, mut direct_revoke) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..options.iterations {
        let (issue, revoke) = lessor_pair(target, slug).await?;
        lessor_issue.push(issue);
        lessor_revoke.push(revoke);
        let (create, revoke) = direct.pair(engine, &statements).await?;
        direct_create.push(create);
        direct_revoke.push(revoke);
    }

    // Throughput and latency under load, one level of concurrency at a time; the Lessor side's
    // pool is sized to the level, so both sides hold the same number of database connections.
    let mut loads = Vec::new();
    for &level in &options.concurrency {
        target
            .call(
                reqwest::Method::POST,
                &format!("database/config/{slug}"),
                Some(json!({ "max_open_connections": level })),
            )
            .await?;
        let pairs = level * options.pairs_per_worker;
        let started = Instant::now();
        let mut workers = Vec::new();
        for worker_index in 0..level {
            let worker = WorkerTarget::new(target, worker_index, slug);
            let per_worker = options.pairs_per_worker;
            workers.push(tokio::spawn(async move {
                let mut timings = Vec::with_capacity(per_worker);
                for _ in 0..per_worker {
                    timings.push(worker.pair().await?);
                }
                Ok::<_, Error>(timings)
            }));
        }
        let lessor = collect_load(started, pairs, workers).await?;

        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..level {
            let url = url_secret.clone();
            let statements = statements.clone();
            let per_worker = options.pairs_per_worker;
            workers.push(tokio::spawn(async move {
                let mut session = Direct::connect(engine, &url, mode).await?;
                let mut timings = Vec::with_capacity(per_worker);
                for _ in 0..per_worker {
                    timings.push(session.pair(engine, &statements).await?);
                }
                Ok::<_, Error>(timings)
            }));
        }
        let direct = collect_load(started, pairs, workers).await?;
        loads.push((level, lessor, direct));
    }

    // Reaper promptness: leases of one second, polled on the database every 10 ms.
    let mut watcher = Direct::connect(engine, &url_secret, mode).await?;
    let mut reaper_delays = Vec::new();
    for _ in 0..options.expiring_leases {
        let issued_at = Instant::now();
        let answer = target
            .call(
                reqwest::Method::GET,
                &format!("database/creds/{expiring}"),
                None,
            )
            .await?;
        let username = answer["data"]["username"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let ttl = Duration::from_secs(answer["lease_duration"].as_u64().unwrap_or(1));
        while watcher.user_exists(&username).await? {
            if issued_at.elapsed() > ttl + Duration::from_secs(30) {
                return Err(bench_error(
                    "reaper",
                    "an expired user was still there 30 s after expiry",
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        reaper_delays.push(issued_at.elapsed().saturating_sub(ttl));
    }

    let issue = (summarize(&mut lessor_issue), summarize(&mut direct_create));
    let revoke = (summarize(&mut lessor_revoke), summarize(&mut direct_revoke));
    let reaper = summarize(&mut reaper_delays);
    let reaper_max = reaper_delays.iter().max().copied().unwrap_or_default();
    let mut floors = Vec::new();
    if mode != PasswordAuthentication::Password {
        for &level in &options.concurrency {
            floors.push(measure_floor(target, engine, slug, &url_secret, level, options).await?);
        }
    }

    let mut report = String::new();
    let _ = writeln!(
        report,
        "### {} ({server_version}, 127.0.0.1)\n",
        engine.label()
    );
    let _ = writeln!(report, "| operation | Lessor p50 ms | direct p50 ms | ratio p50 | Lessor p95 ms | direct p95 ms | ratio p95 | ratio mean |");
    let _ = writeln!(report, "|---|---|---|---|---|---|---|---|");
    for (name, (l, d)) in [
        ("issue (create user)", issue),
        ("revoke (drop user)", revoke),
    ] {
        let _ = writeln!(
            report,
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            ms(l.p50),
            ms(d.p50),
            ratio(l.p50, d.p50),
            ms(l.p95),
            ms(d.p95),
            ratio(l.p95, d.p95),
            ratio(l.mean, d.mean)
        );
    }
    let _ = writeln!(
        report,
        "\n| workers | Lessor pairs/s | direct pairs/s | Lessor / direct | issue p50 ms L / D | issue p99 ms L / D | revoke p50 ms L / D | revoke p99 ms L / D |\n|---|---|---|---|---|---|---|---|"
    );
    for (level, lessor, direct) in &loads {
        let _ = writeln!(
            report,
            "| {level} | {:.1} | {:.1} | {:.2} | {} / {} | {} / {} | {} / {} | {} / {} |",
            lessor.pairs_per_sec,
            direct.pairs_per_sec,
            lessor.pairs_per_sec / direct.pairs_per_sec.max(1e-9),
            ms(lessor.issue.p50),
            ms(direct.issue.p50),
            ms(lessor.issue.p99),
            ms(direct.issue.p99),
            ms(lessor.revoke.p50),
            ms(direct.revoke.p50),
            ms(lessor.revoke.p99),
            ms(direct.revoke.p99),
        );
    }
    let _ = writeln!(
        report,
        "\nReaper: an expired lease's user was gone {} ms after expiry at p50, {} ms at p95, {} ms at worst \
         (polled every 10 ms; includes the poll interval).\n",
        ms(reaper.p50),
        ms(reaper.p95),
        ms(reaper_max)
    );
    for floor in floors {
        report.push_str(&floor);
    }
    Ok(report)
}

/// Creds/s of the four blocks of one floor round.
struct FloorRound {
    /// Lessor, on the connection with verifiers.
    lessor: f64,
    /// Lessor, on a twin connection with `password_authentication = "password"`.
    lessor_password: f64,
    /// The same SQL as `lessor`, run directly.
    same_sql: f64,
    /// The floor: the same creation run directly with the password itself.
    floor: f64,
}

/// Issuance throughput (creations only: each block's users are dropped after its clock stops)
/// with `level` workers, each side holding `level` database connections, in [`FLOOR_ROUNDS`] interleaved rounds of four blocks: Lessor with
/// its verifiers; Lessor on a twin connection that sends the password (what the feature gains
/// Lessor); the verifiers' SQL directly; and the floor, which is the same creation run directly
/// with the password itself (the server hashes it at its own 4,096 iterations). Returns the
/// report's section.
async fn measure_floor(
    target: &Target,
    engine: Engine,
    role: &str,
    url: &Secret,
    level: usize,
    options: &BenchOptions,
) -> Result<String> {
    let statements = engine.creation();
    let mode = options.password_authentication;
    let twin = format!("{role}-password");
    target
        .call(
            reqwest::Method::POST,
            &format!("database/config/{role}"),
            Some(json!({ "max_open_connections": level })),
        )
        .await?;
    target
        .call(
            reqwest::Method::POST,
            &format!("database/config/{twin}"),
            Some(json!({
                "plugin_name": engine.0.plugin_name(),
                "connection_url": url.expose(),
                "allowed_roles": "*",
                "max_open_connections": level,
            })),
        )
        .await?;
    target
        .call(
            reqwest::Method::POST,
            &format!("database/roles/{twin}"),
            Some(
                json!({ "db_name": twin, "creation_statements": statements, "default_ttl": "1h" }),
            ),
        )
        .await?;
    // Warm both pools at this size.
    lessor_issuance(target, role, level, options).await?;
    lessor_issuance(target, &twin, level, options).await?;
    let mut rounds = Vec::new();
    for _ in 0..FLOOR_ROUNDS {
        rounds.push(FloorRound {
            lessor: lessor_issuance(target, role, level, options).await?,
            lessor_password: lessor_issuance(target, &twin, level, options).await?,
            same_sql: direct_issuance(engine, url, &statements, mode, level, options).await?,
            floor: direct_issuance(
                engine,
                url,
                &statements,
                PasswordAuthentication::Password,
                level,
                options,
            )
            .await?,
        });
    }
    let spread = |values: Vec<f64>| {
        let mut values = values;
        values.sort_by(f64::total_cmp);
        format!(
            "{:.2}x / {:.2}x / {:.2}x",
            values[0],
            values[values.len() / 2],
            values[values.len() - 1]
        )
    };
    let ratio = |a: f64, b: f64| a / b.max(1e-9);
    let mut section = String::new();
    let _ = writeln!(
        section,
        "Issuance against the floor (password_authentication = {}, scram_iterations = {}; {} workers x {} creations per block, \
         {FLOOR_ROUNDS} interleaved rounds; users dropped after each block's clock stops):\n",
        mode.name(),
        mode.generated_iterations().unwrap_or_default(),
        level,
        options.pairs_per_worker,
    );
    let _ = writeln!(
        section,
        "| round | Lessor creds/s | Lessor with \"password\" creds/s | same SQL direct creds/s | floor (password, 4,096 by the server) creds/s | Lessor / floor | Lessor / Lessor with \"password\" | direct / floor | Lessor / direct |\n|---|---|---|---|---|---|---|---|---|"
    );
    for (index, round) in rounds.iter().enumerate() {
        let _ = writeln!(
            section,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x | {:.2}x | {:.2}x | {:.2}x |",
            index + 1,
            round.lessor,
            round.lessor_password,
            round.same_sql,
            round.floor,
            ratio(round.lessor, round.floor),
            ratio(round.lessor, round.lessor_password),
            ratio(round.same_sql, round.floor),
            ratio(round.lessor, round.same_sql),
        );
    }
    let _ = writeln!(
        section,
        "\nMin / median / max: Lessor / floor {}; Lessor / Lessor with \"password\" {}; direct / floor {}; Lessor / direct {}.\n",
        spread(rounds.iter().map(|r| ratio(r.lessor, r.floor)).collect()),
        spread(rounds.iter().map(|r| ratio(r.lessor, r.lessor_password)).collect()),
        spread(rounds.iter().map(|r| ratio(r.same_sql, r.floor)).collect()),
        spread(rounds.iter().map(|r| ratio(r.lessor, r.same_sql)).collect()),
    );
    Ok(section)
}

/// Lessor's issuance throughput: `level` workers each issue `pairs_per_worker` credentials;
/// the leases are revoked after the clock stops.
async fn lessor_issuance(
    target: &Target,
    role: &str,
    level: usize,
    options: &BenchOptions,
) -> Result<f64> {
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker_index in 0..level {
        let worker = WorkerTarget::new(target, worker_index, role);
        let count = options.pairs_per_worker;
        workers.push(tokio::spawn(async move {
            let mut leases = Vec::with_capacity(count);
            for _ in 0..count {
                leases.push(worker.issue().await?);
            }
            Ok::<_, Error>((worker, leases))
        }));
    }
    let mut issued = Vec::new();
    for worker in workers {
        issued.push(worker.await.map_err(|e| bench_error("worker", e))??);
    }
    let rate = (level * options.pairs_per_worker) as f64 / started.elapsed().as_secs_f64();
    let mut revokers = Vec::new();
    for (worker, leases) in issued {
        revokers.push(tokio::spawn(async move {
            for lease in leases {
                worker.revoke(&lease).await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for revoker in revokers {
        revoker.await.map_err(|e| bench_error("worker", e))??;
    }
    Ok(rate)
}

/// Direct creation throughput with `mode`: `level` sessions (connected before the clock
/// starts, as Lessor's pool is warm) each create `pairs_per_worker` users; the users are dropped
/// after the clock stops.
async fn direct_issuance(
    engine: Engine,
    url: &Secret,
    statements: &[String],
    mode: PasswordAuthentication,
    level: usize,
    options: &BenchOptions,
) -> Result<f64> {
    let mut sessions = Vec::new();
    for _ in 0..level {
        sessions.push(Direct::connect(engine, url, mode).await?);
    }
    let started = Instant::now();
    let mut workers = Vec::new();
    for mut session in sessions {
        let statements = statements.to_vec();
        let count = options.pairs_per_worker;
        workers.push(tokio::spawn(async move {
            let mut users = Vec::with_capacity(count);
            for _ in 0..count {
                users.push(session.create(engine, &statements).await?);
            }
            Ok::<_, Error>((session, users))
        }));
    }
    let mut created = Vec::new();
    for worker in workers {
        created.push(worker.await.map_err(|e| bench_error("worker", e))??);
    }
    let rate = (level * options.pairs_per_worker) as f64 / started.elapsed().as_secs_f64();
    let mut droppers = Vec::new();
    for (mut session, users) in created {
        droppers.push(tokio::spawn(async move {
            for user in users {
                session.delete(&user).await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for dropper in droppers {
        dropper.await.map_err(|e| bench_error("worker", e))??;
    }
    Ok(rate)
}

/// A worker's own HTTP client for the throughput measurement.
struct WorkerTarget {
    base: String,
    token: Secret,
    http: reqwest::Client,
    role: String,
}

impl WorkerTarget {
    /// Worker `index`'s client for `role`, on the replica the workers take in turn.
    fn new(target: &Target, index: usize, role: &str) -> Self {
        Self {
            base: target.bases[index % target.bases.len()].clone(),
            token: target.token.clone(),
            http: reqwest::Client::new(),
            role: role.to_owned(),
        }
    }

    /// Issues then revokes one credential; returns how long each took.
    async fn pair(&self) -> Result<(Duration, Duration)> {
        let started = Instant::now();
        let lease = self.issue().await?;
        let issued = started.elapsed();
        let started = Instant::now();
        self.revoke(&lease).await?;
        Ok((issued, started.elapsed()))
    }

    /// Issues one credential; returns its lease id.
    async fn issue(&self) -> Result<String> {
        let answer: Value = self
            .http
            .get(format!("{}/v1/database/creds/{}", self.base, self.role))
            .header("X-Vault-Token", self.token.expose())
            .send()
            .await
            .map_err(|e| bench_error("creds", e))?
            .json()
            .await
            .map_err(|e| bench_error("creds", e))?;
        answer["lease_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| bench_error("creds", answer["errors"].to_string()))
    }

    async fn revoke(&self, lease: &str) -> Result<()> {
        let response = self
            .http
            .put(format!("{}/v1/sys/leases/revoke", self.base))
            .header("X-Vault-Token", self.token.expose())
            .json(&json!({ "lease_id": lease }))
            .send()
            .await
            .map_err(|e| bench_error("revoke", e))?;
        if !response.status().is_success() {
            return Err(bench_error("revoke", response.status()));
        }
        Ok(())
    }
}
