//! `lessor bench --servers FILE`: two servers that speak Vault's API (Lessor and OpenBao, say),
//! each with a role of the same name on the same database, issuing and revoking credentials side
//! by side. `scripts/bench-openbao.sh` starts and configures the servers and writes FILE.
//!
//! At each concurrency level, after one untimed warm-up block per server, each of `rounds`
//! rounds runs one block per server, the order alternating from round to round so drift in the
//! machine hits both alike. In a block, `level` workers each issue `creds_per_worker`
//! credentials (`GET database/creds/<role>`: issuance throughput, and each issue's latency),
//! then the same workers revoke them all (`PUT sys/leases/revoke`: revocation throughput). Ratios
//! are the first server over the second. One load generator, with the same HTTP client, drives
//! both servers, so neither is measured with a cheaper client than the other.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use lessor_plugin::Secret;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    bench_error, build_profile, per_sec, progress, ratio, spread, summarize, Latency, Machine,
};
use crate::error::{Error, Result};

/// What `--servers FILE` holds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServersFile {
    /// Exactly two: the first is measured against the second.
    servers: Vec<ServerEntry>,
    /// What to measure on both: a label (the engine, say) and the role's name.
    roles: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerEntry {
    name: String,
    /// `http://127.0.0.1:8200`: the server's address, without `/v1`.
    address: String,
    /// A file holding a token allowed to read the roles' credentials and revoke leases.
    token_file: PathBuf,
}

/// One server under measurement.
#[derive(Debug, Clone)]
pub struct PeerServer {
    pub name: String,
    pub address: String,
    pub token: Secret,
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Two servers; ratios are the first over the second.
    pub servers: Vec<PeerServer>,
    /// (label, role name): the role exists under that name on both servers.
    pub roles: Vec<(String, String)>,
    /// Worker counts, one level after the other.
    pub concurrency: Vec<usize>,
    /// Credentials each worker issues (and then revokes) per block.
    pub creds_per_worker: usize,
    /// Rounds per level, each one block per server.
    pub rounds: usize,
}

impl PeerOptions {
    /// Reads FILE (see [`ServersFile`]) and the token files it names.
    pub fn from_file(
        path: &Path,
        concurrency: Vec<usize>,
        creds_per_worker: usize,
        rounds: usize,
    ) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("--servers {}: {e}", path.display())))?;
        let file: ServersFile = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("--servers {}: {e}", path.display())))?;
        if file.servers.len() != 2 {
            return Err(Error::Config(format!(
                "--servers {}: expected exactly two servers, found {}",
                path.display(),
                file.servers.len()
            )));
        }
        if file.roles.is_empty() {
            return Err(Error::Config(format!(
                "--servers {}: no roles to measure",
                path.display()
            )));
        }
        let servers = file
            .servers
            .into_iter()
            .map(|entry| {
                let token = std::fs::read_to_string(&entry.token_file).map_err(|e| {
                    Error::Config(format!(
                        "--servers: token file of {} ({}): {e}",
                        entry.name,
                        entry.token_file.display()
                    ))
                })?;
                Ok(PeerServer {
                    name: entry.name,
                    address: entry.address.trim_end_matches('/').to_owned(),
                    token: Secret::new(token.trim().to_owned()),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            servers,
            roles: file.roles.into_iter().collect(),
            concurrency,
            creds_per_worker: creds_per_worker.max(1),
            rounds: rounds.max(1),
        })
    }
}

/// A whole comparison, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct PeerReport {
    /// When the run started, RFC 3339, UTC.
    pub date: String,
    pub machine: Machine,
    /// The build of this load generator (the servers' own builds are the script's business).
    pub build_profile: &'static str,
    pub parameters: PeerParameters,
    /// The two servers' names; every `*_ratio` is the first over the second.
    pub servers: Vec<String>,
    /// Per label (the engine): the role measured and its figures per concurrency level.
    pub roles: BTreeMap<String, PeerRole>,
}

#[derive(Debug, Serialize)]
pub struct PeerParameters {
    pub concurrency: Vec<usize>,
    pub creds_per_worker: usize,
    pub rounds: usize,
}

#[derive(Debug, Serialize)]
pub struct PeerRole {
    pub role: String,
    pub levels: Vec<PeerLevel>,
}

/// One concurrency level on one role.
#[derive(Debug, Serialize)]
pub struct PeerLevel {
    pub concurrency: usize,
    /// Credentials issued (and revoked) in each block.
    pub creds_per_block: usize,
    /// The two servers, in the order of `servers`.
    pub sides: Vec<PeerSide>,
    /// Issuance throughput, first / second: the median of the rounds' ratios (higher is
    /// better for the first).
    pub issue_ratio: f64,
    pub min_issue_ratio: f64,
    pub max_issue_ratio: f64,
    /// Revocation throughput, first / second.
    pub revoke_ratio: f64,
    pub min_revoke_ratio: f64,
    pub max_revoke_ratio: f64,
    /// Latency, first / second (lower is better for the first), over every round.
    pub issue_p50_latency_ratio: f64,
    pub issue_p99_latency_ratio: f64,
    pub revoke_p50_latency_ratio: f64,
    pub revoke_p99_latency_ratio: f64,
}

/// One server at one level.
#[derive(Debug, Serialize)]
pub struct PeerSide {
    pub name: String,
    /// Medians over the rounds.
    pub issue_per_sec: f64,
    pub revoke_per_sec: f64,
    /// Each request's latency, over every round.
    pub issue: Latency,
    pub revoke: Latency,
    pub rounds: Vec<PeerBlock>,
}

/// One block's throughput.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PeerBlock {
    pub issue_per_sec: f64,
    pub revoke_per_sec: f64,
}

/// A block's raw figures.
struct BlockResult {
    issue_per_sec: f64,
    revoke_per_sec: f64,
    issue: Vec<Duration>,
    revoke: Vec<Duration>,
}

/// One worker's HTTP client on one server.
#[derive(Clone)]
struct Worker {
    http: reqwest::Client,
    address: String,
    token: Secret,
}

impl Worker {
    async fn issue(&self, role: &str) -> Result<String> {
        let response = self
            .http
            .get(format!("{}/v1/database/creds/{role}", self.address))
            .header("X-Vault-Token", self.token.expose())
            .send()
            .await
            .map_err(|e| bench_error("creds", e))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        match answer["lease_id"].as_str() {
            Some(lease) if status.is_success() && !lease.is_empty() => Ok(lease.to_owned()),
            _ => Err(bench_error(
                &format!("{}: database/creds/{role}", self.address),
                format!("{status}: {}", answer["errors"]),
            )),
        }
    }

    async fn revoke(&self, lease: &str) -> Result<()> {
        let response = self
            .http
            .put(format!("{}/v1/sys/leases/revoke", self.address))
            .header("X-Vault-Token", self.token.expose())
            .json(&json!({ "lease_id": lease }))
            .send()
            .await
            .map_err(|e| bench_error("revoke", e))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(bench_error(
                &format!("{}: sys/leases/revoke", self.address),
                format!("{status}: {text}"),
            ));
        }
        Ok(())
    }
}

/// Runs the comparison.
pub async fn run(options: &PeerOptions) -> Result<PeerReport> {
    let date = Utc::now();
    let mut roles = BTreeMap::new();
    for (label, role) in &options.roles {
        let mut levels = Vec::new();
        for &level in &options.concurrency {
            levels.push(measure_level(options, label, role, level).await?);
        }
        roles.insert(
            label.clone(),
            PeerRole {
                role: role.clone(),
                levels,
            },
        );
    }
    progress("done");
    Ok(PeerReport {
        date: date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        machine: Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        },
        build_profile: build_profile(),
        parameters: PeerParameters {
            concurrency: options.concurrency.clone(),
            creds_per_worker: options.creds_per_worker,
            rounds: options.rounds,
        },
        servers: options.servers.iter().map(|s| s.name.clone()).collect(),
        roles,
    })
}

async fn measure_level(
    options: &PeerOptions,
    label: &str,
    role: &str,
    level: usize,
) -> Result<PeerLevel> {
    // Each worker keeps its own client (and so its own kept-alive connection) on each server
    // for the whole level.
    let workers: Vec<Vec<Worker>> = options
        .servers
        .iter()
        .map(|server| {
            (0..level)
                .map(|_| Worker {
                    http: reqwest::Client::new(),
                    address: server.address.clone(),
                    token: server.token.clone(),
                })
                .collect()
        })
        .collect();
    for (server, clients) in options.servers.iter().zip(&workers) {
        progress(format!(
            "{label}: {} with {level} workers, warm-up",
            server.name
        ));
        block(clients, role, 1).await?;
    }
    let mut results: Vec<Vec<BlockResult>> = options.servers.iter().map(|_| Vec::new()).collect();
    for round in 0..options.rounds {
        let mut order: Vec<usize> = (0..options.servers.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let result = block(&workers[index], role, options.creds_per_worker).await?;
            progress(format!(
                "{label}: {} with {level} workers, round {}/{}: {:.1} issued/s, {:.1} revoked/s",
                options.servers[index].name,
                round + 1,
                options.rounds,
                result.issue_per_sec,
                result.revoke_per_sec
            ));
            results[index].push(result);
        }
    }
    let per_round = |pick: fn(&BlockResult) -> f64| {
        let values: Vec<f64> = results[0]
            .iter()
            .zip(&results[1])
            .map(|(first, second)| ratio(pick(first), pick(second)))
            .collect();
        spread(&values)
    };
    let (min_issue_ratio, issue_ratio, max_issue_ratio) = per_round(|r| r.issue_per_sec);
    let (min_revoke_ratio, revoke_ratio, max_revoke_ratio) = per_round(|r| r.revoke_per_sec);
    let sides: Vec<PeerSide> = options
        .servers
        .iter()
        .zip(results)
        .map(|(server, blocks)| {
            let (mut issue, mut revoke) = (Vec::new(), Vec::new());
            let mut rounds = Vec::new();
            for block in blocks {
                rounds.push(PeerBlock {
                    issue_per_sec: block.issue_per_sec,
                    revoke_per_sec: block.revoke_per_sec,
                });
                issue.extend(block.issue);
                revoke.extend(block.revoke);
            }
            PeerSide {
                name: server.name.clone(),
                issue_per_sec: spread(&rounds.iter().map(|r| r.issue_per_sec).collect::<Vec<_>>())
                    .1,
                revoke_per_sec: spread(
                    &rounds.iter().map(|r| r.revoke_per_sec).collect::<Vec<_>>(),
                )
                .1,
                issue: summarize(&mut issue),
                revoke: summarize(&mut revoke),
                rounds,
            }
        })
        .collect();
    Ok(PeerLevel {
        concurrency: level,
        creds_per_block: level * options.creds_per_worker,
        issue_ratio,
        min_issue_ratio,
        max_issue_ratio,
        revoke_ratio,
        min_revoke_ratio,
        max_revoke_ratio,
        issue_p50_latency_ratio: ratio(sides[0].issue.p50_ms, sides[1].issue.p50_ms),
        issue_p99_latency_ratio: ratio(sides[0].issue.p99_ms, sides[1].issue.p99_ms),
        revoke_p50_latency_ratio: ratio(sides[0].revoke.p50_ms, sides[1].revoke.p50_ms),
        revoke_p99_latency_ratio: ratio(sides[0].revoke.p99_ms, sides[1].revoke.p99_ms),
        sides,
    })
}

/// One block on one server: every worker issues `per_worker` credentials, then every worker
/// revokes what it issued. What was issued is revoked even when an issue failed, and the
/// failure is reported after.
async fn block(workers: &[Worker], role: &str, per_worker: usize) -> Result<BlockResult> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in workers {
        let (worker, role) = (worker.clone(), role.to_owned());
        tasks.push(tokio::spawn(async move {
            let (mut leases, mut timings) = (Vec::with_capacity(per_worker), Vec::new());
            for _ in 0..per_worker {
                let started = Instant::now();
                match worker.issue(&role).await {
                    Ok(lease) => {
                        timings.push(started.elapsed());
                        leases.push(lease);
                    }
                    Err(error) => return (worker, leases, timings, Some(error)),
                }
            }
            (worker, leases, timings, None)
        }));
    }
    let mut issued = Vec::new();
    let mut failure = None;
    for task in tasks {
        let (worker, leases, timings, error) = task.await.map_err(|e| bench_error("worker", e))?;
        failure = failure.or(error);
        issued.push((worker, leases, timings));
    }
    let issued_count: usize = issued.iter().map(|(_, leases, _)| leases.len()).sum();
    let issue_per_sec = per_sec(issued_count, started.elapsed());

    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut issue_timings = Vec::new();
    for (worker, leases, timings) in issued {
        issue_timings.extend(timings);
        tasks.push(tokio::spawn(async move {
            let mut timings = Vec::with_capacity(leases.len());
            let mut failure = None;
            for lease in leases {
                let started = Instant::now();
                match worker.revoke(&lease).await {
                    Ok(()) => timings.push(started.elapsed()),
                    // Keep going: every lease of the block gets its revocation.
                    Err(error) => failure = failure.or(Some(error)),
                }
            }
            (timings, failure)
        }));
    }
    let mut revoke_timings = Vec::new();
    for task in tasks {
        let (timings, error) = task.await.map_err(|e| bench_error("worker", e))?;
        failure = failure.or(error);
        revoke_timings.extend(timings);
    }
    let revoke_per_sec = per_sec(issued_count, started.elapsed());
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(BlockResult {
        issue_per_sec,
        revoke_per_sec,
        issue: issue_timings,
        revoke: revoke_timings,
    })
}

impl PeerReport {
    /// The comparison as Markdown, for `docs/benchmarks.md`.
    pub fn markdown(&self) -> String {
        let (a, b) = (&self.servers[0], &self.servers[1]);
        let mut out = String::new();
        let date = chrono::DateTime::parse_from_rfc3339(&self.date).map_or_else(
            |_| self.date.clone(),
            |d| d.format("%Y-%m-%d %H:%M").to_string(),
        );
        let _ = writeln!(out, "## {a} against {b}: run of {date} UTC\n");
        let _ = writeln!(
            out,
            "{} cores; {:?} workers x {} credentials per block, {} interleaved rounds per level; load generator: \
             {} build. Each block issues its credentials, then revokes them with the same workers. Ratios are \
             {a} / {b}: above 1 means {a} is faster (for latency, slower).\n",
            self.machine.cores,
            self.parameters.concurrency,
            self.parameters.creds_per_worker,
            self.parameters.rounds,
            self.build_profile,
        );
        for (label, role) in &self.roles {
            let _ = writeln!(out, "### {label} (role {})\n", role.role);
            let _ = writeln!(
                out,
                "| workers | {a} issued/s | {b} issued/s | {a} / {b} issue (min-max) | {a} revoked/s | {b} revoked/s | {a} / {b} revoke (min-max) | issue p50 ms {a} / {b} | issue p99 ms | revoke p50 ms | revoke p99 ms |\n|---|---|---|---|---|---|---|---|---|---|---|"
            );
            for level in &role.levels {
                let (x, y) = (&level.sides[0], &level.sides[1]);
                let _ = writeln!(
                    out,
                    "| {} | {:.1} | {:.1} | {:.2} ({:.2}-{:.2}) | {:.1} | {:.1} | {:.2} ({:.2}-{:.2}) | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
                    level.concurrency,
                    x.issue_per_sec,
                    y.issue_per_sec,
                    level.issue_ratio,
                    level.min_issue_ratio,
                    level.max_issue_ratio,
                    x.revoke_per_sec,
                    y.revoke_per_sec,
                    level.revoke_ratio,
                    level.min_revoke_ratio,
                    level.max_revoke_ratio,
                    x.issue.p50_ms,
                    y.issue.p50_ms,
                    x.issue.p99_ms,
                    y.issue.p99_ms,
                    x.revoke.p50_ms,
                    y.revoke.p50_ms,
                    x.revoke.p99_ms,
                    y.revoke.p99_ms,
                );
            }
            let _ = writeln!(out);
        }
        out
    }
}
