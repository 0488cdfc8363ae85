//! TLS to a real MariaDB (or MySQL): the plugin's every connection (admin pool and login checks)
//! goes over TLS when asked, verifies what it is told to verify, and refuses clearly otherwise.
//!
//! Needs the server and certificates `scripts/services.sh` sets up: TLS on in MariaDB with the test
//! CA, and the CA and certificates in `LESSOR_TEST_TLS_DIR` (default /etc/lessor-tests/tls). Each
//! test makes its own admin account that can log in over TLS only (`REQUIRE SSL`) or with a client
//! certificate only (`REQUIRE X509`), through the plain root connection of `LESSOR_TEST_MYSQL_URL`,
//! and drops it and every user it issued at the end, also when the test fails.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use lessor_mysql::{connect, MySqlPlugin};
use lessor_plugin::{
    generate_password, generate_username, ConnectionSettings, DatabasePlugin, DeleteUserRequest,
    NewUserRequest, PasswordChange, PluginError, RoleOptions, Secret, TlsMaterial,
    UpdateUserRequest, UsernameContext,
};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, SslOpts};

fn root_url() -> String {
    std::env::var("LESSOR_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/".to_owned())
}

/// The plain root connection the tests use to set up and check (TCP, never the socket).
fn root_opts() -> OptsBuilder {
    let opts = Opts::from_url(&root_url()).expect("LESSOR_TEST_MYSQL_URL must be a mysql:// URL");
    OptsBuilder::from_opts(opts).prefer_socket(false)
}

fn server() -> (String, u16) {
    let opts = Opts::from_url(&root_url()).unwrap();
    (opts.ip_or_hostname().to_owned(), opts.tcp_port())
}

/// One file of the test CA and certificates, as text.
fn tls_file(name: &str) -> String {
    let dir =
        std::env::var("LESSOR_TEST_TLS_DIR").unwrap_or_else(|_| "/etc/lessor-tests/tls".to_owned());
    let path = PathBuf::from(dir).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}); run scripts/services.sh to make the test CA and certificates",
            path.display()
        )
    })
}

/// The client certificate and its key in one PEM, as Vault's `tls_certificate_key` takes them.
fn client_certificate_key() -> Secret {
    Secret::new(format!(
        "{}{}",
        tls_file("client.pem"),
        tls_file("client.key")
    ))
}

fn username(tag: &str) -> String {
    generate_username(
        Some("lt-{{role}}-{{random}}"),
        32,
        UsernameContext {
            role: tag,
            display_name: "tls",
        },
    )
    .unwrap()
}

async fn root_query(sql: &str) {
    let mut conn = Conn::new(root_opts()).await.expect("root login for set-up");
    conn.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("set-up statement failed: {e}"));
    conn.disconnect().await.unwrap();
}

/// The host parts of `user` in mysql.user, asked over the root connection.
async fn hosts_of(user: &str) -> Vec<String> {
    let mut conn = Conn::new(root_opts()).await.unwrap();
    let hosts: Vec<String> = conn
        .exec("SELECT Host FROM mysql.user WHERE User = ?", (user,))
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    hosts
}

/// An admin account with what the plugin needs, loggable-in only as `require` says
/// (`SSL`, `X509`).
struct Admin {
    name: String,
    password: Secret,
}

impl Admin {
    async fn create(require: &str) -> Admin {
        let name = username("adm");
        let password = generate_password(32);
        root_query(&format!(
            "CREATE USER '{name}'@'%' IDENTIFIED BY '{}' REQUIRE {require}",
            password.expose()
        ))
        .await;
        root_query(&format!(
            "GRANT CREATE USER, PROCESS, CONNECTION ADMIN ON *.* TO '{name}'@'%'"
        ))
        .await;
        root_query(&format!("GRANT SELECT ON mysql.* TO '{name}'@'%'")).await;
        Admin { name, password }
    }

    fn settings(&self, url: &str, tls: TlsMaterial) -> ConnectionSettings {
        ConnectionSettings {
            connection_url: Secret::new(url),
            username: self.name.clone(),
            password: self.password.clone(),
            max_open_connections: 2,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::ZERO,
            tls,
            disable_escaping: false,
            password_authentication: Default::default(),
            user_marker: None,
        }
    }
}

/// The Vault-style URL to the test server, with `params` appended (`?tls=true`).
fn vault_url(params: &str) -> String {
    let (host, port) = server();
    format!("{{{{username}}}}:{{{{password}}}}@tcp({host}:{port})/{params}")
}

fn with_ca(ca: &str) -> TlsMaterial {
    TlsMaterial {
        ca_pem: Some(tls_file(ca)),
        ..Default::default()
    }
}

/// Runs `body` with a fresh admin, then drops the admin and every user named in `cleanup`, even
/// when `body` panicked (it runs as its own task, so its panic is caught and re-raised here).
async fn with_admin<F, Fut>(require: &str, users: &[&str], body: F)
where
    F: FnOnce(Admin) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let admin = Admin::create(require).await;
    let name = admin.name.clone();
    let result = tokio::spawn(body(admin)).await;
    for user in users.iter().copied().chain([name.as_str()]) {
        for host in hosts_of(user).await {
            root_query(&format!("DROP USER IF EXISTS '{user}'@'{host}'")).await;
        }
    }
    if let Err(err) = result {
        std::panic::resume_unwind(err.into_panic());
    }
}

/// Logs in as `user` directly (not through the plugin) over TLS verified with the test CA, and
/// returns the cipher the session uses.
async fn tls_login(user: &str, password: &Secret) -> Result<String, mysql_async::Error> {
    let ssl = SslOpts::default()
        .with_root_certs(vec![tls_file("ca.pem").into_bytes().into()])
        .with_disable_built_in_roots(true);
    let opts = root_opts()
        .user(Some(user))
        .pass(Some(password.expose()))
        .db_name(None::<String>)
        .ssl_opts(Some(ssl));
    let mut conn = Conn::new(opts).await?;
    let cipher: Option<(String, String)> =
        conn.query_first("SHOW STATUS LIKE 'Ssl_cipher'").await?;
    conn.disconnect().await?;
    Ok(cipher.map(|(_, c)| c).unwrap_or_default())
}

/// Logs in as `user` in plain text.
async fn plain_login(user: &str, password: &Secret) -> Result<(), mysql_async::Error> {
    let opts = root_opts()
        .user(Some(user))
        .pass(Some(password.expose()))
        .db_name(None::<String>);
    Conn::new(opts).await?.disconnect().await
}

fn server_code(err: &mysql_async::Error) -> Option<u16> {
    match err {
        mysql_async::Error::Server(server) => Some(server.code),
        _ => None,
    }
}

/// Creation statements whose user, too, can log in over TLS only: so a passing `check_login`
/// proves the login check went over TLS.
fn tls_only_creation() -> Vec<String> {
    vec!["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}' REQUIRE SSL".to_owned()]
}

async fn create(plugin: &MySqlPlugin, user: &str, password: &Secret, statements: &[String]) {
    plugin
        .create_user(&NewUserRequest {
            username: user,
            password,
            password_strength: lessor_plugin::PasswordStrength::Unguessable,
            expiration: Utc::now() + chrono::Duration::hours(1),
            statements,
            options: &RoleOptions::new(),
            database: None,
        })
        .await
        .unwrap_or_else(|e| panic!("create_user over TLS: {e}"));
}

/// The whole life of a login through an admin that can log in over TLS only, verified with
/// `tls_ca` given inline: issue, log in over TLS (not in plain text), rotate, revoke.
#[tokio::test]
async fn verified_tls_admin_issues_rotates_and_revokes() {
    let user = username("tls");
    let user2 = username("tls");
    let users = [user.clone(), user2.clone()];
    with_admin("SSL", &[&user, &user2], move |admin| async move {
        let [user, user2] = users;
        // Both URL forms: the Vault one with tls=true, the URL one with the fields alone.
        let (host, port) = server();
        for url in [vault_url("?tls=true"), format!("mysql://{host}:{port}/")] {
            let plugin = connect(admin.settings(&url, with_ca("ca.pem")))
                .await
                .expect("connect with tls_ca");
            plugin
                .verify()
                .await
                .expect("the TLS-only admin logs in over TLS");
            plugin.close().await;
        }
        let plugin = connect(admin.settings(&vault_url("?tls=true"), with_ca("ca.pem")))
            .await
            .unwrap();

        let password = generate_password(32);
        create(&plugin, &user, &password, &tls_only_creation()).await;
        let cipher = tls_login(&user, &password)
            .await
            .expect("the issued login logs in over TLS");
        assert!(!cipher.is_empty(), "the session is not encrypted");
        let err = plain_login(&user, &password)
            .await
            .expect_err("a TLS-only login in plain text");
        assert_eq!(server_code(&err), Some(1045), "{err}");
        plugin
            .check_login(&user, &password)
            .await
            .expect("check_login goes over TLS");

        // Rotation, then the check the rotator makes before promoting the new password.
        let new = generate_password(32);
        plugin
            .update_user(&UpdateUserRequest {
                username: &user,
                password: Some(PasswordChange {
                    new_password: &new,
                    statements: &[],
                }),
                expiration: None,
            })
            .await
            .expect("set_password");
        plugin
            .check_login(&user, &new)
            .await
            .expect("the new password works");
        let err = plugin.check_login(&user, &password).await.unwrap_err();
        assert!(matches!(err, PluginError::LoginRefused { .. }), "{err:?}");

        plugin
            .delete_user(&DeleteUserRequest::builtin(&user))
            .await
            .expect("revoke over TLS");
        let err = tls_login(&user, &new)
            .await
            .expect_err("login after revocation");
        assert!(matches!(server_code(&err), Some(1045 | 1698)), "{err}");
        assert!(hosts_of(&user).await.is_empty(), "the user is still there");

        // The default creation (no REQUIRE) works through the TLS admin too.
        create(&plugin, &user2, &password, &[]).await;
        tls_login(&user2, &password)
            .await
            .expect("default user over TLS");
        plugin
            .delete_user(&DeleteUserRequest::builtin(&user2))
            .await
            .unwrap();
        assert!(hosts_of(&user2).await.is_empty());
        plugin.close().await;
    })
    .await;
}

/// Without TLS the same admin is refused by the server: the tests above did use TLS.
#[tokio::test]
async fn tls_only_admin_is_refused_in_plain_text() {
    with_admin("SSL", &[], |admin| async move {
        for url in [vault_url(""), vault_url("?tls=false")] {
            let plugin = connect(admin.settings(&url, TlsMaterial::default()))
                .await
                .expect("connect() defers the login to verify()");
            let err = plugin
                .verify()
                .await
                .expect_err("plain text to a TLS-only admin");
            assert!(err.to_string().contains("1045"), "{err}");
            plugin.close().await;
        }
    })
    .await;
}

/// A CA that did not sign the server's certificate, or the system's CAs (which do not know the
/// test CA): refused with a message naming the cause, and not as a transient error to retry.
#[tokio::test]
async fn untrusted_server_certificate_is_refused_clearly() {
    with_admin("SSL", &[], |admin| async move {
        for (url, tls) in [
            (vault_url("?tls=true"), with_ca("other-ca.pem")),
            (vault_url("?tls=custom"), with_ca("other-ca.pem")),
            (vault_url("?tls=true"), TlsMaterial::default()),
        ] {
            let plugin = connect(admin.settings(&url, tls)).await.unwrap();
            let err = plugin.verify().await.expect_err("an untrusted server");
            assert!(matches!(err, PluginError::Config(_)), "{err:?}");
            assert!(!err.is_transient());
            let message = err.to_string();
            assert!(message.contains("not signed by a trusted CA"), "{message}");
            assert!(!message.contains(admin.password.expose()), "{message}");
            let err = plugin
                .check_login(&admin.name, &admin.password)
                .await
                .expect_err("the login check verifies too");
            assert!(matches!(err, PluginError::Config(_)), "{err:?}");
            plugin.close().await;
        }
    })
    .await;
}

/// `tls_server_name` replaces the name checked: another host's name is refused, a name the
/// certificate carries works though the URL says 127.0.0.1. `skip-verify` connects to a server
/// nothing vouches for, but only when asked by that name.
#[tokio::test]
async fn server_name_is_checked_and_skip_verify_only_when_asked() {
    with_admin("SSL", &[], |admin| async move {
        let named = |name: &str| TlsMaterial {
            server_name: Some(name.to_owned()),
            ..with_ca("ca.pem")
        };
        let plugin = connect(admin.settings(&vault_url("?tls=true"), named("wrong.example")))
            .await
            .unwrap();
        let err = plugin
            .verify()
            .await
            .expect_err("a name the certificate does not carry");
        assert!(matches!(err, PluginError::Config(_)), "{err:?}");
        assert!(
            err.to_string().contains("not valid for the name checked"),
            "{err}"
        );
        plugin.close().await;

        let plugin = connect(admin.settings(&vault_url("?tls=true"), named("localhost")))
            .await
            .unwrap();
        plugin
            .verify()
            .await
            .expect("a name the certificate carries");
        plugin.close().await;

        for (url, tls) in [
            (vault_url("?tls=skip-verify"), TlsMaterial::default()),
            (
                vault_url(""),
                TlsMaterial {
                    skip_verify: true,
                    ..Default::default()
                },
            ),
            (
                format!("mysql://{}:{}/?ssl-mode=REQUIRED", server().0, server().1),
                TlsMaterial::default(),
            ),
        ] {
            let plugin = connect(admin.settings(&url, tls)).await.unwrap();
            plugin.verify().await.expect("skip-verify, asked by name");
            plugin
                .check_login(&admin.name, &admin.password)
                .await
                .expect("the login check over unverified TLS");
            plugin.close().await;
        }
    })
    .await;
}

/// An admin that must present a client certificate (`REQUIRE X509`), given as Vault's
/// `tls_certificate_key` (certificate and key in one PEM): it issues and revokes, and a root
/// rotation of its own password is checked over the same TLS, certificate included.
#[tokio::test]
async fn client_certificate_admin_works() {
    let user = username("x509");
    let users = user.clone();
    with_admin("X509", &[&user], move |admin| async move {
        let user = users;
        let material = TlsMaterial {
            certificate_key_pem: Some(client_certificate_key()),
            ..with_ca("ca.pem")
        };
        let plugin = connect(admin.settings(&vault_url(""), material.clone()))
            .await
            .expect("connect with a client certificate");
        plugin
            .verify()
            .await
            .expect("the X509 admin logs in with its certificate");

        let password = generate_password(32);
        create(&plugin, &user, &password, &[]).await;
        tls_login(&user, &password)
            .await
            .expect("the issued login works");
        plugin
            .delete_user(&DeleteUserRequest::builtin(&user))
            .await
            .expect("revoke");
        assert!(hosts_of(&user).await.is_empty());

        // Root rotation: the new admin password, then the login check as the admin, which
        // the server accepts only with the certificate.
        let new = generate_password(32);
        plugin
            .update_user(&UpdateUserRequest {
                username: &admin.name,
                password: Some(PasswordChange {
                    new_password: &new,
                    statements: &[],
                }),
                expiration: None,
            })
            .await
            .expect("rotate the admin");
        plugin
            .check_login(&admin.name, &new)
            .await
            .expect("the admin's new password, with its certificate");
        plugin.close().await;

        // Without the certificate the server refuses the same admin, even over verified TLS.
        let mut settings = admin.settings(&vault_url(""), with_ca("ca.pem"));
        settings.password = new;
        let plugin = connect(settings).await.unwrap();
        let err = plugin.verify().await.expect_err("no client certificate");
        assert!(err.to_string().contains("1045"), "{err}");
        plugin.close().await;
    })
    .await;
}

/// PostgreSQL's TLS fields and broken material are refused when the connection is configured,
/// naming the field, before anything reaches the server.
#[tokio::test]
async fn foreign_fields_and_bad_material_are_refused_by_name() {
    let settings = |tls: TlsMaterial| ConnectionSettings {
        connection_url: Secret::new(vault_url("")),
        username: "root".to_owned(),
        password: Secret::new(""),
        max_open_connections: 1,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::ZERO,
        tls,
        disable_escaping: false,
        password_authentication: Default::default(),
        user_marker: None,
    };
    let cases = [
        (
            "tls_certificate",
            TlsMaterial {
                certificate_pem: Some(tls_file("client.pem")),
                ..Default::default()
            },
        ),
        (
            "private_key",
            TlsMaterial {
                private_key_pem: Some(Secret::new(tls_file("client.key"))),
                ..Default::default()
            },
        ),
        (
            "tls_certificate_key",
            TlsMaterial {
                certificate_key_pem: Some(Secret::new(tls_file("client.key"))),
                ..Default::default()
            },
        ),
        (
            "tls_ca",
            TlsMaterial {
                ca_pem: Some(
                    "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".into(),
                ),
                ..Default::default()
            },
        ),
    ];
    for (field, tls) in cases {
        let err = connect(settings(tls)).await.unwrap_err();
        match &err {
            PluginError::InvalidValue { field: got, .. } => assert_eq!(*got, field, "{err}"),
            other => panic!("{field}: expected InvalidValue, got {other:?}"),
        }
        assert!(!err.to_string().contains("PRIVATE KEY"), "{err}");
    }
}
