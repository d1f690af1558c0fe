//! Listeners, connections and lifecycle: accept, serve HTTP/1.1 and HTTP/2 on each connection,
//! follow route table updates, and drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::access::Recorder;
use crate::access_log::LogWriter;
use crate::config::RouterConfig;
use crate::error::RouterError;
use crate::health::EjectPolicy;
use crate::metrics::Metrics;
use crate::proxy::{self, ClientConn, Shared, UpstreamClient};
use crate::snapshot::Snapshot;
use crate::table::RouteTable;
use crate::tls;
use crate::upstream::H1Client;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The router. See [`Router::start`].
#[derive(Debug)]
pub struct Router;

/// A running router.
#[derive(Debug)]
pub struct RouterHandle {
    /// Where the plain-text listener is bound (useful with port 0).
    pub http_addr: SocketAddr,
    /// Where the TLS listener is bound, if any.
    pub https_addr: Option<SocketAddr>,
    /// The router's metrics; [`Metrics::encode`] gives the `/metrics` text.
    pub metrics: Arc<Metrics>,
    /// The certificate chain served on `https_addr`, as PEM.
    pub tls_certificate_pem: Option<String>,
    done: tokio::task::JoinHandle<()>,
}

impl RouterHandle {
    /// Resolves once the router has shut down: listeners closed and connections drained
    /// (or cut at the drain timeout).
    pub async fn stopped(self) {
        let _ = self.done.await;
    }
}

impl Router {
    /// Binds the listeners and serves until `shutdown` resolves. The routes follow `routes`:
    /// every new table takes effect for the next request, with no restart and no dropped
    /// connection.
    pub async fn start(
        config: RouterConfig,
        mut routes: watch::Receiver<Arc<RouteTable>>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<RouterHandle, RouterError> {
        let tls = match (config.listen_https, &config.tls) {
            (Some(addr), None) => return Err(RouterError::MissingTls(addr)),
            (Some(_), Some(source)) => Some(tls::build(source)?),
            (None, _) => None,
        };
        let http = bind(config.listen_http).await?;
        let https = match config.listen_https {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let http_addr = local_addr(&http, config.listen_http)?;
        let https_addr = match (&https, config.listen_https) {
            (Some(l), Some(addr)) => Some(local_addr(l, addr)?),
            _ => None,
        };

        let metrics = Arc::new(Metrics::new());
        let initial = Snapshot::build(&routes.borrow_and_update(), &Snapshot::default(), &metrics);
        let (draining_tx, draining) = watch::channel(false);
        let (stop_tx, stop) = watch::channel(false);
        let recorder = Recorder::new(metrics.clone(), LogWriter::start(&config.access_log));
        let shared = Arc::new(Shared::new(
            initial,
            H1Client::new(config.connect_timeout),
            h2c_client(&config),
            Arc::new(recorder),
            EjectPolicy {
                after: config.eject_after,
                duration: config.eject_for,
            },
            stop.clone(),
        ));
        let builder = server_builder();

        let mut tasks = JoinSet::new();
        tasks.spawn(follow_routes(shared.clone(), routes, draining.clone()));
        tasks.spawn(accept_loop(
            http,
            None,
            builder.clone(),
            shared.clone(),
            draining.clone(),
            stop.clone(),
        ));
        let tls_certificate_pem = match (https, tls) {
            (Some(listener), Some(tls)) => {
                tasks.spawn(accept_loop(
                    listener,
                    Some(tls.acceptor),
                    builder,
                    shared,
                    draining,
                    stop,
                ));
                Some(tls.certificate_pem)
            }
            _ => None,
        };
        let drain_timeout = config.drain_timeout;
        let done = tokio::spawn(async move {
            shutdown.await;
            tracing::info!("router shutting down");
            let _ = draining_tx.send(true);
            let all_done = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(drain_timeout, all_done).await.is_err() {
                tracing::warn!("drain timeout reached, closing remaining connections");
                let _ = stop_tx.send(true);
                while tasks.join_next().await.is_some() {}
            }
            drop(stop_tx);
        });
        tracing::info!(%http_addr, https_addr = ?https_addr, "router listening");
        Ok(RouterHandle {
            http_addr,
            https_addr,
            metrics,
            tls_certificate_pem,
            done,
        })
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, RouterError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RouterError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, RouterError> {
    listener
        .local_addr()
        .map_err(|source| RouterError::Bind { addr, source })
}

/// The pooled client toward h2c backends (one multiplexed connection per endpoint).
fn h2c_client(config: &RouterConfig) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.connect_timeout));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .http2_only(true)
        .build(connector)
}

fn server_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Resolves when the flag turns true; never, if its sender is gone without doing so.
async fn raised(flag: &mut watch::Receiver<bool>) {
    if flag.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn follow_routes(
    shared: Arc<Shared>,
    mut routes: watch::Receiver<Arc<RouteTable>>,
    mut draining: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            changed = routes.changed() => {
                if changed.is_err() {
                    tracing::info!("route source closed, keeping the last table");
                    return;
                }
                let table = routes.borrow_and_update().clone();
                let next = Snapshot::build(&table, &shared.current(), &shared.recorder.metrics);
                shared.replace(next);
                tracing::info!(routes = table.routes.len(), "route table updated");
            }
            _ = raised(&mut draining) => return,
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    shared: Arc<Shared>,
    mut draining: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = ClientConn { peer, https: tls.is_some() };
                    let (builder, shared, tls) = (builder.clone(), shared.clone(), tls.clone());
                    let (draining, stop) = (draining.clone(), stop.clone());
                    conns.spawn(async move {
                        match tls {
                            None => serve(stream, conn, builder, shared, draining, stop).await,
                            Some(acceptor) => {
                                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(stream)) => serve(stream, conn, builder, shared, draining, stop).await,
                                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                                    Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                                }
                            }
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = raised(&mut draining) => break,
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Serves one connection (HTTP/1.1 or HTTP/2, detected from its first bytes) until it closes,
/// the router drains (current requests finish, then it closes) or the drain time is over.
async fn serve<I>(
    io: I,
    conn: ClientConn,
    builder: auto::Builder<TokioExecutor>,
    shared: Arc<Shared>,
    mut draining: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| proxy::handle(shared.clone(), conn, req));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    // Biased, the connection first: it is what wakes this task on almost every poll. `stop`
    // is raised only after `draining`, so it is watched only once draining has begun.
    let result = tokio::select! {
        biased;
        result = connection.as_mut() => result,
        _ = raised(&mut draining) => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                biased;
                result = connection.as_mut() => result,
                _ = raised(&mut stop) => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
    }
}
