//! `lessor bench`: what Lessor costs over the same SQL run directly on the database, in one run.
//!
//! Measurements per engine (PostgreSQL, MySQL/MariaDB, Redis: every engine with a direct
//! baseline):
//! 1. Latency of issuing and of revoking one credential, through Lessor's HTTP API (token check,
//!    lease write, pool, plugin) and directly (the plugin's own statements on one plain connection,
//!    from the engine crate's `baseline` module), interleaved iteration by iteration so drift in
//!    the database affects both alike.
//! 2. Throughput of issue-then-revoke pairs at each concurrency level, both ways, in interleaved
//!    rounds (Lessor's block then the direct one, then the other way round), with each
//!    operation's p50 and p99 as the workers saw it.
//! 3. Reaper promptness: how long after its expiry an expired lease's role is gone.
//! 4. With `--password-authentication scram-sha-256` (PostgreSQL), issuance throughput against the
//!    floor at each concurrency level: Lessor issuing with verifiers it computes, Lessor on a twin
//!    connection that sends the password, the same SQL run directly, and the default-iterations
//!    floor (the password itself in `CREATE ROLE`, hashed by the server with its 4,096
//!    iterations), in interleaved rounds. Every other measurement then runs with the verifiers on
//!    both sides too.
//! 5. With `--bulk N` ([`bulk`]), bulk revocation of N users: one revoke-prefix, and the reaper
//!    draining N leases that fell due together (with the API's latency meanwhile), each against
//!    the engine's plain drop of N users on as many connections.
//! 6. With `--warm-pool N` ([`warm`]), issuance from a role's warm pool of N users one at a time
//!    against Lessor's own HTTP round trip and against issuance without a pool, and a burst of
//!    1,000 requests at concurrency 32 from a full pool.
//!
//! With `--leases N` the store first gets N live leases (rows only: no database user exists for
//! them, and the store is a temporary one), every measurement runs with them there, and a
//! 1,000-key `LIST` page of them is timed.
//!
//! The result is a [`Report`]: rendered as Markdown for `docs/benchmarks.md`, or printed as one
//! JSON object (`--json`). Ratios are Lessor / direct: for throughput (`*_ratio`) 1.0 is free and
//! higher is better; for latency (`*_latency_ratio`) lower is better. Progress goes to standard
//! error as the run goes. [`peers`] is the other mode: two Vault-API servers side by side
//! (`lessor bench --servers`, which `scripts/bench-openbao.sh` drives).

pub mod bulk;
pub mod peers;
pub mod warm;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lessor_plugin::credentials::DEFAULT_PASSWORD_LEN;
use lessor_plugin::{
    generate_password, generate_username, DirectSession, EngineDescriptor, NewUserRequest,
    PasswordAuthentication, PasswordStrength, RoleOptions, Secret, UserMarker, UsernameContext,
};
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::store::{Lease, LeaseState, Store};
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

    /// `count` sessions, all connected before the caller starts its clock (Lessor's pool is
    /// warm too).
    async fn connect_many(
        engine: Engine,
        url: &Secret,
        mode: PasswordAuthentication,
        count: usize,
    ) -> Result<Vec<Self>> {
        let mut sessions = Vec::with_capacity(count);
        for _ in 0..count {
            sessions.push(Self::connect(engine, url, mode).await?);
        }
        Ok(sessions)
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
        self.create_named(engine, statements, None).await
    }

    /// [`Self::create`] with the username from `template` (Lessor's syntax; `None`: the
    /// default).
    async fn create_named(
        &mut self,
        engine: Engine,
        statements: &[String],
        template: Option<&str>,
    ) -> Result<String> {
        let username = generate_username(
            template,
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
    /// Issue/revoke pairs per worker in each throughput block.
    pub pairs_per_worker: usize,
    /// Rounds of the throughput measurement at each level; each round runs one Lessor block and
    /// one direct block, the order alternating from round to round.
    pub rounds: usize,
    /// Leases used to measure reaper promptness.
    pub expiring_leases: usize,
    /// Live leases written into the store before measuring (rows only; no database user is
    /// made for them).
    pub seeded_leases: usize,
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
    /// Users per bulk revocation measurement ([`bulk`]); 0 leaves it out.
    pub bulk: usize,
    /// The warm pool size of the warm pool measurement ([`warm`]); 0 leaves it out.
    pub warm_pool: usize,
}

/// Rounds of the floor comparison, each running its blocks one after the other, so drift in the
/// machine shows as spread across rounds rather than as a bias against one side.
const FLOOR_ROUNDS: usize = 3;

/// The role the seeded leases claim to belong to; their ids are `database/creds/bench-seeded/...`.
const SEEDED_ROLE: &str = "bench-seeded";

/// Seeded leases written per transaction.
const SEED_BATCH: usize = 2_000;

/// Keys in the timed `LIST` page, and how many times it is asked for.
const LIST_PAGE_LIMIT: usize = 1_000;
const LIST_REQUESTS: usize = 50;

/// The store the measured Lessor runs on.
#[derive(Debug, Clone)]
pub enum BenchStore {
    /// A SQLite file in a temporary directory (the embedded default).
    Sqlite,
    /// A throwaway database made (and dropped at the end) on the PostgreSQL this admin URL
    /// reaches.
    Postgres { admin_url: String },
}

/// One line of progress on standard error (standard output carries only the report).
fn progress(message: impl std::fmt::Display) {
    eprintln!("bench: {message}");
}

// ---- the report ------------------------------------------------------------------------------

/// A whole run: what `--json` prints, and what the Markdown report is rendered from.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When the run started, RFC 3339, UTC.
    pub date: String,
    pub machine: Machine,
    /// `release` or `debug`: a debug build's figures say little about Lessor's speed.
    pub build_profile: &'static str,
    pub parameters: Parameters,
    /// The store seeded with `--leases N`, and the `LIST` page timed in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seeded: Option<Seeded>,
    /// Per engine, by its short name (`postgres`, `mysql`, `redis`).
    pub engines: BTreeMap<String, EngineReport>,
}

/// The machine the run measured on.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// Logical CPUs available to the process; Lessor, the database and the load share them.
    pub cores: usize,
    pub os: &'static str,
    pub arch: &'static str,
}

/// The run's options, as given.
#[derive(Debug, Serialize)]
pub struct Parameters {
    pub iterations: usize,
    pub concurrency: Vec<usize>,
    pub pairs_per_worker: usize,
    pub rounds: usize,
    pub expiring_leases: usize,
    pub leases: usize,
    /// Users per bulk revocation measurement (`--bulk`; 0: not measured).
    pub bulk: usize,
    /// Warm pool size (`--warm-pool`; 0: not measured).
    pub warm_pool: usize,
    /// `sqlite` (a temporary file) or `postgres` (a throwaway database).
    pub store: &'static str,
    pub replicas: usize,
    pub password_authentication: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scram_iterations: Option<u32>,
    /// Always false here: requests are not audited while measured.
    pub audit_device: bool,
}

/// Percentiles of one series of operations, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

/// One operation's latency through Lessor and directly, with the ratios Lessor / direct (1.0
/// is free; lower is better).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencyComparison {
    pub lessor: Latency,
    pub direct: Latency,
    pub p50_latency_ratio: f64,
    pub p95_latency_ratio: f64,
    pub p99_latency_ratio: f64,
    pub mean_latency_ratio: f64,
}

impl LatencyComparison {
    fn new(lessor: Latency, direct: Latency) -> Self {
        Self {
            lessor,
            direct,
            p50_latency_ratio: ratio(lessor.p50_ms, direct.p50_ms),
            p95_latency_ratio: ratio(lessor.p95_ms, direct.p95_ms),
            p99_latency_ratio: ratio(lessor.p99_ms, direct.p99_ms),
            mean_latency_ratio: ratio(lessor.mean_ms, direct.mean_ms),
        }
    }
}

/// One engine's figures.
#[derive(Debug, Serialize)]
pub struct EngineReport {
    pub label: &'static str,
    pub server_version: String,
    /// One operation at a time, Lessor and direct alternating.
    pub issue: LatencyComparison,
    pub revoke: LatencyComparison,
    /// Issue-then-revoke pairs, one entry per concurrency level.
    pub throughput: Vec<LoadLevel>,
    pub reaper: Reaper,
    /// Issuance against the default-iterations floor, per concurrency level (only with
    /// `--password-authentication scram-sha-256`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub floor: Vec<FloorLevel>,
    /// Bulk revocation against the engine's plain drop (only with `--bulk N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bulk: Option<bulk::Bulk>,
    /// Issuance from a warm pool (only with `--warm-pool N`, on engines that keep one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_pool: Option<warm::WarmPool>,
}

/// Throughput at one concurrency level: `rounds` pairs of blocks, Lessor's and the direct one,
/// in alternating order.
#[derive(Debug, Serialize)]
pub struct LoadLevel {
    /// Workers on each side, and database connections on each side.
    pub concurrency: usize,
    /// Issue-then-revoke pairs in each block.
    pub pairs_per_block: usize,
    pub rounds: Vec<LoadRound>,
    /// Medians over the rounds.
    pub lessor_pairs_per_sec: f64,
    pub direct_pairs_per_sec: f64,
    /// Lessor / direct, the median of the rounds' ratios (1.0 is free; higher is better).
    pub pairs_ratio: f64,
    pub min_pairs_ratio: f64,
    pub max_pairs_ratio: f64,
    /// Each operation's latency as the workers saw it, over every round.
    pub issue: LatencyComparison,
    pub revoke: LatencyComparison,
}

/// One round at one level.
#[derive(Debug, Serialize)]
pub struct LoadRound {
    /// Which block ran first in this round: `lessor` or `direct`.
    pub first: &'static str,
    pub lessor_pairs_per_sec: f64,
    pub direct_pairs_per_sec: f64,
    pub pairs_ratio: f64,
}

/// How long after its expiry an expired lease's user was gone (polled every 10 ms, which the
/// figures include).
#[derive(Debug, Serialize)]
pub struct Reaper {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

/// Issuance against the floor at one concurrency level.
#[derive(Debug, Serialize)]
pub struct FloorLevel {
    pub concurrency: usize,
    /// Creations in each block (workers x creations per worker).
    pub creations_per_block: usize,
    pub rounds: Vec<FloorRound>,
    /// Medians over the rounds of the ratios below.
    pub lessor_floor_ratio: f64,
    pub min_lessor_floor_ratio: f64,
    pub max_lessor_floor_ratio: f64,
    pub lessor_password_ratio: f64,
    pub direct_floor_ratio: f64,
    pub direct_ratio: f64,
}

/// Creds/s of the four blocks of one floor round, and their ratios.
#[derive(Debug, Serialize)]
pub struct FloorRound {
    /// Lessor, on the connection with verifiers.
    pub lessor_creds_per_sec: f64,
    /// Lessor, on a twin connection with `password_authentication = "password"`.
    pub lessor_password_creds_per_sec: f64,
    /// The same SQL as `lessor`, run directly.
    pub direct_creds_per_sec: f64,
    /// The floor: the same creation run directly with the password itself.
    pub floor_creds_per_sec: f64,
    /// Lessor / floor.
    pub lessor_floor_ratio: f64,
    /// Lessor / Lessor with "password": what the verifiers gain Lessor.
    pub lessor_password_ratio: f64,
    /// Direct / floor: what the verifiers gain the database.
    pub direct_floor_ratio: f64,
    /// Lessor / direct.
    pub direct_ratio: f64,
}

/// The store seeded with `--leases N`.
#[derive(Debug, Serialize)]
pub struct Seeded {
    /// Live leases written before measuring.
    pub leases: usize,
    /// How long writing them took.
    pub seed_seconds: f64,
    pub list_page: ListPage,
}

/// One page of `LIST sys/leases/lookup/<prefix>?limit=N` among the seeded leases, asked for
/// `requests` times one after the other.
#[derive(Debug, Serialize)]
pub struct ListPage {
    pub path: String,
    pub limit: usize,
    /// Keys in the answer (the limit, unless fewer leases were seeded).
    pub keys: usize,
    pub requests: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn summarize(samples: &mut [Duration]) -> Latency {
    if samples.is_empty() {
        return Latency {
            p50_ms: 0.0,
            p95_ms: 0.0,
            p99_ms: 0.0,
            mean_ms: 0.0,
        };
    }
    samples.sort();
    let pick = |q: f64| millis(samples[((samples.len() as f64 - 1.0) * q).round() as usize]);
    let total: Duration = samples.iter().sum();
    Latency {
        p50_ms: pick(0.50),
        p95_ms: pick(0.95),
        p99_ms: pick(0.99),
        mean_ms: millis(total / samples.len() as u32),
    }
}

/// Milliseconds, to the microsecond.
fn millis(d: Duration) -> f64 {
    round_to(d.as_secs_f64() * 1000.0, 3)
}

/// `a / b` to four decimals, finite even when `b` is zero (JSON has no infinity).
fn ratio(a: f64, b: f64) -> f64 {
    round_to(a / b.max(1e-9), 4)
}

/// A rate, to a hundredth.
fn per_sec(count: usize, elapsed: Duration) -> f64 {
    round_to(count as f64 / elapsed.as_secs_f64().max(1e-9), 2)
}

fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// Min, median and max of `values` (zeros for none); the median of an even count is the mean
/// of the middle two.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut values = values.to_vec();
    if values.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    let median = if values.len() % 2 == 0 {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    };
    (values[0], median, values[values.len() - 1])
}

fn bench_error(context: &str, detail: impl std::fmt::Display) -> Error {
    Error::Internal(format!("bench: {context}: {detail}"))
}

/// One side's block at one concurrency level: pairs per second, and each operation's latencies.
struct LoadResult {
    pairs_per_sec: f64,
    issue: Vec<Duration>,
    revoke: Vec<Duration>,
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
        pairs_per_sec: per_sec(pairs, started.elapsed()),
        issue,
        revoke,
    })
}

/// The policy of the measured clients' token: what an application that issues and returns its
/// own credentials needs, and nothing else.
const CLIENT_POLICY: &str = r#"
path "database/creds/*" { capabilities = ["read"] }
path "sys/leases/revoke" { capabilities = ["update"] }
path "sys/leases/lookup" { capabilities = ["update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
"#;
const CLIENT_POLICY_NAME: &str = "bench-client";

/// Lessor on loopback with a throwaway store, driven over HTTP: one replica, or several sharing
/// a PostgreSQL store (`base` is the first; `bases` all of them).
struct Target {
    base: String,
    bases: Vec<String>,
    http: reqwest::Client,
    /// The root token, for setting up and tearing down (roles, connections, revoke-prefix).
    token: Secret,
    /// What the measured clients issue, revoke and look up with: a token holding only
    /// [`CLIENT_POLICY`], so that each request pays the policy check and the lease-owner check
    /// an application's token does (root skips both).
    client_token: Secret,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    /// The replicas' serving tasks, awaited at the end so that each stops cleanly (its warm
    /// pools dropped, its database pools closed) before the process exits.
    serving: Vec<tokio::task::JoinHandle<Result<()>>>,
    /// The first replica's store, which `--leases` seeds directly.
    store: Store,
    /// The first replica's lease manager, whose warm pool counts what it issued (`--warm-pool`).
    leases: crate::lease::LeaseManager,
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
        let (mut bases, mut stops, mut store, mut leases) = (Vec::new(), Vec::new(), None, None);
        let mut serving = Vec::new();
        for replica in 0..options.replicas.max(1) {
            let state = AppState::open(&settings).await?;
            if replica == 0 {
                state.auth.install_root_token(&token).await?;
                store = Some(state.store.clone());
                leases = Some(state.leases.clone());
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
            serving.push(tokio::spawn(crate::serve(listener, state, async {
                let _ = stopped.await;
            })));
            stops.push(stop);
        }
        let mut target = Self {
            base: bases[0].clone(),
            bases,
            http: reqwest::Client::new(),
            client_token: token.clone(),
            token,
            stops,
            serving,
            store: store.ok_or_else(|| bench_error("start", "no replica"))?,
            leases: leases.ok_or_else(|| bench_error("start", "no replica"))?,
            store_database,
            _dir: dir,
        };
        target.client_token = target.make_client_token().await?;
        Ok(target)
    }

    /// Writes [`CLIENT_POLICY`] and makes a token holding it alone (with root's, an early
    /// return would be benchmarked instead of the policy check).
    async fn make_client_token(&self) -> Result<Secret> {
        self.call(
            reqwest::Method::PUT,
            &format!("sys/policies/acl/{CLIENT_POLICY_NAME}"),
            Some(json!({ "policy": CLIENT_POLICY })),
        )
        .await?;
        let answer = self
            .call(
                reqwest::Method::POST,
                "auth/token/create",
                Some(json!({ "policies": [CLIENT_POLICY_NAME], "ttl": "24h" })),
            )
            .await?;
        answer["auth"]["client_token"]
            .as_str()
            .map(|token| Secret::new(token.to_owned()))
            .ok_or_else(|| bench_error("auth/token/create", "no client token in the answer"))
    }

    /// Stops the replicas and drops the throwaway store database, if any.
    async fn finish(mut self) -> Result<()> {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for serving in self.serving.drain(..) {
            match tokio::time::timeout(Duration::from_secs(60), serving).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => progress(format!("a replica stopped with an error: {error}")),
                Ok(Err(error)) => progress(format!("a replica's task failed: {error}")),
                Err(_) => progress("a replica did not stop within 60 s"),
            }
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

    /// A request with the root token (set-up and tear-down).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        self.call_with(&self.token, method, path, body).await
    }

    /// A request as the measured clients make it, with [`Target::client_token`].
    async fn client_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        self.call_with(&self.client_token, method, path, body).await
    }

    async fn call_with(
        &self,
        token: &Secret,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}/v1/{path}", self.base))
            .header("X-Vault-Token", token.expose());
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
            .client_call(
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
        self.client_call(
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

/// Runs every measurement for every engine with a URL; the throwaway store (and with it any
/// seeded lease) is gone when this returns, whatever the outcome.
pub async fn run(options: &BenchOptions) -> Result<Report> {
    let date = Utc::now();
    progress(format!(
        "starting Lessor ({} build, {})",
        build_profile(),
        store_description(options)
    ));
    let target = Target::start(options).await?;
    let measured = measure(&target, options).await;
    target.finish().await?;
    let (seeded, engines) = measured?;
    progress("done");
    Ok(Report {
        date: date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        machine: Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        },
        build_profile: build_profile(),
        parameters: Parameters {
            iterations: options.iterations,
            concurrency: options.concurrency.clone(),
            pairs_per_worker: options.pairs_per_worker,
            rounds: options.rounds,
            expiring_leases: options.expiring_leases,
            leases: options.seeded_leases,
            bulk: options.bulk,
            warm_pool: options.warm_pool,
            store: match options.store {
                BenchStore::Sqlite => "sqlite",
                BenchStore::Postgres { .. } => "postgres",
            },
            replicas: options.replicas,
            password_authentication: options.password_authentication.name(),
            scram_iterations: options.password_authentication.generated_iterations(),
            audit_device: false,
        },
        seeded,
        engines,
    })
}

fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

fn store_description(options: &BenchOptions) -> String {
    match (&options.store, options.replicas) {
        (BenchStore::Sqlite, _) => "SQLite store in a temporary directory".to_owned(),
        (BenchStore::Postgres { .. }, n) => format!(
            "PostgreSQL store (a throwaway database on the local server), {n} replica(s) sharing it, \
             workers spread over them"
        ),
    }
}

/// The seeding (if asked for) and every engine's measurements.
async fn measure(
    target: &Target,
    options: &BenchOptions,
) -> Result<(Option<Seeded>, BTreeMap<String, EngineReport>)> {
    let seeded = match options.seeded_leases {
        0 => None,
        count => Some(seed(target, count).await?),
    };
    let mut engines = BTreeMap::new();
    for (name, url) in &options.targets {
        let engine = crate::engines::by_name(name)
            .ok_or_else(|| bench_error("engines", format!("unknown engine {name:?}")))?;
        let report = run_engine(target, Engine(engine), url, options).await?;
        engines.insert(name.clone(), report);
    }
    Ok((seeded, engines))
}

/// One seeded lease: live for 30 days, so the reaper leaves it alone during the run; its user
/// does not exist anywhere.
fn seeded_lease(index: usize, issued_at: DateTime<Utc>, expires_at: DateTime<Utc>) -> Lease {
    let suffix: String = rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    Lease {
        id: format!("database/creds/{SEEDED_ROLE}/{suffix}"),
        role_name: SEEDED_ROLE.to_owned(),
        connection_name: SEEDED_ROLE.to_owned(),
        username: format!("v-{SEEDED_ROLE}-{index:08}"),
        revocation_statements: Vec::new(),
        rollback_statements: Vec::new(),
        renew_statements: Vec::new(),
        issued_at,
        last_renewed_at: None,
        expires_at,
        max_expires_at: expires_at,
        state: LeaseState::Active,
        next_action_at: expires_at,
        attempts: 0,
        last_error: None,
        revoked_at: None,
        owner: SEEDED_ROLE.to_owned(),
        owner_display_name: SEEDED_ROLE.to_owned(),
        revoke_requested: false,
        token_accessor: None,
        claimed_by: None,
        claim_until: None,
        database_name: None,
    }
}

/// Writes `count` live leases into the store, in batches of [`SEED_BATCH`], then times a
/// 1,000-key `LIST` page of them.
async fn seed(target: &Target, count: usize) -> Result<Seeded> {
    progress(format!(
        "seeding the store with {count} live leases under database/creds/{SEEDED_ROLE}/ (rows only, no database user)"
    ));
    let started = Instant::now();
    let now = Utc::now();
    let (issued_at, expires_at) = (now, now + chrono::Duration::days(30));
    let report_every = (count / 10).max(SEED_BATCH);
    let (mut written, mut next_report) = (0, report_every);
    while written < count {
        let batch: Vec<Lease> = (written..(written + SEED_BATCH).min(count))
            .map(|index| seeded_lease(index, issued_at, expires_at))
            .collect();
        target.store.seed_leases(&batch).await?;
        written += batch.len();
        if written >= next_report || written == count {
            progress(format!(
                "seeded {written} of {count} leases ({:.1} s)",
                started.elapsed().as_secs_f64()
            ));
            next_report = written + report_every;
        }
    }
    let seed_seconds = round_to(started.elapsed().as_secs_f64(), 3);

    let path = format!("sys/leases/lookup/database/creds/{SEEDED_ROLE}/?limit={LIST_PAGE_LIMIT}");
    progress(format!(
        "timing {LIST_REQUESTS} requests of LIST {path} among {count} leases"
    ));
    let list = reqwest::Method::from_bytes(b"LIST").map_err(|e| bench_error("LIST", e))?;
    // Warm the path (page cache, statement cache) before timing it.
    for _ in 0..2 {
        target.call(list.clone(), &path, None).await?;
    }
    let (mut samples, mut keys) = (Vec::with_capacity(LIST_REQUESTS), 0);
    for _ in 0..LIST_REQUESTS {
        let started = Instant::now();
        let answer = target.call(list.clone(), &path, None).await?;
        samples.push(started.elapsed());
        keys = answer["data"]["keys"].as_array().map_or(0, Vec::len);
    }
    let latency = summarize(&mut samples);
    progress(format!(
        "LIST page of {keys} keys: p50 {:.2} ms, p99 {:.2} ms",
        latency.p50_ms, latency.p99_ms
    ));
    Ok(Seeded {
        leases: count,
        seed_seconds,
        list_page: ListPage {
            path,
            limit: LIST_PAGE_LIMIT,
            keys,
            requests: LIST_REQUESTS,
            p50_ms: latency.p50_ms,
            p99_ms: latency.p99_ms,
        },
    })
}

/// Every measurement for one engine.
async fn run_engine(
    target: &Target,
    engine: Engine,
    url: &str,
    options: &BenchOptions,
) -> Result<EngineReport> {
    let label = engine.label();
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

    progress(format!("{label} ({server_version}): warm-up"));
    for _ in 0..10 {
        lessor_pair(target, slug).await?;
        direct.pair(engine, &statements).await?;
    }

    progress(format!(
        "{label}: latency, {} issue/revoke pairs per side, one at a time, interleaved",
        options.iterations
    ));
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
    let mut throughput = Vec::new();
    for &level in &options.concurrency {
        throughput.push(measure_load(target, engine, slug, &url_secret, level, options).await?);
    }

    progress(format!(
        "{label}: reaper promptness, {} leases of 1 s",
        options.expiring_leases
    ));
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
    let reaper_latency = summarize(&mut reaper_delays);
    let reaper = Reaper {
        p50_ms: reaper_latency.p50_ms,
        p95_ms: reaper_latency.p95_ms,
        max_ms: reaper_delays.iter().max().copied().map_or(0.0, millis),
    };

    let mut floor = Vec::new();
    if mode != PasswordAuthentication::Password {
        for &level in &options.concurrency {
            floor.push(measure_floor(target, engine, slug, &url_secret, level, options).await?);
        }
    }

    let bulk = match options.bulk {
        0 => None,
        users => Some(bulk::measure(target, engine, &url_secret, mode, users).await?),
    };

    let warm_pool = match options.warm_pool {
        0 => None,
        size => warm::measure(target, engine, slug, size).await?,
    };

    Ok(EngineReport {
        label,
        server_version,
        issue: LatencyComparison::new(summarize(&mut lessor_issue), summarize(&mut direct_create)),
        revoke: LatencyComparison::new(
            summarize(&mut lessor_revoke),
            summarize(&mut direct_revoke),
        ),
        throughput,
        reaper,
        floor,
        bulk,
        warm_pool,
    })
}

/// Issue-then-revoke throughput with `level` workers on each side, each side holding `level`
/// database connections, in `options.rounds` rounds of one Lessor block and one direct block;
/// the order alternates from round to round, so drift in the machine hits both alike.
async fn measure_load(
    target: &Target,
    engine: Engine,
    role: &str,
    url: &Secret,
    level: usize,
    options: &BenchOptions,
) -> Result<LoadLevel> {
    let label = engine.label();
    let statements = engine.creation();
    let mode = options.password_authentication;
    target
        .call(
            reqwest::Method::POST,
            &format!("database/config/{role}"),
            Some(json!({ "max_open_connections": level })),
        )
        .await?;
    progress(format!("{label}: throughput with {level} workers, warm-up"));
    lessor_load(target, role, level, 1).await?;
    let rounds_total = options.rounds.max(1);
    let (mut rounds, mut issue, mut revoke) = (
        Vec::new(),
        (Vec::new(), Vec::new()),
        (Vec::new(), Vec::new()),
    );
    for round in 0..rounds_total {
        let lessor_first = round % 2 == 0;
        let (lessor, direct) = if lessor_first {
            let lessor = lessor_load(target, role, level, options.pairs_per_worker).await?;
            let direct = direct_load(engine, url, &statements, mode, level, options).await?;
            (lessor, direct)
        } else {
            let direct = direct_load(engine, url, &statements, mode, level, options).await?;
            let lessor = lessor_load(target, role, level, options.pairs_per_worker).await?;
            (lessor, direct)
        };
        let pairs_ratio = ratio(lessor.pairs_per_sec, direct.pairs_per_sec);
        progress(format!(
            "{label}: throughput with {level} workers, round {}/{rounds_total} ({} first): \
             Lessor {:.1} pairs/s, direct {:.1} pairs/s, Lessor / direct {pairs_ratio:.2}",
            round + 1,
            if lessor_first { "Lessor" } else { "direct" },
            lessor.pairs_per_sec,
            direct.pairs_per_sec,
        ));
        rounds.push(LoadRound {
            first: if lessor_first { "lessor" } else { "direct" },
            lessor_pairs_per_sec: lessor.pairs_per_sec,
            direct_pairs_per_sec: direct.pairs_per_sec,
            pairs_ratio,
        });
        issue.0.extend(lessor.issue);
        issue.1.extend(direct.issue);
        revoke.0.extend(lessor.revoke);
        revoke.1.extend(direct.revoke);
    }
    let (min_pairs_ratio, pairs_ratio, max_pairs_ratio) =
        spread(&rounds.iter().map(|r| r.pairs_ratio).collect::<Vec<_>>());
    Ok(LoadLevel {
        concurrency: level,
        pairs_per_block: level * options.pairs_per_worker,
        lessor_pairs_per_sec: spread(
            &rounds
                .iter()
                .map(|r| r.lessor_pairs_per_sec)
                .collect::<Vec<_>>(),
        )
        .1,
        direct_pairs_per_sec: spread(
            &rounds
                .iter()
                .map(|r| r.direct_pairs_per_sec)
                .collect::<Vec<_>>(),
        )
        .1,
        pairs_ratio,
        min_pairs_ratio,
        max_pairs_ratio,
        rounds,
        issue: LatencyComparison::new(summarize(&mut issue.0), summarize(&mut issue.1)),
        revoke: LatencyComparison::new(summarize(&mut revoke.0), summarize(&mut revoke.1)),
    })
}

/// One Lessor block: `level` workers each run `per_worker` issue-then-revoke pairs.
async fn lessor_load(
    target: &Target,
    role: &str,
    level: usize,
    per_worker: usize,
) -> Result<LoadResult> {
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker_index in 0..level {
        let worker = WorkerTarget::new(target, worker_index, role);
        workers.push(tokio::spawn(async move {
            let mut timings = Vec::with_capacity(per_worker);
            for _ in 0..per_worker {
                timings.push(worker.pair().await?);
            }
            Ok::<_, Error>(timings)
        }));
    }
    collect_load(started, level * per_worker, workers).await
}

/// One direct block: `level` sessions, connected before the clock starts, each run
/// `pairs_per_worker` create-then-drop pairs.
async fn direct_load(
    engine: Engine,
    url: &Secret,
    statements: &[String],
    mode: PasswordAuthentication,
    level: usize,
    options: &BenchOptions,
) -> Result<LoadResult> {
    let sessions = Direct::connect_many(engine, url, mode, level).await?;
    let per_worker = options.pairs_per_worker;
    let started = Instant::now();
    let mut workers = Vec::new();
    for mut session in sessions {
        let statements = statements.to_vec();
        workers.push(tokio::spawn(async move {
            let mut timings = Vec::with_capacity(per_worker);
            for _ in 0..per_worker {
                timings.push(session.pair(engine, &statements).await?);
            }
            Ok::<_, Error>(timings)
        }));
    }
    collect_load(started, level * per_worker, workers).await
}

/// Issuance throughput (creations only: each block's users are dropped after its clock stops)
/// with `level` workers, each side holding `level` database connections, in [`FLOOR_ROUNDS`]
/// interleaved rounds of four blocks: Lessor with its verifiers; Lessor on a twin connection
/// that sends the password (what the feature gains Lessor); the verifiers' SQL directly; and the
/// floor, which is the same creation run directly with the password itself (the server hashes
/// it at its own 4,096 iterations).
async fn measure_floor(
    target: &Target,
    engine: Engine,
    role: &str,
    url: &Secret,
    level: usize,
    options: &BenchOptions,
) -> Result<FloorLevel> {
    let label = engine.label();
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
    progress(format!(
        "{label}: issuance against the floor with {level} workers, warm-up"
    ));
    lessor_issuance(target, role, level, options).await?;
    lessor_issuance(target, &twin, level, options).await?;
    let mut rounds = Vec::new();
    for round in 0..FLOOR_ROUNDS {
        let lessor = lessor_issuance(target, role, level, options).await?;
        let lessor_password = lessor_issuance(target, &twin, level, options).await?;
        let same_sql = direct_issuance(engine, url, &statements, mode, level, options).await?;
        let floor = direct_issuance(
            engine,
            url,
            &statements,
            PasswordAuthentication::Password,
            level,
            options,
        )
        .await?;
        progress(format!(
            "{label}: floor with {level} workers, round {}/{FLOOR_ROUNDS}: Lessor {lessor:.1} creds/s, \
             floor {floor:.1} creds/s, Lessor / floor {:.2}",
            round + 1,
            ratio(lessor, floor)
        ));
        rounds.push(FloorRound {
            lessor_creds_per_sec: lessor,
            lessor_password_creds_per_sec: lessor_password,
            direct_creds_per_sec: same_sql,
            floor_creds_per_sec: floor,
            lessor_floor_ratio: ratio(lessor, floor),
            lessor_password_ratio: ratio(lessor, lessor_password),
            direct_floor_ratio: ratio(same_sql, floor),
            direct_ratio: ratio(lessor, same_sql),
        });
    }
    let median =
        |pick: fn(&FloorRound) -> f64| spread(&rounds.iter().map(pick).collect::<Vec<_>>());
    let (min_lessor_floor_ratio, lessor_floor_ratio, max_lessor_floor_ratio) =
        median(|r| r.lessor_floor_ratio);
    Ok(FloorLevel {
        concurrency: level,
        creations_per_block: level * options.pairs_per_worker,
        lessor_floor_ratio,
        min_lessor_floor_ratio,
        max_lessor_floor_ratio,
        lessor_password_ratio: median(|r| r.lessor_password_ratio).1,
        direct_floor_ratio: median(|r| r.direct_floor_ratio).1,
        direct_ratio: median(|r| r.direct_ratio).1,
        rounds,
    })
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
    let rate = per_sec(level * options.pairs_per_worker, started.elapsed());
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
    let sessions = Direct::connect_many(engine, url, mode, level).await?;
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
    let rate = per_sec(level * options.pairs_per_worker, started.elapsed());
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

// ---- Markdown ----------------------------------------------------------------------------------

fn ms(value: f64) -> String {
    format!("{value:.2}")
}

impl Report {
    /// The report as Markdown, for `docs/benchmarks.md`.
    pub fn markdown(&self) -> String {
        let p = &self.parameters;
        let mut out = String::new();
        let date = chrono::DateTime::parse_from_rfc3339(&self.date).map_or_else(
            |_| self.date.clone(),
            |d| d.format("%Y-%m-%d %H:%M").to_string(),
        );
        let _ = writeln!(out, "## Run of {date} UTC\n");
        let _ = writeln!(
            out,
            "{} cores; {} sequential iterations per side (interleaved), {:?} workers x {} pairs per block for \
             throughput, {} interleaved rounds per level (as many database connections as workers on each side), \
             {} expiring leases{}. Lessor: {} build, {}, no audit device; password_authentication = {}{}.\n",
            self.machine.cores,
            p.iterations,
            p.concurrency,
            p.pairs_per_worker,
            p.rounds,
            p.expiring_leases,
            if p.leases > 0 {
                format!(", {} leases seeded in the store", p.leases)
            } else {
                String::new()
            },
            self.build_profile,
            match p.store {
                "postgres" => format!(
                    "PostgreSQL store (a throwaway database on the local server), {} replica(s) sharing it, \
                     workers spread over them",
                    p.replicas
                ),
                _ => "SQLite store in a temporary directory".to_owned(),
            },
            p.password_authentication,
            p.scram_iterations
                .map(|n| format!(", scram_iterations = {n}"))
                .unwrap_or_default(),
        );
        if let Some(seeded) = &self.seeded {
            let _ = writeln!(
                out,
                "Store seeded with {} live leases in {:.1} s. `LIST {}`: {} keys, p50 {} ms, p99 {} ms \
                 ({} requests one after the other).\n",
                seeded.leases,
                seeded.seed_seconds,
                seeded.list_page.path,
                seeded.list_page.keys,
                ms(seeded.list_page.p50_ms),
                ms(seeded.list_page.p99_ms),
                seeded.list_page.requests,
            );
        }
        for engine in self.engines.values() {
            engine.markdown(&mut out, p);
        }
        out
    }
}

impl EngineReport {
    fn markdown(&self, out: &mut String, p: &Parameters) {
        let _ = writeln!(
            out,
            "### {} ({}, 127.0.0.1)\n",
            self.label, self.server_version
        );
        let _ = writeln!(out, "| operation | Lessor p50 ms | direct p50 ms | ratio p50 | Lessor p95 ms | direct p95 ms | ratio p95 | ratio mean |");
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
        for (name, c) in [
            ("issue (create user)", &self.issue),
            ("revoke (drop user)", &self.revoke),
        ] {
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {:.2}x | {} | {} | {:.2}x | {:.2}x |",
                ms(c.lessor.p50_ms),
                ms(c.direct.p50_ms),
                c.p50_latency_ratio,
                ms(c.lessor.p95_ms),
                ms(c.direct.p95_ms),
                c.p95_latency_ratio,
                c.mean_latency_ratio
            );
        }
        let _ = writeln!(
            out,
            "\n| workers | Lessor pairs/s | direct pairs/s | Lessor / direct (min-max over {} rounds) | issue p50 ms L / D | issue p99 ms L / D | revoke p50 ms L / D | revoke p99 ms L / D |\n|---|---|---|---|---|---|---|---|",
            p.rounds
        );
        for level in &self.throughput {
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.1} | {:.2} ({:.2}-{:.2}) | {} / {} | {} / {} | {} / {} | {} / {} |",
                level.concurrency,
                level.lessor_pairs_per_sec,
                level.direct_pairs_per_sec,
                level.pairs_ratio,
                level.min_pairs_ratio,
                level.max_pairs_ratio,
                ms(level.issue.lessor.p50_ms),
                ms(level.issue.direct.p50_ms),
                ms(level.issue.lessor.p99_ms),
                ms(level.issue.direct.p99_ms),
                ms(level.revoke.lessor.p50_ms),
                ms(level.revoke.direct.p50_ms),
                ms(level.revoke.lessor.p99_ms),
                ms(level.revoke.direct.p99_ms),
            );
        }
        let _ = writeln!(
            out,
            "\nReaper: an expired lease's user was gone {} ms after expiry at p50, {} ms at p95, {} ms at worst \
             (polled every 10 ms; includes the poll interval).\n",
            ms(self.reaper.p50_ms),
            ms(self.reaper.p95_ms),
            ms(self.reaper.max_ms)
        );
        for floor in &self.floor {
            floor.markdown(out, p);
        }
        if let Some(bulk) = &self.bulk {
            bulk.markdown(out);
        }
        if let Some(warm_pool) = &self.warm_pool {
            warm_pool.markdown(out);
        }
    }
}

impl FloorLevel {
    fn markdown(&self, out: &mut String, p: &Parameters) {
        let _ = writeln!(
            out,
            "Issuance against the floor (password_authentication = {}, scram_iterations = {}; {} workers x {} creations per block, \
             {FLOOR_ROUNDS} interleaved rounds; users dropped after each block's clock stops):\n",
            p.password_authentication,
            p.scram_iterations.unwrap_or_default(),
            self.concurrency,
            p.pairs_per_worker,
        );
        let _ = writeln!(
            out,
            "| round | Lessor creds/s | Lessor with \"password\" creds/s | same SQL direct creds/s | floor (password, 4,096 by the server) creds/s | Lessor / floor | Lessor / Lessor with \"password\" | direct / floor | Lessor / direct |\n|---|---|---|---|---|---|---|---|---|"
        );
        for (index, round) in self.rounds.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x | {:.2}x | {:.2}x | {:.2}x |",
                index + 1,
                round.lessor_creds_per_sec,
                round.lessor_password_creds_per_sec,
                round.direct_creds_per_sec,
                round.floor_creds_per_sec,
                round.lessor_floor_ratio,
                round.lessor_password_ratio,
                round.direct_floor_ratio,
                round.direct_ratio,
            );
        }
        let spread_of = |pick: fn(&FloorRound) -> f64| {
            let (min, median, max) = spread(&self.rounds.iter().map(pick).collect::<Vec<_>>());
            format!("{min:.2}x / {median:.2}x / {max:.2}x")
        };
        let _ = writeln!(
            out,
            "\nMin / median / max: Lessor / floor {}; Lessor / Lessor with \"password\" {}; direct / floor {}; Lessor / direct {}.\n",
            spread_of(|r| r.lessor_floor_ratio),
            spread_of(|r| r.lessor_password_ratio),
            spread_of(|r| r.direct_floor_ratio),
            spread_of(|r| r.direct_ratio),
        );
    }
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
            token: target.client_token.clone(),
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
