//! Generated usernames and passwords, and the strict alphabets every value substituted into SQL
//! must pass.
//!
//! Passwords come from the OS random source over `A-Z a-z 0-9 - _`: no quote, backslash, colon,
//! `@`, `/`, `#` or `;`, so a password is safe inside a SQL string literal, a URL, a `.pgpass` line
//! and a MySQL option file without escaping. Usernames keep their random part whole when a template
//! is cut to an engine's length limit, so two leases never collide because of truncation.

use rand::rngs::OsRng;
use rand::Rng;

use crate::{PluginError, Secret};

/// Characters of generated passwords: safe in SQL literals, URLs, `.pgpass` and `my.cnf`.
pub const PASSWORD_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Length of generated passwords: 32 characters of a 64-symbol alphabet is 192 bits.
pub const DEFAULT_PASSWORD_LEN: usize = 32;

/// Characters of the random part of a username: lowercase so engines that fold case agree.
const USERNAME_RANDOM_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Length of the random part of a generated username (about 82 bits).
pub const USERNAME_RANDOM_LEN: usize = 16;

/// The default username template: `v-<role>-<random>`.
pub const DEFAULT_USERNAME_TEMPLATE: &str = "v-{{role}}-{{random}}";

/// Generates a password of `len` characters from the OS random source. Each password holds at least
/// one upper-case letter, one lower-case letter and one digit, which password-strength plugins of
/// both MySQL and PostgreSQL extensions ask for.
pub fn generate_password(len: usize) -> Secret {
    let len = len.max(16);
    loop {
        let password: String = (0..len)
            .map(|_| PASSWORD_ALPHABET[OsRng.gen_range(0..PASSWORD_ALPHABET.len())] as char)
            .collect();
        let has_upper = password.chars().any(|c| c.is_ascii_uppercase());
        let has_lower = password.chars().any(|c| c.is_ascii_lowercase());
        let has_digit = password.chars().any(|c| c.is_ascii_digit());
        // A dash first would read as an option to some command-line clients.
        if has_upper && has_lower && has_digit && !password.starts_with('-') {
            return Secret::new(password);
        }
    }
}

/// Checks a username before it is substituted into SQL: 1 to 128 characters of `A-Z a-z 0-9 _ - .`.
pub fn check_username(username: &str) -> Result<(), PluginError> {
    if username.is_empty() {
        return Err(PluginError::invalid("username", "must not be empty"));
    }
    if username.len() > 128 {
        return Err(PluginError::invalid(
            "username",
            "is longer than 128 characters",
        ));
    }
    if let Some(bad) = username
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(PluginError::invalid(
            "username",
            format!("contains {bad:?}; only letters, digits, '_', '-' and '.' are allowed"),
        ));
    }
    Ok(())
}

/// Checks a password before it is substituted into SQL: only characters of [`PASSWORD_ALPHABET`]
/// and `.~`. The offending character is not echoed, since it is part of a secret.
pub fn check_password(password: &Secret) -> Result<(), PluginError> {
    let value = password.expose();
    if value.is_empty() {
        return Err(PluginError::invalid("password", "must not be empty"));
    }
    if !value
        .bytes()
        .all(|b| PASSWORD_ALPHABET.contains(&b) || matches!(b, b'.' | b'~'))
    {
        return Err(PluginError::invalid(
            "password",
            "contains a character outside A-Z a-z 0-9 - _ . ~",
        ));
    }
    Ok(())
}

/// What a username template may refer to.
#[derive(Debug, Clone, Copy)]
pub struct UsernameContext<'a> {
    pub role: &'a str,
    pub display_name: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Role,
    DisplayName,
    UnixTime,
}

/// A parsed username template such as `v-{{role}}-{{random}}`. Placeholders: `{{role}}`,
/// `{{display_name}}`, `{{unix_time}}` and exactly one `{{random}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsernameTemplate {
    before_random: Vec<Piece>,
    after_random: Vec<Piece>,
}

impl UsernameTemplate {
    pub fn parse(text: &str) -> Result<Self, PluginError> {
        let mut before = Vec::new();
        let mut after = Vec::new();
        let mut seen_random = false;
        let mut rest = text;
        loop {
            let target = if seen_random { &mut after } else { &mut before };
            let Some(start) = rest.find("{{") else {
                if !rest.is_empty() {
                    target.push(Piece::Text(check_literal(rest)?));
                }
                break;
            };
            if start > 0 {
                target.push(Piece::Text(check_literal(&rest[..start])?));
            }
            let after_open = &rest[start + 2..];
            let end = after_open.find("}}").ok_or_else(|| {
                PluginError::invalid(
                    "username_template",
                    "a '{{' placeholder is never closed with '}}'",
                )
            })?;
            match after_open[..end].trim() {
                "role" | "role_name" => target.push(Piece::Role),
                "display_name" => target.push(Piece::DisplayName),
                "unix_time" => target.push(Piece::UnixTime),
                "random" if seen_random => {
                    return Err(PluginError::invalid("username_template", "uses {{random}} more than once"))
                }
                "random" => seen_random = true,
                other => {
                    return Err(PluginError::invalid(
                        "username_template",
                        format!(
                            "unknown placeholder '{{{{{}}}}}'; known are {{{{role}}}}, {{{{display_name}}}}, {{{{unix_time}}}}, {{{{random}}}}",
                            other.chars().take(40).collect::<String>()
                        ),
                    ))
                }
            }
            rest = &after_open[end + 2..];
        }
        if !seen_random {
            return Err(PluginError::invalid(
                "username_template",
                "must contain {{random}} so that every lease gets its own user",
            ));
        }
        Ok(Self {
            before_random: before,
            after_random: after,
        })
    }

    /// Checks that the random part and everything after it fit in `max_len`; the part before it may
    /// be cut. Called when a role is written.
    pub fn check_fits(
        &self,
        max_len: usize,
        context: UsernameContext<'_>,
    ) -> Result<(), PluginError> {
        let tail = render_pieces(&self.after_random, context, 0).len();
        if tail + USERNAME_RANDOM_LEN > max_len {
            return Err(PluginError::invalid(
                "username_template",
                format!(
                    "the random part ({USERNAME_RANDOM_LEN} characters) and what follows it ({tail}) do not fit in the engine's {max_len}-character username limit"
                ),
            ));
        }
        Ok(())
    }

    /// Renders a fresh username no longer than `max_len`, cutting the text before the random part
    /// (never the random part itself).
    pub fn generate(
        &self,
        max_len: usize,
        context: UsernameContext<'_>,
    ) -> Result<String, PluginError> {
        self.check_fits(max_len, context)?;
        let now = chrono::Utc::now().timestamp();
        let tail = render_pieces(&self.after_random, context, now);
        let mut head = render_pieces(&self.before_random, context, now);
        let room = max_len - tail.len() - USERNAME_RANDOM_LEN;
        head.truncate(room);
        let random: String = (0..USERNAME_RANDOM_LEN)
            .map(|_| {
                USERNAME_RANDOM_ALPHABET[OsRng.gen_range(0..USERNAME_RANDOM_ALPHABET.len())] as char
            })
            .collect();
        let username = format!("{head}{random}{tail}");
        check_username(&username)?;
        Ok(username)
    }
}

/// Literal text in a username template must itself be username-safe.
fn check_literal(text: &str) -> Result<String, PluginError> {
    check_username(text).map_err(|_| {
        PluginError::invalid(
            "username_template",
            "literal text may only contain letters, digits, '_', '-' and '.'",
        )
    })?;
    Ok(text.to_owned())
}

/// Replaces characters outside the username alphabet, so a display name like `jwt:alice@corp`
/// becomes `jwt-alice-corp`.
fn sanitize(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn render_pieces(pieces: &[Piece], context: UsernameContext<'_>, unix_time: i64) -> String {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Role => out.push_str(&sanitize(context.role)),
            Piece::DisplayName => out.push_str(&sanitize(context.display_name)),
            // Width fixed at 10 digits so check_fits (which renders 0) measures the same length.
            Piece::UnixTime => out.push_str(&format!("{unix_time:010}")),
        }
    }
    out
}

/// Generates a username with the template, or the default one when `template` is `None`.
pub fn generate_username(
    template: Option<&str>,
    max_len: usize,
    context: UsernameContext<'_>,
) -> Result<String, PluginError> {
    UsernameTemplate::parse(template.unwrap_or(DEFAULT_USERNAME_TEMPLATE))?
        .generate(max_len, context)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTEXT: UsernameContext<'static> = UsernameContext {
        role: "a-rather-long-role-name-for-reporting",
        display_name: "token",
    };

    #[test]
    fn passwords_are_long_and_from_the_safe_alphabet() {
        for _ in 0..200 {
            let password = generate_password(DEFAULT_PASSWORD_LEN);
            assert_eq!(password.expose().len(), 32);
            check_password(&password).unwrap();
            assert!(!password.expose().starts_with('-'));
        }
        assert_ne!(generate_password(32), generate_password(32));
    }

    #[test]
    fn username_is_cut_before_the_random_part() {
        let name = generate_username(None, 32, CONTEXT).unwrap();
        assert_eq!(name.len(), 32);
        assert!(name.starts_with("v-a-rather-long"), "{name}");
        let random = &name[name.len() - USERNAME_RANDOM_LEN..];
        assert!(random
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        let short = generate_username(
            None,
            63,
            UsernameContext {
                role: "app",
                display_name: "t",
            },
        )
        .unwrap();
        assert_eq!(short.len(), "v-app-".len() + USERNAME_RANDOM_LEN);
    }

    #[test]
    fn template_that_cannot_fit_is_rejected() {
        let template = UsernameTemplate::parse("{{random}}-suffix-that-is-much-too-long").unwrap();
        let err = template.check_fits(32, CONTEXT).unwrap_err();
        assert!(err.to_string().contains("32-character"), "{err}");
        assert!(template.check_fits(80, CONTEXT).is_ok());
    }

    #[test]
    fn template_errors_name_the_problem() {
        assert!(UsernameTemplate::parse("v-{{role}}")
            .unwrap_err()
            .to_string()
            .contains("{{random}}"));
        assert!(UsernameTemplate::parse("v-{{rol}}-{{random}}")
            .unwrap_err()
            .to_string()
            .contains("{{rol}}"));
        assert!(UsernameTemplate::parse("v'-{{random}}").is_err());
    }

    #[test]
    fn usernames_with_sql_metacharacters_are_refused() {
        for bad in ["a\"b", "a'b", "a;b", "a b", "a/b", "ümlaut", ""] {
            assert!(check_username(bad).is_err(), "{bad:?} accepted");
        }
        check_username("v-app_1.x").unwrap();
    }
}
