//! Tests of the Redis plugin against a real server.
//!
//! The admin URL comes from `LESSOR_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`, the
//! `default` user of a server without a password). An unreachable server fails the tests: it is
//! never a reason to skip them.
//!
//! The scenarios every engine must pass are the conformance kit's, run once in
//! [`conformance_kit_passes`]; the tests after it are Redis's own. Every test uses its own
//! randomly named users (`lt-<test>-<random>`) and deletes them, also when it fails.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use lessor_plugin::conformance::{Harness, UserSession};
use lessor_plugin::{
    generate_password, ConnectionSettings, DatabasePlugin, DeleteUserRequest, NewUserRequest,
    PasswordChange, PluginError, RoleOptions, Secret, StatementKind, TlsMaterial,
    UpdateUserRequest,
};
use lessor_redis::{connect, RedisPlugin};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

fn admin_url() -> String {
    std::env::var("LESSOR_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn settings(url: &str) -> ConnectionSettings {
    ConnectionSettings {
        connection_url: Secret::new(url),
        username: String::new(),
        password: Secret::default(),
        max_open_connections: 4,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
        tls: TlsMaterial::default(),
        disable_escaping: false,
        password_authentication: Default::default(),
        user_marker: None,
    }
}

/// The plugin, connected and verified. Panics with a clear message if the server is unreachable.
async fn admin() -> RedisPlugin {
    let plugin = connect(settings(&admin_url()))
        .await
        .unwrap_or_else(|err| panic!("LESSOR_TEST_REDIS_URL is unusable: {err}"));
    if let Err(err) = plugin.verify().await {
        panic!(
            "Redis (LESSOR_TEST_REDIS_URL, default {DEFAULT_URL}) is not reachable: {err}. \
             Start it with scripts/services.sh."
        );
    }
    plugin
}

/// A plain admin connection for the test's own checks, independent of the plugin under test.
async fn admin_conn() -> MultiplexedConnection {
    redis::Client::open(admin_url())
        .expect("LESSOR_TEST_REDIS_URL is a redis:// URL")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to Redis as admin: {e}; run scripts/services.sh")
        })
}

/// A fresh connection as `username`, as a service holding the credentials would open it.
async fn login(username: &str, password: &Secret) -> redis::RedisResult<MultiplexedConnection> {
    let info = redis::IntoConnectionInfo::into_connection_info(admin_url().as_str())?;
    let login = info
        .redis_settings()
        .clone()
        .set_username(username)
        .set_password(password.expose())
        .set_skip_set_lib_name();
    let client = redis::Client::open(info.set_redis_settings(login))?;
    client
        .get_multiplexed_async_connection_with_config(
            &AsyncConnectionConfig::new().set_connection_timeout(Some(Duration::from_secs(5))),
        )
        .await
}

async fn user_exists(username: &str) -> bool {
    let found: Value = redis::cmd("ACL")
        .arg("GETUSER")
        .arg(username)
        .query_async(&mut admin_conn().await)
        .await
        .expect("ACL GETUSER as admin");
    !matches!(found, Value::Nil)
}

fn unique(test: &str) -> String {
    let random = generate_password(16).expose().to_ascii_lowercase();
    format!("lt-{test}-{}", &random[..10])
}

/// Deletes the users a test made when it ends, passed or failed.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        // A plain blocking connection: the test's runtime may be gone or panicking.
        let Ok(client) = redis::Client::open(admin_url()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        for name in names {
            let _: redis::RedisResult<i64> =
                redis::cmd("ACL").arg("DELUSER").arg(&name).query(&mut conn);
        }
    }
}

async fn create(
    plugin: &RedisPlugin,
    username: &str,
    password: &Secret,
    statements: &[String],
) -> Result<(), PluginError> {
    plugin
        .create_user(&NewUserRequest {
            username,
            password,
            password_strength: lessor_plugin::PasswordStrength::Unguessable,
            expiration: Utc::now() + chrono::Duration::hours(1),
            statements,
            options: &RoleOptions::new(),
            database: None,
        })
        .await
}

// ---------------------------------------------------------------------------------------------
// The conformance kit.

struct RedisHarness {
    plugin: RedisPlugin,
}

struct RedisSession(MultiplexedConnection);

#[async_trait]
impl UserSession for RedisSession {
    /// `EXISTS`, which a read-only user may send (`PING` is not in `+@read`); a refusal for the
    /// user's ACL still means the session is alive.
    async fn ping(&mut self) -> Result<(), String> {
        match redis::cmd("EXISTS")
            .arg("lessor-conformance-probe")
            .query_async::<i64>(&mut self.0)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NOPERM") => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn write(&mut self) -> Result<(), String> {
        Err("Redis has no databases to write in".into())
    }
}

#[async_trait]
impl Harness for RedisHarness {
    fn plugin(&self) -> &dyn DatabasePlugin {
        &self.plugin
    }

    async fn login(
        &self,
        username: &str,
        password: &Secret,
        database: Option<&str>,
    ) -> Result<Box<dyn UserSession>, String> {
        if database.is_some() {
            return Err("Redis has no databases".into());
        }
        let conn = login(username, password).await.map_err(|e| e.to_string())?;
        Ok(Box::new(RedisSession(conn)))
    }

    async fn user_exists(&self, username: &str) -> bool {
        user_exists(username).await
    }

    async fn database_exists(&self, _name: &str) -> Option<bool> {
        None
    }

    /// The first rule is fine, the second names a command the server does not know.
    fn half_failing_creation(&self) -> Vec<String> {
        vec![r#"["~lct:*"]"#.to_owned(), "+nosuchcommand".to_owned()]
    }
}

#[tokio::test]
async fn conformance_kit_passes() {
    let harness = RedisHarness {
        plugin: admin().await,
    };
    let ran = lessor_plugin::conformance::run(&harness).await;
    assert_eq!(ran.len(), 12, "every scenario ran: {ran:?}");
}

// ---------------------------------------------------------------------------------------------
// Redis's own tests.

/// What a role with `["~app:*", "+@read"]` gives: reads under app:, nothing else.
#[tokio::test]
async fn rules_in_vaults_json_form_limit_the_user() {
    let plugin = admin().await;
    let name = unique("rules");
    let _cleanup = Cleanup(vec![name.clone()]);
    let password = generate_password(32);
    let statements = [r#"["~app:*", "+@read"]"#.to_owned()];
    plugin
        .validate_role(&RoleOptions::new(), &[&statements])
        .unwrap();
    create(&plugin, &name, &password, &statements)
        .await
        .unwrap();

    let mut admin = admin_conn().await;
    let key = format!("app:{name}");
    redis::cmd("SET")
        .arg(&key)
        .arg("v")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let mut user = login(&name, &password).await.expect("the user logs in");
    let got: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut user)
        .await
        .expect("GET under app: is allowed");
    assert_eq!(got.as_deref(), Some("v"));
    let write = redis::cmd("SET")
        .arg(&key)
        .arg("w")
        .query_async::<()>(&mut user)
        .await
        .unwrap_err();
    assert_eq!(write.code(), Some("NOPERM"), "SET refused: {write}");
    let outside = redis::cmd("GET")
        .arg(format!("other:{name}"))
        .query_async::<Option<String>>(&mut user)
        .await
        .unwrap_err();
    assert_eq!(
        outside.code(),
        Some("NOPERM"),
        "a key outside app:*: {outside}"
    );
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    plugin
        .delete_user(&DeleteUserRequest::builtin(&name))
        .await
        .unwrap();
    assert!(!user_exists(&name).await);
}

/// `{{name}}` in a rule gives each user its own keys.
#[tokio::test]
async fn the_name_placeholder_gives_each_user_its_keys() {
    let plugin = admin().await;
    let name = unique("own");
    let _cleanup = Cleanup(vec![name.clone()]);
    let password = generate_password(32);
    create(
        &plugin,
        &name,
        &password,
        &[r#"["~own:{{name}}:*", "+get"]"#.to_owned()],
    )
    .await
    .unwrap();
    let mut user = login(&name, &password).await.unwrap();
    let mine: Option<String> = redis::cmd("GET")
        .arg(format!("own:{name}:x"))
        .query_async(&mut user)
        .await
        .expect("its own key");
    assert_eq!(mine, None);
    let theirs = redis::cmd("GET")
        .arg("own:someone-else:x")
        .query_async::<Option<String>>(&mut user)
        .await
        .unwrap_err();
    assert_eq!(theirs.code(), Some("NOPERM"));
    plugin
        .delete_user(&DeleteUserRequest::builtin(&name))
        .await
        .unwrap();
}

/// Rules that touch passwords or the on/off switch, malformed JSON and options are refused when
/// the role is written, before anything reaches the server; so are statement kinds Redis never
/// runs.
#[tokio::test]
async fn bad_rules_are_refused_at_role_write() {
    let plugin = admin().await;
    for bad in [
        r#"[">secret"]"#,
        "nopass",
        "resetpass",
        "on",
        r#"["off"]"#,
        "reset",
        "~* +@read",
        r#"["~*", ["+@read"]]"#,
        r#"["~{{password}}"]"#,
    ] {
        let statements = [bad.to_owned()];
        let err = plugin
            .validate_role(&RoleOptions::new(), &[&statements])
            .unwrap_err();
        assert!(!err.is_transient(), "{bad}: {err}");
        assert!(!err.to_string().contains("secret"), "echoed: {err}");
    }
    let mut options = RoleOptions::new();
    options.insert("host".into(), "%".into());
    assert!(plugin.validate_role(&options, &[]).is_err());
    assert!(plugin.runs_statements(StatementKind::Creation));
    assert!(plugin.runs_statements(StatementKind::Rotation));
    for kind in [
        StatementKind::Revocation,
        StatementKind::Rollback,
        StatementKind::Renew,
    ] {
        assert!(!plugin.runs_statements(kind), "{kind:?}");
    }
    assert!(plugin.validate_database_per_lease(None).is_err());
}

/// A name that exists is refused, and the account keeps its password and its rules.
#[tokio::test]
async fn an_existing_user_is_not_taken_over() {
    let plugin = admin().await;
    let name = unique("taken");
    let _cleanup = Cleanup(vec![name.clone()]);
    let theirs = generate_password(32);
    let mut admin = admin_conn().await;
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&name)
        .arg("on")
        .arg(format!(">{}", theirs.expose()))
        .arg("~theirs:*")
        .arg("+@all")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let ours = generate_password(32);
    let err = create(&plugin, &name, &ours, &[]).await.unwrap_err();
    assert!(
        matches!(&err, PluginError::Rejected(m) if m.contains("already exists")),
        "{err:?}"
    );
    assert!(login(&name, &ours).await.is_err(), "our password works");
    let mut user = login(&name, &theirs)
        .await
        .expect("their password still works");
    redis::cmd("SET")
        .arg(format!("theirs:{name}"))
        .arg("1")
        .query_async::<()>(&mut user)
        .await
        .expect("their rules are intact");
    redis::cmd("DEL")
        .arg(format!("theirs:{name}"))
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
}

/// Every session of the user ends at deletion, not only one.
#[tokio::test]
async fn every_session_ends_at_deletion() {
    let plugin = admin().await;
    let name = unique("kill");
    let _cleanup = Cleanup(vec![name.clone()]);
    let password = generate_password(32);
    create(&plugin, &name, &password, &[]).await.unwrap();
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let mut session = RedisSession(login(&name, &password).await.unwrap());
        session.ping().await.unwrap();
        sessions.push(session);
    }
    plugin
        .delete_user(&DeleteUserRequest::builtin(&name))
        .await
        .unwrap();
    for mut session in sessions {
        assert!(session.ping().await.is_err(), "a session outlived its user");
    }
    assert!(!user_exists(&name).await);
}

/// A static role's password change: an existing ACL user, made outside Lessor, gets the new
/// password in place of all its others and keeps its rules; rotation rules are applied with it.
#[tokio::test]
async fn rotation_replaces_every_password_and_keeps_the_rules() {
    let plugin = admin().await;
    let name = unique("static");
    let _cleanup = Cleanup(vec![name.clone()]);
    let first = generate_password(32);
    let second = generate_password(32);
    let mut admin = admin_conn().await;
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&name)
        .arg("on")
        .arg(format!(">{}", first.expose()))
        .arg(format!(">{}", second.expose()))
        .arg("~static:*")
        .arg("+get")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let new = generate_password(32);
    let rotation = [r#"["+exists"]"#.to_owned()];
    plugin
        .validate_role(&RoleOptions::new(), &[&rotation])
        .unwrap();
    plugin
        .update_user(&UpdateUserRequest {
            username: &name,
            password: Some(PasswordChange {
                new_password: &new,
                statements: &rotation,
            }),
            expiration: None,
        })
        .await
        .unwrap();
    for old in [&first, &second] {
        assert!(login(&name, old).await.is_err(), "an old password works");
    }
    plugin.check_login(&name, &new).await.unwrap();
    let mut user = login(&name, &new).await.unwrap();
    redis::cmd("GET")
        .arg("static:x")
        .query_async::<Option<String>>(&mut user)
        .await
        .expect("the user's own rules are kept");
    redis::cmd("EXISTS")
        .arg("static:x")
        .query_async::<i64>(&mut user)
        .await
        .expect("the rotation's rule is applied");
}

/// Connection fields that do not fit: each refused, naming the field, before any connection.
#[tokio::test]
async fn connection_fields_are_checked() {
    let field_of = |err: PluginError| match err {
        PluginError::InvalidValue { field, .. } => field,
        other => panic!("{other:?}"),
    };
    let mut plain_with_ca = settings("redis://127.0.0.1:6379");
    plain_with_ca.tls.ca_pem = Some("-----BEGIN CERTIFICATE-----\n".into());
    assert_eq!(
        field_of(connect(plain_with_ca).await.unwrap_err()),
        "ca_cert"
    );
    let mut bad_ca = settings("rediss://127.0.0.1:6379");
    bad_ca.tls.ca_pem = Some("no certificate here".into());
    assert_eq!(field_of(connect(bad_ca).await.unwrap_err()), "ca_cert");
    let mut client_cert = settings("rediss://127.0.0.1:6379");
    client_cert.tls.certificate_pem = Some("x".into());
    assert_eq!(
        field_of(connect(client_cert).await.unwrap_err()),
        "tls_certificate"
    );
    assert_eq!(
        field_of(
            connect(settings("mysql://127.0.0.1:3306"))
                .await
                .unwrap_err()
        ),
        "connection_url"
    );
}

/// TLS asked of a server that speaks plain text fails the verification in bounded time, and never
/// falls back to plain text. (A plain Redis waits for the rest of what it takes for a command, so
/// the handshake ends at the connect timeout, an `Unavailable` like any silent server.)
#[tokio::test]
async fn tls_to_a_plain_server_fails_without_falling_back() {
    let tls_url = admin_url().replacen("redis://", "rediss://", 1);
    let mut insecure = settings(&tls_url);
    insecure.tls.skip_verify = true;
    let plugin = connect(insecure).await.unwrap();
    let started = std::time::Instant::now();
    let err = plugin.verify().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, PluginError::Config(_) | PluginError::Unavailable(_)),
        "{err:?}"
    );
}

/// A wrong admin password is a refused login, not a transient error, and is never echoed.
#[tokio::test]
async fn a_wrong_admin_password_is_permanent() {
    let plugin = admin().await;
    let name = unique("admin");
    let _cleanup = Cleanup(vec![name.clone()]);
    create(&plugin, &name, &generate_password(32), &[])
        .await
        .unwrap();
    let mut wrong = settings(&admin_url());
    wrong.username = name.clone();
    wrong.password = Secret::new("Not-the-password-42");
    let err = connect(wrong).await.unwrap().verify().await.unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    assert!(!err.to_string().contains("Not-the-password-42"), "{err}");
    plugin
        .delete_user(&DeleteUserRequest::builtin(&name))
        .await
        .unwrap();
}

/// The plugin's Debug output holds no password.
#[tokio::test]
async fn debug_output_holds_no_password() {
    let mut given = settings("redis://{{username}}:{{password}}@127.0.0.1:6379");
    given.username = "admin".into();
    given.password = Secret::new("Hunter2-very-secret");
    let plugin = connect(given).await.unwrap();
    let shown = format!("{plugin:?}");
    assert!(!shown.contains("Hunter2"), "{shown}");
}
