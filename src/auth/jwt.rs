//! Workload identity: Vault's JWT auth method as hvac drives it (`auth/jwt/config`,
//! `auth/jwt/role/:name`, `auth/jwt/login`).
//!
//! A workload presents a signed JWT, typically its Kubernetes service-account token, and gets a
//! short-lived Lessor token with its role's policies. The JWT is checked against the configured
//! public keys (PEM) or a JWKS URL, the bound issuer, and the role's audiences, subject and claims;
//! asymmetric algorithms only (RS*, PS*, ES*, EdDSA), `exp` required, and `aud` / `iss` required
//! (not merely checked when present) whenever the role binds audiences or the config an issuer.
//! The JWT itself is never logged or stored: refusals name the reason, not the token; claim values
//! are logged with Debug formatting so a `sub` holding a newline or an escape cannot forge a line.
//!
//! Keys from a JWKS URL are cached ([`JWKS_CACHE`]) and refetched early only for an unknown key id,
//! at most every [`JWKS_REFETCH_MIN`]. A refetch is single-flight: one fetch runs in its own task
//! with a deadline ([`JWKS_FETCH_TIMEOUT`]) and every login that needs it awaits that one shared
//! result; no lock is held while it runs. An endpoint that fails or stalls is answered with
//! [`Error::Unavailable`] (503) naming it, or, when an older key set is cached, with that set.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lessor_plugin::Secret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::policy::{check_policy_name, DEFAULT_POLICY};
use super::tokens::{IssuedToken, NewToken};
use super::Auth;
use crate::catalog::check_name;
use crate::error::{Error, Result};
use crate::store::{IdentityStore, MetaStore, Store};

/// Meta-table key of the method's configuration.
const CONFIG_KEY: &str = "auth_jwt_config";
/// How long a fetched JWKS is trusted before it is fetched again.
const JWKS_CACHE: Duration = Duration::from_secs(300);
/// A key id not in the cached set triggers a refetch at most this often, so a flood of tokens
/// with made-up key ids cannot turn Lessor into a load generator against the JWKS host.
const JWKS_REFETCH_MIN: Duration = Duration::from_secs(5);
/// The longest a JWKS fetch (connect, request and body) may take before logins get a 503.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS body read; real key sets are a few KB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// `auth/jwt/config`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JwtConfig {
    /// PEM public keys any of which may have signed a token.
    pub jwt_validation_pubkeys: Vec<String>,
    /// Where to fetch the signing keys instead (`https://kubernetes.default.svc/openid/v1/jwks`).
    pub jwks_url: String,
    /// The `iss` every token must carry, when set.
    pub bound_issuer: String,
    /// Accepted algorithms; empty accepts every asymmetric one.
    pub jwt_supported_algs: Vec<String>,
    pub default_role: String,
}

/// `auth/jwt/role/:name`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct JwtRole {
    pub role_type: String,
    /// Token `aud` must hold one of these; a token with an `aud` is refused by a role with none
    /// (as Vault does), so a token minted for another service cannot be replayed here.
    pub bound_audiences: Vec<String>,
    pub bound_subject: String,
    /// Claim (or `/json/pointer`) -> accepted values (a string or a list).
    pub bound_claims: Map<String, Value>,
    /// Claim -> metadata key copied onto the token.
    pub claim_mappings: Map<String, Value>,
    /// The claim naming the workload; its value becomes the entity and display name.
    pub user_claim: String,
    pub token_policies: Vec<String>,
    pub token_ttl: u64,
    pub token_max_ttl: u64,
    pub token_explicit_max_ttl: u64,
    pub token_no_default_policy: bool,
    /// Seconds of clock difference tolerated on `exp`, `nbf` and `iat`.
    pub clock_skew_leeway: u64,
}

impl Default for JwtRole {
    fn default() -> Self {
        Self {
            role_type: "jwt".into(),
            bound_audiences: Vec::new(),
            bound_subject: String::new(),
            bound_claims: Map::new(),
            claim_mappings: Map::new(),
            user_claim: "sub".into(),
            token_policies: Vec::new(),
            token_ttl: 0,
            token_max_ttl: 0,
            token_explicit_max_ttl: 0,
            token_no_default_policy: false,
            clock_skew_leeway: 60,
        }
    }
}

impl JwtRole {
    /// Checks a role before it is stored, so a login never meets a broken role.
    pub fn validate(&mut self) -> Result<()> {
        if self.role_type.is_empty() {
            self.role_type = "jwt".into();
        }
        if self.role_type != "jwt" {
            return Err(Error::invalid(
                "role_type: only \"jwt\" is supported (no OIDC browser flow)",
            ));
        }
        if self.user_claim.trim().is_empty() {
            return Err(Error::invalid("user_claim: required"));
        }
        for (claim, accepted) in &self.bound_claims {
            let ok = match accepted {
                Value::String(_) => true,
                Value::Array(items) => items.iter().all(Value::is_string),
                _ => false,
            };
            if !ok {
                return Err(Error::invalid(format!(
                    "bound_claims: {claim}: expected a string or a list of strings"
                )));
            }
        }
        self.token_policies = self
            .token_policies
            .iter()
            .map(|p| check_policy_name(p))
            .collect::<Result<_>>()?;
        if self.token_max_ttl > 0 && self.token_ttl > self.token_max_ttl {
            return Err(Error::invalid("token_ttl: must not exceed token_max_ttl"));
        }
        Ok(())
    }
}

/// A JWKS as last fetched.
#[derive(Debug)]
struct CachedJwks {
    url: String,
    fetched: Instant,
    keys: Arc<JwkSet>,
}

/// The outcome of one JWKS fetch, shared by every login that awaited it.
type FetchResult = std::result::Result<Arc<JwkSet>, String>;
type SharedFetch = Shared<BoxFuture<'static, FetchResult>>;

/// The one fetch in flight.
struct InFlight {
    url: String,
    result: SharedFetch,
}

/// What the logins share about the JWKS: the last key set, the fetch in flight and when the last
/// one started. Guarded by a synchronous mutex that is never held across an `.await`.
#[derive(Default)]
struct JwksState {
    cached: Option<CachedJwks>,
    in_flight: Option<InFlight>,
    /// When the last fetch started or ended, and its URL: refetches for unknown key ids and
    /// retries after a failure wait [`JWKS_REFETCH_MIN`].
    last_attempt: Option<(String, Instant)>,
    /// Why the last fetch failed, answered while a retry would come too soon.
    last_error: Option<String>,
    /// Counts fetches and config changes; a finished fetch records its outcome only if no later
    /// fetch or config change happened meanwhile.
    generation: u64,
}

impl std::fmt::Debug for JwksState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksState")
            .field("cached", &self.cached)
            .field("in_flight", &self.in_flight.as_ref().map(|f| &f.url))
            .finish_non_exhaustive()
    }
}

/// What a login does about keys: use a set it has, or wait for a fetch.
enum KeyPlan {
    Use(Arc<JwkSet>),
    Wait(SharedFetch),
}

/// The JWT auth method.
#[derive(Clone, Debug)]
pub struct JwtAuth {
    store: Store,
    http: reqwest::Client,
    jwks: Arc<Mutex<JwksState>>,
}

/// A URL as error messages show it: without user info or query, which may hold credentials.
fn endpoint(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => "the configured jwks_url".into(),
    }
}

/// Reads `text` as a PEM public key of any supported family.
fn decoding_key_from_pem(text: &str) -> Result<DecodingKey> {
    let bytes = text.trim().as_bytes();
    DecodingKey::from_rsa_pem(bytes)
        .or_else(|_| DecodingKey::from_ec_pem(bytes))
        .or_else(|_| DecodingKey::from_ed_pem(bytes))
        .map_err(|_| {
            Error::invalid("jwt_validation_pubkeys: not a PEM RSA, EC or Ed25519 public key")
        })
}

fn refused(reason: impl Into<String>) -> Error {
    Error::LoginRefused(reason.into())
}

/// A claim by name, or by JSON pointer when it starts with `/` (nested Kubernetes claims such as
/// `/kubernetes.io/namespace`).
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(pointer) = name.strip_prefix('/') {
        // The first segment is a claim name, which may hold dots (`kubernetes.io`).
        match pointer.split_once('/') {
            None => claims.get(pointer),
            Some((first, rest)) => claims.get(first)?.pointer(&format!("/{rest}")),
        }
    } else {
        claims.get(name)
    }
}

fn claim_matches(actual: &Value, accepted: &Value) -> bool {
    let accepted: Vec<&str> = match accepted {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    match actual {
        Value::String(s) => accepted.contains(&s.as_str()),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .any(|s| accepted.contains(&s)),
        Value::Bool(b) => accepted.contains(&b.to_string().as_str()),
        Value::Number(n) => accepted.contains(&n.to_string().as_str()),
        _ => false,
    }
}

fn reason(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "signature invalid".into(),
        ErrorKind::ExpiredSignature => "token expired".into(),
        ErrorKind::ImmatureSignature => "token not yet valid (nbf)".into(),
        ErrorKind::InvalidAudience => "audience not allowed".into(),
        ErrorKind::InvalidIssuer => "issuer not allowed".into(),
        // The names come from our own required list (exp, aud, iss), never from the token.
        ErrorKind::MissingRequiredClaim(claim) => {
            format!("the required claim {claim:?} is missing")
        }
        ErrorKind::InvalidAlgorithm => "no configured key fits the token's algorithm".into(),
        _ => "malformed token".into(),
    }
}

impl JwtAuth {
    pub fn new(store: Store) -> Self {
        let http = reqwest::Client::builder()
            .timeout(JWKS_FETCH_TIMEOUT)
            .connect_timeout(JWKS_FETCH_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            store,
            http,
            jwks: Arc::default(),
        }
    }

    pub async fn config(&self) -> Result<Option<JwtConfig>> {
        self.store.meta_get_json(CONFIG_KEY).await
    }

    pub async fn write_config(&self, config: JwtConfig) -> Result<()> {
        if config.jwt_validation_pubkeys.is_empty() == config.jwks_url.is_empty() {
            return Err(Error::invalid(
                "exactly one of jwt_validation_pubkeys and jwks_url must be set",
            ));
        }
        for pem in &config.jwt_validation_pubkeys {
            decoding_key_from_pem(pem)?;
        }
        if !config.jwks_url.is_empty() {
            let url = url::Url::parse(&config.jwks_url)
                .map_err(|e| Error::invalid(format!("jwks_url: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(Error::invalid("jwks_url: must be an http or https URL"));
            }
        }
        for alg in &config.jwt_supported_algs {
            alg.parse::<Algorithm>().map_err(|_| {
                Error::invalid(format!("jwt_supported_algs: unknown algorithm {alg:?}"))
            })?;
        }
        self.store.meta_set_json(CONFIG_KEY, &config).await?;
        // A fetch still in flight for the old URL finishes on its own; its result is dropped
        // because its generation is no longer current.
        let mut state = self.jwks_state();
        *state = JwksState {
            generation: state.generation + 1,
            ..JwksState::default()
        };
        Ok(())
    }

    pub async fn write_role(&self, name: &str, mut role: JwtRole) -> Result<()> {
        check_name("role name", name)?;
        role.validate()?;
        self.store
            .upsert_jwt_role(name, &role, chrono::Utc::now())
            .await
    }

    pub async fn role(&self, name: &str) -> Result<JwtRole> {
        check_name("role name", name)?;
        self.store
            .get_jwt_role(name)
            .await?
            .ok_or_else(|| Error::not_found("role", name))
    }

    pub async fn list_roles(&self) -> Result<Vec<String>> {
        self.store.list_jwt_roles().await
    }

    pub async fn delete_role(&self, name: &str) -> Result<()> {
        check_name("role name", name)?;
        self.store.delete_jwt_role(name).await?;
        Ok(())
    }

    fn jwks_state(&self) -> std::sync::MutexGuard<'_, JwksState> {
        // A panic while holding this lock leaves a cache, not an invariant, behind.
        self.jwks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The keys a token with key id `kid` may have been signed with.
    async fn candidate_keys(
        &self,
        config: &JwtConfig,
        kid: Option<&str>,
    ) -> Result<Vec<DecodingKey>> {
        if !config.jwt_validation_pubkeys.is_empty() {
            return config
                .jwt_validation_pubkeys
                .iter()
                .map(|p| decoding_key_from_pem(p))
                .collect();
        }
        let keys = match self.plan_keys(&config.jwks_url, kid)? {
            KeyPlan::Use(keys) => keys,
            KeyPlan::Wait(fetch) => match fetch.await {
                Ok(keys) => keys,
                Err(message) => self
                    .stale_keys(&config.jwks_url)
                    .ok_or(Error::Unavailable(message))?,
            },
        };
        let jwks: Vec<_> = match kid {
            Some(kid) => keys.find(kid).into_iter().collect(),
            None => keys.keys.iter().collect(),
        };
        Ok(jwks
            .into_iter()
            .filter_map(|jwk| DecodingKey::from_jwk(jwk).ok())
            .collect())
    }

    /// Decides, under the lock and without waiting, whether the cached set serves this login or
    /// it must wait for a fetch, joining the one in flight or starting one.
    fn plan_keys(&self, url: &str, kid: Option<&str>) -> Result<KeyPlan> {
        let mut state = self.jwks_state();
        let cached = state.cached.as_ref().filter(|c| c.url == url);
        let fresh = cached.is_some_and(|c| c.fetched.elapsed() < JWKS_CACHE);
        let knows_kid = match (cached, kid) {
            (Some(c), Some(kid)) => c.keys.find(kid).is_some(),
            _ => true,
        };
        if let Some(cached) = cached.filter(|_| fresh && knows_kid) {
            return Ok(KeyPlan::Use(cached.keys.clone()));
        }
        if let Some(in_flight) = state.in_flight.as_ref().filter(|f| f.url == url) {
            return Ok(KeyPlan::Wait(in_flight.result.clone()));
        }
        let recent = state
            .last_attempt
            .as_ref()
            .is_some_and(|(u, at)| u == url && at.elapsed() < JWKS_REFETCH_MIN);
        if recent {
            // Too soon to ask the endpoint again: serve what we have, or the last failure.
            return match state.cached.as_ref().filter(|c| c.url == url) {
                Some(cached) => Ok(KeyPlan::Use(cached.keys.clone())),
                None => Err(Error::Unavailable(state.last_error.clone().unwrap_or_else(
                    || format!("the JWKS endpoint {} is not answering", endpoint(url)),
                ))),
            };
        }
        state.generation += 1;
        let generation = state.generation;
        state.last_attempt = Some((url.to_owned(), Instant::now()));
        // The fetch runs in its own task, so a login whose client disconnects does not cancel it
        // for the others; the task records its outcome before the waiters see it.
        let task = tokio::spawn({
            let this = self.clone();
            let url = url.to_owned();
            async move {
                let outcome = this.fetch_jwks(&url).await;
                this.record_fetch(&url, generation, &outcome);
                outcome
            }
        });
        let result: SharedFetch = async move {
            task.await
                .unwrap_or_else(|e| Err(format!("the JWKS fetch task failed: {e}")))
        }
        .boxed()
        .shared();
        state.in_flight = Some(InFlight {
            url: url.to_owned(),
            result: result.clone(),
        });
        Ok(KeyPlan::Wait(result))
    }

    /// Stores a finished fetch's outcome, unless the configuration changed meanwhile.
    fn record_fetch(&self, url: &str, generation: u64, outcome: &FetchResult) {
        let mut state = self.jwks_state();
        if state.generation != generation {
            return;
        }
        state.in_flight = None;
        // The wait before the next attempt counts from the end of this one, so a stalled endpoint
        // is asked at most once per timeout + JWKS_REFETCH_MIN, whatever the login rate.
        state.last_attempt = Some((url.to_owned(), Instant::now()));
        match outcome {
            Ok(keys) => {
                state.cached = Some(CachedJwks {
                    url: url.to_owned(),
                    fetched: Instant::now(),
                    keys: keys.clone(),
                });
                state.last_error = None;
            }
            Err(message) => {
                tracing::warn!(error = ?message, "fetching the JWKS failed");
                state.last_error = Some(message.clone());
            }
        }
    }

    /// A key set fetched earlier from `url`, served when a refresh fails: better an hour-old key
    /// set than no login at all while the endpoint is down.
    fn stale_keys(&self, url: &str) -> Option<Arc<JwkSet>> {
        let state = self.jwks_state();
        state
            .cached
            .as_ref()
            .filter(|c| c.url == url)
            .map(|c| c.keys.clone())
    }

    /// One fetch of the key set; the error names the endpoint (without credentials) and why.
    async fn fetch_jwks(&self, url: &str) -> FetchResult {
        let shown = endpoint(url);
        let failed = |e: reqwest::Error| {
            let why = if e.is_timeout() {
                format!("no answer within {} s", JWKS_FETCH_TIMEOUT.as_secs())
            } else if e.is_connect() {
                "cannot connect".to_owned()
            } else if let Some(status) = e.status() {
                format!("it answered {status}")
            } else {
                "the request failed".to_owned()
            };
            format!("the JWKS endpoint {shown} is unavailable: {why}")
        };
        let fetch = async {
            let mut response = self
                .http
                .get(url)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(failed)?;
            // Read in chunks so an endless body stops at the size limit, not at memory's end.
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(failed)? {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_JWKS_BYTES {
                    return Err(format!(
                        "the JWKS endpoint {shown} answered more than {MAX_JWKS_BYTES} bytes"
                    ));
                }
            }
            serde_json::from_slice::<JwkSet>(&body)
                .map_err(|_| format!("the JWKS endpoint {shown} did not answer a key set"))
        };
        // The client's own timeout covers the request; this bounds the whole exchange as well.
        match tokio::time::timeout(JWKS_FETCH_TIMEOUT, fetch).await {
            Ok(result) => result.map(Arc::new),
            Err(_) => Err(format!(
                "the JWKS endpoint {shown} is unavailable: no answer within {} s",
                JWKS_FETCH_TIMEOUT.as_secs()
            )),
        }
    }

    /// Checks `jwt` against `role_name` and the method's configuration and returns the claims.
    pub async fn verify(
        &self,
        role_name: &str,
        jwt: &Secret,
    ) -> Result<(JwtRole, Map<String, Value>)> {
        let role = match self.role(role_name).await {
            Err(Error::NotFound { .. }) => {
                return Err(Error::invalid(format!(
                    "role {role_name:?} could not be found"
                )))
            }
            other => other?,
        };
        let config = self.config().await?.ok_or_else(|| {
            Error::invalid("the JWT auth method is not configured (auth/jwt/config)")
        })?;
        let header =
            jsonwebtoken::decode_header(jwt.expose()).map_err(|_| refused("malformed token"))?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(refused("symmetric (HS*) algorithms are not accepted"));
        }
        if !config.jwt_supported_algs.is_empty()
            && !config
                .jwt_supported_algs
                .iter()
                .any(|a| a.parse::<Algorithm>().ok() == Some(header.alg))
        {
            return Err(refused("algorithm not allowed"));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = role.clock_skew_leeway;
        validation.validate_nbf = true;
        // jsonwebtoken checks `aud` and `iss` only when the token has them; a bound value makes
        // the claim required, or a token minted without it would pass every binding.
        let mut required = vec!["exp"];
        if role.bound_audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&role.bound_audiences);
            required.push("aud");
        }
        if !config.bound_issuer.is_empty() {
            validation.set_issuer(&[config.bound_issuer.as_str()]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let keys = self.candidate_keys(&config, header.kid.as_deref()).await?;
        if keys.is_empty() {
            return Err(refused("no configured key matches the token's key id"));
        }
        let mut last = ErrorKind::InvalidAlgorithm;
        let mut claims = None;
        for key in &keys {
            match jsonwebtoken::decode::<Map<String, Value>>(jwt.expose(), key, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                // A key of another family says nothing about this token; keep any more telling error.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat
                    ) => {}
                Err(e) => {
                    last = e.kind().clone();
                    if !matches!(last, ErrorKind::InvalidSignature) {
                        // The signature checked out with this key; the claims are what failed.
                        break;
                    }
                }
            }
        }
        let claims = claims.ok_or_else(|| refused(reason(&last)))?;
        // Checked here too, so the bindings hold whatever the library's notion of "present" is
        // (`"aud": null`, an empty list).
        let present = |name: &str| match claims.get(name) {
            None | Some(Value::Null) => false,
            Some(Value::Array(items)) => !items.is_empty(),
            Some(Value::String(s)) => !s.is_empty(),
            Some(_) => true,
        };
        if !role.bound_audiences.is_empty() && !present("aud") {
            return Err(refused("the required claim \"aud\" is missing"));
        }
        if !config.bound_issuer.is_empty() && !present("iss") {
            return Err(refused("the required claim \"iss\" is missing"));
        }
        if role.bound_audiences.is_empty() && claims.get("aud").is_some_and(|a| !a.is_null()) {
            return Err(refused(
                "audience claim found in the JWT but the role binds no audiences",
            ));
        }
        if !role.bound_subject.is_empty() {
            match claims.get("sub").and_then(Value::as_str) {
                None => return Err(refused("the required claim \"sub\" is missing")),
                Some(sub) if sub != role.bound_subject => {
                    return Err(refused("subject not allowed"))
                }
                Some(_) => {}
            }
        }
        for (name, accepted) in &role.bound_claims {
            match claim(&claims, name) {
                None | Some(Value::Null) => {
                    return Err(refused(format!(
                        "the claim {name:?} bound by the role is missing"
                    )))
                }
                Some(actual) if !claim_matches(actual, accepted) => {
                    return Err(refused(format!(
                        "claim {name:?} does not match the role's bound_claims"
                    )))
                }
                Some(_) => {}
            }
        }
        Ok((role, claims))
    }

    /// `auth/jwt/login`: verifies the JWT and issues a token for the workload it names.
    #[tracing::instrument(skip_all, fields(role = ?role_name), err(Debug, level = "info"))]
    pub async fn login(&self, auth: &Auth, role_name: &str, jwt: &Secret) -> Result<IssuedToken> {
        let (role, claims) = self.verify(role_name, jwt).await?;
        let user = match claim(&claims, &role.user_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(refused(format!(
                    "the user claim {:?} is missing or not a string",
                    role.user_claim
                )))
            }
        };
        let mut meta = Map::new();
        meta.insert("role".into(), Value::String(role_name.to_owned()));
        for (name, key) in &role.claim_mappings {
            if let (Some(value), Some(key)) = (claim(&claims, name), key.as_str()) {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                meta.insert(key.to_owned(), Value::String(text));
            }
        }
        let mut policies = role.token_policies.clone();
        if !role.token_no_default_policy && !policies.iter().any(|p| p == DEFAULT_POLICY) {
            policies.push(DEFAULT_POLICY.to_owned());
        }
        policies.sort();
        policies.dedup();
        let explicit_max = match (role.token_explicit_max_ttl, role.token_max_ttl) {
            (0, max) | (max, 0) => max,
            (a, b) => a.min(b),
        };
        let ttl = if role.token_ttl > 0 {
            Duration::from_secs(role.token_ttl)
        } else {
            auth.limits.default_ttl
        };
        let display_name: String = format!("jwt-{user}").chars().take(96).collect();
        // Both come from the caller: Debug formatting escapes newlines and control characters.
        tracing::info!(role = ?role_name, user = ?user, "JWT login accepted");
        auth.issue_token(NewToken {
            display_name,
            policies,
            ttl,
            explicit_max_ttl: Duration::from_secs(explicit_max),
            renewable: true,
            entity_id: Some(format!("jwt:{user}")),
            path: format!("auth/jwt/login/{role_name}"),
            meta,
            parent_accessor: None,
            not_after: None,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_match_strings_lists_and_pointers() {
        let claims = json!({
            "sub": "system:serviceaccount:apps:billing",
            "groups": ["a", "b"],
            "kubernetes.io": { "namespace": "apps", "serviceaccount": { "name": "billing" } }
        });
        let claims = claims.as_object().unwrap();
        assert!(claim_matches(
            claim(claims, "groups").unwrap(),
            &json!(["b", "c"])
        ));
        assert!(!claim_matches(
            claim(claims, "groups").unwrap(),
            &json!("c")
        ));
        assert_eq!(
            claim(claims, "/kubernetes.io/namespace"),
            Some(&json!("apps"))
        );
        assert_eq!(
            claim(claims, "/kubernetes.io/serviceaccount/name"),
            Some(&json!("billing"))
        );
        assert!(claim(claims, "/kubernetes.io/nope").is_none());
    }

    #[test]
    fn roles_are_checked_when_written() {
        let mut role = JwtRole {
            role_type: "oidc".into(),
            ..JwtRole::default()
        };
        assert!(role
            .validate()
            .unwrap_err()
            .to_string()
            .contains("role_type"));
        let mut role = JwtRole::default();
        role.bound_claims.insert("ns".into(), json!({"x": 1}));
        assert!(role
            .validate()
            .unwrap_err()
            .to_string()
            .contains("bound_claims"));
        let mut role = JwtRole {
            token_policies: vec!["Bad Name".into()],
            ..JwtRole::default()
        };
        assert!(role.validate().is_err());
    }
}
