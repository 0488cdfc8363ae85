//! `lessor_client::testing::throwaway_database` against an in-process Lessor and the real
//! PostgreSQL.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
use lessor::store::LeaseStore;
use lessor_client::{testing::throwaway_database, Client, Error};
use serde_json::json;

const READONLY: &str = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE pg_read_all_data;";

/// Asked of a role that makes no database, the helper says which option is missing, and the
/// user it was given is revoked at once rather than left to its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_database_per_lease_is_named_and_leaves_no_user() {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    let role = unique("no-db");
    server
        .write_role(
            &role,
            json!({ "db_name": "pg", "creation_statements": [READONLY], "default_ttl": "1h" }),
        )
        .await;
    let client = Client::new(server.base.clone(), ROOT_TOKEN).unwrap();

    let error = throwaway_database(&client, &role).await.unwrap_err();
    assert!(
        matches!(&error, Error::UnexpectedAnswer { detail, .. } if detail.contains("database_per_lease")),
        "{error}"
    );
    let live = server
        .state
        .store
        .live_lease_ids_with_prefix(&format!("database/creds/{role}/"), 10)
        .await
        .unwrap();
    assert!(live.is_empty(), "the lease was revoked: {live:?}");
    let admin = pg_admin().await;
    let leftover = admin
        .query_opt(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE $1",
            &[&format!("v-{role}-%")],
        )
        .await
        .unwrap();
    assert!(
        leftover.is_none(),
        "no user of the role is left: {leftover:?}"
    );
    server.revoke_everything().await;
}

async fn database_exists(admin: &tokio_postgres::Client, name: &str) -> bool {
    admin
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            &[&name],
        )
        .await
        .unwrap()
        .get(0)
}

/// What a test gets: a URL it can connect with, an empty database it owns, gone with the guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throwaway_database_is_usable_and_goes_with_its_guard() {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    let role = unique("scratch");
    server
        .write_role(
            &role,
            json!({ "db_name": "pg", "database_per_lease": true, "default_ttl": "1h" }),
        )
        .await;
    let client = Client::new(server.base.clone(), ROOT_TOKEN).unwrap();
    let admin = pg_admin().await;

    let db = throwaway_database(&client, &role).await.unwrap();
    assert!(
        !format!("{db:?}").contains(db.url.expose()),
        "Debug of a throwaway database shows no URL with its password"
    );
    let (session, connection) = tokio_postgres::connect(db.url.expose(), tokio_postgres::NoTls)
        .await
        .expect("the URL connects as the lease's user");
    tokio::spawn(connection);
    let database: String = session
        .query_one("SELECT current_database()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(database, db.database);
    session
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .await
        .expect("the user owns its database");
    drop(session);
    assert!(database_exists(&admin, &db.database).await);

    // Dropping the guard revokes the lease: the database and the user go.
    let (name, username) = (db.database.clone(), db.username.clone());
    drop(db);
    assert!(
        !database_exists(&admin, &name).await,
        "the database went with the guard"
    );
    assert!(
        !pg_role_exists(&admin, &username).await,
        "the user went with the guard"
    );
    server.revoke_everything().await;
}
