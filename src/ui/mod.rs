//! The web console at `/ui/`: server-rendered HTML (maud) and one small script, embedded in the
//! binary, for the operators and DBAs who would otherwise answer "who holds credentials to this
//! database?" and "when does this password rotate next?" with curl.
//!
//! The console has no authority of its own. Every page and action is made of calls to the HTTP
//! API, dispatched in-process through the very service `/v1/` is served by (canonicalization,
//! route table, policy gate, audit, anomaly rules, handler): [`Console::call`] builds the request
//! a client would send, with the signed-in token, and reads the answer. So a token sees and does
//! in the console exactly what its policies allow on the API, the audit log records each console
//! action as the API call it is, and there is no second copy of any decision to drift.
//!
//! - [`session`]: sign-in with a token; the session cookie holds the token sealed under a key of
//!   this process (AES-256-GCM, [`crate::seal`]), with the CSRF value and the expiry.
//! - [`pages`]: the views and actions.
//! - [`schedule`]: cron schedules in words and their next times, for the static-role form's
//!   live preview.
//!
//! Every answer carries a strict Content-Security-Policy (scripts and styles from `'self'`
//! only, no inline script), `X-Frame-Options: DENY` and `Cache-Control: no-store`.

mod pages;
pub mod schedule;
pub mod session;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

use crate::seal::Sealer;
use session::Session;

/// The policy every console answer carries: nothing from another host, no inline script or
/// style, no framing, forms post only back here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// Set by the TLS listener on every request it serves, so the console marks its cookies
/// `Secure` exactly when the browser reached it over HTTPS.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// What the console's handlers share.
#[derive(Clone)]
pub struct Ui {
    /// The API service (`/v1/...`, behind its canonicalization and gate) the console calls.
    api: Router,
    /// Seals session cookies, under the store's console key (itself sealed with the seal key in
    /// the store), so a session made on one replica works on every other and across restarts.
    sealer: Sealer,
}

/// The console's routes (all under `/ui`), merged in front of the API by [`crate::app`]; `api`
/// is the service that answers `/v1/`.
pub fn router(api: Router, sealer: Sealer) -> Router {
    let ui = Ui { api, sealer };
    Router::new()
        .route("/ui", get(to_overview))
        .route("/ui/", get(pages::overview))
        .route("/ui/login", get(session::login_form).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/assets/console.css", get(css))
        .route("/ui/assets/console.js", get(js))
        .route("/ui/leases", get(pages::leases))
        .route("/ui/leases/revoke", post(pages::revoke_lease))
        .route("/ui/roles", get(pages::roles))
        .route(
            "/ui/roles/{name}/revoke",
            get(pages::confirm_revoke_role).post(pages::revoke_role),
        )
        .route("/ui/static-roles", get(pages::static_roles))
        .route(
            "/ui/static-roles/new",
            get(pages::static_role_form).post(pages::write_static_role),
        )
        .route("/ui/static-roles/{name}", get(pages::static_role))
        .route(
            "/ui/static-roles/{name}/edit",
            get(pages::static_role_form_edit),
        )
        .route(
            "/ui/static-roles/{name}/rotate",
            post(pages::rotate_static_role),
        )
        .route("/ui/schedule-preview", get(pages::schedule_preview))
        .route("/ui/connections", get(pages::connections))
        .route(
            "/ui/connections/{name}/reset",
            post(pages::reset_connection),
        )
        .route(
            "/ui/connections/{name}/revoke",
            get(pages::confirm_revoke_connection).post(pages::revoke_connection),
        )
        .route(
            "/ui/connections/{name}/rotate-root",
            get(pages::confirm_rotate_root).post(pages::rotate_root),
        )
        .route("/ui/alerts", get(pages::alerts))
        .route("/ui/audit", get(pages::audit_devices))
        .route("/ui/{*rest}", get(pages::not_found))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(ui)
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        JS,
    )
        .into_response()
}

/// Adds the security headers to every console answer.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The answer of one API call made for the console.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The API's error messages, joined.
    pub fn error_text(&self) -> String {
        let errors: Vec<&str> = self.body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if errors.is_empty() {
            format!("the server answered {}", self.status)
        } else {
            errors.join("; ")
        }
    }

    /// The keys of a listing; an empty listing is Vault's 404 with no errors.
    pub fn keys(&self) -> Option<Vec<String>> {
        if self.status == StatusCode::NOT_FOUND {
            return Some(vec![]);
        }
        self.ok().then(|| {
            self.body["data"]["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
    }
}

/// A signed-in request to the console: the session and what the API calls made for it carry
/// over from the browser's request (its address, for the audit log and the anomaly rules).
pub struct Console {
    ui: Ui,
    pub session: Session,
    remote: Option<ConnectInfo<SocketAddr>>,
}

impl FromRequestParts<Ui> for Console {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ui: &Ui) -> Result<Self, Response> {
        match session::Session::from_headers(&ui.sealer, &parts.headers) {
            Some(session) => Ok(Self {
                ui: ui.clone(),
                session,
                remote: parts.extensions.get::<ConnectInfo<SocketAddr>>().copied(),
            }),
            // A page asks for a sign-in; a script's request just fails.
            None if parts.method == Method::GET => Err(Redirect::to("/ui/login").into_response()),
            None => Err(pages::error_page(
                StatusCode::UNAUTHORIZED,
                "Not signed in",
                "Your session has ended or was never started. Sign in again.",
            )),
        }
    }
}

impl Console {
    /// Sends one API request as the signed-in token, through the same service that serves
    /// `/v1/`: the gate decides and audits it as it would a client's. `method` may be `LIST`.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        call_api(
            &self.ui.api,
            Some(self.session.token()),
            self.remote,
            method,
            path,
            body,
        )
        .await
    }

    /// As [`Console::call`] (a read without a body), in a task of its own that starts only if
    /// one of `slots` frees before `start_by`, and `None` if none did. Once started it runs to
    /// its end, bounded by the API's own deadlines, so its audit lines are written even when the
    /// page has stopped waiting for it: a page waits for such calls as long as it likes, and a
    /// stalled database costs it only that wait.
    pub fn spawn_read(
        &self,
        slots: std::sync::Arc<tokio::sync::Semaphore>,
        start_by: tokio::time::Instant,
        path: String,
    ) -> tokio::task::JoinHandle<Option<Answer>> {
        let api = self.ui.api.clone();
        let token = lessor_plugin::Secret::new(self.session.token());
        let remote = self.remote;
        tokio::spawn(async move {
            let _slot = tokio::time::timeout_at(start_by, slots.acquire_owned())
                .await
                .ok()?
                .ok()?;
            Some(call_api(&api, Some(token.expose()), remote, "GET", &path, None).await)
        })
    }

    /// The refusal of a change whose form does not carry this session's CSRF value; `None`
    /// when it does.
    pub fn csrf_refusal(&self, sent: Option<&str>) -> Option<Response> {
        if self.session.csrf_matches(sent) {
            None
        } else {
            Some(pages::error_page(
                StatusCode::FORBIDDEN,
                "Refused: the form is stale or was not sent by this console",
                "The change was not made. Reload the page and submit it again.",
            ))
        }
    }
}

/// One in-process API request; see [`Console::call`].
async fn call_api(
    api: &Router,
    token: Option<&str>,
    remote: Option<ConnectInfo<SocketAddr>>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Answer {
    let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
    let mut builder = Request::builder().method(method).uri(format!("/v1/{path}"));
    if let Some(token) = token {
        builder = builder.header("x-vault-token", token);
    }
    let payload = match &body {
        Some(body) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let mut request = match builder.body(payload) {
        Ok(request) => request,
        Err(error) => {
            // Only a path the console built badly gets here; names are checked before.
            return Answer {
                status: StatusCode::BAD_REQUEST,
                body: serde_json::json!({ "errors": [format!("cannot build the request: {error}")] }),
            };
        }
    };
    if let Some(remote) = remote {
        request.extensions_mut().insert(remote);
    }
    let response = match api.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer { status, body }
}

/// `/ui` without its slash goes to the overview.
pub async fn to_overview() -> Redirect {
    Redirect::permanent("/ui/")
}
