//! ACL rules: what a Redis role's statements hold, checked when the role is written.
//!
//! A statement is either a JSON list of rules (Vault's form, `["~app:*", "+@read"]`) or one rule
//! (`+@read`). Every rule goes to the server as its own argument of `ACL SETUSER`, never spliced
//! into a command line, and must pass [`check_rule`] first: no whitespace or control characters
//! (one argument is one rule), and nothing that touches what Lessor owns, which is the user's
//! passwords (`>`, `<`, `#`, `!`, `nopass`, `resetpass`), whether it is switched on (`on`, `off`),
//! and the `reset` that would undo both. `{{name}}` (or `{{username}}`) stands for the user's
//! name, so a role can give each user its own keys (`~app:{{name}}:*`); no other placeholder is
//! accepted, the password least of all.

use lessor_plugin::PluginError;

/// What a role's creation statements default to: read every key, change nothing (Vault's
/// `defaultRedisUserRule`).
pub const DEFAULT_CREATION: &str = r#"["~*", "+@read"]"#;

/// Most rules one user gets; a real role has a handful.
const MAX_RULES: usize = 256;

/// Longest rule, in bytes (key patterns are short; a megabyte-long one is a mistake or an attack).
const MAX_RULE_LEN: usize = 1024;

/// The placeholders a rule may hold, both standing for the user's name.
const NAME_PLACEHOLDERS: &[&str] = &["{{name}}", "{{username}}"];

/// The rules of a role's statements, each checked; blank statements are skipped (as Vault does).
/// `field` names the statements in errors.
pub fn parse(field: &'static str, statements: &[String]) -> Result<Vec<String>, PluginError> {
    let mut rules = Vec::new();
    for statement in statements {
        let statement = statement.trim();
        if statement.is_empty() {
            continue;
        }
        if statement.starts_with('[') {
            // Only a flat list of strings deserialises; serde_json also bounds nesting depth.
            let list: Vec<String> = serde_json::from_str(statement).map_err(|e| {
                PluginError::invalid(
                    field,
                    format!(
                        "a statement starting with '[' must be a JSON list of ACL rules, such as [\"~app:*\", \"+@read\"]: {e}"
                    ),
                )
            })?;
            rules.extend(list);
        } else {
            rules.push(statement.to_owned());
        }
        if rules.len() > MAX_RULES {
            return Err(PluginError::invalid(
                field,
                format!("more than {MAX_RULES} ACL rules"),
            ));
        }
    }
    for rule in &rules {
        check_rule(field, rule)?;
    }
    Ok(rules)
}

/// Whether a role's statements leave the rules to the engine's default.
pub fn is_blank(statements: &[String]) -> bool {
    statements.iter().all(|s| s.trim().is_empty())
}

/// Checks one rule; see the module documentation for what is refused and why.
pub fn check_rule(field: &'static str, rule: &str) -> Result<(), PluginError> {
    let shown: String = rule.chars().take(60).collect();
    if rule.is_empty() {
        return Err(PluginError::invalid(field, "an ACL rule is empty"));
    }
    if rule.len() > MAX_RULE_LEN {
        return Err(PluginError::invalid(
            field,
            format!("the ACL rule {shown:?}... is longer than {MAX_RULE_LEN} bytes"),
        ));
    }
    if rule.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(PluginError::invalid(
            field,
            format!(
                "the ACL rule {shown:?} holds whitespace or a control character; give each rule as its own list element, such as [\"~app:*\", \"+@read\"]"
            ),
        ));
    }
    let lower = rule.to_ascii_lowercase();
    if rule.starts_with(['>', '<', '#', '!']) || lower == "nopass" || lower == "resetpass" {
        // The rule itself is not echoed: it may be a password.
        return Err(PluginError::invalid(
            field,
            "an ACL rule sets or removes a password (>, <, #, !, nopass, resetpass); Lessor sets the user's password itself",
        ));
    }
    if lower == "on" || lower == "off" || lower == "reset" {
        return Err(PluginError::invalid(
            field,
            format!(
                "the ACL rule {shown:?} is Lessor's to give: it switches the user on when it is made and off when it is revoked"
            ),
        ));
    }
    let mut rest = rule.to_owned();
    for placeholder in NAME_PLACEHOLDERS {
        rest = rest.replace(placeholder, "");
    }
    if rest.contains("{{") || rest.contains("}}") {
        return Err(PluginError::Template(format!(
            "the ACL rule {shown:?} holds a placeholder other than {{{{name}}}} or {{{{username}}}}; the password and the expiration never go into ACL rules"
        )));
    }
    Ok(())
}

/// The rules with the user's name in place of its placeholders. `username` has passed
/// `check_username` (letters, digits, `_`, `-`, `.`), so it cannot make a rule mean more.
pub fn render(rules: &[String], username: &str) -> Vec<String> {
    rules
        .iter()
        .map(|rule| {
            NAME_PLACEHOLDERS
                .iter()
                .fold(rule.clone(), |rule, placeholder| {
                    rule.replace(placeholder, username)
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn vaults_json_form_and_single_rules_mix() {
        let rules = parse(
            "creation_statements",
            &statements(&[r#"["~app:*", "+@read"]"#, "  ", "-keys", r#"[]"#]),
        )
        .unwrap();
        assert_eq!(rules, ["~app:*", "+@read", "-keys"]);
        assert_eq!(
            parse("creation_statements", &statements(&[DEFAULT_CREATION])).unwrap(),
            ["~*", "+@read"]
        );
    }

    #[test]
    fn json_must_be_a_flat_list_of_strings() {
        for bad in [
            r#"["~*", 1]"#,
            r#"[["~*"]]"#,
            r#"["~*""#,
            r#"[{"a": "b"}]"#,
            &format!("{}{}", "[".repeat(200), "]".repeat(200)),
        ] {
            let err = parse("creation_statements", &statements(&[bad])).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("invalid creation_statements: a statement starting with '['"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn rules_that_touch_what_lessor_owns_are_refused() {
        for bad in [
            ">secret",
            "<secret",
            "#abc",
            "!abc",
            "nopass",
            "NoPass",
            "resetpass",
            "on",
            "OFF",
            "reset",
        ] {
            let err = check_rule("creation_statements", bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    PluginError::InvalidValue {
                        field: "creation_statements",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
            if bad.starts_with(['>', '<', '#', '!']) {
                assert!(!err.to_string().contains(&bad[1..]), "echoed {bad}");
            }
        }
    }

    #[test]
    fn whitespace_and_control_characters_are_refused() {
        for bad in [
            "~* +@read",
            "+get\n",
            "~a\tb",
            "+@read\u{0}",
            "(~a:* +get)",
            "",
        ] {
            assert!(check_rule("creation_statements", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_the_name_placeholder_is_known() {
        check_rule("creation_statements", "~app:{{name}}:*").unwrap();
        check_rule("creation_statements", "%R~{{username}}").unwrap();
        for bad in ["~{{password}}", "~{{nmae}}", "~{{expiration}}", "~}}"] {
            assert!(
                matches!(
                    check_rule("creation_statements", bad),
                    Err(PluginError::Template(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            render(&statements(&["~app:{{name}}:*", "+get"]), "v-ro-abc"),
            ["~app:v-ro-abc:*", "+get"]
        );
    }

    #[test]
    fn too_many_or_too_long_rules_are_refused() {
        let many = format!("[{}]", vec!["\"+get\""; MAX_RULES + 1].join(","));
        assert!(parse("creation_statements", &[many]).is_err());
        let long = format!("~{}", "a".repeat(MAX_RULE_LEN));
        assert!(check_rule("creation_statements", &long).is_err());
    }
}
