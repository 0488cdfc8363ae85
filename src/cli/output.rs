//! How the client prints an answer: `table` for people, `json` and `yaml` for scripts, and
//! `-field=NAME` for one raw value, as the vault CLI does. The default follows the terminal:
//! a table when standard output is one, JSON when it is a pipe or a file.

use std::io::IsTerminal;

use anyhow::bail;
use clap::ValueEnum;
use serde_json::Value;

/// The `-format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

impl Format {
    /// `-format`, else LESSOR_FORMAT / VAULT_FORMAT, else table on a terminal and JSON otherwise.
    pub fn resolve(flag: Option<Format>) -> anyhow::Result<Self> {
        if let Some(format) = flag {
            return Ok(format);
        }
        for variable in ["LESSOR_FORMAT", "VAULT_FORMAT"] {
            if let Ok(value) = std::env::var(variable) {
                if value.is_empty() {
                    continue;
                }
                return match Format::from_str(&value, true) {
                    Ok(format) => Ok(format),
                    Err(_) => bail!("{variable}: expected table, json or yaml, not {value:?}"),
                };
            }
        }
        Ok(if std::io::stdout().is_terminal() {
            Format::Table
        } else {
            Format::Json
        })
    }
}

/// What one command prints, decided once from its flags.
#[derive(Clone, Debug)]
pub struct Output {
    pub format: Format,
    pub field: Option<String>,
}

impl Output {
    /// Prints the answer to a read or a write; `None` is an answer with no body (204).
    pub fn secret(&self, verb: Verb, path: &str, answer: Option<&Value>) -> anyhow::Result<()> {
        if let Some(field) = &self.field {
            let Some(answer) = answer else {
                bail!("-field={field}: the answer to {path} has no body");
            };
            print_raw(find_field(answer, field)?);
            return Ok(());
        }
        let Some(answer) = answer else {
            if self.format == Format::Table {
                println!("{}", verb.success(path));
            }
            return Ok(());
        };
        match self.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(answer)?),
            Format::Yaml => print!("{}", to_yaml(answer)),
            Format::Table => {
                warnings(answer);
                let rows = table_rows(answer);
                if rows.is_empty() {
                    println!("{}", verb.success(path));
                } else {
                    print!("{}", columns(&["Key", "Value"], &rows));
                }
            }
        }
        Ok(())
    }

    /// Prints the answer to a LIST: its keys.
    pub fn list(&self, answer: &Value) -> anyhow::Result<()> {
        if let Some(field) = &self.field {
            print_raw(find_field(answer, field)?);
            return Ok(());
        }
        let keys = answer["data"]["keys"].clone();
        match self.format {
            // As `vault list -format=json`: the keys alone, which is what a script iterates on.
            Format::Json => println!("{}", serde_json::to_string_pretty(&keys)?),
            Format::Yaml => print!("{}", to_yaml(&keys)),
            Format::Table => {
                let rows: Vec<Vec<String>> = keys
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| vec![scalar(k)])
                    .collect();
                print!("{}", columns(&["Keys"], &rows));
            }
        }
        Ok(())
    }
}

/// Which kind of request an answer with nothing to show was for, to say what happened.
#[derive(Clone, Copy, Debug)]
pub enum Verb {
    Read,
    Write,
    Delete,
}

impl Verb {
    fn success(self, path: &str) -> String {
        match self {
            Verb::Read => format!("No value found at {path}"),
            Verb::Write => format!("Success! Data written to: {path}"),
            Verb::Delete => format!("Success! Data deleted (if it existed) at: {path}"),
        }
    }
}

/// A field of an answer: first in `data`, then the envelope (`lease_id`...), then `auth`, where
/// `token` and `token_accessor` name `client_token` and `accessor` as in the vault CLI.
fn find_field<'a>(answer: &'a Value, field: &str) -> anyhow::Result<&'a Value> {
    let auth_name = match field {
        "token" => "client_token",
        "token_accessor" => "accessor",
        "token_policies" => "policies",
        "token_duration" => "lease_duration",
        other => other,
    };
    let found = answer
        .get("data")
        .and_then(|d| d.get(field))
        .or_else(|| answer.get("auth").and_then(|a| a.get(auth_name)))
        .or_else(|| {
            answer
                .get(field)
                .filter(|_| !matches!(field, "data" | "auth"))
        });
    match found {
        Some(value) => Ok(value),
        None => {
            let mut known: Vec<String> = answer
                .get("data")
                .and_then(Value::as_object)
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default();
            if answer.get("auth").is_some_and(|a| !a.is_null()) {
                known.extend(["token".into(), "token_accessor".into()]);
            }
            bail!(
                "-field={field}: no such field in the answer; it has: {}",
                known.join(", ")
            )
        }
    }
}

/// A raw value for scripts: strings without quotes, the rest as JSON; a newline only on a
/// terminal, so `$(...)` and pipes get exactly the value (as the vault CLI does).
fn print_raw(value: &Value) {
    use std::io::Write;
    let text = scalar(value);
    let mut out = std::io::stdout();
    let _ = if out.is_terminal() {
        writeln!(out, "{text}")
    } else {
        write!(out, "{text}")
    };
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "<nil>".into(),
        other => other.to_string(),
    }
}

fn warnings(answer: &Value) {
    for warning in answer["warnings"].as_array().into_iter().flatten() {
        eprintln!("WARNING! {}", scalar(warning));
    }
}

/// The rows of the table of a read or write: the lease or token first, then the data.
fn table_rows(answer: &Value) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let row = |k: &str, v: String| vec![k.to_owned(), v];
    if let Some(lease_id) = answer["lease_id"].as_str().filter(|l| !l.is_empty()) {
        rows.push(row("lease_id", lease_id.to_owned()));
        rows.push(row("lease_duration", duration(&answer["lease_duration"])));
        rows.push(row("lease_renewable", scalar(&answer["renewable"])));
    }
    if let Some(auth) = answer["auth"].as_object() {
        let field = |name: &str| auth.get(name).cloned().unwrap_or(Value::Null);
        rows.push(row("token", scalar(&field("client_token"))));
        rows.push(row("token_accessor", scalar(&field("accessor"))));
        rows.push(row("token_duration", duration(&field("lease_duration"))));
        rows.push(row("token_renewable", scalar(&field("renewable"))));
        rows.push(row("token_policies", scalar(&field("policies"))));
    }
    if let Some(data) = answer["data"].as_object() {
        for (key, value) in data {
            rows.push(row(key, scalar(value)));
        }
    }
    rows
}

fn duration(seconds: &Value) -> String {
    match seconds.as_u64() {
        Some(0) => "0s".into(),
        Some(s) => humantime::format_duration(std::time::Duration::from_secs(s)).to_string(),
        None => scalar(seconds),
    }
}

/// Aligned columns under a header underlined with dashes, as the vault CLI prints them.
fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}    ", width = widths[i]));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push_str(&line(header.iter().map(|h| "-".repeat(h.len())).collect()));
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// YAML of a JSON value. Strings that YAML would read as something else are written as JSON
/// strings, which are valid YAML double-quoted scalars.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    for line in yaml_lines(value) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn yaml_lines(value: &Value) -> Vec<String> {
    match value {
        Value::Object(map) if !map.is_empty() => map
            .iter()
            .flat_map(|(key, child)| nested(&format!("{}:", yaml_scalar_str(key)), child, "  "))
            .collect(),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .flat_map(|item| nested("-", item, "  "))
            .collect(),
        other => vec![yaml_scalar(other)],
    }
}

/// `prefix value` on one line for a scalar, else the prefix and the value's lines indented; a
/// list item that is a map starts on the dash's line.
fn nested(prefix: &str, child: &Value, indent: &str) -> Vec<String> {
    let inner = yaml_lines(child);
    let is_collection = match child {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    };
    if !is_collection {
        return vec![format!("{prefix} {}", inner[0])];
    }
    if prefix == "-" && child.is_object() {
        let mut lines = vec![format!("- {}", inner[0])];
        lines.extend(inner[1..].iter().map(|l| format!("{indent}{l}")));
        return lines;
    }
    let mut lines = vec![prefix.to_owned()];
    lines.extend(inner.iter().map(|l| format!("{indent}{l}")));
    lines
}

fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::String(s) => yaml_scalar_str(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

fn yaml_scalar_str(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./@".contains(c))
        && !s.starts_with(['-', '.', '@'])
        && s.parse::<f64>().is_err()
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        );
    if plain {
        s.to_owned()
    } else {
        Value::String(s.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_quotes_what_yaml_would_misread_and_nests_lists_of_maps() {
        let value = json!({
            "data": {"db_name": "pg", "ttl": "3600", "flag": "yes", "empty": "", "keys": ["a", "b"],
                     "list": [{"x": 1, "y": "two words"}], "none": {}},
            "renewable": true
        });
        assert_eq!(
            to_yaml(&value),
            "data:\n  db_name: pg\n  empty: \"\"\n  flag: \"yes\"\n  keys:\n    - a\n    - b\n  list:\n    - x: 1\n      \"y\": \"two words\"\n  none: {}\n  ttl: \"3600\"\nrenewable: true\n"
        );
    }

    #[test]
    fn field_looks_in_data_then_auth_then_the_envelope() {
        let answer =
            json!({"lease_id": "l1", "data": {"username": "u"}, "auth": {"client_token": "t"}});
        assert_eq!(find_field(&answer, "username").unwrap(), &json!("u"));
        assert_eq!(find_field(&answer, "token").unwrap(), &json!("t"));
        assert_eq!(find_field(&answer, "lease_id").unwrap(), &json!("l1"));
        let error = find_field(&answer, "nope").unwrap_err().to_string();
        assert!(
            error.contains("-field=nope") && error.contains("username"),
            "{error}"
        );
    }
}
