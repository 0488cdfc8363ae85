//! `lessor exec --role ROLE -- COMMAND...`: asks for a credential, runs COMMAND with it in
//! `DATABASE_URL` and the engine's own variables, renews the lease while COMMAND runs, and revokes
//! it when COMMAND exits, so the database user lives exactly as long as the command.
//! SIGINT and SIGTERM are forwarded to COMMAND; the revocation happens once it has exited.

use rustix::process::{kill_process, Pid, Signal};
use std::ffi::OsString;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::client::{Client, ClientArgs};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    lessor exec --role app -- psql -c 'select 1'\n  \
    lessor exec --role app --ttl 15m -- ./migrate.sh\n\n\
    The token needs read on database/roles/ROLE and database/config/<its db_name> (to learn the\n\
    host, port and database), and on database/creds/ROLE.")]
pub struct ExecArgs {
    /// The role to ask a credential of.
    #[arg(long)]
    pub role: String,
    /// Lease TTL to ask for at once and at each renewal, e.g. 15m (capped by the role's max_ttl).
    #[arg(long, value_parser = parse_ttl)]
    pub ttl: Option<Duration>,
    #[command(flatten)]
    pub client: ClientArgs,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

fn parse_ttl(value: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(value).map_err(|e| format!("{value:?}: {e}"))?;
    if ttl.as_secs() == 0 {
        return Err("must be at least 1s".into());
    }
    Ok(ttl)
}

/// The database a role issues on, as its clients want it: which engine, where, which database.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    engine: Engine,
    host: String,
    port: u16,
    database: Option<String>,
    /// PostgreSQL's `sslmode` from the connection URL, so the command connects as Lessor does.
    sslmode: Option<String>,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Engine {
    Postgres,
    Mysql,
}

impl Target {
    /// From a connection's `plugin_name` and `connection_url` (its templates are not read).
    pub fn from_connection(plugin: &str, connection_url: &str) -> anyhow::Result<Self> {
        let engine = if plugin.contains("postgres") {
            Engine::Postgres
        } else if plugin.contains("mysql") {
            Engine::Mysql
        } else {
            bail!("plugin_name {plugin:?}: lessor exec knows PostgreSQL and MySQL connections");
        };
        let filled = connection_url
            .replace("{{username}}", "u")
            .replace("{{password}}", "p");
        let url = url::Url::parse(&filled).map_err(|e| {
            anyhow::anyhow!("connection_url: lessor exec needs a URL (scheme://host:port/db): {e}")
        })?;
        let query = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .map(|h| h.trim_matches(['[', ']']).to_owned())
            .or_else(|| query("host"))
            .unwrap_or_else(|| "localhost".into());
        let port = url.port().unwrap_or(match engine {
            Engine::Postgres => 5432,
            Engine::Mysql => 3306,
        });
        let database = Some(url.path().trim_start_matches('/').to_owned())
            .filter(|d| !d.is_empty())
            .map(|d| {
                percent_encoding::percent_decode_str(&d)
                    .decode_utf8_lossy()
                    .into_owned()
            });
        let sslmode = match engine {
            Engine::Postgres => query("sslmode"),
            Engine::Mysql => None,
        };
        Ok(Self {
            engine,
            host,
            port,
            database,
            sslmode,
        })
    }

    /// The variables COMMAND gets: `DATABASE_URL` and the engine's own client variables.
    pub fn environment(&self, username: &str, password: &str) -> Vec<(String, String)> {
        let scheme = match self.engine {
            Engine::Postgres => "postgresql",
            Engine::Mysql => "mysql",
        };
        let mut url = url::Url::parse(&format!("{scheme}://placeholder")).expect("static URL");
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let _ = url.set_host(Some(&host));
        let _ = url.set_port(Some(self.port));
        let _ = url.set_username(username);
        let _ = url.set_password(Some(password));
        url.set_path(self.database.as_deref().unwrap_or(""));
        if let Some(mode) = &self.sslmode {
            url.query_pairs_mut().append_pair("sslmode", mode);
        }
        let mut vars = vec![("DATABASE_URL".to_owned(), url.to_string())];
        let mut set = |k: &str, v: &str| vars.push((k.to_owned(), v.to_owned()));
        match self.engine {
            Engine::Postgres => {
                set("PGHOST", &self.host);
                set("PGPORT", &self.port.to_string());
                set("PGUSER", username);
                set("PGPASSWORD", password);
                if let Some(db) = &self.database {
                    set("PGDATABASE", db);
                }
                if let Some(mode) = &self.sslmode {
                    set("PGSSLMODE", mode);
                }
            }
            Engine::Mysql => {
                set("MYSQL_HOST", &self.host);
                set("MYSQL_TCP_PORT", &self.port.to_string());
                set("MYSQL_USER", username);
                set("MYSQL_PWD", password);
            }
        }
        vars
    }
}

/// Runs `exec`; returns the exit code to leave with: the command's, or 128 + the signal that
/// ended it, as a shell reports it.
pub async fn run(args: ExecArgs) -> anyhow::Result<u8> {
    let client = Client::new(&args.client)?;
    let role = client
        .fetch("GET", &format!("database/roles/{}", args.role))
        .await?;
    let db_name = role["data"]["db_name"]
        .as_str()
        .with_context(|| format!("database/roles/{}: the answer has no db_name", args.role))?;
    let connection = client
        .fetch("GET", &format!("database/config/{db_name}"))
        .await?;
    let data = &connection["data"];
    let target = Target::from_connection(
        data["plugin_name"].as_str().unwrap_or_default(),
        data["connection_details"]["connection_url"]
            .as_str()
            .with_context(|| format!("database/config/{db_name}: no connection_url"))?,
    )?;

    let secret = client
        .fetch("GET", &format!("database/creds/{}", args.role))
        .await?;
    let lease = Lease::from_answer(&secret)?;
    let username = secret["data"]["username"].as_str().unwrap_or_default();
    let password = secret["data"]["password"].as_str().unwrap_or_default();
    eprintln!(
        "lessor exec: database user {username} (lease {}, {}s)",
        lease.id,
        lease.duration.as_secs()
    );
    let outcome = supervise(&client, &args, &target, username, password, lease.clone()).await;
    // Revoked whatever happened to the command: the user must not outlive it.
    if let Err(error) = client
        .request(
            "PUT",
            "sys/leases/revoke",
            Some(json!({ "lease_id": lease.id })),
        )
        .await
    {
        eprintln!(
            "lessor exec: warning: could not revoke lease {} ({error:#}); it ends at its TTL",
            lease.id
        );
    }
    outcome
}

#[derive(Clone, Debug)]
struct Lease {
    id: String,
    duration: Duration,
    renewable: bool,
}

impl Lease {
    fn from_answer(answer: &Value) -> anyhow::Result<Self> {
        Ok(Self {
            id: answer["lease_id"]
                .as_str()
                .filter(|l| !l.is_empty())
                .context("the credential came without a lease_id")?
                .to_owned(),
            duration: Duration::from_secs(answer["lease_duration"].as_u64().unwrap_or(0)),
            renewable: answer["renewable"].as_bool().unwrap_or(false),
        })
    }
}

/// When to renew a lease of `duration`: two thirds of the way, as Vault's lifetime watcher does.
fn renewal_delay(duration: Duration) -> Duration {
    (duration * 2 / 3).max(Duration::from_millis(500))
}

async fn renew(client: &Client, lease: &Lease, ttl: Option<Duration>) -> anyhow::Result<Duration> {
    let mut body = json!({ "lease_id": lease.id });
    if let Some(ttl) = ttl {
        body["increment"] = json!(ttl.as_secs());
    }
    let answer = client
        .request("PUT", "sys/leases/renew", Some(body))
        .await?
        .unwrap_or(Value::Null);
    Ok(Duration::from_secs(
        answer["lease_duration"].as_u64().unwrap_or(0),
    ))
}

async fn supervise(
    client: &Client,
    args: &ExecArgs,
    target: &Target,
    username: &str,
    password: &str,
    mut lease: Lease,
) -> anyhow::Result<u8> {
    use tokio::signal::unix::{signal, SignalKind};
    if let Some(ttl) = args.ttl {
        match renew(client, &lease, Some(ttl)).await {
            Ok(duration) => lease.duration = duration,
            Err(error) => eprintln!("lessor exec: warning: --ttl not applied: {error:#}"),
        }
    }
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let program = &args.command[0];
    let mut child = tokio::process::Command::new(program)
        .args(&args.command[1..])
        .envs(target.environment(username, password))
        .spawn()
        .with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
    let pid = child.id().context("the command exited at once")?;
    let mut expires = Instant::now() + lease.duration;
    let mut next_renewal = Instant::now() + renewal_delay(lease.duration);
    let mut renewing = lease.renewable && lease.duration > Duration::ZERO;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            _ = interrupt.recv() => forward(pid, Signal::INT),
            _ = terminate.recv() => forward(pid, Signal::TERM),
            _ = tokio::time::sleep_until(next_renewal), if renewing => {
                match renew(client, &lease, args.ttl).await {
                    Ok(duration) if duration > Duration::ZERO => {
                        lease.duration = duration;
                        expires = Instant::now() + duration;
                        next_renewal = Instant::now() + renewal_delay(duration);
                    }
                    Ok(_) => {
                        eprintln!("lessor exec: the lease reached its max_ttl and is no longer renewed");
                        renewing = false;
                    }
                    Err(error) => {
                        // Retried until the lease would have expired: a server restart is brief.
                        let left = expires.saturating_duration_since(Instant::now());
                        eprintln!("lessor exec: warning: renewal failed ({error:#}); {}s left", left.as_secs());
                        renewing = left > Duration::from_secs(1);
                        next_renewal = Instant::now() + (left / 3).max(Duration::from_millis(500));
                    }
                }
            }
        }
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code.clamp(0, 255) as u8,
        (None, Some(signal)) => (128 + signal).clamp(0, 255) as u8,
        (None, None) => 1,
    })
}

/// Passes a signal on to the command, which decides how to stop; exec waits for it to exit.
/// `pid` is our child's, which cannot be reaped (and its pid reused) before `child.wait()` returns.
fn forward(pid: u32, signal: Signal) {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    if let Err(error) = kill_process(pid, signal) {
        eprintln!("lessor exec: cannot pass the signal on to the command: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_target_keeps_host_port_database_and_sslmode_and_encodes_the_password() {
        let target = Target::from_connection(
            "postgresql-database-plugin",
            "postgresql://{{username}}:{{password}}@db.example:6432/app%20db?sslmode=require&x=1",
        )
        .unwrap();
        let vars: std::collections::HashMap<_, _> = target
            .environment("v-app-1", "p@ss/w:rd")
            .into_iter()
            .collect();
        assert_eq!(vars["PGHOST"], "db.example");
        assert_eq!(vars["PGPORT"], "6432");
        assert_eq!(vars["PGDATABASE"], "app db");
        assert_eq!(vars["PGSSLMODE"], "require");
        assert_eq!(vars["PGPASSWORD"], "p@ss/w:rd");
        let url = url::Url::parse(&vars["DATABASE_URL"]).unwrap();
        assert_eq!(url.host_str(), Some("db.example"));
        assert_eq!(url.username(), "v-app-1");
        assert_eq!(
            percent_encoding::percent_decode_str(url.password().unwrap()).decode_utf8_lossy(),
            "p@ss/w:rd"
        );
    }

    #[test]
    fn mysql_target_defaults_its_port_and_sets_the_mysql_variables() {
        let target =
            Target::from_connection("mysql-database-plugin", "mysql://root@127.0.0.1/").unwrap();
        let vars: std::collections::HashMap<_, _> =
            target.environment("u", "p").into_iter().collect();
        assert_eq!(vars["MYSQL_TCP_PORT"], "3306");
        assert_eq!(vars["MYSQL_PWD"], "p");
        assert_eq!(vars["DATABASE_URL"], "mysql://u:p@127.0.0.1:3306");
        assert!(Target::from_connection("mongodb-database-plugin", "mongodb://x").is_err());
    }
}
