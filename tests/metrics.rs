//! `sys/metrics` read the way Prometheus and a person read it, against the real PostgreSQL and
//! MariaDB: issuing, renewing and revoking through the API moves the per-role and per-connection
//! counters, histograms and gauges; two replicas on one store report the same active leases;
//! rotations are counted by kind and outcome; names a client makes up never become labels; and
//! every metric the Grafana dashboard in docs/ queries is one Lessor exports.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const READONLY: &str = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE pg_read_all_data;";

/// One sample of the exposition: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape: the samples and the declared type of each family (`# TYPE`).
struct Scrape {
    text: String,
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    /// What a PromQL `sum(name{labels})` answers: the sum of every series carrying those labels,
    /// `None` when there is no such series at all.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.sum(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in:\n{}", self.text))
    }

    /// Every series name a PromQL query may use: samples' names, and for each declared family
    /// the names Prometheus derives from it (histogram `_bucket`, `_sum`, `_count`).
    fn exported_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.samples.iter().map(|s| s.name.clone()).collect();
        for (family, kind) in &self.types {
            names.insert(family.clone());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{family}{suffix}"));
                }
            }
        }
        names
    }
}

/// Parses the text exposition format 0.0.4, label values with their escapes included (route
/// templates hold `{` and `}`).
fn parse(text: &str) -> Scrape {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("a sample line");
        let name = line[..name_end].to_owned();
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            let mut key = String::new();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '}' => {
                        end = Some(i);
                        break;
                    }
                    ',' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                        let mut value = String::new();
                        loop {
                            match chars.next().expect("a closed label value") {
                                (_, '\\') => match chars.next().unwrap().1 {
                                    'n' => value.push('\n'),
                                    other => value.push(other),
                                },
                                (_, '"') => break,
                                (_, other) => value.push(other),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    other => key.push(other),
                }
            }
            rest = &inner[end.expect("labels end with }") + 1..];
        }
        let value = rest.trim().parse().expect("a numeric value");
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    Scrape {
        text: text.to_owned(),
        samples,
        types,
    }
}

async fn scrape(api: &Api) -> Scrape {
    let response = api
        .http
        .get(format!("{}/v1/sys/metrics?format=prometheus", api.base))
        .header("X-Vault-Token", ROOT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    parse(&response.text().await.unwrap())
}

#[tokio::test]
async fn issue_renew_revoke_move_the_series_of_their_role_and_connection() {
    let server = TestServer::start().await;
    let pg = unique("pg");
    let my = unique("my");
    server.add_postgres(&pg).await;
    server.add_mysql(&my).await;
    let role = unique("metrics");
    let my_role = unique("metrics-my");
    let broken = unique("broken");
    server
        .write_role(&role, json!({ "db_name": pg, "creation_statements": [READONLY], "default_ttl": "10m", "max_ttl": "1h" }))
        .await;
    server
        .write_role(
            &my_role,
            json!({ "db_name": my, "default_ttl": "10m", "max_ttl": "1h" }),
        )
        .await;
    // A role whose creation statement the database rejects: every issue fails.
    server
        .write_role(&broken, json!({ "db_name": pg, "creation_statements": ["SELECT no_such_column FROM no_such_table_lessor"], "default_ttl": "10m" }))
        .await;
    let pg_role = [("role", role.as_str()), ("connection", pg.as_str())];

    // A configured role with nothing issued yet reads 0 active leases, not "no data".
    let before = scrape(&server).await;
    assert_eq!(before.value("lessor_leases_active", &pg_role), 0.0);
    assert_eq!(before.sum("lessor_lease_issues_total", &pg_role), None);

    let (first, _, _) = server.creds(&role).await;
    let (second, _, _) = server.creds(&role).await;
    let (mysql_lease, _, _) = server.creds(&my_role).await;
    let (status, _) = server
        .call("GET", &format!("database/creds/{broken}"), None)
        .await;
    assert!(status.is_server_error() || status.is_client_error());
    let (status, body) = server
        .call(
            "PUT",
            "sys/leases/renew",
            Some(json!({ "lease_id": first, "increment": "20m" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let issued = scrape(&server).await;
    assert_eq!(issued.value("lessor_leases_active", &pg_role), 2.0);
    assert_eq!(issued.value("lessor_leases_revoking", &pg_role), 0.0);
    assert_eq!(
        issued.value(
            "lessor_leases_active",
            &[("role", &my_role), ("connection", &my)]
        ),
        1.0,
        "MariaDB leases are their own series"
    );
    assert_eq!(
        issued.value(
            "lessor_lease_issues_total",
            &[("role", &role), ("outcome", "success")]
        ),
        2.0
    );
    assert_eq!(
        issued.value(
            "lessor_lease_issues_total",
            &[
                ("role", &broken),
                ("connection", &pg),
                ("outcome", "failure")
            ]
        ),
        1.0
    );
    assert_eq!(
        issued.sum(
            "lessor_lease_issues_total",
            &[("role", &broken), ("outcome", "success")]
        ),
        None
    );
    assert_eq!(
        issued.value(
            "lessor_lease_renewals_total",
            &[("role", &role), ("outcome", "success")]
        ),
        1.0
    );
    // Latency: one observation per issue, all under the 60 s bucket, cumulative buckets.
    assert_eq!(
        issued.value("lessor_lease_issue_duration_seconds_count", &pg_role),
        2.0
    );
    assert_eq!(
        issued.value(
            "lessor_lease_issue_duration_seconds_bucket",
            &[("role", &role), ("le", "+Inf")]
        ),
        2.0
    );
    assert_eq!(
        issued.value(
            "lessor_lease_issue_duration_seconds_bucket",
            &[("role", &role), ("le", "60")]
        ),
        2.0
    );
    assert!(issued.value("lessor_lease_issue_duration_seconds_sum", &pg_role) > 0.0);
    assert_eq!(
        issued.types["lessor_lease_issue_duration_seconds"],
        "histogram"
    );
    assert_eq!(issued.types["lessor_leases_active"], "gauge");
    assert_eq!(issued.types["lessor_lease_issues_total"], "counter");

    let (status, _) = server
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": second })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": mysql_lease })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Renewing a revoked lease is the client's mistake: refused, not failed.
    let (status, _) = server
        .call(
            "PUT",
            "sys/leases/renew",
            Some(json!({ "lease_id": second })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let revoked = scrape(&server).await;
    assert_eq!(
        revoked.value(
            "lessor_lease_renewals_total",
            &[("role", &role), ("outcome", "refused")]
        ),
        1.0
    );
    assert_eq!(
        revoked.sum(
            "lessor_lease_renewals_total",
            &[("role", &role), ("outcome", "failure")]
        ),
        None
    );
    assert_eq!(revoked.value("lessor_leases_active", &pg_role), 1.0);
    assert_eq!(
        revoked.value(
            "lessor_leases_active",
            &[("role", &my_role), ("connection", &my)]
        ),
        0.0
    );
    assert_eq!(
        revoked.value(
            "lessor_lease_revocations_total",
            &[("role", &role), ("connection", &pg), ("outcome", "success")]
        ),
        1.0
    );
    assert_eq!(
        revoked.value(
            "lessor_lease_revocations_total",
            &[
                ("role", &my_role),
                ("connection", &my),
                ("outcome", "success")
            ]
        ),
        1.0
    );
    assert_eq!(
        revoked.value("lessor_lease_revoke_duration_seconds_count", &pg_role),
        1.0
    );
    // Request latency is by route template, never by the raw path.
    assert!(
        revoked.value(
            "lessor_request_duration_seconds_count",
            &[("route", "/v1/database/creds/{name}"), ("method", "GET")]
        ) >= 4.0
    );

    // A made-up role name, asked for by a client, creates no series anywhere.
    let made_up = unique("nosuchrole");
    let (status, _) = server
        .call("GET", &format!("database/creds/{made_up}"), None)
        .await;
    assert!(status.is_client_error(), "{status}");
    let after = scrape(&server).await;
    assert!(!after.text.contains(&made_up), "{}", after.text);

    // The access rules of sys/metrics: a token without a policy is refused, and the format is
    // required.
    let (status, _) = server
        .call_as(Some("nobody"), "GET", "sys/metrics?format=prometheus", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server.call("GET", "sys/metrics", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    server.revoke_everything().await;
    let done = scrape(&server).await;
    assert_eq!(done.value("lessor_leases_active", &pg_role), 0.0);
    assert_eq!(
        done.value(
            "lessor_lease_revocations_total",
            &[("role", &role), ("outcome", "success")]
        ),
        2.0
    );
}

/// A revocation the database refuses is counted as a failure (and retried); revoke-force then
/// marks it revoked, counted as `forced`.
#[tokio::test]
async fn refused_and_forced_revocations_are_counted() {
    let server = TestServer::start().await;
    let pg = unique("pg");
    server.add_postgres(&pg).await;
    let role = unique("refused");
    server
        .write_role(
            &role,
            json!({
                "db_name": pg,
                "creation_statements": [READONLY],
                "revocation_statements": ["SELECT no_such_column FROM no_such_table_lessor"],
                "default_ttl": "10m"
            }),
        )
        .await;
    let (lease, username, _) = server.creds(&role).await;
    let (status, _) = server
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease })),
        )
        .await;
    assert!(
        !status.is_success(),
        "the database refused the drop: {status}"
    );
    let refused = scrape(&server).await;
    let labels = [("role", role.as_str()), ("connection", pg.as_str())];
    // At least one: the reaper may already have retried (and failed again).
    assert!(
        refused.value(
            "lessor_lease_revocations_total",
            &[labels[0], labels[1], ("outcome", "failure")]
        ) >= 1.0
    );
    assert_eq!(refused.value("lessor_leases_revoking", &labels), 1.0);
    assert_eq!(refused.value("lessor_leases_active", &labels), 0.0);

    let (status, body) = server
        .call("PUT", &format!("sys/leases/revoke-force/{lease}"), None)
        .await;
    assert!(status.is_success(), "{status} {body}");
    let forced = scrape(&server).await;
    assert!(
        forced.value(
            "lessor_lease_revocations_total",
            &[labels[0], labels[1], ("outcome", "forced")]
        ) >= 1.0
    );
    assert_eq!(forced.value("lessor_leases_revoking", &labels), 0.0);
    // revoke-force leaves the user on the database, as it says: the test drops it.
    pg_admin()
        .await
        .batch_execute(&format!("DROP ROLE IF EXISTS \"{username}\""))
        .await
        .unwrap();
}

#[tokio::test]
async fn replicas_sharing_a_store_report_the_same_active_leases() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestServer::start_in(dir.path()).await;
    let second = TestServer::start_in(dir.path()).await;
    let pg = unique("pg");
    let role = unique("replicas");
    first.add_postgres(&pg).await;
    first
        .write_role(&role, json!({ "db_name": pg, "creation_statements": [READONLY], "default_ttl": "10m", "max_ttl": "1h" }))
        .await;
    let labels = [("role", role.as_str()), ("connection", pg.as_str())];

    let (lease_a, _, _) = first.creds(&role).await;
    let (_lease_b, _, _) = second.creds(&role).await;
    let (_lease_c, _, _) = second.creds(&role).await;
    for replica in [&first, &second] {
        let scraped = scrape(replica).await;
        assert_eq!(
            scraped.value("lessor_leases_active", &labels),
            3.0,
            "each replica reads the store's count, not its own"
        );
    }
    let (status, _) = second
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease_a })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        scrape(&first).await.value("lessor_leases_active", &labels),
        2.0
    );
    second.revoke_everything().await;
    assert_eq!(
        scrape(&first).await.value("lessor_leases_active", &labels),
        0.0
    );
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn rotations_are_counted_by_kind_role_connection_and_outcome() {
    let server = TestServer::start().await;
    let pg = unique("pg");
    server.add_postgres(&pg).await;
    let user = unique("lessor_metrics_st").replace('-', "_");
    let role = static_role(&server, &pg, &user).await;
    let (status, body) = server
        .call("POST", &format!("database/rotate-role/{role}"), None)
        .await;
    assert!(status.is_success(), "{status} {body}");
    // The dev-style connection has no `{{password}}` template: its admin password cannot be
    // rotated, a refusal (not an outage) counted under kind=root.
    let (status, _) = server
        .call("POST", &format!("database/rotate-root/{pg}"), None)
        .await;
    assert!(status.is_client_error(), "{status}");
    // An unknown static role is refused before anything is counted.
    let made_up = unique("nosuchstatic");
    let (status, _) = server
        .call("POST", &format!("database/rotate-role/{made_up}"), None)
        .await;
    assert!(status.is_client_error(), "{status}");

    let scraped = scrape(&server).await;
    let static_labels = [
        ("kind", "static"),
        ("role", role.as_str()),
        ("connection", pg.as_str()),
    ];
    assert_eq!(
        scraped.value(
            "lessor_rotations_total",
            &[
                static_labels[0],
                static_labels[1],
                static_labels[2],
                ("outcome", "success")
            ]
        ),
        2.0
    );
    assert_eq!(
        scraped.value("lessor_rotation_duration_seconds_count", &static_labels),
        2.0
    );
    assert_eq!(
        scraped.value(
            "lessor_rotations_total",
            &[
                ("kind", "root"),
                ("connection", &pg),
                ("outcome", "refused")
            ]
        ),
        1.0
    );
    assert!(!scraped.text.contains(&made_up));

    drop_pg_user(&user).await;
}

/// Creates the PostgreSQL login `user` and a static role for it, which rotates it once (the
/// import rotation); returns the static role's name.
async fn static_role(server: &TestServer, pg: &str, user: &str) -> String {
    pg_admin()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {user} LOGIN PASSWORD 'Initial-metrics-pass-1'"
        ))
        .await
        .unwrap();
    let role = unique("st-metrics");
    let (status, body) = server
        .call(
            "POST",
            &format!("database/static-roles/{role}"),
            Some(json!({ "db_name": pg, "username": user, "rotation_period": 86400 })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    role
}

/// A static role rotated once; returns the database user to drop afterwards.
async fn rotate_a_static_role(server: &TestServer, pg: &str) -> String {
    let user = unique("lessor_metrics_st").replace('-', "_");
    static_role(server, pg, &user).await;
    user
}

/// Static roles leave their user alone when deleted; the test drops it.
async fn drop_pg_user(user: &str) {
    pg_admin()
        .await
        .batch_execute(&format!("DROP ROLE IF EXISTS {user}"))
        .await
        .unwrap();
}

/// Every metric name in the dashboard's PromQL is one a live Lessor exports, and the dashboard
/// shows the lease, issue, revoke and rotation series at least.
#[tokio::test]
async fn the_grafana_dashboard_queries_only_exported_metrics() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana/lessor.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("valid JSON");
    assert!(dashboard["title"].is_string());
    let mut expressions = Vec::new();
    fn collect(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    if matches!(key.as_str(), "expr" | "query" | "definition") {
                        if let Some(text) = v.as_str() {
                            out.push(text.to_owned());
                        }
                    }
                    collect(v, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&dashboard, &mut expressions);
    assert!(expressions.len() >= 8, "{expressions:?}");

    let mut used = BTreeSet::new();
    for expr in &expressions {
        let bytes = expr.as_bytes();
        let mut i = 0;
        while let Some(found) = expr[i..].find("lessor_") {
            let start = i + found;
            let preceded_by_word =
                start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let end = expr[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |e| start + e);
            if !preceded_by_word {
                used.insert(expr[start..end].to_owned());
            }
            i = end;
        }
    }

    // Families with no series are not exported at all, so the server first does what the
    // dashboard shows: issue, renew, revoke, a failed issue, a static rotation, a failed root
    // rotation.
    let server = TestServer::start().await;
    let pg = unique("pg");
    server.add_postgres(&pg).await;
    let role = unique("dash");
    server
        .write_role(
            &role,
            json!({ "db_name": pg, "creation_statements": [READONLY], "default_ttl": "10m" }),
        )
        .await;
    let (lease, _, _) = server.creds(&role).await;
    let (status, _) = server
        .call(
            "PUT",
            "sys/leases/renew",
            Some(json!({ "lease_id": lease })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server
        .call("POST", &format!("database/rotate-root/{pg}"), None)
        .await;
    assert!(status.is_client_error());
    let user = rotate_a_static_role(&server, &pg).await;
    let exported = scrape(&server).await.exported_names();
    drop_pg_user(&user).await;
    let unknown: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics Lessor does not export: {unknown:?}\nexported: {exported:?}"
    );
    for needed in [
        "lessor_leases_active",
        "lessor_lease_issues_total",
        "lessor_lease_revocations_total",
        "lessor_rotations_total",
        "lessor_lease_issue_duration_seconds_bucket",
    ] {
        assert!(used.contains(needed), "the dashboard lacks {needed}");
    }
}
