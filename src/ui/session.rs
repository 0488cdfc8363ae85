//! Console sessions: sign-in with a token (or a JWT login where a role allows it), kept in a
//! cookie.
//!
//! The cookie holds the token sealed (AES-256-GCM) under the store's console key (sealed in the
//! store with the seal key, shared by every replica), with the session's CSRF value and expiry: no session table is needed, a stolen
//! cookie file shows nothing, and the token is never written anywhere in clear. It is
//! `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page sends it),
//! `Secure` when served over TLS, scoped to `/ui`, and expires with the token (at most
//! [`MAX_SESSION`]). Every API call still resolves the token, so a token revoked meanwhile ends
//! the session at its next request.
//!
//! CSRF: every change is a form post carrying the session's CSRF value (synchronizer pattern,
//! the value kept inside the sealed cookie). The sign-in form, which has no session yet, uses a
//! double-submit value: a short-lived cookie and the same value in the form.

use axum::extract::{Extension, Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::Utc;
use lessor_plugin::Secret;
use maud::html;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::pages::{error_page, login_page};
use super::{call_api, Console, OverTls, Ui};
use crate::seal::Sealer;

/// The session cookie.
pub const SESSION_COOKIE: &str = "lessor_session";
/// The sign-in form's double-submit cookie.
const LOGIN_COOKIE: &str = "lessor_login";
/// The sealing context of session cookies: a value sealed for anything else does not open here.
const CONTEXT: &str = "ui/session";
/// Longest a session lasts, for tokens that never expire (the root token).
pub const MAX_SESSION: i64 = 8 * 3600;

/// A signed-in browser.
#[derive(Serialize, Deserialize)]
pub struct Session {
    /// The token, only ever in memory or sealed in the cookie.
    #[serde(rename = "t")]
    token: String,
    /// The CSRF value every change must carry.
    #[serde(rename = "c")]
    csrf: String,
    /// Unix seconds at which the session ends.
    #[serde(rename = "e")]
    expires: i64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("token", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

fn random_value() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Compares without stopping at the first difference, so timing tells nothing of the value.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value with the console's attributes.
fn set_cookie(name: &str, value: &str, path: &str, max_age: i64, secure: bool) -> String {
    format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

impl Session {
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    pub fn expires(&self) -> i64 {
        self.expires
    }

    pub fn csrf_matches(&self, sent: Option<&str>) -> bool {
        sent.is_some_and(|sent| same(sent, &self.csrf))
    }

    /// The live session the request's cookie holds, if any.
    pub fn from_headers(sealer: &Sealer, headers: &HeaderMap) -> Option<Self> {
        let sealed = cookie(headers, SESSION_COOKIE)?;
        let opened = sealer.open(CONTEXT, sealed).ok()?;
        let session: Session = serde_json::from_str(opened.expose()).ok()?;
        (session.expires > Utc::now().timestamp()).then_some(session)
    }

    fn seal(&self, sealer: &Sealer) -> Option<String> {
        let json = serde_json::to_string(self).ok()?;
        sealer.seal(CONTEXT, &Secret::new(json)).ok()
    }
}

/// `GET /ui/login`: the sign-in form, with a fresh double-submit value.
pub async fn login_form(tls: Option<Extension<OverTls>>) -> Response {
    let value = random_value();
    let mut response = Html(login_page(&value, None).into_string()).into_response();
    if let Ok(cookie) = set_cookie(LOGIN_COOKIE, &value, "/ui/login", 600, tls.is_some()).parse() {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Deserialize)]
pub struct LoginForm {
    csrf: Option<String>,
    /// `token` or `jwt`.
    method: Option<String>,
    token: Option<String>,
    role: Option<String>,
    jwt: Option<String>,
}

/// `POST /ui/login`: checks the token with `auth/token/lookup-self` (or logs in with
/// `auth/jwt/login`), then starts the session.
pub async fn login(
    State(ui): State<Ui>,
    tls: Option<Extension<OverTls>>,
    remote: Option<Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let remote = remote.map(|Extension(remote)| remote);
    let expected = cookie(&headers, LOGIN_COOKIE);
    let sent = form.csrf.as_deref();
    if !matches!((expected, sent), (Some(e), Some(s)) if same(e, s)) {
        return error_page(
            StatusCode::FORBIDDEN,
            "Refused: the sign-in form is stale or was not sent by this console",
            "Open the sign-in page again and submit it from there.",
        );
    }
    let retry = |message: String| {
        let mut page = Html(login_page(expected.unwrap_or_default(), Some(&message)).into_string())
            .into_response();
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        page
    };
    let token = match form.method.as_deref().unwrap_or("token") {
        "token" => match form
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            Some(token) => token.to_owned(),
            None => return retry("Token: required.".into()),
        },
        "jwt" => {
            let role = form.role.as_deref().map(str::trim).unwrap_or_default();
            let jwt = form.jwt.as_deref().map(str::trim).unwrap_or_default();
            if role.is_empty() || jwt.is_empty() {
                return retry("Role and JWT: both are required for a JWT sign-in.".into());
            }
            let answer = call_api(
                &ui.api,
                None,
                remote,
                "POST",
                "auth/jwt/login",
                Some(json!({ "role": role, "jwt": jwt })),
            )
            .await;
            match answer.body["auth"]["client_token"].as_str() {
                Some(token) if answer.ok() => token.to_owned(),
                _ => return retry(format!("JWT sign-in refused: {}", answer.error_text())),
            }
        }
        other => return retry(format!("method: {other:?} is not token or jwt.")),
    };
    let answer = call_api(
        &ui.api,
        Some(&token),
        remote,
        "GET",
        "auth/token/lookup-self",
        None,
    )
    .await;
    if !answer.ok() {
        let why = if answer.status == StatusCode::FORBIDDEN {
            "This token is not valid (unknown, expired or revoked), or its policies do not allow auth/token/lookup-self.".to_owned()
        } else {
            answer.error_text()
        };
        return retry(why);
    }
    // The session ends with the token; a token without an end (ttl 0) gets the longest session.
    let ttl = answer.body["data"]["ttl"].as_i64().unwrap_or(0);
    let length = if ttl > 0 {
        ttl.min(MAX_SESSION)
    } else {
        MAX_SESSION
    };
    let session = Session {
        token,
        csrf: random_value(),
        expires: Utc::now().timestamp() + length,
    };
    let Some(sealed) = session.seal(&ui.sealer) else {
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Cannot start a session",
            "Sealing the session failed; try again.",
        );
    };
    let secure = tls.is_some();
    let mut response = Redirect::to("/ui/").into_response();
    let headers = response.headers_mut();
    for cookie in [
        set_cookie(SESSION_COOKIE, &sealed, "/ui", length, secure),
        set_cookie(LOGIN_COOKIE, "", "/ui/login", 0, secure),
    ] {
        if let Ok(value) = cookie.parse() {
            headers.append(header::SET_COOKIE, value);
        }
    }
    response
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// `POST /ui/logout`: forgets the session in this browser (the token itself stays valid: it
/// was the user's before they signed in).
pub async fn logout(
    console: Console,
    tls: Option<Extension<OverTls>>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = console.csrf_refusal(form.csrf.as_deref()) {
        return refused;
    }
    let mut response = Redirect::to("/ui/login").into_response();
    if let Ok(value) = set_cookie(SESSION_COOKIE, "", "/ui", 0, tls.is_some()).parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// The hidden CSRF field of a form.
pub fn csrf_field(session: &Session) -> maud::Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf()); }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_round_trips_sealed_and_never_shows_its_token() {
        let sealer = Sealer::from_encoded_key(&Sealer::generate_encoded_key()).unwrap();
        let session = Session {
            token: "s.secret-token".into(),
            csrf: "abc".into(),
            expires: Utc::now().timestamp() + 60,
        };
        let sealed = session.seal(&sealer).unwrap();
        assert!(!sealed.contains("secret-token"));
        assert!(!format!("{session:?}").contains("secret-token"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            format!("other=1; {SESSION_COOKIE}={sealed}")
                .parse()
                .unwrap(),
        );
        let opened = Session::from_headers(&sealer, &headers).unwrap();
        assert_eq!(opened.token(), "s.secret-token");
        assert!(opened.csrf_matches(Some("abc")));
        assert!(!opened.csrf_matches(Some("abd")));
        assert!(!opened.csrf_matches(None));
        // Another process's key opens nothing.
        let other = Sealer::from_encoded_key(&Sealer::generate_encoded_key()).unwrap();
        assert!(Session::from_headers(&other, &headers).is_none());
    }

    #[tokio::test]
    async fn cookies_are_http_only_strict_and_secure_exactly_over_tls() {
        for (tls, secure) in [(Some(Extension(OverTls)), true), (None, false)] {
            let form = login_form(tls).await;
            let cookie = form.headers()[header::SET_COOKIE].to_str().unwrap();
            assert!(cookie.starts_with("lessor_login="), "{cookie}");
            assert!(cookie.contains("; HttpOnly; SameSite=Strict"), "{cookie}");
            assert_eq!(cookie.ends_with("; Secure"), secure, "{cookie}");
            let session = set_cookie(SESSION_COOKIE, "v1:x", "/ui", 60, secure);
            assert_eq!(
                session,
                format!(
                    "lessor_session=v1:x; Path=/ui; Max-Age=60; HttpOnly; SameSite=Strict{}",
                    if secure { "; Secure" } else { "" }
                )
            );
        }
    }

    #[test]
    fn an_expired_session_is_no_session() {
        let sealer = Sealer::from_encoded_key(&Sealer::generate_encoded_key()).unwrap();
        let session = Session {
            token: "t".into(),
            csrf: "c".into(),
            expires: Utc::now().timestamp() - 1,
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            format!("{SESSION_COOKIE}={}", session.seal(&sealer).unwrap())
                .parse()
                .unwrap(),
        );
        assert!(Session::from_headers(&sealer, &headers).is_none());
    }
}
