//! [`Client`]: one Lessor server, one token, and the calls a workload or a test makes on its
//! Vault-compatible API (credentials, lease renewal and revocation, static credentials,
//! response unwrapping).
//!
//! Every call builds its path from names checked here against the alphabet Lessor accepts, so a
//! name cannot reach another path (`..`, `/`, `?`); Lessor checks them again and answers a 400
//! naming the problem for anything else.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lessor_plugin::Secret;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Method;
use serde_json::{json, Value};

use crate::credential::{
    credential_from, lease_from_renewal, static_credential_from, wrapped_from,
};
use crate::error::{Error, Result};
use crate::{Credential, Lease, StaticCredential, WrappedResponse};

/// The header Lessor (like Vault) reads the token from.
const TOKEN_HEADER: &str = "x-vault-token";
/// The header that asks for an answer wrapped under a single-use token.
const WRAP_TTL_HEADER: &str = "x-vault-wrap-ttl";
/// How long one request may take, unless [`ClientBuilder::timeout`] says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Where `lessor dev` and `lessor server` listen by default.
const DEFAULT_ADDR: &str = "http://127.0.0.1:8200";

/// A client of one Lessor server, acting with one token. Cheap to clone: clones share one
/// connection pool.
///
/// ```no_run
/// # async fn example() -> Result<(), lessor_client::Error> {
/// use lessor_client::Client;
///
/// let client = Client::new("http://127.0.0.1:8200", "my-token")?;
/// let credential = client.creds("app-readonly").await?;
/// println!("log in as {} (lease {})", credential.username, credential.lease.id);
/// client.revoke(&credential.lease.id).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    settings: Settings,
}

/// What a client is made of, kept so that [`Client::with_own_connections`] can make another.
#[derive(Clone)]
struct Settings {
    /// The server's address without a trailing `/`: `https://lessor.internal:8200`.
    base: String,
    token: Secret,
    /// The certificates of [`ClientBuilder::ca_certificate_pem`], already checked.
    ca_certificates: Vec<reqwest::Certificate>,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.inner.settings.base)
            .field("token", &self.inner.settings.token)
            .finish()
    }
}

/// Builds a [`Client`] with a CA certificate or a timeout; [`Client::new`] is the short way.
///
/// ```no_run
/// # fn example() -> Result<(), lessor_client::Error> {
/// let client = lessor_client::Client::builder("https://lessor.internal:8200", "my-token")
///     .ca_certificate_file("/etc/lessor/ca.pem")?
///     .timeout(std::time::Duration::from_secs(5))
///     .build()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ClientBuilder {
    addr: String,
    token: Secret,
    ca_pem: Vec<u8>,
    timeout: Duration,
}

impl ClientBuilder {
    /// Trusts the CA certificates in `pem` (one or more PEM blocks) for an `https://` address,
    /// instead of the built-in public roots: Lessor's listener usually has a private CA.
    pub fn ca_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.ca_pem.extend_from_slice(pem.as_ref());
        self.ca_pem.push(b'\n');
        self
    }

    /// As [`Self::ca_certificate_pem`], read from a file.
    pub fn ca_certificate_file(self, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|e| {
            Error::invalid(
                "ca_certificate",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        Ok(self.ca_certificate_pem(pem))
    }

    /// How long one request may take before it fails as [`Error::Transport`] (30 s unless set).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn build(self) -> Result<Client> {
        let base = check_addr(&self.addr)?;
        if self.token.is_empty() {
            return Err(Error::invalid("token", "required"));
        }
        // Checked now rather than on the first request, and without quoting it.
        HeaderValue::from_str(self.token.expose())
            .map_err(|_| Error::invalid("token", "holds characters a header cannot carry"))?;
        let ca_certificates = if self.ca_pem.is_empty() {
            Vec::new()
        } else {
            let certificates = reqwest::Certificate::from_pem_bundle(&self.ca_pem)
                .map_err(|e| Error::invalid("ca_certificate", format!("not PEM: {e}")))?;
            if certificates.is_empty() {
                return Err(Error::invalid("ca_certificate", "holds no PEM certificate"));
            }
            certificates
        };
        let settings = Settings {
            base,
            token: self.token,
            ca_certificates,
            timeout: self.timeout,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http: http_client(&settings)?,
                settings,
            }),
        })
    }
}

/// The address as the base of every request path; the field is named in every refusal.
fn check_addr(addr: &str) -> Result<String> {
    let url = url::Url::parse(addr).map_err(|e| Error::invalid("addr", e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::invalid(
            "addr",
            format!("expected http:// or https://, not {}://", url.scheme()),
        ));
    }
    if url.host_str().is_none() {
        return Err(Error::invalid("addr", "no host"));
    }
    // Credentials in the address would travel in every error message that quotes a URL.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::invalid(
            "addr",
            "must not carry a user name or password; the token goes in its own argument",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::invalid(
            "addr",
            "must not carry a query or a fragment",
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn http_client(settings: &Settings) -> Result<reqwest::Client> {
    let mut token = HeaderValue::from_str(settings.token.expose())
        .map_err(|_| Error::invalid("token", "holds characters a header cannot carry"))?;
    // Keeps it out of the HTTP stack's own debug output.
    token.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(TOKEN_HEADER, token);
    let mut builder = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(settings.timeout);
    if !settings.ca_certificates.is_empty() {
        builder = builder.tls_built_in_root_certs(false);
        for certificate in &settings.ca_certificates {
            builder = builder.add_root_certificate(certificate.clone());
        }
    }
    builder
        .build()
        .map_err(|e| Error::invalid("ca_certificate", format!("cannot set up TLS: {e}")))
}

/// Checks a role or static role name against the alphabet Lessor accepts, so that it is one
/// path segment and nothing else.
fn check_name(field: &'static str, name: &str) -> Result<()> {
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let all_allowed = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if starts_well && all_allowed {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "use letters, digits, '_', '-' or '.', starting with a letter or digit",
        ))
    }
}

impl Client {
    /// A client of the Lessor at `addr` (`http://` or `https://`) acting with `token`. For a
    /// private CA or a timeout, use [`Client::builder`].
    pub fn new(addr: impl Into<String>, token: impl Into<Secret>) -> Result<Self> {
        Self::builder(addr, token).build()
    }

    pub fn builder(addr: impl Into<String>, token: impl Into<Secret>) -> ClientBuilder {
        ClientBuilder {
            addr: addr.into(),
            token: token.into(),
            ca_pem: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A client configured the way the `lessor` and `vault` command lines are: the address from
    /// `LESSOR_ADDR`, else `VAULT_ADDR`, else `http://127.0.0.1:8200`; the token from
    /// `LESSOR_TOKEN`, else `VAULT_TOKEN` (required); a CA file from `LESSOR_CACERT`, else
    /// `VAULT_CACERT`. `lessor dev` prints the values to export.
    ///
    /// ```no_run
    /// # fn example() -> Result<(), lessor_client::Error> {
    /// let client = lessor_client::Client::from_env()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_env() -> Result<Self> {
        let addr = first_env(&["LESSOR_ADDR", "VAULT_ADDR"]).unwrap_or_else(|| DEFAULT_ADDR.into());
        let token = first_env(&["LESSOR_TOKEN", "VAULT_TOKEN"])
            .ok_or_else(|| Error::invalid("LESSOR_TOKEN", "neither it nor VAULT_TOKEN is set"))?;
        let mut builder = Self::builder(addr, token);
        if let Some(ca_file) = first_env(&["LESSOR_CACERT", "VAULT_CACERT"]) {
            builder = builder.ca_certificate_file(ca_file)?;
        }
        builder.build()
    }

    /// The server's address, as requests use it (no trailing `/`).
    pub fn addr(&self) -> &str {
        &self.inner.settings.base
    }

    /// A client with the same settings and a connection pool of its own. Connections belong to
    /// the tokio runtime that opened them; a client used from another runtime (as a
    /// [`LeaseGuard`](crate::LeaseGuard) does when it revokes on drop) needs connections of its own.
    pub fn with_own_connections(&self) -> Result<Self> {
        let settings = self.inner.settings.clone();
        Ok(Self {
            inner: Arc::new(Inner {
                http: http_client(&settings)?,
                settings,
            }),
        })
    }

    /// `GET /v1/database/creds/<role>`: a new database user of `role`, with its lease. The
    /// password is given once; Lessor does not keep it.
    pub async fn creds(&self, role: &str) -> Result<Credential> {
        check_name("role", role)?;
        let path = format!("database/creds/{role}");
        let answer = self.request(Method::GET, &path, None, None).await?;
        credential_from(&required(answer, &path)?, &path)
    }

    /// As [`Self::creds`], with the answer wrapped (`X-Vault-Wrap-TTL`): Lessor keeps it under
    /// a single-use wrapping token that lives `ttl`, and answers only that token. Whoever gets
    /// the token calls [`Self::unwrap_creds`] once. The user exists from now on; its lease
    /// starts now, not at unwrapping.
    ///
    /// ```no_run
    /// # async fn example(client: lessor_client::Client) -> Result<(), lessor_client::Error> {
    /// let wrapped = client.creds_wrapped("app-readonly", std::time::Duration::from_secs(60)).await?;
    /// // ... hand `wrapped.token` to the workload, which unwraps it exactly once:
    /// let credential = client.unwrap_creds(&wrapped.token).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn creds_wrapped(&self, role: &str, ttl: Duration) -> Result<WrappedResponse> {
        check_name("role", role)?;
        if ttl.as_secs() == 0 {
            return Err(Error::invalid("ttl", "must be at least 1 second"));
        }
        let path = format!("database/creds/{role}");
        let answer = self.request(Method::GET, &path, None, Some(ttl)).await?;
        wrapped_from(&required(answer, &path)?, &path)
    }

    /// `PUT /v1/sys/wrapping/unwrap`: the credential a wrapping token holds (from
    /// [`Self::creds_wrapped`], or from any Vault-compatible caller that asked for
    /// `database/creds/<role>` wrapped). A wrapping token works once.
    pub async fn unwrap_creds(&self, wrapping_token: &Secret) -> Result<Credential> {
        if wrapping_token.is_empty() {
            return Err(Error::invalid("wrapping_token", "required"));
        }
        let path = "sys/wrapping/unwrap";
        let body = json!({ "token": wrapping_token.expose() });
        let answer = self.request(Method::PUT, path, Some(body), None).await?;
        credential_from(&required(answer, path)?, path)
    }

    /// `PUT /v1/sys/leases/renew`: extends the lease by `increment` (the role's default TTL when
    /// `None`), never past the role's max TTL. The answer's [`Lease::duration`] is what was
    /// granted: shorter than asked once the max TTL caps it.
    pub async fn renew(&self, lease_id: &str, increment: Option<Duration>) -> Result<Lease> {
        if lease_id.is_empty() {
            return Err(Error::invalid("lease_id", "required"));
        }
        let path = "sys/leases/renew";
        let mut body = json!({ "lease_id": lease_id });
        if let Some(increment) = increment {
            body["increment"] = json!(increment.as_secs());
        }
        let answer = self.request(Method::PUT, path, Some(body), None).await?;
        lease_from_renewal(&required(answer, path)?, path)
    }

    /// `PUT /v1/sys/leases/revoke`: ends the lease now; Lessor drops its database user before
    /// answering. Revoking a lease that is already revoked succeeds.
    pub async fn revoke(&self, lease_id: &str) -> Result<()> {
        if lease_id.is_empty() {
            return Err(Error::invalid("lease_id", "required"));
        }
        let body = json!({ "lease_id": lease_id });
        self.request(Method::PUT, "sys/leases/revoke", Some(body), None)
            .await?;
        Ok(())
    }

    /// `GET /v1/database/static-creds/<name>`: the static role's user and current password.
    pub async fn static_creds(&self, name: &str) -> Result<StaticCredential> {
        check_name("static_role", name)?;
        let path = format!("database/static-creds/{name}");
        let answer = self.request(Method::GET, &path, None, None).await?;
        static_credential_from(&required(answer, &path)?, &path)
    }

    /// Sends one request to `/v1/<path>`; `Ok(None)` is a success with an empty body (204).
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        wrap_ttl: Option<Duration>,
    ) -> Result<Option<Value>> {
        let url = format!("{}/v1/{path}", self.inner.settings.base);
        let mut request = self.inner.http.request(method, url);
        if let Some(ttl) = wrap_ttl {
            request = request.header(WRAP_TTL_HEADER, format!("{}s", ttl.as_secs()));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(Error::Transport)?;
        let status = response.status();
        let text = response.text().await.map_err(Error::Transport)?;
        if !status.is_success() {
            return Err(Error::Api {
                status: status.as_u16(),
                errors: lessor_errors(&text),
            });
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        // serde_json's syntax errors give a position, never the text they met.
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::UnexpectedAnswer {
                request: path.to_owned(),
                detail: format!("not JSON ({e})"),
            })
    }
}

/// The `errors` list of an error answer; empty when the body is not Lessor's JSON (a proxy's
/// HTML page says nothing the status does not).
fn lessor_errors(body: &str) -> Vec<String> {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|value| {
            value.get("errors")?.as_array().map(|errors| {
                errors
                    .iter()
                    .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

fn required(answer: Option<Value>, request: &str) -> Result<Value> {
    answer.ok_or_else(|| Error::UnexpectedAnswer {
        request: request.to_owned(),
        detail: "an empty answer".into(),
    })
}

fn first_env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_with_credentials_or_an_odd_scheme_is_refused_by_field() {
        for addr in [
            "ftp://lessor:8200",
            "http://user:pw@lessor:8200",
            "http://lessor:8200/?x=1",
            "lessor:8200",
            "not a url",
        ] {
            let error = check_addr(addr).unwrap_err();
            assert!(
                matches!(error, Error::InvalidInput { field: "addr", .. }),
                "{addr}: {error}"
            );
            assert!(!error.to_string().contains("pw@"), "{error}");
        }
        assert_eq!(
            check_addr("https://lessor.internal:8200/").unwrap(),
            "https://lessor.internal:8200"
        );
    }

    #[test]
    fn a_name_that_would_leave_its_path_segment_is_refused() {
        for name in ["", "..", "a/b", "a?b", "a%2Fb", ".hidden", "a b", "a#b"] {
            assert!(check_name("role", name).is_err(), "{name:?}");
        }
        for name in ["app", "app-ro", "app_ro.v2", "9lives"] {
            check_name("role", name).unwrap();
        }
    }

    #[test]
    fn the_token_is_redacted_in_debug_and_a_bad_one_is_not_quoted() {
        let client = Client::new("http://127.0.0.1:1", "s.very-secret-token").unwrap();
        assert!(!format!("{client:?}").contains("very-secret"));
        let error = Client::new("http://127.0.0.1:1", "secret\nvalue").unwrap_err();
        assert!(matches!(error, Error::InvalidInput { field: "token", .. }));
        assert!(!error.to_string().contains("secret"), "{error}");
    }

    #[test]
    fn an_error_body_gives_its_errors_list_and_anything_else_none() {
        assert_eq!(
            lessor_errors(r#"{"errors":["permission denied"]}"#),
            vec!["permission denied"]
        );
        assert!(lessor_errors(r#"{"errors":[]}"#).is_empty());
        assert!(lessor_errors("<html>bad gateway</html>").is_empty());
    }

    #[test]
    fn a_ca_certificate_that_is_not_pem_is_refused_by_field() {
        let error = Client::builder("https://127.0.0.1:1", "token")
            .ca_certificate_pem("not a certificate")
            .build()
            .unwrap_err();
        assert!(
            matches!(
                error,
                Error::InvalidInput {
                    field: "ca_certificate",
                    ..
                }
            ),
            "{error}"
        );
    }
}
