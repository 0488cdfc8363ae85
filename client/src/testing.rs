//! Helpers for integration tests: [`throwaway_database`] hands a test a database of its own, with a
//! user of its own, both gone when the test ends.
//!
//! It relies on a role created with the option `database_per_lease`: each lease of such a role
//! creates a new database owned by the lease's user and answers its name (`data.database`) and a
//! connection URL without the password (`data.connection_url`); revoking the lease drops both.

use lessor_plugin::Secret;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::error::{Error, Result};
use crate::{Client, LeaseGuard};

/// A database made for one test: connect with [`Self::url`]. Dropping it (or
/// [`Self::drop_now`]) revokes the lease, and Lessor drops the database and its user.
#[derive(Debug)]
pub struct ThrowawayDatabase {
    /// The connection URL with the password in it; `Debug` redacts it.
    pub url: Secret,
    /// The database's name.
    pub database: String,
    pub username: String,
    /// The lease behind it, renewed while the test runs.
    pub guard: LeaseGuard,
}

impl ThrowawayDatabase {
    /// Revokes the lease now and waits until Lessor has dropped the database and the user.
    pub async fn drop_now(self) -> Result<()> {
        self.guard.revoke().await
    }
}

/// Asks `role` (a role with `database_per_lease`) for a new database and user; the lease is
/// renewed while the returned value lives and revoked when it is dropped, also when the test
/// panics.
///
/// ```no_run
/// # async fn example() -> Result<(), lessor_client::Error> {
/// let client = lessor_client::Client::from_env()?;
/// let db = lessor_client::testing::throwaway_database(&client, "test-db").await?;
/// // e.g. tokio_postgres::connect(db.url.expose(), NoTls), run migrations, test...
/// println!("testing against {}", db.database);
/// # Ok(())
/// # }
/// ```
pub async fn throwaway_database(client: &Client, role: &str) -> Result<ThrowawayDatabase> {
    let credential = client.creds(role).await?;
    // Guarded before anything else can fail, so that a role without the option leaves nothing.
    let guard = LeaseGuard::new(client, &credential.lease);
    let request = format!("database/creds/{role}");
    let field = |name: &str| {
        credential
            .extra
            .get(name)
            .and_then(|value| value.as_str())
            .filter(|value| !value.is_empty())
            .ok_or_else(|| Error::UnexpectedAnswer {
                request: request.clone(),
                detail: format!(
                    "data.{name} is missing: does role {role} have the option database_per_lease?"
                ),
            })
    };
    let database = field("database")?.to_owned();
    let url = url_with_password(
        field("connection_url")?,
        &credential.username,
        &credential.password,
    )
    .map_err(|detail| Error::UnexpectedAnswer {
        request: request.clone(),
        detail,
    })?;
    Ok(ThrowawayDatabase {
        url,
        database,
        username: credential.username,
        guard,
    })
}

/// What stays as is in a URL's user name or password: RFC 3986's unreserved characters. `url`
/// leaves `%` alone there (it takes it for an escape already made), so a password holding `%41`
/// would reach the driver as `A`: everything else is escaped here first.
const USERINFO_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `connection_url` with the lease's user and password in it, percent-encoded.
fn url_with_password(
    connection_url: &str,
    username: &str,
    password: &Secret,
) -> std::result::Result<Secret, String> {
    // The URL's own parse error is about its syntax, and the URL holds no password yet.
    let mut url = url::Url::parse(connection_url)
        .map_err(|e| format!("data.connection_url is not a URL: {e}"))?;
    if url.cannot_be_a_base() || url.host_str().is_none() {
        return Err("data.connection_url has no host".into());
    }
    if url.username().is_empty() {
        url.set_username(&utf8_percent_encode(username, USERINFO_ESCAPED).to_string())
            .map_err(|_| "data.connection_url cannot take a user name".to_owned())?;
    }
    let escaped = utf8_percent_encode(password.expose(), USERINFO_ESCAPED).to_string();
    url.set_password(Some(&escaped))
        .map_err(|_| "data.connection_url cannot take a password".to_owned())?;
    Ok(Secret::new(String::from(url)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_goes_into_the_url_encoded_and_the_user_when_absent() {
        let password = Secret::new("p@ss:w/rd%41");
        let url = url_with_password(
            "postgres://v-test-x@127.0.0.1:5432/db_x?sslmode=disable",
            "v-test-x",
            &password,
        )
        .unwrap();
        assert_eq!(
            url.expose(),
            "postgres://v-test-x:p%40ss%3Aw%2Frd%2541@127.0.0.1:5432/db_x?sslmode=disable"
        );
        let url = url_with_password("postgresql://127.0.0.1/db_y", "v-u", &password).unwrap();
        assert!(
            url.expose().starts_with("postgresql://v-u:p%40ss"),
            "{url:?}"
        );
        assert!(url_with_password("not a url", "u", &password).is_err());
    }
}
