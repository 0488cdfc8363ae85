//! Warm pools (a role's `warm_pool_size`) end to end through the HTTP API, against the real
//! PostgreSQL and MariaDB: issuing from the pool (the login works, and is refused once revoked),
//! pooled users unable to log in before they are issued, refilling, draining on role writes,
//! deletes and revoke-prefix, pooled users of a dead replica dropped at start, reconciliation
//! leaving pooled users alone, and the field refused where no pool can be kept.

mod common;

use std::time::Duration;

use common::*;
use lessor::store::{PoolStore, PooledUser};
use lessor_plugin::{NewUserRequest, PasswordStrength, RoleOptions, Secret};
use reqwest::StatusCode;
use serde_json::json;

const READONLY: &str = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE pg_read_all_data;";

/// Long enough for a loaded machine to create a few users at full strength.
const FILL_LIMIT: Duration = Duration::from_secs(60);

/// The PostgreSQL roles whose name starts with `prefix`, with whether each may log in.
async fn pg_users(admin: &tokio_postgres::Client, prefix: &str) -> Vec<(String, bool)> {
    admin
        .query(
            "SELECT rolname::text, rolcanlogin FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY 1",
            &[&prefix],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// The names of the PostgreSQL roles `role` made (`v-<role>-...`), pooled or issued.
async fn pooled_names(admin: &tokio_postgres::Client, role: &str) -> Vec<String> {
    pg_users(admin, &format!("v-{role}-"))
        .await
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

async fn wait_until_ready(server: &TestServer, role: &str, size: usize) {
    let filled = eventually(FILL_LIMIT, || async {
        server.state.leases.warm_pool().ready(role) == size
    })
    .await;
    assert!(
        filled.is_some(),
        "the pool of {role} did not fill to {size} (has {})",
        server.state.leases.warm_pool().ready(role)
    );
}

async fn pg_server_with_pool(role: &str, size: u32) -> TestServer {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    server
        .write_role(
            role,
            json!({ "db_name": "pg", "creation_statements": [READONLY], "default_ttl": "1h",
                    "warm_pool_size": size }),
        )
        .await;
    server
}

/// Stops the server (which drops its pools) and checks no user of `role` is left.
async fn stop_and_check_nothing_left(server: TestServer, role: &str) {
    server.stop().await;
    let admin = pg_admin().await;
    assert_eq!(
        pg_users(&admin, &format!("v-{role}-")).await,
        vec![],
        "a stopped server leaves no pooled user"
    );
}

#[tokio::test]
async fn a_credential_from_the_pool_logs_in_and_is_refused_after_revocation() {
    let role = unique("pool");
    let server = pg_server_with_pool(&role, 3).await;
    let admin = pg_admin().await;
    wait_until_ready(&server, &role, 3).await;

    // Pooled users exist, cannot log in, and their expiry is already past.
    let pooled = pg_users(&admin, &format!("v-{role}-")).await;
    assert_eq!(pooled.len(), 3, "{pooled:?}");
    assert!(pooled.iter().all(|(_, can_login)| !can_login), "{pooled:?}");
    let (status, read) = server
        .call("GET", &format!("database/roles/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["data"]["warm_pool_size"], json!(3));
    assert_eq!(read["data"]["warm_pool_ready"], json!(3));
    let metrics = server
        .http
        .get(format!("{}/v1/sys/metrics?format=prometheus", server.base))
        .header("X-Vault-Token", ROOT_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "lessor_warm_pool_ready{{role=\"{role}\",connection=\"pg\"}} 3"
        )),
        "{metrics}"
    );

    let issued_before = server.state.leases.warm_pool().issued();
    let (lease_id, username, password) = server.creds(&role).await;
    assert_eq!(
        server.state.leases.warm_pool().issued(),
        issued_before + 1,
        "the credential came from the pool"
    );
    assert!(
        pooled.iter().any(|(name, _)| *name == username),
        "{username} was one of the pooled users"
    );
    let client = pg_login(&username, &password)
        .await
        .expect("a credential from the pool logs in");
    client.simple_query("SELECT 1").await.unwrap();
    // The database enforces the lease's expiry, set at activation, about an hour ahead.
    let until: Option<std::time::SystemTime> = admin
        .query_one(
            "SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1",
            &[&username],
        )
        .await
        .unwrap()
        .get(0);
    let ahead = until
        .unwrap()
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(ahead > Duration::from_secs(3500), "{ahead:?}");
    // It is a lease like any other.
    let (status, lookup) = server
        .call(
            "PUT",
            "sys/leases/lookup",
            Some(json!({ "lease_id": lease_id })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{lookup}");
    assert_eq!(lookup["data"]["username"], json!(username));

    // The pool refills in the background.
    wait_until_ready(&server, &role, 3).await;

    server.revoke_lease(&lease_id).await;
    assert!(pg_login(&username, &password).await.is_err());
    assert!(!pg_role_exists(&admin, &username).await);

    // Pooled users are not leases: LIST shows only issued ones.
    let (_, listed) = server
        .call(
            "LIST",
            &format!("sys/leases/lookup/database/creds/{role}"),
            None,
        )
        .await;
    assert_eq!(
        listed["data"]["keys"].as_array().map_or(0, Vec::len),
        0,
        "{listed}"
    );
    stop_and_check_nothing_left(server, &role).await;
}

#[tokio::test]
async fn a_burst_drains_the_pool_then_falls_back_to_creating_users() {
    let role = unique("burst");
    let server = pg_server_with_pool(&role, 4).await;
    wait_until_ready(&server, &role, 4).await;
    let issued_before = server.state.leases.warm_pool().issued();
    let issued = futures::future::join_all((0..10).map(|_| server.creds(&role))).await;
    let from_pool = server.state.leases.warm_pool().issued() - issued_before;
    assert!(
        (4..=10).contains(&from_pool),
        "at least the ready users were issued: {from_pool}"
    );
    for (_, username, password) in &issued {
        pg_login(username, password)
            .await
            .expect("every credential of the burst logs in");
    }
    server.revoke_everything().await;
    for (_, username, password) in &issued {
        assert!(pg_login(username, password).await.is_err());
    }
    stop_and_check_nothing_left(server, &role).await;
}

#[tokio::test]
async fn rewriting_or_deleting_the_role_drains_its_pool() {
    let role = unique("drain");
    let server = pg_server_with_pool(&role, 2).await;
    let admin = pg_admin().await;
    wait_until_ready(&server, &role, 2).await;
    let first = pooled_names(&admin, &role).await;
    assert_eq!(first.len(), 2);

    // Only the size changes: the users are kept.
    server
        .write_role(&role, json!({ "warm_pool_size": 3 }))
        .await;
    wait_until_ready(&server, &role, 3).await;
    for name in &first {
        assert!(pg_role_exists(&admin, name).await, "{name} was kept");
    }

    // New statements: the users made under the old ones are gone when the write answers.
    let granted = READONLY.replace(" IN ROLE pg_read_all_data", "");
    server
        .write_role(&role, json!({ "creation_statements": [granted] }))
        .await;
    for name in &first {
        assert!(!pg_role_exists(&admin, name).await, "{name} was drained");
    }
    wait_until_ready(&server, &role, 3).await;
    let (_, username, _) = server.creds(&role).await;
    let member: bool = admin
        .query_one(
            "SELECT pg_has_role($1, 'pg_read_all_data', 'MEMBER')",
            &[&username],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!member, "a credential after the rewrite has the new grants");
    server.revoke_everything().await;

    // Size 0: no pool.
    wait_until_ready(&server, &role, 3).await;
    server
        .write_role(&role, json!({ "warm_pool_size": 0 }))
        .await;
    assert_eq!(pg_users(&admin, &format!("v-{role}-")).await, vec![]);

    // Deleting the role drains it too.
    server
        .write_role(&role, json!({ "warm_pool_size": 2 }))
        .await;
    wait_until_ready(&server, &role, 2).await;
    let (status, _) = server
        .call("DELETE", &format!("database/roles/{role}"), None)
        .await;
    assert!(status.is_success());
    assert_eq!(pg_users(&admin, &format!("v-{role}-")).await, vec![]);
    assert_eq!(server.state.store.count_pooled_users().await.unwrap(), 0);
    stop_and_check_nothing_left(server, &role).await;
}

/// Rewriting a connection drops the pooled users made through it (the pools refill); a
/// connection whose roles keep pools can be deleted: the pooled users go first, and none is made
/// for a role whose connection is gone.
#[tokio::test]
async fn rewriting_or_deleting_the_connection_drops_its_pools() {
    let role = unique("conn");
    let server = TestServer::start().await;
    let admin = pg_admin().await;
    server.add_postgres("pgdel").await;
    server
        .write_role(
            &role,
            json!({ "db_name": "pgdel", "creation_statements": [READONLY], "warm_pool_size": 2 }),
        )
        .await;
    wait_until_ready(&server, &role, 2).await;
    // Rewriting the connection drops the users made through it as it was; the pool refills.
    let before = pooled_names(&admin, &role).await;
    assert_eq!(before.len(), 2);
    server.add_postgres("pgdel").await;
    for name in &before {
        assert!(!pg_role_exists(&admin, name).await, "{name} was dropped");
    }
    wait_until_ready(&server, &role, 2).await;
    // Rewrites back to back, then the delete, each while the pool is refilling after the one
    // before. The refill is paused from each drain to its write, so the delete must find nothing
    // pooled and succeed the first time. (Once, under load, a creation landing between the
    // drain and the delete made it fail; this does not force that timing, it only gives it more
    // chances.)
    for _ in 0..3 {
        server.add_postgres("pgdel").await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (status, body) = server.call("DELETE", "database/config/pgdel", None).await;
    assert!(status.is_success(), "{status} {body}");
    assert_eq!(pg_users(&admin, &format!("v-{role}-")).await, vec![]);
    assert_eq!(server.state.store.count_pooled_users().await.unwrap(), 0);
    // The role outlives its connection; its pool stays empty.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(server.state.leases.warm_pool().ready(&role), 0);
    assert_eq!(pg_users(&admin, &format!("v-{role}-")).await, vec![]);
    stop_and_check_nothing_left(server, &role).await;
}

#[tokio::test]
async fn revoke_prefix_drops_pooled_users_and_the_pool_refills_with_new_ones() {
    let role = unique("leak");
    let server = pg_server_with_pool(&role, 2).await;
    let admin = pg_admin().await;
    wait_until_ready(&server, &role, 2).await;
    let (_, issued, password) = server.creds(&role).await;
    wait_until_ready(&server, &role, 2).await;
    let pooled: Vec<String> = pooled_names(&admin, &role)
        .await
        .into_iter()
        .filter(|name| *name != issued)
        .collect();
    assert_eq!(pooled.len(), 2);

    let (status, body) = server
        .call(
            "PUT",
            &format!("sys/leases/revoke-prefix/database/creds/{role}"),
            None,
        )
        .await;
    assert!(status.is_success(), "{body}");
    assert!(pg_login(&issued, &password).await.is_err());
    for name in pooled.iter().chain([&issued]) {
        assert!(!pg_role_exists(&admin, name).await, "{name} is gone");
    }
    wait_until_ready(&server, &role, 2).await;
    let refilled = pg_users(&admin, &format!("v-{role}-")).await;
    assert_eq!(refilled.len(), 2);
    assert!(refilled.iter().all(|(name, _)| !pooled.contains(name)));
    stop_and_check_nothing_left(server, &role).await;
}

#[tokio::test]
async fn pooled_users_of_a_dead_replica_are_dropped_at_start_and_the_pool_refills() {
    let dir = tempfile::tempdir().unwrap();
    let role = unique("restart");
    let admin = pg_admin().await;
    let server = TestServer::start_in(dir.path()).await;
    server.add_postgres("pg").await;
    server
        .write_role(
            &role,
            json!({ "db_name": "pg", "creation_statements": [READONLY], "warm_pool_size": 2 }),
        )
        .await;
    wait_until_ready(&server, &role, 2).await;
    // What a process that died with a full pool leaves: a recorded pooled user, created unable
    // to log in, held by a replica that no longer runs (its password died with it).
    let orphan = format!("v-{role}-orphan");
    let plugin = server.state.engines.get("pg").await.unwrap();
    server
        .state
        .store
        .insert_pooled_user(&PooledUser {
            id: format!("database/creds/{role}/orphan"),
            role_name: role.clone(),
            connection_name: "pg".into(),
            username: orphan.clone(),
            revocation_statements: vec![],
            created_at: chrono::Utc::now(),
            claimed_by: "a-replica-that-died".into(),
        })
        .await
        .unwrap();
    plugin
        .create_pooled_user(&NewUserRequest {
            username: &orphan,
            password: &Secret::new("Orphan-password-12345678"),
            password_strength: PasswordStrength::Guessable,
            expiration: chrono::Utc::now(),
            statements: &[],
            options: &RoleOptions::new(),
            database: None,
        })
        .await
        .unwrap();
    drop(plugin);
    // A clean stop drops this process's own pooled users; the orphan's replica is not this one.
    server.stop().await;
    let left = pg_users(&admin, &format!("v-{role}-")).await;
    assert_eq!(left, vec![(orphan.clone(), false)]);

    let server = TestServer::start_in(dir.path()).await;
    let gone = eventually(FILL_LIMIT, || async {
        !pg_role_exists(&admin, &orphan).await
    })
    .await;
    assert!(gone.is_some(), "the dead replica's pooled user is dropped");
    wait_until_ready(&server, &role, 2).await;
    assert_eq!(server.state.store.count_pooled_users().await.unwrap(), 2);
    let (_, username, password) = server.creds(&role).await;
    pg_login(&username, &password)
        .await
        .expect("issued after restart");
    server.revoke_everything().await;
    stop_and_check_nothing_left(server, &role).await;
}

/// Two replicas on one PostgreSQL store: each keeps its own pool (passwords never leave the
/// process that made them) and issues from it; a role rewrite on one drops the other's pooled
/// users too, and both refill with users of the new version; a clean stop of one drops only its
/// own.
#[tokio::test]
async fn replicas_keep_their_own_pools_and_a_rewrite_on_one_drains_all() {
    let store = StoreDatabase::create().await;
    let role = unique("shared");
    let prefix = format!("v-{role}-");
    let admin = pg_admin().await;
    let a = TestServer::start_on(&store, |_| {}).await;
    let b = TestServer::start_on(&store, |_| {}).await;
    a.add_postgres("pg").await;
    a.write_role(
        &role,
        json!({ "db_name": "pg", "creation_statements": [READONLY], "warm_pool_size": 2 }),
    )
    .await;
    wait_until_ready(&a, &role, 2).await;
    wait_until_ready(&b, &role, 2).await;
    assert_eq!(a.state.store.count_pooled_users().await.unwrap(), 4);
    let first: Vec<String> = pg_users(&admin, &prefix)
        .await
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(first.len(), 4);

    let before = b.state.leases.warm_pool().issued();
    let (_, username, password) = b.creds(&role).await;
    assert_eq!(b.state.leases.warm_pool().issued(), before + 1);
    pg_login(&username, &password)
        .await
        .expect("issued by b from its pool");

    let plain = READONLY.replace(" IN ROLE pg_read_all_data", "");
    a.write_role(&role, json!({ "creation_statements": [plain] }))
        .await;
    for name in first.iter().filter(|name| **name != username) {
        assert!(!pg_role_exists(&admin, name).await, "{name} was drained");
    }
    wait_until_ready(&a, &role, 2).await;
    wait_until_ready(&b, &role, 2).await;
    let (_, username, _) = b.creds(&role).await;
    let member: bool = admin
        .query_one(
            "SELECT pg_has_role($1, 'pg_read_all_data', 'MEMBER')",
            &[&username],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!member, "b issues users of the new version");

    // A revoke-prefix on a drops b's pooled users too; b notices at its next tidy pass (within
    // seconds) and refills.
    a.revoke_everything().await;
    let refilled = eventually(FILL_LIMIT, || async {
        b.state.store.count_pooled_users().await.unwrap() == 4
            && pg_users(&admin, &prefix).await.len() == 4
            && b.state.leases.warm_pool().ready(&role) == 2
    })
    .await;
    assert!(
        refilled.is_some(),
        "both pools refilled after the revoke-prefix"
    );
    wait_until_ready(&a, &role, 2).await;
    a.stop().await;
    assert_eq!(
        pg_users(&admin, &prefix).await.len(),
        2,
        "a clean stop drops only the stopping replica's pooled users"
    );
    b.stop().await;
    assert_eq!(pg_users(&admin, &prefix).await, vec![]);
    store.drop_now().await;
}

#[tokio::test]
async fn reconciliation_leaves_pooled_users_alone() {
    let role = unique("recon");
    let server = pg_server_with_pool(&role, 2).await;
    let admin = pg_admin().await;
    wait_until_ready(&server, &role, 2).await;
    for _ in 0..2 {
        let (status, body) = server
            .call(
                "PUT",
                "sys/leases/reconcile",
                Some(json!({ "dry_run": false })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let text = body.to_string();
        assert!(!text.contains(&format!("v-{role}-")), "{body}");
    }
    assert_eq!(pg_users(&admin, &format!("v-{role}-")).await.len(), 2);
    assert_eq!(server.state.leases.warm_pool().ready(&role), 2);
    stop_and_check_nothing_left(server, &role).await;
}

/// A password policy rewritten drains the pools of the connections that generate by it (their
/// users' passwords were made under the old rules), and the refilled pool's passwords follow the
/// new ones: the credential issued from it has the new length and alphabet, logs in, and is
/// refused after revocation.
#[tokio::test]
async fn rewriting_a_password_policy_drains_the_pools_that_generate_by_it() {
    let role = unique("ppol");
    let policy = unique("ppol");
    let server = TestServer::start().await;
    let admin = pg_admin().await;
    let policy_text = |length: u32, charset: &str| {
        format!("length = {length}\nrule \"charset\" {{\n  charset = \"{charset}\"\n}}\n")
    };
    server
        .write_password_policy(
            &policy,
            &policy_text(24, "abcdefghijklmnopqrstuvwxyz0123456789"),
        )
        .await;
    server
        .add_connection(
            "pgpol",
            json!({ "plugin_name": "postgresql-database-plugin", "connection_url": postgres_url(),
                    "allowed_roles": "*", "password_policy": policy }),
        )
        .await;
    server
        .write_role(
            &role,
            json!({ "db_name": "pgpol", "creation_statements": [READONLY], "warm_pool_size": 2 }),
        )
        .await;
    wait_until_ready(&server, &role, 2).await;
    let before = pooled_names(&admin, &role).await;
    assert_eq!(before.len(), 2);

    const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    server
        .write_password_policy(&policy, &policy_text(40, UPPER))
        .await;
    for name in &before {
        assert!(!pg_role_exists(&admin, name).await, "{name} was dropped");
    }
    wait_until_ready(&server, &role, 2).await;
    let issued_before = server.state.leases.warm_pool().issued();
    let (lease, username, password) = server.creds(&role).await;
    assert_eq!(
        server.state.leases.warm_pool().issued(),
        issued_before + 1,
        "the credential came from the refilled pool"
    );
    assert!(!before.contains(&username), "{username} was drained");
    assert_eq!(password.len(), 40, "the new policy's length");
    assert!(
        password.chars().all(|c| UPPER.contains(c)),
        "the new policy's alphabet"
    );
    pg_login(&username, &password)
        .await
        .expect("the login works");
    server.revoke_lease(&lease).await;
    assert!(pg_login(&username, &password).await.is_err());
    assert!(!pg_role_exists(&admin, &username).await);
    stop_and_check_nothing_left(server, &role).await;
}

/// A pooled user is named before anybody asks for it, so a role whose username template uses
/// the requester's display name (in either syntax) cannot keep a pool; the same template
/// without a pool is fine.
#[tokio::test]
async fn a_pool_is_refused_for_a_template_with_the_display_name() {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    let role = unique("dn");
    for template in [
        "v-{{display_name}}-{{random}}",
        "{{.DisplayName | truncate 8}}_{{random 20}}",
    ] {
        let (status, answer) = server
            .call(
                "POST",
                &format!("database/roles/{role}"),
                Some(
                    json!({ "db_name": "pg", "warm_pool_size": 1, "username_template": template }),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{template}: {answer}");
        assert!(
            answer.to_string().contains("warm_pool_size")
                && answer.to_string().contains("display name"),
            "{answer}"
        );
    }
    let (status, _) = server
        .call("GET", &format!("database/roles/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no refused role was written");
    server
        .write_role(
            &role,
            json!({ "db_name": "pg", "creation_statements": [READONLY],
                    "username_template": "v-{{display_name}}-{{random}}" }),
        )
        .await;
    server.stop().await;
}

#[tokio::test]
async fn warm_pool_size_is_refused_out_of_range_with_databases_per_lease_and_on_redis() {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    let role = unique("bad");
    for body in [
        json!({ "db_name": "pg", "warm_pool_size": 1001 }),
        json!({ "db_name": "pg", "warm_pool_size": -1 }),
        json!({ "db_name": "pg", "warm_pool_size": "many" }),
        json!({ "db_name": "pg", "warm_pool_size": 2, "database_per_lease": true }),
    ] {
        let (status, answer) = server
            .call(
                "POST",
                &format!("database/roles/{role}"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer.to_string().contains("warm_pool_size"), "{answer}");
    }
    let (status, _) = server
        .call("GET", &format!("database/roles/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no refused role was written");

    // Redis keeps no pool.
    let redis =
        std::env::var("LESSOR_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let address = redis.trim_start_matches("redis://");
    let (host, port) = address.rsplit_once(':').unwrap();
    server
        .add_connection(
            "rd",
            json!({ "plugin_name": "redis-database-plugin", "host": host,
                    "port": port.parse::<u16>().unwrap(), "tls": false, "allowed_roles": "*" }),
        )
        .await;
    let (status, answer) = server
        .call(
            "POST",
            &format!("database/roles/{role}"),
            Some(json!({ "db_name": "rd", "warm_pool_size": 1 })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.to_string().contains("warm_pool_size"), "{answer}");
    server.stop().await;
}

mod mariadb {
    use super::*;

    fn admin_opts() -> mysql_async::Opts {
        mysql_async::Opts::from_url(&mysql_url()).unwrap()
    }

    async fn mysql_login(user: &str, password: &str) -> Result<(), mysql_async::Error> {
        use mysql_async::prelude::Queryable;
        let admin = admin_opts();
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(admin.ip_or_hostname().to_owned())
            .tcp_port(admin.tcp_port())
            .prefer_socket(false)
            .user(Some(user))
            .pass(Some(password));
        let mut conn = mysql_async::Conn::new(opts).await?;
        conn.query_drop("SELECT 1").await?;
        conn.disconnect().await
    }

    async fn mysql_users(prefix: &str) -> Vec<String> {
        use mysql_async::prelude::Queryable;
        let mut admin = mysql_async::Conn::new(admin_opts()).await.unwrap();
        let users: Vec<String> = admin
            .exec(
                "SELECT User FROM mysql.user WHERE User LIKE CONCAT(?, '%') ORDER BY User",
                (prefix,),
            )
            .await
            .unwrap();
        admin.disconnect().await.unwrap();
        users
    }

    #[tokio::test]
    async fn a_credential_from_a_mariadb_pool_logs_in_and_is_refused_after_revocation() {
        let server = TestServer::start().await;
        server.add_mysql("my").await;
        let role = unique("mpool");
        server
            .write_role(
                &role,
                json!({ "db_name": "my", "default_ttl": "1h", "warm_pool_size": 2 }),
            )
            .await;
        wait_until_ready(&server, &role, 2).await;
        let prefix = format!("v-{role}-");
        assert_eq!(mysql_users(&prefix).await.len(), 2);

        let issued_before = server.state.leases.warm_pool().issued();
        let (lease_id, username, password) = server.creds(&role).await;
        assert_eq!(server.state.leases.warm_pool().issued(), issued_before + 1);
        mysql_login(&username, &password)
            .await
            .expect("a credential from the pool logs in");
        server.revoke_lease(&lease_id).await;
        assert!(mysql_login(&username, &password).await.is_err());
        assert!(!mysql_users(&prefix).await.contains(&username));
        server.stop().await;
        assert_eq!(mysql_users(&prefix).await, Vec::<String>::new());
    }
}
