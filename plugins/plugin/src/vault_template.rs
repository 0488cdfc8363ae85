//! Vault's username template language, the subset its database plugins document: fields
//! `{{.RoleName}}` and `{{.DisplayName}}`, pipelines (`{{.RoleName | truncate 10}}`), parentheses,
//! and the functions `random N`, `truncate N`, `truncate_sha256 N`, `uppercase`, `lowercase`,
//! `replace OLD NEW`, `sha256`, `base64`, `unix_time`, `unix_time_millis`, `uuid` and `printf`
//! with `%s`, `%v`, `%d` and `%%`.
//!
//! Vault runs these through Go's `text/template`; this is a small parser of our own, so that a
//! template is checked completely when a role is written (an unknown function, a wrong argument, a
//! bad `printf` verb is a 400 then, not at issue time) and nothing else of Go's language (`range`,
//! `with`, variables) can appear. Nesting of parentheses is limited to [`MAX_DEPTH`] and the text
//! to [`MAX_TEMPLATE_LEN`], so the recursive descent below is bounded.
//!
//! Values are strings throughout, as in Vault (its `unix_time` returns a string too). The fields
//! are made username-safe before use (a display name `jwt:alice@corp` reads `jwt-alice-corp`), and
//! the rendered name is checked against the engine's limits by the caller, so whatever a template
//! computes still passes [`crate::check_username`] before it reaches SQL.

use base64::Engine as _;
use rand::rngs::OsRng;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::credentials::sanitize;
use crate::PluginError;

/// Deepest nesting of parentheses a template may use.
pub const MAX_DEPTH: usize = 8;

/// Longest template accepted, in bytes.
pub const MAX_TEMPLATE_LEN: usize = 1024;

/// Most `{{ }}` actions one template may hold.
const MAX_ACTIONS: usize = 64;

/// Largest `N` of `random N` (Vault sets none; usernames are at most 128 characters here).
const MAX_RANDOM: i64 = 128;

/// Vault's charset for `random`: letters of both cases and digits.
const RANDOM_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

const FIELD: &str = "username_template";

fn invalid(reason: impl Into<String>) -> PluginError {
    PluginError::invalid(FIELD, reason)
}

/// The functions a template may call, each with its argument count (not counting a piped value,
/// which Go passes as the last argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Random,
    Truncate,
    TruncateSha256,
    Uppercase,
    Lowercase,
    Replace,
    Sha256,
    Base64,
    UnixTime,
    UnixTimeMillis,
    Uuid,
    Printf,
}

impl Func {
    fn by_name(name: &str) -> Option<Self> {
        Some(match name {
            "random" => Self::Random,
            "truncate" => Self::Truncate,
            "truncate_sha256" => Self::TruncateSha256,
            "uppercase" => Self::Uppercase,
            "lowercase" => Self::Lowercase,
            "replace" => Self::Replace,
            "sha256" => Self::Sha256,
            "base64" => Self::Base64,
            "unix_time" => Self::UnixTime,
            "unix_time_millis" => Self::UnixTimeMillis,
            "uuid" => Self::Uuid,
            "printf" => Self::Printf,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::Truncate => "truncate",
            Self::TruncateSha256 => "truncate_sha256",
            Self::Uppercase => "uppercase",
            Self::Lowercase => "lowercase",
            Self::Replace => "replace",
            Self::Sha256 => "sha256",
            Self::Base64 => "base64",
            Self::UnixTime => "unix_time",
            Self::UnixTimeMillis => "unix_time_millis",
            Self::Uuid => "uuid",
            Self::Printf => "printf",
        }
    }

    /// The kinds of the arguments, in order; `None` for printf, which takes a format and any
    /// number of values.
    fn params(self) -> Option<&'static [Kind]> {
        Some(match self {
            Self::Random => &[Kind::Int],
            Self::Truncate | Self::TruncateSha256 => &[Kind::Int, Kind::Str],
            Self::Uppercase | Self::Lowercase | Self::Sha256 | Self::Base64 => &[Kind::Str],
            Self::Replace => &[Kind::Str, Kind::Str, Kind::Str],
            Self::UnixTime | Self::UnixTimeMillis | Self::Uuid => &[],
            Self::Printf => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An integer literal (`truncate 10`).
    Int,
    /// Any value: a string literal, a field, or a call.
    Str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    RoleName,
    DisplayName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    Field(Field),
    Str(String),
    Int(i64),
    Call(Func, Vec<Expr>),
}

impl Expr {
    /// Whether the expression reads `field` anywhere. Bounded: the parser limits how deep calls
    /// nest.
    fn reads(&self, field: Field) -> bool {
        match self {
            Self::Field(found) => *found == field,
            Self::Str(_) | Self::Int(_) => false,
            Self::Call(_, args) => args.iter().any(|arg| arg.reads(field)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Action(Expr),
}

/// A parsed Vault-style username template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VaultTemplate {
    parts: Vec<Part>,
}

impl VaultTemplate {
    /// Whether a rendered name depends on the display name (`.DisplayName`, `display_name`).
    pub(crate) fn uses_display_name(&self) -> bool {
        self.parts
            .iter()
            .any(|part| matches!(part, Part::Action(expr) if expr.reads(Field::DisplayName)))
    }
}

/// What a template is rendered with.
pub(crate) struct Env<'a> {
    pub role: &'a str,
    pub display_name: &'a str,
    pub now: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Field(String),
    Ident(String),
    Int(i64),
    Str(String),
    Pipe,
    Open,
    Close,
}

impl VaultTemplate {
    pub(crate) fn parse(text: &str) -> Result<Self, PluginError> {
        if text.len() > MAX_TEMPLATE_LEN {
            return Err(invalid(format!("is longer than {MAX_TEMPLATE_LEN} bytes")));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        let mut actions = 0;
        loop {
            let Some(start) = rest.find("{{") else {
                if !rest.is_empty() {
                    parts.push(Part::Text(check_text(rest)?));
                }
                break;
            };
            if start > 0 {
                parts.push(Part::Text(check_text(&rest[..start])?));
            }
            actions += 1;
            if actions > MAX_ACTIONS {
                return Err(invalid(format!(
                    "has more than {MAX_ACTIONS} {{{{ }}}} actions"
                )));
            }
            let (tokens, consumed) = lex_action(&rest[start + 2..])?;
            let shown = shown_action(&rest[start..start + 2 + consumed]);
            let mut parser = Parser {
                tokens: &tokens,
                pos: 0,
                action: &shown,
            };
            let expr = parser.pipeline(0)?;
            if parser.pos != tokens.len() {
                return Err(invalid(format!("in {shown}: unexpected ')'")));
            }
            parts.push(Part::Action(expr));
            rest = &rest[start + 2 + consumed..];
        }
        let template = Self { parts };
        if !template.has_randomness() {
            return Err(invalid(
                "must contain {{random}} (Lessor's syntax) or {{random N}} or {{uuid}} (Vault's) so that every lease gets its own user",
            ));
        }
        Ok(template)
    }

    fn has_randomness(&self) -> bool {
        fn random_in(expr: &Expr) -> bool {
            match expr {
                Expr::Call(Func::Random | Func::Uuid, _) => true,
                Expr::Call(_, args) => args.iter().any(random_in),
                _ => false,
            }
        }
        self.parts.iter().any(|part| match part {
            Part::Action(expr) => random_in(expr),
            Part::Text(_) => false,
        })
    }

    /// Renders the template. The caller checks the result against the engine's rules.
    pub(crate) fn render(&self, env: &Env<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Action(expr) => out.push_str(&eval(expr, env)),
            }
        }
        out
    }
}

/// The action as the operator wrote it, cut short, for error messages.
fn shown_action(text: &str) -> String {
    let mut shown: String = text.chars().take(60).collect();
    if shown.len() < text.len() {
        shown.push_str("...");
    }
    shown
}

/// Literal text must itself be username-safe, so a template cannot smuggle a quote into SQL.
fn check_text(text: &str) -> Result<String, PluginError> {
    if let Some(bad) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(invalid(format!(
            "literal text may only contain letters, digits, '_', '-' and '.', not {bad:?}"
        )));
    }
    Ok(text.to_owned())
}

/// Splits the inside of one action into tokens, up to and including its closing `}}`. Returns the
/// tokens and how many bytes of `text` they took (the `}}` included). String literals may hold
/// `}}`, so the end is found by the lexer, not by a search.
fn lex_action(text: &str) -> Result<(Vec<Token>, usize), PluginError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    let unclosed = || invalid("a '{{' action is never closed with '}}'");
    loop {
        let Some(&b) = bytes.get(i) else {
            return Err(unclosed());
        };
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Ok((tokens, i + 2)),
            b'|' => {
                tokens.push(Token::Pipe);
                i += 1;
            }
            b'(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            b')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            b'"' => {
                let mut value = String::new();
                let mut j = i + 1;
                loop {
                    let Some(c) = text[j..].chars().next() else {
                        return Err(invalid("a string literal is never closed with '\"'"));
                    };
                    j += c.len_utf8();
                    match c {
                        '"' => break,
                        '\\' => {
                            let Some(escaped) = text[j..].chars().next() else {
                                return Err(invalid("a string literal is never closed with '\"'"));
                            };
                            j += escaped.len_utf8();
                            value.push(match escaped {
                                '"' => '"',
                                '\\' => '\\',
                                other => {
                                    return Err(invalid(format!(
                                        "the escape \\{other} is not supported in a string literal; only \\\" and \\\\ are"
                                    )))
                                }
                            });
                        }
                        '\n' => return Err(invalid("a string literal may not span lines")),
                        other => value.push(other),
                    }
                }
                tokens.push(Token::Str(value));
                i = j;
            }
            b'`' => {
                let end = text[i + 1..]
                    .find('`')
                    .ok_or_else(|| invalid("a raw string literal is never closed with '`'"))?;
                tokens.push(Token::Str(text[i + 1..i + 1 + end].to_owned()));
                i += end + 2;
            }
            b'0'..=b'9' => {
                let end = text[i..]
                    .find(|c: char| !c.is_ascii_digit())
                    .map_or(text.len(), |e| i + e);
                let value = text[i..end]
                    .parse::<i64>()
                    .map_err(|_| invalid(format!("the number {} is too large", &text[i..end])))?;
                tokens.push(Token::Int(value));
                i = end;
            }
            b'.' | b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = if b == b'.' { i + 1 } else { i };
                let end = text[start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(text.len(), |e| start + e);
                let name = text[start..end].to_owned();
                if b == b'.' {
                    tokens.push(Token::Field(name));
                } else {
                    tokens.push(Token::Ident(name));
                }
                i = end;
            }
            _ => {
                let c = text[i..].chars().next().unwrap_or('?');
                return Err(invalid(format!(
                    "unexpected {c:?} inside {{{{ }}}}; string arguments are quoted, as in replace \"-\" \"_\""
                )));
            }
        }
    }
}

struct Parser<'t> {
    tokens: &'t [Token],
    pos: usize,
    /// The action being parsed, as written, for error messages.
    action: &'t str,
}

impl Parser<'_> {
    fn err(&self, reason: impl std::fmt::Display) -> PluginError {
        invalid(format!("in {}: {reason}", self.action))
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    /// `command ('|' command)*`, where each later command gets the value so far as its last
    /// argument, as in Go.
    fn pipeline(&mut self, depth: usize) -> Result<Expr, PluginError> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("parentheses are nested more than {MAX_DEPTH} deep")));
        }
        let mut value = self.command(depth, None)?;
        while self.peek() == Some(&Token::Pipe) {
            self.pos += 1;
            value = self.command(depth, Some(value))?;
        }
        Ok(value)
    }

    fn command(&mut self, depth: usize, piped: Option<Expr>) -> Result<Expr, PluginError> {
        let Some(first) = self.peek().cloned() else {
            return Err(self.err(if piped.is_some() {
                "a '|' is followed by nothing"
            } else {
                "the action is empty"
            }));
        };
        if let Token::Ident(name) = &first {
            if let Some(func) = Func::by_name(name) {
                self.pos += 1;
                let mut args = Vec::new();
                while !matches!(self.peek(), None | Some(Token::Pipe) | Some(Token::Close)) {
                    args.push(self.operand(depth)?);
                }
                if let Some(value) = piped {
                    args.push(value);
                }
                return self.call(func, args);
            }
        }
        let operand = self.operand(depth)?;
        if piped.is_some() {
            return Err(self.err("only a function can follow '|'"));
        }
        if !matches!(self.peek(), None | Some(Token::Pipe) | Some(Token::Close)) {
            return Err(self.err("only a function takes arguments"));
        }
        Ok(operand)
    }

    fn operand(&mut self, depth: usize) -> Result<Expr, PluginError> {
        let token = self.peek().cloned();
        self.pos += 1;
        match token {
            Some(Token::Field(name)) => match name.as_str() {
                "RoleName" => Ok(Expr::Field(Field::RoleName)),
                "DisplayName" => Ok(Expr::Field(Field::DisplayName)),
                other => Err(self.err(format!(
                    "unknown field .{other}; known are .RoleName and .DisplayName"
                ))),
            },
            Some(Token::Str(value)) => Ok(Expr::Str(value)),
            Some(Token::Int(value)) => Ok(Expr::Int(value)),
            Some(Token::Open) => {
                let inner = self.pipeline(depth + 1)?;
                if self.peek() != Some(&Token::Close) {
                    return Err(self.err("a '(' is never closed with ')'"));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(Token::Ident(name)) => match name.as_str() {
                // Lessor's own placeholder names, usable inside Vault syntax too.
                "role" | "role_name" => Ok(Expr::Field(Field::RoleName)),
                "display_name" => Ok(Expr::Field(Field::DisplayName)),
                "timestamp" => Err(self.err(
                    "timestamp (Go time layouts) is not supported; use unix_time or unix_time_millis",
                )),
                other => match Func::by_name(other) {
                    // A function as an argument is called with no arguments, as in Go.
                    Some(func) => self.call(func, Vec::new()),
                    None => Err(self.err(format!(
                        "unknown function {other}; known are random, truncate, truncate_sha256, uppercase, lowercase, replace, sha256, base64, unix_time, unix_time_millis, uuid, printf"
                    ))),
                },
            },
            Some(Token::Pipe) => Err(self.err("a '|' has nothing before it")),
            Some(Token::Close) => Err(self.err("unexpected ')'")),
            None => Err(self.err("an argument is missing")),
        }
    }

    /// Checks a call's arguments against the function's parameters.
    fn call(&self, func: Func, args: Vec<Expr>) -> Result<Expr, PluginError> {
        let name = func.name();
        let Some(params) = func.params() else {
            // printf: a literal format whose verbs match the values given.
            let Some(Expr::Str(format)) = args.first() else {
                return Err(self.err("printf needs a quoted format string first"));
            };
            let verbs = count_verbs(format).map_err(|e| self.err(e))?;
            if verbs != args.len() - 1 {
                return Err(self.err(format!(
                    "printf's format has {verbs} verbs but is given {} values",
                    args.len() - 1
                )));
            }
            return Ok(Expr::Call(func, args));
        };
        if args.len() != params.len() {
            return Err(self.err(format!(
                "{name} takes {} argument(s), not {}",
                params.len(),
                args.len()
            )));
        }
        for (arg, kind) in args.iter().zip(params) {
            match (kind, arg) {
                (Kind::Int, Expr::Int(n)) => {
                    let range = match func {
                        Func::Random => 1..=MAX_RANDOM,
                        // The last 8 characters hold the hash.
                        Func::TruncateSha256 => 9..=i64::from(u16::MAX),
                        _ => 1..=i64::from(u16::MAX),
                    };
                    if !range.contains(n) {
                        return Err(self.err(format!(
                            "{name} needs a length between {} and {}, not {n}",
                            range.start(),
                            range.end()
                        )));
                    }
                }
                (Kind::Int, _) => {
                    return Err(self.err(format!("{name} needs a number, as in {name} 10")));
                }
                (Kind::Str, Expr::Int(_)) => {
                    return Err(self.err(format!("{name} needs a text value, not a number")));
                }
                (Kind::Str, _) => {}
            }
        }
        Ok(Expr::Call(func, args))
    }
}

/// Counts the values a printf format consumes; refuses verbs other than `%s`, `%v`, `%d`, `%%`.
fn count_verbs(format: &str) -> Result<usize, String> {
    let mut count = 0;
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        match chars.next() {
            Some('%') => {}
            Some('s' | 'v' | 'd') => count += 1,
            Some(other) => {
                return Err(format!(
                    "printf supports %s, %v, %d and %% only, not %{other}"
                ))
            }
            None => return Err("printf's format ends with a lone '%'".into()),
        }
    }
    Ok(count)
}

fn eval(expr: &Expr, env: &Env<'_>) -> String {
    match expr {
        Expr::Field(Field::RoleName) => sanitize(env.role),
        Expr::Field(Field::DisplayName) => sanitize(env.display_name),
        Expr::Str(value) => value.clone(),
        Expr::Int(value) => value.to_string(),
        Expr::Call(func, args) => call(*func, args, env),
    }
}

/// The integer literal at `args[i]`; the parser checked that it is one, in range.
fn int_arg(args: &[Expr], i: usize) -> usize {
    match args.get(i) {
        Some(Expr::Int(n)) => usize::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

fn call(func: Func, args: &[Expr], env: &Env<'_>) -> String {
    let text = |i: usize| args.get(i).map(|a| eval(a, env)).unwrap_or_default();
    match func {
        Func::Random => (0..int_arg(args, 0))
            .map(|_| RANDOM_ALPHABET[OsRng.gen_range(0..RANDOM_ALPHABET.len())] as char)
            .collect(),
        Func::Truncate => text(1).chars().take(int_arg(args, 0)).collect(),
        Func::TruncateSha256 => {
            let value = text(1);
            let max = int_arg(args, 0);
            if value.chars().count() <= max {
                return value;
            }
            // Vault's meaning: keep max-8 characters and replace the rest by the first 8 hex
            // digits of its SHA-256, so long names stay distinct after the cut.
            let keep: String = value.chars().take(max - 8).collect();
            let cut: String = value.chars().skip(max - 8).collect();
            let hash = hex(&Sha256::digest(cut.as_bytes()));
            format!("{keep}{}", &hash[..8])
        }
        Func::Uppercase => text(0).to_uppercase(),
        Func::Lowercase => text(0).to_lowercase(),
        Func::Replace => {
            let (find, with, value) = (text(0), text(1), text(2));
            if find.is_empty() {
                // Go's strings.Replace inserts at every position for an empty pattern; that is
                // never a useful username, so an empty pattern leaves the value alone.
                value
            } else {
                value.replace(&find, &with)
            }
        }
        Func::Sha256 => hex(&Sha256::digest(text(0).as_bytes())),
        Func::Base64 => base64::engine::general_purpose::STANDARD.encode(text(0)),
        Func::UnixTime => env.now.timestamp().to_string(),
        Func::UnixTimeMillis => env.now.timestamp_millis().to_string(),
        Func::Uuid => uuid::Uuid::new_v4().to_string(),
        Func::Printf => {
            let format = text(0);
            let mut values = args[1..].iter().map(|a| eval(a, env));
            let mut out = String::new();
            let mut chars = format.chars();
            while let Some(c) = chars.next() {
                if c != '%' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('%') => out.push('%'),
                    Some(_) => out.push_str(&values.next().unwrap_or_default()),
                    None => {}
                }
            }
            out
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn env() -> Env<'static> {
        Env {
            role: "my_custom_database_role",
            display_name: "token-with-display-name",
            now: chrono::Utc.timestamp_opt(1_234_567_890, 0).unwrap(),
        }
    }

    fn render(text: &str) -> String {
        VaultTemplate::parse(text).unwrap().render(&env())
    }

    fn error(text: &str) -> String {
        VaultTemplate::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn vault_documented_examples_render_as_vault_does() {
        // Vault's "Truncating to maximum length" example, with real randomness in place of
        // the docs' alphabet.
        let name = render(
            r#"{{printf "v_%s_%s_%s_%s" (.DisplayName | truncate 8) (.RoleName | truncate 8) (random 20) (unix_time) | truncate 45}}"#,
        );
        assert_eq!(name.len(), 45);
        assert!(name.starts_with("v_token-wi_my_custo_"), "{name}");
        assert!(name.ends_with("_1234"), "{name}");
        let random = &name[20..40];
        assert!(random.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");

        let name = render(
            r#"FOO_{{.DisplayName | replace "-" "_" | uppercase}}_{{.RoleName | uppercase}}_{{random 4}}"#,
        );
        assert!(
            name.starts_with("FOO_TOKEN_WITH_DISPLAY_NAME_MY_CUSTOM_DATABASE_ROLE_"),
            "{name}"
        );
        // The PostgreSQL plugin's default template.
        let name = render(
            r#"{{ printf "v-%s-%s-%s-%s" (.DisplayName | truncate 8) (.RoleName | truncate 8) (random 20) (unix_time) | truncate 63 }}"#,
        );
        assert!(name.starts_with("v-token-wi-my_custo-"), "{name}");
        assert!(name.ends_with("-1234567890"), "{name}");
    }

    #[test]
    fn each_function_does_what_vault_documents() {
        assert_eq!(
            &render(r#"{{"abcdefghijklmnopqrstuvwxyz" | truncate_sha256 20}}{{uuid}}"#)[..20],
            "abcdefghijkl872808ff"
        );
        assert_eq!(
            &render(r#"{{"short" | truncate_sha256 20}}-{{random 3}}"#)[..6],
            "short-"
        );
        assert_eq!(
            &render(r#"{{.RoleName | lowercase | uppercase | lowercase}}-{{random 1}}"#)[..23],
            "my_custom_database_role"
        );
        assert_eq!(
            &render(r#"{{"abc" | sha256}}{{random 1}}"#)[..64],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(&render(r#"{{"ab" | base64}}{{random 1}}"#)[..4], "YWI=");
        assert_eq!(
            &render("{{unix_time_millis}}-{{unix_time}}-{{random 2}}")[..24],
            "1234567890000-1234567890"
        );
        let uuid = render("{{uuid}}");
        assert_eq!(uuid.len(), 36);
        assert_eq!(uuid.matches('-').count(), 4);
        assert_ne!(render("{{uuid}}"), uuid);
        assert_eq!(render("{{random 17}}").len(), 17);
        assert_eq!(
            &render(r#"{{printf "%s.%d%%%v" "a" 7 (.RoleName | truncate 2)}}{{random 1}}"#)[..6],
            "a.7%my"
        );
        // Go passes the piped value as the last argument.
        assert_eq!(
            &render(
                r#"{{truncate 3 .RoleName}}{{.RoleName | truncate 3 | replace "y" "Y"}}{{random 1}}"#
            )[..6],
            "my_mY_"
        );
        // Lessor's placeholder names are accepted inside Vault syntax.
        assert_eq!(
            &render(r#"{{role | truncate 2}}-{{display_name | truncate 5}}-{{random 4}}"#)[..9],
            "my-token-"
        );
    }

    #[test]
    fn fields_are_made_username_safe() {
        let env = Env {
            role: "r",
            display_name: "jwt:alice@corp",
            now: chrono::Utc::now(),
        };
        let name = VaultTemplate::parse("{{.DisplayName}}_{{random 2}}")
            .unwrap()
            .render(&env);
        assert!(name.starts_with("jwt-alice-corp_"), "{name}");
    }

    #[test]
    fn malformed_templates_are_refused_naming_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("{{.RoleName}}", "{{random N}}"),
            ("{{.Role}}-{{random 4}}", "unknown field .Role"),
            ("{{rol}}-{{random 4}}", "{{rol}}"),
            ("{{ nope 3 }}{{random 4}}", "unknown function nope"),
            ("{{random}}{{.RoleName}}", "random takes 1 argument"),
            ("{{random 0}}", "between 1 and 128"),
            ("{{random 500}}", "between 1 and 128"),
            ("{{random \"x\"}}", "random needs a number"),
            ("{{.RoleName | truncate}}{{random 3}}", "truncate takes 2"),
            ("{{.RoleName | truncate_sha256 5}}{{random 3}}", "between 9"),
            ("{{uppercase 3}}{{random 3}}", "needs a text value"),
            (
                "{{.RoleName | .DisplayName}}{{random 3}}",
                "only a function can follow",
            ),
            (
                "{{.RoleName 3}}{{random 3}}",
                "only a function takes arguments",
            ),
            (
                "{{printf \"%s-%s\" .RoleName}}{{random 3}}",
                "2 verbs but is given 1",
            ),
            ("{{printf \"%x\" .RoleName}}{{random 3}}", "not %x"),
            ("{{printf .RoleName}}{{random 3}}", "quoted format"),
            ("{{timestamp \"2006\"}}{{random 3}}", "timestamp"),
            ("{{.RoleName | replace - _}}{{random 3}}", "quoted"),
            ("{{random 3", "never closed"),
            ("{{\"abc}}", "never closed"),
            ("{{(random 3}}", "never closed with ')'"),
            ("{{random 3)}}", "unexpected ')'"),
            ("{{}}{{random 3}}", "empty"),
            ("{{random 3 |}}", "followed by nothing"),
            ("v'{{random 3}}", "literal text"),
            ("{{range .RoleName}}{{random 3}}", "unknown function range"),
            ("{{\"a\\n\"}}{{random 3}}", "escape"),
        ];
        for (text, needle) in cases {
            let err = error(text);
            assert!(err.contains(needle), "{text}: {err}");
            assert!(err.contains("username_template"), "{text}: {err}");
        }
    }

    #[test]
    fn nesting_and_size_are_bounded() {
        let deep = format!(
            "{{{{{}random 3{}}}}}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert!(
            error(&deep).contains("nested more than"),
            "{}",
            error(&deep)
        );
        let ok = format!(
            "{{{{{}random 3{}}}}}",
            "(".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        );
        assert_eq!(render(&ok).len(), 3);
        // Far past the limit: refused by size before any recursion.
        let huge = format!("{{{{{}random 3}}}}", "(".repeat(100_000));
        assert!(error(&huge).contains("longer than"));
        let many = "{{random 1}}".repeat(MAX_ACTIONS + 1);
        assert!(error(&many).contains("actions"));
    }

    #[test]
    fn string_literals_may_hold_braces_and_pipes() {
        // The result is not a valid username; the caller's checks refuse it (see credentials).
        assert_eq!(&render(r#"{{"}}|(" }}{{random 1}}"#)[..4], "}}|(");
        assert_eq!(&render("{{`a\"b` }}{{random 1}}")[..3], "a\"b");
    }
}
