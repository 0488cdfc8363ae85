//! Throwaway databases through the API (issue 13): a role with `database_per_lease` gives each
//! lease an empty database of its own, or a copy of `template_database`, owned by the lease's
//! user, answered as `data.database` and `data.connection_url`, and dropped with the lease (by a
//! revoke or by the reaper), on the real PostgreSQL and MariaDB.

mod common;

use std::time::Duration;

use common::*;
use mysql_async::prelude::Queryable;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn pg_database_exists(admin: &tokio_postgres::Client, name: &str) -> bool {
    admin
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            &[&name],
        )
        .await
        .unwrap()
        .get(0)
}

/// A session as the lease's user, from the answered URL plus the password.
async fn pg_connect(url: &str, password: &str) -> Result<tokio_postgres::Client, String> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
    config.password(password);
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(client)
}

async fn issue(server: &TestServer, role: &str) -> Value {
    let (status, body) = server
        .call("GET", &format!("database/creds/{role}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "creds for {role}: {body}");
    body
}

#[tokio::test]
async fn each_postgres_lease_gets_an_empty_database_that_goes_with_it() {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    server
        .write_role(
            "scratch",
            json!({ "db_name": "pg", "database_per_lease": true, "default_ttl": "1h" }),
        )
        .await;
    let (_, role) = server.call("GET", "database/roles/scratch", None).await;
    assert_eq!(role["data"]["database_per_lease"], json!(true), "{role}");

    let admin = pg_admin().await;
    let first = issue(&server, "scratch").await;
    let second = issue(&server, "scratch").await;
    let (database, username, password, url) = (
        first["data"]["database"].as_str().unwrap().to_owned(),
        first["data"]["username"].as_str().unwrap().to_owned(),
        first["data"]["password"].as_str().unwrap().to_owned(),
        first["data"]["connection_url"].as_str().unwrap().to_owned(),
    );
    assert_ne!(database, second["data"]["database"].as_str().unwrap());
    assert!(url.contains(&username) && url.contains(&database), "{url}");
    assert!(!url.contains(&password), "the URL carries no password");

    let client = pg_connect(&url, &password)
        .await
        .expect("the user logs in to its database with the answered URL");
    let row = client
        .query_one("SELECT current_database()::text, current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        (database.clone(), username.clone())
    );
    client
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .await
        .expect("the user owns its database");

    // Revoked while the session is open: the session ends, the database and the user go.
    let lease = first["lease_id"].as_str().unwrap();
    let (status, body) = server
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease })),
        )
        .await;
    assert!(status.is_success(), "{body}");
    assert!(!pg_database_exists(&admin, &database).await);
    assert!(!pg_role_exists(&admin, &username).await);
    assert!(pg_connect(&url, &password).await.is_err());

    // The reaper drops the other lease's database once its lease expires.
    let other_db = second["data"]["database"].as_str().unwrap().to_owned();
    assert!(pg_database_exists(&admin, &other_db).await);
    server.revoke_everything().await;
    assert!(!pg_database_exists(&admin, &other_db).await);
    server.stop().await;
}

#[tokio::test]
async fn the_reaper_drops_an_expired_lease_database() {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    server
        .write_role(
            "brief",
            json!({ "db_name": "pg", "database_per_lease": true, "default_ttl": 1, "max_ttl": 1 }),
        )
        .await;
    let admin = pg_admin().await;
    let issued = issue(&server, "brief").await;
    let database = issued["data"]["database"].as_str().unwrap().to_owned();
    assert!(pg_database_exists(&admin, &database).await);
    let gone = eventually(Duration::from_secs(15), || {
        let admin = &admin;
        let database = database.clone();
        async move { !pg_database_exists(admin, &database).await }
    })
    .await;
    assert!(
        gone.is_some(),
        "the expired lease's database is still there"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_postgres_lease_database_can_be_a_copy_of_a_migrated_template() {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    let admin = pg_admin().await;
    let template = unique("lt-template");
    admin
        .batch_execute(&format!(r#"CREATE DATABASE "{template}""#))
        .await
        .unwrap();
    // In a task, so that the template is dropped below whatever the checks did.
    let api = server.api.clone();
    let template_name = template.clone();
    let checks = tokio::spawn(async move {
        let admin = pg_admin().await;
        let mut config: tokio_postgres::Config = postgres_url().parse().unwrap();
        config.dbname(&template_name);
        let (migrator, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        let driver = tokio::spawn(connection);
        migrator
            .batch_execute("CREATE TABLE accounts (id serial PRIMARY KEY, name text); INSERT INTO accounts (name) VALUES ('seed')")
            .await
            .unwrap();
        drop(migrator);
        let _ = driver.await;

        api.write_role(
            "migrated",
            json!({ "db_name": "pg", "database_per_lease": true, "template_database": template_name }),
        )
        .await;
        let (status, issued) = api.call("GET", "database/creds/migrated", None).await;
        assert_eq!(status, StatusCode::OK, "{issued}");
        let database = issued["data"]["database"].as_str().unwrap().to_owned();
        let client = pg_connect(
            issued["data"]["connection_url"].as_str().unwrap(),
            issued["data"]["password"].as_str().unwrap(),
        )
        .await
        .unwrap();
        let revoke = || async {
            let (status, body) = api
                .call("PUT", "sys/leases/revoke-prefix/database/creds", None)
                .await;
            assert!(status.is_success(), "{body}");
        };
        let seeded = client.query_one("SELECT name FROM accounts", &[]).await;
        let migrated = client
            .batch_execute("ALTER TABLE accounts ADD COLUMN email text; INSERT INTO accounts (name) VALUES ('new')")
            .await;
        drop(client);
        revoke().await;
        let seeded: String = seeded.expect("the copy holds the template's data").get(0);
        assert_eq!(seeded, "seed");
        migrated.expect("the user migrates its copy further");
        assert!(!pg_database_exists(&admin, &database).await);
    })
    .await;
    admin
        .batch_execute(&format!(
            r#"DROP DATABASE IF EXISTS "{template}" WITH (FORCE)"#
        ))
        .await
        .unwrap();
    if let Err(failed) = checks {
        std::panic::resume_unwind(failed.into_panic());
    }
    server.stop().await;
}

#[tokio::test]
async fn each_mariadb_lease_gets_a_database_it_alone_can_use() {
    let server = TestServer::start().await;
    server.add_mysql("my").await;
    server
        .write_role(
            "scratch",
            json!({
                "db_name": "my",
                "database_per_lease": true,
                "creation_statements": ["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'"],
            }),
        )
        .await;
    let issued = issue(&server, "scratch").await;
    let database = issued["data"]["database"].as_str().unwrap().to_owned();
    let username = issued["data"]["username"].as_str().unwrap().to_owned();
    let url = issued["data"]["connection_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        url.starts_with("mysql://") && url.ends_with(&database),
        "{url}"
    );

    let admin_opts = mysql_async::Opts::from_url(&mysql_url()).unwrap();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(admin_opts.ip_or_hostname().to_owned())
        .tcp_port(admin_opts.tcp_port())
        .prefer_socket(false)
        .user(Some(username.clone()))
        .pass(Some(issued["data"]["password"].as_str().unwrap()))
        .db_name(Some(database.clone()));
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .expect("the user logs in to its database");
    conn.query_drop("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .await
        .expect("the user has every right on its database");
    // and on no other: the role granted nothing else.
    assert!(conn.query_drop("SELECT * FROM mysql.user").await.is_err());

    server.revoke_everything().await;
    let mut admin = mysql_async::Conn::new(admin_opts).await.unwrap();
    let left: Option<String> = admin
        .exec_first(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (&database,),
        )
        .await
        .unwrap();
    assert_eq!(left, None, "the database went with the lease");
    let user: Option<String> = admin
        .exec_first("SELECT User FROM mysql.user WHERE User = ?", (&username,))
        .await
        .unwrap();
    assert_eq!(user, None);
    admin.disconnect().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn what_an_engine_cannot_do_is_refused_when_the_role_is_written() {
    let server = TestServer::start().await;
    server.add_postgres("pg").await;
    server.add_mysql("my").await;
    for (body, field) in [
        (
            json!({ "db_name": "my", "database_per_lease": true, "template_database": "base" }),
            "template_database",
        ),
        (
            json!({ "db_name": "pg", "template_database": "base" }),
            "template_database",
        ),
        (
            json!({ "db_name": "pg", "database_per_lease": true, "template_database": "bad\"name" }),
            "template_database",
        ),
        (
            json!({ "db_name": "pg", "database_per_lease": "yes" }),
            "database_per_lease",
        ),
    ] {
        let (status, answer) = server
            .call("POST", "database/roles/refused", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        assert!(answer.to_string().contains(field), "{body} -> {answer}");
    }
    let (status, _) = server.call("GET", "database/roles/refused", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was written");
    server.stop().await;
}
