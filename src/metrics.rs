//! Prometheus metrics, hand-rolled: a few counters and one latency histogram do not justify a
//! metrics framework, and the text exposition format is simple.
//!
//! Counters are process-wide (the lease manager, the reaper, the rotator and the gate all bump
//! them through the free functions here, without threading a handle through every call); gauges
//! such as active leases are read from the store when scraped, so they are right across restarts
//! and replicas. `sys/metrics?format=prometheus` renders [`render`].

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Upper bounds (seconds) of the request latency buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A counter's identity: metric name and its label pairs.
type CounterKey = (&'static str, Vec<(&'static str, String)>);

#[derive(Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Registry {
    counters: BTreeMap<CounterKey, u64>,
    /// (route template, method) -> latency.
    latency: BTreeMap<(String, String), Histogram>,
}

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Help text of each counter, in exposition order.
const COUNTERS: &[(&str, &str)] = &[
    ("lessor_leases_issued_total", "Dynamic credentials issued."),
    (
        "lessor_reconcile_findings_total",
        "Reconciliation findings, by outcome (dropped, suspect, lookalike, ...).",
    ),
    (
        "lessor_leases_renewed_total",
        "Lease renewals that succeeded.",
    ),
    (
        "lessor_leases_revoked_total",
        "Leases revoked (on request, by prefix, or at expiry).",
    ),
    (
        "lessor_revocation_failures_total",
        "Revocation attempts that failed and will be retried.",
    ),
    (
        "lessor_rotations_total",
        "Password rotations of static roles and admin credentials, by outcome.",
    ),
    ("lessor_alerts_total", "Anomaly alerts raised, by rule."),
    (
        "lessor_audit_failures_total",
        "Requests refused because no audit device could record them.",
    ),
];

fn bump(name: &'static str, labels: Vec<(&'static str, String)>) {
    *registry().counters.entry((name, labels)).or_default() += 1;
}

pub fn lease_issued() {
    bump("lessor_leases_issued_total", vec![]);
}

pub fn lease_renewed() {
    bump("lessor_leases_renewed_total", vec![]);
}

pub fn lease_revoked() {
    bump("lessor_leases_revoked_total", vec![]);
}

pub fn revocation_failed() {
    bump("lessor_revocation_failures_total", vec![]);
}

/// For the rotator: `outcome` is a short fixed word such as `success` or `failure`.
pub fn record_rotation(outcome: &str) {
    bump(
        "lessor_rotations_total",
        vec![("outcome", outcome.to_owned())],
    );
}

/// For reconciliation: one finding, `outcome` a fixed word (`dropped`, `suspect`, `lookalike`...).
pub fn reconcile_finding(outcome: &'static str) {
    bump(
        "lessor_reconcile_findings_total",
        vec![("outcome", outcome.to_owned())],
    );
}

pub fn alert_raised(rule: &str) {
    bump("lessor_alerts_total", vec![("rule", rule.to_owned())]);
}

pub fn audit_failed() {
    bump("lessor_audit_failures_total", vec![]);
}

/// Records one request's latency under its route template (`/v1/database/creds/{name}`), never the
/// raw path, so the number of series stays bounded.
pub fn observe_request(route: &str, method: &str, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    let mut registry = registry();
    let histogram = registry
        .latency
        .entry((route.to_owned(), method.to_owned()))
        .or_default();
    for (bucket, bound) in histogram.buckets.iter_mut().zip(LATENCY_BUCKETS) {
        if secs <= bound {
            *bucket += 1;
        }
    }
    histogram.count += 1;
    histogram.sum += secs;
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Gauges read at scrape time.
#[derive(Debug, Default)]
pub struct Gauges {
    pub active_leases: i64,
    pub revoking_leases: i64,
}

/// The text exposition format (version 0.0.4).
pub fn render(gauges: &Gauges) -> String {
    let registry = registry();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP lessor_leases_active Leases whose credential is live."
    );
    let _ = writeln!(out, "# TYPE lessor_leases_active gauge");
    let _ = writeln!(out, "lessor_leases_active {}", gauges.active_leases);
    let _ = writeln!(
        out,
        "# HELP lessor_leases_revoking Leases whose revocation has begun and not yet succeeded."
    );
    let _ = writeln!(out, "# TYPE lessor_leases_revoking gauge");
    let _ = writeln!(out, "lessor_leases_revoking {}", gauges.revoking_leases);
    for (name, help) in COUNTERS {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let series: Vec<_> = registry
            .counters
            .iter()
            .filter(|((n, _), _)| n == name)
            .collect();
        if series.is_empty()
            && !matches!(
                *name,
                "lessor_rotations_total"
                    | "lessor_alerts_total"
                    | "lessor_reconcile_findings_total"
            )
        {
            let _ = writeln!(out, "{name} 0");
        }
        for ((_, pairs), value) in series {
            let _ = writeln!(out, "{name}{} {value}", labels(pairs));
        }
    }
    let name = "lessor_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time to answer a request, by route template and method."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for ((route, method), histogram) in &registry.latency {
        let base = [("route", route.clone()), ("method", method.clone())];
        for (bound, count) in LATENCY_BUCKETS.iter().zip(histogram.buckets) {
            let mut pairs = base.to_vec();
            pairs.push(("le", bound.to_string()));
            let _ = writeln!(out, "{name}_bucket{} {count}", labels(&pairs));
        }
        let mut pairs = base.to_vec();
        pairs.push(("le", "+Inf".into()));
        let _ = writeln!(out, "{name}_bucket{} {}", labels(&pairs), histogram.count);
        let _ = writeln!(out, "{name}_sum{} {}", labels(&base), histogram.sum);
        let _ = writeln!(out, "{name}_count{} {}", labels(&base), histogram.count);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_counters_and_cumulative_buckets() {
        lease_issued();
        record_rotation("success");
        observe_request("/v1/unit/{name}", "GET", Duration::from_millis(30));
        let text = render(&Gauges {
            active_leases: 3,
            revoking_leases: 0,
        });
        assert!(text.contains("lessor_leases_active 3"));
        assert!(text.contains("lessor_rotations_total{outcome=\"success\"}"));
        assert!(text.contains("lessor_request_duration_seconds_bucket{route=\"/v1/unit/{name}\",method=\"GET\",le=\"0.025\"} 0"));
        assert!(text.contains("lessor_request_duration_seconds_bucket{route=\"/v1/unit/{name}\",method=\"GET\",le=\"0.05\"} 1"));
        assert!(text.contains(
            "lessor_request_duration_seconds_count{route=\"/v1/unit/{name}\",method=\"GET\"} 1"
        ));
        assert_eq!(escape("a\"b\\"), "a\\\"b\\\\");
    }
}
