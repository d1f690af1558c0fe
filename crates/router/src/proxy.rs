//! The request path: route lookup, endpoint pick, forwarding with retries, timeouts, upgrades.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Extensions, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::access::{AccessRecord, Completion, Recorder};
use crate::balance::{self, Lease};
use crate::body::{self, BodySlot, Observed, ResponseBody, RetryBody};
use crate::h1::H1Body;
use crate::headers::{self, Forwarded, HostError, X_REQUEST_ID};
use crate::health::EjectPolicy;
use crate::metrics::UpstreamError;
use crate::respond::{root_cause, text};
use crate::rng;
use crate::snapshot::{Snapshot, Target};
use crate::table::BackendProtocol;
use crate::upgrade;
use crate::upstream::{Exchanged, H1Client, H1Sender, Pooled, Sent};

/// Attempts per request; only attempts whose connection failed lead to another.
const MAX_ATTEMPTS: usize = 3;

/// The pooled client toward h2c backends (one multiplexed connection per endpoint).
pub(crate) type UpstreamClient = Client<HttpConnector, RetryBody>;

/// What every request handler shares.
pub(crate) struct Shared {
    snapshot: RwLock<Arc<Snapshot>>,
    pub http1: H1Client,
    pub h2c: UpstreamClient,
    pub recorder: Arc<Recorder>,
    pub policy: EjectPolicy,
    /// Turns true when the drain time is over: upgraded tunnels close.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

impl Shared {
    pub fn new(
        snapshot: Snapshot,
        http1: H1Client,
        h2c: UpstreamClient,
        recorder: Arc<Recorder>,
        policy: EjectPolicy,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Shared {
            snapshot: RwLock::new(Arc::new(snapshot)),
            http1,
            h2c,
            recorder,
            policy,
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
    target: Option<Arc<Target>>,
    upstream: Option<SocketAddr>,
    lease: Option<Lease>,
    /// The HTTP/1.1 connection the response came on, to pool again once its body has ended.
    conn: Option<Pooled>,
}

impl Outcome {
    fn local(response: Response<ResponseBody>) -> Self {
        Outcome {
            response,
            target: None,
            upstream: None,
            lease: None,
            conn: None,
        }
    }

    fn of(target: &Arc<Target>, response: Response<ResponseBody>) -> Self {
        Outcome {
            target: Some(target.clone()),
            ..Outcome::local(response)
        }
    }
}

/// Serves one request. Never fails: every problem is a response.
///
/// Everything up to the upstream call is done before the future is made, and the paths other
/// than the common one are boxed: hyper moves this future whole for every request, so it
/// should hold no more than the common path needs (an `async fn` keeps its arguments, the
/// request among them, for its whole life).
pub(crate) fn handle(
    shared: Arc<Shared>,
    conn: ClientConn,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Response<Observed>, Infallible>> {
    let start = Instant::now();
    let request_id = headers::request_id(req.headers());
    let host = headers::request_host(&req);
    let method = req.method().clone();
    // Cheap: the parts of a parsed URI are reference-counted.
    let uri = req.uri().clone();
    let prepared = prepare(&shared, conn, req, &host, &request_id);
    async move {
        let outcome = match prepared {
            Prepared::Answered(outcome) => outcome,
            Prepared::Http1Inline(to, request) => to.exchange(&shared).http1_inline(request).await,
            Prepared::Http1(to, request) => Box::pin(to.exchange(&shared).http1(request)).await,
            Prepared::H2c(to, parts, body) => Box::pin(to.exchange(&shared).h2c(parts, body)).await,
        };
        let (mut parts, body) = outcome.response.into_parts();
        let record = AccessRecord {
            start,
            method,
            host: host.unwrap_or_else(|_| "-".to_string()),
            uri,
            request_id: request_id.clone(),
            target: outcome.target,
            upstream: outcome.upstream,
            status: parts.status,
        };
        parts.headers.insert(&X_REQUEST_ID, request_id);
        let completion = Completion {
            record,
            lease: outcome.lease,
            conn: outcome.conn,
            recorder: shared.recorder.clone(),
        };
        Ok(Response::from_parts(parts, Observed::new(body, completion)))
    }
}

/// Where a request that goes upstream goes: the route's target and the upgrade it asks for.
struct Destination {
    target: Arc<Target>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    upgrade: Option<HeaderValue>,
}

impl Destination {
    fn exchange(self, shared: &Shared) -> Exchange<'_> {
        Exchange {
            shared,
            target: self.target,
            client_upgrade: self.client_upgrade,
            upgrade: self.upgrade,
        }
    }
}

/// A request ready to go upstream, or the answer it gets without going.
enum Prepared {
    Answered(Outcome),
    /// HTTP/1.1 without a body or an upgrade: most requests.
    Http1Inline(Destination, Request<Incoming>),
    Http1(Destination, Request<Incoming>),
    H2c(Destination, http::request::Parts, Incoming),
}

fn prepare(
    shared: &Shared,
    conn: ClientConn,
    mut req: Request<Incoming>,
    host: &Result<String, HostError>,
    request_id: &HeaderValue,
) -> Prepared {
    let outcome = |o| Prepared::Answered(o);
    if req.method() == Method::CONNECT {
        return outcome(Outcome::local(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the router does not tunnel CONNECT",
        )));
    }
    let host = match host {
        Ok(h) => h,
        Err(e) => return outcome(Outcome::local(text(StatusCode::BAD_REQUEST, e))),
    };
    let Some(found) = shared.current().find(host, req.uri().path()) else {
        return outcome(Outcome::local(text(
            StatusCode::NOT_FOUND,
            format!("no route for host {host}"),
        )));
    };
    let target = found.target;
    if target.endpoints.is_empty() {
        return outcome(Outcome::of(
            &target,
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no ready endpoint for app {}", target.app),
            ),
        ));
    }

    let upgrade = match (req.version(), target.protocol) {
        (Version::HTTP_11, BackendProtocol::Http1) => headers::upgrade_of(req.headers()),
        _ => None,
    };
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    // What the client's connection attached is no business of the backend's.
    parts.extensions = Extensions::new();
    headers::strip_hop_by_hop(&mut parts.headers, upgrade.as_ref());
    headers::add_forwarded(
        &mut parts.headers,
        &Forwarded {
            client_ip: conn.peer.ip(),
            https: conn.https,
            host: &found.host,
            request_id,
        },
    );
    let protocol = target.protocol;
    let destination = Destination {
        target,
        client_upgrade,
        upgrade,
    };
    match protocol {
        BackendProtocol::Http1 => {
            // An HTTP/2 client names the host in `:authority`; an HTTP/1.1 backend wants `Host`.
            if !parts.headers.contains_key(header::HOST) {
                if let Some(v) = parts
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                {
                    parts.headers.insert(header::HOST, v);
                }
            }
            // Origin-form (`/path?query`) whatever form the client used.
            if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
                parts.uri = Uri::from(
                    parts
                        .uri
                        .path_and_query()
                        .cloned()
                        .unwrap_or_else(|| PathAndQuery::from_static("/")),
                );
            }
            parts.version = Version::HTTP_11;
            let request = Request::from_parts(parts, body);
            if destination.upgrade.is_none() && request.body().is_end_stream() {
                Prepared::Http1Inline(destination, request)
            } else {
                Prepared::Http1(destination, request)
            }
        }
        BackendProtocol::H2c => {
            // `:authority` names the endpoint (the connection pool is per endpoint); a `Host`
            // that differs from it is malformed in HTTP/2. The host goes in X-Forwarded-Host.
            parts.headers.remove(header::HOST);
            Prepared::H2c(destination, parts, body)
        }
    }
}

/// One request on its way to one of a route's endpoints.
struct Exchange<'a> {
    shared: &'a Shared,
    target: Arc<Target>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    upgrade: Option<HeaderValue>,
}

/// Why the endpoint that took the request did not answer.
enum Failure {
    /// The route's time for a response head ran out.
    Timeout(SocketAddr),
    /// The connection broke once the request was sent.
    Reset(SocketAddr, String),
}

impl Exchange<'_> {
    /// Picks the next endpoint not yet tried and leases it.
    fn next(&self, tried: &[usize]) -> Option<(usize, Lease, Instant)> {
        let now = Instant::now();
        let index = balance::pick(&self.target.endpoints, tried, now, &mut rng::below)?;
        let state = self.target.endpoints.get(index)?;
        Some((
            index,
            Lease::begin(state.clone(), self.shared.policy, now),
            now,
        ))
    }

    fn refused(&self, lease: &mut Lease, cause: String, refusals: &mut Vec<String>) {
        let addr = lease.endpoint().addr;
        lease.fail(Instant::now());
        self.target.metrics.upstream_error(UpstreamError::connect);
        tracing::debug!(app = %self.target.app, upstream = %addr, error = %cause, "connect failed, trying another endpoint");
        refusals.push(format!("{addr}: {cause}"));
    }

    async fn http1(self, mut request: Request<Incoming>) -> Outcome {
        let mut tried: Vec<usize> = Vec::new();
        let mut refusals: Vec<String> = Vec::new();
        while tried.len() < MAX_ATTEMPTS {
            let Some((index, mut lease, now)) = self.next(&tried) else {
                break;
            };
            let state = lease.state();
            let addr = state.endpoint.addr;
            let sent = self.shared.http1.send(addr, &state.idle, request, now);
            match within(self.target.timeout, sent).await.ok() {
                None => return self.failed(lease, Failure::Timeout(addr)),
                Some(Sent::Refused(e, back)) => {
                    self.refused(&mut lease, root_cause(&*e), &mut refusals);
                    tried.push(index);
                    request = back;
                }
                Some(Sent::Failed(e)) => {
                    return self.failed(lease, Failure::Reset(addr, root_cause(&e)));
                }
                Some(Sent::Answered(response, conn)) => {
                    return self.relay(response, lease, Some(conn));
                }
            }
        }
        self.failed_all(refusals)
    }

    /// A request with no body, over a connection driven by this task ([`crate::h1`]).
    async fn http1_inline(self, request: Request<Incoming>) -> Outcome {
        let mut tried: Vec<usize> = Vec::new();
        let mut refusals: Vec<String> = Vec::new();
        while tried.len() < MAX_ATTEMPTS {
            let Some((index, mut lease, now)) = self.next(&tried) else {
                break;
            };
            let state = lease.state();
            let addr = state.endpoint.addr;
            let sent = self.shared.http1.exchange(addr, &state.idle, &request, now);
            match within(self.target.timeout, sent).await.ok() {
                None => return self.failed(lease, Failure::Timeout(addr)),
                Some(Exchanged::Refused(e)) => {
                    self.refused(&mut lease, root_cause(&*e), &mut refusals);
                    tried.push(index);
                }
                Some(Exchanged::Failed(e)) => {
                    return self.failed(lease, Failure::Reset(addr, root_cause(&*e)));
                }
                Some(Exchanged::Answered(response)) => return self.relay_inline(response, lease),
            }
        }
        self.failed_all(refusals)
    }

    async fn h2c(self, parts: http::request::Parts, body: Incoming) -> Outcome {
        let body = BodySlot::new(body);
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut headers = parts.headers;
        // No attempt follows the one that could be the last: it takes the headers uncopied.
        let attempts = MAX_ATTEMPTS.min(self.target.endpoints.len());
        let mut tried: Vec<usize> = Vec::new();
        let mut refusals: Vec<String> = Vec::new();
        while tried.len() < MAX_ATTEMPTS {
            let Some((index, mut lease, _)) = self.next(&tried) else {
                break;
            };
            let state = lease.state();
            let addr = state.endpoint.addr;
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(state.authority.clone());
            uri.path_and_query = Some(path.clone());
            let uri = match Uri::from_parts(uri) {
                Ok(uri) => uri,
                Err(e) => return Outcome::of(&self.target, text(StatusCode::BAD_REQUEST, e)),
            };
            let mut upstream = Request::new(body.attempt());
            *upstream.method_mut() = parts.method.clone();
            *upstream.uri_mut() = uri;
            *upstream.version_mut() = Version::HTTP_2;
            *upstream.headers_mut() = if tried.len() + 1 >= attempts {
                std::mem::take(&mut headers)
            } else {
                headers.clone()
            };
            match within(self.target.timeout, self.shared.h2c.request(upstream))
                .await
                .ok()
            {
                None => return self.failed(lease, Failure::Timeout(addr)),
                Some(Err(e)) if e.is_connect() && body.untouched() => {
                    // Nothing was sent: another endpoint may take the request.
                    self.refused(&mut lease, root_cause(&e), &mut refusals);
                    tried.push(index);
                }
                Some(Err(e)) => return self.failed(lease, Failure::Reset(addr, root_cause(&e))),
                Some(Ok(response)) => return self.relay(response, lease, None),
            }
        }
        self.failed_all(refusals)
    }

    fn failed(&self, mut lease: Lease, failure: Failure) -> Outcome {
        lease.fail(Instant::now());
        let app = &self.target.app;
        let (addr, response) = match failure {
            Failure::Timeout(addr) => {
                self.target.metrics.upstream_error(UpstreamError::timeout);
                let message = format!(
                    "upstream timed out: app {app} did not answer within {:?}",
                    self.target.timeout
                );
                (addr, text(StatusCode::GATEWAY_TIMEOUT, message))
            }
            Failure::Reset(addr, cause) => {
                self.target.metrics.upstream_error(UpstreamError::reset);
                let message = format!("upstream {addr} of app {app} failed: {cause}");
                (addr, text(StatusCode::BAD_GATEWAY, message))
            }
        };
        upstream_failure(&self.target, addr, response)
    }

    fn failed_all(&self, refusals: Vec<String>) -> Outcome {
        Outcome::of(
            &self.target,
            text(
                StatusCode::BAD_GATEWAY,
                format!(
                    "no endpoint of app {} accepted a connection ({})",
                    self.target.app,
                    refusals.join("; ")
                ),
            ),
        )
    }

    fn relay(
        self,
        response: Response<Incoming>,
        mut lease: Lease,
        conn: Option<H1Sender>,
    ) -> Outcome {
        judge(&mut lease, response.status());
        relay(
            &self.target,
            response,
            lease,
            conn,
            self.client_upgrade,
            self.upgrade,
            self.shared,
        )
    }

    /// A response read inline: it has no upgrade (the reader refuses an unasked `101`), and
    /// its body carries its connection back to the pool.
    fn relay_inline(self, response: Response<H1Body>, mut lease: Lease) -> Outcome {
        judge(&mut lease, response.status());
        let (parts, inline) = response.into_parts();
        passed_on(
            &self.target,
            lease,
            parts,
            ResponseBody::Inline(inline),
            None,
        )
    }
}

/// The endpoint's health verdict from its response's status.
fn judge(lease: &mut Lease, status: StatusCode) {
    if status.is_server_error() {
        lease.fail(Instant::now());
    } else {
        lease.succeed();
    }
}

/// `fut`, or an error once `limit` has passed. Zero is no limit: a deadline past what
/// `Instant` can hold, for which tokio sets no timer. Not an `async fn`: that would hold `fut`
/// twice over in the request's future, which hyper moves whole for every request.
fn within<F: Future>(limit: Duration, fut: F) -> tokio::time::Timeout<F> {
    tokio::time::timeout(
        if limit.is_zero() {
            Duration::MAX
        } else {
            limit
        },
        fut,
    )
}

fn upstream_failure(
    target: &Arc<Target>,
    addr: SocketAddr,
    response: Response<ResponseBody>,
) -> Outcome {
    Outcome {
        upstream: Some(addr),
        ..Outcome::of(target, response)
    }
}

/// Turns the backend's response into the client's: hop-by-hop headers go, the body streams
/// through (trailers included), and a `101 Switching Protocols` joins the two connections.
fn relay(
    target: &Arc<Target>,
    mut response: Response<Incoming>,
    lease: Lease,
    conn: Option<H1Sender>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    asked: Option<HeaderValue>,
    shared: &Shared,
) -> Outcome {
    let app = &target.app;
    let addr = lease.endpoint().addr;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (Some(client_upgrade), Some(asked)) = (client_upgrade, asked) else {
            let message = format!("upstream {addr} of app {app} switched protocols unasked");
            return upstream_failure(target, addr, text(StatusCode::BAD_GATEWAY, message));
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
        // The connection now carries the tunnel: it is not pooled again.
        drop(conn);
        return upstream_failure(target, addr, out);
    }
    let (parts, incoming) = response.into_parts();
    passed_on(
        target,
        lease,
        parts,
        body::incoming(incoming),
        conn.map(Pooled::Hyper),
    )
}

/// The backend's response as the client gets it: its status and end-to-end headers, and
/// `body`; `conn` goes back to the pool once the body has ended.
fn passed_on(
    target: &Arc<Target>,
    lease: Lease,
    parts: http::response::Parts,
    body: ResponseBody,
    conn: Option<Pooled>,
) -> Outcome {
    let addr = lease.endpoint().addr;
    let mut out = Response::new(body);
    *out.status_mut() = parts.status;
    *out.headers_mut() = parts.headers;
    headers::strip_hop_by_hop(out.headers_mut(), None);
    Outcome {
        response: out,
        target: Some(target.clone()),
        upstream: Some(addr),
        lease: Some(lease),
        conn,
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("policy", &self.policy)
            .field("access_log", &self.recorder.log.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    fn future_size<A, B, C, F: std::future::Future>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// hyper moves each request's future whole (it was 4.6 KB before `handle` prepared the
    /// request outside it and boxed the uncommon paths; 2.1 KB after, with rustc 1.95). A path
    /// that makes it grow past this should be boxed, or its work done before the future.
    #[test]
    fn the_request_future_stays_small() {
        let size = future_size(super::handle);
        assert!(size <= 2560, "the request's future is {size} bytes");
    }
}
