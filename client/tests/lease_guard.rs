//! `LeaseGuard` against an in-process Lessor and the real PostgreSQL: it keeps a short lease
//! alive past its TTL, stops renewing observably at the max TTL, and revokes on drop, when the
//! task holding it panics, and when a current-thread test runtime panics and unwinds.
//!
//! The in-process server needs a runtime that keeps serving while a dropped guard waits for its
//! revocation: these tests run on multi-thread runtimes, or serve from a runtime of their own.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use lessor_client::{Client, LeaseGuard, Renewal};
use serde_json::json;

const READONLY: &str = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE pg_read_all_data;";

async fn server_with_role(role: &str, default_ttl: &str, max_ttl: &str) -> TestServer {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    server
        .write_role(
            role,
            json!({ "db_name": "pg", "creation_statements": [READONLY], "default_ttl": default_ttl, "max_ttl": max_ttl }),
        )
        .await;
    server
}

fn client_of(server: &TestServer) -> Client {
    Client::new(server.base.clone(), ROOT_TOKEN).unwrap()
}

/// The user is gone and its password refused: what "revoked" means to a user of the guard.
async fn assert_revoked(username: &str, password: &str) {
    assert!(
        !pg_role_exists(&pg_admin().await, username).await,
        "the user {username} is gone"
    );
    assert!(pg_login(username, password).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_keeps_a_short_lease_alive_past_its_ttl_and_revokes_on_drop() {
    let role = unique("guard");
    let server = server_with_role(&role, "2s", "1h").await;
    let client = client_of(&server);
    let credential = client.creds(&role).await.unwrap();
    assert_eq!(credential.lease.duration, Duration::from_secs(2));
    let guard = LeaseGuard::new(&client, &credential.lease);
    // The control: the same lease without a guard.
    let unguarded = client.creds(&role).await.unwrap();

    // Three TTLs later: without renewal, VALID UNTIL refuses the login and the reaper has
    // dropped the user, as it did the control's.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let admin = pg_admin().await;
    assert!(
        !pg_role_exists(&admin, &unguarded.username).await,
        "the unguarded lease expired and its user was dropped"
    );
    assert!(pg_role_exists(&admin, &credential.username).await);
    pg_login(&credential.username, credential.password.expose())
        .await
        .expect("the renewed credential still logs in after three TTLs");
    let renewal = guard.renewal();
    assert!(renewal.is_active(), "{renewal:?}");
    assert!(renewal.expires_at() > Instant::now(), "{renewal:?}");

    let dropping = Instant::now();
    drop(guard);
    eprintln!(
        "dropping the guard revoked the lease in {:?}",
        dropping.elapsed()
    );
    // No waiting: the drop returns once Lessor has dropped the user.
    assert_revoked(&credential.username, credential.password.expose()).await;
    server.assert_logs_free_of(&[credential.password.expose()]);
    server.revoke_everything().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_stops_observably_at_the_max_ttl_and_revoke_reports_success() {
    let role = unique("guard-max");
    let server = server_with_role(&role, "2s", "3s").await;
    let client = client_of(&server);
    let credential = client.creds(&role).await.unwrap();
    let guard = LeaseGuard::new(&client, &credential.lease);

    let stopped = tokio::time::timeout(Duration::from_secs(10), guard.renewal_stopped())
        .await
        .expect("renewal stops within 10 s of a 3 s max TTL");
    assert!(
        matches!(stopped, Renewal::MaxTtlReached { .. }),
        "{stopped:?}"
    );
    assert!(matches!(guard.renewal(), Renewal::MaxTtlReached { .. }));

    guard.revoke().await.unwrap();
    assert_revoked(&credential.username, credential.password.expose()).await;
    server.revoke_everything().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_of_a_lease_revoked_behind_the_guards_back_fails_observably() {
    let role = unique("guard-gone");
    let server = server_with_role(&role, "2s", "1h").await;
    let client = client_of(&server);
    let credential = client.creds(&role).await.unwrap();
    let guard = LeaseGuard::new(&client, &credential.lease);
    client.revoke(&credential.lease.id).await.unwrap();

    let stopped = tokio::time::timeout(Duration::from_secs(10), guard.renewal_stopped())
        .await
        .expect("renewal stops at the first refused renewal");
    match &stopped {
        Renewal::Failed { error, .. } => assert_eq!(error.status(), Some(400), "{error}"),
        other => panic!("expected a failed renewal, got {other:?}"),
    }
    // Dropping it revokes again, which Lessor answers as done.
    drop(guard);
    server.revoke_everything().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_revokes_when_the_task_holding_it_panics() {
    let role = unique("guard-panic");
    let server = server_with_role(&role, "1h", "1h").await;
    let client = client_of(&server);
    let (issued, received) = tokio::sync::oneshot::channel();
    let task_role = role.clone();
    let task = tokio::spawn(async move {
        let credential = client.creds(&task_role).await.unwrap();
        let _guard = LeaseGuard::new(&client, &credential.lease);
        issued
            .send((credential.username.clone(), credential.password.clone()))
            .unwrap();
        pg_login(&credential.username, credential.password.expose())
            .await
            .unwrap();
        panic!("the test failed while holding the guard");
    });
    let outcome = task.await;
    assert!(outcome.unwrap_err().is_panic());
    let (username, password) = received.await.unwrap();
    assert_revoked(&username, password.expose()).await;
    server.revoke_everything().await;
}

/// The case that matters most to a test author: a plain `#[tokio::test]` (current-thread runtime)
/// talking to a Lessor elsewhere panics; its runtime is torn down while unwinding, yet the guard
/// dropped in that unwinding still revokes. Lessor here is served by a runtime of its own, as a
/// separate process would be.
#[test]
fn a_guard_revokes_when_a_current_thread_test_panics() {
    let lessor_runtime = tokio::runtime::Runtime::new().unwrap();
    let role = unique("guard-unwind");
    let server = lessor_runtime.block_on(server_with_role(&role, "1h", "1h"));
    let client = client_of(&server);
    let issued = std::sync::Mutex::new(None);

    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let test_runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        test_runtime.block_on(async {
            let credential = client.creds(&role).await.unwrap();
            let _guard = LeaseGuard::new(&client, &credential.lease);
            *issued.lock().unwrap() =
                Some((credential.username.clone(), credential.password.clone()));
            panic!("an assertion of the test failed");
        })
    }));
    assert!(outcome.is_err());
    let (username, password) = issued.lock().unwrap().take().unwrap();
    lessor_runtime.block_on(async move {
        assert_revoked(&username, password.expose()).await;
        server.revoke_everything().await;
        drop(server);
    });
}
