//! `lessor bench --bulk N`: bulk revocation through Lessor against the engine's plain drop
//! (issue 10, target 2). Per engine:
//!
//! 1. **revoke-prefix**: N credentials issued through Lessor under one role (setup, not timed,
//!    [`SETUP_WORKERS`] requests at a time), then one
//!    `PUT sys/leases/revoke-prefix/database/creds/<role>`, timed until it answers. Every user
//!    must be gone then; if some are not, the clock runs on until the last one is (polled).
//! 2. **direct drop**: N users created directly with the same creation SQL (setup, not timed),
//!    then dropped with the engine's plain drop statement alone ([`DirectSession::drop_user`]:
//!    PostgreSQL `DROP ROLE IF EXISTS`, MariaDB `DROP USER IF EXISTS`) on [`CONNECTIONS`]
//!    connections, timed: the baseline of both ratios. The latency probe of step 3 runs
//!    meanwhile too: what the same drop work does to the API when Lessor takes no part in it.
//! 3. **reaper backlog**: N credentials issued in batches, each batch with the TTL (whole seconds)
//!    that makes it fall due at one planned moment a few seconds after the setup ends; the clock
//!    runs from the earliest possible expiry until the database has no user of the role left
//!    (polled every [`POLL_EVERY`]). Meanwhile one client looks up one live lease
//!    (`PUT sys/leases/lookup`), one request after the other, [`PROBE_GAP`] apart; the same client
//!    measured the same while idle, between the end of the setup and the expiry.
//!
//! Lessor's connection for this holds [`CONNECTIONS`] database connections, as the direct side
//! does. Every user the measurement makes is named `v-bulk-<tag>-...` (the tag is random per run);
//! whatever the outcome, any user left with that prefix is dropped at the end.
//!
//! [`DirectSession::drop_user`]: lessor_plugin::DirectSession::drop_user

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use lessor_plugin::{PasswordAuthentication, Secret};
use rand::Rng;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{bench_error, per_sec, progress, ratio, round_to, summarize, Direct, Engine, Target};
use crate::error::{Error, Result};

/// Database connections on each side: Lessor's connection pool, and the direct sessions that drop
/// users (issue 10's baseline: "10,000 direct DROP ROLE IF EXISTS on 4 connections").
pub const CONNECTIONS: usize = 4;

/// Issue requests in flight at once while setting up (not timed).
const SETUP_WORKERS: usize = 8;

/// The backlog's TTL while it is issued: long enough that none falls due before the store moves
/// them all to one expiry.
const BACKLOG_TTL: Duration = Duration::from_secs(3600);

/// How often the database's count of the role's users is polled.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// The pause between two lookups of the latency probe, so that it samples the API rather than
/// loading it.
const PROBE_GAP: Duration = Duration::from_millis(10);

/// The backlog falls due this long after its setup: the idle latency is measured meanwhile.
const IDLE_WINDOW: Duration = Duration::from_secs(3);

/// A progress line at most this often during a long wait.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Bulk revocation of `users` users, through Lessor and with the engine's plain drop.
#[derive(Debug, Serialize)]
pub struct Bulk {
    /// Users revoked in each of the three measurements.
    pub users: usize,
    /// Database connections on each side.
    pub connections: usize,
    /// What every username of the measurement starts with (random per run).
    pub username_prefix: String,
    pub revoke_prefix: RevokePrefix,
    pub direct_drop: DirectDrop,
    pub reaper_backlog: ReaperBacklog,
    /// revoke-prefix users/s over direct users/s (1.0 is free; higher is better).
    pub revoke_prefix_ratio: f64,
    /// The reaper's users/s over direct users/s (1.0 is free; higher is better).
    pub reaper_drain_ratio: f64,
    /// Lookup latency during the drain over idle (1.0 is unaffected; lower is better).
    pub drain_p50_latency_ratio: f64,
    pub drain_p99_latency_ratio: f64,
    /// Lookup p99 during the reaper's drain over during the direct drop: what Lessor's drain
    /// does to its API beyond what the database's own drop work does to the machine (1.0 is
    /// no more; lower is better).
    pub drain_vs_direct_drop_p99_latency_ratio: f64,
}

/// One `PUT sys/leases/revoke-prefix/...` of every lease of a role.
#[derive(Debug, Serialize)]
pub struct RevokePrefix {
    pub path: String,
    /// Issuing the users through Lessor (setup, not timed).
    pub setup_seconds: f64,
    /// Until the request answered.
    pub answer_seconds: f64,
    /// Users of the role still in the database when it answered (0 while revoke-prefix is
    /// synchronous).
    pub users_left_at_answer: usize,
    /// Until the last user was gone: the answer, or the poll that found none left.
    pub seconds: f64,
    pub users_per_sec: f64,
}

/// The baseline: the engine's plain drop statement, user by user, on [`CONNECTIONS`] sessions.
#[derive(Debug, Serialize)]
pub struct DirectDrop {
    /// Creating the users directly (setup, not timed).
    pub setup_seconds: f64,
    pub seconds: f64,
    pub users_per_sec: f64,
    /// The latency probe while the users are dropped: Lessor is idle but for the probe, so
    /// this is what the drop work alone, on the same cores, does to a request.
    pub probe: ProbeLatency,
}

/// The reaper revoking a backlog of leases that fell due together.
#[derive(Debug, Serialize)]
pub struct ReaperBacklog {
    /// Issuing the users through Lessor (setup, not timed).
    pub setup_seconds: f64,
    /// From the moment the whole backlog fell due until the database had no user of the role
    /// left.
    pub drain_seconds: f64,
    pub users_per_sec: f64,
    /// The latency probe between the setup and the expiry.
    pub idle: ProbeLatency,
    /// The latency probe from the expiry until the last user was gone.
    pub drain: ProbeLatency,
}

/// `PUT sys/leases/lookup` of one live lease, one request after the other, [`PROBE_GAP`] apart.
#[derive(Debug, Serialize)]
pub struct ProbeLatency {
    pub requests: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    /// `GET sys/health` (no token, no store) right after each lookup, so with the process
    /// awake: the lookup comes after [`PROBE_GAP`] of quiet, and on this machine waking idle
    /// threads costs a request about a millisecond, drain or not (measured with a client in
    /// another process: `sys/health` 1.6 ms p50 at 10 ms apart, 0.24 ms back to back). The
    /// two together tell what the drain does to a request from what being idle does.
    pub health_p50_ms: f64,
    pub health_p99_ms: f64,
}

impl Direct {
    async fn count_users_with_prefix(&mut self, prefix: &str) -> Result<usize> {
        self.0
            .count_users_with_prefix(prefix)
            .await
            .map_err(|e| bench_error("count users", e))
    }

    async fn drop_user(&mut self, username: &str) -> Result<()> {
        self.0
            .drop_user(username)
            .await
            .map_err(|e| bench_error("direct drop", e))
    }

    /// Fails unless exactly `expected` users' names start with `prefix`.
    async fn expect_users(&mut self, prefix: &str, expected: usize) -> Result<()> {
        let found = self.count_users_with_prefix(prefix).await?;
        if found == expected {
            Ok(())
        } else {
            Err(bench_error(
                "bulk",
                format!("{found} users named {prefix}* in the database, expected {expected}"),
            ))
        }
    }
}

/// Every bulk measurement for one engine; then any user the measurement made that is still
/// there is dropped, whatever the outcome (and is an error if the measurement succeeded).
pub(super) async fn measure(
    target: &Target,
    engine: Engine,
    url: &Secret,
    mode: PasswordAuthentication,
    users: usize,
) -> Result<Bulk> {
    let tag: String = rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(5)
        .map(|b| char::from(b).to_ascii_lowercase())
        .collect();
    let prefix = format!("v-bulk-{tag}-");
    let measured = run(target, engine, url, mode, users, &prefix).await;
    let swept = sweep(engine, url, mode, &prefix).await;
    match (measured, swept) {
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        (Ok(_), Ok(left)) if left > 0 => Err(bench_error(
            "bulk",
            format!("{left} users named {prefix}* were left behind (now dropped)"),
        )),
        (Ok(bulk), Ok(_)) => Ok(bulk),
    }
}

/// Drops every user whose name starts with `prefix` with the engine's built-in revocation;
/// returns how many there were.
async fn sweep(
    engine: Engine,
    url: &Secret,
    mode: PasswordAuthentication,
    prefix: &str,
) -> Result<usize> {
    let mut session = Direct::connect(engine, url, mode).await?;
    let left = session
        .0
        .users_with_prefix(prefix)
        .await
        .map_err(|e| bench_error("list users", e))?;
    if !left.is_empty() {
        progress(format!(
            "{}: dropping {} users named {prefix}* left by the bulk measurement",
            engine.label(),
            left.len()
        ));
    }
    for user in &left {
        session.delete(user).await?;
    }
    Ok(left.len())
}

async fn run(
    target: &Target,
    engine: Engine,
    url: &Secret,
    mode: PasswordAuthentication,
    users: usize,
    prefix: &str,
) -> Result<Bulk> {
    let label = engine.label();
    let connection = format!("{}-bulk", engine.slug());
    let mut settings = json!({
        "plugin_name": engine.0.plugin_name(),
        "connection_url": url.expose(),
        "allowed_roles": "*",
        "max_open_connections": CONNECTIONS,
    });
    if let Some(iterations) = mode.generated_iterations() {
        settings["password_authentication"] = json!(mode.name());
        settings["scram_iterations"] = json!(iterations);
    }
    target
        .call(
            reqwest::Method::POST,
            &format!("database/config/{connection}"),
            Some(settings),
        )
        .await?;
    let mut watcher = Direct::connect(engine, url, mode).await?;

    // 1. revoke-prefix.
    let prefix_role = Role {
        name: connection.clone(),
        connection: connection.clone(),
        prefix: format!("{prefix}p-"),
    };
    prefix_role.write(target, engine, 3_600).await?;
    progress(format!(
        "{label}: bulk revocation of {users} users: issuing them through Lessor under role {} \
         ({SETUP_WORKERS} requests at a time; setup, not timed)",
        prefix_role.name
    ));
    let started = Instant::now();
    prefix_role.issue(target, users, Some(label)).await?;
    let prefix_setup = started.elapsed();
    watcher.expect_users(&prefix_role.prefix, users).await?;
    let path = format!(
        "sys/leases/revoke-prefix/database/creds/{}",
        prefix_role.name
    );
    progress(format!("{label}: timing PUT {path} of {users} leases"));
    let started = Instant::now();
    target.call(reqwest::Method::PUT, &path, None).await?;
    let answered = started.elapsed();
    let left_at_answer = watcher.count_users_with_prefix(&prefix_role.prefix).await?;
    let gone = if left_at_answer == 0 {
        answered
    } else {
        progress(format!(
            "{label}: revoke-prefix answered with {left_at_answer} users still there; waiting for them"
        ));
        wait_until_gone(&mut watcher, label, &prefix_role.prefix, started, users).await?
    };
    let revoke_prefix = RevokePrefix {
        path,
        setup_seconds: seconds(prefix_setup),
        answer_seconds: seconds(answered),
        users_left_at_answer: left_at_answer,
        seconds: seconds(gone),
        users_per_sec: per_sec(users, gone),
    };
    progress(format!(
        "{label}: revoke-prefix: {users} users gone in {:.2} s ({:.1} users/s)",
        revoke_prefix.seconds, revoke_prefix.users_per_sec
    ));

    // 2. The direct side, with the lookup probe on a live lease of the first role.
    let (probe_lease, _) = target.issue(&prefix_role.name).await?;
    let direct_drop = direct_drop(
        engine,
        url,
        mode,
        users,
        &format!("{prefix}d-"),
        (target, &probe_lease),
    )
    .await?;
    watcher.expect_users(&format!("{prefix}d-"), 0).await?;

    // 3. The reaper's backlog, with the same probe.
    let backlog_role = Role {
        name: format!("{}-backlog", engine.slug()),
        connection,
        prefix: format!("{prefix}r-"),
    };
    let reaper_backlog = reaper_backlog(
        target,
        engine,
        &mut watcher,
        &backlog_role,
        users,
        &probe_lease,
    )
    .await?;
    target.revoke(&probe_lease).await?;

    let direct = direct_drop.users_per_sec;
    Ok(Bulk {
        users,
        connections: CONNECTIONS,
        username_prefix: prefix.to_owned(),
        revoke_prefix_ratio: ratio(revoke_prefix.users_per_sec, direct),
        reaper_drain_ratio: ratio(reaper_backlog.users_per_sec, direct),
        drain_p50_latency_ratio: ratio(reaper_backlog.drain.p50_ms, reaper_backlog.idle.p50_ms),
        drain_p99_latency_ratio: ratio(reaper_backlog.drain.p99_ms, reaper_backlog.idle.p99_ms),
        drain_vs_direct_drop_p99_latency_ratio: ratio(
            reaper_backlog.drain.p99_ms,
            direct_drop.probe.p99_ms,
        ),
        revoke_prefix,
        direct_drop,
        reaper_backlog,
    })
}

/// A role of the bulk connection whose usernames start with `prefix`.
struct Role {
    name: String,
    connection: String,
    prefix: String,
}

impl Role {
    /// Writes the role with this TTL (and max TTL), in whole seconds.
    async fn write(&self, target: &Target, engine: Engine, ttl_seconds: u64) -> Result<()> {
        target
            .call(
                reqwest::Method::POST,
                &format!("database/roles/{}", self.name),
                Some(json!({
                    "db_name": self.connection,
                    "creation_statements": engine.creation(),
                    "default_ttl": ttl_seconds,
                    "max_ttl": ttl_seconds,
                    "username_template": format!("{}{{{{random}}}}", self.prefix),
                })),
            )
            .await
            .map(drop)
    }

    /// Issues `count` credentials, [`SETUP_WORKERS`] requests at a time, checking each
    /// username's prefix; with `report` (a label), a progress line every tenth.
    async fn issue(&self, target: &Target, count: usize, report: Option<&str>) -> Result<()> {
        let done = AtomicUsize::new(0);
        let every = (count / 10).max(1);
        let started = Instant::now();
        futures::stream::iter(0..count)
            .map(|_| target.issue(&self.name))
            .buffer_unordered(SETUP_WORKERS)
            .try_for_each(|(_, username)| {
                let outcome = if username.starts_with(&self.prefix) {
                    let issued = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if let Some(label) = report.filter(|_| issued % every == 0) {
                        progress(format!(
                            "{label}: issued {issued} of {count} ({:.1} s)",
                            started.elapsed().as_secs_f64()
                        ));
                    }
                    Ok(())
                } else {
                    Err(bench_error(
                        "bulk",
                        format!(
                            "role {} issued a user whose name does not start with {}",
                            self.name, self.prefix
                        ),
                    ))
                };
                futures::future::ready(outcome)
            })
            .await
    }
}

/// Creates `users` users named `prefix...` directly on [`CONNECTIONS`] sessions (setup), then
/// times dropping them with the engine's plain drop on the same sessions, with the latency
/// probe looking up `probe`'s lease meanwhile.
async fn direct_drop(
    engine: Engine,
    url: &Secret,
    mode: PasswordAuthentication,
    users: usize,
    prefix: &str,
    (target, probe_lease): (&Target, &str),
) -> Result<DirectDrop> {
    let label = engine.label();
    progress(format!(
        "{label}: creating {users} users directly on {CONNECTIONS} connections (setup, not timed)"
    ));
    let sessions = Direct::connect_many(engine, url, mode, CONNECTIONS).await?;
    let statements = engine.creation();
    let template = format!("{prefix}{{{{random}}}}");
    let started = Instant::now();
    let mut creators = Vec::new();
    for (index, mut session) in sessions.into_iter().enumerate() {
        let share = users / CONNECTIONS + usize::from(index < users % CONNECTIONS);
        let (statements, template) = (statements.clone(), template.clone());
        creators.push(tokio::spawn(async move {
            let mut names = Vec::with_capacity(share);
            for _ in 0..share {
                names.push(
                    session
                        .create_named(engine, &statements, Some(&template))
                        .await?,
                );
            }
            Ok::<_, Error>((session, names))
        }));
    }
    let mut created = Vec::new();
    for creator in creators {
        created.push(creator.await.map_err(|e| bench_error("worker", e))??);
    }
    let setup = started.elapsed();
    progress(format!(
        "{label}: timing the engine's plain drop of {users} users on {CONNECTIONS} connections"
    ));
    let probe = Probe::start(target, probe_lease);
    let started = Instant::now();
    let mut droppers = Vec::new();
    for (mut session, names) in created {
        droppers.push(tokio::spawn(async move {
            for name in &names {
                session.drop_user(name).await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for dropper in droppers {
        dropper.await.map_err(|e| bench_error("worker", e))??;
    }
    let elapsed = started.elapsed();
    let direct = DirectDrop {
        setup_seconds: seconds(setup),
        seconds: seconds(elapsed),
        users_per_sec: per_sec(users, elapsed),
        probe: probe.finish().await?,
    };
    progress(format!(
        "{label}: direct drop: {users} users in {:.2} s ({:.1} users/s); lookup p99 {:.2} ms meanwhile",
        direct.seconds, direct.users_per_sec, direct.probe.p99_ms
    ));
    Ok(direct)
}

/// Issues `users` credentials of `role` with an hour's TTL (setup), then makes them all fall due
/// at one moment [`IDLE_WINDOW`] later through the store, probes the API while idle, and times the
/// reaper's drain from that moment with the probe running. Through the API alone the backlog
/// could not fall due at once: a TTL counts from each lease's own issue, in whole seconds.
async fn reaper_backlog(
    target: &Target,
    engine: Engine,
    watcher: &mut Direct,
    role: &Role,
    users: usize,
    probe_lease: &str,
) -> Result<ReaperBacklog> {
    let label = engine.label();
    progress(format!(
        "{label}: reaper backlog of {users} users: issuing them through Lessor under role {} \
         with an hour's TTL (setup, not timed)",
        role.name
    ));
    let started = Instant::now();
    role.write(target, engine, BACKLOG_TTL.as_secs()).await?;
    role.issue(target, users, Some(label)).await?;
    let setup = started.elapsed();
    watcher.expect_users(&role.prefix, users).await?;

    let window = chrono::Duration::from_std(IDLE_WINDOW)
        .map_err(|e| bench_error("bulk", format!("idle window: {e}")))?;
    let (first_expiry, due_at) = (Instant::now() + IDLE_WINDOW, chrono::Utc::now() + window);
    let moved = target
        .store
        .expire_role_leases_at(&role.name, due_at)
        .await?;
    if moved != users as u64 {
        return Err(bench_error(
            "bulk",
            format!("{moved} of the backlog's {users} leases were active to move to one expiry"),
        ));
    }
    // The reaper sleeps towards the hour-long expiries; tell it about the earlier one.
    target.leases.reaper_wake().due_at(due_at);

    progress(format!(
        "{label}: latency probe while idle, until the backlog falls due in {:.1} s",
        first_expiry
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
    ));
    let probe = Probe::start(target, probe_lease);
    tokio::time::sleep_until((first_expiry - Duration::from_millis(100)).into()).await;
    let idle = probe.finish().await?;
    tokio::time::sleep_until(first_expiry.into()).await;

    progress(format!(
        "{label}: {users} leases due; timing the reaper's drain, with the latency probe running"
    ));
    let probe = Probe::start(target, probe_lease);
    let gone = wait_until_gone(watcher, label, &role.prefix, first_expiry, users).await?;
    let drain = probe.finish().await?;
    let backlog = ReaperBacklog {
        setup_seconds: seconds(setup),
        drain_seconds: seconds(gone),
        users_per_sec: per_sec(users, gone),
        idle,
        drain,
    };
    progress(format!(
        "{label}: reaper drain: {users} users gone {:.2} s after the first expiry ({:.1} users/s); \
         lookup p99 {:.2} ms idle, {:.2} ms during the drain",
        backlog.drain_seconds, backlog.users_per_sec, backlog.idle.p99_ms, backlog.drain.p99_ms
    ));
    Ok(backlog)
}

/// Polls the count of users named `prefix...` every [`POLL_EVERY`] until none is left; returns
/// the time from `since` to the poll that found none. Gives up after a minute plus 100 ms per
/// user.
async fn wait_until_gone(
    watcher: &mut Direct,
    label: &str,
    prefix: &str,
    since: Instant,
    users: usize,
) -> Result<Duration> {
    let limit = Duration::from_secs(60) + Duration::from_millis(100) * users as u32;
    let mut next_report = Instant::now() + REPORT_EVERY;
    loop {
        let left = watcher.count_users_with_prefix(prefix).await?;
        let now = Instant::now();
        if left == 0 {
            return Ok(now.saturating_duration_since(since));
        }
        if now.saturating_duration_since(since) > limit {
            return Err(bench_error(
                "bulk",
                format!(
                    "{left} users named {prefix}* still there {:.0} s later",
                    limit.as_secs_f64()
                ),
            ));
        }
        if now >= next_report {
            progress(format!(
                "{label}: {left} users left after {:.1} s",
                now.saturating_duration_since(since).as_secs_f64()
            ));
            next_report = now + REPORT_EVERY;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// A client looking up one lease, one request after the other, until stopped.
struct Probe {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<ProbeSamples>>,
}

/// The probe's request times, by request.
#[derive(Default)]
struct ProbeSamples {
    lookup: Vec<Duration>,
    health: Vec<Duration>,
}

/// Sends a probe request and reads its whole answer; how long that took, or an error for any
/// status but success.
async fn timed(request: reqwest::RequestBuilder) -> Result<Duration> {
    let started = Instant::now();
    let response = request
        .send()
        .await
        .map_err(|e| bench_error("lookup probe", e))?;
    let status = response.status();
    response
        .bytes()
        .await
        .map_err(|e| bench_error("lookup probe", e))?;
    if !status.is_success() {
        return Err(bench_error("lookup probe", status));
    }
    Ok(started.elapsed())
}

impl Probe {
    fn start(target: &Target, lease: &str) -> Self {
        let stop = CancellationToken::new();
        let (url, token, body) = (
            format!("{}/v1/sys/leases/lookup", target.base),
            target.client_token.clone(),
            json!({ "lease_id": lease }),
        );
        let health_url = format!("{}/v1/sys/health", target.base);
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut samples = ProbeSamples::default();
            // At least one request, however short the window.
            loop {
                samples.lookup.push(
                    timed(
                        http.put(&url)
                            .header("X-Vault-Token", token.expose())
                            .json(&body),
                    )
                    .await?,
                );
                samples.health.push(timed(http.get(&health_url)).await?);
                tokio::select! {
                    () = stopped.cancelled() => break,
                    () = tokio::time::sleep(PROBE_GAP) => {}
                }
            }
            Ok(samples)
        });
        Self { stop, task }
    }

    async fn finish(mut self) -> Result<ProbeLatency> {
        self.stop.cancel();
        let mut samples = (&mut self.task)
            .await
            .map_err(|e| bench_error("lookup probe", e))??;
        let lookup = summarize(&mut samples.lookup);
        let health = summarize(&mut samples.health);
        Ok(ProbeLatency {
            requests: samples.lookup.len(),
            p50_ms: lookup.p50_ms,
            p99_ms: lookup.p99_ms,
            mean_ms: lookup.mean_ms,
            health_p50_ms: health.p50_ms,
            health_p99_ms: health.p99_ms,
        })
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn seconds(d: Duration) -> f64 {
    round_to(d.as_secs_f64(), 3)
}

impl Bulk {
    /// The engine's bulk section of the Markdown report.
    pub(super) fn markdown(&self, out: &mut String) {
        let backlog = &self.reaper_backlog;
        let _ = writeln!(
            out,
            "Bulk revocation of {} users ({} database connections on each side; setup not timed):\n",
            self.users, self.connections
        );
        let _ = writeln!(
            out,
            "| revocation | setup s | seconds | users/s | Lessor / direct |\n|---|---|---|---|---|"
        );
        let _ = writeln!(
            out,
            "| `PUT {}` (answered in {:.2} s, {} users left then) | {:.2} | {:.2} | {:.1} | {:.2} |",
            self.revoke_prefix.path,
            self.revoke_prefix.answer_seconds,
            self.revoke_prefix.users_left_at_answer,
            self.revoke_prefix.setup_seconds,
            self.revoke_prefix.seconds,
            self.revoke_prefix.users_per_sec,
            self.revoke_prefix_ratio,
        );
        let _ = writeln!(
            out,
            "| reaper backlog, from the moment all of it fell due until the last user was gone | {:.2} | {:.2} | {:.1} | {:.2} |",
            backlog.setup_seconds,
            backlog.drain_seconds,
            backlog.users_per_sec,
            self.reaper_drain_ratio,
        );
        let _ = writeln!(
            out,
            "| direct: the engine's plain drop, user by user | {:.2} | {:.2} | {:.1} | |",
            self.direct_drop.setup_seconds,
            self.direct_drop.seconds,
            self.direct_drop.users_per_sec,
        );
        let _ = writeln!(
            out,
            "\n`PUT sys/leases/lookup` of one live lease, one request after the other, {} ms apart: idle p50 {:.2} ms, p99 {:.2} ms \
             ({} requests); during the drain p50 {:.2} ms, p99 {:.2} ms ({} requests); during / idle: p50 {:.2}x, \
             p99 {:.2}x. `GET sys/health` after each lookup: idle p50 {:.2} ms, p99 {:.2} ms; during the drain \
             p50 {:.2} ms, p99 {:.2} ms. The same probe during the direct drop (Lessor idle but for \
             it): lookup p50 {:.2} ms, p99 {:.2} ms ({} requests), `sys/health` p99 {:.2} ms; the drain's \
             lookup p99 over that: {:.2}x.\n",
            PROBE_GAP.as_millis(),
            backlog.idle.p50_ms,
            backlog.idle.p99_ms,
            backlog.idle.requests,
            backlog.drain.p50_ms,
            backlog.drain.p99_ms,
            backlog.drain.requests,
            self.drain_p50_latency_ratio,
            self.drain_p99_latency_ratio,
            backlog.idle.health_p50_ms,
            backlog.idle.health_p99_ms,
            backlog.drain.health_p50_ms,
            backlog.drain.health_p99_ms,
            self.direct_drop.probe.p50_ms,
            self.direct_drop.probe.p99_ms,
            self.direct_drop.probe.requests,
            self.direct_drop.probe.health_p99_ms,
            self.drain_vs_direct_drop_p99_latency_ratio,
        );
    }
}
