//! Prometheus metrics, kept and encoded by `prometheus-client` (the Prometheus project's own Rust
//! client): counters and latency histograms per role and connection, and gauges read from the
//! store at scrape time.
//!
//! Counters and histograms are process-wide (the lease manager, the rotator, the anomaly monitor
//! and the gate record through the free functions here, without threading a handle through every
//! call); each replica counts what it did, and Prometheus sums replicas. The lease gauges are the
//! store's truth, computed by one GROUP BY when scraped
//! ([`crate::store::MetricsStore::live_lease_counts`]), so they are right across restarts and
//! across replicas sharing one store.
//!
//! Cardinality: a label value is a route template, a fixed word ([`Outcome`], [`RotationKind`],
//! an anomaly rule) or a name that passed [`crate::names`]' check *and* exists in the
//! configuration (a role, static role or connection that was loaded from the store before
//! anything is recorded). A request for a role that does not exist records nothing here, so the
//! number of series is bounded by the configuration, never by what clients send.
//!
//! `sys/metrics?format=prometheus` answers [`render`] in the text exposition format 0.0.4.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::names::{ConnectionName, RoleName, StaticRoleName};
use crate::store::LiveLeaseCount;

/// Upper bounds (seconds) of the request latency buckets: answers are mostly milliseconds.
const REQUEST_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Upper bounds (seconds) of the buckets of work on a target database (creating or dropping a
/// user, rotating a password): a round trip or a few, up to the 60 s creation deadline.
const DATABASE_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How an operation ended: a fixed word, so it can never carry request input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Success,
    /// The database or the store refused or failed; for a revocation, it will be retried.
    Failure,
    /// Refused before any database work: a bad request, a role not allowed on its connection,
    /// renewing a lease that has expired or was revoked. The client's doing, not an outage.
    Refused,
    /// An issue whose lease was revoked while its user was being created (a 409).
    Conflict,
    /// A revoke-force that marked the lease revoked although the database refused the drop.
    Forced,
    /// A scheduled rotation whose window had passed.
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Refused => "refused",
            Self::Conflict => "conflict",
            Self::Forced => "forced",
            Self::Skipped => "skipped",
        }
    }
}

impl Outcome {
    /// How a request's answer counts: a client error is `refused`, a conflict `conflict`, and
    /// anything the client could not have avoided (database, store, internal) `failure`. No `_`
    /// arm, so a new error variant forces a decision here.
    pub fn of<T>(result: &crate::error::Result<T>) -> Self {
        use crate::error::Error;
        match result {
            Ok(_) => Self::Success,
            Err(Error::Conflict(_)) => Self::Conflict,
            Err(
                Error::InvalidInput(_)
                | Error::NotFound { .. }
                | Error::PermissionDenied
                | Error::LoginRefused(_),
            ) => Self::Refused,
            Err(
                Error::AuditFailed(_)
                | Error::Database { .. }
                | Error::Unavailable(_)
                | Error::Store(_)
                | Error::StoreUnavailable(_)
                | Error::Migration(_)
                | Error::Seal(_)
                | Error::Config(_)
                | Error::Internal(_),
            ) => Self::Failure,
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

/// What a rotation changed: a static role's password or a connection's admin (root) password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RotationKind {
    Static,
    Root,
}

impl EncodeLabelValue for RotationKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        fmt::Write::write_str(
            encoder,
            match self {
                Self::Static => "static",
                Self::Root => "root",
            },
        )
    }
}

/// The dynamic role and connection of a lease. Built only from checked names, so a label value
/// cannot hold anything [`crate::names`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LeaseLabels {
    role: String,
    connection: String,
}

impl LeaseLabels {
    pub fn new(role: &RoleName, connection: &ConnectionName) -> Self {
        Self {
            role: role.to_string(),
            connection: connection.to_string(),
        }
    }

    /// From names read back from the store (a lease row, a role row): checked again, since only
    /// a checked name may become a label; `None` (nothing recorded) if either fails.
    pub fn checked(role: &str, connection: &str) -> Option<Self> {
        match (RoleName::parse(role), ConnectionName::parse(connection)) {
            (Ok(role), Ok(connection)) => Some(Self::new(&role, &connection)),
            _ => {
                tracing::warn!(
                    "a stored role or connection name fails its check; not recorded in metrics"
                );
                None
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LeaseOutcomeLabels {
    #[prometheus(flatten)]
    lease: LeaseLabels,
    outcome: Outcome,
}

/// What a rotation rotated: a static role (`role` is its name) or a connection's admin password
/// (`role` is empty).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RotationLabels {
    kind: RotationKind,
    role: String,
    connection: String,
}

impl RotationLabels {
    pub fn static_role(role: &StaticRoleName, connection: &ConnectionName) -> Self {
        Self {
            kind: RotationKind::Static,
            role: role.to_string(),
            connection: connection.to_string(),
        }
    }

    pub fn root(connection: &ConnectionName) -> Self {
        Self {
            kind: RotationKind::Root,
            role: String::new(),
            connection: connection.to_string(),
        }
    }

    /// As [`LeaseLabels::checked`], for a static role row read from the store.
    pub fn checked_static(role: &str, connection: &str) -> Option<Self> {
        match (
            StaticRoleName::parse(role),
            ConnectionName::parse(connection),
        ) {
            (Ok(role), Ok(connection)) => Some(Self::static_role(&role, &connection)),
            _ => None,
        }
    }

    /// As [`LeaseLabels::checked`], for a connection row read from the store.
    pub fn checked_root(connection: &str) -> Option<Self> {
        ConnectionName::parse(connection)
            .ok()
            .map(|connection| Self::root(&connection))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RotationOutcomeLabels {
    #[prometheus(flatten)]
    rotation: RotationLabels,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FindingLabels {
    outcome: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn database_histogram() -> Histogram {
    Histogram::new(DATABASE_BUCKETS)
}

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

/// Every process-wide metric. The families are cheap handles on shared state: [`render`]
/// registers clones of them in a registry of its own beside that scrape's gauges.
struct Metrics {
    issues: Family<LeaseOutcomeLabels, Counter>,
    renewals: Family<LeaseOutcomeLabels, Counter>,
    revocations: Family<LeaseOutcomeLabels, Counter>,
    issue_seconds: Histograms<LeaseLabels>,
    revoke_seconds: Histograms<LeaseLabels>,
    rotations: Family<RotationOutcomeLabels, Counter>,
    rotation_seconds: Histograms<RotationLabels>,
    alerts: Family<RuleLabels, Counter>,
    reconcile_findings: Family<FindingLabels, Counter>,
    audit_failures: Counter,
    requests: Histograms<RequestLabels>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        issues: Family::default(),
        renewals: Family::default(),
        revocations: Family::default(),
        issue_seconds: Family::new_with_constructor(database_histogram),
        revoke_seconds: Family::new_with_constructor(database_histogram),
        rotations: Family::default(),
        rotation_seconds: Family::new_with_constructor(database_histogram),
        alerts: Family::default(),
        reconcile_findings: Family::default(),
        audit_failures: Counter::default(),
        requests: Family::new_with_constructor(request_histogram),
    })
}

/// One issue request for a configured role ended with `outcome` after `elapsed` (from the lease
/// write to the answer, the part that talks to the database).
pub fn lease_issue(labels: &LeaseLabels, outcome: Outcome, elapsed: Duration) {
    let m = metrics();
    m.issues
        .get_or_create(&LeaseOutcomeLabels {
            lease: labels.clone(),
            outcome,
        })
        .inc();
    m.issue_seconds
        .get_or_create(labels)
        .observe(elapsed.as_secs_f64());
}

pub fn lease_renewal(labels: &LeaseLabels, outcome: Outcome) {
    metrics()
        .renewals
        .get_or_create(&LeaseOutcomeLabels {
            lease: labels.clone(),
            outcome,
        })
        .inc();
}

/// One attempt to drop a lease's user (on request, by prefix, at expiry or as a retry).
pub fn lease_revocation(labels: &LeaseLabels, outcome: Outcome, elapsed: Duration) {
    let m = metrics();
    m.revocations
        .get_or_create(&LeaseOutcomeLabels {
            lease: labels.clone(),
            outcome,
        })
        .inc();
    m.revoke_seconds
        .get_or_create(labels)
        .observe(elapsed.as_secs_f64());
}

/// One rotation attempt of a static role or an admin password.
pub fn rotation(labels: &RotationLabels, outcome: Outcome, elapsed: Duration) {
    let m = metrics();
    m.rotations
        .get_or_create(&RotationOutcomeLabels {
            rotation: labels.clone(),
            outcome,
        })
        .inc();
    m.rotation_seconds
        .get_or_create(labels)
        .observe(elapsed.as_secs_f64());
}

/// `rule` is one of the anomaly monitor's fixed rule names.
pub fn alert_raised(rule: &str) {
    metrics()
        .alerts
        .get_or_create(&RuleLabels {
            rule: rule.to_owned(),
        })
        .inc();
}

/// One reconciliation finding; `outcome` is one of the sweep's fixed words (`dropped`,
/// `suspect`, `lookalike`...).
pub fn reconcile_finding(outcome: &'static str) {
    metrics()
        .reconcile_findings
        .get_or_create(&FindingLabels {
            outcome: outcome.to_owned(),
        })
        .inc();
}

pub fn audit_failed() {
    metrics().audit_failures.inc();
}

/// Records one request's latency under its route template (`/v1/database/creds/{name}`), never the
/// raw path, so the number of series stays bounded.
pub fn observe_request(route: &str, method: &str, elapsed: Duration) {
    metrics()
        .requests
        .get_or_create(&RequestLabels {
            route: route.to_owned(),
            method: method.to_owned(),
        })
        .observe(elapsed.as_secs_f64());
}

/// One role's warm pool in this process, for the `lessor_warm_pool_ready` gauge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmPoolCount {
    pub role_name: String,
    pub connection_name: String,
    /// Users ready to issue.
    pub ready: i64,
}

/// The text exposition (format 0.0.4) of every metric, with the lease gauges set from `live`
/// (this scrape's read of the store) and the warm pool gauge from `pools` (this replica's).
pub fn render(live: &[LiveLeaseCount], pools: &[WarmPoolCount]) -> String {
    let active = Family::<LeaseLabels, Gauge>::default();
    let revoking = Family::<LeaseLabels, Gauge>::default();
    for row in live {
        if let Some(labels) = LeaseLabels::checked(&row.role_name, &row.connection_name) {
            active.get_or_create(&labels).set(row.active);
            revoking.get_or_create(&labels).set(row.revoking);
        }
    }

    let ready = Family::<LeaseLabels, Gauge>::default();
    for pool in pools {
        if let Some(labels) = LeaseLabels::checked(&pool.role_name, &pool.connection_name) {
            ready.get_or_create(&labels).set(pool.ready);
        }
    }

    let m = metrics();
    let mut registry = Registry::default();
    registry.register(
        "lessor_warm_pool_ready",
        "Users ready in this replica's warm pool of a role (see warm_pool_size), by role and connection",
        ready,
    );
    registry.register(
        "lessor_leases_active",
        "Leases whose credential is live, by role and connection (from the store, all replicas)",
        active,
    );
    registry.register(
        "lessor_leases_revoking",
        "Leases whose revocation has begun and not yet succeeded, by role and connection (from the store, all replicas)",
        revoking,
    );
    registry.register(
        "lessor_lease_issues",
        "Credential requests for configured roles, by role, connection and outcome (success, failure, refused, conflict)",
        m.issues.clone(),
    );
    registry.register(
        "lessor_lease_renewals",
        "Lease renewals, by role, connection and outcome (success, failure, refused)",
        m.renewals.clone(),
    );
    registry.register(
        "lessor_lease_revocations",
        "Attempts to drop a lease's user (on request, by prefix, at expiry, retries), by role, connection and outcome (success, failure, forced)",
        m.revocations.clone(),
    );
    registry.register(
        "lessor_lease_issue_duration_seconds",
        "Time from the lease write to the answer of a credential request, by role and connection",
        m.issue_seconds.clone(),
    );
    registry.register(
        "lessor_lease_revoke_duration_seconds",
        "Time to drop a lease's user, by role and connection",
        m.revoke_seconds.clone(),
    );
    registry.register(
        "lessor_rotations",
        "Password rotations of static roles (kind=static) and admin credentials (kind=root), by role, connection and outcome (success, failure, refused, skipped)",
        m.rotations.clone(),
    );
    registry.register(
        "lessor_rotation_duration_seconds",
        "Time a rotation took, by kind, role and connection",
        m.rotation_seconds.clone(),
    );
    registry.register(
        "lessor_alerts",
        "Anomaly alerts raised, by rule",
        m.alerts.clone(),
    );
    registry.register(
        "lessor_reconcile_findings",
        "Reconciliation findings, by outcome (dropped, suspect, lookalike, gone, drop_failed; would_* in a dry run)",
        m.reconcile_findings.clone(),
    );
    registry.register(
        "lessor_audit_failures",
        "Requests refused because no audit device could record them",
        m.audit_failures.clone(),
    );
    registry.register(
        "lessor_request_duration_seconds",
        "Time to answer a request, by route template and method",
        m.requests.clone(),
    );
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a label's encoding.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "cannot encode the metrics");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(role: &str, connection: &str) -> LeaseLabels {
        LeaseLabels::checked(role, connection).unwrap()
    }

    #[test]
    fn exposition_has_labelled_counters_gauges_and_cumulative_buckets() {
        let labels = lease("unit-role", "unit-db");
        lease_issue(&labels, Outcome::Success, Duration::from_millis(30));
        lease_issue(&labels, Outcome::Failure, Duration::from_millis(3));
        observe_request("/v1/unit/{name}", "GET", Duration::from_millis(30));
        let text = render(
            &[LiveLeaseCount {
                role_name: "unit-role".into(),
                connection_name: "unit-db".into(),
                active: 3,
                revoking: 1,
            }],
            &[WarmPoolCount {
                role_name: "unit-role".into(),
                connection_name: "unit-db".into(),
                ready: 7,
            }],
        );
        assert!(text.contains("# TYPE lessor_leases_active gauge"), "{text}");
        assert!(
            text.contains("lessor_warm_pool_ready{role=\"unit-role\",connection=\"unit-db\"} 7"),
            "{text}"
        );
        assert!(text.contains("lessor_leases_active{role=\"unit-role\",connection=\"unit-db\"} 3"));
        assert!(
            text.contains("lessor_leases_revoking{role=\"unit-role\",connection=\"unit-db\"} 1")
        );
        assert!(text.contains("# TYPE lessor_lease_issues_total counter"));
        assert!(text.contains(
            "lessor_lease_issues_total{role=\"unit-role\",connection=\"unit-db\",outcome=\"success\"} 1"
        ));
        assert!(text.contains(
            "lessor_lease_issues_total{role=\"unit-role\",connection=\"unit-db\",outcome=\"failure\"} 1"
        ));
        // Cumulative: the 30 ms issue is in the 0.05 bucket and above, the 3 ms one in all.
        assert!(text.contains("lessor_lease_issue_duration_seconds_bucket{role=\"unit-role\",connection=\"unit-db\",le=\"0.025\"} 1"), "{text}");
        assert!(text.contains("lessor_lease_issue_duration_seconds_bucket{role=\"unit-role\",connection=\"unit-db\",le=\"0.05\"} 2"), "{text}");
        assert!(text.contains(
            "lessor_request_duration_seconds_count{route=\"/v1/unit/{name}\",method=\"GET\"} 1"
        ));
    }

    #[test]
    fn unchecked_names_never_become_labels() {
        assert!(LeaseLabels::checked("../etc", "db").is_none());
        assert!(LeaseLabels::checked("role", "a b").is_none());
        let text = render(
            &[LiveLeaseCount {
                role_name: "bad\"name".into(),
                connection_name: "db".into(),
                active: 1,
                revoking: 0,
            }],
            &[WarmPoolCount {
                role_name: "bad\"name".into(),
                connection_name: "db".into(),
                ready: 1,
            }],
        );
        assert!(!text.contains("bad"), "{text}");
    }
}
