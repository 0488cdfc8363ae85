//! The row formats of the catalog, identity, audit and rotation tables, and their conversions to
//! and from domain values: lists and objects are JSON text, durations whole seconds. (Times are
//! milliseconds since the epoch, converted by `to_millis`/`from_millis` in `mod.rs`.)
//!
//! A column that does not decode is an [`Error::Internal`] naming its table and column: every
//! value was encoded here when it was written, so a failure is corruption, never a panic.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// The error of a stored value that does not decode, naming where it is.
pub(super) fn malformed(table: &str, column: &str, why: impl std::fmt::Display) -> Error {
    Error::Internal(format!("stored {table}.{column} is malformed: {why}"))
}

/// Decodes a JSON column into `T` (a list of strings, an object, or an owning module's type).
pub(super) fn decode<T: DeserializeOwned>(table: &str, column: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| malformed(table, column, e))
}

/// Encodes a value for a JSON column.
pub(super) fn encode<T: Serialize + ?Sized>(
    table: &str,
    column: &str,
    value: &T,
) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| Error::Internal(format!("cannot encode {table}.{column} for the store: {e}")))
}

/// Encodes a list of strings, which cannot fail.
pub(super) fn encode_list(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".to_owned())
}

/// A duration column in whole seconds; a negative value (never written) reads as zero.
pub(super) fn from_secs(secs: i64) -> Duration {
    Duration::from_secs(secs.max(0) as u64)
}

/// A duration in whole seconds for its column (sub-second parts are dropped, as they always were).
pub(super) fn to_secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// A count column that must fit a `u32` (`max_open_connections`, `scram_iterations`).
pub(super) fn to_u32(table: &str, column: &str, value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|_| malformed(table, column, format!("{value} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_column_names_its_table_and_column() {
        let error = decode::<Vec<String>>("roles", "creation_statements", "not json").unwrap_err();
        assert!(
            matches!(&error, Error::Internal(m) if m.starts_with("stored roles.creation_statements is malformed")),
            "{error}"
        );
        assert_eq!(
            decode::<Vec<String>>("roles", "creation_statements", r#"["a","b"]"#).unwrap(),
            ["a", "b"]
        );
        assert!(to_u32("connections", "scram_iterations", -1).is_err());
        assert_eq!(from_secs(-5), Duration::ZERO);
        assert_eq!(to_secs(Duration::from_millis(1_500)), 1);
    }
}
