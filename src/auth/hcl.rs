//! A small HCL reader for Vault policies: attributes (`key = value`), blocks with labels
//! (`path "database/creds/*" { ... }`), strings, numbers, booleans, lists and objects, and the three
//! comment styles. It yields the same JSON shape Vault's JSON policy syntax uses, so one code path
//! interprets both: `path "a" { capabilities = ["read"] }` becomes
//! `{"path": {"a": {"capabilities": ["read"]}}}`. Heredocs and expressions are not policy syntax and
//! are refused with the line they appear on.
//!
//! The reader is recursive (a block or value inside another is read by a nested call), so it is
//! bounded: a text longer than [`MAX_POLICY_BYTES`] or nested deeper than [`MAX_DEPTH`] is refused
//! with an error naming the limit, before the nesting can exhaust the stack. A maintained crate
//! (`hcl-rs`) was considered: it recurses without a limit too, so it would need the same guard, and
//! it accepts expressions, heredocs and functions that a policy must not contain.

use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};

/// The deepest nesting of blocks, lists and objects a policy may use. Real policies use 3 to 5
/// (`path "x" { allowed_parameters = { "k" = [] } }`); the limit only keeps recursion shallow.
pub const MAX_DEPTH: usize = 32;
/// The longest policy text accepted, in bytes (Vault's largest real-world policies are a few KB).
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;

/// The error for a text nested deeper than [`MAX_DEPTH`].
pub fn too_deep() -> Error {
    Error::invalid(format!("policy: nesting deeper than {MAX_DEPTH} levels"))
}

/// The error for a text longer than [`MAX_POLICY_BYTES`].
pub fn too_long() -> Error {
    Error::invalid(format!("policy: longer than {MAX_POLICY_BYTES} bytes"))
}

/// Parses HCL text into a JSON object.
pub fn parse(text: &str) -> Result<Value> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(too_long());
    }
    let mut parser = Parser {
        chars: text.chars().collect(),
        at: 0,
        depth: 0,
    };
    let body = parser.body(None)?;
    Ok(Value::Object(body))
}

struct Parser {
    chars: Vec<char>,
    at: usize,
    /// How many blocks, lists and objects enclose the current position.
    depth: usize,
}

impl Parser {
    fn line(&self) -> usize {
        self.chars[..self.at.min(self.chars.len())]
            .iter()
            .filter(|c| **c == '\n')
            .count()
            + 1
    }

    fn error(&self, message: impl std::fmt::Display) -> Error {
        Error::invalid(format!("policy: line {}: {message}", self.line()))
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    /// Steps into a block, list or object; every recursive call goes through here.
    fn enter(&mut self) -> Result<()> {
        if self.depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        self.depth += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Skips white space and comments; with `newlines` false stops at a line end (which ends an
    /// attribute).
    fn skip(&mut self, newlines: bool) -> Result<()> {
        loop {
            match self.peek() {
                Some('\n') if !newlines => return Ok(()),
                Some(c) if c.is_whitespace() => self.at += 1,
                Some('#') => self.skip_line(),
                Some('/') if self.chars.get(self.at + 1) == Some(&'/') => self.skip_line(),
                Some('/') if self.chars.get(self.at + 1) == Some(&'*') => {
                    self.at += 2;
                    loop {
                        match self.peek() {
                            None => return Err(self.error("unterminated /* comment")),
                            Some('*') if self.chars.get(self.at + 1) == Some(&'/') => {
                                self.at += 2;
                                break;
                            }
                            Some(_) => self.at += 1,
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn skip_line(&mut self) {
        while let Some(c) = self.peek() {
            if c == '\n' {
                break;
            }
            self.at += 1;
        }
    }

    /// Attributes and blocks up to `close` (or the end of the text at top level).
    fn body(&mut self, close: Option<char>) -> Result<Map<String, Value>> {
        let mut out = Map::new();
        loop {
            self.skip(true)?;
            match self.peek() {
                None if close.is_none() => return Ok(out),
                None => return Err(self.error("unexpected end of text; a '}' is missing")),
                Some(c) if Some(c) == close => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(',') if close.is_some() => {
                    self.at += 1;
                    continue;
                }
                _ => {}
            }
            let key = self.key()?;
            self.skip(false)?;
            match self.peek() {
                Some('=') | Some(':') => {
                    self.at += 1;
                    self.skip(false)?;
                    let value = self.value()?;
                    out.insert(key, value);
                }
                _ => {
                    let mut labels = Vec::new();
                    loop {
                        self.skip(false)?;
                        match self.peek() {
                            Some('"') => labels.push(self.string()?),
                            Some('{') => break,
                            Some(c) if is_ident_start(c) => labels.push(self.identifier()),
                            _ => {
                                return Err(
                                    self.error(format!("expected '=' or a block after {key:?}"))
                                )
                            }
                        }
                    }
                    self.at += 1;
                    self.enter()?;
                    let block = Value::Object(self.body(Some('}'))?);
                    self.leave();
                    insert_block(&mut out, key, &labels, block);
                }
            }
        }
    }

    fn key(&mut self) -> Result<String> {
        match self.peek() {
            Some('"') => self.string(),
            Some(c) if is_ident_start(c) => Ok(self.identifier()),
            Some(c) => Err(self.error(format!("unexpected {c:?}"))),
            None => Err(self.error("unexpected end of text")),
        }
    }

    fn identifier(&mut self) -> String {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }

    fn string(&mut self) -> Result<String> {
        self.at += 1; // the opening quote
        let mut out = String::new();
        loop {
            match self.peek() {
                None | Some('\n') => return Err(self.error("unterminated string")),
                Some('"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some('\\') => {
                    self.at += 1;
                    let escaped = match self.peek() {
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('/') => '/',
                        other => {
                            return Err(
                                self.error(format!("unknown escape \\{}", other.unwrap_or(' ')))
                            )
                        }
                    };
                    out.push(escaped);
                    self.at += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.at += 1;
                }
            }
        }
    }

    fn value(&mut self) -> Result<Value> {
        match self.peek() {
            Some('"') => Ok(Value::String(self.string()?)),
            Some('[') => {
                self.at += 1;
                self.enter()?;
                let mut items = Vec::new();
                loop {
                    self.skip(true)?;
                    match self.peek() {
                        Some(']') => {
                            self.at += 1;
                            self.leave();
                            return Ok(Value::Array(items));
                        }
                        Some(',') => self.at += 1,
                        None => return Err(self.error("unterminated list")),
                        _ => items.push(self.value()?),
                    }
                }
            }
            Some('{') => {
                self.at += 1;
                self.enter()?;
                let object = Value::Object(self.body(Some('}'))?);
                self.leave();
                Ok(object)
            }
            Some('<') => Err(self.error("heredocs are not supported in policies")),
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let start = self.at;
                self.at += 1;
                while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
                    self.at += 1;
                }
                let text: String = self.chars[start..self.at].iter().collect();
                text.parse::<f64>()
                    .ok()
                    .and_then(|f| {
                        if text.contains('.') {
                            Number::from_f64(f)
                        } else {
                            text.parse::<i64>().ok().map(Number::from)
                        }
                    })
                    .map(Value::Number)
                    .ok_or_else(|| self.error(format!("{text:?} is not a number")))
            }
            Some(c) if is_ident_start(c) => match self.identifier().as_str() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                "null" => Ok(Value::Null),
                other => Err(self.error(format!("expected a value, found {other:?}"))),
            },
            Some(c) => Err(self.error(format!("expected a value, found {c:?}"))),
            None => Err(self.error("expected a value")),
        }
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

/// Nests a block under its labels, merging with earlier blocks of the same type: two
/// `path "x" {}` blocks become two keys of the one `path` object.
fn insert_block(out: &mut Map<String, Value>, key: String, labels: &[String], block: Value) {
    let mut slot = out.entry(key).or_insert_with(|| Value::Object(Map::new()));
    for label in labels {
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(map) = slot else { return };
        slot = map
            .entry(label.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    match (slot, block) {
        (Value::Object(existing), Value::Object(new)) => {
            for (k, v) in new {
                match (existing.get_mut(&k), v) {
                    (Some(Value::Array(items)), Value::Array(more)) => items.extend(more),
                    (_, v) => {
                        existing.insert(k, v);
                    }
                }
            }
        }
        (slot, block) => *slot = block,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_vault_policy_syntax_with_comments() {
        let text = r#"
            # Apps read their own credentials.
            path "database/creds/app-*" {
              capabilities = ["read", "list",]  // trailing comma
            }
            /* operators */
            path "sys/leases/+/database/*" { capabilities = ["update", "sudo"] }
            path "database/creds/app-*" { capabilities = ["update"] }
            path "secret/x" {
              capabilities = ["create"]
              allowed_parameters = { "ttl" = [] , "n": [1, 2.5, true] }
            }
        "#;
        let value = parse(text).unwrap();
        assert_eq!(
            value["path"]["database/creds/app-*"]["capabilities"],
            json!(["read", "list", "update"])
        );
        assert_eq!(
            value["path"]["sys/leases/+/database/*"]["capabilities"],
            json!(["update", "sudo"])
        );
        assert_eq!(
            value["path"]["secret/x"]["allowed_parameters"]["n"],
            json!([1, 2.5, true])
        );
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("path \"a\" {\n  capabilities = [\"read\"\n").unwrap_err();
        assert!(err.to_string().contains("line"), "{err}");
        let err = parse("path \"a\" {\n capabilities = <<EOF\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse("path \"a\" { capabilities = [\"read\"] ").unwrap_err();
        assert!(err.to_string().contains("'}'"), "{err}");
    }

    /// `a = {{{ ... }}}` (objects) or `a = [[[ ... ]]]` (lists), `depth` levels deep.
    fn nested(depth: usize, open: char) -> String {
        match open {
            '{' => format!(
                "a = {}{}",
                "{ b = ".repeat(depth - 1) + "{",
                "}".repeat(depth)
            ),
            _ => format!("a = {}{}", "[".repeat(depth), "]".repeat(depth)),
        }
    }

    #[test]
    fn nesting_is_bounded_by_a_named_limit() {
        for open in ['{', '['] {
            for depth in [MAX_DEPTH - 1, MAX_DEPTH] {
                parse(&nested(depth, open)).unwrap_or_else(|e| panic!("{open} x {depth}: {e}"));
            }
            // 3,000 levels overflowed the stack of the unbounded reader; 100,000 is far past it.
            for depth in [MAX_DEPTH + 1, 3_000, 100_000] {
                let err = parse(&nested(depth, open)).unwrap_err().to_string();
                assert_eq!(
                    err, "policy: nesting deeper than 32 levels",
                    "{open} x {depth}"
                );
            }
        }
        // Blocks count too: a path block is one level.
        let text = format!("path \"a\" {{ x = {}1{} }}", "[".repeat(31), "]".repeat(31));
        assert!(parse(&text).is_ok());
        let text = format!("path \"a\" {{ x = {}1{} }}", "[".repeat(32), "]".repeat(32));
        assert!(parse(&text).unwrap_err().to_string().contains("32 levels"));
    }

    #[test]
    fn size_is_bounded_by_a_named_limit() {
        let text = format!("# {}", "x".repeat(MAX_POLICY_BYTES));
        assert_eq!(
            parse(&text).unwrap_err().to_string(),
            "policy: longer than 1048576 bytes"
        );
    }
}
