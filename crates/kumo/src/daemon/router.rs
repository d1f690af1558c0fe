//! `kumo router` (and the router inside `kumo up --router-listen`): the L7 router fed by
//! watches of Apps and their pods. `route_table` is the pure part: Apps + pods → routes.

use anyhow::Context;
use clap::Args;
use kumo_api::app::{
    App, Protocol, ANNOTATION_ASSIGNED_PORT, ANNOTATION_DRAIN_UNTIL, ANNOTATION_PROTOCOL,
    LABEL_APP, LABEL_PROCESS, LABEL_RELEASE, WEB_PROCESS,
};
use kumo_api::meta::find_condition;
use kumo_api::{ConditionStatus, Pod};
use kumo_client::{Client, ClientConfig, Informer, ListParams};
use kumo_router::{
    BackendProtocol, Endpoint, Route, RouteTable, Router, RouterConfig, RouterHandle, TlsSource,
};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Time a backend has to answer with its response head.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(60);

/// `kumo router`.
#[derive(Args, Debug)]
pub struct RouterArgs {
    /// API server URL
    #[arg(long)]
    pub server: String,
    /// Bearer token for the API server
    #[arg(long, env = "KUMO_TOKEN")]
    pub token: String,
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

/// Where a ready pod of an app serves: its IP and the port the agent gave it (process
/// runtime) or its `PORT`.
pub fn pod_endpoint(pod: &Pod) -> Option<SocketAddr> {
    let ip: IpAddr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
    let port = match pod.metadata.annotations.get(ANNOTATION_ASSIGNED_PORT) {
        Some(p) => p.parse().ok()?,
        None => pod
            .spec
            .containers
            .first()?
            .env
            .iter()
            .rev()
            .find(|e| e.name == "PORT")?
            .value
            .parse()
            .ok()?,
    };
    Some(SocketAddr::new(ip, port))
}

fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, "Ready"))
            .is_some_and(|c| c.status == ConditionStatus::True)
}

/// The routes for `apps`: each domain of an app goes to the ready `web` replicas of its active
/// release; the ready replicas of the release it replaced drain (no new requests). Also the
/// apps whose route panicked (left out of the table), as (route name, the panic's message):
/// one app never takes the others' routes with it.
pub fn route_table(apps: &[App], pods: &[Pod]) -> (RouteTable, Vec<(String, String)>) {
    let mut routes = Vec::new();
    let mut failed = Vec::new();
    for app in apps {
        match kumo_client::guard_pure(|| app_route(app, pods)) {
            Ok(Some(route)) => routes.push(route),
            Ok(None) => {}
            Err(why) => failed.push((route_name(app), why)),
        }
    }
    routes.sort_by(|a, b| a.app.cmp(&b.app));
    (RouteTable { routes }, failed)
}

/// The name of an app's route: `name` in the default namespace, else `ns/name`.
fn route_name(app: &App) -> String {
    let ns = app.metadata.ns();
    if ns == kumo_api::DEFAULT_NAMESPACE {
        app.metadata.name.clone()
    } else {
        format!("{ns}/{}", app.metadata.name)
    }
}

/// One app's route (`None`: it has no domain, or it is going).
fn app_route(app: &App, pods: &[Pod]) -> Option<Route> {
    {
        if app.spec.domains.is_empty() || app.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let ns = app.metadata.ns();
        let status = app.status.clone().unwrap_or_default();
        let web = |p: &&Pod| {
            let l = &p.metadata.labels;
            p.metadata.ns() == ns
                && l.get(LABEL_APP) == Some(&app.metadata.name)
                && l.get(LABEL_PROCESS).map(String::as_str) == Some(WEB_PROCESS)
                && is_ready(p)
        };
        // Ready web replicas of a release, but not those the controller is draining out.
        let web_of = |release: Option<i64>| -> Vec<&Pod> {
            let Some(v) = release else {
                return Vec::new();
            };
            let v = v.to_string();
            let mut out: Vec<&Pod> = pods
                .iter()
                .filter(web)
                .filter(|p| p.metadata.labels.get(LABEL_RELEASE) == Some(&v))
                .filter(|p| !p.metadata.annotations.contains_key(ANNOTATION_DRAIN_UNTIL))
                .collect();
            out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            out
        };
        let endpoints = |pods: Vec<&Pod>| -> Vec<Endpoint> {
            pods.iter()
                .filter_map(|p| Some(Endpoint::new(pod_endpoint(p)?, p.metadata.name.clone())))
                .collect()
        };
        let mut serving = web_of(status.active_release);
        // A rolling update serves from both releases while the new one comes up.
        let rolling = app.spec.deploy.strategy == kumo_api::app::DeployStrategy::Rolling
            && status.phase.as_deref() == Some("Deploying");
        if rolling && status.latest_release != status.active_release {
            serving.extend(web_of(status.latest_release));
        }
        let protocol = serving
            .first()
            .and_then(|p| p.metadata.annotations.get(ANNOTATION_PROTOCOL))
            .map(|p| p == Protocol::H2c.as_str())
            .unwrap_or_else(|| {
                app.spec.processes.get(WEB_PROCESS).and_then(|p| p.protocol) == Some(Protocol::H2c)
            });
        let mut endpoints_now = endpoints(serving);
        let mut leaving = web_of(status.draining.map(|d| d.release));
        leaving.extend(
            pods.iter()
                .filter(web)
                .filter(|p| p.metadata.annotations.contains_key(ANNOTATION_DRAIN_UNTIL)),
        );
        let mut draining = endpoints(leaving);
        // Just after a switch this router's pod cache may not show the new replicas ready yet
        // (the App's watch can run ahead of the pods'): the old ones serve until it does.
        if endpoints_now.is_empty() {
            endpoints_now = std::mem::take(&mut draining);
        }
        Some(Route {
            app: route_name(app),
            hosts: app.spec.domains.clone(),
            path_prefix: None,
            protocol: if protocol {
                BackendProtocol::H2c
            } else {
                BackendProtocol::Http1
            },
            endpoints: endpoints_now,
            timeout: ROUTE_TIMEOUT,
            draining,
        })
    }
}

/// Keeps `tx` at the route table of the API's current Apps and pods.
pub async fn follow(client: Client, tx: watch::Sender<Arc<RouteTable>>) {
    let (apps, mut app_changes) =
        Informer::<App>::start(client.clone(), None, ListParams::default());
    let (pods, mut pod_changes) =
        Informer::<Pod>::start(client, None, ListParams::labels(LABEL_APP));
    apps.wait_synced().await;
    pods.wait_synced().await;
    let backoff: kumo_client::Backoff<()> =
        kumo_client::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let (apps_now, pods_now) = (apps.list(), pods.list());
        let (table, retry) = match kumo_client::guard_pure(|| route_table(&apps_now, &pods_now)) {
            Ok((mut table, failed)) if !failed.is_empty() => {
                // An app whose route panicked keeps the route it had; it is tried again at the
                // next change or after the back-off.
                let retry = backoff.failed(&());
                let previous = tx.borrow().clone();
                for (app, why) in failed {
                    tracing::error!(%app, error = %why, retry_in = ?retry.delay, failures = retry.total, "route of an app panicked");
                    table
                        .routes
                        .extend(previous.routes.iter().filter(|r| r.app == app).cloned());
                }
                table.routes.sort_by(|a, b| a.app.cmp(&b.app));
                (table, Some(retry.delay))
            }
            Ok((table, _)) => {
                backoff.succeeded(&());
                (table, None)
            }
            Err(why) => {
                // The table stays as it was; tried again after the back-off.
                let retry = backoff.failed(&());
                tracing::error!(error = %why, retry_in = ?retry.delay, failures = retry.total, "route table panicked");
                tokio::time::sleep(retry.delay).await;
                continue;
            }
        };
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
        tokio::select! {
            Some(_) = app_changes.recv() => {}
            Some(_) = pod_changes.recv() => {}
            _ = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => {}
            else => return,
        }
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
    let client = Client::new(&ClientConfig {
        server: args.server.clone(),
        token: args.token.clone(),
    })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(name: &str, active: Option<i64>, draining: Option<i64>) -> App {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"runtimeClassName": "process", "domains": [format!("{name}.test")],
                     "processes": {"web": {"command": ["x"]}}},
            "status": {"activeRelease": active,
                       "draining": draining.map(|r| json!({"release": r, "until": "2030-01-01T00:00:00Z"}))}
        }))
        .unwrap()
    }

    fn pod(name: &str, app: &str, release: i64, process: &str, port: u16, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default",
                         "labels": {LABEL_APP: app, LABEL_RELEASE: release.to_string(), LABEL_PROCESS: process},
                         "annotations": {ANNOTATION_ASSIGNED_PORT: port.to_string(), ANNOTATION_PROTOCOL: "h2c"}},
            "spec": {"containers": [{"name": process, "command": ["x"]}]},
            "status": {"podIP": "127.0.0.1",
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    fn ids(e: &[Endpoint]) -> Vec<String> {
        e.iter().map(|e| format!("{}@{}", e.id, e.addr)).collect()
    }

    #[test]
    fn routes_go_to_ready_web_replicas_of_the_active_release() {
        let apps = [app("a", Some(2), Some(1)), app("b", None, None)];
        let pods = [
            pod("a-v2-web-1", "a", 2, "web", 4001, true),
            pod("a-v2-web-2", "a", 2, "web", 4002, false),
            pod("a-v2-worker-1", "a", 2, "worker", 4003, true),
            pod("a-v1-web-1", "a", 1, "web", 4000, true),
            pod("a-v3-web-1", "a", 3, "web", 4004, true),
        ];
        let t = route_table(&apps, &pods).0;
        assert_eq!(t.routes.len(), 2);
        let a = &t.routes[0];
        assert_eq!(a.hosts, vec!["a.test"]);
        assert_eq!(a.protocol, BackendProtocol::H2c);
        assert_eq!(ids(&a.endpoints), vec!["a-v2-web-1@127.0.0.1:4001"]);
        assert_eq!(ids(&a.draining), vec!["a-v1-web-1@127.0.0.1:4000"]);
        // An app with nothing active yet still has its host: 503, not 404.
        let b = &t.routes[1];
        assert_eq!((b.app.as_str(), b.endpoints.len()), ("b", 0));
        assert_eq!(b.protocol, BackendProtocol::Http1);

        // A replica the controller drains out gets no new requests.
        let mut pods = pods.to_vec();
        pods[0]
            .metadata
            .annotations
            .insert(ANNOTATION_DRAIN_UNTIL.into(), "2030-01-01T00:00:00Z".into());
        pods.push(pod("a-v2-web-3", "a", 2, "web", 4005, true));
        let t = route_table(&apps[..1], &pods).0;
        assert_eq!(
            ids(&t.routes[0].endpoints),
            vec!["a-v2-web-3@127.0.0.1:4005"]
        );
        assert_eq!(
            ids(&t.routes[0].draining),
            vec!["a-v1-web-1@127.0.0.1:4000", "a-v2-web-1@127.0.0.1:4001"]
        );

        // Switched, but no new replica seen ready yet: the draining ones keep serving.
        let t = route_table(&apps[..1], &pods[1..5]).0;
        assert_eq!(
            ids(&t.routes[0].endpoints),
            vec!["a-v1-web-1@127.0.0.1:4000"]
        );
        assert!(t.routes[0].draining.is_empty());
    }
}
