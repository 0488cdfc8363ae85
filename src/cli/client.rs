//! The HTTP client behind the client subcommands: where the address, token and CA come from, and
//! errors that say what to do. A failure on the server's side (or no server) is a
//! [`RemoteError`], which exits 2 as the vault CLI does; everything else exits 1.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use lessor_plugin::Secret;
use serde_json::Value;

use super::output::{Format, Output, Verb};

/// Flags every client subcommand takes.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// Server address; defaults to LESSOR_ADDR, then VAULT_ADDR, then http://127.0.0.1:8200.
    #[arg(long, alias = "address", global = true)]
    pub addr: Option<String>,
    /// Token; defaults to LESSOR_TOKEN, then VAULT_TOKEN.
    #[arg(long, global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA that signed the server's certificate; defaults to LESSOR_CACERT, then
    /// VAULT_CACERT.
    #[arg(long, global = true)]
    pub ca_cert: Option<PathBuf>,
    /// Do not verify the server's certificate (also LESSOR_SKIP_VERIFY / VAULT_SKIP_VERIFY): anyone
    /// on the path can then read the token and the credentials.
    #[arg(long, global = true)]
    pub tls_skip_verify: bool,
    /// Output format: table (default on a terminal), json (default otherwise) or yaml; also
    /// LESSOR_FORMAT / VAULT_FORMAT.
    #[arg(long, value_enum, global = true)]
    pub format: Option<Format>,
    /// Print only this field's raw value (a data field, lease_id, token...).
    #[arg(long, global = true)]
    pub field: Option<String>,
}

/// The server answered with an error, or could not be reached: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RemoteError(pub String);

/// Exit code of a failed command: 2 when the server refused or was unreachable, else 1.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<RemoteError>().is_some() {
        2
    } else {
        1
    }
}

/// Where the address came from, to name it when the server cannot be reached.
fn resolve_addr(flag: Option<&str>) -> (String, &'static str) {
    if let Some(addr) = flag {
        return (addr.to_owned(), "--addr");
    }
    for variable in ["LESSOR_ADDR", "VAULT_ADDR"] {
        if let Ok(addr) = std::env::var(variable) {
            if !addr.is_empty() {
                return (addr, variable);
            }
        }
    }
    ("http://127.0.0.1:8200".into(), "the default")
}

/// A client of the HTTP API for the people-facing subcommands.
pub struct Client {
    http: reqwest::Client,
    addr: String,
    addr_source: &'static str,
    token: Option<Secret>,
    pub output: Output,
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let (addr, addr_source) = resolve_addr(args.addr.as_deref());
        if !addr.starts_with("http://") && !addr.starts_with("https://") {
            bail!("{addr_source}: expected an http:// or https:// address, got {addr}");
        }
        let token = args
            .token
            .clone()
            .or_else(|| std::env::var("LESSOR_TOKEN").ok())
            .or_else(|| std::env::var("VAULT_TOKEN").ok())
            .filter(|t| !t.is_empty())
            .map(Secret::new);
        let mut http = reqwest::Client::builder();
        let ca_cert = args
            .ca_cert
            .clone()
            .or_else(|| env_path("LESSOR_CACERT"))
            .or_else(|| env_path("VAULT_CACERT"));
        if let Some(path) = ca_cert {
            let pem = std::fs::read(&path)
                .with_context(|| format!("CA certificate: cannot read {}", path.display()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!(
                    "CA certificate: {} is not a PEM certificate",
                    path.display()
                )
            })?;
            if certificates.is_empty() {
                bail!(
                    "CA certificate: {} holds no PEM certificate",
                    path.display()
                );
            }
            for certificate in certificates {
                http = http.add_root_certificate(certificate);
            }
        }
        let skip_verify = args.tls_skip_verify
            || env_flag("LESSOR_SKIP_VERIFY")?
            || env_flag("VAULT_SKIP_VERIFY")?;
        if skip_verify {
            eprintln!(
                "warning: not verifying the server's TLS certificate (skip verify): anyone on the network path can read the token and the credentials"
            );
            http = http.danger_accept_invalid_certs(true);
        }
        Ok(Self {
            http: http.build().context("cannot set up the HTTP client")?,
            addr: addr.trim_end_matches('/').to_owned(),
            addr_source,
            token,
            output: Output {
                format: Format::resolve(args.format)?,
                field: args.field.clone(),
            },
        })
    }

    /// Sends one request; `Ok(None)` is a success with no body. Every failure names what to do.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Option<Value>> {
        let path = path.trim_start_matches('/');
        let path = path.strip_prefix("v1/").unwrap_or(path);
        let (status, text) = self.send(method, path, body).await?;
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return Ok(parsed);
        }
        let errors = parsed
            .as_ref()
            .and_then(|v| v["errors"].as_array())
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e.as_str().map(str::to_owned).unwrap_or(e.to_string()))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| text.trim().to_owned());
        let code = status.as_u16();
        let advice = match status {
            reqwest::StatusCode::FORBIDDEN if self.token.is_none() => {
                " (no token was given: pass --token or set LESSOR_TOKEN or VAULT_TOKEN)".to_owned()
            }
            reqwest::StatusCode::FORBIDDEN => self.why_forbidden(path).await,
            reqwest::StatusCode::NOT_FOUND if method == "GET" => {
                format!(" (no value found at {path})")
            }
            _ => String::new(),
        };
        Err(RemoteError(format!("{method} {path}: {code}: {errors}{advice}")).into())
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(reqwest::StatusCode, String)> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr));
        if let Some(token) = &self.token {
            request = request.header("X-Vault-Token", token.expose());
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|error| {
            // The cause chain of a connection error names the refusal or the DNS failure.
            let mut cause = String::new();
            let mut source: Option<&dyn std::error::Error> = Some(&error);
            while let Some(e) = source {
                cause = e.to_string();
                source = e.source();
            }
            RemoteError(format!(
                "cannot reach the server at {} (from {}): {cause}; is it running? Set --addr, LESSOR_ADDR or VAULT_ADDR to its address",
                self.addr, self.addr_source
            ))
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            RemoteError(format!("{}: the answer could not be read: {e}", self.addr))
        })?;
        Ok((status, text))
    }

    /// A 403 with a token: tells a token the server does not know from one whose policies do
    /// not reach the path, by asking the server about the token itself.
    async fn why_forbidden(&self, path: &str) -> String {
        match self.send("GET", "auth/token/lookup-self", None).await {
            Ok((status, _)) if status == reqwest::StatusCode::FORBIDDEN => {
                " (the token is not valid: unknown, expired or revoked; check --token, LESSOR_TOKEN and VAULT_TOKEN)".into()
            }
            Ok((status, _)) if status.is_success() => {
                format!(" (the token is valid but its policies do not allow this on {path}; see `lessor token lookup`)")
            }
            _ => String::new(),
        }
    }

    /// Sends one request and prints its answer in the chosen format.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<()> {
        let answer = self.request(method, path, body).await?;
        match method {
            "LIST" => self.output.list(&answer.unwrap_or(Value::Null)),
            "DELETE" => self.output.secret(Verb::Delete, path, answer.as_ref()),
            "GET" => self.output.secret(Verb::Read, path, answer.as_ref()),
            _ => self.output.secret(Verb::Write, path, answer.as_ref()),
        }
    }

    /// Sends one request and returns its JSON answer; an answer with no body is an error.
    pub async fn fetch(&self, method: &str, path: &str) -> anyhow::Result<Value> {
        self.request(method, path, None)
            .await?
            .with_context(|| format!("the answer to {path} has no body"))
    }
}

/// A path from the environment; empty counts as unset.
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// A boolean from the environment, as Vault reads VAULT_SKIP_VERIFY; a value that is neither is
/// an error naming the variable rather than a silent guess.
fn env_flag(name: &str) -> anyhow::Result<bool> {
    match std::env::var(name) {
        Err(_) => Ok(false),
        Ok(value) => match value.trim().to_ascii_lowercase().as_str() {
            "" | "0" | "false" | "no" => Ok(false),
            "1" | "true" | "yes" => Ok(true),
            other => bail!("{name}: expected true or false, not {other:?}"),
        },
    }
}
