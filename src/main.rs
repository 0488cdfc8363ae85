//! The `lessor` command: `server` and `dev` run the broker; the other subcommands are a client
//! of its HTTP API with the vault CLI's habits (see [`cli`]): generic `read`/`write`/`list`/
//! `delete`, `-format`, `-field`, exit codes 0 (ok), 1 (local error), 2 (server error), and
//! `exec`, which runs a command with a credential that lives as long as the command.

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use cli::{Client, ClientArgs};
use lessor::config::{self, ListenerSecurity, LogFormat, Overrides, Settings};
use lessor::listener::{TlsListener, TlsVersion};
use lessor::{dev, telemetry, AppState};
use lessor_plugin::Secret;
use serde_json::{json, Value};

const EXAMPLES: &str = "\
Examples:
  lessor dev                                    # a development server; prints the exports
  lessor read database/creds/readonly           # a credential (json when piped, table on a terminal)
  lessor read -field=password database/creds/readonly
  lessor write database/roles/app db_name=dev-postgres default_ttl=1h
  lessor list database/roles
  lessor delete database/roles/app
  lessor token create -policy=app -ttl=24h -format=json
  lessor policy write app app.hcl
  lessor exec --role readonly -- psql -c 'select 1'
  source <(lessor completion bash)

The address comes from --addr, LESSOR_ADDR or VAULT_ADDR; the token from --token, LESSOR_TOKEN or
VAULT_TOKEN. Flags may be written with one dash as with vault (-format=json). Exit codes: 0 success,
1 local error (bad usage, a file), 2 error from the server or server unreachable.";

#[derive(Parser)]
#[command(
    name = "lessor",
    version,
    about = "Dynamic database credentials broker with a Vault-compatible API",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server with a config file.
    Server(ServerArgs),
    /// Runs a development server: temporary store, printed root token, local databases registered.
    Dev(DevArgs),
    /// Measures Lessor against the same SQL run directly on the databases (or, with --servers,
    /// two Vault-API servers side by side); prints a Markdown report, or JSON with --json.
    Bench(BenchArgs),
    /// Reads PATH (e.g. database/creds/app); KEY=VALUE arguments become the query string.
    Read {
        path: String,
        args: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Writes KEY=VALUE data to PATH (KEY=@FILE reads a file, KEY=- standard input, a lone -
    /// the whole JSON body from standard input); a repeated KEY makes a list.
    Write {
        path: String,
        args: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Lists the keys under PATH (e.g. database/roles).
    List {
        path: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deletes PATH.
    Delete {
        path: String,
        args: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Reads the current credential of static role NAME.
    StaticCreds {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Creates, looks up or revokes tokens.
    Token {
        #[command(subcommand)]
        action: cli::TokenAction,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Writes, reads, lists or deletes ACL policies.
    Policy {
        #[command(subcommand)]
        action: cli::PolicyAction,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Runs COMMAND with a credential of ROLE in DATABASE_URL and the engine's variables
    /// (PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE, or MYSQL_HOST MYSQL_TCP_PORT MYSQL_USER
    /// MYSQL_PWD); renews it while COMMAND runs and revokes it when COMMAND exits; exits with
    /// COMMAND's code.
    Exec(cli::exec::ExecArgs),
    /// Prints a shell completion script: `source <(lessor completion bash)`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Asks for a dynamic credential of ROLE.
    Creds {
        role: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Looks up, renews or revokes a lease.
    Lease {
        #[command(subcommand)]
        action: LeaseAction,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Writes, reads, lists or deletes roles.
    Role {
        #[command(subcommand)]
        action: RoleAction,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Writes, reads, lists or deletes connections.
    Connection {
        #[command(subcommand)]
        action: ConnectionAction,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Writes, reads, lists or deletes static roles: existing database users whose passwords Lessor
    /// owns and rotates.
    StaticRole {
        #[command(subcommand)]
        action: StaticRoleAction,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Rotates a static role's password now.
    Rotate {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Rotates a connection's admin password (its URL must take the password from {{password}}).
    RotateRoot {
        connection: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
struct ServerArgs {
    /// TOML config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (overrides the config file and LESSOR_LISTEN).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Store URL or SQLite path (overrides LESSOR_STORE_URL).
    #[arg(long)]
    store_url: Option<String>,
    /// File holding the seal key (overrides LESSOR_SEAL_KEY_FILE).
    #[arg(long)]
    seal_key_file: Option<PathBuf>,
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    #[arg(long)]
    log_level: Option<String>,
    /// The listener's certificate chain, PEM (overrides LESSOR_TLS_CERT_FILE).
    #[arg(long)]
    tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file, PEM (overrides LESSOR_TLS_KEY_FILE).
    #[arg(long)]
    tls_key_file: Option<PathBuf>,
    /// CAs whose client certificates may log in with auth/cert (overrides LESSOR_TLS_CLIENT_CA_FILE).
    #[arg(long)]
    tls_client_ca_file: Option<PathBuf>,
    /// Oldest TLS version accepted: tls12 (default) or tls13.
    #[arg(long, value_parser = parse_tls_version)]
    tls_min_version: Option<TlsVersion>,
    /// Serve plain HTTP: tokens and credentials cross the network in clear.
    #[arg(long)]
    tls_disable: bool,
}

fn parse_tls_version(value: &str) -> Result<TlsVersion, String> {
    TlsVersion::parse("--tls-min-version", value).map_err(|e| e.to_string())
}

#[derive(Args)]
struct DevArgs {
    #[arg(long, default_value = "127.0.0.1:8200")]
    listen: SocketAddr,
    /// Root token to use instead of a generated one.
    #[arg(long)]
    root_token: Option<String>,
    /// Keep the store and seal key in DIR across restarts instead of a temporary directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Serve HTTPS with a throwaway CA and a certificate for 127.0.0.1 and localhost, made in the
    /// data directory; the CA's path is printed as VAULT_CACERT.
    #[arg(long)]
    tls: bool,
    /// With --tls: CAs whose client certificates may log in with auth/cert.
    #[arg(long, requires = "tls")]
    tls_client_ca_file: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    /// Sequential issue/revoke iterations per side.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Worker counts for the throughput measurement (comma-separated levels, each run in turn).
    #[arg(long, value_delimiter = ',', default_value = "4")]
    concurrency: Vec<usize>,
    /// Issue/revoke pairs per worker in each throughput block (with --servers: credentials
    /// each worker issues, then revokes, per block).
    #[arg(long, default_value_t = 50)]
    pairs_per_worker: usize,
    /// Rounds of the throughput measurement at each concurrency level; each round runs a Lessor
    /// block and a direct block (with --servers: a block on each server), the order alternating
    /// from round to round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Leases used to time the reaper.
    #[arg(long, default_value_t = 20)]
    expiring_leases: usize,
    /// Seed Lessor's (temporary) store with N live leases before measuring, and time a
    /// 1,000-key LIST page of them. The leases are rows only: no database user is made.
    #[arg(long, default_value_t = 0, value_name = "N")]
    leases: usize,
    /// Also measure bulk revocation of N users per engine (issue 10 asks for 10000): one
    /// revoke-prefix of N leases, and the reaper draining N leases that fall due together (with
    /// the API's lookup latency meanwhile against idle), each against the engine's plain drop
    /// (DROP ROLE / DROP USER IF EXISTS) of N users on 4 connections. 0: not measured.
    #[arg(long, default_value_t = 0, value_name = "N")]
    bulk: usize,
    /// Also measure issuance from a warm pool of N users per engine that keeps one (issue 10,
    /// target 4): one at a time against Lessor's own HTTP round trip and against issuance without
    /// a pool, and a burst of 1,000 at concurrency 32 from a full pool. 0: not measured.
    #[arg(long, default_value_t = 0, value_name = "N")]
    warm_pool: usize,
    /// Print one JSON object on standard output instead of the Markdown report (progress goes
    /// to standard error either way).
    #[arg(long)]
    json: bool,
    /// Compare two servers that speak Vault's API instead of Lessor against direct SQL: FILE
    /// (JSON) names them, with token files, and the roles to measure on both
    /// (scripts/bench-openbao.sh writes one). Takes --concurrency, --pairs-per-worker, --rounds,
    /// --json and --output.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["engines", "targets", "leases", "bulk", "warm_pool", "replicas", "password_authentication", "scram_iterations"])]
    servers: Option<PathBuf>,
    /// Measure only these engines (comma-separated short names; default: every engine built in
    /// that offers a direct baseline: postgres, mysql, redis).
    #[arg(long, value_delimiter = ',')]
    engines: Vec<String>,
    /// Admin URL of an engine's server, as ENGINE=URL (repeatable). Default: the engine's local
    /// server, or the environment variable LESSOR_BENCH_<ENGINE>_URL.
    #[arg(long = "target", value_name = "ENGINE=URL")]
    targets: Vec<String>,
    /// Append the report to this file as well as printing it.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Lessor's store while measured: `sqlite` (a temporary file) or `postgres` (a throwaway
    /// database on the PostgreSQL of --store-admin-url, dropped at the end).
    #[arg(long, value_parser = ["sqlite", "postgres"], default_value = "sqlite")]
    store: String,
    /// Admin URL of the PostgreSQL that holds the throwaway store of `--store postgres`.
    #[arg(
        long,
        env = "LESSOR_BENCH_STORE_ADMIN_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    store_admin_url: String,
    /// Replicas sharing the store (needs --store postgres); workers spread over them.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// The measured connections' password_authentication: `password` (the server hashes the
    /// password) or `scram-sha-256` (Lessor computes the verifier; the direct side too). With
    /// `scram-sha-256` the report adds issuance against the default-iterations floor. PostgreSQL
    /// only: use it with --engines postgres.
    #[arg(long, value_parser = ["password", "scram-sha-256"], default_value = "password")]
    password_authentication: String,
    /// The connections' scram_iterations (1 to 4096) for generated passwords; only with
    /// --password-authentication scram-sha-256.
    #[arg(long)]
    scram_iterations: Option<u32>,
}

#[derive(Subcommand)]
enum LeaseAction {
    Lookup {
        lease_id: String,
    },
    Renew {
        lease_id: String,
        /// Requested TTL from now, e.g. 1h.
        #[arg(long)]
        increment: Option<String>,
    },
    Revoke {
        lease_id: String,
    },
    /// Revokes every lease under a prefix, e.g. database/creds/app-ro.
    RevokePrefix {
        prefix: String,
    },
}

#[derive(Subcommand)]
enum RoleAction {
    Write {
        name: String,
        /// Connection the role issues credentials on.
        #[arg(long)]
        connection: String,
        /// A creation statement (repeatable); empty means the engine's default.
        #[arg(long = "creation-statement")]
        creation_statements: Vec<String>,
        #[arg(long = "revocation-statement")]
        revocation_statements: Vec<String>,
        #[arg(long = "renew-statement")]
        renew_statements: Vec<String>,
        #[arg(long)]
        default_ttl: Option<String>,
        #[arg(long)]
        max_ttl: Option<String>,
        #[arg(long)]
        username_template: Option<String>,
    },
    Read {
        name: String,
    },
    List,
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
enum StaticRoleAction {
    /// Creates or updates a static role; on create the user's password is rotated at once.
    Write {
        name: String,
        /// Connection the user lives on (required on create).
        #[arg(long)]
        connection: Option<String>,
        /// The existing database user (required on create).
        #[arg(long)]
        username: Option<String>,
        /// A second user for the alternating strategy: the one not in use is rotated.
        #[arg(long)]
        alternate_username: Option<String>,
        /// Rotate every DURATION, e.g. 30d or 12h.
        #[arg(long, conflicts_with = "schedule")]
        period: Option<String>,
        /// Rotate at the occurrences of a cron pattern (UTC), e.g. "0 3 * * SUN".
        #[arg(long)]
        schedule: Option<String>,
        /// With --schedule: how long after an occurrence a rotation may still start, e.g. 2h.
        #[arg(long, requires = "schedule")]
        window: Option<String>,
        /// A rotation statement (repeatable); empty means the engine's default.
        #[arg(long = "rotation-statement")]
        rotation_statements: Vec<String>,
        /// Do not rotate on create: Lessor knows no password until the first rotation.
        #[arg(long)]
        skip_import_rotation: bool,
    },
    /// Shows a static role: next rotation time, schedule and rotation history.
    Read {
        name: String,
        /// Print the API's JSON answer instead of the summary.
        #[arg(long)]
        json: bool,
    },
    List,
    /// Deletes a static role; the database user and its password are left as they are.
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
enum ConnectionAction {
    Write {
        name: String,
        /// Plugin name, e.g. postgresql-database-plugin or mysql-database-plugin.
        #[arg(long)]
        plugin: String,
        /// Connection URL, e.g. postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres.
        #[arg(long)]
        url: String,
        #[arg(long)]
        username: Option<String>,
        /// Admin password; read from LESSOR_CONNECTION_PASSWORD when not given, so it stays out
        /// of shell history.
        #[arg(long, env = "LESSOR_CONNECTION_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Comma-separated role names allowed to use this connection, or "*".
        #[arg(long)]
        allowed_roles: Option<String>,
        /// Save without checking that the database answers.
        #[arg(long)]
        no_verify: bool,
    },
    Read {
        name: String,
    },
    List,
    Delete {
        name: String,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse_from(cli::vault_style_flags(std::env::args_os())) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // Help and version are successes; a usage error is a local error (1), as with vault,
            // rather than clap's 2, which means "the server said no" here.
            return std::process::ExitCode::from(if error.use_stderr() { 1 } else { 0 });
        }
    };
    let outcome = match cli.command {
        Command::Exec(args) => cli::exec::run(args).await,
        command => run(command).await.map(|()| 0),
    };
    // Errors reach people as one line with their causes, not as a debug dump with a backtrace.
    match outcome {
        Ok(code) => std::process::ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(cli::exit_code(&error))
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Server(args) => run_server(args).await,
        Command::Exec(_) => unreachable!("exec is run by main, which keeps its exit code"),
        Command::Completion { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "lessor", &mut std::io::stdout());
            Ok(())
        }
        Command::Read { path, args, client } => {
            cli::read(&Client::new(&client)?, &path, &args).await
        }
        Command::Write { path, args, client } => {
            cli::write(&Client::new(&client)?, &path, &args).await
        }
        Command::List { path, client } => cli::list(&Client::new(&client)?, &path).await,
        Command::Delete { path, args, client } => {
            cli::delete(&Client::new(&client)?, &path, &args).await
        }
        Command::StaticCreds { name, client } => {
            Client::new(&client)?
                .call("GET", &format!("database/static-creds/{name}"), None)
                .await
        }
        Command::Token { action, client } => cli::token(&Client::new(&client)?, action).await,
        Command::Policy { action, client } => cli::policy(&Client::new(&client)?, action).await,
        Command::Dev(args) => run_dev(args).await,
        Command::Bench(args) => run_bench(args).await,
        Command::Creds { role, client } => {
            Client::new(&client)?
                .call("GET", &format!("database/creds/{role}"), None)
                .await
        }
        Command::Lease { action, client } => {
            let client = Client::new(&client)?;
            match action {
                LeaseAction::Lookup { lease_id } => {
                    client
                        .call(
                            "PUT",
                            "sys/leases/lookup",
                            Some(json!({ "lease_id": lease_id })),
                        )
                        .await
                }
                LeaseAction::Renew {
                    lease_id,
                    increment,
                } => {
                    let mut body = json!({ "lease_id": lease_id });
                    if let Some(increment) = increment {
                        body["increment"] = json!(increment);
                    }
                    client.call("PUT", "sys/leases/renew", Some(body)).await
                }
                LeaseAction::Revoke { lease_id } => {
                    client
                        .call(
                            "PUT",
                            "sys/leases/revoke",
                            Some(json!({ "lease_id": lease_id })),
                        )
                        .await
                }
                LeaseAction::RevokePrefix { prefix } => {
                    client
                        .call("PUT", &format!("sys/leases/revoke-prefix/{prefix}"), None)
                        .await
                }
            }
        }
        Command::Role { action, client } => {
            let client = Client::new(&client)?;
            match action {
                RoleAction::Write {
                    name,
                    connection,
                    creation_statements,
                    revocation_statements,
                    renew_statements,
                    default_ttl,
                    max_ttl,
                    username_template,
                } => {
                    let mut body = json!({
                        "db_name": connection,
                        "creation_statements": creation_statements,
                        "revocation_statements": revocation_statements,
                        "renew_statements": renew_statements,
                    });
                    if let Some(v) = default_ttl {
                        body["default_ttl"] = json!(v);
                    }
                    if let Some(v) = max_ttl {
                        body["max_ttl"] = json!(v);
                    }
                    if let Some(v) = username_template {
                        body["username_template"] = json!(v);
                    }
                    client
                        .call("POST", &format!("database/roles/{name}"), Some(body))
                        .await
                }
                RoleAction::Read { name } => {
                    client
                        .call("GET", &format!("database/roles/{name}"), None)
                        .await
                }
                RoleAction::List => client.call("LIST", "database/roles", None).await,
                RoleAction::Delete { name } => {
                    client
                        .call("DELETE", &format!("database/roles/{name}"), None)
                        .await
                }
            }
        }
        Command::StaticRole { action, client } => {
            // The summary is for people; an explicit -format or -field asks for the answer itself.
            let summary = client.format.is_none() && client.field.is_none();
            let mut client = Client::new(&client)?;
            match action {
                StaticRoleAction::Write {
                    name,
                    connection,
                    username,
                    alternate_username,
                    period,
                    schedule,
                    window,
                    rotation_statements,
                    skip_import_rotation,
                } => {
                    let mut body = json!({});
                    let fields = [
                        ("db_name", connection),
                        ("username", username),
                        ("alternate_username", alternate_username),
                        ("rotation_period", period),
                        ("rotation_schedule", schedule),
                        ("rotation_window", window),
                    ];
                    for (field, value) in fields {
                        if let Some(value) = value {
                            body[field] = json!(value);
                        }
                    }
                    if !rotation_statements.is_empty() {
                        body["rotation_statements"] = json!(rotation_statements);
                    }
                    if skip_import_rotation {
                        body["skip_import_rotation"] = json!(true);
                    }
                    client
                        .call("POST", &format!("database/static-roles/{name}"), Some(body))
                        .await
                }
                StaticRoleAction::Read { name, json } if json || !summary => {
                    if json {
                        client.output.format = cli::output::Format::Json;
                    }
                    client
                        .call("GET", &format!("database/static-roles/{name}"), None)
                        .await
                }
                StaticRoleAction::Read { name, .. } => {
                    let answer = client
                        .fetch("GET", &format!("database/static-roles/{name}"))
                        .await?;
                    print!("{}", describe_static_role(&name, &answer["data"]));
                    Ok(())
                }
                StaticRoleAction::List => client.call("LIST", "database/static-roles", None).await,
                StaticRoleAction::Delete { name } => {
                    client
                        .call("DELETE", &format!("database/static-roles/{name}"), None)
                        .await
                }
            }
        }
        Command::Rotate { name, client } => {
            Client::new(&client)?
                .call("POST", &format!("database/rotate-role/{name}"), None)
                .await
        }
        Command::RotateRoot { connection, client } => {
            Client::new(&client)?
                .call("POST", &format!("database/rotate-root/{connection}"), None)
                .await
        }
        Command::Connection { action, client } => {
            let client = Client::new(&client)?;
            match action {
                ConnectionAction::Write {
                    name,
                    plugin,
                    url,
                    username,
                    password,
                    allowed_roles,
                    no_verify,
                } => {
                    let mut body = json!({
                        "plugin_name": plugin,
                        "connection_url": url,
                        "verify_connection": !no_verify,
                    });
                    if let Some(v) = username {
                        body["username"] = json!(v);
                    }
                    if let Some(v) = password {
                        body["password"] = json!(v);
                    }
                    if let Some(v) = allowed_roles {
                        body["allowed_roles"] = json!(v);
                    }
                    client
                        .call("POST", &format!("database/config/{name}"), Some(body))
                        .await
                }
                ConnectionAction::Read { name } => {
                    client
                        .call("GET", &format!("database/config/{name}"), None)
                        .await
                }
                ConnectionAction::List => client.call("LIST", "database/config", None).await,
                ConnectionAction::Delete { name } => {
                    client
                        .call("DELETE", &format!("database/config/{name}"), None)
                        .await
                }
            }
        }
    }
}

fn process_env() -> Vec<(String, String)> {
    std::env::vars().collect()
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received; finishing in-flight work");
}

async fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    telemetry::init(LogFormat::Text, "warn");
    let concurrency: Vec<usize> = args.concurrency.iter().map(|&c| c.max(1)).collect();
    let report = if let Some(file) = &args.servers {
        let options = lessor::bench::peers::PeerOptions::from_file(
            file,
            concurrency,
            args.pairs_per_worker,
            args.rounds,
        )?;
        let report = lessor::bench::peers::run(&options).await?;
        if args.json {
            serde_json::to_string_pretty(&report)?
        } else {
            report.markdown()
        }
    } else {
        let store = match args.store.as_str() {
            "postgres" => lessor::bench::BenchStore::Postgres {
                admin_url: args.store_admin_url.clone(),
            },
            _ => lessor::bench::BenchStore::Sqlite,
        };
        let options = lessor::bench::BenchOptions {
            store,
            replicas: args.replicas.max(1),
            iterations: args.iterations.max(1),
            concurrency,
            pairs_per_worker: args.pairs_per_worker.max(1),
            rounds: args.rounds.max(1),
            expiring_leases: args.expiring_leases.max(1),
            seeded_leases: args.leases,
            bulk: args.bulk,
            warm_pool: args.warm_pool,
            targets: bench_targets(&args.engines, &args.targets)?,
            password_authentication: bench_password_authentication(
                &args.password_authentication,
                args.scram_iterations,
            )?,
        };
        let report = lessor::bench::run(&options).await?;
        if args.json {
            serde_json::to_string_pretty(&report)?
        } else {
            report.markdown()
        }
    };
    println!("{report}");
    if let Some(path) = args.output {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        writeln!(file, "{report}")?;
    }
    Ok(())
}

/// `--password-authentication` and `--scram-iterations`, checked as the connection fields are.
fn bench_password_authentication(
    mode: &str,
    iterations: Option<u32>,
) -> anyhow::Result<lessor_plugin::PasswordAuthentication> {
    if iterations.is_some() && mode != lessor_plugin::PasswordAuthentication::SCRAM_SHA_256 {
        bail!("--scram-iterations: only with --password-authentication scram-sha-256");
    }
    lessor_plugin::PasswordAuthentication::from_fields(
        mode,
        iterations.unwrap_or(lessor_plugin::SCRAM_DEFAULT_ITERATIONS),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The engines `lessor bench` measures, each with its server's admin URL: `--target ENGINE=URL`,
/// else `LESSOR_BENCH_<ENGINE>_URL`, else the engine's local server.
fn bench_targets(engines: &[String], targets: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut urls = std::collections::HashMap::new();
    for target in targets {
        let Some((engine, url)) = target.split_once('=') else {
            bail!("--target: expected ENGINE=URL, got a value without '='");
        };
        if lessor::engines::by_name(engine).is_none() {
            bail!(
                "--target: unknown engine {engine:?}; known: {}",
                engine_names().join(", ")
            );
        }
        urls.insert(engine.to_owned(), url.to_owned());
    }
    let chosen: Vec<&'static lessor_plugin::EngineDescriptor> = if engines.is_empty() {
        lessor::engines::ENGINES
            .iter()
            .copied()
            .filter(|engine| engine.direct.is_some())
            .collect()
    } else {
        engines
            .iter()
            .map(|name| {
                lessor::engines::by_name(name).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--engines: unknown engine {name:?}; known: {}",
                        engine_names().join(", ")
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    Ok(chosen
        .into_iter()
        .map(|engine| {
            let url = urls.remove(engine.name).unwrap_or_else(|| {
                std::env::var(format!("LESSOR_BENCH_{}_URL", engine.name.to_uppercase()))
                    .unwrap_or_else(|_| engine.local.admin_url.to_owned())
            });
            (engine.name.to_owned(), url)
        })
        .collect())
}

fn engine_names() -> Vec<&'static str> {
    lessor::engines::ENGINES.iter().map(|e| e.name).collect()
}

async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: args.listen,
        store_url: args.store_url,
        seal_key_file: args.seal_key_file,
        log_format: args.log_format,
        log_level: args.log_level,
        tls_cert_file: args.tls_cert_file,
        tls_key_file: args.tls_key_file,
        tls_client_ca_file: args.tls_client_ca_file,
        tls_min_version: args.tls_min_version,
        tls_disable: args.tls_disable,
    };
    let settings = config::load(args.config.as_deref(), &process_env(), &overrides)?;
    telemetry::init(settings.log_format, &settings.log_level);
    // Decided (and the files read) before the store is opened: a server that cannot serve as
    // configured stops at once, saying which setting to fix.
    let tls = match settings.listener_security()? {
        ListenerSecurity::Plain => None,
        ListenerSecurity::Tls(files) => Some(TlsListener::load(files)?),
    };
    let state = AppState::open(&settings).await?;
    // Test builds only: the replica fault tests pause a rotation between its phases in a server
    // process, to kill it there.
    #[cfg(feature = "fault-injection")]
    if let Some(secs) = std::env::var("FAULT_INJECTION_ROTATION_PAUSE_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        state.rotation.inject_pause(
            lessor::rotation::RotationFault::AfterPasswordSet,
            std::time::Duration::from_secs(secs),
        );
    }
    if let Some(token) = state.auth.bootstrap_root_token().await? {
        // Shown once, on standard output rather than the log, as `vault operator init` does.
        println!(
            "Root token (shown once; store it safely): {}",
            token.expose()
        );
    }
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    match tls {
        Some(tls) => {
            tracing::info!(
                address = %lessor::listener::client_address(listener.local_addr()?, true),
                console = %format!("{}/ui/", lessor::listener::client_address(listener.local_addr()?, true)),
                client_ca = tls.files().client_ca_file.is_some(),
                "lessor server listening (TLS; SIGHUP reloads the certificate)"
            );
            #[cfg(unix)]
            tokio::spawn(lessor::listener::reload_on_sighup(tls.clone()));
            lessor::listener::serve_tls(listener, state, tls, shutdown_signal()).await?;
        }
        None => {
            tracing::warn!(
                address = %lessor::listener::client_address(listener.local_addr()?, false),
                console = %format!("{}/ui/", lessor::listener::client_address(listener.local_addr()?, false)),
                "lessor server listening on plain HTTP (tls_disable): tokens and credentials cross the network in clear"
            );
            lessor::serve(listener, state, shutdown_signal()).await?;
        }
    }
    Ok(())
}

async fn run_dev(args: DevArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, &args.log_level);
    // The temporary directory lives until run_dev returns, then is removed with the store.
    let (data_dir, _temporary) = match &args.data_dir {
        Some(dir) => {
            // The owner's only, like the temporary one: it holds the store and the seal key.
            lessor::seal::create_private_dir(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            (dir.clone(), None)
        }
        None => {
            let temporary = tempfile::Builder::new().prefix("lessor-dev-").tempdir()?;
            (temporary.path().to_path_buf(), Some(temporary))
        }
    };
    let settings = Settings {
        listen: args.listen,
        store_url: data_dir.join("lessor.db").display().to_string(),
        seal_key_file: Some(data_dir.join("seal.key")),
        create_seal_key_file: true,
        log_format: args.log_format,
        log_level: args.log_level.clone(),
        ..Settings::default()
    };
    // Made before anything is served; a restart on the same --data-dir makes a fresh CA, so
    // clients re-read VAULT_CACERT as they do with `vault server -dev-tls`.
    let tls = if args.tls {
        let (mut files, ca_path) = lessor::listener::make_dev_certificates(&data_dir)?;
        files.client_ca_file = args.tls_client_ca_file.clone();
        Some((TlsListener::load(files)?, ca_path))
    } else {
        None
    };
    let state = AppState::open(&settings).await?;
    let root_token = match args.root_token {
        Some(token) => {
            let token = Secret::new(token);
            state.auth.install_root_token(&token).await?;
            token
        }
        None => match state.auth.bootstrap_root_token().await? {
            Some(token) => token,
            None => bail!(
                "{} already has tokens; pass --root-token with one of them",
                data_dir.display()
            ),
        },
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let registration = dev::register_local_databases(&state).await;

    let addr = lessor::listener::client_address(listener.local_addr()?, tls.is_some());
    println!(
        "Lessor dev server listening on {addr} (store in {})",
        data_dir.display()
    );
    println!("  console: {addr}/ui/ (sign in with the token below)");
    println!("  export LESSOR_ADDR={addr} VAULT_ADDR={addr}");
    println!(
        "  export LESSOR_TOKEN={0} VAULT_TOKEN={0}",
        root_token.expose()
    );
    if let Some((_, ca_path)) = &tls {
        // One variable a line, as `vault server -dev-tls` prints it, so scripts can grep it.
        println!("  export VAULT_CACERT={}", ca_path.display());
        println!("  export LESSOR_CACERT={}", ca_path.display());
    }
    for registered in &registration.registered {
        println!("  registered {registered}");
    }
    for skipped in &registration.skipped {
        println!("  skipped {skipped}");
    }
    if let Some(role) = registration.roles.first() {
        println!("  try: cargo run -- creds {role}");
    }
    let served = match tls {
        Some((tls, _)) => {
            #[cfg(unix)]
            tokio::spawn(lessor::listener::reload_on_sighup(tls.clone()));
            lessor::listener::serve_tls(listener, state.clone(), tls, shutdown_signal()).await
        }
        None => lessor::serve(listener, state.clone(), shutdown_signal()).await,
    };
    if _temporary.is_some() {
        // The temporary store goes with this process; its users must not outlive it.
        match dev::revoke_everything(&state).await {
            Ok(0) => println!("Lessor dev server stopped; no lease was live"),
            Ok(revoked) => println!(
                "Lessor dev server stopped; revoked its {revoked} live lease(s) and dropped their users"
            ),
            Err(error) => eprintln!(
                "Lessor dev server stopped, but some of its users could not be dropped: {error}"
            ),
        }
    } else {
        println!(
            "Lessor dev server stopped; live leases stay in {} and are revoked at expiry when Lessor runs on it again",
            data_dir.display()
        );
    }
    served?;
    Ok(())
}

/// A static role for people: when it rotates next, on what schedule, and how the last rotations went.
fn describe_static_role(name: &str, role: &Value) -> String {
    use std::fmt::Write;
    let text = |key: &str| role[key].as_str().unwrap_or("-").to_owned();
    let seconds = |key: &str| {
        role[key]
            .as_u64()
            .map(|s| humantime::format_duration(std::time::Duration::from_secs(s)).to_string())
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "static role:    {name} (connection {})",
        text("db_name")
    );
    let users = match role["alternate_username"].as_str() {
        Some(alternate) => format!(
            "{} / {alternate} (alternating; current: {})",
            text("username"),
            text("current_username")
        ),
        None => text("username"),
    };
    let _ = writeln!(out, "user:           {users}");
    let schedule = match (
        seconds("rotation_period"),
        role["rotation_schedule"].as_str(),
    ) {
        (Some(period), _) => format!("every {period}"),
        (None, Some(cron)) => match seconds("rotation_window") {
            Some(window) => format!("cron \"{cron}\" (UTC), within {window} of each occurrence"),
            None => format!("cron \"{cron}\" (UTC)"),
        },
        (None, None) => "-".to_owned(),
    };
    let _ = writeln!(out, "schedule:       {schedule}");
    let in_secs = seconds("ttl").unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "next rotation:  {} (in {in_secs})",
        text("next_vault_rotation")
    );
    let _ = writeln!(
        out,
        "last rotation:  {}",
        role["last_vault_rotation"].as_str().unwrap_or("never")
    );
    if role["rotation_in_progress"] == json!(true) {
        let _ = writeln!(out, "in progress:    a rotation is pending resolution");
    }
    if let Some(error) = role["last_error"].as_str() {
        let _ = writeln!(
            out,
            "last error:     {error} (failed attempts: {})",
            role["rotation_attempts"]
        );
    }
    let _ = writeln!(out, "history (newest first):");
    for entry in role["rotation_history"].as_array().into_iter().flatten() {
        let field = |key: &str| entry[key].as_str().unwrap_or("-").to_owned();
        let _ = write!(
            out,
            "  {}  {:<9} {:<8} {}",
            field("time"),
            field("trigger"),
            field("outcome"),
            field("username")
        );
        if let Some(error) = entry["error"].as_str() {
            let _ = write!(out, "  {error}");
        }
        out.push('\n');
    }
    out
}
