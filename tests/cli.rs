//! The `lessor` client as people and scripts use it: the real binary against an in-process
//! server and the real PostgreSQL. Formats and `-field`, the generic read/write/list/delete,
//! exit codes 0/1/2 with errors that say what to do, and `lessor exec`, whose database user lives
//! exactly as long as the command (also when the command is stopped with SIGTERM).

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Runs the binary with only the variables given: none of the caller's LESSOR_/VAULT_ settings.
async fn lessor(addr: &str, token: Option<&str>, args: &[&str]) -> Output {
    command(addr, token, args)
        .output()
        .await
        .expect("run lessor")
}

fn command(addr: &str, token: Option<&str>, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_lessor"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LESSOR_ADDR", addr)
        .stdin(Stdio::null());
    if let Some(token) = token {
        command.env("LESSOR_TOKEN", token);
    }
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// A server with the local PostgreSQL registered as a connection, and its name.
async fn server_with_postgres() -> (TestServer, String) {
    let server = TestServer::start().await;
    let connection = unique("pg");
    server.add_postgres(&connection).await;
    (server, connection)
}

#[tokio::test(flavor = "multi_thread")]
async fn generic_commands_round_trip_a_role_in_every_format() {
    let (server, connection) = server_with_postgres().await;
    let addr = server.api.base.clone();
    let role = unique("cli-role");
    let path = format!("database/roles/{role}");
    let token = Some(ROOT_TOKEN);

    // vault's habits: one-dash flags, key=value data, values as strings parsed by the server.
    let written = lessor(
        &addr,
        token,
        &[
            "write",
            "-format=table",
            &path,
            &format!("db_name={connection}"),
            "default_ttl=1h",
            "max_ttl=2h",
        ],
    )
    .await;
    assert!(ok(&written).contains(&format!("Success! Data written to: {path}")));

    // Not a terminal: JSON by default, the whole answer.
    let read: Value = serde_json::from_str(&ok(&lessor(&addr, token, &["read", &path]).await))
        .expect("json by default when piped");
    assert_eq!(read["data"]["db_name"], json!(connection));
    assert_eq!(read["data"]["default_ttl"], json!(3600));

    let yaml = ok(&lessor(&addr, token, &["read", "--format", "yaml", &path]).await);
    assert!(
        yaml.contains(&format!("  db_name: {connection}\n")),
        "{yaml}"
    );
    assert!(yaml.contains("  default_ttl: 3600\n"), "{yaml}");

    let table = ok(&lessor(&addr, token, &["read", "-format=table", &path]).await);
    assert!(table.starts_with("Key"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("db_name") && l.ends_with(&connection)),
        "{table}"
    );

    // -field: exactly the value, no quotes and no newline, for $(...).
    let field = ok(&lessor(&addr, token, &["read", "-field=db_name", &path]).await);
    assert_eq!(field, connection);
    let missing = lessor(&addr, token, &["read", "-field=nope", &path]).await;
    assert_eq!(
        missing.status.code(),
        Some(1),
        "a missing field is a local error"
    );
    assert!(text(&missing.stderr).contains("-field=nope"));

    let keys: Value =
        serde_json::from_str(&ok(&lessor(&addr, token, &["list", "database/roles"]).await))
            .unwrap();
    assert!(keys.as_array().unwrap().contains(&json!(role)), "{keys}");
    let listed = ok(&lessor(&addr, token, &["list", "-format=table", "database/roles"]).await);
    assert!(listed.starts_with("Keys\n----\n") && listed.contains(&role));

    // A credential read through the generic command logs in; -field gives the lease for scripts.
    let creds: Value = serde_json::from_str(&ok(&lessor(
        &addr,
        token,
        &["read", &format!("database/creds/{role}")],
    )
    .await))
    .unwrap();
    let user = creds["data"]["username"].as_str().unwrap().to_owned();
    let password = creds["data"]["password"].as_str().unwrap().to_owned();
    pg_login(&user, &password)
        .await
        .expect("issued login works");
    let revoked = lessor(
        &addr,
        token,
        &[
            "write",
            "-format=table",
            "sys/leases/revoke",
            &format!("lease_id={}", creds["lease_id"].as_str().unwrap()),
        ],
    )
    .await;
    ok(&revoked);
    assert!(!pg_role_exists(&pg_admin().await, &user).await);

    let deleted = ok(&lessor(&addr, token, &["delete", "-format=table", &path]).await);
    assert!(deleted.contains("Success! Data deleted"), "{deleted}");
    let gone = lessor(&addr, token, &["read", &path]).await;
    assert_eq!(gone.status.code(), Some(2), "a 404 is a remote error");

    server.revoke_everything().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_and_errors_say_what_to_do() {
    let server = TestServer::start().await;
    let addr = server.api.base.clone();

    // Bad usage: local error, 1 (not clap's 2), and nothing sent.
    let usage = lessor(&addr, Some(ROOT_TOKEN), &["read"]).await;
    assert_eq!(usage.status.code(), Some(1));
    let pair = lessor(&addr, Some(ROOT_TOKEN), &["write", "sys/x", "novalue"]).await;
    assert_eq!(pair.status.code(), Some(1));
    assert!(text(&pair.stderr).contains("\"novalue\": expected key=value"));

    // No token: says which variables are read.
    let no_token = lessor(&addr, None, &["list", "database/roles"]).await;
    assert_eq!(no_token.status.code(), Some(2));
    let error = text(&no_token.stderr);
    assert!(
        error.contains("no token was given") && error.contains("VAULT_TOKEN"),
        "{error}"
    );

    // A wrong token is told apart from a missing one, and is not echoed.
    let wrong = lessor(
        &addr,
        Some("not-a-real-token-xyz"),
        &["list", "database/roles"],
    )
    .await;
    assert_eq!(wrong.status.code(), Some(2));
    let error = text(&wrong.stderr);
    assert!(error.contains("the token is not valid"), "{error}");
    assert!(!error.contains("not-a-real-token-xyz"), "{error}");

    // Server down: the address tried and where it came from.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down_addr = format!("http://127.0.0.1:{port}");
    let down = lessor(&down_addr, Some(ROOT_TOKEN), &["read", "sys/health"]).await;
    assert_eq!(down.status.code(), Some(2));
    let error = text(&down.stderr);
    assert!(
        error.contains(&down_addr) && error.contains("LESSOR_ADDR"),
        "{error}"
    );

    // Success and the token commands: a created token can look itself up, then is revoked.
    let created = ok(&lessor(
        &addr,
        Some(ROOT_TOKEN),
        &["token", "create", "-policy=default", "-field=token"],
    )
    .await);
    let lookup: Value =
        serde_json::from_str(&ok(
            &lessor(&addr, Some(&created), &["token", "lookup"]).await
        ))
        .unwrap();
    assert_eq!(lookup["data"]["policies"], json!(["default"]));
    ok(&lessor(&addr, Some(ROOT_TOKEN), &["token", "revoke", &created]).await);
    let after = lessor(&addr, Some(&created), &["token", "lookup"]).await;
    assert_eq!(after.status.code(), Some(2));

    // Completions are generated for the shells people use.
    let bash = ok(&lessor(&addr, None, &["completion", "bash"]).await);
    assert!(bash.contains("lessor") && bash.contains("complete"));

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_commands_write_read_list_and_delete() {
    let server = TestServer::start().await;
    let addr = server.api.base.clone();
    let name = unique("cli-policy");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.hcl");
    let hcl = "path \"database/creds/app\" {\n  capabilities = [\"read\"]\n}\n";
    std::fs::write(&file, hcl).unwrap();
    ok(&lessor(
        &addr,
        Some(ROOT_TOKEN),
        &["policy", "write", &name, file.to_str().unwrap()],
    )
    .await);
    let read = ok(&lessor(
        &addr,
        Some(ROOT_TOKEN),
        &["policy", "read", "-format=table", &name],
    )
    .await);
    assert!(read.contains("database/creds/app"), "{read}");
    let listed = ok(&lessor(&addr, Some(ROOT_TOKEN), &["policy", "list"]).await);
    assert!(listed.contains(&name), "{listed}");
    ok(&lessor(&addr, Some(ROOT_TOKEN), &["policy", "delete", &name]).await);
    let gone = lessor(&addr, Some(ROOT_TOKEN), &["policy", "read", &name]).await;
    assert_eq!(gone.status.code(), Some(2));
    server.stop().await;
}

/// A role on the local PostgreSQL for the exec tests.
async fn exec_role(server: &TestServer, connection: &str) -> String {
    let role = unique("cli-exec");
    server
        .write_role(
            &role,
            json!({ "db_name": connection, "default_ttl": "1h", "max_ttl": "2h" }),
        )
        .await;
    role
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_runs_psql_with_the_variables_then_the_user_is_gone() {
    let (server, connection) = server_with_postgres().await;
    let addr = server.api.base.clone();
    let role = exec_role(&server, &connection).await;
    // Logs in twice, through PG* and through DATABASE_URL, and exits 3 to prove the code passes.
    let script = r#"set -e
        test -n "$PGHOST" && test -n "$PGPORT" && test -n "$PGPASSWORD" && test -n "$PGDATABASE"
        psql -XtAc 'select current_user'
        psql "$DATABASE_URL" -XtAc 'select 1'
        exit 3"#;
    let output = lessor(
        &addr,
        Some(ROOT_TOKEN),
        &[
            "exec", "--role", &role, "--ttl", "15m", "--", "sh", "-c", script,
        ],
    )
    .await;
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(3),
        "stdout: {stdout}\nstderr: {}",
        text(&output.stderr)
    );
    let mut lines = stdout.lines();
    let user = lines.next().expect("current_user").trim().to_owned();
    assert!(!user.is_empty() && user != "postgres", "{stdout}");
    assert_eq!(lines.next(), Some("1"), "DATABASE_URL logs in: {stdout}");
    assert!(
        !pg_role_exists(&pg_admin().await, &user).await,
        "{user} outlived the command"
    );
    let stderr = text(&output.stderr);
    assert!(!stderr.contains("PGPASSWORD="), "{stderr}");
    assert!(!stderr.contains("warning"), "--ttl was applied: {stderr}");
    server.revoke_everything().await;
    server.stop().await;
}

/// Whether MariaDB/MySQL has a user named `user`, asked as the admin.
async fn mysql_user_exists(user: &str) -> bool {
    use mysql_async::prelude::Queryable;
    let opts = mysql_async::Opts::from_url(&mysql_url()).expect("a mysql:// URL");
    let mut admin = mysql_async::Conn::new(opts)
        .await
        .expect("MariaDB is reachable; run scripts/services.sh");
    let found: Option<String> = admin
        .exec_first("SELECT User FROM mysql.user WHERE User = ?", (user,))
        .await
        .unwrap();
    let _ = admin.disconnect().await;
    found.is_some()
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_runs_the_mysql_client_with_the_variables_then_the_user_is_gone() {
    let server = TestServer::start().await;
    let connection = unique("my");
    server.add_mysql(&connection).await;
    let addr = server.api.base.clone();
    let role = exec_role(&server, &connection).await;
    // The stock mysql client reads MYSQL_HOST, MYSQL_TCP_PORT and MYSQL_PWD itself; the user is
    // passed from MYSQL_USER, which the client does not read. DATABASE_URL must name the same
    // login. Exits 4 to prove the code passes through.
    let script = r#"set -e
        test -n "$MYSQL_HOST" && test -n "$MYSQL_TCP_PORT" && test -n "$MYSQL_USER" && test -n "$MYSQL_PWD"
        case "$DATABASE_URL" in
          "mysql://$MYSQL_USER:"*"@$MYSQL_HOST:$MYSQL_TCP_PORT"*) ;;
          *) echo "DATABASE_URL does not match the MYSQL_ variables" >&2; exit 9 ;;
        esac
        mysql --protocol=TCP -u "$MYSQL_USER" -N -B -e 'select current_user()'
        exit 4"#;
    let output = lessor(
        &addr,
        Some(ROOT_TOKEN),
        &[
            "exec", "--role", &role, "--ttl", "15m", "--", "sh", "-c", script,
        ],
    )
    .await;
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(4),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    // current_user() answers user@host.
    let current = stdout.lines().next().expect("current_user()").trim();
    let (user, _host) = current.split_once('@').expect("user@host");
    assert!(!user.is_empty() && user != "root", "{stdout}");
    assert!(
        !mysql_user_exists(user).await,
        "{user} outlived the command"
    );
    assert!(!stderr.contains("MYSQL_PWD="), "{stderr}");
    server.revoke_everything().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_to_exec_reaches_the_command_and_the_user_is_revoked() {
    let (server, connection) = server_with_postgres().await;
    let addr = server.api.base.clone();
    let role = exec_role(&server, &connection).await;
    let dir = tempfile::tempdir().unwrap();
    let user_file = dir.path().join("user");
    let mark = dir.path().join("got-term");
    let script = format!(
        "trap 'echo term > {mark}; exit 143' TERM\n\
         psql -XtAc 'select current_user' > {user}.tmp && mv {user}.tmp {user}\n\
         while :; do sleep 0.1; done",
        mark = mark.display(),
        user = user_file.display()
    );
    let mut child = command(
        &addr,
        Some(ROOT_TOKEN),
        &["exec", "--role", &role, "--", "sh", "-c", &script],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let watched = user_file.clone();
    let logged_in = eventually(Duration::from_secs(20), move || {
        let watched = watched.clone();
        async move { Path::new(&watched).exists() }
    })
    .await;
    if logged_in.is_none() {
        let _ = child.kill().await;
        panic!("the command did not log in within 20 s");
    }
    let user = std::fs::read_to_string(&user_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(pg_role_exists(&pg_admin().await, &user).await);

    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exec ends after SIGTERM")
        .unwrap();
    assert_eq!(
        status.code(),
        Some(143),
        "exec exits with the command's code"
    );
    assert!(mark.exists(), "the command received the SIGTERM");
    assert!(
        !pg_role_exists(&pg_admin().await, &user).await,
        "{user} outlived the command"
    );
    server.revoke_everything().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_renews_a_short_lease_while_the_command_runs() {
    let (server, connection) = server_with_postgres().await;
    let addr = server.api.base.clone();
    let role = unique("cli-renew");
    server
        .write_role(
            &role,
            json!({ "db_name": connection, "default_ttl": "4s", "max_ttl": "1m" }),
        )
        .await;
    // The control: a credential nobody renews no longer logs in after 9 s. The lease is 4 s
    // long, not less: exec renews at two thirds of it, and on a loaded machine a renewal that
    // leaves under a second of margin can land after the user's VALID UNTIL has passed.
    let (_, user, password) = server.creds(&role).await;
    drop(
        pg_login(&user, &password)
            .await
            .expect("fresh control login works"),
    );
    let output = lessor(
        &addr,
        Some(ROOT_TOKEN),
        &[
            "exec",
            "--role",
            &role,
            "--",
            "sh",
            "-c",
            "sleep 9; psql -XtAc 'select current_user'",
        ],
    )
    .await;
    let stdout = ok(&output);
    let exec_user = stdout.trim();
    assert!(
        pg_login(&user, &password).await.is_err(),
        "the unrenewed credential {user} still logs in: the control proves nothing"
    );
    assert!(
        !exec_user.is_empty(),
        "renewed login failed: {}",
        text(&output.stderr)
    );
    assert!(!pg_role_exists(&pg_admin().await, exec_user).await);
    server.revoke_everything().await;
    server.stop().await;
}
