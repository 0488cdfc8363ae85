//! Tests of the PostgreSQL plugin against a real server.
//!
//! The admin URL comes from `LESSOR_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). The server must ask non-admin TCP users for
//! their password (`scripts/services.sh` sets that up); under `trust` a wrong password would log in
//! and the revocation and rotation tests would prove nothing, so [`admin`] checks for it. An
//! unreachable server fails the tests: it is never a reason to skip them.
//!
//! The scenarios every engine must pass (create, log in, renew, delete, sessions, passwords,
//! listing, bad statements, limits, throwaway databases) are the conformance kit's, run once in
//! [`conformance_kit_passes`]; the tests after it are PostgreSQL's own.
//!
//! Every test uses its own randomly named roles (`lt-<test>-<random>`) so the tests can run in
//! parallel and against a shared server.

use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, SubsecRound, Utc};
use lessor_plugin::conformance::{Harness, UserSession};
use lessor_plugin::{
    generate_password, generate_username, ConnectionSettings, DatabasePlugin, DeleteUserRequest,
    ExpirationChange, NewUserRequest, PluginError, RoleOptions, Secret, UpdateUserRequest,
    UserMarker, UsernameContext,
};
use lessor_postgres::{connect, PostgresPlugin, PLUGIN_NAMES};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn admin_url() -> String {
    std::env::var("LESSOR_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn settings(url: &str) -> ConnectionSettings {
    ConnectionSettings {
        connection_url: Secret::new(url),
        username: String::new(),
        password: Secret::default(),
        max_open_connections: 4,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::ZERO,
        tls: Default::default(),
        disable_escaping: false,
        password_authentication: Default::default(),
        user_marker: None,
    }
}

/// The plugin, connected and verified. Panics with a clear message if the server is unreachable.
async fn admin() -> PostgresPlugin {
    let plugin = connect(settings(&admin_url()))
        .await
        .unwrap_or_else(|err| panic!("LESSOR_TEST_POSTGRES_URL is unusable: {err}"));
    if let Err(err) = plugin.verify().await {
        panic!(
            "PostgreSQL (LESSOR_TEST_POSTGRES_URL, default {DEFAULT_URL}) is not reachable: {err}. \
             Start it with scripts/services.sh."
        );
    }
    plugin
}

/// A plain admin connection for the test's own checks, independent of the plugin under test.
async fn admin_client() -> Client {
    let (client, connection) = tokio_postgres::connect(&admin_url(), NoTls)
        .await
        .unwrap_or_else(|err| {
            panic!("cannot connect to PostgreSQL as admin: {err}; run scripts/services.sh")
        });
    tokio::spawn(connection);
    client
}

/// A fresh connection as `username`, as a service holding the credentials would open it.
async fn login(username: &str, password: &Secret) -> Result<Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = admin_url().parse().expect("admin URL parses");
    config
        .user(username)
        .password(password.expose())
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn unique_name(tag: &str) -> String {
    generate_username(
        Some(&format!("lt-{tag}-{{{{random}}}}")),
        63,
        UsernameContext {
            role: tag,
            display_name: "test",
        },
    )
    .expect("username template renders")
}

async fn role_exists(admin: &Client, username: &str) -> bool {
    admin
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname::text = $1)",
            &[&username],
        )
        .await
        .expect("pg_roles query")
        .get(0)
}

async fn valid_until(admin: &Client, username: &str) -> Option<DateTime<Utc>> {
    admin
        .query_one(
            "SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1",
            &[&username],
        )
        .await
        .expect("pg_roles query")
        .get(0)
}

/// An expiry change with `statements` (empty: the engine's renew statements).
fn renewal<'a>(
    username: &'a str,
    new_expiration: DateTime<Utc>,
    statements: &'a [String],
) -> UpdateUserRequest<'a> {
    UpdateUserRequest {
        username,
        password: None,
        expiration: Some(ExpirationChange {
            new_expiration,
            statements,
        }),
    }
}

fn in_one_hour() -> DateTime<Utc> {
    Utc::now() + ChronoDuration::hours(1)
}

async fn create(
    plugin: &PostgresPlugin,
    username: &str,
    password: &Secret,
    expiration: DateTime<Utc>,
    statements: &[String],
) {
    try_create(plugin, username, password, expiration, statements)
        .await
        .unwrap_or_else(|err| panic!("create_user({username}) failed: {err}"));
}

/// [`create`], answering the plugin's error instead of failing the test.
async fn try_create(
    plugin: &PostgresPlugin,
    username: &str,
    password: &Secret,
    expiration: DateTime<Utc>,
    statements: &[String],
) -> Result<(), PluginError> {
    let options = RoleOptions::new();
    plugin
        .create_user(&NewUserRequest {
            username,
            password,
            password_strength: lessor_plugin::PasswordStrength::Unguessable,
            expiration,
            statements,
            options: &options,
            database: None,
        })
        .await
}

/// Guards against a server that trusts every login, where none of the refusals below would mean
/// anything: a role that does not exist must not be able to log in with any password.
async fn assert_passwords_are_checked() {
    // With a password rule the server answers a missing role as a wrong password (28P01); under
    // `trust` it says the role does not exist (28000) without asking for a password.
    let name = unique_name("nobody");
    let err = match login(&name, &Secret::new("whatever")).await {
        Ok(_) => panic!("PostgreSQL accepted a login for a role that does not exist"),
        Err(err) => err,
    };
    assert_eq!(
        err.code(),
        Some(&SqlState::INVALID_PASSWORD),
        "PostgreSQL does not ask non-admin TCP users for a password ({err}); run scripts/services.sh"
    );
}

#[test]
fn plugin_names_and_limits() {
    assert!(PLUGIN_NAMES.contains(&"postgresql-database-plugin"));
    assert!(PLUGIN_NAMES.contains(&"postgres"));
}

#[tokio::test]
async fn valid_until_is_always_set_and_renew_moves_it() {
    let plugin = admin().await;
    let admin = admin_client().await;
    assert_passwords_are_checked().await;

    // Custom creation statements that forget VALID UNTIL.
    let name = unique_name("expiry");
    let password = generate_password(32);
    let expiration = in_one_hour();
    let statements =
        vec![r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}';"#.to_owned()];
    create(&plugin, &name, &password, expiration, &statements).await;
    let set = valid_until(&admin, &name)
        .await
        .expect("VALID UNTIL is set");
    assert_eq!(
        set,
        expiration.trunc_subsecs(0),
        "VALID UNTIL is the lease's expiration"
    );

    // Default renew statements.
    let later = expiration + ChronoDuration::hours(2);
    plugin
        .update_user(&renewal(&name, later, &[]))
        .await
        .expect("renew_user");
    assert_eq!(
        valid_until(&admin, &name).await,
        Some(later.trunc_subsecs(0))
    );

    // Custom renew statements that forget VALID UNTIL still move it.
    let even_later = later + ChronoDuration::hours(2);
    let renew = vec![r#"COMMENT ON ROLE "{{name}}" IS 'renewed by lessor test'"#.to_owned()];
    plugin
        .update_user(&renewal(&name, even_later, &renew))
        .await
        .expect("renew_user with custom statements");
    assert_eq!(
        valid_until(&admin, &name).await,
        Some(even_later.trunc_subsecs(0))
    );
    assert!(
        login(&name, &password).await.is_ok(),
        "login works before expiry"
    );
    plugin
        .delete_user(&DeleteUserRequest::builtin(&name))
        .await
        .expect("revoke");

    // The server itself refuses a login once VALID UNTIL has passed, with the right password.
    let expired = unique_name("expired");
    let password = generate_password(32);
    create(
        &plugin,
        &expired,
        &password,
        Utc::now() - ChronoDuration::minutes(1),
        &statements,
    )
    .await;
    assert!(
        login(&expired, &password).await.is_err(),
        "an expired user must not log in"
    );
    let refused = plugin.check_login(&expired, &password).await;
    assert!(
        matches!(refused, Err(PluginError::LoginRefused { .. })),
        "{refused:?}"
    );
    plugin
        .delete_user(&DeleteUserRequest::builtin(&expired))
        .await
        .expect("revoke");

    // Renewing a user that is gone is a permanent error, not a silent success.
    let err = plugin
        .update_user(&renewal(&expired, later, &[]))
        .await
        .expect_err("renew of a dropped role");
    assert!(matches!(err, PluginError::Rejected(_)), "{err:?}");
}

/// A role made through `plugin` that owns a table in schema public; returns the role and the table.
async fn role_owning_a_table(
    plugin: &PostgresPlugin,
    admin: &tokio_postgres::Client,
    prefix: &str,
) -> (String, String) {
    let name = unique_name(prefix);
    let password = generate_password(32);
    create(plugin, &name, &password, in_one_hour(), &[]).await;
    // PostgreSQL 15+ no longer lets PUBLIC create in schema public.
    admin
        .batch_execute(&format!(r#"GRANT CREATE ON SCHEMA public TO "{name}""#))
        .await
        .expect("grant");
    let table = format!("tbl_{name}");
    let user = login(&name, &password).await.expect("login");
    user.batch_execute(&format!(r#"CREATE TABLE public."{table}" (id int)"#))
        .await
        .expect("the user creates a table");
    (name, table)
}

/// The table was reassigned to the admin, not lost with its role; then it is dropped.
async fn assert_reassigned_then_drop(admin: &tokio_postgres::Client, table: &str) {
    let owner: String = admin
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE schemaname = 'public' AND tablename = $1",
            &[&table],
        )
        .await
        .expect("the table still exists")
        .get(0);
    assert_eq!(
        owner,
        admin
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    );
    admin
        .batch_execute(&format!(r#"DROP TABLE public."{table}""#))
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn revocation_drops_a_role_that_owns_objects() {
    let plugin = admin().await;
    let admin = admin_client().await;
    let (name, table) = role_owning_a_table(&plugin, &admin, "owner").await;
    plugin
        .delete_user(&DeleteUserRequest::builtin(&name))
        .await
        .expect("revoke of a role owning a table");
    assert!(
        !role_exists(&admin, &name).await,
        "the role must be dropped"
    );
    assert_reassigned_then_drop(&admin, &table).await;
}

/// In a batch, `DROP ROLE` of all of them is refused for the one that owns a table; the batch
/// then reassigns and drops what that one owns and drops them all, without failing any.
#[tokio::test]
async fn batch_revocation_drops_a_role_that_owns_objects_with_the_others() {
    let plugin = admin().await;
    let admin = admin_client().await;
    let (owner, table) = role_owning_a_table(&plugin, &admin, "bowner").await;
    let plain = unique_name("bplain");
    let password = generate_password(32);
    create(&plugin, &plain, &password, in_one_hour(), &[]).await;
    let session = login(&plain, &password).await.expect("login");

    let requests = [
        DeleteUserRequest::builtin(&owner),
        DeleteUserRequest::builtin(&plain),
    ];
    for outcome in plugin.delete_users(&requests).await {
        outcome.expect("each role of the batch is revoked");
    }
    for name in [&owner, &plain] {
        assert!(!role_exists(&admin, name).await, "{name} must be dropped");
    }
    assert!(
        session.simple_query("SELECT 1").await.is_err(),
        "the session open at revocation was ended"
    );
    assert!(login(&plain, &password).await.is_err());
    assert_reassigned_then_drop(&admin, &table).await;
}

/// A role that owns objects in *another* database cannot be dropped from this one: the
/// revocation keeps the server's refusal, which names that database, and never reassigns
/// anything here (there is nothing here to reassign). Once the objects are gone, it succeeds.
#[tokio::test]
async fn revocation_of_a_role_owning_objects_elsewhere_is_refused_naming_the_database() {
    let plugin = admin().await;
    let admin = admin_client().await;
    let name = unique_name("elsewhere");
    let password = generate_password(32);
    create(&plugin, &name, &password, in_one_hour(), &[]).await;

    let database = unique_name("otherdb");
    admin
        .batch_execute(&format!(r#"CREATE DATABASE "{database}""#))
        .await
        .expect("create the other database");
    let mut config: tokio_postgres::Config = admin_url().parse().expect("admin URL");
    config.dbname(&database);
    let (other, connection) = config.connect(NoTls).await.expect("connect to it");
    let driver = tokio::spawn(connection);
    other
        .batch_execute(&format!(
            r#"CREATE TABLE owned_elsewhere (id int); ALTER TABLE owned_elsewhere OWNER TO "{name}""#
        ))
        .await
        .expect("a table owned by the role in the other database");
    drop(other);
    let _ = driver.await;

    let err = plugin
        .delete_user(&DeleteUserRequest::builtin(&name))
        .await
        .expect_err("the role owns a table in another database");
    assert!(matches!(err, PluginError::Rejected(_)), "{err:?}");
    assert!(
        err.to_string().contains(&database),
        "the refusal names the database: {err}"
    );
    assert!(role_exists(&admin, &name).await, "the role is still there");

    admin
        .batch_execute(&format!(r#"DROP DATABASE "{database}" WITH (FORCE)"#))
        .await
        .expect("cleanup: the other database");
    plugin
        .delete_user(&DeleteUserRequest::builtin(&name))
        .await
        .expect("revoke once nothing depends on the role");
    assert!(!role_exists(&admin, &name).await);
}

#[tokio::test]
async fn failed_creation_is_rejected_and_leaves_no_role() {
    let plugin = admin().await;
    let admin = admin_client().await;

    // The second statement is not SQL: nothing of the creation may remain. (The server parses
    // the whole query before running any of it; a statement failing as it runs is the next
    // test's.)
    let name = unique_name("broken");
    let password = generate_password(32);
    let statements = vec![
        r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}';"#.to_owned(),
        "THIS IS NOT SQL".to_owned(),
    ];
    let err = try_create(&plugin, &name, &password, in_one_hour(), &statements)
        .await
        .expect_err("a syntax error must fail creation");
    assert!(matches!(err, PluginError::Rejected(_)), "{err:?}");
    assert!(!err.is_transient());
    assert!(
        !role_exists(&admin, &name).await,
        "the transaction must leave no role behind"
    );

    // A syntax error right at the password makes the server quote it; it must not reach the error.
    let statements = vec![r#"CREATE ROLE "{{name}}" LOGIN '{{password}}'"#.to_owned()];
    let err = try_create(&plugin, &name, &password, in_one_hour(), &statements)
        .await
        .expect_err("a syntax error must fail creation");
    let message = err.to_string();
    assert!(matches!(err, PluginError::Rejected(_)), "{err:?}");
    assert!(message.contains("syntax error"), "{message}");
    assert!(
        !message.contains(password.expose()),
        "the password leaked into: {message}"
    );
    assert!(!role_exists(&admin, &name).await);
}

/// Creation goes to the server as one query (one round trip): a statement that fails when it
/// runs, after the role exists, still undoes the whole creation, and leaves the session usable
/// (the plugin has one connection here, so the next creation runs on the same session); a
/// statement ending in a `--` comment does not swallow the next one.
#[tokio::test]
async fn creation_in_one_query_is_all_or_nothing_and_leaves_the_session_clean() {
    let plugin = connect(ConnectionSettings {
        max_open_connections: 1,
        ..settings(&admin_url())
    })
    .await
    .expect("connect");
    let admin = admin_client().await;
    let name = unique_name("halfway");
    let password = generate_password(32);
    let statements = vec![
        r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'"#
            .to_owned(),
        r#"GRANT "lessor_no_such_role_ever" TO "{{name}}""#.to_owned(),
    ];
    let err = try_create(&plugin, &name, &password, in_one_hour(), &statements)
        .await
        .expect_err("granting a missing role must fail creation");
    assert!(
        err.to_string().contains("lessor_no_such_role_ever"),
        "the server's reason is kept: {err}"
    );
    assert!(
        !role_exists(&admin, &name).await,
        "the failed creation left its role behind"
    );

    let commented = vec![
        r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' -- made by the test"#
            .to_owned(),
        r#"GRANT pg_read_all_data TO "{{name}}""#.to_owned(),
    ];
    create(&plugin, &name, &password, in_one_hour(), &commented).await;
    let granted: bool = admin
        .query_one(
            "SELECT pg_has_role($1::text, 'pg_read_all_data', 'MEMBER')",
            &[&name],
        )
        .await
        .expect("pg_has_role")
        .get(0);
    assert!(granted, "the statement after the comment did not run");
    let user = login(&name, &password).await.expect("the new login works");
    drop(user);
    plugin
        .delete_user(&DeleteUserRequest::builtin(&name))
        .await
        .expect("revoke");
    assert!(!role_exists(&admin, &name).await);
}

#[tokio::test]
async fn unreachable_server_is_a_transient_error_not_a_connect_failure() {
    let mut s = settings("postgresql://{{username}}:{{password}}@127.0.0.1:1/postgres");
    s.username = "admin".into();
    s.password = Secret::new("NotUsed123");
    s.connect_timeout = Duration::from_secs(2);
    let plugin = connect(s)
        .await
        .expect("connect is lazy and succeeds while the server is down");
    let err = plugin
        .verify()
        .await
        .expect_err("verify must fail on a closed port");
    assert!(err.is_transient(), "{err:?}");
    assert!(!err.to_string().contains("NotUsed123"));
    plugin.close().await;
}

#[tokio::test]
async fn invalid_url_is_a_config_error_without_the_password() {
    let mut s = settings("postgresql://{{username}}:{{password}}@127.0.0.1:port/postgres");
    s.username = "admin".into();
    s.password = Secret::new("SuperSecret123");
    match connect(s).await {
        Err(PluginError::Config(message)) => {
            assert!(!message.contains("SuperSecret123"), "{message}")
        }
        other => panic!("expected a config error, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn unknown_role_options_are_refused() {
    let plugin = admin().await;
    let mut options = RoleOptions::new();
    options.insert("host".into(), "%".into());
    assert!(plugin.validate_role(&options, &[]).is_err());
    let bad = vec![r#"CREATE ROLE "{{nmae}}""#.to_owned()];
    assert!(plugin.validate_role(&RoleOptions::new(), &[&bad]).is_err());
    let good = plugin.default_statements();
    assert!(plugin
        .validate_role(
            &RoleOptions::new(),
            &[&good.creation, &good.renew, &good.rotation]
        )
        .is_ok());
}

/// The conformance kit's view of this server: the plugin, and libpq-level checks beside it.
struct PostgresHarness {
    plugin: PostgresPlugin,
    admin: Client,
}

/// A session as an issued user.
struct PostgresSession(Client);

#[async_trait::async_trait]
impl UserSession for PostgresSession {
    async fn ping(&mut self) -> Result<(), String> {
        self.0
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn write(&mut self) -> Result<(), String> {
        self.0
            .batch_execute(
                "CREATE TABLE conformance_probe (id int); INSERT INTO conformance_probe VALUES (1)",
            )
            .await
            .map_err(|e| e.to_string())
    }
}

#[async_trait::async_trait]
impl Harness for PostgresHarness {
    fn plugin(&self) -> &dyn DatabasePlugin {
        &self.plugin
    }

    async fn login(
        &self,
        username: &str,
        password: &Secret,
        database: Option<&str>,
    ) -> Result<Box<dyn UserSession>, String> {
        let mut config: tokio_postgres::Config = admin_url().parse().expect("admin URL parses");
        config
            .user(username)
            .password(password.expose())
            .connect_timeout(Duration::from_secs(5));
        if let Some(database) = database {
            config.dbname(database);
        }
        let (client, connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(Box::new(PostgresSession(client)))
    }

    async fn user_exists(&self, username: &str) -> bool {
        role_exists(&self.admin, username).await
    }

    async fn database_exists(&self, name: &str) -> Option<bool> {
        let row = self
            .admin
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
                &[&name],
            )
            .await
            .expect("pg_database query");
        Some(row.get(0))
    }

    fn half_failing_creation(&self) -> Vec<String> {
        vec![
            r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}';"#.to_owned(),
            "THIS IS NOT SQL".to_owned(),
        ]
    }
}

#[tokio::test]
async fn conformance_kit_passes() {
    assert_passwords_are_checked().await;
    let harness = PostgresHarness {
        plugin: admin().await,
        admin: admin_client().await,
    };
    let ran = lessor_plugin::conformance::run(&harness).await;
    assert_eq!(ran.len(), 12, "every scenario ran: {ran:?}");
}

/// The same scenarios with `password_authentication = "scram-sha-256"` and one iteration: every
/// creation and password change carries a verifier computed by the plugin, and every login the
/// kit checks goes through the server's SCRAM exchange against it.
#[tokio::test]
async fn conformance_kit_passes_with_scram_verifiers() {
    assert_passwords_are_checked().await;
    let mut settings = settings(&admin_url());
    settings.password_authentication =
        lessor_plugin::PasswordAuthentication::from_fields("scram-sha-256", 1).unwrap();
    let harness = PostgresHarness {
        plugin: connect(settings).await.expect("connect"),
        admin: admin_client().await,
    };
    let ran = lessor_plugin::conformance::run(&harness).await;
    assert_eq!(ran.len(), 12, "every scenario ran: {ran:?}");
}

#[tokio::test]
async fn throwaway_database_from_a_template_and_its_validation() {
    let plugin = admin().await;
    let admin = admin_client().await;
    // A template with a table in it, as a pre-migrated schema would be.
    let template = unique_name("tmpl");
    admin
        .batch_execute(&format!(r#"CREATE DATABASE "{template}""#))
        .await
        .expect("create the template database");
    // In a task, so that the template is dropped below even when an assertion fails.
    let template_name = template.clone();
    let checks = tokio::spawn(async move {
        let template = template_name;
        let mut config: tokio_postgres::Config = admin_url().parse().unwrap();
        config.dbname(&template);
        let (client, connection) = config
            .connect(NoTls)
            .await
            .expect("connect to the template");
        tokio::spawn(connection);
        client
            .batch_execute(
                "CREATE SCHEMA app; CREATE TABLE app.migrated (id serial, n int); \
                 INSERT INTO app.migrated (n) VALUES (42); \
                 CREATE FUNCTION app.answer() RETURNS int LANGUAGE sql AS 'SELECT 42'",
            )
            .await
            .expect("migrate the template");
        drop(client);

        let name = unique_name("copy");
        let database = format!("{name}-db");
        let password = generate_password(32);
        plugin
            .create_user(&NewUserRequest {
                username: &name,
                password: &password,
                password_strength: lessor_plugin::PasswordStrength::Unguessable,
                expiration: in_one_hour(),
                statements: &[],
                options: &RoleOptions::new(),
                database: Some(lessor_plugin::NewDatabase {
                    name: &database,
                    template: Some(&template),
                }),
            })
            .await
            .expect("create with a template");
        let mut config: tokio_postgres::Config = admin_url().parse().unwrap();
        config
            .user(&name)
            .password(password.expose())
            .dbname(&database);
        let (client, connection) = config
            .connect(NoTls)
            .await
            .expect("the user logs in to its copy");
        tokio::spawn(connection);
        let row = client
            .query_one("SELECT n, app.answer() FROM app.migrated", &[])
            .await
            .expect("the copy holds the template's table and function");
        assert_eq!((row.get::<_, i32>(0), row.get::<_, i32>(1)), (42, 42));
        // The copy is the user's to migrate further: its objects were handed over.
        client
            .batch_execute(
                "ALTER TABLE app.migrated ADD COLUMN note text; \
                 INSERT INTO app.migrated (n) VALUES (43); DROP FUNCTION app.answer()",
            )
            .await
            .expect("the user alters the copied table, uses its sequence and drops its function");
        plugin
            .delete_user(&DeleteUserRequest {
                username: &name,
                statements: &[],
                database: Some(&database),
            })
            .await
            .expect("delete with the database");
        assert!(!role_exists(&admin_client().await, &name).await);
        plugin
    })
    .await;
    admin
        .batch_execute(&format!(
            r#"DROP DATABASE IF EXISTS "{template}" WITH (FORCE)"#
        ))
        .await
        .expect("drop the template");
    let plugin = checks.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));

    // A template name outside the safe alphabet is refused when the role is written.
    assert!(plugin.validate_database_per_lease(Some("ok_name")).is_ok());
    let err = plugin
        .validate_database_per_lease(Some("bad\"name"))
        .unwrap_err();
    assert!(err.to_string().contains("template_database"), "{err}");
}

/// The role's comment, as the server keeps it.
async fn role_comment(admin: &Client, username: &str) -> Option<String> {
    admin
        .query_one(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
            &[&username],
        )
        .await
        .expect("the role exists")
        .get(0)
}

#[tokio::test]
async fn created_roles_carry_the_installation_s_marker_and_are_listed_by_it() {
    let installation = format!("test-{}", uuid_like());
    let marker = UserMarker::for_installation(&installation).unwrap();
    let marking = connect(ConnectionSettings {
        user_marker: Some(marker.clone()),
        ..settings(&admin_url())
    })
    .await
    .expect("connect");
    let unmarking = admin().await;
    let admin = admin_client().await;
    let (marked, unmarked) = (unique_name("marked"), unique_name("unmarked"));
    let password = generate_password(32);
    create(&marking, &marked, &password, in_one_hour(), &[]).await;
    create(&unmarking, &unmarked, &password, in_one_hour(), &[]).await;

    assert_eq!(role_comment(&admin, &marked).await, Some(marker.text()));
    assert_eq!(role_comment(&admin, &unmarked).await, None);
    let listed = marking
        .marked_users()
        .await
        .expect("listing")
        .expect("PostgreSQL marks users");
    assert_eq!(listed.get(&marked), Some(&installation));
    assert!(
        !listed.contains_key(&unmarked),
        "an unmarked role is not listed"
    );
    // A comment that is not a marker (an operator's note) is not taken for one.
    admin
        .batch_execute(&format!(
            r#"COMMENT ON ROLE "{unmarked}" IS 'lessor installation x''; DROP'"#
        ))
        .await
        .unwrap();
    let listed = marking.marked_users().await.unwrap().unwrap();
    assert!(!listed.contains_key(&unmarked), "{listed:?}");

    for name in [&marked, &unmarked] {
        marking
            .delete_user(&DeleteUserRequest::builtin(name))
            .await
            .expect("delete");
        assert!(!role_exists(&admin, name).await, "{name} is gone");
    }
}

/// A short random id for a test installation.
fn uuid_like() -> String {
    generate_password(12)
        .expose()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

/// Listing users by prefix (reconciliation, the benchmark's count) reads a range of the role
/// name index, not the whole role catalog: with autovacuum off, as on this project's CI, churned
/// roles grow `pg_authid` without bound, and a full read per look became 23 ms at 84 MB.
#[tokio::test]
async fn listing_users_by_prefix_reads_an_index_range() {
    let admin = admin_client().await;
    // A small catalog is cheaper to read whole, and the planner would rightly do so; the question
    // here is whether the query allows anything else.
    admin
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    let pattern = lessor_plugin::like_prefix("v-some_role-");
    // A prepared statement run with its value, as the plugin's query is: the planner sees the
    // pattern and turns its fixed prefix into index bounds.
    let plan: Vec<String> = admin
        .query(
            &format!("EXPLAIN {}", lessor_postgres::LIST_USERS),
            &[&pattern],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect();
    let plan = plan.join("\n");
    assert!(
        plan.contains(
            "Index Cond: ((rolname >= 'v-some_role-'::text) AND (rolname < 'v-some_role.'::text))"
        ),
        "the listing reads the index range of its prefix:\n{plan}"
    );
    assert!(!plan.contains("Seq Scan"), "no full read:\n{plan}");
}
