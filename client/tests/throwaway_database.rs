//! `lessor_client::testing::throwaway_database` against an in-process Lessor and the real
//! PostgreSQL.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
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
