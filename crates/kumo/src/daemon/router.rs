//! `kumo router` (and the router inside `kumo up --router-listen`): the L7 router fed by
//! watches of Apps and their pods. The routing policy (Apps + pods → routes) is the pure
//! `kumo_controllers::apps::routes::route_table`, beside the App plan; this is the loop that
//! feeds its table to the router.

use anyhow::Context;
use clap::Args;
use kumo_api::app::App;
use kumo_api::keys::LABEL_APP;
use kumo_api::Pod;
use kumo_client::{
    Client, ClientConfig, Failure, Informer, ListParams, Metrics, Pass, Passed, Retry,
};
use kumo_controllers::apps::routes::route_table;
use kumo_router::{RouteTable, Router, RouterConfig, RouterHandle, TlsSource};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// `kumo router`.
#[derive(Args, Debug)]
pub struct RouterArgs {
    /// API server URL
    #[arg(long)]
    pub server: String,
    /// A file holding the bearer token for the API server (default: $KUMO_TOKEN)
    #[arg(long)]
    pub token_file: Option<std::path::PathBuf>,
    /// Refused: a token on the command line is readable by every local user
    #[arg(long, hide = true)]
    pub token: Option<String>,
    /// The cluster CA's certificate (default: the client config's certificate-authority-data)
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Plain-text listener (HTTP/1.1 and h2c)
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub options: RouterOptions,
}

/// The router's TLS and metrics, shared by `kumo router` and `kumo up`.
#[derive(Args, Debug, Clone, Default)]
pub struct RouterOptions {
    /// Serve the router's Prometheus metrics at http://ADDR/metrics
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// TLS listener (HTTP/1.1 and HTTP/2 by ALPN); needs --tls-cert/--tls-key or --self-signed
    #[arg(long)]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for the TLS listener
    #[arg(long, requires = "tls_key", conflicts_with = "self_signed")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the TLS listener
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with a self-signed certificate for the apps' domains (development only)
    #[arg(long)]
    pub self_signed: bool,
}

/// Keeps `tx` at the route table of the API's current Apps and pods: a pass on the client's
/// controller runtime, at every change of either.
pub async fn follow(client: Client, tx: watch::Sender<Arc<RouteTable>>) {
    let (apps, app_changes) = Informer::<App>::start(client.clone(), None, ListParams::default());
    let (pods, pod_changes) = Informer::<Pod>::start(client, None, ListParams::labels(LABEL_APP));
    let runtime = Pass::new(Duration::from_millis(500), Duration::from_secs(30))
        .watches(&apps, app_changes)
        .watches(&pods, pod_changes);
    let (apps, pods, tx) = (&apps, &pods, &tx);
    let each = move || async move {
        let (apps_now, pods_now) = (apps.list(), pods.list());
        // A panic here leaves the table as it was; the runtime tries again after the back-off.
        let (mut table, left_out) = route_table(&apps_now, &pods_now);
        // An app whose route panicked keeps the route it had; it is tried again at the next
        // change or after the back-off.
        if !left_out.is_empty() {
            let previous = tx.borrow().clone();
            for (app, _) in &left_out {
                table
                    .routes
                    .extend(previous.routes.iter().filter(|r| &r.app == app).cloned());
            }
            table.routes.sort_by(|a, b| a.app.cmp(&b.app));
        }
        if **tx.borrow() != table {
            tracing::info!(
                routes = table.routes.len(),
                endpoints = table
                    .routes
                    .iter()
                    .map(|r| r.endpoints.len())
                    .sum::<usize>(),
                "route table updated"
            );
            tx.send_replace(Arc::new(table));
        }
        Ok::<_, Infallible>(Passed {
            left_out,
            ..Passed::default()
        })
    };
    runtime
        .run(each, Report, std::future::pending::<()>())
        .await
}

/// How the route table loop's failures are logged.
struct Report;

impl Metrics<(), Infallible> for Report {
    fn failed(&self, _: &(), failure: &Failure<Infallible>, retry: &Retry) {
        tracing::error!(error = %failure, retry_in = ?retry.delay, failures = retry.total, "route table panicked");
    }

    fn left_out(&self, app: &str, why: &str, retry: &Retry) {
        tracing::error!(%app, error = %why, retry_in = ?retry.delay, failures = retry.total, "route of an app panicked");
    }
}

/// Serves `metrics` at `/metrics` on `listen`; returns the bound address.
async fn serve_metrics(
    listen: SocketAddr,
    metrics: Arc<kumo_router::Metrics>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for metrics on {listen}"))?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "router metrics endpoint failed");
        }
    });
    Ok(addr)
}

/// Starts a router on `listen` whose routes follow the API until `shutdown`; returns it and
/// where its metrics are served, if asked.
pub async fn start(
    client: Client,
    listen: SocketAddr,
    tls: &RouterOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(RouterHandle, Option<SocketAddr>)> {
    let source = match (&tls.tls_cert, &tls.tls_key, tls.self_signed) {
        (Some(cert), Some(key), _) => Some(TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (_, _, true) => Some(TlsSource::SelfSigned {
            names: vec!["localhost".into()],
        }),
        _ => None,
    };
    if tls.tls_listen.is_some() && source.is_none() {
        anyhow::bail!("--tls-listen needs --tls-cert and --tls-key, or --self-signed");
    }
    let config = RouterConfig {
        listen_http: listen,
        listen_https: tls.tls_listen,
        tls: source,
        ..Default::default()
    };
    let (tx, rx) = watch::channel(Arc::new(RouteTable::default()));
    let follower = tokio::spawn(follow(client, tx));
    let handle = Router::start(config, rx, async move {
        shutdown.await;
        follower.abort();
    })
    .await
    .with_context(|| format!("cannot start the router on {listen}"))?;
    let metrics = match tls.metrics_listen {
        Some(addr) => Some(serve_metrics(addr, handle.metrics.clone()).await?),
        None => None,
    };
    Ok((handle, metrics))
}

/// `kumo router`: the router alone, as an API client.
pub async fn run(args: RouterArgs) -> anyhow::Result<ExitCode> {
    super::init_logging();
    let shutdown = super::Shutdown::on_signals();
    let token = crate::token_source::token(
        args.token.as_deref(),
        args.token_file.as_deref(),
        "KUMO_TOKEN",
    )?
    .ok_or_else(|| anyhow::anyhow!("no token: set KUMO_TOKEN or pass --token-file PATH"))?;
    // The cluster CA: --ca-file, else the client config's (KUMO_CONFIG or ~/.kumo/config).
    let mut config = ClientConfig::resolve(Some(args.server.clone()), Some(token))
        .map_err(anyhow::Error::msg)?;
    if let Some(path) = &args.ca_file {
        config = config.with_ca_pem(
            &super::read_ca(path).with_context(|| format!("--ca-file {}", path.display()))?,
        );
    }
    let client = Client::new(&config)?;
    // Fail early, with the client's clear message, when the server is unreachable or the token wrong.
    client.list::<App>(None, &Default::default()).await?;
    let (handle, metrics) = start(client, args.listen, &args.options, shutdown.wait()).await?;
    println!("kumo: router listening on {}", handle.http_addr);
    if let Some(addr) = handle.https_addr {
        println!("kumo: router listening for TLS on {addr}");
    }
    if let Some(addr) = metrics {
        println!("kumo: router metrics on http://{addr}/metrics");
    }
    handle.stopped().await;
    Ok(ExitCode::SUCCESS)
}
