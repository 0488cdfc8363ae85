//! `lessor bench --json` at tiny sizes against the real PostgreSQL and MariaDB: standard output is
//! one JSON object whose ratios and figures are there and plausible (also `--bulk`'s bulk
//! revocation), progress goes to standard error, and nothing is left behind (the seeded leases
//! are rows in a temporary store; the suite's leftovers check covers database users). And `lessor bench --servers`, the side-by-side
//! mode `scripts/bench-openbao.sh` drives, against two in-process Lessors.

mod common;

use common::{mysql_url, pg_admin, postgres_url, TestServer, ROOT_TOKEN};
use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

/// Runs the binary with `args`; returns its standard output and standard error, after
/// asserting it succeeded.
async fn bench(args: Vec<String>) -> (String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_lessor"))
        .arg("bench")
        .args(&args)
        .output()
        .await
        .expect("run lessor bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "lessor bench {args:?} failed ({}):\n{stderr}",
        output.status
    );
    (stdout, stderr)
}

/// A positive, finite number at `pointer`.
fn positive(value: &Value, pointer: &str) -> f64 {
    let number = value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} is not a number in {value}"));
    assert!(
        number.is_finite() && number > 0.0,
        "{pointer} = {number}, expected positive and finite"
    );
    number
}

/// Every field named `*_ratio` anywhere in `value` is a positive, finite number; returns how
/// many there were.
fn check_ratios(value: &Value, path: &str) -> usize {
    match value {
        Value::Object(fields) => fields
            .iter()
            .map(|(name, field)| {
                let here = format!("{path}/{name}");
                if name.ends_with("_ratio") {
                    let number = field.as_f64().unwrap_or(f64::NAN);
                    assert!(
                        number.is_finite() && number > 0.0,
                        "{here} = {field}, expected positive and finite"
                    );
                    1
                } else {
                    check_ratios(field, &here)
                }
            })
            .sum(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(index, item)| check_ratios(item, &format!("{path}/{index}")))
            .sum(),
        _ => 0,
    }
}

/// Database users whose names start with `prefix`, on PostgreSQL and MariaDB.
async fn users_named(prefix: &str) -> Vec<String> {
    let pattern = format!("{prefix}%");
    let mut users: Vec<String> = pg_admin()
        .await
        .query(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE $1",
            &[&pattern],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut mysql = mysql_async::Conn::new(mysql_async::Opts::from_url(&mysql_url()).unwrap())
        .await
        .unwrap();
    let found: Vec<String> = mysql
        .exec("SELECT User FROM mysql.user WHERE User LIKE ?", (&pattern,))
        .await
        .unwrap();
    let _ = mysql.disconnect().await;
    users.extend(found);
    users
}

/// Held for the whole of a test that runs Lessor's own measurements: those make `v-bench-...`
/// users for a while, and each such test checks at its end that none is left, so two of them
/// (separate processes under nextest) must not overlap. A PostgreSQL advisory lock, released when
/// the returned session closes.
async fn bench_lock() -> tokio_postgres::Client {
    let session = pg_admin().await;
    session
        .execute(
            "SELECT pg_advisory_lock(hashtext('lessor tests/bench.rs'))",
            &[],
        )
        .await
        .unwrap();
    session
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_json_reports_ratios_raw_figures_and_a_seeded_store() {
    let _exclusive = bench_lock().await;
    let (stdout, stderr) = bench(
        [
            "--json",
            "--engines",
            "postgres,mysql",
            "--target",
            &format!("postgres={}", postgres_url()),
            "--target",
            &format!("mysql={}", mysql_url()),
            "--iterations",
            "2",
            "--concurrency",
            "1,2",
            "--pairs-per-worker",
            "2",
            "--rounds",
            "2",
            "--expiring-leases",
            "1",
            "--leases",
            "1200",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("standard output is not one JSON object ({e}):\n{stdout}"));

    assert!(positive(&report, "/machine/cores") >= 1.0);
    assert!(
        ["debug", "release"].contains(&report["build_profile"].as_str().unwrap()),
        "{}",
        report["build_profile"]
    );
    chrono::DateTime::parse_from_rfc3339(report["date"].as_str().unwrap())
        .expect("an RFC 3339 date");
    assert_eq!(report["parameters"]["concurrency"], json!([1, 2]));

    // The seeded store: 1,200 leases, and a page of 1,000 of them.
    assert_eq!(report["seeded"]["leases"], 1200);
    assert_eq!(report["seeded"]["list_page"]["keys"], 1000);
    assert_eq!(report["seeded"]["list_page"]["requests"], 50);
    let p50 = positive(&report, "/seeded/list_page/p50_ms");
    assert!(positive(&report, "/seeded/list_page/p99_ms") >= p50);

    for engine in ["postgres", "mysql"] {
        let at = format!("/engines/{engine}");
        for operation in ["issue", "revoke"] {
            for side in ["lessor", "direct"] {
                for figure in ["p50_ms", "p95_ms", "p99_ms", "mean_ms"] {
                    positive(&report, &format!("{at}/{operation}/{side}/{figure}"));
                }
            }
            positive(&report, &format!("{at}/{operation}/p50_latency_ratio"));
            positive(&report, &format!("{at}/{operation}/p99_latency_ratio"));
        }
        let levels = report
            .pointer(&format!("{at}/throughput"))
            .and_then(Value::as_array)
            .unwrap();
        assert_eq!(levels.len(), 2, "one entry per concurrency level");
        for (index, level) in levels.iter().enumerate() {
            let at = format!("{at}/throughput/{index}");
            assert_eq!(level["concurrency"], [1, 2][index]);
            for figure in ["lessor_pairs_per_sec", "direct_pairs_per_sec"] {
                positive(&report, &format!("{at}/{figure}"));
            }
            let ratio = positive(&report, &format!("{at}/pairs_ratio"));
            assert!(
                positive(&report, &format!("{at}/min_pairs_ratio")) <= ratio
                    && ratio <= positive(&report, &format!("{at}/max_pairs_ratio"))
            );
            // Interleaved: the rounds alternate which side goes first.
            let firsts: Vec<&str> = level["rounds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|round| round["first"].as_str().unwrap())
                .collect();
            assert_eq!(firsts, ["lessor", "direct"]);
            for operation in ["issue", "revoke"] {
                for side in ["lessor", "direct"] {
                    positive(&report, &format!("{at}/{operation}/{side}/p50_ms"));
                    positive(&report, &format!("{at}/{operation}/{side}/p99_ms"));
                }
                positive(&report, &format!("{at}/{operation}/p99_latency_ratio"));
            }
        }
        positive(&report, &format!("{at}/reaper/p50_ms"));
    }
    // Throughput and latency ratios alike are positive and finite wherever they are.
    assert!(check_ratios(&report, "") > 20);

    assert!(
        stderr.contains("bench: seeding the store with 1200 live leases")
            && stderr.contains("round 2/2")
            && stderr.contains("bench: done"),
        "progress goes to standard error:\n{stderr}"
    );
    // The seeded leases never had users; Lessor's and the direct side's are all dropped.
    let left = users_named("v-bench").await;
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `--bulk 50` on PostgreSQL: revoke-prefix of 50 leases and the reaper draining 50 leases that
/// fell due together, each against 50 plain `DROP ROLE IF EXISTS` on 4 connections, and the
/// lookup latency during the drain against idle; every figure is there and positive, and no user
/// of the run is left.
#[tokio::test(flavor = "multi_thread")]
async fn bench_bulk_times_revoke_prefix_and_a_reaper_backlog_against_plain_drops() {
    let _exclusive = bench_lock().await;
    let (stdout, stderr) = bench(
        [
            "--json",
            "--engines",
            "postgres",
            "--target",
            &format!("postgres={}", postgres_url()),
            "--iterations",
            "1",
            "--concurrency",
            "1",
            "--pairs-per-worker",
            "1",
            "--rounds",
            "1",
            "--expiring-leases",
            "1",
            "--bulk",
            "50",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("standard output is not one JSON object ({e}):\n{stdout}"));
    assert_eq!(report["parameters"]["bulk"], 50);
    let bulk = &report["engines"]["postgres"]["bulk"];
    assert_eq!(bulk["users"], 50, "{bulk}");
    assert_eq!(bulk["connections"], 4);
    for figure in [
        "revoke_prefix_ratio",
        "reaper_drain_ratio",
        "drain_p50_latency_ratio",
        "drain_p99_latency_ratio",
        "revoke_prefix/setup_seconds",
        "revoke_prefix/answer_seconds",
        "revoke_prefix/seconds",
        "revoke_prefix/users_per_sec",
        "direct_drop/setup_seconds",
        "direct_drop/seconds",
        "direct_drop/users_per_sec",
        "direct_drop/probe/requests",
        "direct_drop/probe/p50_ms",
        "direct_drop/probe/p99_ms",
        "drain_vs_direct_drop_p99_latency_ratio",
        "reaper_backlog/setup_seconds",
        "reaper_backlog/drain_seconds",
        "reaper_backlog/users_per_sec",
        "reaper_backlog/idle/requests",
        "reaper_backlog/idle/p50_ms",
        "reaper_backlog/idle/p99_ms",
        "reaper_backlog/drain/requests",
        "reaper_backlog/drain/p50_ms",
        "reaper_backlog/drain/p99_ms",
    ] {
        positive(&report, &format!("/engines/postgres/bulk/{figure}"));
    }
    // The ratios are the raw figures' ratios (to the rounding of each).
    let users_per_sec = |side: &str| positive(bulk, &format!("/{side}/users_per_sec"));
    let direct = users_per_sec("direct_drop");
    for (ratio, side) in [
        ("revoke_prefix_ratio", "revoke_prefix"),
        ("reaper_drain_ratio", "reaper_backlog"),
    ] {
        let expected = users_per_sec(side) / direct;
        let reported = positive(bulk, &format!("/{ratio}"));
        assert!(
            (reported - expected).abs() <= 0.01 * expected + 0.001,
            "{ratio} = {reported}, expected {expected}"
        );
    }
    let p99 = |phase: &str| positive(bulk, &format!("/{phase}/p99_ms"));
    for (name, during, against) in [
        (
            "drain_p99_latency_ratio",
            "reaper_backlog/drain",
            "reaper_backlog/idle",
        ),
        (
            "drain_vs_direct_drop_p99_latency_ratio",
            "reaper_backlog/drain",
            "direct_drop/probe",
        ),
    ] {
        let expected = p99(during) / p99(against);
        let reported = positive(bulk, &format!("/{name}"));
        assert!(
            (reported - expected).abs() <= 0.01 * expected + 0.001,
            "{name} = {reported}, expected {expected}"
        );
    }
    // Users per second are users over the seconds reported.
    let seconds = positive(bulk, "/revoke_prefix/seconds");
    assert!(positive(bulk, "/revoke_prefix/answer_seconds") <= seconds);
    assert!((users_per_sec("revoke_prefix") * seconds - 50.0).abs() < 2.5);
    assert!(check_ratios(&report, "") > 10);
    assert!(
        stderr.contains("timing PUT sys/leases/revoke-prefix/database/creds/bench-postgres-bulk")
            && stderr.contains("timing the reaper's drain")
            && stderr.contains("bench: done"),
        "progress goes to standard error:\n{stderr}"
    );

    // Nothing of the run is left: not the bulk users, not the rest of the benchmark's.
    let prefix = bulk["username_prefix"].as_str().unwrap();
    assert!(prefix.starts_with("v-bulk-"), "{prefix}");
    let left = users_named(prefix).await;
    assert!(left.is_empty(), "left behind: {left:?}");
    let left = users_named("v-bench").await;
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `--warm-pool 10` on PostgreSQL: the round trips, issuance with and without a pool, and a burst
/// of 1,000 from a full pool are all reported; every issue of the one-at-a-time run came from the
/// pool, at least the pool's worth of the burst did, and no user of the run is left.
#[tokio::test(flavor = "multi_thread")]
async fn bench_warm_pool_times_issuance_from_the_pool_against_the_round_trip() {
    let _exclusive = bench_lock().await;
    let (stdout, stderr) = bench(
        [
            "--json",
            "--engines",
            "postgres",
            "--target",
            &format!("postgres={}", postgres_url()),
            "--iterations",
            "1",
            "--concurrency",
            "1",
            "--pairs-per-worker",
            "1",
            "--rounds",
            "1",
            "--expiring-leases",
            "1",
            "--warm-pool",
            "10",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("standard output is not one JSON object ({e}):\n{stdout}"));
    assert_eq!(report["parameters"]["warm_pool"], 10);
    let warm = &report["engines"]["postgres"]["warm_pool"];
    assert_eq!(warm["pool_size"], 10, "{warm}");
    for figure in [
        "fill_seconds",
        "health/p50_ms",
        "lookup_self/p50_ms",
        "without_pool/p50_ms",
        "from_pool/p50_ms",
        "from_pool/p99_ms",
        "burst/seconds",
        "burst/issues_per_sec",
        "burst/latency/p50_ms",
        "burst/latency/p99_ms",
    ] {
        positive(warm, &format!("/{figure}"));
    }
    assert_eq!(warm["from_pool_requests"], 10);
    assert_eq!(
        warm["from_pool_count"], 10,
        "while the pool lasts, every issue is from it"
    );
    assert_eq!(warm["burst"]["requests"], 1000);
    assert_eq!(warm["burst"]["workers"], 32);
    let from_pool = warm["burst"]["from_pool"].as_u64().unwrap();
    assert!((10..=1000).contains(&from_pool), "{from_pool}");
    let expected = positive(warm, "/from_pool/p50_ms") - positive(warm, "/health/p50_ms");
    let reported = warm["p50_over_health_ms"].as_f64().unwrap();
    assert!(
        (reported - expected).abs() < 0.002,
        "{reported} vs {expected}"
    );
    assert!(stderr.contains("burst of 1000 issues") && stderr.contains("bench: done"));
    let left = users_named("v-bench").await;
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_servers_compares_two_vault_api_servers_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, ROOT_TOKEN).unwrap();
    let (first, second) = (TestServer::start().await, TestServer::start().await);
    for server in [&first, &second] {
        server.add_postgres("pg").await;
        server
            .write_role(
                "peer-ro",
                json!({ "db_name": "pg", "default_ttl": "1h",
                        "creation_statements": [r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE pg_read_all_data;"#] }),
            )
            .await;
    }
    let servers = dir.path().join("servers.json");
    std::fs::write(
        &servers,
        json!({
            "servers": [
                { "name": "one", "address": first.base, "token_file": token_file },
                { "name": "two", "address": second.base, "token_file": token_file },
            ],
            "roles": { "postgres": "peer-ro" },
        })
        .to_string(),
    )
    .unwrap();
    let (stdout, stderr) = bench(
        [
            "--servers",
            servers.to_str().unwrap(),
            "--json",
            "--concurrency",
            "1,3",
            "--pairs-per-worker",
            "2",
            "--rounds",
            "2",
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("standard output is not one JSON object ({e}):\n{stdout}"));
    assert_eq!(report["servers"], json!(["one", "two"]));
    let levels = report["roles"]["postgres"]["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    for (index, level) in levels.iter().enumerate() {
        let at = format!("/roles/postgres/levels/{index}");
        assert_eq!(level["creds_per_block"], [2, 6][index]);
        for side in 0..2 {
            assert_eq!(level["sides"][side]["rounds"].as_array().unwrap().len(), 2);
            for figure in [
                "issue_per_sec",
                "revoke_per_sec",
                "issue/p50_ms",
                "revoke/p99_ms",
            ] {
                positive(&report, &format!("{at}/sides/{side}/{figure}"));
            }
        }
        for ratio in [
            "issue_ratio",
            "revoke_ratio",
            "issue_p50_latency_ratio",
            "revoke_p99_latency_ratio",
        ] {
            positive(&report, &format!("{at}/{ratio}"));
        }
    }
    assert!(check_ratios(&report, "") >= 20);
    assert!(stderr.contains("round 2/2"), "{stderr}");

    // Every credential issued was revoked: no live lease on either server.
    for server in [&first, &second] {
        let (_, listing) = server
            .call("LIST", "sys/leases/lookup/database/creds/peer-ro/", None)
            .await;
        let keys = listing["data"]["keys"].as_array().map_or(0, Vec::len);
        assert_eq!(keys, 0, "live leases left: {listing}");
    }
    first.stop().await;
    second.stop().await;
}

/// `Store::seed_leases`, which `--leases` uses, on both store engines: the rows come back as
/// written, live, in one page of their prefix, in statements of several hundred rows; then
/// `Store::expire_role_leases_at` (`--bulk`'s backlog) moves all of them to one expiry.
#[tokio::test]
async fn seed_leases_writes_live_rows_on_sqlite_and_postgres() {
    use chrono::{Duration, TimeZone, Utc};
    use lessor::store::{IdRange, Lease, LeaseState, LeaseStore, Store};

    let far = Utc::now() + Duration::days(3650);
    let rows: Vec<Lease> = (0..1_234)
        .map(|index| Lease {
            id: format!("database/creds/seeded/{index:06}"),
            role_name: "seeded".into(),
            connection_name: "nowhere".into(),
            username: format!("v-seeded-{index}"),
            revocation_statements: Vec::new(),
            rollback_statements: Vec::new(),
            renew_statements: Vec::new(),
            issued_at: Utc.timestamp_millis_opt(1).unwrap(),
            last_renewed_at: None,
            expires_at: far,
            max_expires_at: far,
            state: LeaseState::Active,
            next_action_at: far,
            attempts: 0,
            last_error: None,
            revoked_at: None,
            owner: "owner".into(),
            owner_display_name: "seeder".into(),
            revoke_requested: false,
            token_accessor: None,
            claimed_by: None,
            claim_until: None,
            database_name: None,
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let postgres = common::StoreDatabase::create().await;
    for url in [
        dir.path().join("lessor.db").display().to_string(),
        postgres.url.clone(),
    ] {
        let store = Store::open(&url).await.unwrap();
        store.seed_leases(&rows).await.unwrap();
        let ids = store
            .live_lease_ids_in(&IdRange::under("database/creds/seeded"), "", 5_000)
            .await
            .unwrap();
        assert_eq!(ids.len(), rows.len(), "{url}");
        let last = store
            .get_lease("database/creds/seeded/001233")
            .await
            .unwrap()
            .expect("the last row");
        assert_eq!(
            (
                last.username.as_str(),
                last.state,
                last.owner_display_name.as_str()
            ),
            ("v-seeded-1233", LeaseState::Active, "seeder")
        );
        assert_eq!(
            last.next_action_at.timestamp_millis(),
            far.timestamp_millis()
        );
        // The reaper backlog of `--bulk` falls due at one moment this way.
        let soon = Utc::now() + Duration::seconds(3);
        assert_eq!(
            store.expire_role_leases_at("seeded", soon).await.unwrap(),
            rows.len() as u64,
            "{url}"
        );
        assert_eq!(
            store.expire_role_leases_at("absent", soon).await.unwrap(),
            0
        );
        let moved = store
            .get_lease("database/creds/seeded/000007")
            .await
            .unwrap()
            .expect("a moved row");
        assert_eq!(
            (
                moved.expires_at.timestamp_millis(),
                moved.next_action_at.timestamp_millis()
            ),
            (soon.timestamp_millis(), soon.timestamp_millis())
        );
        store.close().await;
    }
    postgres.drop_now().await;
}
