//! Test backends (hyper servers that name their replica), clients, and a router harness.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kumo_router::{
    BackendProtocol, Endpoint, Route, RouteTable, Router, RouterConfig, RouterHandle,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn text(s: impl Into<Bytes>) -> TestBody {
    Full::new(s.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<TestBody> {
    let mut r = Response::new(text(body));
    *r.status_mut() = status;
    r
}

/// A body fed frame by frame from a channel (for streaming and trailers).
pub struct ChannelBody(pub mpsc::Receiver<Frame<Bytes>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

/// A request as the backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
}

/// A running backend. Serves until the test's runtime ends.
#[derive(Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    pub id: String,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Backend {
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(self.addr, self.id.clone())
    }
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Starts a backend whose answers come from `handler(request, replica id)`.
pub async fn backend<F, Fut>(protocol: BackendProtocol, id: &str, handler: F) -> Backend
where
    F: Fn(Request<Incoming>, String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = Backend {
        addr: listener.local_addr().unwrap(),
        id: id.to_string(),
        hits: Arc::default(),
        seen: Arc::default(),
    };
    let state = b.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (state, handler) = (state.clone(), handler.clone());
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                state.hits.fetch_add(1, Ordering::SeqCst);
                state.seen.lock().unwrap().push(Seen {
                    path: req.uri().path().to_string(),
                    headers: req.headers().clone(),
                });
                let fut = handler(req, state.id.clone());
                async move { Ok::<_, std::convert::Infallible>(fut.await) }
            });
            let io = TokioIo::new(stream);
            tokio::spawn(async move {
                let _ = match protocol {
                    BackendProtocol::Http1 => {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .with_upgrades()
                            .await
                    }
                    BackendProtocol::H2c => {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await
                    }
                };
            });
        }
    });
    b
}

/// A backend that answers with its replica id.
pub async fn replica(protocol: BackendProtocol, id: &str) -> Backend {
    backend(protocol, id, |_req, id| async move {
        respond(StatusCode::OK, id)
    })
    .await
}

/// An address where nothing listens (connections are refused).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

pub fn route(app: &str, host: &str, protocol: BackendProtocol, endpoints: &[&Backend]) -> Route {
    Route {
        app: app.into(),
        hosts: vec![host.into()],
        path_prefix: None,
        protocol,
        endpoints: endpoints.iter().map(|b| b.endpoint()).collect(),
        timeout: Duration::from_secs(10),
        draining: vec![],
    }
}

pub fn table(routes: Vec<Route>) -> Arc<RouteTable> {
    Arc::new(RouteTable { routes })
}

pub struct Harness {
    pub handle: RouterHandle,
    pub routes: watch::Sender<Arc<RouteTable>>,
    _shutdown: oneshot::Sender<()>,
}

impl Harness {
    pub fn addr(&self) -> SocketAddr {
        self.handle.http_addr
    }

    /// Resolves the router's shutdown future; returns the handle to await `stopped`.
    pub fn shut_down(self) -> RouterHandle {
        let _ = self._shutdown.send(());
        self.handle
    }
}

pub async fn router(routes: Vec<Route>) -> Harness {
    router_with(RouterConfig::default(), routes).await
}

pub async fn router_with(config: RouterConfig, routes: Vec<Route>) -> Harness {
    let (tx, rx) = watch::channel(table(routes));
    let (shutdown, on_shutdown) = oneshot::channel::<()>();
    let handle = Router::start(config, rx, async move {
        let _ = on_shutdown.await;
    })
    .await
    .unwrap();
    Harness {
        handle,
        routes: tx,
        _shutdown: shutdown,
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// An HTTP/1.1 client with a keep-alive pool.
pub struct H1(Client<HttpConnector, Full<Bytes>>);

impl H1 {
    pub fn new() -> Self {
        H1(Client::builder(TokioExecutor::new()).build_http())
    }

    pub async fn get(&self, addr: SocketAddr, host: &str, path: &str) -> Reply {
        self.send(addr, host, path, &[]).await
    }

    pub async fn send(
        &self,
        addr: SocketAddr,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::get(format!("http://{addr}{path}")).header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .0
            .request(req.body(Full::default()).unwrap())
            .await
            .unwrap();
        collect(resp).await
    }

    /// Sends and returns the response head with its body still streaming.
    pub async fn open(&self, addr: SocketAddr, host: &str, path: &str) -> Response<Incoming> {
        let req = Request::get(format!("http://{addr}{path}")).header("host", host);
        self.0
            .request(req.body(Full::default()).unwrap())
            .await
            .unwrap()
    }
}

pub async fn collect(resp: Response<Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// ONE HTTP/2 connection with prior knowledge (h2c); every request goes over it.
#[derive(Clone)]
pub struct H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>);

impl H2 {
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        Self::over(TokioIo::new(tcp)).await
    }

    pub async fn over<I>(io: I) -> Self
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        H2(send)
    }

    pub async fn request(&self, req: Request<Full<Bytes>>) -> Response<Incoming> {
        let mut send = self.0.clone();
        send.ready().await.unwrap();
        send.send_request(req).await.unwrap()
    }

    pub async fn get(&self, scheme: &str, host: &str, path: &str) -> Reply {
        let req = Request::get(format!("{scheme}://{host}{path}"))
            .body(Full::default())
            .unwrap();
        collect(self.request(req).await).await
    }
}

/// How many replies came from each replica.
pub fn tally<'a>(bodies: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for b in bodies {
        *m.entry(b.to_string()).or_insert(0) += 1;
    }
    m
}

/// Waits until `cond` holds, polling; panics with `what` after 10 s.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Bounds a step that must not hang (a hang means the router buffered or lost something).
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within 10s"))
}
