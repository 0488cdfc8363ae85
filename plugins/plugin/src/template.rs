//! Statement templates as Vault writes them: `CREATE ROLE "{{name}}" ... PASSWORD '{{password}}'`.
//!
//! A template is parsed when a role is written, so an unknown placeholder (`{{nmae}}`) is a 400 then,
//! not a failure when a service asks for credentials. Rendering substitutes only values that passed
//! [`crate::credentials`]' strict alphabets, which is what makes plain substitution safe.

use chrono::{DateTime, Utc};

use crate::{PluginError, Secret};

/// Placeholders a statement may use. `name` and `username` are synonyms, as in Vault.
const KNOWN_PLACEHOLDERS: &[&str] = &["name", "username", "password", "expiration"];

/// The longest statement template accepted, in bytes. Parsing is a single loop (no recursion, so
/// no depth limit is needed); the size limit keeps a role's stored statements and every rendering
/// of them small.
pub const MAX_STATEMENT_BYTES: usize = 64 * 1024;

/// One segment of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Name,
    Password,
    Expiration,
}

/// A statement template whose placeholders are all known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementTemplate {
    segments: Vec<Segment>,
}

/// The values a template may reference. The password is only borrowed, never copied into a String
/// that outlives the rendered statement.
#[derive(Debug)]
pub struct TemplateValues<'a> {
    pub username: &'a str,
    pub password: Option<PasswordValue<'a>>,
    pub expiration: Option<DateTime<Utc>>,
}

/// What `{{password}}` stands for in a rendered statement. Each form has its own strict alphabet,
/// checked at rendering, so neither can carry a quote into SQL.
#[derive(Debug, Clone, Copy)]
pub enum PasswordValue<'a> {
    /// The password itself; the server hashes it. Checked by
    /// [`crate::credentials::check_password`].
    Cleartext(&'a Secret),
    /// What the server stores for the password, computed by Lessor (PostgreSQL's
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`), so the password itself never
    /// reaches the server. Checked by [`crate::credentials::check_password_verifier`].
    Verifier(&'a Secret),
}

impl StatementTemplate {
    /// Parses `text`, rejecting unknown or unterminated placeholders.
    pub fn parse(text: &str) -> Result<Self, PluginError> {
        if text.len() > MAX_STATEMENT_BYTES {
            return Err(PluginError::Template(format!(
                "a statement is longer than {MAX_STATEMENT_BYTES} bytes"
            )));
        }
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                segments.push(Segment::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| {
                PluginError::Template("a '{{' placeholder is never closed with '}}'".into())
            })?;
            let name = after[..end].trim();
            segments.push(match name {
                "name" | "username" => Segment::Name,
                "password" => Segment::Password,
                "expiration" => Segment::Expiration,
                other => {
                    return Err(PluginError::Template(format!(
                        "unknown placeholder '{{{{{}}}}}'; known placeholders are {}",
                        truncate_for_message(other),
                        KNOWN_PLACEHOLDERS
                            .iter()
                            .map(|p| format!("{{{{{p}}}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            });
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_owned()));
        }
        Ok(Self { segments })
    }

    /// Whether the template references the password (a rendered statement that does is never logged).
    pub fn uses_password(&self) -> bool {
        self.segments.contains(&Segment::Password)
    }

    /// Renders the template. The values must already have passed the credential alphabets; this
    /// re-checks them so a caller that forgot cannot inject SQL.
    pub fn render(&self, values: &TemplateValues<'_>) -> Result<Secret, PluginError> {
        crate::credentials::check_username(values.username)?;
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Name => out.push_str(values.username),
                Segment::Password => {
                    let password = values.password.ok_or_else(|| {
                        PluginError::Template(
                            "this statement needs {{password}}, which this operation does not have"
                                .into(),
                        )
                    })?;
                    let text = match password {
                        PasswordValue::Cleartext(password) => {
                            crate::credentials::check_password(password)?;
                            password
                        }
                        PasswordValue::Verifier(verifier) => {
                            crate::credentials::check_password_verifier(verifier)?;
                            verifier
                        }
                    };
                    out.push_str(text.expose());
                }
                Segment::Expiration => {
                    let expiration = values.expiration.ok_or_else(|| {
                        PluginError::Template("this statement needs {{expiration}}, which this operation does not have".into())
                    })?;
                    out.push_str(&format_expiration(expiration));
                }
            }
        }
        // The rendered statement may hold a password, so it travels as a Secret.
        Ok(Secret::new(out))
    }
}

/// The `{{expiration}}` format, which both PostgreSQL and MySQL parse: `2026-11-28 03:00:00+0000`.
pub fn format_expiration(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%z").to_string()
}

fn truncate_for_message(text: &str) -> String {
    text.chars().take(40).collect()
}

/// Splits a multi-statement string on `;` outside quotes, as Vault does for roles whose
/// `creation_statements` is one string. A body with `$$` dollar quoting is kept whole.
pub fn split_statements(text: &str) -> Vec<String> {
    if text.contains("$$") {
        let trimmed = text.trim();
        return if trimmed.is_empty() {
            vec![]
        } else {
            vec![trimmed.to_owned()]
        };
    }
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for ch in text.chars() {
        match (quote, ch) {
            (None, ';') => {
                let stmt = current.trim();
                if !stmt.is_empty() {
                    statements.push(stmt.to_owned());
                }
                current.clear();
                continue;
            }
            (None, '\'' | '"' | '`') => quote = Some(ch),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
        current.push(ch);
    }
    let stmt = current.trim();
    if !stmt.is_empty() {
        statements.push(stmt.to_owned());
    }
    statements
}

/// Parses and renders a list of templates, splitting each on `;` first.
pub fn render_statements(
    templates: &[String],
    values: &TemplateValues<'_>,
) -> Result<Vec<Secret>, PluginError> {
    let mut rendered = Vec::new();
    for template in templates {
        for stmt in split_statements(template) {
            rendered.push(StatementTemplate::parse(&stmt)?.render(values)?);
        }
    }
    Ok(rendered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn renders_known_placeholders() {
        let template = StatementTemplate::parse(
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{ expiration }}'",
        )
        .unwrap();
        assert!(template.uses_password());
        let password = Secret::new("Abcdefgh12345678-_xyzXYZ");
        let rendered = template
            .render(&TemplateValues {
                username: "v-app-abc123",
                password: Some(PasswordValue::Cleartext(&password)),
                expiration: Some(Utc.with_ymd_and_hms(2026, 11, 28, 3, 0, 0).unwrap()),
            })
            .unwrap();
        assert_eq!(
            rendered.expose(),
            "CREATE ROLE \"v-app-abc123\" WITH LOGIN PASSWORD 'Abcdefgh12345678-_xyzXYZ' VALID UNTIL '2026-11-28 03:00:00+0000'"
        );
    }

    #[test]
    fn verifiers_render_with_their_own_alphabet() {
        let template =
            StatementTemplate::parse("ALTER ROLE \"{{name}}\" PASSWORD '{{password}}'").unwrap();
        let verifier = Secret::new("SCRAM-SHA-256$1:c2FsdA==$c3RvcmVk+/8=:c2VydmVy");
        let rendered = template
            .render(&TemplateValues {
                username: "v-app",
                password: Some(PasswordValue::Verifier(&verifier)),
                expiration: None,
            })
            .unwrap();
        assert!(rendered
            .expose()
            .ends_with(&format!("'{}'", verifier.expose())));
        // The cleartext alphabet refuses a verifier, and the verifier's refuses a quote.
        let as_cleartext = template.render(&TemplateValues {
            username: "v-app",
            password: Some(PasswordValue::Cleartext(&verifier)),
            expiration: None,
        });
        assert!(as_cleartext.is_err());
        let quoted = Secret::new("SCRAM-SHA-256$1:c2FsdA==$x':y");
        let err = template
            .render(&TemplateValues {
                username: "v-app",
                password: Some(PasswordValue::Verifier(&quoted)),
                expiration: None,
            })
            .unwrap_err();
        assert!(
            matches!(
                err,
                PluginError::InvalidValue {
                    field: "password",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!err.to_string().contains("x'"), "{err}");
    }

    #[test]
    fn unknown_placeholder_is_rejected_with_its_name() {
        let err = StatementTemplate::parse("CREATE ROLE \"{{nmae}}\"").unwrap_err();
        assert!(err.to_string().contains("{{nmae}}"), "{err}");
        let err = StatementTemplate::parse("CREATE ROLE \"{{name\"").unwrap_err();
        assert!(err.to_string().contains("never closed"), "{err}");
    }

    #[test]
    fn render_refuses_unsafe_username() {
        let template = StatementTemplate::parse("DROP ROLE \"{{name}}\"").unwrap();
        let err = template
            .render(&TemplateValues {
                username: "x\"; DROP TABLE t; --",
                password: None,
                expiration: None,
            })
            .unwrap_err();
        assert!(matches!(
            err,
            PluginError::InvalidValue {
                field: "username",
                ..
            }
        ));
    }

    #[test]
    fn long_statements_are_refused_with_the_limit() {
        let err = StatementTemplate::parse(&"{{name}}".repeat(MAX_STATEMENT_BYTES))
            .unwrap_err()
            .to_string();
        assert!(err.contains("longer than 65536 bytes"), "{err}");
        assert!(StatementTemplate::parse(&"x".repeat(MAX_STATEMENT_BYTES)).is_ok());
    }

    #[test]
    fn splits_on_semicolons_outside_quotes() {
        let parts = split_statements("CREATE USER 'a;b'@'%'; GRANT SELECT ON *.* TO 'a;b'@'%';\n");
        assert_eq!(
            parts,
            vec!["CREATE USER 'a;b'@'%'", "GRANT SELECT ON *.* TO 'a;b'@'%'"]
        );
        assert_eq!(split_statements("DO $$ BEGIN x; y; END $$;").len(), 1);
        assert!(split_statements("  ; ").is_empty());
    }
}
