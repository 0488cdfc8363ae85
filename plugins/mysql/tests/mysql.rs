//! Tests of the MySQL plugin against a real MariaDB (or MySQL) server.
//!
//! The admin URL comes from `LESSOR_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/`, the
//! MariaDB that `scripts/services.sh` starts). An unreachable server fails the tests: a skipped
//! test would prove nothing. The scenarios every engine must pass are the conformance kit's, run
//! once in `conformance_kit_passes`; the tests beside it are MySQL's own. Every test uses its own random usernames, so they run in parallel.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use lessor_mysql::{connect, MySqlPlugin, PLUGIN_NAMES};
use lessor_plugin::conformance::{Harness, UserSession};
use lessor_plugin::{
    generate_password, generate_username, ConnectionSettings, DatabasePlugin, DeleteUserRequest,
    ExpirationChange, NewUserRequest, PasswordChange, PluginError, RoleOptions, Secret,
    UpdateUserRequest, UsernameContext,
};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

fn admin_url() -> String {
    std::env::var("LESSOR_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/".to_owned())
}

fn settings(url: &str) -> ConnectionSettings {
    ConnectionSettings {
        connection_url: Secret::new(url),
        username: "root".to_owned(),
        password: Secret::new(""),
        max_open_connections: 4,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::ZERO,
        tls: Default::default(),
        disable_escaping: false,
        password_authentication: Default::default(),
        user_marker: None,
    }
}

/// The admin options, for the test's own checks (TCP, never the socket).
fn admin_opts() -> OptsBuilder {
    let opts = Opts::from_url(&admin_url()).expect("LESSOR_TEST_MYSQL_URL must be a mysql:// URL");
    OptsBuilder::from_opts(opts).prefer_socket(false)
}

/// A plugin connected to the test server; fails loudly when the server is down.
async fn plugin() -> MySqlPlugin {
    let plugin = connect(settings(&admin_url()))
        .await
        .expect("connect() with the test URL");
    if let Err(err) = plugin.verify().await {
        panic!(
            "MariaDB/MySQL is not reachable at {} ({err}); start it with scripts/services.sh or set LESSOR_TEST_MYSQL_URL",
            admin_url()
        );
    }
    plugin
}

/// A fresh username `lt-<tag>-<random>` of at most `max_len` characters.
fn username(tag: &str, max_len: usize) -> String {
    generate_username(
        Some("lt-{{role}}-{{random}}"),
        max_len,
        UsernameContext {
            role: tag,
            display_name: "test",
        },
    )
    .unwrap()
}

/// Logs in as `user` over TCP to the test server's host and port and returns the session.
async fn login(user: &str, password: &Secret) -> Result<Conn, mysql_async::Error> {
    let opts = admin_opts()
        .user(Some(user))
        .pass(Some(password.expose()))
        .db_name(None::<String>);
    Conn::new(opts).await
}

/// The host parts of `user` in mysql.user, asked independently of the plugin.
async fn hosts_of(user: &str) -> Vec<String> {
    let mut conn = Conn::new(admin_opts())
        .await
        .expect("admin login for checks");
    let hosts: Vec<String> = conn
        .exec(
            "SELECT Host FROM mysql.user WHERE User = ? ORDER BY Host",
            (user,),
        )
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    hosts
}

/// Runs `statements` as the admin, for set-up the plugin would refuse (a second account, a
/// drop behind its back).
async fn as_root(statements: &[String]) {
    let mut root = Conn::new(admin_opts()).await.expect("admin login");
    for statement in statements {
        root.query_drop(statement).await.unwrap();
    }
    root.disconnect().await.unwrap();
}

/// A session of `user`, logged in and proven live by one query.
async fn open_session(user: &str, password: &Secret) -> Conn {
    let mut session = login(user, password).await.unwrap();
    session.query_drop("SELECT 1").await.unwrap();
    session
}

/// Every one of `sessions` was ended by the server: its next query fails.
async fn assert_ended(sessions: Vec<Conn>, what: &str) {
    for mut session in sessions {
        assert!(session.query_drop("SELECT 1").await.is_err(), "{what}");
    }
}

/// An expiry change with `statements` (empty: the engine's, which for MySQL is nothing).
fn renewal<'a>(
    username: &'a str,
    new_expiration: chrono::DateTime<Utc>,
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

/// A password change with `statements` (empty: the built-in one, on every host).
fn password_change<'a>(
    username: &'a str,
    new_password: &'a Secret,
    statements: &'a [String],
) -> UpdateUserRequest<'a> {
    UpdateUserRequest {
        username,
        password: Some(PasswordChange {
            new_password,
            statements,
        }),
        expiration: None,
    }
}

async fn create(
    plugin: &MySqlPlugin,
    user: &str,
    password: &Secret,
    statements: &[String],
    options: &RoleOptions,
) {
    plugin
        .create_user(&NewUserRequest {
            username: user,
            password,
            password_strength: lessor_plugin::PasswordStrength::Unguessable,
            expiration: Utc::now() + chrono::Duration::hours(1),
            statements,
            options,
            database: None,
        })
        .await
        .unwrap_or_else(|e| panic!("create_user({user}): {e}"));
}

/// Log lines written while a test runs, in a buffer the test reads.
#[derive(Clone, Default)]
struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// Captures this thread's log lines until the guard is dropped.
    fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let writer = logs.clone();
        let guard = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish(),
        );
        (logs, guard)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Requests to delete `names` with the built-in revocation, each without a database.
fn default_deletes<S: AsRef<str>>(names: &[S]) -> Vec<DeleteUserRequest<'_>> {
    names
        .iter()
        .map(|name| DeleteUserRequest {
            username: name.as_ref(),
            statements: &[],
            database: None,
        })
        .collect()
}

/// `delete_users` of default-revocation users takes them in one batch (two queries and a kill per
/// open session, not four statements per user), and the batch does what one by one does: accounts
/// locked and dropped on every host, open sessions ended, a user that never existed and a repeated
/// name no failure. Told apart from the one-by-one fallback by the plugin's own log line.
#[tokio::test]
async fn default_revocations_are_batched_and_end_every_session() {
    let (logs, _subscriber) = CapturedLogs::start();
    let plugin = plugin().await;
    let password = generate_password(32);
    let users: Vec<String> = (0..5)
        .map(|_| username("batch", plugin.max_username_len()))
        .collect();
    for user in &users {
        create(&plugin, user, &password, &[], &RoleOptions::new()).await;
    }
    // A second account of the first user, on another host (made by hand: the plugin refuses to
    // take over an existing name): both go.
    as_root(&[format!(
        "CREATE USER '{}'@'127.0.0.1' IDENTIFIED BY '{}'",
        users[0],
        password.expose()
    )])
    .await;
    let session = open_session(&users[1], &password).await;

    let never = username("never", plugin.max_username_len());
    let mut names: Vec<&str> = users.iter().map(String::as_str).collect();
    names.push(&never);
    names.push(&users[2]);
    let requests = default_deletes(&names);
    let outcomes = plugin.delete_users(&requests).await;
    plugin.close().await;
    assert_eq!(outcomes.len(), requests.len());
    for (name, outcome) in names.iter().zip(&outcomes) {
        assert!(outcome.is_ok(), "{name}: {outcome:?}");
    }
    for user in &users {
        assert!(hosts_of(user).await.is_empty(), "{user} still has accounts");
        assert!(
            login(user, &password).await.is_err(),
            "{user} still logs in"
        );
    }
    assert_ended(
        vec![session],
        "a session open at the revocation survived it",
    )
    .await;
    let logs = logs.text();
    assert!(
        logs.contains("revoked users")
            && logs.contains("users=7")
            && logs.contains("accounts=6")
            && logs.contains("killed=1"),
        "one batch of 7 names (6 accounts, 1 session) was revoked:\n{logs}"
    );
    assert!(
        !logs.contains("revoking one by one") && !logs.contains("revoked user "),
        "the batch fell back to one by one:\n{logs}"
    );
}

/// A batch whose users are already dropped (an earlier attempt got that far) still ends their
/// sessions, which outlive `DROP USER`: the batch lists sessions for every name, not only for
/// the accounts it finds.
#[tokio::test]
async fn a_batch_of_dropped_users_still_ends_their_sessions() {
    let (logs, _subscriber) = CapturedLogs::start();
    let plugin = plugin().await;
    let password = generate_password(32);
    let users: Vec<String> = (0..2)
        .map(|_| username("dropped", plugin.max_username_len()))
        .collect();
    let mut sessions = Vec::new();
    for user in &users {
        create(&plugin, user, &password, &[], &RoleOptions::new()).await;
        sessions.push(open_session(user, &password).await);
    }
    let drops: Vec<String> = users
        .iter()
        .map(|user| format!("DROP USER '{user}'@'%'"))
        .collect();
    as_root(&drops).await;
    for session in &mut sessions {
        session
            .query_drop("SELECT 1")
            .await
            .expect("a session outlives DROP USER");
    }

    let requests = default_deletes(&users);
    let outcomes = plugin.delete_users(&requests).await;
    plugin.close().await;
    for (user, outcome) in users.iter().zip(&outcomes) {
        assert!(outcome.is_ok(), "{user}: {outcome:?}");
    }
    assert_ended(sessions, "a session of a dropped user survived the batch").await;
    let logs = logs.text();
    assert!(
        logs.contains("revoked users") && logs.contains("accounts=0 killed=2"),
        "the batch did not end both sessions:\n{logs}"
    );
}

/// A lone built-in revocation goes in one query after the hosts (lock, drop and the list of
/// sessions together), and does what the steps did: every host's account gone, the login
/// refused, an open session ended. Told apart from the step-by-step path by its log line.
#[tokio::test]
async fn a_lone_default_revocation_locks_drops_and_lists_sessions_in_one_query() {
    let (logs, _subscriber) = CapturedLogs::start();
    let plugin = plugin().await;
    let password = generate_password(32);
    let user = username("onequery", plugin.max_username_len());
    create(&plugin, &user, &password, &[], &RoleOptions::new()).await;
    as_root(&[format!(
        "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{}'",
        password.expose()
    )])
    .await;
    assert_eq!(hosts_of(&user).await, ["%", "127.0.0.1"]);
    let sessions = vec![
        open_session(&user, &password).await,
        open_session(&user, &password).await,
    ];

    plugin
        .delete_user(&DeleteUserRequest {
            username: &user,
            statements: &[],
            database: None,
        })
        .await
        .unwrap();
    plugin.close().await;
    assert!(
        hosts_of(&user).await.is_empty(),
        "{user} still has accounts"
    );
    assert!(
        login(&user, &password).await.is_err(),
        "{user} still logs in"
    );
    assert_ended(sessions, "a session open at the revocation survived it").await;
    let logs = logs.text();
    assert!(
        logs.contains("revoked user in one query") && logs.contains("hosts=2 killed=2"),
        "not revoked in one query:\n{logs}"
    );
    assert!(
        !logs.contains("revoked user hosts="),
        "the step-by-step path ran too:\n{logs}"
    );
}

#[tokio::test]
async fn custom_revocation_statements_run_after_the_sessions_end() {
    let plugin = plugin().await;
    let user = username("crev", plugin.max_username_len());
    let password = generate_password(32);
    create(&plugin, &user, &password, &[], &RoleOptions::new()).await;
    let mut session = login(&user, &password).await.unwrap();

    let revocation = vec!["DROP USER IF EXISTS '{{name}}'@'%'".to_owned()];
    plugin
        .delete_user(&DeleteUserRequest {
            username: &user,
            statements: &revocation,
            database: None,
        })
        .await
        .expect("revoke with custom statements");
    assert!(
        session.query_drop("SELECT 1").await.is_err(),
        "the session survived revocation"
    );
    assert!(hosts_of(&user).await.is_empty());
    plugin
        .delete_user(&DeleteUserRequest {
            username: &user,
            statements: &revocation,
            database: None,
        })
        .await
        .expect("revoking again with custom statements is Ok");
    plugin.close().await;
}

#[tokio::test]
async fn mariadb_usernames_of_80_characters_and_a_custom_host() {
    let plugin = plugin().await;
    assert_eq!(plugin.max_username_len(), 80, "MariaDB's username limit");
    let user = username(
        "a-long-role-name-to-fill-the-whole-username-up-to-the-engine-limit",
        80,
    );
    assert_eq!(user.len(), 80);
    let password = generate_password(32);
    let options: RoleOptions = BTreeMap::from([("host".to_owned(), "127.0.0.1".to_owned())]);
    create(&plugin, &user, &password, &[], &options).await;
    assert_eq!(hosts_of(&user).await, vec!["127.0.0.1".to_owned()]);

    let mut conn = login(&user, &password)
        .await
        .expect("an 80-character user logs in from 127.0.0.1");
    let who: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(who.as_deref(), Some(format!("{user}@127.0.0.1").as_str()));
    conn.disconnect().await.unwrap();

    plugin
        .delete_user(&DeleteUserRequest::builtin(&user))
        .await
        .unwrap();
    assert!(hosts_of(&user).await.is_empty());
    plugin.close().await;
}

#[tokio::test]
async fn set_password_replaces_the_old_one() {
    let plugin = plugin().await;
    let user = username("rot", plugin.max_username_len());
    let old = generate_password(32);
    // Two hosts, so the built-in rotation must change both.
    let statements = vec![
        "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'".to_owned(),
        "CREATE USER '{{name}}'@'127.0.0.1' IDENTIFIED BY '{{password}}'".to_owned(),
    ];
    create(&plugin, &user, &old, &statements, &RoleOptions::new()).await;

    let new = generate_password(32);
    plugin
        .update_user(&password_change(&user, &new, &[]))
        .await
        .expect("set_password");
    plugin
        .check_login(&user, &new)
        .await
        .expect("the new password works");
    let err = plugin.check_login(&user, &old).await.unwrap_err();
    assert!(matches!(err, PluginError::LoginRefused { .. }), "{err:?}");
    assert!(!err.to_string().contains(old.expose()));

    // Custom rotation statements are honoured too.
    let newer = generate_password(32);
    let rotation = vec![
        "ALTER USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'".to_owned(),
        "ALTER USER '{{name}}'@'127.0.0.1' IDENTIFIED BY '{{password}}'".to_owned(),
    ];
    plugin
        .update_user(&password_change(&user, &newer, &rotation))
        .await
        .expect("custom rotation");
    plugin
        .check_login(&user, &newer)
        .await
        .expect("the newer password works");
    assert!(matches!(
        plugin.check_login(&user, &new).await,
        Err(PluginError::LoginRefused { .. })
    ));

    plugin
        .delete_user(&DeleteUserRequest::builtin(&user))
        .await
        .unwrap();
    assert!(hosts_of(&user).await.is_empty(), "both hosts are dropped");
    let err = plugin
        .update_user(&password_change(&user, &newer, &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::Rejected(_)), "{err:?}");
    plugin.close().await;
}

#[tokio::test]
async fn generated_passwords_are_accepted_by_the_server() {
    let plugin = plugin().await;
    let user = username("pw", plugin.max_username_len());
    let first = generate_password(32);
    create(&plugin, &user, &first, &[], &RoleOptions::new()).await;
    plugin.check_login(&user, &first).await.unwrap();
    // Include passwords heavy in '-' and '_' alongside random ones.
    let mut passwords: Vec<Secret> = (0..20).map(|_| generate_password(32)).collect();
    passwords.push(Secret::new("A1-_-_-_-_-_-_-_-_-_-_-_-_-_-_-z"));
    passwords.push(Secret::new("_leadingUnderscore9-and-dashes--"));
    for password in &passwords {
        plugin
            .update_user(&password_change(&user, password, &[]))
            .await
            .unwrap();
        plugin
            .check_login(&user, password)
            .await
            .unwrap_or_else(|e| panic!("a generated password was not accepted: {e}"));
    }
    plugin
        .delete_user(&DeleteUserRequest::builtin(&user))
        .await
        .unwrap();
    plugin.close().await;
}

#[tokio::test]
async fn failed_creation_leaves_no_user_behind() {
    let plugin = plugin().await;
    let password = generate_password(32);

    // The second statement is a syntax error whose message would quote the password.
    let user = username("fail", plugin.max_username_len());
    let statements = vec![
        "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'".to_owned(),
        "ALTER USER '{{name}}'@'%' IDENTIFIED BYY '{{password}}'".to_owned(),
    ];
    let err = plugin
        .create_user(&NewUserRequest {
            username: &user,
            password: &password,
            password_strength: lessor_plugin::PasswordStrength::Unguessable,
            expiration: Utc::now(),
            statements: &statements,
            options: &RoleOptions::new(),
            database: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::Rejected(_)), "{err:?}");
    assert!(!err.to_string().contains(password.expose()), "{err}");
    assert!(err.to_string().contains("statement 2 of 2"), "{err}");
    assert!(hosts_of(&user).await.is_empty(), "the user was left behind");

    // A grant on a missing table, after accounts on two hosts were made.
    let user = username("fail", plugin.max_username_len());
    let statements = vec![
        "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; CREATE USER '{{name}}'@'localhost' IDENTIFIED BY '{{password}}'".to_owned(),
        "GRANT SELECT ON lessor_no_such_db.no_such_table TO '{{name}}'@'%'".to_owned(),
    ];
    let err = plugin
        .create_user(&NewUserRequest {
            username: &user,
            password: &password,
            password_strength: lessor_plugin::PasswordStrength::Unguessable,
            expiration: Utc::now(),
            statements: &statements,
            options: &RoleOptions::new(),
            database: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::Rejected(_)), "{err:?}");
    assert!(err.to_string().contains("statement 3 of 3"), "{err}");
    assert!(hosts_of(&user).await.is_empty(), "the user was left behind");
    plugin.close().await;
}

#[tokio::test]
async fn existing_user_is_not_taken_over() {
    let plugin = plugin().await;
    let user = username("dup", plugin.max_username_len());
    let password = generate_password(32);
    create(&plugin, &user, &password, &[], &RoleOptions::new()).await;
    let err = plugin
        .create_user(&NewUserRequest {
            username: &user,
            password: &generate_password(32),
            password_strength: lessor_plugin::PasswordStrength::Unguessable,
            expiration: Utc::now(),
            statements: &[],
            options: &RoleOptions::new(),
            database: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::Rejected(_)), "{err:?}");
    plugin
        .check_login(&user, &password)
        .await
        .expect("the first user is untouched");
    plugin
        .delete_user(&DeleteUserRequest::builtin(&user))
        .await
        .unwrap();
    plugin.close().await;
}

#[tokio::test]
async fn renew_without_statements_is_a_no_op_and_with_statements_runs_them() {
    let plugin = plugin().await;
    let user = username("renew", plugin.max_username_len());
    let password = generate_password(32);
    create(&plugin, &user, &password, &[], &RoleOptions::new()).await;
    let expires = Utc::now() + chrono::Duration::hours(2);
    plugin
        .update_user(&renewal(&user, expires, &[]))
        .await
        .unwrap();
    let renew = vec![
        "ALTER USER '{{name}}'@'%' WITH MAX_USER_CONNECTIONS 7".to_owned(),
        "DO '{{expiration}}'".to_owned(),
    ];
    plugin
        .update_user(&renewal(&user, expires, &renew))
        .await
        .unwrap();
    let mut conn = Conn::new(admin_opts()).await.unwrap();
    let limit: Option<u64> = conn
        .exec_first(
            "SELECT max_user_connections FROM mysql.user WHERE User = ?",
            (&user,),
        )
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    assert_eq!(limit, Some(7), "the renew statements ran");
    plugin.check_login(&user, &password).await.unwrap();
    plugin
        .delete_user(&DeleteUserRequest::builtin(&user))
        .await
        .unwrap();
    plugin.close().await;
}

#[tokio::test]
async fn vault_style_url_connects() {
    let opts = Opts::from_url(&admin_url()).unwrap();
    let url = format!(
        "{{{{username}}}}:{{{{password}}}}@tcp({}:{})/",
        opts.ip_or_hostname(),
        opts.tcp_port()
    );
    let mut settings = settings(&url);
    settings.username = opts.user().unwrap_or("root").to_owned();
    settings.password = Secret::new(opts.pass().unwrap_or(""));
    let plugin = connect(settings).await.unwrap();
    plugin
        .verify()
        .await
        .expect("the Vault-style URL reaches the server");
    assert_eq!(plugin.engine(), "mysql");
    assert!(!plugin.enforces_expiration());
    assert!(PLUGIN_NAMES.contains(&"mysql-database-plugin"));
    plugin.close().await;
}

#[tokio::test]
async fn bad_url_is_a_config_error_without_the_password() {
    let mut bad = settings("{{username}}:{{password}}@tcp(127.0.0.1:3306/");
    bad.password = Secret::new("TopSecretAdminPassw0rd");
    let err = connect(bad).await.unwrap_err();
    assert!(matches!(err, PluginError::Config(_)), "{err:?}");
    assert!(!err.to_string().contains("TopSecretAdminPassw0rd"), "{err}");
}

#[tokio::test]
async fn unreachable_server_is_a_transient_error() {
    let mut settings = settings("mysql://{{username}}:{{password}}@127.0.0.1:1/");
    settings.connect_timeout = Duration::from_secs(2);
    let plugin = connect(settings)
        .await
        .expect("connect() succeeds while the server is down");
    assert_eq!(
        plugin.max_username_len(),
        32,
        "the conservative limit until the server answers"
    );
    let err = plugin.verify().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let err = plugin
        .check_login("someone", &Secret::new("Password1"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let err = plugin
        .delete_user(&DeleteUserRequest::builtin("someone"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    plugin.close().await;
}

#[tokio::test]
async fn validate_role_checks_options_and_templates() {
    let plugin = plugin().await;
    let good = vec!["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'".to_owned()];
    let host = |h: &str| RoleOptions::from([("host".to_owned(), h.to_owned())]);
    plugin.validate_role(&RoleOptions::new(), &[&good]).unwrap();
    plugin.validate_role(&host("10.0.%"), &[&good]).unwrap();
    plugin.validate_role(&host("::1"), &[]).unwrap();

    let err = plugin
        .validate_role(
            &RoleOptions::from([("hots".to_owned(), "%".to_owned())]),
            &[],
        )
        .unwrap_err();
    assert!(err.to_string().contains("hots"), "{err}");
    for bad in ["", "%'; DROP USER root; --", "a b", "x\\"] {
        assert!(
            plugin.validate_role(&host(bad), &[]).is_err(),
            "{bad:?} accepted"
        );
    }
    let unknown = vec!["CREATE USER '{{nmae}}'@'%'".to_owned()];
    assert!(matches!(
        plugin.validate_role(&RoleOptions::new(), &[&good, &unknown]),
        Err(PluginError::Template(_))
    ));

    let defaults = plugin.default_statements();
    assert_eq!(defaults.creation, good);
    assert!(defaults.revocation.is_empty() && defaults.renew.is_empty());
    plugin.close().await;
}

/// The conformance kit's view of this server: the plugin, and the driver's own checks beside it.
struct MySqlHarness {
    plugin: MySqlPlugin,
}

/// A session as an issued user.
struct MySqlSession(Conn);

#[async_trait::async_trait]
impl UserSession for MySqlSession {
    async fn ping(&mut self) -> Result<(), String> {
        self.0
            .query_drop("SELECT 1")
            .await
            .map_err(|e| e.to_string())
    }

    async fn write(&mut self) -> Result<(), String> {
        self.0
            .query_drop(
                "CREATE TABLE conformance_probe (id int); INSERT INTO conformance_probe VALUES (1)",
            )
            .await
            .map_err(|e| e.to_string())
    }
}

#[async_trait::async_trait]
impl Harness for MySqlHarness {
    fn plugin(&self) -> &dyn DatabasePlugin {
        &self.plugin
    }

    async fn login(
        &self,
        username: &str,
        password: &Secret,
        database: Option<&str>,
    ) -> Result<Box<dyn UserSession>, String> {
        let opts = admin_opts()
            .user(Some(username))
            .pass(Some(password.expose()))
            .db_name(database);
        let conn = Conn::new(opts).await.map_err(|e| e.to_string())?;
        Ok(Box::new(MySqlSession(conn)))
    }

    async fn user_exists(&self, username: &str) -> bool {
        !hosts_of(username).await.is_empty()
    }

    async fn database_exists(&self, name: &str) -> Option<bool> {
        let mut conn = Conn::new(admin_opts())
            .await
            .expect("admin login for checks");
        let found: Option<String> = conn
            .exec_first(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (name,),
            )
            .await
            .expect("SCHEMATA query");
        conn.disconnect().await.expect("disconnect");
        Some(found.is_some())
    }

    fn half_failing_creation(&self) -> Vec<String> {
        vec![
            "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'".to_owned(),
            "THIS IS NOT SQL".to_owned(),
        ]
    }
}

#[tokio::test]
async fn conformance_kit_passes() {
    let harness = MySqlHarness {
        plugin: plugin().await,
    };
    let ran = lessor_plugin::conformance::run(&harness).await;
    assert_eq!(ran.len(), 12, "every scenario ran: {ran:?}");
    harness.plugin.close().await;
}

#[tokio::test]
async fn a_template_database_is_refused() {
    let plugin = plugin().await;
    let err = plugin
        .validate_database_per_lease(Some("migrated"))
        .unwrap_err();
    assert!(err.to_string().contains("template_database"), "{err}");
    plugin.validate_database_per_lease(None).unwrap();
    plugin.close().await;
}

/// The admin pool keeps its connections between operations (issue 10): with no idle lifetime
/// set, the driver closed every connection the moment it came back to the pool, and each
/// operation logged in anew. Checked with an admin account of the test's own, whose sessions the
/// server lists: across twenty issue-and-revoke pairs one after the other, the plugin uses no
/// more connections than `max_open_connections`, and they are still open afterwards.
#[tokio::test]
async fn admin_connections_are_kept_between_operations() {
    let admin_user = username("pooladm", 32);
    // Letters, digits and dashes only, so the password needs no escaping in the URL.
    let admin_password = Secret::new(username("pw", 32));
    let mut root = Conn::new(admin_opts()).await.expect("admin login");
    root.query_drop(format!(
        "CREATE USER '{admin_user}'@'%' IDENTIFIED BY '{}'",
        admin_password.expose()
    ))
    .await
    .unwrap();
    root.query_drop(format!(
        "GRANT ALL PRIVILEGES ON *.* TO '{admin_user}'@'%' WITH GRANT OPTION"
    ))
    .await
    .unwrap();

    let server = Opts::from_url(&admin_url()).unwrap();
    let mut own = settings(&format!(
        "mysql://{{{{username}}}}:{{{{password}}}}@{}:{}/",
        server.ip_or_hostname(),
        server.tcp_port()
    ));
    own.username = admin_user.clone();
    own.password = admin_password.clone();
    let plugin = connect(own).await.expect("connect as the test's admin");

    let mut sessions_seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let user = username("reuse", plugin.max_username_len());
        let password = generate_password(32);
        create(&plugin, &user, &password, &[], &RoleOptions::new()).await;
        plugin
            .delete_user(&DeleteUserRequest {
                username: &user,
                statements: &[],
                database: None,
            })
            .await
            .unwrap();
        // Give a returned connection the moment the driver takes to put it back (or close it).
        tokio::time::sleep(Duration::from_millis(20)).await;
        let ids: Vec<u64> = root
            .exec(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?",
                (&admin_user,),
            )
            .await
            .unwrap();
        sessions_seen.extend(ids);
    }
    let still_open: Vec<u64> = root
        .exec(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?",
            (&admin_user,),
        )
        .await
        .unwrap();
    plugin.close().await;
    root.query_drop(format!("DROP USER '{admin_user}'@'%'"))
        .await
        .unwrap();
    root.disconnect().await.unwrap();

    assert!(
        !still_open.is_empty(),
        "the plugin's idle admin connections stay open between operations"
    );
    assert!(
        sessions_seen.len() <= 4,
        "20 operations one after the other used {} admin connections (max_open_connections 4)",
        sessions_seen.len()
    );
}
