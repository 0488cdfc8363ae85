//! What Lessor hands out ([`Credential`], [`StaticCredential`], [`WrappedResponse`]) and how
//! each is read from an answer.
//!
//! Answers are read field by field from JSON rather than deserialized into structs: a decoding
//! error then names the field that was missing or of the wrong type and never quotes what it found
//! there, which could be a password.

use std::time::Duration;

use lessor_plugin::Secret;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A dynamic database user and its lease, as `database/creds/<role>` answers it. `Debug` redacts
/// the password.
#[derive(Debug, Clone)]
pub struct Credential {
    pub username: String,
    pub password: Secret,
    pub lease: Lease,
    /// Every other field of the answer's `data`: for a role with `database_per_lease`, the
    /// new database's name (`database`) and a `connection_url` without the password.
    pub extra: Map<String, Value>,
}

/// A lease: what renewing or revoking a credential names, and how long it has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `database/creds/<role>/<random>`; not a secret on its own (revoking needs a token).
    pub id: String,
    /// How long the lease lasts from the answer on (whole seconds, as Lessor answers).
    pub duration: Duration,
    /// Whether [`Client::renew`](crate::Client::renew) can extend it.
    pub renewable: bool,
}

/// A static role's user and current password, as `database/static-creds/<name>` answers it.
#[derive(Debug, Clone)]
pub struct StaticCredential {
    pub username: String,
    pub password: Secret,
    /// Time until the next scheduled rotation replaces the password.
    pub ttl: Duration,
    /// Every other field of the answer's `data` (`last_vault_rotation`, `rotation_period`...).
    pub extra: Map<String, Value>,
}

/// The answer to a wrapped request: a single-use token that unwraps to the real answer.
#[derive(Debug, Clone)]
pub struct WrappedResponse {
    /// Give it to the one party that should unwrap it; it works once and only within `ttl`.
    pub token: Secret,
    pub accessor: String,
    pub ttl: Duration,
    /// The path whose answer is wrapped, e.g. `database/creds/app-readonly`; the receiver checks
    /// it before trusting what it unwraps.
    pub creation_path: String,
}

/// Reads named fields of one answer; errors name the request and the field.
struct Fields<'a> {
    answer: &'a Value,
    request: &'a str,
}

impl<'a> Fields<'a> {
    fn get(&self, path: &[&str]) -> Option<&'a Value> {
        path.iter()
            .try_fold(self.answer, |value, key| value.get(key))
    }

    fn wrong(&self, path: &[&str], expected: &str) -> Error {
        Error::UnexpectedAnswer {
            request: self.request.to_owned(),
            detail: format!("{} is missing or not {expected}", path.join(".")),
        }
    }

    fn string(&self, path: &[&str]) -> Result<String> {
        self.get(path)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| self.wrong(path, "a string"))
    }

    fn seconds(&self, path: &[&str]) -> Result<Duration> {
        self.get(path)
            .and_then(Value::as_u64)
            .map(Duration::from_secs)
            .ok_or_else(|| self.wrong(path, "a whole number of seconds"))
    }

    fn boolean(&self, path: &[&str]) -> Result<bool> {
        self.get(path)
            .and_then(Value::as_bool)
            .ok_or_else(|| self.wrong(path, "true or false"))
    }

    fn object(&self, path: &[&str]) -> Result<&'a Map<String, Value>> {
        self.get(path)
            .and_then(Value::as_object)
            .ok_or_else(|| self.wrong(path, "an object"))
    }

    fn lease(&self) -> Result<Lease> {
        let id = self.string(&["lease_id"])?;
        if id.is_empty() {
            return Err(self.wrong(&["lease_id"], "a lease id"));
        }
        Ok(Lease {
            id,
            duration: self.seconds(&["lease_duration"])?,
            renewable: self.boolean(&["renewable"])?,
        })
    }
}

/// `data` without its username and password.
fn extra_fields(data: &Map<String, Value>) -> Map<String, Value> {
    data.iter()
        .filter(|(key, _)| !matches!(key.as_str(), "username" | "password"))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

pub(crate) fn credential_from(answer: &Value, request: &str) -> Result<Credential> {
    let fields = Fields { answer, request };
    let data = fields.object(&["data"])?;
    Ok(Credential {
        username: fields.string(&["data", "username"])?,
        password: Secret::new(fields.string(&["data", "password"])?),
        lease: fields.lease()?,
        extra: extra_fields(data),
    })
}

pub(crate) fn lease_from_renewal(answer: &Value, request: &str) -> Result<Lease> {
    Fields { answer, request }.lease()
}

pub(crate) fn static_credential_from(answer: &Value, request: &str) -> Result<StaticCredential> {
    let fields = Fields { answer, request };
    let data = fields.object(&["data"])?;
    Ok(StaticCredential {
        username: fields.string(&["data", "username"])?,
        password: Secret::new(fields.string(&["data", "password"])?),
        ttl: fields.seconds(&["data", "ttl"])?,
        extra: extra_fields(data)
            .into_iter()
            .filter(|(key, _)| key != "ttl")
            .collect(),
    })
}

pub(crate) fn wrapped_from(answer: &Value, request: &str) -> Result<WrappedResponse> {
    let fields = Fields { answer, request };
    Ok(WrappedResponse {
        token: Secret::new(fields.string(&["wrap_info", "token"])?),
        accessor: fields.string(&["wrap_info", "accessor"])?,
        ttl: fields.seconds(&["wrap_info", "ttl"])?,
        creation_path: fields.string(&["wrap_info", "creation_path"])?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_credential_keeps_extra_data_and_redacts_its_password() {
        let answer = json!({
            "lease_id": "database/creds/app/abc", "renewable": true, "lease_duration": 3600,
            "data": { "username": "v-app-x", "password": "hunter2-secret", "database": "db_x" }
        });
        let credential = credential_from(&answer, "database/creds/app").unwrap();
        assert_eq!(credential.username, "v-app-x");
        assert_eq!(credential.password.expose(), "hunter2-secret");
        assert_eq!(credential.lease.duration, Duration::from_secs(3600));
        assert_eq!(credential.extra.get("database"), Some(&json!("db_x")));
        assert!(!credential.extra.contains_key("password"));
        assert!(!format!("{credential:?}").contains("hunter2"));
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named_and_its_value_not_quoted() {
        let answer = json!({
            "lease_id": "database/creds/app/abc", "renewable": true, "lease_duration": "hunter2-secret",
            "data": { "username": "v-app-x", "password": "hunter2-secret" }
        });
        let error = credential_from(&answer, "database/creds/app").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("lease_duration"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        let error = credential_from(&json!({"data": {"username": "u"}}), "x").unwrap_err();
        assert!(error.to_string().contains("data.password"), "{error}");
    }
}
