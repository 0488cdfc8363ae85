//! The Docker packaging (issue 12, item 8), checked without a Docker engine: the Dockerfile read
//! as text, docker-compose.yml parsed as YAML. What a user relies on: the image does not run as
//! root, its health check asks the real health endpoint, `docker compose up` does not collide
//! with databases or a Lessor already on the machine, and every setting the packaging passes is
//! one Lessor reads (an unknown `LESSOR_*` is only a warning, so a typo would go unnoticed).

use std::collections::BTreeMap;

use lessor::config::{self, is_known_env, Overrides};
use serde_yaml::Value;

/// Ports a developer's machine already uses: local PostgreSQL, MySQL/MariaDB and `lessor dev`.
const LOCAL_PORTS: [u16; 4] = [5432, 3306, 6379, 8200];

fn read(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions() -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
            (keyword.to_ascii_uppercase(), rest.trim().to_owned())
        })
        .collect()
}

/// The instructions of the last stage: what the shipped image is.
fn runtime_stage() -> Vec<(String, String)> {
    let all = instructions();
    let last_from = all.iter().rposition(|(k, _)| k == "FROM").expect("a FROM");
    all[last_from..].to_vec()
}

fn compose() -> Value {
    serde_yaml::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML")
}

fn services() -> serde_yaml::Mapping {
    compose()["services"]
        .as_mapping()
        .expect("services")
        .clone()
}

/// A service's `environment`, in either of compose's forms (a map, or a list of `K=V`).
fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Null => BTreeMap::new(),
        Value::Mapping(map) => map
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
                };
                (k.as_str().expect("a name").to_owned(), value)
            })
            .collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|item| {
                let (k, v) = item.as_str().expect("K=V").split_once('=').expect("K=V");
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        other => panic!("environment: unexpected {other:?}"),
    }
}

/// The host side of each published port (`"15432:5432"`, `"127.0.0.1:18200:8200"`, or the long
/// form with `published`).
fn host_ports(service: &Value) -> Vec<u16> {
    let Some(ports) = service["ports"].as_sequence() else {
        return vec![];
    };
    ports
        .iter()
        .map(|port| match port {
            Value::String(text) => {
                let parts: Vec<&str> = text.split('/').next().unwrap().split(':').collect();
                assert!(parts.len() >= 2, "{text}: publish a host port explicitly");
                parts[parts.len() - 2].parse().expect("a host port")
            }
            Value::Mapping(_) => match &port["published"] {
                Value::Number(n) => n.as_u64().unwrap() as u16,
                Value::String(s) => s.parse().unwrap(),
                other => panic!("published: {other:?}"),
            },
            other => panic!("ports: a container port alone gets a random host port: {other:?}"),
        })
        .collect()
}

#[test]
fn the_image_is_multi_stage_and_runs_lessor_server_as_a_non_root_user() {
    let all = instructions();
    let froms: Vec<&String> = all
        .iter()
        .filter(|(k, _)| k == "FROM")
        .map(|(_, v)| v)
        .collect();
    assert!(
        froms.len() >= 2,
        "a builder stage and a runtime stage: {froms:?}"
    );
    assert!(
        froms[0].starts_with("rust:"),
        "built in the Rust image: {froms:?}"
    );
    let runtime = runtime_stage();
    let base = &runtime[0].1;
    assert!(
        base.contains("-slim") || base.contains("distroless"),
        "a small runtime image, not the toolchain: {base}"
    );
    assert!(
        runtime
            .iter()
            .any(|(k, v)| k == "COPY" && v.contains("--from=")),
        "the runtime stage copies the binary from the builder"
    );

    // The last USER of the runtime stage is who the process runs as.
    let user = runtime
        .iter()
        .rev()
        .find(|(k, _)| k == "USER")
        .map(|(_, v)| v.clone())
        .expect("the runtime stage sets USER");
    let name = user.split(':').next().unwrap();
    assert!(
        !matches!(name, "root" | "0" | ""),
        "the image must not run as root: USER {user}"
    );

    let entrypoint = runtime
        .iter()
        .rev()
        .find(|(k, _)| k == "ENTRYPOINT")
        .map(|(_, v)| v.clone())
        .expect("ENTRYPOINT");
    let cmd = runtime
        .iter()
        .rev()
        .find(|(k, _)| k == "CMD")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let argv: Vec<String> = [entrypoint, cmd]
        .iter()
        .filter(|s| !s.is_empty())
        .flat_map(|s| serde_json::from_str::<Vec<String>>(s).expect("exec form (JSON)"))
        .collect();
    assert!(
        argv[0].ends_with("/lessor") || argv[0] == "lessor",
        "{argv:?}"
    );
    assert_eq!(argv[1], "server", "`lessor server` by default: {argv:?}");
}

#[test]
fn the_health_check_asks_the_health_endpoint() {
    let runtime = runtime_stage();
    let check = runtime
        .iter()
        .find(|(k, _)| k == "HEALTHCHECK")
        .map(|(_, v)| v.clone())
        .expect("a HEALTHCHECK in the runtime stage");
    assert!(check.contains("CMD"), "{check}");
    assert!(
        check.contains("127.0.0.1:8200/v1/sys/health"),
        "the health check polls sys/health on the listener's port: {check}"
    );
    // The port it polls is the one the image listens on.
    let env = image_environment();
    assert_eq!(
        env.get("LESSOR_LISTEN").map(String::as_str),
        Some("0.0.0.0:8200")
    );
    // sys/health is public: the check needs no token, so the image carries none.
    assert!(!check.to_ascii_lowercase().contains("token"), "{check}");
}

/// The `ENV` defaults of the runtime stage (`ENV K=V K2=V2` or `ENV K V`).
fn image_environment() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (_, rest) in runtime_stage().iter().filter(|(k, _)| k == "ENV") {
        if rest.contains('=') {
            for pair in rest.split_whitespace() {
                let (k, v) = pair.split_once('=').expect("K=V");
                env.insert(k.to_owned(), v.trim_matches('"').to_owned());
            }
        } else {
            let (k, v) = rest.split_once(char::is_whitespace).expect("ENV K V");
            env.insert(k.to_owned(), v.trim().to_owned());
        }
    }
    env
}

#[test]
fn the_image_defaults_are_settings_lessor_reads_and_accepts() {
    let env = image_environment();
    assert!(
        !env.is_empty(),
        "the image sets its listen address and store"
    );
    for name in env.keys() {
        assert!(
            is_known_env(name.as_str()),
            "Dockerfile ENV {name} is not a variable config.rs reads"
        );
    }
    // The values parse: the same loader the server runs.
    let pairs: Vec<(String, String)> = env.into_iter().collect();
    let settings = config::load(None, &pairs, &Overrides::default()).expect("the image's settings");
    assert_eq!(settings.listen.to_string(), "0.0.0.0:8200");
    assert!(settings.store_url.starts_with("/var/lib/lessor/"));
    // No TLS choice is baked in: the operator gives certificate files or asks for plain HTTP, and
    // until then the server refuses to start, saying so.
    let refused = settings.listener_security().unwrap_err().to_string();
    assert!(refused.contains("LESSOR_TLS_DISABLE"), "{refused}");
}

#[test]
fn compose_builds_the_image_and_does_not_compile_as_root() {
    let services = services();
    let lessor = services.get("lessor").expect("a lessor service").clone();
    assert!(
        !lessor["build"].is_null(),
        "the lessor service builds the Dockerfile's image"
    );
    let image = lessor["image"].as_str().unwrap_or("");
    assert!(
        !image.starts_with("rust"),
        "not compiled in a Rust image at start: {image}"
    );
    assert!(
        lessor["volumes"].is_null(),
        "no source tree mounted into it"
    );
    if let Some(user) = lessor["user"].as_str() {
        assert!(
            !matches!(user.split(':').next(), Some("root" | "0")),
            "user: {user}"
        );
    }
    let command: Vec<&str> = lessor["command"]
        .as_sequence()
        .expect("command as a list")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        !command.contains(&"cargo"),
        "runs the built binary: {command:?}"
    );
}

#[test]
fn compose_host_ports_leave_local_databases_and_lessor_alone() {
    let mut published = Vec::new();
    for (name, service) in services() {
        let name = name.as_str().unwrap().to_owned();
        for port in host_ports(&service) {
            assert!(
                !LOCAL_PORTS.contains(&port),
                "service {name} publishes host port {port}, which a local server uses"
            );
            assert!(
                !published.contains(&port),
                "host port {port} published twice"
            );
            published.push(port);
        }
    }
    assert_eq!(
        published.len(),
        4,
        "postgres, mysql, redis and lessor are reachable"
    );
}

#[test]
fn compose_passes_only_variables_lessor_knows_and_wires_them_to_its_services() {
    let services = services();
    let lessor = &services["lessor"];
    let env = environment(lessor);
    assert!(!env.is_empty());
    for name in env.keys() {
        assert!(
            is_known_env(name.as_str()),
            "compose passes {name} to lessor, a variable config.rs does not know"
        );
    }
    // Every LESSOR_* given to any service is known (a typo would be ignored with a warning).
    for (service, definition) in &services {
        for name in environment(definition).keys() {
            if name.starts_with("LESSOR_") {
                assert!(
                    is_known_env(name.as_str()),
                    "{service:?}: {name} is unknown"
                );
            }
        }
    }
    // The dev server registers the compose databases: its URLs name the services, their
    // containers' ports and the passwords those services are given.
    let postgres_password = environment(&services["postgres"])["POSTGRES_PASSWORD"].clone();
    let mysql_password = environment(&services["mysql"])["MYSQL_ROOT_PASSWORD"].clone();
    let pg = url::Url::parse(&env["LESSOR_DEV_POSTGRES_URL"]).unwrap();
    assert_eq!(pg.host_str(), Some("postgres"));
    assert_eq!(pg.port(), Some(5432));
    assert_eq!(pg.password(), Some(postgres_password.as_str()));
    let my = url::Url::parse(&env["LESSOR_DEV_MYSQL_URL"]).unwrap();
    assert_eq!(my.host_str(), Some("mysql"));
    assert_eq!(my.port(), Some(3306));
    assert_eq!(my.password(), Some(mysql_password.as_str()));
    let redis = url::Url::parse(&env["LESSOR_DEV_REDIS_URL"]).unwrap();
    assert_eq!(redis.host_str(), Some("redis"));
    assert_eq!(redis.port(), Some(6379));

    // Lessor listens on all interfaces, on the container port compose publishes.
    let command: Vec<&str> = lessor["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let listen = command
        .iter()
        .position(|a| *a == "--listen")
        .map(|i| command[i + 1])
        .expect("--listen");
    assert!(
        listen.starts_with("0.0.0.0:"),
        "reachable from the host: {listen}"
    );
    let container_port = listen.rsplit(':').next().unwrap();
    let ports = lessor["ports"].as_sequence().unwrap();
    assert!(
        ports.iter().any(|p| p
            .as_str()
            .is_some_and(|p| p.ends_with(&format!(":{container_port}")))),
        "compose publishes the port Lessor listens on ({container_port}): {ports:?}"
    );
    // The services Lessor needs are up before it registers them.
    for dependency in ["postgres", "mysql", "redis"] {
        assert_eq!(
            lessor["depends_on"][dependency]["condition"].as_str(),
            Some("service_healthy"),
            "{dependency}"
        );
    }
}
