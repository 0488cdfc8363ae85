//! One suite for both stores: every check here runs against the embedded SQLite store and against
//! a throwaway PostgreSQL store, through the same `Store` methods the server uses. What one engine
//! does, the other must do too: lease states and claims, prefix ranges (bytewise, whatever the
//! database's collation), first-wins keys, token trees, wrapping's single use, and the claims that
//! keep replicas from doing the same work twice.

mod common;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::StoreDatabase;
use lessor::store::{
    CatalogStore, Claim, Connection, ConnectionDeletion, IdRange, IdentityStore, Lease, LeaseState,
    LeaseStore, MetaStore, PoolStore, PooledSelection, PooledUser, ReconcileStore, ReplicaStore,
    RotationStore, Store, WrappingStore,
};

/// Runs `check` on a fresh SQLite store, then on a fresh PostgreSQL store, dropping both after.
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = lessor::store::Store::open(&dir.path().join("lessor.db").display().to_string())
                        .await
                        .unwrap();
                    super::$name(&store).await;
                    store.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::on_postgres(super::$name).await;
                }
            )*
        }
    };
}

/// Runs `check` on a throwaway PostgreSQL store and drops the database even if `check` panics.
async fn on_postgres<F, Fut>(check: F)
where
    F: FnOnce(&'static Store) -> Fut,
    Fut: Future<Output = ()>,
{
    use futures::FutureExt;
    let database = StoreDatabase::create().await;
    let store: &'static Store = Box::leak(Box::new(Store::open(&database.url).await.unwrap()));
    let outcome = std::panic::AssertUnwindSafe(check(store))
        .catch_unwind()
        .await;
    store.close().await;
    database.drop_now().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

both_stores!(
    lease_writes_made_together_share_commits_and_fail_alone,
    prefix_ranges_match_whole_path_segments,
    a_connection_in_use_is_not_deleted_and_a_lease_needs_its_connection,
    lease_states_move_forward_only,
    claims_keep_replicas_apart_until_the_holder_dies,
    a_client_s_claim_reads_the_lease_it_takes_and_only_its_owner_s,
    a_creating_lease_is_left_to_a_live_issuer,
    the_first_value_stored_wins,
    token_trees_are_deleted_whole,
    a_wrapped_answer_is_taken_once,
    anomaly_events_are_counted_in_their_window,
    static_rotations_are_claimed_once,
    a_connection_keeps_its_disable_escaping,
    a_connection_keeps_its_password_authentication,
    a_lease_keeps_its_owner_s_display_name_and_is_found_by_it,
    catalog_and_identity_values_come_back_as_written,
    a_write_is_in_force_on_the_next_read_despite_the_read_cache,
    a_lease_reads_back_as_written,
    periodic_jobs_run_once_per_period,
    pooled_users_are_issued_by_their_holder_only_and_taken_over_when_it_dies,
);

/// A time as the store keeps it (to the millisecond).
fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

fn connection(name: &str) -> Connection {
    Connection {
        name: name.into(),
        plugin_name: "postgresql-database-plugin".into(),
        connection_url_sealed: String::new(),
        username: String::new(),
        password_sealed: String::new(),
        allowed_roles: vec![],
        verify_connection: false,
        max_open_connections: 1,
        root_rotation_statements: vec![],
        tls_ca_sealed: None,
        tls_certificate_sealed: None,
        private_key_sealed: None,
        tls_certificate_key_sealed: None,
        tls_server_name: None,
        tls_skip_verify: false,
        disable_escaping: false,
        password_authentication: "password".into(),
        scram_iterations: 4096,
        password_policy: None,
        created_at: at(0),
        updated_at: at(0),
    }
}

fn lease(id: &str, state: LeaseState, next_action_at: i64) -> Lease {
    let next_action_at = at(next_action_at);
    Lease {
        id: id.to_owned(),
        role_name: "r".into(),
        connection_name: "db".into(),
        username: format!("u-{}", id.rsplit('/').next().unwrap()),
        revocation_statements: vec![],
        rollback_statements: vec![],
        renew_statements: vec![],
        issued_at: at(0),
        last_renewed_at: None,
        expires_at: next_action_at,
        max_expires_at: next_action_at,
        state,
        next_action_at,
        attempts: 0,
        last_error: None,
        revoked_at: None,
        owner: "o".into(),
        owner_display_name: String::new(),
        revoke_requested: false,
        token_accessor: None,
        claimed_by: None,
        claim_until: None,
        database_name: None,
    }
}

async fn with_leases(store: &Store, ids: &[&str]) {
    store.upsert_connection(&connection("db")).await.unwrap();
    for id in ids {
        store
            .insert_lease(&lease(id, LeaseState::Active, 1))
            .await
            .unwrap();
    }
}

fn claim(by: &str, now: i64) -> Claim<'_> {
    Claim::new(by, at(now), at(now + 30_000), at(now - 10_000))
}

async fn prefix_ranges_match_whole_path_segments(store: &Store) {
    with_leases(
        store,
        &[
            "database/creds/app/a",
            "database/creds/app/b",
            "database/creds/app/x/y",
            "database/creds/app2/c",
            "database/creds/app-admin/d",
            "database/creds/app.e/f",
            "database/creds/apple",
            "database/creds/App/g",
        ],
    )
    .await;
    for prefix in ["database/creds/app", "database/creds/app/"] {
        let ids = store
            .live_lease_ids_in(&IdRange::under(prefix), "", 100)
            .await
            .unwrap();
        assert_eq!(
            ids,
            [
                "database/creds/app/a",
                "database/creds/app/b",
                "database/creds/app/x/y"
            ],
            "{prefix}"
        );
    }
    let page = store
        .live_lease_ids_in(
            &IdRange::under("database/creds/app"),
            "database/creds/app/a",
            1,
        )
        .await
        .unwrap();
    assert_eq!(
        page,
        ["database/creds/app/b"],
        "pages resume after the cursor"
    );
    let all = store
        .live_lease_ids_in(&IdRange::under(""), "", 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 8);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "ids come in bytewise order");
}

/// The owner's display name is stored with the lease, and one owner's leases are listed by it
/// (in id order, within a path prefix, resuming after a cursor, live ones only).
async fn a_lease_keeps_its_owner_s_display_name_and_is_found_by_it(store: &Store) {
    store.upsert_connection(&connection("db")).await.unwrap();
    for (id, owner) in [
        ("database/creds/app/a", "token-ci"),
        ("database/creds/app/b", "jwt-grafana"),
        ("database/creds/app/c", "token-ci"),
        ("database/creds/other/d", "token-ci"),
        ("database/creds/app/e", "token-ci2"),
    ] {
        let mut row = lease(id, LeaseState::Active, 1);
        row.owner_display_name = owner.to_owned();
        store.insert_lease(&row).await.unwrap();
    }
    let stored = store
        .get_lease("database/creds/app/b")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.owner_display_name, "jwt-grafana");
    let app = IdRange::under("database/creds/app");
    assert_eq!(
        store
            .live_lease_ids_of_owner_in(&app, "", 100, "token-ci")
            .await
            .unwrap(),
        ["database/creds/app/a", "database/creds/app/c"],
        "exactly the name, within the prefix"
    );
    assert_eq!(
        store
            .live_lease_ids_of_owner_in(&app, "database/creds/app/a", 100, "token-ci")
            .await
            .unwrap(),
        ["database/creds/app/c"],
        "pages resume after the cursor"
    );
    assert_eq!(
        store
            .live_lease_ids_of_owner_in(&IdRange::under(""), "", 100, "token-ci")
            .await
            .unwrap()
            .len(),
        3
    );
    store
        .mark_revoked("database/creds/app/c", at(2), None, true)
        .await
        .unwrap();
    assert_eq!(
        store
            .live_lease_ids_of_owner_in(&app, "", 100, "token-ci")
            .await
            .unwrap(),
        ["database/creds/app/a"],
        "a revoked lease is not live"
    );
}

async fn a_connection_in_use_is_not_deleted_and_a_lease_needs_its_connection(store: &Store) {
    with_leases(store, &["database/creds/r/a"]).await;
    assert_eq!(
        store.delete_connection("db").await.unwrap(),
        ConnectionDeletion::InUse {
            live_leases: 1,
            static_roles: vec![]
        }
    );
    store
        .mark_revoked("database/creds/r/a", at(2), None, true)
        .await
        .unwrap();
    assert_eq!(
        store.delete_connection("db").await.unwrap(),
        ConnectionDeletion::Deleted
    );
    assert_eq!(
        store.delete_connection("db").await.unwrap(),
        ConnectionDeletion::NotFound
    );
    let refused = store
        .insert_lease(&lease("database/creds/r/b", LeaseState::Creating, 5))
        .await;
    assert!(
        matches!(
            refused,
            Err(lessor::Error::NotFound {
                kind: "connection",
                ..
            })
        ),
        "{refused:?}"
    );
}

/// Lease writes in flight together are committed in groups (issue 10): each still answers for
/// itself, and one that fails (a duplicate id, a missing connection) fails alone, without losing
/// the others' writes.
async fn lease_writes_made_together_share_commits_and_fail_alone(store: &Store) {
    store.upsert_connection(&connection("db")).await.unwrap();
    let ids: Vec<String> = (0..40)
        .map(|i| format!("database/creds/r/g{i:02}"))
        .collect();
    let mut orphan = lease("database/creds/r/orphan", LeaseState::Creating, 1_000);
    orphan.connection_name = "gone".into();
    let mut writes = vec![orphan];
    writes.extend(ids.iter().map(|id| lease(id, LeaseState::Creating, 1_000)));
    // The same id twice: the second insert must fail, and only it.
    writes.push(lease(&ids[7], LeaseState::Creating, 1_000));
    let inserted =
        futures::future::join_all(writes.iter().map(|lease| store.insert_lease(lease))).await;
    assert!(
        matches!(&inserted[0], Err(lessor::error::Error::NotFound { .. })),
        "a lease of a missing connection is refused: {:?}",
        inserted[0]
    );
    assert!(inserted[1..=40].iter().all(Result::is_ok), "{inserted:?}");
    assert!(inserted[41].is_err(), "a duplicate lease id is refused");
    assert!(store
        .get_lease("database/creds/r/orphan")
        .await
        .unwrap()
        .is_none());

    let commits_before = store.lease_write_commits();
    let activated =
        futures::future::join_all(ids.iter().map(|id| store.activate_lease(id, at(5_000)))).await;
    assert!(activated.into_iter().all(|done| done.unwrap()));
    let commits = store.lease_write_commits() - commits_before;
    assert!(
        commits < ids.len() as u64 / 2,
        "40 activations in flight together took {commits} commits"
    );
    for id in &ids {
        let row = store.get_lease(id).await.unwrap().unwrap();
        assert_eq!(row.state, LeaseState::Active, "{id}");
        assert_eq!(row.next_action_at, at(5_000));
    }
}

async fn lease_states_move_forward_only(store: &Store) {
    store.upsert_connection(&connection("db")).await.unwrap();
    let id = "database/creds/r/one";
    store
        .insert_lease(&lease(id, LeaseState::Creating, 1_000))
        .await
        .unwrap();
    assert!(store.request_revocation(id).await.unwrap());
    assert!(
        !store.activate_lease(id, at(5_000)).await.unwrap(),
        "a revoke requested during creation stops the activation"
    );
    let row = store.get_lease(id).await.unwrap().unwrap();
    assert_eq!(row.state, LeaseState::Creating);
    assert!(row.revoke_requested);

    let id = "database/creds/r/two";
    store
        .insert_lease(&lease(id, LeaseState::Creating, 1_000))
        .await
        .unwrap();
    assert!(store.activate_lease(id, at(5_000)).await.unwrap());
    assert!(store.renew_lease(id, at(9_000), at(100)).await.unwrap());
    assert!(store
        .mark_revoking(id, &claim("a", 100), None)
        .await
        .unwrap());
    let attempts = store
        .record_revocation_failure(id, "refused", at(200))
        .await
        .unwrap();
    assert_eq!(attempts, 1);
    store.mark_revoked(id, at(300), None, true).await.unwrap();
    assert!(
        !store.renew_lease(id, at(10_000), at(400)).await.unwrap(),
        "a revoked lease is never renewed"
    );
    assert!(!store
        .mark_revoking(id, &claim("a", 500), None)
        .await
        .unwrap());
    let row = store.get_lease(id).await.unwrap().unwrap();
    assert_eq!(row.state, LeaseState::Revoked);
    assert_eq!(row.last_error.as_deref(), Some("refused"));
    assert_eq!(row.revoked_at, Some(at(300)));
    assert_eq!(store.count_leases(LeaseState::Revoked).await.unwrap(), 1);
}

async fn claims_keep_replicas_apart_until_the_holder_dies(store: &Store) {
    let now = 1_000_000;
    store
        .register_replica("a", "", at(now), false)
        .await
        .unwrap();
    store
        .register_replica("b", "", at(now), false)
        .await
        .unwrap();
    store.upsert_connection(&connection("db")).await.unwrap();
    for i in 0..10 {
        store
            .insert_lease(&lease(
                &format!("database/creds/r/{i:02}"),
                LeaseState::Active,
                now - 1,
            ))
            .await
            .unwrap();
    }
    let taken_by_a = store.claim_due_leases(&claim("a", now), 6).await.unwrap();
    assert_eq!(taken_by_a.len(), 6);
    let taken_by_b = store.claim_due_leases(&claim("b", now), 100).await.unwrap();
    assert_eq!(taken_by_b.len(), 4, "b gets only what a did not claim");
    let a_ids: Vec<_> = taken_by_a.iter().map(|l| l.id.clone()).collect();
    assert!(taken_by_b.iter().all(|l| !a_ids.contains(&l.id)));
    assert!(
        !store
            .mark_revoking(&a_ids[0], &claim("b", now + 1), None)
            .await
            .unwrap(),
        "a live replica's claim holds"
    );
    // The claim marked them `revoking` under a's claim, due again when it lapses, and returned
    // them whole: the reaper drops their users from that.
    let row = store.get_lease(&a_ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.claimed_by.as_deref(), row.next_action_at),
        (LeaseState::Revoking, Some("a"), claim("a", now).until())
    );
    assert!(taken_by_a
        .iter()
        .all(|due| due.state == LeaseState::Revoking
            && due.lease.as_ref().is_some_and(|l| l.id == due.id
                && l.state == LeaseState::Revoking
                && l.claimed_by.as_deref() == Some("a"))));
    assert!(store
        .mark_revoking(&a_ids[0], &claim("a", now + 1), None)
        .await
        .unwrap());

    // a stops beating; once its heartbeat is stale, b takes its leases over.
    store
        .heartbeat_replica("b", at(now + 20_000))
        .await
        .unwrap();
    let later = claim("b", now + 20_000);
    assert!(later.stale_before() > at(now), "a's last beat is stale");
    let taken_over = store.claim_due_leases(&later, 100).await.unwrap();
    let mut ids: Vec<_> = taken_over.iter().map(|l| l.id.clone()).collect();
    ids.sort();
    assert!(
        a_ids.iter().all(|id| ids.contains(id)),
        "a dead replica's claims are free: {ids:?}"
    );
    assert!(store.mark_revoking(&a_ids[0], &later, None).await.unwrap());
    let replicas = store.replicas().await.unwrap();
    let ids: Vec<_> = replicas.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["b", "a"]);
    assert_eq!(
        (replicas[0].started_at, replicas[0].heartbeat_at),
        (at(now), at(now + 20_000))
    );
    assert_eq!(store.forget_replicas("b", at(now + 1)).await.unwrap(), 2);
}

/// A client's revocation claims and reads its lease in one write: the row comes back as the
/// claim left it, whole. Nothing comes back, and nothing changes, for another owner's lease, one
/// held by another live replica, one being created, one already revoked or none at all; the
/// caller's read then tells those apart.
async fn a_client_s_claim_reads_the_lease_it_takes_and_only_its_owner_s(store: &Store) {
    let now = 1_000_000;
    for replica in ["a", "b"] {
        store
            .register_replica(replica, "", at(now), false)
            .await
            .unwrap();
    }
    store.upsert_connection(&connection("db")).await.unwrap();
    let mut written = lease("database/creds/r/mine", LeaseState::Active, now + 60_000);
    written.revocation_statements = vec!["DROP ROLE \"{{name}}\"".into()];
    written.database_name = Some("scratch".into());
    store.insert_lease(&written).await.unwrap();
    let unchanged = || async { store.get_lease(&written.id).await.unwrap().unwrap() };

    for stranger in [Some(("e-other", "a-other")), Some(("", ""))] {
        let taken = store
            .claim_for_revocation(&written.id, &claim("a", now), stranger)
            .await
            .unwrap();
        assert!(taken.is_none(), "{stranger:?} took {taken:?}");
        assert_eq!(unchanged().await.state, LeaseState::Active);
    }
    // The owner is matched as the entity or as the token accessor.
    let taken = store
        .claim_for_revocation(&written.id, &claim("a", now), Some(("e-other", "o")))
        .await
        .unwrap()
        .expect("the owner's lease is claimed");
    assert_eq!(
        (
            taken.state,
            taken.claimed_by.as_deref(),
            taken.next_action_at
        ),
        (LeaseState::Revoking, Some("a"), claim("a", now).until())
    );
    assert_eq!(
        (
            &taken.username,
            &taken.revocation_statements,
            &taken.database_name,
            taken.attempts
        ),
        (
            &written.username,
            &written.revocation_statements,
            &written.database_name,
            0
        )
    );
    assert_eq!(taken, unchanged().await, "the row as the claim left it");
    // Held by a live replica: not for another, again for its holder (a retry).
    assert!(store
        .claim_for_revocation(&written.id, &claim("b", now + 1), None)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .claim_for_revocation(&written.id, &claim("a", now + 1), None)
        .await
        .unwrap()
        .is_some());

    store
        .mark_revoked(&written.id, at(now + 2), None, true)
        .await
        .unwrap();
    let creating = lease(
        "database/creds/r/creating",
        LeaseState::Creating,
        now + 60_000,
    );
    store.insert_lease(&creating).await.unwrap();
    for id in [
        written.id.as_str(),
        creating.id.as_str(),
        "database/creds/r/none",
    ] {
        assert!(
            store
                .claim_for_revocation(id, &claim("a", now + 3), None)
                .await
                .unwrap()
                .is_none(),
            "{id}"
        );
    }
    assert_eq!(
        store.get_lease(&creating.id).await.unwrap().unwrap().state,
        LeaseState::Creating
    );
}

async fn a_creating_lease_is_left_to_a_live_issuer(store: &Store) {
    let now = 5_000_000;
    store
        .register_replica("issuer", "", at(now), false)
        .await
        .unwrap();
    store
        .register_replica("reaper", "", at(now), false)
        .await
        .unwrap();
    store.upsert_connection(&connection("db")).await.unwrap();
    let mut creating = lease("database/creds/r/c", LeaseState::Creating, now + 90_000);
    creating.claimed_by = Some("issuer".into());
    creating.claim_until = Some(at(now + 90_000));
    store.insert_lease(&creating).await.unwrap();
    assert!(store
        .claim_due_leases(&claim("reaper", now), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(!store
        .take_over_creating(&creating.id, &claim("reaper", now), false)
        .await
        .unwrap());
    // The issuer dies: its lease is the reaper's at once, long before the creation deadline.
    store
        .heartbeat_replica("reaper", at(now + 15_000))
        .await
        .unwrap();
    let later = claim("reaper", now + 15_000);
    let due = store.claim_due_leases(&later, 10).await.unwrap();
    assert_eq!(
        due.iter()
            .map(|d| (d.id.as_str(), d.connection_name.as_str(), d.state))
            .collect::<Vec<_>>(),
        [(creating.id.as_str(), "db", LeaseState::Creating)]
    );
    // A `creating` lease keeps its state and deadline until the revocation takes it over.
    let taken = due[0].lease.as_ref().expect("the row decodes");
    assert_eq!(
        (
            taken.state,
            taken.next_action_at,
            taken.claimed_by.as_deref()
        ),
        (LeaseState::Creating, at(now + 90_000), Some("reaper"))
    );
    assert!(store
        .take_over_creating(&creating.id, &later, false)
        .await
        .unwrap());
    let row = store.get_lease(&creating.id).await.unwrap().unwrap();
    assert_eq!(row.state, LeaseState::Revoking);
    assert_eq!(row.claimed_by.as_deref(), Some("reaper"));
    assert_eq!(row.claim_until, Some(later.until()));
}

/// Every field of a lease comes back as it was written: its statement lists, and its times to
/// the store's resolution (whole milliseconds).
async fn a_lease_reads_back_as_written(store: &Store) {
    store.upsert_connection(&connection("db")).await.unwrap();
    let issued = at(1_700_000_000_123);
    let written = Lease {
        id: "database/creds/r/full".into(),
        role_name: "r".into(),
        connection_name: "db".into(),
        username: "u-full".into(),
        revocation_statements: vec![
            "DROP ROLE \"{{name}}\"".into(),
            "-- a second statement, with 'quotes' and ünïcode".into(),
        ],
        rollback_statements: vec!["DROP ROLE IF EXISTS \"{{name}}\"".into()],
        renew_statements: vec![],
        issued_at: issued,
        last_renewed_at: Some(issued + chrono::Duration::milliseconds(1)),
        expires_at: issued + chrono::Duration::hours(1),
        max_expires_at: issued + chrono::Duration::hours(24),
        state: LeaseState::Creating,
        next_action_at: issued + chrono::Duration::seconds(90),
        attempts: 2,
        last_error: Some("refused".into()),
        revoked_at: None,
        owner: "entity-1".into(),
        owner_display_name: "token-ci".into(),
        revoke_requested: false,
        token_accessor: Some("accessor-1".into()),
        claimed_by: Some("issuer".into()),
        claim_until: Some(issued + chrono::Duration::seconds(90)),
        database_name: Some("u-full".into()),
    };
    store.insert_lease(&written).await.unwrap();
    let read = store.get_lease(&written.id).await.unwrap().unwrap();
    assert_eq!(read, written);
    assert!(store
        .get_lease("database/creds/r/none")
        .await
        .unwrap()
        .is_none());

    // A time finer than a millisecond is stored to the millisecond below it.
    let mut fine = lease("database/creds/r/fine", LeaseState::Active, 0);
    fine.expires_at = issued + chrono::Duration::microseconds(1_999);
    fine.next_action_at = fine.expires_at;
    store.insert_lease(&fine).await.unwrap();
    let read = store.get_lease(&fine.id).await.unwrap().unwrap();
    assert_eq!(read.expires_at, issued + chrono::Duration::milliseconds(1));
    assert_eq!(
        store.next_due_after(issued).await.unwrap(),
        Some(issued + chrono::Duration::milliseconds(1)),
        "the next due time, as a time"
    );
    assert_eq!(
        store
            .next_due_after(issued + chrono::Duration::hours(2))
            .await
            .unwrap(),
        None
    );

    // Tombstones older than the cut go, newer ones stay.
    store
        .mark_revoked(&fine.id, issued, None, true)
        .await
        .unwrap();
    assert_eq!(store.tidy_revoked(issued, 10).await.unwrap(), 0);
    assert_eq!(
        store
            .tidy_revoked(issued + chrono::Duration::milliseconds(1), 10)
            .await
            .unwrap(),
        1
    );
    assert!(store.get_lease(&fine.id).await.unwrap().is_none());
}

/// A periodic job runs once per period across replicas, and its record of users issued is kept
/// with their times.
async fn periodic_jobs_run_once_per_period(store: &Store) {
    let now = 3_000_000;
    store
        .register_replica("a", "", at(now), false)
        .await
        .unwrap();
    store
        .register_replica("b", "", at(now), false)
        .await
        .unwrap();
    assert!(store
        .claim_job("sweep", &claim("a", now), at(now - 60_000))
        .await
        .unwrap());
    assert!(
        !store
            .claim_job("sweep", &claim("b", now), at(now - 60_000))
            .await
            .unwrap(),
        "a holds it"
    );
    store.finish_job("sweep", "a", at(now + 1)).await.unwrap();
    assert!(
        !store
            .claim_job("sweep", &claim("b", now + 2), at(now))
            .await
            .unwrap(),
        "it ran after the cut"
    );
    assert!(store
        .claim_job("sweep", &claim("b", now + 2), at(now + 1))
        .await
        .unwrap());

    // A revoked lease whose user may remain leaves its user on record, suspect once marked.
    store.upsert_connection(&connection("db")).await.unwrap();
    let mut gone = lease("database/creds/r/gone", LeaseState::Active, now);
    gone.issued_at = at(now - 5);
    store.insert_lease(&gone).await.unwrap();
    store
        .mark_revoked(&gone.id, at(now), Some("forced"), false)
        .await
        .unwrap();
    let candidates = store.orphan_candidates("db").await.unwrap();
    assert_eq!(candidates.len(), 1);
    assert_eq!(
        (candidates[0].issued_at, candidates[0].suspect_since),
        (at(now - 5), None)
    );
    assert_eq!(
        store
            .mark_suspect("db", &gone.username, &gone.id, at(now + 7))
            .await
            .unwrap(),
        1
    );
    let candidates = store.orphan_candidates("db").await.unwrap();
    assert_eq!(candidates[0].suspect_since, Some(at(now + 7)));
}

async fn stored_disable_escaping(store: &Store) -> bool {
    let row = store.get_connection("db").await.unwrap();
    row.expect("the connection is stored").disable_escaping
}

/// `disable_escaping` (migration 0012 on both engines): off unless set, stored, and changed by
/// the upsert that rewrites the connection.
async fn a_connection_keeps_its_disable_escaping(store: &Store) {
    store.upsert_connection(&connection("db")).await.unwrap();
    assert!(!stored_disable_escaping(store).await);
    let mut row = connection("db");
    row.disable_escaping = true;
    store.upsert_connection(&row).await.unwrap();
    assert!(stored_disable_escaping(store).await);
    row.disable_escaping = false;
    store.upsert_connection(&row).await.unwrap();
    assert!(!stored_disable_escaping(store).await);
}

/// `password_authentication` and `scram_iterations` (migration 0015 on both engines): "password"
/// and 4096 unless set, stored, and changed by the upsert that rewrites the connection.
async fn a_connection_keeps_its_password_authentication(store: &Store) {
    let stored = || async {
        let row = store.get_connection("db").await.unwrap();
        let row = row.expect("the connection is stored");
        (row.password_authentication, row.scram_iterations)
    };
    store.upsert_connection(&connection("db")).await.unwrap();
    assert_eq!(stored().await, ("password".to_owned(), 4096));
    let mut row = connection("db");
    row.password_authentication = "scram-sha-256".into();
    row.scram_iterations = 1;
    store.upsert_connection(&row).await.unwrap();
    assert_eq!(stored().await, ("scram-sha-256".to_owned(), 1));
    row.password_authentication = "password".into();
    row.scram_iterations = 4096;
    store.upsert_connection(&row).await.unwrap();
    assert_eq!(stored().await, ("password".to_owned(), 4096));
}

async fn the_first_value_stored_wins(store: &Store) {
    let (first, second) = tokio::join!(store.meta_init("k", "one"), store.meta_init("k", "two"));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first, second, "both callers get the one value stored");
    assert_eq!(
        store.meta_get("k").await.unwrap().as_deref(),
        Some(first.as_str())
    );
}

async fn token_trees_are_deleted_whole(store: &Store) {
    let token = |accessor: &str, parent: Option<&str>| lessor::store::Token {
        token_hash: format!("hash-{accessor}"),
        accessor: accessor.into(),
        display_name: "t".into(),
        policies: vec![],
        created_at: at(0),
        expires_at: None,
        entity_id: String::new(),
        renewable: true,
        ttl: Duration::ZERO,
        explicit_max_ttl: Duration::ZERO,
        max_expires_at: None,
        path: "auth/token/create".into(),
        meta: serde_json::Map::new(),
        parent_accessor: parent.map(Into::into),
    };
    store.insert_token(&token("root", None)).await.unwrap();
    store
        .insert_token(&token("child", Some("root")))
        .await
        .unwrap();
    store
        .insert_token(&token("grandchild", Some("child")))
        .await
        .unwrap();
    store.insert_token(&token("other", None)).await.unwrap();
    assert!(store.token_lineage_live("grandchild", at(1)).await.unwrap());
    let mut deleted = store.delete_token_tree("child").await.unwrap();
    deleted.sort();
    assert_eq!(deleted, ["child", "grandchild"]);
    assert_eq!(store.count_tokens().await.unwrap(), 2);
    let many: Vec<String> = (0..1200).map(|i| format!("bulk-{i}")).collect();
    for accessor in &many {
        store.insert_token(&token(accessor, None)).await.unwrap();
    }
    assert_eq!(store.delete_tokens(&many).await.unwrap(), 1200);
    assert_eq!(store.count_tokens().await.unwrap(), 2);
}

async fn a_wrapped_answer_is_taken_once(store: &Store) {
    use lessor::store::WrappedResponse;
    let wrapped = WrappedResponse {
        token_hash: "h".into(),
        accessor: "acc".into(),
        sealed_response: "sealed".into(),
        creation_path: "database/creds/r".into(),
        created_at: chrono::Utc::now(),
        ttl: Duration::from_secs(60),
        expires_at: chrono::Utc::now() + chrono::Duration::seconds(60),
        wrapped_accessor: None,
    };
    store.insert_wrapped(&wrapped).await.unwrap();
    let (one, two) = tokio::join!(store.take_wrapped("h"), store.take_wrapped("h"));
    let taken = [one.unwrap(), two.unwrap()];
    assert_eq!(taken.iter().filter(|t| t.is_some()).count(), 1);
}

async fn anomaly_events_are_counted_in_their_window(store: &Store) {
    for ms in [100, 200, 300] {
        store
            .count_anomaly_event("reads", "entity-1", at(ms), at(0))
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .count_anomaly_event("reads", "entity-1", at(400), at(150))
            .await
            .unwrap(),
        3,
        "200, 300 and this one"
    );
    assert_eq!(
        store
            .count_anomaly_event("reads", "entity-2", at(400), at(150))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.forget_anomaly_events(at(250)).await.unwrap(), 2);
}

async fn static_rotations_are_claimed_once(store: &Store) {
    let now = 9_000_000;
    store
        .register_replica("a", "", at(now), false)
        .await
        .unwrap();
    store
        .register_replica("b", "", at(now), false)
        .await
        .unwrap();
    store.upsert_connection(&connection("db")).await.unwrap();
    let role = lessor::store::StaticRoleConfig {
        name: "s".into(),
        db_name: "db".into(),
        username: "someone".into(),
        alternate_username: None,
        rotation_period: Some(Duration::from_secs(3600)),
        rotation_schedule: None,
        rotation_window: None,
        rotation_statements: vec![],
        skip_import_rotation: true,
        scheduled_at: at(now - 1),
        next_rotation_at: at(now - 1),
    };
    store.upsert_static_role(&role, at(now)).await.unwrap();
    assert_eq!(
        store.due_static_roles(&claim("a", now), 10).await.unwrap(),
        ["s"]
    );
    assert!(store
        .claim_static_role("s", &claim("a", now))
        .await
        .unwrap());
    assert!(
        !store
            .claim_static_role("s", &claim("b", now))
            .await
            .unwrap(),
        "claimed once"
    );
    assert!(store
        .set_static_pending("s", "someone", "sealed", at(now), at(now + 30_000), "a")
        .await
        .unwrap());
    assert!(store
        .due_static_roles(&claim("b", now + 1), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(
        store
            .static_roles_with_pending(&claim("b", now + 1))
            .await
            .unwrap()
            .is_empty(),
        "a live replica's rotation is not recovered by another"
    );
    // a dies mid-rotation: b finds the pending rotation and claims it.
    store
        .heartbeat_replica("b", at(now + 20_000))
        .await
        .unwrap();
    let later = claim("b", now + 20_000);
    assert_eq!(
        store.static_roles_with_pending(&later).await.unwrap(),
        ["s"]
    );
    assert_eq!(store.due_static_roles(&later, 10).await.unwrap(), ["s"]);
    assert!(store.claim_static_role("s", &later).await.unwrap());
}

/// What the catalog, identity and rotation areas store comes back as it was written, on both
/// engines: times to the millisecond, durations in whole seconds, lists and objects decoded.
async fn catalog_and_identity_values_come_back_as_written(store: &Store) {
    let mut db = connection("db");
    db.allowed_roles = vec!["app".into(), "app-*".into()];
    db.root_rotation_statements = vec!["ALTER ROLE \"{{name}}\" PASSWORD '{{password}}'".into()];
    db.max_open_connections = 7;
    db.scram_iterations = 600_000;
    db.tls_server_name = Some("db.internal".into());
    db.created_at = at(1_700_000_000_123);
    db.updated_at = at(1_700_000_000_456);
    store.upsert_connection(&db).await.unwrap();
    assert_eq!(store.get_connection("db").await.unwrap(), Some(db.clone()));
    let mut rewritten = db.clone();
    rewritten.created_at = at(1_800_000_000_000);
    rewritten.updated_at = at(1_800_000_000_000);
    store.upsert_connection(&rewritten).await.unwrap();
    assert_eq!(
        store
            .get_connection("db")
            .await
            .unwrap()
            .unwrap()
            .created_at,
        db.created_at,
        "an upsert keeps created_at"
    );

    let role = lessor::store::Role {
        name: "app".into(),
        db_name: "db".into(),
        creation_statements: vec![
            "CREATE ROLE \"{{name}}\"".into(),
            "GRANT r TO \"{{name}}\"".into(),
        ],
        revocation_statements: vec!["DROP ROLE \"{{name}}\"".into()],
        rollback_statements: vec![],
        renew_statements: vec![],
        default_ttl: Duration::from_secs(3600),
        max_ttl: Duration::ZERO,
        username_template: Some("v-{{role}}-{{random 8}}".into()),
        options: [("schema".to_owned(), "app".to_owned())].into(),
        database_per_lease: false,
        template_database: None,
        warm_pool_size: 0,
        created_at: at(1_700_000_000_001),
        updated_at: at(1_700_000_000_002),
    };
    store.upsert_role(&role).await.unwrap();
    assert_eq!(store.get_role("app").await.unwrap(), Some(role));

    let mut meta = serde_json::Map::new();
    meta.insert("role".into(), serde_json::json!("ci"));
    let token = lessor::store::Token {
        token_hash: "hash".into(),
        accessor: "acc".into(),
        display_name: "jwt-ci".into(),
        policies: vec!["default".into(), "app".into()],
        created_at: at(1_700_000_000_789),
        expires_at: Some(at(1_700_000_360_789)),
        entity_id: "jwt:ci".into(),
        renewable: true,
        ttl: Duration::from_secs(360),
        explicit_max_ttl: Duration::from_secs(7200),
        max_expires_at: Some(at(1_700_007_200_789)),
        path: "auth/jwt/login/ci".into(),
        meta,
        parent_accessor: None,
    };
    store.insert_token(&token).await.unwrap();
    assert_eq!(store.get_token("hash").await.unwrap(), Some(token.clone()));
    assert_eq!(
        store.get_token_by_accessor("acc").await.unwrap(),
        Some(token.clone())
    );
    assert!(store
        .token_lineage_live("acc", at(1_700_000_360_788))
        .await
        .unwrap());
    assert!(
        !store
            .token_lineage_live("acc", at(1_700_000_360_789))
            .await
            .unwrap(),
        "expired at its expiry"
    );
    assert_eq!(
        store.dead_token_trees(at(1_700_000_360_789)).await.unwrap(),
        ["acc"]
    );

    let config = lessor::store::StaticRoleConfig {
        name: "s".into(),
        db_name: "db".into(),
        username: "someone".into(),
        alternate_username: Some("someone-b".into()),
        rotation_period: None,
        rotation_schedule: Some("0 3 * * *".into()),
        rotation_window: Some(Duration::from_secs(600)),
        rotation_statements: vec!["ALTER ROLE \"{{name}}\" PASSWORD '{{password}}'".into()],
        skip_import_rotation: false,
        scheduled_at: at(1_700_000_100_000),
        next_rotation_at: at(1_700_000_100_001),
    };
    store
        .upsert_static_role(&config, at(1_700_000_000_000))
        .await
        .unwrap();
    let stored = store.get_static_role("s").await.unwrap().unwrap();
    assert_eq!(
        (
            stored.alternate_username.as_deref(),
            stored.rotation_schedule.as_deref(),
            stored.rotation_window,
            &stored.rotation_statements,
            stored.scheduled_at,
            stored.next_rotation_at,
            stored.created_at,
        ),
        (
            Some("someone-b"),
            Some("0 3 * * *"),
            Some(Duration::from_secs(600)),
            &config.rotation_statements,
            config.scheduled_at,
            config.next_rotation_at,
            at(1_700_000_000_000),
        )
    );
    assert_eq!(
        store.next_static_rotation_at().await.unwrap(),
        Some(config.next_rotation_at)
    );
    let record = lessor::store::RotationRecord {
        at: at(1_700_000_200_345),
        username: "someone-b".into(),
        cause: "schedule".into(),
        outcome: "failed".into(),
        error: Some("refused".into()),
    };
    store.insert_rotation_record("s", &record).await.unwrap();
    let (role, history) = store.static_role_with_history("s").await.unwrap().unwrap();
    assert_eq!(role.name, "s");
    assert_eq!(history, [record]);
    assert!(store
        .static_role_with_history("absent")
        .await
        .unwrap()
        .is_none());

    store
        .meta_set_json("json", &serde_json::json!({"a": [1, 2]}))
        .await
        .unwrap();
    assert_eq!(
        store
            .meta_get_json::<serde_json::Value>("json")
            .await
            .unwrap(),
        Some(serde_json::json!({"a": [1, 2]}))
    );
}

/// The store caches the rows every credential request reads; a write through the store is in
/// force on the very next read (each read below follows a read that filled the cache), nothing
/// absent is cached, and a cached token's expiry is still checked against the clock.
async fn a_write_is_in_force_on_the_next_read_despite_the_read_cache(store: &Store) {
    let before = store.operations_run();
    assert_eq!(store.get_role("app").await.unwrap(), None);
    assert_eq!(store.get_policy("p").await.unwrap(), None);
    assert!(
        store.operations_run() >= before + 2,
        "an absent row is asked for each time"
    );

    let mut db = connection("db");
    store.upsert_connection(&db).await.unwrap();
    assert_eq!(store.get_connection("db").await.unwrap(), Some(db.clone()));
    let before = store.operations_run();
    assert_eq!(store.get_connection("db").await.unwrap(), Some(db.clone()));
    assert_eq!(
        store.operations_run(),
        before,
        "a warm read asks the store nothing"
    );
    db.allowed_roles = vec!["other".into()];
    store.upsert_connection(&db).await.unwrap();
    assert_eq!(store.get_connection("db").await.unwrap(), Some(db.clone()));
    // A root rotation's promotion changes the admin password under the cached row.
    assert!(store
        .set_root_pending("db", "sealed-new", at(5))
        .await
        .unwrap());
    assert!(store
        .promote_root_pending("db", "sealed-new", at(6))
        .await
        .unwrap());
    assert_eq!(
        store
            .get_connection("db")
            .await
            .unwrap()
            .unwrap()
            .password_sealed,
        "sealed-new"
    );

    let mut role = lessor::store::Role {
        name: "app".into(),
        db_name: "db".into(),
        creation_statements: vec!["CREATE ROLE \"{{name}}\"".into()],
        revocation_statements: vec![],
        rollback_statements: vec![],
        renew_statements: vec![],
        default_ttl: Duration::from_secs(60),
        max_ttl: Duration::ZERO,
        username_template: None,
        options: Default::default(),
        database_per_lease: false,
        template_database: None,
        warm_pool_size: 0,
        created_at: at(1),
        updated_at: at(1),
    };
    store.upsert_role(&role).await.unwrap();
    assert_eq!(store.get_role("app").await.unwrap(), Some(role.clone()));
    role.creation_statements = vec!["CREATE ROLE \"{{name}}\" LOGIN".into()];
    store.upsert_role(&role).await.unwrap();
    assert_eq!(
        store.get_role("app").await.unwrap(),
        Some(role.clone()),
        "the next issue uses the new statements"
    );
    assert!(store.delete_role("app").await.unwrap());
    assert_eq!(store.get_role("app").await.unwrap(), None);

    store.upsert_policy("p", "one", at(1)).await.unwrap();
    assert_eq!(store.get_policy("p").await.unwrap().unwrap().text, "one");
    store.upsert_policy("p", "two", at(2)).await.unwrap();
    assert_eq!(store.get_policy("p").await.unwrap().unwrap().text, "two");
    assert!(store.delete_policy("p").await.unwrap());
    assert_eq!(store.get_policy("p").await.unwrap(), None);

    store
        .upsert_password_policy("pp", "length = 20", at(1))
        .await
        .unwrap();
    assert_eq!(
        store.get_password_policy("pp").await.unwrap().as_deref(),
        Some("length = 20")
    );
    store
        .upsert_password_policy("pp", "length = 30", at(2))
        .await
        .unwrap();
    assert_eq!(
        store.get_password_policy("pp").await.unwrap().as_deref(),
        Some("length = 30")
    );
    store.delete_password_policy("pp").await.unwrap();
    assert_eq!(store.get_password_policy("pp").await.unwrap(), None);

    let token = |accessor: &str, parent: Option<&str>, expires: Option<i64>| lessor::store::Token {
        token_hash: format!("hash-{accessor}"),
        accessor: accessor.into(),
        display_name: "t".into(),
        policies: vec![],
        created_at: at(0),
        expires_at: expires.map(at),
        entity_id: String::new(),
        renewable: true,
        ttl: Duration::ZERO,
        explicit_max_ttl: Duration::ZERO,
        max_expires_at: None,
        path: "auth/token/create".into(),
        meta: serde_json::Map::new(),
        parent_accessor: parent.map(Into::into),
    };
    store
        .insert_token(&token("root", None, None))
        .await
        .unwrap();
    store
        .insert_token(&token("parent", Some("root"), Some(1_000)))
        .await
        .unwrap();
    store
        .insert_token(&token("child", Some("parent"), None))
        .await
        .unwrap();
    assert!(store.get_token("hash-child").await.unwrap().is_some());
    assert!(store.token_lineage_live("parent", at(10)).await.unwrap());
    assert!(
        !store.token_lineage_live("parent", at(1_000)).await.unwrap(),
        "a cached lineage's expiry is checked against the time asked about"
    );
    assert!(store.renew_token("parent", at(5)).await.unwrap());
    assert!(
        !store.token_lineage_live("parent", at(10)).await.unwrap(),
        "a renewal that shortens a parent is in force at once"
    );
    store.delete_token_tree("parent").await.unwrap();
    assert_eq!(
        store.get_token("hash-child").await.unwrap(),
        None,
        "revoked"
    );
    assert!(!store.token_lineage_live("parent", at(1)).await.unwrap());
    assert!(store.get_token("hash-root").await.unwrap().is_some());
    assert!(store.delete_token_orphaning_children("root").await.unwrap());
    assert_eq!(store.get_token("hash-root").await.unwrap(), None);
}

fn pooled(id: &str, role: &str, holder: &str) -> PooledUser {
    PooledUser {
        id: id.to_owned(),
        role_name: role.to_owned(),
        connection_name: "db".into(),
        username: format!("u-{}", id.rsplit('/').next().unwrap()),
        revocation_statements: vec!["DROP ROLE \"{{name}}\"".into()],
        created_at: at(5),
        claimed_by: holder.to_owned(),
    }
}

/// A pooled user is recorded (and on record as issued, yet never an orphan candidate); only its
/// holder turns it into a lease, once; anybody takes rows over by role, by id range or from a
/// dead holder, after which the old holder can no longer issue them; forgetting one forgets its
/// record as issued too.
async fn pooled_users_are_issued_by_their_holder_only_and_taken_over_when_it_dies(store: &Store) {
    let now = 1_000_000;
    store.upsert_connection(&connection("db")).await.unwrap();
    store
        .register_replica("a", "", at(now), false)
        .await
        .unwrap();
    store
        .register_replica("b", "", at(now), false)
        .await
        .unwrap();
    let mut missing = pooled("database/creds/r/x", "r", "a");
    missing.connection_name = "gone".into();
    assert!(store.insert_pooled_user(&missing).await.is_err());
    for (id, role) in [
        ("database/creds/r/1", "r"),
        ("database/creds/r/2", "r"),
        ("database/creds/r2/3", "r2"),
        ("database/creds/s/4", "s"),
    ] {
        store
            .insert_pooled_user(&pooled(id, role, "a"))
            .await
            .unwrap();
    }
    let held = store.pooled_users_held_by("a").await.unwrap();
    assert_eq!(held.len(), 4);
    assert_eq!(held[0], pooled("database/creds/r/1", "r", "a"));
    assert_eq!(store.count_pooled_users().await.unwrap(), 4);
    assert!(store
        .holds_pooled_user("database/creds/r/1", "a")
        .await
        .unwrap());
    assert!(!store
        .holds_pooled_user("database/creds/r/1", "b")
        .await
        .unwrap());
    let issued: Vec<String> = ["u-1", "u-2", "u-3", "u-4"].map(String::from).to_vec();
    assert_eq!(
        store.issued_among("db", &issued).await.unwrap().len(),
        4,
        "pooled users are on record as issued"
    );
    assert!(
        store.orphan_candidates("db").await.unwrap().is_empty(),
        "a pooled user is live for reconciliation"
    );

    // Issuing: only the holder, once; the row becomes the lease.
    let mut issued_lease = lease("database/creds/r/1", LeaseState::Creating, now + 90_000);
    issued_lease.username = "u-1".into();
    assert!(!store.take_pooled_user("b", &issued_lease).await.unwrap());
    assert!(store
        .get_lease("database/creds/r/1")
        .await
        .unwrap()
        .is_none());
    assert!(store.take_pooled_user("a", &issued_lease).await.unwrap());
    assert!(!store.take_pooled_user("a", &issued_lease).await.unwrap());
    assert_eq!(
        store.get_lease("database/creds/r/1").await.unwrap(),
        Some(issued_lease.clone())
    );
    assert!(!store
        .holds_pooled_user("database/creds/r/1", "a")
        .await
        .unwrap());
    assert!(store.orphan_candidates("db").await.unwrap().is_empty());

    // Taken over by role and by range, whoever holds them; the old holder cannot issue them.
    let by_role = store
        .take_over_pooled_users(&claim("b", now), PooledSelection::OfRole("r"))
        .await
        .unwrap();
    assert_eq!(
        by_role.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        ["database/creds/r/2"]
    );
    assert_eq!(by_role[0].claimed_by, "b");
    let mut second = lease("database/creds/r/2", LeaseState::Creating, now + 90_000);
    second.username = "u-2".into();
    assert!(!store.take_pooled_user("a", &second).await.unwrap());
    let range = IdRange::under("database/creds/r2");
    let by_range = store
        .take_over_pooled_users(&claim("b", now), PooledSelection::InRange(&range))
        .await
        .unwrap();
    assert_eq!(
        by_range.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        ["database/creds/r2/3"],
        "a range covers whole path segments only"
    );

    // Nothing of a live replica is taken as a dead one's; once a stops beating, its rows are.
    let live = store
        .take_over_pooled_users(&claim("b", now + 1), PooledSelection::OfDeadReplicas)
        .await
        .unwrap();
    assert!(live.is_empty(), "{live:?}");
    store
        .heartbeat_replica("b", at(now + 20_000))
        .await
        .unwrap();
    let dead = store
        .take_over_pooled_users(&claim("b", now + 20_000), PooledSelection::OfDeadReplicas)
        .await
        .unwrap();
    assert_eq!(
        dead.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        ["database/creds/s/4"]
    );

    // Forgetting: only by the holder; the record as issued goes with the row.
    store
        .forget_pooled_user("database/creds/s/4", "a")
        .await
        .unwrap();
    assert!(store
        .holds_pooled_user("database/creds/s/4", "b")
        .await
        .unwrap());
    for id in [
        "database/creds/r/2",
        "database/creds/r2/3",
        "database/creds/s/4",
    ] {
        store.forget_pooled_user(id, "b").await.unwrap();
    }
    assert_eq!(store.count_pooled_users().await.unwrap(), 0);
    let left = store.issued_among("db", &issued).await.unwrap();
    assert_eq!(
        left.into_iter().collect::<Vec<_>>(),
        ["u-1"],
        "only the issued lease's user stays on record"
    );
}

/// The SQLite store copies its WAL back into the database file in the background, so that no
/// lease write waits for a checkpoint inside its commit (issue 10): within two seconds of the
/// last write, the database file read on its own (ignoring the WAL) already holds the leases,
/// although far fewer pages were written than SQLite's automatic checkpoint waits for.
#[tokio::test]
async fn sqlite_checkpoints_its_wal_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lessor.db");
    let store = Store::open(&path.display().to_string()).await.unwrap();
    store.upsert_connection(&connection("db")).await.unwrap();
    let ids: Vec<String> = (0..20)
        .map(|i| format!("database/creds/r/c{i:02}"))
        .collect();
    for id in &ids {
        store
            .insert_lease(&lease(id, LeaseState::Creating, 1_000))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    use sqlx::ConnectOptions;
    let mut file_only = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .immutable(true)
        .connect()
        .await
        .unwrap();
    let in_file: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM leases")
        .fetch_one(&mut file_only)
        .await
        .expect("the leases table is in the database file, not only in the WAL");
    drop(file_only);
    store.close().await;
    assert_eq!(
        in_file,
        ids.len() as i64,
        "every lease is in the database file itself"
    );
}

/// An in-memory SQLite store is refused by name: it would forget every lease, and so every user
/// it issued, at exit (and the lease writer's own connection could not share it).
#[tokio::test]
async fn an_in_memory_sqlite_store_is_refused() {
    for url in ["sqlite::memory:", "sqlite://lessor?mode=memory"] {
        match Store::open(url).await {
            Err(lessor::Error::Config(message)) => {
                assert!(
                    message.contains("store_url") && message.contains("in-memory"),
                    "{url}: {message}"
                )
            }
            Err(other) => panic!("{url}: not a configuration error: {other:?}"),
            Ok(_) => panic!("{url}: an in-memory store was opened"),
        }
    }
}

/// A lease write that finds the SQLite store's write lock held by another connection (the
/// pool's: the reaper's claims, catalog writes) waits for it without stalling the caller's
/// runtime (the writer waits on a thread of its own), and lands once the lock is let go; a lock
/// held past the store's busy timeout fails the write with SQLite's own error, and nothing of it
/// is written.
#[tokio::test(flavor = "current_thread")]
async fn sqlite_lease_writes_wait_for_another_connections_write_lock() {
    use sqlx::{ConnectOptions, Connection as _};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lessor.db");
    let store = Store::open(&path.display().to_string()).await.unwrap();
    store.upsert_connection(&connection("db")).await.unwrap();
    let mut other = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .connect()
        .await
        .unwrap();

    // Held for 300 ms: the write waits, and this single-threaded runtime keeps running other
    // tasks meanwhile (a write that slept in SQLite's busy handler would stall it).
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let waiting = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .insert_lease(&lease(
                    "database/creds/r/waits",
                    LeaseState::Creating,
                    1_000,
                ))
                .await
        }
    });
    let ticking = std::time::Instant::now();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        ticking.elapsed() < Duration::from_secs(2),
        "the runtime kept running while the write waited ({:?} for 300 ms of ticks)",
        ticking.elapsed()
    );
    assert!(!waiting.is_finished(), "the write waits for the lock");
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    waiting
        .await
        .unwrap()
        .expect("the write lands once the lock is free");
    assert!(store
        .get_lease("database/creds/r/waits")
        .await
        .unwrap()
        .is_some());

    // Held past the busy timeout (5 s): the write fails, and its lease is not there.
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let refused = store
        .insert_lease(&lease(
            "database/creds/r/gives-up",
            LeaseState::Creating,
            1_000,
        ))
        .await;
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    let error = refused.expect_err("a write waiting past the busy timeout fails");
    assert!(
        error.to_string().contains("locked"),
        "the error names the lock: {error}"
    );
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert!(store
        .get_lease("database/creds/r/gives-up")
        .await
        .unwrap()
        .is_none());
    other.close().await.unwrap();
    store.close().await;
}

/// PostgreSQL only (an SQLite store has one writer and no second replica): a take-over that
/// waits on a row another replica is claiming judges the holder it finds once it gets the row. Here
/// replica `a` takes a dead replica's pooled user in a transaction that is still open when `c`
/// asks for the dead replica's rows; `c` waits for the row, and once `a` commits it must see a
/// live holder and leave the row alone. (The take-over's condition once read the old holder
/// there, and both replicas held the same row: the same decision that splits a dead replica's
/// leases and static rotations between the others.)
#[tokio::test]
async fn postgres_a_take_over_judges_the_holder_on_the_row_it_gets() {
    let database = StoreDatabase::create().await;
    let store = Store::open(&database.url).await.unwrap();
    let now = 1_000_000;
    store.upsert_connection(&connection("db")).await.unwrap();
    store
        .register_replica("b", "", at(now - 60_000), false)
        .await
        .unwrap();
    for live in ["a", "c"] {
        store
            .register_replica(live, "", at(now), false)
            .await
            .unwrap();
    }
    let id = "database/creds/r/1";
    store
        .insert_pooled_user(&pooled(id, "r", "b"))
        .await
        .unwrap();

    let other = sqlx::PgPool::connect(&database.url).await.unwrap();
    let mut taking = other.begin().await.unwrap();
    let taken = sqlx::query("UPDATE pooled_users SET claimed_by = 'a' WHERE id = $1")
        .bind(id)
        .execute(&mut *taking)
        .await
        .unwrap();
    assert_eq!(taken.rows_affected(), 1);
    let waiting = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .take_over_pooled_users(&claim("c", now), PooledSelection::OfDeadReplicas)
                .await
                .unwrap()
        }
    });
    // `c` must be waiting on the row before `a` commits, or it would simply read `a`'s claim.
    let waiting_for_the_row = "SELECT COUNT(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let mut waited = Duration::ZERO;
    while sqlx::query_scalar::<_, i64>(waiting_for_the_row)
        .fetch_one(&other)
        .await
        .unwrap()
        == 0
    {
        assert!(
            waited < Duration::from_secs(10),
            "the take-over never waited on the row"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    taking.commit().await.unwrap();
    let taken_by_c = waiting.await.unwrap();
    assert!(
        taken_by_c.is_empty(),
        "c took a row live replica a holds: {taken_by_c:?}"
    );
    assert_eq!(store.pooled_users_held_by("a").await.unwrap().len(), 1);
    assert!(store.pooled_users_held_by("c").await.unwrap().is_empty());

    other.close().await;
    store.close().await;
    database.drop_now().await;
}
