//! Password policies (`sys/policies/password/:name`): Vault's HCL text of a `length` and
//! `rule "charset" { charset = "..." min-chars = N }` blocks, checked into a
//! [`PasswordPolicy`] when written and used for every password generated for a connection that
//! names the policy in its `password_policy` field: dynamic users, static rotations and root
//! rotation all go through [`generate_for_connection`] (or [`generate_for_row`] when the connection
//! row is already read), so the three cannot drift.
//!
//! The text is read by a small dedicated parser rather than the ACL reader (`auth::hcl`), because
//! that reader merges blocks with the same label and Vault's policies repeat `rule "charset"`.
//! The grammar here is flat (one level of blocks), the text is bounded by [`MAX_POLICY_BYTES`],
//! and anything outside it is refused with the line it is on.

use lessor_plugin::credentials::{PasswordPolicy, DEFAULT_PASSWORD_ENTROPY_BITS};
use lessor_plugin::{generate_password, PasswordStrength, Secret};

use crate::error::{Error, Result};
use crate::store::{CatalogStore, Connection, Store};

/// The longest policy text accepted; real ones are a few hundred bytes.
pub const MAX_POLICY_BYTES: usize = 16 * 1024;

/// Length of passwords for connections without a policy: 32 characters of a 64-symbol alphabet.
pub const DEFAULT_PASSWORD_LEN: usize = lessor_plugin::credentials::DEFAULT_PASSWORD_LEN;

fn invalid(message: impl std::fmt::Display) -> Error {
    Error::invalid(format!("policy: {message}"))
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Number(u64),
    Equals,
    Open,
    Close,
}

/// Splits the text into tokens with their line numbers; comments (`#`, `//`, `/* */`) and white
/// space are dropped.
fn tokenize(text: &str) -> Result<Vec<(Token, usize)>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut at = 0;
    let mut line = 1;
    while at < chars.len() {
        let c = chars[at];
        match c {
            '\n' => {
                line += 1;
                at += 1;
            }
            c if c.is_whitespace() || c == ',' => at += 1,
            '#' => {
                while at < chars.len() && chars[at] != '\n' {
                    at += 1;
                }
            }
            '/' if chars.get(at + 1) == Some(&'/') => {
                while at < chars.len() && chars[at] != '\n' {
                    at += 1;
                }
            }
            '/' if chars.get(at + 1) == Some(&'*') => {
                at += 2;
                loop {
                    match chars.get(at) {
                        None => {
                            return Err(invalid(format!("line {line}: unterminated /* comment")))
                        }
                        Some('*') if chars.get(at + 1) == Some(&'/') => {
                            at += 2;
                            break;
                        }
                        Some('\n') => {
                            line += 1;
                            at += 1;
                        }
                        Some(_) => at += 1,
                    }
                }
            }
            '=' | ':' => {
                out.push((Token::Equals, line));
                at += 1;
            }
            '{' => {
                out.push((Token::Open, line));
                at += 1;
            }
            '}' => {
                out.push((Token::Close, line));
                at += 1;
            }
            '"' => {
                at += 1;
                let mut value = String::new();
                loop {
                    match chars.get(at) {
                        None | Some('\n') => {
                            return Err(invalid(format!("line {line}: unterminated string")))
                        }
                        Some('"') => {
                            at += 1;
                            break;
                        }
                        Some('\\') => {
                            match chars.get(at + 1) {
                                Some('"') => value.push('"'),
                                Some('\\') => value.push('\\'),
                                _ => {
                                    return Err(invalid(format!(
                                        "line {line}: unknown escape in a string"
                                    )))
                                }
                            }
                            at += 2;
                        }
                        Some(c) => {
                            value.push(*c);
                            at += 1;
                        }
                    }
                }
                out.push((Token::Str(value), line));
            }
            c if c.is_ascii_digit() => {
                let start = at;
                while at < chars.len() && chars[at].is_ascii_digit() {
                    at += 1;
                }
                let text: String = chars[start..at].iter().collect();
                let number = text
                    .parse()
                    .map_err(|_| invalid(format!("line {line}: {text} is too large")))?;
                out.push((Token::Number(number), line));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = at;
                while at < chars.len()
                    && (chars[at].is_ascii_alphanumeric() || matches!(chars[at], '_' | '-'))
                {
                    at += 1;
                }
                out.push((Token::Ident(chars[start..at].iter().collect()), line));
            }
            other => return Err(invalid(format!("line {line}: unexpected {other:?}"))),
        }
    }
    Ok(out)
}

/// Parses and checks a policy text. Errors start with `policy:` and name the line or the rule.
pub fn parse(text: &str) -> Result<PasswordPolicy> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(invalid(format!("longer than {MAX_POLICY_BYTES} bytes")));
    }
    let tokens = tokenize(text)?;
    let mut at = 0;
    let mut length = None;
    let mut rules = Vec::new();
    let end_line = tokens.last().map_or(1, |t| t.1);
    let next = |at: &mut usize| -> Result<(Token, usize)> {
        let token = tokens
            .get(*at)
            .cloned()
            .ok_or_else(|| invalid(format!("line {end_line}: unexpected end of text")))?;
        *at += 1;
        Ok(token)
    };
    let number_value = |at: &mut usize, key: &str| -> Result<usize> {
        match next(at)? {
            (Token::Equals, _) => {}
            (_, line) => return Err(invalid(format!("line {line}: expected '=' after {key}"))),
        }
        match next(at)? {
            (Token::Number(n), _) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            (_, line) => Err(invalid(format!(
                "line {line}: {key} must be a whole number"
            ))),
        }
    };
    while at < tokens.len() {
        match next(&mut at)? {
            (Token::Ident(key), _) if key == "length" => {
                if length.is_some() {
                    return Err(invalid("length is set twice"));
                }
                length = Some(number_value(&mut at, "length")?);
            }
            (Token::Ident(key), line) if key == "rule" => {
                match next(&mut at)? {
                    (Token::Str(kind), _) if kind == "charset" => {}
                    (Token::Str(kind), _) => {
                        return Err(invalid(format!(
                            "line {line}: unknown rule {:?}; only rule \"charset\" is supported",
                            kind.chars().take(40).collect::<String>()
                        )))
                    }
                    _ => {
                        return Err(invalid(format!(
                            "line {line}: expected rule \"charset\" {{ ... }}"
                        )))
                    }
                }
                if !matches!(next(&mut at)?, (Token::Open, _)) {
                    return Err(invalid(format!(
                        "line {line}: expected '{{' after rule \"charset\""
                    )));
                }
                let mut charset = None;
                let mut min_chars = 0;
                loop {
                    match next(&mut at)? {
                        (Token::Close, _) => break,
                        (Token::Ident(key), line) if key == "charset" => {
                            match next(&mut at)? {
                                (Token::Equals, _) => {}
                                _ => {
                                    return Err(invalid(format!(
                                        "line {line}: expected '=' after charset"
                                    )))
                                }
                            }
                            match next(&mut at)? {
                                (Token::Str(value), _) => charset = Some(value),
                                _ => {
                                    return Err(invalid(format!(
                                        "line {line}: charset must be a string"
                                    )))
                                }
                            }
                        }
                        (Token::Ident(key), _) if key == "min-chars" || key == "min_chars" => {
                            min_chars = number_value(&mut at, "min-chars")?;
                        }
                        (Token::Ident(key), line) => {
                            return Err(invalid(format!(
                                "line {line}: unknown field {:?} in rule \"charset\"; known are charset and min-chars",
                                key.chars().take(40).collect::<String>()
                            )))
                        }
                        (_, line) => {
                            return Err(invalid(format!(
                                "line {line}: expected charset or min-chars"
                            )))
                        }
                    }
                }
                let charset = charset.ok_or_else(|| {
                    invalid(format!("line {line}: rule \"charset\" has no charset"))
                })?;
                rules.push((charset, min_chars));
            }
            (Token::Ident(key), line) => {
                return Err(invalid(format!(
                    "line {line}: unknown field {:?}; known are length and rule \"charset\"",
                    key.chars().take(40).collect::<String>()
                )))
            }
            (_, line) => return Err(invalid(format!("line {line}: expected length or rule"))),
        }
    }
    let length = length.ok_or_else(|| invalid("length is required"))?;
    PasswordPolicy::new(length, rules).map_err(invalid)
}

/// The stored password policies, and password generation for connections.
#[derive(Clone)]
pub struct PasswordPolicies {
    store: Store,
}

impl PasswordPolicies {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Checks and stores a policy (create or replace). The text is stored as written.
    #[tracing::instrument(skip_all, fields(policy = %name), err)]
    pub async fn write(&self, name: &str, text: &str) -> Result<()> {
        parse(text)?;
        self.store
            .upsert_password_policy(name, text, chrono::Utc::now())
            .await
    }

    /// The policy text as written.
    pub async fn read(&self, name: &str) -> Result<String> {
        self.store
            .get_password_policy(name)
            .await?
            .ok_or_else(|| Error::not_found("password policy", name))
    }

    pub async fn list(&self) -> Result<Vec<String>> {
        self.store.list_password_policies().await
    }

    /// Deletes a policy; refused (Conflict) while a connection names it, since that connection
    /// could then generate no password. Deleting one that does not exist succeeds, as in Vault.
    #[tracing::instrument(skip_all, fields(policy = %name), err)]
    pub async fn delete(&self, name: &str) -> Result<()> {
        let users = self.store.connections_using_password_policy(name).await?;
        if !users.is_empty() {
            return Err(Error::Conflict(format!(
                "password policy {name} is in use by connection(s) {}; change their password_policy first",
                users.join(", ")
            )));
        }
        self.store.delete_password_policy(name).await
    }

    /// A password from the named policy (`sys/policies/password/:name/generate`).
    pub async fn generate(&self, name: &str) -> Result<Secret> {
        let text = self.read(name).await?;
        Ok(stored(name, &text)?.generate())
    }

    /// A password for a user of `connection`: from its `password_policy` if it names one,
    /// otherwise [`DEFAULT_PASSWORD_LEN`] random characters.
    pub async fn generate_for_connection(&self, connection: &str) -> Result<Secret> {
        generate_for_connection(&self.store, connection).await
    }
}

/// A password for a user of `connection`: from its `password_policy` if it names one, otherwise
/// [`DEFAULT_PASSWORD_LEN`] random characters. Every place that makes a password for a database
/// (lease issue, static rotation, root rotation) calls this.
pub async fn generate_for_connection(store: &Store, connection: &str) -> Result<Secret> {
    match store.connection_password_policy_text(connection).await? {
        Some((name, text)) => Ok(stored(&name, &text)?.generate()),
        None => Ok(generate_password(DEFAULT_PASSWORD_LEN)),
    }
}

/// A password for a dynamic user, with how hard its generator makes it to guess (the PostgreSQL
/// plugin stretches its SCRAM verifier less only when it cannot be guessed).
#[derive(Debug)]
pub struct GeneratedPassword {
    pub password: Secret,
    pub strength: PasswordStrength,
}

/// As [`generate_for_connection`], for a connection row the caller has already read (issuing
/// reads it to check `allowed_roles`): the store is asked only when the row names a policy. Also
/// says whether the generator (the default, or the policy by its entropy) makes the password
/// unguessable.
pub async fn generate_for_row(store: &Store, connection: &Connection) -> Result<GeneratedPassword> {
    let Some(name) = connection.password_policy.as_deref() else {
        return Ok(GeneratedPassword {
            password: generate_password(DEFAULT_PASSWORD_LEN),
            strength: PasswordStrength::of_entropy(DEFAULT_PASSWORD_ENTROPY_BITS),
        });
    };
    let text = store.get_password_policy(name).await?.ok_or_else(|| {
        Error::Internal(format!(
            "password policy {name} of connection {} is gone",
            connection.name
        ))
    })?;
    let policy = stored(name, &text)?;
    Ok(GeneratedPassword {
        password: policy.generate(),
        strength: PasswordStrength::of_entropy(policy.entropy_bits()),
    })
}

/// Parses a stored policy; it was checked when written, so a failure is corruption.
fn stored(name: &str, text: &str) -> Result<PasswordPolicy> {
    parse(text)
        .map_err(|e| Error::Internal(format!("stored password policy {name} is invalid: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vaults_example_policy() {
        let policy = parse(
            r#"
            # Vault's documented example
            length = 20
            rule "charset" {
              charset = "abcdefghijklmnopqrstuvwxyz"
              min-chars = 1
            }
            rule "charset" {
              charset = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
              min-chars = 1
            }
            rule "charset" { charset = "0123456789" min-chars = 1 }
            "#,
        )
        .unwrap();
        assert_eq!(policy.length(), 20);
        assert_eq!(policy.rules().count(), 3);
        for _ in 0..500 {
            let password = policy.generate();
            assert!(policy.is_met_by(password.expose()));
        }
    }

    #[test]
    fn errors_name_the_problem() {
        for (text, needle) in [
            ("rule \"charset\" { charset = \"abc\" }", "length is required"),
            ("length = 20", "rule"),
            ("length = 2\nrule \"charset\" { charset = \"abc\" }", "length"),
            ("length = 20\nrule \"charset\" { charset = \"ab'c\" }", "charset"),
            ("length = 20\nrule \"charset\" { charset = \"a\\\\b\" }", "charset"),
            ("length = 20\nrule \"charset\" { charset = \"\" }", "charset"),
            (
                "length = 4\nrule \"charset\" { charset = \"ab\" min-chars = 3 }\nrule \"charset\" { charset = \"12\" min-chars = 2 }",
                "min-chars",
            ),
            ("length = 20\nrule \"other\" { }", "line 2: unknown rule"),
            ("length = 20\nfoo = 1", "line 2: unknown field \"foo\""),
            ("length = 20\nrule \"charset\" { charset = \"abc\"", "end of text"),
            ("length = \"x\"", "whole number"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.starts_with("policy: "), "{text}: {err}");
            assert!(err.contains(needle), "{text}: {err}");
        }
        assert!(parse(&"#".repeat(MAX_POLICY_BYTES + 1))
            .unwrap_err()
            .to_string()
            .contains("longer than"));
    }
}
