//! kumo's HTTP API server: Kubernetes-style REST and watch over a [`kumo_store::Store`].
//!
//! Requests are authenticated, parsed into the closed [`ApiRequest`] enum by one pure function
//! ([`parse`]), then executed against the store. Every error is a Kubernetes `Status`.
#![forbid(unsafe_code)]

mod access_review;
mod audit;
pub mod audit_log;
pub mod auth;
pub mod authz;
mod bind;
mod body;
mod create;
mod credential;
mod data_store;
mod datasets;
mod delete;
mod dispatch;
mod domains;
pub mod encryption;
mod error;
mod escalation;
mod evict;
mod exec;
mod keys;
mod log;
mod namespace;
mod node_authz;
mod object;
mod pod_security;
mod query;
pub mod rbac;
mod read;
mod request;
pub mod service_accounts;
mod serving_cert;
pub mod tokens;
mod transformer;
mod update;
mod watch;
mod writer_checks;

#[cfg(test)]
mod tests;

pub use audit_log::{AuditLog, Rotation};
pub use auth::{Authenticator, Chain, StaticTokens};
pub use authz::{AlwaysAllow, Attributes, Authorizer, Decision};
pub use data_store::{collect_garbage, collect_garbage_every, GC_MIN_AGE};
pub use error::ApiError;
pub use rbac::RbacAuthorizer;
pub use request::{parse, ApiRequest, Kind, Subresource};
pub use service_accounts::ServiceAccounts;
pub use transformer::Transformer;

use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch as signal;

/// The cluster CA as the API server uses it.
#[derive(Clone)]
pub struct ClusterTls {
    /// Signs node agents' serving certificates.
    pub ca: Arc<kumo_pki::Ca>,
    /// What the API is served with (its certificate, then the CA's).
    pub serving: Arc<rustls::ServerConfig>,
    /// How agents are called: trusting the CA only, presenting the API server's client
    /// certificate; an agent is verified by its node's name.
    pub agent_client: Arc<rustls::ClientConfig>,
}

/// How the server runs.
#[derive(Clone)]
pub struct Config {
    pub store: Arc<dyn kumo_store::Store>,
    /// Who a bearer token belongs to.
    pub authenticator: Arc<dyn Authenticator>,
    /// What each user may do.
    pub authorizer: Arc<dyn Authorizer>,
    /// How often an idle watch that allows bookmarks gets one.
    pub bookmark_interval: Duration,
    /// TLS for the API and for calls to agents; `None` serves plain HTTP and calls agents
    /// over plain HTTP without a credential (in-process tests only).
    pub tls: Option<ClusterTls>,
    /// Where datasets and task outputs are kept (the data dir, a shared directory or a
    /// bucket); `None` serves none.
    pub blobs: Option<Arc<dyn kumo_blob::BlobStore>>,
    /// How objects are encrypted at rest ([`encryption::parse`]); identity by default.
    pub encryption: Arc<Transformer>,
    /// The request-header and idle timeouts, and the cap on connections not yet authenticated.
    pub limits: kumo_serve::Limits,
    /// Where requests that change state, exec, logs and Secret reads are recorded; `None`
    /// records nothing.
    pub audit: Option<Arc<AuditLog>>,
    /// The life of a node credential issued by `nodes/{name}/credential`.
    pub node_credential_ttl: Duration,
    /// Issues service-account tokens (`serviceaccounts/{name}/token`); `None` serves none. The
    /// same value, chained into `authenticator`, checks them.
    pub service_accounts: Option<Arc<ServiceAccounts>>,
}

/// The default life of a node credential: 30 days (agents rotate at two thirds of it).
pub const DEFAULT_NODE_CREDENTIAL_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

impl Config {
    /// A config with the default bookmark interval (5 s) and connection limits, where every
    /// token of `tokens` is an admin (`system:masters`), everything is allowed, and there is
    /// no TLS.
    pub fn new(store: Arc<dyn kumo_store::Store>, tokens: Vec<String>) -> Self {
        Config {
            store,
            tls: None,
            authenticator: Arc::new(StaticTokens::admins(tokens)),
            authorizer: Arc::new(AlwaysAllow),
            bookmark_interval: Duration::from_secs(5),
            blobs: None,
            encryption: Arc::new(Transformer::identity()),
            limits: kumo_serve::Limits::default(),
            audit: None,
            node_credential_ttl: DEFAULT_NODE_CREDENTIAL_TTL,
            service_accounts: None,
        }
    }
}

/// Shared state of every request.
pub(crate) struct App {
    pub store: Arc<dyn kumo_store::Store>,
    pub authenticator: Arc<dyn Authenticator>,
    pub authorizer: Arc<dyn Authorizer>,
    pub bookmark_interval: Duration,
    pub tls: Option<ClusterTls>,
    /// Turns true when the server shuts down; long-lived responses end then.
    pub shutdown: signal::Receiver<bool>,
    /// Watches and log streams being served right now.
    pub open_streams: AtomicUsize,
    /// Datasets and outputs, when the server has a data dir.
    pub data: Option<data_store::DataStore>,
    /// Encrypts and decrypts stored objects (Secrets, by default config).
    pub transformer: Arc<Transformer>,
    /// The audit log, if requests are recorded.
    pub audit: Option<Arc<AuditLog>>,
    pub node_credential_ttl: Duration,
    /// Issues service-account tokens, when the server has a key.
    pub service_accounts: Option<Arc<ServiceAccounts>>,
    /// Watch events decoded once for every watcher.
    pub decoded_events: Arc<watch::DecodedEvents>,
}

/// Counts a long-lived response in [`App::open_streams`] for as long as it lives.
pub(crate) struct StreamGuard(Arc<App>);

impl StreamGuard {
    pub fn new(app: &Arc<App>) -> Self {
        app.open_streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard(Arc::clone(app))
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl App {
    fn new(config: Config, shutdown: signal::Receiver<bool>) -> Self {
        let data = config.blobs.map(data_store::DataStore::new);
        App {
            data,
            service_accounts: config.service_accounts,
            transformer: config.encryption,
            node_credential_ttl: config.node_credential_ttl,
            store: config.store,
            authenticator: config.authenticator,
            authorizer: config.authorizer,
            bookmark_interval: config.bookmark_interval,
            tls: config.tls,
            shutdown,
            open_streams: AtomicUsize::new(0),
            audit: config.audit,
            decoded_events: Default::default(),
        }
    }
}

/// Resolves once the server is shutting down (never, if the signal is gone).
pub(crate) async fn shutting_down(mut rx: signal::Receiver<bool>) {
    if rx.wait_for(|down| *down).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn build(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(dispatch::healthz))
        .route("/version", get(dispatch::version))
        .route("/readyz", get(dispatch::readyz))
        .fallback(dispatch::handle)
        .with_state(app)
}

/// The API as a router, without a shutdown signal (for tests and embedding).
pub fn router(config: Config) -> Router {
    // With the sender dropped, `shutting_down` never resolves.
    let (_, rx) = signal::channel(false);
    build(Arc::new(App::new(config, rx)))
}

/// Serves the API on `listener` until `shutdown` resolves, then ends open watches and log
/// streams and returns. First makes sure the `default` namespace, the built-in RBAC policy and
/// every namespace's `default` service account exist (and keeps the accounts), and the
/// service-account token index is listed (so tokens are checked from the first request).
/// Connections are held to `config.limits`; one counts as authenticated once a request on it
/// carries an accepted bearer token.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, rx) = signal::channel(false);
    let limits = config.limits;
    let tls = config.tls.as_ref().map(|t| Arc::clone(&t.serving));
    let app = Arc::new(App::new(config, rx));
    namespace::ensure_default(&app)
        .await
        .map_err(|e| std::io::Error::other(format!("creating the default namespace: {e}")))?;
    rbac::ensure_defaults(&app)
        .await
        .map_err(|e| std::io::Error::other(format!("creating the built-in rbac policy: {e}")))?;
    service_accounts::admission::ensure_defaults(&app)
        .await
        .map_err(|e| std::io::Error::other(format!("creating default service accounts: {e}")))?;
    tokio::spawn(service_accounts::admission::keep_defaults(Arc::clone(&app)));
    if let Some(sa) = &app.service_accounts {
        sa.start_index(&app.store, &app.transformer, &app.shutdown)
            .await
            .map_err(|e| std::io::Error::other(format!("service-account token index: {e}")))?;
    }
    let authenticator = Arc::clone(&app.authenticator);
    let authenticate: kumo_serve::Authenticate =
        Arc::new(move |headers| auth::authenticate(headers, authenticator.as_ref()).is_ok());
    kumo_serve::serve(
        listener,
        build(app),
        limits,
        authenticate,
        tls,
        async move {
            shutdown.await;
            let _ = tx.send(true);
        },
    )
    .await
}
