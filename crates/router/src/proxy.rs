//! The request path: route lookup, endpoint pick, forwarding with retries, timeouts, upgrades.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::access::{AccessRecord, Completion};
use crate::balance::{self, Lease};
use crate::body::{self, BodySlot, Observed, ResponseBody, RetryBody};
use crate::headers::{self, Forwarded, HostError, X_REQUEST_ID};
use crate::health::EjectPolicy;
use crate::metrics::{Metrics, UpstreamError};
use crate::respond::{root_cause, text};
use crate::rng;
use crate::snapshot::Snapshot;
use crate::table::BackendProtocol;
use crate::upgrade;

/// Attempts per request; only attempts whose connection failed lead to another.
const MAX_ATTEMPTS: usize = 3;

pub(crate) type UpstreamClient = Client<HttpConnector, RetryBody>;

/// What every request handler shares.
pub(crate) struct Shared {
    snapshot: RwLock<Arc<Snapshot>>,
    pub http1: UpstreamClient,
    pub h2c: UpstreamClient,
    pub metrics: Arc<Metrics>,
    pub policy: EjectPolicy,
    pub access_log: bool,
    /// Turns true when the drain time is over: upgraded tunnels close.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

impl Shared {
    pub fn new(
        snapshot: Snapshot,
        http1: UpstreamClient,
        h2c: UpstreamClient,
        metrics: Arc<Metrics>,
        policy: EjectPolicy,
        access_log: bool,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Shared {
            snapshot: RwLock::new(Arc::new(snapshot)),
            http1,
            h2c,
            metrics,
            policy,
            access_log,
            stop,
        }
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn replace(&self, next: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
    }
}

/// The client side of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientConn {
    pub peer: SocketAddr,
    pub https: bool,
}

/// What forwarding produced, before the access record is attached.
struct Outcome {
    response: Response<ResponseBody>,
    app: Option<Arc<str>>,
    upstream: Option<SocketAddr>,
    lease: Option<Lease>,
}

impl Outcome {
    fn local(response: Response<ResponseBody>) -> Self {
        Outcome {
            response,
            app: None,
            upstream: None,
            lease: None,
        }
    }

    fn of_app(app: &Arc<str>, response: Response<ResponseBody>) -> Self {
        Outcome {
            app: Some(app.clone()),
            ..Outcome::local(response)
        }
    }
}

/// Serves one request. Never fails: every problem is a response.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: ClientConn,
    req: Request<Incoming>,
) -> Result<Response<Observed>, Infallible> {
    let start = Instant::now();
    let request_id = headers::request_id(req.headers());
    let host = headers::request_host(&req);
    let mut record = AccessRecord {
        start,
        method: req.method().clone(),
        host: host.clone().unwrap_or_else(|_| "-".to_string()),
        path: req.uri().path().to_string(),
        request_id: request_id.clone(),
        app: None,
        upstream: None,
        status: StatusCode::OK,
    };
    let outcome = forward(&shared, conn, req, host, &request_id).await;
    let (mut parts, body) = outcome.response.into_parts();
    parts.headers.insert(&X_REQUEST_ID, request_id);
    record.app = outcome.app;
    record.upstream = outcome.upstream;
    record.status = parts.status;
    let completion = Completion {
        record,
        lease: outcome.lease,
        metrics: shared.metrics.clone(),
        access_log: shared.access_log,
    };
    Ok(Response::from_parts(parts, Observed::new(body, completion)))
}

async fn forward(
    shared: &Shared,
    conn: ClientConn,
    mut req: Request<Incoming>,
    host: Result<String, HostError>,
    request_id: &HeaderValue,
) -> Outcome {
    if req.method() == Method::CONNECT {
        return Outcome::local(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the router does not tunnel CONNECT",
        ));
    }
    let host = match host {
        Ok(h) => h,
        Err(e) => return Outcome::local(text(StatusCode::BAD_REQUEST, e)),
    };
    let Some(target) = shared.current().find(&host, req.uri().path()).cloned() else {
        return Outcome::local(text(
            StatusCode::NOT_FOUND,
            format!("no route for host {host}"),
        ));
    };
    let app = target.app.clone();
    if target.endpoints.is_empty() {
        return Outcome::of_app(
            &app,
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no ready endpoint for app {app}"),
            ),
        );
    }

    let upgrade = match (req.version(), target.protocol) {
        (Version::HTTP_11, BackendProtocol::Http1) => headers::upgrade_of(req.headers()),
        _ => None,
    };
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    let authority = parts.uri.authority().map(|a| a.as_str().to_string());
    headers::strip_hop_by_hop(&mut headers, upgrade.as_ref());
    headers::add_forwarded(
        &mut headers,
        &Forwarded {
            client_ip: conn.peer.ip(),
            https: conn.https,
            host: &host,
            request_id,
        },
    );
    let (client, version) = match target.protocol {
        BackendProtocol::Http1 => {
            // An HTTP/2 client names the host in `:authority`; an HTTP/1.1 backend wants `Host`.
            if !headers.contains_key(header::HOST) {
                if let Some(v) = authority.and_then(|a| HeaderValue::from_str(&a).ok()) {
                    headers.insert(header::HOST, v);
                }
            }
            (&shared.http1, Version::HTTP_11)
        }
        BackendProtocol::H2c => {
            // `:authority` names the endpoint (the connection pool is per endpoint); a `Host`
            // that differs from it is malformed in HTTP/2. The host goes in X-Forwarded-Host.
            headers.remove(header::HOST);
            (&shared.h2c, Version::HTTP_2)
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let body = BodySlot::new(body);

    let mut tried: Vec<usize> = Vec::new();
    let mut refusals: Vec<String> = Vec::new();
    while tried.len() < MAX_ATTEMPTS {
        let now = Instant::now();
        let Some(index) = balance::pick(&target.endpoints, &tried, now, &mut rng::below) else {
            break;
        };
        let Some(state) = target.endpoints.get(index) else {
            break;
        };
        let addr = state.endpoint.addr;
        let mut lease = Lease::begin(state.clone(), shared.policy, now);
        let uri = match Uri::builder()
            .scheme("http")
            .authority(addr.to_string())
            .path_and_query(path.as_str())
            .build()
        {
            Ok(uri) => uri,
            Err(e) => return Outcome::of_app(&app, text(StatusCode::BAD_REQUEST, e)),
        };
        let mut upstream = Request::new(body.attempt());
        *upstream.method_mut() = parts.method.clone();
        *upstream.uri_mut() = uri;
        *upstream.version_mut() = version;
        *upstream.headers_mut() = headers.clone();

        let sent = client.request(upstream);
        let result = if target.timeout.is_zero() {
            Ok(sent.await)
        } else {
            tokio::time::timeout(target.timeout, sent).await
        };
        match result {
            Err(_elapsed) => {
                lease.fail(Instant::now());
                shared.metrics.upstream_error(&app, UpstreamError::timeout);
                let message = format!(
                    "upstream timed out: app {app} did not answer within {:?}",
                    target.timeout
                );
                return upstream_failure(&app, addr, text(StatusCode::GATEWAY_TIMEOUT, message));
            }
            Ok(Err(e)) if e.is_connect() && body.untouched() => {
                // Nothing was sent: another endpoint may take the request.
                lease.fail(Instant::now());
                shared.metrics.upstream_error(&app, UpstreamError::connect);
                let cause = root_cause(&e);
                tracing::debug!(app = %app, upstream = %addr, error = %cause, "connect failed, trying another endpoint");
                refusals.push(format!("{addr}: {cause}"));
                tried.push(index);
            }
            Ok(Err(e)) => {
                lease.fail(Instant::now());
                shared.metrics.upstream_error(&app, UpstreamError::reset);
                let message = format!("upstream {addr} of app {app} failed: {}", root_cause(&e));
                return upstream_failure(&app, addr, text(StatusCode::BAD_GATEWAY, message));
            }
            Ok(Ok(response)) => {
                if response.status().is_server_error() {
                    lease.fail(Instant::now());
                } else {
                    lease.succeed();
                }
                return relay(&app, response, lease, client_upgrade, upgrade, shared);
            }
        }
    }
    Outcome::of_app(
        &app,
        text(
            StatusCode::BAD_GATEWAY,
            format!(
                "no endpoint of app {app} accepted a connection ({})",
                refusals.join("; ")
            ),
        ),
    )
}

fn upstream_failure(app: &Arc<str>, addr: SocketAddr, response: Response<ResponseBody>) -> Outcome {
    Outcome {
        upstream: Some(addr),
        ..Outcome::of_app(app, response)
    }
}

/// Turns the backend's response into the client's: hop-by-hop headers go, the body streams
/// through (trailers included), and a `101 Switching Protocols` joins the two connections.
fn relay(
    app: &Arc<str>,
    mut response: Response<Incoming>,
    lease: Lease,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    asked: Option<HeaderValue>,
    shared: &Shared,
) -> Outcome {
    let addr = lease.endpoint().addr;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (Some(client_upgrade), Some(asked)) = (client_upgrade, asked) else {
            let message = format!("upstream {addr} of app {app} switched protocols unasked");
            return upstream_failure(app, addr, text(StatusCode::BAD_GATEWAY, message));
        };
        let backend_upgrade = hyper::upgrade::on(&mut response);
        let protocol = headers::upgrade_of(response.headers()).unwrap_or(asked);
        let mut out = Response::new(body::full(bytes::Bytes::new()));
        *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *out.headers_mut() = std::mem::take(response.headers_mut());
        headers::strip_hop_by_hop(out.headers_mut(), Some(&protocol));
        tokio::spawn(upgrade::tunnel(
            client_upgrade,
            backend_upgrade,
            lease,
            shared.stop.clone(),
        ));
        return upstream_failure(app, addr, out);
    }
    let (parts, incoming) = response.into_parts();
    let mut out = Response::new(body::incoming(incoming));
    *out.status_mut() = parts.status;
    *out.headers_mut() = parts.headers;
    headers::strip_hop_by_hop(out.headers_mut(), None);
    Outcome {
        response: out,
        app: Some(app.clone()),
        upstream: Some(addr),
        lease: Some(lease),
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("policy", &self.policy)
            .field("access_log", &self.access_log)
            .finish_non_exhaustive()
    }
}
