//! Durations as Vault clients send them: integer seconds (`3600`), numeric strings (`"3600"`) or
//! Go-style duration strings (`"1h"`, `"90m"`, `"1h30m"`, `"45s"`, `"7d"`).

use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};

/// The longest duration Lessor accepts anywhere (10 years): larger values are typos or attacks on
/// timestamp arithmetic, not real lease lengths.
pub const ABSURD_LIMIT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Parses a duration field, naming `field` in the error.
pub fn parse_duration_value(field: &str, value: &Value) -> Result<Duration> {
    match value {
        Value::Number(number) => {
            if let Some(secs) = number.as_u64() {
                return bounded(field, Duration::from_secs(secs));
            }
            if number.as_i64().is_some_and(|n| n < 0) || number.as_f64().is_some_and(|n| n < 0.0) {
                return Err(Error::invalid(format!("{field}: must not be negative")));
            }
            Err(Error::invalid(format!(
                "{field}: must be a whole number of seconds"
            )))
        }
        Value::String(text) => parse_duration_str(field, text),
        Value::Null => Ok(Duration::ZERO),
        _ => Err(Error::invalid(format!(
            "{field}: expected seconds or a duration such as \"1h\" or \"90m\""
        ))),
    }
}

/// Parses `"1h"`, `"90m"`, `"1h30m"`, `"3600"`, `"3600s"`, `"7d"`.
pub fn parse_duration_str(field: &str, text: &str) -> Result<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Duration::ZERO);
    }
    if text.starts_with('-') {
        return Err(Error::invalid(format!("{field}: must not be negative")));
    }
    let bad = || {
        Error::invalid(format!(
            "{field}: cannot parse {:?} as a duration; use seconds or a form such as \"1h\", \"90m\", \"1h30m\"",
            text.chars().take(32).collect::<String>()
        ))
    };
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = text.parse().map_err(|_| bad())?;
        return bounded(field, Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let unit: u64 = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        if digits.is_empty() {
            return Err(bad());
        }
        let amount: u64 = digits.parse().map_err(|_| bad())?;
        total = amount
            .checked_mul(unit)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| Error::invalid(format!("{field}: duration is too large")))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    bounded(field, Duration::from_secs(total))
}

fn bounded(field: &str, duration: Duration) -> Result<Duration> {
    if duration > ABSURD_LIMIT {
        return Err(Error::invalid(format!(
            "{field}: {}s is longer than the 10-year limit",
            duration.as_secs()
        )));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_vault_forms() {
        let cases = [
            (json!(3600), 3600),
            (json!("3600"), 3600),
            (json!("1h"), 3600),
            (json!("90m"), 5400),
            (json!("1h30m"), 5400),
            (json!("45s"), 45),
            (json!("7d"), 604_800),
            (json!(""), 0),
        ];
        for (value, secs) in cases {
            assert_eq!(
                parse_duration_value("ttl", &value).unwrap().as_secs(),
                secs,
                "{value}"
            );
        }
    }

    #[test]
    fn rejects_negative_absurd_and_malformed_naming_the_field() {
        for value in [
            json!(-5),
            json!("-5m"),
            json!(1e30),
            json!("1x"),
            json!("h"),
            json!(true),
            json!(1.5),
        ] {
            let err = parse_duration_value("default_ttl", &value).unwrap_err();
            assert!(
                err.to_string().starts_with("default_ttl:"),
                "{value}: {err}"
            );
        }
        let err = parse_duration_value("max_ttl", &json!(u64::MAX)).unwrap_err();
        assert!(err.to_string().contains("10-year"), "{err}");
        assert!(parse_duration_str("ttl", "99999999999999999999h").is_err());
    }
}

/// Serde for a `Duration` field of a config table: written as whole seconds, read as seconds or a
/// duration string (`"90s"`, `"5m"`), as every other duration setting.
pub mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        super::parse_duration_value("duration", &value).map_err(serde::de::Error::custom)
    }
}
