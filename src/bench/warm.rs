//! `lessor bench --warm-pool N`: issuance from a role's warm pool (issue 10, target 4). Per
//! engine that can keep a pool:
//!
//! 1. **round trip**: Lessor's own HTTP round trip, `GET sys/health` and
//!    `GET auth/token/lookup-self` (a token check), [`ROUND_TRIPS`] each, one after the other.
//! 2. **without a pool**: the same number of issues as step 3, one at a time, on a role of the
//!    same statements with no pool (each credential revoked after the clock stops).
//! 3. **from the pool**: `warm_pool_size = N` on the measured role, then (once the replica
//!    answering has N ready, polled on the role's `warm_pool_ready`) issues one at a time, at most
//!    N of them (while the pool lasts; it refills in the background meanwhile). How many came from
//!    the pool is counted by the pool itself.
//! 4. **burst**: once the pool is full again, [`BURST_REQUESTS`] issues at concurrency
//!    [`BURST_WORKERS`], each timed, with how many came from the pool (the rest fell back to a
//!    creation when the pool ran dry before the refill caught up).
//!
//! Every credential is revoked at the end (revoke-prefix, which drops the pool too), and the role
//! is deleted.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use serde_json::json;

use super::{bench_error, progress, round_to, summarize, Engine, Latency, Target};
use crate::error::Result;

/// Requests per round-trip probe.
const ROUND_TRIPS: usize = 200;

/// Requests in the burst, and how many are in flight at once (issue 10's figures).
const BURST_REQUESTS: usize = 1_000;
const BURST_WORKERS: usize = 32;

/// The longest the pool may take to fill before the measurement gives up.
const FILL_LIMIT: Duration = Duration::from_secs(600);

/// Issuance from a warm pool against Lessor's round trip and issuance without a pool.
#[derive(Debug, Serialize)]
pub struct WarmPool {
    /// The role's `warm_pool_size`.
    pub pool_size: usize,
    /// Until the pool was first full, from the role write.
    pub fill_seconds: f64,
    /// `GET sys/health`, one at a time.
    pub health: Latency,
    /// `GET auth/token/lookup-self`, one at a time.
    pub lookup_self: Latency,
    /// Issues one at a time on a role without a pool.
    pub without_pool: Latency,
    /// Issues one at a time from the full pool.
    pub from_pool: Latency,
    /// How many of those came from the pool.
    pub from_pool_count: usize,
    pub from_pool_requests: usize,
    /// From-pool issuance p50 minus `GET sys/health` p50 (the target: within 1.5 ms).
    pub p50_over_health_ms: f64,
    pub burst: Burst,
}

/// [`BURST_REQUESTS`] issues at concurrency [`BURST_WORKERS`], starting from a full pool.
#[derive(Debug, Serialize)]
pub struct Burst {
    pub requests: usize,
    pub workers: usize,
    pub from_pool: usize,
    pub seconds: f64,
    pub issues_per_sec: f64,
    pub latency: Latency,
}

/// Times `count` calls of `call`, one after the other.
async fn time_each<F, Fut>(count: usize, mut call: F) -> Result<Vec<Duration>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        call().await?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

/// Polls the role's read until the answering replica has `size` users ready.
async fn wait_until_full(target: &Target, role: &str, size: usize) -> Result<Duration> {
    let started = Instant::now();
    let mut reported = Instant::now();
    loop {
        let read = target
            .call(
                reqwest::Method::GET,
                &format!("database/roles/{role}"),
                None,
            )
            .await?;
        let ready = read["data"]["warm_pool_ready"].as_u64().unwrap_or(0) as usize;
        if ready >= size {
            return Ok(started.elapsed());
        }
        if started.elapsed() > FILL_LIMIT {
            return Err(bench_error(
                "warm pool",
                format!("{ready} of {size} ready after {} s", FILL_LIMIT.as_secs()),
            ));
        }
        if reported.elapsed() > Duration::from_secs(5) {
            progress(format!("warm pool: {ready} of {size} ready"));
            reported = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the measurement on `engine`'s connection `slug` (already configured); `None` when the
/// engine cannot keep a pool (the role write is refused).
pub(super) async fn measure(
    target: &Target,
    engine: Engine,
    slug: &str,
    pool_size: usize,
) -> Result<Option<WarmPool>> {
    let label = engine.label();
    let warm = format!("{slug}-warm");
    let cold = format!("{slug}-cold");
    let role_body = |size: usize| {
        json!({ "db_name": slug, "creation_statements": engine.creation(), "default_ttl": "1h",
                "max_ttl": "1h", "warm_pool_size": size })
    };
    target
        .call(
            reqwest::Method::POST,
            &format!("database/roles/{cold}"),
            Some(role_body(0)),
        )
        .await?;
    if let Err(error) = target
        .call(
            reqwest::Method::POST,
            &format!("database/roles/{warm}"),
            Some(role_body(pool_size)),
        )
        .await
    {
        progress(format!("{label}: no warm pool ({error})"));
        return Ok(None);
    }
    progress(format!("{label}: warm pool of {pool_size}, filling"));
    let filled = wait_until_full(target, &warm, pool_size).await?;
    let fill_seconds = round_to(filled.as_secs_f64(), 2);

    progress(format!(
        "{label}: round trips ({ROUND_TRIPS} health, {ROUND_TRIPS} lookup-self)"
    ));
    let mut health = time_each(ROUND_TRIPS, || async {
        target
            .call(reqwest::Method::GET, "sys/health", None)
            .await
            .map(drop)
    })
    .await?;
    let mut lookup_self = time_each(ROUND_TRIPS, || async {
        target
            .client_call(reqwest::Method::GET, "auth/token/lookup-self", None)
            .await
            .map(drop)
    })
    .await?;

    let requests = pool_size;
    progress(format!(
        "{label}: {requests} issues one at a time without a pool, then from the pool"
    ));
    let mut without_pool =
        time_each(requests, || async { target.issue(&cold).await.map(drop) }).await?;
    revoke_all(target, &cold).await?;
    let issued_before = target.leases.warm_pool().issued();
    let mut from_pool =
        time_each(requests, || async { target.issue(&warm).await.map(drop) }).await?;
    let from_pool_count = (target.leases.warm_pool().issued() - issued_before) as usize;
    revoke_all(target, &warm).await?;

    progress(format!(
        "{label}: burst of {BURST_REQUESTS} issues at concurrency {BURST_WORKERS}, from a full pool"
    ));
    wait_until_full(target, &warm, pool_size).await?;
    let issued_before = target.leases.warm_pool().issued();
    let burst_started = Instant::now();
    let mut burst_samples: Vec<Duration> = futures::stream::iter(0..BURST_REQUESTS)
        .map(|_| async {
            let started = Instant::now();
            target.issue(&warm).await.map(|_| started.elapsed())
        })
        .buffer_unordered(BURST_WORKERS)
        .collect::<Vec<Result<Duration>>>()
        .await
        .into_iter()
        .collect::<Result<Vec<Duration>>>()?;
    let burst_elapsed = burst_started.elapsed();
    let burst_from_pool = (target.leases.warm_pool().issued() - issued_before) as usize;
    revoke_all(target, &warm).await?;
    for role in [&warm, &cold] {
        target
            .call(
                reqwest::Method::DELETE,
                &format!("database/roles/{role}"),
                None,
            )
            .await?;
    }

    let health = summarize(&mut health);
    let from_pool = summarize(&mut from_pool);
    Ok(Some(WarmPool {
        pool_size,
        fill_seconds,
        p50_over_health_ms: round_to(from_pool.p50_ms - health.p50_ms, 3),
        health,
        lookup_self: summarize(&mut lookup_self),
        without_pool: summarize(&mut without_pool),
        from_pool,
        from_pool_count,
        from_pool_requests: requests,
        burst: Burst {
            requests: BURST_REQUESTS,
            workers: BURST_WORKERS,
            from_pool: burst_from_pool,
            seconds: round_to(burst_elapsed.as_secs_f64(), 3),
            issues_per_sec: super::per_sec(BURST_REQUESTS, burst_elapsed),
            latency: summarize(&mut burst_samples),
        },
    }))
}

/// Revokes every lease of `role` (not timed); the role's pool is dropped and refills.
async fn revoke_all(target: &Target, role: &str) -> Result<()> {
    target
        .call(
            reqwest::Method::PUT,
            &format!("sys/leases/revoke-prefix/database/creds/{role}"),
            None,
        )
        .await
        .map(drop)
}

impl WarmPool {
    pub(super) fn markdown(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "Warm pool of {} (filled in {:.1} s), issues one at a time ({} requests; {} from the pool):\n",
            self.pool_size, self.fill_seconds, self.from_pool_requests, self.from_pool_count
        );
        let _ = writeln!(
            out,
            "| request | p50 ms | p99 ms | mean ms |\n|---|---|---|---|"
        );
        for (name, latency) in [
            ("`GET sys/health`", &self.health),
            ("`GET auth/token/lookup-self`", &self.lookup_self),
            ("issue, no pool", &self.without_pool),
            ("issue from the pool", &self.from_pool),
        ] {
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} |",
                super::ms(latency.p50_ms),
                super::ms(latency.p99_ms),
                super::ms(latency.mean_ms)
            );
        }
        let _ = writeln!(
            out,
            "\nFrom-pool issuance p50 is {} ms over `sys/health` p50 (target: within 1.5 ms). Burst of {} at \
             concurrency {}: {} from the pool, {:.1} issues/s, p50 {} ms, p99 {} ms.\n",
            super::ms(self.p50_over_health_ms),
            self.burst.requests,
            self.burst.workers,
            self.burst.from_pool,
            self.burst.issues_per_sec,
            super::ms(self.burst.latency.p50_ms),
            super::ms(self.burst.latency.p99_ms),
        );
    }
}
