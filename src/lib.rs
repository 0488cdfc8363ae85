//! Lessor: a dynamic database credentials broker with a Vault-compatible API.
//!
//! A service asks for a database login; Lessor creates a short-lived user through an engine plugin,
//! records a lease, and drops the user when the lease ends. The crate is laid out as follows:
//!
//! - [`api`]: axum handlers on Vault's paths behind one decision point (canonical path, route
//!   table, policy gate), one error type rendered as `{"errors": [...]}`.
//! - [`names`]: the checked name types handlers take (`RoleName`, `LeaseId`, ...).
//! - [`lease`]: the lease manager (issue, renew, revoke, revoke-prefix), the [`lease::reaper`]
//!   and the roles' warm pools of users created ahead of demand ([`lease::pool`]).
//! - [`catalog`]: connections and roles, validated before they are stored.
//! - [`rotation`]: static roles and admin passwords, rotated in two phases by the [`rotation::rotator`].
//! - [`engines`]: the compile-time registry of engine plugins and the cache of connected ones.
//! - [`store`]: the store (SQLite embedded, or PostgreSQL shared by replicas) and its migrations.
//! - [`replica`]: this process among the replicas: its id, heartbeat and claims.
//! - [`auth`]: tokens (stored as hashes), ACL policies, workload identity (JWT login).
//! - [`audit`]: audit devices with HMAC'd secrets, and the anomaly rules that raise alerts.
//! - [`metrics`]: Prometheus metrics (prometheus-client): per-role and per-connection counters and
//!   latency histograms, lease gauges read from the store at scrape time (docs/metrics.md).
//! - [`seal`]: AES-256-GCM for secrets at rest.
//! - [`wrapping`]: response wrapping (single-use wrapping tokens for sealed answers).
//! - [`config`]: defaults < TOML < `LESSOR_*` env < flags.
//! - [`dev`]: what `lessor dev` registers on a fresh machine.
//! - [`ui`]: the web console at `/ui/`, made of in-process calls to the API (same gate, same
//!   audit), server-rendered with its assets embedded.
//! - [`listener`]: HTTPS on the listener (rustls), reloaded on SIGHUP; [`tls`]: the client
//!   certificate a request carries, and the chain checks shared with [`auth::cert`].
//!
//! [`app`] builds the HTTP service; [`serve`] (plain HTTP) and [`listener::serve_tls`] (HTTPS) run
//! it with the reaper until a shutdown future completes, so `main` passes a signal and tests pass
//! whatever they like.

#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod auth;
pub mod bench;
pub mod catalog;
pub mod config;
pub mod dev;
pub mod engines;
pub mod error;
pub mod lease;
pub mod listener;
pub mod metrics;
pub mod names;
pub mod password_policy;
pub mod replica;
pub mod revocation_group;
pub mod rotation;
pub mod seal;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod ttl;
pub mod ui;
pub mod wrapping;

use std::future::Future;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use lessor_plugin::Secret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Layer;

pub use error::{Error, Result};

use crate::audit::anomaly::Monitor;
use crate::audit::Audit;
use crate::auth::jwt::JwtAuth;
use crate::auth::policy::Policies;
use crate::auth::Auth;
use crate::catalog::Catalog;
use crate::config::Settings;
use crate::engines::Engines;
use crate::lease::LeaseManager;
use crate::rotation::Rotator;
use crate::seal::Sealer;
use crate::store::{MetaStore, Store};

/// Key in the store's meta table of a value sealed at first start; opening it proves the
/// configured seal key is the one the store's secrets were sealed with.
const SEAL_CHECK_KEY: &str = "seal_check";
const SEAL_CHECK_CONTEXT: &str = "meta/seal_check";
/// Key in the meta table of the console's sealed cookie key.
const CONSOLE_KEY_META: &str = "console_session_key";
const CONSOLE_KEY_CONTEXT: &str = "meta/console_session_key";
/// Key in the meta table of this installation's id: made by the first process on a store and
/// shared by every replica, it is the mark left on the users engines can keep a note on.
const INSTALLATION_ID_META: &str = "installation_id";

/// Everything the handlers and background tasks share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub auth: Auth,
    pub catalog: Catalog,
    pub leases: LeaseManager,
    pub engines: Engines,
    /// ACL policies, checked by the API gate on every request.
    pub policies: Policies,
    /// Workload identity: JWT login.
    pub jwt: JwtAuth,
    /// Audit devices; with any enabled, unrecorded requests are refused.
    pub audit: Audit,
    /// Anomaly rules and alerts.
    pub monitor: Monitor,
    /// Static roles and admin password rotation.
    pub rotation: Rotator,
    /// Response wrapping: sealed answers behind single-use wrapping tokens.
    pub wrapping: wrapping::Wrapping,
    /// This process among the replicas sharing the store.
    pub replica: replica::Replica,
    /// The address this replica listens on, as registered with the others.
    pub listen_address: String,
    /// How often the periodic reconciliation sweep runs (zero: never).
    pub reconcile_interval: std::time::Duration,
    /// Seals the web console's session cookies; its key is the store's, so a session works on
    /// every replica and across restarts.
    pub console_sealer: Sealer,
}

impl AppState {
    /// Opens the store (running migrations), checks the seal key against it and wires the parts.
    pub async fn open(settings: &Settings) -> Result<Self> {
        let sealer = match (&settings.seal_key, &settings.seal_key_file) {
            (Some(key), _) => Sealer::from_encoded_key(key)?,
            (None, Some(path)) => Sealer::from_key_file(path, settings.create_seal_key_file)?,
            (None, None) => {
                return Err(Error::Config(
                    "no seal key: set LESSOR_SEAL_KEY, or seal_key_file in the config file".into(),
                ))
            }
        };
        let store = Store::open(&settings.store_url).await?;
        // The first process to start on a store records a value sealed with its key; every later
        // one (and every replica) must open it, or its key is not the store's.
        let offered = sealer.seal(SEAL_CHECK_CONTEXT, &Secret::new("lessor"))?;
        let sealed = store.meta_init(SEAL_CHECK_KEY, &offered).await?;
        sealer.open(SEAL_CHECK_CONTEXT, &sealed).map_err(|_| {
            Error::Config("the seal key does not match the one this store was sealed with".into())
        })?;
        // The console's cookie key: made once per store, sealed with the seal key like the other
        // keys, so every replica opens the sessions any of them made.
        let offered = sealer.seal(CONSOLE_KEY_CONTEXT, &Sealer::generate_encoded_key())?;
        let console_key = sealer.open(
            CONSOLE_KEY_CONTEXT,
            &store.meta_init(CONSOLE_KEY_META, &offered).await?,
        )?;
        let console_sealer = Sealer::from_encoded_key(&console_key)?;
        let auth = Auth::open(store.clone(), &sealer, settings.lease_limits()).await?;
        let installation_id = store
            .meta_init(INSTALLATION_ID_META, &uuid::Uuid::new_v4().to_string())
            .await?;
        let user_marker = lessor_plugin::UserMarker::for_installation(&installation_id)
            .map_err(|e| Error::Internal(format!("the stored installation id: {e}")))?;
        let engines = Engines::new(
            store.clone(),
            sealer.clone(),
            settings.target_deadlines(),
            user_marker,
        );
        let audit = Audit::open(store.clone(), &sealer, &data_directories(settings)?).await?;
        let monitor = Monitor::open(store.clone(), settings.monitor.clone()).await?;
        let policies = Policies::new(store.clone());
        policies.ensure_default().await?;
        let catalog = Catalog::new(
            store.clone(),
            sealer.clone(),
            engines.clone(),
            settings.lease_limits(),
        );
        let wrapping = wrapping::Wrapping::new(
            store.clone(),
            sealer.clone(),
            auth.clone(),
            settings.lease_limits().max_ttl,
        );
        // The longest a revocation or rotation may take on its target: a connection and one whole
        // operation, each under its deadline. Claims outlast it.
        let deadlines = settings.target_deadlines();
        let replica = replica::Replica::new(deadlines.connect + deadlines.operation);
        let listen_address = settings.listen.to_string();
        replica.register(&store, &listen_address).await?;
        let rotation = Rotator::new(
            store.clone(),
            sealer,
            engines.clone(),
            catalog.clone(),
            replica.clone(),
            settings.rotation_retry,
        );
        let leases = LeaseManager::new(
            store.clone(),
            engines.clone(),
            catalog.clone(),
            replica.clone(),
            settings.revocation_retry,
        );
        Ok(Self {
            auth,
            jwt: JwtAuth::new(store.clone()),
            policies,
            audit,
            monitor,
            store,
            catalog,
            leases,
            engines,
            rotation,
            wrapping,
            replica,
            listen_address,
            reconcile_interval: settings.reconcile_interval,
            console_sealer,
        })
    }
}

/// The directories holding the server's own files (the store's, the seal key file's), in which no
/// audit device may write.
fn data_directories(settings: &Settings) -> Result<Vec<std::path::PathBuf>> {
    let files = [
        store::file_path(&settings.store_url)?,
        settings.seal_key_file.clone(),
    ];
    Ok(files
        .into_iter()
        .flatten()
        .map(|file| match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            // A bare file name lives in the working directory.
            _ => std::path::PathBuf::from("."),
        })
        .collect())
}

/// Logs one line per request: method, path, status, latency. Paths hold no secrets (lease ids
/// are not secrets); bodies and headers are never logged.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        %method,
        %path,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

/// The HTTP application: the router behind the request log and the canonicalization (decode the
/// path once, `LIST` to a flag). Kept apart from [`serve`] so tests can drive it any way they like.
pub fn app(state: AppState) -> axum::Router {
    let console_sealer = state.console_sealer.clone();
    let routes = api::router(state);
    // Canonicalization must run before routing, so it wraps the whole router rather than its
    // routes; the request log wraps it, so refused paths are logged too.
    let canonical = axum::middleware::from_fn(api::canonical::layer).layer(routes);
    let api = axum::Router::new().fallback_service(canonical);
    // The console calls the API through this very service, so its requests meet the same gate.
    let served = axum::Router::new()
        .merge(ui::router(api.clone(), console_sealer))
        .fallback_service(api);
    let logged = axum::middleware::from_fn(log_request).layer(served);
    axum::Router::new().fallback_service(logged)
}

/// Serves the API on `listener` (plain HTTP) and runs the reaper until `shutdown` completes; then
/// stops taking requests, lets in-flight ones finish, stops the reaper and closes database pools.
/// [`listener::serve_tls`] is the HTTPS twin.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let service = app(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    with_background_tasks(state, async move {
        axum::serve(listener, service)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| Error::Internal(format!("HTTP server failed: {e}")))
    })
    .await
}

/// Runs the background work (reaper, housekeeping, rotator) while `serving` runs, then stops it,
/// waits for rotations in flight and closes the database pools: the part both listeners share.
pub(crate) async fn with_background_tasks(
    state: AppState,
    serving: impl Future<Output = Result<()>>,
) -> Result<()> {
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(state.replica.clone().run_heartbeat(
        state.store.clone(),
        state.listen_address.clone(),
        cancel.clone(),
    ));
    tasks.spawn(replica::follow_changes(state.clone(), cancel.clone()));
    tasks.spawn(lease::reaper::run(state.leases.clone(), cancel.clone()));
    tasks.spawn(lease::pool::run(state.leases.clone(), cancel.clone()));
    tasks.spawn(lease::reconcile::run(
        state.clone(),
        state.reconcile_interval,
        cancel.clone(),
    ));
    tasks.spawn(audit::housekeeping::run_with(
        state.store.clone(),
        state.monitor.clone(),
        std::sync::Arc::new(state.leases.clone()),
        cancel.clone(),
    ));
    tasks.spawn(rotation::rotator::run(
        state.rotation.clone(),
        cancel.clone(),
    ));
    tasks.close();

    let served = serving.await;
    cancel.cancel();
    tasks.wait().await;
    // Rotations run in tasks of their own (a disconnected client cannot cut one short); they
    // finish before the pools they use are closed.
    state.rotation.wait_for_rotations().await;
    // Pooled users' passwords die with this process: their users go now rather than wait for
    // the next start (or another replica) to find them.
    state.leases.drain_warm_pools_at_stop().await;
    // Only now, with nothing of this replica's still running, are its claims given up.
    state.replica.leave(&state.store).await;
    state.engines.close_all().await;
    served
}
