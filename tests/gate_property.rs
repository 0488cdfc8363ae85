//! A property of the one decision point (issue 8): for generated paths, percent-encodings, path
//! noise and methods, whatever a handler actually did is something the caller's policy allows for
//! exactly that operation on exactly that path, and a clean request the policy allows is served.
//!
//! "What a handler did" is observed from outside, on the real store and database: a lease (and a
//! PostgreSQL user) appeared for a role, a role's definition was disclosed, changed, created or
//! deleted. The policy decision for that observed action comes from the policy engine itself, so
//! the property checks the mapping from request to (operation, path), which is where the bypasses
//! were, not the pattern matcher.

mod common;

use common::{pg_admin, unique, TestServer};
use lessor::auth::policy::Operation;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// One generated request.
#[derive(Debug, Clone)]
struct Case {
    /// `creds` or `roles`.
    kind: &'static str,
    /// Index into the fixture's names: allowed role, denied role, list-only role, a name that
    /// does not exist, the denied role in upper case.
    name: usize,
    method: &'static str,
    /// Which bytes of the path after `/v1/` are percent-encoded, and in which hex case.
    encode: Vec<bool>,
    upper_hex: bool,
    noise: Noise,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Noise {
    None,
    DoubleSlash,
    DotSegment,
    DotDot,
    TrailingSlash,
    DoubleEncoded,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just("creds"), Just("roles")],
        0..5usize,
        prop_oneof![
            Just("GET"),
            Just("GET?list=true"),
            Just("LIST"),
            Just("HEAD"),
            Just("POST"),
            Just("PUT"),
            Just("DELETE"),
            Just("PATCH"),
        ],
        proptest::collection::vec(any::<bool>(), 48),
        any::<bool>(),
        prop_oneof![
            4 => Just(Noise::None),
            1 => Just(Noise::DoubleSlash),
            1 => Just(Noise::DotSegment),
            1 => Just(Noise::DotDot),
            1 => Just(Noise::TrailingSlash),
            1 => Just(Noise::DoubleEncoded),
        ],
    )
        .prop_map(|(kind, name, method, encode, upper_hex, noise)| Case {
            kind,
            name,
            method,
            encode,
            upper_hex,
            noise,
        })
}

/// The server, its roles and a token whose policy allows some things on some of them.
struct Fixture {
    server: TestServer,
    token: String,
    acl: std::sync::Arc<lessor::auth::policy::Acl>,
    /// allowed, denied, list-only, missing, denied in upper case.
    names: [String; 5],
    default_ttls: [u64; 3],
}

impl Fixture {
    async fn start() -> Self {
        let server = TestServer::start().await;
        server.add_postgres("pg").await;
        let allowed = unique("gp-ok");
        let denied = unique("gp-no");
        let list_only = unique("gp-list");
        let missing = unique("gp-none");
        let upper = denied.to_uppercase();
        let default_ttls = [600, 1200, 1800];
        for (role, ttl) in [(&allowed, 600), (&denied, 1200), (&list_only, 1800)] {
            server
                .write_role(
                    role,
                    json!({ "db_name": "pg", "default_ttl": ttl, "max_ttl": 3600 }),
                )
                .await;
        }
        let policy = format!(
            r#"path "database/creds/*" {{ capabilities = ["read"] }}
               path "database/creds/{denied}" {{ capabilities = ["deny"] }}
               path "database/creds/{list_only}" {{ capabilities = ["deny"] }}
               path "database/creds/{list_only}/" {{ capabilities = ["list"] }}
               path "database/roles/{allowed}" {{ capabilities = ["read", "update"] }}
               path "database/roles/{denied}" {{ capabilities = ["delete"] }}
               path "database/roles/*" {{ capabilities = ["list"] }}"#
        );
        let (status, body) = server
            .call(
                "PUT",
                "sys/policies/acl/gp",
                Some(json!({ "policy": policy })),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        let (status, answer) = server
            .call(
                "POST",
                "auth/token/create",
                Some(json!({ "policies": ["gp"], "no_default_policy": true })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let token = answer["auth"]["client_token"].as_str().unwrap().to_owned();
        let acl = server.state.policies.acl(&["gp".to_owned()]).await.unwrap();
        Self {
            server,
            token,
            acl,
            names: [allowed, denied, list_only, missing, upper],
            default_ttls,
        }
    }

    /// What the root token sees of every name: live leases, and the role's max_ttl if it exists.
    async fn observe(&self) -> Vec<(usize, Option<u64>)> {
        let mut seen = Vec::new();
        for name in &self.names {
            let (status, body) = self
                .server
                .call(
                    "LIST",
                    &format!("sys/leases/lookup/database/creds/{name}/"),
                    None,
                )
                .await;
            let leases = if status == StatusCode::OK {
                body["data"]["keys"].as_array().map_or(0, Vec::len)
            } else {
                0
            };
            let (status, body) = self
                .server
                .call("GET", &format!("database/roles/{name}"), None)
                .await;
            let max_ttl =
                (status == StatusCode::OK).then(|| body["data"]["max_ttl"].as_u64().unwrap());
            seen.push((leases, max_ttl));
        }
        seen
    }

    /// Puts the roles back as they were (a case may have changed or deleted one).
    async fn restore(&self) {
        for (index, ttl) in self.default_ttls.iter().enumerate() {
            self.server
                .write_role(
                    &self.names[index],
                    json!({ "db_name": "pg", "default_ttl": ttl, "max_ttl": 3600 }),
                )
                .await;
        }
        for name in &self.names[3..] {
            self.server
                .call("DELETE", &format!("database/roles/{name}"), None)
                .await;
        }
    }

    fn target(&self, case: &Case) -> String {
        let name = &self.names[case.name];
        let logical = format!("database/{}/{name}", case.kind);
        let mut encoded = String::new();
        for (index, byte) in logical.bytes().enumerate() {
            let encode = case.encode.get(index).copied().unwrap_or(false) && byte != b'/';
            match (encode, case.upper_hex) {
                (false, _) => encoded.push(byte as char),
                (true, true) => encoded.push_str(&format!("%{byte:02X}")),
                (true, false) => encoded.push_str(&format!("%{byte:02x}")),
            }
        }
        let path = match case.noise {
            Noise::None => encoded,
            Noise::DoubleSlash => encoded.replacen('/', "//", 1),
            Noise::DotSegment => encoded.replacen('/', "/./", 1),
            Noise::DotDot => format!("database/x/../{}/{name}", case.kind),
            Noise::TrailingSlash => format!("{encoded}/"),
            Noise::DoubleEncoded => format!(
                "database/{}/%25{:02X}{}",
                case.kind,
                name.as_bytes()[0],
                &name[1..]
            ),
        };
        let query = if case.method == "GET?list=true" {
            "?list=true"
        } else {
            ""
        };
        format!("/v1/{path}{query}")
    }

    async fn check(&self, case: Case, serial: u64) -> Result<(), String> {
        let before = self.observe().await;
        let target = self.target(&case);
        let method = case.method.trim_end_matches("?list=true");
        let body = json!({ "db_name": "pg", "default_ttl": 60, "max_ttl": 1800 + serial % 1000 });
        let (status, answer) = send(&self.server, method, &target, &self.token, &body).await;
        let after = self.observe().await;

        // What the handlers did, seen from outside: (operation, canonical path).
        let mut served: Vec<(Operation, String)> = Vec::new();
        for (index, name) in self.names.iter().enumerate() {
            let ((leases_before, role_before), (leases_after, role_after)) =
                (before[index], after[index]);
            if leases_after > leases_before {
                served.push((Operation::Read, format!("database/creds/{name}")));
            }
            match (role_before, role_after) {
                (Some(_), None) => {
                    served.push((Operation::Delete, format!("database/roles/{name}")))
                }
                (None, Some(_)) => {
                    served.push((Operation::Write, format!("database/roles/{name}")))
                }
                (Some(a), Some(b)) if a != b => {
                    served.push((Operation::Write, format!("database/roles/{name}")))
                }
                _ => {}
            }
        }
        if status == 200 {
            if let Ok(value) = serde_json::from_str::<Value>(&answer) {
                if let Some(ttl) = value["data"]["default_ttl"].as_u64() {
                    let index = self
                        .default_ttls
                        .iter()
                        .position(|t| *t == ttl)
                        .unwrap_or(2);
                    served.push((
                        Operation::Read,
                        format!("database/roles/{}", self.names[index]),
                    ));
                }
                if value["data"]["keys"].is_array() {
                    served.push((Operation::List, format!("database/{}/", case.kind)));
                }
            }
        }
        self.restore().await;

        // Safety: everything served is allowed for exactly that operation and path.
        for (operation, path) in &served {
            if !self.acl.allows(path, *operation) {
                return Err(format!(
                    "{method} {target} -> {status}: served {operation:?} on {path}, which the policy does not allow"
                ));
            }
        }
        // Liveness: a clean request for an existing role with the route's own method is served
        // exactly when the policy allows it, and refused with 403 otherwise.
        let clean = case.noise == Noise::None && case.name < 3;
        let operation = match (case.kind, method) {
            ("creds", "GET") if case.method == "GET" => Some(Operation::Read),
            ("roles", "GET") if case.method == "GET" => Some(Operation::Read),
            ("roles", "POST" | "PUT") => Some(Operation::Write),
            ("roles", "DELETE") => Some(Operation::Delete),
            _ => None,
        };
        if let (true, Some(operation)) = (clean, operation) {
            let path = format!("database/{}/{}", case.kind, self.names[case.name]);
            let allowed = self.acl.allows(&path, operation);
            let expected = if allowed {
                served.iter().any(|(o, p)| *o == operation && *p == path)
            } else {
                status == 403
            };
            if !expected {
                return Err(format!(
                    "{method} {target} -> {status} {answer}: the policy {} {operation:?} on {path}",
                    if allowed { "allows" } else { "refuses" }
                ));
            }
        }
        // Whatever was refused was refused before anything ran.
        if !(200..300).contains(&status) && !served.is_empty() {
            return Err(format!(
                "{method} {target} -> {status}, yet {served:?} happened"
            ));
        }
        Ok(())
    }
}

/// One request over a raw connection, byte for byte.
async fn send(
    server: &TestServer,
    method: &str,
    target: &str,
    token: &str,
    body: &Value,
) -> (u16, String) {
    let body = if matches!(method, "POST" | "PUT" | "PATCH") {
        body.to_string()
    } else {
        String::new()
    };
    common::raw_request(server, method, target, &[("X-Vault-Token", token)], &body).await
}

#[test]
fn what_a_handler_serves_is_what_the_gate_allowed() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fixture = runtime.block_on(Fixture::start());
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let serial = std::sync::atomic::AtomicU64::new(0);
    let outcome = runner.run(&case_strategy(), |case| {
        let n = serial.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        runtime
            .block_on(fixture.check(case, n))
            .map_err(TestCaseError::fail)
    });
    // Whatever the outcome, drop every user this test was issued.
    runtime.block_on(async {
        let (status, body) = fixture
            .server
            .call("PUT", "sys/leases/revoke-prefix/database/creds", None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        let admin = pg_admin().await;
        for name in &fixture.names[..3] {
            let prefix = format!("v-{name}-");
            let left: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_roles WHERE left(rolname, length($1)) = $1",
                    &[&prefix],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(left, 0, "users of {name} left behind");
        }
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
