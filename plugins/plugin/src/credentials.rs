//! Generated usernames and passwords, and the strict alphabets every value substituted into SQL
//! must pass.
//!
//! Passwords come from the OS random source over `A-Z a-z 0-9 - _`: no quote, backslash, colon,
//! `@`, `/`, `#` or `;`, so a password is safe inside a SQL string literal, a URL, a `.pgpass` line
//! and a MySQL option file without escaping. Usernames keep their random part whole when a template
//! is cut to an engine's length limit, so two leases never collide because of truncation.

use rand::rngs::OsRng;
use rand::Rng;

use crate::vault_template::{Env, VaultTemplate};
use crate::{PluginError, Secret};

/// Characters of generated passwords: safe in SQL literals, URLs, `.pgpass` and `my.cnf`.
pub const PASSWORD_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Length of generated passwords: 32 characters of a 64-symbol alphabet is 192 bits.
pub const DEFAULT_PASSWORD_LEN: usize = 32;

/// A lower bound on the min-entropy of [`generate_password`]`(`[`DEFAULT_PASSWORD_LEN`]`)`: 192
/// bits drawn, less under a tenth of a bit for the draws it rejects (no upper-case letter, no
/// lower-case letter, no digit, or a leading dash: about 1 in 50), rounded down.
pub const DEFAULT_PASSWORD_ENTROPY_BITS: f64 = 191.0;

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

/// Characters a password policy's charset may use: the characters [`check_password`] lets into
/// SQL (the generated alphabet plus `.` and `~`). Quotes, backslashes and anything else that would
/// need escaping in the engines' statements are refused when the policy is written.
pub const POLICY_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~";

/// Shortest and longest password a policy may ask for.
pub const POLICY_LENGTH: std::ops::RangeInclusive<usize> = 4..=100;

/// Most `rule "charset"` blocks a policy may hold.
pub const MAX_POLICY_RULES: usize = 32;

/// One `rule "charset"` block: at least `min_chars` of the password come from `charset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharsetRule {
    /// Distinct characters, in first-seen order; each in [`POLICY_ALPHABET`].
    charset: Vec<u8>,
    min_chars: usize,
}

/// A checked password policy (Vault's `sys/policies/password`): a length and charset rules.
/// Only [`PasswordPolicy::new`] builds one, so every policy in hand can generate a password that
/// meets all its rules and passes [`check_password`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    length: usize,
    rules: Vec<CharsetRule>,
}

impl PasswordPolicy {
    /// Checks a policy: length in [`POLICY_LENGTH`], 1 to [`MAX_POLICY_RULES`] rules, every
    /// charset non-empty and inside [`POLICY_ALPHABET`], and the min-chars summing to at most the
    /// length (so one password can meet them all). Rules are `(charset, min_chars)`.
    pub fn new(length: usize, rules: Vec<(String, usize)>) -> Result<Self, PluginError> {
        if !POLICY_LENGTH.contains(&length) {
            return Err(PluginError::invalid(
                "length",
                format!(
                    "must be between {} and {}, not {length}",
                    POLICY_LENGTH.start(),
                    POLICY_LENGTH.end()
                ),
            ));
        }
        if rules.is_empty() {
            return Err(PluginError::invalid(
                "rule",
                "at least one rule \"charset\" block is required",
            ));
        }
        if rules.len() > MAX_POLICY_RULES {
            return Err(PluginError::invalid(
                "rule",
                format!("at most {MAX_POLICY_RULES} rule blocks are allowed"),
            ));
        }
        let mut checked = Vec::with_capacity(rules.len());
        let mut total = 0usize;
        for (index, (charset, min_chars)) in rules.into_iter().enumerate() {
            let number = index + 1;
            if charset.is_empty() {
                return Err(PluginError::invalid(
                    "charset",
                    format!("rule {number}: must not be empty"),
                ));
            }
            if let Some(bad) = charset
                .chars()
                .find(|c| !c.is_ascii() || !POLICY_ALPHABET.contains(&(*c as u8)))
            {
                return Err(PluginError::invalid(
                    "charset",
                    format!(
                        "rule {number}: {bad:?} cannot be used in a database password; allowed are A-Z a-z 0-9 - _ . ~"
                    ),
                ));
            }
            let mut distinct = Vec::new();
            for b in charset.bytes() {
                if !distinct.contains(&b) {
                    distinct.push(b);
                }
            }
            total = total.saturating_add(min_chars);
            checked.push(CharsetRule {
                charset: distinct,
                min_chars,
            });
        }
        if total > length {
            return Err(PluginError::invalid(
                "min-chars",
                format!("the rules ask for {total} characters in all, more than length {length}"),
            ));
        }
        Ok(Self {
            length,
            rules: checked,
        })
    }

    pub fn length(&self) -> usize {
        self.length
    }

    /// The rules as `(charset, min_chars)`.
    pub fn rules(&self) -> impl Iterator<Item = (&str, usize)> {
        self.rules.iter().map(|r| {
            // Only ASCII from POLICY_ALPHABET was let in.
            (std::str::from_utf8(&r.charset).unwrap_or(""), r.min_chars)
        })
    }

    /// Whether `password` has the policy's length and meets every rule's minimum.
    pub fn is_met_by(&self, password: &str) -> bool {
        password.len() == self.length
            && password
                .bytes()
                .all(|b| self.rules.iter().any(|r| r.charset.contains(&b)))
            && self
                .rules
                .iter()
                .all(|r| password.bytes().filter(|b| r.charset.contains(b)).count() >= r.min_chars)
    }

    /// A lower bound, in bits, on the min-entropy of [`PasswordPolicy::generate`]'s output, to
    /// tell whether its passwords can be guessed ([`crate::PasswordStrength::of_entropy`]): each
    /// rule's `min_chars` draws from its charset plus the other draws from the union of charsets
    /// (the shuffle only adds to that, since for each order distinct draws give distinct
    /// passwords), less `log2(length)` for the swap that keeps a dash out of first place (it
    /// merges at most `length` outcomes into one).
    pub fn entropy_bits(&self) -> f64 {
        let mut union: Vec<u8> = Vec::new();
        let mut bits = 0.0;
        let mut required = 0;
        for rule in &self.rules {
            bits += rule.min_chars as f64 * (rule.charset.len() as f64).log2();
            required += rule.min_chars;
            for b in &rule.charset {
                if !union.contains(b) {
                    union.push(*b);
                }
            }
        }
        bits += self.length.saturating_sub(required) as f64 * (union.len() as f64).log2();
        (bits - (self.length as f64).log2()).max(0.0)
    }

    /// Generates a password from the OS random source. Built, not drawn until it fits: each
    /// rule's `min_chars` come from its charset, the rest from the union of all charsets, then the
    /// whole is shuffled, so every rule is met on the first try however tight the policy.
    pub fn generate(&self) -> Secret {
        let mut union: Vec<u8> = Vec::new();
        for rule in &self.rules {
            for b in &rule.charset {
                if !union.contains(b) {
                    union.push(*b);
                }
            }
        }
        let pick = |set: &[u8]| set[OsRng.gen_range(0..set.len())];
        let mut bytes = Vec::with_capacity(self.length);
        for rule in &self.rules {
            for _ in 0..rule.min_chars {
                bytes.push(pick(&rule.charset));
            }
        }
        while bytes.len() < self.length {
            bytes.push(pick(&union));
        }
        // Fisher-Yates, so the required characters are not always in front.
        for i in (1..bytes.len()).rev() {
            bytes.swap(i, OsRng.gen_range(0..=i));
        }
        // A dash first would read as an option to some command-line clients; a swap keeps
        // every count.
        if bytes[0] == b'-' {
            if let Some(other) = bytes.iter().position(|b| *b != b'-') {
                bytes.swap(0, other);
            }
        }
        Secret::new(bytes.into_iter().map(char::from).collect::<String>())
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

/// The longest password verifier accepted into a statement: PostgreSQL's SCRAM-SHA-256 form is
/// about 130 characters.
const MAX_VERIFIER_LEN: usize = 512;

/// Checks a password verifier (what the server stores for a password, computed by Lessor, such as
/// PostgreSQL's `SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>`) before it is substituted into
/// SQL: letters, digits, base64's `+ / =`, and the separators `$ : -`, none of which ends a quoted
/// literal. The value is never quoted in the error.
pub fn check_password_verifier(verifier: &Secret) -> Result<(), PluginError> {
    let value = verifier.expose();
    if value.is_empty() || value.len() > MAX_VERIFIER_LEN {
        return Err(PluginError::invalid(
            "password",
            format!("the computed verifier must be 1 to {MAX_VERIFIER_LEN} characters long"),
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'$' | b':' | b'-'))
    {
        return Err(PluginError::invalid(
            "password",
            "the computed verifier contains a character outside A-Z a-z 0-9 + / = $ : -",
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

/// Lessor's own placeholder names; a template using only these is read in Lessor's syntax.
const LESSOR_PLACEHOLDERS: &[&str] = &["role", "role_name", "display_name", "unix_time", "random"];

/// How many names the write-time check renders: all must differ, so a template whose random
/// part is cut away by a later `truncate` is refused when the role is written.
const SAMPLE_RENDERS: usize = 3;

/// A parsed username template, in either of two syntaxes:
/// - Lessor's own, `v-{{role}}-{{random}}`: placeholders `{{role}}`, `{{display_name}}`,
///   `{{unix_time}}` and exactly one `{{random}}`; the text before the random part is cut to fit
///   the engine's limit, never the random part.
/// - Vault's (see [`crate::vault_template`]), `{{.RoleName | truncate 10}}-{{random 20}}`: the
///   template decides the length itself, as in Vault; a name longer than the engine allows is
///   refused, at write time for the sample role and display name, and at issue time for others.
///
/// A template whose every `{{ }}` is one of Lessor's names is read as Lessor's; any other is
/// read as Vault's (where Lessor's names still work as aliases of the fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsernameTemplate(Syntax);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Syntax {
    Lessor(LessorTemplate),
    Vault(VaultTemplate),
}

impl UsernameTemplate {
    /// Parses a template, refusing (with [`PluginError::InvalidValue`] naming the problem) an
    /// unknown placeholder or function, a malformed action, or a template without randomness.
    pub fn parse(text: &str) -> Result<Self, PluginError> {
        if looks_like_lessor(text) {
            LessorTemplate::parse(text).map(|t| Self(Syntax::Lessor(t)))
        } else {
            VaultTemplate::parse(text).map(|t| Self(Syntax::Vault(t)))
        }
    }

    /// Whether a name made by this template depends on the requester's display name
    /// (`{{display_name}}`, or `.DisplayName` in Vault's syntax).
    pub fn uses_display_name(&self) -> bool {
        match &self.0 {
            Syntax::Lessor(template) => template
                .before_random
                .iter()
                .chain(&template.after_random)
                .any(|piece| matches!(piece, Piece::DisplayName)),
            Syntax::Vault(template) => template.uses_display_name(),
        }
    }

    /// Checks, when a role is written, that the template yields usernames the engine accepts:
    /// for Lessor's syntax, that the random part and what follows fit in `max_len`; for Vault's,
    /// that names rendered for `context` fit, pass [`check_username`] and differ from each other.
    pub fn check_fits(
        &self,
        max_len: usize,
        context: UsernameContext<'_>,
    ) -> Result<(), PluginError> {
        match &self.0 {
            Syntax::Lessor(t) => t.check_fits(max_len, context),
            Syntax::Vault(t) => {
                let now = chrono::Utc::now();
                let mut seen: Vec<String> = Vec::new();
                for _ in 0..SAMPLE_RENDERS {
                    let name = render_vault(t, max_len, context, now)?;
                    if seen.contains(&name) {
                        return Err(PluginError::invalid(
                            "username_template",
                            format!(
                                "renders the same username ({name}) twice; its {{{{random N}}}} or {{{{uuid}}}} must survive any truncate"
                            ),
                        ));
                    }
                    seen.push(name);
                }
                Ok(())
            }
        }
    }

    /// Renders a fresh username no longer than `max_len` that passes [`check_username`].
    pub fn generate(
        &self,
        max_len: usize,
        context: UsernameContext<'_>,
    ) -> Result<String, PluginError> {
        match &self.0 {
            Syntax::Lessor(t) => t.generate(max_len, context),
            Syntax::Vault(t) => render_vault(t, max_len, context, chrono::Utc::now()),
        }
    }
}

/// Renders a Vault-syntax template and holds the result to the engine's rules.
fn render_vault(
    template: &VaultTemplate,
    max_len: usize,
    context: UsernameContext<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, PluginError> {
    let name = template.render(&Env {
        role: context.role,
        display_name: context.display_name,
        now,
    });
    if name.len() > max_len {
        return Err(PluginError::invalid(
            "username_template",
            format!(
                "renders a {}-character username, longer than the engine's {max_len}-character limit; end the template with | truncate {max_len}",
                name.len()
            ),
        ));
    }
    if let Err(err) = check_username(&name) {
        let reason = match err {
            PluginError::InvalidValue { reason, .. } => reason,
            other => other.to_string(),
        };
        return Err(PluginError::invalid(
            "username_template",
            format!("renders a username that {reason}"),
        ));
    }
    Ok(name)
}

/// Whether every `{{ }}` in `text` is one of Lessor's own placeholder names.
fn looks_like_lessor(text: &str) -> bool {
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            // Unclosed: let Lessor's parser say so.
            return true;
        };
        if !LESSOR_PLACEHOLDERS.contains(&after[..end].trim()) {
            return false;
        }
        rest = &after[end + 2..];
    }
    true
}

/// A template in Lessor's own syntax, split around its one `{{random}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LessorTemplate {
    before_random: Vec<Piece>,
    after_random: Vec<Piece>,
}

impl LessorTemplate {
    fn parse(text: &str) -> Result<Self, PluginError> {
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
    fn check_fits(&self, max_len: usize, context: UsernameContext<'_>) -> Result<(), PluginError> {
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
    fn generate(
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
pub(crate) fn sanitize(value: &str) -> String {
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
    #[test]
    fn templates_say_whether_they_use_the_display_name() {
        use super::UsernameTemplate;
        for (text, uses) in [
            ("v-{{role}}-{{random}}", false),
            ("v-{{display_name}}-{{random}}", true),
            ("v-{{random}}-{{display_name}}", true),
            ("{{.RoleName | truncate 10}}-{{random 20}}", false),
            ("{{.DisplayName}}_{{random 8}}", true),
            (
                r#"{{printf "v_%s_%s" (.DisplayName | truncate 8 | uppercase) (random 20)}}"#,
                true,
            ),
            (
                r#"{{printf "v_%s_%s" (.RoleName | truncate 8) (random 20)}}"#,
                false,
            ),
        ] {
            let template = UsernameTemplate::parse(text).unwrap();
            assert_eq!(template.uses_display_name(), uses, "{text}");
        }
    }

    use super::*;

    const CONTEXT: UsernameContext<'static> = UsernameContext {
        role: "a-rather-long-role-name-for-reporting",
        display_name: "token",
    };

    #[test]
    fn policy_entropy_is_a_lower_bound_that_tells_weak_from_strong() {
        let strong = PasswordPolicy::new(
            32,
            vec![
                ("abcdefghijklmnopqrstuvwxyz".into(), 1),
                ("ABCDEFGHIJKLMNOPQRSTUVWXYZ".into(), 1),
                ("0123456789".into(), 1),
            ],
        )
        .unwrap();
        // 4.7 + 4.7 + 3.3 + 29 x log2(62) - log2(32) = about 180 bits.
        let bits = strong.entropy_bits();
        assert!((175.0..=185.0).contains(&bits), "{bits}");
        assert_eq!(
            crate::PasswordStrength::of_entropy(bits),
            crate::PasswordStrength::Unguessable
        );
        // Vault's documented example: 20 characters of 62 symbols is about 115 bits.
        let vaults = PasswordPolicy::new(
            20,
            vec![(
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".into(),
                0,
            )],
        )
        .unwrap();
        assert_eq!(
            crate::PasswordStrength::of_entropy(vaults.entropy_bits()),
            crate::PasswordStrength::Guessable
        );
        let tiny = PasswordPolicy::new(4, vec![("a".into(), 4)]).unwrap();
        assert_eq!(tiny.entropy_bits(), 0.0);
        // The default generator's bound is below what it draws, and unguessable.
        let drawn = DEFAULT_PASSWORD_LEN as f64 * (PASSWORD_ALPHABET.len() as f64).log2();
        assert!(DEFAULT_PASSWORD_ENTROPY_BITS < drawn);
        assert_eq!(
            crate::PasswordStrength::of_entropy(DEFAULT_PASSWORD_ENTROPY_BITS),
            crate::PasswordStrength::Unguessable
        );
    }

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

    fn policy(length: usize, rules: &[(&str, usize)]) -> Result<PasswordPolicy, PluginError> {
        PasswordPolicy::new(
            length,
            rules.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect(),
        )
    }

    #[test]
    fn policy_passwords_meet_every_rule_even_when_tight() {
        let tight = policy(4, &[("a", 1), ("B", 1), ("7", 1), ("~", 1)]).unwrap();
        let wide = policy(
            24,
            &[
                ("abcdefghijklmnopqrstuvwxyz", 2),
                ("0123456789", 3),
                ("-_", 1),
            ],
        )
        .unwrap();
        for _ in 0..2000 {
            for p in [&tight, &wide] {
                let password = p.generate();
                assert!(p.is_met_by(password.expose()), "{}", password.expose());
                check_password(&password).unwrap();
                assert!(!password.expose().starts_with('-'));
            }
        }
    }

    #[test]
    fn bad_policies_name_the_problem() {
        type Case<'a> = (usize, &'a [(&'a str, usize)], &'a str);
        let cases: &[Case<'_>] = &[
            (3, &[("abc", 1)], "length"),
            (101, &[("abc", 1)], "length"),
            (10, &[], "rule"),
            (10, &[("", 1)], "charset"),
            (10, &[("ab'c", 1)], "'\\''"),
            (10, &[("ab\\c", 1)], "charset"),
            (10, &[("ab\"c", 1)], "charset"),
            (10, &[("ab c", 1)], "charset"),
            (10, &[("abc", 6), ("123", 5)], "min-chars"),
        ];
        for (length, rules, needle) in cases {
            let err = policy(*length, rules).unwrap_err().to_string();
            assert!(err.contains(needle), "{length} {rules:?}: {err}");
        }
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
    fn vault_templates_are_held_to_the_engine_rules_at_write_and_issue() {
        let postgres_default = UsernameTemplate::parse(
            r#"{{ printf "v-%s-%s-%s-%s" (.DisplayName | truncate 8) (.RoleName | truncate 8) (random 20) (unix_time) | truncate 63 }}"#,
        )
        .unwrap();
        postgres_default.check_fits(63, CONTEXT).unwrap();
        let name = postgres_default.generate(63, CONTEXT).unwrap();
        assert!(name.starts_with("v-token-a-rather-"), "{name}");
        check_username(&name).unwrap();
        assert_ne!(postgres_default.generate(63, CONTEXT).unwrap(), name);

        // Longer than MySQL 8's 32 characters: refused when the role is written, saying how.
        let err = postgres_default
            .check_fits(32, CONTEXT)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("32-character limit") && err.contains("truncate 32"),
            "{err}"
        );
        // A display name that makes it too long is refused at issue time with the same reason.
        let short = UsernameTemplate::parse("{{.DisplayName}}-{{random 8}}").unwrap();
        short.check_fits(32, CONTEXT).unwrap();
        let long_display = UsernameContext {
            role: "r",
            display_name: "a-display-name-that-is-far-too-long",
        };
        assert!(short.generate(32, long_display).is_err());

        // Characters the engine rules refuse ('=' and '+' of base64, a quote in printf).
        for text in [
            r#"{{.RoleName | base64}}{{random 8}}"#,
            r#"{{printf "a'%s" (random 8)}}"#,
        ] {
            let err = UsernameTemplate::parse(text)
                .unwrap()
                .check_fits(63, CONTEXT)
                .unwrap_err()
                .to_string();
            assert!(err.contains("renders a username that"), "{text}: {err}");
        }
        // Randomness cut away by a later truncate.
        let err =
            UsernameTemplate::parse(r#"{{printf "%s-%s" .RoleName (random 8) | truncate 10}}"#)
                .unwrap()
                .check_fits(63, CONTEXT)
                .unwrap_err()
                .to_string();
        assert!(err.contains("same username"), "{err}");
    }

    #[test]
    fn lessor_and_vault_syntax_are_told_apart() {
        // Lessor's: the text before {{random}} is cut to fit, the random part kept whole.
        let lessor = UsernameTemplate::parse("v-{{role}}-{{unix_time}}-{{random}}").unwrap();
        let name = lessor.generate(32, CONTEXT).unwrap();
        assert_eq!(name.len(), 32);
        // Vault's: {{random}} without a length is Lessor's and cannot be mixed in.
        let err = UsernameTemplate::parse("v-{{role}}-{{random}}-{{.DisplayName}}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("random takes 1 argument"), "{err}");
        let vault = UsernameTemplate::parse("v-{{role}}-{{random 10}}").unwrap();
        assert_eq!(
            vault.generate(63, CONTEXT).unwrap().len(),
            "v-".len() + CONTEXT.role.len() + 11
        );
    }

    #[test]
    fn usernames_with_sql_metacharacters_are_refused() {
        for bad in ["a\"b", "a'b", "a;b", "a b", "a/b", "ümlaut", ""] {
            assert!(check_username(bad).is_err(), "{bad:?} accepted");
        }
        check_username("v-app_1.x").unwrap();
    }
}
