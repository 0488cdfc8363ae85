//! The client side of the `lessor` command, with the vault CLI's habits: generic `read`, `write`,
//! `list` and `delete` on any path with `key=value` arguments, `-format`, `-field`, `token` and
//! `policy` commands, exit codes 0/1/2, and `exec`, which runs a command with a credential.

pub mod client;
pub mod exec;
pub mod output;

use std::ffi::OsString;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Map, Value};

pub use client::{exit_code, Client, ClientArgs};

/// Flags written with one dash as the vault CLI does (`-format=json`, `-field=password`) are
/// rewritten to clap's two; single-letter flags, values and everything after `--` are left alone.
pub fn vault_style_flags(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    const LONG: &[&str] = &[
        "format",
        "field",
        "addr",
        "address",
        "token",
        "ca-cert",
        "tls-skip-verify",
        "role",
        "ttl",
        "policy",
        "display-name",
        "orphan",
        "self",
        "help",
    ];
    let mut after_separator = false;
    args.into_iter()
        .map(|arg| {
            if after_separator {
                return arg;
            }
            let Some(text) = arg.to_str() else { return arg };
            if text == "--" {
                after_separator = true;
                return arg;
            }
            match text.strip_prefix('-') {
                Some(rest) if !rest.starts_with('-') => {
                    let name = rest.split('=').next().unwrap_or_default();
                    if LONG.contains(&name) {
                        OsString::from(format!("-{text}"))
                    } else {
                        arg
                    }
                }
                _ => arg,
            }
        })
        .collect()
}

#[derive(Subcommand)]
pub enum TokenAction {
    /// Creates a child token of the current one (or an orphan with --orphan).
    Create {
        /// A policy of the new token (repeatable).
        #[arg(long = "policy")]
        policies: Vec<String>,
        /// Its TTL, e.g. 1h.
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
        /// Not a child of the current token: revoking the parent leaves it (needs sudo).
        #[arg(long)]
        orphan: bool,
    },
    /// Shows a token: the current one, or TOKEN.
    Lookup {
        // Not `token`: that id is the global --token, which the client authenticates with.
        #[arg(value_name = "TOKEN")]
        target: Option<String>,
    },
    /// Revokes TOKEN and its children, or the current token with --self.
    Revoke {
        #[arg(value_name = "TOKEN", required_unless_present = "self_")]
        target: Option<String>,
        #[arg(long = "self", id = "self_")]
        self_: bool,
    },
}

#[derive(Subcommand)]
pub enum PolicyAction {
    /// Writes an ACL policy from FILE (HCL), or from standard input with `-`.
    Write {
        name: String,
        file: String,
    },
    Read {
        name: String,
    },
    List,
    Delete {
        name: String,
    },
}

/// `vault read PATH [k=v...]`: the arguments become the query string.
pub async fn read(client: &Client, path: &str, args: &[String]) -> anyhow::Result<()> {
    let query = query_string(args)?;
    client.call("GET", &format!("{path}{query}"), None).await
}

pub async fn list(client: &Client, path: &str) -> anyhow::Result<()> {
    client.call("LIST", path, None).await
}

pub async fn delete(client: &Client, path: &str, args: &[String]) -> anyhow::Result<()> {
    let query = query_string(args)?;
    client.call("DELETE", &format!("{path}{query}"), None).await
}

pub async fn write(client: &Client, path: &str, args: &[String]) -> anyhow::Result<()> {
    let body = write_body(args, &mut std::io::stdin().lock())?;
    client.call("POST", path, Some(body)).await
}

fn query_string(args: &[String]) -> anyhow::Result<String> {
    if args.is_empty() {
        return Ok(String::new());
    }
    let mut pairs = url::form_urlencoded::Serializer::new(String::new());
    for arg in args {
        let (key, value) = split_pair(arg)?;
        pairs.append_pair(key, value);
    }
    Ok(format!("?{}", pairs.finish()))
}

fn split_pair(arg: &str) -> anyhow::Result<(&str, &str)> {
    match arg.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key, value)),
        _ => bail!("{arg:?}: expected key=value"),
    }
}

/// The JSON body of `write PATH k=v...`, as the vault CLI builds it: `k=@FILE` reads FILE,
/// `k=-` reads standard input, a lone `-` reads the whole body as JSON from standard input, and a
/// key given twice becomes a list. Values stay strings; the server parses TTLs and lists.
pub fn write_body(args: &[String], stdin: &mut dyn std::io::Read) -> anyhow::Result<Value> {
    if args.len() == 1 && args[0] == "-" {
        let mut text = String::new();
        stdin
            .read_to_string(&mut text)
            .context("cannot read the body from standard input")?;
        let body: Value =
            serde_json::from_str(&text).context("standard input: expected a JSON object")?;
        if !body.is_object() {
            bail!("standard input: expected a JSON object");
        }
        return Ok(body);
    }
    let mut body = Map::new();
    for arg in args {
        let (key, raw) = split_pair(arg)?;
        let value = if raw == "-" {
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .with_context(|| format!("{key}: cannot read standard input"))?;
            text.trim_end_matches('\n').to_owned()
        } else if let Some(file) = raw.strip_prefix('@') {
            std::fs::read_to_string(file).with_context(|| format!("{key}: cannot read {file}"))?
        } else {
            raw.to_owned()
        };
        match body.get_mut(key) {
            None => {
                body.insert(key.to_owned(), Value::String(value));
            }
            Some(Value::Array(items)) => items.push(Value::String(value)),
            Some(previous) => *previous = json!([previous.take(), value]),
        }
    }
    Ok(Value::Object(body))
}

pub async fn token(client: &Client, action: TokenAction) -> anyhow::Result<()> {
    match action {
        TokenAction::Create {
            policies,
            ttl,
            display_name,
            orphan,
        } => {
            let mut body = json!({});
            if !policies.is_empty() {
                body["policies"] = json!(policies);
            }
            if let Some(ttl) = ttl {
                body["ttl"] = json!(ttl);
            }
            if let Some(name) = display_name {
                body["display_name"] = json!(name);
            }
            let path = if orphan {
                "auth/token/create-orphan"
            } else {
                "auth/token/create"
            };
            client.call("POST", path, Some(body)).await
        }
        TokenAction::Lookup { target: None } => {
            client.call("GET", "auth/token/lookup-self", None).await
        }
        TokenAction::Lookup {
            target: Some(token),
        } => {
            client
                .call("POST", "auth/token/lookup", Some(json!({ "token": token })))
                .await
        }
        TokenAction::Revoke { self_: true, .. } => {
            client.call("POST", "auth/token/revoke-self", None).await
        }
        TokenAction::Revoke { target, .. } => {
            client
                .call(
                    "POST",
                    "auth/token/revoke",
                    Some(json!({ "token": target })),
                )
                .await
        }
    }
}

pub async fn policy(client: &Client, action: PolicyAction) -> anyhow::Result<()> {
    match action {
        PolicyAction::Write { name, file } => {
            let text = if file == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .context("cannot read the policy from standard input")?;
                text
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?
            };
            client
                .call(
                    "POST",
                    &format!("sys/policies/acl/{name}"),
                    Some(json!({ "policy": text })),
                )
                .await
        }
        PolicyAction::Read { name } => {
            let path = format!("sys/policies/acl/{name}");
            if client.output.field.is_none() && client.output.format == output::Format::Table {
                // People want the HCL itself, as `vault policy read` prints it.
                let answer = client.fetch("GET", &path).await?;
                println!("{}", answer["data"]["policy"].as_str().unwrap_or_default());
                return Ok(());
            }
            client.call("GET", &path, None).await
        }
        PolicyAction::List => client.call("LIST", "sys/policies/acl", None).await,
        PolicyAction::Delete { name } => {
            client
                .call("DELETE", &format!("sys/policies/acl/{name}"), None)
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn single_dash_flags_become_long_flags_until_the_separator() {
        let args = vault_style_flags(
            [
                "lessor",
                "read",
                "-format=json",
                "-field",
                "x",
                "-h",
                "--",
                "-format=keep",
            ]
            .map(OsString::from),
        );
        assert_eq!(
            args,
            [
                "lessor",
                "read",
                "--format=json",
                "--field",
                "x",
                "-h",
                "--",
                "-format=keep"
            ]
            .map(OsString::from)
        );
    }

    #[test]
    fn write_body_repeats_become_lists_and_bad_pairs_name_the_argument() {
        let body = write_body(
            &strings(&["db_name=pg", "s=a", "s=b", "s=c", "ttl=1h"]),
            &mut std::io::empty(),
        )
        .unwrap();
        assert_eq!(
            body,
            json!({"db_name": "pg", "s": ["a", "b", "c"], "ttl": "1h"})
        );
        let error = write_body(&strings(&["novalue"]), &mut std::io::empty()).unwrap_err();
        assert!(error.to_string().contains("\"novalue\""), "{error}");
        let body = write_body(&strings(&["-"]), &mut &br#"{"a": 1}"#[..]).unwrap();
        assert_eq!(body, json!({"a": 1}));
    }
}
